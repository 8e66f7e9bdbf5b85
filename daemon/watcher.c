/* watcher.c: follows loop devices, their partitions and their mounts as the kernel and udev report them,
 * and tells the bus (signals, ObjectManager, PropertiesChanged). */
#include "watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libmount.h>
#include <libudev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "device-dbus.h"
#include "log.h"
#include "loop.h"
#include "partition.h"

struct WatcherWait {
        Watcher *watcher;
        dev_t *devnums;
        bool *done;
        size_t n;
        uint64_t diskseq;
        sd_event_source *timer;
        WatcherWaitCallback callback;
        void *userdata;
        struct WatcherWait *next;
};

/* What the watcher last saw of one bound loop device. */
typedef struct Tracked {
        LoopInfo *info;
        KernelPartition *parts;
        size_t n_parts;
        struct Tracked *next;
} Tracked;

/* One mount of a loop device or partition. */
typedef struct MountEntry {
        char *node;
        char *target;
} MountEntry;

struct Watcher {
        Manager *manager;
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *io;
        bool source_is_udev;
        WatcherWait *waits;

        Tracked *devices;

        struct libmnt_monitor *mount_monitor;
        sd_event_source *mount_io;
        MountEntry *mounts;
        size_t n_mounts;
};

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static int watcher_on_mount_change(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static bool udevd_running(void)
{
        return access("/run/udev/control", F_OK) >= 0;
}

/* ---- the device table ---- */

static void tracked_free(Tracked *t)
{
        if (!t)
                return;
        loop_info_free(t->info);
        free(t->parts);
        free(t);
}

static Tracked *watcher_find(Watcher *w, unsigned number)
{
        for (Tracked *t = w->devices; t; t = t->next)
                if (t->info->number == number)
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

static void emit_partition_changes(Watcher *w, unsigned number, const KernelPartition *old, size_t n_old,
        const KernelPartition *new, size_t n_new)
{
        bool changed = false;

        for (size_t i = 0; i < n_old; i++)
                if (!partitions_have(new, n_new, &old[i])) {
                        device_dbus_emit_partition(w->manager, number, old[i].number, false);
                        changed = true;
                }
        for (size_t i = 0; i < n_new; i++)
                if (!partitions_have(old, n_old, &new[i])) {
                        device_dbus_emit_partition(w->manager, number, new[i].number, true);
                        changed = true;
                }
        if (changed)
                device_dbus_emit_changed(w->manager, number, "Partitions");
}

static void emit_property_changes(Watcher *w, const LoopInfo *old, const LoopInfo *new)
{
        unsigned n = new->number;

        if (!streq(old->backing_file, new->backing_file))
                device_dbus_emit_changed(w->manager, n, "BackingFile");
        if (old->offset != new->offset)
                device_dbus_emit_changed(w->manager, n, "Offset");
        if (old->size_limit != new->size_limit)
                device_dbus_emit_changed(w->manager, n, "SizeLimit");
        if (old->sector_size != new->sector_size)
                device_dbus_emit_changed(w->manager, n, "SectorSize");
        if (old->read_only != new->read_only)
                device_dbus_emit_changed(w->manager, n, "ReadOnly");
        if (old->autoclear != new->autoclear)
                device_dbus_emit_changed(w->manager, n, "Autoclear");
}

static void watcher_device_gone(Watcher *w, Tracked *t)
{
        unsigned number = t->info->number;

        for (size_t i = 0; i < t->n_parts; i++)
                device_dbus_emit_partition(w->manager, number, t->parts[i].number, false);
        watcher_unlink(w, t);
        tracked_free(t);
        device_dbus_emit_removed(w->manager, number);
        log_debug("loop%u was detached", number);
}

/* Reads loopN afresh and tells the bus what changed since the last look. */
static void watcher_refresh_device(Watcher *w, unsigned number, bool announce)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        KernelPartition *parts = NULL;
        size_t n_parts = 0;
        Tracked *t = watcher_find(w, number);
        int r;

        r = loop_get_info(number, &info);
        if (r < 0) {
                if (t && announce)
                        watcher_device_gone(w, t);
                else if (t) {
                        watcher_unlink(w, t);
                        tracked_free(t);
                }
                /* A device loopd set up was detached by someone else or by autoclear: its record goes. */
                for (ManagedDevice *d = w->manager->devices; d; d = d->next)
                        if (d->number == number) {
                                manager_forget_device(w->manager, number);
                                break;
                        }
                return;
        }
        if (partition_list_kernel(number, &parts, &n_parts) < 0)
                n_parts = 0;

        if (t && t->info->diskseq != info->diskseq) {
                /* The number was recycled while we were not looking: the old device is gone. */
                if (announce)
                        watcher_device_gone(w, t);
                else {
                        watcher_unlink(w, t);
                        tracked_free(t);
                }
                t = NULL;
        }

        if (!t) {
                t = calloc(1, sizeof(Tracked));
                if (!t) {
                        free(parts);
                        return;
                }
                t->info = TAKE_PTR(info);
                t->parts = parts;
                t->n_parts = n_parts;
                t->next = w->devices;
                w->devices = t;
                if (announce) {
                        device_dbus_emit_added(w->manager, number);
                        for (size_t i = 0; i < n_parts; i++)
                                device_dbus_emit_partition(w->manager, number, parts[i].number, true);
                }
                log_debug("loop%u is bound to %s", number, t->info->backing_file);
                return;
        }

        if (announce) {
                emit_property_changes(w, t->info, info);
                emit_partition_changes(w, number, t->parts, t->n_parts, parts, n_parts);
        }
        loop_info_free(t->info);
        t->info = TAKE_PTR(info);
        free(t->parts);
        t->parts = parts;
        t->n_parts = n_parts;
}

/* ---- udev ---- */

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
        r = sd_event_add_io(
                w->manager->event, &w->io, udev_monitor_get_fd(w->monitor), EPOLLIN, watcher_on_event, w);
        if (r < 0)
                return r;
        w->source_is_udev = use_udev;
        log_debug("Watching block devices through the %s event source", use_udev ? "udev" : "kernel");
        return 0;
}

