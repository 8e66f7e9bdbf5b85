/* engine-table.c: the engine's partition-table changes (Format's gpt/dos, CreatePartition, DeletePartition)
 * on real loop devices: the nodes exist when the call returns, on this kernel without partition parsers
 * too; the changes are reported; refusals leave the image's bytes as they were. Oracles: sysfs, sfdisk on
 * the image file, findmnt. */
#include "test-engine.h"

/* A blank sparse image of size bytes in the scratch dir. */
static char *blank(Fixture *f, const char *name, uint64_t size)
{
        char *path = g_build_filename(f->scratch.dir, name, NULL);

        image_create(path, size);
        return path;
}

static char *checksum_of(const char *path)
{
        g_autofree char *quoted = g_shell_quote(path);
        g_autofree char *out = test_sh("sha256sum < %s", quoted);

        return g_strdup(g_strstrip(out));
}

/* Partition M of loopN as sysfs has it: start and size in bytes; FALSE when the kernel has no such one. */
static gboolean kernel_partition(
        unsigned number, unsigned partition, uint64_t *ret_start, uint64_t *ret_size)
{
        g_autofree char *start =
                test_read_sysfs("/sys/block/loop%u/loop%up%u/start", number, number, partition);
        g_autofree char *size =
                test_read_sysfs("/sys/block/loop%u/loop%up%u/size", number, number, partition);

        if (!start || !size)
                return FALSE;
        *ret_start = g_ascii_strtoull(start, NULL, 10) * 512;
        *ret_size = g_ascii_strtoull(size, NULL, 10) * 512;
        return TRUE;
}

static gboolean node_is_block(const char *node)
{
        struct stat st;

        return stat(node, &st) == 0 && S_ISBLK(st.st_mode);
}

/* sfdisk's partitions of the image file (sector size as given), a new reference. */
static JsonArray *sfdisk_partitions(const char *path, unsigned sector_size)
{
        g_autoptr(JsonNode) node = oracle_sfdisk_json(path, sector_size);

        g_assert_nonnull(node);
        JsonObject *table = json_node_get_object(node);
        if (!json_object_has_member(table, "partitions"))
                return json_array_new();
        return json_array_ref(json_object_get_array_member(table, "partitions"));
}

/* dos on a blank image, two partitions (fat, then the rest as linux), the first deleted: each step's node
 * exists (or is gone) when the call returns, sfdisk reads the same layout from the image file, and the
 * changes were reported. */
static void test_dos_create_delete(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = blank(f, "disk.img", 64 * MiB);
        g_autofree char *p1 = NULL, *p2 = NULL;
        uint64_t start = 0, size = 0;
        EngineError e = {};

        LoopInfo *info = attach_as(f, path, 1234);
        if (!info)
                return;
        unsigned n = info->number;

        g_assert_cmpint(engine_format_table(f->manager, n, 0, "dos", &e), ==, 0);
        g_ptr_array_set_size(f->changes, 0);
        PartitionRequest fat = { .size = 8 * MiB, .type = "fat", .bootable = true };
        g_assert_cmpint(engine_create_partition(f->manager, n, &fat, &p1, &e), ==, 0);
        g_autofree char *expected = g_strdup_printf("/dev/loop%up1", n);
        g_assert_cmpstr(p1, ==, expected);
        g_assert_true(node_is_block(p1));
        g_assert_true(kernel_partition(n, 1, &start, &size));
        g_assert_cmpuint(start, ==, MiB);
        g_assert_cmpuint(size, ==, 8 * MiB);
        g_assert_nonnull(find_change(f, CHANGE_PARTITION_ADDED, n, 1, NULL, NULL));

        PartitionRequest rest = { .type = "linux" };
        g_assert_cmpint(engine_create_partition(f->manager, n, &rest, &p2, &e), ==, 0);
        g_assert_true(node_is_block(p2));
        g_assert_true(kernel_partition(n, 2, &start, &size));
        g_assert_cmpuint(start, ==, 9 * MiB);
        g_assert_cmpuint(size, ==, 55 * MiB);
        /* Partition 1 was not touched meanwhile. */
        g_assert_true(node_is_block(p1));

        g_autoptr(JsonArray) parts = sfdisk_partitions(path, 0);
        g_assert_cmpuint(json_array_get_length(parts), ==, 2);
        JsonObject *o1 = json_array_get_object_element(parts, 0);
        g_assert_cmpint(json_object_get_int_member(o1, "start"), ==, 2048);
        g_assert_cmpstr(json_object_get_string_member(o1, "type"), ==, "c");
        g_assert_true(json_object_get_boolean_member_with_default(o1, "bootable", FALSE));
        g_assert_cmpstr(
                json_object_get_string_member(json_array_get_object_element(parts, 1), "type"), ==, "83");

        g_ptr_array_set_size(f->changes, 0);
        g_assert_cmpint(engine_delete_partition(f->manager, n, 1, &e), ==, 0);
        g_assert_false(node_is_block(p1));
        g_assert_false(kernel_partition(n, 1, &start, &size));
        g_assert_true(node_is_block(p2));
        g_assert_nonnull(find_change(f, CHANGE_PARTITION_REMOVED, n, 1, NULL, NULL));
        g_autoptr(JsonArray) after = sfdisk_partitions(path, 0);
        g_assert_cmpuint(json_array_get_length(after), ==, 1);

        /* Not there any more: NotFound. */
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_delete_partition(f->manager, n, 1, &e), <, 0);
        g_assert_cmpint(e.kind, ==, ENGINE_NOT_FOUND);

        /* A new table drops every partition, nodes included. */
        g_assert_cmpint(engine_format_table(f->manager, n, 0, "gpt", &e), ==, 0);
        g_assert_false(node_is_block(p2));
        g_autofree char *device = g_strdup_printf("/dev/loop%u", n);
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
        g_assert_cmpuint(nodes->len, ==, 0);

        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        loop_info_free(info);
}

