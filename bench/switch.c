/* switch.c: a round trip between two processes over a Unix socket (two wake-ups), on any CPU or on one. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* Round trips a sample is the mean of: what one wake-up costs varies from one to the next, and the mean is
 * rounded to the microsecond. */
#define ROUND_TRIPS 200
/* Samples left out first: two processes free to run on any CPU often stay on one for the first few
 * thousand round trips (the scheduler wakes a process where its waker runs until it finds that CPU busy),
 * then settle on two. */
#define SWITCH_WARMUP 20

/* Sends back every byte that comes on fd, until the other end closes it. */
static void echo(int fd)
{
        char c;

        while (read(fd, &c, 1) == 1)
                if (send(fd, &c, 1, MSG_NOSIGNAL) != 1)
                        break;
}

/* Keeps the calling process, and the children it forks from now on, on the CPU it runs on. */
static int stay_on_this_cpu(void)
{
        cpu_set_t set;
        int cpu = sched_getcpu();

        if (cpu < 0)
                return -errno;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

/* ROUND_TRIPS round trips of one byte to the echo on fd: their mean, to the nearest microsecond. */
static int round_trips(int fd, uint64_t *ret_usec)
{
        uint64_t t0 = now_usec();
        char c = 'x';

        for (int k = 0; k < ROUND_TRIPS; k++) {
                ssize_t n = send(fd, &c, 1, MSG_NOSIGNAL);

                if (n == 1)
                        n = read(fd, &c, 1);
                if (n != 1) {
                        fprintf(stderr, "loopd-bench: the echo went away: %s\n",
                                n == 0 ? "it closed the socket" : strerror(errno));
                        return -EIO;
                }
        }
        *ret_usec = (now_usec() - t0 + ROUND_TRIPS / 2) / ROUND_TRIPS;
        return 0;
}

/* switch any-cpu|one-cpu N SAMPLES: N samples, each the mean of ROUND_TRIPS round trips of one byte to an
 * echoing child and back; with one-cpu, both processes stay on the CPU the command started on. */
int cmd_switch(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        _cleanup_close_ int sock = -EBADF;
        bool one_cpu = false, known = false;
        int sv[2], n = 0, r = 0;
        pid_t pid;

        if (argc == 4) {
                one_cpu = streq(argv[1], "one-cpu");
                known = one_cpu || streq(argv[1], "any-cpu");
                n = atoi(argv[2]);
        }
        if (!known || n <= 0) {
                fprintf(stderr, "usage: loopd-bench switch any-cpu|one-cpu N SAMPLES\n");
                return 2;
        }
        if (!(out = samples_open(argv[3])))
                return 1;
        if (one_cpu) {
                r = stay_on_this_cpu();
                if (r < 0) {
                        fprintf(stderr, "loopd-bench: cannot stay on one CPU: %s\n", strerror(-r));
                        return 1;
                }
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                fprintf(stderr, "loopd-bench: socketpair: %m\n");
                return 1;
        }
        sock = sv[0];
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "loopd-bench: fork: %m\n");
                safe_close(sv[1]);
                return 1;
        }
        if (pid == 0) {
                safe_close(sv[0]);
                echo(sv[1]);
                _exit(EXIT_SUCCESS);
        }
        safe_close(sv[1]);

        for (int i = -SWITCH_WARMUP; r >= 0 && i < n; i++) {
                uint64_t usec;

                r = round_trips(sock, &usec);
                if (r >= 0 && i >= 0)
                        samples_write(out, usec, 0);
        }

        /* The end of the stream ends the echo. */
        sock = safe_close(sock);
        (void)waitpid(pid, NULL, 0);
        return r < 0 ? 1 : 0;
}
