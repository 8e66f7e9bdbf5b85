/* watcher-mounts.c: the watcher's view of the mount table: which loop devices and partitions are mounted
 * where, Mounted and Unmounted, mount points unmounted behind loopd's back, autoclear devices released
 * after their last unmount. */
#include <errno.h>
#include <libmount.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "state.h"
#include "strv.h"
#include "watcher-internal.h"

static bool mount_entries_have(const LoopMount *e, size_t n, const char *node, const char *target)
{
        for (size_t i = 0; i < n; i++)
                if (streq(e[i].node, node) && streq(e[i].target, target))
                        return true;
        return false;
}

static void touched_add(Watcher *w, unsigned number)
{
        unsigned *grown;

        for (size_t i = 0; i < w->n_touched; i++)
                if (w->touched[i] == number)
                        return;
        grown = realloc(w->touched, (w->n_touched + 1) * sizeof(unsigned));
        if (!grown)
                return;
        w->touched = grown;
        w->touched[w->n_touched++] = number;
}

/* Mount points in loopd's media dir are loopd's (it makes them, root-owned, and nobody else may write
 * there). Their list is kept in the state dir, so that a loopd that starts again can remove those that were
 * unmounted while it was not running. */
static bool is_own_mount_point(Watcher *w, const char *target)
{
        const char *media = w->media_dir;
        size_t len = strlen(media);

        return strncmp(target, media, len) == 0 && target[len] == '/';
}

static void watcher_save_mounts(Watcher *w)
{
        _cleanup_strv_free_ char **targets = calloc(1, sizeof(char *));
        int r = targets ? 0 : -ENOMEM;

        for (size_t i = 0; r >= 0 && i < w->n_mounts; i++)
                if (is_own_mount_point(w, w->mounts[i].target))
                        r = strv_consume(&targets, strdup(w->mounts[i].target));
        if (r >= 0)
                r = state_save_mounts(w->state_dir, targets);
        if (r < 0)
                log_warning_errno(r, "Failed to record the mount points in %s: %m", w->state_dir);
}

/* At start: the mount points loopd made before that are no longer mounted go. */
void watcher_adopt_mounts(Watcher *w)
{
        _cleanup_strv_free_ char **recorded = NULL;
        int r;

        r = state_load_mounts(w->state_dir, &recorded);
        if (r < 0)
                log_warning_errno(r, "Failed to read the recorded mount points in %s: %m", w->state_dir);
        for (char **t = recorded; t && *t; t++) {
                bool mounted = false;

                for (size_t i = 0; i < w->n_mounts && !mounted; i++)
                        mounted = streq(w->mounts[i].target, *t);
                if (mounted || !is_own_mount_point(w, *t))
                        continue;
                log_info("%s was unmounted while loopd was not running, removing the mount point", *t);
                (void)mount_point_remove(w->media_dir, *t);
        }
        watcher_save_mounts(w);
}

/* The loop mounts of table, or of the mount table now when table is NULL. */
static int read_loop_mounts(MountTable *table, LoopMount **ret, size_t *ret_n)
{
        _cleanup_(mount_table_unrefp) MountTable *loaded = NULL;
        int r;

        if (!table) {
                r = mount_table_load(&loaded);
                if (r < 0)
                        return r;
                table = loaded;
        }
        return mount_table_loop_mounts(table, ret, ret_n);
}

/* Compares the mount table with the last look and, with announce, says what changed; the loop numbers whose
 * mounts changed are kept in w->touched for watcher_on_mount_change(). only_removals: new mounts are left
 * for the next look. */
