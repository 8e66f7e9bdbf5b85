/* mount-kernel-filesystems.c: the mount-kernel suite's kernel filesystems: nosuid,nodev, errors=, journals
 * left alone, read back, busy, refused. */
#include "test-mount-kernel.h"

/* ---- kernel filesystems ---- */

void test_kernel_ext4_nosuid_nodev(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", "MYEXT4"));
        node = attach(f, image, false);
        populate(f, node, "hello from ext4");

        target = mount_for(f, node, "ext4", NULL, false, -1, "MYEXT4", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from ext4");

        /* nosuid: the setuid-root id runs as the user. */
        g_autofree char *id = g_strdup_printf("'%s/id' -u", target);
        g_assert_cmpint(sh_as(USER_UID, &out, id), ==, 0);
        g_assert_cmpstr(g_strstrip(out), ==, "65534");
        /* nodev: a world-writable /dev/null node on the image cannot be opened. */
        g_autofree char *null = g_strdup_printf("echo x > '%s/null'", target);
        g_assert_cmpint(test_sh_status(NULL, "%s", null), !=, 0);

        unmount_and_remove(f, target);
        assert_not_in_mount_table(node, target);
}

void test_kernel_ext4_errors_panic_becomes_remount_ro(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        g_autofree char *qnode = NULL, *super = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        qnode = g_shell_quote(node);
        g_free(test_sh("tune2fs -e panic %s >/dev/null", qnode));
        super = test_sh("dumpe2fs -h %s 2>/dev/null | grep -i 'errors behavior'", qnode);
        g_assert_nonnull(strstr(super, "Panic"));

        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        /* The kernel shows errors= only when it differs from the superblock's. */
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "errors=remount-ro"));
        unmount_and_remove(f, target);
}

/* Leaves a filesystem whose journal must be replayed: written, then shut down with the log flushed but
 * the filesystem not checkpointed (the ioctl ext4 and xfs share). */
void make_dirty_journal(Fixture *f, const char *node)
{
        g_autofree char *w = path_in(f, "dirty");
        g_autofree char *qw = g_shell_quote(w), *qn = g_shell_quote(node);

        g_assert_cmpint(g_mkdir_with_parents(w, 0755), ==, 0);
        g_free(test_sh("set -e; mount %s %s; trap 'umount %s' EXIT; echo data > %s/new.txt; "
                       "xfs_io -x -c 'shutdown -f' %s",
                qn, qw, qw, qw, qw));
}

static void assert_read_only_mount_leaves_image_alone(Fixture *f, const char *fstype, const char *no_replay)
{
        g_autofree char *image = path_in(f, "fs.img"), *node = NULL, *target = NULL;
        g_autofree char *before = NULL, *after = NULL;

        g_free(image_mkfs_at(image, 0, 320 * MB, fstype, NULL));
        node = attach(f, image, false);
        make_dirty_journal(f, node);
        before = test_sha256_of_file(image);

        target = mount_for(f, node, fstype, NULL, true, -1, "disk", NULL);
        if (!target)
                return;
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, no_replay));
        unmount_and_remove(f, target);

        /* Without no_replay the kernel replays the journal even for a read-only mount, and the image
         * changes. */
        after = test_sha256_of_file(image);
        g_assert_cmpstr(before, ==, after);
}

void test_kernel_ext4_read_only_does_not_replay_journal(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        /* ext4 shows noload as norecovery. */
        assert_read_only_mount_leaves_image_alone(f, "ext4", "norecovery");
}

void test_kernel_xfs_read_only_does_not_replay_log(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_read_only_mount_leaves_image_alone(f, "xfs", "norecovery");
}

void test_kernel_xfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "xfs.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 320 * MB, "xfs", "MYXFS"));
        node = attach(f, image, false);
        populate(f, node, "hello from xfs");

        target = mount_for(f, node, "xfs", "noatime", false, -1, "MYXFS", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from xfs");
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "noatime"));
        unmount_and_remove(f, target);
}

