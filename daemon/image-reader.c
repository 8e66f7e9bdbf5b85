/* image-reader.c: the process that forks, ahead of need, the child each caller's image is read in. */
#include "image-reader.h"
#include "image-reader-internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop-name.h"
#include "process-util.h"
#include "sandbox-filter.h"

/* A child that answered and waits for more about the same image (image-reader.h: sessions). */
typedef struct Parked {
        int fd; /* loopd's end of its socket */
        int pidfd;
        int image_fd; /* the image it read (a copy of the fd: the inode cannot be reused while parked) */
        dev_t dev;
        ino_t ino;
        int64_t until_ms; /* killed after this, asked or not */
} Parked;

/* Enough for the Attach calls that are between their image read and their device's first probe at once;
 * past it the oldest goes (its next question then forks a child of its own). */
#define PARKED_MAX 8

struct ImageReader {
        int fd; /* loopd's end of the request socket */
        uint64_t timeout_usec; /* how long loopd waits for a probe's or a plan's answer */
        Parked parked[PARKED_MAX];
        size_t n_parked;
};

/* The uid and gid a child reads as once it is confined (child_confine()): no user, no file has it. The FUSE
 * drivers' and mkfs' ids are 0x7a6c0000 and 0x7a6e0000 + a minor number. */
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

/* child → loopd, for REQUEST_PLAN after the hello: one message, the header and n of specs[]. */
typedef struct PlanAnswer {
        int32_t result; /* partition_plan()'s */
        uint32_t n;
        PartitionSpec specs[REQUEST_PARTS_MAX];
} PlanAnswer;

/* Writes the pages of stack a read uses (image_probe() reads 16 KiB onto it) while the child still waits:
 * copy-on-write faults then, not once a caller waits for the answer. */
static __attribute__((noinline)) void prefault_stack(void)
{
        volatile unsigned char pages[4 * IMAGE_HEAD_SIZE];

        for (size_t i = 0; i < sizeof(pages); i += 4096)
                pages[i] = 0;
}

/* The heap a probe uses, likewise: libblkid's buffers (up to a few of 256 KiB at once) and its lists. Freed
 * at once, the pages stay in the heap (M_TRIM_THRESHOLD, reader_run()), faulted in. */
#define PREFAULT_HEAP (UINT64_C(1) << 20)

static void prefault_heap(void)
{
        volatile unsigned char *p = malloc(PREFAULT_HEAP);

        if (!p)
                return;
        for (size_t i = 0; i < PREFAULT_HEAP; i += 4096)
                p[i] = 0;
        free((void *)p);
}

/* What every child of a reader is confined to, found once by the reader. */
typedef struct ReaderLimits {
        const struct sock_fprog *filter; /* sandbox-filter.h's */
        rlim_t data; /* RLIMIT_DATA: the reader's own data size and READER_DATA_HEADROOM */
} ReaderLimits;

/* The reader's data size (VmData), in bytes. */
static int data_size(uint64_t *ret)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[128];

        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f)) {
                unsigned long long kib;

                if (sscanf(line, "VmData: %llu kB", &kib) == 1) {
                        *ret = (uint64_t)kib * 1024;
                        return 0;
                }
        }
        return -ENODATA;
}

/* Before a child takes a request: from then on it reads what a caller handed in, so it keeps nothing that
 * reading could turn against anyone. It runs as READER_ID (when the reader is root), without capabilities,
 * with no_new_privs, the sandboxes' seccomp filter, no memory beyond what a probe needs, no file it may
 * write to and no child of its own. It needs nothing else: the fds it reads come over the socket. */
static int child_confine(const ReaderLimits *limits, pid_t reader)
{
        struct rlimit data;
        int null;

        /* Nothing of loopd's: not even its stdout and stderr (under systemd, loopd's journal stream). */
        null = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (null < 0)
                return -errno;
        for (int fd = 0; fd < 3; fd++)
                if (dup2(null, fd) < 0)
                        return -errno;
        if (null > 2)
                (void)close(null);
        /* A write past RLIMIT_FSIZE (below) fails with EFBIG rather than killing the child unheard. */
        if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR)
                return -errno;
        /* Not above the hard limit loopd was given (LimitDATA=): lowering it is all a child may do. */
        if (getrlimit(RLIMIT_DATA, &data) < 0)
                return -errno;
        data.rlim_cur = data.rlim_max = MIN(limits->data, data.rlim_max);
        if (geteuid() == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(READER_ID, READER_ID, READER_ID) < 0 ||
                        setresuid(READER_ID, READER_ID, READER_ID) < 0)
                        return -errno;
        }
        /* A change of uid clears the parent-death signal: asked for only now. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != reader)
                return -ESRCH;
        if (prctl(PR_SET_DUMPABLE, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        if (setrlimit(RLIMIT_DATA, &data) < 0 || setrlimit(RLIMIT_FSIZE, &(struct rlimit){ 0, 0 }) < 0 ||
                setrlimit(RLIMIT_NPROC, &(struct rlimit){ 0, 0 }) < 0 ||
                setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }) < 0)
                return -errno;
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, limits->filter) < 0)
                return -errno;
        return 0;
}

/* Sends e (its number and strings) as a LOOP_ANSWER_ENTRY: -E2BIG for a string longer than
 * LOOP_ANSWER_STRING_MAX (nothing sent), -EIO when the socket failed. */
