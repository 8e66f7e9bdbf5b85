/* vdisk.c: virtual disks (issue 17): cold sequential reads of a file in a guest filesystem, and the time
 * from a closed image to the first byte of a file in it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

#define READ_CHUNK (1024 * 1024)

/* Empties the kernel's caches, so that a read goes to the disk through every layer under the file: the guest
 * filesystem, the loop device, the FUSE export and qemu-storage-daemon, the host filesystem. drop_caches
 * drops the clean pages of every inode (block devices' and FUSE files' included), after sync has made them
 * clean; BLKFLSBUF on the loop device and its partition also drops their buffers when a mounted filesystem
 * holds them. */
static int caches_drop(char *const devices[], int n_devices)
{
        int fd;

        sync();
        for (int i = 0; i < n_devices; i++) {
                fd = open(devices[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                if (fd < 0 || ioctl(fd, BLKFLSBUF, 0) < 0) {
                        fprintf(stderr, "loopd-bench: cannot flush the buffers of %s: %m\n", devices[i]);
                        safe_close(fd);
                        return -errno;
                }
                safe_close(fd);
        }
        fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "3\n", 2) != 2) {
                fprintf(stderr, "loopd-bench: cannot drop the page cache: %m\n");
                safe_close(fd);
                return -errno;
        }
        safe_close(fd);
        return 0;
}

/* read FILE N SAMPLES [BLOCKDEV...]: N sequential reads of FILE with 1 MiB read()s, the caches dropped
 * before each. Samples: total, open + first read() (the first MiB), the rest. Prints "bytes=" (the size of
 * FILE, which every read must reach). */
int cmd_read(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        int n;

        if (argc < 4 || (n = atoi(argv[2])) <= 0) {
                fprintf(stderr, "usage: loopd-bench read FILE N SAMPLES [BLOCKDEV...]\n");
                return 2;
        }
        if (stat(argv[1], &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
                fprintf(stderr, "loopd-bench: %s is no file with data\n", argv[1]);
                return 1;
        }
        if (!(buf = malloc(READ_CHUNK)) || !(out = samples_open(argv[3])))
                return 1;

        for (int i = 0; i < n; i++) {
                _cleanup_close_ int fd = -1;
                uint64_t t0, t1 = 0, t2;
                off_t done = 0;

                if (caches_drop(argv + 4, argc - 4) < 0)
                        return 1;
                t0 = now_usec();
                fd = open(argv[1], O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        fprintf(stderr, "loopd-bench: cannot open %s: %m\n", argv[1]);
                        return 1;
                }
                for (;;) {
                        ssize_t k = read(fd, buf, READ_CHUNK);

                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0) {
                                fprintf(stderr, "loopd-bench: cannot read %s: %m\n", argv[1]);
                                return 1;
                        }
                        if (t1 == 0)
                                t1 = now_usec();
                        if (k == 0)
                                break;
                        done += k;
                }
                t2 = now_usec();
                if (done != st.st_size) {
                        fprintf(stderr, "loopd-bench: read %jd bytes of %s, not %jd\n", (intmax_t)done,
                                argv[1], (intmax_t)st.st_size);
                        return 1;
                }
                samples_write(out, t1 - t0, t2 - t1);
        }
        printf("bytes=%jd\n", (intmax_t)st.st_size);
        return 0;
}

/* The string value of "key": "..." in loopctl's JSON, when it needs no unescaping (loopd's mount points and
 * nodes here do not). */
static int json_string_of(const char *json, const char *key, char *buf, size_t size)
{
        char pattern[64];
        const char *p, *end;

        snprintf(pattern, sizeof(pattern), "\"%s\": \"", key);
        if (!(p = strstr(json, pattern)))
                return -ENOENT;
        p += strlen(pattern);
        end = strchr(p, '"');
        if (!end || memchr(p, '\\', (size_t)(end - p)))
                return -EINVAL;
        if ((size_t)(end - p) >= size)
                return -ENAMETOOLONG;
        memcpy(buf, p, (size_t)(end - p));
        buf[end - p] = '\0';
        return 0;
}

