/* watcher.c: follows loop devices and their partitions as the kernel and udev report them, and tells the
 * bus (signals, ObjectManager, PropertiesChanged); their mounts are followed in watcher-mounts.c. */
#include "watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libudev.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "partition.h"
#include "probe.h"
#include "state.h"
#include "strv.h"
#include "watcher-internal.h"

#define UDEV_RUN_DIR "/run/udev"
#define UDEV_CONTROL UDEV_RUN_DIR "/control"
#define LOOP_MAJOR 7 /* the loop driver's block major (linux/major.h) */

/* Is udevd running? Something listens on its control socket while it does: udevd itself, or systemd, which
 * holds the socket of udevd's socket unit and starts udevd again. A udevd killed with SIGKILL leaves the
 * socket file behind with nobody listening, and connecting to it is refused. A "udev" monitor hears nothing
 * at all without udevd. */
static bool udevd_running(void)
{
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } address = { .un = { .sun_family = AF_UNIX, .sun_path = UDEV_CONTROL } };
        _cleanup_close_ int fd = -EBADF;

        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return access(UDEV_CONTROL, F_OK) >= 0;
        if (connect(fd, &address.sa, sizeof(address.un)) >= 0)
                return true;
        /* EAGAIN: a listener with a full backlog is still a listener. */
        return errno == EAGAIN || errno == EINPROGRESS;
}

void watcher_report(Watcher *w, ChangeKind kind, unsigned number, unsigned partition, const char *node,
        const char *mount_point, const char *property)
{
        Change c = {
                .kind = kind,
                .number = number,
                .partition = partition,
                .node = node,
                .mount_point = mount_point,
                .property = property,
        };

        if (w->on_change)
                w->on_change(&c, w->on_change_userdata);
}

/* ---- the device table ---- */

static void tracked_free(Tracked *t)
{
        if (!t)
                return;
        loop_info_free(t->info);
        free(t->parts);
        partition_info_array_free(t->probed, t->n_probed);
        free(t);
}

/* Probes what is on the device now: through the image Attach bound to it, the first time, else through the
 * device (this opens it and its partitions). */
static void tracked_probe(Watcher *w, Tracked *t)
{
        PartitionInfo *parts = NULL;
        uint64_t offset;
        size_t n = 0;
        int fd, r;

        if (registry_take_image(w->registry, t->info->number, t->info->diskseq, &fd, &offset) >= 0) {
                r = probe_loop_device_image(t->info->number, fd, offset, &parts, &n);
                safe_close(fd);
        } else
                r = probe_loop_device(t->info->number, &parts, &n);
        if (r < 0) {
                log_debug_errno(r, "Failed to probe loop%u: %m", t->info->number);
                parts = NULL;
                n = 0;
        }
        partition_info_array_free(t->probed, t->n_probed);
        t->probed = parts;
        t->n_probed = n;
        t->probed_valid = r >= 0;
}

/* Partitions went and none came: the last probe, without the partitions the kernel no longer has. */
static void tracked_forget_partitions(Tracked *t)
{
        size_t kept = 0;

        for (size_t i = 0; i < t->n_probed; i++) {
                PartitionInfo *p = &t->probed[i];
                bool still = p->number == 0;

                for (size_t j = 0; j < t->n_parts && !still; j++)
                        still = t->parts[j].number == p->number && t->parts[j].devnum == p->devnum;
                if (still)
                        t->probed[kept++] = *p;
                else
                        partition_info_clear(p);
        }
        t->n_probed = kept;
}

Tracked *watcher_find(Watcher *w, unsigned number)
{
        for (Tracked *t = w->devices; t; t = t->next)
                if (t->info->number == number)
                        return t;
        return NULL;
}

static Tracked *watcher_find_devnum(Watcher *w, dev_t devnum)
{
        for (Tracked *t = w->devices; t; t = t->next)
                if (t->info->devnum == devnum)
                        return t;
        return NULL;
}

static void watcher_unlink(Watcher *w, Tracked *t)
{
        for (Tracked **p = &w->devices; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        return;
                }
}

static bool partitions_have(const KernelPartition *parts, size_t n, const KernelPartition *p)
{
        for (size_t i = 0; i < n; i++)
                if (parts[i].number == p->number && parts[i].devnum == p->devnum &&
                        parts[i].start == p->start && parts[i].size == p->size)
                        return true;
        return false;
}

