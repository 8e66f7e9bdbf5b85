/* format-fs.c: each filesystem's mkfs command line and label/UUID rules, the confined run of the tool, and
 * wiping or zeroing a device before it. */
#include "format-fs.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "blkid-util.h"
#include "macro.h"
#include "partition.h"
#include "sandbox.h"
#include "strv.h"
#include "utf8.h"

/* How a label's length is counted: bytes of UTF-8 (what ext*, xfs, btrfs and swap store), UTF-16 code units
 * (exFAT, NTFS), or bytes of plain ASCII (FAT: an OEM code page on disk; only ASCII is the same in all). */
typedef enum LabelUnit {
        LABEL_BYTES,
        LABEL_UTF16,
        LABEL_ASCII,
} LabelUnit;

typedef enum UuidForm {
        UUID_NONE, /* the tool cannot set one */
        UUID_RFC4122, /* 8-4-4-4-12 hex digits */
        UUID_VOLUME_ID, /* FAT's 32-bit volume id as blkid shows it: XXXX-XXXX */
} UuidForm;

struct FormatType {
        const char *name;
        FormatKind kind;
        /* The tool, in the order looked for; the first is the name the errors use. */
        const char *programs[2];
        LabelUnit label_unit;
        size_t label_max; /* 0: takes no label */
        const char *label_why; /* the reason a too long label gives */
        UuidForm uuid;
};

static const FormatType format_types[] = {
        { "ext2", FORMAT_FILESYSTEM, { "mke2fs" }, LABEL_BYTES, 16,
                "is longer than 16 bytes, the most ext2 holds", UUID_RFC4122 },
        { "ext3", FORMAT_FILESYSTEM, { "mke2fs" }, LABEL_BYTES, 16,
                "is longer than 16 bytes, the most ext3 holds", UUID_RFC4122 },
        { "ext4", FORMAT_FILESYSTEM, { "mke2fs" }, LABEL_BYTES, 16,
                "is longer than 16 bytes, the most ext4 holds", UUID_RFC4122 },
        { "xfs", FORMAT_FILESYSTEM, { "mkfs.xfs" }, LABEL_BYTES, 12,
                "is longer than 12 bytes, the most xfs holds", UUID_RFC4122 },
        { "btrfs", FORMAT_FILESYSTEM, { "mkfs.btrfs" }, LABEL_BYTES, 255,
                "is longer than 255 bytes, the most btrfs holds", UUID_RFC4122 },
        { "vfat", FORMAT_FILESYSTEM, { "mkfs.fat", "mkfs.vfat" }, LABEL_ASCII, 11,
                "is longer than 11 characters, the most vfat holds", UUID_VOLUME_ID },
        { "exfat", FORMAT_FILESYSTEM, { "mkfs.exfat" }, LABEL_UTF16, 11,
                "is longer than 11 UTF-16 characters, the most exfat holds", UUID_NONE },
        { "ntfs", FORMAT_FILESYSTEM, { "mkntfs" }, LABEL_UTF16, 128,
                "is longer than 128 UTF-16 characters, the most ntfs holds", UUID_NONE },
        { "swap", FORMAT_FILESYSTEM, { "mkswap" }, LABEL_BYTES, 16,
                "is longer than 16 bytes, the most a swap area holds", UUID_RFC4122 },
        { "gpt", FORMAT_TABLE, {}, LABEL_BYTES, 0, NULL, UUID_NONE },
        { "dos", FORMAT_TABLE, {}, LABEL_BYTES, 0, NULL, UUID_NONE },
        { "empty", FORMAT_EMPTY, {}, LABEL_BYTES, 0, NULL, UUID_NONE },
};

const FormatType *format_type_find(const char *name)
{
        if (!name)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(format_types); i++)
                if (streq(format_types[i].name, name))
                        return &format_types[i];
        return NULL;
}

const char *format_type_name(const FormatType *t)
{
        return t->name;
}

FormatKind format_type_kind(const FormatType *t)
{
        return t->kind;
}

const char *format_type_program(const FormatType *t)
{
        if (t->kind != FORMAT_FILESYSTEM)
                return NULL;
        /* What a user knows the tool as. */
        return streq(t->programs[0], "mke2fs") ? (streq(t->name, "ext2")                  ? "mkfs.ext2"
                                                                 : streq(t->name, "ext3") ? "mkfs.ext3"
                                                                                          : "mkfs.ext4")
                                               : t->programs[0];
}

bool format_type_has_label(const FormatType *t)
{
        return t->label_max > 0;
}

