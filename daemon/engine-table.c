/* engine-table.c: what loopd does to a caller's partition table: write an empty one, add a partition, delete
 * one, and the checks that Format shares (nothing mounted, a writable device). */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image-reader.h"
#include "log.h"
#include "loop.h"
#include "mount.h"
#include "partition.h"
#include "registry.h"
#include "strv.h"
#include "watcher.h"

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

/* The device's whole-disk node is mounted (a filesystem on the whole device): its table is not to be
 * touched under it. */
static int check_disk_unmounted(const LoopInfo *info, EngineError *e)
{
        _cleanup_strv_free_ char **mounts = NULL;
        char node[LOOP_NODE_MAX];
        int r;

        r = mount_find_targets(info->devnum, loop_node_format(node, info->number, 0), &mounts);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the mount table");
        if (!mounts || !mounts[0])
                return 0;
        _cleanup_free_ char *list = strv_join(mounts, ", ");
        return engine_error(
                e, -EBUSY, ENGINE_BUSY, "%s is mounted on %s; unmount it first", node, strempty(list));
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
        /* A partition's bytes are the whole device's too: a mount of the whole device that holds it
         * without O_EXCL (a FUSE driver reading a hybrid ISO) must not see them change under it. */
        if ((!mounts || !mounts[0]) && partition != 0)
                return check_disk_unmounted(info, e);
        if (!mounts || !mounts[0])
                return 0;

        _cleanup_free_ char *list = strv_join(mounts, ", ");
        loop_node_format(node, number, partition);
        return engine_error(e, -EBUSY, ENGINE_BUSY, "%s%s is mounted on %s; unmount it first", node,
                partition == 0 ? " (or a partition of it)" : "", strempty(list));
}

/* loopN, attached and writable, opened read-write: *ret_info and the fd. */
static int open_for_change(Manager *m, unsigned number, LoopInfo **ret_info, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        int fd;

        /* A mkfs writing to the device (Format, in the background) is Busy for a table change too. */
        fd = engine_check_not_formatting(m, number, e);
        if (fd < 0)
                return fd;
        if (loop_get_info(number, &info) < 0)
                return engine_error(e, -ENXIO, ENGINE_NOT_FOUND, "loop%u is not attached", number);
        if (info->read_only)
                return engine_error(e, -EROFS, ENGINE_READ_ONLY,
                        "loop%u is read-only: attach the image writable to change it", number);
        fd = loop_open_writable(number, info->diskseq);
        if (fd == -EROFS)
                return engine_error(e, fd, ENGINE_READ_ONLY, "loop%u is read-only", number);
        if (fd == -ESTALE || fd == -ENODEV)
                return engine_error(e, fd, ENGINE_NOT_FOUND, "loop%u is not attached any more", number);
        if (fd < 0)
                return engine_error_errno(e, fd, "Failed to open the device");
        *ret_info = TAKE_PTR(info);
        return fd;
}

/* A table change that failed: r is the child's error (image-reader.h), or its timeout. */
static int table_write_error(Manager *m, EngineError *e, int r)
{
        if (r == -ETIMEDOUT)
                return engine_error(e, r, ENGINE_TIMEOUT,
                        "Changing the partition table did not finish within %" PRIu64
                        " s (its image may be hung); what the table holds now is unknown",
                        m->io_timeout_usec / 1000000);
        return engine_error_errno(e, r, "Failed to write the partition table");
}

/* After the table changed: the kernel's partitions and their nodes follow it, and the bus hears of it
 * (PartitionAdded/Removed, Partitions) before the caller's reply. */
static int publish_table(Manager *m, const LoopInfo *info, EngineError *e)
{
        int r;

        r = loop_update_partitions(info->number, info->diskseq, m->image_reader);
        if (m->watcher)
                (void)watcher_probe_device(m->watcher, info->number);
        if (r == -EBUSY)
                return engine_error(e, r, ENGINE_BUSY,
                        "loop%u: the table was written, but a partition it no longer has is in use; it stays "
                        "until it is released and the device is attached again",
                        info->number);
        if (r < 0)
                return engine_error(e, r, ENGINE_FAILED,
                        "loop%u: the table was written, but its partitions could not be updated: %s",
                        info->number, strerror(-r));
        return 0;
}

int engine_format_table(Manager *m, unsigned number, unsigned partition, const char *label, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int fd = -EBADF;
        PartitionTableKind kind;
        char node[LOOP_NODE_MAX];
        int r;

        if (partition != 0)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                        "node: a partition table goes on the whole device (/dev/loop%u), not on %s", number,
                        loop_node_format(node, number, partition));
        if (partition_table_kind_from_string(label, &kind) < 0)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT, "type: '%s' is not gpt or dos",
                        strempty(label));
        fd = open_for_change(m, number, &info, e);
        if (fd < 0)
                return fd;
        r = engine_check_unmounted(m, number, 0, e);
        if (r < 0)
                return r;

        /* Its partitions go before the table that holds them: one still in use (held open, not mounted)
         * makes it Busy with nothing written. */
        r = partition_remove_all(fd, number);
        if (r < 0) {
                (void)publish_table(m, info, NULL);
                if (r == -EBUSY)
                        return engine_error(e, r, ENGINE_BUSY, "A partition of loop%u is in use", number);
                return engine_error_errno(e, r, "Failed to remove the partitions");
        }
        r = image_reader_table_create(m->image_reader, fd, info->sector_size, label);
        if (r < 0) {
                (void)publish_table(m, info, NULL);
                return table_write_error(m, e, r);
        }
        fd = safe_close(fd);
        log_info("Wrote an empty %s partition table on loop%u", label, number);
        return publish_table(m, info, e);
}

