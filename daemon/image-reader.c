/* image-reader.c: loopd's side of the reader: starting it, handing its children requests, and checking what
 * they answer (their side: image-reader-child.c; the children parked between questions, and what they send
 * ahead: image-reader-session.c). */
#include "image-reader.h"
#include "image-reader-internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "loop-name.h"
#include "process-util.h"

/* A reader that is gone (killed, or out of memory) is forked again by the next request, then at most once in
 * this long: one that keeps dying leaves loopd forking a child for each request meanwhile. */
#define READER_RESTART_MS (10 * 1000)

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

ImageReader *image_reader_free(ImageReader *reader)
{
        if (reader) {
                reader_sessions_end(reader);
                safe_close(reader->fd);
                free(reader);
        }
        return NULL;
}

/* Forks the reader again if it is gone and its time has come. Forked from loopd as it is now (larger than
 * at its start), it costs its children more copy-on-write faults, and a fork of loopd for each request less.
 */
static void restart_if_gone(ImageReader *reader)
{
        if (!reader || reader->fd >= 0 || now_ms() < reader->restart_after_ms)
                return;
        reader->restart_after_ms = now_ms() + READER_RESTART_MS;
        if (prefork_start("loopd-reader", reader_serve, NULL, &reader->fd) < 0)
                reader->fd = -EBADF;
}

/* Sends req (size bytes of it) with the answer socket's child end first and then fds; *ret_fd is loopd's
 * end (nonblocking). */
static int submit(
        ImageReader *reader, const Request *req, size_t size, const int *fds, size_t n_fds, int *ret_fd)
{
        int pair[2], all[3], r;

        assert(n_fds <= 2);
        restart_if_gone(reader);
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

int image_reader_submit(ImageReader *reader, int image_fd, uint64_t offset, uint64_t size,
        uint32_t sector_size, bool ahead, int *ret_fd)
{
        Request req = { .kind = REQUEST_IMAGE,
                .offset = offset,
                .size = size,
                .sector_size = sector_size,
                .ahead = ahead,
                .idle_ms = idle_of(reader) };

        return submit(reader, &req, offsetof(Request, parts), &image_fd, 1, ret_fd);
}

int64_t reader_deadline(const ImageReader *reader)
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

int reader_loop_answer_read(int fd, const LoopProbeArea *area, int64_t deadline_ms, PartitionInfo **ret,
        size_t *ret_n, bool *from_child)
{
        _cleanup_free_ char *buf = malloc(LOOP_ANSWER_MAX);
        PartitionInfo *list = calloc(area->n_parts + 2, sizeof(PartitionInfo));
        size_t n = 0;
        int r;

        if (from_child)
                *from_child = false;
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
                        if (from_child)
                                *from_child = head.result < 0;
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
        r = reader_limits_for_child(false, &limits);
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
                if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 || reader_child_confine(&limits, parent) < 0)
                        _exit(EXIT_FAILURE);
                _exit(reader_child_answer(
                        req, (int[]){ 3, n_fds > 0 ? 4 : -EBADF, n_fds > 1 ? 5 : -EBADF }));
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
                .fd = -EBADF, .pidfd = -EBADF, .deadline_ms = reader_deadline(reader), .session_fd = -EBADF
        };
        if (reader_session_unpark(reader, session_fd, &p) > 0) {
                /* A child that read this image already, waiting: no fork, no hello. One that is gone (its
                 * time ran out as it was asked), or that sent what this question did not read, leaves the
                 * question to a new one. */
                if (p.ahead == AHEAD_NONE && socket_send(p.fd, req, size, fds, n_fds, MSG_DONTWAIT) >= 0) {
                        ret->fd = p.fd;
                        ret->pidfd = p.pidfd;
                        ret->session_fd = session_fd;
                        return 0;
                }
                reader_parked_end(&p);
        }
        /* No reader (or gone and not forked again yet): submit() says -EPIPE. */
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
                image_reader_park(reader, TAKE_FD(a->fd), TAKE_FD(a->pidfd), a->session_fd, false, 0);
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

int reader_plan_answer_read(int fd, int64_t deadline_ms, PartitionSpec **ret, size_t *ret_n,
        uint32_t *ret_sector_size, uint64_t *ret_size, bool *from_child)
{
        _cleanup_free_ PlanAnswer *answer = malloc(sizeof(PlanAnswer));
        uint32_t sector_size;
        uint64_t size;
        ssize_t k;
        int r;

        if (from_child)
                *from_child = false;
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
        if (answer->result < 0) {
                if (from_child)
                        *from_child = true;
                return answer->result >= -4095 ? answer->result : -EIO;
        }
        sector_size = answer->sector_size;
        size = answer->size;
        if (answer->n > REQUEST_PARTS_MAX ||
                (size_t)k != offsetof(PlanAnswer, specs) + answer->n * sizeof(PartitionSpec) ||
                sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)
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
        r = partition_specs_dup(answer->specs, answer->n, ret);
        if (r < 0)
                return r;
        *ret_n = answer->n;
        *ret_sector_size = sector_size;
        *ret_size = size;
        return 0;
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
        /* Attach's first probe of the device it bound: sent ahead, while it bound it. */
        r = reader_ahead_list(reader, area, ret, ret_n);
        if (r != -ENOMSG)
                return r;
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
                r = reader_loop_answer_read(asked.fd, area, asked.deadline_ms, ret, ret_n, NULL);
        /* The first look at a device Attach bound ends the image's session. */
        reader_asked_done(reader, &asked, r >= 0, false);
        return r;
}

int image_reader_plan_partitions(ImageReader *reader, int devfd, uint32_t sector_size, uint64_t size,
        int image_fd, uint64_t image_offset, PartitionSpec **ret, size_t *ret_n)
{
        /* A new child waits for the device's first probe after it, from the same image. */
        Request req = { .kind = REQUEST_PLAN,
                .size = size,
                .sector_size = sector_size,
                .idle_ms = image_fd >= 0 ? idle_of(reader) : 0 };
        uint32_t answered_sector_size;
        uint64_t answered_size;
        Asked asked;
        int r;

        if (devfd < 0 || !ret || !ret_n || sector_size < 512 || sector_size > 4096)
                return -EINVAL;
        /* Sent ahead by the child that read the image, as the device was being bound. */
        r = reader_ahead_plan(reader, image_fd, image_offset, sector_size, size, ret, ret_n);
        if (r != -ENOMSG)
                return r;
        r = reader_ask(reader, image_fd, &req, offsetof(Request, parts), &devfd, 1, &asked);
        if (r >= 0)
                r = reader_plan_answer_read(asked.fd, asked.deadline_ms, ret, ret_n, &answered_sector_size,
                        &answered_size, NULL);
        if (r >= 0 && (answered_sector_size != sector_size || answered_size != size)) {
                *ret = mfree(*ret);
                r = -EBADMSG;
        }
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
                r = reader_loop_answer_read(asked.fd, &area, asked.deadline_ms, &list, &n, NULL);
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
