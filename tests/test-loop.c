/* test-loop.c: the kernel layer against the real kernel: attach, partitions, probing and detach of loop
 * devices. */
#include "image.h"
#include "loop.h"
#include "partition.h"
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "images.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

/* ---- fixture: one temp dir per test; every test body runs in a subprocess ----
 *
 * A failed g_assert aborts the process, so a teardown in the same process would never run and the loop
 * devices of a failed test would stay bound. The parent makes the directory, runs the body in a child
 * (g_test_trap_subprocess), then always detaches whatever is backed by the directory and removes it. */

#define TEST_DIR_ENV "LOOPD_TEST_LOOP_DIR"

typedef struct Fixture {
        char *dir;
} Fixture;

typedef void (*TestFunc)(Fixture *f, gconstpointer data);

static void run_isolated_full(TestFunc fn, gconstpointer data)
{
        g_autoptr(GPtrArray) left = NULL;
        g_autofree char *dir = NULL;

        if (g_test_subprocess()) {
                Fixture f = { .dir = g_strdup(g_getenv(TEST_DIR_ENV)) };
                g_assert_nonnull(f.dir);
                fn(&f, data);
                g_free(f.dir);
                return;
        }

        if (!test_require_privileges())
                return;
        dir = test_tmpdir_new();
        g_setenv(TEST_DIR_ENV, dir, TRUE);
        g_test_trap_subprocess(NULL, 600 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv(TEST_DIR_ENV);

        /* A passing test leaves nothing bound; a failing one is cleaned up here either way. */
        left = oracle_loops_backed_by(dir);
        test_cleanup_loops_under(dir);
        {
                g_autofree char *skip = g_build_filename(dir, ".skip", NULL);
                g_autofree char *incomplete = g_build_filename(dir, ".incomplete", NULL);
                g_autofree char *reason = NULL;
                if (g_file_get_contents(skip, &reason, NULL, NULL))
                        g_test_skip(reason);
                else if (g_file_get_contents(incomplete, &reason, NULL, NULL))
                        g_test_incomplete(reason);
        }
        test_tmpdir_remove(dir);
        if (g_test_trap_has_passed())
                g_assert_cmpuint(left->len, ==, 0);
        else
                g_test_trap_assert_passed(); /* fails, and logs the child's output */
}

/* g_test_skip()/g_test_incomplete() of a test body: the child tells the parent through a file. */
static void isolated_skip(Fixture *f, const char *reason)
{
        g_autofree char *path = g_build_filename(f->dir, ".skip", NULL);
        g_assert_true(g_file_set_contents(path, reason, -1, NULL));
}

static void isolated_incomplete(Fixture *f, const char *reason)
{
        g_autofree char *path = g_build_filename(f->dir, ".incomplete", NULL);
        g_assert_true(g_file_set_contents(path, reason, -1, NULL));
}

typedef struct TestCase {
        TestFunc fn;
        gconstpointer data;
} TestCase;

static void run_case(gconstpointer data)
{
        const TestCase *tc = data;
        run_isolated_full(tc->fn, tc->data);
}

#define TEST_DATA(path, func, d)                                           \
        do {                                                               \
                static const TestCase tc_ = { .fn = (func), .data = (d) }; \
                g_test_add_data_func(path, &tc_, run_case);                \
        } while (0)
#define TEST(path, func) TEST_DATA(path, func, NULL)
#define REQUIRE_PRIVILEGES(f) g_assert_nonnull((f)->dir)

static char *fixture_path(Fixture *f, const char *name)
{
        return g_build_filename(f->dir, name, NULL);
}

/* ---- helpers ---- */

/* Attaches path with loop_attach(); the sector size is image_probe()'s unless given. */
static int attach_path(const char *path, int open_flags, LoopConfig config, LoopInfo **ret)
{
        int fd = open(path, open_flags | O_CLOEXEC);
        int r;

        g_assert_cmpint(fd, >=, 0);
        if (config.sector_size == 0) {
                ImageProbe p = {};
                g_assert_cmpint(image_probe(fd, config.offset, config.size_limit, &p), ==, 0);
                g_assert_null(p.format);
                config.sector_size = p.sector_size;
        }
        r = loop_attach(fd, &config, ret, NULL);
        close(fd);
        return r;
}

static LoopInfo *attach_ok(const char *path, LoopConfig config)
{
        LoopInfo *info = NULL;
        int r = attach_path(path, O_RDWR, config, &info);

        if (r < 0)
                g_test_message("loop_attach(%s): %s", path, g_strerror(-r));
        g_assert_cmpint(r, ==, 0);
        g_assert_nonnull(info);
        g_test_message(
                "attached %s to loop%u (diskseq %" G_GUINT64_FORMAT ")", path, info->number, info->diskseq);
        return info;
}

static char *device_path(const LoopInfo *info)
{
        return g_strdup_printf("/dev/loop%u", info->number);
}

/* losetup's view of one device, as JSON. */
static JsonObject *oracle_losetup(const LoopInfo *info, JsonParser *parser)
{
        g_autofree char *dev = device_path(info);
        g_autofree char *out =
                test_sh("losetup --list --json --output "
                        "NAME,BACK-FILE,OFFSET,SIZELIMIT,AUTOCLEAR,RO,LOG-SEC,PARTSCAN,DIO '%s'",
                        dev);
        JsonArray *devs;

        g_assert_true(json_parser_load_from_data(parser, out, -1, NULL));
        devs = json_object_get_array_member(
                json_node_get_object(json_parser_get_root(parser)), "loopdevices");
        g_assert_cmpuint(json_array_get_length(devs), ==, 1);
        return json_array_get_object_element(devs, 0);
}

/* losetup prints numbers as numbers or strings depending on the version; both are fine here. */
static guint64 json_u64(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        g_assert_nonnull(n);
        if (json_node_get_value_type(n) == G_TYPE_STRING)
                return g_ascii_strtoull(json_node_get_string(n), NULL, 10);
        if (json_node_get_value_type(n) == G_TYPE_BOOLEAN)
                return json_node_get_boolean(n);
        return (guint64)json_node_get_int(n);
}

static guint64 oracle_getsize64(const char *node)
{
        g_autofree char *out = test_sh("blockdev --getsize64 '%s'", node);
        return g_ascii_strtoull(out, NULL, 10);
}

/* After a detach: our device is unbound (or already someone else's: the number may be recycled at once,
 * since other processes attach too), and no /dev/loopNp* node is left that does not belong to a live
 * partition. */
static void assert_detached(Fixture *f, unsigned number, uint64_t diskseq)
{
        g_autofree char *dev = g_strdup_printf("/dev/loop%u", number);
        g_autofree char *seqpath = g_strdup_printf("/sys/block/loop%u/diskseq", number);
        g_autofree char *bound = g_strdup_printf("/sys/block/loop%u/loop", number);
        g_autoptr(GPtrArray) ours = oracle_loops_backed_by(f->dir);
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev);
        g_autofree char *seq = NULL;

        for (guint i = 0; i < ours->len; i++)
                g_assert_cmpstr(ours->pdata[i], !=, dev);

        if (g_file_test(bound, G_FILE_TEST_EXISTS) && g_file_get_contents(seqpath, &seq, NULL, NULL))
                g_assert_cmpuint(g_ascii_strtoull(seq, NULL, 10), !=, diskseq);

        for (guint i = 0; i < nodes->len; i++) {
                const char *node = nodes->pdata[i];
                g_autofree char *name = g_path_get_basename(node);
                g_autofree char *sys = g_strdup_printf("/sys/block/loop%u/%s", number, name);
                struct stat st;

                g_test_message("partition node %s exists after detaching loop%u", node, number);
                /* Only acceptable if it is a live partition of a new owner of the number. */
                g_assert_true(g_file_test(sys, G_FILE_TEST_IS_DIR));
                g_assert_cmpint(stat(node, &st), ==, 0);
                g_assert_true(S_ISBLK(st.st_mode));
                g_assert_false(g_file_get_contents(seqpath, &seq, NULL, NULL) &&
                        g_ascii_strtoull(seq, NULL, 10) == diskseq);
        }
}