/* A GPT written on a 4096-byte-sector device is 4K-native, and a later Attach detects 4096 from it and
 * finds the partition. */
static void test_gpt_4k_read_back(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = blank(f, "disk4k.img", 64 * MiB);
        g_autofree char *p1 = NULL;
        uint64_t start = 0, size = 0;
        AttachRequest req = { .partition_scan = true, .sector_size = 4096 };
        LoopInfo *info = NULL, *again = NULL;
        EngineError e = {};
        Image img;

        image_open(&img, path, O_RDWR);
        g_assert_cmpint(engine_attach(f->manager, img.fd, &req, &img.st, 1234, img.probe_result, &img.probe,
                                &info, &e),
                ==, 0);
        close(img.fd);
        if (!info)
                return;
        g_assert_cmpuint(info->sector_size, ==, 4096);
        g_assert_cmpint(engine_format_table(f->manager, info->number, 0, "gpt", &e), ==, 0);
        PartitionRequest esp = { .size = 16 * MiB, .type = "esp", .name = "EFI" };
        g_assert_cmpint(engine_create_partition(f->manager, info->number, &esp, &p1, &e), ==, 0);
        g_assert_true(node_is_block(p1));
        g_assert_true(kernel_partition(info->number, 1, &start, &size));
        g_assert_cmpuint(start, ==, MiB);
        g_assert_cmpuint(size, ==, 16 * MiB);
        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        loop_info_free(info);

        /* The header at byte 4096: sfdisk with 4096-byte sectors reads it. */
        g_autoptr(JsonArray) parts = sfdisk_partitions(path, 4096);
        g_assert_cmpuint(json_array_get_length(parts), ==, 1);
        g_assert_cmpint(
                json_object_get_int_member(json_array_get_object_element(parts, 0), "start"), ==, 256);

        AttachRequest detect = { .partition_scan = true };
        image_open(&img, path, O_RDWR);
        g_assert_cmpint(engine_attach(f->manager, img.fd, &detect, &img.st, 1234, img.probe_result,
                                &img.probe, &again, &e),
                ==, 0);
        close(img.fd);
        if (!again)
                return;
        g_assert_cmpuint(again->sector_size, ==, 4096);
        g_assert_true(kernel_partition(again->number, 1, &start, &size));
        g_assert_cmpuint(start, ==, MiB);
        g_assert_cmpint(engine_detach(f->manager, again, false, &e), ==, 0);
        loop_info_free(again);
}

/* ReadOnly for a read-only device; InvalidArgument for a table on a partition node, a partition that
 * overlaps another, a device without a table; Busy for a mounted partition or a new table under it, while
 * adding a partition beside a mounted one works. Every refusal leaves the image's bytes as they were. */
