/* format-confined.c: Format through the running daemon as the unprivileged test user: the confined mkfs
 * makes what blkid -p (as root, on the image file) then reads, its output goes to loopd's log, the Device's
 * Partitions show it, and the refusals leave the image's bytes as they were. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

static void give_to(const char *path, const char *user)
{
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
}

static GVariant *format_options(const char *label, const char *uuid, gboolean erase)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (label)
                g_variant_builder_add(&b, "{sv}", "label", g_variant_new_string(label));
        if (uuid)
                g_variant_builder_add(&b, "{sv}", "uuid", g_variant_new_string(uuid));
        if (erase)
                g_variant_builder_add(&b, "{sv}", "erase", g_variant_new_boolean(TRUE));
        return g_variant_builder_end(&b);
}

static bool call_format(
        GDBusConnection *c, const char *node, const char *type, GVariant *options, GError **error)
{
        g_autoptr(GVariant) reply = harness_call(c, "Format",
                g_variant_new(
                        "(ss@a{sv})", node, type, options ? options : format_options(NULL, NULL, FALSE)),
                NULL, G_DBUS_CALL_FLAGS_NONE, error);

        if (reply)
                g_assert_cmpstr(g_variant_get_type_string(reply), ==, "()");
        return reply != NULL;
}

/* An image of size bytes (with the partition table sfdisk makes of table, unless NULL) owned by user A,
 * attached read-write by A: the device. */
