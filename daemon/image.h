/* image.h: what an image file is, read from its first and last bytes before it is attached. Never logs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct ImageProbe {
        const char *format; /* NULL for a raw image; else "qcow2", "vmdk", "vdi", "vhd" or "vhdx" */
        uint32_t sector_size; /* detected from GPT/MBR; 512 when nothing says otherwise */
} ImageProbe;

/* Reads the image behind fd (starting at offset, size bytes of it; size 0 = to the end) with pread().
 * Sector size: a GPT header ("EFI PART") at 512, 1024, 2048 or 4096 bytes; else an MBR whose partitions
 * only make sense with 4096-byte sectors (read with 512 the table covers a small fraction of the image,
 * read with 4096 it ends at or just before its end). Returns -ENOTUNIQ when more than one sector size
 * fits (the caller must ask for an explicit one). */
int image_probe(int fd, uint64_t offset, uint64_t size, ImageProbe *ret);

/* The same decision on a buffer holding the image's first bytes (at least 8 KiB when the image has that
 * many) and its last 512 bytes; split out so that it can be fuzzed. */
int image_probe_buffer(const uint8_t *head, size_t head_size, const uint8_t *tail, size_t tail_size,
        uint64_t image_size, ImageProbe *ret);
