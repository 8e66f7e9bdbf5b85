/* mount-table.c: the mount table (/proc/self/mountinfo through libmount): which mounts are of loop devices,
 * where a device is mounted, what is mounted at a path; and the userspace part of loopd's mounts that
 * libmount keeps in /run/mount/utab. */
#include <errno.h>
#include <fcntl.h>
#include <libmount.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"
#include "macro.h"
#include "mount-internal.h"
#include "strv.h"

#define MOUNTINFO "/proc/self/mountinfo"

bool mount_fstype_is_fuse(const char *fstype)
{
        return fstype &&
                (streq(fstype, "fuse") || streq(fstype, "fuseblk") || strncmp(fstype, "fuse.", 5) == 0);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_iter *, mnt_free_iter);

/* The mount table as loopd last read it, and a mountinfo fd of its own that says whether the table changed
 * since: poll() on it gives POLLPRI when the namespace's table changed (any number of times) since the fd's
 * last poll (the kernel compares the table's event count with the fd's, which the poll itself brings up to
 * date; a change while the table is read is then reported by the next poll, and read again). Each Mount
 * and Unmount looked up the table five to seven times, each a parse of the whole of mountinfo. Only the
 * process that made the cache uses it: a child forked of loopd shares the fd's state, and its poll would
 * take a change from loopd. The fd stays in the mount namespace it was opened in: a process that loaded
 * the table must not load it again after unshare() or setns() (none does). */
static struct {
        struct libmnt_table *table;
        int fd;
        pid_t pid;
} cached = { .fd = -EBADF };

int mount_table_load(MountTable **ret)
{
        struct pollfd p = { .fd = cached.fd, .events = POLLPRI };
        pid_t pid = getpid();
        bool own = cached.fd < 0 || cached.pid == pid;
        struct libmnt_table *tb;

        /* 1 (POLLPRI, POLLERR): changed since this fd's last poll; -1: cannot tell. */
        if (own && cached.table && poll(&p, 1, 0) == 0) {
                *ret = cached.table;
                mnt_ref_table(cached.table);
                return 0;
        }
        /* What the poll said changed is gone, whether or not the table can be read now. The fd before the
         * table: a change from here on is one its next poll reports. */
        if (own) {
                cached.table = mount_table_unref(cached.table);
                if (cached.fd < 0) {
                        cached.fd = open(MOUNTINFO, O_RDONLY | O_CLOEXEC);
                        cached.pid = pid;
                }
        }
        tb = mnt_new_table_from_file(MOUNTINFO);
        if (!tb)
                return errno > 0 ? -errno : -EIO;
        if (own && cached.fd >= 0) {
                mnt_ref_table(tb);
                cached.table = tb;
        }
        *ret = tb;
        return 0;
}

dev_t mount_source_rdev(const char *source)
{
        struct stat st;

        if (source && strncmp(source, "/dev/", 5) == 0 && stat(source, &st) == 0 && S_ISBLK(st.st_mode))
                return st.st_rdev;
        return 0;
}

/* Strips trailing slashes, as mountinfo spells targets without them. */
static char *target_normalize(const char *target)
{
        char *t = strdup(target);
        size_t len;

        if (!t)
                return NULL;
        len = strlen(t);
        while (len > 1 && t[len - 1] == '/')
                t[--len] = '\0';
        return t;
}

struct libmnt_fs *mount_table_at(MountTable *tb, const char *target)
{
        _cleanup_free_ char *t = target_normalize(target);

        return t ? mnt_table_find_target(tb, t, MNT_ITER_BACKWARD) : NULL;
}

/* A FUSE mount's source is whatever its server calls itself: any user can make one through fusermount with
 * fsname=/dev/loopN, in a directory of their own. Such a mount must not pass for the device's (it would make
 * Mount say AlreadyMounted, Detach say Busy, keep an autoclear device bound, and have loopd unmount it).
 * fusermount always records the mounting user as user_id=, which nobody can set to 0 but root: the FUSE
 * mounts loopd's helpers make have user_id=0. */
static bool fuse_mount_by_root(struct libmnt_fs *fs)
{
        const char *options = mnt_fs_get_fs_options(fs);
        char *value = NULL;
        size_t len = 0;

        return options && mnt_optstr_get_option(options, "user_id", &value, &len) == 0 && len == 1 &&
                value[0] == '0';
}

