/* watcher.c: the table of bound loop devices and their partitions, kept up to date with the kernel; what
 * changes is reported as a Change. Its event sources are in watcher-udev.c, the mount table in
 * watcher-mounts.c. Who owns a device and whether it goes with its last unmount are the registry's: the
 * table never keeps a copy of them. */
#include "watcher.h"

#include <errno.h>
#include <libudev.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "image-reader.h"
#include "log.h"
#include "loop.h"
#include "partition.h"
#include "probe.h"
#include "strv.h"
#include "watcher-internal.h"

/* How many devices at once make a burst whose memory is given back when the last of them goes. */
#define TRIM_AFTER_DEVICES 16

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

/* Probes what is on the device now: through the image Attach bound to it, the first time (with the kernel's
 * partitions the table has just read), else through the device. */
static int tracked_probe(Watcher *w, Tracked *t)
{
        PartitionInfo *parts = NULL;
        uint64_t offset = 0;
        size_t n = 0;
        int fd = -EBADF, r;

        if (registry_take_image(w->registry, t->info->number, t->info->diskseq, &fd, &offset) >= 0)
                r = image_reader_probe_device(
                        w->image_reader, t->info->number, fd, offset, t->parts, t->n_parts, &parts, &n);
        else
                r = image_reader_probe_device(
                        w->image_reader, t->info->number, -EBADF, 0, NULL, 0, &parts, &n);
        safe_close(fd);
        if (r < 0) {
                log_debug_errno(r, "Failed to probe loop%u: %m", t->info->number);
                parts = NULL;
                n = 0;
        }
        partition_info_array_free(t->probed, t->n_probed);
        t->probed = parts;
        t->n_probed = n;
        t->probed_valid = r >= 0;
        t->probe_tried = true;
        return r;
}

static bool partition_info_equal(const PartitionInfo *a, const PartitionInfo *b)
{
        return a->number == b->number && a->devnum == b->devnum && a->offset == b->offset &&
                a->size == b->size && streq_ptr(a->node, b->node) && streq_ptr(a->part_type, b->part_type) &&
                streq_ptr(a->part_name, b->part_name) && streq_ptr(a->fstype, b->fstype) &&
                streq_ptr(a->label, b->label) && streq_ptr(a->uuid, b->uuid);
}

int watcher_reprobe(Watcher *w, Tracked *t)
{
        PartitionInfo *old = TAKE_PTR(t->probed);
        size_t n_old = t->n_probed;
        bool old_valid = t->probed_valid, changed;
        int r;

        t->n_probed = 0;
        r = tracked_probe(w, t);
        changed = old_valid != t->probed_valid || n_old != t->n_probed;
        for (size_t i = 0; i < n_old && !changed; i++)
                changed = !partition_info_equal(&old[i], &t->probed[i]);
        partition_info_array_free(old, n_old);
        if (changed)
                watcher_report(w, CHANGE_PROPERTY, t->info->number, 0, NULL, NULL, "Partitions");
        return r;
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
        return number < w->n_by_number ? w->by_number[number] : NULL;
}

/* Puts t at the head of the table and into the index. */
static int watcher_link(Watcher *w, Tracked *t)
{
        unsigned number = t->info->number;

        if (number >= w->n_by_number) {
                size_t n = MAX(MAX(w->n_by_number * 2, (size_t)number + 1), (size_t)64);
                Tracked **a = reallocarray(w->by_number, n, sizeof(Tracked *));

                if (!a)
                        return -ENOMEM;
                memset(a + w->n_by_number, 0, (n - w->n_by_number) * sizeof(Tracked *));
                w->by_number = a;
                w->n_by_number = n;
        }
        w->by_number[number] = t;
        t->next = w->devices;
        w->devices = t;
        w->n_devices++;
        w->peak_devices = MAX(w->peak_devices, w->n_devices);
        return 0;
}

