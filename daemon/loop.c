/* loop.c: unbinding loop devices (partitions first, then LOOP_CLR_FD), their locks, and what only the
 * backing file's filesystem can say or waits for it (the backing inode, the autoclear flag), asked in a
 * child. The rest of loop.h: loop-attach.c (binding), loop-info.c (what is bound), loop-partitions.c (their
 * partitions). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <stdbool.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "loop-internal.h"
#include "macro.h"
#include "partition.h"
#include "process-util.h"
#include "runner.h"
#include "sysfs.h"

/* How long loop_detach() waits for transient exclusive claims and for the lock of a device that udevd
 * (LOCK_SH) is probing, together; then, separately, for a transient opener (blkid, a lister) to let go
 * after LOOP_CLR_FD. */
#define DETACH_LOCK_WAIT_USEC (2 * 1000 * 1000)
#define DETACH_RELEASE_WAIT_USEC (2 * 1000 * 1000)

/* I/O of loopN now: requests in flight, and requests completed so far (reads and writes: fields 1 and 5 of
 * its stat). */
static int io_counts(int sysfd, unsigned *ret_in_flight, uint64_t *ret_completed)
{
        char buf[256];
        unsigned reads, writes;
        uint64_t done_reads, done_writes;
        int r;

        r = sysfs_read(sysfd, NULL, "inflight", buf, sizeof(buf));
        if (r < 0)
                return r;
        if (sscanf(buf, "%u %u", &reads, &writes) != 2)
                return -EINVAL;
        r = sysfs_read(sysfd, NULL, "stat", buf, sizeof(buf));
        if (r < 0)
                return r;
        if (sscanf(buf, "%" SCNu64 " %*u %*u %*u %" SCNu64, &done_reads, &done_writes) != 2)
                return -EINVAL;
        *ret_in_flight = reads + writes;
        *ret_completed = done_reads + done_writes;
        return 0;
}

int loop_wait_io_done(unsigned number, uint64_t stall_usec)
{
        _cleanup_close_ int sysfd = sysfs_open_loop(number, 0);
        uint64_t now = loop_now_usec(), moved_at = now, end = now + 4 * stall_usec, completed, step = 0;
        unsigned in_flight;
        int r;

        if (sysfd < 0)
                return sysfd == -ENOENT || sysfd == -ENODEV ? -ENXIO : sysfd;
        for (r = io_counts(sysfd, &in_flight, &completed); r >= 0 && in_flight > 0;) {
                uint64_t c;

                /* Nothing completed for a while: what is in flight waits for an image that does not answer.
                 * Slow but alive (a network filesystem): the caller goes on as before, past a bound. */
                if (now >= moved_at + stall_usec)
                        return -EINPROGRESS;
                if (now >= end)
                        return 0;
                loop_backoff_sleep(&step);
                r = io_counts(sysfd, &in_flight, &c);
                if (r < 0)
                        break;
                now = loop_now_usec();
                if (c != completed)
                        moved_at = now;
                completed = c;
        }
        return r == -ENOENT || r == -ENODEV ? -ENXIO : MIN(r, 0);
}

