/* test-loop.c: the kernel layer against the real kernel: attach, partitions, probing and detach of loop
 * devices. */
#include "test-loop.h"

/* ---- fixture: the scratch fixture; every test body runs in a subprocess ----
 *
 * A failed g_assert aborts the process, so a teardown in the same process would never run and the loop
 * devices of a failed test would stay bound. The parent sets the scratch fixture up (privileges, the
 * directory), runs the body in a child (g_test_trap_subprocess) that gets the directory, then always tears
 * the fixture down: whatever is backed by or mounted under the directory is taken down, and fails the test.
 */

#define TEST_DIR_ENV "LOOPD_TEST_LOOP_DIR"

typedef void (*TestFunc)(Fixture *f, gconstpointer data);

static void run_isolated_full(TestFunc fn, gconstpointer data)
{
        Scratch s;

        if (g_test_subprocess()) {
                Fixture f = { .ready = true, .dir = g_strdup(g_getenv(TEST_DIR_ENV)) };
                g_assert_nonnull(f.dir);
                fn(&f, data);
                g_free(f.dir);
                return;
        }

        if (!scratch_setup(&s))
                return;
        g_setenv(TEST_DIR_ENV, s.dir, TRUE);
        g_test_trap_subprocess(NULL, 600 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv(TEST_DIR_ENV);

        {
                g_autofree char *skip = g_build_filename(s.dir, ".skip", NULL);
                g_autofree char *incomplete = g_build_filename(s.dir, ".incomplete", NULL);
                g_autofree char *reason = NULL;
                if (g_file_get_contents(skip, &reason, NULL, NULL))
                        g_test_skip(reason);
                else if (g_file_get_contents(incomplete, &reason, NULL, NULL))
                        g_test_incomplete(reason);
        }
        if (!g_test_trap_has_passed())
                g_test_trap_assert_passed(); /* fails, and logs the child's output */
        /* A passing child leaves nothing bound or mounted; a failing one is cleaned up here either way. */
        scratch_teardown(&s);
}

/* g_test_skip()/g_test_incomplete() of a test body: the child tells the parent through a file. */
void isolated_skip(Fixture *f, const char *reason)
{
        g_autofree char *path = g_build_filename(f->dir, ".skip", NULL);
        g_assert_true(g_file_set_contents(path, reason, -1, NULL));
}

void isolated_incomplete(Fixture *f, const char *reason)
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

char *fixture_path(Fixture *f, const char *name)
{
        return g_build_filename(f->dir, name, NULL);
}

/* ---- helpers ---- */

/* Attaches path with loop_attach(); the sector size is image_probe()'s unless given. */
int attach_path(const char *path, int open_flags, LoopConfig config, LoopInfo **ret)
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

LoopInfo *attach_ok(const char *path, LoopConfig config)
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

char *device_path(const LoopInfo *info)
{
        return g_strdup_printf("/dev/loop%u", info->number);
}

/* losetup's view of info's device, which losetup must list; *holder keeps it (and lets go of what it held).
 */
JsonObject *losetup_of(const LoopInfo *info, JsonObject **holder)
{
        g_autofree char *dev = device_path(info);

        g_clear_pointer(holder, json_object_unref);
        *holder = oracle_losetup(dev);
        g_assert_nonnull(*holder);
        return *holder;
}

/* losetup prints numbers as numbers or strings depending on the version; both are fine here. */
guint64 json_u64(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        g_assert_nonnull(n);
        if (json_node_get_value_type(n) == G_TYPE_STRING)
                return g_ascii_strtoull(json_node_get_string(n), NULL, 10);
        if (json_node_get_value_type(n) == G_TYPE_BOOLEAN)
                return json_node_get_boolean(n);
        return (guint64)json_node_get_int(n);
}

guint64 oracle_getsize64(const char *node)
{
        g_autofree char *out = test_sh("blockdev --getsize64 '%s'", node);
        return g_ascii_strtoull(out, NULL, 10);
}

/* After a detach: our device is unbound (or already someone else's: the number may be recycled at once,
 * since other processes attach too), and no /dev/loopNp* node is left that does not belong to a live
 * partition. */
void assert_detached(Fixture *f, unsigned number, uint64_t diskseq)
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

void detach_ok(Fixture *f, LoopInfo *info)
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
void assert_partitions_match_sfdisk(const LoopInfo *info, JsonNode *table, unsigned sector_size,
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

const PartitionInfo *find_entry(const PartitionInfo *list, size_t n, unsigned number)
{
        for (size_t i = 0; i < n; i++)
                if (list[i].number == number)
                        return list + i;
        return NULL;
}

/* probe_loop_device()'s entry for a node must say what blkid -p says about it. */
void assert_entry_matches_blkid(const PartitionInfo *e)
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

/* loopN's list as a child of an image reader reads it (the image first when image_fd is not -EBADF). */
static void probe_in_reader(
        unsigned number, int image_fd, uint64_t image_offset, PartitionInfo **ret, size_t *ret_n)
{
        static ImageReader *reader;
        LoopProbeArea a;

        if (!reader)
                g_assert_cmpint(image_reader_new(IMAGE_READER_TIMEOUT_USEC, &reader), ==, 0);
        g_assert_cmpint(probe_loop_open(number, image_fd, image_offset, NULL, 0, &a), ==, 0);
        g_assert_cmpint(image_reader_probe_loop(reader, &a, ret, ret_n), ==, 0);
        probe_loop_done(&a);
}

/* probe_loop_device(), checked against probe_loop_device_image() on the image the device was attached to
 * (what the watcher's first probe of a device loopd attached reads), and both against what a confined
 * child of the image reader answers (what loopd takes): all four must agree entry by entry. */
void probe_ok(const char *img, const LoopInfo *info, PartitionInfo **ret, size_t *ret_n)
{
        PartitionInfo *via_image = NULL, *via_reader = NULL, *via_reader_device = NULL;
        size_t n_via_image = 0, n_via_reader = 0, n_via_reader_device = 0;
        int fd = open(img, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(probe_loop_device(info->number, ret, ret_n), ==, 0);
        g_assert_cmpint(
                probe_loop_device_image(info->number, fd, info->offset, &via_image, &n_via_image), ==, 0);
        assert_partition_infos_equal(*ret, *ret_n, via_image, n_via_image);
        probe_in_reader(info->number, fd, info->offset, &via_reader, &n_via_reader);
        assert_partition_infos_equal(*ret, *ret_n, via_reader, n_via_reader);
        probe_in_reader(info->number, -EBADF, 0, &via_reader_device, &n_via_reader_device);
        assert_partition_infos_equal(*ret, *ret_n, via_reader_device, n_via_reader_device);
        partition_info_array_free(via_image, n_via_image);
        partition_info_array_free(via_reader, n_via_reader);
        partition_info_array_free(via_reader_device, n_via_reader_device);
        close(fd);
}

JsonObject *sfdisk_partition(JsonNode *table, guint index)
{
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(index, <, json_array_get_length(a));
        return json_array_get_object_element(a, index);
}

char *lowercase(const char *s)
{
        return g_ascii_strdown(s, -1);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        /* In the parent only: a failed child must not stop the suite. Children abort on the first failure.
         */
        if (!g_test_subprocess())
                g_test_set_nonfatal_assertions();

        g_test_add_func("/loop/parse-name", test_parse_name);
        g_test_add_func("/loop/part-shift", test_part_shift);
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
        TEST("/loop/attach/removes-known-stale-node", test_attach_removes_known_stale_node);
        TEST("/loop/attach/autoclear-deferred", test_autoclear);
        TEST("/loop/attach/reuses-the-number-it-freed", test_attach_reuses_freed_number);
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
        TEST("/loop/info/device-matches-listing", test_info_matches_listing);

        return g_test_run();
}
