/* device-dbus.c: one org.loopd1.Device object per bound loop device, at /org/loopd1/device/loopN. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device-dbus.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "manager.h"

char *device_object_path(unsigned number)
{
        char *path;

        if (asprintf(&path, LOOPD_DEVICE_PATH_PREFIX "/loop%u", number) < 0)
                return NULL;
        return path;
}

/* The loop number an object path names, or -EINVAL if it names none. */
static int device_path_number(const char *path, unsigned *ret)
{
        const char *prefix = LOOPD_DEVICE_PATH_PREFIX "/";

        if (strncmp(path, prefix, strlen(prefix)) != 0)
                return -EINVAL;
        return loop_parse_name(path + strlen(prefix), ret);
}

/* Objects exist exactly for the devices the kernel has bound now. The getters take the number from the path.
 */
static int device_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
        sd_bus_error *error)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        unsigned number;

        if (device_path_number(path, &number) < 0)
                return 0;
        if (loop_get_info(number, &info) < 0)
                return 0;
        *found = userdata;
        return 1;
}

static int device_enumerate(
        sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error)
{
        LoopInfo **infos = NULL;
        char **list;
        size_t n = 0;
        int r;

        r = loop_list(&infos, &n);
        if (r < 0)
                return r;
        list = calloc(n + 1, sizeof(char *));
        for (size_t i = 0; list && i < n; i++) {
                list[i] = device_object_path(infos[i]->number);
                if (!list[i]) {
                        for (size_t j = 0; j < i; j++)
                                free(list[j]);
                        free(list);
                        list = NULL;
                }
        }
        loop_info_array_free(infos, n);
        if (!list)
                return -ENOMEM;
        *nodes = list;
        return 0;
}

static int device_get_property(sd_bus *bus, const char *path, const char *interface, const char *property,
        sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        unsigned number;
        int r;

        if (device_path_number(path, &number) < 0)
                return -ENOENT;
        r = loop_get_info(number, &info);
        if (r < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);

        if (streq(property, "Device")) {
                char devname[32];
                snprintf(devname, sizeof(devname), "/dev/loop%u", number);
                return sd_bus_message_append(reply, "s", devname);
        }
        if (streq(property, "BackingFile"))
                return sd_bus_message_append(reply, "s", info->backing_file);
        if (streq(property, "Offset"))
                return sd_bus_message_append(reply, "t", info->offset);
        if (streq(property, "SizeLimit"))
                return sd_bus_message_append(reply, "t", info->size_limit);
        if (streq(property, "SectorSize"))
                return sd_bus_message_append(reply, "u", info->sector_size);
        if (streq(property, "ReadOnly"))
                return sd_bus_message_append(reply, "b", info->read_only);
        if (streq(property, "Autoclear"))
                return sd_bus_message_append(reply, "b", info->autoclear);
        if (streq(property, "Partitions"))
                return bus_append_partitions(reply, number);
        return -ENOENT;
}

static int device_get_ownership(sd_bus *bus, const char *path, const char *interface, const char *property,
        sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        ManagedDevice *d = NULL;
        unsigned number;

        if (device_path_number(path, &number) < 0)
                return -ENOENT;
        if (loop_get_info(number, &info) >= 0)
                d = manager_find_device(m, number, info->diskseq);
        if (streq(property, "Managed"))
                return sd_bus_message_append(reply, "b", d != NULL);
        return sd_bus_message_append(reply, "u", d ? (uint32_t)d->owner : 0u);
}

static const sd_bus_vtable device_vtable[] = { SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Device", "s", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackingFile", "s", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Offset", "t", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SizeLimit", "t", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SectorSize", "u", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ReadOnly", "b", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Autoclear", "b", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Managed", "b", device_get_ownership, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("OwnerUID", "u", device_get_ownership, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Partitions", "a" LOOPD_PARTITION_STRUCT, device_get_property, 0,
                SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END };

int device_dbus_register(Manager *m)
{
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, LOOPD_DEVICE_INTERFACE,
                device_vtable, device_find, m);
        if (r < 0)
                return r;
        return sd_bus_add_node_enumerator(m->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, device_enumerate, m);
}

static void log_emit_failure(int r, const char *what)
{
        if (r < 0)
                log_debug_errno(r, "Failed to emit %s: %m", what);
}

void device_dbus_emit_added(Manager *m, unsigned number)
{
        _cleanup_free_ char *path = device_object_path(number);
        char devname[32];

        if (!path || !m->bus)
                return;
        snprintf(devname, sizeof(devname), "/dev/loop%u", number);
        log_emit_failure(sd_bus_emit_object_added(m->bus, path), "InterfacesAdded");
        log_emit_failure(sd_bus_emit_signal(m->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 "DeviceAttached", "so", devname, path),
                "DeviceAttached");
}

void device_dbus_emit_removed(Manager *m, unsigned number)
{
        _cleanup_free_ char *path = device_object_path(number);
        char devname[32];

        if (!path || !m->bus)
                return;
        snprintf(devname, sizeof(devname), "/dev/loop%u", number);
        /* The object no longer resolves (the device is unbound), so name the interfaces ourselves. */
        log_emit_failure(sd_bus_emit_interfaces_removed(m->bus, path, LOOPD_DEVICE_INTERFACE, NULL),
                "InterfacesRemoved");
        log_emit_failure(sd_bus_emit_signal(m->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 "DeviceDetached", "so", devname, path),
                "DeviceDetached");
}

void device_dbus_emit_partition(Manager *m, unsigned number, unsigned partition, bool added)
{
        char devname[32], node[48];

        if (!m->bus)
                return;
        snprintf(devname, sizeof(devname), "/dev/loop%u", number);
        snprintf(node, sizeof(node), "/dev/loop%up%u", number, partition);
        log_emit_failure(sd_bus_emit_signal(m->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 added ? "PartitionAdded" : "PartitionRemoved", "ss", devname, node),
                "PartitionAdded/Removed");
}

void device_dbus_emit_mount(Manager *m, const char *node, const char *mount_point, bool mounted)
{
        if (!m->bus)
                return;
        log_emit_failure(sd_bus_emit_signal(m->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 mounted ? "Mounted" : "Unmounted", "ss", node, mount_point),
                "Mounted/Unmounted");
}

void device_dbus_emit_changed(Manager *m, unsigned number, const char *property)
{
        _cleanup_free_ char *path = device_object_path(number);

        if (!path || !m->bus)
                return;
        log_emit_failure(
                sd_bus_emit_properties_changed(m->bus, path, LOOPD_DEVICE_INTERFACE, property, NULL),
                "PropertiesChanged");
}
