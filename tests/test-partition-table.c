/* test-partition-table.c: partition-table.c (libfdisk) on sparse regular files, checked with sfdisk and
 * blkid as oracles: empty tables, 4K-native GPT, alignment, aliases, names, flags and refusals that leave
 * every byte as it was. No root. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "images.h"
#include "partition-table.h"

#define MIB (UINT64_C(1) << 20)

typedef struct Fixture {
        char *dir;
        char *path;
        int fd;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
        f->dir = test_tmpdir_new();
        f->path = g_build_filename(f->dir, "disk.img", NULL);
        image_create(f->path, 64 * MIB);
        f->fd = open(f->path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(f->fd, >=, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        close(f->fd);
        test_tmpdir_remove(f->dir);
        g_free(f->path);
        g_free(f->dir);
}

/* sfdisk's view of the table (sector_size 0 = 512) and of partition i in it. */
static JsonObject *table_of(const char *path, unsigned sector_size)
{
        JsonNode *node = oracle_sfdisk_json(path, sector_size);

        g_assert_nonnull(node);
        JsonObject *o = json_object_ref(json_node_get_object(node));
        json_node_unref(node);
        return o;
}

static JsonObject *partition_of(JsonObject *table, guint i)
{
        JsonArray *parts = json_object_get_array_member(table, "partitions");

        g_assert_nonnull(parts);
        g_assert_cmpuint(json_array_get_length(parts), >, i);
        return json_array_get_object_element(parts, i);
}

static guint n_partitions_of(JsonObject *table)
{
        return json_object_has_member(table, "partitions")
                ? json_array_get_length(json_object_get_array_member(table, "partitions"))
                : 0;
}

/* SHA-256 of the file's data extents and where they lie (the images are sparse: holes read as zeros, and
 * reading 64 MiB for every refusal would make the suite slow). Stricter than the bytes alone: data written
 * into a hole, even zeros, changes it. */
static char *checksum_of(const char *path)
{
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
        g_autofree guchar *buf = g_malloc(1 << 16);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t data = 0, hole;

        g_assert_cmpint(fd, >=, 0);
        while ((data = lseek(fd, data, SEEK_DATA)) >= 0) {
                hole = lseek(fd, data, SEEK_HOLE);
                g_assert_cmpint(hole, >, data);
                g_autofree char *where =
                        g_strdup_printf("%jd+%jd;", (intmax_t)data, (intmax_t)(hole - data));
                g_checksum_update(sum, (const guchar *)where, -1);
                for (off_t at = data; at < hole;) {
                        ssize_t k = pread(fd, buf, MIN((off_t)(1 << 16), hole - at), at);

                        g_assert_cmpint(k, >, 0);
                        g_checksum_update(sum, buf, (gssize)k);
                        at += k;
                }
                data = hole;
        }
        close(fd);
        return g_strdup(g_checksum_get_string(sum));
}

static gboolean has_signature_at(int fd, off_t offset, const char *magic)
{
        char buf[16] = {};
        size_t len = strlen(magic);

        g_assert_cmpint(pread(fd, buf, len, offset), ==, (ssize_t)len);
        return memcmp(buf, magic, len) == 0;
}

/* Adds req; asserts success and returns the partition. */
static TablePartition add_ok(int fd, uint32_t sector_size, const PartitionRequest *req)
{
        g_autofree char *why = NULL;
        TablePartition p = {};
        int r = partition_table_add(fd, sector_size, req, &p, &why);

        if (r < 0)
                g_test_message("partition_table_add: %s (%s)", g_strerror(-r), why ? why : "no reason");
        g_assert_cmpint(r, ==, 0);
        return p;
}

/* Adds req, which must be refused with r and a reason starting with field; the image must not change. */
static void add_refused(
        Fixture *f, uint32_t sector_size, const PartitionRequest *req, int expected, const char *field)
{
        g_autofree char *before = checksum_of(f->path), *after = NULL, *why = NULL;
        int r = partition_table_add(f->fd, sector_size, req, NULL, &why);

        g_test_message("refused: %s", why ? why : "(no reason)");
        g_assert_cmpint(r, ==, expected);
        g_assert_nonnull(why);
        g_assert_true(g_str_has_prefix(why, field));
        after = checksum_of(f->path);
        g_assert_cmpstr(before, ==, after);
}

