/* mount-open-twice.c: the same image opened twice. A second double-click (any fd of the same file, writable
 * or not) gets the device and mounts of the first back; a second read-write device on bytes that another
 * device writes to is refused unless asked for. Oracles: losetup (devices backed by the image) and the
 * mount table. */
#include "test-mount.h"

/* The devices the kernel has bound to image (by path: the test's images have one name each). */
static guint devices_backed_by(const char *image)
{
        g_autofree char *out = test_sh("losetup --list --noheadings --raw --output BACK-FILE");
        g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
        guint n = 0;

        for (char **l = lines; *l; l++)
                if (g_str_equal(*l, image))
                        n++;
        return n;
}

/* MountImage as user a of image opened with open_flags (writable: true when O_RDWR): the reply. */
static GVariant *open_image(GDBusConnection *a, const char *path, int open_flags, GError **error)
{
        GVariant *options = NULL;

        if ((open_flags & O_ACCMODE) == O_RDWR) {
                GVariantBuilder b;
                g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
                g_variant_builder_add(&b, "{sv}", "writable", g_variant_new_boolean(TRUE));
                options = g_variant_builder_end(&b);
        }
        return call_mount_image(a, path, open_flags, options, error);
}

/* Opened writable, then read-only, then through another name of the file (a hard link: a second fd of the
 * same inode): the same device and the same two mounts each time, one device and one mount of each
 * partition in the kernel; `loopctl close IMAGE` then closes it all. */
void test_open_twice_same_device_and_mounts(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "twice.img"),
                        *alias = harness_image_path(h, "twice-link.img"), *device = NULL, *p1 = NULL,
                        *p2 = NULL, *mp1 = NULL, *mp2 = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const int opens[] = { O_RDWR, O_RDONLY, O_RDONLY };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        give_image_to(image, HARNESS_USER_A);
        g_assert_cmpint(link(image, alias), ==, 0);

        for (guint i = 0; i < G_N_ELEMENTS(opens); i++) {
                const char *path = i == 2 ? alias : image;
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) reply = open_image(a, path, opens[i], &error);
                g_autofree char *dev = NULL, *q1 = NULL, *q2 = NULL;

                g_test_message("open %u: %s %s", i + 1, path, opens[i] == O_RDWR ? "writable" : "read-only");
                harness_assert_no_error(error);
                REQUIRE_NONNULL(reply);
                dev = reply_device(reply, &q1, &q2);
                g_autoptr(GVariant) mounts = g_variant_get_child_value(reply, 1);
                g_assert_cmpuint(g_variant_n_children(mounts), ==, 2);
                if (i == 0) {
                        device = g_strdup(dev);
                        p1 = g_strdup(q1);
                        p2 = g_strdup(q2);
                        mp1 = g_strdup(reply_mount_point(reply, p1));
                        mp2 = g_strdup(reply_mount_point(reply, p2));
                        REQUIRE_NONNULL(mp1);
                        REQUIRE_NONNULL(mp2);
                        g_assert_true(check_mount(h, HARNESS_USER_A, p1, mp1, "ext4"));
                        g_assert_true(check_mount(h, HARNESS_USER_A, p2, mp2, NULL));
                        g_assert_false(mount_is_read_only(mp1));
                        continue;
                }
                g_assert_cmpstr(dev, ==, device);
                g_assert_cmpstr(reply_mount_point(reply, p1), ==, mp1);
                g_assert_cmpstr(reply_mount_point(reply, p2), ==, mp2);
                /* The kernel's view: still one device, one mount of each partition, still writable. */
                g_assert_cmpuint(devices_backed_by(image) + devices_backed_by(alias), ==, 1);
                g_autoptr(GPtrArray) t1 = targets_of(p1);
                g_autoptr(GPtrArray) t2 = targets_of(p2);
                g_assert_cmpuint(t1->len, ==, 1);
                g_assert_cmpuint(t2->len, ==, 1);
                g_assert_false(mount_is_read_only(mp1));
        }

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        check_unmounted(mp1);
        check_unmounted(mp2);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_cmpint(g_unlink(alias), ==, 0);
}

