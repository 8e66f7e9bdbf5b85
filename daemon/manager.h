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
        struct ManagedDevice *next;
} ManagedDevice;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        Watcher *watcher;
        Auth *auth;

        char *state_dir;
        char *media_dir;
        unsigned max_devices_per_user;
        uint64_t partition_timeout_usec;
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
int manager_add_device(Manager *m, const ManagedDevice *d);
void manager_forget_device(Manager *m, unsigned number);
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
char *device_object_path(unsigned number);
/* Appends loopN's partitions as the contract's a(suttssssss), mount points filled in. */
int bus_append_partitions(sd_bus_message *reply, unsigned number);
