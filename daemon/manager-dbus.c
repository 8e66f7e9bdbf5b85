/* manager-dbus.c: the D-Bus face: the org.loopd1.Manager interface (argument checks, authorization, calls
 * into the engine, replies) and the face's life on the bus. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "auth.h"
#include "bus-calls.h"
#include "bus-options.h"
#include "bus-util.h"
#include "engine.h"
#include "fd-util.h"
#include "format.h"
#include "image-reader.h"
#include "image.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "manager-dbus.h"
#include "manager.h"
#include "mount.h"
#include "partition.h"
#include "probe.h"
#include "registry.h"
#include "strv.h"
#include "utf8.h"
#include "vdisk.h"
#include "watcher.h"
#include "worker.h"

/* ---- Attach ---- */

/* The image must be a regular file the caller opened for reading: not a path, a directory, a device, a
 * pipe or a socket, and not an O_PATH or write-only fd. Read-only follows the fd's access mode. */
static int check_backing_fd(int fd, AttachRequest *req, struct stat *ret_st, sd_bus_error *error)
{
        int flags = fcntl(fd, F_GETFL), r;

        if (flags < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT, "image: not a valid fd: %m");
        if (flags & O_PATH)
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "image: an O_PATH fd cannot be read; open the image for reading");
        /* What the kernel has of the file: a FUSE server that stopped answering GETATTR is not asked. */
        r = fd_stat_cached(fd, ret_st);
        if (r < 0)
                return sd_bus_error_setf(
                        error, LOOPD_ERROR_INVALID_ARGUMENT, "image: cannot stat the fd: %s", strerror(-r));
        if (!S_ISREG(ret_st->st_mode))
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "image: must be a regular file, not a %s",
                        S_ISDIR(ret_st->st_mode)            ? "directory"
                                : S_ISBLK(ret_st->st_mode)  ? "block device"
                                : S_ISCHR(ret_st->st_mode)  ? "character device"
                                : S_ISFIFO(ret_st->st_mode) ? "pipe"
                                : S_ISSOCK(ret_st->st_mode) ? "socket"
                                                            : "special file");

        switch (flags & O_ACCMODE) {
        case O_RDONLY:
                if (req->read_only_set && !req->read_only)
                        return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                                "%s was asked, but the image was opened read-only",
                                req->read_write_option ?: "read-only: false");
                req->read_only = true;
                break;
        case O_RDWR:
                break;
        default:
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "image: a write-only fd cannot back a loop device; open it for reading");
        }
        return 0;
}

static int image_too_small(uint64_t file_size, sd_bus_error *error)
{
        return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                "image: %" PRIu64 " bytes is less than one 512-byte sector", file_size);
}

static int check_attach_numbers(const AttachRequest *req, uint64_t file_size, sd_bus_error *error)
{
        if (req->sector_size != 0 && req->sector_size != 512 && req->sector_size != 1024 &&
                req->sector_size != 2048 && req->sector_size != 4096)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "sector-size: %" PRIu32 " is not one of 512, 1024, 2048, 4096 (or 0 to detect)",
                        req->sector_size);
        /* The kernel sizes a loop device in whole 512-byte sectors: less than one is a device of size 0. A
         * whole image that small may still be a virtual disk's descriptor (a vmdk's is a few hundred
         * bytes), which only the probe can tell: image_too_small() then. */
        if (file_size < 512 && (req->offset != 0 || req->size_limit != 0))
                return image_too_small(file_size, error);
        if (req->offset % 512 != 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "offset: %" PRIu64 " is not a multiple of 512 bytes", req->offset);
        if (req->offset > 0 && req->offset >= file_size)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "offset: %" PRIu64 " is at or beyond the end of the image (%" PRIu64 " bytes)",
                        req->offset, file_size);
        if (req->size_limit > file_size - req->offset)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "size-limit: offset %" PRIu64 " + size-limit %" PRIu64
                        " runs past the end of the image (%" PRIu64 " bytes)",
                        req->offset, req->size_limit, file_size);
        if (req->size_limit > 0 && req->size_limit < 512)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "size-limit: %" PRIu64 " bytes is less than one 512-byte sector", req->size_limit);
        if (req->size_limit == 0 && req->offset > 0 && file_size - req->offset < 512)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "offset: %" PRIu64 " leaves less than one 512-byte sector of the image (%" PRIu64
                        " bytes)",
                        req->offset, file_size);
        return 0;
}

typedef struct PendingAttach {
        Bus *bus;
        sd_bus_message *message;
        unsigned number;
        uint64_t diskseq;
} PendingAttach;

