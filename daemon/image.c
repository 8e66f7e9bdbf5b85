/* image.c: recognises virtual-disk formats (and whether their headers refer to other files) and the sector
 * size of a raw image from its first and last bytes. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "macro.h"

/* The only strings an ImageProbe points to. A worker's answer is a copy of its memory, where these lie at
 * the same addresses as in loopd (the worker is a fork of it, or of the reader, a fork of loopd):
 * image_probe_check() accepts a pointer that is one of these and no other. */
enum { FORMAT_QCOW2, FORMAT_VMDK, FORMAT_VDI, FORMAT_VHDX, FORMAT_VPC };
static const char *const known_formats[] = {
        [FORMAT_QCOW2] = "qcow2",
        [FORMAT_VMDK] = "vmdk",
        [FORMAT_VDI] = "vdi",
        [FORMAT_VHDX] = "vhdx",
        [FORMAT_VPC] = "vpc",
};
enum {
        REASON_BACKING_FILE,
        REASON_ENCRYPTED,
        REASON_HEADER_TOO_LARGE,
        REASON_DATA_FILE,
        REASON_TRUNCATED,
        REASON_EXTENT_FILES,
        REASON_EMBEDDED_EXTENTS,
        REASON_VMDK_PARENT,
        REASON_VDI_PARENT,
        REASON_VHD_PARENT,
        REASON_FOOTER_TOO_LARGE
};
static const char *const known_reasons[] = {
        [REASON_BACKING_FILE] = "it is an overlay on a backing file",
        [REASON_ENCRYPTED] = "it is encrypted",
        [REASON_HEADER_TOO_LARGE] = "its header claims a disk larger than any file can be",
        [REASON_DATA_FILE] = "its data lives in an external data file",
        [REASON_TRUNCATED] = "it is truncated: its tables lie past its end",
        [REASON_EXTENT_FILES] = "it is a descriptor whose data lives in extent files",
        [REASON_EMBEDDED_EXTENTS] = "its embedded descriptor names extent files",
        [REASON_VMDK_PARENT] = "it is an overlay on a parent image",
        [REASON_VDI_PARENT] = "it is a differencing image on a parent",
        [REASON_VHD_PARENT] = "it is a differencing disk on a parent",
        [REASON_FOOTER_TOO_LARGE] = "its footer claims a disk larger than any file can be",
};

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

static uint32_t be32_at(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t be64_at(const uint8_t *p)
{
        return (uint64_t)be32_at(p) << 32 | be32_at(p + 4);
}

static uint64_t le64_at(const uint8_t *p)
{
        return (uint64_t)le32_at(p + 4) << 32 | le32_at(p);
}

/* Whether the n bytes at offset are in buf (a header field loopd needs is missing from a truncated image:
 * qemu-storage-daemon then refuses it with its own words). */
static bool have(size_t buf_size, size_t offset, size_t n)
{
        return offset <= buf_size && buf_size - offset >= n;
}

#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
/* Sizes past 2^63 are no disk's: no file offset reaches them. */
#define VIRTUAL_SIZE_MAX (UINT64_C(1) << 63)

/* Whether [offset, offset + size) lies within an image of image_size bytes. */
static bool within(uint64_t offset, uint64_t size, uint64_t image_size)
{
        return offset <= image_size && size <= image_size - offset;
}

static void judge_qcow2(const uint8_t *head, size_t head_size, uint64_t image_size, ImageProbe *p)
{
        if (!have(head_size, 0, 72))
                return;
        if (be64_at(head + 8) != 0) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_BACKING_FILE];
        } else if (be32_at(head + 32) != 0) {
                p->verdict = IMAGE_UNSUPPORTED;
                p->reason = known_reasons[REASON_ENCRYPTED];
        } else if (be64_at(head + 24) >= VIRTUAL_SIZE_MAX) {
                p->verdict = IMAGE_UNSUPPORTED;
                p->reason = known_reasons[REASON_HEADER_TOO_LARGE];
        } else if (be32_at(head + 4) >= 3 && have(head_size, 72, 8) &&
                (be64_at(head + 72) & QCOW2_INCOMPAT_DATA_FILE)) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_DATA_FILE];
        } else if (!within(be64_at(head + 40), (uint64_t)be32_at(head + 36) * 8, image_size) ||
                !within(be64_at(head + 48), 1, image_size)) {
                /* qemu would serve the missing tables as zeros: a disk with nothing on it. */
                p->verdict = IMAGE_UNSUPPORTED;
                p->reason = known_reasons[REASON_TRUNCATED];
        }
}

/* qemu's vmdk driver: a sparse image whose header says capacity 0 is opened through its embedded
 * descriptor, whose extents are files; a descriptor file names extent files; a parentFileNameHint in the
 * embedded descriptor (at 0x200, 10 KiB long) names a parent. */
static void judge_vmdk(const uint8_t *head, size_t head_size, ImageProbe *p)
{
        static const char hint[] = "parentFileNameHint";

        if (!has_bytes_at(head, head_size, 0, "KDMV", 4) && !has_bytes_at(head, head_size, 0, "COWD", 4)) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_EXTENT_FILES];
                return;
        }
        if (has_bytes_at(head, head_size, 0, "KDMV", 4) && have(head_size, 12, 8) &&
                le64_at(head + 12) == 0) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_EMBEDDED_EXTENTS];
                return;
        }
        if (head_size > 0x200 && memmem(head + 0x200, head_size - 0x200, hint, strlen(hint))) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_VMDK_PARENT];
        }
}

