/* watcher-internal.h: what watcher.c (the device table, udev) and watcher-mounts.c (the mount table) share.
 * Nothing else includes it. */
#pragma once

#include <libmount.h>
#include <libudev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mount.h"
#include "partition.h"
#include "watcher.h"

#define UDEV_RUN_DIR "/run/udev"

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

/* What the watcher last saw of one bound loop device. Who owns it and whether loopd set it up are not
 * kept here: they are the registry's (registry_find_device()), read from there whenever they are needed. */
typedef struct Tracked {
        LoopInfo *info;
        KernelPartition *parts;
        size_t n_parts;
        /* What is on the device, probed when it or a partition appeared, when someone wrote to it, or when
         * a client asked: removals and mounts are announced from this, without opening the remaining
         * partitions (see watcher_device_partitions()). */
        PartitionInfo *probed;
        size_t n_probed;
        bool probed_valid; /* the last probe succeeded */
        bool probe_tried; /* a probe was made at all (devices found at start are probed when first asked) */
        /* Every uevent up to this one is reflected in info and parts (0: not known): a later event about
         * only what loopd did itself (Attach's) needs no second look. */
        uint64_t seqnum;
        struct Tracked *next;
} Tracked;

/* One uevent about a loop device or partition, kept until the table is up to date. */
typedef struct LoopEvent {
        dev_t devnum;
        dev_t disk_devnum;
        uint64_t diskseq;
        unsigned number;
        bool add_or_change;
        bool disk_change;
        bool written; /* udev's change event after someone closed the device written to (SYNTH_UUID) */
        uint64_t seqnum; /* the kernel's SEQNUM (udevd passes it on) */
} LoopEvent;

struct Watcher {
        sd_event *event;
        Registry *registry;
        ImageReader *image_reader;
        char *state_dir;
        char *media_dir;
        ChangeHandler on_change;
        void *on_change_userdata;
        bool (*release_held)(const LoopInfo *info, void *userdata);
        void *release_held_userdata;
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *io;
        bool source_is_udev;
        sd_event_source *udev_dir_watch; /* inotify on /run/udev, or on /run until that exists */
        bool udev_dir_watched;
        WatcherWait *waits;

        Tracked *devices;
        /* The same entries by loop number (one at most a number): watcher_find() stays O(1) with a thousand
         * devices, which ListDevices looks up one by one. */
        Tracked **by_number;
        size_t n_by_number;
        /* loopN's minor is N << part_shift (loop_part_shift()); -errno when that is not known. */
        int part_shift;
        size_t n_devices;
        /* The most devices tracked at once since the heap was last trimmed (watcher_device_gone()). */
        size_t peak_devices;
        bool syncing;
        /* The kernel's uevents and the closes of /dev nodes since ListDevices last looked
         * (watcher-catchup.c), and whether some of them were lost since. */
        int uevent_fd;
        int close_fd;
        /* The names made in /dev, for partition.c (partition_nodes_follow()): a queue of its own, which the
         * closes of every /dev node cannot overflow. */
        int nodes_fd;
        bool catchup_lost; /* comparing the table with the kernel: no nested look */

        struct libmnt_monitor *mount_monitor;
        /* A read of the mount table failed after the monitor was drained: w->mounts may miss a mount. */
        bool mounts_unknown;
        sd_event_source *mount_io;
        LoopMount *mounts;
        size_t n_mounts;
        /* Loop numbers whose mounts changed since the last mount table event was handled. */
        unsigned *touched;
        size_t n_touched;
};

/* watcher.c */
/* Tells the listener what changed. */
void watcher_report(Watcher *w, ChangeKind kind, unsigned number, unsigned partition, const char *node,
        const char *mount_point, const char *property);
Tracked *watcher_find(Watcher *w, unsigned number);
Tracked *watcher_find_devnum(Watcher *w, dev_t devnum);
/* Brings loopN's entry up to date with the kernel and, with announce, reports what changed. */
void watcher_refresh(Watcher *w, unsigned number, bool announce);
/* The same for every device: at start (without announce), after events were lost or the event source
 * changed. */
int watcher_sync(Watcher *w, bool announce);
/* Probes loopN again and reports Partitions when what is on it changed. */
int watcher_reprobe(Watcher *w, Tracked *t);

/* watcher-udev.c */
int watcher_open_monitor(Watcher *w);
void watcher_close_monitor(Watcher *w);
int watcher_watch_udev_dir(Watcher *w);
void watcher_cancel_waits(Watcher *w);

/* watcher-mounts.c */
int watcher_open_mount_monitor(Watcher *w);
void watcher_close_mounts(Watcher *w);
/* Compares the mount table (table, or the one now when NULL) with the last look and, with announce, says
 * what changed. only_removals: new mounts are left for the next look. */
void watcher_rescan_mounts(Watcher *w, MountTable *table, bool announce, bool only_removals);
/* At start: the mount points loopd made before that are no longer mounted go. */
void watcher_adopt_mounts(Watcher *w);

/* watcher-catchup.c */
int watcher_open_catchup(Watcher *w);
void watcher_close_catchup(Watcher *w);
/* The loop numbers named by the uevents and /dev closes since the last call; -ENOBUFS when some were lost
 * (or this is the first call), -EBADF without the queues: then every device must be read. */
int watcher_catch_up(Watcher *w, unsigned **ret, size_t *ret_n);
