/* loop.c: unbinding loop devices (partitions first, then LOOP_CLR_FD), their locks and autoclear flag. The
 * rest of loop.h: loop-attach.c (binding), loop-info.c (what is bound), loop-partitions.c (their
 * partitions). */
#include <errno.h>
#include <fcntl.h>
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

/* ---- what only the backing file's filesystem can say, asked in a child ----
 *
 * LOOP_GET_STATUS64 asks the backing file's filesystem for the file's attributes, and LOOP_SET_STATUS64
 * waits for the device's I/O in flight, which that filesystem serves: a FUSE server that never answers holds
 * the caller in the kernel for good. So both run in a child of loopd's runner (runner_call()) that is waited
 * for until a deadline, and left behind past it (it ends when the server does). The request is bytes: the
 * device and what to ask. */

typedef struct StatusRequest {
        unsigned number;
        uint64_t diskseq;
        bool set_autoclear; /* else: compare the backing file with (dev, inode) */
        bool autoclear;
        uint64_t dev;
        uint64_t inode;
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
        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                return negative_errno();
        if (!q.set_autoclear)
                return li.lo_device == q.dev && li.lo_inode == q.inode ? 0 : -ESRCH;
        if (!!(li.lo_flags & LO_FLAGS_AUTOCLEAR) == q.autoclear)
                return 0;
        /* LOOP_SET_STATUS64 changes only the settable flags (autoclear, partscan) and keeps the rest as
         * read. */
        if (q.autoclear)
                li.lo_flags |= LO_FLAGS_AUTOCLEAR;
        else
                li.lo_flags &= ~LO_FLAGS_AUTOCLEAR;
        return ioctl(devfd, LOOP_SET_STATUS64, &li) < 0 ? negative_errno() : 0;
}

/* Nothing to take back: a flag set late is what was asked, and a comparison changes nothing. */
static void status_undo(const void *request, size_t size, const int *fds, size_t n_fds)
{
        (void)request;
        (void)size;
        (void)fds;
        (void)n_fds;
}

const RunnerOps loop_status_runner_ops = { .op = status_op, .undo = status_undo };

static int status_run(const StatusRequest *q, uint64_t timeout_usec)
{
        return runner_call(&loop_status_runner_ops, q, sizeof(*q), NULL, 0,
                now_ms() + (int64_t)(timeout_usec / 1000), NULL);
}

int loop_set_autoclear(unsigned number, uint64_t expected_diskseq, bool autoclear, uint64_t timeout_usec)
{
        _cleanup_close_ int sysfd = -EBADF;
        bool current;

        /* Already so (sysfs, no child): nothing to do. */
        sysfd = sysfs_open_loop(number, 0);
        if (sysfd >= 0 && sysfs_read_bool(sysfd, "loop", "autoclear", &current) >= 0 &&
                current == autoclear && loop_is_bound(number, expected_diskseq))
                return 0;
        return status_run(&(StatusRequest){ .number = number,
                                  .diskseq = expected_diskseq,
                                  .set_autoclear = true,
                                  .autoclear = autoclear },
                timeout_usec);
}

int loop_backing_is(
        unsigned number, uint64_t expected_diskseq, dev_t dev, uint64_t inode, uint64_t timeout_usec)
{
        int r;

        r = status_run(
                &(StatusRequest){
                        .number = number, .diskseq = expected_diskseq, .dev = dev, .inode = inode },
                timeout_usec);
        if (r == -ESRCH)
                return 0;
        return r < 0 ? r : 1;
}
