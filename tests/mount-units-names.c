/* mount-units-names.c: the mount-units suite's filesystem drivers and mount point names. */
#include "test-mount-units.h"

/* ---- drivers ---- */

void test_driver_unknown_fstype_has_none(void)
{
        static const char *const fstypes[] = { "tmpfs", "proc", "fuse", "fuseblk", "overlay", "ramfs", "" };
        bool fuse = true;

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                g_assert_false(mount_kernel_has_filesystem(fstypes[i]));
                g_assert_null(mount_fuse_helper(fstypes[i]));
                g_assert_cmpint(mount_pick_driver(fstypes[i], &fuse), ==, -EPROTONOSUPPORT);
        }
        g_assert_cmpint(mount_pick_driver(NULL, &fuse), ==, -EPROTONOSUPPORT);
        g_assert_false(mount_kernel_has_filesystem(NULL));
        g_assert_null(mount_fuse_helper(NULL));
}

void test_driver_fuse_helpers_are_absolute(void)
{
        static const char *const fstypes[] = { "ext2", "ext3", "ext4", "squashfs", "vfat", "exfat", "ntfs",
                "iso9660" };
        static const char *const none[] = { "xfs", "btrfs", "erofs", "udf" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                const char *h = mount_fuse_helper(fstypes[i]);
                if (h) {
                        g_assert_true(g_path_is_absolute(h));
                        g_assert_true(g_file_test(h, G_FILE_TEST_IS_EXECUTABLE));
                } else
                        g_test_message("no FUSE helper for %s installed", fstypes[i]);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(none); i++)
                g_assert_null(mount_fuse_helper(none[i]));
}

void test_driver_pick_prefers_kernel(void)
{
        static const char *const fstypes[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "squashfs", "erofs",
                "vfat", "exfat", "ntfs", "iso9660", "udf" };

        for (size_t i = 0; i < G_N_ELEMENTS(fstypes); i++) {
                bool fuse = true;
                int r = mount_pick_driver(fstypes[i], &fuse);

                if (mount_kernel_has_filesystem(fstypes[i])) {
                        g_assert_cmpint(r, ==, 0);
                        g_assert_false(fuse);
                } else if (mount_fuse_helper(fstypes[i])) {
                        g_assert_cmpint(r, ==, 0);
                        g_assert_true(fuse);
                } else
                        g_assert_cmpint(r, ==, -EPROTONOSUPPORT);
                g_test_message("%s: %s", fstypes[i], r < 0 ? "no driver" : fuse ? "FUSE" : "kernel");
        }
}

/* ---- names ---- */

static char *name_ok(const char *label)
{
        char *out = NULL;
        int r = mount_name_sanitize(label, &out);

        g_assert_cmpint(r, ==, 0);
        g_assert_nonnull(out);
        /* What every result must be. */
        g_assert_true(g_utf8_validate(out, -1, NULL));
        g_assert_null(strchr(out, '/'));
        g_assert_cmpint(out[0], !=, '.');
        g_assert_cmpint(out[0], !=, '\0');
        g_assert_cmpuint(strlen(out), <=, 64);
        for (const char *p = out; *p; p++)
                g_assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
        return out;
}

static void assert_name(const char *label, const char *expected)
{
        g_autofree char *out = name_ok(label);

        g_assert_cmpstr(out, ==, expected);
}

static void assert_name_rejected(const char *label)
{
        char *out = NULL;

        g_assert_cmpint(mount_name_sanitize(label, &out), ==, -EINVAL);
        g_assert_null(out);
}

void test_name_plain_label_unchanged(void)
{
        assert_name("MY_DISK", "MY_DISK");
        assert_name("Ubuntu 24.04 LTS amd64", "Ubuntu 24.04 LTS amd64");
        assert_name("1234-ABCD", "1234-ABCD");
        assert_name("8f3c7a1e-5b2d-4c6f-9e0a-1b2c3d4e5f60", "8f3c7a1e-5b2d-4c6f-9e0a-1b2c3d4e5f60");
}

void test_name_label_with_slash(void)
{
        assert_name("a/b", "a_b");
        assert_name("/", "_");
}

void test_name_dotdot_path(void)
{
        assert_name("../../etc", "_.._etc");
        assert_name("../../../../../../root/.ssh", "_.._.._.._.._.._root_.ssh");
}

