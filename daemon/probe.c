/* probe.c: the partitions and filesystems on a loop device, read with libblkid for ListPartitions. */
#include <blkid/blkid.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blkid-util.h"
#include "loop-name.h"
#include "macro.h"
#include "partition.h"
#include "probe.h"
#include "sysfs.h"

void partition_info_clear(PartitionInfo *p)
{
        if (!p)
                return;
        free(p->node);
        free(p->part_type);
        free(p->part_name);
        free(p->fstype);
        free(p->label);
        free(p->uuid);
        free(p->mount_point);
        *p = (PartitionInfo){};
}

void partition_info_array_free(PartitionInfo *p, size_t n)
{
        if (!p)
                return;
        for (size_t i = 0; i < n; i++)
                partition_info_clear(p + i);
        free(p);
}

int partition_info_array_copy(const PartitionInfo *p, size_t n, PartitionInfo **ret)
{
        PartitionInfo *c = calloc(n + 1, sizeof(PartitionInfo));

        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                c[i] = (PartitionInfo){
                        .node = strdup(p[i].node),
                        .number = p[i].number,
                        .devnum = p[i].devnum,
                        .offset = p[i].offset,
                        .size = p[i].size,
                        .part_type = strdup(p[i].part_type),
                        .part_name = strdup(p[i].part_name),
                        .fstype = strdup(p[i].fstype),
                        .label = strdup(p[i].label),
                        .uuid = strdup(p[i].uuid),
                        .mount_point = strdup(p[i].mount_point),
                };
                if (!c[i].node || !c[i].part_type || !c[i].part_name || !c[i].fstype || !c[i].label ||
                        !c[i].uuid || !c[i].mount_point) {
                        partition_info_array_free(c, i + 1);
                        return -ENOMEM;
                }
        }
        *ret = c;
        return 0;
}

static char *strdup_empty(const char *s)
{
        return strdup(s ? s : "");
}

/* A block device node opened for probing; -ENOTBLK for anything else. */
static int open_block_node(const char *node)
{
        struct stat st;
        int fd;

        fd = open(node, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0) {
                int r = negative_errno();
                safe_close(fd);
                return r;
        }
        if (!S_ISBLK(st.st_mode)) {
                safe_close(fd);
                return -ENOTBLK;
        }
        return fd;
}

/* Where a probe reads: a block device (its size and sector size asked of the kernel when 0), or the image a
 * loop device reads, from the device's offset, with the device's size and logical sector size. */
typedef struct ProbeArea {
        int fd;
        uint64_t offset;
        uint64_t size;
        uint32_t sector_size;
} ProbeArea;

/* Fills in what the area leaves to the kernel (a block device's size and sector size). */
static int probe_area_complete(ProbeArea *a)
{
        int ss = 0;

        if (a->size == 0 && ioctl(a->fd, BLKGETSIZE64, &a->size) < 0)
                return negative_errno();
        if (a->sector_size == 0) {
                if (ioctl(a->fd, BLKSSZGET, &ss) < 0)
                        return negative_errno();
                a->sector_size = (uint32_t)ss;
        }
        return 0;
}

static int probe_new(const ProbeArea *a, blkid_probe *ret)
{
        blkid_probe pr = blkid_new_probe();

        if (!pr)
                return -ENOMEM;
        errno = 0;
        if (blkid_probe_set_device(pr, a->fd, (blkid_loff_t)a->offset, (blkid_loff_t)a->size) < 0 ||
                blkid_probe_set_sectorsize(pr, a->sector_size) < 0) {
                int r = errno > 0 ? -errno : -EINVAL;
                blkid_free_probe(pr);
                return r;
        }
        *ret = pr;
        return 0;
}

/* Superblock probe only: with partition probing on, libblkid refuses to name a filesystem on a disk that
 * also carries a partition table (a hybrid ISO), which is exactly the case we need. only_types, if given,
 * limits the probe to those filesystems. Nothing found, or an ambivalent result (two signatures): 0 and
 * empty strings. */
