/* attach-layouts.c: the attach suite's partition layouts: GPT, MBR with logical partitions, none, hybrid
 * ISO, 4096-byte sectors. */
#include "test-attach.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Layouts */

void test_gpt_ext4_xfs(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "gpt.img");

        image_create(image, 512 * MiB);
        image_sfdisk(image,
                "label: gpt\nsize=64MiB, type=linux, name=\"loopd-root\"\n"
                "size=320MiB, type=linux, name=\"loopd-data\"\n",
                0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(json_array_get_length(a), ==, 2);
        guint64 s1 = json_object_get_int_member(json_array_get_object_element(a, 0), "start") * 512;
        guint64 n1 = json_object_get_int_member(json_array_get_object_element(a, 0), "size") * 512;
        guint64 s2 = json_object_get_int_member(json_array_get_object_element(a, 1), "start") * 512;
        guint64 n2 = json_object_get_int_member(json_array_get_object_element(a, 1), "size") * 512;
        g_autofree char *u1 = image_mkfs_at(image, s1, n1, "ext4", "root-fs");
        g_autofree char *u2 = image_mkfs_at(image, s2, n2, "xfs", "data-fs");
        const WantFs fs[] = { { 1, "ext4", "root-fs", u1 }, { 2, "xfs", "data-fs", u2 }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        g_assert_cmpstr(u1, !=, "");
        g_assert_cmpstr(u2, !=, "");
        attach_verify_detach(h, &w);
}

void test_mbr_extended_logical(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "laptop.img");

        /* An old laptop disk: NTFS, then an extended partition holding swap and Linux. */
        image_create(image, 256 * MiB);
        image_sfdisk(image, "label: dos\nsize=96MiB, type=7\ntype=5\nsize=32MiB, type=82\ntype=83\n", 0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(json_array_get_length(a), ==, 4);
        char *uuids[3] = { NULL };
        const char *types[] = { "ntfs", "swap", "ext4" }, *labels[] = { "Windows", "swap", "linux" };
        guint fs_index[] = { 0, 2, 3 }; /* partitions 1, 5 and 6 in sfdisk's order */
        for (guint i = 0; i < 3; i++) {
                JsonObject *o = json_array_get_object_element(a, fs_index[i]);
                uuids[i] = image_mkfs_at(image, json_object_get_int_member(o, "start") * 512,
                        json_object_get_int_member(o, "size") * 512, types[i], labels[i]);
        }
        const WantFs fs[] = { { 1, "ntfs", "Windows", uuids[0] }, { 5, "swap", "swap", uuids[1] },
                { 6, "ext4", "linux", uuids[2] }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
        for (guint i = 0; i < 3; i++)
                g_free(uuids[i]);
}

void test_partitionless_ext4(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "plain.img");

        image_create(image, 64 * MiB);
        g_autofree char *uuid = image_mkfs_at(image, 0, 64 * MiB, "ext4", "plain");
        const WantFs fs[] = { { 0, "ext4", "plain", uuid }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = false, .fs = fs };

        attach_verify_detach(h, &w);
}

void test_hybrid_iso_efi(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "hybrid.iso");

        image_make_hybrid_iso(image, "LOOPD_LIVE");
        g_autoptr(GHashTable) whole = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(whole, "TYPE"), ==, "iso9660");

        /* The EFI partition: whichever the table marks 0xef. */
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        guint efi = 0;
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (part_type_equal(json_object_get_string_member(o, "type"), "ef"))
                        efi = partition_number(json_object_get_string_member(o, "node"));
        }
        g_assert_cmpuint(efi, >, 0);
        const WantFs fs[] = { { 0, "iso9660", "LOOPD_LIVE", g_hash_table_lookup(whole, "UUID") },
                { efi, "vfat", "EFIBOOT", NULL }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
}

