/* test-mount-units.c: the mount option allow-list and the mount point name sanitiser (no root needed). */
#include "test-mount-units.h"

#define UID 1000
#define GID 1001
#define NODE "/dev/loop7p1"

/* ---- helpers ---- */

/* Builds options; on success returns them (caller frees), on failure NULL with *ret_r and *ret_bad. */
static char *build(
        const char *fstype, const char *user, bool read_only, bool fuse, int *ret_r, char **ret_bad)
{
        char *out = NULL, *bad = NULL;
        int r = mount_options_build(fstype, user, read_only, fuse, UID, GID, NODE, &out, &bad);

        if (ret_r)
                *ret_r = r;
        if (ret_bad)
                *ret_bad = bad;
        else
                free(bad);
        if (r < 0)
                g_assert_null(out);
        return r < 0 ? NULL : out;
}

static char *build_ok(const char *fstype, const char *user, bool read_only, bool fuse)
{
        int r = 0;
        char *out = build(fstype, user, read_only, fuse, &r, NULL);

        if (r < 0)
                g_test_message("mount_options_build(%s, \"%s\") = %s", fstype, user, g_strerror(-r));
        g_assert_cmpint(r, ==, 0);
        g_assert_nonnull(out);
        return out;
}

/* Asserts that user options are refused with -EINVAL naming bad. */
static void assert_rejected(const char *fstype, const char *user, bool fuse, const char *bad_expected)
{
        char *bad = NULL;
        int r = 0;
        char *out = build(fstype, user, false, fuse, &r, &bad);

        g_assert_null(out);
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_cmpstr(bad, ==, bad_expected);
        free(out);
        free(bad);
}

static guint count_items(const char *options, const char *item)
{
        g_auto(GStrv) items = g_strsplit(options, ",", -1);
        guint n = 0;

        for (char **i = items; *i; i++)
                n += g_str_equal(*i, item);
        return n;
}

static bool has_key(const char *options, const char *key)
{
        g_auto(GStrv) items = g_strsplit(options, ",", -1);
        size_t len = strlen(key);

        for (char **i = items; *i; i++)
                if (strncmp(*i, key, len) == 0 && (*i)[len] == '=')
                        return true;
        return false;
}

/* ---- options: what is always there ---- */

static void test_options_always_nosuid_nodev(void)
{
        static const char *const fstypes[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "squashfs", "erofs",
                "vfat", "exfat", "ntfs", "iso9660", "udf" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++)
                for (int ro = 0; ro <= 1; ro++) {
                        g_autofree char *o = build_ok(fstypes[i], NULL, ro, false);
                        g_assert_true(test_options_have(o, "nosuid"));
                        g_assert_true(test_options_have(o, "nodev"));
                }
}

static void test_options_fuse_nosuid_nodev_allow_other(void)
{
        static const char *const fstypes[] = { "ext4", "squashfs", "vfat", "exfat", "ntfs", "iso9660" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                g_autofree char *o = build_ok(fstypes[i], NULL, false, true);
                g_assert_true(test_options_have(o, "nosuid"));
                g_assert_true(test_options_have(o, "nodev"));
                g_assert_true(test_options_have(o, "allow_other"));
                g_assert_true(test_options_have(o, "default_permissions"));
        }
}

static void test_options_fuse_fsname_names_node(void)
{
        g_autofree char *iso = build_ok("iso9660", NULL, true, true);
        g_autofree char *ntfs = build_ok("ntfs", NULL, false, true);

        g_assert_true(test_options_have(iso, "fsname=" NODE));
        /* ntfs-3g refuses fsname= and names the mount after the device itself. */
        g_assert_false(has_key(ntfs, "fsname"));
}

static void test_options_fuse_rejects_unsafe_node(void)
{
        char *out = NULL, *bad = NULL;

        g_assert_cmpint(
                mount_options_build("iso9660", NULL, true, true, UID, GID, "/dev/loop0,suid", &out, &bad),
                ==, -EINVAL);
        g_assert_cmpstr(bad, ==, "fsname");
        g_assert_null(out);
        free(bad);
        bad = NULL;
        g_assert_cmpint(mount_options_build("iso9660", NULL, true, true, UID, GID, "loop0", &out, &bad), ==,
                -EINVAL);
        free(bad);
}

