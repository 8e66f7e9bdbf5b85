/* hostile-faults.c: the hostile suite's faults: a client, polkit, udevd or loopd killed mid-call, the
 * backing file deleted while attached, the disk under an image full. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "hostile.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Faults */

/* A client process killed while polkit thinks about its Attach: when the answer comes, nobody is left to
 * own, use or detach a device, so loopd must attach nothing. (The GDBus-close variant is in test-polkit.) */
void test_client_killed_mid_call(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "killed-client.img");
        g_autofree char *log = g_build_filename(h->tmpdir, "loopctl.log", NULL);
        g_autofree char *uid = NULL, *gid = NULL;
        g_autoptr(GSubprocess) client = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        const char *binary = g_getenv("LOOPCTL_BINARY");
        uid_t u;
        gid_t g;

        g_assert_nonnull(binary);
        g_assert_true(harness_user(HARNESS_USER_A, &u, &g));
        image_create(image, 32 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        g_assert_cmpint(chown(image, u, g), ==, 0);
        uid = g_strdup_printf("--reuid=%u", (unsigned)u);
        gid = g_strdup_printf("--regid=%u", (unsigned)g);
        world_snapshot(h, &before);

        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 1500);
        const char *argv[] = { "setpriv", uid, gid, "--clear-groups", "--", binary, "--no-ask-password",
                "attach", image, NULL };
        client = spawn_with_bus(h, G_SUBPROCESS_FLAGS_NONE, log, argv, &error);
        g_assert_no_error(error);
        if (!client)
                return;
        g_assert_true(fake_authority_wait_calls(h->authority, 1, HARNESS_TIMEOUT_MS));
        kill_and_reap(client);
        g_assert_true(g_subprocess_get_if_signaled(client));

        /* Past the answer, then one round trip through loopd: it has handled the answer by now. */
        g_usleep(2000 * 1000);
        g_autoptr(GVariant) list = harness_list_devices(h->bus, &error);
        harness_assert_no_error(error);
        g_autoptr(GPtrArray) bound = oracle_loops_bound_to(image);
        if (bound->len > 0)
                g_test_fail_printf("the killed client's image is bound to %s", (char *)bound->pdata[0]);
        assert_world_unchanged(h, &before);
        for (guint i = 0; i < bound->len; i++)
                cleanup_device(h, bound->pdata[i]);
}

/* The helper mode: owns org.freedesktop.PolicyKit1 and never answers; says "ready" and "asked" on stdout. */
static void hanging_authority_call(GDBusConnection *c, const char *sender, const char *path,
        const char *interface, const char *method, GVariant *params, GDBusMethodInvocation *invocation,
        gpointer user_data)
{
        g_object_ref(invocation); /* never answered */
        printf("asked %s\n", method);
        fflush(stdout);
}

int hanging_polkit_main(void)
{
        static const char xml[] =
                "<node><interface name='org.freedesktop.PolicyKit1.Authority'>"
                "<method name='CheckAuthorization'>"
                "<arg type='(sa{sv})' direction='in'/><arg type='s' direction='in'/>"
                "<arg type='a{ss}' direction='in'/><arg type='u' direction='in'/>"
                "<arg type='s' direction='in'/><arg type='(bba{ss})' direction='out'/>"
                "</method>"
                "<method name='CancelCheckAuthorization'><arg type='s' direction='in'/></method>"
                "</interface></node>";
        static const GDBusInterfaceVTable vtable = { .method_call = hanging_authority_call };
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusNodeInfo) info = g_dbus_node_info_new_for_xml(xml, &error);
        g_autoptr(GDBusConnection) c =
                g_dbus_connection_new_for_address_sync(g_getenv("DBUS_SYSTEM_BUS_ADDRESS"),
                        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                        NULL, NULL, &error);
        g_autoptr(GVariant) reply = NULL;
        guint32 result = 0;

        if (!c || !info ||
                !g_dbus_connection_register_object(c, "/org/freedesktop/PolicyKit1/Authority",
                        info->interfaces[0], &vtable, NULL, NULL, &error))
                goto fail;
        reply = g_dbus_connection_call_sync(c, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "RequestName",
                g_variant_new("(su)", "org.freedesktop.PolicyKit1", 4), G_VARIANT_TYPE("(u)"),
                G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
        if (!reply)
                goto fail;
        g_variant_get(reply, "(u)", &result);
        if (result != 1) {
                fprintf(stderr, "RequestName answered %u\n", result);
                return 1;
        }
        printf("ready\n");
        fflush(stdout);
        g_main_loop_run(g_main_loop_new(NULL, FALSE));
        return 0;
fail:
        fprintf(stderr, "hanging polkit: %s\n", error ? error->message : "failed");
        return 1;
}

