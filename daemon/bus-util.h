/* bus-util.h: what the D-Bus face's files share: error names, loop names from callers, the polkit check of a
 * call on one device. */
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "bus-context.h"
#include "engine.h"

/* Sets error from a failed operation with the contract's error name for r; what says what failed. */
int bus_reply_errno(sd_bus_error *error, int r, const char *what);
/* Sets error from what the engine said (its kind is the contract's error name); returns r. */
int bus_error_from_engine(sd_bus_error *error, int r, const EngineError *e);

/* "loopN" or "/dev/loopN" into N; anything else is NotManaged, "" is InvalidArgument. */
int bus_parse_loop_name(const char *s, unsigned *ret, sd_bus_error *error);

/* "/dev/loopN" or "/dev/loopNpM" into N and M (0 for the whole device), checked against sysfs: the node
 * must be the kernel's current device of that name. Anything else: NotManaged / NotFound. */
int bus_parse_loop_node(const char *s, unsigned *ret_number, unsigned *ret_partition, dev_t *ret_devnum,
        sd_bus_error *error);

/* Which bound device a caller named ("loopN" or "/dev/loopN") is, as the kernel has it now
 * (loop_get_identity()): NotManaged, InvalidArgument or NotFound else. */
int bus_get_loop(const char *device, unsigned *ret_number, LoopInfo **ret, sd_bus_error *error);
/* /org/loopd1/device/loopN (NULL on ENOMEM). */
char *device_object_path(unsigned number);

/* The polkit check of a call on loopN: the caller's own device (loopd's record of loopN, same incarnation)
 * needs own_action (Mount/Unmount: mount; Format, CreatePartition, DeletePartition: modify), anything else
 * manage-others. polkit gets details and the device's backing_file. Returns 1 to go on, with *ret_uid the
 * caller; 0 when the question waits for polkit or for the bus to say who the caller is (the handler must
 * then return 1 at once: the message comes back to it with the answer); < 0 with error set when denied or
 * loopN is not attached (NotFound). */
int bus_authorize_node(Bus *b, sd_bus_message *message, unsigned number, const char *own_action,
        const char *const *details, uid_t *ret_uid, sd_bus_error *error);
