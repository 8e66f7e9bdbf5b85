/* image-reader.h: the process that forks, ahead of need, the child each caller's image is read in, and
 * each loop device's contents are probed in. Never logs.
 *
 * A caller's image is read in a child of its own with a deadline (worker.h says why). Forked from loopd,
 * that child costs loopd a copy of its page tables and then a copy-on-write fault for every page it writes;
 * on a 2-CPU VM that was a third of an Attach's time. So loopd forks one small process as it starts, before
 * it holds much memory: the reader. The reader keeps one child forked and waiting; the child that takes a
 * request tells the reader, which forks the next one while the first reads. A read costs loopd one
 * sendmsg().
 *
 * What a caller hands in is theirs to change at any moment, also between two reads of one probe: a GPT
 * header checked for a sane entry array and read again by libblkid can ask it for gigabytes. So the child
 * confines itself before it takes a request: an id that no user or file has (not root; the same for all of
 * them, so the filter keeps them from signalling each other), no capabilities, no_new_privs, /dev/null for
 * its standard streams, a seccomp filter (the sandboxes', which the reader loads on itself and each child
 * inherits, and: no signal, no flock, no loop ioctl, nothing opened for writing or made, changed or removed
 * by name), 256 MiB of private memory more than the reader had, no child. libblkid's parsers then read a
 * user's bytes in a process that has nothing to lose; so do libfdisk's when loopd changes a device's
 * partition table (image-reader-table.c).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "macro.h"
#include "partition-table.h"
#include "partition.h"
#include "probe.h"

typedef struct ImageReader ImageReader;

/* What a child answers last: image_probe()'s result and what it found (laid out as worker.c's children
 * answer, which worker.c checks). */
typedef struct ImageReaderAnswer {
        int32_t result;
        _Alignas(max_align_t) ImageProbe probe;
} ImageReaderAnswer;

/* How long loopd waits for a child's answer where there is no reader to say (loopd's --io-timeout). */
#define IMAGE_READER_TIMEOUT_USEC (UINT64_C(10) * 1000000)

/* Forks the reader; loopd waits up to timeout_usec for each answer of a probe or plan in one of its
 * children (image_reader_probe_loop(), image_reader_plan_partitions()). Call early, while loopd is small
 * (its memory is what the reader and each child copy), and before the signal mask changes. -EOPNOTSUPP
 * where pidfds cannot name the children (an old kernel, valgrind): without one a child stuck in a read
 * could not be killed, so such a loopd forks a worker for each read, as before (and a confined child for
 * each probe or plan). */
int image_reader_new(uint64_t timeout_usec, ImageReader **ret);
/* Closes loopd's end: the waiting child and the reader exit (so do both when loopd dies). Returns NULL. */
ImageReader *image_reader_free(ImageReader *reader);
DEFINE_TRIVIAL_CLEANUP_FUNC(ImageReader *, image_reader_free);

/* Hands image_fd to the next child, which runs image_probe(image_fd, offset, size) and answers on the
 * returned socket (*ret_fd, loopd's end, nonblocking): first a hello (image_reader_read_hello()), then an
 * ImageReaderAnswer, each a message of its own. The child closes its copy of image_fd before it answers;
 * with ahead, once it has also sent, unasked, what Attach asks next of a raw image's device (bound with
 * sector_size, 0: the one the probe found): its partition plan and its first probe, read from the image
 * while loopd binds the device (image_reader_plan_partitions(), image_reader_probe_loop(); park the child
 * with ahead). A reader found gone is forked again here, then at most once in 10 s; -EPIPE while it is gone
 * (loopd then forks a worker itself). */
int image_reader_submit(ImageReader *reader, int image_fd, uint64_t offset, uint64_t size,
        uint32_t sector_size, bool ahead, int *ret_fd);
/* probe_loop_read(area) in the next child, which gets area's fds: the list, checked against area (every
 * node, number, offset, size and devnum is area's own; only the strings, what the contents say, come from
 * the child). Without a reader (reader NULL, or gone), in a child forked for it and confined the same way:
 * never in loopd. Waits up to the reader's timeout, and kills the child past it (-ETIMEDOUT). -EIO when the
 * child died first; -EBADMSG when it answered what area does not allow; else the child's error. The list
 * the child parked under area->image_fd's file sent ahead is taken instead when it is for this device (its
 * start in the file, size, sector size and partitions); one for another is dropped with its child. */
int image_reader_probe_loop(
        ImageReader *reader, const LoopProbeArea *area, PartitionInfo **ret, size_t *ret_n);
