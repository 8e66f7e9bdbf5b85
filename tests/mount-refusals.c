/* mount-refusals.c: the mount suite's hostile labels, refused options, nodes and filesystems, and
 * nosuid,nodev in effect. */
#include "test-mount.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Hostile labels */

typedef struct LabelCase {
        const char *fstype;
        guint64 size;
        const char *label; /* as written by mkfs */
        guint64 raw_offset; /* where the superblock keeps the label as plain bytes; 0: check with blkid */
        guint64 raw_length;
        bool expect_uuid; /* nothing of the label is usable: the mount point must be named by the UUID */
        const char *expect_prefix, *expect_suffix; /* what of the label must survive; may be NULL */
        const char *expect_inside; /* a part of the label that must survive; may be NULL */
        const char *expect_name; /* the exact name, when the label is already safe; may be NULL */
} LabelCase;

/* Superblock label fields: ext4 s_volume_name (1024 + 0x78, 16 bytes), xfs sb_fname (108, 12 bytes),
 * btrfs label (65536 + 0x12b, 256 bytes). */
#define EXT4_LABEL 1144, 16
#define XFS_LABEL 108, 12
#define BTRFS_LABEL 65835, 256

void test_hostile_label(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const LabelCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "label.img"), *uuid = NULL, *device = NULL;
        g_autofree char *mount_point = NULL, *name = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, c->size);
        /* mkntfs turns the label into UTF-16 through the locale. */
        g_autofree char *lc_all = g_strdup(g_getenv("LC_ALL"));
        g_setenv("LC_ALL", "C.UTF-8", TRUE);
        uuid = image_mkfs_at(image, 0, c->size, c->fstype, c->label);
        if (lc_all)
                g_setenv("LC_ALL", lc_all, TRUE);
        else
                g_unsetenv("LC_ALL");
        /* The case is real only if the filesystem carries the label as given. */
        if (c->raw_offset) {
                g_autofree char *raw = raw_label(image, c->raw_offset, c->raw_length);
                g_assert_cmpstr(raw, ==, c->label);
        } else {
                /* NTFS keeps UTF-16: ntfslabel reads it back as UTF-8. */
                g_autofree char *qimage = g_shell_quote(image);
                g_autofree char *seen = test_sh("LC_ALL=C.UTF-8 ntfslabel %s", qimage);
                g_assert_cmpstr(g_strchomp(seen), ==, c->label);
        }

        /* Attach through D-Bus: the mount is what this is about (loopctl attach also lists the partitions,
         * see label-invalid-utf8-listed-as-utf8). */
        g_assert_true(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, NULL));
        name = g_path_get_basename(mount_point);
        if (c->expect_uuid)
                g_assert_cmpstr(name, ==, uuid);
        if (c->expect_name)
                g_assert_cmpstr(name, ==, c->expect_name);
        if (c->expect_prefix && !g_str_has_prefix(name, c->expect_prefix))
                g_test_fail_printf("mount point name '%s' does not start with '%s'", name, c->expect_prefix);
        if (c->expect_suffix && !g_str_has_suffix(name, c->expect_suffix))
                g_test_fail_printf("mount point name '%s' does not end with '%s'", name, c->expect_suffix);
        if (c->expect_inside && !strstr(name, c->expect_inside))
                g_test_fail_printf("mount point name '%s' lost '%s'", name, c->expect_inside);
        /* Nothing appeared beside the user's directory (the media dir holds only user directories). */
        g_autoptr(GDir) media = g_dir_open(h->media_dir, 0, NULL);
        for (const char *e; media && (e = g_dir_read_name(media));)
                if (!g_str_equal(e, HARNESS_USER_A))
                        g_test_fail_printf("%s/%s appeared in the media directory", h->media_dir, e);
        g_assert_true(loopd_alive(h));

        /* The path loopd returned works as an Unmount target as it is. */
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* 100 x U+20AC (3 bytes each): 300 bytes of UTF-8 in NTFS's 128-unit UTF-16 label. */
#define EURO_10 \
        "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
