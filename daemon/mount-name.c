/* mount-name.c: where a mount goes: a safe name from an attacker-controlled label, and a mount point
 * directory under the media directory that nobody but root can tamper with. */

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "macro.h"
#include "mount.h"
#include "utf8.h"

#define NAME_MAX_BYTES 64
#define MOUNT_POINT_MAX_TRIES 10000

static bool is_unicode_space(uint32_t cp)
{
        return cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x202f ||
                cp == 0x205f || cp == 0x3000;
}

/* Characters that are invisible or reorder text: they make a name look like another one in a file
 * manager or a terminal ("Trojan source"). */
static bool is_unicode_format(uint32_t cp)
{
        return (cp >= 0x200b && cp <= 0x200f) || cp == 0x2028 || cp == 0x2029 ||
                (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff ||
                (cp >= 0xfff9 && cp <= 0xfffb);
}

int mount_name_sanitize(const char *label, char **ret)
{
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, start, end;

        if (!label || !ret)
                return -EINVAL;

        /* Every input byte yields at most one output byte, so the copy never outgrows the input. */
        buf = malloc(strlen(label) + 1);
        if (!buf)
                return -ENOMEM;

        for (const char *p = label; *p;) {
                uint32_t cp;
                size_t len = utf8_decode(p, &cp);

                if (len == 0) {
                        buf[n++] = '_'; /* invalid byte */
                        p++;
                        continue;
                }
                if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\v' || cp == '\f' || cp == '\r' ||
                        is_unicode_space(cp))
                        buf[n++] = ' ';
                else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == '/' ||
                        is_unicode_format(cp))
                        buf[n++] = '_';
                else {
                        memcpy(buf + n, p, len);
                        n += len;
                }
                p += len;
        }

        /* A leading dot would hide the directory, and "." / ".." are not names; strip dots and spaces
         * until neither leads. */
        start = 0;
        while (start < n && (buf[start] == '.' || buf[start] == ' '))
                start++;
        end = n;
        if (end - start > NAME_MAX_BYTES) {
                end = start + NAME_MAX_BYTES;
                /* Back up to a character boundary: the copy is valid UTF-8, so only continuation bytes
                 * (10xxxxxx) can sit at a cut in the middle of a character. */
                while (end > start && ((unsigned char)buf[end] & 0xc0) == 0x80)
                        end--;
        }
        while (end > start && buf[end - 1] == ' ')
                end--;
        if (end == start)
                return -EINVAL;

        memmove(buf, buf + start, end - start);
        buf[end - start] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

static bool filename_is_valid(const char *s)
{
        return !isempty(s) && !streq(s, ".") && !streq(s, "..") && !strchr(s, '/') && strlen(s) <= NAME_MAX;
}

/* Existing directories on the way to a mount point must be root's and not writable by others (unless
 * sticky, like /tmp): the returned path is resolved again by mount(2), so nobody may swap a component. */
static int dir_fd_check_safe(int fd)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (st.st_uid != 0)
                return -EPERM;
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
                return -EPERM;
        return 0;
}

static int open_dir_nofollow(int dirfd, const char *name)
{
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        return fd < 0 ? -errno : fd;
}

/* Opens the absolute path media_dir component by component without following symlinks, making missing
 * components root-owned 0755 when create is set. Returns the fd and the normalized path. */
