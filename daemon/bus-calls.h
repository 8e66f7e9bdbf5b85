/* bus-calls.h: method calls that are answered later (they wait for polkit, for the image or for udev): at
 * most so many of one uid's at once. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "macro.h"

typedef struct BusCalls BusCalls;

int bus_calls_new(unsigned max_per_uid, BusCalls **ret);
void bus_calls_set_max(BusCalls *c, unsigned max_per_uid);
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