bool watcher_busy(Watcher *w)
{
        return w && w->waits;
}

bool watcher_udev_running(Watcher *w)
{
        bool running = udevd_running();

        if (running != w->source_is_udev) {
                int r = watcher_open_monitor(w);
                if (r < 0)
                        log_warning_errno(r, "Failed to switch the block device monitor: %m");
        }
        return running;
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
        Manager *m = wait->watcher->manager;
        WatcherWaitCallback callback = wait->callback;
        void *userdata = wait->userdata;

        watcher_wait_free(wait);
        callback(m, result, userdata);
}

static int watcher_wait_on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        watcher_wait_finish(userdata, -ETIMEDOUT);
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

        r = sd_event_add_time_relative(w->manager->event, &wait->timer, CLOCK_MONOTONIC, timeout_usec, 0,
                watcher_wait_on_timeout, wait);
        if (r < 0) {
                watcher_wait_free(wait);
                return r;
        }
        if (ret)
                *ret = wait;
        return 0;
}

/* The diskseq of the disk an event is about: its own DISKSEQ, or its parent disk's. */
static uint64_t event_diskseq(struct udev_device *d)
{
        const char *s = udev_device_get_property_value(d, "DISKSEQ");
        struct udev_device *parent;

        if (!s && (parent = udev_device_get_parent_with_subsystem_devtype(d, "block", "disk")))
                s = udev_device_get_sysattr_value(parent, "diskseq");
        return s ? strtoull(s, NULL, 10) : 0;
}

static void watcher_dispatch_waits(Watcher *w, struct udev_device *d, const char *action)
{
        dev_t devnum = udev_device_get_devnum(d);
        uint64_t diskseq;

        if (!w->waits || (!streq(action, "add") && !streq(action, "change")))
                return;
        diskseq = event_diskseq(d);

        for (WatcherWait *wait = w->waits, *next; wait; wait = next) {
                bool all = true;

                next = wait->next;
                for (size_t i = 0; i < wait->n; i++) {
                        if (wait->devnums[i] == devnum && (diskseq == 0 || diskseq == wait->diskseq))
                                wait->done[i] = true;
                        all = all && wait->done[i];
                }
                if (all)
                        watcher_wait_finish(wait, 0);
        }
}

