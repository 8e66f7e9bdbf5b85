/* partition-table.c: GPT and DOS partition tables written with libfdisk on a loop device. Never logs. */
#include "partition-table.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <libfdisk/libfdisk.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "partition.h"
#include "utf8.h"

/* The alignment of the defaults: 1 MiB, as parted and sfdisk. */
#define PARTITION_ALIGN (UINT64_C(1) << 20)

/* The aliases of CreatePartition's type, per kind of table. fat is FAT32 with LBA (0x0c), which the tools
 * of every OS read as FAT of any size; ntfs and fat are "Microsoft basic data" on GPT. */
static const struct {
        const char *alias;
        const char *gpt;
        unsigned dos;
} type_aliases[] = {
        { "linux", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 0x83 },
        { "esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 0xef },
        { "swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", 0x82 },
        { "fat", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0c },
        { "ntfs", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x07 },
};

/* Sets *ret_why (if not NULL) to the formatted reason and returns r. */
_printf_(3, 4) static int why(char **ret_why, int r, const char *format, ...)
{
        va_list ap;

        if (!ret_why)
                return r;
        va_start(ap, format);
        if (vasprintf(ret_why, format, ap) < 0)
                *ret_why = NULL;
        va_end(ap);
        return r;
}

static inline void fdisk_unref_contextp(struct fdisk_context **cxt)
{
        fdisk_unref_context(*cxt);
}
static inline void fdisk_unref_partitionp(struct fdisk_partition **pa)
{
        fdisk_unref_partition(*pa);
}
static inline void fdisk_unref_tablep(struct fdisk_table **tb)
{
        fdisk_unref_table(*tb);
}
static inline void fdisk_unref_parttypep(struct fdisk_parttype **t)
{
        fdisk_unref_parttype(*t);
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

int partition_table_geometry(int fd, uint32_t sector_size, uint32_t *ret_sector_size, uint64_t *ret_size)
{
        struct stat st;
        int ss = 512;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, ret_size) < 0)
                        return negative_errno();
                if (sector_size == 0 && ioctl(fd, BLKSSZGET, &ss) < 0)
                        return negative_errno();
        } else if (S_ISREG(st.st_mode))
                *ret_size = (uint64_t)st.st_size;
        else
                return -ENOTBLK;
        *ret_sector_size = sector_size != 0 ? sector_size : (uint32_t)ss;
        return 0;
}

/* A GPT header (primary, backup, or the one at the primary's alternative_lba) may ask for an entry array of
 * up to 4 GiB, which libfdisk would allocate and read as soon as it looks at the device: such a device is
 * refused as libblkid's reads of it are (partition_table_check(): -EFBIG). With wipe (a new table replaces
 * it anyway) the headers are zeroed instead. */
static int check_gpt_entries(int fd, uint32_t sector_size, bool wipe)
{
        uint64_t size;
        uint32_t ss;
        int r;

        r = partition_table_geometry(fd, sector_size, &ss, &size);
        if (r < 0)
                return r;
        if (!wipe)
                return partition_table_check(fd, ss, size);
        r = partition_table_wipe_hostile(fd, ss, size);
        return r < 0 ? r : 0;
}

/* A libfdisk context on fd with the logical sector size sector_size (0: the device's). libfdisk never
 * closes fd, and never prints: without an ask callback its messages go nowhere. wipe_hostile: see
 * check_gpt_entries(). */
static int context_open(
        int fd, uint32_t sector_size, bool read_only, bool wipe_hostile, struct fdisk_context **ret)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        int r;

        if (fd < 0 ||
                (sector_size != 0 &&
                        (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)))
                return -EINVAL;
        r = check_gpt_entries(fd, sector_size, wipe_hostile && !read_only);
        if (r < 0)
                return r;
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
        r = context_open(fd, sector_size, false, true, &cxt);
        if (r < 0)
                return r;
        /* Signatures of what was there (a filesystem, another kind of table) go when the table is written.
         */
        r = fdisk_create_disklabel(cxt, label);
        if (r < 0)
                return r;
        r = fdisk_enable_wipe(cxt, 1);
        if (r < 0)
                return r;
        return context_write(cxt, fd);
}

