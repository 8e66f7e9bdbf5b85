/* test-format-units.c: Format's type list, label and UUID rules per filesystem and each mkfs command line
 * (format-fs.c), without root or a device. */
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "format-fs.h"

static const FormatType *type(const char *name)
{
        const FormatType *t = format_type_find(name);

        g_assert_nonnull(t);
        return t;
}

static void assert_label_ok(const char *name, const char *label)
{
        const char *why = NULL;

        g_assert_cmpint(format_check_label(type(name), label, &why), ==, 0);
}

static void assert_label_refused(const char *name, const char *label, const char *why_part)
{
        const char *why = NULL;

        g_assert_cmpint(format_check_label(type(name), label, &why), ==, -EINVAL);
        g_assert_nonnull(why);
        g_assert_nonnull(strstr(why, why_part));
}

static char *joined_argv(const char *name, const FormatRequest *req)
{
        char **argv = NULL;
        char *s;

        g_assert_cmpint(format_build_argv(type(name), req, &argv), ==, 0);
        s = g_strjoinv(" ", argv);
        g_strfreev(argv);
        return s;
}

static void test_types(void)
{
        static const char *const filesystems[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat",
                "ntfs", "swap" };

        for (size_t i = 0; i < G_N_ELEMENTS(filesystems); i++) {
                const FormatType *t = type(filesystems[i]);

                g_assert_cmpint(format_type_kind(t), ==, FORMAT_FILESYSTEM);
                g_assert_cmpstr(format_type_name(t), ==, filesystems[i]);
                g_assert_nonnull(format_type_program(t));
                g_assert_true(format_type_has_label(t));
                g_assert_nonnull(strstr(format_type_list(), filesystems[i]));
        }
        g_assert_cmpint(format_type_kind(type("gpt")), ==, FORMAT_TABLE);
        g_assert_cmpint(format_type_kind(type("dos")), ==, FORMAT_TABLE);
        g_assert_cmpint(format_type_kind(type("empty")), ==, FORMAT_EMPTY);
        g_assert_null(format_type_program(type("gpt")));
        g_assert_cmpstr(format_type_program(type("ext2")), ==, "mkfs.ext2");
        g_assert_cmpstr(format_type_program(type("ntfs")), ==, "mkntfs");

        /* Not made, or not by these names. */
        g_assert_null(format_type_find("fat32"));
        g_assert_null(format_type_find("EXT4"));
        g_assert_null(format_type_find(""));
        g_assert_null(format_type_find("ext4 "));
        g_assert_null(format_type_find("iso9660"));
        g_assert_null(format_type_find(NULL));
}

static void test_label_lengths(void)
{
        static const struct {
                const char *type;
                size_t max;
        } bytes[] = { { "ext2", 16 }, { "ext3", 16 }, { "ext4", 16 }, { "xfs", 12 }, { "btrfs", 255 },
                { "swap", 16 }, { "vfat", 11 } };

        for (size_t i = 0; i < G_N_ELEMENTS(bytes); i++) {
                g_autofree char *fits = g_strnfill(bytes[i].max, 'A');
                g_autofree char *over = g_strnfill(bytes[i].max + 1, 'A');

                assert_label_ok(bytes[i].type, fits);
                assert_label_refused(bytes[i].type, over, "is longer than");
        }
        /* 300 bytes fit nowhere. */
        g_autofree char *huge = g_strnfill(300, 'x');
        assert_label_refused("btrfs", huge, "255");
        assert_label_refused("ntfs", huge, "128");
}

static void test_label_utf16(void)
{
        /* exfat counts UTF-16 units (its volume label entry holds 11): 11 'é' (22 bytes of UTF-8) fit, 12 do
         * not; a character beyond the BMP takes two. */
        GString *e = g_string_new(NULL);
        for (int i = 0; i < 11; i++)
                g_string_append(e, "é");
        assert_label_ok("exfat", e->str);
        g_string_append(e, "é");
        assert_label_refused("exfat", e->str, "11 UTF-16");
        g_string_free(e, TRUE);

        GString *emoji = g_string_new(NULL);
        for (int i = 0; i < 5; i++)
                g_string_append(emoji, "\xf0\x9f\x98\x80"); /* U+1F600: two units */
        g_string_append(emoji, "a");
        assert_label_ok("exfat", emoji->str); /* 11 units */
        g_string_append(emoji, "a");
        assert_label_refused("exfat", emoji->str, "11 UTF-16");
        g_string_free(emoji, TRUE);

        /* ext4 counts bytes: 8 'é' are 16 bytes, 9 are too many. */
        assert_label_ok("ext4", "éééééééé");
        assert_label_refused("ext4", "ééééééééé", "16 bytes");
        assert_label_ok("ntfs", "Données");
}

