/* partition.c: partition tables read with libblkid and added to, listed from and removed from the kernel. */
#include <blkid/blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/blkpg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "blkid-util.h"
#include "loop-name.h"
#include "macro.h"
#include "partition.h"
#include "sysfs.h"

/* The kernel's GPT parser refuses entry arrays larger than it can kmalloc (4 MiB on x86). */
#define GPT_ENTRIES_MAX_BYTES (UINT64_C(4) << 20)

/* The GPT header at offset: -EFBIG when its entry array is larger than the kernel would read, 0 otherwise
 * (or no header). *ret_alternative (may be NULL) is its alternative_lba, 0 without a header. */
static int check_gpt_header_at(int fd, uint64_t offset, uint64_t *ret_alternative)
{
        uint8_t h[92];
        ssize_t k;

        if (ret_alternative)
                *ret_alternative = 0;
        k = pread(fd, h, sizeof(h), (off_t)offset);
        if (k < 0)
                return negative_errno();
        if ((size_t)k < sizeof(h) || memcmp(h, "EFI PART", 8) != 0)
                return 0;

        if (ret_alternative) {
                uint64_t alt = 0;

                for (unsigned i = 0; i < 8; i++)
                        alt |= (uint64_t)h[32 + i] << (8 * i);
                *ret_alternative = alt;
        }
        uint64_t n = (uint64_t)h[80] | (uint64_t)h[81] << 8 | (uint64_t)h[82] << 16 | (uint64_t)h[83] << 24;
        uint64_t esz =
                (uint64_t)h[84] | (uint64_t)h[85] << 8 | (uint64_t)h[86] << 16 | (uint64_t)h[87] << 24;
        if (n * esz > GPT_ENTRIES_MAX_BYTES)
                return -EFBIG;
        return 0;
}

/* Where GPT headers are read (byte offsets from base): the primary in LBA 1, the backup in the last LBA
 * (libblkid falls back to it), and the one at the primary's alternative_lba, which libfdisk reads (with its
 * entry array) before it checks that LBA, when it lies within the device. Returns how many, at most 3. */
static int gpt_header_offsets(int fd, uint64_t base, uint32_t sector_size, uint64_t size, uint64_t ret[3])
{
        uint64_t last = size / sector_size - 1, alt = 0;
        int n = 0, r;

        ret[n++] = base + sector_size;
        ret[n++] = base + last * sector_size;
        r = check_gpt_header_at(fd, base + sector_size, &alt);
        if (r < 0 && r != -EFBIG)
                return r;
        if (alt >= 1 && alt <= last && alt != 1 && alt != last)
                ret[n++] = base + alt * sector_size;
        return n;
}

