/* device-dbus.h: the Device objects, and the Manager's signals as the engine reports changes. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "bus-context.h"
#include "changes.h"

int device_dbus_register(Bus *b);
/* The engine's ChangeHandler (userdata: the Bus): signals, InterfacesAdded/Removed, PropertiesChanged. */
void device_dbus_on_change(const Change *change, void *userdata);

/* Appends loopN's partitions as the contract's a(suttssssss), mount points filled in and every string made
 * valid UTF-8 (labels are the image author's bytes). strict: a device that cannot be probed is an error;
 * else it is reported with no partitions (a property getter must not fail GetManagedObjects). */
int device_dbus_append_partitions(sd_bus_message *reply, unsigned number, bool strict);
