/* watcher.c: follows block devices as the kernel and udev report them (libudev monitor). */
#include "watcher.h"

#include <errno.h>
#include <inttypes.h>
#include <libudev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"

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

struct Watcher {
        Manager *manager;
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *io;
        bool source_is_udev;
        WatcherWait *waits;
};

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static bool udevd_running(void)
{
        return access("/run/udev/control", F_OK) >= 0;
}

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
        r = sd_event_add_io(w->manager->event, &w->io, udev_monitor_get_fd(w->monitor), EPOLLIN, watcher_on_event, w);
        if (r < 0)
                return r;
        w->source_is_udev = use_udev;
        log_debug("Watching block devices through the %s event source", use_udev ? "udev" : "kernel");
        return 0;
}

int watcher_new(Manager *m, Watcher **ret)
{
        Watcher *w = calloc(1, sizeof(Watcher));
        int r;

        if (!w)
                return -ENOMEM;
        w->manager = m;
        w->udev = udev_new();
        if (!w->udev) {
                free(w);
                return -ENOMEM;
        }
        r = watcher_open_monitor(w);
        if (r < 0) {
                watcher_free(w);
                return r;
        }
        *ret = w;
        return 0;
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

Watcher *watcher_free(Watcher *w)
{
        if (!w)
                return NULL;
        while (w->waits)
                watcher_wait_free(w->waits);
        watcher_close_monitor(w);
        udev_unref(w->udev);
        free(w);
        return NULL;
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

static void watcher_dispatch_waits(Watcher *w, struct udev_device *d)
{
        const char *action = udev_device_get_action(d);
        dev_t devnum = udev_device_get_devnum(d);
        uint64_t diskseq;

        if (!w->waits || !action || (!streq(action, "add") && !streq(action, "change")))
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

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Watcher *w = userdata;

        for (;;) {
                struct udev_device *d = udev_monitor_receive_device(w->monitor);
                if (!d)
                        break;
                watcher_dispatch_waits(w, d);
                udev_device_unref(d);
        }
        return 0;
}