static int send_entry(int sock, const PartitionInfo *e)
{
        const char *strings[LOOP_ANSWER_STRINGS] = { e->part_type, e->part_name, e->fstype, e->label,
                e->uuid };
        char buf[LOOP_ANSWER_MAX];
        LoopAnswer head = { .kind = LOOP_ANSWER_ENTRY, .number = e->number };
        size_t at = sizeof(head);

        for (size_t k = 0; k < LOOP_ANSWER_STRINGS; k++) {
                size_t len = strlen(strings[k]);
                if (len > LOOP_ANSWER_STRING_MAX)
                        return -E2BIG;
                head.length[k] = (uint32_t)len;
                memcpy(buf + at, strings[k], len);
                at += len;
        }
        memcpy(buf, &head, sizeof(head));
        return socket_send(sock, buf, at, NULL, 0, 0) < 0 ? -EIO : 0;
}

/* The limits of a child of the calling process (loopd or the reader): the seccomp filter, and the caller's
 * data size now and READER_DATA_HEADROOM. */
static int limits_for_child(ReaderLimits *ret)
{
        uint64_t data;
        int r;

        r = sandbox_filter_get(SANDBOX_FILTER_READER, &ret->filter);
        if (r < 0)
                return r;
        r = data_size(&data);
        if (r < 0)
                return r;
        ret->data = (rlim_t)(data + READER_DATA_HEADROOM);
        return 0;
}

int image_reader_confine(void)
{
        ReaderLimits limits = {};
        pid_t parent = getppid();
        int r;

        r = limits_for_child(&limits);
        if (r < 0)
                return r;
        return child_confine(&limits, parent);
}

/* probe_loop_read(a), answered entry by entry on sock; a's fds are closed before the END goes. */
static int child_probe_loop(const LoopProbeArea *a, int sock)
{
        PartitionInfo *list = NULL;
        size_t n = 0;
        int r;

        r = probe_loop_read(a, &list, &n);
        (void)close(a->disk_fd);
        if (a->image_fd >= 0)
                (void)close(a->image_fd);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = send_entry(sock, &list[i]);
        partition_info_array_free(list, n);
        if (r == -EIO)
                return r;
        return socket_send(sock, &(LoopAnswer){ .kind = LOOP_ANSWER_END, .result = MIN(r, 0) },
                sizeof(LoopAnswer), NULL, 0, 0);
}

/* A REQUEST_PLAN: partition_plan() of the device (devfd, closed before the answer goes), answered on sock.
 * At most REQUEST_PARTS_MAX partitions: the kernel has room for no more. */
static int child_plan(const Request *req, int sock, int devfd)
{
        _cleanup_free_ PartitionSpec *specs = NULL;
        PlanAnswer *answer = calloc(1, sizeof(PlanAnswer));
        size_t n = 0;
        int r;

        if (!answer)
                return -ENOMEM;
        answer->result = partition_plan(devfd, req->sector_size, req->size, &specs, &n);
        (void)close(devfd);
        answer->n = (uint32_t)MIN(n, REQUEST_PARTS_MAX);
        if (answer->n > 0)
                memcpy(answer->specs, specs, answer->n * sizeof(PartitionSpec));
        r = socket_send(
                sock, answer, offsetof(PlanAnswer, specs) + answer->n * sizeof(PartitionSpec), NULL, 0, 0);
        free(answer);
        return r;
}

/* A REQUEST_FILESYSTEM: probe_filesystem_fd() of fd (closed before the answer goes), answered on sock. */
static int child_probe_filesystem(const Request *req, int sock, int fd)
{
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;
        int r;

        r = probe_filesystem_fd(fd, req->expected[0] ? req->expected : NULL, &fstype, &label, &uuid);
        (void)close(fd);
        if (r >= 0 && !isempty(fstype)) {
                PartitionInfo found = {
                        .part_type = (char *)"",
                        .part_name = (char *)"",
                        .fstype = fstype,
                        .label = label,
                        .uuid = uuid,
                };
                r = send_entry(sock, &found);
                if (r == -EIO)
                        return r;
        }
        return socket_send(sock, &(LoopAnswer){ .kind = LOOP_ANSWER_END, .result = MIN(r, 0) },
                sizeof(LoopAnswer), NULL, 0, 0);
}

