/* device-dbus.h: the Device objects, and the Manager's signals as the engine reports changes. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "bus-context.h"
#include "changes.h"
#include "probe.h"
#include "watcher.h"

int device_dbus_register(Bus *b);
/* The engine's ChangeHandler (userdata: the Bus): signals, InterfacesAdded/Removed, PropertiesChanged. */
void device_dbus_on_change(const Change *change, void *userdata);

/* Brings the watcher's table up to date for what message (a method call) asks about, before it is
 * dispatched: the device its path names, or every device for GetManagedObjects and introspection. */
void device_dbus_before_dispatch(Bus *b, sd_bus_message *message);

/* Appends parts as the contract's a(suttssssss), mount points filled in from the watcher's mount table and
 * every string made valid UTF-8 (labels are the image author's bytes). */
int device_dbus_append_partitions(sd_bus_message *reply, Watcher *w, const PartitionInfo *parts, size_t n);
