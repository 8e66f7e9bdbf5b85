/* attach-refusals.c: the attach suite's refusals, and partitions that survive udev. */
#include "test-attach.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Refusals */

void test_non_root_not_authorized(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "user.img");
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;
        uid_t uid;
        gid_t gid;

        image_create(image, 32 * MiB);
        g_assert_true(harness_user(HARNESS_USER_A, &uid, &gid));
        g_assert_cmpint(chown(image, uid, gid), ==, 0);

        /* polkit says no to everything (the fake authority's default): an unprivileged caller cannot
         * attach, raw or through loopctl, and cannot detach root's device. */
        GDBusConnection *user = harness_connect_as(h, HARNESS_USER_A);
        if (!user)
                return;
        g_assert_false(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);

        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "attach", "--json", "--no-ask-password",
                                image, NULL),
                ==, 1);
        g_autofree char *json_error = harness_run_json_error(&run, NULL);
        g_assert_cmpstr(json_error, ==, LOOPD_ERROR_NOT_AUTHORIZED);
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        g_autofree char *root_dev = raw_attach(h, image, O_RDWR, NULL);
        if (!root_dev)
                return;
        g_assert_false(harness_detach(user, root_dev, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        harness_run_clear(&run);
        g_assert_cmpint(
                harness_loopctl(h, HARNESS_USER_A, &run, "detach", "--no-ask-password", root_dev, NULL), ==,
                1);
        g_autoptr(JsonObject) still = oracle_losetup(root_dev);
        g_assert_nonnull(still);
        if (still)
                g_assert_cmpstr(json_object_get_string_member(still, "back-file"), ==, image);

        raw_detach(h, root_dev);
        verify_detached(h, root_dev, image);
}

void test_invalid_options(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "opts.img");
        /* option dictionary → the key the error must name */
        const struct {
                const char *options;
                const char *error;
                const char *key;
        } cases[] = {
                { "{'no-such-option': <true>}", "org.freedesktop.DBus.Error.InvalidArgs", "no-such-option" },
                { "{'offset': <'4096'>}", "org.freedesktop.DBus.Error.InvalidArgs", "offset" },
                { "{'read-only': <uint32 1>}", "org.freedesktop.DBus.Error.InvalidArgs", "read-only" },
                { "{'sector-size': <uint64 4096>}", "org.freedesktop.DBus.Error.InvalidArgs",
                        "sector-size" },
                { "{'partition-scan': <'yes'>}", "org.freedesktop.DBus.Error.InvalidArgs",
                        "partition-scan" },
                { "{'sector-size': <uint32 1000>}", LOOPD_ERROR_INVALID_ARGUMENT, "sector-size" },
        };

        image_create(image, 16 * MiB);
        for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_test_message("Attach with %s", cases[i].options);
                g_assert_false(harness_attach_path(
                        h->bus, image, O_RDWR, g_variant_new_parsed(cases[i].options), &device, &error));
                harness_assert_dbus_error(error, cases[i].error, cases[i].key);
        }
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        /* Detach checks its options before it touches the device. */
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        g_autoptr(GError) error = NULL;
        g_assert_false(harness_detach(h->bus, device, g_variant_new_parsed("{'bogus': <true>}"), &error));
        harness_assert_dbus_error(error, "org.freedesktop.DBus.Error.InvalidArgs", "bogus");
        g_clear_error(&error);
        g_assert_false(harness_detach(h->bus, device, g_variant_new_parsed("{'unmount': <'yes'>}"), &error));
        harness_assert_dbus_error(error, "org.freedesktop.DBus.Error.InvalidArgs", "unmount");
        g_autoptr(JsonObject) still = oracle_losetup(device);
        g_assert_nonnull(still);
        raw_detach(h, device);
        verify_detached(h, device, image);
}

void test_non_regular_fd_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "fd.img");
        int pipefd[2], sv[2], fd;

        image_create(image, 16 * MiB);
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
        const struct {
                const char *what;
                int fd;
        } cases[] = {
                { "a directory", open(h->image_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) },
                { "an O_PATH fd", open(image, O_PATH | O_CLOEXEC) },
                { "a pipe", pipefd[0] },
                { "a socket", sv[0] },
                { "a character device", open("/dev/null", O_RDWR | O_CLOEXEC) },
        };

        for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_test_message("Attach with %s", cases[i].what);
                g_assert_cmpint(cases[i].fd, >=, 0);
                g_assert_false(harness_attach_fd(h->bus, cases[i].fd, NULL, &device, NULL, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, NULL);
                close(cases[i].fd);
        }
        close(pipefd[1]);
        close(sv[1]);

        /* A block device is not an image either: attach one of our own devices to itself. */
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        fd = open(device, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        {
                g_autoptr(GError) error = NULL;
                g_autofree char *nested = NULL;
                g_assert_false(harness_attach_fd(h->bus, fd, NULL, &nested, NULL, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, NULL);
                if (nested)
                        raw_detach(h, nested);
        }
        close(fd);
        raw_detach(h, device);
        verify_detached(h, device, image);
        g_assert_true(harness_loopd_alive(h));
}

/* Waits (inotify on /dev, bounded) until device has n partition nodes; returns whether it has. */
static bool wait_for_partition_nodes(const char *device, guint n, int timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        bool ok = false;

        g_assert_cmpint(fd, >=, 0);
        /* Watch first, then look: a node made in between is not missed. */
        g_assert_cmpint(inotify_add_watch(fd, "/dev", IN_CREATE | IN_DELETE), >=, 0);
        for (;;) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                char buf[4096];

                if (nodes->len == n) {
                        ok = true;
                        break;
                }
                if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                        break;
                while (read(fd, buf, sizeof(buf)) > 0)
                        ;
        }
        close(fd);
        return ok;
}

/* udev's "watch" rule turns a close-after-write of a whole disk into a partition table re-read (BLKRRPART);
 * on a kernel without partition parsers that drops the partitions loopd added with BLKPG. They must come
 * back (a desktop kernel would re-create them from the table). */
void test_partitions_survive_udev_watch(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "watch.img");
        g_autoptr(GError) error = NULL;
        int fd;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        g_autoptr(GPtrArray) before = oracle_partition_nodes(device);
        g_assert_cmpuint(before->len, ==, 2);

        fd = open(device, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        close(fd);
        /* The test (not loopd) may wait for udev's queue: the re-read has happened after this. */
        g_free(test_sh("udevadm settle --timeout=30"));

        if (!wait_for_partition_nodes(device, 2, HARNESS_TIMEOUT_MS))
                g_test_fail_printf(
                        "the partitions of %s did not come back within %d ms after udev re-read its table",
                        device, HARNESS_TIMEOUT_MS);
        g_autoptr(GVariant) parts = harness_list_partitions(h->bus, device, &error);
        harness_assert_no_error(error);
        if (parts)
                g_assert_cmpuint(g_variant_n_children(parts), ==, 2);
        raw_detach(h, device);
        verify_detached(h, device, image);
}
