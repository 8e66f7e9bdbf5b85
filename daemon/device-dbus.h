/* device-dbus.h: the Device objects' and the Manager's signals, as the watcher sees things change. */
#pragma once

#include <stdbool.h>

#include "manager.h"

/* DeviceAttached + InterfacesAdded, or DeviceDetached + InterfacesRemoved. */
void device_dbus_emit_added(Manager *m, unsigned number);
void device_dbus_emit_removed(Manager *m, unsigned number);
/* PartitionAdded / PartitionRemoved (device, partition node). */
void device_dbus_emit_partition(Manager *m, unsigned number, unsigned partition, bool added);
/* Mounted / Unmounted (node, mount point). */
void device_dbus_emit_mount(Manager *m, const char *node, const char *mount_point, bool mounted);
/* PropertiesChanged for one property of loopN's Device object. */
void device_dbus_emit_changed(Manager *m, unsigned number, const char *property);
