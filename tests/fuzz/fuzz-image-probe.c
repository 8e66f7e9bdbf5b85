/* fuzz-image-probe.c: image_probe_buffer(), the format, verdict and sector size decision made on the first
 * and last bytes of a caller's image before anything is attached or served.
 *
 * Input: 8 bytes of image size (little endian; 0 = the rest's length), then the image's bytes. */
#include <errno.h>
#include <string.h>

#include "fuzz-util.h"
#include "image.h"

#define TAIL_SIZE 512u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char *const formats[] = { "qcow2", "vmdk", "vdi", "vpc", "vhdx" };
        static const uint32_t gpt_sizes[] = { 512, 1024, 2048, 4096 };
        uint64_t image_size = 0;
        /* Not a result image_probe_buffer() can give: one it does not overwrite is caught. */
        ImageProbe probe = { .format = "unset", .sector_size = 3, .verdict = IMAGE_UNSAFE };
        unsigned hits = 0;
        int r;

        if (size < 8)
                return 0;
        for (int i = 0; i < 8; i++)
                image_size |= (uint64_t)data[i] << (8 * i);
        data += 8;
        size -= 8;
        if (image_size == 0)
                image_size = size;

        /* As image_probe() reads them: up to IMAGE_HEAD_SIZE from the start, up to 512 bytes from the end.
         * The copies are exactly sized, so that ASan sees any read past them. */
        size_t head_size = size < IMAGE_HEAD_SIZE ? size : IMAGE_HEAD_SIZE;
        size_t tail_size = size < TAIL_SIZE ? size : TAIL_SIZE;
        uint8_t *head = malloc(head_size ? head_size : 1), *tail = malloc(tail_size ? tail_size : 1);
        if (!head || !tail)
                abort();
        memcpy(head, data, head_size);
        memcpy(tail, data + size - tail_size, tail_size);

        r = image_probe_buffer(head, head_size, tail, tail_size, image_size, &probe);

        for (size_t i = 0; i < 4; i++)
                if (head_size >= gpt_sizes[i] + 8 && memcmp(head + gpt_sizes[i], "EFI PART", 8) == 0)
                        hits++;
        if (r == -ENOTUNIQ)
                fuzz_check(hits > 1, "-ENOTUNIQ with %u GPT signatures", hits);
        else {
                fuzz_check(r == 0, "image_probe_buffer() returned %d", r);
                fuzz_check(probe.sector_size == 512 || probe.sector_size == 1024 ||
                                probe.sector_size == 2048 || probe.sector_size == 4096,
                        "sector size %u", probe.sector_size);
                bool known = probe.format == NULL;
                for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
                        known = known || (probe.format && strcmp(probe.format, formats[i]) == 0);
                fuzz_check(known, "unknown format");
                fuzz_check(probe.verdict == IMAGE_SERVABLE || probe.verdict == IMAGE_UNSAFE ||
                                probe.verdict == IMAGE_UNSUPPORTED,
                        "verdict %d", (int)probe.verdict);
                if (!probe.format)
                        fuzz_check(probe.verdict == IMAGE_SERVABLE, "a raw image with verdict %d",
                                (int)probe.verdict);
                /* A refusal says why (a non-empty constant string); nothing else has a reason. */
                fuzz_check((probe.reason != NULL) == (probe.verdict != IMAGE_SERVABLE),
                        "verdict %d with reason %s", (int)probe.verdict,
                        probe.reason ? probe.reason : "NULL");
                if (probe.reason)
                        fuzz_check(probe.reason[0] != '\0', "an empty reason");
                if (!probe.format)
                        fuzz_check(hits <= 1, "%u GPT signatures but no ambiguity reported", hits);
                if (!probe.format && hits == 1)
                        for (size_t i = 0; i < 4; i++)
                                if (head_size >= gpt_sizes[i] + 8 &&
                                        memcmp(head + gpt_sizes[i], "EFI PART", 8) == 0)
                                        fuzz_check(probe.sector_size == gpt_sizes[i],
                                                "GPT at %u but sector size %u", gpt_sizes[i],
                                                probe.sector_size);
        }

        /* NULL buffers with sizes are refused, not read. */
        fuzz_check(image_probe_buffer(NULL, 1, tail, tail_size, image_size, &probe) == -EINVAL, "NULL head");
        free(head);
        free(tail);
        return 0;
}