static void test_label_characters(void)
{
        static const char *const all[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs",
                "swap" };

        for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
                assert_label_refused(all[i], "a/b", "'/'");
                assert_label_refused(all[i], "a\nb", "control character");
                assert_label_refused(all[i], "tab\there", "control character");
                assert_label_refused(all[i], "del\x7f", "control character");
                assert_label_refused(all[i], "bad\xff", "UTF-8");
                assert_label_refused(all[i], "\xc3", "UTF-8");
                assert_label_ok(all[i], "DATA");
                assert_label_ok(all[i], "");
        }
        /* What FAT forbids, and what it cannot hold the same way everywhere. */
        static const char *const fat_bad[] = { "A*B", "A?B", "A.B", "A:B", "A\"B", "A<B", "A>B", "A|B",
                "A[B]", "A+B", "A,B", "A;B", "A=B", "A\\B" };
        for (size_t i = 0; i < G_N_ELEMENTS(fat_bad); i++)
                assert_label_refused("vfat", fat_bad[i], "FAT forbids");
        assert_label_refused("vfat", "café", "not ASCII");
        assert_label_refused("vfat", " LEAD", "space");
        assert_label_ok("vfat", "MY DISK");
        assert_label_ok("vfat", "boot-efi");
        /* Elsewhere those are fine. */
        assert_label_ok("ext4", "a*b?c.d");
        assert_label_ok("exfat", "café");
}

static void test_label_not_taken(void)
{
        const char *why = NULL;

        g_assert_cmpint(format_check_label(type("gpt"), "x", &why), ==, -EOPNOTSUPP);
        g_assert_cmpint(format_check_label(type("empty"), "x", &why), ==, -EOPNOTSUPP);
}

static void test_uuids(void)
{
        static const char *const rfc[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "swap" };
        const char *why = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(rfc); i++) {
                const FormatType *t = type(rfc[i]);

                g_assert_true(format_type_has_uuid(t));
                g_assert_cmpint(format_check_uuid(t, "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11", &why), ==, 0);
                g_assert_cmpint(format_check_uuid(t, "0B1E6C6A-5BD2-4C3E-9B1A-2F0E4B0C9D11", &why), ==, 0);
                g_assert_cmpint(format_check_uuid(t, "0b1e6c6a5bd24c3e9b1a2f0e4b0c9d11", &why), ==, -EINVAL);
                g_assert_cmpint(
                        format_check_uuid(t, "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d1", &why), ==, -EINVAL);
                g_assert_cmpint(
                        format_check_uuid(t, "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d1g", &why), ==, -EINVAL);
                g_assert_cmpint(format_check_uuid(t, "random", &why), ==, -EINVAL);
                g_assert_cmpint(format_check_uuid(t, "time", &why), ==, -EINVAL);
                g_assert_cmpint(format_check_uuid(t, "", &why), ==, -EINVAL);
                g_assert_nonnull(strstr(why, "UUID"));
        }
        g_assert_cmpint(format_check_uuid(type("vfat"), "1A2B-3C4D", &why), ==, 0);
        g_assert_cmpint(format_check_uuid(type("vfat"), "1a2b-3c4d", &why), ==, 0);
        g_assert_cmpint(format_check_uuid(type("vfat"), "1A2B3C4D", &why), ==, -EINVAL);
        g_assert_cmpint(format_check_uuid(type("vfat"), "1A2B-3C4G", &why), ==, -EINVAL);
        g_assert_cmpint(
                format_check_uuid(type("vfat"), "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11", &why), ==, -EINVAL);
        g_assert_nonnull(strstr(why, "XXXX-XXXX"));

        /* The tools that cannot set one. */
        g_assert_false(format_type_has_uuid(type("exfat")));
        g_assert_false(format_type_has_uuid(type("ntfs")));
        g_assert_cmpint(format_check_uuid(type("exfat"), "1A2B-3C4D", &why), ==, -EOPNOTSUPP);
        g_assert_cmpint(format_check_uuid(type("ntfs"), "0123456789ABCDEF", &why), ==, -EOPNOTSUPP);
        g_assert_cmpint(format_check_uuid(type("dos"), "1A2B-3C4D", &why), ==, -EOPNOTSUPP);
}