#define EURO_100 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10
#define X_50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X_254 X_50 X_50 X_50 X_50 X_50 "xxxx" /* mkfs.btrfs keeps at most 254 bytes */

static const LabelCase label_dot_dot_etc = { "xfs", 300 * MiB, "../../etc", XFS_LABEL,
        .expect_suffix = "etc" };
static const LabelCase label_slash = { "ext4", 32 * MiB, "a/b", EXT4_LABEL, .expect_prefix = "a",
        .expect_suffix = "b" };
static const LabelCase label_dot = { "ext4", 32 * MiB, ".", EXT4_LABEL, .expect_uuid = true };
static const LabelCase label_dot_dot = { "ext4", 32 * MiB, "..", EXT4_LABEL, .expect_uuid = true };
static const LabelCase label_300_bytes = { "ntfs", 32 * MiB, EURO_100, .expect_prefix = "\xe2\x82\xac" };
static const LabelCase label_254_bytes = { "btrfs", 128 * MiB, X_254, BTRFS_LABEL,
        .expect_prefix = "xxxxxxxx" };
static const LabelCase label_control = { "ext4", 32 * MiB, "a\001b\033[0m\nc", EXT4_LABEL,
        .expect_prefix = "a", .expect_suffix = "c" };
static const LabelCase label_format = { "ext4", 32 * MiB, "%n%s%x", EXT4_LABEL, .expect_name = "%n%s%x" };
static const LabelCase label_bad_utf8 = { "ext4", 32 * MiB, "\xff\xfe\xc3(ok\xe2\x82", EXT4_LABEL,
        .expect_inside = "(ok" };
const HarnessOptions opts_label_dot_dot_etc = { .data = &label_dot_dot_etc };
const HarnessOptions opts_label_slash = { .data = &label_slash };
const HarnessOptions opts_label_dot = { .data = &label_dot };
const HarnessOptions opts_label_dot_dot = { .data = &label_dot_dot };
const HarnessOptions opts_label_300_bytes = { .data = &label_300_bytes };
const HarnessOptions opts_label_254_bytes = { .data = &label_254_bytes };
const HarnessOptions opts_label_control = { .data = &label_control };
const HarnessOptions opts_label_format = { .data = &label_format };
const HarnessOptions opts_label_bad_utf8 = { .data = &label_bad_utf8 };

/* Two images with one label, mounted at once: two distinct mount points, each showing its own files. */
void test_same_label_twice_distinct(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *first = make_user_ext4(h, "first.img", "twin");
        g_autofree char *second = make_user_ext4(h, "second.img", "twin");
        g_autofree char *dev1 = NULL, *dev2 = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autofree char *f1 = NULL, *f2 = NULL, *got1 = NULL, *got2 = NULL;

        harness_allow_all(h);
        populate(h, first, 0, "echo first > \"$M/which\"; chmod 0644 \"$M/which\"");
        populate(h, second, 0, "echo second > \"$M/which\"; chmod 0644 \"$M/which\"");
        dev1 = user_attach(h, HARNESS_USER_A, first, false);
        dev2 = user_attach(h, HARNESS_USER_A, second, false);
        REQUIRE_NONNULL(dev1);
        REQUIRE_NONNULL(dev2);
        mp1 = user_mount(h, HARNESS_USER_A, dev1, false);
        mp2 = user_mount(h, HARNESS_USER_A, dev2, false);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);
        g_assert_cmpstr(mp1, !=, mp2);
        g_assert_true(check_mount(h, HARNESS_USER_A, dev1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, dev2, mp2, "ext4"));
        g_autofree char *n1 = g_path_get_basename(mp1), *n2 = g_path_get_basename(mp2);
        g_assert_true(g_str_has_prefix(n1, "twin"));
        g_assert_true(g_str_has_prefix(n2, "twin"));
        f1 = g_build_filename(mp1, "which", NULL);
        f2 = g_build_filename(mp2, "which", NULL);
        got1 = read_as(h, HARNESS_USER_A, f1);
        got2 = read_as(h, HARNESS_USER_A, f2);
        g_assert_cmpstr(got1, ==, "first\n");
        g_assert_cmpstr(got2, ==, "second\n");
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 2);

        user_loopctl_ok(h, HARNESS_USER_A, "close", dev1);
        user_loopctl_ok(h, HARNESS_USER_A, "close", dev2);
        check_unmounted(mp1);
        check_unmounted(mp2);
        check_gone(h, dev1);
        check_gone(h, dev2);
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* A label that is not UTF-8 must not break what lists it: D-Bus strings are UTF-8, so `loopctl attach`
 * (which lists the partitions), ListPartitions and the Partitions property must still answer, with a
 * valid UTF-8 label. */
