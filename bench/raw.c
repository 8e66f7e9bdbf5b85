/* raw.c: the kernel path with nothing around it: LOOP_CTL_GET_FREE + LOOP_CONFIGURE + BLKPG + LOOP_CLR_FD,
 * optionally waiting for udev to have processed the device and its partitions, as loopd's Attach does. */
#include <blkid/blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libudev.h>
#include <linux/blkpg.h>
#include <linux/loop.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

#define RAW_MAX_PARTS 16
#define UDEV_WAIT_USEC (10 * 1000 * 1000)

typedef struct RawPart {
        int number;
        uint64_t start, length; /* bytes */
} RawPart;

typedef struct RawStats {
        unsigned get_free_retries; /* LOOP_CONFIGURE found the device taken */
        unsigned del_busy_retries; /* BLKPG_DEL_PARTITION said EBUSY (a prober had it open) */
} RawStats;

/* The image's partition table, read once before timing (the raw path needs no probing per cycle). */
static int read_table(const char *path, RawPart *parts, size_t *ret_n)
{
        blkid_probe pr = blkid_new_probe_from_filename(path);
        blkid_partlist list;
        size_t n = 0;
        int count;

        if (!pr)
                return -errno;
        blkid_probe_enable_partitions(pr, 1);
        list = blkid_probe_get_partitions(pr);
        count = list ? blkid_partlist_numof_partitions(list) : 0;
        for (int i = 0; i < count && n < RAW_MAX_PARTS; i++) {
                blkid_partition par = blkid_partlist_get_partition(list, i);
                parts[n++] = (RawPart){ .number = blkid_partition_get_partno(par),
                        .start = (uint64_t)blkid_partition_get_start(par) * 512,
                        .length = (uint64_t)blkid_partition_get_size(par) * 512 };
        }
        blkid_free_probe(pr);
        *ret_n = n;
        return n > 0 ? 0 : -ENOENT;
}

static int blkpg(int fd, int op, const RawPart *p)
{
        struct blkpg_partition bp = {
                .start = (long long)p->start, .length = (long long)p->length, .pno = p->number
        };
        struct blkpg_ioctl_arg arg = { .op = op, .datalen = sizeof(bp), .data = &bp };

        return ioctl(fd, BLKPG, &arg) < 0 ? -errno : 0;
}

static void sleep_usec(unsigned usec)
{
        struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)usec * 1000 };
        nanosleep(&ts, NULL);
}

/* Opens loopN read-write through a private node, unlinked at once. Not /dev/loopN: udevd watches that
 * node, and when a writable fd of it is closed it re-reads the partition table (BLKRRPART), which on a
 * kernel without partition parsers drops the partitions added with BLKPG, at a moment of udevd's choosing
 * (the next cycle's, often). loopd does the same for the same reason. */
static int open_private_rw(int nr)
{
        char path[32], name[64];
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "/dev/loop%d", nr);
        if (stat(path, &st) < 0)
                return -errno;
        snprintf(name, sizeof(name), "/dev/.loopd-bench-%d-%d", (int)getpid(), nr);
        if (mknod(name, S_IFBLK | 0600, st.st_rdev) < 0)
                return -errno;
        fd = open(name, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                fd = -errno;
        (void)unlink(name);
        return fd;
}

/* Binds a free device: returns its fd (read-write, as losetup opens it) and number. */
static int raw_attach(
        int ctl, int backing_fd, const RawPart *parts, size_t n, RawStats *stats, unsigned *ret_number)
{
        for (unsigned attempt = 0; attempt < 64; attempt++) {
                struct loop_config lc = { .fd = (uint32_t)backing_fd, .block_size = 512 };
                int nr, fd;

                nr = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (nr < 0)
                        return -errno;
                fd = open_private_rw(nr);
                if (fd < 0)
                        return fd;
                lc.info.lo_flags = LO_FLAGS_PARTSCAN;
                if (ioctl(fd, LOOP_CONFIGURE, &lc) < 0) {
                        int r = -errno;
                        safe_close(fd);
                        if (r == -EBUSY) {
                                stats->get_free_retries++;
                                continue; /* taken between GET_FREE and CONFIGURE: ask again */
                        }
                        return r;
                }
                for (size_t i = 0; i < n; i++) {
                        int r = blkpg(fd, BLKPG_ADD_PARTITION, &parts[i]);
                        if (r < 0 && r != -EBUSY) {
                                (void)ioctl(fd, LOOP_CLR_FD);
                                safe_close(fd);
                                return r;
                        }
                }
                *ret_number = (unsigned)nr;
                return fd;
        }
        return -EBUSY;
}

