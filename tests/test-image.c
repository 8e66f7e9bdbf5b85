/* test-image.c: image_probe_buffer() on synthetic images and image_probe() on files made by real tools. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "images.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

/* A synthetic image: its first 8 KiB and last 512 bytes, as image_probe() would read them. */
typedef struct Synth {
        uint8_t head[8192];
        uint8_t tail[512];
        uint64_t size;
} Synth;

static void synth_init(Synth *s, uint64_t size)
{
        memset(s, 0, sizeof(*s));
        s->size = size;
}

static int synth_probe(const Synth *s, ImageProbe *ret)
{
        return image_probe_buffer(s->head, sizeof(s->head), s->tail, sizeof(s->tail), s->size, ret);
}

static void put_le32(uint8_t *p, uint32_t v)
{
        p[0] = v & 0xff;
        p[1] = (v >> 8) & 0xff;
        p[2] = (v >> 16) & 0xff;
        p[3] = (v >> 24) & 0xff;
}

/* An MBR primary entry (slot 0-3). */
static void mbr_entry(uint8_t *head, unsigned slot, uint8_t type, uint32_t start, uint32_t count)
{
        uint8_t *e = head + 446 + 16 * slot;

        e[0] = 0x00;
        e[4] = type;
        put_le32(e + 8, start);
        put_le32(e + 12, count);
        head[510] = 0x55;
        head[511] = 0xaa;
}

static void assert_raw(const Synth *s, uint32_t sector_size)
{
        ImageProbe p = { .format = "garbage", .sector_size = 1 };

        g_assert_cmpint(synth_probe(s, &p), ==, 0);
        g_assert_null(p.format);
        g_assert_cmpuint(p.sector_size, ==, sector_size);
}

static void assert_format(const Synth *s, const char *format)
{
        ImageProbe p = {};

        g_assert_cmpint(synth_probe(s, &p), ==, 0);
        g_assert_cmpstr(p.format, ==, format);
}

/* ---- formats ---- */

static void test_format_qcow2(void)
{
        Synth s;

        synth_init(&s, 64 * MIB);
        memcpy(s.head, "QFI\xfb\0\0\0\3", 8);
        assert_format(&s, "qcow2");
}

static void test_format_vmdk_sparse(void)
{
        Synth s;

        synth_init(&s, 64 * MIB);
        memcpy(s.head, "KDMV\1\0\0\0", 8);
        assert_format(&s, "vmdk");
}

static void test_format_vmdk_descriptor(void)
{
        Synth s;
        const char *text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\n";

        synth_init(&s, 512);
        memcpy(s.head, text, strlen(text));
        assert_format(&s, "vmdk");
}

static void test_format_vdi(void)
{
        Synth s;
        const char *text = "<<< Oracle VM VirtualBox Disk Image >>>\n";

        synth_init(&s, 64 * MIB);
        memcpy(s.head, text, strlen(text));
        put_le32(s.head + 0x40, 0xbeda107f);
        assert_format(&s, "vdi");
}

static void test_format_vhd_dynamic(void)
{
        Synth s;

        synth_init(&s, 64 * MIB);
        memcpy(s.head, "conectix", 8);
        assert_format(&s, "vhd");
}

static void test_format_vhd_fixed(void)
{
        Synth s;

        /* A fixed VHD is a raw disk followed by the footer: even a valid MBR in front must not hide it. */
        synth_init(&s, 64 * MIB + 512);
        mbr_entry(s.head, 0, 0x83, 2048, 100000);
        memcpy(s.tail, "conectix", 8);
        assert_format(&s, "vhd");
}

static void test_format_vhdx(void)
{
        Synth s;

        synth_init(&s, 64 * MIB);
        memcpy(s.head, "vhdxfile", 8);
        assert_format(&s, "vhdx");
}

