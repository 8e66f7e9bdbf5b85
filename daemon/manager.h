/* manager.h: the daemon's one context: event loop, bus, configuration and the devices loopd set up. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Watcher Watcher;
typedef struct Auth Auth;
typedef struct BusCalls BusCalls;
typedef struct ImageCall ImageCall;

/* A loop device loopd set up, and who owns it. Identified by number and diskseq: numbers are recycled,
 * a diskseq never is. */
typedef struct ManagedDevice {
        unsigned number;
        uint64_t diskseq;
        uid_t owner;
        dev_t backing_dev;
        uint64_t backing_inode;
        uint64_t offset;
        bool autoclear; /* asked at attach: set in the kernel with the first mount, detach after the last */
        /* Not persisted; -EBADF when not held. The record owns them, and they go with it. */
        int lock_fd; /* the device, under a shared flock while loopd keeps it (loop_attach()) */
        int image_fd; /* the image Attach bound, for the watcher's first probe of the device */
        uint64_t image_offset;
        bool autoclear_armed; /* loopd set the kernel's autoclear flag (manager_arm_autoclear()) */
        sd_event_source *close_watch; /* inotify on /dev/loopN: someone else's LOOP_CLR_FD */
        struct ManagedDevice *next;
} ManagedDevice;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        Watcher *watcher;
        Auth *auth;
        BusCalls *calls; /* method calls waiting for polkit, an image or udev, bounded per uid */
        ImageCall *image_calls; /* Attach and MountImage calls whose image is being read */

        char *state_dir;
        char *media_dir;
        unsigned max_devices_per_user;
        uint64_t partition_timeout_usec;
        unsigned max_pending_per_user;
        uint64_t io_timeout_usec; /* how long reading a caller's image may take before Timeout */
        uint64_t exit_on_idle_usec; /* 0: never */
        uint64_t last_activity_usec;
        sd_event_source *idle_timer;

        ManagedDevice *devices;
} Manager;

int manager_new(Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Opens the bus, exports the objects, loads the persisted state and requests the bus name. */
int manager_start(Manager *m);

/* The record of loopN if loopd set it up and the kernel still has that incarnation (same diskseq). */
typedef struct LoopInfo LoopInfo;

ManagedDevice *manager_find_device(Manager *m, unsigned number, uint64_t diskseq);
/* Does the device go away with its last unmount: the kernel's autoclear flag, or autoclear asked at Attach
 * (loopd arms it with the first mount)? What ListDevices and the Autoclear property say. */
bool manager_device_autoclear(Manager *m, const LoopInfo *info);
/* Records d (a copy; it takes d's lock_fd and image_fd, and closes them on failure). */
int manager_add_device(Manager *m, const ManagedDevice *d);
/* Drops the record of loopN and what it holds. */
void manager_forget_device(Manager *m, unsigned number);
/* loop_detach() of a device loopd may hold locked: lets go of the lock first (it would make the detach a
 * mere autoclear), and takes it again when the device stays. Forgets the record once the device is gone. */
int manager_detach_device(Manager *m, unsigned number, uint64_t diskseq);
/* Hands over the image fd noted for loopN with diskseq (the watcher's first probe reads it instead of the
 * device): -ENOENT when there is none. */
int manager_take_image(Manager *m, unsigned number, uint64_t diskseq, int *ret_fd, uint64_t *ret_offset);
unsigned manager_count_devices_of(Manager *m, uid_t uid);

/* Every mount point of the device and of its partitions (NULL-terminated, possibly empty). */
int manager_device_mounts(Manager *m, const LoopInfo *info, char ***ret);
/* Removes a mount point directory if loopd made it (it lies in the media dir). */
void manager_remove_mount_point(Manager *m, const char *path);
/* After a mount: a device attached with autoclear (or force) gets the kernel's autoclear flag, so that it
 * goes away with its last mount even if loopd is not running. */
void manager_arm_autoclear(Manager *m, unsigned number, uint64_t diskseq, bool force);
/* After an unmount: an autoclear device with nothing of it mounted any more is detached. */
void manager_release_if_autoclear(Manager *m, unsigned number);

/* D-Bus face (manager-dbus.c, device-dbus.c). */
int manager_dbus_register(Manager *m);
int device_dbus_register(Manager *m);
/* Answers the calls still reading their images (loopd is exiting) and lets go of them. */
void manager_dbus_cancel_calls(Manager *m);
char *device_object_path(unsigned number);
/* Appends loopN's partitions as the contract's a(suttssssss), mount points filled in. */
int bus_append_partitions(sd_bus_message *reply, unsigned number);
