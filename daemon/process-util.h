/* process-util.h: child and helper processes by pidfd: open, signal, wait with a deadline, and the start
 * time that tells one process from a later one with the same pid. Never logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic milliseconds, for deadlines. */
int64_t now_ms(void);
/* pidfd_open(2) and pidfd_send_signal(2): the fd, or -1 with errno set (no glibc wrappers on Debian 12). */
int pidfd_open_pid(pid_t pid);
int pidfd_signal(int pidfd, int sig);
/* Waits until the process behind pidfd has exited or deadline_ms (now_ms()) has passed. True if it exited.
 */
bool pidfd_wait_until(int pidfd, int64_t deadline_ms);
/* Field 22 of /proc/PID/stat: with the pid, it names one process for good. */
int process_start_time(pid_t pid, uint64_t *ret);
