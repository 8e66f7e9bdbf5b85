/* image-reader-child.c: what the reader's children run: their confinement, the requests they take and
 * the answers they send (image-reader.h says why). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-reader-internal.h"
#include "loop.h"
#include "process-util.h"
#include "sandbox-filter.h"

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
 * with no_new_privs, the reader's seccomp rules on top of the sandboxes' (which a child of the reader
 * inherits, and any other loads with them: ReaderLimits), no memory beyond what a probe needs, no file it
 * may write to and no child of its own. It needs nothing else: the fds it reads come over the socket. */
int reader_child_confine(const ReaderLimits *limits, pid_t reader)
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

int reader_limits_for_child(bool stacked, ReaderLimits *ret)
{
        uint64_t data;
        int r;

        r = sandbox_filter_get(stacked ? SANDBOX_FILTER_READER_OWN : SANDBOX_FILTER_READER, &ret->filter);
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

        r = reader_limits_for_child(false, &limits);
        if (r < 0)
                return r;
        return reader_child_confine(&limits, parent);
}

/* probe_loop_read(a), answered entry by entry on sock; a's fds are closed before the END goes. */
static int child_probe_loop(const LoopProbeArea *a, int sock)
{
        PartitionInfo *list = NULL;
        size_t n = 0;
        int r;

        r = probe_loop_read(a, &list, &n);
        if (a->disk_fd >= 0)
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
        answer->sector_size = req->sector_size;
        answer->size = req->size;
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

static int compare_specs(const void *a, const void *b)
{
        const PartitionSpec *x = a, *y = b;
        return x->number < y->number ? -1 : x->number > y->number;
}

/* After a REQUEST_IMAGE answer (probe) that found a raw image: the plan of the device to be bound to it,
 * and what is on that device with the plan's partitions, read from image_fd (image-reader-internal.h,
 * PlanAnswer). The device's size is the kernel's (loop_size_for()). image_fd is closed before the last
 * message goes. */
static int child_ahead(const Request *req, const ImageProbe *probe, int sock, int image_fd)
{
        _cleanup_free_ PartitionSpec *specs = NULL;
        _cleanup_free_ KernelPartition *parts = NULL;
        _cleanup_free_ PlanAnswer *answer = calloc(1, sizeof(PlanAnswer));
        size_t n = 0;
        struct stat st;
        int r;

        if (!answer) {
                (void)close(image_fd);
                return -ENOMEM;
        }
        answer->sector_size = req->sector_size ?: probe->sector_size;
        if (fstat(image_fd, &st) < 0)
                answer->result = -errno;
        else {
                answer->size = loop_size_for((uint64_t)st.st_size, req->offset, req->size);
                answer->result = partition_plan_at(
                        image_fd, req->offset, answer->sector_size, answer->size, &specs, &n);
        }
        answer->n = (uint32_t)MIN(n, REQUEST_PARTS_MAX);
        if (answer->n > 0)
                memcpy(answer->specs, specs, answer->n * sizeof(PartitionSpec));
        r = socket_send(
                sock, answer, offsetof(PlanAnswer, specs) + answer->n * sizeof(PartitionSpec), NULL, 0, 0);
        if (r < 0 || answer->result < 0) {
                (void)close(image_fd);
                return r; /* no plan, no list: loopd asks again */
        }
        parts = calloc(MAX(answer->n, 1u), sizeof(KernelPartition));
        if (!parts) {
                (void)close(image_fd);
                return -ENOMEM;
        }

        /* The kernel lists its partitions by number. */
        qsort(answer->specs, answer->n, sizeof(PartitionSpec), compare_specs);
        for (size_t i = 0; i < answer->n; i++)
                parts[i] = (KernelPartition){ .number = answer->specs[i].number,
                        .start = answer->specs[i].start,
                        .size = answer->specs[i].length };
        return child_probe_loop(&(LoopProbeArea){ .disk_fd = -EBADF,
                                        .size = answer->size,
                                        .sector_size = answer->sector_size,
                                        .image_fd = image_fd,
                                        .image_offset = req->offset,
                                        .parts = parts,
                                        .n_parts = answer->n },
                sock);
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
int reader_child_answer(const Request *req, const int fds[3])
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
                bool ahead;
                int r;

                answer.result = image_probe(fds[1], req->offset, req->size, &answer.probe);
                ahead = req->ahead && answer.result >= 0 && !answer.probe.format;
                /* Let go of the image before loopd hears (as worker.c's children do), unless there is
                 * more to read. */
                if (!ahead)
                        (void)close(fds[1]);
                r = socket_send(fds[0], &answer, sizeof(answer), NULL, 0, MSG_DONTWAIT);
                if (ahead && r >= 0)
                        r = child_ahead(req, &answer.probe, fds[0], fds[1]);
                else if (ahead)
                        (void)close(fds[1]);
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
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
                if (reader_child_answer(&req, fds) != EXIT_SUCCESS)
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

        if (reader_child_confine(limits, reader) < 0)
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

        if (reader_child_answer(&req, fds) != EXIT_SUCCESS)
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
void reader_serve(int sock, void *userdata)
{
        ReaderLimits limits = {};

        /* libblkid's reads are buffers of up to 256 KiB (the zfs prober asks for four a partition): from the
         * heap, where a child's second probe finds the first one's pages, rather than an mmap() of their
         * own that every probe faults in page by page. */
        (void)mallopt(M_MMAP_THRESHOLD, 4 << 20);
        (void)mallopt(M_TRIM_THRESHOLD, 16 << 20);
        /* The sandboxes' rules on the reader itself (it forks, reads and closes; root, it may load a filter
         * without no_new_privs): each child inherits them and loads only the reader's own. The kernel
         * compiles a filter as it is loaded, a tenth of a millisecond a child for the whole one. Without
         * that, each child loads the whole one. */
        const struct sock_fprog *base;
        bool stacked = sandbox_filter_get(SANDBOX_FILTER_PROGRAM, &base) >= 0 &&
                prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, base) >= 0;
        /* Found here, once: each child only applies them (the filter built, not loaded). */
        if (reader_limits_for_child(stacked, &limits) < 0)
                return;
        prefork_serve(sock, reader_child, &(ReaderChild){ .reader = getpid(), .limits = &limits });
}