static void detach_ok(Fixture *f, LoopInfo *info)
{
        unsigned number = info->number;
        uint64_t diskseq = info->diskseq;
        gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        int r = loop_detach(number, diskseq);

        /* Other processes on this machine (udevd, other loop daemons probing every device) may hold our
         * device for a while: loop_detach() then says EBUSY (after its own bounded waits) and the kernel
         * unbinds the device once they let go. Tolerate that here, noisily; the busy cases themselves are
         * tested on their own. ENXIO/ESTALE after that mean our device is gone. */
        if (r == -EBUSY) {
                g_autofree char *who = NULL;
                (void)test_sh_status(&who, "lsof -n /dev/loop%u* 2>/dev/null", number);
                g_test_message("loop%u is busy, held by: %s", number, who);
                while (r == -EBUSY && g_get_monotonic_time() < deadline) {
                        g_usleep(200 * 1000);
                        r = loop_detach(number, diskseq);
                        if (r == -ENXIO || r == -ESTALE)
                                r = 0;
                }
        }
        if (r < 0)
                g_test_message("loop_detach(loop%u): %s", number, g_strerror(-r));
        g_assert_cmpint(r, ==, 0);
        loop_info_free(info);
        assert_detached(f, number, diskseq);
}

/* Kernel partitions of the device must be exactly the sfdisk oracle's, in bytes (sector_size as written). */
static void assert_partitions_match_sfdisk(const LoopInfo *info, JsonNode *table, unsigned sector_size,
        const unsigned *expect_numbers, size_t n_expect)
{
        g_autofree KernelPartition *parts = NULL;
        g_autofree char *dev = device_path(info);
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev);
        JsonArray *jparts = json_object_get_array_member(json_node_get_object(table), "partitions");
        size_t n = 0;

        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, n_expect);
        g_assert_cmpuint(nodes->len, ==, n_expect);

        for (size_t i = 0; i < n_expect; i++) {
                g_autofree char *node = g_strdup_printf("/dev/loop%up%u", info->number, expect_numbers[i]);
                JsonObject *jp = NULL;
                struct stat st;

                /* sfdisk lists the partitions in table order; its node names end in the number. */
                for (guint j = 0; j < json_array_get_length(jparts); j++) {
                        JsonObject *o = json_array_get_object_element(jparts, j);
                        const char *jnode = json_object_get_string_member(o, "node");
                        g_autofree char *suffix = g_strdup_printf("%u", expect_numbers[i]);
                        size_t l = strlen(jnode), sl = strlen(suffix);
                        if (l > sl && g_str_has_suffix(jnode, suffix) && !g_ascii_isdigit(jnode[l - sl - 1]))
                                jp = o;
                }
                g_assert_nonnull(jp);
                g_assert_cmpuint(parts[i].number, ==, expect_numbers[i]);
                g_assert_cmpuint(parts[i].start, ==, json_u64(jp, "start") * sector_size);
                /* The kernel keeps only a stub of an extended partition (see the MBR test). */
                if (!g_str_equal(json_object_get_string_member(jp, "type"), "5"))
                        g_assert_cmpuint(parts[i].size, ==, json_u64(jp, "size") * sector_size);

                g_assert_cmpint(stat(node, &st), ==, 0);
                g_assert_true(S_ISBLK(st.st_mode));
                g_assert_cmpuint(st.st_rdev, ==, parts[i].devnum);
                g_assert_cmpuint(oracle_getsize64(node), ==, parts[i].size);
        }
}