/* Does new have a partition that old does not? */
static bool partitions_added(
        const KernelPartition *old, size_t n_old, const KernelPartition *new, size_t n_new)
{
        for (size_t i = 0; i < n_new; i++)
                if (!partitions_have(old, n_old, &new[i]))
                        return true;
        return false;
}

static void emit_partition_changes(Watcher *w, unsigned number, const KernelPartition *old, size_t n_old,
        const KernelPartition *new, size_t n_new)
{
        bool changed = false;

        for (size_t i = 0; i < n_old; i++)
                if (!partitions_have(new, n_new, &old[i])) {
                        watcher_report(w, CHANGE_PARTITION_REMOVED, number, old[i].number, NULL, NULL, NULL);
                        changed = true;
                }
        for (size_t i = 0; i < n_new; i++)
                if (!partitions_have(old, n_old, &new[i])) {
                        watcher_report(w, CHANGE_PARTITION_ADDED, number, new[i].number, NULL, NULL, NULL);
                        changed = true;
                }
        if (changed)
                watcher_report(w, CHANGE_PROPERTY, number, 0, NULL, NULL, "Partitions");
}

static void emit_property_changes(Watcher *w, const LoopInfo *old, const LoopInfo *new)
{
        unsigned n = new->number;

        if (!streq(old->backing_file, new->backing_file))
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "BackingFile");
        if (old->offset != new->offset)
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "Offset");
        if (old->size_limit != new->size_limit)
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "SizeLimit");
        if (old->sector_size != new->sector_size)
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "SectorSize");
        if (old->read_only != new->read_only)
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "ReadOnly");
}

/* Takes the published values that come from loopd's records; says which of them changed. */
static void tracked_take_ownership(Watcher *w, Tracked *t, bool *ret_autoclear, bool *ret_owner)
{
        ManagedDevice *d = registry_find_device(w->registry, t->info->number, t->info->diskseq);
        bool autoclear = registry_device_autoclear(w->registry, t->info), managed = d != NULL;
        uid_t owner = d ? d->owner : 0;

        *ret_autoclear = t->settled && autoclear != t->autoclear;
        *ret_owner = t->settled && (managed != t->managed || owner != t->owner);
        t->autoclear = autoclear;
        t->managed = managed;
        t->owner = owner;
        t->settled = true;
}

/* The device behind t is no longer bound (or its number now holds another one). */
static void watcher_device_gone(Watcher *w, Tracked *t, bool announce)
{
        unsigned number = t->info->number;
        uint64_t diskseq = t->info->diskseq;

        /* A device loopd set up was detached by someone else, or by autoclear: its record goes, before
         * anyone hears of it. Not a record of a newer device on the same number (loopd may have bound it
         * before this look). */
        if (registry_find_device(w->registry, number, diskseq))
                registry_forget_device(w->registry, number);

        if (announce) {
                /* Its mounts went first (Detach with unmount, umount -d): say so before the device goes.
                 * Only what went: a new mount may be of a device on the same number not announced yet. */
                watcher_rescan_mounts(w, NULL, true, true);
                for (size_t i = 0; i < t->n_parts; i++)
                        watcher_report(
                                w, CHANGE_PARTITION_REMOVED, number, t->parts[i].number, NULL, NULL, NULL);
                /* Still in the table: InterfacesRemoved names every interface the object had. */
                watcher_report(w, CHANGE_DEVICE_REMOVED, number, 0, NULL, NULL, NULL);
        }
        watcher_unlink(w, t);
        tracked_free(t);
        log_debug("loop%u was detached", number);
        /* The last device went: give back what a burst of them took (glibc keeps freed heap otherwise; after
         * 256 devices that is a third of loopd's private memory). */
        if (!w->devices)
                (void)malloc_trim(0);
}

