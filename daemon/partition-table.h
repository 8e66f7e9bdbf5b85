/* partition-table.h: GPT and DOS partition tables written with libfdisk on a loop device. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum PartitionTableKind {
        PARTITION_TABLE_NONE = 0, /* no GPT or DOS table (or another kind loopd does not write) */
        PARTITION_TABLE_GPT,
        PARTITION_TABLE_DOS,
} PartitionTableKind;

/* "gpt" / "dos" (NULL for NONE) and back (-EINVAL for anything else). */
const char *partition_table_kind_to_string(PartitionTableKind kind);
int partition_table_kind_from_string(const char *s, PartitionTableKind *ret);

/* Every function below works on fd, a loop device opened O_RDWR (or, for the unit tests, a regular file),
 * with the logical sector size sector_size; 0 means what the device says (BLKSSZGET; 512 for a file). A
 * table written with 4096 is 4K-native: the GPT header is at byte 4096, every LBA counts 4096 bytes. */

/* The logical sector size libfdisk uses on fd (sector_size, else the device's, else 512 for a file) and fd's
 * size in bytes. -ENOTBLK for what is neither a block device nor a regular file. */
int partition_table_geometry(int fd, uint32_t sector_size, uint32_t *ret_sector_size, uint64_t *ret_size);

/* Writes an empty table of kind label ("gpt" or "dos") on the whole of fd, wiping the signatures of what
 * was there (filesystems, another table) first. partition_table_create() is the device's sector size. */
int partition_table_create(int fd, const char *label);
int partition_table_create_sized(int fd, uint32_t sector_size, const char *label);

/* One partition of a table, in bytes. */
typedef struct TablePartition {
        unsigned number; /* 1.., as the kernel names it (loopNpM) */
        uint64_t offset;
        uint64_t size;
} TablePartition;

/* The table's kind and its partitions, sorted by number (DOS extended/logical ones are not listed: loopd
 * writes primary partitions only). No table: PARTITION_TABLE_NONE and none. ret_parts and ret_n may be NULL.
 */
int partition_table_read(int fd, uint32_t sector_size, PartitionTableKind *ret_kind,
        TablePartition **ret_parts, size_t *ret_n);

/* What CreatePartition asks for. */
typedef struct PartitionRequest {
        uint64_t offset; /* bytes; 0: the first free start, aligned to 1 MiB */
        uint64_t size; /* bytes; 0: to the end of the free space at offset */
        const char *type; /* GPT type GUID, DOS type ("0x83"), or an alias (partition_type_check()) */
        const char *name; /* GPT partition name; NULL or "" for none (a name on a DOS table is refused) */
        bool bootable; /* DOS: the boot (active) flag; GPT: the legacy BIOS bootable attribute */
} PartitionRequest;

/* Is type something CreatePartition may be given: an alias (linux, esp, swap, fat, ntfs), a GPT type GUID
 * (8-4-4-4-12 hex digits) or a DOS type (0x01..0xff, not an extended one)? 0 or -EINVAL. Which of them fits
 * the table is partition_table_add()'s check. */
int partition_type_check(const char *type);
/* Is type (as a probe names it: "0x5") a DOS extended partition's, a container of logical ones? */
bool partition_type_is_extended(const char *type);
/* Is name a GPT partition name: valid UTF-8, no control characters, at most 36 UTF-16 code units? */
int partition_name_check(const char *name);

/* Adds a partition as req says. An explicit offset is honoured as given (not rounded: a caller who names a
 * byte gets that byte) and must be a multiple of the sector size; so must an explicit size. Only the
 * defaults are aligned (offset 0: the first free 1 MiB-aligned start; size 0: to the end of that free
 * space). Returns the new partition in *ret. Refusals return -EINVAL (or -ENOSPC when the table or the
 * device is full, -EMEDIUMTYPE when fd has no GPT or DOS table) with *ret_why (may be NULL) a message that
 * names the field: "offset: ...", "size: ...", "type: ...", "name: ...". Nothing is written then. */
int partition_table_add(
        int fd, uint32_t sector_size, const PartitionRequest *req, TablePartition *ret, char **ret_why);

/* Deletes partition number from the table (its bytes stay). -ENOENT if the table has no such partition,
 * -EMEDIUMTYPE if fd has no GPT or DOS table. *ret (may be NULL) is what was deleted. */
int partition_table_delete(int fd, uint32_t sector_size, unsigned number, TablePartition *ret);
/* What partition_table_delete() would say (the same errors), reading only: nothing is written. */
int partition_table_delete_check(int fd, uint32_t sector_size, unsigned number, TablePartition *ret);