static const PartitionInfo *find_entry(const PartitionInfo *list, size_t n, unsigned number)
{
        for (size_t i = 0; i < n; i++)
                if (list[i].number == number)
                        return list + i;
        return NULL;
}

/* probe_loop_device()'s entry for a node must say what blkid -p says about it. */
static void assert_entry_matches_blkid(const PartitionInfo *e)
{
        g_autoptr(GHashTable) blkid = oracle_blkid(e->node, 0);
        const char *type = g_hash_table_lookup(blkid, "TYPE");

        g_assert_nonnull(e->fstype);
        g_assert_nonnull(e->label);
        g_assert_nonnull(e->uuid);
        g_assert_nonnull(e->part_type);
        g_assert_nonnull(e->part_name);
        g_assert_nonnull(e->mount_point);
        g_assert_cmpstr(e->fstype, ==, type ? type : "");
        g_assert_cmpstr(e->label, ==, g_hash_table_lookup(blkid, "LABEL") ?: "");
        g_assert_cmpstr(e->uuid, ==, g_hash_table_lookup(blkid, "UUID") ?: "");
}

/* probe_loop_device(), checked against probe_loop_device_image() on the image the device was attached to
 * (what the watcher's first probe of a device loopd attached reads): the two must agree entry by entry. */
static void probe_ok(const char *img, const LoopInfo *info, PartitionInfo **ret, size_t *ret_n)
{
        PartitionInfo *via_image = NULL;
        size_t n_via_image = 0;
        int fd = open(img, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(probe_loop_device(info->number, ret, ret_n), ==, 0);
        g_assert_cmpint(
                probe_loop_device_image(info->number, fd, info->offset, &via_image, &n_via_image), ==, 0);
        g_assert_cmpuint(n_via_image, ==, *ret_n);
        for (size_t i = 0; i < n_via_image; i++) {
                const PartitionInfo *a = &(*ret)[i], *b = &via_image[i];
                g_assert_cmpstr(a->node, ==, b->node);
                g_assert_cmpuint(a->number, ==, b->number);
                g_assert_cmpuint(a->devnum, ==, b->devnum);
                g_assert_cmpuint(a->offset, ==, b->offset);
                g_assert_cmpuint(a->size, ==, b->size);
                g_assert_cmpstr(a->part_type, ==, b->part_type);
                g_assert_cmpstr(a->part_name, ==, b->part_name);
                g_assert_cmpstr(a->fstype, ==, b->fstype);
                g_assert_cmpstr(a->label, ==, b->label);
                g_assert_cmpstr(a->uuid, ==, b->uuid);
        }
        partition_info_array_free(via_image, n_via_image);
        close(fd);
}

static JsonObject *sfdisk_partition(JsonNode *table, guint index)
{
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(index, <, json_array_get_length(a));
        return json_array_get_object_element(a, index);
}

static char *lowercase(const char *s)
{
        return g_ascii_strdown(s, -1);
}

/* ---- tests ---- */

static void test_gpt_ext4_xfs(Fixture *f, gconstpointer data)
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

static void test_mbr_extended_logical(Fixture *f, gconstpointer data)
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

static void test_partitionless_ext4(Fixture *f, gconstpointer data)
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
        partition_info_array_free(list, n);

        /* probe_filesystem() on the node says the same. */
        {
                g_autofree char *t = NULL, *l = NULL, *u = NULL;
                g_assert_cmpint(probe_filesystem(dev, &t, &l, &u), ==, 0);
                g_assert_cmpstr(t, ==, "ext4");
                g_assert_cmpstr(l, ==, "plain");
                g_assert_cmpstr(u, ==, uuid);
        }
        detach_ok(f, info);
}

static void test_hybrid_iso(Fixture *f, gconstpointer data)
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

