/* sysfs.c: attributes of block devices read from sysfs (/sys/block). Never logs, returns -errno. */
#include "sysfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "macro.h"

int sysfs_read(int dirfd, const char *dir, const char *attr, char *buf, size_t size)
{
        _cleanup_close_ int fd = -EBADF;
        char path[256];
        ssize_t k;

        if (!attr || !buf || size == 0)
                return -EINVAL;
        if (dir && snprintf(path, sizeof(path), "%s/%s", dir, attr) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        fd = openat(dirfd, dir ? path : attr, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        k = read(fd, buf, size - 1);
        if (k < 0)
                return negative_errno();
        buf[k] = '\0';
        if (k > 0 && buf[k - 1] == '\n')
                buf[--k] = '\0';
        return (int)k;
}

int sysfs_read_u64(int dirfd, const char *dir, const char *attr, uint64_t *ret)
{
        unsigned long long v;
        char buf[32], *end;
        int r;

        r = sysfs_read(dirfd, dir, attr, buf, sizeof(buf));
        if (r < 0)
                return r;
        /* Digits only: strtoull() alone would take spaces and signs. */
        if (buf[0] < '0' || buf[0] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(buf, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

int sysfs_read_bool(int dirfd, const char *dir, const char *attr, bool *ret)
{
        uint64_t v;
        int r;

        r = sysfs_read_u64(dirfd, dir, attr, &v);
        if (r < 0)
                return r;
        *ret = v != 0;
        return 0;
}

int sysfs_read_devnum(int dirfd, const char *dir, const char *attr, dev_t *ret)
{
        unsigned maj, min;
        char buf[32], c;
        int r;

        r = sysfs_read(dirfd, dir, attr, buf, sizeof(buf));
        if (r < 0)
                return r;
        if (sscanf(buf, "%u:%u%c", &maj, &min, &c) != 2)
                return -EINVAL;
        *ret = makedev(maj, min);
        return 0;
}

const char *sysfs_loop_path(char buf[static SYSFS_LOOP_PATH_MAX], unsigned number, unsigned partition)
{
        if (partition == 0)
                snprintf(buf, SYSFS_LOOP_PATH_MAX, "/sys/block/loop%u", number);
        else
                snprintf(buf, SYSFS_LOOP_PATH_MAX, "/sys/block/loop%u/loop%up%u", number, number, partition);
        return buf;
}

int sysfs_open_loop(unsigned number, unsigned partition)
{
        char path[SYSFS_LOOP_PATH_MAX];
        int fd;

        fd = open(sysfs_loop_path(path, number, partition), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ENODEV : negative_errno();
        return fd;
}
