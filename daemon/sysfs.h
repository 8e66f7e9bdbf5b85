/* sysfs.h: attributes of block devices read from sysfs (/sys/block). Never logs, returns -errno. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Each reader takes dirfd (an open directory, or AT_FDCWD for an absolute dir), an optional dir below it
 * (NULL: the attribute is right in dirfd) and the attribute's name, which may have slashes ("loop/offset").
 * An attribute that is not there is -ENOENT; one whose device went between the open and the read is
 * -ENODEV (kernfs). */

/* The attribute's text into buf (size bytes with the NUL), one trailing newline dropped; its length. */
int sysfs_read(int dirfd, const char *dir, const char *attr, char *buf, size_t size);
/* A decimal number; -EINVAL if the text is anything else. */
int sysfs_read_u64(int dirfd, const char *dir, const char *attr, uint64_t *ret);
/* A number, true when not 0 ("ro", "loop/autoclear"). */
int sysfs_read_bool(int dirfd, const char *dir, const char *attr, bool *ret);
/* "MAJ:MIN" ("dev"). */
int sysfs_read_devnum(int dirfd, const char *dir, const char *attr, dev_t *ret);

/* /sys/block/loopN (partition 0) or its partition's directory /sys/block/loopN/loopNpM, in buf. */
#define SYSFS_LOOP_PATH_MAX 96
const char *sysfs_loop_path(char buf[static SYSFS_LOOP_PATH_MAX], unsigned number, unsigned partition);
/* Opens sysfs_loop_path() as an O_DIRECTORY fd: -ENODEV when there is no such device. */
int sysfs_open_loop(unsigned number, unsigned partition);