/* Reads the first byte of path: what a user opening a file waits for. */
static int first_byte(const char *path)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        char c;

        if (fd < 0 || read(fd, &c, 1) != 1) {
                fprintf(stderr, "loopd-bench: cannot read the first byte of %s: %m\n", path);
                return -EIO;
        }
        return 0;
}

/* One cycle of first-file; its device is closed and raw_copy removed however it ends. */
static int first_file_cycle(const char *loopctl, const char *image, const char *file, const char *qemu_img,
        const char *raw_copy, uint64_t *ret_convert, uint64_t *ret_open)
{
        _cleanup_free_ char *output = NULL;
        char dev[64] = "", mount_point[4096], path[4096 + 256];
        char *convert_cmd[] = { (char *)qemu_img, "convert", "-O", "raw", (char *)image, (char *)raw_copy,
                NULL };
        char *open_cmd[] = { (char *)loopctl, "--json", "open", (char *)(qemu_img ? raw_copy : image),
                NULL };
        uint64_t t0, t1, t2;
        int r = 0;

        if (caches_drop(NULL, 0) < 0)
                return -EIO;
        t0 = now_usec();
        if (qemu_img) {
                r = spawn_checked(convert_cmd, NULL);
                if (r < 0)
                        goto finish;
        }
        t1 = now_usec();
        r = spawn_checked(open_cmd, &output);
        if (r < 0)
                goto finish;
        r = find_loop_name(output, false, dev, sizeof(dev));
        if (r >= 0)
                r = json_string_of(output, "mount_point", mount_point, sizeof(mount_point));
        if (r < 0) {
                fprintf(stderr, "loopd-bench: loopctl open printed no device or mount point: %s\n", output);
                goto finish;
        }
        snprintf(path, sizeof(path), "%s/%s", mount_point, file);
        r = first_byte(path);
        t2 = now_usec();
        if (r >= 0) {
                *ret_convert = t1 - t0;
                *ret_open = t2 - t1;
        }

finish:
        if (dev[0]) {
                char *close_cmd[] = { (char *)loopctl, "close", dev, NULL };
                int k = spawn_checked(close_cmd, NULL);
                if (r >= 0)
                        r = k;
        }
        if (qemu_img && unlink(raw_copy) < 0 && errno != ENOENT) {
                fprintf(stderr, "loopd-bench: cannot remove %s: %m\n", raw_copy);
                if (r >= 0)
                        r = -errno;
        }
        return r;
}

/* first-file LOOPCTL IMAGE FILE N SAMPLES [QEMU_IMG RAW_COPY]: N times, from a closed image and cold caches
 * to the first byte of FILE (a path inside the image's first mount): `loopctl --json open IMAGE` and a
 * one-byte read; with QEMU_IMG, `QEMU_IMG convert -O raw IMAGE RAW_COPY` first and RAW_COPY opened instead.
 * Each cycle closes what it opened and removes RAW_COPY, untimed. Samples: total, convert, open + first
 * byte.
 */
int cmd_first_file(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        int n;

        if ((argc != 6 && argc != 8) || (n = atoi(argv[4])) <= 0) {
                fprintf(stderr,
                        "usage: loopd-bench first-file LOOPCTL IMAGE FILE N SAMPLES [QEMU_IMG RAW_COPY]\n");
                return 2;
        }
        if (!(out = samples_open(argv[5])))
                return 1;
        for (int i = 0; i < n; i++) {
                uint64_t convert = 0, open_read = 0;

                if (first_file_cycle(argv[1], argv[2], argv[3], argc == 8 ? argv[6] : NULL,
                            argc == 8 ? argv[7] : NULL, &convert, &open_read) < 0)
                        return 1;
                samples_write(out, convert, open_read);
                fflush(out);
        }
        return 0;
}
