/* loop-info.c: what the kernel says about bound loop devices, one or all of them, from sysfs alone. Never
 * LOOP_GET_STATUS64: it asks the backing file's filesystem for the file's attributes, and a FUSE server that
 * does not answer holds the caller in the kernel for as long as it pleases. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop-internal.h"
#include "macro.h"
#include "sysfs.h"

LoopInfo *loop_info_free(LoopInfo *info)
{
        if (!info)
                return NULL;
        free(info->backing_file);
        free(info);
        return NULL;
}

int loop_info_dup(const LoopInfo *info, LoopInfo **ret)
{
        LoopInfo *copy = malloc(sizeof(LoopInfo));

        if (!copy)
                return -ENOMEM;
        *copy = *info;
        copy->backing_file = strdup(info->backing_file);
        if (!copy->backing_file) {
                free(copy);
                return -ENOMEM;
        }
        *ret = copy;
        return 0;
}

uint64_t loop_uevent_seqnum(void)
{
        uint64_t v;

        return sysfs_read_u64(AT_FDCWD, NULL, "/sys/kernel/uevent_seqnum", &v) >= 0 ? v : 0;
}

int loop_part_shift_of(uint64_t max_part)
{
        /* A minor has 20 bits (the driver itself refuses more than 256 minors a device). */
        if (max_part >= 1u << 20)
                return -ERANGE;
        return max_part == 0 ? 0 : 64 - __builtin_clzll(max_part);
}

int loop_part_shift(void)
{
        uint64_t max_part;
        int r;

        r = sysfs_read_u64(AT_FDCWD, NULL, "/sys/module/loop/parameters/max_part", &max_part);
        return r < 0 ? r : loop_part_shift_of(max_part);
}

void loop_info_array_free(LoopInfo **infos, size_t n)
{
        if (!infos)
                return;
        for (size_t i = 0; i < n; i++)
                loop_info_free(infos[i]);
        free(infos);
}

/* An attribute vanishing means the device was unbound while we read it: ENOENT when it was gone before the
 * open, ENODEV (kernfs) when it went between the open and the read. */
static int unbound_if_gone(int r)
{
        return r == -ENOENT || r == -ENODEV ? -ENXIO : r;
}

/* Which device /sys/block/loopN (sysfd, an open directory) is: its diskseq (read first: see
 * read_info()), backing file and devnum. -ENXIO if the device is not bound. */
static int read_identity_sysfs(int sysfd, unsigned number, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        uint64_t v;
        int r;

        info = calloc(1, sizeof(LoopInfo));
        if (!info)
                return -ENOMEM;
        info->number = number;

        if (sysfs_read_u64(sysfd, NULL, "diskseq", &v) >= 0)
                info->diskseq = v;
        r = loop_read_backing_file(sysfd, "loop", "backing_file", &info->backing_file);
        if (r < 0)
                return unbound_if_gone(r);
        r = sysfs_read_devnum(sysfd, NULL, "dev", &info->devnum);
        if (r < 0)
                return unbound_if_gone(r);

        *ret = TAKE_PTR(info);
        return 0;
}

/* The rest of info from sysfs: offset, size limit, flags, read-only, size, sector size. */
static int read_state_sysfs(int sysfd, LoopInfo *info)
{
        uint64_t v;
        int r;

        r = sysfs_read_u64(sysfd, "loop", "offset", &info->offset);
        if (r >= 0)
                r = sysfs_read_u64(sysfd, "loop", "sizelimit", &info->size_limit);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, "loop", "autoclear", &info->autoclear);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, "loop", "partscan", &info->partscan);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, "loop", "dio", &info->direct_io);
        if (r >= 0)
                r = sysfs_read_bool(sysfd, NULL, "ro", &info->read_only);
        if (r >= 0)
                r = sysfs_read_u64(sysfd, NULL, "size", &v);
        if (r < 0)
                return unbound_if_gone(r);
        if (v > UINT64_MAX / 512)
                return -EINVAL;
        info->size = v * 512;

        if (sysfs_read_u64(sysfd, NULL, "queue/logical_block_size", &v) >= 0 && v >= 512 && v <= 65536)
                info->sector_size = (uint32_t)v;
        else
                info->sector_size = 512;
        return 0;
}

/* Only what ListDevices reports (backing file, offset, size limit, autoclear, read-only, sector size,
 * diskseq), with paths relative to /sys/block and no directory fds: 21 syscalls a device instead of 37,
 * which is most of ListDevices' time with hundreds of devices. devnum, size, partscan and direct_io stay 0.
 * -ENXIO if the device is not bound. */
