/* device-dbus.c: one org.loopd1.Device object per bound loop device, at /org/loopd1/device/loopN, and the
 * Manager's signals about them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-util.h"
#include "device-dbus.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "probe.h"
#include "registry.h"
#include "strv.h"
#include "utf8.h"
#include "watcher.h"

/* The loop number an object path names, or -EINVAL if it names none. */
static int device_path_number(const char *path, unsigned *ret)
{
        const char *prefix = LOOPD_DEVICE_PATH_PREFIX "/";

        if (strncmp(path, prefix, strlen(prefix)) != 0)
                return -EINVAL;
        return loop_parse_name(path + strlen(prefix), ret);
}

/* Objects exist exactly for the devices in the watcher's table, and the getters read only that table and the
 * registry: they never look at the kernel nor report a change. The table is brought up to date before a
 * client's question is dispatched (device_dbus_before_dispatch()), and before Attach or Detach returns. */
static int device_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
        sd_bus_error *error)
{
        Bus *b = userdata;
        unsigned number;

        if (device_path_number(path, &number) < 0)
                return 0;
        if (!watcher_device(b->manager->watcher, number))
                return 0;
        *found = b;
        return 1;
}

static int device_enumerate(
        sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error)
{
        Bus *b = userdata;
        _cleanup_free_ unsigned *numbers = NULL;
        _cleanup_strv_free_ char **list = NULL;
        size_t n = 0;
        int r;

        r = watcher_list_devices(b->manager->watcher, &numbers, &n);
        if (r < 0)
                return r;
        list = calloc(n + 1, sizeof(char *));
        if (!list)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                list[i] = device_object_path(numbers[i]);
                if (!list[i])
                        return -ENOMEM;
        }
        *nodes = TAKE_PTR(list);
        return 0;
}

/* Labels, UUIDs and names come from the image, mount points from whoever mounted: D-Bus strings must be
 * UTF-8, and one that is not would fail the whole message. */
static char *utf8_valid_dup(const char *s)
{
        char *copy = strdup(strempty(s));

        if (copy && utf8_make_valid(&copy) < 0)
                return mfree(copy);
        return copy;
}

static int append_partition(sd_bus_message *reply, const PartitionInfo *p, const char *mount_point)
{
        const char *fields[] = { p->node, p->part_type, p->part_name, p->fstype, p->label, p->uuid,
                mount_point };
        char *valid[ELEMENTSOF(fields)] = {};
        int r = 0;

        for (size_t i = 0; i < ELEMENTSOF(fields) && r >= 0; i++)
                if (!(valid[i] = utf8_valid_dup(fields[i])))
                        r = -ENOMEM;
        if (r >= 0)
                r = sd_bus_message_append(reply, LOOPD_PARTITION_STRUCT, valid[0], p->number, p->offset,
                        p->size, valid[1], valid[2], valid[3], valid[4], valid[5], valid[6]);
        for (size_t i = 0; i < ELEMENTSOF(valid); i++)
                free(valid[i]);
        return r;
}

int device_dbus_append_partitions(sd_bus_message *reply, Watcher *w, const PartitionInfo *parts, size_t n)
{
        int r;

        r = sd_bus_message_open_container(reply, 'a', LOOPD_PARTITION_STRUCT);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_partition(reply, &parts[i], watcher_mount_point(w, parts[i].node));
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int device_get_property(sd_bus *bus, const char *path, const char *interface, const char *property,
        sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        Manager *m = b->manager;
        const LoopInfo *info;
        ManagedDevice *d;
        unsigned number;

        if (device_path_number(path, &number) < 0)
                return -ENOENT;
        info = watcher_device(m->watcher, number);
        if (!info)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);
        d = registry_find_device(m->registry, number, info->diskseq);

        if (streq(property, "Device")) {
                char devname[LOOP_NODE_MAX];
                loop_node_format(devname, number, 0);
                return sd_bus_message_append(reply, "s", devname);
        }
        if (streq(property, "BackingFile")) {
                /* A virtual disk's image, not the export the kernel binds. */
                _cleanup_free_ char *valid = utf8_valid_dup(registry_device_image(m->registry, info, NULL));
                return valid ? sd_bus_message_append(reply, "s", valid) : -ENOMEM;
        }
        if (streq(property, "ImageFormat")) {
                const char *format;
                (void)registry_device_image(m->registry, info, &format);
                return sd_bus_message_append(reply, "s", format);
        }
        if (streq(property, "Offset"))
                return sd_bus_message_append(reply, "t", info->offset);
        if (streq(property, "SizeLimit"))
                return sd_bus_message_append(reply, "t", info->size_limit);
        if (streq(property, "SectorSize"))
                return sd_bus_message_append(reply, "u", info->sector_size);
        if (streq(property, "ReadOnly"))
                return sd_bus_message_append(reply, "b", info->read_only);
        if (streq(property, "Autoclear"))
                return sd_bus_message_append(reply, "b", registry_device_autoclear(m->registry, info));
        if (streq(property, "Managed"))
                return sd_bus_message_append(reply, "b", d != NULL);
        if (streq(property, "OwnerUID"))
                return sd_bus_message_append(reply, "u", d ? (uint32_t)d->owner : 0u);
        if (streq(property, "Partitions")) {
                size_t n = 0;
                const PartitionInfo *parts = watcher_device_partitions(m->watcher, number, &n);

                /* None rather than an error when the device could not be probed: one unreadable device must
                 * not fail GetManagedObjects for every client. */
                return device_dbus_append_partitions(reply, m->watcher, parts, parts ? n : 0);
        }
        return -ENOENT;
}