int partition_table_create(int fd, const char *label)
{
        return partition_table_create_sized(fd, 0, label);
}

static PartitionTableKind context_kind(struct fdisk_context *cxt)
{
        if (!fdisk_has_label(cxt))
                return PARTITION_TABLE_NONE;
        if (fdisk_is_label(cxt, GPT))
                return PARTITION_TABLE_GPT;
        if (fdisk_is_label(cxt, DOS))
                return PARTITION_TABLE_DOS;
        return PARTITION_TABLE_NONE;
}

/* A used partition of the table: number 1.., first and last sector; container: a DOS extended partition,
 * nested: a logical one inside it. */
typedef struct Slot {
        unsigned number;
        uint64_t first;
        uint64_t last;
        bool container;
        bool nested;
} Slot;

static int compare_slots(const void *a, const void *b)
{
        const Slot *x = a, *y = b;

        return x->first < y->first ? -1 : x->first > y->first;
}

/* Every used partition of cxt's table, sorted by start. */
static int context_slots(struct fdisk_context *cxt, Slot **ret, size_t *ret_n)
{
        _cleanup_(fdisk_unref_tablep) struct fdisk_table *tb = NULL;
        _cleanup_free_ Slot *slots = NULL;
        size_t n = 0, max;
        int r;

        r = fdisk_get_partitions(cxt, &tb);
        if (r < 0)
                return r;
        max = fdisk_table_get_nents(tb);
        slots = calloc(max ? max : 1, sizeof(Slot));
        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < max; i++) {
                struct fdisk_partition *pa = fdisk_table_get_partition(tb, i);

                if (!pa || !fdisk_partition_is_used(pa) || !fdisk_partition_has_start(pa) ||
                        fdisk_partition_get_size(pa) == 0)
                        continue;
                slots[n++] = (Slot){
                        .number = (unsigned)fdisk_partition_get_partno(pa) + 1,
                        .first = fdisk_partition_get_start(pa),
                        .last = fdisk_partition_get_start(pa) + fdisk_partition_get_size(pa) - 1,
                        .container = fdisk_partition_is_container(pa),
                        .nested = fdisk_partition_is_nested(pa),
                };
        }
        qsort(slots, n, sizeof(Slot), compare_slots);
        *ret = TAKE_PTR(slots);
        *ret_n = n;
        return 0;
}

static int compare_partitions(const void *a, const void *b)
{
        const TablePartition *x = a, *y = b;

        return x->number < y->number ? -1 : x->number > y->number;
}

int partition_table_read(int fd, uint32_t sector_size, PartitionTableKind *ret_kind,
        TablePartition **ret_parts, size_t *ret_n)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        _cleanup_free_ TablePartition *parts = NULL;
        _cleanup_free_ Slot *slots = NULL;
        PartitionTableKind kind;
        size_t n = 0, n_slots = 0;
        uint64_t ss;
        int r;

        r = context_open(fd, sector_size, true, false, &cxt);
        if (r < 0)
                return r;
        kind = context_kind(cxt);
        ss = fdisk_get_sector_size(cxt);
        if (kind != PARTITION_TABLE_NONE) {
                r = context_slots(cxt, &slots, &n_slots);
                if (r < 0)
                        return r;
        }
        parts = calloc(n_slots ? n_slots : 1, sizeof(TablePartition));
        if (!parts)
                return -ENOMEM;
        for (size_t i = 0; i < n_slots; i++)
                if (!slots[i].container && !slots[i].nested)
                        parts[n++] = (TablePartition){ .number = slots[i].number,
                                .offset = slots[i].first * ss,
                                .size = (slots[i].last - slots[i].first + 1) * ss };
        qsort(parts, n, sizeof(TablePartition), compare_partitions);

        if (ret_kind)
                *ret_kind = kind;
        if (ret_parts)
                *ret_parts = TAKE_PTR(parts);
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* ---- what a caller may ask for ---- */

