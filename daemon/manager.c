/* manager.c: the daemon's context: event loop, bus, watcher, and the devices loopd set up. */
#include "manager.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

#include "auth.h"
#include "bus-calls.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "mount.h"
#include "partition.h"
#include "state.h"
#include "strv.h"
#include "watcher.h"

int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return -ENOMEM;
        m->max_devices_per_user = 32;
        m->partition_timeout_usec = 30ULL * 1000000ULL;
        m->max_pending_per_user = 16;
        m->io_timeout_usec = 10ULL * 1000000ULL;
        m->state_dir = strdup("/run/loopd");
        m->media_dir = strdup("/run/media");
        if (!m->state_dir || !m->media_dir)
                return -ENOMEM;

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

static void managed_device_release(ManagedDevice *d)
{
        d->lock_fd = safe_close(d->lock_fd);
        d->image_fd = safe_close(d->image_fd);
        d->close_watch = sd_event_source_disable_unref(d->close_watch);
}

static void managed_device_free(ManagedDevice *d)
{
        if (!d)
                return;
        managed_device_release(d);
        free(d);
}

Manager *manager_free(Manager *m)
{
        if (!m)
                return NULL;
        /* The watcher first: an Attach still waiting for udev is answered (and rolled back) while the bus
         * and the device records are still there. */
        m->watcher = watcher_free(m->watcher);
        manager_dbus_cancel_calls(m);
        while (m->devices) {
                ManagedDevice *next = m->devices->next;
                managed_device_free(m->devices);
                m->devices = next;
        }
        sd_event_source_disable_unref(m->idle_timer);
        auth_free(m->auth);
        bus_calls_free(m->calls);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        free(m->state_dir);
        free(m->media_dir);
        free(m);
        return NULL;
}

ManagedDevice *manager_find_device(Manager *m, unsigned number, uint64_t diskseq)
{
        for (ManagedDevice *d = m->devices; d; d = d->next)
                if (d->number == number && d->diskseq == diskseq)
                        return d;
        return NULL;
}

bool manager_device_autoclear(Manager *m, const LoopInfo *info)
{
        ManagedDevice *d = manager_find_device(m, info->number, info->diskseq);

        return info->autoclear || (d && d->autoclear);
}

/* Someone closed /dev/loopN. If it was a LOOP_CLR_FD of another tool (losetup -d), the kernel only set the
 * autoclear flag, because loopd's lock holds the device open: let go of it, so that the device goes now, as
 * it would have without loopd. Unless loopd armed autoclear itself (it did at the first mount: the device
 * then goes with its last unmount either way). Only sysfs is read here: opening the node would be a close
 * event of its own. */
static int manager_on_device_closed(sd_event_source *s, const struct inotify_event *event, void *userdata)
{
        Manager *m = userdata;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        ManagedDevice *d = NULL;

        for (ManagedDevice *i = m->devices; i && !d; i = i->next)
                if (i->close_watch == s)
                        d = i;
        if (!d || d->autoclear_armed)
                return 0;
        if (loop_get_info_brief(d->number, &info) < 0 || info->diskseq != d->diskseq || !info->autoclear)
                return 0;
        log_info("loop%u was detached by another program, letting go of it", d->number);
        managed_device_release(d);
        return 0;
}

int manager_add_device(Manager *m, const ManagedDevice *d)
{
        ManagedDevice *copy;
        int r;

        manager_forget_device(m, d->number);
        copy = malloc(sizeof(ManagedDevice));
        if (!copy) {
                safe_close(d->lock_fd);
                safe_close(d->image_fd);
                return -ENOMEM;
        }
        *copy = *d;
        copy->close_watch = NULL;
        copy->next = m->devices;
        m->devices = copy;

        if (copy->lock_fd >= 0) {
                char node[32];

                snprintf(node, sizeof(node), "/dev/loop%u", copy->number);
                r = sd_event_add_inotify(m->event, &copy->close_watch, node,
                        IN_CLOSE_WRITE | IN_CLOSE_NOWRITE, manager_on_device_closed, m);
                if (r < 0)
                        log_warning_errno(r,
                                "Failed to watch %s, a losetup -d of it will only take effect when loopd "
                                "lets go of it: %m",
                                node);
        }

        r = state_save_device(m->state_dir, copy);
        if (r < 0)
                log_warning_errno(r,
                        "Failed to record loop%u in %s, its owner will not survive a restart: %m", d->number,
                        m->state_dir);
        return 0;
}