void test_label_invalid_utf8_listed_as_utf8(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "latin1.img"), *device = NULL, *object = NULL;
        g_autofree char *raw = NULL, *mount_point = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) parts = NULL, property = NULL;
        g_autoptr(JsonNode) out = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "caf\xe9 \xff"));
        raw = raw_label(image, EXT4_LABEL);
        g_assert_cmpstr(raw, ==, "caf\xe9 \xff");

        out = harness_loopctl_json(h, HARNESS_USER_A, "attach", "--read-only", image, NULL);
        if (out)
                device = json_member(out, "device");
        if (!device) {
                /* It may be attached all the same: find it, to go on and to detach it. */
                g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
                REQUIRE_NONNULL(loops->len ? loops->pdata[0] : NULL);
                device = g_strdup(loops->pdata[0]);
        }

        parts = harness_list_partitions(a, device, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (parts) {
                GVariantIter it;
                const char *node, *fstype, *label, *uuid, *s1, *s2, *s3;
                guint32 number;
                guint64 offset, size;
                bool found = false;

                g_variant_iter_init(&it, parts);
                while (g_variant_iter_next(&it, "(&sutt&s&s&s&s&s&s)", &node, &number, &offset, &size, &s1,
                        &s2, &fstype, &label, &uuid, &s3))
                        if (number == 0) {
                                found = true;
                                g_assert_true(g_utf8_validate(label, -1, NULL));
                                g_assert_true(g_str_has_prefix(label, "caf"));
                        }
                g_assert_true(found);
        }
        object = g_strdup_printf("/org/loopd1/device/%s", device + 5);
        property = g_dbus_connection_call_sync(a, LOOPD_BUS_NAME, object, "org.freedesktop.DBus.Properties",
                "Get", g_variant_new("(ss)", "org.loopd1.Device", "Partitions"), NULL,
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);

        /* Mounting it works either way; the name is made safe. */
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Refused options, nodes and filesystems: an error, and nothing mounted, and no directory left */

/* An image with an ext4 (p1, the kernel's driver) and a vfat (p2, a FUSE helper here) partition. */
char *make_two_partitions(Harness *h, const char *name)
{
        char *image = harness_image_path(h, name);

        image_create(image, 72 * MiB);
        image_sfdisk(
                image, "label: dos\nstart=2048, size=65536, type=83\nstart=67584, size=65536, type=c\n", 0);
        g_free(image_mkfs_at(image, MiB, 32 * MiB, "ext4", "LINUX"));
        g_free(image_mkfs_at(image, 33 * MiB, 32 * MiB, "vfat", "FAT"));
        return image;
}

void check_nothing_mounted(Harness *h, const char *node)
{
        g_autoptr(GPtrArray) targets = targets_of(node);

        for (guint i = 0; i < targets->len; i++)
                g_test_fail_printf("%s is mounted on %s", node, (char *)targets->pdata[i]);
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);
}

typedef struct OptionCase {
        const char *options;
        const char *needle; /* what the error message must name */
} OptionCase;