static int probe_superblock(const ProbeArea *area, const char *const *only_types, char **ret_fstype,
        char **ret_label, char **ret_uuid)
{
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;
        ProbeArea a = *area;
        const char *v;
        int r;

        r = probe_area_complete(&a);
        if (r < 0)
                return r;
        r = probe_new(&a, &pr);
        if (r < 0)
                return r;
        blkid_probe_enable_partitions(pr, 0);
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID);

        if (only_types) {
                if (blkid_probe_filter_superblocks_type(pr, BLKID_FLTR_ONLYIN, (char **)only_types) < 0)
                        return -ENOMEM;
        } else if (partition_table_check_at(a.fd, a.offset, a.sector_size, a.size) == -EFBIG) {
                /* The zfs and md probers read the partition table of a whole disk (to ignore labels inside
                 * a partition): with a hostile GPT that would be a multi-GiB read. Leave those two out
                 * then. */
                static const char *const reads_table[] = { "zfs_member", "linux_raid_member", NULL };
                if (blkid_probe_filter_superblocks_type(pr, BLKID_FLTR_NOTIN, (char **)reads_table) < 0)
                        return -ENOMEM;
        }

        errno = 0;
        r = blkid_do_safeprobe(pr);
        if (r == -1 && (errno == EIO || errno == ENOMEM))
                return -errno;

        if (r == 0) {
                if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
                        fstype = strdup(v);
                if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
                        label = strdup(v);
                if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
                        uuid = strdup(v);
        }

        if (!fstype)
                fstype = strdup("");
        if (!label)
                label = strdup("");
        if (!uuid)
                uuid = strdup("");
        if (!fstype || !label || !uuid)
                return -ENOMEM;

        *ret_fstype = TAKE_PTR(fstype);
        *ret_label = TAKE_PTR(label);
        *ret_uuid = TAKE_PTR(uuid);
        return 0;
}

int probe_filesystem(const char *node, char **ret_fstype, char **ret_label, char **ret_uuid)
{
        return probe_filesystem_expecting(node, NULL, ret_fstype, ret_label, ret_uuid);
}

int probe_open_node(const char *node, dev_t devnum)
{
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (!node)
                return -EINVAL;
        fd = open_block_node(node);
        if (fd < 0)
                return fd;
        if (devnum != 0) {
                if (fstat(fd, &st) < 0)
                        return negative_errno();
                if (st.st_rdev != devnum)
                        return -ESTALE;
        }
        return TAKE_FD(fd);
}

int probe_filesystem_expecting(
        const char *node, const char *expected, char **ret_fstype, char **ret_label, char **ret_uuid)
{
        _cleanup_close_ int fd = -EBADF;

        if (!ret_fstype || !ret_label || !ret_uuid)
                return -EINVAL;
        fd = probe_open_node(node, 0);
        if (fd < 0)
                return fd;
        return probe_filesystem_fd(fd, expected, ret_fstype, ret_label, ret_uuid);
}

int probe_filesystem_fd(int fd, const char *expected, char **ret_fstype, char **ret_label, char **ret_uuid)
{
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;
        int r;

        if (fd < 0 || !ret_fstype || !ret_label || !ret_uuid)
                return -EINVAL;
        if (!isempty(expected)) {
                const char *const only[] = { expected, NULL };

                r = probe_superblock(&(ProbeArea){ .fd = fd }, only, &fstype, &label, &uuid);
                if (r < 0)
                        return r;
                if (streq(fstype, expected)) {
                        *ret_fstype = TAKE_PTR(fstype);
                        *ret_label = TAKE_PTR(label);
                        *ret_uuid = TAKE_PTR(uuid);
                        return 0;
                }
        }
        return probe_superblock(&(ProbeArea){ .fd = fd }, NULL, ret_fstype, ret_label, ret_uuid);
}

/* The table's view of one partition: type and name, matched by number (and start, in 512-byte units). */
typedef struct TableEntry {
        int partno;
        uint64_t start;
        char *type;
        char *name;
} TableEntry;

static void table_free(TableEntry *t, size_t n)
{
        if (!t)
                return;
        for (size_t i = 0; i < n; i++) {
                free(t[i].type);
                free(t[i].name);
        }
        free(t);
}