/* What is on loopN now: probe_loop_open() here (no byte of its contents read), image_reader_probe_loop()
 * in a child. Through image_fd at image_offset first when it is not -EBADF (the caller vouches it is what
 * loopN reads; its session, if any, ends). known, n_known: the kernel's partitions as the caller read them
 * a moment ago (NULL: read). */
int image_reader_probe_device(ImageReader *reader, unsigned number, int image_fd, uint64_t image_offset,
        const KernelPartition *known, size_t n_known, PartitionInfo **ret, size_t *ret_n);
/* partition_plan(devfd, sector_size, size) in a child, as image_reader_probe_loop() probes: the partitions
 * BLKPG should add, each checked here against the device (a number from 1 to 256 given once, start and
 * length multiples of sector_size, within size): -EBADMSG for a plan that is not. image_fd (-EBADF: none):
 * the image devfd reads from image_offset on, whose session the plan goes on; the plan its child sent ahead
 * for that device (read from there, of sector_size and size bytes), if it did, without a question. */
int image_reader_plan_partitions(ImageReader *reader, int devfd, uint32_t sector_size, uint64_t size,
        int image_fd, uint64_t image_offset, PartitionSpec **ret, size_t *ret_n);
/* probe_filesystem_fd(fd, expected) in a child, as image_reader_probe_loop() probes: fd is a block device
 * the caller opened (probe_open_node()). Missing values are "". */
int image_reader_probe_filesystem(ImageReader *reader, int fd, const char *expected, char **ret_fstype,
        char **ret_label, char **ret_uuid);
/* Changes of a bound device's partition table (partition-table.h), each in a child as
 * image_reader_probe_loop() probes: libfdisk reads the table the caller wrote (and, for a new table,
 * libblkid every signature on the device) where that reading can hurt no one. fd is the device, opened for
 * writing; the child writes through it and can write nothing else. The answer is checked as a probe's is:
 * the new partition lies on the device, the reason is printable. Errors are partition-table.h's, and those
 * of image_reader_probe_loop(); a reason (*ret_why, may be NULL) as partition_table_add() gives it. */
int image_reader_table_create(ImageReader *reader, int fd, uint32_t sector_size, const char *label);
int image_reader_table_add(ImageReader *reader, int fd, uint32_t sector_size, const PartitionRequest *req,
        TablePartition *ret, char **ret_why);
/* partition_table_delete(), or with check_only partition_table_delete_check(). */
int image_reader_table_delete(
        ImageReader *reader, int fd, uint32_t sector_size, unsigned number, bool check_only);

/* Sessions. A child of the reader that read a caller's image (image_reader_submit(); the worker that asked
 * parks it here) stays, confined as it is, for what loopd asks next about the same image: the partition
 * table of the device bound to it, then that device's first probe, which ends the session. One child an
 * Attach, as when it only read the image: a fork costs a millisecond of CPU on a 2-CPU VM. Asked ahead, it
 * does not wait for those questions: it reads the image for both answers while loopd binds the device, and
 * the answers are taken for the device when it is the one they were read for (its start in the file, size,
 * sector size and partitions); two round trips, and the reads of a new device whose cache is cold (each a
 * request to the loop worker), less on an Attach. A parked child is found by its image's inode, killed once
 * its session ends or the reader's timeout passes, and at most 8 wait at once (the oldest goes first). */

/* Parks the child behind fd (loopd's end of its socket, after its first answer was read) and pidfd, both
 * taken, under image_fd's file; ahead: it was asked ahead (image_reader_submit()), reading the image from
 * offset on. Without a reader, or when anything is missing, the child is killed. */
void image_reader_park(ImageReader *reader, int fd, int pidfd, int image_fd, bool ahead, uint64_t offset);

/* Ends the session parked under image_fd's file, if any (the call that read it is over: a failed Attach
 * leaves no child, and no copy of the caller's fd, behind), and those whose time is up. */
void image_reader_end_session(ImageReader *reader, int image_fd);

/* Confines the calling process, a child forked of loopd that holds only the fds it reads and answers on,
 * as the reader's children are before they read a caller's bytes (uid and gid 0x7a720000 when root, no
 * capabilities, no_new_privs, the seccomp filter, bounded memory, no file writes, no children). */
int image_reader_confine(void);
/* Reads the hello from the socket image_reader_submit() returned: the child's pidfd (to kill it at the
 * deadline). -EAGAIN when it has not come yet; -EIO when the child died first. */
int image_reader_read_hello(int fd, int *ret_pidfd);
