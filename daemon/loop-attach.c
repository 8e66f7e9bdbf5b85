/* loop-attach.c: binding an image to a free loop device with LOOP_CONFIGURE, under systemd's locks, and
 * checking what the kernel made of it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fd-util.h"
#include "loop-internal.h"
#include "macro.h"
#include "partition.h"
#include "process-util.h"
#include "runner.h"
#include "sysfs.h"

/* How often loop_attach() asks for another free device when others keep taking the one it got. */
#define ATTACH_ATTEMPTS 64
/* How long loop_attach() waits for /dev/loop-control's lock. */
#define CONTROL_LOCK_WAIT_USEC (1000 * 1000)

/* Opens the device behind devfd read-write through a private device node that is unlinked at once.
 *
 * Why not /dev/loopN: udevd watches that node with inotify, and when a writable fd of a whole disk is closed
 * it re-reads the partition table (BLKRRPART) unless the disk is locked at that moment. A kernel without
 * partition parsers then drops every partition we added with BLKPG, some time after we returned. A private
 * node of the same device has its own inode, which nobody watches. Falls back to /dev/loopN where device
 * nodes cannot be made. */
static int open_loop_private_rw(int devfd, unsigned number)
{
        _cleanup_close_ int dirfd = -1;
        struct stat st, st2;
        char name[64];
        int fd;

        if (fstat(devfd, &st) < 0)
                return negative_errno();
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;

        dirfd = open("/dev", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return negative_errno();

        for (unsigned attempt = 0; attempt < 8; attempt++) {
                snprintf(name, sizeof(name), ".loopd-%u-%u-%016" PRIx64, major(st.st_rdev),
                        minor(st.st_rdev), loop_random_u64());
                if (mknodat(dirfd, name, S_IFBLK | 0600, st.st_rdev) < 0) {
                        if (errno == EEXIST)
                                continue;
                        break; /* no mknod here (EPERM, EROFS, ...): use the public node */
                }
                fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
                if (fd < 0)
                        fd = negative_errno();
                (void)unlinkat(dirfd, name, 0);
                if (fd < 0)
                        return fd;
                if (fstat(fd, &st2) < 0 || !S_ISBLK(st2.st_mode) || st2.st_rdev != st.st_rdev) {
                        safe_close(fd);
                        return -EIO;
                }
                return fd;
        }

        fd = loop_open_node(number, O_RDWR);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st2) < 0 || st2.st_rdev != st.st_rdev) {
                safe_close(fd);
                return -EIO;
        }
        return fd;
}

static int verify_device(int devfd, const LoopConfig *config, uint64_t expected_size, uint64_t *ret_size)
{
        uint64_t size;
        int ss, ro;

        if (ioctl(devfd, BLKSSZGET, &ss) < 0)
                return negative_errno();
        if ((uint32_t)ss != config->sector_size)
                return -EINVAL;
        if (ioctl(devfd, BLKROGET, &ro) < 0)
                return negative_errno();
        if (!config->read_only && ro)
                return -EROFS;
        if (config->read_only && !ro)
                return -EIO;
        if (ioctl(devfd, BLKGETSIZE64, &size) < 0)
                return negative_errno();
        if (expected_size != UINT64_MAX && size != expected_size)
                return -EIO;
        *ret_size = size;
        return 0;
}

/* What the kernel will make of the backing file (loop_size_for()). UINT64_MAX when we cannot know (a block
 * device whose size we could not read). */
static uint64_t expected_device_size(int backing_fd, const LoopConfig *config)
{
        struct stat st;
        uint64_t total;

        if (fd_stat_cached(backing_fd, &st) < 0)
                return UINT64_MAX;
        if (S_ISREG(st.st_mode))
                total = (uint64_t)st.st_size;
        else if (!S_ISBLK(st.st_mode) || ioctl(backing_fd, BLKGETSIZE64, &total) < 0)
                return UINT64_MAX;
        return loop_size_for(total, config->offset, config->size_limit);
}

/* Unbinds a device we bound a moment ago (still holding our fd). */
static void rollback(int devfd, unsigned number)
{
        (void)partition_remove_all(devfd, number);
        (void)ioctl(devfd, LOOP_CLR_FD);
}

/* Opens loopN, a number LOOP_CTL_GET_FREE gave (or the one loopd freed last), and makes it ours to bind:
 * free, rid of an earlier user's partitions, and under a shared flock. Returns the fd (read-only, see
 * loop_open_any()), or -EAGAIN when someone else got the device first (the caller asks for another), or
 * another -errno. */