static void test_refusals(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = blank(f, "disk.img", 64 * MiB);
        g_autofree char *p1 = NULL, *p2 = NULL, *mount_point = NULL;
        AttachRequest ro = { .partition_scan = true, .read_only = true, .read_only_set = true };
        LoopInfo *info = NULL, *rinfo = NULL;
        EngineError e = {};
        Image img;

        /* Read-only. */
        image_open(&img, path, O_RDONLY);
        g_assert_cmpint(engine_attach(f->manager, img.fd, &ro, &img.st, 1234, img.probe_result, &img.probe,
                                &rinfo, &e),
                ==, 0);
        close(img.fd);
        if (!rinfo)
                return;
        g_autofree char *before = checksum_of(path);
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_format_table(f->manager, rinfo->number, 0, "gpt", &e), ==, -EROFS);
        g_assert_cmpint(e.kind, ==, ENGINE_READ_ONLY);
        PartitionRequest any = {};
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_create_partition(f->manager, rinfo->number, &any, NULL, &e), ==, -EROFS);
        g_assert_cmpint(e.kind, ==, ENGINE_READ_ONLY);
        g_assert_cmpint(engine_detach(f->manager, rinfo, false, &e), ==, 0);
        loop_info_free(rinfo);
        g_autofree char *after_ro = checksum_of(path);
        g_assert_cmpstr(before, ==, after_ro);

        info = attach_as(f, path, 1234);
        if (!info)
                return;
        unsigned n = info->number;

        /* No table yet. */
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_create_partition(f->manager, n, &any, NULL, &e), <, 0);
        g_assert_cmpint(e.kind, ==, ENGINE_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(e.message, "no partition table"));
        g_autofree char *after_none = checksum_of(path);
        g_assert_cmpstr(before, ==, after_none);

        g_assert_cmpint(engine_format_table(f->manager, n, 0, "dos", &e), ==, 0);
        PartitionRequest half = { .size = 30 * MiB };
        g_assert_cmpint(engine_create_partition(f->manager, n, &half, &p1, &e), ==, 0);

        /* A table on a partition node; an overlap; a start past the end. */
        g_autofree char *sum = checksum_of(path);
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_format_table(f->manager, n, 1, "gpt", &e), ==, -EINVAL);
        g_assert_cmpint(e.kind, ==, ENGINE_INVALID_ARGUMENT);
        PartitionRequest overlap = { .offset = 20 * MiB, .size = MiB };
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_create_partition(f->manager, n, &overlap, NULL, &e), <, 0);
        g_assert_cmpint(e.kind, ==, ENGINE_INVALID_ARGUMENT);
        g_assert_true(g_str_has_prefix(e.message, "offset:"));
        PartitionRequest past = { .offset = 40 * MiB, .size = 40 * MiB };
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_create_partition(f->manager, n, &past, NULL, &e), <, 0);
        g_assert_true(g_str_has_prefix(e.message, "size:"));
        g_autofree char *sum_after = checksum_of(path);
        g_assert_cmpstr(sum, ==, sum_after);

        /* Mounted partition 1: deleting it or writing a new table is Busy, naming the mount point; adding
         * partition 2 beside it works. */
        g_autofree char *quoted = g_shell_quote(p1);
        g_free(test_sh("mkfs.ext4 -q -F %s", quoted));
        struct stat st;
        g_assert_cmpint(stat(p1, &st), ==, 0);
        g_assert_cmpint(
                engine_mount_node(f->manager, 1234, p1, st.st_rdev, NULL, NULL, false, &mount_point, &e), ==,
                0);
        if (!mount_point)
                goto out;
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_delete_partition(f->manager, n, 1, &e), ==, -EBUSY);
        g_assert_cmpint(e.kind, ==, ENGINE_BUSY);
        g_assert_nonnull(strstr(e.message, mount_point));
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_format_table(f->manager, n, 0, "gpt", &e), ==, -EBUSY);
        g_assert_cmpint(e.kind, ==, ENGINE_BUSY);
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_check_unmounted(f->manager, n, 2, &e), ==, 0);
        g_assert_cmpint(engine_check_unmounted(f->manager, n, 1, &e), ==, -EBUSY);
        g_assert_true(node_is_block(p1));

        PartitionRequest beside = {};
        g_assert_cmpint(engine_create_partition(f->manager, n, &beside, &p2, &e), ==, 0);
        g_assert_true(node_is_block(p2));
        g_autofree char *target = mount_target(p1);
        g_assert_cmpstr(target, ==, mount_point);
        g_assert_cmpint(engine_unmount(f->manager, n, mount_point, &e), ==, 0);
out:
        g_assert_cmpint(engine_detach(f->manager, info, true, &e), ==, 0);
        loop_info_free(info);
}

void engine_table_add_tests(void)
{
        TEST("/loopd/engine/table/dos-create-delete-nodes-follow", test_dos_create_delete, NULL);
        TEST("/loopd/engine/table/gpt-4k-read-back-by-attach", test_gpt_4k_read_back, NULL);
        TEST("/loopd/engine/table/refusals-leave-bytes", test_refusals, NULL);
}
