/* engine-table.c: what loopd does to a caller's partition table: write an empty one, add a partition, delete
 * one, and the checks that Format shares (nothing mounted, a writable device). */
#include "engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "mount.h"
#include "partition.h"
#include "registry.h"
#include "strv.h"

int engine_check_writable(Manager *m, unsigned number, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;

        (void)m;
        if (loop_get_info(number, &info) < 0)
                return engine_error(e, -ENXIO, ENGINE_NOT_FOUND, "loop%u is not attached", number);
        if (info->read_only)
                return engine_error(e, -EROFS, ENGINE_READ_ONLY,
                        "loop%u is read-only: attach the image writable to change it", number);
        return 0;
}

/* The mount points of partition M of loopN (none when it does not exist). */
static int partition_mounts(unsigned number, unsigned partition, char ***ret)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        char node[LOOP_NODE_MAX];
        size_t n = 0;
        int r;

        r = partition_list_kernel(number, &parts, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (parts[i].number == partition)
                        return mount_find_targets(
                                parts[i].devnum, loop_node_format(node, number, partition), ret);
        *ret = NULL;
        return 0;
}

int engine_check_unmounted(Manager *m, unsigned number, unsigned partition, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_strv_free_ char **mounts = NULL;
        char node[LOOP_NODE_MAX];
        int r;

        (void)m;
        if (loop_get_info(number, &info) < 0)
                return engine_error(e, -ENXIO, ENGINE_NOT_FOUND, "loop%u is not attached", number);
        r = partition == 0 ? registry_device_mounts(info, &mounts)
                           : partition_mounts(number, partition, &mounts);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the mount table");
        if (!mounts || !mounts[0])
                return 0;

        _cleanup_free_ char *list = strv_join(mounts, ", ");
        loop_node_format(node, number, partition);
        return engine_error(e, -EBUSY, ENGINE_BUSY, "%s%s is mounted on %s; unmount it first", node,
                partition == 0 ? " (or a partition of it)" : "", strempty(list));
}

int engine_format_table(Manager *m, unsigned number, unsigned partition, const char *label, EngineError *e)
{
        (void)m;
        (void)number;
        (void)partition;
        (void)label;
        return engine_error(
                e, -EOPNOTSUPP, ENGINE_FAILED, "Writing a partition table is not implemented yet");
}

int engine_create_partition(
        Manager *m, unsigned number, const PartitionRequest *req, char **ret_node, EngineError *e)
{
        (void)m;
        (void)number;
        (void)req;
        (void)ret_node;
        return engine_error(e, -EOPNOTSUPP, ENGINE_FAILED, "CreatePartition is not implemented yet");
}

int engine_delete_partition(Manager *m, unsigned number, unsigned partition, EngineError *e)
{
        (void)m;
        (void)number;
        (void)partition;
        return engine_error(e, -EOPNOTSUPP, ENGINE_FAILED, "DeletePartition is not implemented yet");
}