void test_kernel_btrfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "btrfs.img"), *node = NULL, *target = NULL, *ro_target = NULL;
        g_autofree char *majmin = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 320 * MB, "btrfs", "MYBTRFS"));
        node = attach(f, image, false);
        populate(f, node, "hello from btrfs");

        target = mount_for(f, node, "btrfs", NULL, false, -1, "MYBTRFS", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        /* btrfs reports an anonymous device number in mountinfo: found by its source anyway. */
        majmin = findmnt(target, "MAJ:MIN");
        g_autofree char *dev = g_strdup_printf("%u:%u", major(devnum_of(node)), minor(devnum_of(node)));
        g_assert_cmpstr(majmin, !=, dev);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from btrfs");
        unmount_and_remove(f, target);

        ro_target = mount_for(f, node, "btrfs", NULL, true, -1, "MYBTRFS", NULL);
        if (!ro_target)
                return;
        g_autofree char *options = findmnt(ro_target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, "rescue=nologreplay"));
        assert_user_reads(ro_target, "hello.txt", "hello from btrfs");
        unmount_and_remove(f, ro_target);
}

void test_kernel_squashfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "sq.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 4 * MB, "squashfs", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "squashfs", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        assert_user_reads(target, "hello", "loopd\n");
        unmount_and_remove(f, target);
}

void test_kernel_unmount_busy(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *file = NULL;
        int fd;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "busy");

        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        file = g_build_filename(target, "hello.txt", NULL);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        /* No lazy unmount behind the caller's back. */
        g_assert_cmpint(unmount_filesystem(target, NULL), ==, -EBUSY);
        g_assert_true(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, -EBUSY);

        close(fd);
        unmount_and_remove(f, target);
        g_assert_cmpint(unmount_filesystem(target, NULL), !=, 0);
}

void test_kernel_refuses_unsafe_calls(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        g_ptr_array_add(f->targets, g_strdup(target));

        /* Options that did not come from mount_options_build(). */
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "rw", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid,nodev,suid", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid,nodev,dev", false), ==, -EINVAL);
        /* Not a filesystem loopd mounts. */
        g_assert_cmpint(
                mount_filesystem(node, target, "tmpfs", "nosuid,nodev", false), ==, -EPROTONOSUPPORT);
        g_assert_cmpint(mount_filesystem(node, target, "fuse", "nosuid,nodev", true), ==, -EPROTONOSUPPORT);
        /* Not a block device: libmount would set up a loop device for a file. */
        g_assert_cmpint(mount_filesystem(image, target, "ext4", "nosuid,nodev", false), ==, -ENOTBLK);
        /* No FUSE helper for xfs. */
        g_assert_cmpint(mount_filesystem(node, target, "xfs", "nosuid,nodev", true), ==, -EPROTONOSUPPORT);
        /* The wrong filesystem: the kernel's error, nothing left mounted. */
        g_assert_cmpint(mount_filesystem(node, target, "xfs", "nosuid,nodev", false), <, 0);
        g_assert_false(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

void test_kernel_read_only_device_needs_read_only(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        int r = 0;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, true);

        /* No silent read-only fallback (it would mount without noload). */
        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", &r);
        g_assert_null(target);
        g_assert_true(r == -EROFS || r == -EACCES);

        target = mount_for(f, node, "ext4", NULL, true, -1, "disk", NULL);
        if (!target)
                return;
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        unmount_and_remove(f, target);
}

/* mountinfo escapes blanks and backslashes in mount points; every lookup must still find them. */
void test_kernel_label_needing_escapes(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *name = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        g_assert_cmpint(mount_name_sanitize("  My Disk\\042 \xc3\xbcn\xc3\xaf\tx ", &name), ==, 0);
        g_assert_cmpstr(name, ==, "My Disk\\042 \xc3\xbcn\xc3\xaf x");

        target = mount_for(f, node, "ext4", NULL, false, 0, name, NULL);
        if (!target)
                return;
        g_assert_true(g_str_has_suffix(target, name));
        assert_found_in_mount_table(node, target);
        unmount_and_remove(f, target);
        assert_not_in_mount_table(node, target);
}