/* Takes info (a device sysfs lists as bound) into the table and tells the bus what changed. */
static void watcher_update_device(Watcher *w, LoopInfo *info, bool announce)
{
        KernelPartition *parts = NULL;
        size_t n_parts = 0;
        unsigned number = info->number;
        Tracked *t = watcher_find(w, number);
        bool autoclear_changed, owner_changed;

        if (partition_list_kernel(number, &parts, &n_parts) < 0) {
                parts = NULL;
                n_parts = 0;
        }

        if (!t) {
                t = calloc(1, sizeof(Tracked));
                if (!t) {
                        loop_info_free(info);
                        free(parts);
                        return;
                }
                t->info = info;
                t->parts = parts;
                t->n_parts = n_parts;
                tracked_take_ownership(w, t, &autoclear_changed, &owner_changed);
                /* Found at start, before loopd's records were read: take them at the next look. */
                t->settled = announce;
                if (announce)
                        tracked_probe(w, t);
                /* In the table before the bus hears of it: InterfacesAdded reads the properties from here.
                 */
                t->next = w->devices;
                w->devices = t;
                if (announce) {
                        watcher_report(w, CHANGE_DEVICE_ADDED, number, 0, NULL, NULL, NULL);
                        for (size_t i = 0; i < n_parts; i++)
                                watcher_report(w, CHANGE_PARTITION_ADDED, number, parts[i].number, NULL,
                                        NULL, NULL);
                }
                log_debug("loop%u is bound to %s", number, info->backing_file);
                return;
        }

        LoopInfo *old_info = t->info;
        KernelPartition *old_parts = t->parts;
        size_t n_old_parts = t->n_parts;

        /* The new state first: PropertiesChanged reads the values from the table. */
        t->info = info;
        t->parts = parts;
        t->n_parts = n_parts;
        tracked_take_ownership(w, t, &autoclear_changed, &owner_changed);
        if (announce && partitions_added(old_parts, n_old_parts, parts, n_parts))
                tracked_probe(w, t);
        else if (announce && partitions_added(parts, n_parts, old_parts, n_old_parts))
                tracked_forget_partitions(t);
        if (announce) {
                emit_property_changes(w, old_info, info);
                if (autoclear_changed)
                        watcher_report(w, CHANGE_PROPERTY, number, 0, NULL, NULL, "Autoclear");
                if (owner_changed) {
                        watcher_report(w, CHANGE_PROPERTY, number, 0, NULL, NULL, "Managed");
                        watcher_report(w, CHANGE_PROPERTY, number, 0, NULL, NULL, "OwnerUID");
                }
                emit_partition_changes(w, number, old_parts, n_old_parts, parts, n_parts);
        }
        loop_info_free(old_info);
        free(old_parts);
}

static uint64_t watcher_now(Watcher *w)
{
        uint64_t now;

        return sd_event_now(w->event, CLOCK_MONOTONIC, &now) >= 0 ? now : 0;
}

/* Brings the table up to date with the kernel for every device and, with announce, tells the bus what
 * changed: at start, when the event source changed, and when a client enumerates the objects. Sysfs only,
 * but it reads every loop device on the machine (there may be hundreds): events look at their device only.
 */
static int watcher_sync(Watcher *w, bool announce)
{
        LoopInfo **infos = NULL;
        size_t n = 0;
        int r;

        if (w->syncing)
                return 0;
        r = loop_list(&infos, &n);
        if (r < 0)
                return log_debug_errno(r, "Failed to list loop devices: %m");
        w->syncing = w->announcing = true;
        w->synced_usec = watcher_now(w);

        /* What went (or was re-bound under the same number: a new diskseq) first, so that a number that
         * was recycled is removed before it is added again. */
        for (Tracked *t = w->devices, *next; t; t = next) {
                bool still = false;

                next = t->next;
                for (size_t i = 0; i < n && !still; i++)
                        still = infos[i]->number == t->info->number && infos[i]->diskseq == t->info->diskseq;
                if (!still)
                        watcher_device_gone(w, t, announce);
        }
        /* Records of loopd's whose device the kernel no longer has (gone before the watcher saw it). */
        for (ManagedDevice *d = w->registry->devices, *next; d; d = next) {
                bool still = false;

                next = d->next;
                for (size_t i = 0; i < n && !still; i++)
                        still = infos[i]->number == d->number && infos[i]->diskseq == d->diskseq;
                if (!still)
                        registry_forget_device(w->registry, d->number);
        }
        for (size_t i = 0; i < n; i++)
                watcher_update_device(w, TAKE_PTR(infos[i]), announce);
        free(infos);

        w->syncing = w->announcing = false;
        return 0;
}

