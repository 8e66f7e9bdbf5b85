/* test-loop.h: what the loop suite's files share: its fixture (each test body in a subprocess), its helpers
 * and oracles, and the tests (test-loop.c registers them). */
#pragma once

#include "image-reader.h"
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

#include "harness.h"
#include "partition-info-assert.h"

#define MIB (UINT64_C(1) << 20)

#define GIB (UINT64_C(1) << 30)

#define TIB (UINT64_C(1) << 40)
/* How long loop_backing_is() and loop_set_autoclear() may wait for their child (a local file answers at
 * once). */
#define ASK_TIMEOUT_USEC (UINT64_C(10) * 1000 * 1000)

/* The scratch fixture itself: the body (in a child) reads f->dir. */
typedef Scratch Fixture;

#define REQUIRE_PRIVILEGES(f) g_assert_nonnull((f)->dir)

/* test-loop.c */
void isolated_skip(Fixture *f, const char *reason);
void isolated_incomplete(Fixture *f, const char *reason);
char *fixture_path(Fixture *f, const char *name);
int attach_path(const char *path, int open_flags, LoopConfig config, LoopInfo **ret);
LoopInfo *attach_ok(const char *path, LoopConfig config);
char *device_path(const LoopInfo *info);
JsonObject *losetup_of(const LoopInfo *info, JsonObject **holder);
guint64 json_u64(JsonObject *o, const char *member);
guint64 oracle_getsize64(const char *node);
void assert_detached(Fixture *f, unsigned number, uint64_t diskseq);
void detach_ok(Fixture *f, LoopInfo *info);
void assert_partitions_match_sfdisk(const LoopInfo *info, JsonNode *table, unsigned sector_size,
        const unsigned *expect_numbers, size_t n_expect);
const PartitionInfo *find_entry(const PartitionInfo *list, size_t n, unsigned number);
void assert_entry_matches_blkid(const PartitionInfo *e);
void probe_ok(const char *img, const LoopInfo *info, PartitionInfo **ret, size_t *ret_n);
JsonObject *sfdisk_partition(JsonNode *table, guint index);
char *lowercase(const char *s);

/* loop-attach.c */
void test_gpt_ext4_xfs(Fixture *f, gconstpointer data);
void test_mbr_extended_logical(Fixture *f, gconstpointer data);
void test_partitionless_ext4(Fixture *f, gconstpointer data);
void test_hybrid_iso(Fixture *f, gconstpointer data);
void test_gpt_4k_sectors(Fixture *f, gconstpointer data);
void test_mbr_phone_4k(Fixture *f, gconstpointer data);
void test_offset_sizelimit(Fixture *f, gconstpointer data);
void test_read_only_fd(Fixture *f, gconstpointer data);
void test_sparse_1tib(Fixture *f, gconstpointer data);
void test_qcow2_detected(Fixture *f, gconstpointer data);
void test_ambiguous_gpt(Fixture *f, gconstpointer data);

/* loop-detach.c */
void test_stale_partition_cleaned(Fixture *f, gconstpointer data);
void test_detach_busy_and_stale(Fixture *f, gconstpointer data);
void test_detach_mounted(Fixture *f, gconstpointer data);
void test_detach_waits_for_udev_lock(Fixture *f, gconstpointer data);
void test_detach_blkpg_without_scan(Fixture *f, gconstpointer data);
void test_attach_removes_known_stale_node(Fixture *f, gconstpointer data);
void test_detach_held_open(Fixture *f, gconstpointer data);
void test_attach_reuses_freed_number(Fixture *f, gconstpointer data);
void test_autoclear(Fixture *f, gconstpointer data);
void test_no_partition_scan(Fixture *f, gconstpointer data);

/* loop-hostile.c */
void test_hostile_mbr(Fixture *f, gconstpointer data);
void test_hostile_random(Fixture *f, gconstpointer data);
void test_hostile_gpt_entry_array(Fixture *f, gconstpointer data);
void test_no_close_write_on_node(Fixture *f, gconstpointer data);
void test_list_and_info(Fixture *f, gconstpointer data);
void test_info_matches_listing(Fixture *f, gconstpointer data);
void test_parse_name(void);
void test_part_shift(void);
