/* loop.h: kernel loop devices: allocate and configure, inspect through sysfs, detach. Never logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop-name.h" /* loop_parse_name(), loop_parse_node(), loop_node_format() */
#include "macro.h"
#include "runner.h"

typedef struct ImageReader ImageReader;

#define LOOP_CONFIGURE_TIMEOUT_USEC (UINT64_C(10) * 1000000)

typedef struct LoopConfig {
        uint64_t offset; /* bytes into the backing file */
        uint64_t size_limit; /* bytes, 0 = to the end of the file */
        uint32_t sector_size; /* 512, 1024, 2048 or 4096; already resolved (never 0 here) */
        bool read_only;
        bool partition_scan;
        bool direct_io;
        /* Called with each number right before it is bound (claimed: true), and again (claimed: false) when
         * that number could not be bound after all or was unbound again; NULL for none. For whatever must
         * exist before the device's first uevent (loopd's mark for its udev rule). Its failure on claimed is
         * the attach's. */
        int (*on_number)(unsigned number, bool claimed, void *userdata);
        void *userdata;
        /* Where the partition table is read (image_reader_plan_partitions()): never in loopd. NULL: in a
         * child forked for it. */
        ImageReader *reader;
        /* How long LOOP_CONFIGURE, which asks the backing file's filesystem, may take in its child before
         * loop_attach() fails with -ETIMEDOUT (the child then unbinds what it binds after all); 0:
         * LOOP_CONFIGURE_TIMEOUT_USEC. */
        uint64_t timeout_usec;
        /* No autoclear here: the kernel clears an autoclear device on its last close, and right after
         * loop_attach() closes its own fd nobody else holds the device, so it would vanish at once. Set it
         * with loop_set_autoclear() once something holds the device (a mount), or detach on unmount. */
} LoopConfig;

/* What the kernel says about one bound loop device. */
typedef struct LoopInfo {
        unsigned number; /* N of /dev/loopN */
        dev_t devnum;
        uint64_t diskseq; /* 0 if the kernel has none */
        char *backing_file; /* as sysfs reports it (may end in " (deleted)"); never NULL */
        uint64_t offset;
        uint64_t size_limit;
        uint64_t size; /* of the device, bytes */
        uint32_t sector_size;
        bool read_only;
        bool autoclear;
        bool partscan;
        bool direct_io;
        /* The kernel's uevent sequence number read before the rest (0: not read): every uevent up to it is
         * reflected here. */
        uint64_t uevent_seqnum;
} LoopInfo;

LoopInfo *loop_info_free(LoopInfo *info);
DEFINE_TRIVIAL_CLEANUP_FUNC(LoopInfo *, loop_info_free);
void loop_info_array_free(LoopInfo **infos, size_t n);
int loop_info_dup(const LoopInfo *info, LoopInfo **ret);
/* /sys/kernel/uevent_seqnum: the number of the last uevent the kernel sent; 0 if it cannot be read. */
uint64_t loop_uevent_seqnum(void);
/* The loop driver's part_shift: loopN's minor is N << part_shift, part_shift = fls(max_part) (0 when its
 * max_part parameter is 0, the default; the driver exports max_part rounded up to 2^part_shift - 1);
 * -errno when /sys/module/loop/parameters/max_part cannot be read (no loop driver loaded yet), -ERANGE for
 * a value no minor could hold. */
int loop_part_shift(void);
int loop_part_shift_of(uint64_t max_part);

/* Binds backing_fd to a free loop device with LOOP_CONFIGURE (offset, size limit, flags and block size in
 * one call), retrying with a bounded, jittered backoff when another process binds the number first. The
 * device is the one LOOP_CTL_GET_FREE names, or, from number 64 on, the one loop_detach() unbound last when
 * it is still free.
 * Before binding, deletes partitions a free device still carries from an earlier user. Afterwards it
 * verifies what the kernel applied (sector size, size, read-only) and, with partition_scan, makes
 * sure the partitions exist as /dev/loopNpM: the kernel's own scan when it created any, otherwise the
 * table read with libblkid and added with BLKPG. On any failure after binding it detaches again, so
 * nothing is left bound.
 * /dev/loop-control is locked (flock) for the whole allocation, as systemd's loop-util does. The device
 * itself stays under a shared flock from before binding on: with ret_lock_fd the caller gets that fd and
 * keeps the lock for as long as it uses the device (udevd then never re-reads its partition table, which on
 * a kernel without partition parsers would drop the BLKPG partitions); it must close it before
 * loop_detach(), and as an open fd of the device it keeps an autoclear device bound until it is closed.
 * NULL: let go at once. Returns 0 and the bound device's info, or: -ENOSPC   the kernel could give no free
 * loop device (or every retry was taken by others), -EINVAL   the kernel refused the configuration (e.g.
 * unaligned offset for the sector size), -EROFS    read-write was asked but the kernel made the device
 * read-only, other -errno from the kernel. */