static void test_gpt_4k_sectors(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
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
        g_assert_cmpuint(json_u64(oracle_losetup(info, parser), "log-sec"), ==, 4096);
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

static void test_mbr_phone_4k(Fixture *f, gconstpointer data)
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

static void test_offset_sizelimit(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *uuid = NULL, *dev = NULL;
        g_autoptr(JsonNode) table = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
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
        JsonObject *lo = oracle_losetup(info, parser);
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

static void test_read_only_fd(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
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
        g_assert_true(json_u64(oracle_losetup(info, parser), "ro"));
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
                g_autoptr(JsonParser) p2 = json_parser_new();
                g_assert_true(info->read_only);
                g_assert_true(json_u64(oracle_losetup(info, p2), "ro"));
        }
        detach_ok(f, info);
}

static void test_sparse_1tib(Fixture *f, gconstpointer data)
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

static void test_qcow2_detected(Fixture *f, gconstpointer data)
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

static void test_ambiguous_gpt(Fixture *f, gconstpointer data)
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

/* Leaves a stale partition 2 on a free loop device, as an earlier failed run would: bound with losetup, a
 * partition added with BLKPG (partx), unbound without partition scanning so the kernel keeps it. Returns the
 * device number. */
static unsigned make_stale_device(Fixture *f)
{
        g_autofree char *img = fixture_path(f, "stale.img");
        g_autofree char *out = NULL;
        unsigned number;

        image_create(img, 64 * MIB);
        /* p2 at 40-48 MiB: it overlaps the p2 of the image attached next. */
        image_sfdisk(img, "label: dos\nstart=2048, size=8MiB, type=L\nstart=40MiB, size=8MiB, type=L\n", 0);
        out = test_sh("set -e; dev=$(losetup --show --find '%s'); partx --add --nr 2 \"$dev\"; "
                      "losetup --detach \"$dev\"; echo \"$dev\"",
                img);
        g_assert_cmpint(loop_parse_name(g_strstrip(out), &number), ==, 0);

        /* With udevd probing it, losetup --detach may only have set autoclear: wait until it is free. */
        {
                g_autofree char *bound = g_strdup_printf("/sys/block/loop%u/loop", number);
                for (unsigned i = 0; i < 500 && g_file_test(bound, G_FILE_TEST_EXISTS); i++)
                        g_usleep(10 * 1000);
        }
        return number;
}

static void test_stale_partition_cleaned(Fixture *f, gconstpointer data)
{
        gboolean scan = GPOINTER_TO_INT(data);

        REQUIRE_PRIVILEGES(f);

        /* Other processes attach devices too: the free device we made stale may be taken before we get it.
         * Try a few times; the test proves nothing unless loop_attach() got the stale one. */
        for (unsigned attempt = 0; attempt < 5; attempt++) {
                g_autofree char *img = g_strdup_printf("%s/fresh%u.img", f->dir, attempt);
                g_autofree char *stale_node = NULL, *stale_sys = NULL, *dev = NULL;
                g_autoptr(JsonNode) table = NULL;
                static const unsigned numbers[] = { 1, 2 };
                unsigned stale;
                LoopInfo *info;

                image_create(img, 96 * MIB);
                image_sfdisk(img, "label: gpt\nsize=32MiB, type=L\ntype=L\n", 0);
                table = oracle_sfdisk_json(img, 0);

                stale = make_stale_device(f);
                stale_node = g_strdup_printf("/dev/loop%up2", stale);
                stale_sys = g_strdup_printf("/sys/block/loop%u/loop%up2", stale, stale);
                if (!g_file_test(stale_sys, G_FILE_TEST_EXISTS)) {
                        g_test_message(
                                "loop%u kept no stale partition; the kernel drops them itself", stale);
                        isolated_skip(f, "cannot produce a stale partition on this kernel");
                        return;
                }
                g_assert_true(g_file_test(stale_node, G_FILE_TEST_EXISTS));

                info = attach_ok(img, (LoopConfig){ .partition_scan = scan });
                if (info->number != stale) {
                        g_test_message("got loop%u, not the stale loop%u; retrying", info->number, stale);
                        detach_ok(f, info);
                        /* Clean what we left (it is ours), unless someone bound the device since. */
                        (void)test_sh_status(NULL,
                                "losetup '/dev/loop%u' >/dev/null 2>&1 || partx --delete '/dev/loop%u'",
                                stale, stale);
                        continue;
                }
                if (scan)
                        assert_partitions_match_sfdisk(info, table, 512, numbers, 2);
                else {
                        /* Without partition scanning the device must carry nothing at all. */
                        g_autoptr(GPtrArray) nodes = NULL;
                        g_autofree KernelPartition *parts = NULL;
                        size_t n = 99;

                        dev = device_path(info);
                        nodes = oracle_partition_nodes(dev);
                        g_assert_cmpuint(nodes->len, ==, 0);
                        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
                        g_assert_cmpuint(n, ==, 0);
                }
                detach_ok(f, info);
                return;
        }
        isolated_incomplete(f, "never got the stale device back from LOOP_CTL_GET_FREE (busy machine)");
}

static void test_detach_busy_and_stale(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *p1 = NULL;
        g_autofree KernelPartition *parts = NULL;
        size_t n = 0;
        LoopInfo *info;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "busy.img");
        image_create(img, 64 * MIB);
        image_sfdisk(img, "label: gpt\nsize=16MiB, type=L\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });

        /* A recycled number (another diskseq) is never touched. */
        g_assert_cmpint(loop_detach(info->number, info->diskseq + 1000), ==, -ESTALE);
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_clear_pointer(&parts, g_free);

        /* A partition held open exclusively (as a mount does): EBUSY, and nothing is touched, not even the
         * other partition, nor the autoclear flag. */
        p1 = g_strdup_printf("/dev/loop%up1", info->number);
        fd = open(p1, O_RDONLY | O_CLOEXEC | O_EXCL);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, -EBUSY);
        {
                g_autoptr(JsonParser) parser = json_parser_new();
                JsonObject *lo = oracle_losetup(info, parser);
                g_assert_false(json_u64(lo, "autoclear"));
        }
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_clear_pointer(&parts, g_free);
        close(fd);

        /* Held open, not exclusively: that partition stays, the other one goes, the device stays bound. */
        fd = open(p1, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, -EBUSY);
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(parts[0].number, ==, 1);
        close(fd);

        detach_ok(f, info);
}

