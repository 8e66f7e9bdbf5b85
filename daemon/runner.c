/* runner.c: a child run with a deadline and an undo, forked ahead by the runner or by the caller. */
#include "runner.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "process-util.h"
#include "socket-util.h"

struct Runner {
        int fd; /* loopd's end of the request socket */
        const RunnerOps *const *table;
        size_t n_ops;
};

/* A request on the runner's socket: the op's index in the table (a uint32_t), then the caller's bytes; the
 * answer socket and the caller's fds come with it. */
#define REQUEST_HEADER sizeof(uint32_t)
/* The answer socket and the caller's fds travel in one message. */
_Static_assert(1 + RUNNER_FDS_MAX <= SOCKET_FDS_MAX, "a runner request's fds fit in one message");

/* The child's answer: TOOK (one byte) as it starts op, then op's result (an int32). loopd's
 * acknowledgement: ACK_HEARD once it heard of a success; the end of the stream (loopd shut its side down,
 * or is gone) means nobody did. */
#define TOOK 't'
#define ACK_HEARD 'y'

/* In a child: runs ops->op (unless loopd stopped waiting before it started), sends its result on
 * answer_fd, and undoes a success that loopd did not hear of. */
static _Noreturn void child_answer(
        int answer_fd, const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds)
{
        int32_t result;
        ssize_t n;
        char ack = 0;

        /* A request that waited in the runner's queue past loopd's deadline is not run at all. */
        if (poll(&(struct pollfd){ .fd = answer_fd, .events = POLLIN }, 1, 0) != 0)
                _exit(EXIT_SUCCESS);
        if (send(answer_fd, &(char){ TOOK }, 1, MSG_NOSIGNAL) != 1)
                _exit(EXIT_SUCCESS);
        result = (int32_t)ops->op(request, size, fds, n_fds);
        n = send(answer_fd, &result, sizeof(result), MSG_NOSIGNAL);
        if (result < 0)
                _exit(EXIT_SUCCESS);
        if (n == (ssize_t)sizeof(result)) {
                do
                        n = recv(answer_fd, &ack, 1, 0);
                while (n < 0 && errno == EINTR);
        }
        if ((n != 1 || ack != ACK_HEARD) && ops->undo)
                ops->undo(request, size, fds, n_fds);
        _exit(EXIT_SUCCESS);
}

static int invalid_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        (void)request;
        (void)size;
        (void)fds;
        (void)n_fds;
        return -EINVAL;
}

static const RunnerOps invalid_ops = { .op = invalid_op };

/* The child of the runner: waits for a request, tells the runner it took one (the runner forks the next
 * child), then answers it on the socket that came with it. */
