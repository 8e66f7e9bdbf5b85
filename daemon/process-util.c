/* process-util.c: processes by pidfd, and their start times. */
#include "process-util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A child's frames leave their redzones poisoned in the shadow of its stack, which outlives the munmap():
 * a later stack at the same address would start with them. */
#define stack_unpoison(p, n) __asan_unpoison_memory_region(p, n)
#else
#define stack_unpoison(p, n) ((void)0)
#endif

int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Enough for the sandbox's setup (a few PATH_MAX buffers) and what glibc's functions use beneath. */
#define CLONE_VFORK_STACK_SIZE (256 * 1024)

pid_t clone_vfork(int (*fn)(void *), void *userdata, unsigned long flags, int *ret_pidfd)
{
        int pidfd = -EBADF;
        void *stack;
        pid_t pid;
        int r = 0;

        stack = mmap(NULL, CLONE_VFORK_STACK_SIZE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
        if (stack == MAP_FAILED)
                return -errno;
        stack_unpoison(stack, CLONE_VFORK_STACK_SIZE);
        pid = clone(fn, (char *)stack + CLONE_VFORK_STACK_SIZE,
                (int)(CLONE_VM | CLONE_VFORK | (ret_pidfd ? CLONE_PIDFD : 0) | flags | SIGCHLD), userdata,
                &pidfd);
        if (pid < 0)
                r = -errno;
        /* The child has exec'd or exited: its stack is free. */
        (void)munmap(stack, CLONE_VFORK_STACK_SIZE);
        if (r < 0)
                return r;
        if (ret_pidfd)
                *ret_pidfd = pidfd;
        return pid;
}

int close_fds_except(const int *keep, size_t n_keep)
{
        int sorted[8];
        unsigned next = 3;

        if (n_keep > ELEMENTSOF(sorted))
                return -EINVAL;
        /* In order (insertion sort of a handful), so that the gaps between them are ranges. */
        for (size_t i = 0; i < n_keep; i++) {
                size_t j = i;

                for (; j > 0 && sorted[j - 1] > keep[i]; j--)
                        sorted[j] = sorted[j - 1];
                sorted[j] = keep[i];
        }
        for (size_t i = 0; i < n_keep; i++) {
                if (sorted[i] < 0 || (unsigned)sorted[i] < next)
                        continue; /* 0-2, or kept already */
                if ((unsigned)sorted[i] > next &&
                        syscall(SYS_close_range, next, (unsigned)sorted[i] - 1, 0u) < 0)
                        return -errno;
                next = (unsigned)sorted[i] + 1;
        }
        if (syscall(SYS_close_range, next, ~0u, 0u) < 0)
                return -errno;
        return 0;
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

int prefork_setup(int sock, pid_t parent, const char *name)
{
        sigset_t none;
        int r;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                return -ESRCH;
        r = close_fds_except(&sock, 1);
        if (r < 0)
                return r;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                return -errno;
        if (signal(SIGCHLD, SIG_IGN) == SIG_ERR || signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                return -errno;
        (void)prctl(PR_SET_NAME, name);
        return 0;
}

void prefork_serve(int sock, void (*child)(int sock, int taken_fd, void *userdata), void *userdata)
{
        for (;;) {
                int taken[2];
                char c;
                ssize_t n;
                pid_t pid;

                if (pipe2(taken, O_CLOEXEC) < 0)
                        return;
                pid = fork();
                if (pid < 0) {
                        (void)close(taken[0]);
                        (void)close(taken[1]);
                        return;
                }
                if (pid == 0) {
                        (void)close(taken[0]);
                        child(sock, taken[1], userdata);
                        _exit(EXIT_FAILURE); /* never reached: child does not return */
                }
                (void)close(taken[1]);
                do
                        n = read(taken[0], &c, 1);
                while (n < 0 && errno == EINTR);
                (void)close(taken[0]);
                if (n <= 0)
                        return;
        }
}

int prefork_start(const char *name, void (*run)(int sock, void *userdata), void *userdata, int *ret_fd)
{
        pid_t parent = getpid(), pid;
        int sock;

        pid = fork_with_socket(&sock);
        if (pid < 0)
                return (int)pid;
        if (pid == 0) {
                if (prefork_setup(sock, parent, name) < 0)
                        _exit(EXIT_FAILURE);
                run(sock, userdata);
                _exit(EXIT_SUCCESS);
        }
        *ret_fd = sock;
        return 0;
}

pid_t fork_with_socket(int *ret_fd)
{
        int pair[2], r;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                r = -errno;
                (void)close(pair[0]);
                (void)close(pair[1]);
                return r;
        }
        (void)close(pair[pid == 0 ? 0 : 1]);
        *ret_fd = pair[pid == 0 ? 1 : 0];
        return pid;
}

int fd_wait_until(int fd, short events, int64_t deadline_ms)
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
