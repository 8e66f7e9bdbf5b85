/* image-reader-internal.h: what image-reader.c shares with image-reader-session.c, image-reader-table.c and
 * image-reader-child.c: the request a child takes, the socket's messages, loopd's side of asking a child and
 * ending what it asked, and the children parked between questions. Never logs. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "image-reader.h"
#include "partition.h"
#include "socket-util.h"

/* The kernel's limit on partitions of one disk (DISK_MAX_PARTS). */
#define REQUEST_PARTS_MAX 256u

typedef enum RequestKind {
        REQUEST_IMAGE = 1, /* image_probe() of the caller's image, before it is bound */
        REQUEST_LOOP, /* probe_loop_read() of a bound device */
        REQUEST_PLAN, /* partition_plan() of a bound device */
        REQUEST_FILESYSTEM, /* probe_filesystem_fd() of a block device */
        REQUEST_TABLE, /* a change of a bound device's partition table (partition-table.h) */
} RequestKind;

/* What a REQUEST_TABLE changes. */
typedef enum TableOp {
        TABLE_CREATE = 1, /* partition_table_create_sized(label) */
        TABLE_ADD, /* partition_table_add(offset, size, type, name, bootable) */
        TABLE_DELETE, /* partition_table_delete(number) */
        TABLE_DELETE_CHECK, /* partition_table_delete_check(number) */
} TableOp;

/* A REQUEST_TABLE's arguments; the strings NUL-ended. */
typedef struct TableRequest {
        uint32_t op;
        uint32_t number; /* TABLE_DELETE, TABLE_DELETE_CHECK */
        uint64_t offset; /* TABLE_ADD, as the rest */
        uint64_t size;
        uint32_t bootable;
        char label[8]; /* TABLE_CREATE: "gpt" or "dos" */
        char type[64]; /* "" for the default; a GPT type GUID is 36 characters */
        char name[128]; /* a GPT name is at most 36 UTF-16 units: 108 bytes of UTF-8 */
} TableRequest;

/* loopd → child: the header, then (REQUEST_LOOP) n_parts partitions, in one message. With it the fds: the
 * answer socket's child end, then the image (REQUEST_IMAGE), or the device and, when has_image, the image
 * (REQUEST_LOOP), or the device (REQUEST_PLAN, REQUEST_FILESYSTEM, REQUEST_TABLE: opened for writing). */
typedef struct Request {
        uint32_t kind;
        uint32_t loop_number; /* REQUEST_LOOP, as the rest */
        uint64_t offset; /* where the image is read from */
        uint64_t size; /* REQUEST_IMAGE: the size limit (0: none); else the device's */
        uint64_t devnum;
        uint32_t sector_size; /* REQUEST_IMAGE: the caller's (0: the one the probe finds) */
        uint32_t has_image;
        uint32_t ahead; /* REQUEST_IMAGE: plan and probe the device to be, after the answer (see below) */
        uint32_t n_parts;
        char expected[32]; /* REQUEST_FILESYSTEM: the filesystem type asked of first ("": none), NUL-ended */
        uint32_t idle_ms; /* how long the child waits for a follow-up (0: it does not) */
        TableRequest table; /* REQUEST_TABLE */
        KernelPartition parts[REQUEST_PARTS_MAX];
} Request;

/* The uid and gid a child reads as once it is confined (reader_child_confine()): no user, no file has it.
 * The FUSE drivers' and mkfs' ids are 0x7a6c0000 and 0x7a6e0000 + a minor number. */
#define READER_ID 0x7a720000u

/* How much more memory than the reader had a child may map: a probe needs a few MiB (a GPT entry array is
 * at most 4 MiB); a table that asks libblkid for gigabytes gets ENOMEM. */
#define READER_DATA_HEADROOM (UINT64_C(256) << 20)

/* child → loopd, first: one byte (a message of none would read as the end of the stream), with the child's
 * pidfd. */
#define HELLO 'h'

/* child → loopd, for REQUEST_LOOP after the hello: a message for each entry of the list, in its order, the
 * header followed by the strings' bytes (no NUL); then one END. For REQUEST_FILESYSTEM the same, with one
 * entry numbered 0 when there is a filesystem. */
typedef enum LoopAnswerKind {
        LOOP_ANSWER_ENTRY = 1,
        LOOP_ANSWER_END,
} LoopAnswerKind;

#define LOOP_ANSWER_STRINGS 5 /* part_type, part_name, fstype, label, uuid */
#define LOOP_ANSWER_STRING_MAX 1024u /* bytes: blkid's longest value (a UDF label) is under 400 */