static int reply_attached(sd_bus_message *message, unsigned number)
{
        _cleanup_free_ char *device = NULL, *path = device_object_path(number);

        if (!path || !(device = loop_node_new(number, 0)))
                return -ENOMEM;
        return sd_bus_reply_method_return(message, "so", device, path);
}

static void attach_on_udev_done(int result, void *userdata)
{
        PendingAttach *p = userdata;
        Manager *m = p->bus->manager;
        int r;

        if (result >= 0)
                r = reply_attached(p->message, p->number);
        else if (result == -ECANCELED) {
                /* loopd is exiting before udev was done: roll back, as on a timeout, but say why. */
                (void)registry_detach_device(m->registry, p->number, p->diskseq);
                r = sd_bus_reply_method_errorf(p->message, LOOPD_ERROR_FAILED,
                        "loopd is exiting; the attach of loop%u was rolled back", p->number);
        } else {
                log_warning(
                        "udev did not process loop%u's partitions in time, detaching it again", p->number);
                (void)registry_detach_device(m->registry, p->number, p->diskseq);
                r = sd_bus_reply_method_errorf(p->message, LOOPD_ERROR_TIMEOUT,
                        "udev did not process loop%u and its partitions in time; the attach was rolled back",
                        p->number);
        }
        if (r < 0)
                log_debug_errno(r, "Failed to reply to Attach: %m");
        bus_calls_release(p->bus->calls, p->message);
        sd_bus_message_unref(p->message);
        free(p);
}

/* With udevd running, a client expects the partitions' udev state (by-* links, properties) once Attach
 * returns: wait for udev's events on the disk and its partitions, bounded; roll back on timeout. The call
 * still counts as waiting (it is, already, when this is called). */
static int attach_wait_for_udev(Bus *b, sd_bus_message *message, uid_t uid, const LoopInfo *info)
{
        Manager *m = b->manager;
        _cleanup_free_ KernelPartition *parts = NULL;
        _cleanup_free_ dev_t *devnums = NULL;
        PendingAttach *p;
        size_t n = 0;
        int r;

        r = partition_list_kernel(info->number, &parts, &n);
        if (r < 0)
                return r;
        devnums = calloc(n + 1, sizeof(dev_t));
        p = calloc(1, sizeof(PendingAttach));
        if (!devnums || !p) {
                free(p);
                return -ENOMEM;
        }
        devnums[0] = info->devnum;
        for (size_t i = 0; i < n; i++)
                devnums[i + 1] = parts[i].devnum;

        r = bus_calls_hold(b->calls, message, uid, NULL);
        if (r < 0) {
                free(p);
                return r;
        }
        p->bus = b;
        p->message = sd_bus_message_ref(message);
        p->number = info->number;
        p->diskseq = info->diskseq;
        r = watcher_wait_devices(m->watcher, devnums, n + 1, info->diskseq, m->partition_timeout_usec,
                attach_on_udev_done, p, NULL);
        if (r < 0) {
                bus_calls_release(b->calls, message);
                sd_bus_message_unref(p->message);
                free(p);
                return r;
        }
        return 0;
}

/* Checks the image fd and the numbers of a request, and finds the image's path for logs and polkit. */
static int attach_prepare(
        int fd, AttachRequest *req, struct stat *ret_st, char **ret_backing, sd_bus_error *error)
{
        int r;

        r = check_backing_fd(fd, req, ret_st, error);
        if (r < 0)
                return r;
        r = check_attach_numbers(req, (uint64_t)ret_st->st_size, error);
        if (r < 0)
                return r;

        /* The kernel's own name for the file (what sysfs will report as the backing file): readlink, not
         * realpath, which would walk the name once more, through directories the caller may swap. */
        r = loop_backing_name(fd, ret_backing);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                *ret_backing = NULL;
        /* It goes to polkit's details, which are D-Bus strings. */
        if (*ret_backing && utf8_make_valid(ret_backing) < 0)
                return -ENOMEM;
        return 0;
}

/* Reads the (h image, a{sv} options) every image method starts with. */
static int read_image_request(
        sd_bus_message *message, const OptionSpec *specs, int *ret_fd, sd_bus_error *error)
{
        int r = sd_bus_message_read(message, "h", ret_fd);
        if (r < 0)
                return r;
        return bus_read_options(message, specs, error);
}