static int read_table(const ProbeArea *area, TableEntry **ret, size_t *ret_n)
{
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        TableEntry *t = NULL;
        blkid_partlist list;
        const char *pttype = NULL;
        blkid_parttable tab;
        ProbeArea a = *area;
        int count, r;
        size_t n = 0;

        *ret = NULL;
        *ret_n = 0;

        r = probe_area_complete(&a);
        if (r < 0)
                return r;
        r = partition_table_check_at(a.fd, a.offset, a.sector_size, a.size);
        if (r == -EFBIG)
                return 0; /* a hostile GPT: no types, no names */
        if (r < 0)
                return r;

        r = probe_new(&a, &pr);
        if (r < 0)
                return r;
        blkid_probe_enable_superblocks(pr, 0);
        blkid_probe_enable_partitions(pr, 1);

        list = blkid_probe_get_partitions(pr);
        if (!list)
                return 0;
        tab = blkid_partlist_get_table(list);
        if (tab)
                pttype = blkid_parttable_get_type(tab);

        count = blkid_partlist_numof_partitions(list);
        if (count <= 0)
                return 0;
        t = calloc((size_t)count, sizeof(TableEntry));
        if (!t)
                return -ENOMEM;

        for (int i = 0; i < count; i++) {
                blkid_partition par = blkid_partlist_get_partition(list, i);
                blkid_parttable ptab;
                const char *ptype = pttype, *s;
                char buf[16];

                if (!par)
                        continue;
                ptab = blkid_partition_get_table(par);
                if (ptab && blkid_parttable_get_type(ptab))
                        ptype = blkid_parttable_get_type(ptab);

                t[n].partno = blkid_partition_get_partno(par);
                t[n].start = (uint64_t)MAX(blkid_partition_get_start(par), 0);

                s = blkid_partition_get_type_string(par);
                if (s) {
                        t[n].type = strdup(s);
                        if (t[n].type && streq_ptr(ptype, "gpt"))
                                for (char *c = t[n].type; *c; c++)
                                        *c = (char)tolower((unsigned char)*c);
                } else {
                        snprintf(buf, sizeof(buf), "0x%x", (unsigned)blkid_partition_get_type(par));
                        t[n].type = strdup(buf);
                }
                t[n].name = strdup_empty(blkid_partition_get_name(par));
                n++;
                if (!t[n - 1].type || !t[n - 1].name) {
                        table_free(t, n);
                        return -ENOMEM;
                }
        }
        *ret = t;
        *ret_n = n;
        return 0;
}

static const TableEntry *table_find(const TableEntry *t, size_t n, const KernelPartition *p)
{
        const TableEntry *by_number = NULL;

        for (size_t i = 0; i < n; i++) {
                if (t[i].partno != (int)p->number)
                        continue;
                if (t[i].start * 512 == p->start)
                        return t + i;
                if (!by_number)
                        by_number = t + i;
        }
        return by_number;
}

static int fill_entry(PartitionInfo *e, const char *node, unsigned number, dev_t devnum, uint64_t offset,
        uint64_t size, const char *type, const char *name, char *fstype, char *label, char *uuid)
{
        *e = (PartitionInfo){
                .node = strdup(node),
                .number = number,
                .devnum = devnum,
                .offset = offset,
                .size = size,
                .part_type = strdup_empty(type),
                .part_name = strdup_empty(name),
                .fstype = fstype,
                .label = label,
                .uuid = uuid,
                .mount_point = strdup(""),
        };
        if (!e->node || !e->part_type || !e->part_name || !e->mount_point) {
                partition_info_clear(e);
                return -ENOMEM;
        }
        return 0;
}

/* An empty result for a partition whose filesystem could not be read. */
static int empty_strings(char **a, char **b, char **c)
{
        *a = strdup("");
        *b = strdup("");
        *c = strdup("");
        if (*a && *b && *c)
                return 0;
        *a = mfree(*a);
        *b = mfree(*b);
        *c = mfree(*c);
        return -ENOMEM;
}

