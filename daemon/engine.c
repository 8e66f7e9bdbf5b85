/* engine.c: what loopd does for a caller, as functions of plain values: attach, detach, mount a node for a
 * user, unmount, open an image. Authorization and argument parsing happened in the D-Bus face already; the
 * kernel work is the kernel layer's (loop.c, mount.c, probe.c); records are the registry's. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd-util.h"
#include "image-reader.h"
#include "log.h"
#include "mount.h"
#include "partition.h"
#include "probe.h"
#include "registry.h"
#include "state.h"
#include "strv.h"
#include "vdisk.h"
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

/* The kind an errno of the kernel layer means. */
static EngineErrorKind errno_kind(int r)
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
        return kind;
}

int engine_error_errno(EngineError *e, int r, const char *what)
{
        return engine_error(e, r, errno_kind(r), "%s: %s", what, strerror(-r));
}

int engine_error_unmount(EngineError *e, int r, const char *target)
{
        if (r == -EBUSY)
                return engine_error(e, r, ENGINE_BUSY, "%s is busy: a process has files open there", target);
        if (r == -ETIMEDOUT)
                return engine_error(e, r, ENGINE_TIMEOUT,
                        "Unmounting %s did not finish within %" PRIu64
                        " s (its image may be hung); it goes on in the background",
                        target, mount_get_timeout() / 1000000);
        if (r == -EINPROGRESS)
                return engine_error(e, r, ENGINE_BUSY,
                        "%s: an earlier mount or unmount of its device still waits in the kernel (its image "
                        "may be hung)",
                        target);
        return engine_error(e, r, errno_kind(r), "Failed to unmount %s: %s", target, strerror(-r));
}

/* ---- the same image twice ---- */

/* Is info's device bound to the file behind fd (st: its fd_stat_cached())? A device loopd bound to an image
 * by the device and inode its record holds (the caller's fd's at Attach); any other (someone else's, a
 * virtual disk's export) by the backing file's name as sysfs shows it, against fd's (*path, looked up the
 * first time it is needed). The kernel tells the inode only through LOOP_GET_STATUS64, which asks the
 * backing file's filesystem, and a FUSE server may never answer. */
static bool bound_to(Manager *m, const LoopInfo *info, int fd, const struct stat *st, char **path)
{
        const ManagedDevice *d = registry_find_device(m->registry, info->number, info->diskseq);

        if (d && !d->vdisk)
                return d->backing_dev == st->st_dev && d->backing_inode == st->st_ino;
        if (!*path && loop_backing_name(fd, path) < 0)
                return false;
        return streq(info->backing_file, *path);
}

/* The bytes [offset, offset + size) of a backing file that a binding covers (size 0: to the end). */
static bool ranges_overlap(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size)
{
        uint64_t a_end = a_size == 0 || a_size > UINT64_MAX - a ? UINT64_MAX : a + a_size;
        uint64_t b_end = b_size == 0 || b_size > UINT64_MAX - b ? UINT64_MAX : b + b_size;

        return a < b_end && b < a_end;
}

/* A read-write device already bound to bytes of the file (fd, st) that req would bind too; NULL if none. */
static const LoopInfo *find_writer(Manager *m, int fd, const struct stat *st, const AttachRequest *req)
{
        _cleanup_free_ unsigned *numbers = NULL;
        _cleanup_free_ char *path = NULL;
        size_t n = 0;

        if (!m->watcher || watcher_list_devices(m->watcher, &numbers, &n) < 0)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                const LoopInfo *info = watcher_device(m->watcher, numbers[i]);

                if (info && !info->read_only && bound_to(m, info, fd, st, &path) &&
                        ranges_overlap(
                                req->offset, req->size_limit, info->offset, info->size_limit ?: info->size))
                        return info;
        }
        return NULL;
}

/* uid's device for the whole image (st) if uid has it open already: the kernel still has that incarnation,
 * bound from offset 0 to the end. */
static const LoopInfo *find_opened(Manager *m, const struct stat *st, uid_t uid)
{
        if (!m->watcher)
                return NULL;
        for (ManagedDevice *d = m->registry->devices; d; d = d->next) {
                const LoopInfo *info;

                if (d->owner != uid || d->backing_dev != st->st_dev || d->backing_inode != st->st_ino ||
                        d->offset != 0)
                        continue;
                info = watcher_device(m->watcher, d->number);
                if (info && info->diskseq == d->diskseq && info->offset == 0 && info->size_limit == 0)
                        return info;
        }
        return NULL;
}

