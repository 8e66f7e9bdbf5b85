/* watcher.h: follows block devices as the kernel and udev report them (libudev monitor). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "changes.h"
#include "loop.h"
#include "probe.h"
#include "registry.h"

typedef struct WatcherWait WatcherWait;

/* result: 0 once udev has processed every device waited for (or udevd went away: then there is nothing to
 * wait for), -ETIMEDOUT when the time ran out, -ECANCELED when the watcher is freed first (loopd exits). The
 * wait is freed before the callback runs. */
typedef void (*WatcherWaitCallback)(int result, void *userdata);

typedef struct Watcher Watcher;
typedef struct ImageReader ImageReader;

/* What the watcher needs of the engine: its event loop, the registry (owners, whom to release), where state
 * and mount points live, whom to tell what changed, and where devices' contents are probed. */
typedef struct WatcherConfig {
        sd_event *event;
        Registry *registry;
        ImageReader *image_reader; /* NULL: each probe in a child forked for it */
        const char *state_dir;
        const char *media_dir;
        ChangeHandler on_change;
        void *on_change_userdata;
        /* Before the watcher releases an autoclear device of loopd's whose last mount went: true when the
         * engine releases it itself, later (that mount's FUSE driver still holds it, writing back). NULL:
         * the watcher always releases. */
        bool (*release_held)(const LoopInfo *info, void *userdata);
        void *release_held_userdata;
} WatcherConfig;

int watcher_new(const WatcherConfig *config, Watcher **ret);
Watcher *watcher_free(Watcher *w);

/* Reading the table: what the watcher last saw, never a look at the kernel. */

/* loopN as the watcher last saw it (NULL when it is not bound). */
const LoopInfo *watcher_device(Watcher *w, unsigned number);
/* The numbers of every bound loop device in the table. */
int watcher_list_devices(Watcher *w, unsigned **ret, size_t *ret_n);
/* What is on loopN, as probed when the device or its partitions appeared, someone wrote to it (udev's
 * synthesized change event) or a client asked (watcher_probe_device()); minus the partitions gone since.
 * NULL when the device is not in the table or could not be probed. Mount points are not in it: see
 * watcher_mount_point(). */
const PartitionInfo *watcher_device_partitions(Watcher *w, unsigned number, size_t *ret_n);
/* Where node (e.g. /dev/loop0p1) is mounted, as the watcher last read the mount table (the first mount of
 * it); NULL when it is not mounted. */
const char *watcher_mount_point(Watcher *w, const char *node);

/* Bringing the table up to date with the kernel; what changed is reported to the ChangeHandler before
 * these return. A look already made in this event loop iteration is not made again. */

/* loopN: bound, unbound, its properties and partitions; it is probed if it never was. */
void watcher_update_device(Watcher *w, unsigned number);
/* The same with what the caller read of loopN a moment ago (loop_get_info()'s or loop_attach()'s info, not
 * taken): the device is not read again. NULL: read it. */
void watcher_update_device_info(Watcher *w, unsigned number, const LoopInfo *known);
/* Every loop device. closely: each one read as an event would, and those never probed are probed (for
 * GetManagedObjects); else compared cheaply with the table (sysfs attributes, no open) and only those that
 * differ are read (for ListDevices). */
void watcher_update_devices(Watcher *w, bool closely);
/* The mount table: Mounted, Unmounted, autoclear devices released after their last unmount. */
void watcher_update_mounts(Watcher *w);
/* Could loopN (or a partition of it) be mounted, as far as the watcher can tell without reading the mount
 * table? False only when the watcher has read every change of the mount table and knows no mount of it. */
bool watcher_may_have_mounts(Watcher *w, unsigned number);
/* Is a device or partition of loopN mounted, as far as the watcher's last look at the mount table knows? */
bool watcher_knows_mount_of(Watcher *w, unsigned number);
/* Reads loopN from the kernel as watcher_update_device() does, then probes what is on it now (it opens the
 * device and its partitions), keeps it, and reports Partitions when it changed. -ENXIO when loopN is not
 * bound. */
int watcher_probe_device(Watcher *w, unsigned number);

/* Is an Attach waiting for udev? */
bool watcher_busy(Watcher *w);

/* Is udevd running (its control socket exists)? Switches the monitor to the matching event source
 * ("udev" when it runs: its events come after the rules ran; else the kernel's) when that changed; the
 * watcher also follows udevd coming and going by itself (inotify on /run/udev). */
bool watcher_udev_running(Watcher *w);

/* Waits for udev to have processed the devices devnums (an add or change event carrying diskseq, or whose
 * disk has that diskseq). */
int watcher_wait_devices(Watcher *w, const dev_t *devnums, size_t n, uint64_t diskseq, uint64_t timeout_usec,
        WatcherWaitCallback callback, void *userdata, WatcherWait **ret);
void watcher_wait_cancel(WatcherWait *wait);
