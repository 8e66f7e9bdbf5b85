/* runner.c: the process that forks, ahead of need, the child each kernel mount and unmount runs in. */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

/* The child: waits for a request, tells the runner it took one (the runner forks the next child), runs op
 * and answers on the socket that came with the request; a success nobody acknowledges is undone. */
static _Noreturn void child_run(int sock, int taken_fd, RunnerOp op, RunnerUndo undo)
{
        void *request = malloc(RUNNER_REQUEST_MAX);
        int32_t result;
        int answer_fd;
        size_t size;
        ssize_t n;
        char ack;

        if (!request)
                _exit(EXIT_FAILURE);
        n = receive_with_fd(sock, request, RUNNER_REQUEST_MAX, &answer_fd);
        if (n == 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the runner ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (n < 0 || answer_fd < 0)
                _exit(EXIT_FAILURE);
        size = (size_t)n;
        /* As loopd would run it: its children (a mount.<type> helper) are waited for. */
        if (signal(SIGCHLD, SIG_DFL) == SIG_ERR)
                _exit(EXIT_FAILURE);

        result = (int32_t)op(request, size);
        if (send(answer_fd, &result, sizeof(result), MSG_NOSIGNAL) != (ssize_t)sizeof(result)) {
                if (result == 0)
                        undo(request, size);
                _exit(EXIT_FAILURE);
        }
        if (result < 0)
                _exit(EXIT_SUCCESS);
        do
                n = recv(answer_fd, &ack, 1, 0);
        while (n < 0 && errno == EINTR);
        /* loopd stopped waiting before it heard: what op did is nobody's. */
        if (n != 1)
                undo(request, size);
        _exit(EXIT_SUCCESS);
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

int runner_run(Runner *runner, const void *request, size_t size, int64_t deadline_ms)
{
        _cleanup_close_ int answer = -EBADF;
        int pair[2], r;
        int32_t result;
        ssize_t n;

        if (size == 0 || size > RUNNER_REQUEST_MAX)
                return -E2BIG;
        if (!runner || runner->fd < 0)
                return -EPIPE;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        answer = pair[0];
        /* The runner's queue full (many mounts at once): wait for room, never past the deadline. */
        while ((r = send_with_fd(runner->fd, request, size, pair[1])) == -EAGAIN) {
                r = wait_until(runner->fd, POLLOUT, deadline_ms);
                if (r < 0)
                        break;
        }
        (void)close(pair[1]);
        if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN) {
                runner->fd = safe_close(runner->fd);
                return -EPIPE;
        }
        if (r < 0)
                return r;

        r = wait_until(answer, POLLIN, deadline_ms);
        if (r < 0)
                return r; /* closing the answer socket tells the child: it undoes a late success */
        n = recv(answer, &result, sizeof(result), MSG_DONTWAIT);
        if (n != (ssize_t)sizeof(result) || result > 0 || result < -4095)
                return -EIO;
        if (result == 0)
                (void)send(answer, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        return result;
}
