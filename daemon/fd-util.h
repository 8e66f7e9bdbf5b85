/* fd-util.h: what loopd may ask of a file that a caller handed it, without asking the file's filesystem.
 * Never logs. */
#pragma once

#include <sys/stat.h>

/* fstat(fd) from what the kernel already knows of the file (statx() with AT_STATX_DONT_SYNC): a FUSE or
 * network filesystem is not asked, so a server that never answers cannot hold the caller. Type, mode,
 * owner, device and inode are right; the size is the one the kernel has (what a loop device bound to the
 * file sees); times may be stale. 0 or -errno. */
int fd_stat_cached(int fd, struct stat *ret);
/* The same for path relative to dir_fd, symbolic links followed, no automount ("" is dir_fd itself): for a
 * process's /proc/PID/fd/N, a link that leads straight to a file of whatever filesystem that process has
 * open. Only such a path asks no filesystem: looking up the components of any other may. */
int fd_stat_cached_at(int dir_fd, const char *path, struct stat *ret);
