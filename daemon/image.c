/* image.c: recognises non-raw image formats and the sector size of a raw image from its first and last
 * bytes. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "macro.h"

#define HEAD_SIZE 8192u
#define TAIL_SIZE 512u

/* How far before the image's end a 4096-byte MBR table may stop and still count as "ending at its end":
 * partitioning tools leave the last, partial alignment unit unused. */
#define PHONE_SLACK_MIN (UINT64_C(1) << 20)

static bool has_bytes_at(const uint8_t *buf, size_t buf_size, size_t offset, const void *magic, size_t n)
{
        if (!buf || offset > buf_size || buf_size - offset < n)
                return false;
        return memcmp(buf + offset, magic, n) == 0;
}

static uint32_t le32_at(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const char *detect_format(
        const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size)
{
        static const uint8_t vdi_magic[4] = { 0x7f, 0x10, 0xda, 0xbe }; /* 0xbeda107f, little endian */

        if (has_bytes_at(head, head_size, 0, "QFI\xfb", 4))
                return "qcow2";
        if (has_bytes_at(head, head_size, 0, "KDMV", 4) || has_bytes_at(head, head_size, 0, "COWD", 4) ||
                has_bytes_at(head, head_size, 0, "# Disk DescriptorFile", 21))
                return "vmdk";
        if (has_bytes_at(head, head_size, 0x40, vdi_magic, sizeof(vdi_magic)))
                return "vdi";
        if (has_bytes_at(head, head_size, 0, "vhdxfile", 8))
                return "vhdx";
        /* A dynamic VHD starts with a copy of its footer; a fixed one has only the footer, in the last 512
         * bytes (511 for images written by early Virtual PC versions). */
        if (has_bytes_at(head, head_size, 0, "conectix", 8))
                return "vhd";
        if (tail_size >= 512 && has_bytes_at(tail, tail_size, tail_size - 512, "conectix", 8))
                return "vhd";
        if (tail_size >= 511 && has_bytes_at(tail, tail_size, tail_size - 511, "conectix", 8))
                return "vhd";
        return NULL;
}

/* The end of the MBR's primary partitions in sectors, 0 when there is no usable MBR (or a protective one:
 * GPT is detected separately). */
static uint64_t mbr_end_sectors(const uint8_t *head, size_t head_size)
{
        uint64_t end = 0;

        if (head_size < 512 || head[510] != 0x55 || head[511] != 0xaa)
                return 0;

        for (size_t i = 0; i < 4; i++) {
                const uint8_t *e = head + 446 + 16 * i;
                uint8_t boot = e[0], type = e[4];
                uint32_t start = le32_at(e + 8), count = le32_at(e + 12);

                if (boot != 0x00 && boot != 0x80)
                        return 0; /* not a partition table (a FAT boot sector, random data) */
                if (type == 0xee)
                        return 0;
                if (type == 0x00 || count == 0)
                        continue;
                end = MAX(end, (uint64_t)start + count);
        }
        return end;
}

int image_probe_buffer(const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size,
        uint64_t image_size, ImageProbe *ret)
{
        static const uint32_t gpt_sizes[] = { 512, 1024, 2048, 4096 };
        uint32_t sector_size = 512;
        unsigned hits = 0;
        const char *format;
        uint64_t end;

        if (!ret || (!head && head_size > 0) || (!tail && tail_size > 0))
                return -EINVAL;

        format = detect_format(head, head_size, tail, tail_size);
        if (format) {
                *ret = (ImageProbe){ .format = format, .sector_size = 512 };
                return 0;
        }

        for (size_t i = 0; i < ELEMENTSOF(gpt_sizes); i++)
                if (has_bytes_at(head, head_size, gpt_sizes[i], "EFI PART", 8)) {
                        sector_size = gpt_sizes[i];
                        hits++;
                }
        if (hits > 1)
                return -ENOTUNIQ;
        if (hits == 1) {
                *ret = (ImageProbe){ .format = NULL, .sector_size = sector_size };
                return 0;
        }

        /* The "phone image": an MBR written for 4096-byte sectors. Read with 512 it covers at most an
         * eighth of the image; read with 4096 it ends at, or just before, the end. */
        end = mbr_end_sectors(head, head_size);
        if (end > 0 && end <= image_size / 4096) {
                uint64_t end_bytes = end * 4096, slack = MAX(PHONE_SLACK_MIN, image_size / 100);

                if (image_size - end_bytes <= slack)
                        sector_size = 4096;
        }

        *ret = (ImageProbe){ .format = NULL, .sector_size = sector_size };
        return 0;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t offset, size_t *ret_read)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(offset + done));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                done += (size_t)k;
        }
        *ret_read = done;
        return 0;
}

int image_probe(int fd, uint64_t offset, uint64_t size, ImageProbe *ret)
{
        uint8_t head[HEAD_SIZE], tail[TAIL_SIZE];
        size_t head_read = 0, tail_read = 0;
        uint64_t total, image_size;
        struct stat st;
        int r;

        if (fd < 0 || !ret)
                return -EINVAL;
        if (fstat(fd, &st) < 0)
                return negative_errno();

        if (S_ISREG(st.st_mode))
                total = (uint64_t)st.st_size;
        else if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, &total) < 0)
                        return negative_errno();
        } else
                return -EBADFD;

        image_size = offset < total ? total - offset : 0;
        if (size > 0 && size < image_size)
                image_size = size;

        r = pread_full(fd, head, (size_t)MIN((uint64_t)sizeof(head), image_size), offset, &head_read);
        if (r < 0)
                return r;

        if (image_size > 0) {
                size_t want = (size_t)MIN((uint64_t)sizeof(tail), image_size);
                r = pread_full(fd, tail, want, offset + image_size - want, &tail_read);
                if (r < 0)
                        return r;
        }

        return image_probe_buffer(head, head_read, tail, tail_read, image_size, ret);
}
