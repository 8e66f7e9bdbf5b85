/* mount-filesystems.c: the mount suite's filesystems, each read back by the user, and read-write against
 * read-only mounts. */
#include "test-mount.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Filesystems: a file written beforehand is read back by the user through loopd's mount */

typedef struct FsCase {
        const char *fstype;
        guint64 size;
        bool read_only; /* attach read-only: the mount must be read-only and replay nothing */
        const char *no_replay; /* the option findmnt shows for "no journal replay" on a read-only mount */
} FsCase;

void test_filesystem_read_back(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const FsCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "fs.img"), *device = NULL, *mount_point = NULL;
        g_autofree char *hello = NULL, *got = NULL, *expected = NULL;

        harness_allow_all(h);
        image_create(image, c->size);
        g_free(image_mkfs_at(image, 0, c->size, c->fstype, "DATA"));
        if (g_str_equal(c->fstype, "squashfs"))
                /* mksquashfs takes its files at creation: image_mkfs_at() put "loopd" into /hello. */
                expected = g_strdup("loopd\n");
        else {
                expected = g_strdup_printf("written into %s before loopd saw it\n", c->fstype);
                g_autofree char *script = g_strdup_printf(
                        "mkdir \"$M/dir\"; printf '%%s\\n' 'written into %s before loopd saw it' > \"$M/dir/hello\"; "
                        "chmod 0644 \"$M/dir/hello\"",
                        c->fstype);
                populate(h, image, 0, script);
        }
        if (!c->read_only)
                give_image_to(image, HARNESS_USER_A);

        device = user_attach(h, HARNESS_USER_A, image, !c->read_only);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, device, mount_point,
                    g_str_equal(c->fstype, "squashfs") ? NULL : c->fstype)) {
                hello = g_build_filename(
                        mount_point, g_str_equal(c->fstype, "squashfs") ? "hello" : "dir/hello", NULL);
                got = read_as(h, HARNESS_USER_A, hello);
                g_assert_cmpstr(got, ==, expected);
                /* A read-only device gets a read-only mount, without journal replay; nobody had to say so.
                 */
                if (c->read_only)
                        g_assert_true(mount_is_read_only(mount_point));
                if (c->no_replay) {
                        g_autoptr(JsonObject) fs = findmnt_at(mount_point);
                        const char *options = fs ? json_object_get_string_member(fs, "options") : "";
                        if (!test_options_have(options, c->no_replay))
                                g_test_fail_printf("%s: no %s in %s", mount_point, c->no_replay, options);
                }
        }

        /* By mount point, as a file manager's eject would. */
        user_loopctl_ok(h, HARNESS_USER_A, "unmount", mount_point);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

static const FsCase fs_ext4 = { "ext4", 32 * MiB, false };
static const FsCase fs_xfs = { "xfs", 300 * MiB, true, "norecovery" };
static const FsCase fs_btrfs = { "btrfs", 128 * MiB, false };
static const FsCase fs_squashfs = { "squashfs", 8 * MiB, true };
const HarnessOptions opts_ext4 = { .data = &fs_ext4 };
const HarnessOptions opts_xfs = { .data = &fs_xfs };
const HarnessOptions opts_btrfs = { .data = &fs_btrfs };
const HarnessOptions opts_squashfs = { .data = &fs_squashfs };

/* An xorriso ISO (iso9660, here through fuseiso): the files are the caller's, as iso9660 has no owners. */
void test_iso9660_owned_by_caller(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "disc.iso"),
                        *tree = g_build_filename(h->tmpdir, "iso-root", NULL);
        g_autofree char *qimage = g_shell_quote(image), *qtree = g_shell_quote(tree);
        g_autofree char *device = NULL, *mount_point = NULL, *file = NULL, *got = NULL, *owner = NULL;

        harness_allow_all(h);
        g_free(test_sh("set -e; mkdir -p %s/docs; printf 'from the disc\\n' > %s/docs/readme.txt; "
                       "xorriso -as mkisofs -quiet -o %s -V LOOPD_DISC -J -R %s 2>/dev/null",
                qtree, qtree, qimage, qtree));
        g_autoptr(GHashTable) blkid = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(blkid, "TYPE"), ==, "iso9660");

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, device, mount_point, NULL)) {
                g_autofree char *name = g_path_get_basename(mount_point);
                g_assert_cmpstr(name, ==, "LOOPD_DISC");
                file = g_build_filename(mount_point, "docs", "readme.txt", NULL);
                got = read_as(h, HARNESS_USER_A, file);
                g_assert_cmpstr(got, ==, "from the disc\n");
                const char *argv[] = { "stat", "--format=%u:%g", file, NULL };
                g_assert_cmpint(run_as(h, HARNESS_USER_A, &owner, argv), ==, 0);
                g_autofree char *want = g_strdup_printf("%u:%u\n", (unsigned)harness_uid_of(HARNESS_USER_A),
                        (unsigned)harness_gid_of(HARNESS_USER_A));
                g_assert_cmpstr(owner, ==, want);
                g_assert_true(mount_is_read_only(mount_point));
        }

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", device);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
}

