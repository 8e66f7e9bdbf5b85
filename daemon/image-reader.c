/* image-reader.c: the process that forks, ahead of need, the child each caller's image is read in. */
#include "image-reader.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "process-util.h"

struct ImageReader {
        int fd; /* loopd's end of the request socket */
};

/* loopd → child, with the image's fd and the answer socket's child end. */
typedef struct Request {
        uint64_t offset;
        uint64_t size;
} Request;

/* child → loopd, first: one byte (a message of none would read as the end of the stream), with the child's
 * pidfd. */
#define HELLO 'h'

/* Writes the pages of stack a read uses (image_probe() reads 16 KiB onto it) while the child still waits:
 * copy-on-write faults then, not once a caller waits for the answer. */
static __attribute__((noinline)) void prefault_stack(void)
{
        volatile unsigned char pages[4 * IMAGE_HEAD_SIZE];

        for (size_t i = 0; i < sizeof(pages); i += 4096)
                pages[i] = 0;
}

/* Receives one message and up to n_fds fds (the rest of fds[] set to -EBADF). Returns its size, 0 at the end
 * of the stream, or -errno. */
static ssize_t receive(int sock, void *buf, size_t size, int *fds, size_t n_fds, int flags)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(2 * sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr msg = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = CMSG_SPACE(n_fds * sizeof(int)),
        };
        ssize_t n;

        for (size_t i = 0; i < n_fds; i++)
                fds[i] = -EBADF;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *in = (int *)(void *)CMSG_DATA(c);
                for (size_t i = 0; i < got; i++)
                        if (i < n_fds)
                                fds[i] = in[i];
                        else
                                (void)close(in[i]);
        }
        return n;
}

static int send_with_fds(int sock, const void *buf, size_t size, const int *fds, size_t n_fds)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(2 * sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = size };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

        if (n_fds > 0) {
                msg.msg_control = &control;
                msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
                memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
        }
        if (sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)size)
                return negative_errno();
        return 0;
}

/* The child: waits for a request, tells the reader it took one (the reader forks the next child), says
 * hello to loopd, reads the image and answers. */
static _Noreturn void child_run(int sock, int taken_fd, pid_t reader)
{
        Request req;
        ImageReaderAnswer answer = {};
        int fds[2]; /* the image, the answer socket */
        ssize_t n;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != reader)
                _exit(EXIT_FAILURE);
        prefault_stack();
        n = receive(sock, &req, sizeof(req), fds, 2, 0);
        if (n <= 0)
                _exit(EXIT_SUCCESS); /* loopd closed its end: the reader ends with this child */
        (void)!write(taken_fd, "", 1);
        (void)close(taken_fd);
        (void)close(sock);
        if (n != sizeof(req) || fds[0] < 0 || fds[1] < 0)
                _exit(EXIT_FAILURE);

        /* Without a pidfd loopd cannot kill this child at the deadline, but it still hears the answer. */
        char hello = HELLO;
        int pidfd = pidfd_open_pid(getpid());
        if (send_with_fds(fds[1], &hello, sizeof(hello), &pidfd, pidfd >= 0 ? 1 : 0) < 0)
                _exit(EXIT_FAILURE);
        if (pidfd >= 0)
                (void)close(pidfd);

        answer.result = image_probe(fds[0], req.offset, req.size, &answer.probe);
        /* Let go of the image before loopd hears (as worker.c's children do). */
        (void)close(fds[0]);
        if (send_with_fds(fds[1], &answer, sizeof(answer), NULL, 0) < 0)
                _exit(EXIT_FAILURE);
        _exit(EXIT_SUCCESS);
}

/* The reader: keeps one child waiting. It holds nothing but the request socket, and goes when loopd goes. */
static _Noreturn void reader_run(int sock, pid_t loopd)
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
        (void)prctl(PR_SET_NAME, "loopd-reader");

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
                        child_run(sock, taken[1], getppid());
                }
                (void)close(taken[1]);
                do
                        n = read(taken[0], &c, 1);
                while (n < 0 && errno == EINTR);
                (void)close(taken[0]);
                /* No byte: the child found loopd's end closed, or died waiting. Either way loopd forks its
                 * own workers from now on (image_reader_submit() fails). */
                if (n <= 0)
                        _exit(EXIT_SUCCESS);
        }
}

int image_reader_new(ImageReader **ret)
{
        _cleanup_free_ ImageReader *r = NULL;
        pid_t loopd = getpid(), pid;
        int pair[2], pidfd;

        pidfd = pidfd_open_pid(loopd);
        if (pidfd < 0)
                return -EOPNOTSUPP;
        (void)close(pidfd);

        r = calloc(1, sizeof(ImageReader));
        if (!r)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();
        pid = fork();
        if (pid < 0) {
                int k = negative_errno();
                (void)close(pair[0]);
                (void)close(pair[1]);
                return k;
        }
        if (pid == 0)
                reader_run(pair[1], loopd);
        (void)close(pair[1]);
        r->fd = pair[0];
        *ret = TAKE_PTR(r);
        return 0;
}

ImageReader *image_reader_free(ImageReader *reader)
{
        if (reader) {
                safe_close(reader->fd);
                free(reader);
        }
        return NULL;
}

int image_reader_submit(ImageReader *reader, int image_fd, uint64_t offset, uint64_t size, int *ret_fd)
{
        Request req = { .offset = offset, .size = size };
        int pair[2], r;

        if (!reader || reader->fd < 0)
                return -EPIPE;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();
        if (fcntl(pair[0], F_SETFL, O_NONBLOCK) < 0) {
                r = negative_errno();
                goto fail;
        }
        r = send_with_fds(reader->fd, &req, sizeof(req), (int[]){ image_fd, pair[1] }, 2);
        if (r < 0) {
                /* The reader is gone (or its queue is full): loopd forks its own worker. */
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

int image_reader_read_hello(int fd, int *ret_pidfd)
{
        char hello;
        int pidfd;
        ssize_t n = receive(fd, &hello, sizeof(hello), &pidfd, 1, MSG_DONTWAIT);

        if (n == -EAGAIN)
                return -EAGAIN;
        if (n != sizeof(hello) || hello != HELLO) {
                safe_close(pidfd);
                return -EIO;
        }
        *ret_pidfd = pidfd;
        return 0;
}
