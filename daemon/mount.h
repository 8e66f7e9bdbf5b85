/* mount.h: mounting a loop device's filesystem for a user, and reading the mount table. Never logs. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Builds the option string for mounting fstype for the user uid/gid:
 *  - nosuid,nodev always;
 *  - the caller's comma list (may be NULL) checked against the allow-list (ro, rw, noexec, exec, noatime,
 *    relatime, nodiratime, lazytime, sync, dirsync, nosymfollow, plus a few per filesystem); an option
 *    not on it, a value with a newline or control character, uid=/gid= set by the caller: -EINVAL with
 *    *ret_bad naming the offending option;
 *  - uid=/gid= for filesystems without POSIX ownership (vfat, exfat, ntfs, iso9660, udf);
 *  - errors=remount-ro for ext2/3/4;
 *  - read-only mounts of journalled filesystems never replay the journal (ext3/4: noload, xfs:
 *    norecovery, btrfs: rescue=nologreplay);
 *  - fuse: the options a FUSE helper needs (allow_other, fsname=, ...).
 * The result never contains a duplicate or a caller-smuggled option. */
int mount_options_build(const char *fstype, const char *user_options, bool read_only, bool fuse, uid_t uid,
        gid_t gid, const char *node, char **ret_options, char **ret_bad);

/* Turns an attacker-controlled label (or uuid) into one safe path component: valid UTF-8, no '/', no
 * control characters, no leading '.', at most 64 bytes (cut on a character boundary), never "", "." or
 * "..". Returns -EINVAL if nothing usable is left (the caller tries the next candidate). */
int mount_name_sanitize(const char *label, char **ret);

/* Makes media_dir/<user> (root-owned, mode 0750 plus an ACL so that only uid may enter; never following a
 * symlink) and a fresh, unique directory for name under it ("name", "name-1", "name-2", ... decided by
 * mkdir's atomicity, not by a check). Returns the directory's path. */
int mount_point_create(const char *media_dir, const char *user, uid_t uid, const char *name, char **ret_path);

/* Removes a mount point directory made by mount_point_create() (rmdir: only if empty and not mounted). */
int mount_point_remove(const char *path);

/* Does the running kernel know fstype (/proc/filesystems)? */
bool mount_kernel_has_filesystem(const char *fstype);

/* The FUSE helper for fstype installed on this machine (e.g. "/usr/bin/fuseiso"), or NULL. */
const char *mount_fuse_helper(const char *fstype);

/* Mounts node on target: with the kernel driver when there is one, else with the FUSE helper (started so
 * that loopd can reap it). options come from mount_options_build() with the matching fuse flag.
 * -EPROTONOSUPPORT: no kernel or FUSE driver for fstype. Other -errno: the mount failed (errno of
 * mount(2) or of the helper). */
int mount_filesystem(const char *node, const char *target, const char *fstype, const char *options,
        bool fuse);

/* Unmounts target (no lazy unmount; -EBUSY when in use). */
int unmount_filesystem(const char *target);

/* Where is the block device devnum (with node path, for FUSE mounts whose source is the path) mounted?
 * A NULL-terminated list of mount points, possibly empty. */
int mount_find_targets(dev_t devnum, const char *node, char ***ret_targets);

/* The source node and devnum of the mount at target (-ENOENT if target is not a mount point). */
int mount_find_source(const char *target, char **ret_source, dev_t *ret_devnum);
