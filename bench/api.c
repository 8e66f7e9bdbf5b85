/* api.c: loopd through its D-Bus API, in process: Attach+Detach cycles, many devices, ListDevices. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bench.h"
#include "loopd-bus.h"

static int bus_open(sd_bus **ret)
{
        /* The system bus, or the private one $DBUS_SYSTEM_BUS_ADDRESS names. */
        int r = sd_bus_open_system(ret);
        if (r < 0)
                fprintf(stderr, "loopd-bench: cannot connect to the system bus: %s\n", strerror(-r));
        return r;
}

/* Attach of fd, read-write. With shared, a second read-write device of the same image is allowed (loopd
 * refuses it otherwise: Busy); a loopd older than that option (bench/run --rev) knows no such key, and
 * allows it. */
static int loopd_attach(sd_bus *bus, int fd, bool shared, char *dev, size_t size)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const char *device, *object;
        int r = 0;

        if (shared)
                r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                        "Attach", &error, &reply, "ha{sv}", fd, 1, "shared", "b", 1);
        if (!shared || (r < 0 && sd_bus_error_has_name(&error, SD_BUS_ERROR_INVALID_ARGS))) {
                sd_bus_error_free(&error);
                r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                        "Attach", &error, &reply, "ha{sv}", fd, 0);
        }
        if (r < 0) {
                fprintf(stderr, "loopd-bench: Attach failed: %s\n", error.message ?: strerror(-r));
                return sd_bus_error_has_name(&error, LOOPD_ERROR_TIMEOUT) ? -ETIMEDOUT : r;
        }
        r = sd_bus_message_read(reply, "so", &device, &object);
        if (r < 0)
                return r;
        snprintf(dev, size, "%s", device);
        return 0;
}

static int loopd_detach(sd_bus *bus, const char *dev)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Detach",
                &error, NULL, "sa{sv}", dev, 0);
        if (r < 0)
                fprintf(stderr, "loopd-bench: Detach %s failed: %s\n", dev, error.message ?: strerror(-r));
        return r;
}

static int open_image(const char *path)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                fprintf(stderr, "loopd-bench: cannot open %s: %m\n", path);
        return fd;
}

/* api-loopd IMAGE N SAMPLES [shared]: Attach (partitions present when it returns) + Detach, N times. With
 * shared, the Attach passes shared: true (bench/run's scale part: other devices hold the image read-write).
 */
int cmd_api_loopd(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_fclose_ FILE *out = NULL;
        _cleanup_close_ int fd = -1;
        unsigned missing = 0, failures = 0;
        bool shared;
        int n, r;

        if ((argc != 4 && argc != 5) || (n = atoi(argv[2])) <= 0 ||
                (argc == 5 && !streq(argv[4], "shared"))) {
                fprintf(stderr, "usage: loopd-bench api-loopd IMAGE N SAMPLES [shared]\n");
                return 2;
        }
        shared = argc == 5;
        if ((fd = open_image(argv[1])) < 0 || bus_open(&bus) < 0 || !(out = samples_open(argv[3])))
                return 1;

        for (int i = -BENCH_WARMUP; i < n; i++) {
                char dev[64];
                unsigned number;
                uint64_t t0, t1, t2, t3;

                t0 = now_usec();
                r = loopd_attach(bus, fd, shared, dev, sizeof(dev));
                if (r == -ETIMEDOUT && !too_many_failures(++failures, n))
                        continue; /* loopd rolled the attach back */
                if (r < 0)
                        return 1;
                t1 = now_usec();
                /* Not timed: that the partitions exist when Attach returns is the contract. */
                if ((loop_number_of(dev, &number) < 0 || loop_partitions_present(number, 2) != 2) && i >= 0)
                        missing++;
                t2 = now_usec();
                r = loopd_detach(bus, dev);
                if (r < 0)
                        return 1;
                t3 = now_usec();
                if (i >= 0)
                        samples_write(out, t1 - t0, t3 - t2);
        }
        /* Not fatal: on a kernel without partition parsers anybody's BLKRRPART (udevd's, after some tool
         * closed a writable fd of the same loopN, e.g. a losetup -f of another test run that lost the race
         * for it) drops BLKPG partitions. The report shows how often. */
        printf("partitions=%u/%d\n", (unsigned)n - missing, n);
        printf("failures=%u\n", failures);
        return 0;
}

/* The DEVICES file of attach-many and attach-distinct: written anew by each batch (bench/run runs a failed
 * batch once more, after it detached what the first attempt left). */
static FILE *devices_open(const char *path)
{
        FILE *f = fopen(path, "we");

        if (!f)
                fprintf(stderr, "loopd-bench: cannot write %s: %m\n", path);
        return f;
}

/* One Attach of fd for attach-many and attach-distinct: its time goes to out, the device's name to list. 1
 * when loopd rolled it back after a timeout (the caller tries again), 0 when attached, -1 when the batch
 * has failed. */
static int attach_listed(sd_bus *bus, int fd, bool shared, unsigned *failures, int n, FILE *list, FILE *out)
{
        uint64_t t0 = now_usec();
        char dev[64];
        int r;

        r = loopd_attach(bus, fd, shared, dev, sizeof(dev));
        if (r == -ETIMEDOUT && !too_many_failures(++*failures, n))
                return 1;
        if (r < 0)
                return -1;
        samples_write(out, now_usec() - t0, 0);
        fprintf(list, "%s\n", dev);
        fflush(list);
        return 0;
}

/* attach-many IMAGE COUNT DEVICES SAMPLES: attaches COUNT devices through loopd and keeps them; their names
 * go to DEVICES, one a line, as they come (so that a failed run can be cleaned up). */
