/* mount.h: mounting a loop device's filesystem for a user, and reading the mount table. Never logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runner.h"

/* Known filesystems are ext2, ext3, ext4, xfs, btrfs, squashfs, erofs, vfat, exfat, ntfs, iso9660 and
 * udf. Every function below that takes an fstype refuses any other with -EPROTONOSUPPORT, so a caller's
 * "fstype" option can never name tmpfs, proc, fuse, overlay, ... */

/* Builds the option string for mounting fstype for the user uid/gid:
 *  - nosuid,nodev always;
 *  - the caller's comma list (may be NULL) checked against the allow-list: ro, rw, noexec, exec, noatime,
 *    relatime, nodiratime, lazytime, sync, dirsync, nosymfollow (and the harmless nosuid, nodev), plus per
 *    filesystem: vfat shortname=lower|win95|winnt|mixed, utf8, iocharset=, codepage=, flush, umask=,
 *    dmask=, fmask=; exfat/ntfs iocharset=, umask=, dmask=, fmask=; iso9660 norock, nojoliet, utf8,
 *    iocharset=; udf utf8, iocharset=, umask=; btrfs subvol=, subvolid=, compress=. Masks are octal,
 *    iocharset= is [A-Za-z0-9_-], codepage= decimal. A FUSE helper takes only what it really honours
 *    (see mount-options.c); e.g. fusefat takes no shortname=, exfat-fuse no noexec.
 *    Refused with -EINVAL and *ret_bad naming the offending item: an option not on the list (suid, dev,
 *    uid=, gid=, errors=, x-*, ...), an empty item, a value with a control character, quote or backslash,
 *    a conflict (ro with rw, exec with noexec, two different values for one key), rw on a filesystem that
 *    is read-only by nature (iso9660, squashfs, erofs, and vfat through fusefat, whose write support is
 *    experimental), and a node path that cannot be a FUSE fsname= (fuse only);
 *  - uid=/gid= for filesystems without POSIX ownership (vfat, exfat, ntfs, iso9660, udf), and umask=0022
 *    for vfat, exfat and ntfs unless the caller gave umask=;
 *  - errors=remount-ro for ext2/3/4 (a superblock may say errors=panic);
 *  - read_only, or "ro" among the caller's options, gives "ro" and never replays a journal (ext3/4:
 *    noload, xfs: norecovery, btrfs: rescue=nologreplay, fuse2fs: norecovery). read_only must also be
 *    true when the device itself is read-only (BLKROGET), so that no replay is even attempted;
 *  - fuse: allow_other, default_permissions and fsname=<node> for the helper.
 * ret_bad may be NULL; it is set only on -EINVAL, to a printable copy of the item (bytes outside ASCII
 * 0x20-0x7e escaped as \xNN, cut at 64 characters) that can go into an error message. The result never
 * contains a duplicate. Returns 0, -EINVAL, -EPROTONOSUPPORT (unknown fstype) or -ENOMEM. */
int mount_options_build(const char *fstype, const char *user_options, bool read_only, bool fuse, uid_t uid,
        gid_t gid, const char *node, char **ret_options, char **ret_bad);

/* Turns an attacker-controlled label (or uuid) into one safe path component: valid UTF-8 (invalid bytes
 * become '_'), '/' and control characters (C0, DEL, C1, and the Unicode line separators, bidi and
 * zero-width format characters) become '_', leading dots and surrounding whitespace are removed, at most
 * 64 bytes (cut on a character boundary); never "", "." or "..". Returns -EINVAL if nothing usable is
 * left (the caller tries the next candidate: uuid, then "disk"). */
int mount_name_sanitize(const char *label, char **ret);

/* Makes media_dir (each missing component root-owned 0755), media_dir/<user> and a fresh, unique
 * directory for name under it: "name", "name-1", "name-2", ... decided by mkdirat()'s EEXIST, not by a
 * check. Returns the new directory's path (media_dir/user/name-N).
 * media_dir/<user> is made root-owned, mode 0750, with the POSIX ACL user:<uid>:r-x (written as the
 * system.posix_acl_access xattr): only root and uid may enter it, nobody but root may write to it. On a
 * filesystem without ACLs (EOPNOTSUPP) the fallback is root:<gid> 0750, which also lets other members of
 * gid in: fine with per-user groups, the caller decides if that is acceptable. uid 0 gets root:root 0750.
 * The path is walked with openat(O_NOFOLLOW|O_DIRECTORY) from "/": a symlink anywhere is -ELOOP or
 * -ENOTDIR. Every existing component must be owned by root and not writable by others unless sticky
 * (like /tmp), else -EPERM, because the returned path is later resolved again by mount(2).
 * -EINVAL: media_dir not absolute or with "." / ".." components, user or name not a plain component. */
int mount_point_create(
        const char *media_dir, const char *user, uid_t uid, gid_t gid, const char *name, char **ret_path);