bool engine_image_is_open(Manager *m, const struct stat *st, uid_t uid)
{
        return find_opened(m, st, uid) != NULL;
}

/* ---- attach ---- */

/* loopN marked as loopd's for the udev rule before its first uevent, unmarked if it was not bound after all.
 * A failure costs the mark (udisks2 shows the device too, and a loopd killed before recording it cannot roll
 * it back: registry_roll_back_pending()), never the attach. */
static int mark_for_udev(unsigned number, bool claimed, void *userdata)
{
        Manager *m = userdata;
        int r;

        r = state_mark_udev(m->state_dir, number, claimed);
        if (r < 0)
                log_debug_errno(r, "Failed to %s loop%u for udev in %s: %m", claimed ? "mark" : "unmark",
                        number, m->state_dir);
        return 0;
}

/* The image's own group, when the user database makes the caller a member of it and it is not their primary
 * group (a VM's disk, 0640 root:kvm): the one supplementary group the export gets. qemu reopens the image by
 * its path, which the kernel checks against the process's ids: this group lets it do to this file what the
 * caller's membership lets them, and no more groups give it anything of other files'. user and gid: the
 * caller's name and primary group, as engine_user_of() gives them. *ret_set false: none (also for a name
 * that is a number, which engine_user_of() gives a caller without a usable passwd entry: another account may
 * have that name; and for more groups than the kernel takes). */
static int image_group_of(const char *user, gid_t gid, int fd, gid_t *ret_group, bool *ret_set)
{
        struct stat st;
        bool member = false;
        int size = 64;

        if (user[strspn(user, "0123456789")] == '\0' || fd_stat_cached(fd, &st) < 0 || st.st_gid == gid) {
                *ret_set = false;
                return 0;
        }
        for (;;) {
                _cleanup_free_ gid_t *list = reallocarray(NULL, (size_t)size, sizeof(gid_t));
                int n = size;

                if (!list)
                        return -ENOMEM;
                if (getgrouplist(user, gid, list, &n) >= 0) {
                        for (int i = 0; i < n; i++)
                                member = member || list[i] == st.st_gid;
                        break;
                }
                /* Too small: n says how many there are. */
                if (n <= size || n > NGROUPS_MAX)
                        break;
                size = n;
        }
        *ret_group = st.st_gid;
        *ret_set = member;
        return 0;
}

int engine_vdisk_start(Manager *m, int fd, const AttachRequest *req, uid_t uid, const ImageProbe *probe,
        const char *image, Vdisk **ret, EngineError *e)
{
        _cleanup_free_ char *user = NULL;
        gid_t gid, group = 0;
        bool grouped;
        int r;

        if (probe->verdict == IMAGE_UNSAFE)
                return engine_error(e, -EPERM, ENGINE_UNSAFE_IMAGE,
                        "The %s image refers to other files (%s); loopd serves only images that hold their "
                        "whole disk",
                        probe->format, strempty(probe->reason));
        if (probe->verdict == IMAGE_UNSUPPORTED)
                return engine_error(e, -EMEDIUMTYPE, ENGINE_UNSUPPORTED_FORMAT,
                        "The image is in %s format, but loopd cannot serve it: %s", probe->format,
                        strempty(probe->reason));
        if (!vdisk_format_supported(probe->format))
                return engine_error(e, -EMEDIUMTYPE, ENGINE_UNSUPPORTED_FORMAT,
                        "The image is in %s format, which loopd cannot serve", probe->format);
        if (req->offset != 0 || req->size_limit != 0)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                        "%s: the image is in %s format; offset and size-limit apply to raw images only",
                        req->offset != 0 ? "offset" : "size-limit", probe->format);
        if (uid != 0 && registry_count_devices_of(m->registry, uid) >= m->max_devices_per_user)
                return engine_error(e, -EDQUOT, ENGINE_LIMIT_EXCEEDED,
                        "uid %u already has %u loop devices attached, the most allowed", (unsigned)uid,
                        m->max_devices_per_user);

        if (!req->read_only) {
                r = vdisk_writes_safe(m->qsd_path);
                if (r <= 0)
                        return engine_error(e, r < 0 ? r : -EROFS, ENGINE_UNSUPPORTED_FORMAT,
                                "The %s image can only be opened read-only here: qemu-storage-daemon (%s) %s; "
                                "open it read-only, or convert it (qemu-img convert -O raw)",
                                probe->format, m->qsd_path ?: VDISK_QSD_PATH,
                                r < 0 ? "cannot tell its version"
                                      : "is older than 10.0, whose exports can lose written data");
        }
        if (access(m->qsd_path ?: VDISK_QSD_PATH, X_OK) < 0) {
                r = negative_errno();
                return engine_error(e, r, ENGINE_UNSUPPORTED_FORMAT,
                        "The image is in %s format, and serving it needs qemu-storage-daemon (%s): %s",
                        probe->format, m->qsd_path ?: VDISK_QSD_PATH, strerror(-r));
        }

        /* The process runs as the caller: it reopens the image through /proc/self/fd (qemu-storage-daemon
         * takes no fd), which the kernel allows only to someone who may open the file. With the image's
         * group when the caller is in it: a VM's disk is often theirs to read through one (kvm, libvirt). */
        r = engine_user_of(uid, &user, &gid);
        if (r >= 0)
                r = image_group_of(user, gid, fd, &group, &grouped);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to look up the caller");
        r = vdisk_start(m->event, m->state_dir, m->qsd_path, fd, probe->format, !req->read_only,
                probe->direct_io, uid, gid, grouped ? &group : NULL, grouped ? 1 : 0, image, ret);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to start serving the image");
        return 0;
}