void manager_forget_device(Manager *m, unsigned number)
{
        for (ManagedDevice **p = &m->devices; *p; p = &(*p)->next)
                if ((*p)->number == number) {
                        ManagedDevice *d = *p;
                        *p = d->next;
                        managed_device_free(d);
                        break;
                }
        (void)state_remove_device(m->state_dir, number);
}

int manager_detach_device(Manager *m, unsigned number, uint64_t diskseq)
{
        ManagedDevice *d = manager_find_device(m, number, diskseq);
        int r;

        if (d) {
                d->lock_fd = safe_close(d->lock_fd);
                d->image_fd = safe_close(d->image_fd);
        }
        r = loop_detach(number, diskseq);
        if (r == -EBUSY && d) {
                /* Still bound (in use elsewhere): keep udevd's re-reads away again. */
                int fd = loop_lock(number, diskseq);
                if (fd >= 0)
                        d->lock_fd = fd;
        }
        if (r >= 0 || r == -ENXIO || r == -ENODEV || r == -ESTALE)
                manager_forget_device(m, number);
        return r;
}

int manager_take_image(Manager *m, unsigned number, uint64_t diskseq, int *ret_fd, uint64_t *ret_offset)
{
        ManagedDevice *d = manager_find_device(m, number, diskseq);

        if (!d || d->image_fd < 0)
                return -ENOENT;
        *ret_fd = TAKE_FD(d->image_fd);
        *ret_offset = d->image_offset;
        return 0;
}

unsigned manager_count_devices_of(Manager *m, uid_t uid)
{
        unsigned n = 0;

        for (ManagedDevice *d = m->devices; d; d = d->next) {
                _cleanup_(loop_info_freep) LoopInfo *info = NULL;

                if (d->owner != uid)
                        continue;
                /* Autoclear devices vanish on their own: count only what the kernel still has. */
                if (loop_get_info(d->number, &info) >= 0 && info->diskseq == d->diskseq)
                        n++;
        }
        return n;
}

/* Attaches a killed loopd left half done: the device was bound (maybe with only some of its partitions) but
 * never recorded, and its caller never got an answer. They are rolled back as loop_attach() would have
 * rolled them back had loopd lived: a device nobody was told about, owned by nobody, would otherwise stay
 * bound until root removed it. A bound device is the one of a note when it has no record and the note's
 * backing file and offset. */
static void manager_roll_back_pending(Manager *m)
{
        ManagedDevice *pending = NULL;
        LoopInfo **infos = NULL;
        size_t n = 0;
        int r;

        r = state_load_pending(m->state_dir, &pending);
        if (r < 0)
                log_warning_errno(r, "Failed to read the attaches in progress in %s: %m", m->state_dir);
        if (!pending)
                return;
        r = loop_list(&infos, &n);
        if (r < 0)
                log_warning_errno(r, "Failed to list loop devices: %m");

        while (pending) {
                ManagedDevice *p = pending;
                pending = p->next;

                for (size_t i = 0; i < n; i++) {
                        _cleanup_(loop_info_freep) LoopInfo *info = NULL;

                        if (manager_find_device(m, infos[i]->number, infos[i]->diskseq) ||
                                loop_get_info(infos[i]->number, &info) < 0 ||
                                info->diskseq != infos[i]->diskseq)
                                continue;
                        if (info->backing_dev != p->backing_dev || info->backing_inode != p->backing_inode ||
                                info->offset != p->offset)
                                continue;
                        r = loop_detach(info->number, info->diskseq);
                        if (r < 0 && r != -ENXIO && r != -ESTALE)
                                log_warning_errno(r,
                                        "Failed to roll back loop%u, attached for uid %u when loopd stopped: %m",
                                        info->number, (unsigned)p->owner);
                        else
                                log_info("Rolled back loop%u, attached for uid %u when loopd stopped",
                                        info->number, (unsigned)p->owner);
                }
                free(p);
        }
        loop_info_array_free(infos, n);
}