/* Answers req on fds[0], reading fds[1] and fds[2] (-EBADF when not given): the child's exit status. */
static int child_answer(const Request *req, const int fds[3])
{
        switch (req->kind) {
        case REQUEST_LOOP: {
                LoopProbeArea a = {
                        .loop_number = req->loop_number,
                        .devnum = (dev_t)req->devnum,
                        .disk_fd = fds[1],
                        .size = req->size,
                        .sector_size = req->sector_size,
                        .image_fd = req->has_image ? fds[2] : -EBADF,
                        .image_offset = req->offset,
                        .parts = (KernelPartition *)req->parts,
                        .n_parts = req->n_parts,
                };
                return child_probe_loop(&a, fds[0]) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        }
        case REQUEST_PLAN:
                return child_plan(req, fds[0], fds[1]) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        case REQUEST_FILESYSTEM:
                return child_probe_filesystem(req, fds[0], fds[1]) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        case REQUEST_TABLE:
                return reader_child_table(req, fds[0], fds[1]) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        default: {
                ImageReaderAnswer answer = {};
                answer.result = image_probe(fds[1], req->offset, req->size, &answer.probe);
                /* Let go of the image before loopd hears (as worker.c's children do). */
                (void)close(fds[1]);
                return socket_send(fds[0], &answer, sizeof(answer), NULL, 0, MSG_DONTWAIT) < 0
                        ? EXIT_FAILURE
                        : EXIT_SUCCESS;
        }
        }
}

/* Is req (n bytes, fds[0] the answer socket and fds[1], fds[2] what it reads) a request a child answers? */
static bool request_valid(const Request *req, ssize_t n, const int fds[3])
{
        size_t want;

        if (n < (ssize_t)offsetof(Request, parts) || fds[0] < 0 || fds[1] < 0 ||
                req->n_parts > REQUEST_PARTS_MAX)
                return false;
        if (req->kind != REQUEST_IMAGE && req->kind != REQUEST_LOOP && req->kind != REQUEST_PLAN &&
                req->kind != REQUEST_FILESYSTEM && req->kind != REQUEST_TABLE)
                return false;
        want = offsetof(Request, parts) +
                (req->kind == REQUEST_LOOP ? req->n_parts * sizeof(KernelPartition) : 0);
        return (size_t)n == want && !(req->kind == REQUEST_LOOP && req->has_image && fds[2] < 0) &&
                memchr(req->expected, 0, sizeof(req->expected)) &&
                memchr(req->table.label, 0, sizeof(req->table.label)) &&
                memchr(req->table.type, 0, sizeof(req->table.type)) &&
                memchr(req->table.name, 0, sizeof(req->table.name));
}

/* After its first answer: more requests about the same image on the same socket (sock), each with only
 * the fds it reads, until loopd closes its end or kills it, or none came for idle_ms. */