/* Writes a table with 4096-byte sectors and filesystems into its partitions; returns the WantFs list. */
static WantFs *make_4k_image(const char *image, guint64 size, const char *script, const char *const *types)
{
        g_autoptr(JsonNode) table = NULL;
        JsonArray *a;
        WantFs *fs;
        guint n;

        image_create(image, size);
        image_sfdisk(image, script, 4096);
        table = oracle_sfdisk_json(image, 4096);
        a = json_object_get_array_member(json_node_get_object(table), "partitions");
        n = a ? json_array_get_length(a) : 0;
        fs = g_new0(WantFs, n + 1);
        for (guint i = 0; i < n && types[i]; i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                fs[i].number = i + 1;
                fs[i].fstype = types[i];
                fs[i].uuid = image_mkfs_at(image, json_object_get_int_member(o, "start") * 4096,
                        json_object_get_int_member(o, "size") * 4096, types[i], NULL);
        }
        return fs;
}

static void wantfs_free(WantFs *fs)
{
        for (WantFs *f = fs; f && f->fstype; f++)
                g_free(f->uuid);
        g_free(fs);
}

void test_gpt_4k_sectors(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "gpt4k.img");
        const char *types[] = { "ext4", "ext4", NULL };
        WantFs *fs = make_4k_image(image, 256 * MiB,
                "label: gpt\nsize=64MiB, type=linux, name=\"first\"\ntype=linux, name=\"second\"\n", types);
        const Want w = { .image = image, .sector_size = 4096, .has_table = true, .fs = fs };

        /* No sector-size is given: loopd finds the GPT header at 4096. */
        attach_verify_detach(h, &w);
        wantfs_free(fs);
}

void test_mbr_4k_phone(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "phone.img");
        const char *types[] = { "ext4", "ext4", NULL };
        /* Read with 512-byte sectors this table covers an eighth of the image; with 4096 it ends at its
         * end: the phone image case. */
        WantFs *fs = make_4k_image(image, 256 * MiB, "label: dos\nsize=32MiB, type=83\ntype=83\n", types);
        const Want w = { .image = image, .sector_size = 4096, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
        wantfs_free(fs);
}

/* A GPT header at 512 and a copy of it at 4096: the table fits two sector sizes, and loopd must not guess.
 */
void test_ambiguous_sector_size_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "ambiguous.img");
        g_autofree char *q = g_shell_quote(image);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        g_free(test_sh("dd if=%s of=%s bs=512 skip=1 seek=8 count=1 conv=notrunc status=none", q, q));
        g_autofree char *sig = test_sh("dd if=%s bs=1 skip=4096 count=8 status=none", q);
        g_assert_cmpstr(sig, ==, "EFI PART");

        g_assert_false(harness_attach_path(h->bus, image, O_RDWR, NULL, &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, "sector-size");
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        /* loopctl passes the refusal on; an explicit sector size settles it. */
        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, NULL, &run, "attach", image, NULL), ==, 1);
        g_assert_nonnull(strstr(run.err, "sector-size"));
        const char *args[] = { "--sector-size", "512", NULL };
        g_autoptr(GPtrArray) printed = NULL;
        g_autofree char *dev = loopctl_attach(h, image, args, &printed);
        if (dev) {
                const Want w = { .image = image, .sector_size = 512, .has_table = true };
                verify_attached(h, dev, &w, printed);
                loopctl_detach(h, dev);
                verify_detached(h, dev, image);
        }
        g_autofree char *dev2 =
                raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'sector-size': <uint32 512>}"));
        if (dev2) {
                const Want w = { .image = image, .sector_size = 512, .has_table = true };
                verify_attached(h, dev2, &w, NULL);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

void test_no_partition_scan(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "noscan.img");

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);

        const char *args[] = { "--no-partscan", NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev1);
                g_assert_cmpuint(nodes->len, ==, 0);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }
        g_autofree char *dev2 =
                raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'partition-scan': <false>}"));
        if (dev2) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev2);
                g_assert_cmpuint(nodes->len, ==, 0);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}