/* A partition unmounted since the first open is mounted again by the second, the other one's mount comes
 * back as it was; an image open read-only cannot be opened writable (Busy, nothing changes). */
void test_open_again_mounts_what_is_missing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "again.img"), *device = NULL, *p1 = NULL, *p2 = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GVariant) first = NULL, second = NULL, refused = NULL;
        g_autoptr(GError) error = NULL;
        const char *mp1, *mp2, *again1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        give_image_to(image, HARNESS_USER_A);
        first = open_image(a, image, O_RDONLY, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(first);
        device = reply_device(first, &p1, &p2);
        mp1 = reply_mount_point(first, p1);
        mp2 = reply_mount_point(first, p2);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);

        g_assert_true(harness_unmount(a, mp1, &error));
        harness_assert_no_error(error);
        check_unmounted(mp1);

        refused = open_image(a, image, O_RDWR, &error);
        g_assert_null(refused);
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, "read-only");
        g_clear_error(&error);
        g_assert_cmpuint(devices_backed_by(image), ==, 1);
        g_autoptr(GPtrArray) none = targets_of(p1);
        g_assert_cmpuint(none->len, ==, 0);

        second = open_image(a, image, O_RDONLY, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(second);
        g_autofree char *dev = NULL;
        g_variant_get_child(second, 0, "s", &dev);
        g_assert_cmpstr(dev, ==, device);
        again1 = reply_mount_point(second, p1);
        REQUIRE_NONNULL(again1);
        g_assert_true(check_mount(h, HARNESS_USER_A, p1, again1, "ext4"));
        g_assert_true(mount_is_read_only(again1));
        g_assert_cmpstr(reply_mount_point(second, p2), ==, mp2);
        g_autoptr(GPtrArray) t2 = targets_of(p2);
        g_assert_cmpuint(t2->len, ==, 1);

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        check_unmounted(again1);
        check_unmounted(mp2);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* Attach read-write of an image another device writes to is Busy, naming that device, whoever attached it
 * (here: losetup); read-only is fine, and so is a range of the file the other device does not cover;
 * shared: true (loopctl attach --shared) asks for the second writer explicitly. */
void test_attach_second_writer_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "writer.img"), *qimage = g_shell_quote(image);
        g_autofree char *outside = NULL, *ro = NULL, *p2 = NULL, *shared = NULL;
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        give_image_to(image, HARNESS_USER_A);
        /* The first writer: partition 1's bytes, bound by losetup (MiB 1 to 33). */
        outside = test_sh("losetup --find --show --offset %" G_GUINT64_FORMAT
                          " --sizelimit %" G_GUINT64_FORMAT " %s",
                1 * MiB, 32 * MiB, qimage);
        g_strstrip(outside);
        g_assert_true(g_str_has_prefix(outside, "/dev/loop"));

        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "attach", image, NULL), ==, 1);
        g_assert_nonnull(strstr(run.err, outside));
        g_assert_nonnull(strstr(run.err, "read-write"));
        g_assert_cmpuint(devices_backed_by(image), ==, 1);
        harness_run_clear(&run);

        ro = user_attach(h, HARNESS_USER_A, image, false);
        g_assert_nonnull(ro);
        /* Partition 2's bytes only: no overlap with the first writer. */
        g_autoptr(JsonNode) second = harness_loopctl_json(
                h, HARNESS_USER_A, "attach", "--offset", G_STRINGIFY(34603008), image, NULL); /* 33 MiB */
        p2 = json_member(second, "device");
        g_assert_nonnull(p2);

        /* shared: true, asked explicitly (loopctl attach --shared). */
        g_autoptr(JsonNode) third =
                harness_loopctl_json(h, HARNESS_USER_A, "attach", "--shared", image, NULL);
        shared = json_member(third, "device");
        g_assert_nonnull(shared);
        g_assert_cmpuint(devices_backed_by(image), ==, 4);

        for (const char *const *d = (const char *const[]){ ro, p2, shared, NULL }; *d; d++)
                if (*d)
                        user_loopctl_ok(h, HARNESS_USER_A, "detach", *d);
        g_free(test_sh("losetup --detach %s", outside));
        g_assert_cmpuint(devices_backed_by(image), ==, 0);
}