int probe_loop_open(unsigned loop_number, int image_fd, uint64_t image_offset, const KernelPartition *known,
        size_t n_known, LoopProbeArea *ret)
{
        _cleanup_close_ int fd = -EBADF, sysfd = -EBADF;
        _cleanup_free_ KernelPartition *parts = NULL;
        char node[LOOP_NODE_MAX];
        size_t n_parts = 0;
        uint64_t size = 0;
        struct stat st;
        int ss = 0, r;

        if (!ret)
                return -EINVAL;
        sysfd = sysfs_open_loop(loop_number, 0);
        if (sysfd < 0)
                return sysfd;
        if (faccessat(sysfd, "loop", F_OK, 0) < 0)
                return -ENXIO; /* not bound */

        fd = open_block_node(loop_node_format(node, loop_number, 0));
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0 || ioctl(fd, BLKSSZGET, &ss) < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0)
                return negative_errno();

        if (known) {
                /* The kernel's list the caller read a moment ago: not read again. */
                if (n_known > 0) {
                        parts = malloc(n_known * sizeof(KernelPartition));
                        if (!parts)
                                return -ENOMEM;
                        memcpy(parts, known, n_known * sizeof(KernelPartition));
                }
                n_parts = n_known;
        } else {
                r = partition_list_kernel(loop_number, &parts, &n_parts);
                if (r < 0)
                        return r;
        }

        *ret = (LoopProbeArea){
                .loop_number = loop_number,
                .devnum = st.st_rdev,
                .disk_fd = TAKE_FD(fd),
                .size = size,
                .sector_size = (uint32_t)ss,
                .image_fd = image_fd,
                .image_offset = image_offset,
                .parts = TAKE_PTR(parts),
                .n_parts = n_parts,
        };
        return 0;
}

void probe_loop_done(LoopProbeArea *a)
{
        if (!a)
                return;
        safe_close(a->disk_fd);
        free(a->parts);
        *a = (LoopProbeArea){ .disk_fd = -EBADF, .image_fd = -EBADF };
}

/* The whole device's entry, when it carries a filesystem itself: 1 and *e filled, or 0. */
static int probe_whole_disk(
        const ProbeArea *disk, unsigned loop_number, dev_t devnum, bool has_partitions, PartitionInfo *e)
{
        /* On a disk that also has partitions, only these can cover the whole of it: hybrid images. Any
         * other signature there is left over from an earlier use of the disk, and the full probe costs
         * more than all the partitions' together (its probers read all over the device). */
        static const char *const whole_disk_types[] = { "iso9660", "udf", NULL };
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;
        char node[LOOP_NODE_MAX];
        int r;

        r = probe_superblock(disk, has_partitions ? whole_disk_types : NULL, &fstype, &label, &uuid);
        if (r < 0)
                return r;
        if (isempty(fstype))
                return 0;
        r = fill_entry(e, loop_node_format(node, loop_number, 0), 0, devnum, 0, disk->size, "", "",
                TAKE_PTR(fstype), TAKE_PTR(label), TAKE_PTR(uuid));
        return r < 0 ? r : 1;
}

/* The entry of partition part of loopN (te: its table entry, if known), its filesystem read from the disk
 * (the device or the image) where the partition lies: the partition node reads the same bytes. A partition
 * whose filesystem cannot be read is listed all the same, with what is known. */
static int probe_one_partition(unsigned loop_number, const ProbeArea *disk, const KernelPartition *part,
        const TableEntry *te, PartitionInfo *e)
{
        char *fstype = NULL, *label = NULL, *uuid = NULL;
        char pnode[LOOP_NODE_MAX];
        int r = -ERANGE;

        if (part->start < disk->size && part->size <= disk->size - part->start)
                r = probe_superblock(&(ProbeArea){ .fd = disk->fd,
                                             .offset = disk->offset + part->start,
                                             .size = part->size,
                                             .sector_size = disk->sector_size },
                        NULL, &fstype, &label, &uuid);
        if (r == -ENOMEM)
                return r;
        if (r < 0 && empty_strings(&fstype, &label, &uuid) < 0)
                return -ENOMEM;
        return fill_entry(e, loop_node_format(pnode, loop_number, part->number), part->number, part->devnum,
                part->start, part->size, te ? te->type : "", te ? te->name : "", fstype, label, uuid);
}

