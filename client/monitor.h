/* monitor.h: "loopctl monitor": prints loopd's Manager signals as they arrive. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

/* Subscribes to the six Manager signals and prints one line per event (JSON objects with "event" when
 * json is set), flushing after each, until SIGINT or SIGTERM (returns 0) or the bus goes away (logs,
 * returns < 0). */
int monitor_run(sd_bus *bus, bool json);
