/* device-dbus.h: the Device objects' and the Manager's signals, as the watcher sees things change. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "manager.h"

/* InterfacesAdded + DeviceAttached, or InterfacesRemoved + DeviceDetached; both while the object still
 * resolves (the watcher still has the device in its table). */
void device_dbus_emit_added(Manager *m, unsigned number);
void device_dbus_emit_removed(Manager *m, unsigned number);
/* PartitionAdded / PartitionRemoved (device, partition node). */
void device_dbus_emit_partition(Manager *m, unsigned number, unsigned partition, bool added);
/* Mounted / Unmounted (node, mount point). */
void device_dbus_emit_mount(Manager *m, const char *node, const char *mount_point, bool mounted);
/* PropertiesChanged for one property of loopN's Device object. */
void device_dbus_emit_changed(Manager *m, unsigned number, const char *property);

/* Appends loopN's partitions as the contract's a(suttssssss), mount points filled in and every string made
 * valid UTF-8 (labels are the image author's bytes). strict: a device that cannot be probed is an error;
 * else it is reported with no partitions (a property getter must not fail GetManagedObjects). */
int device_dbus_append_partitions(sd_bus_message *reply, unsigned number, bool strict);