/* probe_loop_read() through one disk: the device, or the image it reads. */
static int probe_loop_disk(const LoopProbeArea *a, const ProbeArea *disk, PartitionInfo **ret, size_t *ret_n)
{
        TableEntry *table = NULL;
        PartitionInfo *list = NULL;
        size_t ntable = 0, n = 0;
        int r;

        list = calloc(a->n_parts + 1, sizeof(PartitionInfo));
        if (!list)
                return -ENOMEM;

        /* The whole device: listed only when it carries a filesystem itself. */
        r = probe_whole_disk(disk, a->loop_number, a->devnum, a->n_parts > 0, &list[n]);
        if (r < 0)
                goto fail;
        n += r;

        if (a->n_parts > 0) {
                r = read_table(disk, &table, &ntable);
                if (r < 0)
                        goto fail;
        }
        for (size_t i = 0; i < a->n_parts; i++) {
                r = probe_one_partition(a->loop_number, disk, &a->parts[i],
                        table_find(table, ntable, &a->parts[i]), &list[n]);
                if (r < 0)
                        goto fail;
                n++;
        }

        table_free(table, ntable);
        *ret = list;
        *ret_n = n;
        return 0;

fail:
        table_free(table, ntable);
        partition_info_array_free(list, n);
        return r;
}

void probe_drop_cached(int fd)
{
        struct stat st;

        if (fstat(fd, &st) >= 0 && S_ISBLK(st.st_mode))
                (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

int probe_loop_read(const LoopProbeArea *a, PartitionInfo **ret, size_t *ret_n)
{
        int r = -EBADF;

        if (!a || !ret || !ret_n || (a->disk_fd < 0 && a->image_fd < 0) || a->sector_size == 0)
                return -EINVAL;
        if (a->size == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        if (a->image_fd >= 0)
                r = probe_loop_disk(a,
                        &(ProbeArea){ .fd = a->image_fd,
                                .offset = a->image_offset,
                                .size = a->size,
                                .sector_size = a->sector_size },
                        ret, ret_n);
        /* Through the device when there is no image, or it cannot be read as it is (an fd opened with
         * O_DIRECT takes only aligned reads): the list must not come out empty for a device that has some.
         */
        if (r < 0 && r != -ENOMEM && a->disk_fd >= 0) {
                /* Only another node (a partition's) writes past loopN's cache. All of it, not the
                 * partitions' ranges: the kernel keeps a folio a range covers only in part, and a block
                 * device's folios may be larger than a page. */
                if (a->n_parts > 0)
                        probe_drop_cached(a->disk_fd);
                r = probe_loop_disk(a,
                        &(ProbeArea){ .fd = a->disk_fd, .size = a->size, .sector_size = a->sector_size },
                        ret, ret_n);
        }
        return r;
}

/* probe_loop_device() and probe_loop_device_image(): opened and read in the calling process. */
static int probe_loop_here(
        unsigned loop_number, int image_fd, uint64_t image_offset, PartitionInfo **ret, size_t *ret_n)
{
        LoopProbeArea a;
        int r;

        if (!ret || !ret_n)
                return -EINVAL;
        r = probe_loop_open(loop_number, image_fd, image_offset, NULL, 0, &a);
        if (r < 0)
                return r;
        r = probe_loop_read(&a, ret, ret_n);
        probe_loop_done(&a);
        return r;
}

int probe_loop_device(unsigned loop_number, PartitionInfo **ret, size_t *ret_n)
{
        return probe_loop_here(loop_number, -EBADF, 0, ret, ret_n);
}

int probe_loop_device_image(
        unsigned loop_number, int image_fd, uint64_t image_offset, PartitionInfo **ret, size_t *ret_n)
{
        if (image_fd < 0)
                return -EBADF;
        return probe_loop_here(loop_number, image_fd, image_offset, ret, ret_n);
}