static _Noreturn void child_follow_up(int sock, uint32_t idle_ms)
{
        struct timeval tv = { .tv_sec = idle_ms / 1000, .tv_usec = (idle_ms % 1000) * 1000 };

        if (idle_ms == 0 || setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
                _exit(EXIT_SUCCESS);
        for (;;) {
                Request req;
                int got[2];
                ssize_t n = socket_receive(sock, &req, sizeof(req), got, 2, 0);

                if (n <= 0)
                        _exit(n == 0 || n == -EAGAIN ? EXIT_SUCCESS : EXIT_FAILURE);
                const int fds[3] = { sock, got[0], got[1] };
                if (req.kind == REQUEST_IMAGE || !request_valid(&req, n, fds))
                        _exit(EXIT_FAILURE);
                if (child_answer(&req, fds) != EXIT_SUCCESS)
                        _exit(EXIT_FAILURE);
        }
}

/* The child: confines itself, waits for a request, tells the reader it took one (the reader forks the next
 * child), says hello to loopd, reads and answers; then waits for follow-ups (child_follow_up()). */
static _Noreturn void child_run(int sock, int taken_fd, pid_t reader, const ReaderLimits *limits)
{
        Request req;
        int fds[3]; /* the answer socket, the image or the device, the image */
        ssize_t n;

        if (child_confine(limits, reader) < 0)
                _exit(EXIT_FAILURE);
        prefault_stack();
        prefault_heap();
        n = socket_receive(sock, &req, sizeof(req), fds, 3, 0);
        if (n == 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the reader ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (!request_valid(&req, n, fds))
                _exit(EXIT_FAILURE);

        /* Without a pidfd loopd cannot kill this child at the deadline, but it still hears the answer. */
        char hello = HELLO;
        int pidfd = pidfd_open_pid(getpid());
        if (socket_send(fds[0], &hello, sizeof(hello), &pidfd, pidfd >= 0 ? 1 : 0, MSG_DONTWAIT) < 0)
                _exit(EXIT_FAILURE);
        if (pidfd >= 0)
                (void)close(pidfd);

        if (child_answer(&req, fds) != EXIT_SUCCESS)
                _exit(EXIT_FAILURE);
        child_follow_up(fds[0], req.idle_ms);
}

/* What the reader's children get. */
typedef struct ReaderChild {
        pid_t reader;
        const ReaderLimits *limits;
} ReaderChild;

static void reader_child(int sock, int taken_fd, void *userdata)
{
        const ReaderChild *c = userdata;

        child_run(sock, taken_fd, c->reader, c->limits);
}

/* The reader: keeps one child waiting. It holds nothing but the request socket, and goes when loopd goes
 * (or when its waiting child dies: loopd then forks its own workers, image_reader_submit() fails). */
static void reader_serve(int sock, void *userdata)
{
        ReaderLimits limits = {};

        /* libblkid's reads are buffers of up to 256 KiB (the zfs prober asks for four a partition): from the
         * heap, where a child's second probe finds the first one's pages, rather than an mmap() of their
         * own that every probe faults in page by page. */
        (void)mallopt(M_MMAP_THRESHOLD, 4 << 20);
        (void)mallopt(M_TRIM_THRESHOLD, 16 << 20);
        /* Found here, once: each child only applies them (the filter built, not loaded). */
        if (limits_for_child(&limits) < 0)
                return;
        prefork_serve(sock, reader_child, &(ReaderChild){ .reader = getpid(), .limits = &limits });
}

int image_reader_new(uint64_t timeout_usec, ImageReader **ret)
{
        _cleanup_free_ ImageReader *r = NULL;
        int pidfd, k;

        pidfd = pidfd_open_pid(getpid());
        if (pidfd < 0)
                return -EOPNOTSUPP;
        (void)close(pidfd);

        r = calloc(1, sizeof(ImageReader));
        if (!r)
                return -ENOMEM;
        k = prefork_start("loopd-reader", reader_serve, NULL, &r->fd);
        if (k < 0)
                return k;
        r->timeout_usec = timeout_usec;
        *ret = TAKE_PTR(r);
        return 0;
}

/* Kills a parked child and closes loopd's fds of it. */
static void parked_end(Parked *p)
{
        if (p->pidfd >= 0)
                (void)pidfd_signal(p->pidfd, SIGKILL);
        p->pidfd = safe_close(p->pidfd);
        p->fd = safe_close(p->fd);
        p->image_fd = safe_close(p->image_fd);
}

/* Ends the parked children whose time is up (all of them with every). */
static void parked_expire(ImageReader *reader, bool every)
{
        int64_t now = now_ms();
        size_t kept = 0;

        for (size_t i = 0; i < reader->n_parked; i++) {
                if (every || reader->parked[i].until_ms <= now)
                        parked_end(&reader->parked[i]);
                else
                        reader->parked[kept++] = reader->parked[i];
        }
        reader->n_parked = kept;
}

ImageReader *image_reader_free(ImageReader *reader)
{
        if (reader) {
                parked_expire(reader, true);
                safe_close(reader->fd);
                free(reader);
        }
        return NULL;
}

void image_reader_park(ImageReader *reader, int fd, int pidfd, int image_fd)
{
        Parked p = { .fd = fd, .pidfd = pidfd, .image_fd = -EBADF };
        struct stat st;

        if (reader && image_fd >= 0)
                p.image_fd = fcntl(image_fd, F_DUPFD_CLOEXEC, 3);
        if (!reader || fd < 0 || pidfd < 0 || p.image_fd < 0 || fstat(p.image_fd, &st) < 0) {
                parked_end(&p);
                return;
        }
        parked_expire(reader, false);
        if (reader->n_parked == PARKED_MAX) {
                parked_end(&reader->parked[0]);
                memmove(reader->parked, reader->parked + 1, --reader->n_parked * sizeof(Parked));
        }
        p.dev = st.st_dev;
        p.ino = st.st_ino;
        p.until_ms = now_ms() + (int64_t)(reader->timeout_usec / 1000);
        reader->parked[reader->n_parked++] = p;
}

/* Takes the parked child that read image_fd's file, if any: 1 and *ret, else 0. */
static int unpark(ImageReader *reader, int image_fd, Parked *ret)
{
        struct stat st;

        if (!reader || image_fd < 0 || reader->n_parked == 0)
                return 0;
        parked_expire(reader, false);
        if (fstat(image_fd, &st) < 0)
                return 0;
        for (size_t i = 0; i < reader->n_parked; i++) {
                if (reader->parked[i].dev != st.st_dev || reader->parked[i].ino != st.st_ino)
                        continue;
                *ret = reader->parked[i];
                ret->image_fd = safe_close(ret->image_fd);
                memmove(reader->parked + i, reader->parked + i + 1,
                        (--reader->n_parked - i) * sizeof(Parked));
                return 1;
        }
        return 0;
}

/* Sends req (size bytes of it) with the answer socket's child end first and then fds; *ret_fd is loopd's
 * end (nonblocking). */
static int submit(
        ImageReader *reader, const Request *req, size_t size, const int *fds, size_t n_fds, int *ret_fd)
{
        int pair[2], all[3], r;

        assert(n_fds <= 2);
        if (!reader || reader->fd < 0)
                return -EPIPE;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();
        if (fcntl(pair[0], F_SETFL, O_NONBLOCK) < 0) {
                r = negative_errno();
                goto fail;
        }
        all[0] = pair[1];
        memcpy(all + 1, fds, n_fds * sizeof(int));
        r = socket_send(reader->fd, req, size, all, n_fds + 1, MSG_DONTWAIT);
        if (r < 0) {
                /* The reader is gone (or its queue is full): the caller forks a child of its own (or waits).
                 */
                if (r != -EAGAIN)
                        reader->fd = safe_close(reader->fd);
                goto fail;
        }
        (void)close(pair[1]);
        *ret_fd = pair[0];
        return 0;

fail:
        (void)close(pair[0]);
        (void)close(pair[1]);
        return r;
}

/* How long a child of the reader waits for a follow-up: a second longer than loopd keeps it parked, so
 * that a question sent as loopd's time for it runs out still finds it there. */
static uint32_t idle_of(const ImageReader *reader)
{
        return reader ? (uint32_t)MIN(reader->timeout_usec / 1000 + 1000, (uint64_t)UINT32_MAX) : 0;
}

int image_reader_submit(ImageReader *reader, int image_fd, uint64_t offset, uint64_t size, int *ret_fd)
{
        Request req = { .kind = REQUEST_IMAGE, .offset = offset, .size = size, .idle_ms = idle_of(reader) };

        return submit(reader, &req, offsetof(Request, parts), &image_fd, 1, ret_fd);
}

/* When loopd stops waiting for an answer that it asks for now. */
static int64_t deadline_of(const ImageReader *reader)
{
        return now_ms() + (int64_t)((reader ? reader->timeout_usec : IMAGE_READER_TIMEOUT_USEC) / 1000);
}

/* One entry of a REQUEST_LOOP answer, in buf (n bytes), into *e: the strings from the child, everything else
 * from area (expect: the partition it must be, NULL for the whole device). */
static int loop_answer_entry(const LoopProbeArea *area, const KernelPartition *expect, const char *buf,
        size_t n, PartitionInfo *e)
{
        char *strings[LOOP_ANSWER_STRINGS] = {};
        char node[LOOP_NODE_MAX];
        LoopAnswer head;
        size_t at = sizeof(head);

        if (n < sizeof(head))
                return -EBADMSG;
        memcpy(&head, buf, sizeof(head));
        if (head.kind != LOOP_ANSWER_ENTRY || head.number != (expect ? expect->number : 0))
                return -EBADMSG;
        for (size_t k = 0; k < LOOP_ANSWER_STRINGS; k++) {
                size_t len = head.length[k];
                if (len > LOOP_ANSWER_STRING_MAX || len > n - at || memchr(buf + at, 0, len))
                        goto bad;
                strings[k] = strndup(buf + at, len);
                if (!strings[k])
                        goto fail;
                at += len;
        }
        if (at != n)
                goto bad;
        *e = (PartitionInfo){
                .node = strdup(loop_node_format(node, area->loop_number, expect ? expect->number : 0)),
                .number = expect ? expect->number : 0,
                .devnum = expect ? expect->devnum : area->devnum,
                .offset = expect ? expect->start : 0,
                .size = expect ? expect->size : area->size,
                .part_type = strings[0],
                .part_name = strings[1],
                .fstype = strings[2],
                .label = strings[3],
                .uuid = strings[4],
                .mount_point = strdup(""),
        };
        if (!e->node || !e->mount_point) {
                partition_info_clear(e);
                return -ENOMEM;
        }
        return 0;

bad:
        for (size_t k = 0; k < LOOP_ANSWER_STRINGS; k++)
                free(strings[k]);
        return -EBADMSG;
fail:
        for (size_t k = 0; k < LOOP_ANSWER_STRINGS; k++)
                free(strings[k]);
        return -ENOMEM;
}

/* Reads a REQUEST_LOOP answer from fd until its END (or deadline_ms): the list, as probe_loop_read() gives
 * it, or the child's error. */
static int loop_answer_read(
        int fd, const LoopProbeArea *area, int64_t deadline_ms, PartitionInfo **ret, size_t *ret_n)
{
        _cleanup_free_ char *buf = malloc(LOOP_ANSWER_MAX);
        PartitionInfo *list = calloc(area->n_parts + 2, sizeof(PartitionInfo));
        size_t n = 0;
        int r;

        if (!buf || !list) {
                free(list);
                return -ENOMEM;
        }
        for (;;) {
                LoopAnswer head;
                ssize_t k;

                r = fd_wait_until(fd, POLLIN, deadline_ms);
                if (r < 0)
                        break;
                k = socket_receive(fd, buf, LOOP_ANSWER_MAX, NULL, 0, MSG_DONTWAIT);
                if (k == -EAGAIN)
                        continue;
                if (k <= 0 || (size_t)k < sizeof(head)) {
                        r = k < 0 && k != -EMSGSIZE ? (int)k : -EIO;
                        break;
                }
                memcpy(&head, buf, sizeof(head));
                if (head.kind == LOOP_ANSWER_END) {
                        /* Every partition the kernel has, after the whole device if it holds a filesystem.
                         */
                        r = head.result < 0 ? (head.result >= -4095 ? head.result : -EIO)
                                : (size_t)k == sizeof(head) && n >= area->n_parts &&
                                        n - area->n_parts == (n > 0 && list[0].number == 0)
                                ? 0
                                : -EBADMSG;
                        break;
                }
                /* The whole device comes first, if at all; then the partitions in the kernel's order. */
                bool whole = n == 0 && head.number == 0;
                size_t part = n - (n > 0 && list[0].number == 0);
                if (!whole && part >= area->n_parts) {
                        r = -EBADMSG;
                        break;
                }
                r = loop_answer_entry(area, whole ? NULL : &area->parts[part], buf, (size_t)k, &list[n]);
                if (r < 0)
                        break;
                n++;
        }
        if (r < 0) {
                partition_info_array_free(list, n);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* Forks a child for req, confined as the reader's are, that keeps none of loopd's fds but the answer socket
 * and fds (at most two). */
static int ask_forked(const Request *req, const int *fds, size_t n_fds, Asked *ret)
{
        ReaderLimits limits = {};
        pid_t parent = getpid(), pid;
        int pair[2], r;

        /* In loopd: the filter is built once, the child only loads it. */
        r = limits_for_child(&limits);
        if (r < 0)
                return r;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                (void)close(pair[0]);
                (void)close(pair[1]);
                return r;
        }
        if (pid == 0) {
                /* The answer socket at 3, then fds: nothing else of loopd's. */
                int keep[3] = { pair[1], n_fds > 0 ? fds[0] : -EBADF, n_fds > 1 ? fds[1] : -EBADF }, high[3];
                size_t n_keep = 1 + n_fds;
                sigset_t none;

                for (size_t i = 0; i < n_keep; i++)
                        if ((high[i] = fcntl(keep[i], F_DUPFD, 1000)) < 0)
                                _exit(EXIT_FAILURE);
                for (size_t i = 0; i < n_keep; i++)
                        if (dup2(high[i], 3 + (int)i) < 0)
                                _exit(EXIT_FAILURE);
                if (syscall(SYS_close_range, 3u + (unsigned)n_keep, ~0u, 0u) < 0)
                        _exit(EXIT_FAILURE);
                sigemptyset(&none);
                if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 || child_confine(&limits, parent) < 0)
                        _exit(EXIT_FAILURE);
                _exit(child_answer(req, (int[]){ 3, n_fds > 0 ? 4 : -EBADF, n_fds > 1 ? 5 : -EBADF }));
        }
        (void)close(pair[1]);
        ret->fd = pair[0];
        ret->pid = pid;
        if (fcntl(pair[0], F_SETFL, O_NONBLOCK) < 0)
                return negative_errno(); /* reader_asked_done() still ends it */
        return 0;
}

int reader_ask(ImageReader *reader, int session_fd, const Request *req, size_t size, const int *fds,
        size_t n_fds, Asked *ret)
{
        Parked p;
        int r;

        *ret = (Asked){
                .fd = -EBADF, .pidfd = -EBADF, .deadline_ms = deadline_of(reader), .session_fd = -EBADF
        };
        if (unpark(reader, session_fd, &p) > 0) {
                /* A child that read this image already, waiting: no fork, no hello. One that is gone (its
                 * time ran out as it was asked) leaves the question to a new one. */
                if (socket_send(p.fd, req, size, fds, n_fds, MSG_DONTWAIT) >= 0) {
                        ret->fd = p.fd;
                        ret->pidfd = p.pidfd;
                        ret->session_fd = session_fd;
                        return 0;
                }
                parked_end(&p);
        }
        if (!reader || reader->fd < 0)
                return ask_forked(req, fds, n_fds, ret);
        for (;;) {
                r = submit(reader, req, size, fds, n_fds, &ret->fd);
                if (r != -EAGAIN)
                        break;
                /* The reader's queue is full (a flood of Attach calls): wait for room, never read here. */
                r = fd_wait_until(reader->fd, POLLOUT, ret->deadline_ms);
                if (r < 0)
                        return r;
        }
        if (r == -EPIPE)
                return ask_forked(req, fds, n_fds, ret);
        if (r < 0)
                return r;
        ret->session_fd = session_fd;
        for (;;) {
                r = fd_wait_until(ret->fd, POLLIN, ret->deadline_ms);
                if (r < 0)
                        return r; /* no hello: no pidfd either, nothing to kill */
                r = image_reader_read_hello(ret->fd, &ret->pidfd);
                if (r != -EAGAIN)
                        return r;
        }
}

void reader_asked_done(ImageReader *reader, Asked *a, bool answered, bool keep)
{
        if (answered && keep && a->pid == 0 && a->session_fd >= 0 && a->pidfd >= 0) {
                image_reader_park(reader, TAKE_FD(a->fd), TAKE_FD(a->pidfd), a->session_fd);
                return;
        }
        if (a->pidfd >= 0)
                (void)pidfd_signal(a->pidfd, SIGKILL);
        else if (a->pid > 0)
                (void)kill(a->pid, SIGKILL); /* not reaped yet: the pid is still this child's */
        a->fd = safe_close(a->fd);
        a->pidfd = safe_close(a->pidfd);
        /* Reaped here if it is gone already; if not (a read a FUSE server never answers holds it in the
         * kernel), loopd's SIGCHLD handler reaps it once the kill lands: loopd never waits for it. */
        if (a->pid > 0)
                (void)waitpid(a->pid, NULL, WNOHANG);
        a->pid = 0;
}

int image_reader_probe_loop(
        ImageReader *reader, const LoopProbeArea *area, PartitionInfo **ret, size_t *ret_n)
{
        _cleanup_free_ Request *req = NULL;
        Asked asked;
        int r;

        if (!area || !ret || !ret_n || area->disk_fd < 0)
                return -EINVAL;
        if (area->n_parts > REQUEST_PARTS_MAX)
                return -E2BIG;
        req = calloc(1, sizeof(Request));
        if (!req)
                return -ENOMEM;
        *req = (Request){
                .kind = REQUEST_LOOP,
                .loop_number = area->loop_number,
                .offset = area->image_offset,
                .size = area->size,
                .devnum = (uint64_t)area->devnum,
                .sector_size = area->sector_size,
                .has_image = area->image_fd >= 0,
                .n_parts = (uint32_t)area->n_parts,
        };
        if (area->n_parts > 0)
                memcpy(req->parts, area->parts, area->n_parts * sizeof(KernelPartition));
        r = reader_ask(reader, area->image_fd, req,
                offsetof(Request, parts) + area->n_parts * sizeof(KernelPartition),
                (int[]){ area->disk_fd, area->image_fd }, area->image_fd >= 0 ? 2 : 1, &asked);
        if (r >= 0)
                r = loop_answer_read(asked.fd, area, asked.deadline_ms, ret, ret_n);
        /* The first look at a device Attach bound ends the image's session. */
        reader_asked_done(reader, &asked, r >= 0, false);
        return r;
}

/* Reads a REQUEST_PLAN answer from fd (or the deadline_ms passes): the plan, each partition checked against
 * the device (sector_size, size). */
static int plan_answer_read(
        int fd, uint32_t sector_size, uint64_t size, int64_t deadline_ms, PartitionSpec **ret, size_t *ret_n)
{
        _cleanup_free_ PlanAnswer *answer = malloc(sizeof(PlanAnswer));
        _cleanup_free_ PartitionSpec *specs = NULL;
        ssize_t k;
        int r;

        if (!answer)
                return -ENOMEM;
        do {
                r = fd_wait_until(fd, POLLIN, deadline_ms);
                if (r < 0)
                        return r;
                k = socket_receive(fd, answer, sizeof(PlanAnswer), NULL, 0, MSG_DONTWAIT);
        } while (k == -EAGAIN);
        if (k < (ssize_t)offsetof(PlanAnswer, specs))
                return k < 0 && k != -EMSGSIZE ? (int)k : -EIO;
        if (answer->result < 0)
                return answer->result >= -4095 ? answer->result : -EIO;
        if (answer->n > REQUEST_PARTS_MAX ||
                (size_t)k != offsetof(PlanAnswer, specs) + answer->n * sizeof(PartitionSpec))
                return -EBADMSG;
        /* What partition_plan() promises; BLKPG would refuse the rest, but loopd asks it nothing unchecked.
         */
        for (size_t i = 0; i < answer->n; i++) {
                const PartitionSpec *p = &answer->specs[i];
                if (p->number < 1 || p->number > REQUEST_PARTS_MAX || p->length == 0 || p->start >= size ||
                        p->length > size - p->start || p->start % sector_size != 0 ||
                        p->length % sector_size != 0)
                        return -EBADMSG;
                for (size_t j = 0; j < i; j++)
                        if (answer->specs[j].number == p->number)
                                return -EBADMSG;
        }
        if (answer->n > 0) {
                specs = malloc(answer->n * sizeof(PartitionSpec));
                if (!specs)
                        return -ENOMEM;
                memcpy(specs, answer->specs, answer->n * sizeof(PartitionSpec));
        }
        *ret = TAKE_PTR(specs);
        *ret_n = answer->n;
        return 0;
}

int image_reader_plan_partitions(ImageReader *reader, int devfd, uint32_t sector_size, uint64_t size,
        int image_fd, PartitionSpec **ret, size_t *ret_n)
{
        /* A new child waits for the device's first probe after it, from the same image. */
        Request req = { .kind = REQUEST_PLAN,
                .size = size,
                .sector_size = sector_size,
                .idle_ms = image_fd >= 0 ? idle_of(reader) : 0 };
        Asked asked;
        int r;

        if (devfd < 0 || !ret || !ret_n || sector_size < 512 || sector_size > 4096)
                return -EINVAL;
        r = reader_ask(reader, image_fd, &req, offsetof(Request, parts), &devfd, 1, &asked);
        if (r >= 0)
                r = plan_answer_read(asked.fd, sector_size, size, asked.deadline_ms, ret, ret_n);
        /* The device's first probe comes next, from the same image. */
        reader_asked_done(reader, &asked, r >= 0, true);
        return r;
}

int image_reader_probe_filesystem(ImageReader *reader, int fd, const char *expected, char **ret_fstype,
        char **ret_label, char **ret_uuid)
{
        /* The answer's shape is a device's list: an entry numbered 0 when there is a filesystem. */
        const LoopProbeArea area = { .disk_fd = fd, .image_fd = -EBADF };
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;
        Request req = { .kind = REQUEST_FILESYSTEM };
        PartitionInfo *list = NULL;
        size_t n = 0;
        Asked asked;
        int r;

        if (fd < 0 || !ret_fstype || !ret_label || !ret_uuid)
                return -EINVAL;
        if (expected && strlen(expected) >= sizeof(req.expected))
                expected = NULL; /* no filesystem type is that long: every prober asks */
        if (expected)
                strcpy(req.expected, expected);
        r = reader_ask(reader, -EBADF, &req, offsetof(Request, parts), &fd, 1, &asked);
        if (r >= 0)
                r = loop_answer_read(asked.fd, &area, asked.deadline_ms, &list, &n);
        reader_asked_done(reader, &asked, r >= 0, false);
        if (r < 0)
                return r;
        fstype = n > 0 ? TAKE_PTR(list[0].fstype) : strdup("");
        label = n > 0 ? TAKE_PTR(list[0].label) : strdup("");
        uuid = n > 0 ? TAKE_PTR(list[0].uuid) : strdup("");
        partition_info_array_free(list, n);
        if (!fstype || !label || !uuid)
                return -ENOMEM;
        *ret_fstype = TAKE_PTR(fstype);
        *ret_label = TAKE_PTR(label);
        *ret_uuid = TAKE_PTR(uuid);
        return 0;
}

int image_reader_probe_device(ImageReader *reader, unsigned number, int image_fd, uint64_t image_offset,
        const KernelPartition *known, size_t n_known, PartitionInfo **ret, size_t *ret_n)
{
        LoopProbeArea a;
        int r;

        r = probe_loop_open(number, image_fd, image_offset, known, n_known, &a);
        if (r < 0)
                return r;
        r = image_reader_probe_loop(reader, &a, ret, ret_n);
        probe_loop_done(&a);
        return r;
}

int image_reader_read_hello(int fd, int *ret_pidfd)
{
        char hello;
        int pidfd;
        ssize_t n = socket_receive(fd, &hello, sizeof(hello), &pidfd, 1, MSG_DONTWAIT);

        if (n == -EAGAIN)
                return -EAGAIN;
        if (n != sizeof(hello) || hello != HELLO) {
                safe_close(pidfd);
                return -EIO;
        }
        *ret_pidfd = pidfd;
        return 0;
}