MountTable *mount_table_unref(MountTable *table)
{
        mnt_unref_table(table);
        return NULL;
}

void loop_mounts_free(LoopMount *mounts, size_t n)
{
        for (size_t i = 0; i < n && mounts; i++) {
                free(mounts[i].node);
                free(mounts[i].target);
        }
        free(mounts);
}

int mount_table_loop_mounts(MountTable *tb, LoopMount **ret, size_t *ret_n)
{
        _cleanup_(mnt_free_iterp) struct libmnt_iter *itr = NULL;
        LoopMount *list = NULL;
        struct libmnt_fs *fs;
        size_t n = 0;

        if (!tb || !ret || !ret_n)
                return -EINVAL;
        itr = mnt_new_iter(MNT_ITER_FORWARD);
        if (!itr)
                return -ENOMEM;
        while (mnt_table_next_fs(tb, itr, &fs) == 0) {
                const char *source = mnt_fs_get_source(fs), *target = mnt_fs_get_target(fs);
                unsigned number, partition;
                LoopMount *grown;

                if (!source || !target || !startswith(source, "/dev/") ||
                        loop_parse_node(source, &number, &partition) < 0)
                        continue;
                if (mount_fstype_is_fuse(mnt_fs_get_fstype(fs)) && !fuse_mount_by_root(fs))
                        continue;
                grown = reallocarray(list, n + 1, sizeof(LoopMount));
                if (!grown) {
                        loop_mounts_free(list, n);
                        return -ENOMEM;
                }
                list = grown;
                list[n] = (LoopMount){ .node = strdup(source), .target = strdup(target), .number = number };
                n++;
                if (!list[n - 1].node || !list[n - 1].target) {
                        loop_mounts_free(list, n);
                        return -ENOMEM;
                }
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

int mount_table_find_targets(MountTable *tb, dev_t devnum, const char *node, char ***ret_targets)
{
        _cleanup_(mnt_free_iterp) struct libmnt_iter *itr = NULL;
        _cleanup_strv_free_ char **targets = NULL;
        struct libmnt_fs *fs;
        int r;

        if (!tb || !ret_targets)
                return -EINVAL;
        itr = mnt_new_iter(MNT_ITER_FORWARD);
        targets = calloc(1, sizeof(char *));
        if (!itr || !targets)
                return -ENOMEM;

        while (mnt_table_next_fs(tb, itr, &fs) == 0) {
                const char *source = mnt_fs_get_source(fs), *target = mnt_fs_get_target(fs);
                bool match;

                if (!target)
                        continue;
                if (mount_fstype_is_fuse(mnt_fs_get_fstype(fs)))
                        match = node && streq_ptr(source, node) && fuse_mount_by_root(fs);
                else
                        match = devnum != 0 &&
                                (mnt_fs_get_devno(fs) == devnum || mount_source_rdev(source) == devnum);
                if (!match || strv_contains(targets, target))
                        continue;

                r = strv_consume(&targets, strdup(target));
                if (r < 0)
                        return r;
        }

        *ret_targets = TAKE_PTR(targets);
        return 0;
}

int mount_find_targets(dev_t devnum, const char *node, char ***ret_targets)
{
        _cleanup_(mount_table_unrefp) MountTable *tb = NULL;
        int r;

        if (!ret_targets)
                return -EINVAL;
        r = mount_table_load(&tb);
        if (r < 0)
                return r;
        return mount_table_find_targets(tb, devnum, node, ret_targets);
}

int mount_find_source(const char *target, char **ret_source, dev_t *ret_devnum)
{
        _cleanup_(mount_table_unrefp) MountTable *tb = NULL;
        struct libmnt_fs *fs;
        const char *source;
        dev_t devnum;
        int r;

        if (isempty(target))
                return -EINVAL;
        r = mount_table_load(&tb);
        if (r < 0)
                return r;
        fs = mount_table_at(tb, target);
        /* A user's FUSE mount named after a loop device is not the device's (see fuse_mount_by_root()):
         * loopd must never unmount it, wherever it is. */
        if (!fs || (mount_fstype_is_fuse(mnt_fs_get_fstype(fs)) && !fuse_mount_by_root(fs)))
                return -ENOENT;

        source = mnt_fs_get_source(fs);
        devnum = mount_source_rdev(source) ?: mnt_fs_get_devno(fs);
        if (ret_source) {
                char *s = strdup(strempty(source));
                if (!s)
                        return -ENOMEM;
                *ret_source = s;
        }
        if (ret_devnum)
                *ret_devnum = devnum;
        return 0;
}

/* ---- /run/mount/utab ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_update *, mnt_free_update);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_fs *, mnt_unref_fs);

static bool is_octal(char c)
{
        return c >= '0' && c <= '7';
}

/* Does a line of utab name target? libmount writes "SRC=... TARGET=... ROOT=... OPTS=..." with ' ', '\t',
 * '\n' and '\\' as \ooo (util-linux lib/mangle.c); libmount 2.38 has no public reader of the format
 * (mnt_table_parse_file() takes it for fstab). */
static bool utab_line_names(const char *line, const char *target)
{
        for (const char *p = line; *p;) {
                while (*p == ' ')
                        p++;
                if (startswith(p, "TARGET=")) {
                        const char *t = target;

                        for (p += strlen("TARGET="); *p && *p != ' ' && *p != '\n'; t++) {
                                char c = *p++;

                                if (c == '\\' && is_octal(p[0]) && is_octal(p[1]) && is_octal(p[2])) {
                                        c = (char)((p[0] - '0') << 6 | (p[1] - '0') << 3 | (p[2] - '0'));
                                        p += 3;
                                }
                                if (*t != c)
                                        return false;
                        }
                        return *t == '\0';
                }
                while (*p && *p != ' ')
                        p++;
        }
        return false;
}

/* How many entries of the utab file name target (0 when there is no such file). */
static size_t utab_count(const char *filename, const char *target)
{
        _cleanup_fclose_ FILE *f = fopen(filename, "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0, n = 0;

        if (!f)
                return 0;
        while (getline(&line, &size, f) > 0)
                if (utab_line_names(line, target))
                        n++;
        return n;
}

int mount_utab_add(const char *node, const char *target, const char *userspace_options)
{
        _cleanup_(mnt_free_updatep) struct libmnt_update *upd = mnt_new_update();
        _cleanup_(mnt_unref_fsp) struct libmnt_fs *fs = mnt_new_fs();
        int r;

        if (!upd || !fs)
                return -ENOMEM;
        r = mnt_fs_set_source(fs, node);
        if (r >= 0)
                r = mnt_fs_set_target(fs, target);
        if (r >= 0)
                r = mnt_fs_set_options(fs, userspace_options);
        if (r < 0)
                return r;
        /* As libmount's own mount(8) records it (root "/", the userspace options only); 1: no utab to
         * write, as libmount would skip it for a mount of its own. */
        r = mnt_update_set_fs(upd, 0, NULL, fs);
        if (r != 0)
                return r < 0 ? r : 0;
        r = mnt_update_table(upd, NULL);
        if (r < 0)
                return r > -4096 ? r : -EIO; /* -MNT_ERR_LOCK and the like */
        return 0;
}

int mount_utab_forget(const char *target)
{
        _cleanup_(mount_table_unrefp) MountTable *tb = NULL;
        _cleanup_free_ char *t = NULL;
        int r;

        if (isempty(target) || target[0] != '/')
                return -EINVAL;
        t = target_normalize(target);
        if (!t)
                return -ENOMEM;

        /* libmount removes one entry per update (the last one for the target); a stale one may sit below
         * the newest. Bounded: loopd makes at most one mount per mount point. */
        for (unsigned i = 0; i < 16; i++) {
                _cleanup_(mnt_free_updatep) struct libmnt_update *upd = mnt_new_update();

                if (!upd)
                        return -ENOMEM;
                r = mnt_update_set_fs(upd, 0, t, NULL);
                if (r != 0)
                        return r < 0 ? r : 0; /* 1: there is no utab */
                if (utab_count(mnt_update_get_filename(upd), t) == 0)
                        return 0;
                /* An entry for a mount that is still there is that mount's. The mount table is read only
                 * when there is an entry to drop (a new mount point has none), and once: dropping entries
                 * does not change it. */
                if (!tb) {
                        r = mount_table_load(&tb);
                        if (r < 0)
                                return r;
                        if (mount_table_at(tb, t))
                                return 0;
                }
                r = mnt_update_table(upd, NULL);
                if (r < 0)
                        return r > -4096 ? r : -EIO;
        }
        return -EBUSY;
}