/* Keeps the records whose device the kernel still has as the same incarnation: same diskseq, backing file
 * and offset. Anything else was detached or re-used while loopd was not running. */
static void manager_load_state(Manager *m)
{
        ManagedDevice *list = NULL;
        int r;

        r = state_load_devices(m->state_dir, &list);
        if (r < 0) {
                log_warning_errno(
                        r, "Failed to read the state in %s, starting without it: %m", m->state_dir);
                return;
        }

        while (list) {
                _cleanup_(loop_info_freep) LoopInfo *info = NULL;
                ManagedDevice *d = list;
                list = d->next;

                /* Nothing of what a record holds survives a restart. */
                d->lock_fd = d->image_fd = -EBADF;
                d->close_watch = NULL;
                d->autoclear_armed = false;
                r = loop_get_info(d->number, &info);
                if (r >= 0 && info->diskseq == d->diskseq && info->backing_dev == d->backing_dev &&
                        info->backing_inode == d->backing_inode && info->offset == d->offset) {
                        d->autoclear_armed = info->autoclear;
                        d->lock_fd = loop_lock(d->number, d->diskseq);
                        if (d->lock_fd < 0)
                                log_debug_errno(d->lock_fd, "Failed to lock loop%u: %m", d->number);
                        unsigned number = d->number;
                        uid_t owner = d->owner;
                        r = manager_add_device(m, d);
                        free(d);
                        if (r < 0)
                                log_warning_errno(r, "Failed to re-adopt loop%u: %m", number);
                        else
                                log_info("Re-adopted loop%u of uid %u", number, (unsigned)owner);
                } else {
                        log_info("Dropped the record of loop%u: the device was detached or re-used",
                                d->number);
                        (void)state_remove_device(m->state_dir, d->number);
                        free(d);
                }
        }

        manager_roll_back_pending(m);
}

/* Idle means: no message for the idle time, no device loopd set up still bound, nothing waiting on
 * polkit or udev. Devices and mounts keep loopd alive, because their owners live only in its memory and
 * its state dir, and because an autoclear device's last unmount is loopd's to clean up after. */
static bool manager_is_idle(Manager *m, uint64_t now)
{
        if (now < m->last_activity_usec + m->exit_on_idle_usec)
                return false;
        if (bus_calls_count(m->calls) > 0 || auth_busy(m->auth) || watcher_busy(m->watcher))
                return false;
        for (ManagedDevice *d = m->devices; d; d = d->next) {
                _cleanup_(loop_info_freep) LoopInfo *info = NULL;
                if (loop_get_info(d->number, &info) >= 0 && info->diskseq == d->diskseq)
                        return false;
        }
        return true;
}