int engine_vdisk_failed(Vdisk *v, int result, uint64_t timeout_usec, EngineError *e)
{
        char message[512];
        const char *format = v->format ? v->format : "virtual-disk";
        int r;

        /* Never bound, nothing written: killed at once, not asked to flush. */
        v->writable = false;

        if (result == -ETIMEDOUT) {
                r = engine_error(e, result, ENGINE_TIMEOUT,
                        "qemu-storage-daemon did not open the %s image within %" PRIu64
                        " s; nothing was attached",
                        format, timeout_usec / 1000000);
                vdisk_stop(v);
                return r;
        }
        vdisk_error(v, message, sizeof(message));
        /* qemu locks the image (OFD locks): a writer elsewhere keeps it from opening it. */
        if (strstr(message, "Failed to get") && strstr(message, "lock"))
                r = engine_error(e, -EBUSY, ENGINE_BUSY,
                        "The %s image is in use by another program (%s); nothing was attached", format,
                        message);
        else if (strstr(message, "Permission denied"))
                /* Not the image's fault: qemu, running as the caller, reopens it by its /proc/self/fd
                 * path, and the file's permissions refuse the caller. */
                r = engine_error(e, -EACCES, ENGINE_FAILED,
                        "The %s image cannot be served: qemu-storage-daemon, which runs as you, may not open "
                        "it (%s); nothing was attached",
                        format, message);
        else if (message[0])
                r = engine_error(e, result < 0 ? result : -EIO, ENGINE_UNSUPPORTED_FORMAT,
                        "The %s image cannot be served: %s", format, message);
        else if (result == -ENOTCONN)
                r = engine_error(e, result, ENGINE_FAILED,
                        "The %s image cannot be served: qemu-storage-daemon exited without serving it "
                        "(and without saying why)",
                        format);
        else
                r = engine_error(e, result < 0 ? result : -EIO, ENGINE_FAILED,
                        "The %s image cannot be served: %s", format, strerror(result < 0 ? -result : EIO));
        vdisk_stop(v);
        return r;
}