int loop_detach(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -1;
        uint64_t diskseq, deadline, step = 0;
        int r;

        devfd = loop_open_any(number);
        if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                return -ENODEV;
        if (devfd < 0)
                return devfd;

        diskseq = loop_device_diskseq(devfd, number);
        if (expected_diskseq != 0 && diskseq != expected_diskseq)
                return -ESTALE;

        /* A mount of the device or of one of its partitions holds the whole disk exclusively: then say so
         * and touch nothing (LOOP_CLR_FD would only turn on autoclear, and partitions would get
         * half-deleted). Others claim it only for a moment (udevd's BLKRRPART, mkfs): retry, bounded. */
        safe_close(devfd);
        deadline = loop_now_usec() + DETACH_LOCK_WAIT_USEC;
        for (;;) {
                devfd = loop_open_node(number, O_RDONLY | O_EXCL);
                if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                        return -ENODEV;
                if (devfd != -EBUSY)
                        break;
                if (loop_now_usec() >= deadline)
                        return -EBUSY;
                loop_backoff_sleep(&step);
        }
        if (devfd < 0)
                return devfd;

        /* udevd holds LOCK_SH while it probes the device; wait for it, bounded (same deadline), so that its
         * open does not turn our LOOP_CLR_FD into a mere autoclear. */
        while (flock(devfd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return negative_errno();
                if (loop_now_usec() >= deadline)
                        return -EBUSY;
                loop_backoff_sleep(&step);
        }

        /* Recheck under the lock: the number may have been recycled while we waited, or unbound. Not with
         * LOOP_GET_STATUS64: it asks the backing file's filesystem for its attributes, and a FUSE server
         * picks the errno (ENXIO too), or never answers; sysfs is the kernel's own word. */
        if (expected_diskseq != 0 && loop_device_diskseq(devfd, number) != expected_diskseq)
                return -ESTALE;
        if (!loop_is_bound(number, 0))
                return -ENXIO;

        /* A partition that someone merely has open for a moment (udevd's or another watcher's probe) cannot
         * be deleted until they close it: retry, bounded by the same deadline. Mounts were ruled out above
         * (the O_EXCL open), so what is still busy then is held open for longer: the device stays bound. */
        step = 0;
        while ((r = partition_remove_all(devfd, number)) == -EBUSY && loop_now_usec() < deadline)
                loop_backoff_sleep(&step);
        if (r < 0 && r != -ENODEV)
                return r;

        if (ioctl(devfd, LOOP_CLR_FD) < 0) {
                r = negative_errno();
                if (r != -ENXIO)
                        return r;
        }
        /* The kernel unbinds on the last close; with others holding the device LOOP_CLR_FD only set
         * autoclear, and it goes away when they close it. */
        devfd = safe_close(devfd);

        /* The unbind itself can finish a moment after our close returned: poll from 100 µs on, not in 5 ms
         * steps (a fixed 5 ms sleep was most of a Detach's time). */
        deadline = loop_now_usec() + DETACH_RELEASE_WAIT_USEC;
        step = 0;
        while (loop_is_bound(number, diskseq)) {
                if (loop_now_usec() >= deadline)
                        return -EBUSY;
                loop_backoff_sleep(&step);
        }

        loop_remove_every_stale_partition_node(number);
        loop_note_free(number);
        return 0;
}

int loop_lock(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;

        devfd = loop_open_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        if (flock(devfd, LOCK_SH | LOCK_NB) < 0)
                return negative_errno();
        return TAKE_FD(devfd);
}

/* ---- what only the backing file's filesystem can say, and what waits for it: in a child ----
 *
 * LOOP_GET_STATUS64 asks the backing file's filesystem for the file's attributes, and LOOP_SET_STATUS64
 * waits for the device's I/O in flight, which that filesystem serves: a FUSE server that never answers holds
 * the caller in the kernel for good. So both run in a child of loopd's runner (runner_call()) that is waited
 * for until a deadline, and left behind past it (it ends when the server does). The request is bytes: the
 * device and what to do. */

typedef enum StatusKind {
        STATUS_COMPARE_BACKING = 1, /* is the backing file (dev, inode)? */
        STATUS_SET, /* LOOP_SET_STATUS64 of info */
} StatusKind;

typedef struct StatusRequest {
        uint32_t kind;
        uint32_t number;
        uint64_t diskseq;
        uint64_t dev;
        uint64_t inode;
        struct loop_info64 info;
} StatusRequest;

/* In the child: 0, -ESRCH when the device's backing file is not (dev, inode), or -errno. */
static int status_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        _cleanup_close_ int devfd = -EBADF;
        struct loop_info64 li = {};
        StatusRequest q;

        (void)fds;
        if (size != sizeof(q) || n_fds > 0)
                return -EINVAL;
        memcpy(&q, request, sizeof(q));
        devfd = loop_open_checked(q.number, q.diskseq);
        if (devfd < 0)
                return devfd;
        if (q.kind == STATUS_SET) {
                /* No name to give (the kernel could not say the path in sysfs): the device keeps its own. */
                if (q.info.lo_file_name[0] == '\0') {
                        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                                return negative_errno();
                        memcpy(q.info.lo_file_name, li.lo_file_name, sizeof(q.info.lo_file_name));
                }
                return ioctl(devfd, LOOP_SET_STATUS64, &q.info) < 0 ? negative_errno() : 0;
        }
        if (q.kind != STATUS_COMPARE_BACKING)
                return -EINVAL;
        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                return negative_errno();
        return li.lo_device == q.dev && li.lo_inode == q.inode ? 0 : -ESRCH;
}

/* No undo: a flag set late is what was asked, and a comparison changes nothing. */
const RunnerOps loop_status_runner_ops = { .op = status_op };

static int status_run(const StatusRequest *q, uint64_t timeout_usec)
{
        return runner_call(&loop_status_runner_ops, q, sizeof(*q), NULL, 0,
                now_ms() + (int64_t)(timeout_usec / 1000), NULL);
}

int loop_set_autoclear(unsigned number, uint64_t expected_diskseq, bool autoclear, uint64_t timeout_usec)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        StatusRequest q;
        int r;

        /* What LOOP_SET_STATUS64 sets again comes from sysfs, not from LOOP_GET_STATUS64 (which asks the
         * backing file's filesystem): offset and size limit as they are, the settable flags (autoclear,
         * partscan) as asked, and the name that the kernel keeps for LOOP_GET_STATUS64's callers. */
        r = loop_get_info(number, &info);
        if (r < 0)
                return r;
        if (expected_diskseq != 0 && info->diskseq != expected_diskseq)
                return -ESTALE;
        if (info->autoclear == autoclear)
                return 0;
        memset(&q, 0, sizeof(q)); /* padding too: the request goes out as bytes */
        q.kind = STATUS_SET;
        q.number = number;
        q.diskseq = info->diskseq;
        q.info.lo_offset = info->offset;
        q.info.lo_sizelimit = info->size_limit;
        q.info.lo_flags = (autoclear ? LO_FLAGS_AUTOCLEAR : 0) | (info->partscan ? LO_FLAGS_PARTSCAN : 0);
        strncpy((char *)q.info.lo_file_name, info->backing_file, sizeof(q.info.lo_file_name) - 1);
        return status_run(&q, timeout_usec);
}

int loop_backing_is(
        unsigned number, uint64_t expected_diskseq, dev_t dev, uint64_t inode, uint64_t timeout_usec)
{
        StatusRequest q;
        int r;

        memset(&q, 0, sizeof(q));
        q.kind = STATUS_COMPARE_BACKING;
        q.number = number;
        q.diskseq = expected_diskseq;
        q.dev = dev;
        q.inode = inode;
        r = status_run(&q, timeout_usec);
        if (r == -ESRCH)
                return 0;
        return r < 0 ? r : 1;
}