/* loopN for a loop disk or one of its partitions, by the kernel's name of the disk. */
static int event_loop_number(struct udev_device *d, unsigned *ret)
{
        const char *devtype = udev_device_get_devtype(d);
        struct udev_device *disk = d;

        if (devtype && streq(devtype, "partition")) {
                disk = udev_device_get_parent_with_subsystem_devtype(d, "block", "disk");
                if (!disk)
                        return -ENODEV;
        }
        const char *name = udev_device_get_sysname(disk);
        if (!name || loop_parse_name(name, ret) < 0)
                return -EINVAL;
        return 0;
}

/* A kernel without a parser for the device's partition table drops the partitions loopd added with BLKPG
 * whenever the table is re-read (BLKRRPART: udevd does that after someone closes the disk opened for
 * writing). After such a change event, a device of loopd's that should have partitions gets them back. */
static void watcher_restore_partitions(Watcher *w, unsigned number)
{
        Tracked *t = watcher_find(w, number);
        char node[32];
        int fd, r;

        if (!t || t->n_parts > 0 || !t->info->partscan ||
                !manager_find_device(w->manager, number, t->info->diskseq))
                return;

        snprintf(node, sizeof(node), "/dev/loop%u", number);
        fd = open(node, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return;
        r = loop_sync_partitions(fd, number);
        close(fd);
        if (r < 0)
                log_warning_errno(r, "Failed to restore the partitions of loop%u after a table re-read: %m",
                        number);
        else if (r > 0)
                log_info("Restored %d partition(s) of loop%u that a partition table re-read dropped", r, number);
}

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Watcher *w = userdata;

        for (;;) {
                struct udev_device *d = udev_monitor_receive_device(w->monitor);
                const char *action;
                unsigned number;

                if (!d)
                        break;
                action = udev_device_get_action(d);
                if (action && event_loop_number(d, &number) >= 0) {
                        /* Re-read the device rather than trusting the event alone: partitions come and go
                         * as a group, and the state after the event is what clients need. */
                        watcher_refresh_device(w, number, true);
                        if (streq(action, "change") && streq_ptr(udev_device_get_devtype(d), "disk"))
                                watcher_restore_partitions(w, number);
                        watcher_dispatch_waits(w, d, action);
                }
                udev_device_unref(d);
        }
        return 0;
}

/* ---- the mount table ---- */

static void mount_entries_free(MountEntry *e, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(e[i].node);
                free(e[i].target);
        }
        free(e);
}

static bool mount_entries_have(const MountEntry *e, size_t n, const char *node, const char *target)
{
        for (size_t i = 0; i < n; i++)
                if (streq(e[i].node, node) && streq(e[i].target, target))
                        return true;
        return false;
}

