/* loop-attach.c: the loop suite's attach: layouts, sector sizes, offsets, read-only, sparse and refused
 * images. */
#include "test-loop.h"

/* ---- tests ---- */

void test_gpt_ext4_xfs(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid1 = NULL, *uuid2 = NULL;
        g_autoptr(JsonNode) table = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;
        static const unsigned numbers[] = { 1, 2 };

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "gpt.img");
        image_create(img, 420 * MIB);
        image_sfdisk(img, "label: gpt\nsize=64MiB, type=L, name=\"boot part\"\ntype=L, name=data\n", 0);
        table = oracle_sfdisk_json(img, 0);
        g_assert_cmpint(json_object_get_int_member(json_node_get_object(table), "sectorsize"), ==, 512);

        uint64_t s1 = json_u64(sfdisk_partition(table, 0), "start") * 512,
                 l1 = json_u64(sfdisk_partition(table, 0), "size") * 512,
                 s2 = json_u64(sfdisk_partition(table, 1), "start") * 512,
                 l2 = json_u64(sfdisk_partition(table, 1), "size") * 512;
        uuid1 = image_mkfs_at(img, s1, l1, "ext4", "first");
        uuid2 = image_mkfs_at(img, s2, l2, "xfs", "second");

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        g_assert_cmpuint(info->sector_size, ==, 512);
        assert_partitions_match_sfdisk(info, table, 512, numbers, 2);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 2); /* no filesystem on the whole device */
        for (size_t i = 0; i < n; i++)
                assert_entry_matches_blkid(&list[i]);

        const PartitionInfo *p1 = find_entry(list, n, 1), *p2 = find_entry(list, n, 2);
        g_autofree char *type1 =
                lowercase(json_object_get_string_member(sfdisk_partition(table, 0), "type"));
        g_assert_nonnull(p1);
        g_assert_nonnull(p2);
        g_assert_cmpstr(p1->fstype, ==, "ext4");
        g_assert_cmpstr(p1->uuid, ==, uuid1);
        g_assert_cmpstr(p1->label, ==, "first");
        g_assert_cmpstr(p1->part_type, ==, type1);
        g_assert_cmpstr(
                p1->part_name, ==, json_object_get_string_member(sfdisk_partition(table, 0), "name"));
        g_assert_cmpuint(p1->offset, ==, s1);
        g_assert_cmpuint(p1->size, ==, l1);
        g_assert_cmpstr(p2->fstype, ==, "xfs");
        g_assert_cmpstr(p2->uuid, ==, uuid2);
        g_assert_cmpstr(p2->part_name, ==, "data");
        g_assert_cmpuint(p2->offset, ==, s2);
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_mbr_extended_logical(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid5 = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autofree KernelPartition *parts = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;
        static const unsigned numbers[] = { 1, 2, 5, 6 };

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "mbr.img");
        image_create(img, 128 * MIB);
        image_sfdisk(img, "label: dos\n,32MiB,L\n,,E\n,32MiB,L\n,,82\n", 0);
        table = oracle_sfdisk_json(img, 0);
        /* sfdisk lists 1, 2 (extended), 5, 6. */
        JsonObject *p5 = sfdisk_partition(table, 2);
        uuid5 = image_mkfs_at(
                img, json_u64(p5, "start") * 512, json_u64(p5, "size") * 512, "ext4", "logical");

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        assert_partitions_match_sfdisk(info, table, 512, numbers, 4);

        /* The extended partition gets the kernel's 2-sector stub (msdos.c: room for a boot loader only). */
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(parts[1].number, ==, 2);
        g_assert_cmpuint(parts[1].start, ==, json_u64(sfdisk_partition(table, 1), "start") * 512);
        g_assert_cmpuint(parts[1].size, ==, 1024);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 4);
        for (size_t i = 0; i < n; i++)
                assert_entry_matches_blkid(&list[i]);
        g_assert_cmpstr(find_entry(list, n, 5)->fstype, ==, "ext4");
        g_assert_cmpstr(find_entry(list, n, 5)->uuid, ==, uuid5);
        /* MBR types as "0x" + sfdisk's hex. */
        for (guint i = 0; i < 4; i++) {
                JsonObject *jp = sfdisk_partition(table, i);
                g_autofree char *expect = g_strdup_printf("0x%s", json_object_get_string_member(jp, "type"));
                g_assert_cmpstr(find_entry(list, n, numbers[i])->part_type, ==, expect);
                g_assert_cmpstr(find_entry(list, n, numbers[i])->part_name, ==, "");
        }
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_partitionless_ext4(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL, *dev = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        g_autoptr(GHashTable) blkid = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "plain.img");
        image_create(img, 64 * MIB);
        uuid = image_mkfs_at(img, 0, 64 * MIB, "ext4", "plain");
        blkid = oracle_blkid(img, 0);
        g_assert_cmpstr(g_hash_table_lookup(blkid, "TYPE"), ==, "ext4");

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);
        nodes = oracle_partition_nodes(dev);
        g_assert_cmpuint(nodes->len, ==, 0);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].number, ==, 0);
        g_assert_cmpstr(list[0].node, ==, dev);
        g_assert_cmpuint(list[0].offset, ==, 0);
        g_assert_cmpuint(list[0].size, ==, oracle_getsize64(dev));
        g_assert_cmpstr(list[0].fstype, ==, "ext4");
        g_assert_cmpstr(list[0].uuid, ==, uuid);
        g_assert_cmpstr(list[0].uuid, ==, g_hash_table_lookup(blkid, "UUID"));
        g_assert_cmpstr(list[0].label, ==, "plain");
        g_assert_cmpstr(list[0].part_type, ==, "");
        /* A copy (MountImage takes one of the watcher's look) is the same, in memory of its own. */
        {
                PartitionInfo *copy = NULL;

                g_assert_cmpint(partition_info_array_copy(list, n, &copy), ==, 0);
                assert_partition_infos_equal(copy, n, list, n);
                for (size_t i = 0; i < n; i++)
                        g_assert_true(copy[i].node != list[i].node);
                g_assert_null(copy[n].node);
                partition_info_array_free(copy, n);
        }
        partition_info_array_free(list, n);

        /* probe_filesystem() on the node says the same, and so does probe_filesystem_expecting() whatever
         * it expects: the right type, another one (then every prober runs) or none. */
        {
                g_autofree char *t = NULL, *l = NULL, *u = NULL;
                g_assert_cmpint(probe_filesystem(dev, &t, &l, &u), ==, 0);
                g_assert_cmpstr(t, ==, "ext4");
                g_assert_cmpstr(l, ==, "plain");
                g_assert_cmpstr(u, ==, uuid);
        }
        {
                static const char *const expected[] = { "ext4", "vfat", "iso9660", "", NULL };

                for (size_t i = 0; i < G_N_ELEMENTS(expected); i++) {
                        g_autofree char *t = NULL, *l = NULL, *u = NULL;

                        g_assert_cmpint(probe_filesystem_expecting(dev, expected[i], &t, &l, &u), ==, 0);
                        g_assert_cmpstr(t, ==, "ext4");
                        g_assert_cmpstr(l, ==, "plain");
                        g_assert_cmpstr(u, ==, uuid);
                }
        }
        detach_ok(f, info);
}

