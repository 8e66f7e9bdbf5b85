/* mount-unmount.c: the mount suite's unmount, close and autoclear, and the errors of the contract. */
#include "test-mount.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Unmount, close, autoclear */

/* Unmount by node or by mount point (a trailing slash is fine) removes the directory every time. */
void test_unmount_removes_mount_point(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "um.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "UM"));
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);

        for (int round = 0; round < 3; round++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, device, NULL, &error);
                g_autofree char *target = NULL;

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
                target = round == 0  ? g_strdup(device)
                        : round == 1 ? g_strdup(mount_point)
                                     : g_strconcat(mount_point, "/", NULL);
                g_test_message("Unmount(%s)", target);
                g_assert_true(harness_unmount(a, target, &error));
                harness_assert_no_error(error);
                check_unmounted(mount_point);
                check_user_dir_empty(h, HARNESS_USER_A);
        }
        g_assert_true(harness_detach(a, device, NULL, NULL));
        check_gone(h, device);
}

/* `loopctl close` unmounts everything of the device, removes the directories, the partitions and the
 * device. */
void test_close_leaves_nothing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "close.img"), *device = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL, *mp1 = NULL, *mp2 = NULL;

        harness_allow_all(h);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        g_autoptr(GPtrArray) parts = oracle_partition_nodes(device);
        g_assert_cmpuint(parts->len, ==, 2);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        mp1 = user_mount(h, HARNESS_USER_A, p1, false);
        mp2 = user_mount(h, HARNESS_USER_A, p2, false);
        g_assert_true(check_mount(h, HARNESS_USER_A, p1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, p2, mp2, NULL));

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        if (mp1)
                check_unmounted(mp1);
        if (mp2)
                check_unmounted(mp2);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* Whether /dev/loopN is bound to a file under dir (a number can be re-used by anyone once it is free). */
static bool loop_bound_under(const char *device, const char *dir)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(dir);

        for (guint i = 0; i < loops->len; i++)
                if (g_str_equal(loops->pdata[i], device))
                        return true;
        return false;
}

/* MountImage's device is autoclear: it stays while anything of it is mounted and goes, partitions and all,
 * with the last Unmount. */