static void test_detach_mounted(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL, *mnt = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        LoopInfo *info;
        int r;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "mounted.img");
        mnt = fixture_path(f, "mnt");
        image_create(img, 32 * MIB);
        g_free(image_mkfs_at(img, 0, 32 * MIB, "ext4", "mounted"));
        g_assert_cmpint(mkdir(mnt, 0700), ==, 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);
        g_free(test_sh("mount -t ext4 -o ro,nosuid,nodev,noload '%s' '%s'", dev, mnt));

        /* Mounted: EBUSY, the device stays bound, and its autoclear flag untouched (no half-detach). */
        r = loop_detach(info->number, info->diskseq);
        g_free(test_sh("umount '%s'", mnt));
        g_assert_cmpint(r, ==, -EBUSY);
        g_assert_false(json_u64(oracle_losetup(info, parser), "autoclear"));

        detach_ok(f, info);
}

static void test_detach_waits_for_udev_lock(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        int pipefd[2], status;
        gint64 t0, elapsed;
        LoopInfo *info;
        char c;
        pid_t pid;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "locked.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);

        /* A udevd worker probing the device: LOCK_SH on an open fd for a while (here 1 s). Detaching
         * meanwhile would only set autoclear; loop_detach() waits for the lock and then really unbinds. */
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                int fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_SH) < 0)
                        _exit(1);
                (void)!write(pipefd[1], "x", 1);
                usleep(1000 * 1000);
                _exit(0);
        }
        close(pipefd[1]);
        g_assert_cmpint(read(pipefd[0], &c, 1), ==, 1);
        close(pipefd[0]);

        t0 = g_get_monotonic_time();
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, 0);
        elapsed = g_get_monotonic_time() - t0;
        g_test_message("loop_detach waited %" G_GINT64_FORMAT " us for the lock", elapsed);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_detached(f, info->number, info->diskseq);
        loop_info_free(info);
}

static void test_detach_blkpg_without_scan(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL, *bogus = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "blkpg.img");
        image_create(img, 64 * MIB);
        image_sfdisk(img, "label: dos\n,16MiB,L\n,,L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = false });
        dev = device_path(info);

        /* Partitions added behind the kernel's back (no partscan flag, so LOOP_CLR_FD would not drop them),
         * and a node devtmpfs never made: detach must leave neither. */
        g_free(test_sh("partx --add '%s'", dev));
        nodes = oracle_partition_nodes(dev);
        g_assert_cmpuint(nodes->len, ==, 2);
        bogus = g_strdup_printf("%sp9", dev);
        g_free(test_sh("mknod '%s' b 259 1048575", bogus));

        /* Look before asserting anything, so that a failure never leaves our bogus node behind. */
        {
                unsigned number = info->number;
                uint64_t diskseq = info->diskseq;
                int r = loop_detach(number, diskseq);
                gboolean left = g_file_test(bogus, G_FILE_TEST_EXISTS);

                if (left)
                        (void)unlink(bogus);
                g_assert_cmpint(r, ==, 0);
                g_assert_false(left);
                loop_info_free(info);
                assert_detached(f, number, diskseq);
        }
}

static void test_detach_held_open(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        LoopInfo *info;
        unsigned number;
        uint64_t diskseq;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "held.img");
        image_create(img, 16 * MIB);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        number = info->number;
        diskseq = info->diskseq;
        dev = device_path(info);

        /* Someone holds the whole device open: the kernel turns LOOP_CLR_FD into autoclear; loop_detach()
         * says EBUSY, and the device goes away once the holder closes it. */
        fd = open(dev, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(number, diskseq), ==, -EBUSY);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 1);
        close(fd);
        g_clear_pointer(&ours, g_ptr_array_unref);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);
        loop_info_free(info);
        assert_detached(f, number, diskseq);
}

static void test_autoclear(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        LoopInfo *info;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "autoclear.img");
        image_create(img, 16 * MIB);
        info = attach_ok(img, (LoopConfig){ 0 });
        dev = device_path(info);

        /* Still there after loop_attach() let go of it. */
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 1);
        g_assert_false(json_u64(oracle_losetup(info, parser), "autoclear"));

        /* Held (like a mount holds it), then marked: it goes away with the last close. */
        fd = open(dev, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_set_autoclear(info->number, info->diskseq + 1000, true), ==, -ESTALE);
        g_assert_cmpint(loop_set_autoclear(info->number, info->diskseq, true), ==, 0);
        {
                g_autoptr(JsonParser) p2 = json_parser_new();
                g_assert_true(json_u64(oracle_losetup(info, p2), "autoclear"));
        }
        close(fd);
        g_clear_pointer(&ours, g_ptr_array_unref);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);
        assert_detached(f, info->number, info->diskseq);
        loop_info_free(info);
}