void test_hybrid_iso(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autoptr(GHashTable) iso = NULL, efi = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "hybrid.iso");
        image_make_hybrid_iso(img, "LOOPD_LIVE");
        table = oracle_sfdisk_json(img, 0);
        iso = oracle_blkid(img, 0);
        g_assert_cmpstr(g_hash_table_lookup(iso, "TYPE"), ==, "iso9660");

        JsonArray *jparts = json_object_get_array_member(json_node_get_object(table), "partitions");
        guint njparts = json_array_get_length(jparts);
        g_assert_cmpuint(njparts, >=, 1);
        /* The EFI partition is the one of type ef. */
        JsonObject *jefi = NULL;
        unsigned efi_number = 0;
        g_autofree unsigned *numbers = g_new0(unsigned, njparts);
        for (guint i = 0; i < njparts; i++) {
                JsonObject *o = json_array_get_object_element(jparts, i);
                const char *node = json_object_get_string_member(o, "node");
                numbers[i] = (unsigned)g_ascii_strtoull(node + strlen(img), NULL, 10);
                if (g_str_equal(json_object_get_string_member(o, "type"), "ef")) {
                        jefi = o;
                        efi_number = numbers[i];
                }
        }
        g_assert_nonnull(jefi);
        efi = oracle_blkid(img, json_u64(jefi, "start") * 512);
        g_assert_cmpstr(g_hash_table_lookup(efi, "TYPE"), ==, "vfat");

        info = attach_ok(img, (LoopConfig){ .partition_scan = true, .read_only = false });
        dev = device_path(info);
        assert_partitions_match_sfdisk(info, table, 512, numbers, njparts);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, njparts + 1);
        g_assert_cmpuint(list[0].number, ==, 0);
        g_assert_cmpstr(list[0].node, ==, dev);
        g_assert_cmpstr(list[0].fstype, ==, "iso9660");
        g_assert_cmpstr(list[0].label, ==, g_hash_table_lookup(iso, "LABEL"));
        g_assert_cmpstr(list[0].label, ==, "LOOPD_LIVE");
        g_assert_cmpstr(list[0].uuid, ==, g_hash_table_lookup(iso, "UUID"));

        const PartitionInfo *e = find_entry(list, n, efi_number);
        g_assert_nonnull(e);
        assert_entry_matches_blkid(e);
        g_assert_cmpstr(e->fstype, ==, "vfat");
        g_assert_cmpstr(e->label, ==, g_hash_table_lookup(efi, "LABEL"));
        g_assert_cmpstr(e->uuid, ==, g_hash_table_lookup(efi, "UUID"));
        g_assert_cmpstr(e->part_type, ==, "0xef");
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_gpt_4k_sectors(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autoptr(JsonObject) row = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        ImageProbe probe = {};
        LoopInfo *info;
        int fd;
        static const unsigned numbers[] = { 1, 2 };

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "gpt4k.img");
        image_create(img, 128 * MIB);
        image_sfdisk(img, "label: gpt\nsize=32MiB, type=L\ntype=L\n", 4096);
        table = oracle_sfdisk_json(img, 4096);
        g_assert_cmpint(json_object_get_int_member(json_node_get_object(table), "sectorsize"), ==, 4096);

        /* Detected from the image alone. */
        fd = open(img, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(image_probe(fd, 0, 0, &probe), ==, 0);
        close(fd);
        g_assert_null(probe.format);
        g_assert_cmpuint(probe.sector_size, ==, 4096);

        JsonObject *jp1 = sfdisk_partition(table, 0);
        uuid = image_mkfs_at(
                img, json_u64(jp1, "start") * 4096, json_u64(jp1, "size") * 4096, "ext4", "four-k");

        info = attach_ok(img, (LoopConfig){ .sector_size = probe.sector_size, .partition_scan = true });
        dev = device_path(info);
        g_assert_cmpuint(info->sector_size, ==, 4096);
        g_assert_cmpuint(json_u64(losetup_of(info, &row), "log-sec"), ==, 4096);
        g_free(test_sh("test \"$(blockdev --getss '%s')\" = 4096", dev));
        assert_partitions_match_sfdisk(info, table, 4096, numbers, 2);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 2);
        assert_entry_matches_blkid(&list[0]);
        g_assert_cmpstr(list[0].fstype, ==, "ext4");
        g_assert_cmpstr(list[0].uuid, ==, uuid);
        g_assert_cmpuint(list[0].offset, ==, json_u64(jp1, "start") * 4096);
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_mbr_phone_4k(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL;
        g_autoptr(JsonNode) table = NULL;
        ImageProbe probe = {};
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;
        int fd;
        static const unsigned numbers[] = { 1, 2 };

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "phone.img");
        image_create(img, 96 * MIB);
        image_sfdisk(img, "label: dos\n,16MiB,c\n,,L\n", 4096);
        table = oracle_sfdisk_json(img, 4096);
        JsonObject *jp2 = sfdisk_partition(table, 1);
        uuid = image_mkfs_at(
                img, json_u64(jp2, "start") * 4096, json_u64(jp2, "size") * 4096, "ext4", "system");

        fd = open(img, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(image_probe(fd, 0, 0, &probe), ==, 0);
        close(fd);
        g_assert_cmpuint(probe.sector_size, ==, 4096);

        info = attach_ok(img, (LoopConfig){ .sector_size = probe.sector_size, .partition_scan = true });
        g_assert_cmpuint(info->sector_size, ==, 4096);
        assert_partitions_match_sfdisk(info, table, 4096, numbers, 2);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpstr(find_entry(list, n, 2)->fstype, ==, "ext4");
        g_assert_cmpstr(find_entry(list, n, 2)->uuid, ==, uuid);
        g_assert_cmpstr(find_entry(list, n, 1)->part_type, ==, "0xc");
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_offset_sizelimit(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autoptr(JsonObject) row = NULL;
        g_autoptr(GHashTable) blkid = NULL;
        PartitionInfo *list = NULL;
        size_t n = 0;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "offset.img");
        image_create(img, 96 * MIB);
        image_sfdisk(img, "label: gpt\nsize=20MiB, type=L\nsize=40MiB, type=L\n", 0);
        table = oracle_sfdisk_json(img, 0);
        JsonObject *jp2 = sfdisk_partition(table, 1);
        uint64_t off = json_u64(jp2, "start") * 512, len = json_u64(jp2, "size") * 512;
        uuid = image_mkfs_at(img, off, len, "ext4", "inner");
        blkid = oracle_blkid(img, off);

        info = attach_ok(img, (LoopConfig){ .offset = off, .size_limit = len, .partition_scan = true });
        dev = device_path(info);
        JsonObject *lo = losetup_of(info, &row);
        g_assert_cmpuint(info->offset, ==, off);
        g_assert_cmpuint(info->size_limit, ==, len);
        g_assert_cmpuint(json_u64(lo, "offset"), ==, off);
        g_assert_cmpuint(json_u64(lo, "sizelimit"), ==, len);
        g_assert_cmpuint(info->size, ==, len);
        g_assert_cmpuint(oracle_getsize64(dev), ==, len);

        probe_ok(img, info, &list, &n);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].number, ==, 0);
        g_assert_cmpstr(list[0].fstype, ==, "ext4");
        g_assert_cmpstr(list[0].uuid, ==, g_hash_table_lookup(blkid, "UUID"));
        g_assert_cmpstr(list[0].uuid, ==, uuid);
        partition_info_array_free(list, n);

        detach_ok(f, info);
}

