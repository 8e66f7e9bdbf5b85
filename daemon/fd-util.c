/* fd-util.c: fstat() of a caller's fd from the kernel's cached attributes (fd-util.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fd-util.h"

int fd_stat_cached_at(int dir_fd, const char *path, struct stat *ret)
{
        struct statx sx;

        if (statx(dir_fd, path, (path[0] ? 0 : AT_EMPTY_PATH) | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC,
                    STATX_BASIC_STATS, &sx) < 0)
                return -errno;
        if ((sx.stx_mask & (STATX_TYPE | STATX_MODE | STATX_INO)) != (STATX_TYPE | STATX_MODE | STATX_INO))
                return -EIO;
        memset(ret, 0, sizeof(*ret));
        ret->st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
        ret->st_ino = sx.stx_ino;
        ret->st_mode = sx.stx_mode;
        ret->st_nlink = sx.stx_nlink;
        ret->st_uid = sx.stx_uid;
        ret->st_gid = sx.stx_gid;
        ret->st_rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
        ret->st_size = (off_t)sx.stx_size;
        ret->st_blksize = (blksize_t)sx.stx_blksize;
        ret->st_blocks = (blkcnt_t)sx.stx_blocks;
        ret->st_atim = (struct timespec){ sx.stx_atime.tv_sec, sx.stx_atime.tv_nsec };
        ret->st_mtim = (struct timespec){ sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec };
        ret->st_ctim = (struct timespec){ sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec };
        return 0;
}

int fd_stat_cached(int fd, struct stat *ret)
{
        return fd_stat_cached_at(fd, "", ret);
}
