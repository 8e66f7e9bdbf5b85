/* mount.c: mounting filesystems for users: which driver (the kernel's or a FUSE helper's), the mount through
 * libmount or the helper (mount-fuse.c), checked afterwards; unmounting. The mount table: mount-table.c. */

#include <ctype.h>
#include <errno.h>
#include <libmount.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "loop-name.h"
#include "macro.h"
#include "mount-internal.h"
#include "process-util.h"
#include "runner.h"
#include "strv.h"

static const FsDriver drivers[] = {
        { "ext2", { "ext2" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" }, .foreground = true },
        { "ext3", { "ext3" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" }, .foreground = true },
        { "ext4", { "ext4" }, { "/usr/bin/fuse2fs", "/usr/sbin/fuse2fs" }, .foreground = true },
        { "xfs", { "xfs" } },
        { "btrfs", { "btrfs" } },
        { "squashfs", { "squashfs" }, { "/usr/bin/squashfuse" }, .options_first = true, .libfuse3 = true,
                .foreground = true },
        { "erofs", { "erofs" } },
        { "vfat", { "vfat" }, { "/usr/bin/fusefat" }, .foreground = true },
        { "exfat", { "exfat" }, { "/usr/sbin/mount.exfat-fuse", "/sbin/mount.exfat-fuse" },
                .options_first = true },
        { "ntfs", { "ntfs3", "ntfs" }, { "/usr/bin/ntfs-3g", "/bin/ntfs-3g" }, .options_first = true,
                .unconfined = true },
        /* -n: no ~/.mtab.fuseiso */
        { "iso9660", { "iso9660" }, { "/usr/bin/fuseiso" }, "-n", .foreground = true },
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

static bool unconfined_drivers = true;

/* How long a kernel mount or an unmount may take (mount_set_timeout()). */
static uint64_t kernel_timeout_usec = MOUNT_TIMEOUT_USEC;

void mount_set_timeout(uint64_t usec)
{
        kernel_timeout_usec = usec > 0 ? usec : MOUNT_TIMEOUT_USEC;
}

uint64_t mount_get_timeout(void)
{
        return kernel_timeout_usec;
}

static int64_t kernel_deadline(void)
{
        return now_ms() + (int64_t)MIN(kernel_timeout_usec / 1000, (uint64_t)INT32_MAX);
}

void mount_set_unconfined_drivers(bool allowed)
{
        unconfined_drivers = allowed;
}

bool mount_fuse_helper_unconfined(const char *fstype)
{
        const FsDriver *d = driver_find(fstype);

        return d && d->unconfined;
}

/* A test's stand-in for one driver (mount_set_fuse_helper()). */
static const char *override_fstype, *override_path;

void mount_set_fuse_helper(const char *fstype, const char *path)
{
        override_fstype = fstype;
        override_path = path;
}

const char *mount_fuse_helper(const char *fstype)
{
        const FsDriver *d = driver_find(fstype);

        if (!d || (d->unconfined && !unconfined_drivers))
                return NULL;
        if (override_fstype && streq(override_fstype, fstype))
                return override_path;
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

/* The resolved paths of the installed FUSE helpers, as /proc/PID/exe shows them. */
char **mount_fuse_helper_exes(void)
{
        _cleanup_strv_free_ char **exes = calloc(1, sizeof(char *));

        if (!exes)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(drivers); i++)
                for (size_t j = 0; j < ELEMENTSOF(drivers[i].helpers) && drivers[i].helpers[j]; j++) {
                        char *real = realpath(drivers[i].helpers[j], NULL);

                        if (!real)
                                continue;
                        if (strv_contains(exes, real)) {
                                free(real);
                                continue;
                        }
                        if (strv_consume(&exes, real) < 0)
                                return NULL;
                }
        return TAKE_PTR(exes);
}

/* ---- mounting ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_context *, mnt_free_context);

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

static int kernel_unmount(const char *target, const char *node);

/* Takes down what a failed mount attempt may have left at target, if it is node's, and its utab entry. late:
 * in the child whose mount came after loopd stopped waiting (nobody was told of that mount, so nobody may
 * hold it: MNT_DETACH takes it even when a file manager looked in meanwhile); else through a child of its
 * own, bounded (kernel_unmount()). */
static void mount_undo(const char *node, const char *target, bool late)
{
        _cleanup_free_ char *source = NULL;

        if (mount_find_source(target, &source, NULL) >= 0 && streq(source, node)) {
                if (late)
                        (void)umount2(target, UMOUNT_NOFOLLOW | MNT_DETACH);
                else
                        (void)kernel_unmount(target, node);
        }
        (void)mount_utab_forget(target);
}

/* userspace: mount_userspace_options(), which libmount keeps out of mount(2) and writes to utab. */
static int kernel_mount(
        const FsDriver *d, const char *node, const char *target, const char *options, const char *userspace)
{
        _cleanup_(mnt_free_contextp) struct libmnt_context *cxt = NULL;
        _cleanup_free_ char *all = NULL;
        const char *kname = kernel_fs_name(d);
        int r;

        if (!kname)
                return -EPROTONOSUPPORT;
        if (asprintf(&all, "%s%s%s", options, userspace ? "," : "", strempty(userspace)) < 0) {
                all = NULL;
                return -ENOMEM;
        }
        cxt = mnt_new_context();
        if (!cxt)
                return -ENOMEM;

        /* No fstab or mtab merging (the options are exactly these), no path canonicalization (the paths
         * are ours and exact), and no silent read-only retry: a read-only device must be mounted with
         * read_only so that its journal is not replayed. utab is written (the userspace options: uhelper=
         * lets a user's umount(8) hand the unmount to loopd). No /sbin/mount.<type> helper: this is the
         * kernel's driver or nothing (where the kernel's "ntfs" is the name, /sbin/mount.ntfs is ntfs-3g,
         * which would parse the caller's bytes as root; FUSE drivers run confined, mount_fuse_run()). */
        r = mnt_context_set_optsmode(cxt, MNT_OMODE_IGNORE | MNT_OMODE_NOTAB);
        if (r >= 0)
                r = mnt_context_disable_helpers(cxt, true);
        if (r >= 0)
                r = mnt_context_disable_canonicalize(cxt, true);
        if (r >= 0)
                r = mnt_context_enable_rwonly_mount(cxt, true);
        if (r >= 0)
                r = mnt_context_set_source(cxt, node);
        if (r >= 0)
                r = mnt_context_set_target(cxt, target);
        if (r >= 0)
                r = mnt_context_set_fstype(cxt, kname);
        if (r >= 0)
                r = mnt_context_set_options(cxt, all);
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

/* ---- the child a kernel mount or unmount runs in ---- */

typedef enum KernelOp {
        KERNEL_MOUNT = 1,
        KERNEL_UNMOUNT,
        KERNEL_SERVED, /* mount_wait_served()'s stat() of a new FUSE mount: target, its alarm's seconds */
} KernelOp;

#define KERNEL_STRINGS 5 /* target, node, fstype, options, userspace ("" for the last four: none) */

/* A kernel mount or unmount as the child gets it: the op (one byte), then the strings, each NUL-ended. */
typedef struct KernelRequest {
        char bytes[RUNNER_REQUEST_MAX];
        size_t size;
} KernelRequest;

static int kernel_request(KernelRequest *req, KernelOp op, const char *const strings[KERNEL_STRINGS])
{
        req->bytes[0] = (char)op;
        req->size = 1;
        for (size_t i = 0; i < KERNEL_STRINGS; i++) {
                size_t len = strlen(strempty(strings[i])) + 1;

                if (len > sizeof(req->bytes) - req->size)
                        return -E2BIG;
                memcpy(req->bytes + req->size, strempty(strings[i]), len);
                req->size += len;
        }
        return 0;
}

/* The op and the strings of a request (pointers into it). */
static int kernel_request_parse(
        const void *request, size_t size, KernelOp *ret_op, const char *ret_strings[KERNEL_STRINGS])
{
        const char *p = request, *end = p + size;

        if (size < 1 || (p[0] != KERNEL_MOUNT && p[0] != KERNEL_UNMOUNT && p[0] != KERNEL_SERVED))
                return -EINVAL;
        *ret_op = (KernelOp)p[0];
        p++;
        for (size_t i = 0; i < KERNEL_STRINGS; i++) {
                const char *nul = memchr(p, 0, (size_t)(end - p));

                if (!nul)
                        return -EINVAL;
                ret_strings[i] = p;
                p = nul + 1;
        }
        return p == end ? 0 : -EINVAL;
}

/* In the child: the kernel mount (libmount) or the unmount a request asks for. */
static int kernel_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        const char *s[KERNEL_STRINGS];
        const FsDriver *d;
        KernelOp op;

        if (n_fds > 0 || kernel_request_parse(request, size, &op, s) < 0)
                return -EINVAL;
        (void)fds;
        if (op == KERNEL_UNMOUNT)
                return umount2(s[0], UMOUNT_NOFOLLOW) < 0 ? -errno : 0;
        if (op == KERNEL_SERVED) {
                struct stat st;
                char *end = NULL;
                unsigned long seconds = strtoul(s[1], &end, 10);

                if (!isdigit((unsigned char)s[1][0]) || *end != '\0' || seconds == 0 || seconds > UINT_MAX)
                        return -EINVAL;
                /* Past loopd's deadline: ends a stat the driver has not taken yet (that wait can be killed).
                 */
                (void)alarm((unsigned)seconds);
                return stat(s[0], &st) < 0 ? -errno : 0;
        }
        d = driver_find(s[2]);
        if (!d)
                return -EPROTONOSUPPORT;
        return kernel_mount(d, s[1], s[0], s[3], isempty(s[4]) ? NULL : s[4]);
}

/* In the child, once nobody waits for its answer: a mount that came too late goes again (an unmount that
 * did is what was asked for). */
static void kernel_undo(const void *request, size_t size, const int *fds, size_t n_fds)
{
        const char *s[KERNEL_STRINGS];
        KernelOp op;

        (void)fds;
        (void)n_fds;
        if (kernel_request_parse(request, size, &op, s) >= 0 && op == KERNEL_MOUNT)
                mount_undo(s[1], s[0], true);
}

const RunnerOps mount_runner_ops = { .op = kernel_op, .undo = kernel_undo };

/* A kernel mount or unmount loopd stopped waiting for: the kernel still holds its child, until fd reads
 * the end of the stream. key: the node it mounts, or the target it unmounts. */
typedef struct Pending {
        int fd;
        char *key;
} Pending;

static Pending *pending;
static size_t n_pending;

/* Forgets the children that have exited. */
static void pending_prune(void)
{
        size_t kept = 0;

        for (size_t i = 0; i < n_pending; i++) {
                if (runner_pending_done(pending[i].fd)) {
                        safe_close(pending[i].fd);
                        free(pending[i].key);
                        continue;
                }
                pending[kept++] = pending[i];
        }
        n_pending = kept;
}

/* Whether a child for key still runs. */
static bool pending_still(const char *key)
{
        pending_prune();
        for (size_t i = 0; i < n_pending; i++)
                if (streq(pending[i].key, key))
                        return true;
        return false;
}

bool mount_in_progress(const char *key)
{
        return pending_still(key);
}

bool mount_in_progress_on_device(unsigned number)
{
        pending_prune();
        for (size_t i = 0; i < n_pending; i++) {
                unsigned n;

                if (loop_parse_node(pending[i].key, &n, NULL) >= 0 && n == number)
                        return true;
        }
        return false;
}

static void pending_add(int fd, const char *key)
{
        Pending *grown = reallocarray(pending, n_pending + 1, sizeof(Pending));
        char *copy = strdup(key);

        if (!grown || !copy) {
                /* Not remembered: a second run of the same then waits its full time too. */
                free(copy);
                if (grown)
                        pending = grown;
                safe_close(fd);
                return;
        }
        pending = grown;
        pending[n_pending++] = (Pending){ .fd = fd, .key = copy };
}

/* Runs req in a child of loopd's runner, else (no runner, or it is gone) in one forked from loopd: bounded
 * by the mount timeout either way. key: as Pending's. -EINPROGRESS while a child loopd stopped waiting for
 * still runs the same key: a second mount of a node whose image hangs would only wait for the first. */
static int kernel_run(const KernelRequest *req, const char *key)
{
        int64_t deadline = kernel_deadline();
        int late = -EBADF, r;

        if (pending_still(key))
                return -EINPROGRESS;
        r = runner_call(&mount_runner_ops, req->bytes, req->size, NULL, 0, deadline, &late);
        if (late >= 0)
                pending_add(late, key);
        return r;
}

int mount_wait_served(const char *target, const char *node, int timeout_ms)
{
        _cleanup_free_ KernelRequest *req = malloc(sizeof(KernelRequest));
        char alarm_seconds[16];
        int late = -EBADF, r;

        if (!req)
                return -ENOMEM;
        snprintf(alarm_seconds, sizeof(alarm_seconds), "%d", timeout_ms / 1000 + 2);
        r = kernel_request(
                req, KERNEL_SERVED, (const char *const[]){ target, alarm_seconds, NULL, NULL, NULL });
        if (r < 0)
                return r;
        r = runner_call(&mount_runner_ops, req->bytes, req->size, NULL, 0, now_ms() + timeout_ms, &late);
        /* A stat the driver took and never answers: until its child ends, a mount of node would only wait
         * as long again. */
        if (late >= 0)
                pending_add(late, node);
        return r;
}

/* The unmount of target, node's (the key it is pending under: a mount of node waits for a filesystem of it
 * that is still being taken down, umount2() having taken it out of the table first). */
static int kernel_unmount(const char *target, const char *node)
{
        _cleanup_free_ KernelRequest *req = malloc(sizeof(KernelRequest));
        int r;

        if (!req)
                return -ENOMEM;
        r = kernel_request(req, KERNEL_UNMOUNT, (const char *const[]){ target, NULL, NULL, NULL, NULL });
        return r < 0 ? r : kernel_run(req, node);
}

/* Reads the new mount back: is it there, is it node's, does it carry nosuid,nodev? */
static int mount_verify(const char *node, const char *target)
{
        _cleanup_(mount_table_unrefp) MountTable *tb = NULL;
        struct libmnt_fs *fs;
        const char *vfs;
        int r;

        r = mount_table_load(&tb);
        if (r < 0)
                return r;
        fs = mount_table_at(tb, target);
        /* A helper can exit 0 without mounting (fuse2fs does on an unknown option). */
        if (!fs || !streq_ptr(mnt_fs_get_source(fs), node))
                return -EIO;
        vfs = mnt_fs_get_vfs_options(fs);
        if (!vfs || mnt_optstr_get_option(vfs, "nosuid", NULL, NULL) != 0 ||
                mnt_optstr_get_option(vfs, "nodev", NULL, NULL) != 0)
                return -EPERM;
        return 0;
}

int mount_filesystem(
        const char *node, const char *target, const char *fstype, const char *options, bool fuse)
{
        return mount_filesystem_named(node, target, fstype, options, fuse, NULL);
}

int mount_filesystem_named(const char *node, const char *target, const char *fstype, const char *options,
        bool fuse, const char *name)
{
        const FsDriver *d = driver_find(fstype);
        _cleanup_free_ char *userspace = NULL;
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

        r = mount_userspace_options(fstype, name, &userspace);
        if (r < 0)
                return r;
        /* Whatever a mount at target left in utab would be merged into this one. */
        r = mount_utab_forget(target);
        if (r < 0)
                return r;

        /* A FUSE helper mounts without libmount: its utab entry is written here, once the mount is there.
         * mount(2) reads the device in the kernel, and a device whose image stopped answering (a FUSE file
         * of the caller's) would hold loopd there for good: it runs in a child, which takes down a mount
         * that comes after loopd stopped waiting. */
        if (fuse)
                r = mount_fuse_run(d, node, target, options);
        else {
                _cleanup_free_ KernelRequest *req = malloc(sizeof(KernelRequest));

                if (!req)
                        return -ENOMEM;
                r = kernel_request(req, KERNEL_MOUNT,
                        (const char *const[]){ target, node, fstype, options, userspace });
                if (r >= 0)
                        r = kernel_run(req, node);
                if (r == -ETIMEDOUT || r == -EINPROGRESS)
                        return r; /* the child undoes it, if it ever mounts: unmounting here could hang */
        }
        if (r >= 0)
                r = mount_verify(node, target);
        if (r >= 0 && fuse)
                r = mount_utab_add(node, target, userspace);
        if (r < 0) {
                mount_undo(node, target, false);
                return r;
        }
        return 0;
}

/* ---- unmounting ---- */

int unmount_filesystem(const char *target, MountServers *ret_left)
{
        _cleanup_(mount_table_unrefp) MountTable *tb = NULL;
        _cleanup_free_ char *source = NULL;
        int pidfds[MOUNT_SERVERS_MAX];
        size_t n_pidfds = 0;
        int r = 0;

        if (ret_left)
                ret_left->n = 0;
        if (isempty(target) || target[0] != '/')
                return -EINVAL;

        if (mount_table_load(&tb) >= 0) {
                struct libmnt_fs *fs = mount_table_at(tb, target);
                dev_t rdev = fs ? mount_source_rdev(mnt_fs_get_source(fs)) : 0;

                if (fs && mount_fstype_is_fuse(mnt_fs_get_fstype(fs)) && rdev != 0)
                        n_pidfds = mount_fuse_servers_of(rdev, pidfds, ELEMENTSOF(pidfds));
                if (fs && mnt_fs_get_source(fs))
                        source = strdup(mnt_fs_get_source(fs));
        }

        /* Unmounting writes back what the filesystem holds: bounded as mounting is. One finished after
         * loopd stopped waiting is what was asked for. */
        r = kernel_unmount(target, source ?: target);
        mount_fuse_servers_wait(pidfds, n_pidfds, r == 0, r == 0 ? ret_left : NULL);
        /* umount2() is not libmount's umount: the entry it would have dropped goes here. Not a failure of
         * the unmount when it cannot (the next mount at target, or the removal of the mount point, tries
         * again). */
        if (r == 0)
                (void)mount_utab_forget(target);
        return r;
}