Tracked *watcher_find_devnum(Watcher *w, dev_t devnum)
{
        Tracked *t;

        /* One look, tracked or not: the events of a device not (or no longer) tracked, an Attach's and a
         * Detach's, would otherwise walk all thousand entries. A loop driver loaded after loopd started
         * (a module, with loopd's first Attach) has its parameter by the time its devices are looked for. */
        if (w->part_shift == -ENOENT)
                w->part_shift = loop_part_shift();
        if (w->part_shift >= 0) {
                t = watcher_find(w, minor(devnum) >> w->part_shift);
                return t && t->info->devnum == devnum ? t : NULL;
        }
        for (t = w->devices; t; t = t->next)
                if (t->info->devnum == devnum)
                        return t;
        return NULL;
}

static void watcher_unlink(Watcher *w, Tracked *t)
{
        for (Tracked **p = &w->devices; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        w->by_number[t->info->number] = NULL;
                        w->n_devices--;
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
        /* The same incarnation: the same record, if any, whose autoclear never changes; only the kernel's
         * flag may have. */
        if (registry_device_autoclear(w->registry, old) != registry_device_autoclear(w->registry, new))
                watcher_report(w, CHANGE_PROPERTY, n, 0, NULL, NULL, "Autoclear");
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
                 * Only what went: a new mount may be of a device on the same number not announced yet. With
                 * none of its mounts known there is nothing to say (a mount not seen yet was never
                 * announced), and the mount table is not read. */
                if (watcher_knows_mount_of(w, number))
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
        /* The last of a burst of devices went: give back what they took (glibc keeps freed heap otherwise;
         * after 256 devices that is a third of loopd's private memory). Not after one device: what one
         * Attach + Detach frees, glibc trims itself or the next one takes again, and a malloc_trim() each
         * time was 5% of loopd's time a cycle, plus the page faults of taking the memory back (perf). */
        if (!w->devices && w->peak_devices >= TRIM_AFTER_DEVICES) {
                (void)malloc_trim(0);
                w->peak_devices = 0;
        }
}

/* Takes info (a device sysfs lists as bound) into the table and, with announce, reports what changed. */
static void watcher_take_device(Watcher *w, LoopInfo *info, bool announce)
{
        KernelPartition *parts = NULL;
        size_t n_parts = 0;
        unsigned number = info->number;
        Tracked *t = watcher_find(w, number);

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
                t->seqnum = info->uevent_seqnum;
                t->parts = parts;
                t->n_parts = n_parts;
                /* Found at start: probed when a client first asks (watcher_update_device()). */
                if (announce)
                        (void)tracked_probe(w, t);
                /* In the table before anyone hears of it: InterfacesAdded reads the properties from here. */
                if (watcher_link(w, t) < 0) {
                        tracked_free(t);
                        return;
                }
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
        t->seqnum = info->uevent_seqnum;
        t->info = info;
        t->parts = parts;
        t->n_parts = n_parts;
        if (announce && partitions_added(old_parts, n_old_parts, parts, n_parts))
                (void)tracked_probe(w, t);
        else if (announce && partitions_added(parts, n_parts, old_parts, n_old_parts))
                tracked_forget_partitions(t);
        if (announce) {
                emit_property_changes(w, old_info, info);
                emit_partition_changes(w, number, old_parts, n_old_parts, parts, n_parts);
        }
        loop_info_free(old_info);
        free(old_parts);
}

/* Is that incarnation of loopN among infos (sorted by number, as loop_list() returns them)? */
static bool infos_have(LoopInfo *const *infos, size_t n, unsigned number, uint64_t diskseq)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (infos[mid]->number < number)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < n && infos[lo]->number == number && infos[lo]->diskseq == diskseq;
}

/* Brings the table up to date with the kernel for every device and, with announce, reports what changed:
 * at start, when the event source changed or events were lost, and when a client enumerates the objects.
 * Sysfs only, but it reads every loop device on the machine (there may be hundreds): events look at their
 * device only. */
