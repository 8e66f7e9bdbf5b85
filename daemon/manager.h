/* manager.h: the engine's context: event loop, configuration, the device registry and the watcher. It knows
 * nothing of D-Bus: what changes goes to on_change (the D-Bus face's handler, set before manager_start()).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "changes.h"
#include "macro.h"

typedef struct ImageReader ImageReader;
typedef struct MountServers MountServers;
typedef struct ServerWait ServerWait;
typedef struct Registry Registry;
typedef struct Watcher Watcher;

typedef struct Manager {
        sd_event *event;
        Registry *registry;
        Watcher *watcher;
        ChangeHandler on_change;
        void *on_change_userdata;

        char *state_dir;
        char *media_dir;
        unsigned max_devices_per_user;
        uint64_t partition_timeout_usec;
        uint64_t io_timeout_usec; /* how long reading a caller's image may take before Timeout */
        char *qsd_path; /* qemu-storage-daemon, for virtual disks; NULL: VDISK_QSD_PATH */
        ImageReader *image_reader; /* NULL: each image is read in a worker forked then */
        ServerWait *server_waits; /* manager_release_after_servers() */
} Manager;

int manager_new(Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Loads the persisted records and starts watching devices and mounts. The caller holds the state dir's
 * lock (state_lock_try()). */
int manager_start(Manager *m);
/* Stops the watcher: Attach calls still waiting for udev are answered (their callbacks roll them back).
 * Called while whoever answers them (the bus) is still there. */
void manager_stop(Manager *m);

/* Nothing of loopd's to keep it running: no device it set up still bound, no wait for udev. */
bool manager_is_idle(Manager *m);

/* After an Unmount of loopN (diskseq) whose FUSE servers outlived unmount_filesystem()'s wait and hold the
 * device (its autoclear release was Busy): takes the servers' pidfds (servers is empty after) and, once the
 * last has exited, releases the device (registry_release_if_autoclear()). */
void manager_release_after_servers(Manager *m, unsigned number, uint64_t diskseq, MountServers *servers);
/* Removes a mount point directory if loopd made it (it lies in the media dir). */
void manager_remove_mount_point(Manager *m, const char *path);