void test_read_only_fd(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(JsonObject) row = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        LoopInfo *info = NULL;
        char buf[512] = "overwrite";
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "ro.img");
        image_create(img, 16 * MIB);
        g_free(image_mkfs_at(img, 0, 16 * MIB, "ext4", NULL));

        /* Asking for read-write with a read-only fd is refused, nothing gets bound. */
        g_assert_cmpint(attach_path(img, O_RDONLY, (LoopConfig){ .read_only = false }, &info), ==, -EROFS);
        g_assert_null(info);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);

        g_assert_cmpint(attach_path(img, O_RDONLY, (LoopConfig){ .read_only = true }, &info), ==, 0);
        dev = device_path(info);
        g_assert_true(info->read_only);
        g_assert_true(json_u64(losetup_of(info, &row), "ro"));
        g_free(test_sh("test \"$(blockdev --getro '%s')\" = 1", dev));

        /* Writing fails: either the open for writing or the write itself. */
        fd = open(dev, O_WRONLY | O_CLOEXEC | O_DIRECT);
        if (fd >= 0) {
                void *aligned = NULL;
                g_assert_cmpint(posix_memalign(&aligned, 4096, 4096), ==, 0);
                memcpy(aligned, buf, sizeof(buf));
                g_assert_cmpint(pwrite(fd, aligned, 4096, 0), <, 0);
                free(aligned);
                close(fd);
        } else
                g_assert_true(errno == EACCES || errno == EROFS || errno == EPERM);

        detach_ok(f, info);

        /* A writable fd but read-only asked for: read-only all the same. */
        g_assert_cmpint(attach_path(img, O_RDWR, (LoopConfig){ .read_only = true }, &info), ==, 0);
        {
                g_autoptr(JsonObject) row2 = NULL;
                g_assert_true(info->read_only);
                g_assert_true(json_u64(losetup_of(info, &row2), "ro"));
        }
        detach_ok(f, info);
}

