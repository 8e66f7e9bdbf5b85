/* format-fs.h: making a filesystem on a block device (each mkfs tool's command line, run in the sandbox),
 * checking labels and UUIDs per filesystem, wiping signatures and zeroing a device. Kernel/process layer:
 * never logs above debug, returns -errno. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* What Format's type names: a filesystem made by its mkfs tool, a partition table, or nothing at all. */
typedef enum FormatKind {
        FORMAT_FILESYSTEM,
        FORMAT_TABLE,
        FORMAT_EMPTY,
} FormatKind;

typedef struct FormatType FormatType;

/* The type called name ("ext4", "gpt", "empty", ...), or NULL when Format does not make it. */
const FormatType *format_type_find(const char *name);
const char *format_type_name(const FormatType *t);
FormatKind format_type_kind(const FormatType *t);
/* The mkfs tool's name ("mkfs.ext4", "mkntfs"), NULL for a table or empty. */
const char *format_type_program(const FormatType *t);
bool format_type_has_label(const FormatType *t);
bool format_type_has_uuid(const FormatType *t);
/* Every type, in the contract's order, separated by ", " (static). */
const char *format_type_list(void);

/* Checks a label for t: valid UTF-8, no control character, no '/', no longer than the filesystem holds, and
 * the characters it forbids (vfat). -EINVAL with *ret_reason (static text: "is longer than 11 bytes, the
 * most vfat holds") when not; -EOPNOTSUPP when t takes no label. */
int format_check_label(const FormatType *t, const char *label, const char **ret_reason);
/* Checks a UUID (or volume id) for t in the form its mkfs takes and blkid shows: RFC 4122 text for ext*,
 * xfs, btrfs and swap, XXXX-XXXX for vfat. -EINVAL with *ret_reason when malformed; -EOPNOTSUPP when t's
 * mkfs cannot set one (exfat, ntfs, tables, empty). */
int format_check_uuid(const FormatType *t, const char *uuid, const char **ret_reason);

typedef struct FormatRequest {
        const char *node; /* /dev/loopN or /dev/loopNpM, as the sandbox shows it too */
        const char *label; /* NULL: none */
        const char *uuid; /* NULL: the tool's random one */
        /* ext*: the owner of the root directory (the caller, so that they can write to what they made);
         * owner_set false: root, mke2fs's default. */
        uid_t owner_uid;
        gid_t owner_gid;
        bool owner_set;
} FormatRequest;

/* The mkfs command line for req on t (checked already): argv[0] is the tool's name; never prompts, never
 * discards, forces past an old signature. NULL-terminated, freed with strv_free(). */
int format_build_argv(const FormatType *t, const FormatRequest *req, char ***ret);

/* Where t's tool is installed (/usr/sbin/mkfs.ext4...): -ENOENT when it is not. */
int format_find_program(const FormatType *t, char **ret_path);

/* Starts t's mkfs for req in the sandbox, as a uid of its own for the device rdev (node's), with node as its
 * one device node, read-write, and nothing else of the host's but /usr. Its stdout and stderr go to
 * output_fd. Returns its pid and a pidfd. */
int format_spawn(const FormatType *t, const FormatRequest *req, dev_t rdev, int output_fd, pid_t *ret_pid,
        int *ret_pidfd);

/* Erases every signature libblkid knows (filesystems, RAID, partition tables, their backups at the end) on
 * the device open read-write at fd, as wipefs -a does. */
int format_wipe_signatures(int fd);
/* Writes zeroes over the whole device open read-write at fd: BLKZEROOUT, else plain writes. */
int format_zero_device(int fd);
