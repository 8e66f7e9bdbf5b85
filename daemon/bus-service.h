/* bus-service.h: the D-Bus face's life on the system bus. main.c wires it to the engine. */
#pragma once

#include <stdlib.h>

#include "bus-context.h"
#include "macro.h"

/* Sets itself as m's change handler (before manager_start()). */
int bus_new(Manager *m, Bus **ret);
Bus *bus_free(Bus *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Bus *, bus_free);

/* sd_event_loop()'s result once the bus connection was lost: loopd exits then (nobody could reach it, and
 * it would keep the state dir from the loopd the bus starts once it is back). */
#define BUS_EXIT_DISCONNECTED EXIT_FAILURE

/* Connects to the system bus, exports the objects, sets up exiting when idle and requests the name. */
int bus_start(Bus *b);
/* The loop ended (a SIGTERM, SIGINT): gives the name back at once, so that calls from now on start the next
 * loopd by activation instead of waiting in a queue nobody reads while this one answers what still waits
 * and stops. */
void bus_leave(Bus *b);
/* A SIGTERM: true when it is put off, because loopd is giving its name back to exit on idle (or gave it
 * back, and answers the calls that came before; it exits right after them). Once only: a second SIGTERM is
 * not. */
bool bus_defer_exit(Bus *b);
