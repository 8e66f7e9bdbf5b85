/* partition-table.c: GPT and DOS partition tables written with libfdisk on a loop device. Never logs. */
#include "partition-table.h"

#include <errno.h>
#include <libfdisk/libfdisk.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

static inline void fdisk_unref_contextp(struct fdisk_context **cxt)
{
        fdisk_unref_context(*cxt);
}

const char *partition_table_kind_to_string(PartitionTableKind kind)
{
        switch (kind) {
        case PARTITION_TABLE_GPT:
                return "gpt";
        case PARTITION_TABLE_DOS:
                return "dos";
        default:
                return NULL;
        }
}

int partition_table_kind_from_string(const char *s, PartitionTableKind *ret)
{
        if (streq_ptr(s, "gpt"))
                *ret = PARTITION_TABLE_GPT;
        else if (streq_ptr(s, "dos"))
                *ret = PARTITION_TABLE_DOS;
        else
                return -EINVAL;
        return 0;
}

/* A libfdisk context on fd with the logical sector size sector_size (0: the device's). libfdisk never
 * closes fd, and never prints: without an ask callback its messages go nowhere. */
static int context_open(int fd, uint32_t sector_size, bool read_only, struct fdisk_context **ret)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        int r;

        if (fd < 0 ||
                (sector_size != 0 &&
                        (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)))
                return -EINVAL;
        cxt = fdisk_new_context();
        if (!cxt)
                return -ENOMEM;
        if (sector_size != 0) {
                r = fdisk_save_user_sector_size(cxt, sector_size, sector_size);
                if (r < 0)
                        return r;
        }
        /* The name is for libfdisk's messages only: it opens nothing by it. */
        r = fdisk_assign_device_by_fd(cxt, fd, "loop", read_only);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cxt);
        return 0;
}

/* Writes what cxt holds and flushes it to the device. Not fdisk_deassign_device(): it would sync() every
 * filesystem of the machine. */
static int context_write(struct fdisk_context *cxt, int fd)
{
        int r;

        r = fdisk_write_disklabel(cxt);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

int partition_table_create_sized(int fd, uint32_t sector_size, const char *label)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        PartitionTableKind kind;
        int r;

        if (partition_table_kind_from_string(label, &kind) < 0)
                return -EINVAL;
        r = context_open(fd, sector_size, false, &cxt);
        if (r < 0)
                return r;
        /* Signatures of what was there (a filesystem, another kind of table) go when the table is written.
         */
        r = fdisk_enable_wipe(cxt, 1);
        if (r < 0)
                return r;
        r = fdisk_create_disklabel(cxt, label);
        if (r < 0)
                return r;
        return context_write(cxt, fd);
}

int partition_table_create(int fd, const char *label)
{
        return partition_table_create_sized(fd, 0, label);
}

int partition_table_read(int fd, uint32_t sector_size, PartitionTableKind *ret_kind,
        TablePartition **ret_parts, size_t *ret_n)
{
        (void)fd;
        (void)sector_size;
        (void)ret_kind;
        (void)ret_parts;
        (void)ret_n;
        return -EOPNOTSUPP;
}

int partition_type_check(const char *type)
{
        (void)type;
        return -EOPNOTSUPP;
}

int partition_name_check(const char *name)
{
        (void)name;
        return -EOPNOTSUPP;
}

int partition_table_add(
        int fd, uint32_t sector_size, const PartitionRequest *req, TablePartition *ret, char **ret_why)
{
        (void)fd;
        (void)sector_size;
        (void)req;
        (void)ret;
        (void)ret_why;
        return -EOPNOTSUPP;
}

int partition_table_delete(int fd, uint32_t sector_size, unsigned number, TablePartition *ret)
{
        (void)fd;
        (void)sector_size;
        (void)number;
        (void)ret;
        return -EOPNOTSUPP;
}