static char *read_line(GDataInputStream *in)
{
        g_autoptr(GError) error = NULL;
        char *line = g_data_input_stream_read_line(in, NULL, NULL, &error);
        return line;
}

/* polkit goes away while loopd waits for its answer: the caller is denied (not left hanging until its
 * timeout), nothing is attached, and the next call is denied at once. */
void test_polkit_vanishes_mid_call(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "no-polkit.img");
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autoptr(GSubprocess) authority = NULL;
        g_autoptr(GDataInputStream) out = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        GDBusConnection *user = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        const char *argv[] = { self, HANGING_POLKIT_ARG, NULL };
        guint n_done = 0;
        Pending p = { .connection = user, .who = "A", .n_done = &n_done };

        if (!user)
                return;
        image_create(image, 16 * MiB);
        authority = spawn_with_bus(h, G_SUBPROCESS_FLAGS_STDOUT_PIPE, NULL, argv, &error);
        g_assert_no_error(error);
        if (!authority)
                return;
        out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(authority));
        g_autofree char *ready = read_line(out);
        g_assert_cmpstr(ready, ==, "ready");
        world_snapshot(h, &before);

        g_main_context_push_thread_default(context);
        pending_start_attach(&p, image);
        g_autofree char *asked = read_line(out);
        g_assert_cmpstr(asked, ==, "asked CheckAuthorization");
        gint64 t0 = g_get_monotonic_time();
        kill_and_reap(authority);
        g_assert_true(iterate_until(context, &n_done, 1, HARNESS_TIMEOUT_MS));
        g_main_context_pop_thread_default(context);
        g_test_message("Attach answered %" G_GINT64_FORMAT " ms after polkit died: %s",
                (g_get_monotonic_time() - t0) / 1000, p.error ? p.error->message : "success");
        harness_assert_dbus_error(p.error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 10 * G_USEC_PER_SEC);
        if (p.reply) {
                g_autofree char *device = NULL;
                g_variant_get(p.reply, "(so)", &device, NULL);
                cleanup_device(h, device);
                g_variant_unref(p.reply);
        }
        g_clear_error(&p.error);
        assert_world_unchanged(h, &before);

        /* Nobody owns the name now: denied, quickly. */
        g_autofree char *device = NULL;
        t0 = g_get_monotonic_time();
        g_assert_false(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, "polkit");
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 10 * G_USEC_PER_SEC);
        assert_world_unchanged(h, &before);
        cleanup_device(h, device);
}