static void test_format_signature_elsewhere_is_raw(void)
{
        Synth s;

        /* Signatures count only at their offsets: "QFI\xfb" at byte 1 is nothing. */
        synth_init(&s, 64 * MIB);
        memcpy(s.head + 1, "QFI\xfb", 4);
        memcpy(s.head + 100, "vhdxfile", 8);
        memcpy(s.tail + 2, "conectix", 8);
        assert_raw(&s, 512);
}

/* ---- sector sizes ---- */

static void test_sector_gpt(gconstpointer data)
{
        uint32_t ss = GPOINTER_TO_UINT(data);
        Synth s;

        synth_init(&s, 1 * GIB);
        memcpy(s.head + ss, "EFI PART", 8);
        assert_raw(&s, ss);
}

static void test_sector_gpt_ambiguous(void)
{
        ImageProbe p = {};
        Synth s;

        synth_init(&s, 1 * GIB);
        memcpy(s.head + 512, "EFI PART", 8);
        memcpy(s.head + 4096, "EFI PART", 8);
        g_assert_cmpint(synth_probe(&s, &p), ==, -ENOTUNIQ);

        synth_init(&s, 1 * GIB);
        memcpy(s.head + 1024, "EFI PART", 8);
        memcpy(s.head + 2048, "EFI PART", 8);
        g_assert_cmpint(synth_probe(&s, &p), ==, -ENOTUNIQ);
}

static void test_sector_gpt_wins_over_mbr(void)
{
        Synth s;

        /* A protective MBR (0xee) in front of a 4096-byte GPT: the GPT decides. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0xee, 1, (uint32_t)(GIB / 4096 - 1));
        memcpy(s.head + 4096, "EFI PART", 8);
        assert_raw(&s, 4096);
}

static void test_sector_phone_mbr(void)
{
        Synth s;
        uint64_t sectors = 1 * GIB / 4096;

        /* Two partitions in 4096-byte sectors, the last ending at the image's end. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x0c, 256, 16384);
        mbr_entry(s.head, 1, 0x83, 256 + 16384, (uint32_t)(sectors - 256 - 16384));
        assert_raw(&s, 4096);

        /* Ending a little before the end (the last alignment unit unused) still counts. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x83, 256, (uint32_t)(sectors - 256 - 200));
        assert_raw(&s, 4096);
}

static void test_sector_mbr_plain(void)
{
        Synth s;

        /* An ordinary 512-byte MBR that covers the whole image. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x83, 2048, (uint32_t)(GIB / 512 - 2048));
        assert_raw(&s, 512);

        /* Small fraction at 512, but at 4096 it ends far before the end: nothing says 4096. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x83, 2048, 20480);
        assert_raw(&s, 512);

        /* At 4096 it would run past the end of the image. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x83, 2048, (uint32_t)(GIB / 4096));
        assert_raw(&s, 512);
}

static void test_sector_mbr_protective_only(void)
{
        Synth s;

        /* A protective MBR without a GPT header: not a phone image. */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0xee, 1, (uint32_t)(GIB / 4096 - 1));
        assert_raw(&s, 512);
}

static void test_sector_mbr_garbage_boot_flag(void)
{
        Synth s;
        uint64_t sectors = 1 * GIB / 4096;

        /* A boot flag other than 0x00/0x80 means the sector is not a partition table (e.g. a FAT boot
         * sector). */
        synth_init(&s, 1 * GIB);
        mbr_entry(s.head, 0, 0x83, 256, (uint32_t)(sectors - 256));
        s.head[446] = 0x12;
        assert_raw(&s, 512);
}

/* ---- short and odd input ---- */

