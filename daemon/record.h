/* record.h: what loopd knows of a device it set up. Its persisted part is written by state.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

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
        /* A virtual disk's export, which the device binds (NULL for a raw image): stopped when the device
         * goes, left running when loopd exits. The record's backing_dev/inode are the image's. */
        struct Vdisk *vdisk;
        struct ManagedDevice *next;
        struct ManagedDevice *prev; /* in the registry's list (registry.c); not in state.c's */
} ManagedDevice;
