/* bus-calls.h: method calls that are answered later (they wait for polkit, for the image or for udev): at
 * most so many of one uid's at once, and what tells them that their caller went away. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "macro.h"

typedef struct BusCalls BusCalls;

int bus_calls_new(unsigned max_per_uid, BusCalls **ret);
BusCalls *bus_calls_free(BusCalls *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(BusCalls *, bus_calls_free);

/* message (a call of uid's) waits for something, counted until the matching bus_calls_release(). A message
 * that already waits (dispatched again after polkit answered) counts once, whatever it waits for next;
 * a new one of a uid that already has the most waiting is refused with LimitExceeded in error (root
 * included: the bound protects loopd, not a policy). */
int bus_calls_hold(BusCalls *c, sd_bus_message *message, uid_t uid, sd_bus_error *error);
void bus_calls_release(BusCalls *c, sd_bus_message *message);
/* How many calls wait (all uids). */
unsigned bus_calls_count(BusCalls *c);

/* Calls handler(userdata) once the sender of message has left the bus (sd_bus_track): a call whose answer
 * nobody waits for any more lets go of what it holds. */
int bus_track_sender(
        sd_bus_message *message, sd_bus_track_handler_t handler, void *userdata, sd_bus_track **ret);
