/* registry.c: the devices loopd set up: who owns each, what loopd holds of it (its lock, the image for the
 * first probe), its persistence in the state dir, and letting it go. */
#include "registry.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

#include "log.h"
#include "loop.h"
#include "mount.h"
#include "partition.h"
#include "state.h"
#include "strv.h"
#include "vdisk.h"

int registry_new(sd_event *event, const char *state_dir, uint64_t io_timeout_usec, Registry **ret)
{
        Registry *reg = calloc(1, sizeof(Registry));

        if (!reg)
                return -ENOMEM;
        reg->event = sd_event_ref(event);
        reg->io_timeout_usec = io_timeout_usec;
        reg->state_dir = strdup(state_dir);
        if (!reg->state_dir) {
                registry_free(reg);
                return -ENOMEM;
        }
        *ret = reg;
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
        vdisk_free(d->vdisk);
        free(d);
}

Registry *registry_free(Registry *reg)
{
        if (!reg)
                return NULL;
        while (reg->devices) {
                ManagedDevice *next = reg->devices->next;
                managed_device_free(reg->devices);
                reg->devices = next;
        }
        sd_event_unref(reg->event);
        free(reg->by_number);
        free(reg->formatting);
        free(reg->state_dir);
        free(reg);
        return NULL;
}

ManagedDevice *registry_find_device(Registry *reg, unsigned number, uint64_t diskseq)
{
        ManagedDevice *d = number < reg->n_by_number ? reg->by_number[number] : NULL;

        return d && d->diskseq == diskseq ? d : NULL;
}

ManagedDevice *registry_find_number(Registry *reg, unsigned number)
{
        return number < reg->n_by_number ? reg->by_number[number] : NULL;
}

/* Makes room for loopN in the index. */
static int registry_index_grow(Registry *reg, unsigned number)
{
        size_t n = reg->n_by_number;
        ManagedDevice **a;

        if (number < n)
                return 0;
        n = MAX(MAX(n * 2, (size_t)number + 1), (size_t)64);
        a = reallocarray(reg->by_number, n, sizeof(ManagedDevice *));
        if (!a)
                return -ENOMEM;
        memset(a + reg->n_by_number, 0, (n - reg->n_by_number) * sizeof(ManagedDevice *));
        reg->by_number = a;
        reg->n_by_number = n;
        return 0;
}

bool registry_device_autoclear(Registry *reg, const LoopInfo *info)
{
        ManagedDevice *d = registry_find_device(reg, info->number, info->diskseq);

        return info->autoclear || (d && d->autoclear);
}

/* Someone closed /dev/loopN. If it was a LOOP_CLR_FD of another tool (losetup -d), the kernel only set the
 * autoclear flag, because loopd's lock holds the device open: let go of it, so that the device goes now, as
 * it would have without loopd. Unless loopd armed autoclear itself (it did at the first mount: the device
 * then goes with its last unmount either way). Only sysfs is read here: opening the node would be a close
 * event of its own. */
static int registry_on_device_closed(sd_event_source *s, const struct inotify_event *event, void *userdata)
{
        ManagedDevice *d = userdata; /* the watch goes with the record (managed_device_release()) */

        /* Every close of the node comes here, loopd's own and udevd's among them: the flag alone is read. */
        if (d->autoclear_armed || loop_autoclear_of(d->number, d->diskseq) <= 0)
                return 0;
        log_info("loop%u was detached by another program, letting go of it", d->number);
        managed_device_release(d);
        return 0;
}

/* Drops the in-memory record of loopN, if any; its state file (and udev mark) stay. */
static void registry_drop(Registry *reg, unsigned number)
{
        /* Found in the index and unlinked where it is: no walk of a list of a thousand records (a new
         * number has none; detaching them all in the order they came would walk it for each). */
        ManagedDevice *d = registry_find_number(reg, number);

        if (!d)
                return;
        if (d->prev)
                d->prev->next = d->next;
        else
                reg->devices = d->next;
        if (d->next)
                d->next->prev = d->prev;
        reg->by_number[number] = NULL;
        /* The device is gone (or its number re-used): its export goes right after it. */
        d->vdisk = vdisk_stop(d->vdisk);
        managed_device_free(d);
}

