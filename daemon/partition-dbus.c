/* partition-dbus.c: the Manager's CreatePartition and DeletePartition methods. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bus-context.h"
#include "bus-options.h"
#include "bus-util.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "partition-table.h"

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