void test_sparse_1tib(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        struct stat before, after;
        LoopInfo *info;
        static const unsigned numbers[] = { 1 };

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "huge.img");
        image_create(img, TIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);
        table = oracle_sfdisk_json(img, 0);
        g_assert_cmpint(stat(img, &before), ==, 0);

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);
        g_assert_cmpuint(info->size, ==, TIB);
        g_assert_cmpuint(oracle_getsize64(dev), ==, TIB);
        assert_partitions_match_sfdisk(info, table, 512, numbers, 1);
        detach_ok(f, info);

        /* Attaching read nothing into existence: the file has as many blocks as before. */
        g_assert_cmpint(stat(img, &after), ==, 0);
        g_assert_cmpuint((guint64)after.st_size, ==, TIB);
        g_assert_cmpuint((guint64)after.st_blocks, ==, (guint64)before.st_blocks);
        g_assert_cmpuint((guint64)after.st_blocks * 512, <, 16 * MIB);
}

void test_qcow2_detected(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        ImageProbe probe = {};
        int fd;

        REQUIRE_PRIVILEGES(f);
        g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
        if (!qemu_img) {
                isolated_skip(f, "qemu-img is not installed");
                return;
        }
        img = fixture_path(f, "disk.qcow2");
        g_free(test_sh("qemu-img create -q -f qcow2 '%s' 1G", img));
        /* The oracle: qemu-img's own idea of the format. */
        g_autofree char *info = test_sh("qemu-img info --output=json '%s'", img);
        g_autoptr(JsonNode) info_json = json_from_string(info, NULL);
        g_assert_nonnull(info_json);
        g_assert_cmpstr(
                json_object_get_string_member(json_node_get_object(info_json), "format"), ==, "qcow2");

        fd = open(img, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(image_probe(fd, 0, 0, &probe), ==, 0);
        close(fd);
        g_assert_cmpstr(probe.format, ==, "qcow2");
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);
}

void test_ambiguous_gpt(Fixture *f, gconstpointer data)
{
        g_autofree char *a = NULL, *b = NULL;
        ImageProbe probe = {};
        int fd;

        REQUIRE_PRIVILEGES(f);
        a = fixture_path(f, "gpt512.img");
        b = fixture_path(f, "gpt4096.img");
        image_create(a, 32 * MIB);
        image_sfdisk(a, "label: gpt\ntype=L\n", 512);
        image_create(b, 32 * MIB);
        image_sfdisk(b, "label: gpt\ntype=L\n", 4096);
        /* Copy the 512-byte-sector header (LBA 1) into the 4096 image: both sector sizes now have a header.
         */
        g_free(test_sh("dd if='%s' of='%s' bs=512 skip=1 seek=1 count=1 conv=notrunc status=none", a, b));
        g_free(test_sh("test \"$(dd if='%s' bs=1 skip=512 count=8 status=none)\" = 'EFI PART' && "
                       "test \"$(dd if='%s' bs=1 skip=4096 count=8 status=none)\" = 'EFI PART'",
                b, b));

        fd = open(b, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(image_probe(fd, 0, 0, &probe), ==, -ENOTUNIQ);
        close(fd);
}