void watcher_rescan_mounts(Watcher *w, MountTable *table, bool announce, bool only_removals)
{
        LoopMount *mounts = NULL, *old;
        size_t n = 0, n_old;
        int r;

        /* Only a bound loop device can be mounted (a mounted one cannot be unbound): with none in the table
         * and none known mounted there is nothing to compare. A device mounted before its uevent was read
         * is in the table by now: watcher_refresh_mounted_devices() looked first. */
        if (!w->devices && w->n_mounts == 0)
                return;

        r = read_loop_mounts(table, &mounts, &n);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the mount table: %m");
                w->mounts_unknown = true;
                return;
        }
        if (only_removals) {
                size_t kept = 0;

                for (size_t i = 0; i < n; i++)
                        if (mount_entries_have(w->mounts, w->n_mounts, mounts[i].node, mounts[i].target))
                                mounts[kept++] = mounts[i];
                        else {
                                free(mounts[i].node);
                                free(mounts[i].target);
                        }
                n = kept;
        } else
                w->mounts_unknown = false;
        /* The new table first: what is done below may look at the mount table again. */
        old = w->mounts;
        n_old = w->n_mounts;
        w->mounts = mounts;
        w->n_mounts = n;

        if (announce) {
                bool own_changed = false;

                for (size_t i = 0; i < n_old; i++) {
                        LoopMount *e = &old[i];

                        if (mount_entries_have(mounts, n, e->node, e->target))
                                continue;
                        own_changed = own_changed || is_own_mount_point(w, e->target);
                        /* Unmounted behind loopd's back (umount by root): the empty mount point it made goes
                         * too, before anyone hears of it. Only directories in loopd's media dir. */
                        (void)mount_point_remove(w->media_dir, e->target);
                        watcher_report(w, CHANGE_UNMOUNTED, 0, 0, e->node, e->target, NULL);
                        touched_add(w, e->number);
                }
                for (size_t i = 0; i < n; i++) {
                        if (mount_entries_have(old, n_old, mounts[i].node, mounts[i].target))
                                continue;
                        own_changed = own_changed || is_own_mount_point(w, mounts[i].target);
                        watcher_report(w, CHANGE_MOUNTED, 0, 0, mounts[i].node, mounts[i].target, NULL);
                        touched_add(w, mounts[i].number);
                }
                if (own_changed)
                        watcher_save_mounts(w);
        }
        loop_mounts_free(old, n_old);
}

static bool numbers_have(const unsigned *numbers, size_t n, unsigned number)
{
        for (size_t i = 0; i < n; i++)
                if (numbers[i] == number)
                        return true;
        return false;
}

/* Whether a change of loopN's mounts may have changed loopN itself: only an autoclear device's (the first
 * mount by loopd sets the kernel's flag; the last unmount detaches a device that has it), or one the table
 * does not have yet. Any other device is as it was (umount -d detaches one, and its uevents say so): what
 * changed is the mount points in its Partitions, which the table of mounts holds. */
static bool mounts_change_device(Watcher *w, unsigned number)
{
        Tracked *t = watcher_find(w, number);

        return !t || registry_device_autoclear(w->registry, t->info);
}

/* Looks at the devices whose mounts differ between the last look and the mount table now, once each (those
 * the change may have changed: mounts_change_device()); the numbers looked at go to *ret (NULL when out of
 * memory: then nobody may count on them being looked at). */
static void watcher_refresh_mounted_devices(Watcher *w, MountTable *table, unsigned **ret, size_t *ret_n)
{
        LoopMount *mounts = NULL;
        unsigned *refreshed = NULL;
        size_t n = 0, n_refreshed = 0;
        bool oom = false;

        *ret = NULL;
        *ret_n = 0;
        if (mount_table_loop_mounts(table, &mounts, &n) < 0)
                return;
        for (size_t i = 0; i < n + w->n_mounts; i++) {
                const LoopMount *e = i < n ? &mounts[i] : &w->mounts[i - n];
                bool same = i < n ? mount_entries_have(w->mounts, w->n_mounts, e->node, e->target)
                                  : mount_entries_have(mounts, n, e->node, e->target);
                unsigned number = e->number, *grown;

                if (same || numbers_have(refreshed, n_refreshed, number) || !mounts_change_device(w, number))
                        continue;
                grown = oom ? NULL : reallocarray(refreshed, n_refreshed + 1, sizeof(unsigned));
                if (grown) {
                        refreshed = grown;
                        refreshed[n_refreshed++] = number;
                } else
                        oom = true;
                watcher_refresh(w, number, true);
        }
        loop_mounts_free(mounts, n);
        if (oom) {
                free(refreshed);
                return;
        }
        *ret = refreshed;
        *ret_n = n_refreshed;
}

/* Forgets the mount table changes the monitor has seen so far: whoever reads the table after this sees
 * them, and the event loop need not look again for them. */