static int raw_detach(int fd, const RawPart *parts, size_t n, RawStats *stats)
{
        for (size_t i = 0; i < n; i++) {
                int r;
                /* A prober (udevd's blkid, a watcher) holding the partition open makes the kernel refuse;
                 * it lets go within milliseconds. */
                for (unsigned tries = 0; (r = blkpg(fd, BLKPG_DEL_PARTITION, &parts[i])) == -EBUSY;
                        tries++) {
                        if (tries == 20000)
                                return r;
                        stats->del_busy_retries++;
                        sleep_usec(100);
                }
                if (r < 0 && r != -ENXIO)
                        return r;
        }
        if (ioctl(fd, LOOP_CLR_FD) < 0)
                return -errno;
        safe_close(fd);
        return 0;
}

/* Waits until udev has processed loopN (an event carrying its new diskseq) and then each of its n
 * partitions (an event with a later sequence number than the disk's, so none of an earlier incarnation). */
static int udev_wait(struct udev_monitor *mon, int fd, size_t n)
{
        uint64_t diskseq = 0, disk_seqnum = 0, deadline = now_usec() + UDEV_WAIT_USEC;
        bool disk_done = false, part_done[RAW_MAX_PARTS] = {};
        size_t parts_done = 0;
        struct stat st;

        if (fstat(fd, &st) < 0 || ioctl(fd, BLKGETDISKSEQ, &diskseq) < 0)
                return -errno;

        while (!disk_done || parts_done < n) {
                struct pollfd p = { .fd = udev_monitor_get_fd(mon), .events = POLLIN };
                uint64_t now = now_usec();
                struct udev_device *d;

                if (now >= deadline)
                        return -ETIMEDOUT;
                if (poll(&p, 1, (int)((deadline - now) / 1000 + 1)) < 0 && errno != EINTR)
                        return -errno;
                while ((d = udev_monitor_receive_device(mon))) {
                        const char *action = udev_device_get_action(d), *seq;
                        dev_t devnum = udev_device_get_devnum(d);
                        uint64_t seqnum = udev_device_get_seqnum(d);

                        if (!action || (!streq(action, "add") && !streq(action, "change"))) {
                                udev_device_unref(d);
                                continue;
                        }
                        if (devnum == st.st_rdev) {
                                seq = udev_device_get_property_value(d, "DISKSEQ");
                                if (seq && strtoull(seq, NULL, 10) == diskseq && !disk_done) {
                                        disk_done = true;
                                        disk_seqnum = seqnum;
                                }
                        } else if (disk_done && seqnum > disk_seqnum) {
                                struct udev_device *parent =
                                        udev_device_get_parent_with_subsystem_devtype(d, "block", "disk");
                                const char *pn = udev_device_get_property_value(d, "PARTN");
                                int partno = pn ? atoi(pn) : 0;

                                if (parent && udev_device_get_devnum(parent) == st.st_rdev && partno > 0 &&
                                        partno < RAW_MAX_PARTS && !part_done[partno]) {
                                        part_done[partno] = true;
                                        parts_done++;
                                }
                        }
                        udev_device_unref(d);
                }
        }
        return 0;
}

/* api-raw IMAGE N SAMPLES [udev]: the kernel path alone, N times; with "udev", each attach also waits for
 * udev as loopd's Attach does when udevd runs. Prints the retry counts. */
