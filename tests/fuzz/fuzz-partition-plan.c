/* fuzz-partition-plan.c: partition_plan(), the partition table (read with libblkid) mapped to what BLKPG
 * adds: every planned partition must be one the kernel can take and must lie inside the device.
 * Input: 1 byte sector size (low 2 bits: 512 << n), 4 bytes of extra device size in KiB (little endian,
 * capped at 64 MiB: the device is sparse beyond the data), then the device's first bytes. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "partition.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        PartitionSpec *specs = NULL;
        size_t n = 0;
        uint32_t sector_size, extra_kib = 0;
        uint64_t device_size;
        int fd, r;

        if (size < 5)
                return 0;
        sector_size = 512u << (data[0] & 3);
        for (int i = 0; i < 4; i++)
                extra_kib |= (uint32_t)data[1 + i] << (8 * i);
        extra_kib %= 64 * 1024 + 1;
        data += 5;
        size -= 5;

        fd = memfd_create("fuzz-device", MFD_CLOEXEC);
        if (fd < 0)
                abort();
        if (size > 0 && write(fd, data, size) != (ssize_t)size)
                abort();
        device_size = (uint64_t)extra_kib * 1024 > size ? (uint64_t)extra_kib * 1024 : size;
        /* A loop device is whole sectors of its logical size. */
        device_size -= device_size % sector_size;
        if (ftruncate(fd, (off_t)device_size) < 0)
                abort();

        r = partition_plan(fd, sector_size, device_size, &specs, &n);
        fuzz_check(r >= 0 || r == -EIO || r == -ENOMEM, "partition_plan() returned %d", r);
        if (r >= 0) {
                fuzz_check(n <= 256, "%zu partitions planned", n);
                fuzz_check((n == 0) == (specs == NULL), "n %zu but specs %p", n, (void *)specs);
                for (size_t i = 0; i < n; i++) {
                        const PartitionSpec *p = &specs[i];
                        fuzz_check(p->number >= 1 && p->number < 256, "partition number %u", p->number);
                        fuzz_check(p->length > 0, "partition %u has length 0", p->number);
                        fuzz_check(p->start % sector_size == 0 && p->length % sector_size == 0,
                                "partition %u (%llu+%llu) not aligned to %u", p->number,
                                (unsigned long long)p->start, (unsigned long long)p->length, sector_size);
                        fuzz_check(p->start < device_size && p->length <= device_size - p->start,
                                "partition %u (%llu+%llu) outside the %llu-byte device", p->number,
                                (unsigned long long)p->start, (unsigned long long)p->length,
                                (unsigned long long)device_size);
                        for (size_t j = 0; j < i; j++)
                                fuzz_check(specs[j].number != p->number, "partition number %u twice",
                                        p->number);
                }
        }
        free(specs);

        /* The GPT guard alone, as Attach's probe path uses it. */
        r = partition_table_check(fd, sector_size, device_size);
        fuzz_check(r == 0 || r == -EFBIG || r == -EIO, "partition_table_check() returned %d", r);
        close(fd);
        return 0;
}
