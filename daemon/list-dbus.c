/* list-dbus.c: the Manager's ListDevices and ListPartitions methods. */
#include <errno.h>
#include <stdlib.h>

#include "bus-context.h"
#include "bus-util.h"
#include "device-dbus.h"
#include "loop.h"
#include "loopd-bus.h"
#include "registry.h"
#include "utf8.h"
#include "watcher.h"

static int compare_unsigned(const void *a, const void *b)
{
        unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

        return x < y ? -1 : x > y;
}

/* The watcher's table (what the Device objects show), brought up to date with the kernel first: a device
 * another tool bound a moment ago is listed even when its event has not been read yet. */
int method_list_devices(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        Manager *m = b->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ unsigned *numbers = NULL;
        size_t n = 0;
        int r;

        watcher_update_devices(m->watcher, false);
        r = watcher_list_devices(m->watcher, &numbers, &n);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to list loop devices");
        qsort(numbers, n, sizeof(unsigned), compare_unsigned);

        r = sd_bus_message_new_method_return(message, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', LOOPD_DEVICE_STRUCT);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                const LoopInfo *info = watcher_device(m->watcher, numbers[i]);
                ManagedDevice *d = registry_find_device(m->registry, info->number, info->diskseq);
                _cleanup_free_ char *path = device_object_path(info->number),
                                    *backing = strdup(registry_device_image(m->registry, info, NULL));
                char devname[LOOP_NODE_MAX];

                if (!path || !backing) {
                        r = -ENOMEM;
                        break;
                }
                loop_node_format(devname, info->number, 0);
                r = utf8_make_valid(&backing);
                if (r < 0)
                        break;
                r = sd_bus_message_append(reply, LOOPD_DEVICE_STRUCT, devname, path, backing, info->offset,
                        info->size_limit, info->sector_size, info->read_only,
                        registry_device_autoclear(m->registry, info), d != NULL,
                        d ? (uint32_t)d->owner : 0u);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* What is on the device now: probed again (the Partitions property then shows the same), mount points from
 * the mount table as it is now. */
int method_list_partitions(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        Manager *m = b->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const PartitionInfo *parts;
        const char *device;
        unsigned number;
        size_t n = 0;
        int r;

        r = sd_bus_message_read(message, "s", &device);
        if (r < 0)
                return r;
        /* Only the number: the watcher reads the device itself (not attached: ENXIO below). */
        r = bus_parse_loop_name(device, &number, error);
        if (r < 0)
                return r;

        watcher_update_mounts(m->watcher);
        r = watcher_probe_device(m->watcher, number);
        if (r == -ENXIO)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to read the partitions");
        parts = watcher_device_partitions(m->watcher, number, &n);

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        /* The Device object's code, so that both give the same answer and every string is valid UTF-8 (a
         * label is the image author's bytes; sd-bus refuses to send anything else). */
        r = device_dbus_append_partitions(reply, m->watcher, parts, parts ? n : 0);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}