void test_mount_image_autoclear_goes_with_last_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "auto.img"), *device = NULL, *p1 = NULL, *p2 = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        const char *mp1, *mp2;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(reply);
        device = reply_device(reply, &p1, &p2);
        mp1 = reply_mount_point(reply, p1);
        mp2 = reply_mount_point(reply, p2);
        g_assert_true(check_mount(h, HARNESS_USER_A, p1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, p2, mp2, NULL));
        g_autoptr(GVariant) mounts = g_variant_get_child_value(reply, 1);
        g_assert_cmpuint(g_variant_n_children(mounts), ==, 2);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);
        g_assert_true(mount_is_read_only(mp1));
        g_assert_true(mount_is_read_only(mp2));
        g_autofree char *sys_autoclear = g_strdup_printf("/sys/block/%s/loop/autoclear", device + 5),
                        *ac = NULL;
        g_assert_true(g_file_get_contents(sys_autoclear, &ac, NULL, NULL));
        g_assert_cmpstr(g_strstrip(ac), ==, "1");

        g_assert_true(harness_unmount(a, mp1, &error));
        harness_assert_no_error(error);
        check_unmounted(mp1);
        /* One mount left: the device stays, with both partitions. */
        g_assert_true(loop_bound_under(device, h->tmpdir));
        g_autoptr(GPtrArray) parts = oracle_partition_nodes(device);
        g_assert_cmpuint(parts->len, ==, 2);

        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);
        check_unmounted(mp2);
        g_assert_false(loop_bound_under(device, h->tmpdir));
        g_autofree char *sys_backing = g_strdup_printf("/sys/block/%s/loop/backing_file", device + 5);
        if (!g_file_test(sys_backing, G_FILE_TEST_EXISTS))
                check_gone(h, device);
        else
                g_test_message(
                        "%s was re-used by someone else at once; not checking its partitions", device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The errors of the contract */

void test_second_mount_already_mounted(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "twice.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);

        /* The kernel's driver (ext4) and a FUSE helper's mount (vfat) alike. */
        for (guint p = 1; p <= 2; p++) {
                g_autofree char *node = g_strdup_printf("%sp%u", device, p);
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, node, NULL, &error), *again = NULL;
                g_auto(HarnessRun) run = { 0 };

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                again = harness_mount(a, node, NULL, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_ALREADY_MOUNTED, mount_point);
                g_assert_null(again);
                g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", node, NULL), ==, 1);
                g_autoptr(GPtrArray) targets = targets_of(node);
                g_assert_cmpuint(targets->len, ==, 1);
                g_autoptr(GPtrArray) entries = user_dir_entries(h, HARNESS_USER_A);
                g_assert_cmpuint(entries->len, ==, p);
        }
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

void test_unmount_not_mounted(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "nm.img"), *device = NULL, *p1 = NULL,
                        *mount_point = NULL;
        g_autofree char *not_a_mount = g_build_filename(h->tmpdir, "plain-dir", NULL);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_assert_cmpint(g_mkdir(not_a_mount, 0755), ==, 0);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        p1 = g_strconcat(device, "p1", NULL);

        /* Never mounted. */
        g_assert_false(harness_unmount(a, p1, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, not_a_mount, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_true(g_file_test(not_a_mount, G_FILE_TEST_IS_DIR)); /* not loopd's to remove */

        /* Mounted and unmounted: a second Unmount, by node or by the old mount point. */
        mount_point = harness_mount(a, p1, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(harness_unmount(a, p1, &error));
        harness_assert_no_error(error);
        g_assert_false(harness_unmount(a, p1, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "unmount", p1, NULL), ==, 1);

        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

/* MountImage of images without a mountable filesystem: NothingToMount, and the attach is rolled back. */
void test_mount_image_nothing_to_mount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *zeros = harness_image_path(h, "zeros.img"),
                        *empty = harness_image_path(h, "empty-parts.img");
        g_autofree char *swap = harness_image_path(h, "swap.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const char *const images[] = { zeros, empty, swap, NULL };
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(zeros, 16 * MiB);
        image_create(empty, 16 * MiB);
        image_sfdisk(empty, "label: gpt\nsize=4MiB\nsize=4MiB\n", 0);
        image_create(swap, 16 * MiB);
        g_free(image_mkfs_at(swap, 0, 16 * MiB, "swap", "SWAP"));

        for (const char *const *i = images; *i; i++) {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) reply = call_mount_image(a, *i, O_RDONLY, NULL, &error);

                g_test_message("MountImage(%s)", *i);
                g_assert_null(reply);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOTHING_TO_MOUNT, NULL);
                check_gone(h, "/dev/loop-none");
                g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
                check_user_dir_empty(h, HARNESS_USER_A);
        }
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "open", zeros, NULL), ==, 1);
        check_gone(h, "/dev/loop-none");
        g_assert_true(loopd_alive(h));
}

/* minix: blkid knows it, this kernel has no driver for it (not in /proc/filesystems, no modules) and no
 * FUSE helper exists: UnsupportedFilesystem naming the type, through Mount and MountImage alike. */
