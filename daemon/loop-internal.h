/* loop-internal.h: what the loop device modules (loop*.c) share: waits, opening a device, its diskseq, its
 * info from sysfs and its partitions. Not for other modules: they use loop.h. Never logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

/* ---- loop-util.c ---- */

void loop_sleep_usec(uint64_t usec);
/* Sleeps *step_usec, then doubles it up to 10 ms: short waits (a prober letting go, the kernel finishing an
 * unbind) end within a fraction of a millisecond, long ones do not spin. Start *step_usec at 0. */
void loop_backoff_sleep(uint64_t *step_usec);
uint64_t loop_now_usec(void); /* CLOCK_MONOTONIC */
uint64_t loop_random_u64(void);

/* Opens /dev/loopN with flags (plus O_CLOEXEC, O_NONBLOCK, O_NOCTTY); -errno. */
int loop_open_node(unsigned number, int flags);
/* Opens a loop device for our ioctls. Read-only is enough with CAP_SYS_ADMIN (LOOP_CLR_FD, BLKPG,
 * LOOP_SET_STATUS64), works for read-only devices too, and closing it does not make udevd's inotify watch
 * synthesize a "change" event as closing a writable fd would. */
int loop_open_any(unsigned number);
/* loop_open_any() of loopN if it is still the incarnation with expected_diskseq (0: any): -ENODEV when there
 * is no such device, -ESTALE when the number was bound again since. */
int loop_open_checked(unsigned number, uint64_t expected_diskseq);
/* The device's diskseq (BLKGETDISKSEQ, else sysfs); 0 if the kernel has none. */
uint64_t loop_device_diskseq(int devfd, unsigned number);
/* The attribute dir/attr of dirfd that is a loop device's backing_file, strdup()ed into *ret: "" when the
 * kernel cannot say the path (longer than its page: a file moved into a deep enough directory after it was
 * bound), rather than an error that would hide the device, or every device of a listing. sysfs_read()'s
 * errors otherwise. */
int loop_read_backing_file(int dirfd, const char *dir, const char *attr, char **ret);

/* ---- loop-attach.c ---- */

/* loopN was unbound by loopd a moment ago: the next loop_attach() tries it first. */
void loop_note_free(unsigned number);

/* ---- loop-partitions.c ---- */

/* Makes the partitions of the table on devfd (loopN, bound) exist as /dev/loopNpM: the kernel's own scan
 * when it created any, otherwise the table read with libblkid in a child of reader (image-reader.h) and
 * added with BLKPG (image_fd, -EBADF for none: what devfd reads from image_offset on, for the reader's
 * session). Returns how many. */
int loop_sync_partitions(
        int devfd, unsigned number, ImageReader *reader, int image_fd, uint64_t image_offset);
/* Removes /dev/loopNpM nodes that no longer name a live partition of loopN, reading all of /dev. */
void loop_remove_stale_partition_nodes(unsigned number);
/* The same for the names that can have had a node since loopd's first full look at loopN (see
 * partition_nodes_highest(), brought up to date with partition_nodes_catch_up() first), without reading
 * /dev: thousands of entries with a thousand devices bound. Not a node someone made for a partition that
 * never existed, unless the names made in /dev are followed: Detach's look removes that. */
void loop_remove_known_stale_partition_nodes(unsigned number);
/* Detach's look: every stale node of loopN. Only the names partition_nodes_highest() knows when the names
 * made in /dev are followed (partition_nodes_catch_up()), all of /dev otherwise. */
void loop_remove_every_stale_partition_node(unsigned number);
