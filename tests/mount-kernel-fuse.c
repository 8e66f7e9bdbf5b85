/* mount-kernel-fuse.c: the mount-kernel suite's FUSE mounts as the user and their helpers. */
#include "test-mount-kernel.h"

/* ---- FUSE ---- */

void test_fuse_iso9660_as_user(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "medium.iso"), *node = NULL, *target = NULL;
        struct stat st;
        bool fuse;

        REQUIRE(f);
        image_make_hybrid_iso(image, "MY ISO");
        node = attach(f, image, false);
        g_assert_cmpint(mount_pick_driver("iso9660", &fuse), ==, 0);
        if (mount_kernel_has_filesystem("iso9660"))
                g_test_message("this kernel has iso9660: forcing the FUSE path");

        target = mount_for(f, node, "iso9660", NULL, false, 1, "MY, ISO", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_found_in_mount_table(node, target);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));

        g_autofree char *readme = g_build_filename(target, "README.TXT", NULL);
        g_assert_cmpint(stat(readme, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        g_assert_cmpuint(st.st_gid, ==, USER_UID);
        assert_user_reads(target, "README.TXT", "loopd test medium\n");
        assert_other_user_kept_out(target, "README.TXT");

        fuse_unmount_and_check_helper(f, target);
        assert_not_in_mount_table(node, target);
}

void test_fuse_vfat_as_user(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "vfat.img"), *node = NULL, *target = NULL, *qimage = NULL;
        struct stat st;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "vfat", "MYVFAT"));
        qimage = g_shell_quote(image);
        g_free(test_sh("printf 'hello from vfat' > %s/hello.txt && mcopy -i %s %s/hello.txt ::/hello.txt",
                f->scratch.dir, qimage, f->scratch.dir));
        node = attach(f, image, false);

        target = mount_for(f, node, "vfat", "noexec", false, 1, "MYVFAT", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, "noexec"));

        /* fusefat shows the short name. */
        g_autofree char *hello = g_build_filename(target, "HELLO.TXT", NULL);
        g_assert_cmpint(stat(hello, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        assert_user_reads(target, "HELLO.TXT", "hello from vfat");
        assert_other_user_kept_out(target, "HELLO.TXT");

        fuse_unmount_and_check_helper(f, target);
}

/* Writes as the user through FUSE, unmounts (which waits for the helper to flush and exit), mounts again
 * and reads back. */
static void assert_user_writes_survive_remount(Fixture *f, const char *fstype)
{
        g_autofree char *image = path_in(f, "fs.img"), *node = NULL, *target = NULL, *again = NULL;
        struct stat st;

        g_free(image_mkfs_at(image, 0, 64 * MB, fstype, "MYDISK"));
        node = attach(f, image, false);

        target = mount_for(f, node, fstype, NULL, false, 1, "MYDISK", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_assert_cmpint(stat(target, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        g_autofree char *write = g_strdup_printf("printf 'written by the user' > '%s/new.txt'", target);
        g_assert_cmpint(sh_as(USER_UID, NULL, write), ==, 0);
        assert_other_user_kept_out(target, "new.txt");
        fuse_unmount_and_check_helper(f, target);

        again = mount_for(f, node, fstype, NULL, true, 1, "MYDISK", NULL);
        if (!again)
                return;
        g_autofree char *options = findmnt(again, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        assert_user_reads(again, "new.txt", "written by the user");
        g_autofree char *file = g_build_filename(again, "new.txt", NULL);
        g_assert_cmpint(stat(file, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        /* umask=0022: not writable by group or others. */
        g_assert_cmpuint(st.st_mode & 022, ==, 0);
        fuse_unmount_and_check_helper(f, again);
}

void test_fuse_exfat_as_user_writes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_user_writes_survive_remount(f, "exfat");
}

void test_fuse_ntfs_as_user_writes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_user_writes_survive_remount(f, "ntfs");
}

void test_fuse_ext4_via_fuse2fs_read_only(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;
        g_autofree char *before = NULL, *after = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "hello from fuse2fs");
        make_dirty_journal(f, node);
        before = test_sha256_of_file(image);

        target = mount_for(f, node, "ext4", NULL, true, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_user_reads(target, "hello.txt", "hello from fuse2fs");
        /* nosuid holds for FUSE too. */
        g_autofree char *id = g_strdup_printf("'%s/id' -u", target);
        g_assert_cmpint(sh_as(USER_UID, &out, id), ==, 0);
        g_assert_cmpstr(g_strstrip(out), ==, "65534");
        g_autofree char *write = g_strdup_printf("echo x > '%s/hello.txt'", target);
        g_assert_cmpint(test_sh_status(NULL, "%s", write), !=, 0);
        fuse_unmount_and_check_helper(f, target);

        after = test_sha256_of_file(image);
        g_assert_cmpstr(before, ==, after);
}

void test_fuse_ext4_via_fuse2fs_writes_reach_the_device(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;
        g_autofree char *qnode = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "hello from fuse2fs");
        qnode = g_shell_quote(node);

        target = mount_for(f, node, "ext4", NULL, false, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_autofree char *big = g_strdup_printf(
                "head -c 8M /dev/urandom > '%s/big' && sha256sum < '%s/big'", target, target);
        g_autofree char *sum = test_sh("%s", big);
        g_autoptr(GArray) pids = helpers_serving(target);
        g_assert_cmpuint(pids->len, ==, 1);

        /* fuse2fs writes its caches back only after the kernel let go of the mount: once
         * unmount_filesystem() returns, that must have happened. */
        g_assert_cmpint(unmount_filesystem(target, NULL), ==, 0);
        for (guint i = 0; i < pids->len; i++)
                g_assert_true(process_exited(g_array_index(pids, pid_t, i)));
        out = test_sh("e2fsck -fn %s >/dev/null 2>&1 && debugfs -R 'cat /big' %s 2>/dev/null | sha256sum",
                qnode, qnode);
        g_assert_cmpstr(out, ==, sum);
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

void test_fuse_squashfs_via_squashfuse(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "sq.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 4 * MB, "squashfs", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "squashfs", NULL, false, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello", "loopd\n");
        fuse_unmount_and_check_helper(f, target);
}

void test_fuse_helper_failure_leaves_nothing_mounted(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        int r = 0;

        REQUIRE(f);
        /* Not an ISO: fuseiso fails. */
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "iso9660", NULL, true, 1, "disk", &r);
        g_assert_null(target);
        g_assert_cmpint(r, <, 0);
        g_autoptr(GArray) pids = helpers_serving(node);
        g_assert_cmpuint(pids->len, ==, 0);
}