/* Asks polkit before anything is touched. Returns as auth_check().
 *
 * MountImage needs attach and mount, but a user who double-clicked an image must be asked for a password
 * once: both actions are asked without interaction first; if only one needs a password it is asked again
 * with interaction, and if both do, the one action that stands for both (org.loopd1.open-image) is. A rule
 * that says no to either (no password would help) is the answer. */
static int authorize_image(Bus *b, sd_bus_message *message, uid_t uid, const AttachRequest *req,
        const char *backing, bool mount_image, sd_bus_error *error)
{
        const char *details[] = { "backing_file", strempty(backing), "read_only",
                req->read_only ? "true" : "false", NULL };
        const char *challenged = NULL;
        unsigned n_challenged = 0;
        int r;

        if (!mount_image)
                return auth_check(b->auth, message, uid, LOOPD_ACTION_ATTACH, details, 0, error);

        bool interactive = sd_bus_message_get_allow_interactive_authorization(message);
        for (size_t i = 0; i < 2; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                const char *action = i == 0 ? LOOPD_ACTION_ATTACH : LOOPD_ACTION_MOUNT;

                r = auth_check(b->auth, message, uid, action, details, AUTH_QUIET, &e);
                if (r == 0)
                        return 0;
                if (r > 0)
                        continue;
                if (!interactive ||
                        !sd_bus_error_has_name(&e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED)) {
                        sd_bus_error_move(error, &e);
                        return r;
                }
                challenged = action;
                n_challenged++;
        }
        if (n_challenged == 0)
                return 1;
        return auth_check(b->auth, message, uid, n_challenged == 1 ? challenged : LOOPD_ACTION_OPEN_IMAGE,
                details, 0, error);
}

/* ---- Attach and MountImage: the image is read in a worker ---- */

/* An Attach or MountImage whose image is being read (image_probe() in a worker process, bounded by
 * --io-timeout): what it needs to go on once the worker answered. */
struct ImageCall {
        Bus *bus;
        sd_bus_message *message;
        AttachRequest req;
        struct stat st;
        uid_t uid;
        char *backing;
        int fd; /* the caller's, owned by message; a virtual disk's export once it is up (export_fd) */
        bool mount_image;
        Vdisk *export; /* a virtual disk's, while it comes up */
        int export_fd;
        Worker *worker; /* bounded by --io-timeout: a caller that leaves meanwhile does not cut it short */
        ImageCall *next;
};

