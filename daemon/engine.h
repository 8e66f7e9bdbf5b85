/* engine.h: what loopd does for a caller — attach an image, detach, mount a node, unmount, open an image —
 * as functions of plain values. They know nothing of D-Bus: the face (bus/ files) has parsed, checked and
 * authorized the call; they return -errno, and an EngineError that says what the caller must be told. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "image.h"
#include "loop.h"
#include "manager.h"
#include "partition-table.h"

/* The contract's kinds of failure (the face maps them to org.loopd1.Error.*). */
typedef enum EngineErrorKind {
        ENGINE_FAILED = 0,
        ENGINE_INVALID_ARGUMENT,
        ENGINE_NOT_FOUND,
        ENGINE_NOT_MANAGED,
        ENGINE_BUSY,
        ENGINE_LIMIT_EXCEEDED,
        ENGINE_NO_FREE_DEVICE,
        ENGINE_UNSUPPORTED_FORMAT,
        ENGINE_UNSUPPORTED_FILESYSTEM,
        ENGINE_ALREADY_MOUNTED,
        ENGINE_NOT_MOUNTED,
        ENGINE_NOTHING_TO_MOUNT,
        ENGINE_TIMEOUT,
        ENGINE_UNSAFE_IMAGE,
        ENGINE_READ_ONLY,
} EngineErrorKind;

typedef struct EngineError {
        EngineErrorKind kind;
        char message[512]; /* "" when none was set: the face then says what -errno says */
} EngineError;

/* Fills e (if not NULL) and returns r (< 0). */
int engine_error(EngineError *e, int r, EngineErrorKind kind, const char *format, ...)
        __attribute__((format(printf, 4, 5)));
/* The kind an errno of the kernel layer means, with "what: strerror" as the message; returns r. */
int engine_error_errno(EngineError *e, int r, const char *what);
/* The user's name (the directory under the media dir) and primary group; a uid without a passwd entry
 * gets its number as name and gid = uid. For the engine's files. */
int engine_user_of(uid_t uid, char **ret_name, gid_t *ret_gid);
/* unmount_filesystem()'s error r for target, as a caller hears it (Busy, Timeout, Failed); returns r. */
int engine_error_unmount(EngineError *e, int r, const char *target);

/* What an Attach asks for, checked by the face. */
typedef struct AttachRequest {
        uint64_t offset;
        uint64_t size_limit;
        uint32_t sector_size; /* 0: what the image says */
        bool read_only;
        bool read_only_set;
        /* The option that asked for read-write, for the error: "read-only: false" or "writable: true". */
        const char *read_write_option;
        bool partition_scan;
        bool autoclear;
        bool direct_io;
        /* Bind read-write even where another device already writes to the same bytes of the file: two
         * writers that know nothing of each other, the classic way to corrupt a filesystem. */
        bool shared;
        /* A virtual disk: the export its fd is (engine_vdisk_start()). The engine takes it over: the
         * device's record keeps it, and it is stopped if nothing comes of the attach. */
        struct Vdisk *export;
} AttachRequest;

/* A virtual-disk image (probe says which format: image_probe() of the image behind fd, st its fstat()):
 * refused (UnsafeImage, UnsupportedFormat, InvalidArgument for an offset or size limit) or its export
 * started, writable as req says (Attach: the fd's mode unless read-only was asked; MountImage: writable).
 * The export is ready once it can be opened (vdisk.h); then engine_attach() or engine_open_image() the
 * export's fd with req->export set. image is the name BackingFile shows. */
int engine_vdisk_start(Manager *m, int fd, const AttachRequest *req, uid_t uid, const ImageProbe *probe,
        const char *image, struct Vdisk **ret, EngineError *e);
/* Does uid have the image (st) open already (engine_open_image() would show that device again)? */
bool engine_image_is_open(Manager *m, const struct stat *st, uid_t uid);
/* Says why the export did not come up (result: the open's, in the worker) and stops it. */
int engine_vdisk_failed(struct Vdisk *v, int result, uint64_t timeout_usec, EngineError *e);

/* Binds the image behind fd (st its fstat()) for uid as req says and records the owner. For a virtual disk
 * fd is the export's (req->export), probe its probe, st the image's. probe_result and
 * probe are image_probe()'s of the image, read beforehand (in a worker). The per-user device limit is
 * checked here. A read-write binding of bytes of the file that another device already writes to (the same
 * inode, whoever opened it, overlapping ranges) is Busy, naming that device, unless req->shared. */
int engine_attach(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret, EngineError *e);

/* Detaches loopN (info: what the kernel says of it now): Busy, naming the mount points, if anything of it is
 * mounted, unless unmount; then they are unmounted first. A device gone already is success. */
int engine_detach(Manager *m, const LoopInfo *info, bool unmount, EngineError *e);

/* What filesystem node (a block device, devnum its device number; 0: any) carries, asking first of the
 * expected type (may be NULL), read in a child of the image reader: loopd parses nothing of it. */
int engine_probe_filesystem(Manager *m, const char *node, dev_t devnum, const char *expected,
        char **ret_fstype, char **ret_label, char **ret_uuid);

/* Mounts node (a loop device or partition, devnum its device number) for uid under the media dir: fstype
 * NULL or "" probes; options are the caller's (checked against the allow-list here). Returns the mount
 * point. */