static void test_options_uid_gid_for_foreign_filesystems(void)
{
        static const char *const foreign[] = { "vfat", "exfat", "ntfs", "iso9660", "udf" };
        static const char *const posix[] = { "ext4", "xfs", "btrfs", "squashfs", "erofs" };

        for (size_t i = 0; i < G_N_ELEMENTS(foreign); i++) {
                g_autofree char *o = build_ok(foreign[i], NULL, false, false);
                g_assert_true(test_options_have(o, "uid=1000"));
                g_assert_true(test_options_have(o, "gid=1001"));
        }
        for (size_t i = 0; i < G_N_ELEMENTS(posix); i++) {
                g_autofree char *o = build_ok(posix[i], NULL, false, false);
                g_assert_false(has_key(o, "uid"));
                g_assert_false(has_key(o, "gid"));
        }
}

static void test_options_fuse_uid_gid_where_helper_takes_them(void)
{
        static const char *const with[] = { "vfat", "exfat", "ntfs", "iso9660" };

        for (size_t i = 0; i < G_N_ELEMENTS(with); i++) {
                g_autofree char *o = build_ok(with[i], NULL, false, true);
                g_assert_true(test_options_have(o, "uid=1000"));
                g_assert_true(test_options_have(o, "gid=1001"));
        }
        g_autofree char *sq = build_ok("squashfs", NULL, false, true);
        g_assert_false(has_key(sq, "uid"));
}

static void test_options_default_umask_unless_given(void)
{
        g_autofree char *d = build_ok("vfat", NULL, false, false);
        g_autofree char *given = build_ok("vfat", "umask=077", false, false);
        g_autofree char *fmask = build_ok("exfat", "fmask=0133", false, true);

        g_assert_true(test_options_have(d, "umask=0022"));
        g_assert_true(test_options_have(given, "umask=077"));
        g_assert_cmpuint(count_items(given, "umask=0022"), ==, 0);
        g_assert_true(test_options_have(fmask, "umask=0022"));
        g_assert_true(test_options_have(fmask, "fmask=0133"));
}

static void test_options_ext_errors_remount_ro(void)
{
        static const char *const ext[] = { "ext2", "ext3", "ext4" };

        for (size_t i = 0; i < G_N_ELEMENTS(ext); i++) {
                g_autofree char *o = build_ok(ext[i], NULL, false, false);
                g_assert_true(test_options_have(o, "errors=remount-ro"));
        }
        g_autofree char *xfs = build_ok("xfs", NULL, false, false);
        g_assert_false(has_key(xfs, "errors"));
}

/* ---- options: read-only never replays a journal ---- */

