/* util.c: loopd-bench's clock, sample files, command spawning and loop device checks. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "loop-name.h"

extern char **environ;

#define CAPTURE_MAX (64 * 1024)

uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

FILE *samples_open(const char *path)
{
        FILE *f = fopen(path, "ae");

        if (!f)
                fprintf(stderr, "loopd-bench: cannot open %s: %m\n", path);
        return f;
}

void samples_write(FILE *f, uint64_t first_usec, uint64_t second_usec)
{
        fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", first_usec + second_usec, first_usec,
                second_usec);
}

int spawn_wait(char *const argv[], char **ret_out)
{
        posix_spawn_file_actions_t fa;
        int pipefd[2] = { -1, -1 }, status, r;
        _cleanup_free_ char *out = NULL;
        size_t len = 0;
        pid_t pid;

        if (ret_out) {
                out = malloc(CAPTURE_MAX + 1);
                if (!out || pipe2(pipefd, O_CLOEXEC) < 0)
                        return -ENOMEM;
        }
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (ret_out)
                posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
        else
                posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (ret_out)
                safe_close(pipefd[1]);
        if (r != 0) {
                safe_close(pipefd[0]);
                return -r;
        }

        if (ret_out) {
                for (;;) {
                        ssize_t k = read(pipefd[0], out + len, CAPTURE_MAX - len);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                break;
                        len += (size_t)k;
                        if (len == CAPTURE_MAX)
                                break;
                }
                safe_close(pipefd[0]);
                out[len] = '\0';
        }

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        if (!WIFEXITED(status))
                return -ECHILD;
        if (ret_out)
                *ret_out = TAKE_PTR(out);
        return WEXITSTATUS(status);
}

int spawn_checked(char *const argv[], char **ret_out)
{
        int r = spawn_wait(argv, ret_out);

        if (r == 0)
                return 0;
        fprintf(stderr, "loopd-bench: '%s", argv[0]);
        for (char *const *a = argv + 1; *a; a++)
                fprintf(stderr, " %s", *a);
        if (r < 0)
                fprintf(stderr, "' failed: %s\n", strerror(-r));
        else
                fprintf(stderr, "' exited %d\n", r);
        return r < 0 ? r : -EIO;
}

int find_loop_name(const char *text, bool partition, char *buf, size_t size)
{
        for (const char *p = text; (p = strstr(p, "/dev/loop")); p++) {
                size_t n = 9;

                if (p[n] < '0' || p[n] > '9')
                        continue;
                while (p[n] >= '0' && p[n] <= '9')
                        n++;
                if (partition) {
                        if (p[n] != 'p' || p[n + 1] < '0' || p[n + 1] > '9')
                                continue;
                        n++;
                        while (p[n] >= '0' && p[n] <= '9')
                                n++;
                }
                if (n >= size)
                        return -ENAMETOOLONG;
                memcpy(buf, p, n);
                buf[n] = '\0';
                return 0;
        }
        return -ENOENT;
}

int loop_number_of(const char *dev, unsigned *ret)
{
        char *end;
        unsigned long v;

        if (startswith(dev, "/dev/"))
                dev += 5;
        if (!startswith(dev, "loop") || dev[4] < '0' || dev[4] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(dev + 4, &end, 10);
        if (errno != 0 || *end != '\0' || v >= (1UL << 20))
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

unsigned loop_partitions_present(unsigned number, unsigned n)
{
        unsigned present = 0;

        for (unsigned i = 1; i <= n; i++) {
                char sys[96], node[LOOP_NODE_MAX];
                struct stat st;

                snprintf(sys, sizeof(sys), "/sys/block/loop%u/loop%up%u/partition", number, number, i);
                loop_node_format(node, number, i);
                if (access(sys, F_OK) == 0 && stat(node, &st) == 0 && S_ISBLK(st.st_mode))
                        present++;
        }
        return present;
}

bool node_is_mounted(const char *node)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        if (!f)
                return false;
        /* "... - fstype source options": the source follows the separator and the type. */
        while (getline(&line, &size, f) > 0) {
                char *sep = strstr(line, " - "), *src;

                if (!sep || !(src = strchr(sep + 3, ' ')))
                        continue;
                src++;
                if (startswith(src, node) && src[strlen(node)] == ' ')
                        return true;
        }
        return false;
}

bool loop_backed_by(unsigned number, const char *path)
{
        char sys[96], buf[4096];
        ssize_t k;
        int fd;

        snprintf(sys, sizeof(sys), "/sys/block/loop%u/loop/backing_file", number);
        fd = open(sys, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        k = read(fd, buf, sizeof(buf) - 1);
        safe_close(fd);
        if (k <= 0)
                return false;
        buf[k] = '\0';
        if (buf[k - 1] == '\n')
                buf[k - 1] = '\0';
        return streq(buf, path);
}

/* ---- stats ---- */

static int compare_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values. */
static uint64_t percentile(const uint64_t *v, size_t n, unsigned pct)
{
        size_t rank = (n * pct + 99) / 100;
        return v[rank > 0 ? rank - 1 : 0];
}

static double median(const uint64_t *v, size_t n)
{
        return n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2;
}

/* stats COLUMN FILE...: "n median p10 p90 min" of column 1-3 of sample files, in microseconds. */
int cmd_stats(int argc, char *argv[])
{
        _cleanup_free_ uint64_t *v = NULL;
        size_t n = 0, allocated = 0;
        int column;

        if (argc < 3 || (column = atoi(argv[1])) < 1 || column > 3) {
                fprintf(stderr, "usage: loopd-bench stats COLUMN(1-3) FILE...\n");
                return 2;
        }
        for (int i = 2; i < argc; i++) {
                _cleanup_fclose_ FILE *f = fopen(argv[i], "re");
                uint64_t c[3];

                if (!f) {
                        fprintf(stderr, "loopd-bench: cannot open %s: %m\n", argv[i]);
                        return 1;
                }
                while (fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64, &c[0], &c[1], &c[2]) == 3) {
                        if (n == allocated) {
                                allocated = allocated ? allocated * 2 : 256;
                                uint64_t *nv = reallocarray(v, allocated, sizeof(uint64_t));
                                if (!nv)
                                        return 1;
                                v = nv;
                        }
                        v[n++] = c[column - 1];
                }
        }
        if (n == 0) {
                printf("0 0 0 0 0\n");
                return 0;
        }
        qsort(v, n, sizeof(uint64_t), compare_u64);
        printf("%zu %.1f %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", n, median(v, n), percentile(v, n, 10),
                percentile(v, n, 90), v[0]);
        return 0;
}
