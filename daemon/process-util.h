/* process-util.h: child and helper processes by pidfd: open, signal, wait with a deadline, and the start
 * time that tells one process from a later one with the same pid. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic milliseconds, for deadlines. */
int64_t now_ms(void);
/* pidfd_open(2) and pidfd_send_signal(2): the fd, or -1 with errno set (no glibc wrappers on Debian 12). */
int pidfd_open_pid(pid_t pid);
int pidfd_signal(int pidfd, int sig);
/* Waits until fd is ready for events (POLLIN, POLLOUT), up to deadline_ms (now_ms()): 0, -ETIMEDOUT past
 * it, or -errno. */
int fd_wait_until(int fd, short events, int64_t deadline_ms);
/* socketpair(AF_UNIX, SOCK_SEQPACKET) and fork(): in the parent the child's pid and *ret_fd its end, in the
 * child 0 and *ret_fd the child's end (the other end closed in each), or -errno. */
pid_t fork_with_socket(int *ret_fd);
/* Waits until the process behind pidfd has exited or deadline_ms (now_ms()) has passed. True if it exited.
 */
bool pidfd_wait_until(int pidfd, int64_t deadline_ms);
/* Runs fn(userdata) in a child that shares loopd's memory, on a stack of its own, while the caller waits
 * until it has called execve() or exited (clone(2) with CLONE_VM | CLONE_VFORK, as posix_spawn() does): no
 * page of loopd's is copied, and nothing of it is written after the child starts (on a 2-CPU machine a fork
 * of loopd and its copy-on-write faults cost a millisecond or more). fn never returns: it execs or _exit()s.
 * It may only use the system calls and async-signal-safe functions, on its stack, as after a fork; errno it
 * sets is the caller's. flags: more clone flags (namespaces). Returns the pid (and a pidfd in *ret_pidfd
 * unless NULL), or -errno. */
pid_t clone_vfork(int (*fn)(void *), void *userdata, unsigned long flags, int *ret_pidfd);
/* Helper processes loopd forks as it starts (loopd-reader, loopd-runner), each keeping one child forked and
 * waiting for loopd's next request on a socket. prefork_setup() starts one: it dies with parent (SIGKILL),
 * keeps no fd but 0-2 and sock, blocks no signal, lets the kernel reap its children, takes a write to a
 * closed pipe for an error, and calls itself name. prefork_serve() then forks child(sock, taken_fd,
 * userdata) again and again: each child writes a byte to taken_fd once it took a request (and never
 * returns), which makes the next; it returns when a child wrote none (it found the parent's end closed, or
 * died waiting): the helper then exits, and loopd goes on without it. */
int prefork_setup(int sock, pid_t parent, const char *name);
void prefork_serve(int sock, void (*child)(int sock, int taken_fd, void *userdata), void *userdata);
/* Forks such a helper: prefork_setup(), then run(sock, userdata) (which returns once it is done, usually by
 * prefork_serve()), then it exits. *ret_fd is the caller's end of their socket. */
int prefork_start(const char *name, void (*run)(int sock, void *userdata), void *userdata, int *ret_fd);
/* In a child: closes every fd but 0-2 and the n_keep (at most 8) of keep. */
int close_fds_except(const int *keep, size_t n_keep);
/* Field 22 of /proc/PID/stat: with the pid, it names one process for good. */
int process_start_time(pid_t pid, uint64_t *ret);