/* Removes a mount point directory made by mount_point_create(): path must be media_dir/<user>/<name>
 * (else -EINVAL, so a foreign mount point like /mnt is never touched) and an empty directory that is not
 * mounted on (-ENOTEMPTY, -EBUSY). Does not follow symlinks. -ENOENT if it is already gone. Either way its
 * /run/mount/utab entries go too (mount_utab_forget()). */
int mount_point_remove(const char *media_dir, const char *path);

/* Does the running kernel have a block-device driver for fstype: in /proc/filesystems (without "nodev"),
 * or loadable as module "fs-<type>" according to /lib/modules/<release>/modules.alias? For "ntfs" this is
 * ntfs3 (or ntfs). */
bool mount_kernel_has_filesystem(const char *fstype);

/* The FUSE helper for fstype installed on this machine (e.g. "/usr/bin/fuseiso"), or NULL (also for one that
 * cannot be confined when those are switched off). Looked up in fixed system directories, never in $PATH. */
const char *mount_fuse_helper(const char *fstype);
/* Is fstype's FUSE helper one that runs as root, outside the sandbox (ntfs-3g)? */
bool mount_fuse_helper_unconfined(const char *fstype);
/* Whether such helpers may be used at all (loopd --unconfined-fuse-drivers=no: not). */
void mount_set_unconfined_drivers(bool allowed);
/* Tests only: path (not copied; NULL: none) is fstype's FUSE helper from now on, wherever it lies. */
void mount_set_fuse_helper(const char *fstype, const char *path);

/* How long loopd waits for a kernel mount (mount(2), through libmount) or an unmount (umount2()) before
 * -ETIMEDOUT; 0: MOUNT_TIMEOUT_USEC (under the 25 s a D-Bus client waits by default, for this step alone).
 * Each runs in a child (runner.h): the kernel reads the device as it mounts and writes it back as it
 * unmounts, and a device whose image is a FUSE file that stopped answering would hold the caller in the
 * kernel for good. A mount that succeeds after the deadline is taken down by that child; an unmount that
 * does is left done. While such a child still waits in the kernel, a mount or an unmount of the same node
 * is -EINPROGRESS at once. */
#define MOUNT_TIMEOUT_USEC (UINT64_C(20) * 1000000)
/* Whether such a child, left behind, still mounts or unmounts a filesystem of node: the kernel holds it. */
bool mount_in_progress(const char *key);
/* The same for any node of loopN: the whole device or one of its partitions. */
bool mount_in_progress_on_device(unsigned number);
/* Those children's ops, for the table of loopd's runner (runner_start()): with it they come from the
 * runner, and loopd does not fork itself for each; without it, or once it is gone, each is forked from
 * loopd. */
extern const RunnerOps mount_runner_ops;
void mount_set_timeout(uint64_t usec);
uint64_t mount_get_timeout(void);

/* Decides how fstype gets mounted: the kernel driver when there is one (*ret_fuse = false), else the FUSE
 * helper (*ret_fuse = true). -EPROTONOSUPPORT: neither (or an unknown fstype). */
int mount_pick_driver(const char *fstype, bool *ret_fuse);

/* Mounts node on target: the kernel driver through libmount (never a /sbin/mount.<type> helper) when fuse
 * is false, the FUSE helper (confined) when it is true. options come from mount_options_build() with the
 * same fuse flag; they must contain nosuid and nodev and no suid or dev (else -EINVAL). The helper runs with
 * a clean environment, stdin/stdout/stderr on /dev/null, no inherited fds, default signal mask; it
 * daemonizes once the mount exists and its first process is reaped here (at most 30 s, then it is killed:
 * -ETIMEDOUT), so the long-running FUSE process becomes a child of the nearest subreaper. This blocks, so a
 * reaper of the caller's must not waitpid(-1) concurrently. Afterwards the new mount is read back from
 * mountinfo: without nosuid,nodev it is unmounted again and the result is -EPERM. Nothing is left mounted on
 * failure. -EPROTONOSUPPORT: no kernel or FUSE driver for fstype. -ENOTBLK: node is not a block device
 * (libmount would set up a loop device for a file). -EROFS/-EACCES: the device is read-only and read_only
 * was not given (there is no silent read-only fallback). -EIO: the helper failed, or exited 0 without
 * mounting. -ETIMEDOUT: mount(2) did not return in time (mount_set_timeout()); -EINPROGRESS: an earlier one
 * of node's still waits in the kernel. Other -errno: what mount(2) said. */
int mount_filesystem(
        const char *node, const char *target, const char *fstype, const char *options, bool fuse);

/* The options a mount of loopd's keeps in userspace, in libmount's /run/mount/utab (never given to the
 * kernel or a FUSE helper): "uhelper=loopd", so that a user's umount(8) of it runs umount.loopd (libmount
 * finds no other way for a user to unmount it), then what the desktop calls it: "x-gvfs-name=NAME" (name
 * sanitized as mount_name_sanitize() does, then every byte outside [A-Za-z0-9._~-] percent-encoded, as
 * GVfs decodes it: no ',', '=', quote, space or control character remains; left out when name is NULL or
 * nothing usable is left of it) and "x-gvfs-icon=" / "x-gvfs-symbolic-icon=": media-optical for iso9660
 * and udf, drive-removable-media otherwise. x-* options are stored in utab by util-linux >= 2.30 (X-* are
 * not). Returns 0 or -ENOMEM. */
