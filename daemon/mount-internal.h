/* mount-internal.h: what the mount modules share (mount.c: drivers and mounting, mount-table.c: the mount
 * table and utab, mount-fuse.c: FUSE helper processes). Not for other modules: they use mount.h. Never logs.
 */
#pragma once

#include <libmount.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mount.h"

typedef struct FsDriver {
        const char *fstype;
        const char *kernel_names[3]; /* tried in order in /proc/filesystems */
        const char *helpers[4]; /* FUSE helper binaries, first installed one wins */
        const char *helper_flag; /* an extra first argument */
        bool options_first; /* HELPER -o OPTS NODE TARGET, else HELPER NODE TARGET -o OPTS */
        bool libfuse3; /* takes /dev/fd/N for TARGET; else libfuse 2, which asks fusermount for its fd */
        bool foreground; /* takes -f (stays in the foreground) after TARGET; else it daemonizes */
        /* Cannot run in the sandbox: ntfs-3g mounts through its built-in FUSE library, which opens /dev/fuse
         * and calls mount(2) itself (it is setuid root for users) and takes no fd. Runs as root, unless the
         * administrator switched such drivers off (mount_set_unconfined_drivers()). */
        bool unconfined;
} FsDriver;

/* ---- mount.c ---- */

/* The resolved paths of the installed FUSE helpers, as /proc/PID/exe shows them: a strv, NULL when out of
 * memory. */
char **mount_fuse_helper_exes(void);

/* ---- mount-table.c ---- */

/* "fuse", "fuseblk" or "fuse.*". */
bool mount_fstype_is_fuse(const char *fstype);
/* The device number of source when it is a block device under /dev, else 0. */
dev_t mount_source_rdev(const char *source);
/* The topmost mount at target (trailing slashes ignored) in tb, or NULL. */
struct libmnt_fs *mount_table_at(MountTable *tb, const char *target);
/* Records node's mount at target in /run/mount/utab with the userspace options (see
 * mount_userspace_options()), as libmount does for the mounts it makes itself. */
int mount_utab_add(const char *node, const char *target, const char *userspace_options);

/* ---- mount-fuse.c ---- */

/* Mounts node at target with FUSE (loopd's own mount(2)) and runs d's FUSE driver in a sandbox (sandbox.c)
 * to serve it: as a uid of its own, without capabilities, with the FUSE fd and a node of the device only.
 * 0 once the mount answers; on failure nothing is left at target. */
int mount_fuse_run(const FsDriver *d, const char *node, const char *target, const char *options);
/* Waits up to timeout_ms until the FUSE mount at target, of node, answers (its driver has taken the
 * connection's INIT): a stat() of it in a child of loopd's runner (runner.h), as a kernel mount runs. A
 * GETATTR the driver took and never answers (its read of a hung image waits) holds that stat
 * uninterruptibly, past any signal: loopd stops waiting at the deadline (-ETIMEDOUT) and leaves the child
 * be; until it ends, mount_in_progress(node) is true, as after a kernel mount that timed out (and
 * mount_fuse_run() of node is -EINPROGRESS at once). 0, or the stat's -errno (a driver that died closed the
 * connection: at once). */
int mount_wait_served(const char *target, const char *node, int timeout_ms);
/* pidfds of the FUSE helper processes that have the block device rdev open (at most max): the servers of
 * FUSE mounts of it. */
size_t mount_fuse_servers_of(dev_t rdev, int *pidfds, size_t max);
/* Waits (bounded) for the processes of the pidfds to exit when wait is true, and closes the pidfds; those
 * still running go to *ret_left instead when it is not NULL. */
void mount_fuse_servers_wait(int *pidfds, size_t n, bool wait, MountServers *ret_left);