static int read_info_sysfs_brief(int blockfd, const char *name, unsigned number, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        uint64_t autoclear = 0, ro = 0, v;
        int r;

        info = calloc(1, sizeof(LoopInfo));
        if (!info)
                return -ENOMEM;
        info->number = number;

        r = loop_read_backing_file(blockfd, name, "loop/backing_file", &info->backing_file);
        if (r < 0)
                return r == -ENOENT ? -ENXIO : r;

        r = sysfs_read_u64(blockfd, name, "loop/offset", &info->offset);
        if (r >= 0)
                r = sysfs_read_u64(blockfd, name, "loop/sizelimit", &info->size_limit);
        if (r >= 0)
                r = sysfs_read_u64(blockfd, name, "loop/autoclear", &autoclear);
        if (r >= 0)
                r = sysfs_read_u64(blockfd, name, "ro", &ro);
        if (r < 0)
                return r == -ENOENT ? -ENXIO : r;
        info->autoclear = autoclear != 0;
        info->read_only = ro != 0;

        r = sysfs_read_u64(blockfd, name, "queue/logical_block_size", &v);
        info->sector_size = r >= 0 && v >= 512 && v <= 65536 ? (uint32_t)v : 512;
        if (sysfs_read_u64(blockfd, name, "diskseq", &v) >= 0)
                info->diskseq = v;

        *ret = TAKE_PTR(info);
        return 0;
}

int loop_backing_name(int fd, char **ret)
{
        char link[sizeof("/proc/self/fd/") + 3 * sizeof(int)], target[PATH_MAX + 1];
        ssize_t k;

        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        k = readlink(link, target, sizeof(target));
        if (k < 0)
                return negative_errno();
        if ((size_t)k >= sizeof(target))
                return -ENAMETOOLONG;
        *ret = strndup(target, (size_t)k);
        return *ret ? 0 : -ENOMEM;
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

bool loop_is_bound(unsigned number, uint64_t diskseq)
{
        _cleanup_close_ int sysfd = -EBADF;
        char buf[8];
        uint64_t seq;

        sysfd = sysfs_open_loop(number, 0);
        if (sysfd < 0)
                return false;
        if (sysfs_read(sysfd, NULL, "loop/offset", buf, sizeof(buf)) < 0)
                return false;
        /* Bound again since, by someone else: not that device. */
        if (diskseq != 0 && sysfs_read_u64(sysfd, NULL, "diskseq", &seq) >= 0 && seq != diskseq)
                return false;
        return true;
}

int loop_autoclear_of(unsigned number, uint64_t diskseq)
{
        char dir[SYSFS_LOOP_PATH_MAX];
        uint64_t seq;
        bool autoclear;
        int r;

        /* By path, not through sysfs_open_loop(): a close event mostly reads the flag alone. */
        sysfs_loop_path(dir, number, 0);
        r = sysfs_read_bool(AT_FDCWD, dir, "loop/autoclear", &autoclear);
        if (r < 0)
                return unbound_if_gone(r) == -ENXIO ? 0 : r;
        if (!autoclear)
                return 0;
        /* A kernel without diskseqs (before 5.15) records 0: then any binding of the number is taken. */
        if (diskseq == 0)
                return 1;
        r = sysfs_read_u64(AT_FDCWD, dir, "diskseq", &seq);
        if (r < 0)
                return unbound_if_gone(r) == -ENXIO ? 0 : r;
        return seq == diskseq;
}

/* loopN's info from its sysfs directory (sysfd). Every binding has a diskseq of its own: unchanged from the
 * first read to the last, all of it is one binding's, not partly the next one's (bound to the number
 * meanwhile). */
static int read_info(int sysfd, unsigned number, bool identity_only, LoopInfo **ret)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        uint64_t diskseq;
        int r;

        r = read_identity_sysfs(sysfd, number, &info);
        if (r < 0)
                return r;
        if (!identity_only) {
                r = read_state_sysfs(sysfd, info);
                if (r < 0)
                        return r;
        }
        if (info->diskseq != 0 &&
                (sysfs_read_u64(sysfd, NULL, "diskseq", &diskseq) < 0 || diskseq != info->diskseq))
                return -ENXIO;
        *ret = TAKE_PTR(info);
        return 0;
}

static int get_info(unsigned number, bool identity_only, LoopInfo **ret)
{
        _cleanup_close_ int sysfd = -EBADF;

        if (!ret)
                return -EINVAL;
        sysfd = sysfs_open_loop(number, 0);
        if (sysfd < 0)
                return sysfd;
        return read_info(sysfd, number, identity_only, ret);
}

int loop_get_info(unsigned number, LoopInfo **ret)
{
        return get_info(number, false, ret);
}

int loop_get_identity(unsigned number, LoopInfo **ret)
{
        return get_info(number, true, ret);
}

static int compare_infos(const void *a, const void *b)
{
        const LoopInfo *x = *(LoopInfo *const *)a, *y = *(LoopInfo *const *)b;
        return x->number < y->number ? -1 : x->number > y->number;
}

/* Sysfs only, as everything here: ListDevices calls this often, and opening devices would disturb their
 * owners (an open turns someone else's LOOP_CLR_FD into a mere autoclear). */
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
                        r = read_info(sysfd, number, false, &info);
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
