/* watcher.h: follows block devices as the kernel and udev report them (libudev monitor). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "manager.h"

typedef struct WatcherWait WatcherWait;

/* result: 0 once udev has processed every device waited for, -ETIMEDOUT when the time ran out. The wait is
 * freed after the callback returns. */
typedef void (*WatcherWaitCallback)(Manager *m, int result, void *userdata);

int watcher_new(Manager *m, Watcher **ret);
Watcher *watcher_free(Watcher *w);

/* Is an Attach waiting for udev? */
bool watcher_busy(Watcher *w);

/* Is udevd running (its control socket exists)? Switches the monitor to the matching event source ("udev"
 * when it runs: its events come after the rules ran; else the kernel's) when that changed. */
bool watcher_udev_running(Watcher *w);

/* Waits for udev to have processed the devices devnums (an add or change event carrying diskseq, or whose
 * disk has that diskseq). */
int watcher_wait_devices(Watcher *w, const dev_t *devnums, size_t n, uint64_t diskseq, uint64_t timeout_usec,
        WatcherWaitCallback callback, void *userdata, WatcherWait **ret);
void watcher_wait_cancel(WatcherWait *wait);