int loop_attach(int backing_fd, const LoopConfig *config, LoopInfo **ret, int *ret_lock_fd);
/* The size the kernel gives a device bound to a file of file_size bytes at offset with size_limit (0: none):
 * what is left of the file, at most size_limit, in whole 512-byte sectors. */
uint64_t loop_size_for(uint64_t file_size, uint64_t offset, uint64_t size_limit);

/* Opens loopN and takes the shared lock loop_attach() hands out (for a device loopd set up before it
 * restarted): the fd, -ESTALE if loopN no longer has expected_diskseq, -EWOULDBLOCK if someone holds it
 * exclusively, -ENODEV if there is no such device. */
int loop_lock(unsigned number, uint64_t expected_diskseq);

/* Reads a bound device's info, from sysfs alone (see loop_backing_is() for what only the backing file's
 * filesystem can say). -ENXIO if loopN exists but is not bound, -ENODEV if there is no such device. */
int loop_get_info(unsigned number, LoopInfo **ret);

/* The kernel's name for the file behind fd, what sysfs reports as the backing file of a device bound to it
 * (readlink of /proc/self/fd/N: never a walk of the path again). -ENAMETOOLONG, or -errno of readlink. */
int loop_backing_name(int fd, char **ret);

/* Is loopN bound (and, with diskseq non-zero, still that binding)? From sysfs: never the device's ioctls,
 * which a FUSE server may answer with any errno, or never. */
bool loop_is_bound(unsigned number, uint64_t diskseq);
/* Whether loopN, bound as diskseq (0: any binding, on a kernel without diskseqs), has the autoclear flag: 1,
 * else 0 (also when it is unbound or bound otherwise), or -errno. Two sysfs reads at most, the flag first:
 * the diskseq read after it is still diskseq only if the flag was that binding's (a number is only ever
 * bound again later). */
int loop_autoclear_of(unsigned number, uint64_t diskseq);
/* Only what ListDevices reports, from sysfs alone (see loop_list_brief()): it never opens the device. */
int loop_get_info_brief(unsigned number, LoopInfo **ret);
/* Only which device loopN is (number, devnum, diskseq, backing file; the rest 0), as loop_get_info() reads
 * it: 4 attributes instead of 13, for Detach and the polkit check of a call on a device. */
int loop_get_identity(unsigned number, LoopInfo **ret);

/* Every bound loop device, sorted by number. Sysfs only (cheap, and it never opens a device, which would
 * turn someone else's concurrent LOOP_CLR_FD into a mere autoclear). */
int loop_list(LoopInfo ***ret, size_t *ret_n);
/* The same with only what ListDevices reports: devnum, size, partscan and direct_io stay 0 as well. */
int loop_list_brief(LoopInfo ***ret, size_t *ret_n);

/* Deletes the device's partitions (BLKPG), then LOOP_CLR_FD, then removes dead /dev/loopNpM nodes. If
 * expected_diskseq is non-zero and the device now has another diskseq (the number was recycled), returns
 * -ESTALE and touches nothing. -EBUSY when the device or a partition is still in use: if any of them is
 * held exclusively (mounted), nothing is touched; a partition merely held open stays while the others are
 * deleted, and the device stays bound. When the whole device is held open elsewhere (not mounted), the
 * kernel turns LOOP_CLR_FD into "autoclear": the device then goes away by itself when the last holder closes
 * it; loop_detach() waits up to 2 s for that (transient openers such as blkid or udevd) and returns -EBUSY
 * if it is still bound then. Waits up to 2 s for udevd's lock, too. -ENXIO if not bound, -ENODEV if there is
 * no such device. A number it unbound is loop_attach()'s first choice next (see there). */
