/* loop.c: kernel loop devices: bind with LOOP_CONFIGURE, make their partitions exist, read sysfs, unbind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "macro.h"
#include "partition.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

/* How often loop_attach() asks for another free device when others keep taking the one it got. */
#define ATTACH_ATTEMPTS 64
/* How long loop_detach() waits for transient exclusive claims and for the lock of a device that udevd
 * (LOCK_SH) is probing, together; then, separately, for a transient opener (blkid, a lister) to let go
 * after LOOP_CLR_FD. */
#define DETACH_LOCK_WAIT_USEC (2 * 1000 * 1000)
#define CONTROL_LOCK_WAIT_USEC (1000 * 1000)
#define DETACH_RELEASE_WAIT_USEC (2 * 1000 * 1000)

/* ---- small helpers ---- */

static void sleep_usec(uint64_t usec)
{
        struct timespec ts = { .tv_sec = (time_t)(usec / 1000000),
                .tv_nsec = (long)(usec % 1000000) * 1000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Sleeps *step_usec, then doubles it up to 10 ms: short waits (a prober letting go, the kernel finishing an
 * unbind) end within a fraction of a millisecond, long ones do not spin. Start *step_usec at 0. */
static void backoff_sleep(uint64_t *step_usec)
{
        *step_usec = *step_usec == 0 ? 100 : MIN(*step_usec * 2, 10000u);
        sleep_usec(*step_usec);
}

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t random_u64(void)
{
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
                v = now_usec() * UINT64_C(6364136223846793005) + (uint64_t)getpid();
        return v;
}

/* Reads a small sysfs attribute below dirfd; strips one trailing newline. */
static int read_attr(int dirfd, const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = -1;
        ssize_t k;

        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        k = read(fd, buf, size - 1);
        if (k < 0)
                return negative_errno();
        buf[k] = '\0';
        if (k > 0 && buf[k - 1] == '\n')
                buf[k - 1] = '\0';
        return (int)k;
}

static int parse_u64(const char *s, uint64_t *ret)
{
        unsigned long long v;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

static int read_attr_u64(int dirfd, const char *path, uint64_t *ret)
{
        char buf[32];
        int r;

        r = read_attr(dirfd, path, buf, sizeof(buf));
        if (r < 0)
                return r;
        return parse_u64(buf, ret);
}

static int read_attr_bool(int dirfd, const char *path, bool *ret)
{
        uint64_t v;
        int r;

        r = read_attr_u64(dirfd, path, &v);
        if (r < 0)
                return r;
        *ret = v != 0;
        return 0;
}

static int read_attr_devnum(int dirfd, const char *path, dev_t *ret)
{
        unsigned maj, min;
        char buf[32], c;
        int r;

        r = read_attr(dirfd, path, buf, sizeof(buf));
        if (r < 0)
                return r;
        if (sscanf(buf, "%u:%u%c", &maj, &min, &c) != 2)
                return -EINVAL;
        *ret = makedev(maj, min);
        return 0;
}

static int open_loop_node(unsigned number, int flags)
{
        char path[LOOP_NODE_MAX];
        int fd;

        fd = open(loop_node_format(path, number, 0), flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        return fd;
}

/* Opens a loop device for our ioctls. Read-only is enough with CAP_SYS_ADMIN (LOOP_CLR_FD, BLKPG,
 * LOOP_SET_STATUS64), works for read-only devices too, and closing it does not make udevd's inotify watch
 * synthesize a "change" event as closing a writable fd would. */
static int open_loop_any(unsigned number)
{
        return open_loop_node(number, O_RDONLY);
}

static uint64_t device_diskseq(int devfd, unsigned number)
{
        char path[64];
        uint64_t seq = 0;

        if (ioctl(devfd, BLKGETDISKSEQ, &seq) >= 0)
                return seq;
        snprintf(path, sizeof(path), "/sys/block/loop%u/diskseq", number);
        if (read_attr_u64(AT_FDCWD, path, &seq) < 0)
                return 0;
        return seq;
}

/* open_loop_any() of loopN if it is still the incarnation with expected_diskseq (0: any): -ENODEV when there
 * is no such device, -ESTALE when the number was bound again since. */
static int open_loop_checked(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;

        devfd = open_loop_any(number);
        if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                return -ENODEV;
        if (devfd < 0)
                return devfd;
        if (expected_diskseq != 0 && device_diskseq(devfd, number) != expected_diskseq)
                return -ESTALE;
        return TAKE_FD(devfd);
}

/* ---- LoopInfo ---- */

LoopInfo *loop_info_free(LoopInfo *info)
{
        if (!info)
                return NULL;
        free(info->backing_file);
        free(info);
        return NULL;
}

void loop_info_array_free(LoopInfo **infos, size_t n)
{
        if (!infos)
                return;
        for (size_t i = 0; i < n; i++)
                loop_info_free(infos[i]);
        free(infos);
}

/* Fills info from /sys/block/loopN, an open directory. -ENXIO if the device is not bound. */
static int read_info_sysfs(int sysfd, unsigned number, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int lfd = -1;
        char buf[4096 + 16];
        uint64_t v;
        int r;

        lfd = openat(sysfd, "loop", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (lfd < 0)
                return errno == ENOENT ? -ENXIO : negative_errno();

        info = calloc(1, sizeof(LoopInfo));
        if (!info)
                return -ENOMEM;
        info->number = number;

        /* Any attribute vanishing means the device was unbound while we read it: ENOENT when it was gone
         * before the open, ENODEV (kernfs) when it went between the open and the read. */
        r = read_attr(lfd, "backing_file", buf, sizeof(buf));
        if (r < 0)
                return r == -ENOENT || r == -ENODEV ? -ENXIO : r;
        info->backing_file = strdup(buf);
        if (!info->backing_file)
                return -ENOMEM;

        r = read_attr_u64(lfd, "offset", &info->offset);
        if (r >= 0)
                r = read_attr_u64(lfd, "sizelimit", &info->size_limit);
        if (r >= 0)
                r = read_attr_bool(lfd, "autoclear", &info->autoclear);
        if (r >= 0)
                r = read_attr_bool(lfd, "partscan", &info->partscan);
        if (r >= 0)
                r = read_attr_bool(lfd, "dio", &info->direct_io);
        if (r >= 0)
                r = read_attr_devnum(sysfd, "dev", &info->devnum);
        if (r >= 0)
                r = read_attr_bool(sysfd, "ro", &info->read_only);
        if (r >= 0)
                r = read_attr_u64(sysfd, "size", &v);
        if (r < 0)
                return r == -ENOENT || r == -ENODEV ? -ENXIO : r;
        if (v > UINT64_MAX / 512)
                return -EINVAL;
        info->size = v * 512;

        if (read_attr_u64(sysfd, "queue/logical_block_size", &v) >= 0 && v >= 512 && v <= 65536)
                info->sector_size = (uint32_t)v;
        else
                info->sector_size = 512;
        if (read_attr_u64(sysfd, "diskseq", &v) >= 0)
                info->diskseq = v;

        *ret = TAKE_PTR(info);
        return 0;
}

/* Reads attribute attr of /sys/block/name below blockfd (an open /sys/block). */
static int read_named_attr(int blockfd, const char *name, const char *attr, char *buf, size_t size)
{
        char path[96];

        snprintf(path, sizeof(path), "%s/%s", name, attr);
        return read_attr(blockfd, path, buf, size);
}

static int read_named_attr_u64(int blockfd, const char *name, const char *attr, uint64_t *ret)
{
        char buf[32];
        int r;

        r = read_named_attr(blockfd, name, attr, buf, sizeof(buf));
        if (r < 0)
                return r;
        return parse_u64(buf, ret);
}

/* Only what ListDevices reports (backing file, offset, size limit, autoclear, read-only, sector size,
 * diskseq), with paths relative to /sys/block and no directory fds: 21 syscalls a device instead of 37,
 * which is most of ListDevices' time with hundreds of devices. devnum, size, partscan and direct_io stay 0.
 * -ENXIO if the device is not bound. */
static int read_info_sysfs_brief(int blockfd, const char *name, unsigned number, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        uint64_t autoclear = 0, ro = 0, v;
        char buf[4096 + 16];
        int r;

        info = calloc(1, sizeof(LoopInfo));
        if (!info)
                return -ENOMEM;
        info->number = number;

        r = read_named_attr(blockfd, name, "loop/backing_file", buf, sizeof(buf));
        if (r < 0)
                return r == -ENOENT ? -ENXIO : r;
        info->backing_file = strdup(buf);
        if (!info->backing_file)
                return -ENOMEM;

        r = read_named_attr_u64(blockfd, name, "loop/offset", &info->offset);
        if (r >= 0)
                r = read_named_attr_u64(blockfd, name, "loop/sizelimit", &info->size_limit);
        if (r >= 0)
                r = read_named_attr_u64(blockfd, name, "loop/autoclear", &autoclear);
        if (r >= 0)
                r = read_named_attr_u64(blockfd, name, "ro", &ro);
        if (r < 0)
                return r == -ENOENT ? -ENXIO : r;
        info->autoclear = autoclear != 0;
        info->read_only = ro != 0;

        r = read_named_attr_u64(blockfd, name, "queue/logical_block_size", &v);
        info->sector_size = r >= 0 && v >= 512 && v <= 65536 ? (uint32_t)v : 512;
        if (read_named_attr_u64(blockfd, name, "diskseq", &v) >= 0)
                info->diskseq = v;

        *ret = TAKE_PTR(info);
        return 0;
}

int loop_get_info_brief(unsigned number, LoopInfo **ret)
{
        _cleanup_close_ int blockfd = -EBADF;
        char name[32];

        blockfd = open("/sys/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (blockfd < 0)
                return negative_errno();
        snprintf(name, sizeof(name), "loop%u", number);
        return read_info_sysfs_brief(blockfd, name, number, ret);
}

static int open_sysfs_loop(unsigned number)
{
        char path[48];
        int fd;

        snprintf(path, sizeof(path), "/sys/block/loop%u", number);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ENODEV : negative_errno();
        return fd;
}

/* The backing file's device and inode: not in sysfs. */
static void fill_backing_status(int devfd, LoopInfo *info)
{
        struct loop_info64 li = {};

        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                return;
        info->backing_dev = (dev_t)li.lo_device;
        info->backing_inode = li.lo_inode;
}

int loop_get_info(unsigned number, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int sysfd = -1, devfd = -1;
        int r;

        if (!ret)
                return -EINVAL;
        sysfd = open_sysfs_loop(number);
        if (sysfd < 0)
                return sysfd;
        r = read_info_sysfs(sysfd, number, &info);
        if (r < 0)
                return r;

        /* O_PATH would not do for the ioctl; a read-only open does not count for LOOP_CLR_FD's autoclear
         * decision beyond these few microseconds. */
        devfd = open_loop_node(number, O_RDONLY);
        if (devfd >= 0) {
                struct stat st;
                /* Only trust the node if it is the device sysfs described. */
                if (fstat(devfd, &st) >= 0 && S_ISBLK(st.st_mode) && st.st_rdev == info->devnum &&
                        device_diskseq(devfd, number) == info->diskseq)
                        fill_backing_status(devfd, info);
        }

        *ret = TAKE_PTR(info);
        return 0;
}

static int compare_infos(const void *a, const void *b)
{
        const LoopInfo *x = *(LoopInfo *const *)a, *y = *(LoopInfo *const *)b;
        return x->number < y->number ? -1 : x->number > y->number;
}

/* Sysfs only: ListDevices calls this often, and opening devices would disturb their owners (an open
 * turns someone else's LOOP_CLR_FD into a mere autoclear). backing_dev/backing_inode stay 0 here. */
static int list_loops(bool brief, LoopInfo ***ret, size_t *ret_n)
{
        LoopInfo **infos = NULL;
        size_t n = 0, allocated = 0;
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (!ret || !ret_n)
                return -EINVAL;

        d = opendir("/sys/block");
        if (!d)
                return negative_errno();

        while ((de = readdir(d))) {
                LoopInfo *info = NULL;
                unsigned number;
                int sysfd;

                if (strncmp(de->d_name, "loop", 4) != 0 || loop_parse_name(de->d_name, &number) < 0)
                        continue;
                if (brief)
                        r = read_info_sysfs_brief(dirfd(d), de->d_name, number, &info);
                else {
                        sysfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (sysfd < 0)
                                continue;
                        r = read_info_sysfs(sysfd, number, &info);
                        safe_close(sysfd);
                }
                /* Unbound, or unbound (ENODEV from kernfs) or removed (ENOENT) while we looked. */
                if (r == -ENXIO || r == -ENOENT || r == -ENODEV) {
                        r = 0;
                        continue;
                }
                if (r < 0)
                        goto fail;

                if (n == allocated) {
                        size_t na = allocated ? allocated * 2 : 16;
                        LoopInfo **ni = reallocarray(infos, na, sizeof(LoopInfo *));
                        if (!ni) {
                                loop_info_free(info);
                                r = -ENOMEM;
                                goto fail;
                        }
                        infos = ni;
                        allocated = na;
                }
                infos[n++] = info;
        }
        closedir(d);

        if (n > 0)
                qsort(infos, n, sizeof(LoopInfo *), compare_infos);
        *ret = infos;
        *ret_n = n;
        return 0;

fail:
        closedir(d);
        loop_info_array_free(infos, n);
        return r;
}

int loop_list(LoopInfo ***ret, size_t *ret_n)
{
        return list_loops(false, ret, ret_n);
}

int loop_list_brief(LoopInfo ***ret, size_t *ret_n)
{
        return list_loops(true, ret, ret_n);
}

/* ---- partitions of a bound device ---- */

/* Makes sure /dev/loopNpM is the block node of partition M. devtmpfs creates it synchronously when the
 * partition is added, but it never replaces a file that is in the way (a node left over from an earlier
 * device, or one created by hand): such a node is replaced by a correct one, with the whole device's
 * ownership and mode. */
static int ensure_partition_node(unsigned number, const KernelPartition *p)
{
        char path[LOOP_NODE_MAX], disk[LOOP_NODE_MAX];
        struct stat st, dst;

        loop_node_format(path, number, p->number);
        if (lstat(path, &st) >= 0) {
                if (S_ISBLK(st.st_mode) && st.st_rdev == p->devnum)
                        return 0;
                if (unlink(path) < 0 && errno != ENOENT)
                        return negative_errno();
        } else if (errno != ENOENT)
                return negative_errno();

        if (stat(loop_node_format(disk, number, 0), &dst) < 0)
                return negative_errno();
        if (mknod(path, S_IFBLK | (dst.st_mode & 07777), p->devnum) < 0) {
                if (errno != EEXIST)
                        return negative_errno();
                /* devtmpfs won the race; check what it made. */
                if (lstat(path, &st) < 0)
                        return negative_errno();
                return S_ISBLK(st.st_mode) && st.st_rdev == p->devnum ? 0 : -EEXIST;
        }
        (void)chown(path, dst.st_uid, dst.st_gid);
        return 0;
}

static int sync_partitions(int devfd, unsigned number, uint32_t sector_size, uint64_t size)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        size_t n = 0;
        int r;

        r = partition_list_kernel(number, &parts, &n);
        if (r < 0)
                return r;

        /* The kernel's partition scan runs synchronously inside LOOP_CONFIGURE: if it created any, its
         * parsers know the table and we keep what they made. Otherwise read the table ourselves. */
        if (n == 0) {
                _cleanup_free_ PartitionSpec *specs = NULL;
                size_t nspecs = 0;

                r = partition_plan(devfd, sector_size, size, &specs, &nspecs);
                if (r < 0)
                        return r;
                if (nspecs == 0)
                        return 0;
                r = partition_add_all(devfd, specs, nspecs);
                if (r < 0)
                        return r;
                parts = mfree(parts);
                r = partition_list_kernel(number, &parts, &n);
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < n; i++) {
                r = ensure_partition_node(number, &parts[i]);
                if (r < 0)
                        return r;
        }
        return (int)n;
}

/* sync_partitions() with the device's own sector size and size. */
static int sync_partitions_of(int devfd, unsigned number)
{
        uint64_t size;
        int ss;

        if (ioctl(devfd, BLKSSZGET, &ss) < 0)
                return negative_errno();
        if (ioctl(devfd, BLKGETSIZE64, &size) < 0)
                return negative_errno();
        if (ss < 512 || ss > 4096)
                return -EINVAL;
        return sync_partitions(devfd, number, (uint32_t)ss, size);
}

int loop_restore_partitions(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;

        /* The number may have been detached and bound again since the event: never add partitions from
         * somebody else's image. */
        devfd = open_loop_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        return sync_partitions_of(devfd, number);
}

/* Removes /dev/loopNpM nodes that no longer name a live partition of loopN: devtmpfs leaves behind nodes it
 * did not create itself, and a dead node gives I/O errors (or, worse, a recycled device number). */
static void remove_stale_partition_nodes(unsigned number)
{
        char prefix[32];
        struct dirent *de;
        size_t plen;
        DIR *d;

        plen = (size_t)snprintf(prefix, sizeof(prefix), "loop%up", number);
        d = opendir("/dev");
        if (!d)
                return;
        while ((de = readdir(d))) {
                char sys[96], link[256], *base;
                struct stat st;
                ssize_t k;

                if (strncmp(de->d_name, prefix, plen) != 0 || de->d_name[plen] == '\0' ||
                        strspn(de->d_name + plen, "0123456789") != strlen(de->d_name + plen))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISBLK(st.st_mode)) {
                        snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(st.st_rdev),
                                minor(st.st_rdev));
                        k = readlink(sys, link, sizeof(link) - 1);
                        /* Alive (a new owner of loopN may already have this partition): keep it. */
                        if (k > 0) {
                                link[k] = '\0';
                                base = strrchr(link, '/');
                                if (streq(base ? base + 1 : link, de->d_name))
                                        continue;
                        }
                }
                (void)unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

/* ---- attach ---- */

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
                        minor(st.st_rdev), random_u64());
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

        fd = open_loop_node(number, O_RDWR);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st2) < 0 || st2.st_rdev != st.st_rdev) {
                safe_close(fd);
                return -EIO;
        }
        return fd;
}

static int verify_device(int devfd, const LoopConfig *config, uint64_t expected_size)
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
        return 0;
}