void test_unsupported_filesystem(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "minix.img"), *qimage = g_shell_quote(image),
                        *device = NULL;
        g_autofree char *filesystems = NULL, *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_assert_true(g_file_get_contents("/proc/filesystems", &filesystems, NULL, NULL));
        if (strstr(filesystems, "\tminix\n")) {
                g_test_skip("this kernel has a minix driver: minix is no unsupported filesystem here");
                return;
        }
        image_create(image, 8 * MiB);
        g_free(test_sh("mkfs.minix -3 %s >/dev/null", qimage));
        g_autoptr(GHashTable) blkid = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(blkid, "TYPE"), ==, "minix");

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM, "minix");
        g_assert_null(mount_point);
        check_nothing_mounted(h, device);
        g_clear_error(&error);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);

        g_autoptr(GVariant) reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        g_assert_null(reply);
        harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM, "minix");
        check_gone(h, "/dev/loop-none");
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* The FUSE helper serving a mount is gone when Unmount returns: nothing holds the device any more. */
void test_fuse_helper_exits_with_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "helper.iso"),
                        *tree = g_build_filename(h->tmpdir, "tree", NULL);
        g_autofree char *qimage = g_shell_quote(image), *qtree = g_shell_quote(tree);
        g_autofree char *device = NULL, *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo x > %s/x; xorriso -as mkisofs -quiet -o %s -V HELPER %s 2>/dev/null",
                qtree, qtree, qimage, qtree));
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "fuse"));
        g_autoptr(GPtrArray) serving = holders_of(rdev_of(device), "fuseiso");
        g_assert_cmpuint(serving->len, >=, 1); /* the oracle sees the helper */

        g_assert_true(harness_unmount(a, mount_point, &error));
        /* At once, before anything else runs: Unmount returns only once the helper is gone. */
        g_autoptr(GPtrArray) left = holders_of(rdev_of(device), "fuseiso");
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        for (guint i = 0; i < left->len; i++)
                g_test_fail_printf(
                        "process %s still holds %s after Unmount returned", (char *)left->pdata[i], device);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* A file open in the mount: Unmount is Busy and changes nothing, Detach without unmount is Busy too;
 * once the file is closed both work. */
