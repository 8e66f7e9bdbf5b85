/* vdisk-crash.c: the qemu-storage-daemon serving an attached image dies (kill -9 by the test, found by the
 * image it holds and the export its device binds): reads of the device return, Detach or `loopctl close`
 * still cleans everything up, loopd lives on. And a stand-in qemu-storage-daemon that exits at once (1,
 * or 0 without ever serving): the Attach fails within the call's time, nothing is left. */
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>

#include "test-vdisk.h"

/* kill -9 pid and wait until it is gone; false (and the test failed) when it is not. */
static bool kill_server(pid_t pid)
{
        struct pollfd pfd = { .events = POLLIN };
        int r;

        pfd.fd = pidfd_open(pid, 0);
        if (pfd.fd < 0) {
                harness_fail("pidfd_open(%d): %s", (int)pid, g_strerror(errno));
                return false;
        }
        g_test_message("killing qemu-storage-daemon %d", (int)pid);
        if (pidfd_send_signal(pfd.fd, SIGKILL, NULL, 0) < 0) {
                harness_fail("kill -9 %d: %s", (int)pid, g_strerror(errno));
                close(pfd.fd);
                return false;
        }
        do
                r = poll(&pfd, 1, HARNESS_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        close(pfd.fd);
        if (r <= 0) {
                harness_fail("qemu-storage-daemon %d did not die within %d ms of SIGKILL", (int)pid,
                        HARNESS_TIMEOUT_MS);
                return false;
        }
        return true;
}

static void subprocess_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
        (void)g_subprocess_wait_finish(G_SUBPROCESS(source), result, NULL);
        *(bool *)user_data = true;
}

static gboolean flag_timeout(gpointer user_data)
{
        *(bool *)user_data = true;
        return G_SOURCE_REMOVE;
}

/* Reads from device with O_DIRECT in a process of its own (a read that hangs in the kernel cannot be
 * interrupted, not even by SIGKILL): checks that it returns (with data or an error) within timeout_ms. A
 * reader that hangs is left behind; it returns once loopd lets the dead FUSE connection go. */
static void check_read_returns(const char *device, guint timeout_ms)
{
        g_autofree char *input = g_strconcat("if=", device, NULL);
        g_autoptr(GError) error = NULL;
        g_autoptr(GMainContext) context = g_main_context_new();
        GSubprocess *reader;
        GSource *timeout;
        bool done = false, timed_out = false;

        /* 16 KiB in the middle of partition 1, which nothing has read yet. */
        reader = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                &error, "dd", input, "of=/dev/null", "bs=4096", "count=4", "skip=4000", "iflag=direct",
                NULL);
        if (!reader) {
                harness_fail("cannot run dd: %s", error->message);
                return;
        }
        g_main_context_push_thread_default(context);
        g_subprocess_wait_async(reader, NULL, subprocess_done, &done);
        timeout = g_timeout_source_new(timeout_ms);
        g_source_set_callback(timeout, flag_timeout, &timed_out, NULL);
        g_source_attach(timeout, context);
        while (!done && !timed_out)
                g_main_context_iteration(context, TRUE);
        g_source_destroy(timeout);
        g_source_unref(timeout);
        if (done)
                g_test_message("a read of %s after the crash: %s", device,
                        g_subprocess_get_successful(reader) ? "data (from a cache)" : "an error");
        else
                harness_fail("a read of %s after its server died did not return within %u ms", device,
                        timeout_ms);
        g_main_context_pop_thread_default(context);
        /* A hung reader: GLib's worker reaps it once it returns. */
        g_object_unref(reader);
}

/* Attaches image read-only as the user; the device, its export checked. */
static char *attach_read_only(Harness *h, GDBusConnection *a, const char *image)
{
        g_autoptr(GError) error = NULL;
        char *device = NULL;

        if (!harness_attach_path(a, image, O_RDONLY, NULL, &device, &error)) {
                harness_assert_no_error(error);
                return NULL;
        }
        g_free(check_export(h, device));
        return device;
}

/* The server of an attached qcow2 killed: a read of the device returns, Detach (bounded by the call's
 * timeout) takes the device, the export and its files away, and loopd attaches the image again. */
void test_server_killed_detach_cleans_up(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *again = NULL;
        g_autoptr(GError) error = NULL;
        pid_t server;
        gint64 start;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        device = attach_read_only(h, a, image);
        REQUIRE_NONNULL(device);
        server = server_of(h, image);
        if (!server || !kill_server(server))
                return;

        check_read_returns(device, 20000);
        g_assert_true(harness_loopd_alive(h));
        start = g_get_monotonic_time();
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        g_test_message("Detach after the crash took %" G_GINT64_FORMAT " ms",
                (g_get_monotonic_time() - start) / 1000);
        check_nothing_left(h, device);
        g_assert_true(harness_loopd_alive(h));

        /* loopd serves the image again. */
        again = attach_read_only(h, a, image);
        REQUIRE_NONNULL(again);
        g_assert_true(harness_detach(a, again, NULL, &error));
        harness_assert_no_error(error);
        check_nothing_left(h, again);
}

