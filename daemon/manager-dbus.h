/* manager-dbus.h: the D-Bus face's org.loopd1.Manager interface: it parses, authorizes, calls the engine and
 * replies. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "bus-context.h"
#include "macro.h"
#include "manager.h"

/* Exports org.loopd1.Manager (and the ObjectManager) on b's bus. */
int manager_dbus_register(Bus *b);
/* loopd is exiting: answers the calls still waiting for polkit, for their mkfs or reading their images, and
 * lets go of them. */
void bus_cancel_calls(Bus *b);