int cmd_attach_many(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_fclose_ FILE *list = NULL, *out = NULL;
        _cleanup_close_ int fd = -1;
        unsigned failures = 0;
        int n, r;

        if (argc != 5 || (n = atoi(argv[2])) <= 0) {
                fprintf(stderr, "usage: loopd-bench attach-many IMAGE COUNT DEVICES SAMPLES\n");
                return 2;
        }
        if ((fd = open_image(argv[1])) < 0 || bus_open(&bus) < 0 || !(list = devices_open(argv[3])) ||
                !(out = samples_open(argv[4])))
                return 1;
        for (int i = 0; i < n; i++) {
                /* The one image on every device, as before loopd refused a second writer. */
                r = attach_listed(bus, fd, true, &failures, n, list, out);
                if (r < 0)
                        return 1;
                if (r > 0)
                        i--; /* rolled back: try again */
        }
        printf("failures=%u\n", failures);
        return 0;
}

/* A 2 MiB image at path: an MBR with two partitions of 512 KiB and no filesystem, with the disk signature
 * given (the partitions' PARTUUIDs are made of it). Returns its fd, open read-write. */
static int make_small_image(const char *path, uint32_t signature)
{
        static const uint32_t starts[] = { 2048, 3072 };
        uint8_t mbr[512] = {};
        _cleanup_close_ int fd = -1;

        for (size_t i = 0; i < ELEMENTSOF(starts); i++) {
                uint8_t *e = mbr + 446 + 16 * i;
                uint32_t count = 1024;

                e[4] = 0x83;
                memcpy(e + 8, &starts[i], 4); /* little-endian, as x86 */
                memcpy(e + 12, &count, 4);
        }
        memcpy(mbr + 440, &signature, 4);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;

        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || pwrite(fd, mbr, sizeof(mbr), 0) != (ssize_t)sizeof(mbr) ||
                ftruncate(fd, 2 << 20) < 0) {
                fprintf(stderr, "loopd-bench: cannot write %s: %m\n", path);
                return -1;
        }
        return TAKE_FD(fd);
}

/* attach-distinct DIR COUNT DEVICES SAMPLES: as attach-many, but each device gets an image of its own, made
 * in DIR (see make_small_image()). With one image bound COUNT times every /dev/disk/by-uuid, by-label and
 * by-partuuid link has COUNT claimants, and udevd re-reads all of them at each event of any one: a cost of
 * udev's that a thousand different images do not have. */
int cmd_attach_distinct(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_fclose_ FILE *list = NULL, *out = NULL;
        unsigned failures = 0;
        uint32_t base;
        int n, r;

        if (argc != 5 || (n = atoi(argv[2])) <= 0) {
                fprintf(stderr, "usage: loopd-bench attach-distinct DIR COUNT DEVICES SAMPLES\n");
                return 2;
        }
        if (bus_open(&bus) < 0 || !(list = devices_open(argv[3])) || !(out = samples_open(argv[4])))
                return 1;
        base = (uint32_t)now_usec() | 1u;
        for (int i = 0; i < n; i++) {
                _cleanup_close_ int fd = -1;
                char path[4096];

                snprintf(path, sizeof(path), "%s/small-%d.img", argv[1], i);
                fd = make_small_image(path, base + (uint32_t)i);
                if (fd < 0)
                        return 1;
                r = attach_listed(bus, fd, false, &failures, n, list, out);
                if (r < 0)
                        return 1;
                if (r > 0)
                        i--; /* rolled back: try again */
        }
        printf("failures=%u\n", failures);
        return 0;
}

/* detach-many DEVICES SAMPLES: detaches every device listed, through loopd. */
int cmd_detach_many(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_fclose_ FILE *list = NULL, *out = NULL;
        char dev[64];
        int failed = 0;

        if (argc != 3) {
                fprintf(stderr, "usage: loopd-bench detach-many DEVICES SAMPLES\n");
                return 2;
        }
        list = fopen(argv[1], "re");
        if (!list || bus_open(&bus) < 0 || !(out = samples_open(argv[2])))
                return 1;
        while (fscanf(list, "%63s", dev) == 1) {
                uint64_t t0 = now_usec();

                if (loopd_detach(bus, dev) < 0)
                        failed++;
                else
                        samples_write(out, now_usec() - t0, 0);
        }
        return failed ? 1 : 0;
}

/* list-devices N SAMPLES: ListDevices N times; prints how many devices the last reply held. */
int cmd_list_devices(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_fclose_ FILE *out = NULL;
        unsigned count = 0;
        int n, r;

        if (argc != 3 || (n = atoi(argv[1])) <= 0) {
                fprintf(stderr, "usage: loopd-bench list-devices N SAMPLES\n");
                return 2;
        }
        if (bus_open(&bus) < 0 || !(out = samples_open(argv[2])))
                return 1;
        for (int i = -BENCH_WARMUP; i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                uint64_t t0 = now_usec(), t1;

                r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                        "ListDevices", &error, &reply, NULL);
                if (r < 0) {
                        fprintf(stderr, "loopd-bench: ListDevices failed: %s\n",
                                error.message ?: strerror(-r));
                        return 1;
                }
                /* Reading the reply is part of what a client pays. */
                count = 0;
                r = sd_bus_message_enter_container(reply, 'a', LOOPD_DEVICE_STRUCT);
                while (r >= 0 && (r = sd_bus_message_skip(reply, LOOPD_DEVICE_STRUCT)) > 0)
                        count++;
                if (r < 0) {
                        fprintf(stderr, "loopd-bench: cannot read ListDevices' reply: %s\n", strerror(-r));
                        return 1;
                }
                t1 = now_usec();
                if (i >= 0)
                        samples_write(out, t1 - t0, 0);
        }
        printf("%u\n", count);
        return 0;
}