int engine_attach(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret, EngineError *e)
{
        _cleanup_(vdisk_stopp) Vdisk *export = req->export;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        struct stat bound;
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
                        "The image is in %s format, not a raw disk image: it is served through its export "
                        "(or convert it: qemu-img convert -O raw)",
                        probe->format);
        sector_size = req->sector_size ?: probe->sector_size;

        /* What is bound: the image, or a virtual disk's export (the roll-back after a crash looks for it).
         */
        if (!export)
                bound = *st;
        else {
                r = fd_stat_cached(fd, &bound);
                if (r < 0)
                        return engine_error_errno(e, r, "Failed to read the export");
        }

        if (!req->read_only && !req->shared) {
                const LoopInfo *writer = find_writer(m, fd, &bound, req);
                if (writer)
                        return engine_error(e, -EBUSY, ENGINE_BUSY,
                                "The image is already attached read-write to /dev/loop%u; a second "
                                "read-write device would corrupt it (attach it read-only, or pass shared: "
                                "true to do it anyway)",
                                writer->number);
        }

        /* Noted before the device is bound, removed on return (the record, if any, is written by then): a
         * loopd killed in between leaves the note, and the next one rolls the attach back. */
        _cleanup_(state_remove_pendingp) char *pending = NULL;
        ManagedDevice intent = {
                .owner = uid,
                .backing_dev = bound.st_dev,
                .backing_inode = bound.st_ino,
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
                /* A virtual disk's export read-only: the guest's data is cached once, in the device's page
                 * cache. Not one written to: direct writes from the loop device onto the FUSE export lost
                 * data (a file written through a writable open was gone after close, the filesystem
                 * corrupt; qemu 7.2, kernel 6.18: the vdisk suite's writable test). */
                .direct_io = export ? req->read_only : req->direct_io,
                .on_number = mark_for_udev,
                .userdata = m,
                .reader = m->image_reader,
                .timeout_usec = m->io_timeout_usec,
        };
        r = loop_attach(fd, &config, &info, &lock_fd);
        if (r == -ENOSPC)
                return engine_error(e, r, ENGINE_NO_FREE_DEVICE, "The kernel has no free loop device");
        if (r == -ETIMEDOUT)
                return engine_error(e, r, ENGINE_TIMEOUT,
                        "Binding the image or reading its partition table did not finish within %" PRIu64
                        " s (its filesystem does not answer); the device is not attached, and a binding "
                        "still under way is undone once the filesystem answers or goes away",
                        m->io_timeout_usec / 1000000);
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
                .vdisk = export,
        };
        if (export) {
                r = vdisk_bind(export, m->event, info->number, info->diskseq);
                if (r < 0)
                        log_warning_errno(r,
                                "Failed to note loop%u with its export, a restarted loopd will tear it down: %m",
                                info->number);
        }
        export = NULL; /* the record's now, whatever comes of it */
        r = registry_add_device(m->registry, &record);
        if (r < 0) {
                (void)loop_detach(info->number, info->diskseq);
                (void)state_mark_udev(m->state_dir, info->number, false);
                return engine_error_errno(e, r, "Failed to record the device");
        }
        /* In the watcher's table, with its owner, before the caller hears of it: whoever asks next finds
         * it, and DeviceAttached comes before the reply. */
        if (m->watcher)
                watcher_update_device_info(m->watcher, info->number, info);
        *ret = TAKE_PTR(info);
        return 0;
}

/* ---- detach ---- */

/* How long Detach waits for I/O of the device in flight that does not move (loop_wait_io_done()). */
#define DETACH_IO_STALL_USEC (500 * UINT64_C(1000))

int engine_detach(Manager *m, const LoopInfo *info, bool unmount, EngineError *e)
{
        _cleanup_strv_free_ char **mounts = NULL;
        unsigned number = info->number;
        int r;

        r = engine_check_not_formatting(m, number, e);
        if (r < 0)
                return r;
        /* A mount loopd stopped waiting for holds the device in the kernel: it cannot go until that ends
         * (its image answers, or its server dies), and waiting for its exclusive open would only hold loopd.
         */
        if (mount_in_progress_on_device(number))
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "An earlier mount of loop%u (or of a partition of it) still waits in the kernel (its "
                        "image may be hung); it was not detached",
                        number);
        /* The mount table is read (its mount points to name or unmount) unless nothing can be mounted: the
         * watcher has read every change of the table and knows no mount of the device (a FUSE mount claims
         * nothing), and no one claims the device or a partition (a kernel filesystem's mount does). With
         * no mount, that read (and the partition list it needs) was a quarter of loopd's CPU a Detach. */
        if (unmount || !m->watcher || watcher_may_have_mounts(m->watcher, number) ||
                loop_is_claimed(number)) {
                r = registry_device_mounts(info, &mounts);
                if (r < 0)
                        return engine_error_errno(e, r, "Failed to read the mount table");
        }
        if (mounts && mounts[0] && !unmount) {
                _cleanup_free_ char *list = strv_join(mounts, ", ");
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "loop%u is mounted on %s; unmount it first (or detach with the unmount option)",
                        number, strempty(list));
        }
        for (char **t = mounts; t && *t; t++) {
                r = unmount_filesystem(*t, NULL);
                if (r < 0)
                        return engine_error_unmount(e, r, *t);
                manager_remove_mount_point(m, *t);
        }

        /* loopd's close of the device (its lock, then the detach's own fd) is its last, which waits for the
         * I/O in flight: one its image never answers (a probe that timed out left its reads there) would
         * hold loopd in the kernel until the image answers. */
        r = loop_wait_io_done(number, DETACH_IO_STALL_USEC);
        if (r == -EINPROGRESS)
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "I/O of loop%u is still in flight (its image may be hung); it was not detached, and "
                        "can be once its image answers",
                        number);
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
        for (size_t i = 0; i < n; i++) {
                int r = unmount_filesystem(mounted[i].mount_point, NULL);

                if (r >= 0)
                        manager_remove_mount_point(m, mounted[i].mount_point);
                /* The image hangs: every other unmount would wait as long, and the device stays mounted. */
                if (r == -ETIMEDOUT || r == -EINPROGRESS)
                        return;
        }
        (void)registry_detach_device(m->registry, info->number, info->diskseq);
}