int mount_userspace_options(const char *fstype, const char *name, char **ret);

/* mount_filesystem() that records the mount in /run/mount/utab with mount_userspace_options(fstype, name)
 * (name may be NULL): libmount writes the entry for a kernel mount, this function for a FUSE mount (whose
 * helper mounts without libmount). mount_filesystem() is this with name NULL: every mount carries
 * uhelper=loopd. A failure to write utab fails the mount (-errno) and unmounts again, as a mount that
 * users cannot unmount must not be handed out silently. A stale utab entry for target (a mount point
 * unmounted without libmount) is dropped first. */
int mount_filesystem_named(const char *node, const char *target, const char *fstype, const char *options,
        bool fuse, const char *name);

/* The FUSE servers of an unmounted filesystem that were still running when unmount_filesystem() stopped
 * waiting for them: pidfds, the caller's to close. */
#define MOUNT_SERVERS_MAX 8
typedef struct MountServers {
        int pidfds[MOUNT_SERVERS_MAX];
        size_t n;
} MountServers;

/* Unmounts target: umount2() without MNT_DETACH and without following a symlink; -EBUSY when in use,
 * -EINVAL when target is not a mount point. For a FUSE mount it then waits (at most 10 s) until the
 * helper that served it has exited, so its last writes have reached the device when this returns; those
 * still running then go to *ret_left (NULL: closed; n is 0 after a failure). Once nothing is mounted at
 * target any more, its /run/mount/utab entries go too (mount_utab_forget()). -ETIMEDOUT: umount2() did not
 * return in time (mount_set_timeout()); -EINPROGRESS: an earlier mount or unmount of its node still waits in
 * the kernel. */
int unmount_filesystem(const char *target, MountServers *ret_left);
/* Closes the pidfds; servers is empty after. */
void mount_servers_close(MountServers *servers);
/* Adds to *servers the FUSE servers that hold the block device rdev open (a driver still exiting after its
 * unmount), as long as there is room: pidfds, the caller's to close. */
void mount_fuse_servers_holding(dev_t rdev, MountServers *servers);

/* Drops every /run/mount/utab entry for target, unless something is still mounted there: what a mount
 * unmounted without libmount (umount2(), a FUSE server's death, `umount -n`) leaves behind, which libmount
 * would otherwise merge into a later mount of the same source at the same place. mount_point_remove() calls
 * it for every mount point it removes. 0 also when there was nothing to drop or no utab at all. */
int mount_utab_forget(const char *target);

/* Where is the block device devnum mounted? Matches kernel mounts by devnum (mountinfo's major:minor, or
 * the source's st_rdev for btrfs, which reports an anonymous device) and FUSE mounts by source == node
 * (node may be NULL), counting only FUSE mounts made by root (user_id=0): any user can name a FUSE mount of
 * their own after a loop device. A NULL-terminated list of mount points, possibly empty (free with
 * strv_free()). */
int mount_find_targets(dev_t devnum, const char *node, char ***ret_targets);

/* The mount table, for several lookups (a device and its partitions). mount_table_load() hands out the table
 * it read last while the kernel says nothing was mounted or unmounted since (a reference: read it, never
 * change it), else reads mountinfo again; so do mount_find_targets() and mount_find_source(). */
typedef struct libmnt_table MountTable;
int mount_table_load(MountTable **ret);
MountTable *mount_table_unref(MountTable *table);
static inline void mount_table_unrefp(MountTable **table)
{
        mount_table_unref(*table);
}
int mount_table_find_targets(MountTable *table, dev_t devnum, const char *node, char ***ret_targets);

/* One mount of a loop device or partition: its source ("/dev/loopN" or "/dev/loopNpM"), where, and N. */
typedef struct LoopMount {
        char *node;
        char *target;
        unsigned number;
} LoopMount;
void loop_mounts_free(LoopMount *mounts, size_t n);
/* Every mount in table whose source is a loop device or partition, counted as mount_table_find_targets()
 * counts them: a FUSE mount only when root made it (any user can name a FUSE mount after a loop device). */
int mount_table_loop_mounts(MountTable *table, LoopMount **ret, size_t *ret_n);

/* The source node, and the devnum of that node (the source's st_rdev when it is a block device, else
 * mountinfo's major:minor) of the topmost mount at target. -ENOENT if target is not a mount point, or is a
 * FUSE mount a user made (mount_table_find_targets() does not count those either).
 * ret_source and ret_devnum may be NULL. */
int mount_find_source(const char *target, char **ret_source, dev_t *ret_devnum);