static ImageCall *image_call_free(ImageCall *c)
{
        if (!c)
                return NULL;
        for (ImageCall **p = &c->bus->image_calls; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        worker_cancel(c->worker);
        /* Whatever became of the call, its image's session is over (a successful Attach's first probe has
         * ended it already). */
        image_reader_end_session(c->bus->manager->image_reader, c->fd);
        vdisk_stop(c->export);
        safe_close(c->export_fd);
        bus_calls_release(c->bus->calls, c->message);
        sd_bus_message_unref(c->message);
        free(c->backing);
        free(c);
        return NULL;
}

void bus_cancel_calls(Bus *b)
{
        auth_cancel_queries(b->auth);
        format_cancel_calls(b);
        while (b->image_calls) {
                ImageCall *c = b->image_calls;
                (void)sd_bus_reply_method_errorf(
                        c->message, LOOPD_ERROR_FAILED, "loopd is exiting; nothing was attached");
                image_call_free(c);
        }
}

/* In the worker: the only reads of the caller's image before it is bound. */
static int attach_finish(ImageCall *c, int probe_result, const ImageProbe *probe, sd_bus_error *error);
static int mount_image_finish(ImageCall *c, int probe_result, const ImageProbe *probe, sd_bus_error *error);

static int image_call_finish(ImageCall *c, int probe_result, const ImageProbe *probe, sd_bus_error *error)
{
        return c->mount_image ? mount_image_finish(c, probe_result, probe, error)
                              : attach_finish(c, probe_result, probe, error);
}

static void image_call_reply(ImageCall *c, int r, sd_bus_error *error)
{
        if (sd_bus_error_is_set(error))
                r = sd_bus_reply_method_error(c->message, error);
        else
                r = sd_bus_reply_method_errno(c->message, r, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to reply: %m");
}

/* In the worker: the first open of a virtual disk's export waits until qemu-storage-daemon has opened the
 * image (or fails when it gave up); then the guest disk is read like any image. */
static int export_read(void *arg, void *data)
{
        ImageCall *c = arg;
        _cleanup_close_ int fd = open(c->export->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        int r;

        if (fd < 0)
                return negative_errno();
        /* Opened as root (the export is loopd's mount); read as the reader's children read. */
        r = image_reader_confine();
        if (r < 0)
                return r;
        return image_probe(fd, 0, 0, data);
}

static void image_call_on_export(int result, const void *data, void *userdata)
{
        ImageCall *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        bool writable = !c->req.read_only;
        ImageProbe probe = {};
        EngineError e = {};
        int r;

        c->worker = NULL;
        if (data)
                memcpy(&probe, data, sizeof(probe));
        if (result >= 0 && image_probe_check(&probe) < 0)
                result = -EIO;
        if (result >= 0 || result == -ENOTUNIQ) {
                c->export_fd = open(c->export->path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
                if (c->export_fd < 0)
                        result = negative_errno();
        }
        if (result < 0 && result != -ENOTUNIQ) {
                r = engine_vdisk_failed(TAKE_PTR(c->export), result, c->bus->manager->io_timeout_usec, &e);
                r = bus_error_from_engine(&error, r, &e);
        } else {
                /* The export is bound now, with what its guest disk says (the sector size). */
                c->fd = c->export_fd;
                c->req.read_only = !writable;
                c->req.export = TAKE_PTR(c->export);
                r = image_call_finish(c, result, &probe, &error);
        }
        if (r < 0)
                image_call_reply(c, r, &error);
        image_call_free(c);
}

/* A virtual disk: its export started, the call goes on in image_call_on_export() once it answers (1); or
 * answered (0), or the error to answer (< 0). */
static int image_call_serve(ImageCall *c, const ImageProbe *probe, sd_bus_error *error)
{
        Manager *m = c->bus->manager;
        EngineError e = {};
        int r;

        /* A virtual disk is read-only unless read-write was asked outright (read-only: false, writable:
         * true), whatever the fd: writing one goes through qemu, which must be fit for it. */
        if (!c->req.read_only_set)
                c->req.read_only = true;
        /* Opened again: the device it is open on serves it, no second export. Answered then: the 1 of the
         * reply's sd_bus_send() is not "goes on", which would keep the call waiting for good. */
        if (c->mount_image && engine_image_is_open(m, &c->st, c->uid)) {
                r = image_call_finish(c, 0, probe, error);
                return MIN(r, 0);
        }
        r = engine_vdisk_start(m, c->fd, &c->req, c->uid, probe, c->backing, &c->export, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        r = worker_start(m->event, c->fd, export_read, c, sizeof(ImageProbe), m->io_timeout_usec,
                image_call_on_export, c, &c->worker);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to start reading the export");
        return 1;
}

static void image_call_on_read(int result, const void *data, void *userdata)
{
        ImageCall *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        ImageProbe probe = {};
        int r;

        c->worker = NULL; /* freed by the worker once this returns */
        if (data)
                memcpy(&probe, data, sizeof(probe));
        /* The answer is a copy of a child's memory: its strings must be loopd's own. */
        if (result >= 0 && image_probe_check(&probe) < 0) {
                data = NULL;
                result = -EIO;
        }
        if (result == -ETIMEDOUT) {
                log_warning("Reading %s timed out, refusing to attach it", strempty(c->backing));
                r = sd_bus_error_setf(&error, LOOPD_ERROR_TIMEOUT,
                        "The image did not answer within %" PRIu64
                        " s (its filesystem may be hung); nothing was attached",
                        c->bus->manager->io_timeout_usec / 1000000);
        } else if (result == -EIO && !data)
                r = sd_bus_error_set(
                        &error, LOOPD_ERROR_FAILED, "Failed to read the image: the reader died");
        else if (result >= 0 && probe.format) {
                r = image_call_serve(c, &probe, &error);
                if (r > 0)
                        return; /* goes on once the export answers */
        } else if (c->st.st_size < 512)
                r = image_too_small((uint64_t)c->st.st_size, &error);
        else
                r = image_call_finish(c, result, &probe, &error);
        if (r < 0)
                image_call_reply(c, r, &error);
        image_call_free(c);
}

/* Reads the image in a worker and goes on in attach_finish() or mount_image_finish(). The call counts as
 * waiting until then. */
static int image_call_start(Bus *b, sd_bus_message *message, int fd, const AttachRequest *req,
        const struct stat *st, uid_t uid, char **backing, bool mount_image, sd_bus_error *error)
{
        Manager *m = b->manager;
        ImageCall *c;
        int r;

        r = bus_calls_hold(b->calls, message, uid, error);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(ImageCall));
        if (!c) {
                bus_calls_release(b->calls, message);
                return -ENOMEM;
        }
        c->bus = b;
        c->message = sd_bus_message_ref(message);
        c->req = *req;
        c->st = *st;
        c->uid = uid;
        c->backing = TAKE_PTR(*backing);
        c->fd = fd;
        c->export_fd = -EBADF;
        c->mount_image = mount_image;
        c->next = b->image_calls;
        b->image_calls = c;

        /* The child reads on, ahead of Attach, what it will ask of the device it binds. */
        r = worker_start_probe(m->event, m->image_reader, fd, req->offset, req->size_limit, req->sector_size,
                req->partition_scan, m->io_timeout_usec, image_call_on_read, c, &c->worker);
        if (r < 0) {
                image_call_free(c);
                return bus_reply_errno(error, r, "Failed to start reading the image");
        }
        return 1;
}

/* The rest of Attach and MountImage once the request is read: the fd and the numbers checked, the caller
 * looked up and polkit asked (both actions of MountImage in one round, before anything is touched; the call
 * is dispatched again when they answered), then the image read in a worker. */
static int image_method_continue(
        Bus *b, sd_bus_message *message, int fd, AttachRequest *req, bool mount_image, sd_bus_error *error)
{
        _cleanup_free_ char *backing = NULL;
        struct stat st;
        uid_t uid;
        int r;

        r = attach_prepare(fd, req, &st, &backing, error);
        if (r < 0)
                return r;
        r = auth_caller(b->auth, message, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = authorize_image(b, message, uid, req, backing, mount_image, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return image_call_start(b, message, fd, req, &st, uid, &backing, mount_image, error);
}

static int method_attach(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        AttachRequest req = { .partition_scan = true };
        const OptionSpec specs[] = { { "read-only", OPTION_BOOLEAN, &req.read_only, &req.read_only_set },
                { "offset", OPTION_UINT64, &req.offset }, { "size-limit", OPTION_UINT64, &req.size_limit },
                { "sector-size", OPTION_UINT32, &req.sector_size },
                { "partition-scan", OPTION_BOOLEAN, &req.partition_scan },
                { "autoclear", OPTION_BOOLEAN, &req.autoclear },
                { "direct-io", OPTION_BOOLEAN, &req.direct_io }, { "shared", OPTION_BOOLEAN, &req.shared },
                {} };
        int fd, r;

        r = read_image_request(message, specs, &fd, error);
        if (r < 0)
                return r;
        return image_method_continue(userdata, message, fd, &req, false, error);
}

static int attach_finish(ImageCall *c, int probe_result, const ImageProbe *probe, sd_bus_error *error)
{
        Manager *m = c->bus->manager;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        EngineError e = {};
        int r;

        /* Before attaching: switching the watcher's event source afterwards would lose the new device's
         * events, and the wait for udev would run into its timeout. */
        bool wait_for_udev = c->req.partition_scan && watcher_udev_running(m->watcher);
        r = engine_attach(m, c->fd, &c->req, &c->st, c->uid, probe_result, probe, &info, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        log_info("Attached %s to loop%u for uid %u%s", strempty(c->backing), info->number, (unsigned)c->uid,
                info->read_only ? " (read-only)" : "");

        if (wait_for_udev) {
                r = attach_wait_for_udev(c->bus, c->message, c->uid, info);
                if (r >= 0)
                        return 0;
                log_warning_errno(r, "Cannot wait for udev on loop%u, replying without: %m", info->number);
        }
        return reply_attached(c->message, info->number);
}

/* ---- MountImage ---- */

static int method_mount_image(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        AttachRequest req = { .partition_scan = true };
        bool writable = false, writable_set = false;
        const OptionSpec specs[] = { { "writable", OPTION_BOOLEAN, &writable, &writable_set },
                { "sector-size", OPTION_UINT32, &req.sector_size }, {} };
        int fd, r;

        r = read_image_request(message, specs, &fd, error);
        if (r < 0)
                return r;
        /* Read-only unless asked: a double-clicked image should not be changed by looking at it. */
        req.read_only = !writable;
        req.read_only_set = writable_set;
        req.read_write_option = "writable: true";
        return image_method_continue(userdata, message, fd, &req, true, error);
}

static int mount_image_finish(ImageCall *c, int probe_result, const ImageProbe *probe, sd_bus_error *error)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        MountedNode *mounted = NULL;
        EngineError e = {};
        size_t n = 0;
        int r;

        r = engine_open_image(c->bus->manager, c->fd, &c->req, &c->st, c->uid, probe_result, probe, &info,
                &mounted, &n, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);

        r = sd_bus_message_new_method_return(c->message, &reply);
        if (r >= 0) {
                char devname[LOOP_NODE_MAX];
                loop_node_format(devname, info->number, 0);
                r = sd_bus_message_append(reply, "s", devname);
        }
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ss)");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "(ss)", strempty(mounted[i].node), mounted[i].mount_point);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        mounted_nodes_free(mounted, n);
        if (r < 0)
                return r;
        log_info("Opened %s on loop%u for uid %u with %zu mount(s)", strempty(c->backing), info->number,
                (unsigned)c->uid, n);
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- Detach ---- */

static int method_detach(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        Manager *m = b->manager;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        const char *device;
        bool unmount = false;
        const OptionSpec specs[] = { { "unmount", OPTION_BOOLEAN, &unmount }, {} };
        EngineError e = {};
        unsigned number;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "s", &device);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        r = bus_get_loop(device, &number, &info, error);
        if (r < 0)
                return r;

        r = auth_caller(b->auth, message, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        ManagedDevice *d = registry_find_device(m->registry, number, info->diskseq);
        const char *action = d && d->owner == uid ? LOOPD_ACTION_ATTACH : LOOPD_ACTION_MANAGE_OTHERS;
        char devname[LOOP_NODE_MAX];
        loop_node_format(devname, number, 0);
        /* polkit's details are D-Bus strings; sysfs has the name's bytes as they are. */
        r = utf8_make_valid(&info->backing_file);
        if (r < 0)
                return r;
        const char *details[] = { "device", devname, "backing_file",
                registry_device_image(m->registry, info, NULL), NULL };
        r = auth_check(b->auth, message, uid, action, details, 0, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = engine_detach(m, info, unmount, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        return sd_bus_reply_method_return(message, NULL);
}

static const sd_bus_vtable manager_vtable[] = { SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Attach", SD_BUS_ARGS("h", image, "a{sv}", options),
                SD_BUS_RESULT("s", device, "o", object), method_attach, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Detach", SD_BUS_ARGS("s", device, "a{sv}", options), SD_BUS_NO_RESULT,
                method_detach, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListDevices", SD_BUS_NO_ARGS,
                SD_BUS_RESULT("a" LOOPD_DEVICE_STRUCT, devices), method_list_devices,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListPartitions", SD_BUS_ARGS("s", device),
                SD_BUS_RESULT("a" LOOPD_PARTITION_STRUCT, partitions), method_list_partitions,
                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Mount", SD_BUS_ARGS("s", node, "a{sv}", options),
                SD_BUS_RESULT("s", mount_point), method_mount, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Unmount", SD_BUS_ARGS("s", target, "a{sv}", options), SD_BUS_NO_RESULT,
                method_unmount, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MountImage", SD_BUS_ARGS("h", image, "a{sv}", options),
                SD_BUS_RESULT("s", device, "a(ss)", mounts), method_mount_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Format", SD_BUS_ARGS("s", node, "s", type, "a{sv}", options),
                SD_BUS_NO_RESULT, method_format, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreatePartition",
                SD_BUS_ARGS("s", device, "t", offset, "t", size, "s", type, "s", name, "a{sv}", options),
                SD_BUS_RESULT("s", node), method_create_partition, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeletePartition", SD_BUS_ARGS("s", node, "a{sv}", options),
                SD_BUS_NO_RESULT, method_delete_partition, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("DeviceAttached", SD_BUS_ARGS("s", device, "o", object), 0),
        SD_BUS_SIGNAL_WITH_ARGS("DeviceDetached", SD_BUS_ARGS("s", device, "o", object), 0),
        SD_BUS_SIGNAL_WITH_ARGS("PartitionAdded", SD_BUS_ARGS("s", device, "s", partition), 0),
        SD_BUS_SIGNAL_WITH_ARGS("PartitionRemoved", SD_BUS_ARGS("s", device, "s", partition), 0),
        SD_BUS_SIGNAL_WITH_ARGS("Mounted", SD_BUS_ARGS("s", node, "s", mount_point), 0),
        SD_BUS_SIGNAL_WITH_ARGS("Unmounted", SD_BUS_ARGS("s", node, "s", mount_point), 0),
        SD_BUS_VTABLE_END };

int manager_dbus_register(Bus *b)
{
        int r;

        r = sd_bus_add_object_vtable(
                b->bus, NULL, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, manager_vtable, b);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(b->bus, NULL, LOOPD_MANAGER_PATH);
}