static char *attach_image(
        Harness *h, GDBusConnection *a, const char *name, guint64 size, const char *table, char **ret_image)
{
        g_autofree char *image = harness_image_path(h, name);
        g_autoptr(GError) error = NULL;
        char *device = NULL;

        image_create(image, size);
        if (table)
                image_sfdisk(image, table, 0);
        give_to(image, HARNESS_USER_A);
        g_assert_true(harness_attach_path(a, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        *ret_image = g_steal_pointer(&image);
        return device;
}

/* The Partitions property of device's object: the (fstype, label) of node, or FALSE when it is not listed.
 */
static gboolean device_shows(
        Harness *h, const char *device, const char *node, char **ret_fstype, char **ret_label)
{
        g_autofree char *path = g_strdup_printf(LOOPD_DEVICE_PATH_PREFIX "/%s", device + strlen("/dev/"));
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply =
                g_dbus_connection_call_sync(h->bus, LOOPD_BUS_NAME, path, "org.freedesktop.DBus.Properties",
                        "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, "Partitions"),
                        G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        g_autoptr(GVariant) value = NULL;
        GVariantIter iter;
        const char *n, *fstype, *label;

        harness_assert_no_error(error);
        if (!reply)
                return FALSE;
        g_variant_get(reply, "(v)", &value);
        g_variant_iter_init(&iter, value);
        while (g_variant_iter_next(
                &iter, "(&sutt&s&s&s&s&s&s)", &n, NULL, NULL, NULL, NULL, NULL, &fstype, &label, NULL, NULL))
                if (g_str_equal(n, node)) {
                        *ret_fstype = g_strdup(fstype);
                        *ret_label = g_strdup(label);
                        return TRUE;
                }
        return FALSE;
}

static void assert_blkid(const char *image, const char *type, const char *label)
{
        g_autoptr(GHashTable) seen = oracle_blkid(image, 0);

        g_assert_cmpstr(g_hash_table_lookup(seen, "TYPE"), ==, type);
        g_assert_cmpstr(g_hash_table_lookup(seen, "LABEL"), ==, label);
}

static void test_ext4_and_vfat(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *fstype = NULL, *label = NULL, *log = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "disk.img", 64 * MiB, NULL, &image);
        REQUIRE_NONNULL(device);

        g_assert_true(call_format(a, device, "ext4", format_options("Data disk", NULL, FALSE), &error));
        harness_assert_no_error(error);
        assert_blkid(image, "ext4", "Data disk");
        /* The root directory is the caller's, so that they can write to what they made. */
        g_autofree char *qimage = g_shell_quote(image);
        g_autofree char *stat_root = test_sh("debugfs -R 'stat /' %s 2>/dev/null | head -3", qimage);
        g_autofree char *owner = g_strdup_printf("User: %5u", (unsigned)harness_uid_of(HARNESS_USER_A));
        if (!strstr(stat_root, owner))
                g_test_fail_printf("the root directory is not %s's: %s", HARNESS_USER_A, stat_root);
        g_assert_true(device_shows(h, device, device, &fstype, &label));
        g_assert_cmpstr(fstype, ==, "ext4");
        g_assert_cmpstr(label, ==, "Data disk");
        /* mke2fs's report went to loopd's log. */
        log = harness_loopd_log(h);
        g_assert_nonnull(strstr(log, "Writing superblocks"));

        /* The same device again as FAT, with a volume id: the label in upper case, as DOS writes it. */
        g_assert_true(call_format(a, device, "vfat", format_options("boot", "1A2B-3C4D", TRUE), &error));
        harness_assert_no_error(error);
        assert_blkid(image, "vfat", "BOOT");
        g_autoptr(GHashTable) seen = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(seen, "UUID"), ==, "1A2B-3C4D");
        g_clear_pointer(&fstype, g_free);
        g_clear_pointer(&label, g_free);
        g_assert_true(device_shows(h, device, device, &fstype, &label));
        g_assert_cmpstr(fstype, ==, "vfat");
        g_assert_cmpstr(label, ==, "BOOT");

        /* empty: nothing left for blkid to find. */
        g_assert_true(call_format(a, device, "empty", NULL, &error));
        harness_assert_no_error(error);
        g_autofree char *left = NULL;
        g_assert_cmpint(test_sh_status(&left, "blkid -p -o export %s", qimage), ==, 2);

        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* Each mkfs loopd knows, confined, on a device of a size it accepts (xfs: 300 MiB). exfat and ntfs keep
 * UTF-16 labels: a label beyond ASCII must arrive as it was sent, exfat's as long as it holds (11 units). */
static void test_every_filesystem(Harness *h, gconstpointer data)
{
        static const struct {
                const char *type, *label;
        } cases[] = { { "ext2", "e2" }, { "ext3", "e3" }, { "btrfs", "bt" }, { "exfat", "Données 123" },
                { "ntfs", "Données ☃" }, { "swap", "sw" }, { "xfs", "xf" } };
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *qimage = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "every.img", 320 * MiB, NULL, &image);
        REQUIRE_NONNULL(device);
        qimage = g_shell_quote(image);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;

                if (!call_format(
                            a, device, cases[i].type, format_options(cases[i].label, NULL, FALSE), &error)) {
                        g_test_fail_printf("%s: %s", cases[i].type, error->message);
                        continue;
                }
                g_autoptr(GHashTable) seen = oracle_blkid(image, 0);
                g_autofree char *label = test_sh("LC_ALL=C.UTF-8 blkid -p -o value -s LABEL %s", qimage);
                g_assert_cmpstr(g_hash_table_lookup(seen, "TYPE"), ==, cases[i].type);
                g_assert_cmpstr(g_strchomp(label), ==, cases[i].label);
        }
        g_autoptr(GError) error = NULL;
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

static char *checksum(const char *image)
{
        g_autofree char *q = g_shell_quote(image);

        return test_sh("sha256sum < %s", q);
}

static void test_refusals(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *before = NULL, *after = NULL, *mount_point = NULL;
        g_autofree char *long_label = g_strnfill(300, 'x');
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "refusals.img", 64 * MiB, NULL, &image);
        REQUIRE_NONNULL(device);
        g_assert_true(call_format(a, device, "ext4", format_options("keep", NULL, FALSE), &error));
        harness_assert_no_error(error);
        before = checksum(image);

        static const struct {
                const char *type, *label, *uuid, *needle;
        } cases[] = {
                { "ext4", "a/b", NULL, "label" },
                { "ext4", "two\nlines", NULL, "label" },
                { "btrfs", NULL, NULL, NULL }, /* the long label, below */
                { "vfat", "BAD*NAME", NULL, "label" },
                { "fat32", NULL, NULL, "type" },
                { "exfat", NULL, "1A2B-3C4D", "uuid" },
                { "exfat", "Données 1234", NULL, "label" }, /* 12 units: mkfs.exfat takes 11 */
                { "ext4", NULL, "not-a-uuid", "uuid" },
                { "gpt", "x", NULL, "label" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) e = NULL;
                const char *label = cases[i].needle ? cases[i].label : long_label;

                g_assert_false(call_format(
                        a, device, cases[i].type, format_options(label, cases[i].uuid, FALSE), &e));
                harness_assert_dbus_error(e, LOOPD_ERROR_INVALID_ARGUMENT, cases[i].needle ?: "label");
        }

        /* Mounted: Busy, naming where. */
        /* Read-only: a read-write mount writes to the superblock itself. */
        GVariantBuilder ro;
        g_variant_builder_init(&ro, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&ro, "{sv}", "read-only", g_variant_new_boolean(TRUE));
        mount_point = harness_mount(a, device, g_variant_builder_end(&ro), &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_autoptr(GError) busy = NULL;
        g_assert_false(call_format(a, device, "vfat", NULL, &busy));
        harness_assert_dbus_error(busy, LOOPD_ERROR_BUSY, mount_point);
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);

        after = checksum(image);
        g_assert_cmpstr(before, ==, after);

        /* Another user's device: not without manage-others. */
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        REQUIRE_NONNULL(b);
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        g_autoptr(GError) denied = NULL;
        g_assert_false(call_format(b, device, "vfat", NULL, &denied));
        harness_assert_dbus_error(denied, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_free(after);
        after = checksum(image);
        g_assert_cmpstr(before, ==, after);

        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A read-only device: ReadOnly, nothing written. */
static void test_read_only(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = harness_image_path(h, "ro.img"), *device = NULL, *before = NULL,
                        *after = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 16 * MiB);
        give_to(image, HARNESS_USER_A);
        before = checksum(image);
        g_assert_true(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);
        g_assert_false(call_format(a, device, "ext4", NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_READ_ONLY, "read-only");
        g_clear_error(&error);
        after = checksum(image);
        g_assert_cmpstr(before, ==, after);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A mkfs that fails says so, and its own words are in loopd's log, not in the error. */
static void test_failure_goes_to_log(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *log = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        /* 16 MiB is too small for btrfs. */
        device = attach_image(h, a, "small.img", 16 * MiB, NULL, &image);
        REQUIRE_NONNULL(device);
        g_assert_false(call_format(a, device, "btrfs", NULL, &error));
        harness_assert_dbus_error(
                error, LOOPD_ERROR_FAILED, "mkfs.btrfs failed (exit status 1); loopd's log");
        g_assert_null(strstr(error->message, "too small"));
        log = harness_loopd_log(h);
        g_assert_nonnull(strstr(log, "mkfs.btrfs /dev/loop"));
        g_clear_error(&error);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A partition formatted alone (the table and the other partition stay), then the whole device: its
 * partitions go, and only the new filesystem is left. */
static void test_partition_then_whole(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *p1 = NULL, *p2 = NULL;
        g_autofree char *fstype = NULL, *label = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "parted.img", 64 * MiB,
                "label: dos\nstart=2048, size=32MiB, type=6\ntype=83\n", &image);
        REQUIRE_NONNULL(device);
        p1 = g_strdup_printf("%sp1", device);
        p2 = g_strdup_printf("%sp2", device);
        /* The whole device's page cache now holds its first 40 MiB, both partitions' first sectors among
         * them, as they are (zeros), as udevd's or a file manager's read would leave it: loopd's probe after
         * each Format must not read them from there, but what the mkfs wrote through the partition's node.
         */
        g_free(test_sh("dd if=%s of=/dev/null bs=1M count=40 status=none", device));

        g_assert_true(call_format(a, p1, "vfat", format_options("OSDEV", NULL, FALSE), &error));
        harness_assert_no_error(error);
        g_assert_true(call_format(a, p2, "ext2", format_options("root", NULL, FALSE), &error));
        harness_assert_no_error(error);
        {
                g_autoptr(GHashTable) fat = oracle_blkid(image, 1 * MiB);
                g_autoptr(GHashTable) ext = oracle_blkid(image, 33 * MiB);
                g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);

                g_assert_cmpstr(g_hash_table_lookup(fat, "TYPE"), ==, "vfat");
                g_assert_cmpstr(g_hash_table_lookup(fat, "LABEL"), ==, "OSDEV");
                g_assert_cmpstr(g_hash_table_lookup(ext, "TYPE"), ==, "ext2");
                g_assert_cmpstr(g_hash_table_lookup(ext, "LABEL"), ==, "root");
                /* The table is still there, both partitions in it. */
                JsonArray *parts = json_object_get_array_member(json_node_get_object(table), "partitions");
                g_assert_cmpuint(json_array_get_length(parts), ==, 2);
        }
        g_assert_true(device_shows(h, device, p1, &fstype, &label));
        g_assert_cmpstr(fstype, ==, "vfat");
        g_assert_cmpstr(label, ==, "OSDEV");

        /* A partition table on a partition is not a thing. */
        g_assert_false(call_format(a, p1, "gpt", NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, "node");
        g_clear_error(&error);

        g_assert_true(call_format(a, device, "ext4", format_options("whole", NULL, FALSE), &error));
        harness_assert_no_error(error);
        g_assert_false(g_file_test(p1, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(p2, G_FILE_TEST_EXISTS));
        g_autofree char *qimage = g_shell_quote(image);
        g_autofree char *all = test_sh("blkid -p -o export %s", qimage);
        g_assert_nonnull(strstr(all, "TYPE=ext4"));
        g_assert_null(strstr(all, "PTTYPE"));
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A GPT header ("EFI PART") at byte offset of image asking for entries 128-byte entries, naming alternative
 * as its alternative_lba (little-endian host, as the test machines are). */
static void put_gpt_header(const char *image, guint64 offset, guint32 entries, guint64 alternative)
{
        guint8 header[92] = { 'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T' };
        guint32 esz = 128;
        int fd = open(image, O_WRONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        memcpy(header + 32, &alternative, 8);
        memcpy(header + 80, &entries, 4);
        memcpy(header + 84, &esz, 4);
        g_assert_cmpint(pwrite(fd, header, sizeof(header), (off_t)offset), ==, (ssize_t)sizeof(header));
        close(fd);
}

static gboolean image_has_gpt_header_at(const char *image, guint64 offset)
{
        char magic[8] = {};
        int fd = open(image, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, magic, sizeof(magic), (off_t)offset), ==, (ssize_t)sizeof(magic));
        close(fd);
        return memcmp(magic, "EFI PART", 8) == 0;
}

/* A GPT header asking for a 4 GiB entry array (at LBA 1, or where a sane primary's alternative_lba points)
 * makes libblkid and libfdisk read gigabytes: Format wipes such headers before either looks, and answers
 * quickly. */
static void test_hostile_gpt_wiped(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        static const char *const types[] = { "empty", "ext4", "gpt" };
        const guint64 alt = 4096; /* 2 MiB in: neither LBA 1 nor the last */

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        for (size_t i = 0; i < G_N_ELEMENTS(types); i++) {
                g_autofree char *name = g_strdup_printf("hostile-%s.img", types[i]);
                g_autofree char *image = harness_image_path(h, name), *device = NULL;
                g_autoptr(GError) error = NULL;
                gint64 start;

                image_create(image, 1024 * MiB);
                put_gpt_header(image, 512, 1u << 25, 1024 * MiB / 512 - 1);
                give_to(image, HARNESS_USER_A);
                g_assert_true(harness_attach_path(a, image, O_RDWR, NULL, &device, &error));
                harness_assert_no_error(error);
                REQUIRE_NONNULL(device);
                /* The alternative variant: written once the device exists, as Attach would not look past
                 * it either way. */
                put_gpt_header(image, 512, 128, alt);
                put_gpt_header(image, alt * 512, 1u << 25, 1);
                if (i == 0)
                        put_gpt_header(image, 512, 1u << 25, alt); /* both at once */
                g_free(test_sh("blockdev --flushbufs %s", device));

                start = g_get_monotonic_time();
                g_assert_true(call_format(a, device, types[i], NULL, &error));
                harness_assert_no_error(error);
                g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * G_USEC_PER_SEC);
                g_assert_false(image_has_gpt_header_at(image, alt * 512));
                if (i == 0)
                        g_assert_false(image_has_gpt_header_at(image, 512));
                g_assert_true(harness_detach(a, device, NULL, &error));
                harness_assert_no_error(error);
        }
}

/* A partition is not formatted while the whole device is mounted, even by a mount that does not hold it
 * exclusively (a FUSE driver reading a hybrid ISO; here a tmpfs named after the device, as loopd's mount
 * table lookup sees either). */
static void test_partition_of_mounted_disk(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *p1 = NULL;
        g_autofree char *target = g_build_filename(h->tmpdir, "whole-mount", NULL);
        g_autofree char *before = NULL, *after = NULL, *qimage = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(
                h, a, "disk-mounted.img", 32 * MiB, "label: dos\nstart=2048, type=83\n", &image);
        REQUIRE_NONNULL(device);
        p1 = g_strdup_printf("%sp1", device);
        g_assert_cmpint(g_mkdir_with_parents(target, 0755), ==, 0);
        g_free(test_sh("mount -t tmpfs %s %s", device, target));
        qimage = g_shell_quote(image);
        before = test_sh("sha256sum < %s", qimage);

        g_assert_false(call_format(a, p1, "ext4", NULL, &error));
        g_free(test_sh("umount %s", target));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, target);
        g_clear_error(&error);
        after = test_sh("sha256sum < %s", qimage);
        g_assert_cmpstr(before, ==, after);

        g_assert_true(call_format(a, p1, "ext4", NULL, &error));
        harness_assert_no_error(error);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

typedef struct FormatThread {
        GDBusConnection *connection;
        const char *device;
        GError *error;
        bool ok;
        gint done;
} FormatThread;

static gpointer format_thread(gpointer data)
{
        FormatThread *t = data;

        t->ok = call_format(t->connection, t->device, "ext2", NULL, &t->error);
        g_atomic_int_set(&t->done, 1);
        return NULL;
}

/* While the mkfs runs (held stopped here), Mount, Detach and another Format of the device are Busy while
 * ListDevices is answered; the Format then ends well. */
static void test_busy_while_formatting(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL;
        g_autoptr(GError) error = NULL;
        bool caught = false;
        struct stat st;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        /* ext2 writes every inode table: on 16 GiB that takes long enough to be seen. */
        device = attach_image(h, a, "busy.img", 16384 * MiB, NULL, &image);
        REQUIRE_NONNULL(device);
        g_assert_cmpint(stat(device, &st), ==, 0);
        const dev_t rdev = st.st_rdev;
        for (int attempt = 0; attempt < 20 && !caught; attempt++) {
                FormatThread t = { .connection = a, .device = device };
                GThread *thread = g_thread_new("format", format_thread, &t);
                gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
                pid_t pid = 0;

                while (!pid && !g_atomic_int_get(&t.done) && g_get_monotonic_time() < deadline) {
                        pid = test_find_mkfs(rdev, "mke2fs");
                        if (pid && !test_stop_running(pid))
                                pid = 0; /* it was done already */
                }
                if (pid) {
                        g_autoptr(GError) mount_error = NULL, detach_error = NULL, format_error = NULL;
                        g_autofree char *mount_point = harness_mount(a, device, NULL, &mount_error);

                        caught = true;
                        g_assert_null(mount_point);
                        harness_assert_dbus_error(mount_error, LOOPD_ERROR_BUSY, "being formatted");
                        g_assert_false(harness_detach(a, device, NULL, &detach_error));
                        harness_assert_dbus_error(detach_error, LOOPD_ERROR_BUSY, "being formatted");
                        g_assert_false(call_format(a, device, "vfat", NULL, &format_error));
                        harness_assert_dbus_error(format_error, LOOPD_ERROR_BUSY, "being formatted");
                        /* Other calls are answered meanwhile: the Format holds no part of the event
                         * loop (its wipe and erase ran in a worker, the mkfs is a child). */
                        {
                                g_autoptr(GError) list_error = NULL;
                                gint64 asked = g_get_monotonic_time();
                                g_autoptr(GVariant) devices = harness_list_devices(a, &list_error);

                                harness_assert_no_error(list_error);
                                g_assert_nonnull(devices);
                                g_assert_cmpint(g_get_monotonic_time() - asked, <, 5 * G_USEC_PER_SEC);
                        }
                        g_assert_cmpint(kill(pid, SIGCONT), ==, 0);
                }
                g_thread_join(thread);
                if (!t.ok)
                        g_test_fail_printf("Format: %s", t.error ? t.error->message : "?");
                g_clear_error(&t.error);
        }
        if (!caught)
                g_test_fail_printf("never saw the mkfs running in 20 Formats");
        else
                assert_blkid(image, "ext2", NULL);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* Does the kernel have node (a /dev/loopNpM) as a partition? */
static bool kernel_has(const char *node)
{
        g_autofree char *sys = g_build_filename("/sys/class/block", node + strlen("/dev/"), NULL);

        return g_file_test(sys, G_FILE_TEST_EXISTS);
}

/* A DOS extended partition holds the logical ones: its node is only the start of the chain of their tables,
 * and a Format of it (with or without erase) would cut them off. InvalidArgument, nothing written; the
 * logical partition, its filesystem and the table stay. */
static void test_extended_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *p2 = NULL, *p5 = NULL;
        g_autofree char *before = NULL, *after = NULL;
        g_autoptr(GError) error = NULL;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "laptop.img", 64 * MiB,
                "label: dos\nsize=16MiB, type=83\ntype=5\nsize=16MiB, type=83\n", &image);
        REQUIRE_NONNULL(device);
        p2 = g_strdup_printf("%sp2", device);
        p5 = g_strdup_printf("%sp5", device);
        g_assert_true(call_format(a, p5, "ext2", format_options("logical", NULL, FALSE), &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        before = checksum(image);

        for (int erase = 0; erase <= 1; erase++) {
                g_autoptr(GError) e = NULL;

                g_assert_false(call_format(a, p2, "empty", format_options(NULL, NULL, erase), &e));
                harness_assert_dbus_error(e, LOOPD_ERROR_INVALID_ARGUMENT, "extended");
        }
        after = checksum(image);
        g_assert_cmpstr(after, ==, before);
        g_assert_true(kernel_has(p5));
        {
                g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
                JsonArray *parts = json_object_get_array_member(json_node_get_object(table), "partitions");

                g_assert_cmpuint(json_array_get_length(parts), ==, 3);
        }
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A GPT may have tiny partitions among its first four and a fifth one (an embedded board's image): no
 * extended partition there, and a Format of one of them goes through once the device's partitions are
 * known. */
static void test_small_gpt_partition(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *p1 = NULL, *p5 = NULL;
        g_autofree char *fstype = NULL, *label = NULL;
        g_autoptr(GError) error = NULL;
        bool listed = false;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(h, a, "board.img", 64 * MiB,
                "label: gpt\nstart=2048, size=8\nstart=4096, size=8\nstart=6144, size=8\nstart=8192, size=8\n"
                "start=10240, size=16MiB\n",
                &image);
        REQUIRE_NONNULL(device);
        p1 = g_strdup_printf("%sp1", device);
        p5 = g_strdup_printf("%sp5", device);
        g_assert_true(kernel_has(p5));
        /* The watcher's look at the partitions names their types. */
        for (gint64 deadline = g_get_monotonic_time() + HARNESS_TIMEOUT_MS * 1000;
                !(listed = device_shows(h, device, p1, &fstype, &label)) &&
                g_get_monotonic_time() < deadline;
                g_usleep(50 * 1000))
                ;
        g_assert_true(listed);

        g_assert_true(call_format(a, p1, "empty", NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_true(kernel_has(p5));
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* A whole-device Format removes the device's partitions first; one held open (not mounted: a tool reading
 * it) makes that Busy. The partitions it had removed already come back: the table is still on the device,
 * and the kernel's partitions follow it. */
static void test_whole_busy_keeps_partitions(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = NULL, *device = NULL, *p1 = NULL, *p2 = NULL;
        g_autoptr(GError) error = NULL;
        int held;

        (void)data;
        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = attach_image(
                h, a, "held.img", 64 * MiB, "label: dos\nsize=16MiB, type=83\ntype=83\n", &image);
        REQUIRE_NONNULL(device);
        p1 = g_strdup_printf("%sp1", device);
        p2 = g_strdup_printf("%sp2", device);
        held = open(p2, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(held, >=, 0);

        g_assert_false(call_format(a, device, "ext4", NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, "partitions");
        g_clear_error(&error);
        g_assert_true(kernel_has(p1));
        g_assert_true(kernel_has(p2));
        g_assert_true(g_file_test(p1, G_FILE_TEST_EXISTS));
        close(held);

        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);
        harness_add("/loopd/format/confined/ext4-then-vfat-then-empty", test_ext4_and_vfat, NULL);
        harness_add("/loopd/format/confined/every-filesystem", test_every_filesystem, NULL);
        harness_add("/loopd/format/confined/refusals-leave-bytes", test_refusals, NULL);
        harness_add("/loopd/format/confined/read-only-device", test_read_only, NULL);
        harness_add("/loopd/format/confined/failure-output-in-log", test_failure_goes_to_log, NULL);
        harness_add("/loopd/format/confined/partition-then-whole-device", test_partition_then_whole, NULL);
        harness_add("/loopd/format/confined/busy-while-formatting", test_busy_while_formatting, NULL);
        harness_add("/loopd/format/confined/hostile-gpt-wiped-quickly", test_hostile_gpt_wiped, NULL);
        harness_add("/loopd/format/confined/partition-of-mounted-disk-busy", test_partition_of_mounted_disk,
                NULL);
        harness_add("/loopd/format/confined/extended-partition-refused", test_extended_refused, NULL);
        harness_add("/loopd/format/confined/small-gpt-partition-formats", test_small_gpt_partition, NULL);
        harness_add("/loopd/format/confined/whole-device-busy-keeps-partitions",
                test_whole_busy_keeps_partitions, NULL);
        return g_test_run();
}