int engine_create_partition(
        Manager *m, unsigned number, const PartitionRequest *req, char **ret_node, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int fd = -EBADF;
        char node[LOOP_NODE_MAX];
        TablePartition p;
        struct stat st;
        int r;

        fd = open_for_change(m, number, &info, e);
        if (fd < 0)
                return fd;
        /* Partitions may be mounted meanwhile (as udisks allows): nothing of theirs changes. */
        r = check_disk_unmounted(info, e);
        if (r < 0)
                return r;

        r = image_reader_table_add(m->image_reader, fd, info->sector_size, req, &p, &why);
        if (r < 0 && why)
                return engine_error(e, r, ENGINE_INVALID_ARGUMENT, "%s", why);
        if (r < 0)
                return table_write_error(m, e, r);
        fd = safe_close(fd);
        log_info("Added partition %u (bytes %" PRIu64 "+%" PRIu64 ") to loop%u", p.number, p.offset, p.size,
                number);

        r = publish_table(m, info, e);
        if (r < 0)
                return r;
        loop_node_format(node, number, p.number);
        if (stat(node, &st) < 0 || !S_ISBLK(st.st_mode)) {
                /* A partition the caller cannot reach is not left in the table. */
                fd = loop_open_writable(number, info->diskseq);
                if (fd >= 0 &&
                        image_reader_table_delete(m->image_reader, fd, info->sector_size, p.number, false) >=
                                0) {
                        fd = safe_close(fd);
                        (void)publish_table(m, info, NULL);
                        return engine_error(e, -ENOENT, ENGINE_FAILED,
                                "%s did not appear; partition %u was deleted from the table again", node,
                                p.number);
                }
                return engine_error(e, -ENOENT, ENGINE_FAILED,
                        "Partition %u was written into the table, but %s did not appear", p.number, node);
        }
        if (ret_node) {
                *ret_node = strdup(node);
                if (!*ret_node)
                        return -ENOMEM;
        }
        return 0;
}

/* DeletePartition's refusals; restore: the kernel's partition was removed already, and comes back. */
static int delete_refused(
        Manager *m, const LoopInfo *info, const char *node, int r, bool restore, EngineError *e)
{
        if (restore)
                (void)publish_table(m, info, NULL);
        if (r == -ENOENT)
                return engine_error(e, r, ENGINE_NOT_FOUND, "%s is not in the partition table", node);
        if (r == -EMEDIUMTYPE)
                return engine_error(e, r, ENGINE_INVALID_ARGUMENT,
                        "loop%u has no gpt or dos partition table", info->number);
        if (r == -EOPNOTSUPP)
                return engine_error(e, r, ENGINE_INVALID_ARGUMENT,
                        "node: %s is an extended or logical partition; loopd deletes primary ones only",
                        node);
        if (r == -EFBIG)
                return engine_error(e, r, ENGINE_INVALID_ARGUMENT,
                        "loop%u's GPT header asks for more partition entries than the kernel reads",
                        info->number);
        return table_write_error(m, e, r);
}

int engine_delete_partition(Manager *m, unsigned number, unsigned partition, EngineError *e)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        _cleanup_close_ int fd = -EBADF;
        char node[LOOP_NODE_MAX];
        int r;

        loop_node_format(node, number, partition);
        if (partition == 0)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                        "node: %s is a whole device; name one of its partitions", node);
        fd = open_for_change(m, number, &info, e);
        if (fd < 0)
                return fd;
        r = engine_check_unmounted(m, number, partition, e);
        if (r < 0)
                return r;

        /* A refusal changes nothing (the kernel's partition stays): the table is looked at first. */
        r = image_reader_table_delete(m->image_reader, fd, info->sector_size, partition, true);
        if (r < 0)
                return delete_refused(m, info, node, r, false, e);
        /* Out of the kernel first: in use (held open) it is Busy, with the table untouched. */
        r = partition_remove(fd, partition);
        if (r == -EBUSY)
                return engine_error(e, r, ENGINE_BUSY, "%s is in use", node);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to remove the partition");

        r = image_reader_table_delete(m->image_reader, fd, info->sector_size, partition, false);
        if (r < 0) {
                fd = safe_close(fd);
                return delete_refused(m, info, node, r, true, e);
        }
        fd = safe_close(fd);
        log_info("Deleted partition %u of loop%u", partition, number);
        return publish_table(m, info, e);
}