static int claim_free_device(unsigned number)
{
        _cleanup_close_ int devfd = -EBADF;
        int r;

        devfd = loop_open_any(number);
        if (devfd == -ENOENT || devfd == -ENXIO || devfd == -ENODEV)
                return -EAGAIN; /* removed (LOOP_CTL_REMOVE) under us */
        if (devfd < 0)
                return devfd;

        /* udevd and systemd take this lock too: while we hold it nobody probes or configures the device. */
        if (flock(devfd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : negative_errno();

        if (loop_is_bound(number, 0))
                return -EAGAIN; /* bound by someone else since LOOP_CTL_GET_FREE (or our check) */

        /* A free device can still carry partitions from an earlier user (added with BLKPG, never removed);
         * BLKPG would later refuse ours with EBUSY. The device is unbound and locked: they are nobody's. */
        r = partition_remove_all(devfd, number);
        if (r == -EBUSY)
                return -EAGAIN; /* someone still holds one of them open: try another device */
        if (r < 0 && r != -ENODEV)
                return r;
        loop_remove_known_stale_partition_nodes(number);

        /* Shared, not exclusive, from here on and for as long as the caller keeps the device (see
         * loop_attach()). LOOP_CONFIGURE sends the disk's "change" uevent (and, with the kernel's own
         * partition scan, the partitions' "add"); a udevd worker takes a shared lock itself before it
         * processes them, so it goes ahead at once (with our exclusive lock it requeued the event and
         * retried only 200 ms later, holding back the partitions' events behind it). What a shared lock
         * keeps away is udevd's partition table re-read (BLKRRPART after a writable close of /dev/loopN),
         * which asks for an exclusive one: on a kernel without partition parsers that re-read drops every
         * partition added with BLKPG. Someone else binding the device in between makes LOOP_CONFIGURE fail
         * with EBUSY. */
        if (flock(devfd, LOCK_SH | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : negative_errno();
        return TAKE_FD(devfd);
}

/* ---- LOOP_CONFIGURE, in a child ----
 *
 * LOOP_CONFIGURE asks the backing file's filesystem for its statistics (vfs_statfs(), for the discard
 * granularity) and, with the kernel's own partition scan, reads the device's table through it: a FUSE
 * server that never answers holds the caller there, uninterruptibly once it has read the request. So it
 * runs in a child of loopd's runner with the device and the backing file (runner_call()), waited for until
 * the config's timeout. Past it the child goes on; a binding it makes after all, nobody hears of, and it
 * unbinds it again. Meanwhile the kernel still calls the number free (its binding never finished), and an
 * open of the device waits for the binding (the kernel's lo_mutex): such numbers are passed over
 * (configure_stuck()). Only for this loopd's life: one started while such a child still waits does not
 * know the number. */

/* The request: the configuration, its fd field set in the child (its copy of the backing file). fds: the
 * device (opened for writing unless read-only), the backing file. */
static int configure_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        struct loop_config lc;
        int r;

        if (size != sizeof(lc) || n_fds != 2)
                return -EINVAL;
        memcpy(&lc, request, sizeof(lc));
        lc.fd = (uint32_t)fds[1];
        r = ioctl(fds[0], LOOP_CONFIGURE, &lc) < 0 ? negative_errno() : 0;
        if (r == -EINVAL && (lc.info.lo_flags & LO_FLAGS_DIRECT_IO)) {
                /* The backing filesystem may not do O_DIRECT: bind buffered, as losetup does.
                 * info->direct_io tells the caller what it got. */
                lc.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
                r = ioctl(fds[0], LOOP_CONFIGURE, &lc) < 0 ? negative_errno() : 0;
        }
        return r;
}

/* A binding nobody heard of: gone again once the child, its last holder, exits. */
static void configure_undo(const void *request, size_t size, const int *fds, size_t n_fds)
{
        (void)request;
        (void)size;
        if (n_fds == 2)
                (void)ioctl(fds[0], LOOP_CLR_FD);
}

const RunnerOps loop_configure_runner_ops = { .op = configure_op, .undo = configure_undo };

/* Numbers whose binding a child left behind still waits for in the kernel, each with the fd that reads the
 * end of the stream once that child has exited. */
typedef struct Stuck {
        unsigned number;
        int fd;
} Stuck;

static Stuck *stuck;
static size_t n_stuck;

/* Forgets the children that have exited; true if one for loopN still waits. */
static bool configure_stuck(unsigned number)
{
        bool found = false;
        size_t kept = 0;

        for (size_t i = 0; i < n_stuck; i++) {
                if (runner_pending_done(stuck[i].fd)) {
                        safe_close(stuck[i].fd);
                        continue;
                }
                found = found || stuck[i].number == number;
                stuck[kept++] = stuck[i];
        }
        n_stuck = kept;
        return found;
}

static void stuck_add(unsigned number, int fd)
{
        Stuck *grown = reallocarray(stuck, n_stuck + 1, sizeof(Stuck));

        if (!grown) {
                safe_close(fd); /* not remembered: an Attach given that number waits for the binding */
                return;
        }
        stuck = grown;
        stuck[n_stuck++] = (Stuck){ .number = number, .fd = fd };
}

/* Binds backing_fd to the claimed device devfd (loopN) with LOOP_CONFIGURE, in a child. -EAGAIN when
 * someone else bound the number first; -ETIMEDOUT when the child did not answer in time (the device is the
 * child's then: untouched here); on any other failure nothing is bound (LOOP_CONFIGURE undoes itself). */
static int configure_device(int devfd, unsigned number, int backing_fd, const LoopConfig *config)
{
        _cleanup_close_ int cfgfd = -EBADF;
        struct loop_config lc = {};
        char fdpath[32];
        int late = -EBADF, r;

        lc.block_size = config->sector_size;
        lc.info.lo_offset = config->offset;
        lc.info.lo_sizelimit = config->size_limit;
        /* Autoclear is never set here: the device would go away the moment we close it below, since nobody
         * else holds it yet. See loop_set_autoclear(). */
        lc.info.lo_flags = (config->read_only ? LO_FLAGS_READ_ONLY : 0) |
                (config->partition_scan ? LO_FLAGS_PARTSCAN : 0) |
                (config->direct_io ? LO_FLAGS_DIRECT_IO : 0);
        snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", backing_fd);
        if (readlink(fdpath, (char *)lc.info.lo_file_name, sizeof(lc.info.lo_file_name) - 1) < 0)
                lc.info.lo_file_name[0] = '\0';

        /* LOOP_CONFIGURE makes the device read-only when the loop device itself was opened read-only. */
        if (!config->read_only) {
                cfgfd = open_loop_private_rw(devfd, number);
                if (cfgfd < 0)
                        return cfgfd;
        }

        r = runner_call(&loop_configure_runner_ops, &lc, sizeof(lc),
                (const int[]){ cfgfd >= 0 ? cfgfd : devfd, backing_fd }, 2,
                now_ms() + (int64_t)((config->timeout_usec ?: LOOP_CONFIGURE_TIMEOUT_USEC) / 1000), &late);
        if (late >= 0)
                stuck_add(number, late);
        if (r == -EBUSY || r == -ENXIO || r == -ENODEV)
                return -EAGAIN; /* the number was taken (or removed) between our check and now */
        return r;
}

/* The info of loopN, bound a moment ago and held (devfd: nobody can unbind it meanwhile), of diskseq and
 * size bytes: what config asked for and verify_device() found applied, and from sysfs what the kernel
 * decides itself: the backing file's name as it reports it, partition scanning (on for every device where
 * loop's max_part is set) and direct I/O (off where the backing file refuses it). 3 of its attributes read,
 * not loop_get_info()'s 13. */
static int read_bound_info(int devfd, unsigned number, uint64_t diskseq, uint64_t size,
        const LoopConfig *config, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int sysfd = -EBADF;
        struct stat st;
        int r;

        info = calloc(1, sizeof(LoopInfo));
        if (!info)
                return -ENOMEM;
        *info = (LoopInfo){
                .number = number,
                .diskseq = diskseq,
                .offset = config->offset,
                .size_limit = config->size_limit,
                .size = size,
                .sector_size = config->sector_size,
                .read_only = config->read_only,
                /* Every uevent up to here is reflected in what follows. */
                .uevent_seqnum = loop_uevent_seqnum(),
        };
        if (fstat(devfd, &st) < 0)
                return negative_errno();
        info->devnum = st.st_rdev;
        sysfd = sysfs_open_loop(number, 0);
        if (sysfd < 0)
                return sysfd;
        r = loop_read_backing_file(sysfd, "loop", "backing_file", &info->backing_file);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, "loop", "partscan", &info->partscan);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, "loop", "dio", &info->direct_io);
        if (r < 0)
                return r == -ENOENT || r == -ENODEV ? -EIO : r;
        *ret = TAKE_PTR(info);
        return 0;
}

/* The number loopd unbound last, for the next Attach to try before LOOP_CTL_GET_FREE, which walks the
 * kernel's loop devices in order until it finds a free one: 34 µs a call with a thousand bound (0.3 µs with
 * none), at every Attach, growing with every device bound. Only from FREE_HINT_MIN on: below it that walk is
 * short whatever it finds (it stops at the first free device, and the hint is one), and the kernel's lowest
 * free number is kept there, as losetup --find users know it. UINT_MAX: none. */
#define FREE_HINT_MIN 64u
static unsigned free_hint = UINT_MAX;

void loop_note_free(unsigned number)
{
        free_hint = number >= FREE_HINT_MIN ? number : UINT_MAX;
}

/* The hint, once, unless someone bound it since or a configure child of ours still waits for it. sysfs
 * first: a device of someone else's is not even opened (an open waits for whatever holds the device's
 * lo_mutex, and would turn its owner's concurrent LOOP_CLR_FD into a mere autoclear). UINT_MAX: none. */
static unsigned take_free_hint(void)
{
        unsigned hint = free_hint;

        free_hint = UINT_MAX;
        if (hint == UINT_MAX || configure_stuck(hint) || loop_is_bound(hint, 0))
                return UINT_MAX;
        return hint;
}

/* Tries to bind loopN. Returns -EAGAIN when someone else got the device first (the caller asks for another),
 * another -errno for a real failure (with nothing left bound), 0 and the device's info on success. */
static int try_attach(unsigned number, int backing_fd, const LoopConfig *config, uint64_t expected_size,
        LoopInfo **ret, int *ret_lock_fd)
{
        _cleanup_close_ int devfd = -EBADF;
        int r;

        devfd = claim_free_device(number);
        if (devfd < 0)
                return devfd;
        if (config->on_number) {
                r = config->on_number(number, true, config->userdata);
                if (r < 0)
                        return r;
        }
        r = configure_device(devfd, number, backing_fd, config);
        if (r < 0) {
                if (config->on_number)
                        (void)config->on_number(number, false, config->userdata);
                return r;
        }

        /* From here on the device is ours: any failure unbinds it again. */
        uint64_t diskseq = loop_device_diskseq(devfd, number), size = 0;

        r = verify_device(devfd, config, expected_size, &size);
        if (r >= 0 && config->partition_scan)
                r = loop_sync_partitions(devfd, number, config->reader, backing_fd, config->offset);
        if (r >= 0)
                r = read_bound_info(devfd, number, diskseq, size, config, ret);
        if (r < 0) {
                rollback(devfd, number);
                if (config->on_number)
                        (void)config->on_number(number, false, config->userdata);
                return r == -EAGAIN ? -EIO : r;
        }

        if (ret_lock_fd)
                *ret_lock_fd = TAKE_FD(devfd);
        return 0;
}

int loop_attach(int backing_fd, const LoopConfig *config, LoopInfo **ret, int *ret_lock_fd)
{
        _cleanup_close_ int ctl = -1;
        uint64_t expected_size;
        int flags, r;

        if (backing_fd < 0 || !config || !ret)
                return -EINVAL;
        if (config->sector_size != 512 && config->sector_size != 1024 && config->sector_size != 2048 &&
                config->sector_size != 4096)
                return -EINVAL;

        flags = fcntl(backing_fd, F_GETFL);
        if (flags < 0)
                return negative_errno();
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
                return -EBADF; /* the kernel must be able to read it */
        /* Read-only comes from the fd's access mode, not from what the caller claims. */
        if (!config->read_only && (flags & O_ACCMODE) == O_RDONLY)
                return -EROFS;

        expected_size = expected_device_size(backing_fd, config);

        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return negative_errno();
        /* systemd's loop-util takes this lock around LOOP_CTL_GET_FREE and the binding, so that two of its
         * attachers do not race for one number: honour it too (it is let go with ctl). Bounded: whoever
         * holds it for longer than a second is not setting up a device, and loopd must not wait for it. */
        for (uint64_t deadline = loop_now_usec() + CONTROL_LOCK_WAIT_USEC, step = 0;
                flock(ctl, LOCK_EX | LOCK_NB) < 0;) {
                if (errno != EWOULDBLOCK)
                        return negative_errno();
                if (loop_now_usec() >= deadline)
                        return -EBUSY;
                loop_backoff_sleep(&step);
        }

        unsigned hint = take_free_hint();
        if (hint != UINT_MAX) {
                /* Taken in between (claim_free_device() finds out): GET_FREE as below. */
                r = try_attach(hint, backing_fd, config, expected_size, ret, ret_lock_fd);
                if (r != -EAGAIN)
                        return r;
        }

        for (unsigned attempt = 0; attempt < ATTACH_ATTEMPTS; attempt++) {
                int nr;

                if (attempt > 0) {
                        /* Jittered and growing, so that racing attachers spread out: at most ~50 ms a round
                         * and about 1.5 s in all. */
                        uint64_t cap = MIN(1000u * (uint64_t)(attempt + 1), 50000u);
                        loop_sleep_usec(loop_random_u64() % cap + 100);
                }

                nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -ENOSPC; /* no free device, and the kernel may not create more */
                }
                /* Free to the kernel, but a child of ours still waits to bind it: a new device instead. */
                if (configure_stuck((unsigned)nr)) {
                        nr = ioctl(ctl, LOOP_CTL_ADD, -1);
                        if (nr < 0)
                                return -ENOSPC;
                }

                r = try_attach((unsigned)nr, backing_fd, config, expected_size, ret, ret_lock_fd);
                if (r != -EAGAIN)
                        return r;
        }
        return -ENOSPC;
}