static bool is_gpt_guid(const char *s)
{
        if (strlen(s) != 36)
                return false;
        for (size_t i = 0; i < 36; i++)
                if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
                        return false;
        return true;
}

/* "0x83" (one or two hex digits after 0x) into 0x83; -EINVAL for anything else. */
static int parse_dos_type(const char *s, unsigned *ret)
{
        size_t len;

        if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
                return -EINVAL;
        len = strlen(s + 2);
        if (len < 1 || len > 2 || strspn(s + 2, "0123456789abcdefABCDEF") != len)
                return -EINVAL;
        *ret = (unsigned)strtoul(s + 2, NULL, 16);
        return 0;
}

static bool is_dos_extended(unsigned code)
{
        return code == 0x05 || code == 0x0f || code == 0x85;
}

bool partition_type_is_extended(const char *type)
{
        unsigned code;

        return type && parse_dos_type(type, &code) == 0 && is_dos_extended(code);
}

static int find_alias(const char *type)
{
        for (size_t i = 0; i < ELEMENTSOF(type_aliases); i++)
                if (streq(type, type_aliases[i].alias))
                        return (int)i;
        return -ENOENT;
}

int partition_type_check(const char *type)
{
        unsigned code;

        if (isempty(type))
                return -EINVAL;
        if (find_alias(type) >= 0 || is_gpt_guid(type))
                return 0;
        /* 0x00 marks an unused entry; an extended partition is a container loopd does not manage. */
        if (parse_dos_type(type, &code) < 0 || code == 0 || is_dos_extended(code))
                return -EINVAL;
        return 0;
}

int partition_name_check(const char *name)
{
        size_t units = 0;
        uint32_t cp;

        if (!name)
                return 0;
        for (const char *p = name; *p;) {
                size_t k = utf8_decode(p, &cp);

                if (k == 0 || cp < 0x20 || cp == 0x7f)
                        return -EINVAL;
                units += cp > 0xffff ? 2 : 1; /* GPT names are UTF-16: a surrogate pair counts two */
                p += k;
        }
        return units <= 36 ? 0 : -EINVAL;
}

/* The libfdisk type of type (checked by partition_type_check()) for a table of kind. */
static int type_for(PartitionTableKind kind, const char *type, struct fdisk_parttype **ret, char **ret_why)
{
        const char *guid = NULL;
        unsigned code = 0;
        int i;

        i = find_alias(type);
        if (i >= 0) {
                guid = type_aliases[i].gpt;
                code = type_aliases[i].dos;
        } else if (is_gpt_guid(type)) {
                if (kind != PARTITION_TABLE_GPT)
                        return why(
                                ret_why, -EINVAL, "type: %s is a GPT type GUID, and the table is dos", type);
                guid = type;
        } else if (parse_dos_type(type, &code) == 0 && code != 0 && !is_dos_extended(code)) {
                if (kind != PARTITION_TABLE_DOS)
                        return why(ret_why, -EINVAL, "type: %s is a DOS type, and the table is gpt", type);
        } else
                return why(ret_why, -EINVAL,
                        "type: '%s' is not a GPT type GUID, a DOS type (0x83) or one of "
                        "linux, esp, swap, fat, ntfs",
                        type);

        *ret = fdisk_new_unknown_parttype(
                kind == PARTITION_TABLE_DOS ? code : 0, kind == PARTITION_TABLE_GPT ? guid : NULL);
        return *ret ? 0 : -ENOMEM;
}

/* ---- adding and deleting ---- */