static void test_options_read_only_no_journal_replay(void)
{
        static const struct {
                const char *fstype;
                bool fuse;
                const char *no_replay;
        } cases[] = {
                { "ext3", false, "noload" },
                { "ext4", false, "noload" },
                { "xfs", false, "norecovery" },
                { "btrfs", false, "rescue=nologreplay" },
                { "ext4", true, "norecovery" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *ro = build_ok(cases[i].fstype, NULL, true, cases[i].fuse);
                g_autofree char *rw = build_ok(cases[i].fstype, NULL, false, cases[i].fuse);

                g_assert_true(test_options_have(ro, "ro"));
                g_assert_true(test_options_have(ro, cases[i].no_replay));
                g_assert_false(test_options_have(rw, "ro"));
                g_assert_false(test_options_have(rw, cases[i].no_replay));
        }
}

static void test_options_ro_option_also_no_replay(void)
{
        /* "ro" given as an option, not as the read-only flag, still must not replay. */
        g_autofree char *o = build_ok("ext4", "ro", false, false);

        g_assert_true(test_options_have(o, "noload"));
        g_assert_cmpuint(count_items(o, "ro"), ==, 1);
}

static void test_options_ext2_read_only_without_noload(void)
{
        /* ext2 has no journal, and the kernel refuses noload for it. */
        g_autofree char *o = build_ok("ext2", NULL, true, false);

        g_assert_true(test_options_have(o, "ro"));
        g_assert_false(test_options_have(o, "noload"));
}

static void test_options_read_only_filesystems_forced_ro(void)
{
        static const char *const fstypes[] = { "iso9660", "squashfs", "erofs" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                g_autofree char *o = build_ok(fstypes[i], NULL, false, false);
                g_assert_true(test_options_have(o, "ro"));
                assert_rejected(fstypes[i], "rw", false, "rw");
        }
        /* fusefat's write support is experimental: vfat through FUSE is read-only. */
        g_autofree char *fat = build_ok("vfat", NULL, false, true);
        g_assert_true(test_options_have(fat, "ro"));
        assert_rejected("vfat", "rw", true, "rw");
}

/* ---- options: the allow-list ---- */

static void test_options_accepts_generic(void)
{
        g_autofree char *o = build_ok("ext4",
                "noexec,noatime,nodiratime,lazytime,sync,dirsync,nosymfollow,nosuid,nodev", false, false);
        static const char *const expected[] = { "noexec", "noatime", "nodiratime", "lazytime", "sync",
                "dirsync", "nosymfollow" };

        for (size_t i = 0; i < G_N_ELEMENTS(expected); i++)
                g_assert_true(test_options_have(o, expected[i]));
        g_assert_cmpuint(count_items(o, "nosuid"), ==, 1);
        g_assert_cmpuint(count_items(o, "nodev"), ==, 1);
}

static void test_options_rejects_suid(void)
{
        assert_rejected("ext4", "suid", false, "suid");
        assert_rejected("ext4", "noatime,suid", false, "suid");
        assert_rejected("iso9660", "suid", true, "suid");
}

static void test_options_rejects_dev(void)
{
        assert_rejected("ext4", "dev", false, "dev");
        assert_rejected("vfat", "dev", true, "dev");
}

static void test_options_rejects_uid_gid(void)
{
        assert_rejected("vfat", "uid=0", false, "uid=0");
        assert_rejected("vfat", "gid=0", false, "gid=0");
        assert_rejected("ext4", "uid=0", false, "uid=0");
        assert_rejected("exfat", "uid=0", true, "uid=0");
}

static void test_options_rejects_x_options_and_helpers(void)
{
        assert_rejected("ext4", "x-mount.mkdir", false, "x-mount.mkdir");
        assert_rejected("ext4", "helper=udisks2", false, "helper=udisks2");
        assert_rejected("ext4", "loop=/dev/loop0", false, "loop=/dev/loop0");
        assert_rejected("ext4", "defaults", false, "defaults");
        assert_rejected("ext4", "owner", false, "owner");
        assert_rejected("ext4", "user", false, "user");
}

static void test_options_rejects_errors_panic(void)
{
        assert_rejected("ext4", "errors=panic", false, "errors=panic");
        assert_rejected("ext4", "errors=remount-ro", false, "errors=remount-ro");
}

static void test_options_rejects_journal_tricks(void)
{
        /* Only loopd decides about journal replay. */
        assert_rejected("ext4", "noload", false, "noload");
        assert_rejected("xfs", "norecovery", false, "norecovery");
        assert_rejected("btrfs", "rescue=all", false, "rescue=all");
}

static void test_options_rejects_fuse_internals(void)
{
        assert_rejected("iso9660", "allow_other", true, "allow_other");
        assert_rejected("iso9660", "fsname=/dev/sda", true, "fsname=/dev/sda");
        assert_rejected("vfat", "rw+", true, "rw+");
        assert_rejected("ntfs", "permissions", true, "permissions");
        assert_rejected("iso9660", "modules=subdir", true, "modules=subdir");
}

static void test_options_rejects_unknown(void)
{
        assert_rejected("ext4", "frobnicate", false, "frobnicate");
        /* Known, but for another filesystem. */
        assert_rejected("ext4", "shortname=lower", false, "shortname=lower");
        assert_rejected("ext4", "norock", false, "norock");
        assert_rejected("vfat", "subvol=@", false, "subvol=@");
        /* Case matters, as for the kernel. */
        assert_rejected("ext4", "NOATIME", false, "NOATIME");
}

static void test_options_rejects_empty_items(void)
{
        assert_rejected("ext4", ",", false, "(empty option)");
        assert_rejected("ext4", "noatime,,noexec", false, "(empty option)");
        assert_rejected("ext4", ",noatime", false, "(empty option)");
        assert_rejected("ext4", "noatime,", false, "(empty option)");
}

static void test_options_empty_string_is_no_options(void)
{
        g_autofree char *a = build_ok("ext4", "", false, false);
        g_autofree char *b = build_ok("ext4", NULL, false, false);

        g_assert_cmpstr(a, ==, b);
}

static void test_options_rejects_comma_smuggling(void)
{
        /* A value cannot carry a comma: the split makes the smuggled part an option of its own. */
        assert_rejected("vfat", "shortname=lower,uid=0", false, "uid=0");
        assert_rejected("vfat", "iocharset=utf8,suid", false, "suid");
        /* Quoting is libmount's way of putting commas in values: quotes are refused. */
        assert_rejected("vfat", "iocharset=\"utf8,uid=0\"", false, "iocharset=\"utf8");
        assert_rejected("btrfs", "subvol=\"a", false, "subvol=\"a");
        /* Backslash escapes are libfuse's. */
        assert_rejected("btrfs", "subvol=a\\", false, "subvol=a\\");
}

static void test_options_rejects_newline_and_control_chars(void)
{
        assert_rejected("ext4", "noatime\nuid=0", false, "noatime\\x0auid=0");
        assert_rejected("btrfs", "subvol=a\tb", false, "subvol=a\\x09b");
        assert_rejected("btrfs", "subvol=a\x7f", false, "subvol=a\\x7f");
        assert_rejected("btrfs", "subvol=\x1b[31m", false, "subvol=\\x1b[31m");
}

static void test_options_bad_item_is_printable_and_bounded(void)
{
        g_autofree char *long_item = g_strnfill(300, 'a');
        char *bad = NULL;
        int r;

        g_assert_null(build("ext4", long_item, false, false, &r, &bad));
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_nonnull(bad);
        g_assert_cmpuint(strlen(bad), <=, 64 + 3);
        g_assert_true(g_str_has_suffix(bad, "..."));
        free(bad);

        /* Invalid UTF-8 in the offender must not reach a D-Bus error message raw. */
        bad = NULL;
        g_assert_null(build("ext4", "\xff\xfe", false, false, &r, &bad));
        g_assert_cmpstr(bad, ==, "\\xff\\xfe");
        g_assert_true(g_utf8_validate(bad, -1, NULL));
        free(bad);
}

static void test_options_ret_bad_may_be_null(void)
{
        char *out = NULL;

        g_assert_cmpint(
                mount_options_build("ext4", "suid", false, false, UID, GID, NODE, &out, NULL), ==, -EINVAL);
        g_assert_null(out);
}

static void test_options_rejects_conflicts(void)
{
        assert_rejected("ext4", "ro,rw", false, "rw");
        assert_rejected("ext4", "exec,noexec", false, "noexec");
        assert_rejected("vfat", "umask=022,umask=077", false, "umask=077");
        assert_rejected("btrfs", "subvol=@,subvolid=5", false, "subvolid=5");

        char *bad = NULL;
        int r;
        g_assert_null(build("ext4", "rw", true, false, &r, &bad));
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_cmpstr(bad, ==, "rw");
        free(bad);
}

static void test_options_no_duplicates(void)
{
        g_autofree char *o = build_ok("ext4", "noatime,noatime,ro,ro,nosuid", false, false);
        g_auto(GStrv) items = g_strsplit(o, ",", -1);

        for (char **i = items; *i; i++)
                g_assert_cmpuint(count_items(o, *i), ==, 1);
        g_assert_true(test_options_have(o, "noatime"));
        g_assert_true(test_options_have(o, "ro"));
}

static void test_options_vfat_values(void)
{
        static const char *const good[] = { "shortname=lower", "shortname=win95", "shortname=winnt",
                "shortname=mixed", "utf8", "iocharset=iso8859-1", "codepage=437", "flush", "umask=0077",
                "dmask=022", "fmask=133" };
        static const char *const bad[] = { "shortname=evil", "shortname=", "shortname", "utf8=1",
                "iocharset=../../x", "iocharset=", "codepage=437a", "umask=8", "umask=0x1",
                "umask=", "umask=00000", "dmask=-1", "flush=1" };

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
                g_autofree char *o = build_ok("vfat", good[i], false, false);
                g_assert_true(test_options_have(o, good[i]));
        }
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                assert_rejected("vfat", bad[i], false, bad[i]);
}