static void test_short_inputs(void)
{
        uint8_t buf[8192] = {};
        ImageProbe p = {};

        /* An empty image. */
        g_assert_cmpint(image_probe_buffer(NULL, 0, NULL, 0, 0, &p), ==, 0);
        g_assert_null(p.format);
        g_assert_cmpuint(p.sector_size, ==, 512);

        /* Signatures cut off by the end of the buffer are not signatures. */
        memcpy(buf, "QFI", 3);
        g_assert_cmpint(image_probe_buffer(buf, 3, buf, 3, 3, &p), ==, 0);
        g_assert_null(p.format);

        memset(buf, 0, sizeof(buf));
        memcpy(buf + 512, "EFI PART", 8);
        g_assert_cmpint(image_probe_buffer(buf, 515, buf, 515, 515, &p), ==, 0);
        g_assert_cmpuint(p.sector_size, ==, 512);
        g_assert_cmpint(image_probe_buffer(buf, 520, buf, 520, 520, &p), ==, 0);
        g_assert_cmpuint(p.sector_size, ==, 512);

        /* A GPT header at 4096 that the buffer holds only in part. */
        memset(buf, 0, sizeof(buf));
        memcpy(buf + 4096, "EFI PART", 8);
        g_assert_cmpint(image_probe_buffer(buf, 4100, NULL, 0, 4100, &p), ==, 0);
        g_assert_cmpuint(p.sector_size, ==, 512);

        /* An MBR in a 511-byte buffer is cut off. */
        memset(buf, 0, sizeof(buf));
        mbr_entry(buf, 0, 0x83, 1, 1);
        g_assert_cmpint(image_probe_buffer(buf, 511, NULL, 0, 8192, &p), ==, 0);
        g_assert_cmpuint(p.sector_size, ==, 512);

        /* Bad arguments. */
        g_assert_cmpint(image_probe_buffer(buf, sizeof(buf), buf, 512, 8192, NULL), ==, -EINVAL);
        g_assert_cmpint(image_probe_buffer(NULL, 10, NULL, 0, 8192, &p), ==, -EINVAL);
        g_assert_cmpint(image_probe_buffer(buf, 10, NULL, 10, 8192, &p), ==, -EINVAL);
}

static void test_random_inputs(void)
{
        g_autoptr(GRand) rand = g_rand_new_with_seed(4242);
        static uint8_t head[8192], tail[512];

        /* No assertion on the result: it must only return, with a sane sector size. */
        for (unsigned i = 0; i < 20000; i++) {
                size_t hs = g_rand_int_range(rand, 0, sizeof(head) + 1);
                size_t ts = g_rand_int_range(rand, 0, sizeof(tail) + 1);
                uint64_t size = ((uint64_t)g_rand_int(rand) << 16) ^ g_rand_int(rand);
                ImageProbe p = {};
                int r;

                for (size_t j = 0; j < sizeof(head); j += 4)
                        put_le32(head + j, g_rand_int(rand));
                for (size_t j = 0; j < sizeof(tail); j += 4)
                        put_le32(tail + j, g_rand_int(rand));
                /* Make the interesting paths likely: a valid MBR signature and GPT magic now and then. */
                if (i % 3 == 0) {
                        head[510] = 0x55;
                        head[511] = 0xaa;
                        for (unsigned k = 0; k < 4; k++)
                                head[446 + 16 * k] = (k + i) % 2 ? 0x80 : 0x00;
                }
                if (i % 7 == 0)
                        memcpy(head + 512 * (1u << (i % 4)), "EFI PART", 8);

                r = image_probe_buffer(head, hs, tail, ts, size, &p);
                g_assert_true(r == 0 || r == -ENOTUNIQ);
                if (r == 0 && !p.format)
                        g_assert_true(p.sector_size == 512 || p.sector_size == 1024 ||
                                p.sector_size == 2048 || p.sector_size == 4096);
        }
}

/* ---- image_probe() on real files ---- */

static void probe_file(const char *path, uint64_t offset, uint64_t size, ImageProbe *p, int expect_r)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(image_probe(fd, offset, size, p), ==, expect_r);
        close(fd);
}