void test_option_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const OptionCase *c = h->options->data;
        g_autofree char *image = make_two_partitions(h, "options.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        give_image_to(image, HARNESS_USER_A);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);

        for (guint p = 1; p <= 2; p++) {
                g_autofree char *node = g_strdup_printf("%sp%u", device, p);
                g_autofree char *mount_point = NULL;
                g_autoptr(GError) error = NULL;
                g_auto(HarnessRun) run = { 0 };

                /* Raw D-Bus, with and without read-only. */
                mount_point = harness_mount(a, node, mount_options(c->options, FALSE), &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, c->needle);
                g_assert_null(mount_point);
                check_nothing_mounted(h, node);
                g_clear_error(&error);
                g_clear_pointer(&mount_point, g_free);
                mount_point = harness_mount(a, node, mount_options(c->options, TRUE), &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, c->needle);
                g_assert_null(mount_point);
                check_nothing_mounted(h, node);

                /* And what a user types. */
                g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", "--options", c->options,
                                        node, NULL),
                        ==, 1);
                g_assert_nonnull(strstr(run.err, "loopctl: "));
                check_nothing_mounted(h, node);
        }

        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

static const OptionCase option_suid = { "suid", "'suid'" };
static const OptionCase option_dev = { "dev", "'dev'" };
static const OptionCase option_uid_0 = { "uid=0", "'uid=0'" };
static const OptionCase option_ro_suid = { "ro,suid", "'suid'" };
/* On ext4 shortname= is foreign; through fusefat (no kernel vfat here) it is refused as well, since the
 * helper has no such option: either way the smuggled uid=0 never reaches a mount. */
static const OptionCase option_comma_uid = { "shortname=lower,uid=0", "options" };
static const OptionCase option_x_foo = { "x-foo", "'x-foo'" };
static const OptionCase option_newline = { "noatime\nsuid", "options" };
const HarnessOptions opts_option_suid = { .data = &option_suid };
const HarnessOptions opts_option_dev = { .data = &option_dev };
const HarnessOptions opts_option_uid_0 = { .data = &option_uid_0 };
const HarnessOptions opts_option_ro_suid = { .data = &option_ro_suid };
const HarnessOptions opts_option_comma_uid = { .data = &option_comma_uid };
const HarnessOptions opts_option_x_foo = { .data = &option_x_foo };
const HarnessOptions opts_option_newline = { .data = &option_newline };

/* Ten "é": strings that a 32- or 64-byte cut would split in the middle of a character. */
#define E_ACUTE_10 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"

/* fstype names a filesystem, never tmpfs, proc, a FUSE type or anything smuggling options. */
void test_fstype_outside_the_list_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "fstype.img"), *device = NULL, *node = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const char *const fstypes[] = { "tmpfs", "proc", "fuse", "fuse.sshfs", "overlay", "ext4,uid=0",
                "../ext4", "ext4\n", "ext" E_ACUTE_10 E_ACUTE_10, NULL };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        node = g_strconcat(device, "p1", NULL);
        for (const char *const *t = fstypes; *t; t++) {
                GVariantBuilder b;
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = NULL;
                g_autofree char *remote = NULL;

                g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
                g_variant_builder_add(&b, "{sv}", "fstype", g_variant_new_string(*t));
                mount_point = harness_mount(a, node, g_variant_builder_end(&b), &error);
                g_assert_null(mount_point);
                g_assert_nonnull(error);
                remote = error ? g_dbus_error_get_remote_error(error) : NULL;
                if (g_strcmp0(remote, LOOPD_ERROR_INVALID_ARGUMENT) != 0 &&
                        g_strcmp0(remote, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM) != 0)
                        g_test_fail_printf(
                                "fstype '%s': expected InvalidArgument or UnsupportedFilesystem, got %s", *t,
                                remote ? remote : "success");
                check_nothing_mounted(h, node);
        }

        /* A filesystem loopd knows, but not the one there: the mount fails, and leaves nothing behind. */
        for (const char *const *t = (const char *const[]){ "xfs", "vfat", "iso9660", NULL }; *t; t++) {
                GVariantBuilder b;
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = NULL;

                g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
                g_variant_builder_add(&b, "{sv}", "fstype", g_variant_new_string(*t));
                mount_point = harness_mount(a, node, g_variant_builder_end(&b), &error);
                g_assert_null(mount_point);
                g_assert_nonnull(error);
                check_nothing_mounted(h, node);
        }
        g_assert_true(loopd_alive(h));
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
}

