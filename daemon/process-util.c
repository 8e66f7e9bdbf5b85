/* process-util.c: processes by pidfd, and their start times. */
#include "process-util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"

int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pidfd_open_pid(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

int pidfd_signal(int pidfd, int sig)
{
        return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

bool pidfd_wait_until(int pidfd, int64_t deadline_ms)
{
        for (;;) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                int64_t left = deadline_ms - now_ms();
                int r;

                if (left < 0)
                        left = 0;
                r = poll(&p, 1, (int)MIN(left, (int64_t)INT_MAX));
                if (r > 0)
                        return true;
                if (r == 0 || errno != EINTR)
                        return false;
        }
}

int process_start_time(pid_t pid, uint64_t *ret)
{
        char path[64], buf[1024];
        _cleanup_close_ int fd = -EBADF;
        const char *p;
        ssize_t n;

        (void)snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return n < 0 ? negative_errno() : -EIO;
        buf[n] = '\0';
        /* After the command name, which may hold anything but ends with the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EIO;
        for (int field = 2; field < 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EIO;
        }
        return sscanf(p + 1, "%" SCNu64, ret) == 1 ? 0 : -EIO;
}