static void test_options_iso9660_values(void)
{
        g_autofree char *o = build_ok("iso9660", "norock,nojoliet,utf8,iocharset=utf8", false, false);

        g_assert_true(test_options_have(o, "norock"));
        g_assert_true(test_options_have(o, "nojoliet"));
        assert_rejected("iso9660", "mode=0777", false, "mode=0777");
        assert_rejected("iso9660", "session=1", false, "session=1");
        /* fuseiso has none of the kernel's iso9660 options. */
        assert_rejected("iso9660", "norock", true, "norock");
}

static void test_options_btrfs_values(void)
{
        g_autofree char *o = build_ok("btrfs", "subvol=@home/sub,compress=zstd:3", false, false);
        g_autofree char *id = build_ok("btrfs", "subvolid=256,compress=lzo", false, false);

        g_assert_true(test_options_have(o, "subvol=@home/sub"));
        g_assert_true(test_options_have(o, "compress=zstd:3"));
        g_assert_true(test_options_have(id, "subvolid=256"));
        assert_rejected("btrfs", "compress=gzip", false, "compress=gzip");
        assert_rejected("btrfs", "compress=zstd:", false, "compress=zstd:");
        assert_rejected("btrfs", "compress=zstd:100", false, "compress=zstd:100");
        assert_rejected("btrfs", "subvol=", false, "subvol=");
        assert_rejected("btrfs", "subvolid=abc", false, "subvolid=abc");
        assert_rejected("btrfs", "device=/dev/sda", false, "device=/dev/sda");
}

