/* partition-dbus.c: the Manager's CreatePartition and DeletePartition methods. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus-calls.h"
#include "bus-context.h"
#include "bus-options.h"
#include "bus-util.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "partition-table.h"
#include "watcher.h"

typedef struct PendingPartition {
        Bus *bus;
        sd_bus_message *message;
        char *node;
} PendingPartition;

static void partition_on_udev_done(int result, void *userdata)
{
        PendingPartition *p = userdata;
        int r;

        /* The partition is there either way: a slow udev (or loopd exiting) does not undo it. */
        if (result < 0 && result != -ECANCELED)
                log_warning("udev did not process %s in time; replying without its udev state", p->node);
        r = sd_bus_reply_method_return(p->message, "s", p->node);
        if (r < 0)
                log_debug_errno(r, "Failed to reply to CreatePartition: %m");
        bus_calls_release(p->bus->calls, p->message);
        sd_bus_message_unref(p->message);
        free(p->node);
        free(p);
}

/* With udevd running a client expects the new partition's udev state (by-* links, properties, loopd's own
 * rule) once CreatePartition returns, as after Attach: wait for udev's event on it, bounded. 0 when the
 * reply is left to partition_on_udev_done(); < 0 when the caller should reply now. */
static int create_wait_for_udev(
        Bus *b, sd_bus_message *message, uid_t uid, unsigned number, const char *node)
{
        Manager *m = b->manager;
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        PendingPartition *p;
        struct stat st;
        int r;

        if (!m->watcher || !watcher_udev_running(m->watcher))
                return -EOPNOTSUPP;
        if (stat(node, &st) < 0)
                return negative_errno();
        r = loop_get_info(number, &info);
        if (r < 0)
                return r;
        p = calloc(1, sizeof(PendingPartition));
        if (!p || !(p->node = strdup(node))) {
                free(p);
                return -ENOMEM;
        }
        r = bus_calls_hold(b->calls, message, uid, NULL);
        if (r < 0) {
                free(p->node);
                free(p);
                return r;
        }
        p->bus = b;
        p->message = sd_bus_message_ref(message);
        r = watcher_wait_devices(m->watcher, &st.st_rdev, 1, info->diskseq, m->partition_timeout_usec,
                partition_on_udev_done, p, NULL);
        if (r < 0) {
                bus_calls_release(b->calls, message);
                sd_bus_message_unref(p->message);
                free(p->node);
                free(p);
                return r;
        }
        return 0;
}

int method_create_partition(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        EngineError e = {};
        bool bootable = false;
        const OptionSpec specs[] = { { "bootable", OPTION_BOOLEAN, &bootable }, {} };
        const char *device, *type, *name;
        _cleanup_free_ char *node = NULL;
        uint64_t offset, size;
        unsigned number;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "sttss", &device, &offset, &size, &type, &name);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        r = bus_parse_loop_name(device, &number, error);
        if (r < 0)
                return r;
        if (offset > INT64_MAX || size > INT64_MAX || offset > INT64_MAX - size)
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "size: offset + size is beyond what any device holds");
        /* Not quoted when too long: a cut could split a UTF-8 character (see bus_parse_loop_node()). */
        if (strlen(type) > 64)
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "type: too long for a GPT type GUID, a DOS type or an alias");
        if (!isempty(type) && partition_type_check(type) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "type: '%s' is not a GPT type GUID, a DOS type (0x83) or one of linux, esp, swap, fat, "
                        "ntfs",
                        type);
        if (partition_name_check(name) < 0)
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "name: must be at most 36 characters without control characters");

        char devname[LOOP_NODE_MAX], offset_text[32], size_text[32];
        loop_node_format(devname, number, 0);
        snprintf(offset_text, sizeof(offset_text), "%" PRIu64, offset);
        snprintf(size_text, sizeof(size_text), "%" PRIu64, size);
        const char *details[] = { "device", devname, "offset", offset_text, "size", size_text, "type",
                isempty(type) ? "linux" : type, "name", name, NULL };
        r = bus_authorize_node(b, message, number, LOOPD_ACTION_MODIFY, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        const PartitionRequest req = {
                .offset = offset,
                .size = size,
                .type = isempty(type) ? "linux" : type,
                .name = name,
                .bootable = bootable,
        };
        r = engine_create_partition(b->manager, number, &req, &node, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        log_debug("CreatePartition on %s for uid %u: %s", devname, (unsigned)uid, node);
        if (create_wait_for_udev(b, message, uid, number, node) >= 0)
                return 1;
        return sd_bus_reply_method_return(message, "s", node);
}

int method_delete_partition(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        EngineError e = {};
        const OptionSpec specs[] = { {} };
        unsigned number, partition;
        const char *node;
        dev_t devnum;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "s", &node);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        r = bus_parse_loop_node(node, &number, &partition, &devnum, error);
        if (r < 0)
                return r;
        char canonical[LOOP_NODE_MAX];
        loop_node_format(canonical, number, partition);
        if (partition == 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "node: %s is a whole device; name one of its partitions", canonical);

        const char *details[] = { "device", canonical, NULL };
        r = bus_authorize_node(b, message, number, LOOPD_ACTION_MODIFY, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = engine_delete_partition(b->manager, number, partition, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        return sd_bus_reply_method_return(message, NULL);
}