/* The first free entry of the table (0-based): DOS has four primary ones, GPT as many as its header says, of
 * which only the first PARTITION_MAX - 1 (numbers 1 to 255) can be a partition of the device: one written
 * past them would be in the table, never in the kernel. */
static int free_entry(struct fdisk_context *cxt, PartitionTableKind kind, size_t *ret, char **ret_why)
{
        size_t entries = kind == PARTITION_TABLE_DOS ? 4 : fdisk_get_npartitions(cxt);
        size_t max = MIN(entries, (size_t)(PARTITION_MAX - 1));

        for (size_t i = 0; i < max; i++)
                if (!fdisk_is_partition_used(cxt, i)) {
                        *ret = i;
                        return 0;
                }
        if (kind == PARTITION_TABLE_DOS)
                return why(ret_why, -ENOSPC,
                        "offset: the dos table has 4 partitions already (loopd writes no extended ones)");
        if (entries > max)
                return why(ret_why, -ENOSPC,
                        "offset: the gpt table's first %zu entries, the most the kernel takes, are in use",
                        max);
        return why(ret_why, -ENOSPC, "offset: every entry of the gpt table is in use (%zu)", max);
}

/* Where the new partition goes, in sectors: [*ret_first, *ret_last], checked against the table's usable
 * space and its partitions (slots, sorted by start). */
static int place(const PartitionRequest *req, uint64_t ss, uint64_t usable_first, uint64_t usable_last,
        const Slot *slots, size_t n, uint64_t *ret_first, uint64_t *ret_last, char **ret_why)
{
        uint64_t grain = MAX(PARTITION_ALIGN / ss, UINT64_C(1));
        uint64_t first = 0, gap_last = 0, last = 0;

        if (req->offset == 0) {
                /* The first gap that holds an aligned start and the size asked (at least one grain). */
                uint64_t want = req->size ? req->size / ss : grain, cursor = usable_first;
                bool found = false;

                for (size_t i = 0; i <= n && !found; i++) {
                        uint64_t end = i < n ? (slots[i].first ? slots[i].first - 1 : 0) : usable_last;

                        end = MIN(end, usable_last);
                        first = (cursor + grain - 1) / grain * grain;
                        if (end >= first && end - first + 1 >= want) {
                                found = true;
                                gap_last = end;
                        }
                        if (i < n)
                                cursor = MAX(cursor, slots[i].last + 1);
                }
                if (!found)
                        return req->size
                                ? why(ret_why, -ENOSPC,
                                          "size: no free space of %" PRIu64 " bytes is left on the device",
                                          req->size)
                                : why(ret_why, -ENOSPC, "offset: no free space is left on the device");
        } else {
                first = req->offset / ss;
                if (first < usable_first)
                        return why(ret_why, -EINVAL,
                                "offset: %" PRIu64 " is before the first usable byte of the table (%" PRIu64
                                ")",
                                req->offset, usable_first * ss);
                if (first > usable_last)
                        return why(ret_why, -EINVAL,
                                "offset: %" PRIu64
                                " is past the end of the usable space (the last usable byte "
                                "is %" PRIu64 ")",
                                req->offset, (usable_last + 1) * ss - 1);
                gap_last = usable_last;
                for (size_t i = 0; i < n; i++) {
                        if (first >= slots[i].first && first <= slots[i].last)
                                return why(ret_why, -EINVAL,
                                        "offset: %" PRIu64 " lies inside partition %u (bytes %" PRIu64
                                        " to %" PRIu64 ")",
                                        req->offset, slots[i].number, slots[i].first * ss,
                                        (slots[i].last + 1) * ss - 1);
                        if (slots[i].first > first)
                                gap_last = MIN(gap_last, slots[i].first - 1);
                }
        }

        if (req->size == 0) {
                /* To the end of the gap, the end aligned like the start where the gap allows. */
                uint64_t end = (gap_last + 1) / grain * grain;

                last = end > first ? end - 1 : gap_last;
        } else {
                last = first + req->size / ss - 1;
                if (last > usable_last)
                        return why(ret_why, -EINVAL,
                                "size: %" PRIu64 " bytes from byte %" PRIu64
                                " go past the end of the usable "
                                "space (the last usable byte is %" PRIu64 ")",
                                req->size, first * ss, (usable_last + 1) * ss - 1);
                for (size_t i = 0; i < n; i++)
                        if (slots[i].first > first && slots[i].first <= last)
                                return why(ret_why, -EINVAL,
                                        "size: %" PRIu64 " bytes from byte %" PRIu64 " overlap partition %u "
                                        "(bytes %" PRIu64 " to %" PRIu64 ")",
                                        req->size, first * ss, slots[i].number, slots[i].first * ss,
                                        (slots[i].last + 1) * ss - 1);
        }
        *ret_first = first;
        *ret_last = last;
        return 0;
}