/* What the kernel will make of the backing file: (file size - offset), capped by size_limit, in whole
 * 512-byte sectors. UINT64_MAX when we cannot know (a block device whose size we could not read). */
static uint64_t expected_device_size(int backing_fd, const LoopConfig *config)
{
        struct stat st;
        uint64_t total, size;

        if (fstat(backing_fd, &st) < 0)
                return UINT64_MAX;
        if (S_ISREG(st.st_mode))
                total = (uint64_t)st.st_size;
        else if (!S_ISBLK(st.st_mode) || ioctl(backing_fd, BLKGETSIZE64, &total) < 0)
                return UINT64_MAX;
        size = total > config->offset ? total - config->offset : 0;
        if (config->size_limit > 0 && config->size_limit < size)
                size = config->size_limit;
        return size & ~UINT64_C(511);
}

/* Unbinds a device we bound a moment ago (still holding our fd). */
static void rollback(int devfd, unsigned number)
{
        (void)partition_remove_all(devfd, number);
        (void)ioctl(devfd, LOOP_CLR_FD);
}

/* Tries to bind loopN. Returns -EAGAIN when someone else got the device first (the caller asks for another),
 * another -errno for a real failure (with nothing left bound), 0 and the device's info on success. */
static int try_attach(unsigned number, int backing_fd, const LoopConfig *config, uint64_t expected_size,
        LoopInfo **ret, int *ret_lock_fd)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int devfd = -1, cfgfd = -1, sysfd = -1;
        struct loop_info64 li = {};
        struct loop_config lc = {};
        uint64_t diskseq;
        int r;

        /* All our ioctls but LOOP_CONFIGURE go through a read-only fd (see open_loop_any()). */
        devfd = open_loop_any(number);
        if (devfd == -ENOENT || devfd == -ENXIO || devfd == -ENODEV)
                return -EAGAIN; /* removed (LOOP_CTL_REMOVE) under us */
        if (devfd < 0)
                return devfd;

        /* udevd and systemd take this lock too: while we hold it nobody probes or configures the device. */
        if (flock(devfd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : negative_errno();

        if (ioctl(devfd, LOOP_GET_STATUS64, &li) >= 0)
                return -EAGAIN; /* bound by someone else since LOOP_CTL_GET_FREE */
        if (errno != ENXIO)
                return negative_errno();

        /* A free device can still carry partitions from an earlier user (added with BLKPG, never removed);
         * BLKPG would later refuse ours with EBUSY. The device is unbound and locked: they are nobody's. */
        r = partition_remove_all(devfd, number);
        if (r == -EBUSY)
                return -EAGAIN; /* someone still holds one of them open: try another device */
        if (r < 0 && r != -ENODEV)
                return r;
        remove_stale_partition_nodes(number);

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

        lc.fd = (uint32_t)backing_fd;
        lc.block_size = config->sector_size;
        lc.info.lo_offset = config->offset;
        lc.info.lo_sizelimit = config->size_limit;
        /* Autoclear is never set here: the device would go away the moment we close it below, since nobody
         * else holds it yet. See loop_set_autoclear(). */
        lc.info.lo_flags = (config->read_only ? LO_FLAGS_READ_ONLY : 0) |
                (config->partition_scan ? LO_FLAGS_PARTSCAN : 0) |
                (config->direct_io ? LO_FLAGS_DIRECT_IO : 0);
        {
                char fdpath[32];
                snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", backing_fd);
                ssize_t k = readlink(fdpath, (char *)lc.info.lo_file_name, sizeof(lc.info.lo_file_name) - 1);
                if (k < 0)
                        lc.info.lo_file_name[0] = '\0';
        }

        /* LOOP_CONFIGURE makes the device read-only when the loop device itself was opened read-only. */
        if (!config->read_only) {
                cfgfd = open_loop_private_rw(devfd, number);
                if (cfgfd < 0)
                        return cfgfd;
        }

        r = ioctl(cfgfd >= 0 ? cfgfd : devfd, LOOP_CONFIGURE, &lc) < 0 ? negative_errno() : 0;
        if (r == -EINVAL && config->direct_io) {
                /* The backing filesystem may not do O_DIRECT: bind buffered, as losetup does.
                 * info->direct_io tells the caller what it got. */
                lc.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
                r = ioctl(cfgfd >= 0 ? cfgfd : devfd, LOOP_CONFIGURE, &lc) < 0 ? negative_errno() : 0;
        }
        cfgfd = safe_close(cfgfd);
        if (r == -EBUSY || r == -ENXIO || r == -ENODEV)
                return -EAGAIN; /* the number was taken (or removed) between our check and now */
        if (r < 0)
                return r; /* nothing is bound: LOOP_CONFIGURE undoes itself */

        /* From here on the device is ours: any failure unbinds it again. */
        diskseq = device_diskseq(devfd, number);

        r = verify_device(devfd, config, expected_size);
        if (r < 0)
                goto fail;

        if (config->partition_scan) {
                r = sync_partitions_of(devfd, number);
                if (r < 0)
                        goto fail;
        }

        sysfd = open_sysfs_loop(number);
        if (sysfd < 0) {
                r = sysfd;
                goto fail;
        }
        r = read_info_sysfs(sysfd, number, &info);
        if (r < 0)
                goto fail;
        if (diskseq != 0 && info->diskseq != 0 && info->diskseq != diskseq) {
                r = -EIO;
                goto fail;
        }
        if (info->diskseq == 0)
                info->diskseq = diskseq;
        fill_backing_status(devfd, info);

        *ret = TAKE_PTR(info);
        if (ret_lock_fd)
                *ret_lock_fd = TAKE_FD(devfd);
        return 0;

fail:
        rollback(devfd, number);
        return r == -EAGAIN ? -EIO : r;
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
        for (uint64_t deadline = now_usec() + CONTROL_LOCK_WAIT_USEC, step = 0;
                flock(ctl, LOCK_EX | LOCK_NB) < 0;) {
                if (errno != EWOULDBLOCK)
                        return negative_errno();
                if (now_usec() >= deadline)
                        return -EBUSY;
                backoff_sleep(&step);
        }

        for (unsigned attempt = 0; attempt < ATTACH_ATTEMPTS; attempt++) {
                int nr;

                if (attempt > 0) {
                        /* Jittered and growing, so that racing attachers spread out: at most ~50 ms a round
                         * and about 1.5 s in all. */
                        uint64_t cap = MIN(1000u * (uint64_t)(attempt + 1), 50000u);
                        sleep_usec(random_u64() % cap + 100);
                }

                nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -ENOSPC; /* no free device, and the kernel may not create more */
                }

                r = try_attach((unsigned)nr, backing_fd, config, expected_size, ret, ret_lock_fd);
                if (r != -EAGAIN)
                        return r;
        }
        return -ENOSPC;
}