/* The same for one device (loopN was named by an event, or by a client). */
void watcher_refresh(Watcher *w, unsigned number, bool announce)
{
        LoopInfo *info = NULL;
        Tracked *t;
        int r;

        if (w->syncing)
                return;
        r = loop_get_info(number, &info);
        if (r < 0 && r != -ENXIO && r != -ENODEV) {
                log_debug_errno(r, "Failed to read loop%u, keeping what was known: %m", number);
                return;
        }
        w->syncing = w->announcing = true;
        t = watcher_find(w, number);
        if (t && (r < 0 || info->diskseq != t->info->diskseq))
                watcher_device_gone(w, t, announce);
        /* A device of loopd's that was detached (or whose number was re-used) before the watcher ever saw
         * it: its record goes all the same. */
        for (ManagedDevice *d = w->registry->devices; d; d = d->next)
                if (d->number == number && (r < 0 || d->diskseq != info->diskseq)) {
                        registry_forget_device(w->registry, number);
                        break;
                }
        if (r >= 0)
                watcher_update_device(w, info, announce);
        t = watcher_find(w, number);
        if (t)
                t->seen_usec = watcher_now(w);
        w->syncing = w->announcing = false;
}

/* A client's question about loopN is answered from a look at the kernel in the same event loop iteration
 * (one bus message): a client that asks right after Attach returned must find the device even when the
 * kernel's event has not been read yet, and GetManagedObjects must not look at every device twice. */
const LoopInfo *watcher_get_device(Watcher *w, unsigned number)
{
        uint64_t now = watcher_now(w);
        Tracked *t = watcher_find(w, number);

        if (!w->syncing && now != w->synced_usec && !(t && t->seen_usec == now)) {
                watcher_refresh(w, number, true);
                t = watcher_find(w, number);
        }
        return t ? t->info : NULL;
}

int watcher_list_devices(Watcher *w, unsigned **ret, size_t *ret_n)
{
        unsigned *list;
        size_t n = 0, i = 0;

        if (!w->syncing && watcher_now(w) != w->synced_usec)
                (void)watcher_sync(w, true);
        for (Tracked *t = w->devices; t; t = t->next)
                n++;
        list = calloc(n ? n : 1, sizeof(unsigned));
        if (!list)
                return -ENOMEM;
        for (Tracked *t = w->devices; t; t = t->next)
                list[i++] = t->info->number;
        *ret = list;
        *ret_n = n;
        return 0;
}

const PartitionInfo *watcher_announced_partitions(Watcher *w, unsigned number, size_t *ret_n)
{
        Tracked *t = w->announcing ? watcher_find(w, number) : NULL;

        if (!t || !t->probed_valid)
                return NULL;
        *ret_n = t->n_probed;
        return t->probed;
}

bool watcher_device_autoclear(Watcher *w, unsigned number)
{
        Tracked *t = watcher_find(w, number);

        return t && registry_device_autoclear(w->registry, t->info);
}

/* ---- udev ---- */

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static void watcher_wait_finish(WatcherWait *wait, int result);

static void watcher_close_monitor(Watcher *w)
{
        w->io = sd_event_source_disable_unref(w->io);
        w->monitor = udev_monitor_unref(w->monitor);
}

static int watcher_open_monitor(Watcher *w)
{
        bool use_udev = udevd_running();
        int r;

        watcher_close_monitor(w);

        /* A "udev" monitor gets nothing at all when udevd is not running: use the kernel's events then. */
        w->monitor = udev_monitor_new_from_netlink(w->udev, use_udev ? "udev" : "kernel");
        if (!w->monitor)
                return negative_errno();
        (void)udev_monitor_set_receive_buffer_size(w->monitor, 16 * 1024 * 1024);
        r = udev_monitor_filter_add_match_subsystem_devtype(w->monitor, "block", NULL);
        if (r < 0)
                return r;
        r = udev_monitor_enable_receiving(w->monitor);
        if (r < 0)
                return r;
        r = sd_event_add_io(w->event, &w->io, udev_monitor_get_fd(w->monitor), EPOLLIN, watcher_on_event, w);
        if (r < 0)
                return r;
        w->source_is_udev = use_udev;
        log_debug("Watching block devices through the %s event source", use_udev ? "udev" : "kernel");
        return 0;
}