typedef struct LoopAnswer {
        uint32_t kind;
        int32_t result; /* END: probe_loop_read()'s */
        uint32_t number; /* ENTRY: 0 for the whole device, else the partition's */
        uint32_t length[LOOP_ANSWER_STRINGS];
} LoopAnswer;

#define LOOP_ANSWER_MAX (sizeof(LoopAnswer) + LOOP_ANSWER_STRINGS * LOOP_ANSWER_STRING_MAX)

/* child → loopd, for REQUEST_PLAN after the hello: one message, the header and n of specs[].
 *
 * After a REQUEST_IMAGE answer that found a raw image, when the request asked ahead: unasked, what Attach
 * asks next of the device it binds, read from the image as that device will show it (from offset, size and
 * sector_size as below): the plan (a PlanAnswer), then, if it has one, the list of what is on the device
 * with the plan's partitions (REQUEST_LOOP's answer). Attach binds the device meanwhile; whatever does not
 * match what it got is asked again (image-reader-session.c). */
typedef struct PlanAnswer {
        int32_t result; /* partition_plan()'s (sent ahead: or fstat()'s of the image) */
        uint32_t n;
        uint32_t sector_size; /* what the plan is for */
        uint64_t size;
        PartitionSpec specs[REQUEST_PARTS_MAX];
} PlanAnswer;

/* What every child of a reader is confined to, found once by the reader. */
typedef struct ReaderLimits {
        /* sandbox-filter.h's: SANDBOX_FILTER_READER_OWN for a child of a reader that loaded
         * SANDBOX_FILTER_PROGRAM on itself, else SANDBOX_FILTER_READER */
        const struct sock_fprog *filter;
        rlim_t data; /* RLIMIT_DATA: the reader's own data size and READER_DATA_HEADROOM */
} ReaderLimits;

/* In a child of the reader: confines it as image-reader.h says (limits found by reader_limits_for_child() in
 * the process that forks it, reader its parent's pid). */
int reader_child_confine(const ReaderLimits *limits, pid_t reader);
/* The limits of a child of the calling process (loopd or the reader): the seccomp filter (stacked: the
 * reader's own rules alone, the caller carries the sandboxes'), and the caller's data size now and
 * READER_DATA_HEADROOM. */
int reader_limits_for_child(bool stacked, ReaderLimits *ret);
/* In a confined child: answers req on fds[0], reading fds[1] and fds[2] (-EBADF when not given): the child's
 * exit status. */
int reader_child_answer(const Request *req, const int fds[3]);
/* The reader process (prefork_start()): keeps one confined child waiting for a request on sock. */
void reader_serve(int sock, void *userdata);

/* A request being answered: by a child of the reader (pidfd, when it said hello with one) or by a child
 * forked for it (pid). */
typedef struct Asked {
        int fd; /* loopd's end of the answer socket, nonblocking */
        int pidfd;
        pid_t pid;
        int64_t deadline_ms;
        int session_fd; /* the image the child may be parked under again (-EBADF: none) */
} Asked;

/* Hands req (size bytes of it) and fds to a child: the one parked under session_fd's image when there is
 * one (session_fd -EBADF: none looked for), else the next child of the reader, or a child forked for it when
 * there is no reader; *ret says whom to wait for until when. The caller reads the answer from ret->fd and
 * then calls reader_asked_done(), also when this fails. */
int reader_ask(ImageReader *reader, int session_fd, const Request *req, size_t size, const int *fds,
        size_t n_fds, Asked *ret);
/* Ends what reader_ask() started. A child of the reader that answered in full is parked again when keep and
 * it has an image to be found by; any other is killed (one that answered, too: it holds nothing loopd
 * needs, and a child whose reading went wrong must not keep a device's fd), a forked one reaped. */
void reader_asked_done(ImageReader *reader, Asked *a, bool answered, bool keep);

/* What a parked child sent ahead that loopd has not read yet (PlanAnswer, above). */
typedef enum Ahead {
        AHEAD_NONE, /* nothing: the child waits for a question */
        AHEAD_PLAN, /* the plan, then (unless it failed) the list */
        AHEAD_LIST, /* the list: the plan is read (Parked.plan and the rest) */
} Ahead;

