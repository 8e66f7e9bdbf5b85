/* loop-util.c: what the loop device modules share: bounded waits, opening /dev/loopN, its diskseq. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "loop-internal.h"
#include "macro.h"
#include "sysfs.h"

void loop_sleep_usec(uint64_t usec)
{
        struct timespec ts = { .tv_sec = (time_t)(usec / 1000000),
                .tv_nsec = (long)(usec % 1000000) * 1000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

void loop_backoff_sleep(uint64_t *step_usec)
{
        *step_usec = *step_usec == 0 ? 100 : MIN(*step_usec * 2, 10000u);
        loop_sleep_usec(*step_usec);
}

int loop_read_backing_file(int dirfd, const char *dir, const char *attr, char **ret)
{
        char buf[4096 + 16];
        int r;

        r = sysfs_read(dirfd, dir, attr, buf, sizeof(buf));
        if (r == -ENAMETOOLONG)
                buf[0] = '\0';
        else if (r < 0)
                return r;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

uint64_t loop_size_for(uint64_t file_size, uint64_t offset, uint64_t size_limit)
{
        uint64_t size = file_size > offset ? file_size - offset : 0;

        if (size_limit > 0 && size_limit < size)
                size = size_limit;
        return size & ~UINT64_C(511);
}

uint64_t loop_now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t loop_random_u64(void)
{
        uint64_t v;

        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
                v = loop_now_usec() * UINT64_C(6364136223846793005) + (uint64_t)getpid();
        return v;
}

int loop_open_node(unsigned number, int flags)
{
        char path[LOOP_NODE_MAX];
        int fd;

        fd = open(loop_node_format(path, number, 0), flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        return fd;
}

int loop_open_any(unsigned number)
{
        return loop_open_node(number, O_RDONLY);
}

bool loop_is_claimed(unsigned number)
{
        /* The whole disk cannot be claimed while a partition of it is (the block layer's rule). */
        int fd = loop_open_node(number, O_RDONLY | O_EXCL);

        if (fd < 0)
                return true;
        safe_close(fd);
        return false;
}

uint64_t loop_device_diskseq(int devfd, unsigned number)
{
        _cleanup_close_ int sysfd = -EBADF;
        uint64_t seq = 0;

        if (ioctl(devfd, BLKGETDISKSEQ, &seq) >= 0)
                return seq;
        sysfd = sysfs_open_loop(number, 0);
        if (sysfd < 0 || sysfs_read_u64(sysfd, NULL, "diskseq", &seq) < 0)
                return 0;
        return seq;
}

int loop_open_checked(unsigned number, uint64_t expected_diskseq)
{
        _cleanup_close_ int devfd = -EBADF;

        devfd = loop_open_any(number);
        if (devfd == -ENOENT || devfd == -ENODEV || devfd == -ENXIO)
                return -ENODEV;
        if (devfd < 0)
                return devfd;
        if (expected_diskseq != 0 && loop_device_diskseq(devfd, number) != expected_diskseq)
                return -ESTALE;
        return TAKE_FD(devfd);
}