static const sd_bus_vtable device_vtable[] = { SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Device", "s", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackingFile", "s", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ImageFormat", "s", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Offset", "t", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SizeLimit", "t", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SectorSize", "u", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ReadOnly", "b", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Autoclear", "b", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Managed", "b", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("OwnerUID", "u", device_get_property, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Partitions", "a" LOOPD_PARTITION_STRUCT, device_get_property, 0,
                SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END };

int device_dbus_register(Bus *b)
{
        int r;

        r = sd_bus_add_fallback_vtable(b->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, LOOPD_DEVICE_INTERFACE,
                device_vtable, device_find, b);
        if (r < 0)
                return r;
        return sd_bus_add_node_enumerator(b->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, device_enumerate, b);
}

/* Is path the device prefix or one of its ancestors ("/", "/org", ...)? */
static bool path_above_devices(const char *path)
{
        size_t len = strlen(path);

        if (streq(path, "/"))
                return true;
        return strncmp(LOOPD_DEVICE_PATH_PREFIX, path, len) == 0 &&
                (LOOPD_DEVICE_PATH_PREFIX[len] == '/' || LOOPD_DEVICE_PATH_PREFIX[len] == 0);
}

void device_dbus_before_dispatch(Bus *b, sd_bus_message *message)
{
        const char *path = sd_bus_message_get_path(message);
        unsigned number;

        if (!path || !b->manager->watcher || !sd_bus_message_is_method_call(message, NULL, NULL))
                return;
        /* A question about one device (Get, GetAll, Introspect): a client that asks right after Attach
         * returned, or after another tool bound a device whose event loopd has not read yet, gets the
         * kernel's answer. */
        if (device_path_number(path, &number) >= 0)
                watcher_update_device(b->manager->watcher, number);
        /* GetManagedObjects, or an introspection that lists the device nodes. */
        else if (path_above_devices(path) &&
                (sd_bus_message_is_method_call(message, "org.freedesktop.DBus.ObjectManager", NULL) ||
                        sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Introspectable", NULL)))
                watcher_update_devices(b->manager->watcher, true);
        else
                return;
        /* Partitions shows mount points: a mount someone made a moment ago is there too. Only the calls that
         * read properties need the mount table (not Introspect, Ping). */
        if (sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Properties", NULL) ||
                sd_bus_message_is_method_call(message, "org.freedesktop.DBus.ObjectManager", NULL))
                watcher_update_mounts(b->manager->watcher);
}

static void log_emit_failure(int r, const char *what)
{
        if (r < 0)
                log_debug_errno(r, "Failed to emit %s: %m", what);
}

static void emit_added(sd_bus *bus, unsigned number)
{
        _cleanup_free_ char *path = device_object_path(number);
        char devname[LOOP_NODE_MAX];

        if (!path || !bus)
                return;
        loop_node_format(devname, number, 0);
        log_emit_failure(sd_bus_emit_object_added(bus, path), "InterfacesAdded");
        log_emit_failure(sd_bus_emit_signal(bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 "DeviceAttached", "so", devname, path),
                "DeviceAttached");
}

static void emit_removed(sd_bus *bus, unsigned number)
{
        _cleanup_free_ char *path = device_object_path(number);
        char devname[LOOP_NODE_MAX];

        if (!path || !bus)
                return;
        loop_node_format(devname, number, 0);
        /* All the interfaces InterfacesAdded named, the standard ones too (Properties, Introspectable,
         * Peer): a client such as GDBusObjectManagerClient drops an object only when it has none left. The
         * watcher calls this while the object still resolves. */
        log_emit_failure(sd_bus_emit_object_removed(bus, path), "InterfacesRemoved");
        log_emit_failure(sd_bus_emit_signal(bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 "DeviceDetached", "so", devname, path),
                "DeviceDetached");
}

static void emit_partition(sd_bus *bus, unsigned number, unsigned partition, bool added)
{
        char devname[LOOP_NODE_MAX], node[LOOP_NODE_MAX];

        if (!bus)
                return;
        loop_node_format(devname, number, 0);
        loop_node_format(node, number, partition);
        log_emit_failure(sd_bus_emit_signal(bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 added ? "PartitionAdded" : "PartitionRemoved", "ss", devname, node),
                "PartitionAdded/Removed");
}

static void emit_mount(sd_bus *bus, const char *node, const char *mount_point, bool mounted)
{
        _cleanup_free_ char *valid = utf8_valid_dup(mount_point);

        if (!bus || !valid)
                return;
        log_emit_failure(sd_bus_emit_signal(bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 mounted ? "Mounted" : "Unmounted", "ss", node, valid),
                "Mounted/Unmounted");
}

static void emit_changed(sd_bus *bus, unsigned number, const char *property)
{
        _cleanup_free_ char *path = device_object_path(number);

        if (!path || !bus)
                return;
        log_emit_failure(sd_bus_emit_properties_changed(bus, path, LOOPD_DEVICE_INTERFACE, property, NULL),
                "PropertiesChanged");
}

void device_dbus_on_change(const Change *c, void *userdata)
{
        Bus *b = userdata;

        if (!b->bus) /* the first look at the devices, before the bus is there */
                return;
        switch (c->kind) {
        case CHANGE_DEVICE_ADDED:
                emit_added(b->bus, c->number);
                break;
        case CHANGE_DEVICE_REMOVED:
                emit_removed(b->bus, c->number);
                break;
        case CHANGE_PARTITION_ADDED:
        case CHANGE_PARTITION_REMOVED:
                emit_partition(b->bus, c->number, c->partition, c->kind == CHANGE_PARTITION_ADDED);
                break;
        case CHANGE_MOUNTED:
        case CHANGE_UNMOUNTED:
                emit_mount(b->bus, c->node, c->mount_point, c->kind == CHANGE_MOUNTED);
                break;
        case CHANGE_PROPERTY:
                emit_changed(b->bus, c->number, c->property);
                break;
        }
}