/* A child that answered and waits for more about the same image (image-reader.h: sessions). */
typedef struct Parked {
        int fd; /* loopd's end of its socket */
        int pidfd;
        int image_fd; /* the image it read (a copy of the fd: the inode cannot be reused while parked) */
        dev_t dev;
        ino_t ino;
        int64_t until_ms; /* killed after this, asked or not */
        Ahead ahead;
        uint64_t offset; /* ahead: where in the file the image was read from, the device's start */
        PartitionSpec *plan; /* AHEAD_LIST: the plan sent ahead, as sent */
        size_t n_plan;
        uint32_t sector_size; /* and the device it is for */
        uint64_t size;
} Parked;

/* Enough for the Attach calls that are between their image read and their device's first probe at once;
 * past it the oldest goes (its next question then forks a child of its own). */
#define PARKED_MAX 8

struct ImageReader {
        int fd; /* loopd's end of the request socket (-EBADF: the reader is gone) */
        uint64_t timeout_usec; /* how long loopd waits for a probe's or a plan's answer */
        int64_t restart_after_ms; /* a reader found gone is forked again, at most once in READER_RESTART_MS
                                   */
        Parked parked[PARKED_MAX];
        size_t n_parked;
};

/* When loopd stops waiting for an answer that it asks for now. */
int64_t reader_deadline(const ImageReader *reader);
/* Reads a REQUEST_LOOP answer from fd until its END (or deadline_ms): the list, as probe_loop_read() gives
 * it, or the child's error (*from_child then true, unless NULL). */
int reader_loop_answer_read(int fd, const LoopProbeArea *area, int64_t deadline_ms, PartitionInfo **ret,
        size_t *ret_n, bool *from_child);
/* Reads a PlanAnswer from fd (or the deadline_ms passes): the plan, each partition checked against the
 * device the answer says it is for; *ret_sector_size and *ret_size say which. The child's own error sets
 * *from_child (unless NULL). */
int reader_plan_answer_read(int fd, int64_t deadline_ms, PartitionSpec **ret, size_t *ret_n,
        uint32_t *ret_sector_size, uint64_t *ret_size, bool *from_child);

/* image-reader-session.c: kills a parked child and closes loopd's fds of it. */
void reader_parked_end(Parked *p);
/* Ends every parked child (for image_reader_free()). */
void reader_sessions_end(ImageReader *reader);
/* Takes the parked child that read image_fd's file, if any: 1 and *ret, whose fds and plan are then the
 * caller's (reader_parked_end() ends them, or take them), else 0. Children whose time is up are ended on the
 * way. */
int reader_session_unpark(ImageReader *reader, int image_fd, Parked *ret);
/* The plan a parked child of image_fd's file sent ahead, for a device that starts at offset in the file, of
 * sector_size and size bytes: 0 and a copy in *ret (the child stays parked for the list); -ENOMSG when
 * there is none for that device (a child with messages unread is ended: a question then goes to a new
 * one); else the error reading it, as a question would have got (the child is ended), or -ENOMEM for the
 * copy (the child stays parked). */
int reader_ahead_plan(ImageReader *reader, int image_fd, uint64_t offset, uint32_t sector_size,
        uint64_t size, PartitionSpec **ret, size_t *ret_n);
/* The list a parked child sent ahead for area, when area is the device it planned: 0 and the list (the
 * session is over); -ENOMSG when there is none for area (nothing parked is left with messages unread); else
 * as image_reader_probe_loop(). */
int reader_ahead_list(ImageReader *reader, const LoopProbeArea *area, PartitionInfo **ret, size_t *ret_n);

/* child → loopd, for REQUEST_TABLE after the hello: one message, the header and why up to its NUL. */
typedef struct TableAnswer {
        int32_t result; /* the partition-table.h function's */
        uint32_t number; /* TABLE_ADD: the new partition (its number, and where it lies in bytes) */
        uint64_t offset;
        uint64_t size;
        char why[512]; /* the reason of a refusal ("": none), NUL-ended, cut to fit */
} TableAnswer;

/* In the child: a REQUEST_TABLE's change of devfd (closed before the answer goes), answered on sock. */
int reader_child_table(const Request *req, int sock, int devfd);
/* In loopd: reads a REQUEST_TABLE answer from fd (or the deadline_ms passes). A new partition (TABLE_ADD's
 * *ret, may be NULL) must lie on the device (sector_size, size), else -EBADMSG; so must the message be
 * whole, the reason NUL-ended, the result an errno; a reason (*ret_why, may be NULL) is made printable. */
int reader_table_answer_read(int fd, uint32_t sector_size, uint64_t size, int64_t deadline_ms,
        TablePartition *ret, char **ret_why);