static void test_file_qemu_formats(void)
{
        /* qemu-img's format names, and what image_probe() must call them. */
        static const char *const formats[][2] = {
                { "qcow2", "qcow2" },
                { "vmdk", "vmdk" },
                { "vdi", "vdi" },
                { "vpc", "vhd" },
                { "vhdx", "vhdx" },
        };
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img");

        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        dir = test_tmpdir_new();
        for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
                g_autofree char *path = g_strdup_printf("%s/disk.%s", dir, formats[i][0]);
                ImageProbe p = {};

                g_free(test_sh("qemu-img create -q -f %s '%s' 64M", formats[i][0], path));
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpstr(p.format, ==, formats[i][1]);
        }

        /* A fixed-size VHD is raw data plus a footer at the end. */
        {
                g_autofree char *path = g_strdup_printf("%s/fixed.vhd", dir);
                ImageProbe p = {};

                g_free(test_sh("qemu-img create -q -f vpc -o subformat=fixed '%s' 16M", path));
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpstr(p.format, ==, "vhd");
        }
        test_tmpdir_remove(dir);
}

/* sfdisk < 2.39 writes 4096-byte-sector tables only through a loop device (see images.c). */
static gboolean can_write_4k_tables(void)
{
        if (geteuid() == 0 && access("/dev/loop-control", W_OK) == 0)
                return TRUE;
        g_test_skip("writing a 4096-byte-sector partition table needs root and loop devices");
        return FALSE;
}

static void test_file_sfdisk_sector_sizes(void)
{
        static const unsigned sizes[] = { 512, 4096 };
        g_autofree char *dir = NULL;

        if (!can_write_4k_tables())
                return;
        dir = test_tmpdir_new();

        for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
                g_autofree char *path = g_strdup_printf("%s/gpt-%u.img", dir, sizes[i]);
                g_autoptr(JsonNode) table = NULL;
                ImageProbe p = {};

                image_create(path, 64 * MIB);
                image_sfdisk(path, "label: gpt\n,16M,L\n,,L\n", sizes[i]);
                table = oracle_sfdisk_json(path, sizes[i]);
                probe_file(path, 0, 0, &p, 0);
                g_assert_null(p.format);
                g_assert_cmpuint(p.sector_size, ==,
                        json_object_get_int_member(json_node_get_object(table), "sectorsize"));
        }

        /* The phone image: an MBR written with 4096-byte sectors. */
        {
                g_autofree char *path = g_strdup_printf("%s/phone.img", dir);
                ImageProbe p = {};

                image_create(path, 64 * MIB);
                image_sfdisk(path, "label: dos\n,8M,c\n,,L\n", 4096);
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpuint(p.sector_size, ==, 4096);
        }

        /* The same table written with 512-byte sectors. */
        {
                g_autofree char *path = g_strdup_printf("%s/dos.img", dir);
                ImageProbe p = {};

                image_create(path, 64 * MIB);
                image_sfdisk(path, "label: dos\n,8M,c\n,,L\n", 512);
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpuint(p.sector_size, ==, 512);
        }
        test_tmpdir_remove(dir);
}

static void test_file_offset_and_size(void)
{
        g_autofree char *dir = NULL, *inner = NULL, *outer = NULL;
        ImageProbe p = {};

        if (!can_write_4k_tables())
                return;
        dir = test_tmpdir_new();
        inner = g_strdup_printf("%s/inner.img", dir);
        outer = g_strdup_printf("%s/outer.img", dir);

        /* A 4096-sector GPT disk embedded 1 MiB into a bigger file: found only when probing at the offset.
         */
        image_create(inner, 16 * MIB);
        image_sfdisk(inner, "label: gpt\n,,L\n", 4096);
        image_create(outer, 32 * MIB);
        g_free(test_sh("dd if='%s' of='%s' bs=1M seek=1 conv=notrunc,sparse status=none", inner, outer));

        probe_file(outer, 0, 0, &p, 0);
        g_assert_cmpuint(p.sector_size, ==, 512);
        probe_file(outer, 1 * MIB, 16 * MIB, &p, 0);
        g_assert_cmpuint(p.sector_size, ==, 4096);

        /* An offset past the end is an empty image, not an error. */
        probe_file(outer, 64 * MIB, 0, &p, 0);
        g_assert_null(p.format);
        g_assert_cmpuint(p.sector_size, ==, 512);

        /* A qcow2 header found at an offset. */
        g_free(test_sh("printf 'QFI\\373' | dd of='%s' bs=1 seek=%u conv=notrunc status=none", outer,
                8u * 1024 * 1024));
        probe_file(outer, 8 * MIB, 0, &p, 0);
        g_assert_cmpstr(p.format, ==, "qcow2");
        test_tmpdir_remove(dir);
}

