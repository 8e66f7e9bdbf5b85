/* test-robust.c: loopd stays sound when images and clients misbehave (issue #14): it keeps no fd of an image
 * after Detach, a hung image (a FUSE file whose reads never come back) times out without stalling anyone
 * else, a mount or an unmount that hangs in the kernel times out, a file that stops answering stat() holds
 * nothing up, the partitions it adds survive udev's watch rule (it holds a BSD lock on its devices), and
 * MountImage asks for a password at most once. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* The action MountImage asks for, interactively and once, when both attach and mount need a password. */
#define ACTION_OPEN_IMAGE "org.loopd1.open-image"

/* loopd --io-timeout for the hung-image tests, and how much later than that its Timeout may come. */
#define IO_TIMEOUT_S 2
#define TIMEOUT_SLACK_MS 5000
/* What "answered in normal time" means while a hung call is pending: a functional bound (ASan build). */
#define PROMPT_MS 3000
/* What a call takes that must not have waited for its image at all: well under --io-timeout. */
#define UNASKED_MS (IO_TIMEOUT_S * 1000 / 2)
/* How long a call made while something may be stalled waits before giving up (> PROMPT_MS, so a slow
 * answer is told apart from none). */
#define CALL_BOUND_MS 10000
/* How long loopd may take to let go of things after its reply. */
#define SETTLE_MS 5000

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers */

/* Fails (and logs) when error is set. */
static bool expect_ok(const char *what, const GError *error)
{
        if (error)
                harness_fail("%s: %s", what, error->message);
        return !error;
}

/* The open fds of process pid whose target lies under dir ("fd N -> PATH"). */
static GPtrArray *fds_under(GPid pid, const char *dir)
{
        GPtrArray *held = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd", (int)pid);
        g_autofree char *prefix = g_strconcat(dir, "/", NULL);
        g_autoptr(GError) error = NULL;
        g_autoptr(GDir) d = pid > 0 ? g_dir_open(fd_dir, 0, &error) : NULL;
        const char *name;

        if (!d) {
                harness_fail("cannot read %s: %s", fd_dir, error ? error->message : "loopd is not running");
                return held;
        }
        while ((name = g_dir_read_name(d))) {
                g_autofree char *link = g_build_filename(fd_dir, name, NULL);
                g_autofree char *target = g_file_read_link(link, NULL);

                if (target && (g_str_has_prefix(target, prefix) || g_str_equal(target, dir)))
                        g_ptr_array_add(held, g_strdup_printf("fd %s -> %s", name, target));
        }
        return held;
}

/* Mount points (from /proc/self/mountinfo) at or under dir. */
static GPtrArray *mounts_under(const char *dir)
{
        GPtrArray *found = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *contents = NULL;
        size_t n = strlen(dir);

        if (!g_file_get_contents("/proc/self/mountinfo", &contents, NULL, NULL)) {
                harness_fail("cannot read /proc/self/mountinfo");
                return found;
        }
        g_auto(GStrv) lines = g_strsplit(contents, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) f = g_strsplit(*l, " ", 6);
                if (g_strv_length(f) >= 5 && strncmp(f[4], dir, n) == 0 &&
                        (f[4][n] == '\0' || f[4][n] == '/'))
                        g_ptr_array_add(found, g_strdup(f[4]));
        }
        return found;
}

/* Loop devices bound to files under dir, waiting up to timeout_ms for them to go. */
static GPtrArray *loops_under_after(const char *dir, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        GPtrArray *left = oracle_loops_backed_by(dir);

        while (left->len > 0 && g_get_monotonic_time() < deadline) {
                g_usleep(100 * 1000);
                g_ptr_array_unref(left);
                left = oracle_loops_backed_by(dir);
        }
        return left;
}

static void fail_listing(const char *what, GPtrArray *items)
{
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; i < items->len; i++)
                g_string_append_printf(s, "%s%s", i ? ", " : "", (char *)items->pdata[i]);
        harness_fail("%s: %s", what, s->str);
}

/* Manager.method(params) as c, waiting at most CALL_BOUND_MS; *ret_ms is how long it took. */
static GVariant *call_timed(GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds,
        GDBusCallFlags flags, gint64 *ret_ms, GError **error)
{
        gint64 t0 = g_get_monotonic_time();
        GVariant *reply = g_dbus_connection_call_with_unix_fd_list_sync(c, LOOPD_BUS_NAME,
                LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, method, params, NULL, flags, CALL_BOUND_MS, fds,
                NULL, NULL, error);

        *ret_ms = (g_get_monotonic_time() - t0) / 1000;
        return reply;
}

/* method(h fd, a{sv} {}) as c: Attach or MountImage of an fd. */
static GVariant *call_with_fd(GDBusConnection *c, const char *method, int fd, GDBusCallFlags flags,
        gint timeout_ms, gint64 *ret_ms, GError **error)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        gint64 t0 = g_get_monotonic_time();
        GVariant *reply = NULL;
        int index = g_unix_fd_list_append(fds, fd, error);

        if (index >= 0)
                reply = g_dbus_connection_call_with_unix_fd_list_sync(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                        LOOPD_MANAGER_INTERFACE, method,
                        g_variant_new("(h@a{sv})", index, harness_empty_options()), NULL, flags, timeout_ms,
                        fds, NULL, NULL, error);
        if (ret_ms)
                *ret_ms = (g_get_monotonic_time() - t0) / 1000;
        return reply;
}

static char *device_of_reply(GVariant *reply)
{
        char *device = NULL;

        if (reply)
                g_variant_get_child(reply, 0, "s", &device);
        return device;
}

/* ---------------------------------------------------------------------------------------------------- */
/* No fd of an image outlives its Detach, whatever the concurrency */