bool format_type_has_uuid(const FormatType *t)
{
        return t->uuid != UUID_NONE;
}

const char *format_type_list(void)
{
        return "ext2, ext3, ext4, xfs, btrfs, vfat, exfat, ntfs, swap, gpt, dos, empty";
}

/* ---- labels and UUIDs ---- */

/* Characters FAT forbids in a volume label (besides control characters and lower case, which mkfs.fat
 * would store as they are but DOS and Windows never write: loopd upper-cases ASCII letters itself). */
#define FAT_FORBIDDEN "\"*+,./:;<=>?[\\]|"

int format_check_label(const FormatType *t, const char *label, const char **ret_reason)
{
        size_t units = 0;

        assert(t);
        assert(label);
        assert(ret_reason);

        if (t->label_max == 0) {
                *ret_reason = "is not something this type has";
                return -EOPNOTSUPP;
        }
        if (!utf8_is_valid(label)) {
                *ret_reason = "is not valid UTF-8";
                return -EINVAL;
        }
        for (const char *p = label; *p;) {
                uint32_t cp;
                size_t len = utf8_decode(p, &cp);

                if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
                        *ret_reason = "holds a control character (a newline, a tab...)";
                        return -EINVAL;
                }
                if (cp == '/') {
                        *ret_reason = "holds a '/'";
                        return -EINVAL;
                }
                if (t->label_unit == LABEL_ASCII) {
                        if (cp >= 0x80) {
                                *ret_reason =
                                        "holds a character that is not ASCII, which vfat labels cannot "
                                        "hold the same way everywhere";
                                return -EINVAL;
                        }
                        if (strchr(FAT_FORBIDDEN, (int)cp)) {
                                *ret_reason =
                                        "holds a character FAT forbids in labels: \" * + , . / : ; < = "
                                        "> ? [ \\ ] |";
                                return -EINVAL;
                        }
                        if (p == label && cp == ' ') {
                                *ret_reason = "starts with a space, which FAT does not allow";
                                return -EINVAL;
                        }
                }
                units += t->label_unit == LABEL_UTF16  ? (cp >= 0x10000 ? 2 : 1)
                        : t->label_unit == LABEL_ASCII ? 1
                                                       : len;
                p += len;
        }
        if (units > t->label_max) {
                *ret_reason = t->label_why;
                return -EINVAL;
        }
        return 0;
}

static bool is_hex_run(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!isxdigit((unsigned char)s[i]))
                        return false;
        return true;
}

int format_check_uuid(const FormatType *t, const char *uuid, const char **ret_reason)
{
        assert(t);
        assert(uuid);
        assert(ret_reason);

        switch (t->uuid) {
        case UUID_RFC4122:
                if (strlen(uuid) == 36 && is_hex_run(uuid, 8) && uuid[8] == '-' && is_hex_run(uuid + 9, 4) &&
                        uuid[13] == '-' && is_hex_run(uuid + 14, 4) && uuid[18] == '-' &&
                        is_hex_run(uuid + 19, 4) && uuid[23] == '-' && is_hex_run(uuid + 24, 12))
                        return 0;
                *ret_reason = "is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits)";
                return -EINVAL;
        case UUID_VOLUME_ID:
                if (strlen(uuid) == 9 && is_hex_run(uuid, 4) && uuid[4] == '-' && is_hex_run(uuid + 5, 4))
                        return 0;
                *ret_reason = "is not a FAT volume id (XXXX-XXXX, hex digits)";
                return -EINVAL;
        case UUID_NONE:
        default:
                *ret_reason = t->kind == FORMAT_FILESYSTEM ? "cannot be chosen: the filesystem's mkfs tool "
                                                             "makes a random one"
                                                           : "is not something this type has";
                return -EOPNOTSUPP;
        }
}

/* ---- the command line ---- */

static int push(char ***argv, const char *s)
{
        char *copy = strdup(s);

        if (!copy)
                return -ENOMEM;
        return strv_consume(argv, copy);
}

static int pushf(char ***argv, const char *format, ...) _printf_(2, 3);
static int pushf(char ***argv, const char *format, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return strv_consume(argv, s);
}

/* FAT's label as DOS and Windows write it: ASCII letters in upper case (checked to be ASCII already). */
static char *fat_label(const char *label)
{
        char *s = strdup(label);

        for (char *p = s; p && *p; p++)
                *p = (char)toupper((unsigned char)*p);
        return s;
}

