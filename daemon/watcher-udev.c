/* watcher-udev.c: the watcher's event sources: the udev monitor (udev's events when udevd runs, else the
 * kernel's), following udevd coming and going, reading a batch of uevents, and the waits of Attach calls
 * for udev to have processed their devices. */
#include <errno.h>
#include <libudev.h>
#include <linux/major.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "watcher-internal.h"

#define UDEV_CONTROL UDEV_RUN_DIR "/control"

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

static int watcher_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static void watcher_wait_finish(WatcherWait *wait, int result);

void watcher_close_monitor(Watcher *w)
{
        w->io = sd_event_source_disable_unref(w->io);
        w->monitor = udev_monitor_unref(w->monitor);
}

int watcher_open_monitor(Watcher *w)
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
int watcher_watch_udev_dir(Watcher *w)
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

/* The number N of the loop device whose sysfs directory holds partition d's (.../block/loopN/loopNpM). */
static int partition_disk_number(struct udev_device *d, unsigned *ret)
{
        const char *devpath = udev_device_get_devpath(d), *end, *name;
        char disk[LOOP_NODE_MAX];

        end = devpath ? strrchr(devpath, '/') : NULL;
        if (!end || end == devpath)
                return -ENODEV;
        for (name = end; name > devpath && name[-1] != '/'; name--)
                ;
        if (end == name || (size_t)(end - name) >= sizeof(disk))
                return -ENODEV;
        memcpy(disk, name, (size_t)(end - name));
        disk[end - name] = '\0';
        return loop_parse_name(disk, ret);
}

/* Reads what a uevent says about a loop disk or partition: its devnum, its disk's devnum (a partition's
 * parent device) and the disk's diskseq (the event's DISKSEQ, else the parent's sysfs attribute). Partitions
 * are matched to their disk by that devnum and diskseq: the devnum of the table's loopN when the partition's
 * sysfs directory is below loopN's (a loop disk's devnum follows from its number); for a loopN the table
 * does not have (yet, or any more: a detached device's partitions go after it), none, and loopN's number;
 * else the parent's as libudev reads it. -ENODEV for anything but loop devices. */
static int loop_event_read(Watcher *w, struct udev_device *d, const char *action, LoopEvent *ret)
{
        const char *devtype = udev_device_get_devtype(d),
                   *seq = udev_device_get_property_value(d, "DISKSEQ");
        struct udev_device *disk = d;
        Tracked *t, *known = NULL;
        LoopEvent e = {
                .devnum = udev_device_get_devnum(d),
                .seqnum = udev_device_get_seqnum(d),
                .add_or_change = streq(action, "add") || streq(action, "change"),
                /* udev writes "change" into the uevent file of a device someone closed after writing to it
                 * (its inotify watch): that event carries SYNTH_UUID. What is on the device may be new. */
                .written = streq(action, "change") && udev_device_get_property_value(d, "SYNTH_UUID"),
        };

        if (streq_ptr(devtype, "partition")) {
                unsigned number;

                /* With the event's own DISKSEQ (the kernel's partition events carry it) nothing is read: the
                 * disk is the table's loopN, or one it does not have, whose number is all a look at the
                 * kernel needs (its partitions are refreshed with it). Otherwise libudev reads the parent's
                 * uevent file and, for a DISKSEQ, its sysfs attribute: a chase through sysfs, for each
                 * event. */
                if (seq && partition_disk_number(d, &number) >= 0) {
                        known = watcher_find(w, number);
                        if (!known) {
                                e.number = number;
                                e.diskseq = strtoull(seq, NULL, 10);
                                *ret = e;
                                return 0;
                        }
                }
                if (!known) {
                        disk = udev_device_get_parent_with_subsystem_devtype(d, "block", "disk");
                        if (!disk)
                                return -ENODEV;
                        if (!seq)
                                seq = udev_device_get_sysattr_value(disk, "diskseq");
                }
        } else
                e.disk_change = streq(action, "change");
        e.disk_devnum = known ? known->info->devnum : udev_device_get_devnum(disk);
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

        r = loop_restore_partitions(t->info->number, t->info->diskseq, w->image_reader);
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

        /* Each device once, in the order of its first event; probed again when someone wrote to it. */
        for (size_t i = 0; i < n && !overflow; i++) {
                bool seen = false, written = false;
                Tracked *t;

                for (size_t j = 0; j < i && !seen; j++)
                        seen = events[j].number == events[i].number;
                if (seen)
                        continue;
                uint64_t last = 0;
                bool unnumbered = false;
                for (size_t j = i; j < n; j++)
                        if (events[j].number == events[i].number) {
                                written = written || events[j].written;
                                unnumbered = unnumbered || events[j].seqnum == 0;
                                last = MAX(last, events[j].seqnum);
                        }
                /* Read already after these events (Attach's own: the device and its partitions, read after
                 * it bound and partitioned the device): nothing new to see. */
                t = watcher_find(w, events[i].number);
                if (!t || unnumbered || t->seqnum == 0 || last > t->seqnum)
                        watcher_refresh(w, events[i].number, true);
                t = written ? watcher_find(w, events[i].number) : NULL;
                if (t)
                        (void)watcher_reprobe(w, t);
        }
        for (size_t i = 0; i < n; i++)
                if (events[i].disk_change)
                        watcher_restore_partitions(w, &events[i]);
        /* Waiting Attach calls are answered last: after the bus heard of their device and partitions. */
        for (size_t i = 0; i < n; i++)
                watcher_dispatch_waits(w, &events[i]);
        return 0;
}

void watcher_cancel_waits(Watcher *w)
{
        /* Attach calls still waiting for udev are answered (their callbacks roll them back). */
        while (w->waits)
                watcher_wait_finish(w->waits, -ECANCELED);
}