/* Follows udevd coming and going: after a switch, whatever the old source did not report is found by
 * comparing the table with the kernel. */
static void watcher_check_source(Watcher *w)
{
        int r;

        if (udevd_running() == w->source_is_udev)
                return;
        r = watcher_open_monitor(w);
        if (r < 0) {
                log_warning_errno(r, "Failed to switch the block device monitor: %m");
                return;
        }
        log_info("udevd %s: following block devices through the %s event source",
                w->source_is_udev ? "is running" : "is gone", w->source_is_udev ? "udev" : "kernel");
        (void)watcher_sync(w, true);

        /* Attach calls waiting for udev: there is no udev to wait for any more, and the kernel made the
         * devices. */
        while (!w->source_is_udev && w->waits)
                watcher_wait_finish(w->waits, 0);
}

static int watcher_watch_udev_dir(Watcher *w);

static int watcher_on_udev_dir(sd_event_source *s, const struct inotify_event *event, void *userdata)
{
        Watcher *w = userdata;

        if (!w->udev_dir_watched) {
                /* Watching /run until udevd creates /run/udev. */
                if (event->len > 0 && streq(event->name, "udev") && watcher_watch_udev_dir(w) < 0)
                        log_warning(
                                "Failed to watch " UDEV_RUN_DIR ", udevd coming or going may go unnoticed");
                watcher_check_source(w);
                return 0;
        }
        if ((event->mask & (IN_IGNORED | IN_DELETE_SELF)) && watcher_watch_udev_dir(w) < 0)
                log_warning(
                        "Failed to watch " UDEV_RUN_DIR " again, udevd coming or going may go unnoticed");
        if ((event->mask & (IN_IGNORED | IN_DELETE_SELF)) ||
                (event->len > 0 && streq(event->name, "control")))
                watcher_check_source(w);
        return 0;
}

/* Watches /run/udev for udevd's control socket, or /run for /run/udev until it exists. */
static int watcher_watch_udev_dir(Watcher *w)
{
        int r;

        w->udev_dir_watch = sd_event_source_disable_unref(w->udev_dir_watch);
        r = sd_event_add_inotify(w->event, &w->udev_dir_watch, UDEV_RUN_DIR,
                IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE_SELF | IN_ONLYDIR,
                watcher_on_udev_dir, w);
        if (r >= 0) {
                w->udev_dir_watched = true;
                return 0;
        }
        if (r != -ENOENT)
                return r;
        w->udev_dir_watched = false;
        return sd_event_add_inotify(w->event, &w->udev_dir_watch, "/run",
                IN_CREATE | IN_MOVED_TO | IN_ONLYDIR, watcher_on_udev_dir, w);
}

bool watcher_busy(Watcher *w)
{
        return w && w->waits;
}

bool watcher_udev_running(Watcher *w)
{
        watcher_check_source(w);
        return w->source_is_udev;
}

static void watcher_wait_free(WatcherWait *wait)
{
        if (!wait)
                return;
        for (WatcherWait **p = &wait->watcher->waits; *p; p = &(*p)->next)
                if (*p == wait) {
                        *p = wait->next;
                        break;
                }
        sd_event_source_disable_unref(wait->timer);
        free(wait->devnums);
        free(wait->done);
        free(wait);
}

void watcher_wait_cancel(WatcherWait *wait)
{
        watcher_wait_free(wait);
}

static void watcher_wait_finish(WatcherWait *wait, int result)
{
        WatcherWaitCallback callback = wait->callback;
        void *userdata = wait->userdata;

        watcher_wait_free(wait);
        callback(result, userdata);
}

static int watcher_wait_on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        WatcherWait *wait = userdata;
        Watcher *w = wait->watcher;

        /* udevd may have died without a trace in /run/udev (SIGKILL): then the kernel's devices are all
         * there is, and switching the source finishes every wait successfully. */
        watcher_check_source(w);
        if (!w->source_is_udev)
                return 0;
        watcher_wait_finish(wait, -ETIMEDOUT);
        return 0;
}