int partition_table_add(
        int fd, uint32_t sector_size, const PartitionRequest *req, TablePartition *ret, char **ret_why)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        _cleanup_(fdisk_unref_partitionp) struct fdisk_partition *pa = NULL, *got = NULL;
        _cleanup_(fdisk_unref_parttypep) struct fdisk_parttype *type = NULL;
        _cleanup_free_ Slot *slots = NULL;
        uint64_t ss, usable_first, usable_last, first = 0, last = 0;
        PartitionTableKind kind;
        size_t n = 0, entry;
        int r;

        if (!req)
                return -EINVAL;
        if (ret_why)
                *ret_why = NULL;
        r = context_open(fd, sector_size, false, false, &cxt);
        if (r == -EFBIG)
                return why(ret_why, r,
                        "the device's GPT header asks for more partition entries than the kernel reads; Format "
                        "it as gpt or dos first");
        if (r < 0)
                return r;
        kind = context_kind(cxt);
        if (kind == PARTITION_TABLE_NONE)
                return why(ret_why, -EMEDIUMTYPE, "no partition table: Format it as gpt or dos first");
        ss = fdisk_get_sector_size(cxt);

        r = type_for(kind, isempty(req->type) ? "linux" : req->type, &type, ret_why);
        if (r < 0)
                return r;
        if (!isempty(req->name) && kind == PARTITION_TABLE_DOS)
                return why(ret_why, -EINVAL, "name: a dos table has no partition names");
        if (partition_name_check(req->name) < 0)
                return why(ret_why, -EINVAL,
                        "name: must be UTF-8 of at most 36 characters without control characters");
        if (req->offset % ss != 0)
                return why(ret_why, -EINVAL,
                        "offset: %" PRIu64 " is not a multiple of the %" PRIu64 "-byte sector size",
                        req->offset, ss);
        if (req->size % ss != 0)
                return why(ret_why, -EINVAL,
                        "size: %" PRIu64 " is not a multiple of the %" PRIu64 "-byte sector size", req->size,
                        ss);

        r = free_entry(cxt, kind, &entry, ret_why);
        if (r < 0)
                return r;
        r = context_slots(cxt, &slots, &n);
        if (r < 0)
                return r;
        usable_first = fdisk_get_first_lba(cxt);
        usable_last = fdisk_get_last_lba(cxt);
        /* libfdisk keeps the first MiB of a DOS disk free by default; an explicit start below it (the
         * classic sector 63) is the caller's to ask for. */
        if (kind == PARTITION_TABLE_DOS && req->offset != 0 && req->offset / ss < usable_first) {
                fdisk_set_first_lba(cxt, 1);
                usable_first = 1;
        }
        r = place(req, ss, usable_first, usable_last, slots, n, &first, &last, ret_why);
        if (r < 0)
                return r;
        if (kind == PARTITION_TABLE_DOS && (first > UINT32_MAX || last - first + 1 > UINT32_MAX))
                return why(ret_why, -EINVAL,
                        "size: a dos table cannot describe a partition past 2^32 sectors; use gpt");

        pa = fdisk_new_partition();
        if (!pa)
                return -ENOMEM;
        if (fdisk_partition_set_partno(pa, entry) < 0 || fdisk_partition_set_start(pa, first) < 0 ||
                fdisk_partition_set_size(pa, last - first + 1) < 0 ||
                fdisk_partition_size_explicit(pa, 1) < 0 || fdisk_partition_set_type(pa, type) < 0)
                return -ENOMEM;
        if (!isempty(req->name) && fdisk_partition_set_name(pa, req->name) < 0)
                return -ENOMEM;
        r = fdisk_add_partition(cxt, pa, &entry);
        if (r < 0)
                return why(ret_why, r, "offset: libfdisk refused the partition at byte %" PRIu64 ": %s",
                        first * ss, strerror(-r));
        if (req->bootable) {
                r = fdisk_toggle_partition_flag(
                        cxt, entry, kind == PARTITION_TABLE_DOS ? DOS_FLAG_ACTIVE : GPT_FLAG_LEGACYBOOT);
                if (r < 0)
                        return r;
        }

        /* Exactly what was planned, or nothing: libfdisk moves a start it finds taken. */
        r = fdisk_get_partition(cxt, entry, &got);
        if (r < 0)
                return r;
        if (fdisk_partition_get_start(got) != first || fdisk_partition_get_size(got) != last - first + 1)
                return why(ret_why, -EINVAL,
                        "offset: libfdisk would place the partition at sectors %" PRIu64 "+%" PRIu64
                        ", not %" PRIu64 "+%" PRIu64,
                        (uint64_t)fdisk_partition_get_start(got), (uint64_t)fdisk_partition_get_size(got),
                        first, last - first + 1);

        r = context_write(cxt, fd);
        if (r < 0)
                return r;
        if (ret)
                *ret = (TablePartition){
                        .number = (unsigned)entry + 1, .offset = first * ss, .size = (last - first + 1) * ss
                };
        return 0;
}