int cmd_api_raw(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        _cleanup_close_ int ctl = -1, backing = -1;
        struct udev *udev = NULL;
        struct udev_monitor *mon = NULL;
        RawPart parts[RAW_MAX_PARTS];
        RawStats stats = {};
        unsigned with_parts = 0;
        bool wait_udev;
        size_t n = 0;
        int count, r, ret = 1;

        if ((argc != 4 && argc != 5) || (count = atoi(argv[2])) <= 0 ||
                (argc == 5 && !streq(argv[4], "udev"))) {
                fprintf(stderr, "usage: loopd-bench api-raw IMAGE N SAMPLES [udev]\n");
                return 2;
        }
        wait_udev = argc == 5;
        if (read_table(argv[1], parts, &n) < 0) {
                fprintf(stderr, "loopd-bench: no partition table in %s\n", argv[1]);
                return 1;
        }
        backing = open(argv[1], O_RDWR | O_CLOEXEC);
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (backing < 0 || ctl < 0) {
                fprintf(stderr, "loopd-bench: cannot open %s or /dev/loop-control: %m\n", argv[1]);
                return 1;
        }
        if (!(out = samples_open(argv[3])))
                return 1;
        if (wait_udev) {
                if (access("/run/udev/control", F_OK) < 0) {
                        fprintf(stderr, "loopd-bench: api-raw udev: udevd is not running\n");
                        return 1;
                }
                udev = udev_new();
                mon = udev ? udev_monitor_new_from_netlink(udev, "udev") : NULL;
                if (!mon || udev_monitor_filter_add_match_subsystem_devtype(mon, "block", NULL) < 0 ||
                        udev_monitor_set_receive_buffer_size(mon, 16 * 1024 * 1024) < 0 ||
                        udev_monitor_enable_receiving(mon) < 0) {
                        fprintf(stderr, "loopd-bench: cannot monitor udev events\n");
                        goto finish;
                }
        }

        for (int i = -BENCH_WARMUP; i < count; i++) {
                uint64_t t0, t1, t2, t3;
                unsigned number = 0;
                int fd;

                t0 = now_usec();
                fd = raw_attach(ctl, backing, parts, n, &stats, &number);
                if (fd < 0) {
                        fprintf(stderr, "loopd-bench: raw attach failed: %s\n", strerror(-fd));
                        goto finish;
                }
                if (wait_udev && (r = udev_wait(mon, fd, n)) < 0) {
                        fprintf(stderr, "loopd-bench: waiting for udev on loop%u: %s\n", number,
                                strerror(-r));
                        (void)raw_detach(fd, parts, n, &stats);
                        goto finish;
                }
                t1 = now_usec();
                if (loop_partitions_present(number, (unsigned)n) == n && i >= 0)
                        with_parts++;
                t2 = now_usec();
                r = raw_detach(fd, parts, n, &stats);
                if (r < 0) {
                        fprintf(stderr, "loopd-bench: raw detach of loop%u failed: %s\n", number,
                                strerror(-r));
                        goto finish;
                }
                t3 = now_usec();
                if (i >= 0)
                        samples_write(out, t1 - t0, t3 - t2);
        }
        printf("get_free_retries=%u del_busy_retries=%u\n", stats.get_free_retries, stats.del_busy_retries);
        printf("partitions=%u/%d\n", with_parts, count);
        ret = 0;
finish:
        udev_monitor_unref(mon);
        udev_unref(udev);
        return ret;
}

/* remove-loops MAX: removes (LOOP_CTL_REMOVE) every loop device numbered above MAX that is not bound: the
 * devices the kernel created for this run's attaches (a device bound or open is refused with EBUSY and
 * stays). Prints how many went. */
int cmd_remove_loops(int argc, char *argv[])
{
        _cleanup_close_ int ctl = -EBADF;
        unsigned removed = 0;
        struct dirent *de;
        DIR *d;
        long max;

        if (argc != 2 || (max = atol(argv[1])) < -1) {
                fprintf(stderr, "usage: loopd-bench remove-loops MAX\n");
                return 2;
        }
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        d = opendir("/sys/block");
        if (ctl < 0 || !d) {
                fprintf(stderr, "loopd-bench: cannot open /dev/loop-control or /sys/block: %m\n");
                if (d)
                        closedir(d);
                return 1;
        }
        /* The numbers first: removing a device while /sys/block is read could make the read skip others. */
        _cleanup_free_ int *numbers = NULL;
        size_t count = 0, allocated = 0;
        while ((de = readdir(d))) {
                char *end;
                long n;

                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                n = strtol(de->d_name + 4, &end, 10);
                if (end == de->d_name + 4 || *end != '\0' || n <= max || n > INT32_MAX)
                        continue;
                if (count == allocated) {
                        int *a = reallocarray(
                                numbers, allocated = allocated ? allocated * 2 : 64, sizeof(int));
                        if (!a)
                                break;
                        numbers = a;
                }
                numbers[count++] = (int)n;
        }
        closedir(d);
        for (size_t i = 0; i < count; i++)
                if (ioctl(ctl, LOOP_CTL_REMOVE, numbers[i]) >= 0)
                        removed++;
        printf("removed=%u\n", removed);
        return 0;
}