int format_build_argv(const FormatType *t, const FormatRequest *req, char ***ret)
{
        _cleanup_strv_free_ char **argv = NULL;
        const char *name = t->name;
        bool label = !isempty(req->label), uuid = !isempty(req->uuid);
        int r = 0;

        assert(t);
        assert(req);
        assert(ret);

        if (t->kind != FORMAT_FILESYSTEM || !req->node)
                return -EINVAL;
        if ((label && t->label_max == 0) || (uuid && t->uuid == UUID_NONE))
                return -EOPNOTSUPP;

        r = push(&argv, t->programs[0]);
        if (streq(t->programs[0], "mke2fs")) {
                /* -F: no question about an old signature or a whole disk; nodiscard: the image's blocks
                 * are the user's, zeroed only when asked (erase). mke2fs.conf is not in the sandbox: the
                 * built-in defaults (the same features) apply. Nor is /sys, where mke2fs looks whether the
                 * kernel initializes inode tables lazily (every kernel since 2.6.37 does): ext4 says so,
                 * or mke2fs writes every inode table of a big image (ext2/3 always do). */
                _cleanup_free_ char *extended = NULL;

                if (asprintf(&extended, "nodiscard%s", streq(name, "ext4") ? ",lazy_itable_init=1" : "") < 0)
                        return -ENOMEM;
                r = r ?: push(&argv, "-t");
                r = r ?: push(&argv, name);
                r = r ?: push(&argv, "-F");
                r = r ?: push(&argv, "-E");
                if (req->owner_set)
                        r = r
                                ?: pushf(&argv, "%s,root_owner=%u:%u", extended, (unsigned)req->owner_uid,
                                           (unsigned)req->owner_gid);
                else
                        r = r ?: push(&argv, extended);
                if (label)
                        r = r ?: push(&argv, "-L");
                if (label)
                        r = r ?: push(&argv, req->label);
                if (uuid)
                        r = r ?: push(&argv, "-U");
                if (uuid)
                        r = r ?: push(&argv, req->uuid);
        } else if (streq(name, "xfs") || streq(name, "btrfs")) {
                /* -f: over an old signature; -K: no discard. */
                r = r ?: push(&argv, "-f");
                r = r ?: push(&argv, "-K");
                if (label)
                        r = r ?: push(&argv, "-L");
                if (label)
                        r = r ?: push(&argv, req->label);
                if (uuid && streq(name, "xfs"))
                        r = r ?: pushf(&argv, "-muuid=%s", req->uuid);
                else if (uuid) {
                        r = r ?: push(&argv, "-U");
                        r = r ?: push(&argv, req->uuid);
                }
        } else if (streq(name, "vfat")) {
                /* -I: a whole disk too; --mbr=n: no made-up partition table in the boot sector (blkid would
                 * see a dos table there). */
                _cleanup_free_ char *upper = label ? fat_label(req->label) : NULL;

                if (label && !upper)
                        return -ENOMEM;
                r = r ?: push(&argv, "-I");
                r = r ?: push(&argv, "--mbr=n");
                if (label)
                        r = r ?: push(&argv, "-n");
                if (label)
                        r = r ?: push(&argv, upper);
                if (uuid)
                        /* blkid's XXXX-XXXX is mkfs.fat's 32-bit XXXXXXXX. */
                        r = r ?: pushf(&argv, "-i%.4s%.4s", req->uuid, req->uuid + 5);
        } else if (streq(name, "exfat")) {
                if (label)
                        r = r ?: push(&argv, "-L");
                if (label)
                        r = r ?: push(&argv, req->label);
        } else if (streq(name, "ntfs")) {
                /* -Q: quick (no zeroing, no bad block scan: erase is the option for that); -F: a whole
                 * device, and a partition whose geometry it cannot read, too. */
                r = r ?: push(&argv, "-Q");
                r = r ?: push(&argv, "-F");
                if (label)
                        r = r ?: push(&argv, "-L");
                if (label)
                        r = r ?: push(&argv, req->label);
        } else if (streq(name, "swap")) {
                if (label)
                        r = r ?: push(&argv, "-L");
                if (label)
                        r = r ?: push(&argv, req->label);
                if (uuid)
                        r = r ?: push(&argv, "-U");
                if (uuid)
                        r = r ?: push(&argv, req->uuid);
        } else
                return -EINVAL;

        /* The node last: a label is an option's argument, never taken for an option or the node. */
        r = r ?: push(&argv, req->node);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(argv);
        return 0;
}

