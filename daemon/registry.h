/* registry.h: the devices loopd set up: who owns each, what loopd holds of it, its persistence in the state
 * dir (state.c), and letting it go. Engine: never talks D-Bus. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "loop.h"
#include "macro.h"
#include "record.h"

typedef struct Registry {
        sd_event *event;
        char *state_dir;
        /* How long a question to a backing file's filesystem may take (loop_backing_is(), autoclear). */
        uint64_t io_timeout_usec;
        ManagedDevice *devices;
        /* The same records by loop number (one at most a number): lookups stay O(1) with a thousand devices.
         */
        ManagedDevice **by_number;
        size_t n_by_number;
        /* Devices a Format runs on (engine-format.c): not persisted, a mkfs dies with loopd. */
        unsigned *formatting;
        size_t n_formatting;
} Registry;

int registry_new(sd_event *event, const char *state_dir, uint64_t io_timeout_usec, Registry **ret);
Registry *registry_free(Registry *reg);
DEFINE_TRIVIAL_CLEANUP_FUNC(Registry *, registry_free);

/* Reads the records a previous loopd left and keeps those whose device is still the same incarnation; rolls
 * back the attaches it left half done. */
void registry_load(Registry *reg);

/* The record of loopN if loopd set it up and the kernel still has that incarnation (same diskseq). */
ManagedDevice *registry_find_device(Registry *reg, unsigned number, uint64_t diskseq);
/* The record of loopN whatever its incarnation, or NULL. */
ManagedDevice *registry_find_number(Registry *reg, unsigned number);
/* Does the device go away with its last unmount: the kernel's autoclear flag, or autoclear asked at Attach
 * (loopd arms it with the first mount)? What ListDevices and the Autoclear property say. */
bool registry_device_autoclear(Registry *reg, const LoopInfo *info);
/* Records d (a copy; it takes d's lock_fd and image_fd, and closes them on failure). */
int registry_add_device(Registry *reg, const ManagedDevice *d);
/* Drops the record of loopN and what it holds. */
void registry_forget_device(Registry *reg, unsigned number);
/* loop_detach() of a device loopd may hold locked: lets go of the lock first (it would make the detach a
 * mere autoclear), and takes it again when the device stays. Forgets the record once the device is gone. */
int registry_detach_device(Registry *reg, unsigned number, uint64_t diskseq);
/* Hands over the image fd noted for loopN with diskseq (the watcher's first probe reads it instead of the
 * device): -ENOENT when there is none. */
int registry_take_image(Registry *reg, unsigned number, uint64_t diskseq, int *ret_fd, uint64_t *ret_offset);
/* What the device serves, as its user named it: the image behind a virtual disk's export (and its format,
 * "qcow2" ...), else the kernel's backing file ("raw"). */
const char *registry_device_image(Registry *reg, const LoopInfo *info, const char **ret_format);
/* How many devices uid has attached that the kernel still has. */
unsigned registry_count_devices_of(Registry *reg, uid_t uid);

/* Every mount point of the device and of its partitions (NULL-terminated, possibly empty). */
int registry_device_mounts(const LoopInfo *info, char ***ret);
/* After a mount: a device attached with autoclear (or force) gets the kernel's autoclear flag, so that it
 * goes away with its last mount even if loopd is not running. */
void registry_arm_autoclear(Registry *reg, unsigned number, uint64_t diskseq, bool force);
/* After an unmount: an autoclear device with nothing of it mounted any more is detached. 1: it was, 0:
 * nothing to do, else loop_detach()'s -errno (-EBUSY: someone else still holds it). */
int registry_release_if_autoclear(Registry *reg, unsigned number);

/* A Format runs on loopN (the whole device or a partition of it): Mount, Detach and another Format of the
 * device are Busy until it is unmarked. -EBUSY when it is marked already. */
int registry_mark_formatting(Registry *reg, unsigned number);
void registry_unmark_formatting(Registry *reg, unsigned number);
bool registry_is_formatting(Registry *reg, unsigned number);