/* ---- detach ---- */

static bool is_bound(unsigned number, uint64_t diskseq)
{
        _cleanup_close_ int sysfd = -1;
        char buf[8];
        uint64_t seq;

        sysfd = open_sysfs_loop(number);
        if (sysfd < 0)
                return false;
        if (read_attr(sysfd, "loop/offset", buf, sizeof(buf)) < 0)
                return false;
        /* Bound again, by someone else, after we let go: ours is gone. */
        if (diskseq != 0 && read_attr_u64(sysfd, "diskseq", &seq) >= 0 && seq != diskseq)
                return false;
        return true;
}

int loop_detach(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -1;
        struct loop_info64 li = {};
        uint64_t diskseq, deadline, step = 0;
        int r;

        devfd = open_loop_any(number);
        if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                return -ENODEV;
        if (devfd < 0)
                return devfd;

        diskseq = device_diskseq(devfd, number);
        if (expected_diskseq != 0 && diskseq != expected_diskseq)
                return -ESTALE;

        /* A mount of the device or of one of its partitions holds the whole disk exclusively: then say so
         * and touch nothing (LOOP_CLR_FD would only turn on autoclear, and partitions would get
         * half-deleted). Others claim it only for a moment (udevd's BLKRRPART, mkfs): retry, bounded. */
        safe_close(devfd);
        deadline = now_usec() + DETACH_LOCK_WAIT_USEC;
        for (;;) {
                devfd = open_loop_node(number, O_RDONLY | O_EXCL);
                if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                        return -ENODEV;
                if (devfd != -EBUSY)
                        break;
                if (now_usec() >= deadline)
                        return -EBUSY;
                backoff_sleep(&step);
        }
        if (devfd < 0)
                return devfd;

        /* udevd holds LOCK_SH while it probes the device; wait for it, bounded (same deadline), so that its
         * open does not turn our LOOP_CLR_FD into a mere autoclear. */
        while (flock(devfd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return negative_errno();
                if (now_usec() >= deadline)
                        return -EBUSY;
                backoff_sleep(&step);
        }

        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                return errno == ENXIO ? -ENXIO : negative_errno();
        /* Recheck under the lock: the number may have been recycled while we waited. */
        if (expected_diskseq != 0 && device_diskseq(devfd, number) != expected_diskseq)
                return -ESTALE;

        /* A partition that someone merely has open for a moment (udevd's or another watcher's probe) cannot
         * be deleted until they close it: retry, bounded by the same deadline. Mounts were ruled out above
         * (the O_EXCL open), so what is still busy then is held open for longer: the device stays bound. */
        step = 0;
        while ((r = partition_remove_all(devfd, number)) == -EBUSY && now_usec() < deadline)
                backoff_sleep(&step);
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
        deadline = now_usec() + DETACH_RELEASE_WAIT_USEC;
        step = 0;
        while (is_bound(number, diskseq)) {
                if (now_usec() >= deadline)
                        return -EBUSY;
                backoff_sleep(&step);
        }

        remove_stale_partition_nodes(number);
        return 0;
}

int loop_lock(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;

        devfd = open_loop_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        if (flock(devfd, LOCK_SH | LOCK_NB) < 0)
                return negative_errno();
        return TAKE_FD(devfd);
}

int loop_set_autoclear(unsigned number, uint64_t expected_diskseq, bool autoclear)
{
        _cleanup_close_ int devfd = -EBADF;
        struct loop_info64 li = {};

        devfd = open_loop_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        if (ioctl(devfd, LOOP_GET_STATUS64, &li) < 0)
                return negative_errno();
        if (!!(li.lo_flags & LO_FLAGS_AUTOCLEAR) == autoclear)
                return 0;
        /* LOOP_SET_STATUS64 changes only the settable flags (autoclear, partscan) and keeps the rest as
         * read. */
        if (autoclear)
                li.lo_flags |= LO_FLAGS_AUTOCLEAR;
        else
                li.lo_flags &= ~LO_FLAGS_AUTOCLEAR;
        if (ioctl(devfd, LOOP_SET_STATUS64, &li) < 0)
                return negative_errno();
        return 0;
}
