/* bus-service.h: the D-Bus face's life on the system bus. main.c wires it to the engine. */
#pragma once

#include "bus-context.h"
#include "macro.h"

/* Sets itself as m's change handler (before manager_start()). */
int bus_new(Manager *m, Bus **ret);
Bus *bus_free(Bus *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Bus *, bus_free);

/* Connects to the system bus, exports the objects, sets up exiting when idle and requests the name. */
int bus_start(Bus *b);
/* Whether loopd is giving its name back to exit on idle (or gave it back, and answers what came before). */
bool bus_is_leaving(Bus *b);