void test_name_dot_and_dotdot(void)
{
        assert_name_rejected(".");
        assert_name_rejected("..");
        assert_name_rejected("...");
        assert_name_rejected(". . .");
}

void test_name_leading_dots(void)
{
        assert_name(".hidden", "hidden");
        assert_name("..x", "x");
        assert_name(" .x", "x");
        assert_name("a.b.", "a.b.");
}

void test_name_whitespace(void)
{
        assert_name_rejected("   ");
        assert_name_rejected("\t\n \r");
        assert_name_rejected("\xc2\xa0\xe3\x80\x80"); /* no-break space, ideographic space */
        assert_name("  padded  ", "padded");
        assert_name("two\twords", "two words");
}

void test_name_empty_and_null(void)
{
        char *out = NULL;

        assert_name_rejected("");
        g_assert_cmpint(mount_name_sanitize(NULL, &out), ==, -EINVAL);
        g_assert_null(out);
}

void test_name_control_chars(void)
{
        assert_name("a\x01"
                    "b\x1b[31mc\x7f",
                "a_b_[31mc_");
        /* C1 controls (U+0080..U+009F) as valid UTF-8. */
        assert_name("a\xc2\x85"
                    "b\xc2\x9b"
                    "c",
                "a_b_c");
}

void test_name_format_string(void)
{
        /* Harmless as a file name; the point is that it is never used as a format. */
        assert_name("%n%s%x%p", "%n%s%x%p");
}

void test_name_invalid_utf8(void)
{
        assert_name("ab\xff"
                    "cd",
                "ab_cd");
        assert_name("\xc3\x28", "_("); /* truncated two-byte sequence */
        assert_name("x\xe0\x80\xaf", "x___"); /* overlong '/' */
        assert_name("x\xed\xa0\x80y", "x___y"); /* surrogate */
        assert_name("x\xf4\x90\x80\x80", "x____"); /* past U+10FFFF */
        assert_name("x\xc0\xaf", "x__"); /* overlong '/' in two bytes */
        assert_name("caf\xc3\xa9", "caf\xc3\xa9"); /* valid: kept */
}

void test_name_unicode_kept(void)
{
        assert_name("Ünïcødé 日本語 💾", "Ünïcødé 日本語 💾");
}

void test_name_bidi_and_invisible_replaced(void)
{
        /* RIGHT-TO-LEFT OVERRIDE would display "exe.txt" as "txt.exe"-like spoofs. */
        assert_name("evil\xe2\x80\xaetxt.exe", "evil_txt.exe");
        assert_name("a\xe2\x80\x8b"
                    "b",
                "a_b"); /* zero-width space */
        assert_name("a\xe2\x80\xa8"
                    "b",
                "a_b"); /* line separator */
        assert_name("\xef\xbb\xbf"
                    "bom",
                "_bom");
}

void test_name_long_label_300_bytes(void)
{
        g_autofree char *ascii = g_strnfill(300, 'x');
        g_autofree char *a = name_ok(ascii);

        g_assert_cmpuint(strlen(a), ==, 64);

        /* 3-byte characters: 64 is not a multiple of 3, the cut must fall before the 22nd. */
        GString *s = g_string_new(NULL);
        for (int i = 0; i < 100; i++)
                g_string_append(s, "日");
        g_autofree char *j = name_ok(s->str);
        g_assert_cmpuint(strlen(j), ==, 63);
        g_assert_true(g_utf8_validate(j, -1, NULL));
        g_string_free(s, TRUE);

        /* 4-byte characters after one ASCII byte: cut at 61. */
        s = g_string_new("a");
        for (int i = 0; i < 30; i++)
                g_string_append(s, "💾");
        g_autofree char *e = name_ok(s->str);
        g_assert_cmpuint(strlen(e), ==, 61);
        g_string_free(s, TRUE);
}

void test_name_cut_does_not_leave_trailing_space(void)
{
        g_autofree char *as = g_strnfill(63, 'a');
        g_autofree char *label = g_strconcat(as, " bbbb", NULL);
        g_autofree char *out = name_ok(label);

        g_assert_cmpuint(strlen(out), ==, 63);
}
