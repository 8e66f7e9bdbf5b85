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

/* What the watcher needs of the engine: its event loop, the registry (owners, whom to release), where state
 * and mount points live, and whom to tell what changed. */
typedef struct WatcherConfig {
        sd_event *event;
        Registry *registry;
        const char *state_dir;
        const char *media_dir;
        ChangeHandler on_change;
        void *on_change_userdata;
} WatcherConfig;

int watcher_new(const WatcherConfig *config, Watcher **ret);
Watcher *watcher_free(Watcher *w);

/* The watcher's view of loopN (NULL when it is not bound), brought up to date with the kernel first, at
 * most once per event loop iteration; changes found on the way are announced on the bus. */
const LoopInfo *watcher_get_device(Watcher *w, unsigned number);
/* The numbers of every bound loop device, after the same update. */
int watcher_list_devices(Watcher *w, unsigned **ret, size_t *ret_n);
/* While the watcher tells the bus about a change, what it probed on loopN when the device or its partitions
 * appeared, minus the partitions gone since (NULL otherwise, or when it has nothing). Announcing a removal
 * or a mount must not open the remaining partitions: another tool deleting them (partx -d, a detach) would
 * get EBUSY. Mount points are not in it (filled in from the mount table by the caller). */
const PartitionInfo *watcher_announced_partitions(Watcher *w, unsigned number, size_t *ret_n);
/* Does loopN go away with its last unmount: the kernel's autoclear flag, or autoclear asked at Attach? */
bool watcher_device_autoclear(Watcher *w, unsigned number);

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