static void test_no_partition_scan(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "noscan.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = false });
        dev = device_path(info);
        nodes = oracle_partition_nodes(dev);
        g_assert_cmpuint(nodes->len, ==, 0);
        g_assert_false(info->partscan);
        g_assert_false(json_u64(oracle_losetup(info, parser), "partscan"));
        detach_ok(f, info);
}

/* Writes one raw MBR entry with dd: the table is the oracle, since no tool writes a broken one. */
static void write_mbr_entry(const char *img, unsigned slot, unsigned type, uint32_t start, uint32_t count)
{
        g_free(test_sh(
                "printf '\\000\\000\\000\\000\\%03o\\000\\000\\000\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o' | "
                "dd of='%s' bs=1 seek=%u conv=notrunc status=none; "
                "printf '\\125\\252' | dd of='%s' bs=1 seek=510 conv=notrunc status=none",
                type, start & 0xff, (start >> 8) & 0xff, (start >> 16) & 0xff, start >> 24, count & 0xff,
                (count >> 8) & 0xff, (count >> 16) & 0xff, count >> 24, img, 446 + 16 * slot, img));
}

static void test_hostile_mbr(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL;
        g_autofree KernelPartition *parts = NULL;
        size_t n = 0;
        LoopInfo *info;
        const uint64_t size = 64 * MIB, sectors = size / 512;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "hostile.img");
        image_create(img, size);
        write_mbr_entry(img, 0, 0x83, 2048, 8192); /* fine */
        write_mbr_entry(img, 1, 0x83, (uint32_t)sectors + 100, 2048); /* starts past the end: dropped */
        write_mbr_entry(img, 2, 0x83, (uint32_t)sectors - 2048, 65536); /* runs past the end: truncated */
        write_mbr_entry(img, 3, 0x83, 4096, 8192); /* overlaps 1: skipped */

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpuint(parts[0].number, ==, 1);
        g_assert_cmpuint(parts[0].start, ==, 2048 * 512);
        g_assert_cmpuint(parts[0].size, ==, 8192 * 512);
        g_assert_cmpuint(parts[1].number, ==, 3);
        g_assert_cmpuint(parts[1].start, ==, (sectors - 2048) * 512);
        g_assert_cmpuint(parts[1].size, ==, 2048 * 512);

        /* Probing the garbage is harmless. */
        {
                PartitionInfo *list = NULL;
                size_t nl = 0;
                probe_ok(img, info, &list, &nl);
                g_assert_cmpuint(nl, ==, 2);
                partition_info_array_free(list, nl);
        }
        detach_ok(f, info);
}

static void test_hostile_random(Fixture *f, gconstpointer data)
{
        REQUIRE_PRIVILEGES(f);

        /* Random data with partition-table signatures sprinkled in: attach, probe and detach must survive.
         */
        for (unsigned i = 0; i < 8; i++) {
                g_autofree char *img = g_strdup_printf("%s/random%u.img", f->dir, i);
                PartitionInfo *list = NULL;
                size_t n = 0;
                LoopInfo *info;

                g_free(test_sh("head -c 1M /dev/urandom > '%s' && truncate -s 8M '%s'", img, img));
                if (i % 2 == 0)
                        g_free(test_sh(
                                "printf '\\125\\252' | dd of='%s' bs=1 seek=510 conv=notrunc status=none",
                                img));
                if (i % 4 == 1)
                        g_free(test_sh(
                                "printf 'EFI PART' | dd of='%s' bs=1 seek=512 conv=notrunc status=none",
                                img));
                info = attach_ok(img, (LoopConfig){ .sector_size = 512, .partition_scan = true });
                probe_ok(img, info, &list, &n);
                partition_info_array_free(list, n);
                detach_ok(f, info);
        }
}

/* Rewrites the GPT header at offset to ask for n entries, with a valid header CRC (or breaks its signature).
 */
static void patch_gpt_header(const char *img, uint64_t offset, uint32_t entries, gboolean break_signature)
{
        uint8_t h[512];
        uint32_t hs, crc;
        int fd = open(img, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, h, sizeof(h), (off_t)offset), ==, sizeof(h));
        g_assert_cmpint(memcmp(h, "EFI PART", 8), ==, 0);
        if (break_signature)
                h[0] = 'X';
        hs = h[12] | h[13] << 8 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 24;
        g_assert_cmpuint(hs, >=, 92);
        g_assert_cmpuint(hs, <=, sizeof(h));
        for (int i = 0; i < 4; i++)
                h[80 + i] = (entries >> (8 * i)) & 0xff;
        memset(h + 16, 0, 4);
        crc = test_crc32(h, hs);
        for (int i = 0; i < 4; i++)
                h[16 + i] = (crc >> (8 * i)) & 0xff;
        g_assert_cmpint(pwrite(fd, h, sizeof(h), (off_t)offset), ==, sizeof(h));
        close(fd);
}