static void watcher_drain_mount_monitor(Watcher *w)
{
        if (!w->mount_monitor)
                return;
        while (mnt_monitor_next_change(w->mount_monitor, NULL, NULL) == 0)
                ;
}

bool watcher_knows_mount_of(Watcher *w, unsigned number)
{
        for (size_t i = 0; i < w->n_mounts; i++)
                if (w->mounts[i].number == number)
                        return true;
        return false;
}

bool watcher_may_have_mounts(Watcher *w, unsigned number)
{
        struct pollfd p = { .fd = w->mount_monitor ? mnt_monitor_get_fd(w->mount_monitor) : -EBADF,
                .events = POLLIN };

        /* The monitor's fd is readable while a change of the table waits to be read: then the last look
         * may be out of date, as it is when it failed. */
        if (w->mounts_unknown || p.fd < 0 || poll(&p, 1, 0) != 0)
                return true;
        return watcher_knows_mount_of(w, number);
}

void watcher_update_mounts(Watcher *w)
{
        _cleanup_(mount_table_unrefp) MountTable *table = NULL;
        _cleanup_free_ unsigned *refreshed = NULL;
        unsigned *touched;
        size_t n, n_refreshed;
        int r;

        /* Drained before the table is read: a change it holds is seen here, once (the engine calls this
         * right after its own mount or unmount, which the monitor reports too). */
        watcher_drain_mount_monitor(w);
        r = mount_table_load(&table);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the mount table: %m");
                w->mounts_unknown = true;
                return;
        }
        /* The devices first: a device that was attached and mounted before loopd looked (MountImage) is
         * announced before its mount, and one whose last mount went with it (umount -d) has its Unmounted
         * announced before it goes. */
        watcher_refresh_mounted_devices(w, table, &refreshed, &n_refreshed);
        watcher_rescan_mounts(w, table, true, false);
        touched = TAKE_PTR(w->touched);
        n = w->n_touched;
        w->n_touched = 0;

        /* An autoclear device with nothing left mounted goes (the kernel does that itself once its flag is
         * set, but loopd also deletes the partitions it added, so that no dead node stays behind). Such a
         * device is read again below. */
        for (size_t i = 0; i < n; i++) {
                Tracked *t = watcher_find(w, touched[i]);

                if (t && registry_device_autoclear(w->registry, t->info)) {
                        if (!w->release_held || !w->release_held(t->info, w->release_held_userdata))
                                (void)registry_release_if_autoclear(w->registry, touched[i]);
                        for (size_t j = 0; j < n_refreshed; j++)
                                if (refreshed[j] == touched[i]) {
                                        refreshed[j] = refreshed[--n_refreshed];
                                        break;
                                }
                }
        }

        /* The devices as they are now (a first mount sets the kernel's autoclear flag; a last unmount may
         * have detached): those read above, after the mount table changed, are not read again. Then each
         * one still there shows its mount points in Partitions. */
        for (size_t i = 0; i < n; i++)
                if (!numbers_have(refreshed, n_refreshed, touched[i]) && mounts_change_device(w, touched[i]))
                        watcher_refresh(w, touched[i], true);
        for (size_t i = 0; i < n; i++)
                if (watcher_find(w, touched[i]))
                        watcher_report(w, CHANGE_PROPERTY, touched[i], 0, NULL, NULL, "Partitions");
        free(touched);
}

static int watcher_on_mount_change(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        /* watcher_update_mounts() drains the monitor, then looks once. */
        watcher_update_mounts(userdata);
        return 0;
}

int watcher_open_mount_monitor(Watcher *w)
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
        return sd_event_add_io(w->event, &w->mount_io, fd, EPOLLIN, watcher_on_mount_change, w);
}

void watcher_close_mounts(Watcher *w)
{
        w->mount_io = sd_event_source_disable_unref(w->mount_io);
        mnt_unref_monitor(w->mount_monitor);
        w->mount_monitor = NULL;
        loop_mounts_free(w->mounts, w->n_mounts);
        w->mounts = NULL;
        w->n_mounts = 0;
        w->touched = mfree(w->touched);
        w->n_touched = 0;
}
