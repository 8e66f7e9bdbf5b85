/* engine.c: what loopd does for a caller, as functions of plain values: attach, detach, mount a node for a
 * user, unmount, open an image. Authorization and argument parsing happened in the D-Bus face already; the
 * kernel work is the kernel layer's (loop.c, mount.c, probe.c); records are the registry's. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mount.h"
#include "partition.h"
#include "probe.h"
#include "registry.h"
#include "state.h"
#include "strv.h"
#include "watcher.h"

int engine_error(EngineError *e, int r, EngineErrorKind kind, const char *format, ...)
{
        va_list ap;

        if (!e)
                return r;
        e->kind = kind;
        va_start(ap, format);
        (void)vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return r;
}

int engine_error_errno(EngineError *e, int r, const char *what)
{
        EngineErrorKind kind;

        switch (-r) {
        case EBUSY:
                kind = ENGINE_BUSY;
                break;
        case ENXIO:
        case ENODEV:
        case ENOENT:
        case ESTALE:
                kind = ENGINE_NOT_FOUND;
                break;
        case EMEDIUMTYPE:
                kind = ENGINE_UNSUPPORTED_FORMAT;
                break;
        case ETIMEDOUT:
                kind = ENGINE_TIMEOUT;
                break;
        case EINVAL:
        case EROFS:
        case EFBIG:
        case EOVERFLOW:
                kind = ENGINE_INVALID_ARGUMENT;
                break;
        default:
                kind = ENGINE_FAILED;
        }
        return engine_error(e, r, kind, "%s: %s", what, strerror(-r));
}

/* ---- attach ---- */

int engine_attach(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        uint32_t sector_size;
        int lock_fd = -EBADF, r;

        /* Counted here, right before the device is bound and recorded (nothing else runs in between): calls
         * that were reading their images at the same time cannot all slip under the limit. */
        if (uid != 0 && registry_count_devices_of(m->registry, uid) >= m->max_devices_per_user)
                return engine_error(e, -EDQUOT, ENGINE_LIMIT_EXCEEDED,
                        "uid %u already has %u loop devices attached, the most allowed", (unsigned)uid,
                        m->max_devices_per_user);

        /* A table that fits more than one sector size is only a problem when the caller left the choice to
         * us; image_probe() has ruled out the non-raw formats before it says so. */
        if (probe_result == -ENOTUNIQ && req->sector_size == 0)
                return engine_error(e, -ENOTUNIQ, ENGINE_INVALID_ARGUMENT,
                        "sector-size: the image's partition table fits more than one sector size; pass "
                        "sector-size explicitly");
        if (probe_result < 0 && probe_result != -ENOTUNIQ)
                return engine_error_errno(e, probe_result, "Failed to read the image");
        if (probe_result >= 0 && probe->format)
                return engine_error(e, -EMEDIUMTYPE, ENGINE_UNSUPPORTED_FORMAT,
                        "The image is in %s format, not a raw disk image; convert it first (qemu-img convert "
                        "-O raw)",
                        probe->format);
        sector_size = req->sector_size ?: probe->sector_size;

        /* Noted before the device is bound, removed on return (the record, if any, is written by then): a
         * loopd killed in between leaves the note, and the next one rolls the attach back. */
        _cleanup_(state_remove_pendingp) char *pending = NULL;
        ManagedDevice intent = {
                .owner = uid,
                .backing_dev = st->st_dev,
                .backing_inode = st->st_ino,
                .offset = req->offset,
        };
        r = state_save_pending(m->state_dir, &intent, &pending);
        if (r < 0)
                log_warning_errno(r,
                        "Failed to note the attach in %s, a crash now would leave the device bound: %m",
                        m->state_dir);

        LoopConfig config = {
                .offset = req->offset,
                .size_limit = req->size_limit,
                .sector_size = sector_size,
                .read_only = req->read_only,
                .partition_scan = req->partition_scan,
                .direct_io = req->direct_io,
        };
        r = loop_attach(fd, &config, &info, &lock_fd);
        if (r == -ENOSPC)
                return engine_error(e, r, ENGINE_NO_FREE_DEVICE, "The kernel has no free loop device");
        if (r < 0)
                return engine_error_errno(e, r, "Failed to attach the image");

        /* The record owns the device's lock and a copy of the image fd, for the watcher's first probe of
         * the device (it reads the image instead of the device: much cheaper for a new device). Both go
         * with the record, whoever ends it. */
        ManagedDevice record = {
                .number = info->number,
                .diskseq = info->diskseq,
                .owner = uid,
                .backing_dev = st->st_dev,
                .backing_inode = st->st_ino,
                .offset = req->offset,
                .autoclear = req->autoclear,
                .lock_fd = lock_fd,
                .image_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3),
                .image_offset = req->offset,
        };
        r = registry_add_device(m->registry, &record);
        if (r < 0) {
                (void)loop_detach(info->number, info->diskseq);
                return engine_error_errno(e, r, "Failed to record the device");
        }
        /* In the watcher's table, with its owner, before the caller hears of it: whoever asks next finds
         * it, and DeviceAttached comes before the reply. */
        if (m->watcher)
                watcher_update_device(m->watcher, info->number);
        *ret = TAKE_PTR(info);
        return 0;
}

