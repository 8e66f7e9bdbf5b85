/* probe.h: what is on a loop device: its partitions and filesystems, with libblkid. Never logs. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "macro.h"
#include "partition.h"

/* One entry of ListPartitions. Strings are never NULL ("" when unknown). */
typedef struct PartitionInfo {
        char *node; /* /dev/loopNpM, or /dev/loopN for number 0 (a filesystem on the whole device) */
        unsigned number;
        dev_t devnum;
        uint64_t offset; /* bytes from the start of the loop device */
        uint64_t size; /* bytes */
        char *part_type; /* GPT type GUID, or "0x83" style for MBR */
        char *part_name;
        char *fstype; /* e.g. "ext4", "vfat", "swap"; "" when none was found */
        char *label; /* as stored on disk: attacker-controlled, never sanitised here */
        char *uuid;
        char *mount_point; /* filled in by the caller from the mount table; "" here */
} PartitionInfo;

void partition_info_clear(PartitionInfo *p);
void partition_info_array_free(PartitionInfo *p, size_t n);
/* A deep copy of the n entries of p (an array of n + 1, the last one empty, as the probes return). */
int partition_info_array_copy(const PartitionInfo *p, size_t n, PartitionInfo **ret);

/* What a probe of loopN reads, and what the kernel says of it: found without reading a byte of its
 * contents. probe_loop_open() fills it in, in loopd; probe_loop_read() reads the contents, in a child of the
 * image reader (image-reader.h), which gets the fds and these values. */
typedef struct LoopProbeArea {
        unsigned loop_number;
        dev_t devnum;
        int disk_fd; /* /dev/loopN, read-only */
        uint64_t size; /* the device's, in bytes */
        uint32_t sector_size; /* its logical sector size */
        int image_fd; /* what the device reads, from image_offset on: read first; -EBADF for none */
        uint64_t image_offset;
        KernelPartition *parts; /* the kernel's partitions of loopN, by number */
        size_t n_parts;
} LoopProbeArea;

/* Opens /dev/loopN and asks the kernel its size, sector size and partitions (known, n_known: the list the
 * caller read a moment ago, copied; NULL: read). image_fd (may be -EBADF) is not taken: the caller vouches
 * that loopN is bound to it at image_offset (same disk sequence number), and keeps it open until
 * probe_loop_done(). -ENODEV when there is no such device, -ENXIO when it is not bound. */
int probe_loop_open(unsigned loop_number, int image_fd, uint64_t image_offset, const KernelPartition *known,
        size_t n_known, LoopProbeArea *ret);
/* Closes disk_fd (not image_fd) and frees the partitions. */
void probe_loop_done(LoopProbeArea *a);
/* Lists what loopN carries: number 0 if the whole device holds a filesystem (plain filesystem image, hybrid
 * ISO), then every kernel partition with its table entry's type and name and its filesystem. Read from the
 * image when there is one: the same bytes, from the file's page cache (through the device every block read
 * is a request to the loop worker); through the device when there is none or it cannot be read as it is (an
 * fd opened with O_DIRECT takes only aligned reads). A partition's filesystem is read where the partition
 * lies on the disk, never through a /dev/loopNpM node. disk_fd may be -EBADF when image_fd is not: the
 * image alone, as the device will read it (parts: as the kernel will have them). Through the device of a
 * disk with partitions, loopN's page cache is dropped first (probe_drop_cached()), which may wait on the
 * device: in loopd, only ever in a child of the image reader. */
int probe_loop_read(const LoopProbeArea *a, PartitionInfo **ret, size_t *ret_n);
/* Drops the clean pages of fd's page cache that nothing holds, when fd is a block device: what is read next
 * comes from the device, not from an earlier read. Each block device has a page cache of its own, a
 * partition's apart from its whole device's: a mkfs through /dev/loopNp1 bypasses what /dev/loopN's cache
 * holds of those sectors (from udevd's read, a file manager's, an earlier probe's), and loopd keeps loopN
 * open, so that cache lasts as long as the binding. A dirty page stays (it is newer than the device), but
 * POSIX_FADV_DONTNEED first starts writing back the dirty pages, which may wait on the device: call it
 * where the device is read, in a child, never in loopd's own process. */
void probe_drop_cached(int fd);

/* probe_loop_open() + probe_loop_read() in the calling process, of the device alone or of the image loopN
 * reads first: the tests' oracle for what a reader's child answers. loopd itself reads through
 * image_reader_probe_device(). */
int probe_loop_device(unsigned loop_number, PartitionInfo **ret, size_t *ret_n);
int probe_loop_device_image(
        unsigned loop_number, int image_fd, uint64_t image_offset, PartitionInfo **ret, size_t *ret_n);

/* Probes one block device node's filesystem (type, label, uuid). Missing values are "". */
int probe_filesystem(const char *node, char **ret_fstype, char **ret_label, char **ret_uuid);
/* The same, asking first only the prober of the type expected there (the last probe's answer): a couple of
 * reads instead of every prober's. What it answers is what is on the node now; when the expected filesystem
 * is not there (or expected is NULL or ""), every prober runs, as in probe_filesystem(). A second signature
 * beside the expected one is not looked for then. */
int probe_filesystem_expecting(
        const char *node, const char *expected, char **ret_fstype, char **ret_label, char **ret_uuid);
/* The same on fd, a block device opened for reading (probe_open_node()). */
int probe_filesystem_fd(int fd, const char *expected, char **ret_fstype, char **ret_label, char **ret_uuid);
/* Opens node for probing: -ENOTBLK unless it is a block device, -ESTALE unless it is devnum (0: any). */
int probe_open_node(const char *node, dev_t devnum);