int format_find_program(const FormatType *t, char **ret_path)
{
        static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };

        assert(t);
        assert(ret_path);

        if (t->kind != FORMAT_FILESYSTEM)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(t->programs) && t->programs[i]; i++)
                for (size_t j = 0; j < ELEMENTSOF(dirs); j++) {
                        char path[PATH_MAX], *resolved;

                        (void)snprintf(path, sizeof(path), "%s/%s", dirs[j], t->programs[i]);
                        if (access(path, X_OK) < 0)
                                continue;
                        /* The sandbox binds /usr and the /bin, /sbin... links: the resolved path is there.
                         */
                        resolved = realpath(path, NULL);
                        if (!resolved)
                                return -errno;
                        *ret_path = resolved;
                        return 0;
                }
        return -ENOENT;
}

/* ---- running it ---- */

/* The uid and gid a mkfs runs as, one pair per device (its minor number), as FUSE drivers have theirs
 * (mount-fuse.c) in a range of their own: ids no user and no file has, so that the tool owns nothing on the
 * host and cannot signal a driver or another mkfs. */
#define MKFS_ID_BASE 0x7a6e0000u
#define MKFS_ID_SPAN 0x10000u

int format_spawn(const FormatType *t, const FormatRequest *req, dev_t rdev, int output_fd, pid_t *ret_pid,
        int *ret_pidfd)
{
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        assert(t);
        assert(req);
        assert(ret_pid);
        assert(ret_pidfd);

        r = format_build_argv(t, req, &argv);
        if (r < 0)
                return r;
        r = format_find_program(t, &path);
        if (r < 0)
                return r;

        const uid_t id = MKFS_ID_BASE + (minor(rdev) % MKFS_ID_SPAN);
        const SandboxNode device = { .path = req->node, .rdev = rdev, .read_only = false };
        const SandboxSpec spec = {
                .path = path,
                .argv = argv,
                .uid = id,
                .gid = id,
                .stderr_fd = output_fd,
                .stdout_to_stderr = true,
                /* mkfs.xfs: BLKBSZSET and BLKFLSBUF need CAP_SYS_ADMIN, which it does not get. */
                .fake_block_ioctls = streq(t->name, "xfs"),
                /* A label is UTF-8, whatever loopd's locale. */
                .utf8_locale = true,
                .node = &device,
                /* Bounded by loopd's job only, which a loopd killed takes with it; and a restarted one
                 * would not know of it (CreatePartition would write the table under it). */
                .dies_with_loopd = true,
        };
        return sandbox_spawn(&spec, ret_pid, ret_pidfd);
}

/* ---- before the tool ---- */

int format_wipe_signatures(int fd)
{
        _cleanup_blkid_probe_ blkid_probe pr = NULL;
        uint64_t size;
        int r, ss;

        /* A GPT header asking for a 4 GiB entry array would make libblkid read all of it: such headers go
         * first (they would be wiped anyway). */
        if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &ss) < 0)
                return -errno;
        r = partition_table_wipe_hostile(fd, (uint32_t)ss, size);
        if (r < 0)
                return r;

        pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, 0, 0) < 0)
                return -EIO;
        /* Every magic there is, bad checksums too, and the partition tables (GPT's backup header as well,
         * found once the primary is gone), as wipefs -a. */
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_BADCSUM);
        blkid_probe_enable_partitions(pr, 1);
        blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC | BLKID_PARTS_FORCE_GPT);

        /* Each round finds one signature and erases its magic; libblkid steps back so that the next round
         * probes the same chain again. Bounded: a signature that would not go away must not loop forever. */
        for (unsigned i = 0; i < 1024; i++) {
                r = blkid_do_probe(pr);
                if (r == 1)
                        break;
                if (r < 0)
                        return -EIO;
                if (blkid_do_wipe(pr, 0) < 0)
                        return errno > 0 ? -errno : -EIO;
        }
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int format_zero_device(int fd)
{
        static const char zeroes[1 << 16];
        uint64_t size, range[2];

        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return -errno;
        range[0] = 0;
        range[1] = size;
        if (size == 0 || ioctl(fd, BLKZEROOUT, range) >= 0)
                return 0;
        /* No write-zeroes for this device: the slow way. */
        for (uint64_t off = 0; off < size;) {
                size_t n = (size_t)MIN((uint64_t)sizeof(zeroes), size - off);
                ssize_t k = pwrite(fd, zeroes, n, (off_t)off);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;
                off += (uint64_t)k;
        }
        return fsync(fd) < 0 ? -errno : 0;
}