/* What loopN (info) holds, read from the image behind fd (fd < 0: through the device). A device attached
 * just now (not again) was probed by the watcher a moment ago (through the same image, or the device): that
 * look is taken (copied: mounting changes the watcher's table), not read a second time. Only when the
 * kernel numbers its disks (diskseq): without, the watcher's entry could be an earlier device's. */
static int open_read_device(Manager *m, const LoopInfo *info, int fd, uint64_t offset, bool again,
        PartitionInfo **ret, size_t *ret_n)
{
        const LoopInfo *seen = m->watcher ? watcher_device(m->watcher, info->number) : NULL;
        const PartitionInfo *probed = NULL;
        size_t n = 0;
        int r;

        if (!again && seen && info->diskseq != 0 && seen->diskseq == info->diskseq)
                probed = watcher_device_partitions(m->watcher, info->number, &n);
        if (probed) {
                r = partition_info_array_copy(probed, n, ret);
                if (r >= 0)
                        *ret_n = n;
                return r;
        }
        return image_reader_probe_device(m->image_reader, info->number, fd, offset, NULL, 0, ret, ret_n);
}

/* Mounts for uid every filesystem on loopN (info) that the image behind fd holds (fd < 0: read through the
 * device); with again (the image was
 * open already), one that is mounted already is listed with its mount point instead. A failed mount is
 * skipped. Nothing mounted or listed: the first mount's error, else NothingToMount (the caller undoes what
 * it must). */
static int open_mount_all(Manager *m, const LoopInfo *info, int fd, uint64_t offset, uid_t uid,
        bool read_only, bool again, MountedNode **ret, size_t *ret_n, EngineError *e)
{
        PartitionInfo *parts = NULL;
        MountedNode *mounted;
        EngineError first = {};
        size_t n_parts = 0, n = 0;
        int first_r = 0, r;

        r = open_read_device(m, info, fd, offset, again, &parts, &n_parts);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read what the image holds");
        mounted = calloc(n_parts ? n_parts : 1, sizeof(MountedNode));
        if (!mounted) {
                partition_info_array_free(parts, n_parts);
                return -ENOMEM;
        }

        for (size_t i = 0; i < n_parts; i++) {
                _cleanup_strv_free_ char **targets = NULL;
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
                if (again && mount_find_targets(parts[i].devnum, parts[i].node, &targets) >= 0 && targets &&
                        targets[0]) {
                        mount_point = strdup(targets[0]);
                        r = mount_point ? 0 : -ENOMEM;
                } else
                        r = engine_mount_node(m, uid, parts[i].node, parts[i].devnum, NULL, NULL, read_only,
                                &mount_point, &ne);
                if (r == -ENOMEM)
                        break;
                if (r < 0) {
                        log_info("Skipping %s of the image: %s", parts[i].node,
                                ne.message[0] ? ne.message : strerror(-r));
                        /* The image hangs: the next mount would wait as long, and this is the error. */
                        bool hangs = r == -ETIMEDOUT || r == -EINPROGRESS;
                        if (first_r == 0 || hangs) {
                                first_r = r;
                                first = ne;
                        }
                        if (hangs)
                                break;
                        continue;
                }
                mounted[n].mount_point = mount_point;
                mounted[n].node = strdup(parts[i].node);
                n++;
                if (!mounted[n - 1].node) {
                        r = -ENOMEM;
                        break;
                }
        }
        partition_info_array_free(parts, n_parts);
        *ret = mounted;
        *ret_n = n;
        if (r == -ENOMEM)
                return r;
        if (n > 0)
                return 0;
        if (first_r < 0) {
                if (e)
                        *e = first;
                return first_r;
        }
        return engine_error(e, -ENOMEDIUM, ENGINE_NOTHING_TO_MOUNT,
                "The image holds no filesystem that could be mounted%s",
                again ? "" : "; it was detached again");
}