static int manager_on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Manager *m = userdata;
        uint64_t now;

        (void)sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (manager_is_idle(m, now)) {
                log_info("Idle for %" PRIu64 " s with nothing attached, exiting",
                        m->exit_on_idle_usec / 1000000);
                /* Give the name back first: a call that arrives now starts a new loopd by activation. */
                (void)sd_bus_release_name(m->bus, LOOPD_BUS_NAME);
                return sd_event_exit(m->event, 0);
        }
        /* A timer source is one-shot: arm it again for when the quiet period would end. */
        int r = sd_event_source_set_time(s, MAX(now, m->last_activity_usec) + m->exit_on_idle_usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static int manager_on_message(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;

        (void)sd_event_now(m->event, CLOCK_MONOTONIC, &m->last_activity_usec);
        return 0;
}

static int manager_setup_idle_exit(Manager *m)
{
        int r;

        if (m->exit_on_idle_usec == 0)
                return 0;
        (void)sd_event_now(m->event, CLOCK_MONOTONIC, &m->last_activity_usec);
        r = sd_bus_add_filter(m->bus, NULL, manager_on_message, m);
        if (r < 0)
                return r;
        return sd_event_add_time_relative(m->event, &m->idle_timer, CLOCK_MONOTONIC, m->exit_on_idle_usec, 0,
                manager_on_idle_timer, m);
}

int manager_start(Manager *m)
{
        int r;

        r = bus_calls_new(m->max_pending_per_user, &m->calls);
        if (r < 0)
                return r;
        r = auth_new(m, &m->auth);
        if (r < 0)
                return r;

        r = watcher_new(m, &m->watcher);
        if (r < 0)
                return log_error_errno(r, "Failed to watch block devices: %m");

        manager_load_state(m);

        r = sd_bus_default_system(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");

        r = manager_dbus_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to export the manager object: %m");
        r = device_dbus_register(m);
        if (r < 0)
                return log_error_errno(r, "Failed to export the device objects: %m");

        /* Callers before the watcher: with hundreds of loop devices and a burst of uevents (another tool
         * binding and unbinding in a loop), one rescan takes long enough that at equal priority the bus got
         * a turn only between rescans, and calls timed out. The watcher catches up whenever the bus is
         * quiet; what clients read is taken from the kernel, not from the watcher's table. */
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        r = manager_setup_idle_exit(m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up exiting when idle: %m");

        /* The name last: a client that sees it can use everything. */
        r = sd_bus_request_name(m->bus, LOOPD_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire the bus name " LOOPD_BUS_NAME ": %m");

        return 0;
}

int manager_device_mounts(Manager *m, const LoopInfo *info, char ***ret)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        _cleanup_(mount_table_unrefp) MountTable *table = NULL;
        _cleanup_strv_free_ char **all = NULL;
        size_t n_parts = 0;
        int r;

        r = partition_list_kernel(info->number, &parts, &n_parts);
        if (r < 0)
                return r;
        r = mount_table_load(&table);
        if (r < 0)
                return r;

        for (size_t i = 0; i <= n_parts; i++) {
                _cleanup_strv_free_ char **targets = NULL;
                dev_t devnum = i == 0 ? info->devnum : parts[i - 1].devnum;
                char node[64];

                if (i == 0)
                        snprintf(node, sizeof(node), "/dev/loop%u", info->number);
                else
                        snprintf(node, sizeof(node), "/dev/loop%up%u", info->number, parts[i - 1].number);
                r = mount_table_find_targets(table, devnum, node, &targets);
                if (r < 0)
                        return r;
                for (char **t = targets; t && *t; t++) {
                        r = strv_consume(&all, TAKE_PTR(*t));
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(all);
        return 0;
}

void manager_remove_mount_point(Manager *m, const char *path)
{
        /* Only directories loopd made (mount_point_remove() refuses anything outside the media dir): never
         * a mount point someone else chose. */
        (void)mount_point_remove(m->media_dir, path);
}

void manager_arm_autoclear(Manager *m, unsigned number, uint64_t diskseq, bool force)
{
        ManagedDevice *d = manager_find_device(m, number, diskseq);
        int r;

        if (!force && !(d && d->autoclear))
                return;
        if (d && !d->autoclear) {
                d->autoclear = true;
                (void)state_save_device(m->state_dir, d);
        }
        /* Only now that a mount holds the device: set at attach, the kernel would have cleared it as soon
         * as loopd closed it. */
        r = loop_set_autoclear(number, diskseq, true);
        if (r >= 0 && d)
                d->autoclear_armed = true;
        if (r < 0)
                log_warning_errno(r,
                        "Failed to set autoclear on loop%u, loopd will detach it after its last "
                        "unmount instead: %m",
                        number);
}

void manager_release_if_autoclear(Manager *m, unsigned number)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_strv_free_ char **mounts = NULL;
        int r;

        if (loop_get_info(number, &info) < 0)
                return;
        /* Only loopd's own devices: one that another tool set up with autoclear (mount -o loop) is the
         * kernel's to clear, and never loopd's to detach. */
        ManagedDevice *d = manager_find_device(m, number, info->diskseq);
        if (!d || !manager_device_autoclear(m, info))
                return;
        if (manager_device_mounts(m, info, &mounts) < 0 || (mounts && mounts[0]))
                return;

        /* The kernel clears an autoclear device when its last user closes it (loopd's lock is one); do it
         * here, so that its partitions are deleted before it is unbound and no dead node is left behind. */
        r = manager_detach_device(m, number, info->diskseq);
        if (r < 0 && r != -ENXIO && r != -ESTALE)
                log_debug_errno(r, "Failed to detach autoclear loop%u after its last unmount: %m", number);
}