static void test_argv(void)
{
        FormatRequest req = { .node = "/dev/loop7p1" };
        g_autofree char *ext4 = NULL, *ext2_owned = NULL, *xfs = NULL, *btrfs = NULL, *vfat = NULL,
                        *exfat = NULL, *ntfs = NULL, *swap = NULL, *plain = NULL;

        plain = joined_argv("ext4", &req);
        g_assert_cmpstr(plain, ==, "mke2fs -t ext4 -F -E nodiscard,lazy_itable_init=1 /dev/loop7p1");

        req.label = "-L evil";
        req.uuid = "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11";
        ext4 = joined_argv("ext4", &req);
        g_assert_cmpstr(ext4, ==,
                "mke2fs -t ext4 -F -E nodiscard,lazy_itable_init=1 -L -L evil -U 0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11 "
                "/dev/loop7p1");
        /* The label is one argument, whatever it holds. */
        char **argv = NULL;
        g_assert_cmpint(format_build_argv(type("ext4"), &req, &argv), ==, 0);
        g_assert_cmpstr(argv[7], ==, "-L evil");
        g_assert_cmpstr(argv[10], ==, "/dev/loop7p1");
        g_assert_null(argv[11]);
        g_strfreev(argv);

        req.label = "DATA";
        req.owner_set = true;
        req.owner_uid = 1000;
        req.owner_gid = 1001;
        ext2_owned = joined_argv("ext2", &req);
        g_assert_cmpstr(ext2_owned, ==,
                "mke2fs -t ext2 -F -E nodiscard,root_owner=1000:1001 -L DATA -U "
                "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11 /dev/loop7p1");
        req.owner_set = false;

        xfs = joined_argv("xfs", &req);
        g_assert_cmpstr(
                xfs, ==, "mkfs.xfs -f -K -L DATA -muuid=0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11 /dev/loop7p1");
        btrfs = joined_argv("btrfs", &req);
        g_assert_cmpstr(
                btrfs, ==, "mkfs.btrfs -f -K -L DATA -U 0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11 /dev/loop7p1");
        swap = joined_argv("swap", &req);
        g_assert_cmpstr(swap, ==, "mkswap -L DATA -U 0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11 /dev/loop7p1");

        /* FAT: upper case, its volume id without the dash. */
        req.label = "boot efi";
        req.uuid = "1a2b-3c4d";
        vfat = joined_argv("vfat", &req);
        g_assert_cmpstr(vfat, ==, "mkfs.fat -I --mbr=n -n BOOT EFI -i1a2b3c4d /dev/loop7p1");

        req.label = "Données";
        req.uuid = NULL;
        exfat = joined_argv("exfat", &req);
        g_assert_cmpstr(exfat, ==, "mkfs.exfat -L Données /dev/loop7p1");
        ntfs = joined_argv("ntfs", &req);
        g_assert_cmpstr(ntfs, ==, "mkntfs -Q -F -L Données /dev/loop7p1");

        /* What the tool cannot do is refused, not dropped. */
        req.uuid = "0b1e6c6a-5bd2-4c3e-9b1a-2f0e4b0c9d11";
        g_assert_cmpint(format_build_argv(type("exfat"), &req, &argv), ==, -EOPNOTSUPP);
        g_assert_cmpint(format_build_argv(type("ntfs"), &req, &argv), ==, -EOPNOTSUPP);
        g_assert_cmpint(format_build_argv(type("gpt"), &req, &argv), ==, -EINVAL);
        g_assert_cmpint(format_build_argv(type("empty"), &req, &argv), ==, -EINVAL);
}

static void test_programs_installed(void)
{
        static const char *const all[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs",
                "swap" };

        /* tools/install-deps installs every tool; the sandbox sees /usr only. */
        for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
                char *path = NULL;
                int r = format_find_program(type(all[i]), &path);

                if (r == -ENOENT && !g_getenv("CI")) {
                        g_test_message("%s: no %s here", all[i], format_type_program(type(all[i])));
                        continue;
                }
                g_assert_cmpint(r, ==, 0);
                g_assert_true(g_str_has_prefix(path, "/usr/") || g_str_has_prefix(path, "/sbin/") ||
                        g_str_has_prefix(path, "/bin/"));
                free(path);
        }
        char *path = NULL;
        g_assert_cmpint(format_find_program(type("gpt"), &path), ==, -EINVAL);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/loopd/format/types", test_types);
        g_test_add_func("/loopd/format/label-lengths", test_label_lengths);
        g_test_add_func("/loopd/format/label-utf16-units", test_label_utf16);
        g_test_add_func("/loopd/format/label-characters", test_label_characters);
        g_test_add_func("/loopd/format/label-not-taken", test_label_not_taken);
        g_test_add_func("/loopd/format/uuids", test_uuids);
        g_test_add_func("/loopd/format/argv", test_argv);
        g_test_add_func("/loopd/format/programs-installed", test_programs_installed);
        return g_test_run();
}