int engine_mount_node(Manager *m, uid_t uid, const char *node, dev_t devnum, const char *fstype,
        const char *options, bool read_only, char **ret_mount_point, EngineError *e);

/* Unmounts target (a mount point of loopN's), removes the mount point directory if loopd made it, and
 * releases an autoclear device that has nothing mounted any more: at once, or, when a FUSE server of the
 * mount outlived loopd's wait for it (and holds the device), once the last of them has exited. */
int engine_unmount(Manager *m, unsigned number, const char *target, EngineError *e);

/* One mount of an opened image. */
typedef struct MountedNode {
        char *node;
        char *mount_point;
} MountedNode;
void mounted_nodes_free(MountedNode *list, size_t n);

/* Opens an image: attaches it (as engine_attach(), with autoclear) and mounts every filesystem on it (whole
 * device and partitions; swap, empty and unknown skipped) for uid. Nothing mountable: detached again,
 * NothingToMount (or the first mount's error).
 * An image uid has open already (a device of uid's bound to the same inode, whoever's fd, from offset 0 to
 * the end) is not attached again: that device comes back, with its mounts, and what of it is not mounted
 * (any more) is mounted. A read-write open of an image open read-only is Busy. */
int engine_open_image(Manager *m, int fd, const AttachRequest *req, const struct stat *st, uid_t uid,
        int probe_result, const ImageProbe *probe, LoopInfo **ret_info, MountedNode **ret_mounts,
        size_t *ret_n, EngineError *e);

/* ---- making images (engine-table.c) ---- */

/* Busy, naming the mount points, if anything of loopN is mounted: partition 0 means the whole device and
 * every partition of it, M > 0 partition M and the whole device (a mount of it that does not hold it
 * exclusively, FUSE's). NotFound if loopN is not attached. */
int engine_check_unmounted(Manager *m, unsigned number, unsigned partition, EngineError *e);
/* ReadOnly if loopN is a read-only device; NotFound if it is not attached. */
int engine_check_writable(Manager *m, unsigned number, EngineError *e);

/* Format's "gpt" and "dos": writes an empty table of kind label on loopN. partition != 0 (a partition node)
 * is InvalidArgument; a read-only device ReadOnly; anything of the device mounted Busy. The partitions it
 * had are deleted from the kernel (their nodes go, PartitionRemoved follows) before the table is written. */
int engine_format_table(Manager *m, unsigned number, unsigned partition, const char *label, EngineError *e);

/* CreatePartition: adds a partition to loopN's table as req says (partition-table.h) and makes its node
 * exist before returning (BLKPG, as Attach does), with PartitionAdded and the Partitions property
 * following. A read-only device is ReadOnly; a partition that does not fit InvalidArgument naming offset
 * or size; no table InvalidArgument. Partitions of the device may be mounted meanwhile. Returns the node
 * (/dev/loopNpM). */
int engine_create_partition(
        Manager *m, unsigned number, const PartitionRequest *req, char **ret_node, EngineError *e);

/* DeletePartition: removes partition M of loopN from the table and from the kernel. It or the whole device
 * mounted (or it held open): Busy; a read-only device: ReadOnly; no such partition: NotFound. */
int engine_delete_partition(Manager *m, unsigned number, unsigned partition, EngineError *e);

/* ---- Format (engine-format.c) ---- */

typedef struct FormatJob FormatJob;

/* What a Format asks for, checked here (the face only read it). */
typedef struct FormatOptions {
        const char *type; /* format_type_list() */
        const char *label; /* NULL: none */
        const char *uuid; /* NULL: the tool's random one */
        bool erase; /* zero the whole node first */
} FormatOptions;

/* Once, when a Format that engine_format() left running has ended: result 0 or < 0 with e saying why. The
 * job is freed right after. */
typedef void (*FormatDone)(int result, const EngineError *e, void *userdata);

/* Formats node (loopN, or its partition M > 0, devnum its device number) for uid: InvalidArgument for an
 * unknown type, a bad label or uuid, a table on a partition; Busy while anything of the node is mounted (a
 * partition: or the whole device) or another Format runs on the device; ReadOnly for a read-only device.
 * Wipes every old signature (and, on a whole device, its partitions), zeroes the node first with erase: in
 * a worker (worker.h), off the event loop, the device Busy from then to the end of the mkfs. A table
 * without erase is written at once: 0. Otherwise 1: done() is called when the wipe and what follows (the
 * confined mkfs, the table, nothing for `empty`) ended (then the Device's Partitions show the result),
 * unless the job is cancelled; *ret_job is the job then. */
int engine_format(Manager *m, uid_t uid, const char *node, unsigned number, unsigned partition, dev_t devnum,
        const FormatOptions *opts, FormatDone done, void *userdata, FormatJob **ret_job, EngineError *e);
/* Kills a job's worker or mkfs and frees the job without calling back (loopd exits). NULL is fine; returns
 * NULL. */
FormatJob *engine_format_cancel(FormatJob *job);
/* Busy while a Format runs on loopN (Mount, Detach, CreatePartition, DeletePartition). */
int engine_check_not_formatting(Manager *m, unsigned number, EngineError *e);
