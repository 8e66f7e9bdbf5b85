/* socket-util.h: one message and the fds that come with it over a SOCK_SEQPACKET socket (SCM_RIGHTS), as
 * loopd and its helper processes (image-reader.h, runner.h) speak. Never logs. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* The most fds one message carries. */
#define SOCKET_FDS_MAX 3

/* Receives one message of at most size bytes and up to n_fds (at most SOCKET_FDS_MAX) fds, close-on-exec
 * (the rest of fds[] set to -EBADF, and fds beyond n_fds closed). Returns its size, 0 at the end of the
 * stream, or -errno (-EMSGSIZE: it was cut). */
ssize_t socket_receive(int sock, void *buf, size_t size, int *fds, size_t n_fds, int flags);
/* Sends one message of size bytes with n_fds (at most SOCKET_FDS_MAX) fds. flags: MSG_DONTWAIT, or 0 to
 * wait for room; never SIGPIPE. 0, or -errno (-EIO: sent short). */
int socket_send(int sock, const void *buf, size_t size, const int *fds, size_t n_fds, int flags);