static void test_hostile_gpt_entry_array(Fixture *f, gconstpointer data)
{
        REQUIRE_PRIVILEGES(f);

        /* A GPT header (valid CRC) asking for 512Ki entries of 128 bytes, 64 MiB (up to 4 GiB are possible):
         * libblkid allocates and reads all of it before any check, and with 16Mi entries takes 2 GiB and
         * many seconds. The kernel's parser refuses arrays over 4 MiB; we refuse the whole table (libblkid
         * cannot be told to skip one header): no partitions, quickly and without the memory. The size here
         * is kept small so that a running udevd, whose libblkid has no such guard, is not stalled by it.
         * First the primary header, then the backup one behind a broken primary. */
        for (unsigned variant = 0; variant < 2; variant++) {
                g_autofree char *img = g_strdup_printf("%s/hostile-gpt%u.img", f->dir, variant);
                g_autofree KernelPartition *parts = NULL;
                PartitionInfo *list = NULL;
                size_t n = 99, nl = 0;
                struct rusage before, after;
                gint64 t0, elapsed;
                LoopInfo *info;

                image_create(img, 4 * GIB);
                image_sfdisk(img, "label: gpt\ntype=L\n", 0);
                if (variant == 0)
                        patch_gpt_header(img, 512, 0x00080000, FALSE);
                else {
                        patch_gpt_header(img, 4 * GIB - 512, 0x00080000, FALSE);
                        patch_gpt_header(img, 512, 128, TRUE);
                }

                g_assert_cmpint(getrusage(RUSAGE_SELF, &before), ==, 0);
                t0 = g_get_monotonic_time();
                info = attach_ok(img, (LoopConfig){ .sector_size = 512, .partition_scan = true });
                g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
                g_assert_cmpuint(n, ==, 0);
                probe_ok(img, info, &list, &nl);
                partition_info_array_free(list, nl);
                elapsed = g_get_monotonic_time() - t0;
                g_assert_cmpint(getrusage(RUSAGE_SELF, &after), ==, 0);
                g_test_message("variant %u: %" G_GINT64_FORMAT " us, max RSS %ld -> %ld KiB", variant,
                        elapsed, before.ru_maxrss, after.ru_maxrss);
                g_assert_cmpint(elapsed, <, 3 * G_USEC_PER_SEC);
                g_assert_cmpint(after.ru_maxrss - before.ru_maxrss, <, 256 * 1024);
                detach_ok(f, info);
        }
}

static void test_no_close_write_on_node(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *name = NULL;
        g_autofree KernelPartition *parts = NULL;
        char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
        size_t n = 0;
        LoopInfo *info;
        ssize_t k;
        int ifd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "inotify.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);

        /* udevd re-reads the partition table (BLKRRPART) whenever a writable fd of /dev/loopN is closed,
         * which on a kernel without partition parsers drops our BLKPG partitions. The attach must never do
         * that. */
        ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        g_assert_cmpint(ifd, >=, 0);
        g_assert_cmpint(inotify_add_watch(ifd, "/dev", IN_CLOSE_WRITE), >=, 0);

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        name = g_strdup_printf("loop%u", info->number);

        while ((k = read(ifd, buf, sizeof(buf))) > 0)
                for (char *p = buf; p < buf + k;) {
                        struct inotify_event *e = (struct inotify_event *)p;
                        if (e->len > 0 && g_str_equal(e->name, name))
                                g_test_message("IN_CLOSE_WRITE on /dev/%s", e->name);
                        g_assert_false(e->len > 0 && g_str_equal(e->name, name));
                        p += sizeof(struct inotify_event) + e->len;
                }
        close(ifd);

        /* What udevd does on such a close, done by hand: the partitions would be gone. Not done here; but
         * the partitions must still be there. */
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        detach_ok(f, info);
}