/* A vfat partition of a partitioned image (fusefat here): files belong to the caller. */
void test_vfat_partition_owned_by_caller(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "stick.img"), *qimage = g_shell_quote(image);
        g_autofree char *device = NULL, *node = NULL, *mount_point = NULL, *file = NULL, *got = NULL;
        g_autofree char *owner = NULL;

        harness_allow_all(h);
        image_create(image, 40 * MiB);
        image_sfdisk(image, "label: dos\nstart=2048, size=65536, type=c\n", 0);
        g_free(image_mkfs_at(image, MiB, 32 * MiB, "vfat", "STICK"));
        g_free(test_sh(
                "set -e; printf 'on the stick\\n' > %s.txt; mcopy -i %s@@1M %s.txt ::/NOTES.TXT; rm %s.txt",
                qimage, qimage, qimage, qimage));

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        node = g_strconcat(device, "p1", NULL);
        mount_point = user_mount(h, HARNESS_USER_A, node, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, node, mount_point, NULL)) {
                file = g_build_filename(mount_point, "NOTES.TXT", NULL);
                got = read_as(h, HARNESS_USER_A, file);
                g_assert_cmpstr(got, ==, "on the stick\n");
                const char *argv[] = { "stat", "--format=%u:%g", file, mount_point, NULL };
                g_assert_cmpint(run_as(h, HARNESS_USER_A, &owner, argv), ==, 0);
                g_autofree char *want = g_strdup_printf("%u:%u\n%u:%u\n",
                        (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A),
                        (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A));
                g_assert_cmpstr(owner, ==, want);
        }

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", node);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
}

/* The number at the end of a node name ("live.iso2", "/dev/loop3p2"). */
static guint trailing_number(const char *s)
{
        size_t n = strlen(s), i = n;

        while (i > 0 && g_ascii_isdigit(s[i - 1]))
                i--;
        return i < n ? (guint)g_ascii_strtoull(s + i, NULL, 10) : 0;
}

/* `loopctl open` on a hybrid ISO mounts the ISO (the whole device, number 0) and its EFI partition. */
void test_open_hybrid_iso_mounts_both(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "live.iso"), *device = NULL, *efi = NULL;
        g_autoptr(JsonNode) out = NULL, table = NULL;
        const char *iso_mp = NULL, *efi_mp = NULL;
        guint efi_number = 0;
        JsonArray *a, *mounts;

        harness_allow_all(h);
        image_make_hybrid_iso(image, "LOOPD_LIVE");
        table = oracle_sfdisk_json(image, 0);
        a = json_object_get_array_member(json_node_get_object(table), "partitions");
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (g_ascii_strcasecmp(json_object_get_string_member(o, "type"), "ef") == 0)
                        efi_number = trailing_number(json_object_get_string_member(o, "node"));
        }
        g_assert_cmpuint(efi_number, >, 0);

        out = harness_loopctl_json(h, HARNESS_USER_A, "open", image, NULL);
        REQUIRE_NONNULL(out);
        device = json_member(out, "device");
        REQUIRE_NONNULL(device);
        efi = g_strdup_printf("%sp%u", device, efi_number);
        mounts = json_object_get_array_member(json_node_get_object(out), "mounts");
        /* The ISO once (xorriso's partition 1 starts at sector 0: it is the same ISO again) and the EFI
         * partition. */
        g_assert_cmpuint(mounts ? json_array_get_length(mounts) : 0, ==, 2);
        for (guint i = 0; mounts && i < json_array_get_length(mounts); i++) {
                JsonObject *m = json_array_get_object_element(mounts, i);
                const char *node = json_object_get_string_member(m, "node");
                const char *mp = json_object_get_string_member(m, "mount_point");

                g_test_message("open mounted %s on %s", node, mp);
                if (g_strcmp0(node, device) == 0)
                        iso_mp = mp;
                else if (g_strcmp0(node, efi) == 0)
                        efi_mp = mp;
        }
        if (check_mount(h, HARNESS_USER_A, device, iso_mp, NULL)) {
                g_autofree char *readme = g_build_filename(iso_mp, "README.TXT", NULL);
                g_autofree char *got = read_as(h, HARNESS_USER_A, readme);
                g_autofree char *name = g_path_get_basename(iso_mp);

                g_assert_cmpstr(got, ==, "loopd test medium\n");
                g_assert_cmpstr(name, ==, "LOOPD_LIVE");
                /* Read-only by default: a double-clicked image is not changed by looking at it. */
                g_assert_true(mount_is_read_only(iso_mp));
        }
        if (check_mount(h, HARNESS_USER_A, efi, efi_mp, NULL)) {
                g_autofree char *readme = g_build_filename(efi_mp, "EFI", "BOOT", "README.TXT", NULL);
                g_autofree char *got = read_as(h, HARNESS_USER_A, readme);
                g_autofree char *name = g_path_get_basename(efi_mp);

                g_assert_cmpstr(got, ==, "loopd test medium\n");
                g_assert_cmpstr(name, ==, "EFIBOOT");
                g_assert_true(mount_is_read_only(efi_mp));
        }

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        if (iso_mp)
                check_unmounted(iso_mp);
        if (efi_mp)
                check_unmounted(efi_mp);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Read-write and read-only */