/* loopd is not a general disk mounter: anything but a loop device or loop partition is NotManaged. */
void test_non_loop_node_not_managed(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GDir) blocks = g_dir_open("/sys/class/block", 0, NULL);
        g_auto(HarnessRun) run = { 0 };
        const char *e;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_ptr_array_add(nodes, g_strdup("/dev/vda1"));
        /* Whatever real disks this machine has. */
        while (blocks && (e = g_dir_read_name(blocks)))
                if (!g_str_has_prefix(e, "loop") && !g_str_has_prefix(e, "zram") &&
                        !g_str_has_prefix(e, "ram"))
                        g_ptr_array_add(nodes, g_strconcat("/dev/", e, NULL));
        g_ptr_array_add(nodes, g_strdup("/dev/loop0/../vda"));
        g_ptr_array_add(nodes, g_strdup("/dev/zero"));
        g_ptr_array_add(nodes, g_strdup("/dev/loop-control"));
        g_ptr_array_add(nodes, g_strdup("loop00"));
        g_ptr_array_add(nodes, g_strdup("/dev/loop1p0"));
        g_ptr_array_add(nodes, g_strdup("/tmp"));
        /* Too long, and cut in the middle of a character if the error message quotes 64 bytes of it. */
        g_ptr_array_add(nodes, g_strconcat("/dev/loop", E_ACUTE_10, E_ACUTE_10, E_ACUTE_10, NULL));
        g_assert_cmpuint(nodes->len, >=, 8);

        for (guint i = 0; i < nodes->len; i++) {
                const char *node = nodes->pdata[i];
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, node, NULL, &error);

                g_test_message("Mount(%s)", node);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MANAGED, NULL);
                g_assert_null(mount_point);
                if (g_str_has_prefix(node, "/dev/") && g_file_test(node, G_FILE_TEST_EXISTS)) {
                        g_autoptr(GPtrArray) targets = targets_of(node);
                        /* Only what was mounted before (the root disk): nothing under the media dir. */
                        for (guint j = 0; j < targets->len; j++)
                                if (g_str_has_prefix(targets->pdata[j], h->media_dir))
                                        g_test_fail_printf(
                                                "%s is mounted on %s", node, (char *)targets->pdata[j]);
                }
        }
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);

        /* Unmount of the root filesystem's mount point or its disk: not a loop device either. */
        for (const char *const *t = (const char *const[]){ "/", "/dev/vda", NULL }; *t; t++) {
                g_autoptr(GError) error = NULL;
                g_assert_false(harness_unmount(a, *t, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MANAGED, NULL);
        }
        g_autoptr(JsonObject) root = findmnt_at("/");
        g_assert_nonnull(root);

        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", "/dev/vda1", NULL), ==, 1);
        g_assert_true(loopd_alive(h));
}

/* ---------------------------------------------------------------------------------------------------- */
/* nosuid,nodev in effect, not just in the table */

void test_setuid_and_device_nodes_inert(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "suid.img"), *device = NULL, *mount_point = NULL;
        g_autofree char *id = NULL, *null = NULL, *out = NULL, *want = NULL;

        harness_allow_all(h);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "SUID"));
        populate(h, image, 0,
                "cp /usr/bin/id \"$M/id\"; chown root:root \"$M/id\"; chmod 4755 \"$M/id\"; "
                "mknod -m 0666 \"$M/null\" c 1 3");
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        id = g_build_filename(mount_point, "id", NULL);
        null = g_build_filename(mount_point, "null", NULL);
        struct stat st;
        g_assert_cmpint(stat(id, &st), ==, 0);
        g_assert_true(st.st_mode & S_ISUID); /* the bit is there: nosuid is what makes it inert */
        const char *run_id[] = { id, "-u", NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_A, &out, run_id), ==, 0);
        want = g_strdup_printf("%u\n", (unsigned)harness_uid_of(HARNESS_USER_A));
        g_assert_cmpstr(out, ==, want);
        const char *open_null[] = { "cat", null, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_A, NULL, open_null), !=, 0);

        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_unmounted(mount_point);
        check_gone(h, device);
}