int watcher_sync(Watcher *w, bool announce)
{
        LoopInfo **infos = NULL;
        size_t n = 0;
        int r;

        if (w->syncing)
                return 0;
        r = loop_list(&infos, &n);
        if (r < 0)
                return log_debug_errno(r, "Failed to list loop devices: %m");
        w->syncing = true;

        /* What went (or was re-bound under the same number: a new diskseq) first, so that a number that
         * was recycled is removed before it is added again. */
        for (Tracked *t = w->devices, *next; t; t = next) {
                next = t->next;
                if (!infos_have(infos, n, t->info->number, t->info->diskseq))
                        watcher_device_gone(w, t, announce);
        }
        /* Records of loopd's whose device the kernel no longer has (gone before the watcher saw it). */
        for (ManagedDevice *d = w->registry->devices, *next; d; d = next) {
                next = d->next;
                if (!infos_have(infos, n, d->number, d->diskseq))
                        registry_forget_device(w->registry, d->number);
        }
        for (size_t i = 0; i < n; i++)
                watcher_take_device(w, TAKE_PTR(infos[i]), announce);
        free(infos);

        w->syncing = false;
        return 0;
}

/* The same for one device, with what the kernel says of it now: info (taken) and r, loop_get_info()'s. */
static void watcher_refresh_with(Watcher *w, unsigned number, LoopInfo *info, int r, bool announce)
{
        Tracked *t;
        ManagedDevice *d;

        if (w->syncing) {
                loop_info_free(info);
                return;
        }
        if (r < 0 && r != -ENXIO && r != -ENODEV) {
                log_debug_errno(r, "Failed to read loop%u, keeping what was known: %m", number);
                return;
        }
        w->syncing = true;
        t = watcher_find(w, number);
        if (t && (r < 0 || info->diskseq != t->info->diskseq))
                watcher_device_gone(w, t, announce);
        /* A device of loopd's that was detached (or whose number was re-used) before the watcher ever saw
         * it: its record goes all the same. */
        d = registry_find_number(w->registry, number);
        if (d && (r < 0 || d->diskseq != info->diskseq))
                registry_forget_device(w->registry, number);
        if (r >= 0)
                watcher_take_device(w, info, announce);
        w->syncing = false;
}

/* The same for one device (loopN was named by an event, or by a client). */
void watcher_refresh(Watcher *w, unsigned number, bool announce)
{
        LoopInfo *info = NULL;
        int r;

        if (w->syncing)
                return;
        uint64_t seqnum = loop_uevent_seqnum();
        r = loop_get_info(number, &info);
        if (r >= 0)
                info->uevent_seqnum = seqnum;
        watcher_refresh_with(w, number, info, r, announce);
}

/* ---- what the engine and the face ask ---- */

void watcher_update_device(Watcher *w, unsigned number)
{
        watcher_update_device_info(w, number, NULL);
}

void watcher_update_device_info(Watcher *w, unsigned number, const LoopInfo *known)
{
        LoopInfo *copy = NULL;
        Tracked *t;

        if (known && loop_info_dup(known, &copy) >= 0)
                watcher_refresh_with(w, number, copy, 0, true);
        else
                watcher_refresh(w, number, true);
        t = watcher_find(w, number);
        /* Found at start and never asked about: nobody was told what is on it, so nothing to report. */
        if (t && !t->probe_tried)
                (void)tracked_probe(w, t);
}

/* Do a and b (the same incarnation, b read by loop_get_info_brief()) differ in what the brief read has? */
static bool brief_differs(const LoopInfo *a, const LoopInfo *b)
{
        return !streq(a->backing_file, b->backing_file) || a->offset != b->offset ||
                a->size_limit != b->size_limit || a->sector_size != b->sector_size ||
                a->read_only != b->read_only || a->autoclear != b->autoclear;
}