int partition_table_check_at(int fd, uint64_t base, uint32_t sector_size, uint64_t size)
{
        uint64_t offsets[3];
        int n, r;

        if (fd < 0 || sector_size < 512 || sector_size > 4096 || base > UINT64_MAX - size)
                return -EINVAL;
        if (size < 2 * (uint64_t)sector_size)
                return 0;
        n = gpt_header_offsets(fd, base, sector_size, size, offsets);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                r = check_gpt_header_at(fd, offsets[i], NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

int partition_table_wipe_hostile(int fd, uint32_t sector_size, uint64_t size)
{
        static const uint8_t zeroes[4096];
        uint64_t offsets[3];
        bool wiped = false;
        int n, r;

        r = partition_table_check(fd, sector_size, size);
        if (r != -EFBIG)
                return r;
        /* Every offset first: zeroing the primary loses where its alternative is. */
        n = gpt_header_offsets(fd, 0, sector_size, size, offsets);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                r = check_gpt_header_at(fd, offsets[i], NULL);
                if (r == 0)
                        continue;
                if (r != -EFBIG)
                        return r;
                if (pwrite(fd, zeroes, sector_size, (off_t)offsets[i]) != (ssize_t)sector_size)
                        return errno > 0 ? -errno : -EIO;
                wiped = true;
        }
        r = partition_table_check(fd, sector_size, size);
        if (r < 0)
                return r;
        return wiped;
}

int partition_table_check(int fd, uint32_t sector_size, uint64_t size)
{
        return partition_table_check_at(fd, 0, sector_size, size);
}

/* What BLKPG should add for one entry of libblkid's table: 1 and *ret, or 0 when the kernel would not take
 * it (no number, past the end of the device, misaligned, empty). */
static int plan_one(blkid_partition par, uint32_t sector_size, uint64_t device_size, PartitionSpec *ret)
{
        blkid_loff_t start512, size512;
        uint64_t start, length;
        int partno;

        if (!par)
                return 0;
        partno = blkid_partition_get_partno(par);
        start512 = blkid_partition_get_start(par);
        size512 = blkid_partition_get_size(par);
        if (partno <= 0 || (unsigned)partno >= PARTITION_MAX || start512 < 0 || size512 <= 0)
                return 0;
        /* libblkid reports 512-byte units whatever the sector size; BLKPG wants bytes. */
        if ((uint64_t)start512 > UINT64_MAX / 512 || (uint64_t)size512 > UINT64_MAX / 512)
                return 0;
        start = (uint64_t)start512 * 512;
        length = (uint64_t)size512 * 512;

        /* As the kernel does: an extended partition only gets room for a boot loader, so that nobody
         * mistakes its whole range for a filesystem. */
        if (blkid_partition_is_extended(par))
                length = MIN(length, (uint64_t)MAX(sector_size, 1024u));

        if (start >= device_size)
                return 0;
        if (length > device_size - start)
                length = device_size - start;
        /* The kernel refuses partitions not aligned to the logical block size. */
        if (start % sector_size != 0)
                return 0;
        length -= length % sector_size;
        if (length == 0)
                return 0;

        *ret = (PartitionSpec){ .number = (unsigned)partno, .start = start, .length = length };
        return 1;
}

int partition_plan(int devfd, uint32_t sector_size, uint64_t device_size, PartitionSpec **ret, size_t *ret_n)
{
        return partition_plan_at(devfd, 0, sector_size, device_size, ret, ret_n);
}

int partition_plan_at(int fd, uint64_t base, uint32_t sector_size, uint64_t device_size, PartitionSpec **ret,
        size_t *ret_n)
{
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        _cleanup_free_ PartitionSpec *specs = NULL;
        blkid_partlist list;
        size_t n = 0;
        int count, r;

        if (fd < 0 || !ret || !ret_n)
                return -EINVAL;
        if (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)
                return -EINVAL;
        /* libblkid's offsets are signed, and a size of 0 is the whole file to it: an empty device (a file
         * that shrank below the offset) has no table. */
        if (base > INT64_MAX || device_size > INT64_MAX - base)
                return -EINVAL;
        if (device_size == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }

        r = partition_table_check_at(fd, base, sector_size, device_size);
        if (r == -EFBIG) {
                *ret = NULL;
                *ret_n = 0;
                return 0; /* a hostile table: nothing to add, as the kernel would add nothing */
        }
        if (r < 0)
                return r;

        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        errno = 0;
        if (blkid_probe_set_device(pr, fd, (blkid_loff_t)base, (blkid_loff_t)device_size) < 0)
                return negative_errno();
        /* libblkid asks a block device for its sector size itself; say it explicitly so that the plan
         * matches what the caller verified, whatever libblkid's heuristics. */
        if (blkid_probe_set_sectorsize(pr, sector_size) < 0)
                return -EINVAL;
        blkid_probe_enable_superblocks(pr, 0);
        blkid_probe_enable_partitions(pr, 1);

        errno = 0;
        list = blkid_probe_get_partitions(pr);
        if (!list) {
                /* NULL is both "no table" and "error". Only a failed read is worth failing for. */
                if (errno == EIO || errno == ENOMEM)
                        return -errno;
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }

        count = blkid_partlist_numof_partitions(list);
        if (count < 0)
                count = 0;
        specs = calloc(MAX(count, 1), sizeof(PartitionSpec));
        if (!specs)
                return -ENOMEM;

        for (int i = 0; i < count; i++) {
                PartitionSpec spec;
                bool dup = false;

                if (plan_one(blkid_partlist_get_partition(list, i), sector_size, device_size, &spec) == 0)
                        continue;
                /* Nested tables (BSD labels and the like) may repeat a number; the first wins. */
                for (size_t j = 0; j < n; j++)
                        if (specs[j].number == spec.number)
                                dup = true;
                if (!dup)
                        specs[n++] = spec;
        }

        if (n == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        *ret = TAKE_PTR(specs);
        *ret_n = n;
        return 0;
}

static int compare_kernel_partitions(const void *a, const void *b)
{
        const KernelPartition *x = a, *y = b;
        return x->number < y->number ? -1 : x->number > y->number;
}

/* partition_nodes_highest()'s table, by loop number: 0 not looked at yet, else the highest M + 1. Grown on
 * demand; a number it cannot hold, or whose full look found a name past PARTITION_MAX, is always looked at
 * in full. */
static unsigned short *nodes_highest;
static size_t nodes_highest_n;

int partition_nodes_highest(unsigned loop_number)
{
        if (loop_number >= nodes_highest_n || nodes_highest[loop_number] == 0)
                return -1;
        return nodes_highest[loop_number] - 1;
}

static void nodes_note(unsigned loop_number, unsigned highest, bool looked)
{
        /* A name past what the table holds: that number is looked at in full from now on. */
        if (highest >= PARTITION_MAX) {
                if (loop_number < nodes_highest_n)
                        nodes_highest[loop_number] = 0;
                return;
        }
        if (loop_number >= nodes_highest_n) {
                size_t n = MAX((size_t)loop_number + 1, nodes_highest_n * 2);
                unsigned short *grown;

                if (!looked || loop_number > 1u << 20)
                        return; /* not looked at: nothing to note yet */
                grown = reallocarray(nodes_highest, n, sizeof(unsigned short));
                if (!grown)
                        return;
                memset(grown + nodes_highest_n, 0, (n - nodes_highest_n) * sizeof(unsigned short));
                nodes_highest = grown;
                nodes_highest_n = n;
        }
        if (!looked && nodes_highest[loop_number] == 0)
                return;
        nodes_highest[loop_number] = (unsigned short)MAX((unsigned)nodes_highest[loop_number], highest + 1);
}

void partition_nodes_looked(unsigned loop_number, unsigned highest)
{
        nodes_note(loop_number, highest, true);
}

static void (*nodes_follow)(void *userdata);
static void *nodes_follow_userdata;

void partition_nodes_forget(void)
{
        if (nodes_highest)
                memset(nodes_highest, 0, nodes_highest_n * sizeof(unsigned short));
}

void partition_nodes_follow(void (*follow)(void *userdata), void *userdata)
{
        nodes_follow = follow;
        nodes_follow_userdata = userdata;
        /* What was made while nobody (or someone else) followed is not known. */
        partition_nodes_forget();
}

void partition_nodes_unfollow(void *userdata)
{
        if (nodes_follow && nodes_follow_userdata == userdata)
                partition_nodes_follow(NULL, NULL);
}

bool partition_nodes_catch_up(void)
{
        if (!nodes_follow)
                return false;
        nodes_follow(nodes_follow_userdata);
        return true;
}

void partition_nodes_created(unsigned loop_number, unsigned partition)
{
        nodes_note(loop_number, partition, false);
}

/* Lists the partitions below loopN's sysfs directory (sysfd, an open O_DIRECTORY fd). numbers_only: only
 * which there are, from the directory's names (start, size and devnum stay 0): no attribute is read. */
static int list_partitions_sysfs(
        int sysfd, unsigned loop_number, bool numbers_only, KernelPartition **ret, size_t *ret_n)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        size_t n = 0, allocated = 0;
        struct dirent *de;
        DIR *d;
        int fd;

        fd = openat(sysfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -ENOMEM;
        }

        while ((de = readdir(d))) {
                KernelPartition p = {};
                unsigned disk, partition;
                uint64_t start, size;

                /* The kernel names partition M of loopN loopNpM, below loopN's directory; the other thirty
                 * entries are attributes and queue, power, holders and the like, not worth a read each
                 * (this runs for every uevent). */
                if ((de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) ||
                        loop_parse_node(de->d_name, &disk, &partition) < 0 || disk != loop_number ||
                        partition == 0)
                        continue;
                nodes_note(loop_number, partition, false);
                if (partition >= PARTITION_MAX)
                        continue;
                p.number = partition;
                /* Read relative to loopN's directory: no open of the partition's own. */
                if (!numbers_only) {
                        if (sysfs_read_u64(dirfd(d), de->d_name, "start", &start) < 0 ||
                                sysfs_read_u64(dirfd(d), de->d_name, "size", &size) < 0)
                                continue;
                        if (start > UINT64_MAX / 512 || size > UINT64_MAX / 512)
                                continue;
                        /* sysfs counts 512-byte sectors whatever the logical block size */
                        p.start = start * 512;
                        p.size = size * 512;
                        if (sysfs_read_devnum(dirfd(d), de->d_name, "dev", &p.devnum) < 0)
                                continue;
                }

                if (n == allocated) {
                        size_t na = allocated ? allocated * 2 : 8;
                        KernelPartition *np = reallocarray(parts, na, sizeof(KernelPartition));
                        if (!np) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        parts = np;
                        allocated = na;
                }
                parts[n++] = p;
        }
        closedir(d);

        if (n > 0)
                qsort(parts, n, sizeof(KernelPartition), compare_kernel_partitions);
        *ret = n > 0 ? TAKE_PTR(parts) : NULL;
        *ret_n = n;
        return 0;
}

static int list_kernel(unsigned loop_number, bool numbers_only, KernelPartition **ret, size_t *ret_n)
{
        _cleanup_close_ int sysfd = -EBADF;

        if (!ret || !ret_n)
                return -EINVAL;
        sysfd = sysfs_open_loop(loop_number, 0);
        if (sysfd < 0)
                return sysfd;
        return list_partitions_sysfs(sysfd, loop_number, numbers_only, ret, ret_n);
}

int partition_list_kernel(unsigned loop_number, KernelPartition **ret, size_t *ret_n)
{
        return list_kernel(loop_number, false, ret, ret_n);
}

int partition_read_devnum(unsigned loop_number, unsigned partition, dev_t *ret)
{
        char dir[SYSFS_LOOP_PATH_MAX];

        return sysfs_read_devnum(AT_FDCWD, sysfs_loop_path(dir, loop_number, partition), "dev", ret);
}

/* One BLKPG operation on the whole disk devfd. */
static int blkpg(int devfd, int op, unsigned number, uint64_t start, uint64_t length)
{
        struct blkpg_partition p = {
                .start = (long long)start,
                .length = (long long)length,
                .pno = (int)number,
        };
        struct blkpg_ioctl_arg arg = {
                .op = op,
                .datalen = sizeof(p),
                .data = &p,
        };

        if (ioctl(devfd, BLKPG, &arg) < 0)
                return negative_errno();
        return 0;
}

int partition_specs_dup(const PartitionSpec *specs, size_t n, PartitionSpec **ret)
{
        PartitionSpec *copy = NULL;

        if (n > 0) {
                copy = malloc(n * sizeof(PartitionSpec));
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, specs, n * sizeof(PartitionSpec));
        }
        *ret = copy;
        return 0;
}