static int media_dir_open(const char *media_dir, bool create, char **ret_path)
{
        _cleanup_free_ char *copy = NULL, *norm = NULL;
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        char *save = NULL;
        int r;

        if (isempty(media_dir) || media_dir[0] != '/')
                return -EINVAL;
        copy = strdup(media_dir);
        norm = malloc(strlen(media_dir) + 2);
        if (!copy || !norm)
                return -ENOMEM;

        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = dir_fd_check_safe(fd);
        if (r < 0)
                return r;

        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                _cleanup_close_ int next = -1;

                if (streq(c, ".") || streq(c, ".."))
                        return -EINVAL;
                next = open_dir_nofollow(fd, c);
                if (next == -ENOENT && create) {
                        if (mkdirat(fd, c, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        next = open_dir_nofollow(fd, c);
                        /* The umask may have taken bits away; never add any beyond 0755. */
                        if (next >= 0 && fchmod(next, 0755) < 0)
                                return -errno;
                }
                if (next < 0)
                        return next;
                r = dir_fd_check_safe(next);
                if (r < 0)
                        return r;
                safe_close(fd);
                fd = TAKE_FD(next);
                len += sprintf(norm + len, "/%s", c);
        }
        if (len == 0)
                strcpy(norm, "/");

        if (ret_path)
                *ret_path = TAKE_PTR(norm);
        return TAKE_FD(fd);
}

/* struct posix_acl_xattr_header / _entry from the kernel's uapi, little-endian on disk and in the
 * xattr. Written directly so that loopd does not need libacl for one ACL. */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER_OBJ 0x01
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP_OBJ 0x04
#define ACL_TAG_MASK 0x10
#define ACL_TAG_OTHER 0x20
#define ACL_UNDEFINED_ID UINT32_MAX

typedef struct __attribute__((packed)) AclEntry {
        uint16_t tag;
        uint16_t perm;
        uint32_t id;
} AclEntry;

typedef struct __attribute__((packed)) AclXattr {
        uint32_t version;
        AclEntry entries[5];
} AclXattr;

/* root rwx, uid r-x, group root r-x (the mode's 0750), nobody else: entries sorted by tag as the kernel
 * requires. */
static int user_dir_set_acl(int fd, uid_t uid)
{
        AclXattr acl = {
                .version = htole32(ACL_XATTR_VERSION),
                .entries = {
                        { htole16(ACL_TAG_USER_OBJ), htole16(7), htole32(ACL_UNDEFINED_ID) },
                        { htole16(ACL_TAG_USER), htole16(5), htole32(uid) },
                        { htole16(ACL_TAG_GROUP_OBJ), htole16(5), htole32(ACL_UNDEFINED_ID) },
                        { htole16(ACL_TAG_MASK), htole16(5), htole32(ACL_UNDEFINED_ID) },
                        { htole16(ACL_TAG_OTHER), htole16(0), htole32(ACL_UNDEFINED_ID) },
                },
        };

        return fsetxattr(fd, "system.posix_acl_access", &acl, sizeof(acl), 0) < 0 ? -errno : 0;
}

static int user_dir_open(int media_fd, const char *user, uid_t uid, gid_t gid)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        int r;

        /* Made 0700 and opened up below, so it is never more open than intended. */
        if (mkdirat(media_fd, user, 0700) < 0 && errno != EEXIST)
                return -errno;
        fd = open_dir_nofollow(media_fd, user);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_uid != 0)
                return -EPERM;

        /* Whatever an earlier run (or the no-ACL fallback) left: root:root 0750, then the ACL. */
        if (fchown(fd, 0, 0) < 0 || fchmod(fd, 0750) < 0)
                return -errno;
        if (uid == 0) {
                if (fremovexattr(fd, "system.posix_acl_access") < 0 && errno != ENODATA &&
                        errno != EOPNOTSUPP)
                        return -errno;
        } else {
                r = user_dir_set_acl(fd, uid);
                if (r == -EOPNOTSUPP) {
                        if (fchown(fd, 0, gid) < 0)
                                return -errno;
                } else if (r < 0)
                        return r;
        }
        return TAKE_FD(fd);
}

int mount_point_create(
        const char *media_dir, const char *user, uid_t uid, gid_t gid, const char *name, char **ret_path)
{
        _cleanup_free_ char *media = NULL;
        _cleanup_close_ int media_fd = -1, user_fd = -1;

        if (!filename_is_valid(user) || !filename_is_valid(name) || strlen(name) > NAME_MAX - 6 || !ret_path)
                return -EINVAL;

        media_fd = media_dir_open(media_dir, true, &media);
        if (media_fd < 0)
                return media_fd;
        user_fd = user_dir_open(media_fd, user, uid, gid);
        if (user_fd < 0)
                return user_fd;

        for (unsigned i = 0; i < MOUNT_POINT_MAX_TRIES; i++) {
                _cleanup_free_ char *candidate = NULL, *path = NULL;

                if ((i == 0 ? asprintf(&candidate, "%s", name) : asprintf(&candidate, "%s-%u", name, i)) < 0)
                        return -ENOMEM;
                if (mkdirat(user_fd, candidate, 0700) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return -errno;
                }
                if (asprintf(&path, "%s%s%s/%s", media, streq(media, "/") ? "" : "/", user, candidate) < 0) {
                        (void)unlinkat(user_fd, candidate, AT_REMOVEDIR);
                        return -ENOMEM;
                }
                *ret_path = TAKE_PTR(path);
                return 0;
        }
        return -EEXIST;
}

int mount_point_remove(const char *media_dir, const char *path)
{
        _cleanup_free_ char *media = NULL, *rest = NULL;
        _cleanup_close_ int media_fd = -1, user_fd = -1;
        size_t len;
        char *slash;
        int r;

        if (!path)
                return -EINVAL;
        media_fd = media_dir_open(media_dir, false, &media);
        if (media_fd < 0)
                return media_fd;

        /* path must be exactly MEDIA/USER/NAME. */
        len = streq(media, "/") ? 0 : strlen(media);
        if (strncmp(path, media, len) != 0 || path[len] != '/')
                return -EINVAL;
        rest = strdup(path + len + 1);
        if (!rest)
                return -ENOMEM;
        slash = strchr(rest, '/');
        if (!slash)
                return -EINVAL;
        *slash = '\0';
        if (!filename_is_valid(rest) || !filename_is_valid(slash + 1))
                return -EINVAL;

        user_fd = open_dir_nofollow(media_fd, rest);
        if (user_fd < 0)
                return user_fd;
        r = unlinkat(user_fd, slash + 1, AT_REMOVEDIR) < 0 ? -errno : 0;
        if (r < 0 && r != -ENOENT)
                return r;
        /* Unmounted, whoever did it and however (root's umount2(), a FUSE server's death): what libmount
         * kept of the mount goes with the mount point. */
        (void)mount_utab_forget(path);
        return r;
}