void watcher_update_devices(Watcher *w, bool closely)
{
        LoopInfo **infos = NULL;
        size_t n = 0;
        int r;

        if (w->syncing)
                return;
        if (closely) {
                (void)watcher_sync(w, true);
                for (Tracked *t = w->devices; t; t = t->next)
                        if (!t->probe_tried)
                                (void)tracked_probe(w, t);
                return;
        }

        /* Only the devices a uevent or a close of their node named since the last look, when no event was
         * lost: sysfs attributes only (no open), and the devices that differ are then read as an event
         * would. */
        _cleanup_free_ unsigned *numbers = NULL;
        if (watcher_catch_up(w, &numbers, &n) >= 0) {
                for (size_t i = 0; i < n; i++) {
                        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
                        Tracked *t = watcher_find(w, numbers[i]);

                        r = loop_get_info_brief(numbers[i], &info);
                        if (r >= 0 ? !t || t->info->diskseq != info->diskseq || brief_differs(t->info, info)
                                   : t || (r != -ENXIO && r != -ENOENT && r != -ENODEV))
                                watcher_refresh(w, numbers[i], true);
                }
                return;
        }

        /* Everything, sysfs attributes only (no open): the devices that differ are then read as an event
         * would. */
        r = loop_list_brief(&infos, &n);
        if (r < 0) {
                log_debug_errno(r, "Failed to list loop devices: %m");
                return;
        }
        for (Tracked *t = w->devices, *next; t; t = next) {
                /* watcher_refresh() of t's number frees t at most, and puts a new entry at the head. */
                next = t->next;
                if (!infos_have(infos, n, t->info->number, t->info->diskseq))
                        watcher_refresh(w, t->info->number, true);
        }
        for (size_t i = 0; i < n; i++) {
                Tracked *t = watcher_find(w, infos[i]->number);

                if (!t || t->info->diskseq != infos[i]->diskseq || brief_differs(t->info, infos[i]))
                        watcher_refresh(w, infos[i]->number, true);
        }
        loop_info_array_free(infos, n);
}

int watcher_probe_device(Watcher *w, unsigned number)
{
        Tracked *t;

        watcher_refresh(w, number, true);
        t = watcher_find(w, number);
        return t ? watcher_reprobe(w, t) : -ENXIO;
}

const LoopInfo *watcher_device(Watcher *w, unsigned number)
{
        Tracked *t = watcher_find(w, number);

        return t ? t->info : NULL;
}

int watcher_list_devices(Watcher *w, unsigned **ret, size_t *ret_n)
{
        unsigned *list;
        size_t n = 0, i = 0;

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

const PartitionInfo *watcher_device_partitions(Watcher *w, unsigned number, size_t *ret_n)
{
        Tracked *t = watcher_find(w, number);

        if (!t || !t->probed_valid)
                return NULL;
        *ret_n = t->n_probed;
        return t->probed;
}

const char *watcher_mount_point(Watcher *w, const char *node)
{
        for (size_t i = 0; i < w->n_mounts; i++)
                if (streq(w->mounts[i].node, node))
                        return w->mounts[i].target;
        return NULL;
}

/* ---- life cycle ---- */

int watcher_new(const WatcherConfig *config, Watcher **ret)
{
        Watcher *w;
        int r;

        w = calloc(1, sizeof(Watcher));
        if (!w)
                return -ENOMEM;
        w->uevent_fd = w->close_fd = w->nodes_fd = -EBADF;
        w->part_shift = loop_part_shift();
        w->event = sd_event_ref(config->event);
        w->registry = config->registry;
        w->image_reader = config->image_reader;
        w->on_change = config->on_change;
        w->on_change_userdata = config->on_change_userdata;
        w->release_held = config->release_held;
        w->release_held_userdata = config->release_held_userdata;
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
        r = watcher_open_catchup(w);
        if (r < 0)
                log_warning_errno(
                        r, "Failed to follow the kernel's uevents, ListDevices reads every device: %m");
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
        watcher_cancel_waits(w);
        while (w->devices) {
                Tracked *t = w->devices;
                w->devices = t->next;
                tracked_free(t);
        }
        free(w->by_number);
        watcher_close_catchup(w);
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