int watcher_wait_devices(Watcher *w, const dev_t *devnums, size_t n, uint64_t diskseq, uint64_t timeout_usec,
        WatcherWaitCallback callback, void *userdata, WatcherWait **ret)
{
        WatcherWait *wait = calloc(1, sizeof(WatcherWait));
        int r;

        if (!wait)
                return -ENOMEM;
        wait->watcher = w;
        wait->devnums = calloc(n ? n : 1, sizeof(dev_t));
        wait->done = calloc(n ? n : 1, sizeof(bool));
        if (!wait->devnums || !wait->done) {
                free(wait->devnums);
                free(wait->done);
                free(wait);
                return -ENOMEM;
        }
        memcpy(wait->devnums, devnums, n * sizeof(dev_t));
        wait->n = n;
        wait->diskseq = diskseq;
        wait->callback = callback;
        wait->userdata = userdata;
        wait->next = w->waits;
        w->waits = wait;

        r = sd_event_add_time_relative(
                w->event, &wait->timer, CLOCK_MONOTONIC, timeout_usec, 0, watcher_wait_on_timeout, wait);
        if (r < 0) {
                watcher_wait_free(wait);
                return r;
        }
        if (ret)
                *ret = wait;
        return 0;
}

static void watcher_dispatch_waits(Watcher *w, const LoopEvent *e)
{
        if (!e->add_or_change)
                return;
        for (WatcherWait *wait = w->waits, *next; wait; wait = next) {
                bool all = true;

                next = wait->next;
                for (size_t i = 0; i < wait->n; i++) {
                        if (wait->devnums[i] == e->devnum &&
                                (e->diskseq == 0 || e->diskseq == wait->diskseq))
                                wait->done[i] = true;
                        all = all && wait->done[i];
                }
                if (all)
                        watcher_wait_finish(wait, 0);
        }
}

/* Reads what a uevent says about a loop disk or partition: its devnum, its disk's devnum (a partition's
 * parent device) and the disk's diskseq (the event's DISKSEQ, else the parent's sysfs attribute). Partitions
 * are matched to their disk by that devnum and diskseq, never by name (the table's device with that devnum;
 * the disk's kernel name only for a device the table does not have yet). -ENODEV for anything but loop
 * devices. */
static int loop_event_read(Watcher *w, struct udev_device *d, const char *action, LoopEvent *ret)
{
        const char *devtype = udev_device_get_devtype(d),
                   *seq = udev_device_get_property_value(d, "DISKSEQ");
        struct udev_device *disk = d;
        Tracked *t;
        LoopEvent e = {
                .devnum = udev_device_get_devnum(d),
                .add_or_change = streq(action, "add") || streq(action, "change"),
        };

        if (streq_ptr(devtype, "partition")) {
                disk = udev_device_get_parent_with_subsystem_devtype(d, "block", "disk");
                if (!disk)
                        return -ENODEV;
                if (!seq)
                        seq = udev_device_get_sysattr_value(disk, "diskseq");
        } else
                e.disk_change = streq(action, "change");
        e.disk_devnum = udev_device_get_devnum(disk);
        e.diskseq = seq ? strtoull(seq, NULL, 10) : 0;
        if (major(e.disk_devnum) != LOOP_MAJOR)
                return -ENODEV;
        t = watcher_find_devnum(w, e.disk_devnum);
        if (t)
                e.number = t->info->number;
        else if (loop_parse_name(udev_device_get_sysname(disk), &e.number) < 0)
                return -ENODEV;
        *ret = e;
        return 0;
}

/* A kernel without a parser for the device's partition table drops the partitions loopd added with BLKPG
 * whenever the table is re-read (BLKRRPART: udevd does that after someone closes the disk opened for
 * writing). After such a change event, a device of loopd's that should have partitions gets them back. */
static void watcher_restore_partitions(Watcher *w, const LoopEvent *e)
{
        Tracked *t = watcher_find_devnum(w, e->disk_devnum);
        int r;

        if (!t || (e->diskseq != 0 && t->info->diskseq != e->diskseq) || t->n_parts > 0 ||
                !t->info->partscan || !registry_find_device(w->registry, t->info->number, t->info->diskseq))
                return;

        r = loop_restore_partitions(t->info->number, t->info->diskseq);
        if (r == -ENODEV || r == -ESTALE)
                return; /* gone, or another device by now: its own events follow */
        if (r < 0)
                log_warning_errno(r, "Failed to restore the partitions of loop%u after a table re-read: %m",
                        t->info->number);
        else if (r > 0)
                log_info("Restored %d partition(s) of loop%u that a partition table re-read dropped", r,
                        t->info->number);
}