void test_unmount_busy_while_file_open(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "busy.img", "BUSY"), *device = NULL, *mount_point = NULL;
        g_autofree char *file = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        int fd;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        file = g_build_filename(mount_point, "home", NULL);
        fd = open(file, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        g_assert_false(harness_unmount(a, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, NULL);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        g_assert_false(harness_detach(a, device, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, mount_point);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        close(fd);
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* Another user can neither look into the user's mounts nor unmount them (manage-others is denied here). */
void test_other_user_cannot_enter_or_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "mine.img", "MINE"), *device = NULL, *mount_point = NULL;
        g_autofree char *file = NULL, *dir = user_dir(h, HARNESS_USER_A), *got = NULL, *again = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;

        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_ALLOW, 0);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        populate(h, image, 0, "echo private > \"$M/home/secret\"; chmod 0644 \"$M/home/secret\"");
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        file = g_build_filename(mount_point, "home", "secret", NULL);

        got = read_as(h, HARNESS_USER_A, file);
        g_assert_cmpstr(got, ==, "private\n");
        g_clear_pointer(&got, g_free);
        got = read_as(h, HARNESS_USER_B, file);
        g_assert_null(got);
        const char *ls[] = { "ls", dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, ls), !=, 0);

        g_assert_false(harness_unmount(b, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(b, device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        again = harness_mount(b, device, NULL, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_assert_null(again);
        g_clear_error(&error);
        check_nothing_mounted(h, device);
        g_autoptr(GPtrArray) b_entries = user_dir_entries(h, HARNESS_USER_B);
        g_assert_cmpuint(b_entries->len, ==, 0);

        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* Any user can make a FUSE mount and call its source "/dev/loopN" (fusermount takes fsname=). Such a mount
 * of another user's is not the device's: the owner's Mount, Unmount and autoclear are not fooled by it,
 * and loopd never unmounts it. */
void test_user_fuse_mount_posing_as_device_ignored(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "real.img"), *device = NULL, *p1 = NULL, *p2 = NULL;
        g_autofree char *decoy = harness_image_path(h, "decoy.sqfs"),
                        *decoy_dir = g_build_filename(h->tmpdir, "decoy", NULL);
        g_autofree char *tree = g_build_filename(h->tmpdir, "decoy-tree", NULL), *fsname = NULL;
        g_autofree char *qdecoy = g_shell_quote(decoy), *qtree = g_shell_quote(tree), *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        const char *mp1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo decoy > %s/decoy; mksquashfs %s %s -quiet -no-progress >/dev/null; "
                "chmod 0644 %s",
                qtree, qtree, qtree, qdecoy, qdecoy));
        g_assert_cmpint(g_mkdir(decoy_dir, 0755), ==, 0);
        g_assert_cmpint(
                chown(decoy_dir, harness_uid_of(HARNESS_USER_B), harness_gid_of(HARNESS_USER_B)), ==, 0);

        /* A's device, attached autoclear through MountImage; its vfat partition is a FUSE mount. */
        reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(reply);
        device = reply_device(reply, &p1, &p2);
        mp1 = reply_mount_point(reply, p1);
        REQUIRE_NONNULL(mp1);
        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);

        /* B's decoy, named after A's partition. */
        fsname = g_strconcat("fsname=", p2, NULL);
        const char *squashfuse[] = { "squashfuse", "-o", fsname, decoy, decoy_dir, NULL };
        if (run_as(h, HARNESS_USER_B, NULL, squashfuse) != 0) {
                g_test_skip("an unprivileged user cannot make a FUSE mount here (fusermount)");
                user_loopctl_ok(h, HARNESS_USER_A, "close", device);
                return;
        }
        g_autoptr(JsonObject) fake = findmnt_at(decoy_dir);
        REQUIRE_NONNULL(fake);
        g_assert_cmpstr(json_object_get_string_member(fake, "source"), ==, p2);

        /* Unmount by the decoy's path is not an unmount of A's partition: root never unmounts it. */
        g_assert_false(harness_unmount(a, decoy_dir, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_autoptr(JsonObject) fake_still = findmnt_at(decoy_dir);
        g_assert_nonnull(fake_still);

        /* Mount is not AlreadyMounted, and Unmount takes down A's mount, not B's. */
        mount_point = harness_mount(a, p2, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_false(harness_unmount(a, p2, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);

        /* The last real mount goes: the autoclear device goes with it, whatever B's decoy says. */
        g_assert_true(harness_unmount(a, mp1, &error));
        harness_assert_no_error(error);
        g_assert_false(loop_bound_under(device, h->tmpdir));

        /* B's mount was never loopd's to touch. */
        g_autoptr(JsonObject) still = findmnt_at(decoy_dir);
        g_assert_nonnull(still);
        const char *fusermount[] = { "fusermount3", "-u", decoy_dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, fusermount), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* A user's FUSE decoy named after another user's device, mounted and unmounted again, is not that device's
 * last unmount: an autoclear device nobody has mounted yet stays attached. */
void test_user_fuse_decoy_does_not_release_autoclear(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "victim.img"), *device = NULL, *fsname = NULL;
        g_autofree char *decoy = harness_image_path(h, "decoy.sqfs"),
                        *decoy_dir = g_build_filename(h->tmpdir, "decoy", NULL);
        g_autofree char *tree = g_build_filename(h->tmpdir, "decoy-tree", NULL);
        g_autofree char *qdecoy = g_shell_quote(decoy), *qtree = g_shell_quote(tree);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo decoy > %s/decoy; mksquashfs %s %s -quiet -no-progress >/dev/null; "
                "chmod 0644 %s",
                qtree, qtree, qtree, qdecoy, qdecoy));
        g_assert_cmpint(g_mkdir(decoy_dir, 0755), ==, 0);
        g_assert_cmpint(
                chown(decoy_dir, harness_uid_of(HARNESS_USER_B), harness_gid_of(HARNESS_USER_B)), ==, 0);

        g_assert_true(harness_attach_path(
                a, image, O_RDONLY, g_variant_new_parsed("{'autoclear': <true>}"), &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);

        fsname = g_strconcat("fsname=", device, NULL);
        const char *squashfuse[] = { "squashfuse", "-o", fsname, decoy, decoy_dir, NULL };
        if (run_as(h, HARNESS_USER_B, NULL, squashfuse) != 0) {
                g_test_skip("an unprivileged user cannot make a FUSE mount here (fusermount)");
                g_assert_true(harness_detach(a, device, NULL, NULL));
                return;
        }
        const char *fusermount[] = { "fusermount3", "-u", decoy_dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, fusermount), ==, 0);

        /* loopd hears of both mount table changes within milliseconds; releasing would be as quick. */
        for (int i = 0; i < 40; i++) {
                g_usleep(50 * 1000);
                g_assert_true(loop_bound_under(device, h->tmpdir));
        }
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}