static int delete_partition(int fd, uint32_t sector_size, unsigned number, bool write, TablePartition *ret)
{
        _cleanup_(fdisk_unref_contextp) struct fdisk_context *cxt = NULL;
        _cleanup_(fdisk_unref_partitionp) struct fdisk_partition *pa = NULL;
        PartitionTableKind kind;
        uint64_t ss;
        int r;

        r = context_open(fd, sector_size, !write, false, &cxt);
        if (r < 0)
                return r;
        kind = context_kind(cxt);
        if (kind == PARTITION_TABLE_NONE)
                return -EMEDIUMTYPE;
        if (number == 0 || number > fdisk_get_npartitions(cxt) || !fdisk_is_partition_used(cxt, number - 1))
                return -ENOENT;
        r = fdisk_get_partition(cxt, number - 1, &pa);
        if (r < 0)
                return r;
        /* Deleting a logical partition renumbers the ones after it, and an extended one takes its logical
         * ones along: loopd writes primary partitions only and deletes nothing else. */
        if (fdisk_partition_is_container(pa) || fdisk_partition_is_nested(pa))
                return -EOPNOTSUPP;
        ss = fdisk_get_sector_size(cxt);

        if (write) {
                r = fdisk_delete_partition(cxt, number - 1);
                if (r < 0)
                        return r;
                r = context_write(cxt, fd);
                if (r < 0)
                        return r;
        }
        if (ret)
                *ret = (TablePartition){ .number = number,
                        .offset = fdisk_partition_get_start(pa) * ss,
                        .size = fdisk_partition_get_size(pa) * ss };
        return 0;
}

int partition_table_delete(int fd, uint32_t sector_size, unsigned number, TablePartition *ret)
{
        return delete_partition(fd, sector_size, number, true, ret);
}

int partition_table_delete_check(int fd, uint32_t sector_size, unsigned number, TablePartition *ret)
{
        return delete_partition(fd, sector_size, number, false, ret);
}