/* ---- detach ---- */

/* "a, b, c" (NULL on ENOMEM). */
static char *join_list(char *const *list)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        if (!f)
                return NULL;
        for (char *const *t = list; t && *t; t++)
                fprintf(f, "%s%s", t == list ? "" : ", ", *t);
        if (fclose(f) != 0)
                return mfree(text);
        return text;
}

int engine_detach(Manager *m, const LoopInfo *info, bool unmount, EngineError *e)
{
        _cleanup_strv_free_ char **mounts = NULL;
        unsigned number = info->number;
        int r;

        r = registry_device_mounts(info, &mounts);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the mount table");
        if (mounts && mounts[0] && !unmount) {
                _cleanup_free_ char *list = join_list(mounts);
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "loop%u is mounted on %s; unmount it first (or detach with the unmount option)",
                        number, strempty(list));
        }
        for (char **t = mounts; t && *t; t++) {
                r = unmount_filesystem(*t);
                if (r < 0)
                        return engine_error(e, r, r == -EBUSY ? ENGINE_BUSY : ENGINE_FAILED,
                                "Failed to unmount %s: %s", *t, strerror(-r));
                manager_remove_mount_point(m, *t);
        }

        r = registry_detach_device(m->registry, number, info->diskseq);
        if (r == -EBUSY)
                return engine_error(e, r, ENGINE_BUSY,
                        "loop%u is in use by another process; it was not detached", number);
        /* Gone already is what was asked: an autoclear device goes with its last unmount above, and a number
         * re-used since (-ESTALE) means the device the caller named no longer exists. */
        if (r < 0 && r != -ENXIO && r != -ENODEV && r != -ESTALE)
                return engine_error_errno(e, r, "Failed to detach");
        log_info("Detached loop%u", number);
        if (m->watcher)
                watcher_update_device(m->watcher, number);
        return 0;
}

/* ---- mount and unmount ---- */

/* The user's name (the directory under the media dir) and primary group; a uid without a passwd entry
 * gets its number as name and gid = uid. */
static int user_of(uid_t uid, char **ret_name, gid_t *ret_gid)
{
        struct passwd pw, *result = NULL;
        char buf[4096];

        *ret_gid = (gid_t)uid;
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &result) == 0 && result) {
                *ret_gid = result->pw_gid;
                if (!isempty(result->pw_name) && !strchr(result->pw_name, '/') &&
                        result->pw_name[0] != '.') {
                        *ret_name = strdup(result->pw_name);
                        return *ret_name ? 0 : -ENOMEM;
                }
        }
        if (asprintf(ret_name, "%u", (unsigned)uid) < 0)
                return -ENOMEM;
        return 0;
}

int engine_mount_node(Manager *m, uid_t uid, const char *node, dev_t devnum, const char *fstype,
        const char *options, bool read_only, char **ret_mount_point, EngineError *e)
{
        _cleanup_free_ char *probed_type = NULL, *label = NULL, *uuid = NULL, *final_options = NULL,
                            *bad = NULL, *user = NULL, *name = NULL, *mount_point = NULL;
        _cleanup_strv_free_ char **targets = NULL;
        bool fuse;
        gid_t gid;
        int r;

        r = mount_find_targets(devnum, node, &targets);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the mount table");
        if (targets && targets[0])
                return engine_error(e, -EALREADY, ENGINE_ALREADY_MOUNTED, "%s is already mounted on %s",
                        node, targets[0]);

        r = probe_filesystem(node, &probed_type, &label, &uuid);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to probe the filesystem");
        if (isempty(fstype))
                fstype = probed_type;
        if (isempty(fstype))
                return engine_error(e, -EMEDIUMTYPE, ENGINE_UNSUPPORTED_FILESYSTEM,
                        "%s carries no filesystem that could be recognised", node);
        r = mount_pick_driver(fstype, &fuse);
        if (r < 0)
                return engine_error(e, r, ENGINE_UNSUPPORTED_FILESYSTEM,
                        "Neither the kernel nor an installed FUSE driver can mount %s (%.32s)", node,
                        fstype);

        r = user_of(uid, &user, &gid);
        if (r < 0)
                return r;

        r = mount_options_build(fstype, options, read_only, fuse, uid, gid, node, &final_options, &bad);
        if (r == -EINVAL)
                return engine_error(
                        e, r, ENGINE_INVALID_ARGUMENT, "options: '%s' is not allowed", strempty(bad));
        if (r < 0)
                return engine_error_errno(e, r, "Failed to build the mount options");

        if (mount_name_sanitize(label, &name) < 0 && mount_name_sanitize(uuid, &name) < 0) {
                name = strdup("disk");
                if (!name)
                        return -ENOMEM;
        }
        r = mount_point_create(m->media_dir, user, uid, gid, name, &mount_point);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to create the mount point");

        r = mount_filesystem(node, mount_point, fstype, final_options, fuse);
        if (r < 0) {
                (void)mount_point_remove(m->media_dir, mount_point);
                if (r == -EPROTONOSUPPORT)
                        return engine_error(e, r, ENGINE_UNSUPPORTED_FILESYSTEM,
                                "No driver can mount %s (%s)", node, fstype);
                return engine_error(
                        e, r, ENGINE_FAILED, "Failed to mount %s (%s): %s", node, fstype, strerror(-r));
        }

        log_info("Mounted %s (%s) on %s for uid %u", node, fstype, mount_point, (unsigned)uid);
        /* Mounted, and the mount point in Partitions, before the caller hears of it. */
        if (m->watcher)
                watcher_update_mounts(m->watcher);
        *ret_mount_point = TAKE_PTR(mount_point);
        return 0;
}