int partition_add_all(int devfd, const PartitionSpec *specs, size_t n)
{
        int r;

        if (devfd < 0 || (!specs && n > 0))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                r = blkpg(devfd, BLKPG_ADD_PARTITION, specs[i].number, specs[i].start, specs[i].length);
                /* EBUSY: this number exists already (fine if it is the same range) or the range overlaps
                 * another partition (skipped, as is anything else the kernel refuses). */
                if (r < 0 && r != -EBUSY && r != -EINVAL && r != -ENXIO && r != -EOVERFLOW)
                        return r;
        }
        return 0;
}

int partition_remove(int devfd, unsigned number)
{
        int r;

        if (devfd < 0 || number == 0)
                return -EINVAL;
        r = blkpg(devfd, BLKPG_DEL_PARTITION, number, 0, 0);
        if (r == -ENXIO || r == -ENODEV)
                return 0; /* gone already */
        return r;
}

int partition_remove_all(int devfd, unsigned loop_number)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        size_t n = 0;
        int r, ret = 0;

        if (devfd < 0)
                return -EINVAL;

        r = list_kernel(loop_number, true, &parts, &n);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                r = blkpg(devfd, BLKPG_DEL_PARTITION, parts[i].number, 0, 0);
                if (r == -ENXIO || r == -ENODEV)
                        continue; /* gone already */
                if (r == -EBUSY)
                        ret = -EBUSY;
                else if (r < 0 && ret == 0)
                        ret = r;
        }
        return ret;
}