int loop_detach(unsigned number, uint64_t expected_diskseq);
/* Waits until no read or write of loopN is in flight (/sys/block/loopN/inflight, which needs the queue's
 * iostats, on by default): 0 then. -EINPROGRESS when I/O stays in flight and none completes for stall_usec:
 * it waits for an image that does not answer (a probe that timed out, a FUSE image that stopped), and the
 * device's last close would wait for it in the kernel, uninterruptibly, so the caller must not make that
 * close. 0 as well past 4 × stall_usec of I/O that keeps completing (slow, not hung). -ENXIO when there is
 * no such device. Dirty pages not yet written are not seen here (the last close writes them back too). */
int loop_wait_io_done(unsigned number, uint64_t stall_usec);
/* Does anyone hold loopN or a partition of it exclusively (a kernel filesystem's mount does, and so do
 * transient claimers such as mkfs or udevd's re-read)? True also when that cannot be told (an open failed).
 * FUSE mounts claim nothing: they are not seen here. */
bool loop_is_claimed(unsigned number);

/* Sets or clears the kernel's autoclear flag of a bound device (LOOP_SET_STATUS64). With autoclear set the
 * kernel unbinds the device on its last close: if nothing holds it (nothing mounted), that is immediately.
 * The ioctls run in a child waited for up to timeout_usec (they wait for the backing file's filesystem):
 * -ETIMEDOUT past it, and the child still sets the flag when the kernel lets it. -ESTALE if
 * expected_diskseq is non-zero and does not match. */
int loop_set_autoclear(unsigned number, uint64_t expected_diskseq, bool autoclear, uint64_t timeout_usec);

/* Is loopN (expected_diskseq, 0: any) bound to the file with device dev and inode number inode? Only the
 * backing file's filesystem knows (LOOP_GET_STATUS64 asks it for the file's attributes, sysfs has only the
 * name), and a FUSE server may never answer: asked in a child waited for up to timeout_usec. 1 yes, 0 no,
 * -ETIMEDOUT, -ESTALE if loopN is another binding by now, -errno. */
int loop_backing_is(
        unsigned number, uint64_t expected_diskseq, dev_t dev, uint64_t inode, uint64_t timeout_usec);

/* The ops loop_attach(), loop_backing_is() and loop_set_autoclear() run in a child of loopd's runner, for
 * its table (runner_start()). */
extern const RunnerOps loop_configure_runner_ops;
extern const RunnerOps loop_status_runner_ops;

/* Adds the partitions of loopN's table again, as loop_attach() did, after someone's BLKRRPART dropped them
 * (a kernel without partition parsers keeps none). -ESTALE if loopN no longer has expected_diskseq. Returns
 * how many partitions exist. */
int loop_restore_partitions(unsigned number, uint64_t expected_diskseq, ImageReader *reader);

/* Opens loopN read-write, to write its partition table, if it is still the incarnation with expected_diskseq
 * (0: any): -ESTALE when the number was bound again since, -ENODEV when there is no such device, -EROFS for
 * a read-only device. Closing it after a write makes a running udevd synthesize a "change" event. */
int loop_open_writable(unsigned number, uint64_t expected_diskseq);

/* After loopN's partition table changed: makes the kernel's partitions match the table (read with
 * libblkid, in a child of reader as loop_attach() reads it) with BLKPG, deleting those the table no longer
 * has (or has with another start or size) and adding the new ones, then their /dev/loopNpM nodes, and
 * removes dead nodes. Partitions that did not change are not touched, so a mounted one stays mounted; no
 * BLKRRPART, which the kernel refuses while anything of the disk is open and which drops BLKPG partitions on
 * a kernel without partition parsers: this works with and without them. -EBUSY when a partition to delete is
 * in use (the others are updated anyway), -ESTALE if loopN no longer has expected_diskseq. Returns how many
 * partitions exist. */
int loop_update_partitions(unsigned number, uint64_t expected_diskseq, ImageReader *reader);
