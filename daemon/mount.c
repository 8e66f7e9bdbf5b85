/* mount.c: mounting filesystems for users (the kernel through libmount, or a FUSE helper), unmounting, and
 * mount table lookups. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libmount.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "macro.h"
#include "mount.h"
#include "strv.h"

#define HELPER_TIMEOUT_MS (30 * 1000)
#define HELPER_EXIT_TIMEOUT_MS (10 * 1000)
#define MOUNTINFO "/proc/self/mountinfo"

typedef struct FsDriver {
        const char *fstype;
        const char *kernel_names[3]; /* tried in order in /proc/filesystems */
        const char *helpers[4]; /* FUSE helper binaries, first installed one wins */
        const char *helper_flag; /* an extra first argument */
        bool options_first; /* HELPER -o OPTS NODE TARGET, else HELPER NODE TARGET -o OPTS */
} FsDriver;

static const FsDriver drivers[] = {
        { "ext2", { "ext2" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" } },
        { "ext3", { "ext3" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" } },
        { "ext4", { "ext4" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" } },
        { "xfs", { "xfs" } },
        { "btrfs", { "btrfs" } },
        { "squashfs", { "squashfs" }, { "/usr/bin/squashfuse" }, .options_first = true },
        { "erofs", { "erofs" } },
        { "vfat", { "vfat" }, { "/usr/bin/fusefat" } },
        { "exfat", { "exfat" }, { "/usr/sbin/mount.exfat-fuse", "/sbin/mount.exfat-fuse" },
                .options_first = true },
        { "ntfs", { "ntfs3", "ntfs" }, { "/usr/bin/ntfs-3g", "/bin/ntfs-3g" }, .options_first = true },
        /* -n: no ~/.mtab.fuseiso */
        { "iso9660", { "iso9660" }, { "/usr/bin/fuseiso" }, "-n" },
        { "udf", { "udf" } },
};

static const FsDriver *driver_find(const char *fstype)
{
        if (!fstype)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(drivers); i++)
                if (streq(drivers[i].fstype, fstype))
                        return &drivers[i];
        return NULL;
}

static bool strv_contains(char **l, const char *s)
{
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

static bool strv_contains_n(char **l, size_t n, const char *s)
{
        for (size_t i = 0; i < n; i++)
                if (streq(l[i], s))
                        return true;
        return false;
}

static bool fstype_is_fuse(const char *fstype)
{
        return fstype &&
                (streq(fstype, "fuse") || streq(fstype, "fuseblk") || strncmp(fstype, "fuse.", 5) == 0);
}

/* ---- drivers ---- */

static bool proc_filesystems_has(const char *name)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/filesystems", "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        if (!f)
                return false;
        while (getline(&line, &size, f) > 0) {
                char *p = line;

                /* "nodev" filesystems cannot mount a block device. */
                if (strncmp(p, "nodev", 5) == 0)
                        continue;
                p += strspn(p, " \t");
                p[strcspn(p, " \t\n")] = '\0';
                if (streq(p, name))
                        return true;
        }
        return false;
}

/* A driver built as a module is missing from /proc/filesystems until its first mount loads it
 * (request_module("fs-<type>")); on a desktop that is the usual state of vfat. */
static bool kernel_module_provides(const char *name)
{
        _cleanup_free_ char *path = NULL, *prefix = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        struct utsname u;
        size_t size = 0;

        if (uname(&u) < 0 || asprintf(&path, "/lib/modules/%s/modules.alias", u.release) < 0 ||
                asprintf(&prefix, "alias fs-%s ", name) < 0)
                return false;
        f = fopen(path, "re");
        if (!f)
                return false;
        while (getline(&line, &size, f) > 0)
                if (strncmp(line, prefix, strlen(prefix)) == 0)
                        return true;
        return false;
}

static const char *kernel_fs_name(const FsDriver *d)
{
        for (size_t i = 0; i < ELEMENTSOF(d->kernel_names) && d->kernel_names[i]; i++)
                if (proc_filesystems_has(d->kernel_names[i]) || kernel_module_provides(d->kernel_names[i]))
                        return d->kernel_names[i];
        return NULL;
}

bool mount_kernel_has_filesystem(const char *fstype)
{
        const FsDriver *d = driver_find(fstype);

        return d && kernel_fs_name(d);
}

const char *mount_fuse_helper(const char *fstype)
{
        const FsDriver *d = driver_find(fstype);

        if (!d)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(d->helpers) && d->helpers[i]; i++)
                if (access(d->helpers[i], X_OK) == 0)
                        return d->helpers[i];
        return NULL;
}

int mount_pick_driver(const char *fstype, bool *ret_fuse)
{
        if (!ret_fuse)
                return -EINVAL;
        if (!driver_find(fstype))
                return -EPROTONOSUPPORT;
        if (mount_kernel_has_filesystem(fstype))
                *ret_fuse = false;
        else if (mount_fuse_helper(fstype))
                *ret_fuse = true;
        else
                return -EPROTONOSUPPORT;
        return 0;
}

/* ---- mount table ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_table *, mnt_unref_table);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_iter *, mnt_free_iter);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_context *, mnt_free_context);

static int mountinfo_load(struct libmnt_table **ret)
{
        struct libmnt_table *tb = mnt_new_table_from_file(MOUNTINFO);

        if (!tb)
                return errno > 0 ? -errno : -EIO;
        *ret = tb;
        return 0;
}

static dev_t source_rdev(const char *source)
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

/* The topmost mount at target, from a table the caller keeps. */
static struct libmnt_fs *mount_at(struct libmnt_table *tb, const char *target)
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

int mount_table_load(MountTable **ret)
{
        return mountinfo_load(ret);
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
                if (fstype_is_fuse(mnt_fs_get_fstype(fs)) && !fuse_mount_by_root(fs))
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
                if (fstype_is_fuse(mnt_fs_get_fstype(fs)))
                        match = node && streq_ptr(source, node) && fuse_mount_by_root(fs);
                else
                        match = devnum != 0 &&
                                (mnt_fs_get_devno(fs) == devnum || source_rdev(source) == devnum);
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
        _cleanup_(mnt_unref_tablep) struct libmnt_table *tb = NULL;
        int r;

        if (!ret_targets)
                return -EINVAL;
        r = mountinfo_load(&tb);
        if (r < 0)
                return r;
        return mount_table_find_targets(tb, devnum, node, ret_targets);
}

int mount_find_source(const char *target, char **ret_source, dev_t *ret_devnum)
{
        _cleanup_(mnt_unref_tablep) struct libmnt_table *tb = NULL;
        struct libmnt_fs *fs;
        const char *source;
        dev_t devnum;
        int r;

        if (isempty(target))
                return -EINVAL;
        r = mountinfo_load(&tb);
        if (r < 0)
                return r;
        fs = mount_at(tb, target);
        /* A user's FUSE mount named after a loop device is not the device's (see fuse_mount_by_root()):
         * loopd must never unmount it, wherever it is. */
        if (!fs || (fstype_is_fuse(mnt_fs_get_fstype(fs)) && !fuse_mount_by_root(fs)))
                return -ENOENT;

        source = mnt_fs_get_source(fs);
        devnum = source_rdev(source) ?: mnt_fs_get_devno(fs);
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

/* ---- mounting ---- */

/* Defense in depth for options that did not come from mount_options_build(): no mount without
 * nosuid,nodev. */
static int options_check_safe(const char *options)
{
        _cleanup_free_ char *copy = strdup(options);
        bool nosuid = false, nodev = false;
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
                if (streq(o, "suid") || streq(o, "dev") || streq(o, "defaults"))
                        return -EINVAL;
                nosuid = nosuid || streq(o, "nosuid");
                nodev = nodev || streq(o, "nodev");
        }
        return nosuid && nodev ? 0 : -EINVAL;
}

static int kernel_mount(const FsDriver *d, const char *node, const char *target, const char *options)
{
        _cleanup_(mnt_free_contextp) struct libmnt_context *cxt = NULL;
        const char *kname = kernel_fs_name(d);
        int r;

        if (!kname)
                return -EPROTONOSUPPORT;
        cxt = mnt_new_context();
        if (!cxt)
                return -ENOMEM;

        /* No fstab or mtab merging, no path canonicalization (the paths are ours and exact), no utab
         * (there are no userspace options), and no silent read-only retry: a read-only device must be
         * mounted with read_only so that its journal is not replayed. */
        r = mnt_context_set_optsmode(cxt, MNT_OMODE_IGNORE | MNT_OMODE_NOTAB);
        if (r >= 0)
                r = mnt_context_disable_canonicalize(cxt, true);
        if (r >= 0)
                r = mnt_context_disable_mtab(cxt, true);
        if (r >= 0)
                r = mnt_context_enable_rwonly_mount(cxt, true);
        if (r >= 0)
                r = mnt_context_set_source(cxt, node);
        if (r >= 0)
                r = mnt_context_set_target(cxt, target);
        if (r >= 0)
                r = mnt_context_set_fstype(cxt, kname);
        if (r >= 0)
                r = mnt_context_set_options(cxt, options);
        if (r < 0)
                return r;

        r = mnt_context_mount(cxt);
        if (r == 0 && mnt_context_get_status(cxt) == 1)
                return 0;
        if (mnt_context_syscall_called(cxt)) {
                int e = mnt_context_get_syscall_errno(cxt);
                return e > 0 ? -e : -EIO;
        }
        if (mnt_context_helper_executed(cxt))
                return -EIO; /* a mount.<type> helper failed */
        return r < 0 && r > -4096 ? r : -EIO;
}

static int pidfd_open_(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Monotonic milliseconds, for deadlines. */
static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the process behind pidfd has exited or deadline_ms has passed. True if it exited. */
static bool pidfd_wait(int pidfd, int64_t deadline_ms)
{
        for (;;) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                int64_t left = deadline_ms - now_ms();
                int r;

                if (left < 0)
                        left = 0;
                r = poll(&p, 1, (int)MIN(left, (int64_t)INT_MAX));
                if (r > 0)
                        return true;
                if (r == 0)
                        return false;
                if (errno != EINTR)
                        return false;
        }
}

/* Reaps our own child, killing it after timeout_ms. Returns its wait status or -ETIMEDOUT. */
static int child_wait(pid_t pid, int timeout_ms)
{
        _cleanup_close_ int pidfd = pidfd_open_(pid);
        int64_t deadline = now_ms() + timeout_ms;
        bool timed_out = false;
        int status;

        if (pidfd >= 0)
                timed_out = !pidfd_wait(pidfd, deadline);
        else
                /* No pidfd (kernel < 5.3): poll the child. */
                for (;;) {
                        pid_t p = waitpid(pid, &status, WNOHANG);
                        if (p == pid)
                                return status;
                        if (p < 0 && errno != EINTR)
                                return -errno;
                        if (now_ms() >= deadline) {
                                timed_out = true;
                                break;
                        }
                        (void)nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
                }

        if (timed_out)
                (void)kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return timed_out ? -ETIMEDOUT : status;
}

static int fuse_spawn(const char *helper, char *const argv[])
{
        static char *const envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", (char *)"LC_ALL=C",
                NULL };
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        pid_t pid;
        int r;

        sigemptyset(&none);
        sigfillset(&all);
        if (posix_spawn_file_actions_init(&fa) != 0)
                return -ENOMEM;
        if (posix_spawnattr_init(&attr) != 0) {
                posix_spawn_file_actions_destroy(&fa);
                return -ENOMEM;
        }

        /* stdin, stdout and stderr on /dev/null, nothing else inherited; default signal handling and an
         * empty mask (the daemon blocks signals for its signalfd), a session of its own. */
        r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, 0, 1);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, 0, 2);
        if (r == 0)
                r = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        if (r == 0)
                r = posix_spawn_file_actions_addchdir_np(&fa, "/");
        if (r == 0)
                r = posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0)
                r = posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = posix_spawnattr_setflags(
                        &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
        if (r == 0)
                r = posix_spawn(&pid, helper, &fa, &attr, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (r != 0)
                return -r;

        /* The helper's first process exits once the mount exists; its daemon lives on. */
        r = child_wait(pid, HELPER_TIMEOUT_MS);
        if (r < 0)
                return r;
        return WIFEXITED(r) && WEXITSTATUS(r) == 0 ? 0 : -EIO;
}

static int fuse_mount(const FsDriver *d, const char *node, const char *target, const char *options)
{
        const char *helper = mount_fuse_helper(d->fstype);
        const char *argv[8];
        size_t n = 0;

        if (!helper)
                return -EPROTONOSUPPORT;

        argv[n++] = strrchr(helper, '/') + 1;
        if (d->helper_flag)
                argv[n++] = d->helper_flag;
        if (d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        argv[n++] = node;
        argv[n++] = target;
        if (!d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        argv[n] = NULL;

        return fuse_spawn(helper, (char *const *)argv);
}

/* Reads the new mount back: is it there, is it node's, does it carry nosuid,nodev? */
static int mount_verify(const char *node, const char *target)
{
        _cleanup_(mnt_unref_tablep) struct libmnt_table *tb = NULL;
        struct libmnt_fs *fs;
        const char *vfs;
        int r;

        r = mountinfo_load(&tb);
        if (r < 0)
                return r;
        fs = mount_at(tb, target);
        /* A helper can exit 0 without mounting (fuse2fs does on an unknown option). */
        if (!fs || !streq_ptr(mnt_fs_get_source(fs), node))
                return -EIO;
        vfs = mnt_fs_get_vfs_options(fs);
        if (!vfs || mnt_optstr_get_option(vfs, "nosuid", NULL, NULL) != 0 ||
                mnt_optstr_get_option(vfs, "nodev", NULL, NULL) != 0)
                return -EPERM;
        return 0;
}

/* Takes down what a failed mount attempt may have left at target, if it is node's. */
static void mount_undo(const char *node, const char *target)
{
        _cleanup_free_ char *source = NULL;

        if (mount_find_source(target, &source, NULL) >= 0 && streq(source, node))
                (void)umount2(target, UMOUNT_NOFOLLOW);
}

int mount_filesystem(
        const char *node, const char *target, const char *fstype, const char *options, bool fuse)
{
        const FsDriver *d = driver_find(fstype);
        struct stat st;
        int r;

        if (!d)
                return -EPROTONOSUPPORT;
        if (isempty(node) || node[0] != '/' || isempty(target) || target[0] != '/' || !options)
                return -EINVAL;
        r = options_check_safe(options);
        if (r < 0)
                return r;
        /* libmount would set up a loop device for a regular file: only block devices here. */
        if (stat(node, &st) < 0)
                return -errno;
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;

        r = fuse ? fuse_mount(d, node, target, options) : kernel_mount(d, node, target, options);
        if (r >= 0)
                r = mount_verify(node, target);
        if (r < 0) {
                mount_undo(node, target);
                return r;
        }
        return 0;
}

/* ---- unmounting ---- */

/* The resolved paths of the installed FUSE helpers, as /proc/PID/exe shows them. */
static size_t fuse_helper_exes(char **exes, size_t max)
{
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(drivers); i++)
                for (size_t j = 0; j < ELEMENTSOF(drivers[i].helpers) && drivers[i].helpers[j]; j++) {
                        char *real = realpath(drivers[i].helpers[j], NULL);

                        if (!real)
                                continue;
                        if (n >= max || strv_contains_n(exes, n, real)) {
                                free(real);
                                continue;
                        }
                        exes[n++] = real;
                }
        return n;
}

static bool process_holds_device(int proc_fd, const char *pid, dev_t rdev)
{
        _cleanup_free_ char *fd_dir = NULL;
        _cleanup_close_ int dfd = -1;
        DIR *d;
        struct dirent *de;
        bool found = false;

        if (asprintf(&fd_dir, "%s/fd", pid) < 0)
                return false;
        dfd = openat(proc_fd, fd_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return false;
        d = fdopendir(dfd);
        if (!d)
                return false;
        TAKE_FD(dfd);
        while (!found && (de = readdir(d))) {
                struct stat st;

                if (de->d_name[0] == '.')
                        continue;
                found = fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISBLK(st.st_mode) &&
                        st.st_rdev == rdev;
        }
        closedir(d);
        return found;
}

/* pidfds of the FUSE helper processes that have the block device rdev open: the server of a FUSE mount
 * of it. Its pid is not known otherwise, since the helper daemonized. */
static size_t fuse_helpers_of(dev_t rdev, int *pidfds, size_t max)
{
        _cleanup_close_ int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char *exes[2 * ELEMENTSOF(drivers)];
        size_t n = 0, n_exes;
        DIR *d;
        struct dirent *de;

        if (proc_fd < 0)
                return 0;
        n_exes = fuse_helper_exes(exes, ELEMENTSOF(exes));
        d = opendir("/proc");
        if (!d) {
                for (size_t i = 0; i < n_exes; i++)
                        free(exes[i]);
                return 0;
        }
        while (n < max && (de = readdir(d))) {
                char exe_link[sizeof(de->d_name) + 8], exe[PATH_MAX];
                ssize_t len;
                pid_t pid;
                int pidfd;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                pid = (pid_t)strtol(de->d_name, NULL, 10);
                /* Open the pidfd first, so a recycled pid is caught by the checks that follow. */
                pidfd = pidfd_open_(pid);
                if (pidfd < 0)
                        continue;
                snprintf(exe_link, sizeof(exe_link), "%s/exe", de->d_name);
                len = readlinkat(proc_fd, exe_link, exe, sizeof(exe) - 1);
                if (len > 0) {
                        exe[len] = '\0';
                        if (strv_contains_n(exes, n_exes, exe) &&
                                process_holds_device(proc_fd, de->d_name, rdev)) {
                                pidfds[n++] = pidfd;
                                continue;
                        }
                }
                safe_close(pidfd);
        }
        closedir(d);
        for (size_t i = 0; i < n_exes; i++)
                free(exes[i]);
        return n;
}

int unmount_filesystem(const char *target)
{
        _cleanup_(mnt_unref_tablep) struct libmnt_table *tb = NULL;
        int pidfds[8];
        size_t n_pidfds = 0;
        int64_t deadline;
        int r = 0;

        if (isempty(target) || target[0] != '/')
                return -EINVAL;

        if (mountinfo_load(&tb) >= 0) {
                struct libmnt_fs *fs = mount_at(tb, target);
                dev_t rdev = fs ? source_rdev(mnt_fs_get_source(fs)) : 0;

                if (fs && fstype_is_fuse(mnt_fs_get_fstype(fs)) && rdev != 0)
                        n_pidfds = fuse_helpers_of(rdev, pidfds, ELEMENTSOF(pidfds));
        }

        if (umount2(target, UMOUNT_NOFOLLOW) < 0)
                r = -errno;

        /* Without a superblock the helper gets ENODEV from /dev/fuse, flushes and exits; the device is
         * only consistent once it has. */
        deadline = now_ms() + HELPER_EXIT_TIMEOUT_MS;
        for (size_t i = 0; i < n_pidfds; i++) {
                if (r == 0)
                        (void)pidfd_wait(pidfds[i], deadline);
                safe_close(pidfds[i]);
        }
        return r;
}
