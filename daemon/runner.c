/* runner.c: a child run with a deadline and an undo, forked ahead by the runner or by the caller. */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process-util.h"

struct Runner {
        int fd; /* loopd's end of the request socket */
};

/* Receives one message of at most size bytes and the fd that comes with it (-EBADF: none): its size, 0 at
 * the end of the stream, or -errno (-EMSGSIZE: cut, the fd closed). */
static ssize_t receive_with_fd(int sock, void *buf, size_t size, int *ret_fd)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr msg = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof(control)
        };
        ssize_t n;

        *ret_fd = -EBADF;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                        c->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
                if (*ret_fd >= 0)
                        (void)close(*ret_fd);
                *ret_fd = -EBADF;
                return -EMSGSIZE;
        }
        return n;
}

/* Sends size bytes of buf and fd, without waiting for room: 0, -EAGAIN, or -errno. */
static int send_with_fd(int sock, const void *buf, size_t size, int fd)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = size };
        struct msghdr msg = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof(control)
        };
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        ssize_t n;

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        do
                n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return n == (ssize_t)size ? 0 : -EIO;
}

/* The acknowledgement: 'y' once loopd heard of a success; anything else (or the end of the stream) means
 * nobody did. */
#define ACK_HEARD 'y'
#define ACK_LATE 'n'

/* In a child: runs op, sends its result on answer_fd, and undoes a success that loopd did not hear of. */
static _Noreturn void child_answer(
        int answer_fd, RunnerOp op, RunnerUndo undo, const void *request, size_t size)
{
        int32_t result = (int32_t)op(request, size);
        ssize_t n;
        char ack = 0;

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
        n = receive_with_fd(sock, request, RUNNER_REQUEST_MAX, &answer_fd);
        if (n == 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the runner ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (n <= 0 || answer_fd < 0)
                _exit(EXIT_FAILURE);
        /* As loopd would run it: its children (a mount.<type> helper) are waited for. */
        if (signal(SIGCHLD, SIG_DFL) == SIG_ERR)
                _exit(EXIT_FAILURE);
        child_answer(answer_fd, op, undo, request, (size_t)n);
}

/* The runner: keeps one child waiting. It holds nothing but the request socket, and goes when loopd goes. */
static _Noreturn void runner_loop(int sock, pid_t loopd, RunnerOp op, RunnerUndo undo)
{
        sigset_t none;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != loopd)
                _exit(EXIT_FAILURE);
        if (close_fds_except(sock, sock) < 0)
                _exit(EXIT_FAILURE);
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                _exit(EXIT_FAILURE);
        /* Its children are reaped by the kernel; a write to a closed socket or pipe is an error, not death.
         */
        if (signal(SIGCHLD, SIG_IGN) == SIG_ERR || signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                _exit(EXIT_FAILURE);
        (void)prctl(PR_SET_NAME, "loopd-runner");

        for (;;) {
                int taken[2];
                char c;
                ssize_t n;

                if (pipe2(taken, O_CLOEXEC) < 0)
                        _exit(EXIT_FAILURE);
                pid_t pid = fork();
                if (pid < 0)
                        _exit(EXIT_FAILURE);
                if (pid == 0) {
                        (void)close(taken[0]);
                        child_run(sock, taken[1], op, undo);
                }
                (void)close(taken[1]);
                do
                        n = read(taken[0], &c, 1);
                while (n < 0 && errno == EINTR);
                (void)close(taken[0]);
                /* No byte: the child found loopd's end closed, or died waiting. Either way loopd runs its
                 * requests some other way from now on (runner_run() fails with -EPIPE). */
                if (n <= 0)
                        _exit(EXIT_SUCCESS);
        }
}

int runner_new(RunnerOp op, RunnerUndo undo, Runner **ret)
{
        _cleanup_free_ Runner *r = NULL;
        pid_t loopd = getpid(), pid;
        int pair[2];

        if (!op || !undo || !ret)
                return -EINVAL;
        r = calloc(1, sizeof(Runner));
        if (!r)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                int k = -errno;
                (void)close(pair[0]);
                (void)close(pair[1]);
                return k;
        }
        if (pid == 0)
                runner_loop(pair[1], loopd, op, undo);
        (void)close(pair[1]);
        r->fd = pair[0];
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

/* Waits until fd is ready for events, up to deadline_ms: 0, -ETIMEDOUT, or -errno. */
static int wait_until(int fd, short events, int64_t deadline_ms)
{
        for (;;) {
                int64_t left = deadline_ms - now_ms();
                int k;

                if (left <= 0)
                        return -ETIMEDOUT;
                k = poll(&(struct pollfd){ .fd = fd, .events = events }, 1,
                        (int)MIN(left, (int64_t)INT32_MAX));
                if (k > 0)
                        return 0;
                if (k < 0 && errno != EINTR)
                        return -errno;
        }
}

/* Waits for the result on answer (loopd's end) until deadline_ms, and acknowledges a success. Past the
 * deadline the child is told it was late (it undoes a success), and answer is handed to *ret_pending (else
 * closed). */
static int answer_wait(int answer, int64_t deadline_ms, int *ret_pending)
{
        int32_t result;
        ssize_t n;
        int r;

        if (ret_pending)
                *ret_pending = -EBADF;
        r = wait_until(answer, POLLIN, deadline_ms);
        if (r < 0) {
                (void)send(answer, &(char){ ACK_LATE }, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (r == -ETIMEDOUT && ret_pending)
                        *ret_pending = answer;
                else
                        (void)close(answer);
                return r;
        }
        n = recv(answer, &result, sizeof(result), MSG_DONTWAIT);
        if (n != (ssize_t)sizeof(result) || result > 0 || result < -4095)
                r = -EIO;
        else if (result == 0 && send(answer, &(char){ ACK_HEARD }, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
                r = -EIO; /* the child did not hear it either: it undoes, or is gone */
        else
                r = result;
        (void)close(answer);
        return r;
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
        while ((r = send_with_fd(runner->fd, request, size, pair[1])) == -EAGAIN) {
                r = wait_until(runner->fd, POLLOUT, deadline_ms);
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
        return answer_wait(pair[0], deadline_ms, ret_pending);
}

int runner_run_forked(RunnerOp op, RunnerUndo undo, const void *request, size_t size, int64_t deadline_ms,
        int *ret_pending)
{
        int pair[2], r;
        pid_t pid;

        if (ret_pending)
                *ret_pending = -EBADF;
        if (!op || !undo || !request || size == 0 || size > RUNNER_REQUEST_MAX)
                return -E2BIG;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                r = -errno;
                (void)close(pair[0]);
                (void)close(pair[1]);
                return r;
        }
        if (pid == 0) {
                sigset_t none;

                /* Nothing of the caller's but the answer socket, and no signal of it blocked (a child left
                 * behind still hears a SIGTERM). */
                sigemptyset(&none);
                if (close_fds_except(pair[1], pair[1]) < 0 || sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                        _exit(EXIT_FAILURE);
                child_answer(pair[1], op, undo, request, size);
        }
        (void)close(pair[1]);
        r = answer_wait(pair[0], deadline_ms, ret_pending);
        /* Reaped here if it is gone already, else by the caller's SIGCHLD handling: never waited for (an
         * undo may wait in the kernel as the op did). */
        (void)waitpid(pid, NULL, WNOHANG);
        return r;
}
