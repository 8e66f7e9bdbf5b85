/* runner.c: a child run with a deadline and an undo, forked ahead by the runner or by the caller. */
#include "runner.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process-util.h"
#include "socket-util.h"

struct Runner {
        int fd; /* loopd's end of the request socket */
};

/* The child's answer: TOOK (one byte) as it starts op, then op's result (an int32). loopd's
 * acknowledgement: ACK_HEARD once it heard of a success; the end of the stream (loopd shut its side down,
 * or is gone) means nobody did. */
#define TOOK 't'
#define ACK_HEARD 'y'

/* In a child: runs op (unless loopd stopped waiting before it started), sends its result on answer_fd, and
 * undoes a success that loopd did not hear of. */
static _Noreturn void child_answer(
        int answer_fd, RunnerOp op, RunnerUndo undo, const void *request, size_t size)
{
        int32_t result;
        ssize_t n;
        char ack = 0;

        /* A request that waited in the runner's queue past loopd's deadline is not run at all. */
        if (poll(&(struct pollfd){ .fd = answer_fd, .events = POLLIN }, 1, 0) != 0)
                _exit(EXIT_SUCCESS);
        if (send(answer_fd, &(char){ TOOK }, 1, MSG_NOSIGNAL) != 1)
                _exit(EXIT_SUCCESS);
        result = (int32_t)op(request, size);
        n = send(answer_fd, &result, sizeof(result), MSG_NOSIGNAL);
        if (result < 0)
                _exit(EXIT_SUCCESS);
        if (n == (ssize_t)sizeof(result)) {
                do
                        n = recv(answer_fd, &ack, 1, 0);
                while (n < 0 && errno == EINTR);
        }
        if (n != 1 || ack != ACK_HEARD)
                undo(request, size);
        _exit(EXIT_SUCCESS);
}

/* The child of the runner: waits for a request, tells the runner it took one (the runner forks the next
 * child), then answers it on the socket that came with it. */
static _Noreturn void child_run(int sock, int taken_fd, RunnerOp op, RunnerUndo undo)
{
        void *request = malloc(RUNNER_REQUEST_MAX);
        int answer_fd;
        ssize_t n;

        if (!request)
                _exit(EXIT_FAILURE);
        n = socket_receive(sock, request, RUNNER_REQUEST_MAX, &answer_fd, 1, 0);
        if (n == 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the runner ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (n <= 0 || answer_fd < 0)
                _exit(EXIT_FAILURE);
        /* As loopd would run it: its children (a mount.<type> helper) are waited for, and inherit the
         * default SIGPIPE. */
        if (signal(SIGCHLD, SIG_DFL) == SIG_ERR || signal(SIGPIPE, SIG_DFL) == SIG_ERR)
                _exit(EXIT_FAILURE);
        child_answer(answer_fd, op, undo, request, (size_t)n);
}

/* What the runner's children run. */
typedef struct RunnerOps {
        RunnerOp op;
        RunnerUndo undo;
} RunnerOps;

static void runner_child(int sock, int taken_fd, void *userdata)
{
        const RunnerOps *ops = userdata;

        child_run(sock, taken_fd, ops->op, ops->undo);
}

/* The runner itself: keeps one child waiting, until loopd goes (or that child dies waiting: loopd then
 * runs its requests some other way, runner_run() fails with -EPIPE). */
static void runner_serve(int sock, void *userdata)
{
        prefork_serve(sock, runner_child, userdata);
}

int runner_new(RunnerOp op, RunnerUndo undo, Runner **ret)
{
        _cleanup_free_ Runner *r = NULL;
        RunnerOps ops = { .op = op, .undo = undo };
        int k;

        if (!op || !undo || !ret)
                return -EINVAL;
        r = calloc(1, sizeof(Runner));
        if (!r)
                return -ENOMEM;
        /* ops is copied into the runner as it forks. */
        k = prefork_start("loopd-runner", runner_serve, &ops, &r->fd);
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

int runner_run(Runner *runner, const void *request, size_t size, int64_t deadline_ms, int *ret_pending)
{
        int pair[2], r;

        if (ret_pending)
                *ret_pending = -EBADF;
        if (!request || size == 0 || size > RUNNER_REQUEST_MAX)
                return -E2BIG;
        if (!runner || runner->fd < 0)
                return -EPIPE;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        /* The runner's queue full (many mounts at once): wait for room, never past the deadline. */
        while ((r = socket_send(runner->fd, request, size, &pair[1], 1, MSG_DONTWAIT)) == -EAGAIN) {
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

int runner_run_forked(RunnerOp op, RunnerUndo undo, const void *request, size_t size, int64_t deadline_ms,
        int *ret_pending)
{
        int sock, r;
        pid_t pid;

        if (ret_pending)
                *ret_pending = -EBADF;
        if (!op || !undo || !request || size == 0 || size > RUNNER_REQUEST_MAX)
                return -E2BIG;
        pid = fork_with_socket(&sock);
        if (pid < 0)
                return (int)pid;
        if (pid == 0) {
                sigset_t none;

                /* Nothing of the caller's but the answer socket, and no signal of it blocked (a child left
                 * behind still hears a SIGTERM). */
                sigemptyset(&none);
                if (close_fds_except(sock, sock) < 0 || sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                        _exit(EXIT_FAILURE);
                child_answer(sock, op, undo, request, size);
        }
        r = answer_wait(sock, deadline_ms, ret_pending);
        if (r == -EPIPE)
                r = -EIO; /* nothing else to run it */
        /* Reaped here if it is gone already, else by the caller's SIGCHLD handling: never waited for (an
         * undo may wait in the kernel as the op did). */
        (void)waitpid(pid, NULL, WNOHANG);
        return r;
}
