/* switch.c: what the machine charges for a wake-up of another process, which loopd's paths make and the raw
 * kernel paths do not (the caller, dbus-daemon, loopd, its reader's and its runner's children each wake
 * the next): a round trip over a Unix socket between two processes, free to run on any CPU (the scheduler
 * puts a woken process on an idle CPU, which a virtual machine may have to wake first), and both kept on
 * one CPU. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* Round trips a sample is the mean of: a single one is below the clock's microsecond. */
#define ROUND_TRIPS 200

/* Sends back every byte that comes on fd, until the other end closes it. */
static void echo(int fd)
{
        char c;

        while (read(fd, &c, 1) == 1)
                if (write(fd, &c, 1) != 1)
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

static int round_trips(int fd, uint64_t *ret_usec)
{
        uint64_t t0 = now_usec();
        char c = 'x';

        for (int k = 0; k < ROUND_TRIPS; k++)
                if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1) {
                        fprintf(stderr, "loopd-bench: the echo went away: %m\n");
                        return -EIO;
                }
        /* To the nearest microsecond. */
        *ret_usec = (now_usec() - t0 + ROUND_TRIPS / 2) / ROUND_TRIPS;
        return 0;
}

/* switch any-cpu|one-cpu N SAMPLES: N samples, each the mean of ROUND_TRIPS round trips of one byte to an
 * echoing child and back. */
int cmd_switch(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        bool one_cpu = false;
        pid_t pid;
        int sv[2], n, r = 0;

        if (argc != 4 || !(streq(argv[1], "any-cpu") || (one_cpu = streq(argv[1], "one-cpu"))) ||
                (n = atoi(argv[2])) <= 0) {
                fprintf(stderr, "usage: loopd-bench switch any-cpu|one-cpu N SAMPLES\n");
                return 2;
        }
        if (!(out = samples_open(argv[3])))
                return 1;
        if (one_cpu && stay_on_this_cpu() < 0) {
                fprintf(stderr, "loopd-bench: cannot stay on one CPU: %m\n");
                return 1;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                fprintf(stderr, "loopd-bench: socketpair: %m\n");
                return 1;
        }
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "loopd-bench: fork: %m\n");
                (void)close(sv[0]);
                (void)close(sv[1]);
                return 1;
        }
        if (pid == 0) {
                (void)close(sv[0]);
                echo(sv[1]);
                _exit(EXIT_SUCCESS);
        }
        (void)close(sv[1]);

        for (int i = -BENCH_WARMUP; r >= 0 && i < n; i++) {
                uint64_t usec;

                r = round_trips(sv[0], &usec);
                if (r >= 0 && i >= 0)
                        samples_write(out, usec, 0);
        }

        /* The end of the stream ends the echo. */
        (void)close(sv[0]);
        (void)waitpid(pid, NULL, 0);
        return r < 0 ? 1 : 0;
}