/* The server of an opened qcow2 killed under its two mounts (ext4 in the kernel, vfat through fusefat):
 * `loopctl close IMAGE` unmounts and detaches all of it. */
void test_server_killed_under_mounts_close_cleans_up(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL;
        pid_t server;
        gint64 start;

        harness_allow_all(h);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        device = open_image(h, HARNESS_USER_A, image, false, &mp1, &mp2);
        REQUIRE_NONNULL(device);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);
        g_free(check_export(h, device));
        server = server_of(h, image);
        if (!server || !kill_server(server))
                return;

        check_read_returns(device, 20000);
        start = g_get_monotonic_time();
        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        g_test_message("close after the crash took %" G_GINT64_FORMAT " ms",
                (g_get_monotonic_time() - start) / 1000);
        check_nothing_left(h, device);
        g_assert_true(harness_loopd_alive(h));
}

/* loopd runs a stand-in for qemu-storage-daemon (the case's loopd_args) that exits at once: Attach and
 * `loopctl open` of a qcow2 fail with one of loopd's errors within the call's timeout, and leave nothing;
 * loopd still attaches a raw image. */
void test_server_fails_to_start(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *raw = NULL, *remote = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(HarnessRun) run = { 0 };
        gint64 start;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");

        start = g_get_monotonic_time();
        g_assert_false(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        g_test_message("Attach failed after %" G_GINT64_FORMAT " ms: %s",
                (g_get_monotonic_time() - start) / 1000, error ? error->message : "(no error)");
        remote = error ? g_dbus_error_get_remote_error(error) : NULL;
        if (!remote || !g_str_has_prefix(remote, LOOPD_ERROR_PREFIX))
                harness_fail("Attach failed with %s, expected one of loopd's errors",
                        remote ? remote : "no D-Bus error");
        if (device) {
                harness_fail("Attach with a server that exits at once gave %s", device);
                g_clear_error(&error);
                (void)harness_detach(a, device, NULL, &error);
        }
        check_nothing_left(h, NULL);

        (void)harness_loopctl(h, HARNESS_USER_A, &run, "open", image, NULL);
        harness_check_loopctl_refused("loopctl open", &run, NULL);
        check_nothing_left(h, NULL);
        g_assert_true(harness_loopd_alive(h));

        g_clear_pointer(&device, g_free);
        g_clear_error(&error);
        raw = g_steal_pointer(&disk);
        g_assert_true(harness_attach_path(a, raw, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_nothing_left(h, device);
}

/* loopd itself is killed with SIGKILL while it serves an opened qcow2 (its own loopd, the harness's stopped
 * first). data NULL: the restarted loopd adopts the export: the device is still the user's and a qcow2, its
 * files still read, the process is still the one that served it, and `loopctl close` leaves nothing.
 * data non-NULL: root detaches the device (losetup -d) while loopd is gone; the restarted loopd tears the
 * export down: no process, mount or export file left. */
void test_loopd_killed_export_adopted(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        const bool detached_meanwhile = ((const VdiskCase *)data)->data != NULL;
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autofree char *own_log = g_build_filename(h->tmpdir, "own-loopd.log", NULL);
        g_autoptr(GSubprocess) own = NULL;
        pid_t server, after;

        harness_allow_all(h);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        g_assert_true(harness_stop_loopd(h));
        own = harness_start_own_loopd(h, own_log, NULL);
        REQUIRE_NONNULL(own);
        device = open_image(h, HARNESS_USER_A, image, false, &mp1, &mp2);
        REQUIRE_NONNULL(device);
        REQUIRE_NONNULL(mp1);
        g_free(check_export(h, device));
        server = server_of(h, image);
        if (!server) {
                harness_fail("no qemu-storage-daemon serves %s", image);
                return;
        }

        g_subprocess_force_exit(own);
        g_assert_true(g_subprocess_wait(own, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(own));
        g_assert_true(process_running(server));

        if (detached_meanwhile) {
                /* The last unmount may detach it already (an opened image's device has autoclear). */
                g_free(test_sh(
                        "umount %s %s; losetup -d %s 2>/dev/null; true", mp1, mp2 ? mp2 : "", device));
                g_assert_true(harness_start_loopd(h));
                /* The device is gone: the export goes with the restart, the process first. */
                g_assert_false(process_running(server));
                check_nothing_left(h, device);
                return;
        }

        g_assert_true(harness_start_loopd(h));
        g_assert_cmpint(loop_read_only(device), ==, 1);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE_NONNULL(a);
        check_image_format(a, device, "qcow2");
        g_autoptr(GVariant) owner = device_property(a, device, "OwnerUID");
        REQUIRE_NONNULL(owner);
        g_assert_cmpuint(g_variant_get_uint32(owner), ==, harness_uid_of(HARNESS_USER_A));
        check_files(h, HARNESS_USER_A, mp1, ext4_files);
        after = server_of(h, image);
        g_assert_cmpint(after, ==, server);

        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        g_assert_false(process_running(server));
        check_nothing_left(h, device);
}