static void test_options_fuse_only_what_the_helper_honours(void)
{
        /* exfat-fuse silently drops noexec, sync and dirsync: refused rather than promised. */
        assert_rejected("exfat", "noexec", true, "noexec");
        assert_rejected("exfat", "sync", true, "sync");
        /* libfuse does not know these. */
        assert_rejected("iso9660", "relatime", true, "relatime");
        assert_rejected("ext4", "nosymfollow", true, "nosymfollow");
        assert_rejected("vfat", "shortname=lower", true, "shortname=lower");
        assert_rejected("squashfs", "lazytime", true, "lazytime");

        g_autofree char *ntfs = build_ok("ntfs", "noexec,relatime,umask=077", false, true);
        g_autofree char *exfat = build_ok("exfat", "noatime,dmask=022", false, true);
        g_autofree char *iso = build_ok("iso9660", "noexec,noatime", false, true);
        g_assert_true(test_options_have(ntfs, "noexec"));
        g_assert_true(test_options_have(exfat, "dmask=022"));
        g_assert_true(test_options_have(iso, "noexec"));
}

static void test_options_unknown_fstype(void)
{
        static const char *const fstypes[] = { "tmpfs", "proc", "fuse", "overlay", "nfs", "", "ext4,uid=0" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                char *out = NULL, *bad = NULL;
                g_assert_cmpint(
                        mount_options_build(fstypes[i], NULL, false, false, UID, GID, NODE, &out, &bad), ==,
                        -EPROTONOSUPPORT);
                g_assert_null(out);
                g_assert_null(bad);
        }
        /* No FUSE helper is known for xfs, btrfs, erofs or udf. */
        char *out = NULL;
        g_assert_cmpint(mount_options_build("xfs", NULL, false, true, UID, GID, NODE, &out, NULL), ==,
                -EPROTONOSUPPORT);
        g_assert_cmpint(mount_options_build("udf", NULL, false, true, UID, GID, NODE, &out, NULL), ==,
                -EPROTONOSUPPORT);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/mount/options/always-nosuid-nodev", test_options_always_nosuid_nodev);
        g_test_add_func(
                "/mount/options/fuse-nosuid-nodev-allow-other", test_options_fuse_nosuid_nodev_allow_other);
        g_test_add_func("/mount/options/fuse-fsname-names-node", test_options_fuse_fsname_names_node);
        g_test_add_func("/mount/options/fuse-rejects-unsafe-node", test_options_fuse_rejects_unsafe_node);
        g_test_add_func("/mount/options/uid-gid-for-foreign-filesystems",
                test_options_uid_gid_for_foreign_filesystems);
        g_test_add_func("/mount/options/fuse-uid-gid-where-helper-takes-them",
                test_options_fuse_uid_gid_where_helper_takes_them);
        g_test_add_func(
                "/mount/options/default-umask-unless-given", test_options_default_umask_unless_given);
        g_test_add_func("/mount/options/ext-errors-remount-ro", test_options_ext_errors_remount_ro);
        g_test_add_func(
                "/mount/options/read-only-no-journal-replay", test_options_read_only_no_journal_replay);
        g_test_add_func("/mount/options/ro-option-also-no-replay", test_options_ro_option_also_no_replay);
        g_test_add_func(
                "/mount/options/ext2-read-only-without-noload", test_options_ext2_read_only_without_noload);
        g_test_add_func("/mount/options/read-only-filesystems-forced-ro",
                test_options_read_only_filesystems_forced_ro);
        g_test_add_func("/mount/options/accepts-generic", test_options_accepts_generic);
        g_test_add_func("/mount/options/rejects-suid", test_options_rejects_suid);
        g_test_add_func("/mount/options/rejects-dev", test_options_rejects_dev);
        g_test_add_func("/mount/options/rejects-uid-gid", test_options_rejects_uid_gid);
        g_test_add_func(
                "/mount/options/rejects-x-options-and-helpers", test_options_rejects_x_options_and_helpers);
        g_test_add_func("/mount/options/rejects-errors-panic", test_options_rejects_errors_panic);
        g_test_add_func("/mount/options/rejects-journal-tricks", test_options_rejects_journal_tricks);
        g_test_add_func("/mount/options/rejects-fuse-internals", test_options_rejects_fuse_internals);
        g_test_add_func("/mount/options/rejects-unknown", test_options_rejects_unknown);
        g_test_add_func("/mount/options/rejects-empty-items", test_options_rejects_empty_items);
        g_test_add_func(
                "/mount/options/empty-string-is-no-options", test_options_empty_string_is_no_options);
        g_test_add_func("/mount/options/rejects-comma-smuggling", test_options_rejects_comma_smuggling);
        g_test_add_func("/mount/options/rejects-newline-and-control-chars",
                test_options_rejects_newline_and_control_chars);
        g_test_add_func("/mount/options/bad-item-is-printable-and-bounded",
                test_options_bad_item_is_printable_and_bounded);
        g_test_add_func("/mount/options/ret-bad-may-be-null", test_options_ret_bad_may_be_null);
        g_test_add_func("/mount/options/rejects-conflicts", test_options_rejects_conflicts);
        g_test_add_func("/mount/options/no-duplicates", test_options_no_duplicates);
        g_test_add_func("/mount/options/vfat-values", test_options_vfat_values);
        g_test_add_func("/mount/options/iso9660-values", test_options_iso9660_values);
        g_test_add_func("/mount/options/btrfs-values", test_options_btrfs_values);
        g_test_add_func("/mount/options/fuse-only-what-the-helper-honours",
                test_options_fuse_only_what_the_helper_honours);
        g_test_add_func("/mount/options/unknown-fstype", test_options_unknown_fstype);

        g_test_add_func("/mount/driver/unknown-fstype-has-none", test_driver_unknown_fstype_has_none);
        g_test_add_func("/mount/driver/fuse-helpers-are-absolute", test_driver_fuse_helpers_are_absolute);
        g_test_add_func("/mount/driver/pick-prefers-kernel", test_driver_pick_prefers_kernel);

        g_test_add_func("/mount/name/plain-label-unchanged", test_name_plain_label_unchanged);
        g_test_add_func("/mount/name/label-with-slash", test_name_label_with_slash);
        g_test_add_func("/mount/name/dotdot-path", test_name_dotdot_path);
        g_test_add_func("/mount/name/dot-and-dotdot", test_name_dot_and_dotdot);
        g_test_add_func("/mount/name/leading-dots", test_name_leading_dots);
        g_test_add_func("/mount/name/whitespace", test_name_whitespace);
        g_test_add_func("/mount/name/empty-and-null", test_name_empty_and_null);
        g_test_add_func("/mount/name/control-chars", test_name_control_chars);
        g_test_add_func("/mount/name/format-string", test_name_format_string);
        g_test_add_func("/mount/name/invalid-utf8", test_name_invalid_utf8);
        g_test_add_func("/mount/name/unicode-kept", test_name_unicode_kept);
        g_test_add_func("/mount/name/bidi-and-invisible-replaced", test_name_bidi_and_invisible_replaced);
        g_test_add_func("/mount/name/long-label-300-bytes", test_name_long_label_300_bytes);
        g_test_add_func("/mount/name/cut-does-not-leave-trailing-space",
                test_name_cut_does_not_leave_trailing_space);

        return g_test_run();
}