/* The file backing a device is deleted: the device keeps working, and Detach (and Unmount) still work. */
void test_backing_file_deleted(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "deleted.img");
        g_autofree char *device = NULL, *mount_point = NULL, *file = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=32MiB, type=linux\ntype=linux\n", 0);
        g_free(image_mkfs_at(image, MiB, 32 * MiB, "ext4", "deleted"));
        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        g_ptr_array_add(used, g_strdup(device));
        g_autofree char *node = g_strconcat(device, "p1", NULL);

        g_assert_cmpint(unlink(image), ==, 0);
        g_autofree char *backing = backing_of(device);
        g_test_message("%s is backed by '%s'", device, backing);

        g_autoptr(GVariant) list = harness_list_devices(user, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_autoptr(GVariant) parts = harness_list_partitions(user, device, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (parts)
                g_assert_cmpuint(g_variant_n_children(parts), ==, 2);
        check_state_consistent(__FILE__, __LINE__, h);

        reply = harness_call(user, "Mount", g_variant_new("(s@a{sv})", node, harness_empty_options()), NULL,
                G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (reply) {
                g_variant_get(reply, "(s)", &mount_point);
                file = g_build_filename(mount_point, "written-after-delete", NULL);
                g_assert_true(g_file_set_contents(file, "still works\n", -1, NULL));
                g_clear_pointer(&reply, g_variant_unref);
                reply = harness_call(user, "Unmount",
                        g_variant_new("(s@a{sv})", mount_point, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        check_nothing_left(h, used);
        cleanup_device(h, device);
}

/* The pid of a child of this process named comm (a daemon the harness started for this test), or 0. */
static pid_t own_child_named(const char *comm)
{
        g_autoptr(GDir) dir = g_dir_open("/proc", 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
                if (strspn(name, "0123456789") != strlen(name))
                        continue;
                g_autofree char *stat = test_read_sysfs("/proc/%s/stat", name);
                const char *close_paren = stat ? strrchr(stat, ')') : NULL;
                const char *open_paren = stat ? strchr(stat, '(') : NULL;
                int ppid = 0;
                char state;

                if (!close_paren || !open_paren || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2)
                        continue;
                if (ppid == getpid() && (size_t)(close_paren - open_paren - 1) == strlen(comm) &&
                        strncmp(open_paren + 1, comm, strlen(comm)) == 0)
                        return (pid_t)atoi(name);
        }
        return 0;
}

/* What the udevd test's cycler keeps of each cycle. */
typedef struct UdevCycles {
        GPtrArray *used;
        guint64 *durations_us; /* of each successful Attach */
        bool *timed_out;
} UdevCycles;

/* An Attach may time out (and must then roll back) while udevd is gone. */
static void udev_attach_failed(HarnessCycler *c, guint i, const GError *error)
{
        UdevCycles *u = c->data;
        g_autofree char *remote = g_dbus_error_get_remote_error(error);
        g_autoptr(GPtrArray) left = loops_bound_to_after_settling(c->image);

        if (g_strcmp0(remote, LOOPD_ERROR_TIMEOUT) != 0)
                harness_cycler_problem(c, "Attach %u: %s", i, error->message);
        if (left->len > 0)
                harness_cycler_problem(c, "Attach %u failed and left %s bound", i, (char *)left->pdata[0]);
        u->timed_out[i] = true;
}

static void udev_attached(HarnessCycler *c, guint i, const char *device, gint64 attach_us)
{
        UdevCycles *u = c->data;
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);

        u->durations_us[i] = (guint64)attach_us;
        if (!g_ptr_array_find_with_equal_func(u->used, device, g_str_equal, NULL))
                g_ptr_array_add(u->used, g_strdup(device));
        if (nodes->len != 2)
                harness_cycler_problem(c, "Attach %u: %s has %u partition nodes", i, device, nodes->len);
}

/* udevd is killed -9 while Attach calls come and go: each either works or times out and rolls back, and once
 * loopd has noticed that udev is gone, Attach stops waiting for it. */
void test_udevd_killed_mid_run(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { CYCLES = 24 };
        g_autofree char *image = harness_image_path(h, "udev.img");
        guint64 durations[CYCLES] = { 0 };
        bool timed_out[CYCLES] = { false };
        UdevCycles u = { .used = g_ptr_array_new_with_free_func(g_free),
                .durations_us = durations,
                .timed_out = timed_out };
        HarnessCycler c = { .connection = h->bus,
                .image = image,
                .cycles = CYCLES,
                .attach_failed = udev_attach_failed,
                .attached = udev_attached,
                .data = &u,
                .problems = g_ptr_array_new_with_free_func(g_free) };
        pid_t udevd = own_child_named("systemd-udevd");
        gint killed_at;

        if (!h->udev || udevd <= 0) {
                /* Only a udevd this test started may be killed. */
                g_test_skip("systemd-udevd was already running, not started by this test");
                return;
        }
        image_create(image, 32 * MiB);
        image_sfdisk(image, "label: gpt\nsize=8MiB, type=linux\ntype=linux\n", 0);

        GThread *t = g_thread_new("cycler", harness_cycler_thread, &c);
        while (g_atomic_int_get(&c.started) < 6)
                g_usleep(10 * 1000);
        killed_at = g_atomic_int_get(&c.started);
        g_test_message("killing systemd-udevd (pid %d) during Attach %d", (int)udevd, killed_at);
        g_assert_cmpint(kill(udevd, SIGKILL), ==, 0);
        g_thread_join(t);

        for (guint i = 0; i < c.problems->len; i++)
                g_test_fail_printf("%s", (char *)c.problems->pdata[i]);
        /* Two calls may have been in flight when udevd died; every later one works without waiting. */
        for (guint i = (guint)killed_at + 2; i < CYCLES; i++) {
                if (timed_out[i])
                        g_test_fail_printf("Attach %u, well after udevd died, timed out", i);
                else if (durations[i] > 4 * G_USEC_PER_SEC)
                        g_test_fail_printf("Attach %u took %" G_GUINT64_FORMAT " ms: still waiting for udev",
                                i, durations[i] / 1000);
        }
        g_assert_true(harness_loopd_alive(h));
        check_nothing_left(h, u.used);
        g_ptr_array_unref(c.problems);
        g_ptr_array_unref(u.used);
}

void setup_with_udev(Harness *h, gconstpointer options)
{
        const char *was = g_getenv("LOOPD_TEST_UDEV");
        g_autofree char *saved = g_strdup(was);

        g_setenv("LOOPD_TEST_UDEV", "1", TRUE);
        harness_setup(h, options);
        if (saved)
                g_setenv("LOOPD_TEST_UDEV", saved, TRUE);
        else
                g_unsetenv("LOOPD_TEST_UDEV");
}

/* ---- kill -9 of loopd ---- */

/* Waits (inotify on /dev) until a partition node of a device bound to image appears; returns that device. */
static char *wait_for_partition_of(const char *image, int fd, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));

        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                ssize_t n;

                if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                        return NULL;
                n = read(fd, buf, sizeof(buf));
                for (char *p = buf; n > 0 && p < buf + n;) {
                        struct inotify_event *e = (struct inotify_event *)p;
                        p += sizeof(*e) + e->len;
                        if (e->len == 0 || !g_str_has_prefix(e->name, "loop") || !strchr(e->name + 4, 'p'))
                                continue;
                        g_autofree char *disk = g_strndup(e->name, strchr(e->name + 4, 'p') - e->name);
                        g_autofree char *backing = test_read_sysfs("/sys/block/%s/loop/backing_file", disk);
                        if (g_strcmp0(backing, image) == 0)
                                return g_strconcat("/dev/", disk, NULL);
                }
        }
}

/* Makes loopd's next device record block: its temporary file is created with O_CREAT but no O_EXCL, so a
 * FIFO in its place blocks the open until a reader comes (none will). For every number the kernel may hand
 * out. Returns the FIFOs' paths. */
static GPtrArray *stall_record_writes(Harness *h)
{
        GPtrArray *fifos = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *dir = g_build_filename(h->state_dir, "devices", NULL);
        g_autoptr(GDir) sys = g_dir_open("/sys/block", 0, NULL);
        const char *name;
        guint max = 0;

        while (sys && (name = g_dir_read_name(sys)))
                if (g_str_has_prefix(name, "loop") && strspn(name + 4, "0123456789") == strlen(name + 4))
                        max = MAX(max, (guint)g_ascii_strtoull(name + 4, NULL, 10));
        g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
        for (guint i = 0; i <= max + 64; i++) {
                char *fifo = g_strdup_printf("%s/.loop%u.tmp", dir, i);
                g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
                g_ptr_array_add(fifos, fifo);
        }
        return fifos;
}

/* Waits until pid sleeps opening a FIFO nobody reads. */
static bool wait_until_stalled(pid_t pid, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

        while (g_get_monotonic_time() < deadline) {
                g_autofree char *wchan = test_read_sysfs("/proc/%d/wchan", (int)pid);
                if (g_strcmp0(wchan, "wait_for_partner") == 0)
                        return true;
                g_usleep(10 * 1000);
        }
        return false;
}

/* loopd is killed -9 in the middle of an Attach. stall: at the worst moment, with the device bound and its
 * partitions added but not yet recorded (its record write is made to block); else while it adds 128
 * partitions (wherever the signal lands). A restarted loopd must either own the device for its caller
 * (managed, that owner: the caller can find and detach it) or have rolled the attach back; an unmanaged
 * device that nobody but root can remove is a leak. A device root bound to the same image meanwhile is not
 * loopd's, and stays. */
void test_loopd_killed_during_attach(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const bool stall = h->options->data != NULL;
        g_autofree char *image = harness_image_path(h, "killed-loopd.img");
        g_autofree char *own_log = g_build_filename(h->tmpdir, "own-loopd.log", NULL);
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autoptr(GSubprocess) own = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) fifos = NULL;
        g_autofree char *device = NULL, *qimage = NULL, *others = NULL, *others_backing = NULL;
        GDBusConnection *user = connect_allowed_user(h);
        guint n_done = 0;
        Pending p = { .connection = user, .who = "A", .n_done = &n_done };
        GptPart parts[128];
        int ifd;

        if (!user)
                return;
        for (guint i = 0; i < 128; i++)
                parts[i] = (GptPart){ 2048 + i * 256, 2048 + i * 256 + 255 };
        gpt_write(image, 32 * MiB / 512, 32 * MiB, parts, G_N_ELEMENTS(parts));

        own = harness_start_own_loopd(h, own_log, NULL);
        if (!own)
                return;
        if (stall)
                fifos = stall_record_writes(h);
        ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        g_assert_cmpint(ifd, >=, 0);
        g_assert_cmpint(inotify_add_watch(ifd, "/dev", IN_CREATE), >=, 0);

        g_main_context_push_thread_default(context);
        pending_start_attach(&p, image);
        if (stall) {
                pid_t pid = (pid_t)atoi(g_subprocess_get_identifier(own));
                g_assert_true(wait_until_stalled(pid, HARNESS_TIMEOUT_MS));
                g_autoptr(GPtrArray) bound = oracle_loops_bound_to(image);
                if (bound->len > 0)
                        device = g_strdup(bound->pdata[0]);
        } else
                device = wait_for_partition_of(image, ifd, HARNESS_TIMEOUT_MS);
        close(ifd);
        kill_and_reap(own);
        g_assert_true(iterate_until(context, &n_done, 1, HARNESS_TIMEOUT_MS));
        g_main_context_pop_thread_default(context);
        for (guint i = 0; fifos && i < fifos->len; i++)
                (void)unlink(fifos->pdata[i]);
        if (!device) {
                g_test_fail_printf("%s was not bound when loopd was killed", image);
                return;
        }
        g_ptr_array_add(used, g_strdup(device));
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
        g_test_message("loopd was killed attaching %s (%u partition nodes); the caller got: %s", device,
                nodes->len, p.error ? p.error->message : "a reply");
        if (p.reply) {
                /* loopd finished before the signal landed: the device is simply the caller's. */
                g_test_message("the Attach completed before the kill");
                g_variant_unref(p.reply);
        }
        g_clear_error(&p.error);

        /* Root binds the same image too, read-only at the same offset, while loopd is down: not loopd's,
         * whatever the restart rolls back. */
        qimage = g_shell_quote(image);
        others = g_strstrip(test_sh("losetup -f --show -r %s", qimage));
        g_test_message("root bound %s to the image meanwhile", others);

        /* The restart. */
        g_assert_true(harness_start_loopd(h));
        others_backing = test_read_sysfs("/sys/block/%s/loop/backing_file", others + strlen("/dev/"));
        if (g_strcmp0(others_backing, image) != 0)
                g_test_fail_printf("the restart detached %s, which root had bound to the image", others);
        else
                g_free(test_sh("losetup -d %s", others));
        g_autoptr(GVariant) list = harness_list_devices(user, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_autoptr(GPtrArray) bound = oracle_loops_bound_to(image);
        g_test_message("after the restart %s is %s", image, bound->len ? "still bound" : "not bound");
        if (bound->len > 0 && list) {
                GVariantIter it;
                const char *dev;
                gboolean managed;
                guint32 owner;
                bool seen = false;

                g_variant_iter_init(&it, list);
                while (g_variant_iter_next(&it, "(&sosttubbbu)", &dev, NULL, NULL, NULL, NULL, NULL, NULL,
                        NULL, &managed, &owner)) {
                        if (!g_str_equal(dev, device))
                                continue;
                        seen = true;
                        g_test_message(
                                "%s is %s, owner %u", dev, managed ? "managed" : "not managed", owner);
                        if (!managed || owner != (guint32)harness_uid_of(HARNESS_USER_A))
                                g_test_fail_printf(
                                        "%s survived the crash but is not A's (managed %d, owner %u): "
                                        "a device nobody but root can detach",
                                        dev, managed, owner);
                }
                g_assert_true(seen);
                /* The caller can find it and detach it. */
                g_assert_true(harness_detach(user, device, NULL, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        check_state_consistent(__FILE__, __LINE__, h);
        /* Whatever happened, root can clean up fully. */
        cleanup_device(h, device);
        check_nothing_left(h, used);
}

/* ---- a full disk under a sparse image ---- */

static char *mount_small_tmpfs(Harness *h)
{
        char *dir = g_build_filename(h->tmpdir, "full", NULL);

        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        if (mount("loopd-test-full", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=24m,mode=0755") < 0) {
                g_test_fail_printf("cannot mount a tmpfs on %s: %s", dir, g_strerror(errno));
                g_free(dir);
                return NULL;
        }
        return dir;
}

/* A 256 MiB sparse image on a 24 MiB tmpfs: writes through the loop device fail once the tmpfs is full.
 * loopd does not crash or hang, its answers stay right, and Unmount and Detach still work. */
void test_full_disk_under_sparse_image(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *full = mount_small_tmpfs(h);
        g_autofree char *made = harness_image_path(h, "ext4-made-here.img");
        g_autofree char *image = NULL, *raw = NULL, *device = NULL, *raw_device = NULL, *mount_point = NULL;
        g_autofree char *node = NULL, *qmade = NULL, *qimage = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        GDBusConnection *user = connect_allowed_user(h);

        if (full && user) {
                image = g_build_filename(full, "sparse.img", NULL);
                raw = g_build_filename(full, "raw.img", NULL);
                qmade = g_shell_quote(made);
                qimage = g_shell_quote(image);
                image_create(made, 256 * MiB);
                image_sfdisk(made, "label: gpt\ntype=linux\n", 0);
                g_free(image_mkfs_at(made, MiB, 254 * MiB, "ext4", "full"));
                g_free(test_sh("cp --sparse=always %s %s && rm -f %s", qmade, qimage, qmade));
                image_create(raw, 256 * MiB);

                /* A raw device: direct writes past what the tmpfs holds fail. */
                g_assert_true(harness_attach_path(user, raw, O_RDWR, NULL, &raw_device, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        if (raw_device) {
                g_autofree char *q = g_shell_quote(raw_device);
                g_ptr_array_add(used, g_strdup(raw_device));
                int status = test_sh_status(
                        NULL, "dd if=/dev/zero of=%s bs=1M count=64 oflag=direct status=none 2>&1", q);
                g_test_message("dd to %s on the full tmpfs exited %d", raw_device, status);
                g_assert_cmpint(status, !=, 0);
                g_autoptr(GVariant) parts = harness_list_partitions(user, raw_device, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                g_assert_true(harness_detach(user, raw_device, NULL, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
                g_assert_cmpint(unlink(raw), ==, 0);

                /* A filesystem: writing fills the tmpfs, ext4 sees write errors and (errors=remount-ro)
                 * goes read-only; Unmount and Detach work. */
                g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        if (device) {
                g_autoptr(GVariant) reply = NULL;
                g_ptr_array_add(used, g_strdup(device));
                node = g_strconcat(device, "p1", NULL);
                reply = harness_call(user, "Mount",
                        g_variant_new("(s@a{sv})", node, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                if (reply)
                        g_variant_get(reply, "(s)", &mount_point);
        }
        if (mount_point) {
                g_autofree char *q = g_shell_quote(mount_point);
                g_autoptr(GVariant) reply = NULL;
                int status = test_sh_status(NULL,
                        "dd if=/dev/urandom of=%s/big bs=1M count=96 conv=fsync status=none 2>&1; "
                        "r=$?; sync -f %s/. 2>/dev/null; exit $r",
                        q, q);
                g_autofree char *options = mount_options_of(mount_point);
                g_test_message("writing 96 MiB into %s (24 MiB tmpfs below) exited %d; now %s", mount_point,
                        status, options);
                g_assert_cmpint(status, !=, 0);
                g_assert_true(harness_loopd_alive(h));
                g_autoptr(GVariant) parts = harness_list_partitions(user, device, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                reply = harness_call(user, "Unmount",
                        g_variant_new("(s@a{sv})", mount_point, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        if (device) {
                g_assert_true(harness_detach(user, device, NULL, &error));
                harness_assert_no_error(error);
        }

        cleanup_device(h, device);
        cleanup_device(h, raw_device);
        if (full && umount2(full, MNT_DETACH) < 0)
                g_test_message("umount %s: %s", full, g_strerror(errno));
        check_nothing_left(h, used);
}

/* ---------------------------------------------------------------------------------------------------- */

/* ---- loopd killed during a Format ---- */

typedef struct FormatCall {
        GDBusConnection *connection;
        const char *node;
        GError *error;
        gint done;
} FormatCall;

static gpointer format_call_thread(gpointer data)
{
        FormatCall *f = data;
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(f->connection, LOOPD_BUS_NAME,
                LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Format",
                g_variant_new("(ss@a{sv})", f->node, "ext2", harness_empty_options()), NULL,
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &f->error);

        g_atomic_int_set(&f->done, 1);
        return NULL;
}

/* Whether pid has exited (gone, or a zombie its new parent has not reaped), waiting up to timeout_ms. */
static bool process_ended(pid_t pid, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

        for (;;) {
                g_autofree char *state = test_proc_status(pid, "State");

                if (!state || state[0] == 'Z' || state[0] == 'X')
                        return true;
                if (g_get_monotonic_time() >= deadline)
                        return false;
                g_usleep(10 * 1000);
        }
}

/* loopd is killed -9 while a Format's mkfs runs (held stopped here, so that it still runs then): the mkfs
 * goes with loopd. Nothing but loopd bounded it, and a restarted loopd would not know of it (a
 * CreatePartition of the device would write the table under it). The restarted loopd still has the device
 * for its owner, who can detach it. */
void test_loopd_killed_during_format(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "formatted.img");
        g_autofree char *own_log = g_build_filename(h->tmpdir, "own-loopd.log", NULL);
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GSubprocess) own = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;
        GDBusConnection *user = connect_allowed_user(h);
        FormatCall call = { 0 };
        GThread *thread;
        gint64 deadline;
        struct stat st;
        pid_t mkfs = 0;

        if (!user)
                return;
        /* ext2 writes every inode table: on 16 GiB its mkfs runs long enough to be caught. */
        image_create(image, 16384 * MiB);
        own = harness_start_own_loopd(h, own_log, NULL);
        if (!own)
                return;
        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        g_ptr_array_add(used, g_strdup(device));
        g_assert_cmpint(stat(device, &st), ==, 0);

        call = (FormatCall){ .connection = user, .node = device };
        thread = g_thread_new("format", format_call_thread, &call);
        deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (!mkfs && !g_atomic_int_get(&call.done) && g_get_monotonic_time() < deadline) {
                mkfs = test_find_mkfs(st.st_rdev, "mke2fs");
                if (mkfs && !test_stop_running(mkfs))
                        mkfs = 0;
        }
        kill_and_reap(own);
        g_thread_join(thread);
        g_test_message("the Format got: %s", call.error ? call.error->message : "a reply");
        g_clear_error(&call.error);
        if (!mkfs)
                g_test_fail_printf("never saw the mkfs of %s running", device);
        else if (!process_ended(mkfs, 5000)) {
                g_test_fail_printf("the mkfs (pid %d) outlived loopd", (int)mkfs);
                (void)kill(mkfs, SIGKILL);
        }

        g_assert_true(harness_start_loopd(h));
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        cleanup_device(h, device);
        check_nothing_left(h, used);
}