/* An ext4 image with /home owned by the test user, handed to the user (so a writable attach works). */
char *make_user_ext4(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);
        g_autofree char *script = g_strdup_printf("mkdir \"$M/home\"; chown %u:%u \"$M/home\"",
                (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A));

        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", label));
        populate(h, image, 0, script);
        give_image_to(image, HARNESS_USER_A);
        return image;
}

/* debugfs reads the image file itself: what really reached the disk. NULL when the file is not there. */
static char *debugfs_cat(const char *image, const char *path)
{
        g_autofree char *qimage = g_shell_quote(image), *out = NULL;
        g_autofree char *request = g_strdup_printf("stat %s", path), *qrequest = g_shell_quote(request);
        g_autofree char *cat = g_strdup_printf("cat %s", path), *qcat = g_shell_quote(cat);

        if (test_sh_status(&out, "debugfs -R %s %s 2>&1 | grep -q 'Inode:'", qrequest, qimage) != 0)
                return NULL;
        return test_sh("debugfs -R %s %s 2>/dev/null", qcat, qimage);
}

void test_read_write_persists_after_reattach(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "rw.img", "RW");
        g_autofree char *device = NULL, *mount_point = NULL, *file = NULL, *on_disk = NULL, *got = NULL;
        g_autofree char *device2 = NULL, *mount_point2 = NULL, *file2 = NULL;

        harness_allow_all(h);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        g_assert_false(mount_is_read_only(mount_point));
        file = g_build_filename(mount_point, "home", "note.txt", NULL);
        g_assert_cmpint(write_as(h, HARNESS_USER_A, file, "kept across attaches\n", NULL), ==, 0);

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", mount_point);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);

        /* The image file itself has it (debugfs, without any mount)... */
        on_disk = debugfs_cat(image, "/home/note.txt");
        g_assert_cmpstr(on_disk, ==, "kept across attaches\n");

        /* ...and so does a fresh attach and mount, as the user sees it. */
        device2 = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device2);
        mount_point2 = user_mount(h, HARNESS_USER_A, device2, false);
        REQUIRE_NONNULL(mount_point2);
        g_assert_true(check_mount(h, HARNESS_USER_A, device2, mount_point2, "ext4"));
        file2 = g_build_filename(mount_point2, "home", "note.txt", NULL);
        got = read_as(h, HARNESS_USER_A, file2);
        g_assert_cmpstr(got, ==, "kept across attaches\n");
        user_loopctl_ok(h, HARNESS_USER_A, "close", device2);
        check_unmounted(mount_point2);
        check_gone(h, device2);
}

/* A read-only mount of a writable device refuses writes with EROFS, asked either way (the read-only
 * option, or "ro" among the options), and nothing reaches the image. */
void test_read_only_refuses_writes(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "ro.img", "RO");
        g_autofree char *device = NULL, *on_disk = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);

        for (int round = 0; round < 2; round++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, device,
                        round == 0 ? mount_options(NULL, TRUE) : mount_options("ro,noatime", FALSE), &error);
                g_autofree char *file = NULL, *err = NULL;

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
                g_assert_true(mount_is_read_only(mount_point));
                file = g_build_filename(mount_point, "home", "refused.txt", NULL);
                g_assert_cmpint(write_as(h, HARNESS_USER_A, file, "must not land\n", &err), !=, 0);
                if (!strstr(err, "Read-only file system"))
                        g_test_fail_printf(
                                "writing into %s failed, but not with EROFS: %s", mount_point, err);
                g_assert_true(harness_unmount(a, mount_point, &error));
                harness_assert_no_error(error);
                check_unmounted(mount_point);
        }

        g_assert_true(harness_detach(a, device, NULL, NULL));
        check_gone(h, device);
        on_disk = debugfs_cat(image, "/home/refused.txt");
        g_assert_null(on_disk);
}
