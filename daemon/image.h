/* image.h: what an image file is, read from its first and last bytes before it is attached. Never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How much of the image's start image_probe() reads: a vmdk's embedded descriptor, which qemu reads for a
 * parent's name, ends by 10.5 KiB. */
#define IMAGE_HEAD_SIZE 16384u

/* Whether loopd may serve a virtual-disk image through its export. */
typedef enum ImageVerdict {
        IMAGE_SERVABLE = 0,
        IMAGE_UNSAFE, /* it refers to other files: a backing file, a data file, extents, a parent */
        IMAGE_UNSUPPORTED, /* what loopd cannot serve: an encrypted qcow2, a size no disk has */
} ImageVerdict;

typedef struct ImageProbe {
        /* NULL for a raw image; else qemu's driver name: "qcow2", "vmdk", "vdi", "vpc" (VHD) or "vhdx". */
        const char *format;
        uint32_t sector_size; /* detected from GPT/MBR; 512 when nothing says otherwise */
        /* For a format: whether its header lets loopd serve it, and why not (a constant string: it survives
         * the copy a worker sends back). qemu-storage-daemon checks the rest when it opens the image. */
        ImageVerdict verdict;
        const char *reason;
        /* For a format: the image's file can be opened with O_DIRECT (image_probe() only). */
        bool direct_io;
} ImageProbe;

/* Reads the image behind fd (starting at offset, size bytes of it; size 0 = to the end) with pread().
 * Sector size: a GPT header ("EFI PART") at 512, 1024, 2048 or 4096 bytes; else an MBR whose partitions
 * only make sense with 4096-byte sectors (read with 512 the table covers a small fraction of the image,
 * read with 4096 it ends at or just before its end). Returns -ENOTUNIQ when more than one sector size
 * fits (the caller must ask for an explicit one). */
int image_probe(int fd, uint64_t offset, uint64_t size, ImageProbe *ret);
/* Whether p, as a worker's child sent it back, is one image_probe() could have made: format and reason NULL
 * or one of its own strings (the very pointers: never followed before this says so), a sector size it
 * detects, a verdict it gives. 0 or -EBADMSG. */
int image_probe_check(const ImageProbe *p);

/* The same decision on a buffer holding the image's first bytes (IMAGE_HEAD_SIZE when the image has that
 * many) and its last 512 bytes; split out so that it can be fuzzed. */
int image_probe_buffer(const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size,
        uint64_t image_size, ImageProbe *ret);