int registry_add_device(Registry *reg, const ManagedDevice *d)
{
        ManagedDevice *copy;
        int r;

        /* An older record of the number is replaced, file and all; the udev mark made for this device stays.
         */
        registry_drop(reg, d->number);
        copy = registry_index_grow(reg, d->number) >= 0 ? malloc(sizeof(ManagedDevice)) : NULL;
        if (!copy) {
                safe_close(d->lock_fd);
                safe_close(d->image_fd);
                vdisk_stop(d->vdisk);
                return -ENOMEM;
        }
        *copy = *d;
        copy->close_watch = NULL;
        copy->prev = NULL;
        copy->next = reg->devices;
        if (reg->devices)
                reg->devices->prev = copy;
        reg->devices = copy;
        reg->by_number[copy->number] = copy;

        if (copy->lock_fd >= 0) {
                char node[LOOP_NODE_MAX];

                loop_node_format(node, copy->number, 0);
                r = sd_event_add_inotify(reg->event, &copy->close_watch, node,
                        IN_CLOSE_WRITE | IN_CLOSE_NOWRITE, registry_on_device_closed, copy);
                if (r < 0)
                        log_warning_errno(r,
                                "Failed to watch %s, a losetup -d of it will only take effect when loopd "
                                "lets go of it: %m",
                                node);
        }

        r = state_save_device(reg->state_dir, copy);
        if (r < 0)
                log_warning_errno(r,
                        "Failed to record loop%u in %s, its owner will not survive a restart: %m", d->number,
                        reg->state_dir);
        return 0;
}

void registry_forget_device(Registry *reg, unsigned number)
{
        registry_drop(reg, number);
        (void)state_remove_device(reg->state_dir, number);
}

int registry_detach_device(Registry *reg, unsigned number, uint64_t diskseq)
{
        ManagedDevice *d = registry_find_device(reg, number, diskseq);
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
        /* Only this incarnation's record: a newer device on the same number (after -ESTALE) keeps its own.
         */
        if (d && (r >= 0 || r == -ENXIO || r == -ENODEV || r == -ESTALE))
                registry_forget_device(reg, number);
        return r;
}

int registry_take_image(Registry *reg, unsigned number, uint64_t diskseq, int *ret_fd, uint64_t *ret_offset)
{
        ManagedDevice *d = registry_find_device(reg, number, diskseq);

        if (!d || d->image_fd < 0)
                return -ENOENT;
        *ret_fd = TAKE_FD(d->image_fd);
        *ret_offset = d->image_offset;
        return 0;
}

const char *registry_device_image(Registry *reg, const LoopInfo *info, const char **ret_format)
{
        ManagedDevice *d = registry_find_device(reg, info->number, info->diskseq);

        if (d && d->vdisk && streq(info->backing_file, d->vdisk->path)) {
                if (ret_format)
                        *ret_format = d->vdisk->format;
                return d->vdisk->image;
        }
        if (ret_format)
                *ret_format = "raw";
        return info->backing_file;
}

unsigned registry_count_devices_of(Registry *reg, uid_t uid)
{
        unsigned n = 0;

        for (ManagedDevice *d = reg->devices; d; d = d->next) {
                if (d->owner != uid)
                        continue;
                /* Autoclear devices vanish on their own: count only what the kernel still has (two sysfs
                 * reads, not a device's whole state: this runs for every Attach of a user). */
                if (loop_is_bound(d->number, d->diskseq))
                        n++;
        }
        return n;
}

/* Attaches a killed loopd left half done: the device was bound (maybe with only some of its partitions) but
 * never recorded, and its caller never got an answer. They are rolled back as loop_attach() would have
 * rolled them back had loopd lived: a device nobody was told about, owned by nobody, would otherwise stay
 * bound until root removed it. A bound device is the one of a note when it has no record, the note's
 * backing file and offset, and loopd's udev mark (made before the bind): another tool's binding of the same
 * image has none. */