/* An image uid has open already: its device and mounts come back, what is not mounted gets mounted. */
static int open_again(Manager *m, const LoopInfo *opened, int fd, const AttachRequest *req, uid_t uid,
        LoopInfo **ret_info, MountedNode **ret_mounts, size_t *ret_n, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        MountedNode *mounted = NULL;
        size_t n = 0;
        int r;

        if (!req->read_only && opened->read_only)
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "The image is already open read-only on /dev/loop%u; close it first to open it "
                        "writable",
                        opened->number);
        r = loop_get_info(opened->number, &info);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the device the image is open on");

        log_info("The image is open already on loop%u for uid %u: showing its mounts", info->number,
                (unsigned)uid);
        /* A virtual disk's image is not what the device holds: read through the device. */
        ManagedDevice *d = registry_find_device(m->registry, info->number, info->diskseq);
        if (d && d->vdisk)
                fd = -EBADF;
        r = open_mount_all(m, info, fd, 0, uid, req->read_only || info->read_only, true, &mounted, &n, e);
        if (r < 0) {
                mounted_nodes_free(mounted, n);
                return r;
        }
        /* As at the first open: a device asked with autoclear goes away with its last mount. */
        registry_arm_autoclear(m->registry, info->number, info->diskseq, false);
        *ret_info = TAKE_PTR(info);
        *ret_mounts = mounted;
        *ret_n = n;
        return 0;
}

int engine_open_image(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret_info, MountedNode **ret_mounts,
        size_t *ret_n, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        MountedNode *mounted = NULL;
        const LoopInfo *opened;
        size_t n_mounted = 0;
        int r;

        /* A second double-click of the same file, by whatever fd: never a second device, never a second
         * mount of the same filesystem. */
        opened = req->offset == 0 && req->size_limit == 0 ? find_opened(m, st, uid) : NULL;
        if (opened) {
                vdisk_stop(req->export); /* the device has one */
                return open_again(m, opened, fd, req, uid, ret_info, ret_mounts, ret_n, e);
        }

        r = engine_attach(m, fd, req, st, uid, probe_result, probe, &info, e);
        if (r < 0)
                return r;

        r = open_mount_all(m, info, fd, req->offset, uid, req->read_only, false, &mounted, &n_mounted, e);
        if (r == -ETIMEDOUT || r == -EINPROGRESS) {
                /* The image hangs, and a mount of it is still in the kernel: the device cannot be detached
                 * while that holds it (loop_detach() would wait for its claim in vain). It stays, the
                 * caller's, for them to Detach. So it does after a probe or a FUSE driver that timed
                 * out: reads of the device may still wait on the image, and the last close of a device
                 * waits for them (the kernel drops its page cache then). */
                char why[sizeof(e->message)];

                mounted_nodes_free(mounted, n_mounted);
                if (!e)
                        return r;
                strcpy(why, e->message);
                return engine_error(e, r, e->kind,
                        "%s; loop%u stays attached: Detach it once its image answers", why, info->number);
        }
        if (r < 0) {
                open_roll_back(m, info, mounted, n_mounted);
                mounted_nodes_free(mounted, n_mounted);
                return r;
        }

        /* The device goes away with its last mount. */
        registry_arm_autoclear(m->registry, info->number, info->diskseq, true);
        *ret_info = TAKE_PTR(info);
        *ret_mounts = mounted;
        *ret_n = n_mounted;
        return 0;
}