#define VDI_TYPE_DIFF 4u
#define VHD_TYPE_DIFFERENCING 4u

static void judge_vdi(const uint8_t *head, size_t head_size, ImageProbe *p)
{
        if (have(head_size, 0x4c, 4) && le32_at(head + 0x4c) == VDI_TYPE_DIFF) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_VDI_PARENT];
        }
}

/* footer: the VHD footer (the copy at the start of a dynamic image, or the one at the end). */
static void judge_vpc(const uint8_t *footer, size_t footer_size, ImageProbe *p)
{
        if (!have(footer_size, 0, 64))
                return;
        if (be32_at(footer + 60) == VHD_TYPE_DIFFERENCING) {
                p->verdict = IMAGE_UNSAFE;
                p->reason = known_reasons[REASON_VHD_PARENT];
        } else if (be64_at(footer + 48) >= VIRTUAL_SIZE_MAX) {
                p->verdict = IMAGE_UNSUPPORTED;
                p->reason = known_reasons[REASON_FOOTER_TOO_LARGE];
        }
}

static const char *detect_format(
        const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size)
{
        static const uint8_t vdi_magic[4] = { 0x7f, 0x10, 0xda, 0xbe }; /* 0xbeda107f, little endian */

        if (has_bytes_at(head, head_size, 0, "QFI\xfb", 4))
                return known_formats[FORMAT_QCOW2];
        if (has_bytes_at(head, head_size, 0, "KDMV", 4) || has_bytes_at(head, head_size, 0, "COWD", 4) ||
                has_bytes_at(head, head_size, 0, "# Disk DescriptorFile", 21))
                return known_formats[FORMAT_VMDK];
        if (has_bytes_at(head, head_size, 0x40, vdi_magic, sizeof(vdi_magic)))
                return known_formats[FORMAT_VDI];
        if (has_bytes_at(head, head_size, 0, "vhdxfile", 8))
                return known_formats[FORMAT_VHDX];
        /* A dynamic VHD starts with a copy of its footer; a fixed one has only the footer, in the last 512
         * bytes (511 for images written by early Virtual PC versions). */
        if (has_bytes_at(head, head_size, 0, "conectix", 8))
                return known_formats[FORMAT_VPC];
        if (tail_size >= 512 && has_bytes_at(tail, tail_size, tail_size - 512, "conectix", 8))
                return known_formats[FORMAT_VPC];
        if (tail_size >= 511 && has_bytes_at(tail, tail_size, tail_size - 511, "conectix", 8))
                return known_formats[FORMAT_VPC];
        return NULL;
}

static void judge_format(const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size,
        uint64_t image_size, ImageProbe *p)
{
        if (streq(p->format, "qcow2"))
                judge_qcow2(head, head_size, image_size, p);
        else if (streq(p->format, "vmdk"))
                judge_vmdk(head, head_size, p);
        else if (streq(p->format, "vdi"))
                judge_vdi(head, head_size, p);
        else if (streq(p->format, "vpc")) {
                if (has_bytes_at(head, head_size, 0, "conectix", 8))
                        judge_vpc(head, head_size, p);
                else if (tail_size >= 512 && has_bytes_at(tail, tail_size, tail_size - 512, "conectix", 8))
                        judge_vpc(tail + tail_size - 512, 512, p);
                else if (tail_size >= 511)
                        judge_vpc(tail + tail_size - 511, 511, p);
        }
        /* vhdx: qemu opens no parent (it refuses differencing images itself). */
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

int image_probe_check(const ImageProbe *p)
{
        bool format = !p->format, reason = !p->reason;

        for (size_t i = 0; i < ELEMENTSOF(known_formats); i++)
                format = format || p->format == known_formats[i];
        for (size_t i = 0; i < ELEMENTSOF(known_reasons); i++)
                reason = reason || p->reason == known_reasons[i];
        if (!format || !reason)
                return -EBADMSG;
        if (p->sector_size != 512 && p->sector_size != 1024 && p->sector_size != 2048 &&
                p->sector_size != 4096)
                return -EBADMSG;
        if (p->verdict != IMAGE_SERVABLE && p->verdict != IMAGE_UNSAFE && p->verdict != IMAGE_UNSUPPORTED)
                return -EBADMSG;
        return 0;
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
                judge_format(head, head_size, tail, tail_size, image_size, ret);
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
        uint8_t head[IMAGE_HEAD_SIZE], tail[TAIL_SIZE];
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

        r = image_probe_buffer(head, head_read, tail, tail_read, image_size, ret);
        if (r >= 0 && ret->format) {
                /* Its server reopens it (vdisk.c): does its filesystem take O_DIRECT? */
                char path[64];
                int direct;

                (void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                direct = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                ret->direct_io = direct >= 0;
                if (direct >= 0)
                        (void)close(direct);
        }
        return r;
}