static void registry_roll_back_pending(Registry *reg, int boot)
{
        ManagedDevice *pending = NULL;
        LoopInfo **infos = NULL;
        size_t n = 0;
        int r;

        r = state_load_pending(reg->state_dir, &pending);
        if (r < 0)
                log_warning_errno(r, "Failed to read the attaches in progress in %s: %m", reg->state_dir);
        /* Of an earlier boot: nothing of theirs is bound any more. */
        if (boot == 0)
                while (pending) {
                        ManagedDevice *p = pending;
                        pending = p->next;
                        free(p);
                }
        if (!pending)
                return;
        r = loop_list(&infos, &n);
        if (r < 0)
                log_warning_errno(r, "Failed to list loop devices: %m");

        while (pending) {
                ManagedDevice *p = pending;
                pending = p->next;

                for (size_t i = 0; i < n; i++) {
                        const LoopInfo *info = infos[i];

                        if (registry_find_device(reg, info->number, info->diskseq) ||
                                info->offset != p->offset ||
                                !state_udev_marked(reg->state_dir, info->number))
                                continue;
                        r = loop_backing_is(info->number, info->diskseq, p->backing_dev, p->backing_inode,
                                reg->io_timeout_usec);
                        if (r == -ETIMEDOUT)
                                log_warning(
                                        "loop%u's backing file does not answer: not rolled back (it may be "
                                        "the attach of uid %u that loopd left half done)",
                                        info->number, (unsigned)p->owner);
                        if (r <= 0)
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

/* The export in list that loopN (diskseq) was bound to, taken out of the list; NULL if none. */
static Vdisk *take_vdisk(Vdisk **list, unsigned number, uint64_t diskseq)
{
        for (Vdisk **p = list; *p; p = &(*p)->next)
                if ((*p)->bound && (*p)->number == number && (*p)->diskseq == diskseq) {
                        Vdisk *v = *p;
                        *p = v->next;
                        v->next = NULL;
                        return v;
                }
        return NULL;
}

/* Is info (what the kernel says of the device now) the device d records? For a virtual disk: still bound to
 * its export. boot: state_boot_is_current()'s. Within one boot a diskseq names one binding for good; without
 * one (no diskseq, or records of a loopd that did not note the boot) only the backing file's filesystem can
 * tell, asked in a child (loop_backing_is()). */
static bool record_matches(
        Registry *reg, const ManagedDevice *d, const LoopInfo *info, const Vdisk *v, int boot)
{
        int r;

        if (boot == 0 || info->diskseq != d->diskseq || info->offset != d->offset)
                return false;
        if (v)
                return streq(info->backing_file, v->path);
        if (boot > 0 && d->diskseq != 0)
                return true;
        r = loop_backing_is(d->number, d->diskseq, d->backing_dev, d->backing_inode, reg->io_timeout_usec);
        if (r < 0 && r != -ESTALE && r != -ENXIO && r != -ENODEV) {
                /* Not a no: the same binding by diskseq and offset is kept, as it was before loopd asked. */
                log_warning_errno(
                        r, "Failed to read what loop%u is bound to, keeping its record: %m", d->number);
                return d->diskseq != 0;
        }
        return r > 0;
}

/* Keeps the records whose device the kernel still has as the same incarnation (record_matches()). Anything
 * else was detached or re-used while loopd was not running. */
void registry_load(Registry *reg)
{
        ManagedDevice *list = NULL;
        Vdisk *exports = vdisk_load(reg->event, reg->state_dir);
        int boot, r;

        boot = state_boot_is_current(reg->state_dir);
        if (boot < 0 && boot != -ENOENT)
                log_warning_errno(
                        boot, "Failed to read which boot the records in %s are of: %m", reg->state_dir);

        r = state_load_devices(reg->state_dir, &list);
        if (r < 0) {
                log_warning_errno(
                        r, "Failed to read the state in %s, starting without it: %m", reg->state_dir);
                /* Their devices may well be bound still: the exports are left running, not adopted. */
                while (exports) {
                        Vdisk *v = exports;
                        exports = v->next;
                        vdisk_free(v);
                }
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
                d->vdisk = take_vdisk(&exports, d->number, d->diskseq);
                r = loop_get_info(d->number, &info);
                if (r >= 0 && record_matches(reg, d, info, d->vdisk, boot)) {
                        d->autoclear_armed = info->autoclear;
                        d->lock_fd = loop_lock(d->number, d->diskseq);
                        if (d->lock_fd < 0)
                                log_debug_errno(d->lock_fd, "Failed to lock loop%u: %m", d->number);
                        unsigned number = d->number;
                        uid_t owner = d->owner;
                        r = registry_add_device(reg, d);
                        free(d);
                        if (r < 0)
                                log_warning_errno(r, "Failed to re-adopt loop%u: %m", number);
                        else
                                log_info("Re-adopted loop%u of uid %u", number, (unsigned)owner);
                } else {
                        log_info("Dropped the record of loop%u: %s", d->number,
                                boot == 0 ? "it is of an earlier boot"
                                          : "the device was detached or re-used");
                        /* Its udev mark stays until state_prune_udev_marks(), after the roll back: an attach
                         * on the number since, which a killed loopd left half done, has it too. */
                        (void)state_remove_record(reg->state_dir, d->number);
                        vdisk_stop(d->vdisk);
                        free(d);
                }
        }

        registry_roll_back_pending(reg, boot);
        r = state_note_boot(reg->state_dir);
        if (r < 0)
                log_warning_errno(r, "Failed to note the boot in %s: %m", reg->state_dir);
        /* Exports of no device loopd still has (an attach cut short, a device detached meanwhile). */
        while (exports) {
                Vdisk *v = exports;
                exports = v->next;
                log_info("Tearing down the export of %s: its device is gone", strempty(v->image));
                vdisk_stop(v);
        }
        state_prune_udev_marks(reg->state_dir);
}

int registry_device_mounts(const LoopInfo *info, char ***ret)
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
                char node[LOOP_NODE_MAX];

                loop_node_format(node, info->number, i == 0 ? 0 : parts[i - 1].number);
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

void registry_arm_autoclear(Registry *reg, unsigned number, uint64_t diskseq, bool force)
{
        ManagedDevice *d = registry_find_device(reg, number, diskseq);
        int r;

        if (!force && !(d && d->autoclear))
                return;
        if (d && !d->autoclear) {
                d->autoclear = true;
                (void)state_save_device(reg->state_dir, d);
        }
        /* Only now that a mount holds the device: set at attach, the kernel would have cleared it as soon
         * as loopd closed it. */
        r = loop_set_autoclear(number, diskseq, true, reg->io_timeout_usec);
        if (r >= 0 && d)
                d->autoclear_armed = true;
        if (r < 0)
                log_warning_errno(r,
                        "Failed to set autoclear on loop%u, loopd will detach it after its last "
                        "unmount instead: %m",
                        number);
}

int registry_release_if_autoclear(Registry *reg, unsigned number)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_strv_free_ char **mounts = NULL;
        int r;

        /* Only loopd's own devices: one that another tool set up with autoclear (mount -o loop) is the
         * kernel's to clear, and never loopd's to detach. Most of loopd's are not autoclear: the record says
         * so, and the kernel's flag (another tool's LOOP_CLR_FD sets it) is read alone. */
        ManagedDevice *d = registry_find_number(reg, number);
        if (!d || (!d->autoclear && loop_autoclear_of(number, d->diskseq) <= 0))
                return 0;
        if (loop_get_identity(number, &info) < 0 || info->diskseq != d->diskseq)
                return 0;
        if (registry_device_mounts(info, &mounts) < 0 || (mounts && mounts[0]))
                return 0;

        /* The kernel clears an autoclear device when its last user closes it (loopd's lock is one); do it
         * here, so that its partitions are deleted before it is unbound and no dead node is left behind. */
        r = registry_detach_device(reg, number, info->diskseq);
        if (r < 0 && r != -ENXIO && r != -ESTALE) {
                log_debug_errno(r, "Failed to detach autoclear loop%u after its last unmount: %m", number);
                return r;
        }
        return 1;
}

bool registry_is_formatting(Registry *reg, unsigned number)
{
        for (size_t i = 0; i < reg->n_formatting; i++)
                if (reg->formatting[i] == number)
                        return true;
        return false;
}

int registry_mark_formatting(Registry *reg, unsigned number)
{
        unsigned *grown;

        if (registry_is_formatting(reg, number))
                return -EBUSY;
        grown = realloc(reg->formatting, (reg->n_formatting + 1) * sizeof(unsigned));
        if (!grown)
                return -ENOMEM;
        reg->formatting = grown;
        reg->formatting[reg->n_formatting++] = number;
        return 0;
}

void registry_unmark_formatting(Registry *reg, unsigned number)
{
        for (size_t i = 0; i < reg->n_formatting; i++)
                if (reg->formatting[i] == number) {
                        reg->formatting[i] = reg->formatting[--reg->n_formatting];
                        return;
                }
}