static void test_file_ambiguous(void)
{
        g_autofree char *dir = NULL, *a = NULL, *b = NULL;
        ImageProbe p = {};

        if (!can_write_4k_tables())
                return;
        dir = test_tmpdir_new();
        a = g_strdup_printf("%s/a.img", dir);
        b = g_strdup_printf("%s/b.img", dir);

        /* A real 512 GPT header copied into a real 4096 GPT image: both fit. */
        image_create(a, 32 * MIB);
        image_sfdisk(a, "label: gpt\n,,L\n", 512);
        image_create(b, 32 * MIB);
        image_sfdisk(b, "label: gpt\n,,L\n", 4096);
        g_free(test_sh("dd if='%s' of='%s' bs=512 skip=1 seek=1 count=1 conv=notrunc status=none", a, b));
        probe_file(b, 0, 0, &p, -ENOTUNIQ);
        test_tmpdir_remove(dir);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/image/format/qcow2", test_format_qcow2);
        g_test_add_func("/image/format/vmdk-sparse", test_format_vmdk_sparse);
        g_test_add_func("/image/format/vmdk-descriptor", test_format_vmdk_descriptor);
        g_test_add_func("/image/format/vdi", test_format_vdi);
        g_test_add_func("/image/format/vhd-dynamic", test_format_vhd_dynamic);
        g_test_add_func("/image/format/vhd-fixed-footer", test_format_vhd_fixed);
        g_test_add_func("/image/format/vhdx", test_format_vhdx);
        g_test_add_func("/image/format/signature-elsewhere-is-raw", test_format_signature_elsewhere_is_raw);

        g_test_add_data_func("/image/sector-size/gpt-512", GUINT_TO_POINTER(512), test_sector_gpt);
        g_test_add_data_func("/image/sector-size/gpt-1024", GUINT_TO_POINTER(1024), test_sector_gpt);
        g_test_add_data_func("/image/sector-size/gpt-2048", GUINT_TO_POINTER(2048), test_sector_gpt);
        g_test_add_data_func("/image/sector-size/gpt-4096", GUINT_TO_POINTER(4096), test_sector_gpt);
        g_test_add_func("/image/sector-size/gpt-ambiguous", test_sector_gpt_ambiguous);
        g_test_add_func("/image/sector-size/gpt-wins-over-mbr", test_sector_gpt_wins_over_mbr);
        g_test_add_func("/image/sector-size/phone-mbr", test_sector_phone_mbr);
        g_test_add_func("/image/sector-size/plain-mbr", test_sector_mbr_plain);
        g_test_add_func("/image/sector-size/protective-mbr-only", test_sector_mbr_protective_only);
        g_test_add_func("/image/sector-size/mbr-bad-boot-flag", test_sector_mbr_garbage_boot_flag);

        g_test_add_func("/image/input/short", test_short_inputs);
        g_test_add_func("/image/input/random", test_random_inputs);

        g_test_add_func("/image/file/qemu-formats", test_file_qemu_formats);
        g_test_add_func("/image/file/sfdisk-sector-sizes", test_file_sfdisk_sector_sizes);
        g_test_add_func("/image/file/offset-and-size", test_file_offset_and_size);
        g_test_add_func("/image/file/ambiguous-gpt", test_file_ambiguous);

        return g_test_run();
}