/* Mounts whose source is a loop device or partition (FUSE mounts carry it as fsname=). */
static int read_loop_mounts(MountEntry **ret, size_t *ret_n)
{
        struct libmnt_table *table = mnt_new_table_from_file("/proc/self/mountinfo");
        struct libmnt_iter *iter;
        struct libmnt_fs *fs;
        MountEntry *list = NULL;
        size_t n = 0;
        int r = 0;

        if (!table)
                return -ENOMEM;
        iter = mnt_new_iter(MNT_ITER_FORWARD);
        if (!iter) {
                mnt_unref_table(table);
                return -ENOMEM;
        }
        while (mnt_table_next_fs(table, iter, &fs) == 0) {
                const char *source = mnt_fs_get_source(fs), *target = mnt_fs_get_target(fs);
                MountEntry *grown;

                if (!source || !target || strncmp(source, "/dev/loop", 9) != 0)
                        continue;
                grown = realloc(list, (n + 1) * sizeof(MountEntry));
                if (!grown) {
                        r = -ENOMEM;
                        break;
                }
                list = grown;
                list[n].node = strdup(source);
                list[n].target = strdup(target);
                n++;
                if (!list[n - 1].node || !list[n - 1].target) {
                        r = -ENOMEM;
                        break;
                }
        }
        mnt_free_iter(iter);
        mnt_unref_table(table);
        if (r < 0) {
                mount_entries_free(list, n);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

static void loop_number_of_node(const char *node, unsigned *ret)
{
        char name[32];
        size_t len = strcspn(node + 5, "p");

        *ret = UINT32_MAX;
        if (len >= sizeof(name))
                return;
        memcpy(name, node + 5, len);
        name[len] = '\0';
        (void)loop_parse_name(name, ret);
}

static void watcher_rescan_mounts(Watcher *w, bool announce)
{
        MountEntry *mounts = NULL;
        size_t n = 0;
        int r;

        r = read_loop_mounts(&mounts, &n);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the mount table: %m");
                return;
        }

        if (announce) {
                for (size_t i = 0; i < w->n_mounts; i++) {
                        MountEntry *e = &w->mounts[i];
                        unsigned number;

                        if (mount_entries_have(mounts, n, e->node, e->target))
                                continue;
                        device_dbus_emit_mount(w->manager, e->node, e->target, false);
                        /* Unmounted behind loopd's back (umount by root): the empty mount point it made goes
                         * too, and an autoclear device with nothing left mounted. */
                        manager_remove_mount_point(w->manager, e->target);
                        loop_number_of_node(e->node, &number);
                        if (number != UINT32_MAX) {
                                manager_release_if_autoclear(w->manager, number);
                                device_dbus_emit_changed(w->manager, number, "Partitions");
                        }
                }
                for (size_t i = 0; i < n; i++) {
                        unsigned number;

                        if (mount_entries_have(w->mounts, w->n_mounts, mounts[i].node, mounts[i].target))
                                continue;
                        device_dbus_emit_mount(w->manager, mounts[i].node, mounts[i].target, true);
                        loop_number_of_node(mounts[i].node, &number);
                        if (number != UINT32_MAX)
                                device_dbus_emit_changed(w->manager, number, "Partitions");
                }
        }

        mount_entries_free(w->mounts, w->n_mounts);
        w->mounts = mounts;
        w->n_mounts = n;
}

static int watcher_on_mount_change(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Watcher *w = userdata;

        /* Drain the monitor, then look at the table once. */
        while (mnt_monitor_next_change(w->mount_monitor, NULL, NULL) == 0)
                ;
        watcher_rescan_mounts(w, true);
        return 0;
}

static int watcher_open_mount_monitor(Watcher *w)
{
        int r, fd;

        w->mount_monitor = mnt_new_monitor();
        if (!w->mount_monitor)
                return -ENOMEM;
        r = mnt_monitor_enable_kernel(w->mount_monitor, true);
        if (r < 0)
                return r;
        fd = mnt_monitor_get_fd(w->mount_monitor);
        if (fd < 0)
                return fd;
        return sd_event_add_io(w->manager->event, &w->mount_io, fd, EPOLLIN, watcher_on_mount_change, w);
}

/* ---- life cycle ---- */

int watcher_new(Manager *m, Watcher **ret)
{
        LoopInfo **infos = NULL;
        size_t n = 0;
        Watcher *w;
        int r;

        w = calloc(1, sizeof(Watcher));
        if (!w)
                return -ENOMEM;
        w->manager = m;
        w->udev = udev_new();
        if (!w->udev) {
                free(w);
                return -ENOMEM;
        }

        /* Subscribe first, then enumerate: whatever happens in between arrives as an event. */
        r = watcher_open_monitor(w);
        if (r >= 0)
                r = watcher_open_mount_monitor(w);
        if (r < 0) {
                watcher_free(w);
                return r;
        }

        r = loop_list(&infos, &n);
        if (r < 0)
                log_warning_errno(r, "Failed to list loop devices: %m");
        for (size_t i = 0; i < n; i++)
                watcher_refresh_device(w, infos[i]->number, false);
        loop_info_array_free(infos, n);
        watcher_rescan_mounts(w, false);

        *ret = w;
        return 0;
}

Watcher *watcher_free(Watcher *w)
{
        if (!w)
                return NULL;
        while (w->waits)
                watcher_wait_free(w->waits);
        while (w->devices) {
                Tracked *t = w->devices;
                w->devices = t->next;
                tracked_free(t);
        }
        watcher_close_monitor(w);
        sd_event_source_disable_unref(w->mount_io);
        mnt_unref_monitor(w->mount_monitor);
        mount_entries_free(w->mounts, w->n_mounts);
        udev_unref(w->udev);
        free(w);
        return NULL;
}