int engine_unmount(Manager *m, unsigned number, const char *target, EngineError *e)
{
        int r;

        r = unmount_filesystem(target);
        if (r == -EBUSY)
                return engine_error(e, r, ENGINE_BUSY, "%s is busy: a process has files open there", target);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to unmount");
        manager_remove_mount_point(m, target);
        log_info("Unmounted %s", target);

        registry_release_if_autoclear(m->registry, number);
        if (m->watcher)
                watcher_update_mounts(m->watcher);
        return 0;
}

/* ---- open an image ---- */

void mounted_nodes_free(MountedNode *list, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(list[i].node);
                free(list[i].mount_point);
        }
        free(list);
}

static bool fstype_mountable(const char *fstype)
{
        return !isempty(fstype) && !streq(fstype, "swap") && !streq(fstype, "LVM2_member") &&
                !streq(fstype, "crypto_LUKS") && !streq(fstype, "linux_raid_member");
}

/* Undoes an open that failed half way: unmounts what it mounted and detaches. */
static void open_roll_back(Manager *m, const LoopInfo *info, MountedNode *mounted, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (unmount_filesystem(mounted[i].mount_point) >= 0)
                        manager_remove_mount_point(m, mounted[i].mount_point);
        (void)registry_detach_device(m->registry, info->number, info->diskseq);
}

int engine_open_image(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret_info, MountedNode **ret_mounts,
        size_t *ret_n, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        EngineError first = {};
        PartitionInfo *parts = NULL;
        MountedNode *mounted = NULL;
        size_t n_parts = 0, n_mounted = 0;
        int first_r = 0, r;

        r = engine_attach(m, fd, req, st, uid, probe_result, probe, &info, e);
        if (r < 0)
                return r;

        r = probe_loop_device_image(info->number, fd, req->offset, &parts, &n_parts);
        if (r < 0) {
                open_roll_back(m, info, NULL, 0);
                return engine_error_errno(e, r, "Failed to read what the image holds");
        }
        mounted = calloc(n_parts ? n_parts : 1, sizeof(MountedNode));
        if (!mounted) {
                partition_info_array_free(parts, n_parts);
                open_roll_back(m, info, NULL, 0);
                return -ENOMEM;
        }

        for (size_t i = 0; i < n_parts; i++) {
                EngineError ne = {};
                char *mount_point = NULL;

                if (!fstype_mountable(parts[i].fstype))
                        continue;
                /* A partition at sector 0 of a device that carries this same filesystem as a whole is that
                 * filesystem again (a hybrid ISO's partition 1 spans the ISO): mount it once, as the
                 * device. */
                if (parts[i].number > 0 && parts[i].offset == 0 && parts[0].number == 0 &&
                        streq(parts[i].fstype, parts[0].fstype) && streq(parts[i].uuid, parts[0].uuid))
                        continue;
                r = engine_mount_node(m, uid, parts[i].node, parts[i].devnum, NULL, NULL, req->read_only,
                        &mount_point, &ne);
                if (r < 0) {
                        log_info("Skipping %s of the image: %s", parts[i].node,
                                ne.message[0] ? ne.message : strerror(-r));
                        if (first_r == 0) {
                                first_r = r;
                                first = ne;
                        }
                        continue;
                }
                mounted[n_mounted].mount_point = mount_point;
                mounted[n_mounted].node = strdup(parts[i].node);
                n_mounted++;
        }
        partition_info_array_free(parts, n_parts);

        if (n_mounted == 0) {
                open_roll_back(m, info, mounted, n_mounted);
                mounted_nodes_free(mounted, n_mounted);
                if (first_r < 0) {
                        if (e)
                                *e = first;
                        return first_r;
                }
                return engine_error(e, -ENOMEDIUM, ENGINE_NOTHING_TO_MOUNT,
                        "The image holds no filesystem that could be mounted; it was detached again");
        }

        /* The device goes away with its last mount. */
        registry_arm_autoclear(m->registry, info->number, info->diskseq, true);
        *ret_info = TAKE_PTR(info);
        *ret_mounts = mounted;
        *ret_n = n_mounted;
        return 0;
}
