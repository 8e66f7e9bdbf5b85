/* socket-util.c: one message and its fds over a SOCK_SEQPACKET socket. */
#include "socket-util.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"

ssize_t socket_receive(int sock, void *buf, size_t size, int *fds, size_t n_fds, int flags)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(SOCKET_FDS_MAX * sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr msg = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = CMSG_SPACE(n_fds * sizeof(int)),
        };
        ssize_t n;

        if (n_fds > SOCKET_FDS_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n_fds; i++)
                fds[i] = -EBADF;
        do
                n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
                n = -EMSGSIZE; /* the fds that came are still closed below or handed back */
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

int socket_send(int sock, const void *buf, size_t size, const int *fds, size_t n_fds, int flags)
{
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(SOCKET_FDS_MAX * sizeof(int))];
        } control = {};
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = size };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

        if (n_fds > SOCKET_FDS_MAX)
                return -EINVAL;
        if (n_fds > 0) {
                msg.msg_control = &control;
                msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
                struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
                memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
        }
        ssize_t n;
        do
                n = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t)size)
                return n < 0 ? negative_errno() : -EIO;
        return 0;
}
