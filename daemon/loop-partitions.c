/* loop-partitions.c: the partitions of a bound loop device made to exist as /dev/loopNpM (the kernel's scan
 * or BLKPG), restored after a table re-read dropped them, updated after loopd changed the table, and dead
 * /dev/loopNpM nodes removed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "image-reader.h"
#include "loop-internal.h"
#include "macro.h"
#include "partition.h"

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

static int sync_partitions(int devfd, unsigned number, uint32_t sector_size, uint64_t size,
        ImageReader *reader, int image_fd, uint64_t image_offset)
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

                r = image_reader_plan_partitions(
                        reader, devfd, sector_size, size, image_fd, image_offset, &specs, &nspecs);
                if (r < 0)
                        return r;
                if (nspecs == 0)
                        return 0;
                r = partition_add_all(devfd, specs, nspecs);
                if (r < 0)
                        return r;
                /* There were none: what exists now is what the kernel took of the plan (it refuses a
                 * partition that overlaps another). Only its devnum is left to read. */
                for (size_t i = 0; i < nspecs; i++) {
                        KernelPartition p = { .number = specs[i].number };

                        r = partition_read_devnum(number, p.number, &p.devnum);
                        if (r == -ENOENT)
                                continue;
                        partition_nodes_created(number, p.number);
                        if (r >= 0)
                                r = ensure_partition_node(number, &p);
                        if (r < 0)
                                return r;
                        n++;
                }
                return (int)n;
        }

        for (size_t i = 0; i < n; i++) {
                r = ensure_partition_node(number, &parts[i]);
                if (r < 0)
                        return r;
        }
        return (int)n;
}

int loop_sync_partitions(
        int devfd, unsigned number, ImageReader *reader, int image_fd, uint64_t image_offset)
{
        uint64_t size;
        int ss;

        if (ioctl(devfd, BLKSSZGET, &ss) < 0)
                return negative_errno();
        if (ioctl(devfd, BLKGETSIZE64, &size) < 0)
                return negative_errno();
        if (ss < 512 || ss > 4096)
                return -EINVAL;
        return sync_partitions(devfd, number, (uint32_t)ss, size, reader, image_fd, image_offset);
}

int loop_restore_partitions(unsigned number, uint64_t expected_diskseq, ImageReader *reader)
{
        _cleanup_close_ int devfd = -EBADF;

        /* The number may have been detached and bound again since the event: never add partitions from
         * somebody else's image. */
        devfd = loop_open_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        return loop_sync_partitions(devfd, number, reader, -EBADF, 0);
}

int loop_open_writable(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;
        int ro = 0;

        devfd = loop_open_node(number, O_RDWR);
        if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                return -ENODEV;
        if (devfd < 0)
                return devfd;
        if (expected_diskseq != 0 && loop_device_diskseq(devfd, number) != expected_diskseq)
                return -ESTALE;
        if (ioctl(devfd, BLKROGET, &ro) < 0)
                return negative_errno();
        if (ro)
                return -EROFS;
        return TAKE_FD(devfd);
}

static bool plan_has(const PartitionSpec *specs, size_t n, const KernelPartition *p)
{
        for (size_t i = 0; i < n; i++)
                if (specs[i].number == p->number && specs[i].start == p->start && specs[i].length == p->size)
                        return true;
        return false;
}

int loop_update_partitions(unsigned number, uint64_t expected_diskseq, ImageReader *reader)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        _cleanup_free_ PartitionSpec *specs = NULL;
        _cleanup_close_ int devfd = -EBADF;
        size_t n = 0, nspecs = 0;
        uint64_t size;
        int ss, r, ret = 0;

        devfd = loop_open_checked(number, expected_diskseq);
        if (devfd < 0)
                return devfd;
        if (ioctl(devfd, BLKSSZGET, &ss) < 0 || ioctl(devfd, BLKGETSIZE64, &size) < 0)
                return negative_errno();
        if (ss < 512 || ss > 4096)
                return -EINVAL;
        r = image_reader_plan_partitions(reader, devfd, (uint32_t)ss, size, -EBADF, 0, &specs, &nspecs);
        if (r < 0)
                return r;
        r = partition_list_kernel(number, &parts, &n);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                if (plan_has(specs, nspecs, &parts[i]))
                        continue;
                r = partition_remove(devfd, parts[i].number);
                if (r < 0 && ret == 0)
                        ret = r;
        }
        /* What exists already is EBUSY there: fine. */
        r = partition_add_all(devfd, specs, nspecs);
        if (r < 0)
                return r;

        parts = mfree(parts);
        r = partition_list_kernel(number, &parts, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = ensure_partition_node(number, &parts[i]);
                if (r < 0)
                        return r;
        }
        loop_remove_stale_partition_nodes(number);
        return ret < 0 ? ret : (int)n;
}

/* Removes /dev's entry name (a /dev/loopNpM) unless it is the node of the live partition of that name. */
static void remove_if_stale(int dev_fd, const char *name)
{
        char sys[96], link[256], *base;
        struct stat st;
        ssize_t k;

        if (fstatat(dev_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return;
        if (S_ISBLK(st.st_mode)) {
                snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
                k = readlink(sys, link, sizeof(link) - 1);
                /* Alive (a new owner of loopN may already have this partition): keep it. */
                if (k > 0) {
                        link[k] = '\0';
                        base = strrchr(link, '/');
                        if (streq(base ? base + 1 : link, name))
                                return;
                }
        }
        (void)unlinkat(dev_fd, name, 0);
}

/* Removes /dev/loopNpM nodes that no longer name a live partition of loopN: devtmpfs leaves behind nodes it
 * did not create itself, and a dead node gives I/O errors (or, worse, a recycled device number). All of /dev
 * is read: a node someone made for a partition that never existed goes too. */
void loop_remove_stale_partition_nodes(unsigned number)
{
        unsigned found = 0;
        struct dirent *de;
        DIR *d;

        d = opendir("/dev");
        if (!d)
                return;
        while ((de = readdir(d))) {
                unsigned n, partition;

                if (loop_parse_node(de->d_name, &n, &partition) < 0 || n != number || partition == 0)
                        continue;
                found = MAX(found, partition);
                remove_if_stale(dirfd(d), de->d_name);
        }
        closedir(d);
        partition_nodes_looked(number, found);
}

/* The names partition_nodes_highest() knows for loopN, as it knows them now. */
static void remove_known_stale(unsigned number)
{
        int highest = partition_nodes_highest(number);
        _cleanup_close_ int dev_fd = -EBADF;

        if (highest < 0) {
                loop_remove_stale_partition_nodes(number);
                return;
        }
        dev_fd = open("/dev", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (int m = 1; dev_fd >= 0 && m <= highest; m++) {
                char node[LOOP_NODE_MAX];

                /* Relative to /dev: the name without "/dev/". */
                remove_if_stale(dev_fd, loop_node_format(node, number, (unsigned)m) + strlen("/dev/"));
        }
}

void loop_remove_known_stale_partition_nodes(unsigned number)
{
        (void)partition_nodes_catch_up();
        remove_known_stale(number);
}

void loop_remove_every_stale_partition_node(unsigned number)
{
        if (partition_nodes_catch_up())
                remove_known_stale(number);
        else
                loop_remove_stale_partition_nodes(number);
}