/* How many uevents one dispatch reads at most. A burst (a script binding and unbinding devices in a loop
 * makes tens of thousands a second) must not keep the event loop here: what is left is read in the next
 * dispatch, after the bus and the signals had their turn. */
#define WATCHER_EVENT_BATCH 256

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Watcher *w = userdata;
        LoopEvent events[WATCHER_EVENT_BATCH];
        bool overflow = false;
        size_t n = 0;

        /* Read a batch, then look at the kernel once per device: partitions come and go as a group, and
         * the state after the events is what clients need. */
        for (size_t received = 0; received < WATCHER_EVENT_BATCH; received++) {
                struct udev_device *d;
                const char *action;

                errno = 0;
                d = udev_monitor_receive_device(w->monitor);
                if (!d) {
                        /* The socket's buffer overflowed: events were lost, so only a full look at the
                         * kernel can tell what changed. */
                        overflow = errno == ENOBUFS;
                        break;
                }
                action = udev_device_get_action(d);
                if (action && loop_event_read(w, d, action, &events[n]) >= 0)
                        n++;
                udev_device_unref(d);
        }
        if (overflow) {
                log_warning("Missed block device events (the event queue overflowed), looking at every loop "
                            "device again");
                (void)watcher_sync(w, true);
        }

        /* Each device once, in the order of its first event. */
        for (size_t i = 0; i < n && !overflow; i++) {
                bool seen = false;

                for (size_t j = 0; j < i && !seen; j++)
                        seen = events[j].number == events[i].number;
                if (!seen)
                        watcher_refresh(w, events[i].number, true);
        }
        for (size_t i = 0; i < n; i++)
                if (events[i].disk_change)
                        watcher_restore_partitions(w, &events[i]);
        /* Waiting Attach calls are answered last: after the bus heard of their device and partitions. */
        for (size_t i = 0; i < n; i++)
                watcher_dispatch_waits(w, &events[i]);
        return 0;
}

/* ---- life cycle ---- */

int watcher_new(const WatcherConfig *config, Watcher **ret)
{
        Watcher *w;
        int r;

        w = calloc(1, sizeof(Watcher));
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(config->event);
        w->registry = config->registry;
        w->on_change = config->on_change;
        w->on_change_userdata = config->on_change_userdata;
        w->state_dir = strdup(config->state_dir);
        w->media_dir = strdup(config->media_dir);
        w->udev = udev_new();
        if (!w->udev || !w->state_dir || !w->media_dir) {
                watcher_free(w);
                return -ENOMEM;
        }

        /* Subscribe first, then enumerate: whatever happens in between arrives as an event. */
        r = watcher_watch_udev_dir(w);
        if (r < 0)
                log_warning_errno(
                        r, "Failed to watch " UDEV_RUN_DIR ", udevd coming or going may go unnoticed: %m");
        r = watcher_open_monitor(w);
        if (r >= 0)
                r = watcher_open_mount_monitor(w);
        if (r < 0) {
                watcher_free(w);
                return r;
        }

        r = watcher_sync(w, false);
        if (r < 0)
                log_warning_errno(r, "Failed to list loop devices: %m");
        watcher_rescan_mounts(w, NULL, false, false);
        watcher_adopt_mounts(w);

        *ret = w;
        return 0;
}

Watcher *watcher_free(Watcher *w)
{
        if (!w)
                return NULL;
        /* Attach calls still waiting for udev are answered (their callbacks roll them back). */
        while (w->waits)
                watcher_wait_finish(w->waits, -ECANCELED);
        while (w->devices) {
                Tracked *t = w->devices;
                w->devices = t->next;
                tracked_free(t);
        }
        watcher_close_monitor(w);
        sd_event_source_disable_unref(w->udev_dir_watch);
        watcher_close_mounts(w);
        udev_unref(w->udev);
        sd_event_unref(w->event);
        free(w->state_dir);
        free(w->media_dir);
        free(w);
        return NULL;
}