static void test_list_and_info(Fixture *f, gconstpointer data)
{
        g_autofree char *a = NULL, *b = NULL;
        LoopInfo *ia, *ib, **infos = NULL;
        size_t n = 0;
        struct stat st;

        REQUIRE_PRIVILEGES(f);
        a = fixture_path(f, "list-a.img");
        b = fixture_path(f, "list-b.img");
        image_create(a, 16 * MIB);
        image_create(b, 32 * MIB);
        ia = attach_ok(a, (LoopConfig){ .partition_scan = true });
        ib = attach_ok(b, (LoopConfig){ .offset = 1 * MIB, .size_limit = 8 * MIB, .sector_size = 4096 });

        g_assert_cmpint(loop_list(&infos, &n), ==, 0);
        for (size_t i = 1; i < n; i++)
                g_assert_cmpuint(infos[i - 1]->number, <, infos[i]->number);

        LoopInfo *mine[] = { ia, ib };
        for (size_t k = 0; k < G_N_ELEMENTS(mine); k++) {
                g_autoptr(JsonParser) parser = json_parser_new();
                JsonObject *lo = oracle_losetup(mine[k], parser);
                LoopInfo *listed = NULL, *got = NULL;

                for (size_t i = 0; i < n; i++)
                        if (infos[i]->number == mine[k]->number)
                                listed = infos[i];
                g_assert_nonnull(listed);
                g_assert_cmpuint(listed->diskseq, ==, mine[k]->diskseq);
                g_assert_cmpstr(listed->backing_file, ==, json_object_get_string_member(lo, "back-file"));
                g_assert_cmpuint(listed->offset, ==, json_u64(lo, "offset"));
                g_assert_cmpuint(listed->size_limit, ==, json_u64(lo, "sizelimit"));
                g_assert_cmpuint(listed->sector_size, ==, json_u64(lo, "log-sec"));
                g_assert_cmpuint(listed->read_only, ==, json_u64(lo, "ro"));
                g_assert_cmpuint(listed->autoclear, ==, json_u64(lo, "autoclear"));
                g_assert_cmpuint(listed->partscan, ==, json_u64(lo, "partscan"));
                g_assert_cmpuint(listed->direct_io, ==, json_u64(lo, "dio"));

                g_assert_cmpint(loop_get_info(mine[k]->number, &got), ==, 0);
                g_assert_cmpstr(got->backing_file, ==, listed->backing_file);
                g_assert_cmpuint(got->size, ==, listed->size);
                g_assert_cmpint(stat(got->backing_file, &st), ==, 0);
                g_assert_cmpuint(got->backing_dev, ==, st.st_dev);
                g_assert_cmpuint(got->backing_inode, ==, st.st_ino);
                loop_info_free(got);
        }
        g_assert_cmpuint(ib->size, ==, 8 * MIB);
        g_assert_cmpuint(ib->sector_size, ==, 4096);

        /* Cheap: sysfs only. A generous bound for this machine's devices; ListDevices wants <= 10 ms for
         * 256. */
        {
                gint64 t0 = g_get_monotonic_time();
                for (unsigned i = 0; i < 10; i++) {
                        LoopInfo **again = NULL;
                        size_t m = 0;
                        g_assert_cmpint(loop_list(&again, &m), ==, 0);
                        loop_info_array_free(again, m);
                }
                gint64 per = (g_get_monotonic_time() - t0) / 10;
                g_test_message("loop_list: %" G_GINT64_FORMAT " us for %zu devices", per, n);
                g_assert_cmpint(per, <, 10000);
        }
        loop_info_array_free(infos, n);

        detach_ok(f, ia);
        detach_ok(f, ib);
}

static void test_parse_name(void)
{
        unsigned n = 99;

        g_assert_cmpint(loop_parse_name("loop0", &n), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        g_assert_cmpint(loop_parse_name("/dev/loop17", &n), ==, 0);
        g_assert_cmpuint(n, ==, 17);
        g_assert_cmpint(loop_parse_name("loop", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop1p2", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/dev/loop1p2", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/dev/../dev/loop1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/tmp/loop1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop01", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop-1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop99999999999", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("vda", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name(NULL, &n), ==, -EINVAL);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        /* In the parent only: a failed child must not stop the suite. Children abort on the first failure.
         */
        if (!g_test_subprocess())
                g_test_set_nonfatal_assertions();

        g_test_add_func("/loop/parse-name", test_parse_name);
        TEST("/loop/attach/gpt-ext4-xfs", test_gpt_ext4_xfs);
        TEST("/loop/attach/mbr-extended-logical", test_mbr_extended_logical);
        TEST("/loop/attach/partitionless-ext4", test_partitionless_ext4);
        TEST("/loop/attach/hybrid-iso", test_hybrid_iso);
        TEST("/loop/attach/gpt-4k-sectors", test_gpt_4k_sectors);
        TEST("/loop/attach/mbr-phone-4k", test_mbr_phone_4k);
        TEST("/loop/attach/offset-size-limit", test_offset_sizelimit);
        TEST("/loop/attach/read-only-fd", test_read_only_fd);
        TEST("/loop/attach/sparse-1tib", test_sparse_1tib);
        TEST("/loop/attach/qcow2-detected", test_qcow2_detected);
        TEST("/loop/attach/ambiguous-gpt", test_ambiguous_gpt);
        TEST_DATA(
                "/loop/attach/stale-partition-cleaned", test_stale_partition_cleaned, GINT_TO_POINTER(TRUE));
        TEST_DATA("/loop/attach/stale-partition-cleaned-no-scan", test_stale_partition_cleaned,
                GINT_TO_POINTER(FALSE));
        TEST("/loop/attach/no-partition-scan", test_no_partition_scan);
        TEST("/loop/attach/autoclear-deferred", test_autoclear);
        TEST("/loop/attach/hostile-mbr", test_hostile_mbr);
        TEST("/loop/attach/hostile-random", test_hostile_random);
        TEST("/loop/attach/no-close-write-on-node", test_no_close_write_on_node);
        TEST("/loop/attach/hostile-gpt-entry-array", test_hostile_gpt_entry_array);
        TEST("/loop/detach/busy-and-stale", test_detach_busy_and_stale);
        TEST("/loop/detach/held-open", test_detach_held_open);
        TEST("/loop/detach/mounted", test_detach_mounted);
        TEST("/loop/detach/waits-for-udev-lock", test_detach_waits_for_udev_lock);
        TEST("/loop/detach/blkpg-partitions-without-scan", test_detach_blkpg_without_scan);
        TEST("/loop/list/matches-losetup", test_list_and_info);

        return g_test_run();
}