static _Noreturn void child_run(int sock, int taken_fd, const Runner *runner)
{
        uint8_t *buf = malloc(REQUEST_HEADER + RUNNER_REQUEST_MAX);
        int fds[1 + RUNNER_FDS_MAX];
        size_t n_fds = 0;
        uint32_t index = UINT32_MAX;
        ssize_t n;

        if (!buf)
                _exit(EXIT_FAILURE);
        n = socket_receive(sock, buf, REQUEST_HEADER + RUNNER_REQUEST_MAX, fds, ELEMENTSOF(fds), 0);
        if (n == 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the runner ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (fds[0] < 0)
                _exit(EXIT_FAILURE); /* no answer socket: nobody to tell */
        /* A request that makes no sense is answered -EINVAL, after TOOK: ending without one would tell
         * loopd the runner is gone. */
        if (n > (ssize_t)REQUEST_HEADER)
                memcpy(&index, buf, sizeof(index));
        if (n <= (ssize_t)REQUEST_HEADER || index >= runner->n_ops)
                child_answer(fds[0], &invalid_ops, buf, 0, NULL, 0);
        while (n_fds < RUNNER_FDS_MAX && fds[1 + n_fds] >= 0)
                n_fds++;
        /* As loopd would run it: its children (a mount.<type> helper) are waited for, and inherit the
         * default SIGPIPE. */
        if (signal(SIGCHLD, SIG_DFL) == SIG_ERR || signal(SIGPIPE, SIG_DFL) == SIG_ERR)
                _exit(EXIT_FAILURE);
        child_answer(fds[0], runner->table[index], buf + REQUEST_HEADER, (size_t)n - REQUEST_HEADER, fds + 1,
                n_fds);
}

static void runner_child(int sock, int taken_fd, void *userdata)
{
        child_run(sock, taken_fd, userdata);
}

/* The runner itself: keeps one child waiting, until loopd goes (or that child dies waiting: loopd then
 * runs its requests some other way, runner_run() fails with -EPIPE). */
static void runner_serve(int sock, void *userdata)
{
        prefork_serve(sock, runner_child, userdata);
}

int runner_new(const RunnerOps *const *table, size_t n_ops, Runner **ret)
{
        _cleanup_free_ Runner *r = NULL;
        int k;

        if (!table || n_ops == 0 || n_ops > UINT32_MAX || !ret)
                return -EINVAL;
        for (size_t i = 0; i < n_ops; i++)
                if (!table[i] || !table[i]->op)
                        return -EINVAL;
        r = calloc(1, sizeof(Runner));
        if (!r)
                return -ENOMEM;
        r->table = table;
        r->n_ops = n_ops;
        /* The runner gets r (and the table, loopd's statics) as it forks. */
        k = prefork_start("loopd-runner", runner_serve, r, &r->fd);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(r);
        return 0;
}

Runner *runner_free(Runner *runner)
{
        if (runner) {
                safe_close(runner->fd);
                free(runner);
        }
        return NULL;
}

/* Waits for the child's answer on answer (loopd's end) until deadline_ms, and acknowledges a success.
 * Past the deadline loopd shuts its side down (the child, if it has not started, does not; if it has, it
 * undoes a success) and answer goes to *ret_pending (else closed). -EPIPE when the child ended before it
 * started op (it may be run elsewhere); op's own -EPIPE is -EIO. */
static int answer_wait(int answer, int64_t deadline_ms, int *ret_pending)
{
        bool took = false;
        int r;

        if (ret_pending)
                *ret_pending = -EBADF;
        for (;;) {
                char buf[sizeof(int32_t)];
                int32_t result = 0;
                ssize_t n;

                r = fd_wait_until(answer, POLLIN, deadline_ms);
                if (r < 0) {
                        (void)shutdown(answer, SHUT_WR);
                        if (r == -ETIMEDOUT && ret_pending)
                                *ret_pending = answer;
                        else
                                (void)close(answer);
                        return r;
                }
                n = recv(answer, buf, sizeof(buf), MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n == 1 && !took && buf[0] == TOOK) {
                        took = true;
                        continue;
                }
                if (n == (ssize_t)sizeof(result))
                        memcpy(&result, buf, sizeof(result));
                if (n != (ssize_t)sizeof(result) || !took || result > 0 || result < -4095)
                        r = n <= 0 && !took ? -EPIPE : -EIO;
                else if (result == 0 &&
                        send(answer, &(char){ ACK_HEARD }, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
                        r = -EIO; /* the child did not hear it either: it undoes, or is gone */
                else
                        r = result == -EPIPE ? -EIO : result;
                (void)close(answer);
                return r;
        }
}

bool runner_pending_done(int pending_fd)
{
        for (;;) {
                char buf[8];
                ssize_t n = recv(pending_fd, buf, sizeof(buf), MSG_DONTWAIT);

                if (n > 0)
                        continue;
                return !(n < 0 && (errno == EAGAIN || errno == EINTR));
        }
}

/* 0 when a request can go, else runner_run()'s -errno for it. */
static int request_check(
        const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds)
{
        if (!ops || !ops->op)
                return -EINVAL;
        if (!request || size == 0 || size > RUNNER_REQUEST_MAX || n_fds > RUNNER_FDS_MAX ||
                (n_fds > 0 && !fds))
                return -E2BIG;
        for (size_t i = 0; i < n_fds; i++)
                if (fds[i] < 0)
                        return -EBADF;
        return 0;
}

int runner_run(Runner *runner, const RunnerOps *ops, const void *request, size_t size, const int *fds,
        size_t n_fds, int64_t deadline_ms, int *ret_pending)
{
        _cleanup_free_ uint8_t *buf = NULL;
        int pair[2], sent[1 + RUNNER_FDS_MAX], r;
        uint32_t index = 0;

        if (ret_pending)
                *ret_pending = -EBADF;
        r = request_check(ops, request, size, fds, n_fds);
        if (r < 0)
                return r;
        if (!runner || runner->fd < 0)
                return -EPIPE;
        while (index < runner->n_ops && runner->table[index] != ops)
                index++;
        if (index == runner->n_ops)
                return -EINVAL;
        buf = malloc(REQUEST_HEADER + size);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, &index, sizeof(index));
        memcpy(buf + REQUEST_HEADER, request, size);
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        sent[0] = pair[1];
        for (size_t i = 0; i < n_fds; i++)
                sent[1 + i] = fds[i];
        /* The runner's queue full (many mounts at once): wait for room, never past the deadline. */
        while ((r = socket_send(runner->fd, buf, REQUEST_HEADER + size, sent, 1 + n_fds, MSG_DONTWAIT)) ==
                -EAGAIN) {
                r = fd_wait_until(runner->fd, POLLOUT, deadline_ms);
                if (r < 0)
                        break;
        }
        (void)close(pair[1]);
        if (r < 0) {
                (void)close(pair[0]);
                if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) {
                        runner->fd = safe_close(runner->fd);
                        return -EPIPE;
                }
                return r;
        }
        r = answer_wait(pair[0], deadline_ms, ret_pending);
        /* Its child ended before it took the request (the runner died with it in its queue): the runner is
         * gone, and the request was not run. */
        if (r == -EPIPE)
                runner->fd = safe_close(runner->fd);
        return r;
}

int runner_run_forked(const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds,
        int64_t deadline_ms, int *ret_pending)
{
        int sock, r;
        pid_t pid;

        if (ret_pending)
                *ret_pending = -EBADF;
        r = request_check(ops, request, size, fds, n_fds);
        if (r < 0)
                return r;
        pid = fork_with_socket(&sock);
        if (pid < 0)
                return (int)pid;
        if (pid == 0) {
                int keep[1 + RUNNER_FDS_MAX] = { sock };
                sigset_t none;

                for (size_t i = 0; i < n_fds; i++)
                        keep[1 + i] = fds[i];
                /* Nothing of the caller's but the answer socket and fds, and no signal of it blocked (a
                 * child left behind still hears a SIGTERM). */
                sigemptyset(&none);
                if (close_fds_except(keep, 1 + n_fds) < 0 || sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                        _exit(EXIT_FAILURE);
                child_answer(sock, ops, request, size, fds, n_fds);
        }
        r = answer_wait(sock, deadline_ms, ret_pending);
        if (r == -EPIPE)
                r = -EIO; /* nothing else to run it */
        /* Reaped here if it is gone already, else by the caller's SIGCHLD handling: never waited for (an
         * undo may wait in the kernel as the op did). */
        (void)waitpid(pid, NULL, WNOHANG);
        return r;
}

/* ---- the process's runner ---- */

static Runner *process_runner;

int runner_start(const RunnerOps *const *table, size_t n_ops)
{
        if (process_runner)
                return 0;
        return runner_new(table, n_ops, &process_runner);
}

void runner_stop(void)
{
        process_runner = runner_free(process_runner);
}

int runner_call(const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds,
        int64_t deadline_ms, int *ret_pending)
{
        int r;

        r = runner_run(process_runner, ops, request, size, fds, n_fds, deadline_ms, ret_pending);
        if (r == -EPIPE) {
                process_runner = runner_free(process_runner);
                r = runner_run_forked(ops, request, size, fds, n_fds, deadline_ms, ret_pending);
        }
        return r;
}