static void test_no_image_fd_after_concurrent_detach(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { N_CLIENTS = 16, CYCLES = 10 };
        g_autofree char *mnt = g_build_filename(h->tmpdir, "tmpfs", NULL);
        HarnessCycler cyclers[N_CLIENTS] = { 0 };
        GThread *threads[N_CLIENTS] = { NULL };
        g_autoptr(GPtrArray) held = NULL, loops = NULL;
        guint done = 0;
        bool mounted = false;

        harness_allow_all(h);
        g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
        if (mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256m,mode=0755") < 0) {
                harness_fail("mount -t tmpfs on %s: %s", mnt, g_strerror(errno));
                return;
        }
        mounted = true;

        for (guint i = 0; i < N_CLIENTS; i++) {
                /* Half root, half a user: both paths through authorization and ownership. */
                cyclers[i] = (HarnessCycler){ .image = g_strdup_printf("%s/client-%02u.img", mnt, i),
                        .cycles = CYCLES,
                        .problems = g_ptr_array_new_with_free_func(g_free),
                        .connection = harness_connect_as(h, i % 2 == 0 ? NULL : HARNESS_USER_A) };
                image_create(cyclers[i].image, 8 * MiB);
                image_sfdisk(cyclers[i].image, "label: gpt\nsize=2MiB, type=linux\ntype=linux\n", 0);
                if (!cyclers[i].connection) {
                        harness_fail("client %u cannot connect to the bus", i);
                        goto out;
                }
        }

        gint64 t0 = g_get_monotonic_time();
        for (guint i = 0; i < N_CLIENTS; i++)
                threads[i] = g_thread_new("cycler", harness_cycler_thread, &cyclers[i]);
        for (guint i = 0; i < N_CLIENTS; i++)
                g_thread_join(threads[i]);
        for (guint i = 0; i < N_CLIENTS; i++) {
                for (guint k = 0; k < cyclers[i].problems->len; k++)
                        harness_fail("%s", (char *)cyclers[i].problems->pdata[k]);
                done += cyclers[i].done;
        }
        g_test_message("%d clients x %d attach+detach cycles in %" G_GINT64_FORMAT " ms, %u completed",
                N_CLIENTS, CYCLES, (g_get_monotonic_time() - t0) / 1000, done);
        g_assert_cmpuint(done, ==, N_CLIENTS * CYCLES);

        /* Every Detach has been answered: loopd may take a moment to let go, no more. */
        gint64 deadline = g_get_monotonic_time() + SETTLE_MS * 1000;
        held = fds_under(harness_loopd_pid(h), mnt);
        while (held->len > 0 && g_get_monotonic_time() < deadline) {
                g_usleep(100 * 1000);
                g_ptr_array_unref(held);
                held = fds_under(harness_loopd_pid(h), mnt);
        }
        if (held->len > 0)
                fail_listing("loopd still holds images after every Detach returned", held);
        loops = oracle_loops_backed_by(mnt);
        if (loops->len > 0)
                fail_listing("still bound to an image after every Detach returned", loops);
        g_assert_true(harness_loopd_alive(h));

        /* What a user sees: the file system holding the images can be unmounted (no "target is busy"). */
        if (umount2(mnt, 0) < 0)
                harness_fail("umount %s after all the Detach calls: %s", mnt, g_strerror(errno));
        else
                mounted = false;

out:
        for (guint i = 0; i < N_CLIENTS; i++) {
                g_free(cyclers[i].image);
                if (cyclers[i].problems)
                        g_ptr_array_unref(cyclers[i].problems);
        }
        if (mounted) {
                test_cleanup_loops_under(mnt);
                if (umount2(mnt, MNT_DETACH) < 0)
                        g_test_message("cleanup: umount -l %s: %s", mnt, g_strerror(errno));
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* A hung image (reads never return) times out alone */

/* A call made from a thread of its own, so that the test can go on while it is pending: method(fd, {}),
 * or with node set Mount(node, {}). */
typedef struct PendingCall {
        GDBusConnection *connection;
        const char *method;
        int fd;
        const char *node;
        GMutex lock;
        GCond cond;
        bool done;
        gint64 started, elapsed_ms;
        GVariant *reply;
        GError *error;
} PendingCall;

static gpointer pending_call_thread(gpointer data)
{
        PendingCall *c = data;
        GError *error = NULL;
        gint64 ms;
        gint64 t0 = g_get_monotonic_time();
        GVariant *reply = c->node ? g_dbus_connection_call_sync(c->connection, LOOPD_BUS_NAME,
                                            LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Mount",
                                            g_variant_new("(s@a{sv})", c->node, harness_empty_options()),
                                            NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error)
                                  : call_with_fd(c->connection, c->method, c->fd, G_DBUS_CALL_FLAGS_NONE,
                                            HARNESS_TIMEOUT_MS, NULL, &error);

        ms = (g_get_monotonic_time() - t0) / 1000;

        g_mutex_lock(&c->lock);
        c->reply = reply;
        c->error = error;
        c->elapsed_ms = ms;
        c->done = true;
        g_cond_broadcast(&c->cond);
        g_mutex_unlock(&c->lock);
        return NULL;
}

/* Whether the call was answered by deadline (monotonic µs). */
static bool pending_call_wait(PendingCall *c, gint64 deadline)
{
        bool done;

        g_mutex_lock(&c->lock);
        while (!c->done && g_cond_wait_until(&c->cond, &c->lock, deadline))
                ;
        done = c->done;
        g_mutex_unlock(&c->lock);
        return done;
}

/* Attach of a normal image and ListDevices as c: both answered in normal time. */
static void check_served_promptly(GDBusConnection *c, const char *image, const char *when)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL, list = NULL, detached = NULL;
        g_autofree char *device = NULL;
        gint64 ms;
        int fd = open(image, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        reply = call_with_fd(c, "Attach", fd, G_DBUS_CALL_FLAGS_NONE, CALL_BOUND_MS, &ms, &error);
        close(fd);
        g_test_message("Attach of %s %s: %" G_GINT64_FORMAT " ms", image, when, ms);
        expect_ok("Attach of the normal image", error);
        g_assert_cmpint(ms, <, PROMPT_MS);
        device = device_of_reply(reply);
        g_clear_error(&error);
        if (device) {
                detached =
                        call_timed(c, "Detach", g_variant_new("(s@a{sv})", device, harness_empty_options()),
                                NULL, G_DBUS_CALL_FLAGS_NONE, &ms, &error);
                g_test_message("Detach of %s %s: %" G_GINT64_FORMAT " ms", device, when, ms);
                expect_ok("its Detach", error);
                g_assert_cmpint(ms, <, PROMPT_MS);
                g_clear_error(&error);
        }
        list = call_timed(c, "ListDevices", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, &ms, &error);
        g_test_message("ListDevices %s: %" G_GINT64_FORMAT " ms", when, ms);
        expect_ok("ListDevices", error);
        g_assert_cmpint(ms, <, PROMPT_MS);
}

/* data (h->options->data): "Attach" or "MountImage", of the hung file. */
static void test_hung_image_times_out_alone(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const char *method = h->options->data;
        g_autofree char *image = harness_image_path(h, "normal.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        const gint64 limit_ms = IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        PendingCall call = { .method = method, .fd = -1, .connection = a };
        g_autoptr(GPtrArray) left = NULL, mounts = NULL;
        GThread *thread = NULL;
        HarnessHang hang = { 0 };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        image_create(image, 16 * MiB);
        image_sfdisk(image, "label: gpt\nsize=4MiB, type=linux\ntype=linux\n", 0);
        g_mutex_init(&call.lock);
        g_cond_init(&call.cond);
        if (!harness_hang_start(h, &hang))
                goto out;

        /* Opening is answered at once; only reads hang. */
        call.fd = open(hang.file, O_RDONLY | O_CLOEXEC);
        if (call.fd < 0) {
                harness_fail("open %s: %s", hang.file, g_strerror(errno));
                goto out;
        }
        call.started = g_get_monotonic_time();
        thread = g_thread_new("hung-call", pending_call_thread, &call);
        g_usleep(500 * 1000); /* let it reach loopd and get stuck */

        /* Meanwhile, loopd serves everyone else. */
        if (pending_call_wait(&call, 0))
                g_test_message(
                        "the %s of the hung image was answered before the other calls were made", method);
        check_served_promptly(b, image, "while the hung one is pending");

        /* The hung call itself: Timeout, within --io-timeout plus slack. */
        if (!pending_call_wait(&call, call.started + limit_ms * 1000)) {
                harness_fail("loopd did not answer the %s of the hung image within %" G_GINT64_FORMAT
                             " ms (--io-timeout %d)",
                        method, limit_ms, IO_TIMEOUT_S);
                goto out;
        }
        g_test_message("%s of the hung image answered after %" G_GINT64_FORMAT " ms: %s", method,
                call.elapsed_ms, call.error ? call.error->message : "success");
        harness_assert_dbus_error(call.error, LOOPD_ERROR_TIMEOUT, NULL);
        g_assert_cmpint(call.elapsed_ms, <=, limit_ms);

        /* Nothing of it is left (the FUSE server still hangs every read): no device bound to the file, no
         * mount, and loopd still answers. */
        left = loops_under_after(hang.mountpoint, SETTLE_MS);
        if (left->len > 0)
                fail_listing("still bound to the hung image after its Timeout", left);
        mounts = mounts_under(h->media_dir);
        if (mounts->len > 0)
                fail_listing("mounted after the hung image's Timeout", mounts);
        g_assert_true(harness_loopd_alive(h));
        check_served_promptly(b, image, "after the hung one timed out");

out:
        /* Killing the server fails the reads that hang (loopd's, the loop device's): everything comes
         * loose, and a call loopd never answered returns. */
        harness_hang_kill(&hang);
        if (thread)
                g_thread_join(thread);
        if (thread && call.elapsed_ms > limit_ms)
                g_test_message("the %s of the hung image returned after %" G_GINT64_FORMAT " ms: %s", method,
                        call.elapsed_ms, call.error ? call.error->message : "success");
        if (call.reply) {
                g_autofree char *device = device_of_reply(call.reply);
                harness_fail("the %s of the hung image succeeded (%s)", method, device ? device : "?");
                if (device)
                        (void)harness_detach(
                                h->bus, device, g_variant_new_parsed("{'unmount': <true>}"), NULL);
                g_variant_unref(call.reply);
        }
        g_clear_error(&call.error);
        if (call.fd >= 0)
                close(call.fd);
        harness_hang_clear(&hang);
        g_mutex_clear(&call.lock);
        g_cond_clear(&call.cond);
}

/* Starts hang's server (its source and range set) and attaches its file writable as c: the device, or NULL
 * (the test failed). *ret_fd: the file, open (-1: not). */
static char *hang_attach(Harness *h, GDBusConnection *c, HarnessHang *hang, int *ret_fd)
{
        g_autoptr(GVariant) attached = NULL;
        g_autoptr(GError) error = NULL;

        *ret_fd = -1;
        if (!harness_hang_start(h, hang))
                return NULL;
        *ret_fd = open(hang->file, O_RDWR | O_CLOEXEC);
        if (*ret_fd < 0) {
                harness_fail("open %s: %s", hang->file, g_strerror(errno));
                return NULL;
        }
        attached = call_with_fd(c, "Attach", *ret_fd, G_DBUS_CALL_FLAGS_NONE, CALL_BOUND_MS, NULL, &error);
        if (!expect_ok("Attach of the image that hangs", error))
                return NULL;
        return device_of_reply(attached);
}

/* An ext4 image at path (size bytes, label) that hang serves, attached as c: the device, NULL on failure. */
static char *hang_attach_ext4(Harness *h, GDBusConnection *c, HarnessHang *hang, const char *path,
        guint64 size, const char *label, int *ret_fd)
{
        image_create(path, size);
        g_free(image_mkfs_at(path, 0, size, "ext4", label));
        hang->source = path;
        return hang_attach(h, c, hang, ret_fd);
}

/* Kills hang's server (the kernel's reads and writes of its file fail from then on, and what waited on them
 * ends), then checks that nothing stays mounted under loopd's media dir, detaches device (NULL: none) as c
 * (its image's filesystem gone) and checks that nothing stays bound to the file. */
static void hang_release(Harness *h, GDBusConnection *c, HarnessHang *hang, const char *device, int fd)
{
        g_autoptr(GPtrArray) mounts = NULL, left = NULL;
        g_autoptr(GError) error = NULL;

        harness_hang_kill(hang);
        for (gint64 deadline = g_get_monotonic_time() + SETTLE_MS * 1000;; g_usleep(100 * 1000)) {
                g_clear_pointer(&mounts, g_ptr_array_unref);
                mounts = mounts_under(h->media_dir);
                if (mounts->len == 0 || g_get_monotonic_time() >= deadline)
                        break;
        }
        if (mounts->len > 0) {
                fail_listing("still mounted once the server died", mounts);
                if (device)
                        (void)harness_detach(c, device, g_variant_new_parsed("{'unmount': <true>}"), NULL);
        }
        /* Busy while loopd's child of a mount that timed out has not yet seen the server die. */
        for (gint64 deadline = g_get_monotonic_time() + SETTLE_MS * 1000; device;) {
                g_autofree char *remote = NULL;

                g_clear_error(&error);
                if (harness_detach(c, device, NULL, &error))
                        break;
                remote = error ? g_dbus_error_get_remote_error(error) : NULL;
                if (g_strcmp0(remote, LOOPD_ERROR_BUSY) != 0 || g_get_monotonic_time() >= deadline) {
                        harness_fail("Detach %s: %s", device, error ? error->message : "?");
                        break;
                }
                g_usleep(100 * 1000);
        }
        if (hang->mountpoint) {
                left = loops_under_after(hang->mountpoint, SETTLE_MS);
                if (left->len > 0)
                        fail_listing("still bound to the image after its Detach", left);
        }
        if (fd >= 0)
                close(fd);
        harness_hang_clear(hang);
}

/* An ext4 image at path (64 MiB) that hang serves, answering every read but those of the journal's first
 * block: libblkid's probes pass, a read-write mount(2) waits for the journal in the kernel. */
static void journal_hangs(const char *path, HarnessHang *hang)
{
        g_autofree char *journal = NULL, *block_size = NULL;
        guint64 first, bs;

        image_create(path, 64 * MiB);
        g_free(image_mkfs_at(path, 0, 64 * MiB, "ext4", "journal"));
        journal = test_sh("debugfs -R 'bmap <8> 0' %s 2>/dev/null", path);
        block_size = test_sh("dumpe2fs -h %s 2>/dev/null | sed -n 's/^Block size: *//p'", path);
        first = g_ascii_strtoull(g_strstrip(journal), NULL, 10);
        bs = g_ascii_strtoull(g_strstrip(block_size), NULL, 10);
        g_assert_cmpuint(first, >, 0);
        g_assert_cmpuint(bs, >=, 1024);
        hang->source = path;
        hang->hang_from = first * bs;
        hang->hang_to = (first + 1) * bs;
}

/* A mount that hangs in the kernel times out. The image answers every read but those of its ext4 journal:
 * the probes loopd makes (libblkid reads the head and the tail) are answered, and mount(2) of the writable
 * device waits for the journal's superblock in the kernel, uninterruptibly, until the server dies. loopd
 * waits for it twice --io-timeout at most (another caller's call waits as long), never for good: it
 * answers Timeout and goes on serving, and a second Mount of the node, while the first still waits in the
 * kernel, is Busy at once; once the server is killed nothing stays mounted, and the device of the dead
 * image can be detached. */
static void test_hung_mount_times_out(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "normal.img");
        g_autofree char *ext4 = harness_image_path(h, "journal-hangs.img");
        g_autofree char *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        /* loopd waits twice --io-timeout for a mount. */
        const gint64 limit_ms = 2 * IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        PendingCall call = { .method = "Mount", .fd = -1, .connection = a };
        g_autoptr(GVariant) listed = NULL;
        g_autoptr(GError) error = NULL;
        GThread *thread = NULL;
        HarnessHang hang = { 0 };
        gint64 t0, ms;
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        image_create(image, 16 * MiB);
        journal_hangs(ext4, &hang);
        g_mutex_init(&call.lock);
        g_cond_init(&call.cond);
        device = hang_attach(h, a, &hang, &fd);
        if (!device)
                goto out;
        call.node = device;
        call.started = g_get_monotonic_time();
        thread = g_thread_new("hung-mount", pending_call_thread, &call);
        g_usleep(500 * 1000); /* let it reach mount(2) and get stuck */

        if (pending_call_wait(&call, 0))
                g_test_message("the Mount was answered before the other calls were made");
        /* Another caller's call is answered once loopd stops waiting for the mount, at the latest. */
        listed = g_dbus_connection_call_sync(b, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                "ListDevices", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, (gint)limit_ms, NULL, &error);
        expect_ok("ListDevices while a mount hangs in the kernel", error);
        g_clear_error(&error);

        if (!pending_call_wait(&call, call.started + limit_ms * 1000)) {
                harness_fail("loopd did not answer the Mount within %" G_GINT64_FORMAT
                             " ms (--io-timeout %d)",
                        limit_ms, IO_TIMEOUT_S);
                goto out;
        }
        g_test_message("Mount of %s answered after %" G_GINT64_FORMAT " ms: %s", device, call.elapsed_ms,
                call.error ? call.error->message : "success");
        harness_assert_dbus_error(call.error, LOOPD_ERROR_TIMEOUT, NULL);
        g_assert_true(harness_loopd_alive(h));
        check_served_promptly(b, image, "after the mount timed out");

        /* Again, while the first one's child still waits in the kernel: Busy, at once. */
        t0 = g_get_monotonic_time();
        g_free(harness_mount(a, device, NULL, &error));
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("a second Mount of %s answered after %" G_GINT64_FORMAT " ms: %s", device, ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, "still waits in the kernel");
        g_clear_error(&error);
        g_assert_cmpint(ms, <, PROMPT_MS);

        /* A Detach too: the device cannot go while the kernel holds the mount, and loopd does not wait for
         * it to. */
        t0 = g_get_monotonic_time();
        g_assert_false(harness_detach(a, device, NULL, &error));
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("a Detach of %s answered after %" G_GINT64_FORMAT " ms: %s", device, ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, "still waits in the kernel");
        g_clear_error(&error);
        g_assert_cmpint(ms, <, UNASKED_MS);

out:
        /* The server's death fails the read mount(2) waits for: whatever that mount did is undone. */
        harness_hang_kill(&hang);
        if (thread)
                g_thread_join(thread);
        if (call.reply) {
                harness_fail("the Mount whose journal hangs succeeded");
                g_variant_unref(call.reply);
        }
        g_clear_error(&call.error);
        hang_release(h, a, &hang, device, fd);
        g_mutex_clear(&call.lock);
        g_cond_clear(&call.cond);
}

/* MountImage of such an image: Timeout after twice --io-timeout, saying that the device stays attached
 * (the kernel still holds the mount in it, so it cannot be detached yet); once the server is killed it can
 * be, and nothing stays mounted. */
static void test_hung_mount_image_mount_times_out(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *ext4 = harness_image_path(h, "journal-hangs.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const gint64 limit_ms = 2 * IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GPtrArray) bound = NULL;
        g_autoptr(GError) error = NULL;
        HarnessHang hang = { 0 };
        gint64 t0, ms;
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        journal_hangs(ext4, &hang);
        if (!harness_hang_start(h, &hang))
                goto out;
        fd = open(hang.file, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        /* Writable: a read-only ext4 is mounted without its journal (noload), and nothing would hang. */
        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        t0 = g_get_monotonic_time();
        reply = g_dbus_connection_call_with_unix_fd_list_sync(a, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, "MountImage",
                g_variant_new("(h@a{sv})", 0, g_variant_new_parsed("{'writable': <true>}")), NULL,
                G_DBUS_CALL_FLAGS_NONE, (gint)limit_ms + 1000, fds, NULL, NULL, &error);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("MountImage answered after %" G_GINT64_FORMAT " ms: %s", ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_TIMEOUT, "stays attached");
        g_assert_cmpint(ms, <=, limit_ms);
        bound = oracle_loops_backed_by(hang.mountpoint);
        g_assert_cmpuint(bound->len, ==, 1);
        device = g_strdup(bound->pdata[0]);

out:
        hang_release(h, a, &hang, device, fd);
}

/* MountImage of a FAT image (mounted through its FUSE driver here: this kernel has no vfat) whose bytes past
 * its first 64 KiB never answer (but its last 64 KiB, which the look before binding reads): the look at its
 * filesystems times out. Reads of the device may still wait on the image, and the last close of a device
 * waits for them, so the device stays attached, as after a kernel mount that timed out, and the error
 * says so; loopd goes on serving, and once the server is killed the device can be detached. */
static void test_hung_fuse_mount_image_stays(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *fat = harness_image_path(h, "fat-hangs.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const gint64 limit_ms = 2 * IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        g_autoptr(GPtrArray) bound = NULL;
        g_autofree char *device = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        HarnessHang hang = { 0 };
        gint64 ms;
        int fd = -1;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(fat, 32 * MiB);
        g_free(image_mkfs_at(fat, 0, 32 * MiB, "vfat", "HANGS"));
        hang.source = fat;
        hang.hang_from = 64 * 1024;
        hang.hang_to = 32 * MiB - 64 * 1024; /* its tail answers: the probe before binding reads it */
        if (!harness_hang_start(h, &hang))
                goto out;
        fd = open(hang.file, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        reply = call_with_fd(
                a, "MountImage", fd, G_DBUS_CALL_FLAGS_NONE, (gint)limit_ms + 1000, &ms, &error);
        g_test_message("MountImage answered after %" G_GINT64_FORMAT " ms: %s", ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_TIMEOUT, "stays attached");
        g_assert_cmpint(ms, <=, limit_ms);
        g_assert_true(harness_loopd_alive(h));
        bound = oracle_loops_backed_by(hang.mountpoint);
        g_assert_cmpuint(bound->len, ==, 1);
        if (bound->len == 1)
                device = g_strdup(bound->pdata[0]);

out:
        hang_release(h, a, &hang, device, fd);
}

/* Writes 4 MiB to a new file under mount_point (no sync: the page cache, or the FUSE driver, holds it), then
 * stops hang's server from answering anything. */
static void write_then_freeze(HarnessHang *hang, const char *mount_point)
{
        g_autofree char *file = g_build_filename(mount_point, "unwritten", NULL);
        g_autofree char *bytes = g_malloc0(4 * MiB);
        g_autoptr(GError) error = NULL;

        g_assert_true(g_file_set_contents(file, bytes, 4 * MiB, &error));
        harness_assert_no_error(error);
        harness_hang_freeze(hang);
}

/* write_then_freeze(), then Unmounts mount_point as c, waiting up to limit_ms + 1 s; *ret_ms is how long the
 * Unmount took. */
static GVariant *unmount_with_unwritten_data(GDBusConnection *c, HarnessHang *hang, const char *mount_point,
        gint64 limit_ms, gint64 *ret_ms, GError **error)
{
        GVariant *reply;
        gint64 t0;

        write_then_freeze(hang, mount_point);
        t0 = g_get_monotonic_time();
        reply = g_dbus_connection_call_sync(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                "Unmount", g_variant_new("(s@a{sv})", mount_point, harness_empty_options()), NULL,
                G_DBUS_CALL_FLAGS_NONE, (gint)limit_ms + 1000, NULL, error);
        *ret_ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("Unmount of %s answered after %" G_GINT64_FORMAT " ms: %s", mount_point, *ret_ms,
                *error ? (*error)->message : "success");
        return reply;
}

/* A FUSE driver that outlives loopd's wait after the unmount. MountImage (writable) of an exFAT image,
 * mounted through its FUSE driver (this kernel has no exfat), and a file written through the mount; then the
 * image stops answering.
 * The Unmount succeeds, but the driver's write-back waits for the device in the kernel and it cannot exit:
 * loopd stops waiting for it (10 s), and the device, asked to go with its last mount, is still held by
 * it then. It goes once the driver has exited (here: the server killed, the write failed), on its own,
 * without another call. data "restart": loopd is restarted before that, and the new one does it; "outside":
 * root unmounts it with umount(8), which does not wait for the driver, behind loopd's back. */
static void test_slow_fuse_driver_releases_later(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *exfat = harness_image_path(h, "exfat-later.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GPtrArray) bound = NULL, left = NULL;
        g_autofree char *device = NULL, *mount_point = NULL, *fstype = NULL, *why = NULL;
        g_autoptr(GVariant) reply = NULL, mounts = NULL, unmounted = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        /* umount2() bounded by twice --io-timeout, then loopd's wait for the driver */
        const gint64 limit_ms = 2 * IO_TIMEOUT_S * 1000 + 10 * 1000 + TIMEOUT_SLACK_MS;
        HarnessHang hang = { 0 };
        gint64 ms;
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(exfat, 32 * MiB);
        g_free(image_mkfs_at(exfat, 0, 32 * MiB, "exfat", "LATER"));
        hang.source = exfat;
        if (!harness_hang_start(h, &hang))
                goto out;
        fd = open(hang.file, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_unix_fd_list_append(fds, fd, NULL);
        reply = g_dbus_connection_call_with_unix_fd_list_sync(a, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, "MountImage",
                g_variant_new("(h@a{sv})", 0, g_variant_new_parsed("{'writable': <true>}")), NULL,
                G_DBUS_CALL_FLAGS_NONE, CALL_BOUND_MS, fds, NULL, NULL, &error);
        if (!expect_ok("MountImage of the exFAT image", error))
                goto out;
        device = device_of_reply(reply);
        mounts = g_variant_get_child_value(reply, 1);
        g_assert_cmpuint(g_variant_n_children(mounts), ==, 1);
        g_variant_get_child(mounts, 0, "(ss)", NULL, &mount_point);
        fstype = g_strstrip(test_sh("findmnt -n -o FSTYPE --mountpoint %s", mount_point));
        if (!g_str_has_prefix(fstype, "fuse")) {
                /* A kernel with exfat mounts it itself: what this is about does not happen then. */
                why = g_strdup_printf("exfat is mounted by the kernel (%s), not by a FUSE driver", fstype);
                test_cannot_run(why);
                goto out;
        }

        /* Written through the mount, not yet to the image: the driver writes it back as the mount goes, and
         * waits, for the image answers nothing now. */
        if (g_strcmp0(h->options->data, "outside") == 0) {
                g_autofree char *q = g_shell_quote(mount_point);
                write_then_freeze(&hang, mount_point);
                g_assert_cmpint(test_sh_status(NULL, "timeout 60 umount %s", q), ==, 0);
                g_assert_cmpint(test_sh_status(NULL, "findmnt --mountpoint %s >/dev/null", q), !=, 0);
                /* loopd saw it go and tried to release the device, which the driver still held: it waits
                 * for the driver now (without that, its lock held the device from then on). */
                g_assert_true(harness_wait_for_log(
                        harness_loopd_log_path(h), "A FUSE server still holds loop", 2 * SETTLE_MS));
        } else {
                unmounted = unmount_with_unwritten_data(a, &hang, mount_point, limit_ms, &ms, &error);
                if (!expect_ok("Unmount while the driver waits for the device", error))
                        goto out;
                g_assert_cmpint(ms, <=, limit_ms);
        }
        bound = oracle_loops_backed_by(hang.mountpoint);
        g_test_message("%u device(s) still bound after the Unmount", bound->len);
        g_assert_cmpuint(bound->len, ==, 1);
        if (g_strcmp0(h->options->data, "restart") == 0) {
                g_assert_true(harness_stop_loopd(h));
                g_assert_true(harness_start_loopd(h));
        }

        /* The driver's read fails, it exits, and the device goes with it. */
        harness_hang_kill(&hang);
        left = loops_under_after(hang.mountpoint, SETTLE_MS);
        if (left->len > 0)
                fail_listing("still bound once the driver had exited", left);
        else
                g_clear_pointer(&device, g_free);

out:
        hang_release(h, a, &hang, device, fd);
}

/* Reads of loopN's queue that have not come back: /sys/block/loopN/inflight's first number (-1 if
 * unreadable). */
static int reads_in_flight(const char *device)
{
        g_autofree char *text = test_read_sysfs("/sys/block/%s/inflight", device + strlen("/dev/"));

        return text ? atoi(text) : -1;
}

typedef struct AsyncCall {
        bool done;
        GVariant *reply;
        GError *error;
} AsyncCall;

static void async_call_done(GObject *source, GAsyncResult *result, gpointer data)
{
        AsyncCall *c = data;

        c->reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &c->error);
        c->done = true;
}

/* A probe of a device whose image stopped answering times out and its child is killed, but the read it
 * started stays in flight in the loop driver. The device's last close would wait for that read in the
 * kernel, uninterruptibly: a Detach then must not make that close in loopd (nobody else would be served
 * until the image answers). It is Busy, at once, and loopd goes on serving; once the image answers (here:
 * its server killed, the read fails), the Detach goes through. */
static void test_detach_with_reads_in_flight(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *ext4 = harness_image_path(h, "in-flight.img");
        g_autofree char *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GVariant) parts = NULL, listed = NULL;
        g_autoptr(GError) error = NULL;
        AsyncCall detach = { 0 };
        HarnessHang hang = { 0 };
        gint64 t0, ms;
        int fd = -1, in_flight;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        device = hang_attach_ext4(h, a, &hang, ext4, 64 * MiB, "INFLIGHT", &fd);
        if (!device)
                goto out;
        harness_hang_freeze(&hang);
        /* ListPartitions probes the device again, from its image: the probe times out. */
        parts = harness_list_partitions(b, device, &error);
        g_test_message("ListPartitions: %s", error ? error->message : "answered");
        g_clear_error(&error);
        in_flight = reads_in_flight(device);
        g_test_message("reads in flight on %s: %d", device, in_flight);
        if (in_flight <= 0) {
                harness_fail("no read of %s is in flight after the probe timed out", device);
                goto out;
        }

        t0 = g_get_monotonic_time();
        g_dbus_connection_call(a, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Detach",
                g_variant_new("(s@a{sv})", device, harness_empty_options()), NULL, G_DBUS_CALL_FLAGS_NONE,
                CALL_BOUND_MS, NULL, async_call_done, &detach);
        /* Everyone else is served meanwhile. */
        listed = g_dbus_connection_call_sync(b, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                "ListDevices", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, PROMPT_MS, NULL, &error);
        expect_ok("ListDevices while a Detach meets reads in flight", error);
        g_clear_error(&error);
        while (!detach.done)
                g_main_context_iteration(NULL, TRUE);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("Detach answered after %" G_GINT64_FORMAT " ms: %s", ms,
                detach.error ? detach.error->message : "success");
        harness_assert_dbus_error(detach.error, LOOPD_ERROR_BUSY, "in flight");
        g_assert_cmpint(ms, <, PROMPT_MS);
        g_assert_true(harness_loopd_alive(h));

out:
        g_clear_error(&detach.error);
        g_clear_pointer(&detach.reply, g_variant_unref);
        hang_release(h, a, &hang, device, fd);
}

/* An unmount that hangs in the kernel times out too. The image's filesystem is mounted and written to, then
 * its FUSE server stops answering anything: umount2() waits in the kernel to write the data back. loopd
 * answers Timeout within twice --io-timeout and goes on serving (the mount left the table as umount2()
 * began: a second Unmount is NotMounted at once, a Mount of the device Busy at once); the unmount finishes
 * once the server is killed, and the device of the dead image can be detached. */
static void test_hung_unmount_times_out(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *ext4 = harness_image_path(h, "hangs-later.img");
        g_autofree char *device = NULL, *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        const gint64 limit_ms = 2 * IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        g_autoptr(GVariant) listed = NULL, unmounted = NULL;
        g_autoptr(GError) error = NULL;
        HarnessHang hang = { 0 };
        gint64 t0, ms;
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        device = hang_attach_ext4(h, a, &hang, ext4, 64 * MiB, "later", &fd);
        if (!device)
                goto out;
        mount_point = harness_mount(a, device, NULL, &error);
        if (!expect_ok("Mount of the image that hangs later", error))
                goto out;
        /* Data only in the page cache (no sync), then nothing answers any more. */
        unmounted = unmount_with_unwritten_data(a, &hang, mount_point, limit_ms, &ms, &error);
        if (!unmounted && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) {
                harness_fail("loopd did not answer the Unmount within %" G_GINT64_FORMAT " ms", limit_ms);
                goto out;
        }
        harness_assert_dbus_error(error, LOOPD_ERROR_TIMEOUT, NULL);
        g_clear_error(&error);
        listed = g_dbus_connection_call_sync(b, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                "ListDevices", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, PROMPT_MS, NULL, &error);
        expect_ok("ListDevices after the unmount timed out", error);
        g_clear_error(&error);
        /* The mount left the table as umount2() began (the write-back waits after): a second Unmount is
         * NotMounted, at once. */
        t0 = g_get_monotonic_time();
        (void)harness_unmount(a, mount_point, &error);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("a second Unmount answered after %" G_GINT64_FORMAT " ms: %s", ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_cmpint(ms, <, PROMPT_MS);
        /* A Mount of the device meanwhile would wait for the filesystem still being taken down: Busy, at
         * once. */
        t0 = g_get_monotonic_time();
        g_free(harness_mount(a, device, NULL, &error));
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("a Mount meanwhile answered after %" G_GINT64_FORMAT " ms: %s", ms,
                error ? error->message : "success");
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, "still waits in the kernel");
        g_clear_error(&error);
        g_assert_cmpint(ms, <, PROMPT_MS);
        g_assert_true(harness_loopd_alive(h));

out:
        /* The server's death fails the writes umount2() waits for: the unmount ends. */
        hang_release(h, a, &hang, device, fd);
}

/* A file whose filesystem stops answering STATFS: binding a loop device to it waits in the kernel
 * (LOOP_CONFIGURE asks for the discard granularity), uninterruptibly once the server has read the request.
 * loopd binds in a child it waits for up to --io-timeout: the Attach answers Timeout, twice (the second
 * while the first child still waits, its number free to the kernel), everybody else is served in between
 * (while loopd waits for such a child, they wait too, up to --io-timeout), and once the server is killed
 * nothing stays bound to the file. */
static void test_hung_statfs_attach_times_out(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "normal.img");
        g_autofree char *source = harness_image_path(h, "statfs-hangs.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        const gint64 limit_ms = IO_TIMEOUT_S * 1000 + TIMEOUT_SLACK_MS;
        HarnessHang hang = { .freeze_statfs = true };
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        image_create(image, 16 * MiB);
        image_create(source, 16 * MiB);
        hang.source = source;
        if (!harness_hang_start(h, &hang))
                goto out;
        fd = open(hang.file, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                harness_fail("open %s: %s", hang.file, g_strerror(errno));
                goto out;
        }
        harness_hang_freeze(&hang);

        for (int i = 1; i <= 2; i++) {
                g_autoptr(GVariant) reply = NULL;
                g_autoptr(GError) error = NULL;
                gint64 ms;

                reply = call_with_fd(a, "Attach", fd, G_DBUS_CALL_FLAGS_NONE, CALL_BOUND_MS, &ms, &error);
                g_test_message(
                        "Attach %d of the file whose filesystem does not answer statfs(): %" G_GINT64_FORMAT
                        " ms: %s",
                        i, ms, error ? error->message : "success");
                if (reply)
                        harness_fail("Attach %d of the file whose filesystem hangs succeeded", i);
                harness_assert_dbus_error(error, LOOPD_ERROR_TIMEOUT, NULL);
                g_assert_cmpint(ms, <, limit_ms);
                check_served_promptly(b, image, "while a binding waits for its file's filesystem");
        }
        g_assert_true(harness_loopd_alive(h));

out:
        hang_release(h, a, &hang, NULL, fd);
}

/* device as ListDevices shows it to c: managed by loopd or not, and its owner's uid. */
static void assert_listed_as(GDBusConnection *c, const char *device, bool managed, uid_t owner)
{
        g_autoptr(GVariant) reply = NULL, list = NULL;
        g_autoptr(GError) error = NULL;
        GVariantIter iter;
        const char *name;
        gboolean is_managed;
        guint32 uid;
        bool found = false;
        gint64 ms;

        reply = call_timed(c, "ListDevices", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, &ms, &error);
        g_assert_no_error(error);
        list = g_variant_get_child_value(reply, 0);
        g_variant_iter_init(&iter, list);
        while (g_variant_iter_next(&iter, "(&s&o&sttubbbu)", &name, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                &is_managed, &uid)) {
                if (!g_str_equal(name, device))
                        continue;
                found = true;
                g_assert_cmpint(is_managed, ==, managed);
                if (managed)
                        g_assert_cmpuint(uid, ==, owner);
        }
        g_assert_true(found);
}

/* Records are matched to devices by diskseq within the boot they note (state_dir/boot-id): without the note
 * (a loopd before it) a record is checked against the backing file's inode, in a child, and kept; with
 * another boot's, it is dropped, whatever the device is now. */
static void test_records_of_another_boot(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "normal.img");
        g_autofree char *note = g_build_filename(h->state_dir, "boot-id", NULL), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        uid_t uid = harness_uid_of(HARNESS_USER_A);
        int fd;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 16 * MiB);
        fd = open(image, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        reply = call_with_fd(a, "Attach", fd, G_DBUS_CALL_FLAGS_NONE, CALL_BOUND_MS, NULL, &error);
        close(fd);
        g_assert_no_error(error);
        device = device_of_reply(reply);
        g_assert_true(g_file_test(note, G_FILE_TEST_IS_REGULAR));

        /* No note: the record is checked by the device's backing inode and kept. */
        if (!harness_stop_loopd(h))
                goto out;
        g_assert_cmpint(unlink(note), ==, 0);
        if (!harness_start_loopd(h))
                goto out;
        assert_listed_as(a, device, true, uid);
        g_assert_true(g_file_test(note, G_FILE_TEST_IS_REGULAR));

        /* Another boot's note: the record is dropped (its device would be gone after a reboot). */
        if (!harness_stop_loopd(h))
                goto out;
        g_assert_true(g_file_set_contents(note, "00000000-0000-4000-8000-000000000000\n", -1, NULL));
        if (!harness_start_loopd(h))
                goto out;
        assert_listed_as(a, device, false, 0);

out:
        if (device && !harness_detach(a, device, NULL, &error))
                harness_fail("Detach %s: %s", device, error ? error->message : "?");
}

/* A device whose file stops answering GETATTR: its FUSE server answers reads and writes, but a stat() of the
 * file (once the kernel's cached attributes expired) waits for good. LOOP_GET_STATUS64 asks the backing
 * file's attributes too, so loopd must never ask its kernel that, nor stat() the file, in its own process.
 * Its owner mounts, unmounts and detaches the device promptly, anybody else is served meanwhile, and a loopd
 * started again then comes up and takes the device back as its owner's. */
static void test_hung_getattr_keeps_serving(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "normal.img");
        g_autofree char *ext4 = harness_image_path(h, "stat-hangs.img");
        g_autofree char *device = NULL, *target = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;
        HarnessHang hang = { .freeze_getattr = true };
        g_autoptr(GSubprocess) stat_proc = NULL;
        gint64 t0, ms;
        int fd = -1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        image_create(image, 16 * MiB);
        device = hang_attach_ext4(h, a, &hang, ext4, 32 * MiB, "stathangs", &fd);
        if (!device)
                goto out;
        harness_hang_freeze(&hang);
        g_usleep(1500 * 1000); /* the kernel's cached attributes of the file (a second) expire */
        /* It does hang: a stat() of the file waits (until the server is killed, below). */
        stat_proc = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                &error, "stat", hang.file, NULL);
        g_assert_no_error(error);
        g_usleep(1000 * 1000);
        if (g_subprocess_get_identifier(stat_proc) == NULL)
                harness_fail("stat %s was answered: the server still answers GETATTR", hang.file);

        t0 = g_get_monotonic_time();
        target = harness_mount(a, device, NULL, &error);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message(
                "Mount of %s, whose file does not answer stat(): %" G_GINT64_FORMAT " ms", device, ms);
        expect_ok("Mount of the device whose file does not answer stat()", error);
        g_assert_cmpint(ms, <, UNASKED_MS);
        g_clear_error(&error);
        if (target) {
                t0 = g_get_monotonic_time();
                expect_ok("its Unmount", harness_unmount(a, target, &error) ? NULL : error);
                ms = (g_get_monotonic_time() - t0) / 1000;
                g_test_message("Unmount of %s: %" G_GINT64_FORMAT " ms", target, ms);
                g_assert_cmpint(ms, <, UNASKED_MS);
                g_clear_error(&error);
        }
        check_served_promptly(b, image, "while a device's file does not answer stat()");

        /* A loopd started now reads the records the last one left: the device is still A's. */
        if (!harness_stop_loopd(h) || !harness_start_loopd(h))
                goto out;
        assert_listed_as(b, device, true, harness_uid_of(HARNESS_USER_A));
        t0 = g_get_monotonic_time();
        expect_ok("Detach by its owner after loopd started again",
                harness_detach(a, device, NULL, &error) ? NULL : error);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("Detach of %s after the restart: %" G_GINT64_FORMAT " ms", device, ms);
        g_assert_cmpint(ms, <, UNASKED_MS);
        if (!error)
                g_clear_pointer(&device, g_free);
        g_clear_error(&error);
        g_assert_true(harness_loopd_alive(h));

out:
        hang_release(h, a, &hang, device, fd);
        if (stat_proc)
                g_subprocess_wait(stat_proc, NULL, NULL);
}

/* A FUSE helper's process (fusefat, serving an image of its own) that holds a file whose server stopped
 * answering GETATTR. To find the FUSE servers of a device it unmounts, loopd reads the fds of every process
 * of a FUSE helper: it must take what the kernel has cached of the files they lead to, not ask their
 * filesystems (a stat() there waits for good). An Unmount of a FUSE mount of A's is answered promptly, and
 * B is served meanwhile. */
static void test_hung_file_of_fuse_helper(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const char *helper = "/usr/bin/fusefat";
        g_autofree char *image = harness_image_path(h, "fat.img"),
                        *other = harness_image_path(h, "other.img");
        g_autofree char *normal = harness_image_path(h, "normal.img");
        g_autofree char *helper_mnt = g_build_filename(h->tmpdir, "helper-mnt", NULL);
        g_autofree char *fd3 = NULL, *device = NULL, *target = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GSubprocess) holder = NULL;
        g_autoptr(GError) error = NULL;
        HarnessHang hang = { .freeze_getattr = true };
        gint64 t0, ms;
        int held;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        if (!g_file_test(helper, G_FILE_TEST_IS_EXECUTABLE)) {
                g_test_fail_printf("%s is not installed (tools/install-deps installs fusefat)", helper);
                return;
        }
        if (!harness_hang_start(h, &hang))
                goto out;
        held = open(hang.file, O_RDONLY | O_CLOEXEC);
        if (held < 0) {
                harness_fail("open %s: %s", hang.file, g_strerror(errno));
                goto out;
        }
        image_create(other, 16 * MiB);
        g_free(image_mkfs_at(other, 0, 16 * MiB, "vfat", "OTHER"));
        g_assert_cmpint(g_mkdir(helper_mnt, 0755), ==, 0);
        launcher = g_subprocess_launcher_new(
                G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
        g_subprocess_launcher_take_fd(launcher, held, 3);
        holder = g_subprocess_launcher_spawn(
                launcher, &error, helper, "-f", "-o", "ro", other, helper_mnt, NULL);
        g_assert_no_error(error);
        fd3 = g_strdup_printf("/proc/%s/fd/3", g_subprocess_get_identifier(holder));
        for (gint64 deadline = g_get_monotonic_time() + HARNESS_TIMEOUT_MS * 1000;
                !g_file_test(fd3, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < deadline;
                g_usleep(20 * 1000))
                ;
        g_assert_true(g_file_test(fd3, G_FILE_TEST_EXISTS));
        g_usleep(200 * 1000);
        if (!g_subprocess_get_identifier(holder)) {
                harness_fail("%s exited before the test could use it", helper);
                goto out;
        }

        image_create(image, 16 * MiB);
        g_free(image_mkfs_at(image, 0, 16 * MiB, "vfat", "FAT"));
        image_create(normal, 16 * MiB);
        g_assert_true(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        if (!device)
                goto out;
        target = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        if (!target)
                goto out;

        harness_hang_freeze(&hang);
        g_usleep(1500 * 1000); /* the kernel's cached attributes of the file (a second) expire */
        t0 = g_get_monotonic_time();
        expect_ok("Unmount of a FUSE mount while a FUSE helper holds a file that does not answer stat()",
                harness_unmount(a, target, &error) ? NULL : error);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("Unmount of %s: %" G_GINT64_FORMAT " ms", target, ms);
        g_assert_cmpint(ms, <, UNASKED_MS);
        g_clear_error(&error);
        check_served_promptly(b, normal, "while a FUSE helper holds a file that does not answer stat()");

out:
        if (holder) {
                g_subprocess_force_exit(holder);
                (void)g_subprocess_wait(holder, NULL, NULL);
                if (umount2(helper_mnt, MNT_DETACH) < 0 && errno != EINVAL)
                        g_test_message("cleanup: umount -l %s: %s", helper_mnt, g_strerror(errno));
        }
        hang_release(h, a, &hang, device, -1);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Partitions survive udev's watch rule (LOOPD_TEST_UDEV=1) */

/* udev's watch rule turns every close of a whole disk opened for writing into a partition table re-read
 * (BLKRRPART), unless someone holds a BSD lock on the disk; on a kernel without partition parsers a re-read
 * drops the partitions loopd added with BLKPG. loopd holds a shared lock on what it attached, so they never
 * go, not even for a moment. */
static void test_partitions_survive_writable_closes(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { CLOSES = 50 };
        g_autofree char *image = harness_image_path(h, "watched.img"), *device = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL;
        g_autoptr(GError) error = NULL;
        guint deleted = 0, created = 0, closes = 0;
        bool overflow = false;
        int in;

        /* Without a udevd nothing would re-read the table, and the test would prove nothing. */
        if (!h->udev) {
                harness_fail("systemd-udevd is not running (LOOPD_TEST_UDEV=1 starts it)");
                return;
        }
        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        if (!harness_attach_path(h->bus, image, O_RDWR, NULL, &device, &error)) {
                expect_ok("Attach", error);
                return;
        }
        p1 = g_strdup_printf("%sp1", device + strlen("/dev/"));
        p2 = g_strdup_printf("%sp2", device + strlen("/dev/"));
        g_autoptr(GPtrArray) before = oracle_partition_nodes(device);
        g_assert_cmpuint(before->len, ==, 2);

        in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        g_assert_cmpint(in, >=, 0);
        if (in >= 0 && inotify_add_watch(in, "/dev", IN_DELETE | IN_CREATE) < 0)
                harness_fail("inotify_add_watch /dev: %s", g_strerror(errno));
        for (guint i = 0; i < CLOSES; i++) {
                int fd = open(device, O_RDWR | O_CLOEXEC);

                if (fd < 0) {
                        harness_fail("open %s for writing: %s", device, g_strerror(errno));
                        break;
                }
                close(fd);
                closes++;
        }
        /* The test (not loopd) may wait for udev's queue: every re-read has happened after this. */
        g_free(test_sh("udevadm settle --timeout=60"));

        for (;;) {
                char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
                ssize_t n = in >= 0 ? read(in, buf, sizeof(buf)) : -1;

                if (n <= 0)
                        break;
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;

                        if (ev->mask & IN_Q_OVERFLOW)
                                overflow = true;
                        if (ev->len > 0 && (g_str_equal(ev->name, p1) || g_str_equal(ev->name, p2))) {
                                if (ev->mask & IN_DELETE)
                                        deleted++;
                                if (ev->mask & IN_CREATE)
                                        created++;
                        }
                        p += sizeof(*ev) + ev->len;
                }
        }
        if (in >= 0)
                close(in);
        g_test_message(
                "%u writable closes of %s: its partition nodes were deleted %u times, created %u times",
                closes, device, deleted, created);
        g_assert_cmpuint(closes, ==, CLOSES);
        g_assert_false(overflow);
        g_assert_cmpuint(deleted, ==, 0);
        for (guint i = 1; i <= 2; i++) {
                g_autofree char *node = g_strdup_printf("%sp%u", device, i);
                struct stat st;

                if (stat(node, &st) < 0 || !S_ISBLK(st.st_mode))
                        harness_fail("%s is gone after the writable closes", node);
        }
        g_autoptr(GVariant) parts = harness_list_partitions(h->bus, device, &error);
        expect_ok("ListPartitions", error);
        if (parts)
                g_assert_cmpuint(g_variant_n_children(parts), ==, 2);
        g_clear_error(&error);

        (void)harness_detach(h->bus, device, NULL, &error);
        expect_ok("Detach", error);
        g_autoptr(GPtrArray) after = oracle_partition_nodes(device);
        g_assert_cmpuint(after->len, ==, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* MountImage asks for a password once */

typedef struct PromptCase {
        FakeAuthResult attach; /* mount is always FAKE_AUTH_INTERACTIVE */
        const char *prompted_action; /* the one action asked interactively */
} PromptCase;

static void test_mount_image_prompts_once(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const PromptCase *pc = h->options->data;
        g_autofree char *image = harness_image_path(h, "prompt.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GPtrArray) mount_points = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        const char *prompted = NULL;
        guint n_prompts = 0, n_quiet_attach = 0, n_quiet_mount = 0;
        int fd;

        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(h->authority);
        image_create(image, 64 * MiB);
        g_free(image_mkfs_at(image, 0, 64 * MiB, "ext4", "PROMPT"));
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, pc->attach, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_INTERACTIVE, 0);
        fake_authority_set(h->authority, ACTION_OPEN_IMAGE, FAKE_AUTH_INTERACTIVE, 0);
        fake_authority_clear_calls(h->authority);

        fd = open(image, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        reply = call_with_fd(a, "MountImage", fd, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION,
                HARNESS_TIMEOUT_MS, NULL, &error);
        close(fd);
        expect_ok("MountImage", error);
        if (reply) {
                g_autoptr(GVariant) mounts = g_variant_get_child_value(reply, 1);
                GVariantIter it;
                const char *node, *mp;

                device = device_of_reply(reply);
                g_variant_iter_init(&it, mounts);
                while (g_variant_iter_next(&it, "(&s&s)", &node, &mp))
                        g_ptr_array_add(mount_points, g_strdup(mp));
                g_assert_cmpuint(mount_points->len, ==, 1);
        }

        g_autoptr(GPtrArray) calls = fake_authority_calls(h->authority);
        for (guint i = 0; i < calls->len; i++) {
                const FakeAuthCall *c = calls->pdata[i];

                g_test_message("CheckAuthorization(%s, flags %u)", c->action_id, c->flags);
                if (c->flags & 1) {
                        n_prompts++;
                        prompted = c->action_id;
                } else if (g_str_equal(c->action_id, LOOPD_ACTION_ATTACH)) {
                        n_quiet_attach++;
                } else if (g_str_equal(c->action_id, LOOPD_ACTION_MOUNT)) {
                        n_quiet_mount++;
                }
        }
        g_assert_cmpuint(n_prompts, ==, 1);
        g_assert_cmpstr(prompted, ==, pc->prompted_action);
        /* Before prompting, loopd asked without interaction what needs a password. */
        g_assert_cmpuint(n_quiet_attach, >=, 1);
        if (pc->attach == FAKE_AUTH_INTERACTIVE)
                g_assert_cmpuint(n_quiet_mount, >=, 1);

        /* Clean up as root (no password): the last Unmount takes the autoclear device with it. */
        for (guint i = 0; i < mount_points->len; i++) {
                const char *mp = mount_points->pdata[i];

                g_clear_error(&error);
                (void)harness_unmount(h->bus, mp, &error);
                expect_ok("Unmount as root", error);
        }
        g_autoptr(GPtrArray) left = loops_under_after(h->tmpdir, SETTLE_MS);
        if (left->len > 0 && device) {
                harness_fail("%s is still attached after its last Unmount (autoclear)", device);
                (void)harness_detach(h->bus, device, g_variant_new_parsed("{'unmount': <true>}"), NULL);
        }
        g_autoptr(GPtrArray) mounts = mounts_under(h->media_dir);
        if (mounts->len > 0)
                fail_listing("still mounted after Unmount", mounts);
}

/* ---------------------------------------------------------------------------------------------------- */

static const char *const io_timeout_args[] = { "--io-timeout", G_STRINGIFY(IO_TIMEOUT_S), NULL };
static const HarnessOptions opts_hung_attach = { .loopd_args = io_timeout_args, .data = "Attach" };
static const HarnessOptions opts_hung_mount_image = { .loopd_args = io_timeout_args, .data = "MountImage" };
static const HarnessOptions opts_hung_restart = { .loopd_args = io_timeout_args, .data = "restart" };
static const HarnessOptions opts_hung_outside = { .loopd_args = io_timeout_args, .data = "outside" };

static const PromptCase prompt_both = { FAKE_AUTH_INTERACTIVE, ACTION_OPEN_IMAGE };
static const PromptCase prompt_mount_only = { FAKE_AUTH_ALLOW, LOOPD_ACTION_MOUNT };
static const HarnessOptions opts_prompt_both = { .data = &prompt_both };
static const HarnessOptions opts_prompt_mount_only = { .data = &prompt_mount_only };

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);

        /* 'robust-udev' runs only what needs systemd-udevd; the rest runs once, in 'robust', without it. */
        if (g_strcmp0(g_getenv("LOOPD_TEST_UDEV"), "1") == 0) {
                harness_add("/loopd/robust/partitions-survive-50-writable-closes",
                        test_partitions_survive_writable_closes, NULL);
                return g_test_run();
        }
        harness_add("/loopd/robust/no-image-fd-after-concurrent-detach",
                test_no_image_fd_after_concurrent_detach, NULL);
        harness_add("/loopd/robust/hung-image-times-out-alone", test_hung_image_times_out_alone,
                &opts_hung_attach);
        harness_add("/loopd/robust/hung-mount-image-times-out-alone", test_hung_image_times_out_alone,
                &opts_hung_mount_image);
        harness_add("/loopd/robust/hung-mount-times-out", test_hung_mount_times_out, &opts_hung_attach);
        harness_add("/loopd/robust/hung-fuse-mount-image-stays-attached", test_hung_fuse_mount_image_stays,
                &opts_hung_attach);
        harness_add("/loopd/robust/hung-unmount-times-out", test_hung_unmount_times_out, &opts_hung_attach);
        harness_add("/loopd/robust/detach-with-reads-in-flight-is-busy", test_detach_with_reads_in_flight,
                &opts_hung_attach);
        harness_add("/loopd/robust/slow-fuse-driver-releases-the-device-later",
                test_slow_fuse_driver_releases_later, &opts_hung_attach);
        harness_add("/loopd/robust/slow-fuse-driver-releases-the-device-after-a-restart",
                test_slow_fuse_driver_releases_later, &opts_hung_restart);
        harness_add("/loopd/robust/slow-fuse-driver-releases-the-device-after-umount-8",
                test_slow_fuse_driver_releases_later, &opts_hung_outside);
        harness_add("/loopd/robust/hung-mount-image-mount-times-out", test_hung_mount_image_mount_times_out,
                &opts_hung_attach);
        harness_add("/loopd/robust/hung-getattr-keeps-serving", test_hung_getattr_keeps_serving,
                &opts_hung_attach);
        harness_add("/loopd/robust/hung-file-of-a-fuse-helper", test_hung_file_of_fuse_helper,
                &opts_hung_attach);
        harness_add("/loopd/robust/hung-statfs-attach-times-out", test_hung_statfs_attach_times_out,
                &opts_hung_attach);
        harness_add("/loopd/robust/records-of-another-boot", test_records_of_another_boot, NULL);
        harness_add(
                "/loopd/robust/mount-image-prompts-once", test_mount_image_prompts_once, &opts_prompt_both);
        harness_add("/loopd/robust/mount-image-prompts-once-for-mount", test_mount_image_prompts_once,
                &opts_prompt_mount_only);
        return g_test_run();
}
