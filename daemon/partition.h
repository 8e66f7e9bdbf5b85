/* partition.h: partition tables read with libblkid, mapped to the kernel's BLKPG partitions. Never logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* The kernel's limit on partitions of one disk (DISK_MAX_PARTS): numbers 1 to PARTITION_MAX - 1. */
#define PARTITION_MAX 256u

typedef struct PartitionSpec {
        unsigned number; /* 1..; logical DOS partitions from 5 */
        uint64_t start; /* bytes */
        uint64_t length; /* bytes; 1-2 sectors for a DOS extended partition, as the kernel does */
} PartitionSpec;

/* Reads the partition table on devfd (a loop device whose logical sector size is sector_size) and returns
 * what BLKPG should add: starts and lengths in bytes, partitions past the end of the device dropped or
 * truncated, misaligned ones dropped. No table: 0 and an empty list. */
int partition_plan(
        int devfd, uint32_t sector_size, uint64_t device_size, PartitionSpec **ret, size_t *ret_n);
/* The same for the device that starts at byte base of fd (an image, to be attached at offset base): what
 * partition_plan() will say of that device once it is bound. */
int partition_plan_at(int fd, uint64_t base, uint32_t sector_size, uint64_t device_size, PartitionSpec **ret,
        size_t *ret_n);

/* Whether libblkid may read the partition table of fd (a device or image of sector_size, size bytes): a GPT
 * header (primary or backup) may ask for an entry array of up to 4 GiB, which libblkid would allocate and
 * read in full before checking it. Returns -EFBIG when one asks for more than the kernel's own parser would
 * read (4 MiB); partition_plan() then plans nothing, and the table must not be probed. */
int partition_table_check(int fd, uint32_t sector_size, uint64_t size);
/* The same for a device that starts at byte base of fd (an image attached at an offset). Besides LBA 1 and
 * the last LBA, the header at the primary's alternative_lba is checked too (libfdisk reads it). */
int partition_table_check_at(int fd, uint64_t base, uint32_t sector_size, uint64_t size);
/* For a device about to be overwritten (Format, a new table): zeroes the GPT headers of fd (open read-write)
 * that partition_table_check() refuses, so that libblkid and libfdisk may look at it. 1 when it zeroed one,
 * 0 when none was hostile. */
int partition_table_wipe_hostile(int fd, uint32_t sector_size, uint64_t size);

/* Adds the planned partitions with BLKPG_ADD_PARTITION. EBUSY for an identical existing partition is
 * success; a partition that overlaps another or that the kernel refuses is skipped (partition_list_kernel()
 * says what exists afterwards). */
int partition_add_all(int devfd, const PartitionSpec *specs, size_t n);
/* A copy of n specs (NULL for none) in *ret. */
int partition_specs_dup(const PartitionSpec *specs, size_t n, PartitionSpec **ret);

/* The kernel's partitions of loopN as sysfs lists them (number, start and size in bytes, devnum). */
typedef struct KernelPartition {
        unsigned number;
        uint64_t start;
        uint64_t size;
        dev_t devnum;
} KernelPartition;
int partition_list_kernel(unsigned loop_number, KernelPartition **ret, size_t *ret_n);
/* The devnum of partition M of loopN, from sysfs: -ENOENT when the kernel has no such partition. */
int partition_read_devnum(unsigned loop_number, unsigned partition, dev_t *ret);

/* Which /dev/loopNpM may exist, for the look for stale nodes: -1 until partition_nodes_looked() was told of
 * a look at all of /dev for loopN, then the highest M seen since, in that look or in a listing of loopN's
 * partitions (partition_list_kernel() notes each). devtmpfs removes the nodes it made when their partition
 * goes; one left behind was made with mknod(): by loopd for a partition that existed, or by someone else,
 * which only a look at all of /dev finds, unless the names made in /dev since are followed (below). */
int partition_nodes_highest(unsigned loop_number);
void partition_nodes_looked(unsigned loop_number, unsigned highest);
/* Whoever follows the names made in /dev (the watcher, by inotify) says so here; NULL: nobody does. The
 * table starts afresh at each change. follow(userdata) is called by partition_nodes_catch_up() and reports
 * each /dev/loopNpM made since its last call with partition_nodes_created(), or partition_nodes_forget()
 * when it lost some (a queue overflow): with it, the table knows the nodes made by someone else too. */
void partition_nodes_follow(void (*follow)(void *userdata), void *userdata);
/* partition_nodes_follow(NULL, NULL) if the follower is the one with userdata. */
void partition_nodes_unfollow(void *userdata);
/* Brings the table up to date with the names made in /dev so far: false when nobody follows them (then only
 * a look at all of /dev finds a node someone else made). */
bool partition_nodes_catch_up(void);
void partition_nodes_created(unsigned loop_number, unsigned partition);
void partition_nodes_forget(void);

/* Deletes partition number of the device devfd with BLKPG_DEL_PARTITION: 0 also when it is gone already,
 * -EBUSY while it is in use (mounted, held open). */
int partition_remove(int devfd, unsigned number);
/* Deletes every partition of loopN with BLKPG_DEL_PARTITION (ENXIO: already gone). -EBUSY if any is in use;
 * the others are deleted anyway. */
int partition_remove_all(int devfd, unsigned loop_number);