static void test_gpt_empty(Fixture *f, gconstpointer data)
{
        PartitionTableKind kind = PARTITION_TABLE_NONE;
        g_autofree TablePartition *parts = NULL;
        size_t n = 1;

        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        g_assert_true(has_signature_at(f->fd, 512, "EFI PART"));
        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, &parts, &n), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_GPT);
        g_assert_cmpuint(n, ==, 0);

        g_autoptr(JsonObject) t = table_of(f->path, 0);
        g_assert_cmpstr(json_object_get_string_member(t, "label"), ==, "gpt");
        g_assert_cmpuint(n_partitions_of(t), ==, 0);
}

static void test_gpt_4k_native(Fixture *f, gconstpointer data)
{
        PartitionTableKind kind = PARTITION_TABLE_NONE;
        PartitionRequest req = { .type = "linux" };

        g_assert_cmpint(partition_table_create_sized(f->fd, 4096, "gpt"), ==, 0);
        /* The header in LBA 1 of 4096-byte sectors, nothing at 512. */
        g_assert_true(has_signature_at(f->fd, 4096, "EFI PART"));
        g_assert_false(has_signature_at(f->fd, 512, "EFI PART"));
        g_assert_true(has_signature_at(f->fd, 64 * MIB - 4096, "EFI PART"));
        g_assert_cmpint(partition_table_read(f->fd, 4096, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_GPT);
        /* Read with 512-byte sectors it is no GPT at all. */
        g_assert_cmpint(partition_table_read(f->fd, 512, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, !=, PARTITION_TABLE_GPT);

        TablePartition p = add_ok(f->fd, 4096, &req);
        g_assert_cmpuint(p.number, ==, 1);
        g_assert_cmpuint(p.offset, ==, MIB);

        g_autoptr(JsonObject) t = table_of(f->path, 4096);
        g_assert_cmpstr(json_object_get_string_member(t, "label"), ==, "gpt");
        g_assert_cmpint(json_object_get_int_member(t, "sectorsize"), ==, 4096);
        JsonObject *p1 = partition_of(t, 0);
        g_assert_cmpint(json_object_get_int_member(p1, "start"), ==, MIB / 4096);
        g_assert_cmpint(json_object_get_int_member(p1, "size") * 4096, ==, p.size);
        g_assert_cmpuint(p.size % MIB, ==, 0);

        /* An offset that is no multiple of 4096 is refused, naming it. */
        PartitionRequest odd = { .offset = 40 * MIB + 512, .size = MIB };
        add_refused(f, 4096, &odd, -EINVAL, "offset:");
}

/* A GPT whose header has room for more entries than the kernel takes: with the first 255 in use, a new
 * partition would get number 256 or more, in the table but never in the kernel. Refused, nothing written. */
static void test_gpt_past_kernel_entries(Fixture *f, gconstpointer data)
{
        g_autoptr(GString) script = g_string_new("label: gpt\ntable-length: 300\n");
        const PartitionRequest more = { .type = "linux" };

        for (int i = 0; i < 255; i++)
                g_string_append_printf(script, "start=%d, size=8\n", 4096 + i * 8);
        image_sfdisk(f->path, script->str, 0);
        add_refused(f, 0, &more, -ENOSPC, "offset:");
}

static void test_dos_defaults_aligned(Fixture *f, gconstpointer data)
{
        PartitionRequest first = { .size = 8 * MIB }, rest = {};

        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        TablePartition p1 = add_ok(f->fd, 0, &first);
        TablePartition p2 = add_ok(f->fd, 0, &rest);
        g_assert_cmpuint(p1.number, ==, 1);
        g_assert_cmpuint(p1.offset, ==, MIB);
        g_assert_cmpuint(p1.size, ==, 8 * MIB);
        g_assert_cmpuint(p2.number, ==, 2);
        g_assert_cmpuint(p2.offset, ==, 9 * MIB);
        g_assert_cmpuint(p2.size, ==, 55 * MIB);

        g_autoptr(JsonObject) t = table_of(f->path, 0);
        g_assert_cmpstr(json_object_get_string_member(t, "label"), ==, "dos");
        g_assert_cmpuint(n_partitions_of(t), ==, 2);
        g_assert_cmpint(json_object_get_int_member(partition_of(t, 0), "start"), ==, 2048);
        g_assert_cmpint(json_object_get_int_member(partition_of(t, 0), "size"), ==, 16384);
        g_assert_cmpstr(json_object_get_string_member(partition_of(t, 0), "type"), ==, "83");
        g_assert_cmpint(json_object_get_int_member(partition_of(t, 1), "start"), ==, 18432);

        /* The disk is full now. */
        PartitionRequest more = {};
        add_refused(f, 0, &more, -ENOSPC, "offset:");
}

static void test_gpt_end_aligned_and_gap_reused(Fixture *f, gconstpointer data)
{
        PartitionRequest a = { .size = 4 * MIB }, b = { .size = 4 * MIB }, rest = {},
                         small = { .size = 2 * MIB };
        g_autofree TablePartition *parts = NULL;
        size_t n = 0;

        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        TablePartition p1 = add_ok(f->fd, 0, &a);
        TablePartition p2 = add_ok(f->fd, 0, &b);
        TablePartition p3 = add_ok(f->fd, 0, &rest);
        g_assert_cmpuint(p2.offset, ==, 5 * MIB);
        /* To the end: the backup GPT takes the last 33 sectors; the end is aligned down to 1 MiB. */
        g_assert_cmpuint(p3.offset, ==, 9 * MIB);
        g_assert_cmpuint((p3.offset + p3.size) % MIB, ==, 0);
        g_assert_cmpuint(p3.offset + p3.size, ==, 63 * MIB);

        TablePartition gone = {};
        g_assert_cmpint(partition_table_delete(f->fd, 0, 1, &gone), ==, 0);
        g_assert_cmpuint(gone.offset, ==, p1.offset);
        g_assert_cmpint(partition_table_delete(f->fd, 0, 1, NULL), ==, -ENOENT);
        g_assert_cmpint(partition_table_delete(f->fd, 0, 9, NULL), ==, -ENOENT);

        /* The freed gap at the start is the first free space; entry 1 is free again. */
        TablePartition p = add_ok(f->fd, 0, &small);
        g_assert_cmpuint(p.number, ==, 1);
        g_assert_cmpuint(p.offset, ==, MIB);
        g_assert_cmpint(partition_table_read(f->fd, 0, NULL, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 3);
        g_assert_cmpuint(parts[0].number, ==, 1);
        g_assert_cmpuint(parts[0].size, ==, 2 * MIB);
        g_assert_cmpuint(parts[2].number, ==, 3);
}

static void test_explicit_offset_honoured(Fixture *f, gconstpointer data)
{
        /* Not rounded: a caller who names a sector gets it. */
        PartitionRequest req = { .offset = 2048 * 512 + 7 * 512, .size = 3 * MIB };

        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        TablePartition p = add_ok(f->fd, 0, &req);
        g_assert_cmpuint(p.offset, ==, req.offset);
        g_assert_cmpuint(p.size, ==, req.size);

        /* The classic start at sector 63 below libfdisk's first MiB. */
        PartitionRequest low = { .offset = 63 * 512, .size = 512 * 1000 };
        TablePartition q = add_ok(f->fd, 0, &low);
        g_assert_cmpuint(q.offset, ==, 63 * 512);

        g_autoptr(JsonObject) t = table_of(f->path, 0);
        g_assert_cmpint(json_object_get_int_member(partition_of(t, 0), "start"), ==, 2055);
        g_assert_cmpint(json_object_get_int_member(partition_of(t, 1), "start"), ==, 63);

        PartitionRequest odd = { .offset = 20 * MIB + 100, .size = MIB };
        add_refused(f, 0, &odd, -EINVAL, "offset:");
        PartitionRequest odd_size = { .offset = 20 * MIB, .size = MIB + 1 };
        add_refused(f, 0, &odd_size, -EINVAL, "size:");
}

static void test_overlap_and_past_end_refused(Fixture *f, gconstpointer data)
{
        PartitionRequest a = { .offset = 10 * MIB, .size = 10 * MIB };

        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        add_ok(f->fd, 0, &a);

        PartitionRequest inside = { .offset = 15 * MIB, .size = MIB };
        add_refused(f, 0, &inside, -EINVAL, "offset:");
        PartitionRequest into = { .offset = 2 * MIB, .size = 9 * MIB };
        add_refused(f, 0, &into, -EINVAL, "size:");
        PartitionRequest over = { .offset = 2 * MIB, .size = 30 * MIB };
        add_refused(f, 0, &over, -EINVAL, "size:");
        PartitionRequest past_end = { .offset = 40 * MIB, .size = 30 * MIB };
        add_refused(f, 0, &past_end, -EINVAL, "size:");
        PartitionRequest start_past_end = { .offset = 100 * MIB, .size = MIB };
        add_refused(f, 0, &start_past_end, -EINVAL, "offset:");
        PartitionRequest in_header = { .offset = 4096, .size = MIB };
        add_refused(f, 0, &in_header, -EINVAL, "offset:");
        PartitionRequest too_big = { .size = 60 * MIB };
        add_refused(f, 0, &too_big, -ENOSPC, "size:");

        /* What fits between the header and partition 1 still goes there. */
        PartitionRequest fits = { .size = 9 * MIB };
        TablePartition p = add_ok(f->fd, 0, &fits);
        g_assert_cmpuint(p.offset, ==, MIB);
}

static void test_aliases_dos(Fixture *f, gconstpointer data)
{
        const char *types[] = { "linux", "esp", "swap", "fat" };
        const char *codes[] = { "83", "ef", "82", "c" };

        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(types); i++) {
                PartitionRequest req = { .size = 4 * MIB, .type = types[i], .bootable = i == 1 };
                add_ok(f->fd, 0, &req);
        }
        g_autoptr(JsonObject) t = table_of(f->path, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(types); i++)
                g_assert_cmpstr(json_object_get_string_member(partition_of(t, i), "type"), ==, codes[i]);
        g_assert_true(json_object_get_boolean_member_with_default(partition_of(t, 1), "bootable", FALSE));
        g_assert_false(json_object_get_boolean_member_with_default(partition_of(t, 0), "bootable", FALSE));

        /* Four primary partitions are all a dos table holds here. */
        PartitionRequest fifth = { .size = MIB };
        add_refused(f, 0, &fifth, -ENOSPC, "offset:");
}

static void test_types_per_table(Fixture *f, gconstpointer data)
{
        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        PartitionRequest guid = { .type = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" };
        add_refused(f, 0, &guid, -EINVAL, "type:");
        PartitionRequest name = { .name = "boot" };
        add_refused(f, 0, &name, -EINVAL, "name:");
        PartitionRequest hex = { .type = "0x0e", .size = MIB };
        add_ok(f->fd, 0, &hex);
        g_autoptr(JsonObject) t = table_of(f->path, 0);
        g_assert_cmpstr(json_object_get_string_member(partition_of(t, 0), "type"), ==, "e");

        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        PartitionRequest dos = { .type = "0x83" };
        add_refused(f, 0, &dos, -EINVAL, "type:");
        PartitionRequest bogus = { .type = "ext4" };
        add_refused(f, 0, &bogus, -EINVAL, "type:");
        PartitionRequest long_name = { .name = "0123456789012345678901234567890123456" }; /* 37 */
        add_refused(f, 0, &long_name, -EINVAL, "name:");
        PartitionRequest newline = { .name = "a\nb" };
        add_refused(f, 0, &newline, -EINVAL, "name:");

        PartitionRequest esp = { .size = 8 * MIB, .type = "esp", .name = "EFI system", .bootable = true };
        PartitionRequest ms = { .size = 8 * MIB, .type = "ntfs", .name = "Données" };
        PartitionRequest guid_lower = { .size = 8 * MIB, .type = "0fc63daf-8483-4772-8e79-3d69d8477de4" };
        add_ok(f->fd, 0, &esp);
        add_ok(f->fd, 0, &ms);
        add_ok(f->fd, 0, &guid_lower);
        g_autoptr(JsonObject) g = table_of(f->path, 0);
        g_assert_cmpstr(json_object_get_string_member(partition_of(g, 0), "type"), ==,
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        g_assert_cmpstr(json_object_get_string_member(partition_of(g, 0), "name"), ==, "EFI system");
        g_assert_cmpstr(json_object_get_string_member_with_default(partition_of(g, 0), "attrs", ""), ==,
                "LegacyBIOSBootable");
        g_assert_cmpstr(json_object_get_string_member(partition_of(g, 1), "type"), ==,
                "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
        g_assert_cmpstr(json_object_get_string_member(partition_of(g, 1), "name"), ==, "Données");
        g_assert_cmpstr(json_object_get_string_member(partition_of(g, 2), "type"), ==,
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
}

static void test_type_check(void)
{
        const char *good[] = { "linux", "esp", "swap", "fat", "ntfs", "0x83", "0xEF", "0x7", "0xfd",
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" };
        const char *bad[] = { "", "Linux", "83", "0x", "0x123", "0x00", "0x0", "0x05", "0x0f", "0x85",
                "0xzz", "0FC63DAF-8483-4772-8E79-3D69D8477DE", "0FC63DAF84834772-8E79-3D69D8477DE4x",
                "ext4" };

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_cmpint(partition_type_check(good[i]), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(partition_type_check(bad[i]), ==, -EINVAL);
        g_assert_cmpint(partition_type_check(NULL), ==, -EINVAL);

        g_assert_cmpint(partition_name_check(NULL), ==, 0);
        g_assert_cmpint(partition_name_check("root"), ==, 0);
        g_assert_cmpint(partition_name_check("012345678901234567890123456789012345"), ==, 0); /* 36 */
        g_assert_cmpint(partition_name_check("\xf0\x9f\x98\x80"), ==, 0); /* one surrogate pair */
        g_assert_cmpint(partition_name_check("0123456789012345678901234567890123\xf0\x9f\x98\x80"), ==, 0);
        g_assert_cmpint(
                partition_name_check("01234567890123456789012345678901234\xf0\x9f\x98\x80"), ==, -EINVAL);
        g_assert_cmpint(partition_name_check("tab\there"), ==, -EINVAL);
        g_assert_cmpint(partition_name_check("bad\xff"), ==, -EINVAL);
}

static void test_no_table(Fixture *f, gconstpointer data)
{
        PartitionTableKind kind = PARTITION_TABLE_GPT;
        PartitionRequest req = {};

        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_NONE);
        add_refused(f, 0, &req, -EMEDIUMTYPE, "no partition table");
        g_assert_cmpint(partition_table_delete(f->fd, 0, 1, NULL), ==, -EMEDIUMTYPE);
        g_assert_cmpint(partition_table_create(f->fd, "bsd"), ==, -EINVAL);
}

static void test_replaces_what_was_there(Fixture *f, gconstpointer data)
{
        PartitionTableKind kind = PARTITION_TABLE_NONE;
        g_autofree char *uuid = image_mkfs_at(f->path, 0, 64 * MIB, "ext4", "old");

        g_assert_nonnull(uuid);
        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        g_autoptr(GHashTable) gpt = oracle_blkid(f->path, 0);
        g_assert_cmpstr(g_hash_table_lookup(gpt, "PTTYPE"), ==, "gpt");
        g_assert_null(g_hash_table_lookup(gpt, "TYPE"));

        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_DOS);
        g_autoptr(GHashTable) dos = oracle_blkid(f->path, 0);
        g_assert_cmpstr(g_hash_table_lookup(dos, "PTTYPE"), ==, "dos");
        g_assert_false(has_signature_at(f->fd, 512, "EFI PART"));
        g_assert_false(has_signature_at(f->fd, 64 * MIB - 512, "EFI PART"));
}

/* A GPT header asking for a 128 MiB entry array: libfdisk would allocate and read it all. Reading and adding
 * are refused (as libblkid's probe is); a new table replaces it. */
static void test_hostile_gpt_entries(Fixture *f, gconstpointer data)
{
        uint8_t header[92] = { 'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T' };
        PartitionTableKind kind = PARTITION_TABLE_NONE;
        PartitionRequest req = {};
        uint32_t n = 1u << 20, esz = 128;

        memcpy(header + 80, &n, 4); /* little-endian host, as the test machines are */
        memcpy(header + 84, &esz, 4);
        g_assert_cmpint(pwrite(f->fd, header, sizeof(header), 512), ==, (ssize_t)sizeof(header));
        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, -EFBIG);
        add_refused(f, 0, &req, -EFBIG, "the device's GPT header");

        g_assert_cmpint(partition_table_create(f->fd, "dos"), ==, 0);
        g_assert_false(has_signature_at(f->fd, 512, "EFI PART"));
        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_DOS);
}

/* The primary header is sane but names, as its alternative_lba, an LBA in the middle of the device where a
 * header asks for a 4 GiB entry array: libfdisk reads that header and its array before it checks the LBA.
 * Refused quickly when read, zeroed (with the primary) when a new table replaces it. */
static void test_hostile_gpt_alternative(Fixture *f, gconstpointer data)
{
        uint8_t primary[92] = { 'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T' }, hostile[92];
        PartitionTableKind kind = PARTITION_TABLE_NONE;
        PartitionRequest req = {};
        uint64_t alt = 1000; /* byte 512000: neither LBA 1 nor the last */
        uint32_t n = 128, esz = 128, huge = 1u << 25;
        gint64 start = g_get_monotonic_time();

        memcpy(primary + 32, &alt, 8); /* little-endian host, as the test machines are */
        memcpy(primary + 80, &n, 4);
        memcpy(primary + 84, &esz, 4);
        memcpy(hostile, primary, sizeof(hostile));
        memcpy(hostile + 80, &huge, 4);
        g_assert_cmpint(pwrite(f->fd, primary, sizeof(primary), 512), ==, (ssize_t)sizeof(primary));
        g_assert_cmpint(pwrite(f->fd, hostile, sizeof(hostile), 512 * alt), ==, (ssize_t)sizeof(hostile));

        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, -EFBIG);
        add_refused(f, 0, &req, -EFBIG, "the device's GPT header");
        g_assert_true(has_signature_at(f->fd, 512 * alt, "EFI PART"));

        g_assert_cmpint(partition_table_create(f->fd, "gpt"), ==, 0);
        g_assert_false(has_signature_at(f->fd, 512 * alt, "EFI PART"));
        g_assert_cmpint(partition_table_read(f->fd, 0, &kind, NULL, NULL), ==, 0);
        g_assert_cmpint(kind, ==, PARTITION_TABLE_GPT);
        g_assert_cmpint(g_get_monotonic_time() - start, <, 2 * G_USEC_PER_SEC);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

#define ADD(name, fn) \
        g_test_add("/loopd/partition-table/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("gpt-empty", test_gpt_empty);
        ADD("gpt-4k-native", test_gpt_4k_native);
        ADD("dos-defaults-aligned", test_dos_defaults_aligned);
        ADD("gpt-past-kernel-entries-refused", test_gpt_past_kernel_entries);
        ADD("gpt-end-aligned-gap-reused", test_gpt_end_aligned_and_gap_reused);
        ADD("explicit-offset-honoured", test_explicit_offset_honoured);
        ADD("overlap-and-past-end-refused", test_overlap_and_past_end_refused);
        ADD("aliases-dos", test_aliases_dos);
        ADD("types-per-table", test_types_per_table);
        ADD("no-table", test_no_table);
        ADD("replaces-what-was-there", test_replaces_what_was_there);
        ADD("hostile-gpt-entry-array-refused", test_hostile_gpt_entries);
        ADD("hostile-gpt-alternative-refused", test_hostile_gpt_alternative);
#undef ADD
        g_test_add_func("/loopd/partition-table/type-check", test_type_check);
        return g_test_run();
}
