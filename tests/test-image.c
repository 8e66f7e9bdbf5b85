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

/* A synthetic image: its first IMAGE_HEAD_SIZE and last 512 bytes, as image_probe() would read them. */
typedef struct Synth {
        uint8_t head[IMAGE_HEAD_SIZE];
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

/* The same image with only the first head_size bytes of its head (as from a file that short). */
static int synth_probe_head(const Synth *s, size_t head_size, ImageProbe *ret)
{
        g_assert_cmpuint(head_size, <=, sizeof(s->head));
        return image_probe_buffer(s->head, head_size, s->tail, sizeof(s->tail), s->size, ret);
}

static void put_le32(uint8_t *p, uint32_t v)
{
        p[0] = v & 0xff;
        p[1] = (v >> 8) & 0xff;
        p[2] = (v >> 16) & 0xff;
        p[3] = (v >> 24) & 0xff;
}

static void put_le64(uint8_t *p, uint64_t v)
{
        put_le32(p, (uint32_t)v);
        put_le32(p + 4, (uint32_t)(v >> 32));
}

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (v >> 24) & 0xff;
        p[1] = (v >> 16) & 0xff;
        p[2] = (v >> 8) & 0xff;
        p[3] = v & 0xff;
}

static void put_be64(uint8_t *p, uint64_t v)
{
        put_be32(p, (uint32_t)(v >> 32));
        put_be32(p + 4, (uint32_t)v);
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

static const char *verdict_name(ImageVerdict v)
{
        switch (v) {
        case IMAGE_SERVABLE:
                return "servable";
        case IMAGE_UNSAFE:
                return "unsafe";
        case IMAGE_UNSUPPORTED:
                return "unsupported";
        }
        return "not a verdict";
}

/* Checks that p (of the image called what) is in format with verdict: a refusal says why, in words that
 * include reason_has (NULL: any); a servable image has no reason. Fails the test (non-fatally) otherwise. */
static void check_verdict(const char *what, const ImageProbe *p, const char *format, ImageVerdict verdict,
        const char *reason_has)
{
        /* Whatever image_probe() answers, loopd takes from a worker's copy of it. */
        g_assert_cmpint(image_probe_check(p), ==, 0);
        if (g_strcmp0(p->format, format) != 0) {
                g_test_fail_printf("%s: format %s, expected %s", what, p->format ?: "raw", format);
                return;
        }
        if (p->verdict != verdict) {
                g_test_fail_printf("%s: %s (%s), expected %s", what, verdict_name(p->verdict),
                        p->reason ?: "no reason", verdict_name(verdict));
                return;
        }
        if (verdict == IMAGE_SERVABLE && p->reason) {
                g_test_fail_printf("%s: servable, but with a reason: %s", what, p->reason);
                return;
        }
        if (verdict != IMAGE_SERVABLE && (!p->reason || !p->reason[0])) {
                g_test_fail_printf("%s: %s without a reason", what, verdict_name(verdict));
                return;
        }
        if (reason_has && !strstr(p->reason, reason_has))
                g_test_fail_printf("%s: the reason \"%s\" does not say \"%s\"", what, p->reason, reason_has);
}

/* The verdict on s as image_probe() would read it with head_size bytes of its head. The result starts out
 * as the opposite of what is expected: a probe that does not write it cannot pass. */
static void assert_verdict(const char *what, const Synth *s, size_t head_size, const char *format,
        ImageVerdict verdict, const char *reason_has)
{
        ImageProbe p = {
                .format = "unset",
                .verdict = verdict == IMAGE_SERVABLE ? IMAGE_UNSAFE : IMAGE_SERVABLE,
                .reason = verdict == IMAGE_SERVABLE ? "unset" : NULL,
        };

        g_assert_cmpint(synth_probe_head(s, head_size, &p), ==, 0);
        check_verdict(what, &p, format, verdict, reason_has);
}

/* A worker's answer that points anywhere but at image_probe()'s own strings, or says what it never says,
 * is refused before loopd follows a pointer of it. */
static void test_check_refuses_foreign_answers(void)
{
        static const char qcow2_elsewhere[] = "qcow2";
        ImageProbe p = {};
        Synth s;

        synth_init(&s, 64 * MIB);
        memcpy(s.head, "QFI\xfb\0\0\0\3", 8);
        g_assert_cmpint(synth_probe_head(&s, IMAGE_HEAD_SIZE, &p), ==, 0);
        g_assert_nonnull(p.format);
        g_assert_cmpint(image_probe_check(&p), ==, 0);

        ImageProbe bad = p;
        bad.format = qcow2_elsewhere; /* the same text at another address */
        g_assert_cmpint(image_probe_check(&bad), ==, -EBADMSG);
        bad = p;
        bad.reason = "it is encrypted";
        g_assert_cmpint(image_probe_check(&bad), ==, -EBADMSG);
        bad = p;
        bad.sector_size = 3000;
        g_assert_cmpint(image_probe_check(&bad), ==, -EBADMSG);
        bad = p;
        bad.verdict = (ImageVerdict)7;
        g_assert_cmpint(image_probe_check(&bad), ==, -EBADMSG);
        /* A raw image's answer: no strings at all. */
        g_assert_cmpint(image_probe_check(&(ImageProbe){ .sector_size = 4096 }), ==, 0);
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

        /* VHD is qemu's "vpc": the name the export's driver option takes. */
        synth_init(&s, 64 * MIB);
        memcpy(s.head, "conectix", 8);
        assert_format(&s, "vpc");
}

static void test_format_vhd_fixed(void)
{
        Synth s;

        /* A fixed VHD is a raw disk followed by the footer: even a valid MBR in front must not hide it. */
        synth_init(&s, 64 * MIB + 512);
        mbr_entry(s.head, 0, 0x83, 2048, 100000);
        memcpy(s.tail, "conectix", 8);
        assert_format(&s, "vpc");
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

/* ---- verdicts: whether a virtual disk's header lets loopd serve it ---- */

#define KIB (UINT64_C(1) << 10)
#define SIZE_2_63 (UINT64_C(1) << 63)

/* A qcow2 header as qemu-img writes one for a 64 MiB disk: version 2 (72 bytes) or 3 (104 bytes), no
 * backing file, not encrypted, no incompatible features. */
static void synth_qcow2(Synth *s, uint32_t version)
{
        synth_init(s, 256 * KIB);
        memcpy(s->head, "QFI\xfb", 4);
        put_be32(s->head + 4, version);
        put_be32(s->head + 20, 16); /* cluster_bits */
        put_be64(s->head + 24, 64 * MIB); /* size */
        put_be32(s->head + 36, 1); /* l1_size */
        put_be64(s->head + 40, 0x30000); /* l1_table_offset */
        put_be64(s->head + 48, 0x10000); /* refcount_table_offset */
        put_be32(s->head + 56, 1); /* refcount_table_clusters */
        if (version >= 3) {
                put_be32(s->head + 96, 4); /* refcount_order */
                put_be32(s->head + 100, 104); /* header_length */
        }
}

/* The backing file's name where qemu-img puts it: after the header, named by offset (8) and size (16). */
static void synth_qcow2_backing(Synth *s, const char *name)
{
        put_be64(s->head + 8, 0x200);
        put_be32(s->head + 16, (uint32_t)strlen(name));
        memcpy(s->head + 0x200, name, strlen(name));
}

static void test_verdict_qcow2_plain(void)
{
        Synth s;

        synth_qcow2(&s, 2);
        assert_verdict("qcow2 v2", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);
        synth_qcow2(&s, 3);
        assert_verdict("qcow2 v3", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);

        /* Incompatible features other than the external data file (dirty, corrupt, zstd compression,
         * extended L2 entries: bits 0, 1, 3, 4), compatible and autoclear ones: qemu's business. */
        put_be64(s.head + 72, UINT64_C(0x1b));
        put_be64(s.head + 80, 1); /* lazy refcounts */
        put_be64(s.head + 88, 3); /* bitmaps, raw external data (meaningless without the data file) */
        assert_verdict("qcow2 v3 with other features", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);

        /* The largest size a disk can have. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 24, SIZE_2_63 - 1);
        assert_verdict("qcow2 of 2^63-1 bytes", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);
}

static void test_verdict_qcow2_backing_file(void)
{
        Synth s;

        synth_qcow2(&s, 3);
        synth_qcow2_backing(&s, "base.qcow2");
        assert_verdict("qcow2 v3 overlay", &s, sizeof(s.head), "qcow2", IMAGE_UNSAFE, "backing file");

        synth_qcow2(&s, 2);
        synth_qcow2_backing(&s, "/etc/shadow");
        assert_verdict("qcow2 v2 overlay", &s, sizeof(s.head), "qcow2", IMAGE_UNSAFE, "backing file");

        /* The offset decides, whatever the size says. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 8, 0x200);
        assert_verdict("qcow2 with a backing offset, name size 0", &s, sizeof(s.head), "qcow2", IMAGE_UNSAFE,
                "backing file");
}

static void test_verdict_qcow2_encrypted(void)
{
        Synth s;

        /* crypt_method 1 is the old AES, 2 LUKS; either needs a key loopd does not have. */
        for (uint32_t method = 1; method <= 2; method++) {
                g_autofree char *what = g_strdup_printf("qcow2 with crypt_method %u", method);

                synth_qcow2(&s, 3);
                put_be32(s.head + 32, method);
                assert_verdict(what, &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED, "encrypted");
        }
}

static void test_verdict_qcow2_size_past_2_63(void)
{
        static const uint64_t sizes[] = { SIZE_2_63, SIZE_2_63 + 512, UINT64_MAX };
        Synth s;

        for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
                g_autofree char *what = g_strdup_printf("qcow2 of %" G_GUINT64_FORMAT " bytes", sizes[i]);

                synth_qcow2(&s, 3);
                put_be64(s.head + 24, sizes[i]);
                assert_verdict(what, &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED, "larger");
        }
}

static void test_verdict_qcow2_external_data_file(void)
{
        Synth s;

        /* Incompatible feature bit 2: the guest's data is in another file, named in a header extension. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 72, UINT64_C(1) << 2);
        assert_verdict("qcow2 v3 with a data file", &s, sizeof(s.head), "qcow2", IMAGE_UNSAFE, "data file");
        put_be64(s.head + 72, UINT64_C(0x1f));
        assert_verdict("qcow2 v3 with a data file among other features", &s, sizeof(s.head), "qcow2",
                IMAGE_UNSAFE, "data file");
}

static void test_verdict_qcow2_v2_has_no_feature_bits(void)
{
        Synth s;

        /* A version 2 header ends at 72: what follows is a header extension (or anything), not a feature
         * field, even when its bits look like one. */
        synth_qcow2(&s, 2);
        put_be64(s.head + 72, UINT64_C(1) << 2);
        assert_verdict("qcow2 v2 with bit 2 set at 72", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);
}

static void test_verdict_qcow2_tables_past_end(void)
{
        Synth s;

        /* The L1 table (1 entry at 0x30000) ends where the image ends: all there. One byte less, and qemu
         * would read the missing entry as zero, a disk with nothing on it. */
        synth_qcow2(&s, 3);
        s.size = 0x30008;
        assert_verdict("qcow2 ending with its L1 table", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);
        s.size = 0x30007;
        assert_verdict(
                "qcow2 cut in its L1 table", &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED, "truncated");

        /* An empty disk has an empty L1 table, which may start right at the end. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 24, 0);
        put_be32(s.head + 36, 0);
        s.size = 0x30000;
        assert_verdict("empty qcow2", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);

        /* The refcount table must start within the image. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 40, 0x20000);
        put_be64(s.head + 48, 0x30000);
        s.size = 0x30000;
        assert_verdict("qcow2 whose refcount table starts at its end", &s, sizeof(s.head), "qcow2",
                IMAGE_UNSUPPORTED, "truncated");
        s.size = 0x30001;
        assert_verdict(
                "qcow2 with a byte of refcount table", &s, sizeof(s.head), "qcow2", IMAGE_SERVABLE, NULL);

        /* Offsets and sizes no file has must not wrap around. */
        synth_qcow2(&s, 3);
        put_be64(s.head + 40, UINT64_MAX - 3);
        assert_verdict("qcow2 with its L1 table at 2^64-4", &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED,
                "truncated");
        synth_qcow2(&s, 3);
        put_be32(s.head + 36, UINT32_C(1) << 29); /* 2^32 bytes of entries: 0 in 32 bits */
        assert_verdict(
                "qcow2 with 2^29 L1 entries", &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED, "truncated");
        synth_qcow2(&s, 3);
        put_be32(s.head + 36, UINT32_MAX);
        assert_verdict(
                "qcow2 with 2^32-1 L1 entries", &s, sizeof(s.head), "qcow2", IMAGE_UNSUPPORTED, "truncated");
        synth_qcow2(&s, 3);
        put_be64(s.head + 48, UINT64_MAX);
        assert_verdict("qcow2 with its refcount table at 2^64-1", &s, sizeof(s.head), "qcow2",
                IMAGE_UNSUPPORTED, "truncated");
}

/* A monolithicSparse vmdk as qemu-img writes one: its header, then its descriptor embedded at 0x200 (a
 * capacity of 0 would make qemu open the extents the descriptor names). */
static void synth_vmdk_sparse(Synth *s, uint64_t capacity)
{
        static const char descriptor[] =
                "# Disk DescriptorFile\nversion=1\nCID=5b3c6a1d\nparentCID=ffffffff\n"
                "createType=\"monolithicSparse\"\n\n# Extent description\n"
                "RW 131072 SPARSE \"disk.vmdk\"\n";

        synth_init(s, 192 * KIB);
        memcpy(s->head, "KDMV", 4);
        put_le32(s->head + 4, 1); /* version */
        put_le32(s->head + 8, 3); /* flags */
        put_le64(s->head + 12, capacity); /* in sectors */
        put_le64(s->head + 20, 128); /* grain size */
        put_le64(s->head + 28, 1); /* descriptor offset, in sectors */
        put_le64(s->head + 36, 20); /* descriptor size */
        memcpy(s->head + 0x200, descriptor, strlen(descriptor));
}

static void test_verdict_vmdk_descriptor_file(void)
{
        static const char text[] = "# Disk DescriptorFile\nversion=1\nCID=1d03a7e4\nparentCID=ffffffff\n"
                                   "createType=\"monolithicFlat\"\n\n# Extent description\n"
                                   "RW 32768 FLAT \"disk-flat.vmdk\" 0\n";
        Synth s;

        synth_init(&s, strlen(text));
        memcpy(s.head, text, strlen(text));
        assert_verdict("vmdk descriptor file", &s, strlen(text), "vmdk", IMAGE_UNSAFE, "extent files");
}

static void test_verdict_vmdk_sparse(void)
{
        Synth s;

        synth_vmdk_sparse(&s, 131072);
        assert_verdict("vmdk sparse", &s, sizeof(s.head), "vmdk", IMAGE_SERVABLE, NULL);
        synth_vmdk_sparse(&s, 1);
        assert_verdict("vmdk sparse of one sector", &s, sizeof(s.head), "vmdk", IMAGE_SERVABLE, NULL);

        /* Capacity 0: qemu takes the disk from the embedded descriptor's extents, files of their own. */
        synth_vmdk_sparse(&s, 0);
        assert_verdict("vmdk sparse of capacity 0", &s, sizeof(s.head), "vmdk", IMAGE_UNSAFE,
                "embedded descriptor");

        /* ESX's COWD header has no such capacity rule. */
        synth_init(&s, 192 * KIB);
        memcpy(s.head, "COWD", 4);
        put_le32(s.head + 4, 1);
        assert_verdict("vmdk COWD", &s, sizeof(s.head), "vmdk", IMAGE_SERVABLE, NULL);
}

static void test_verdict_vmdk_parent_hint(void)
{
        static const char hint[] = "parentFileNameHint=\"base.vmdk\"\n";
        size_t descriptor_end;
        Synth s;

        /* Where qemu-img -b writes it: a line of the embedded descriptor. */
        synth_vmdk_sparse(&s, 131072);
        descriptor_end = strlen((const char *)s.head + 0x200);
        memcpy(s.head + 0x200 + descriptor_end, hint, strlen(hint));
        assert_verdict("vmdk overlay", &s, sizeof(s.head), "vmdk", IMAGE_UNSAFE, "parent");

        /* qemu searches the descriptor's 10 KiB (0x200 to 0x2a00) for it: ending right at 0x2a00, past the 8
         * KiB loopd read before, it still counts. */
        synth_vmdk_sparse(&s, 131072);
        memcpy(s.head + 0x2a00 - strlen("parentFileNameHint"), "parentFileNameHint",
                strlen("parentFileNameHint"));
        assert_verdict("vmdk with the hint at the descriptor's end", &s, sizeof(s.head), "vmdk",
                IMAGE_UNSAFE, "parent");

        /* Anywhere after 0x200 in what loopd reads. */
        synth_vmdk_sparse(&s, 131072);
        memcpy(s.head + sizeof(s.head) - strlen("parentFileNameHint"), "parentFileNameHint",
                strlen("parentFileNameHint"));
        assert_verdict(
                "vmdk with the hint at the head's end", &s, sizeof(s.head), "vmdk", IMAGE_UNSAFE, "parent");

        /* Before 0x200 it is in the binary header, which no one reads as text. */
        synth_vmdk_sparse(&s, 131072);
        memcpy(s.head + 0x100, hint, strlen(hint));
        assert_verdict(
                "vmdk with the hint in its binary header", &s, sizeof(s.head), "vmdk", IMAGE_SERVABLE, NULL);

        /* A COWD image's descriptor area counts too. */
        synth_init(&s, 192 * KIB);
        memcpy(s.head, "COWD", 4);
        memcpy(s.head + 0x400, hint, strlen(hint));
        assert_verdict("vmdk COWD with the hint", &s, sizeof(s.head), "vmdk", IMAGE_UNSAFE, "parent");
}

/* A VirtualBox image header of image_type (1 dynamic, 2 fixed, 3 undo, 4 differencing). */
static void synth_vdi(Synth *s, uint32_t image_type)
{
        static const char text[] = "<<< Oracle VM VirtualBox Disk Image >>>\n";

        synth_init(s, 2 * KIB);
        memcpy(s->head, text, strlen(text));
        put_le32(s->head + 0x40, 0xbeda107f);
        put_le32(s->head + 0x44, 0x00010001); /* version 1.1 */
        put_le32(s->head + 0x48, 0x190); /* header size */
        put_le32(s->head + 0x4c, image_type);
}

static void test_verdict_vdi(void)
{
        Synth s;

        synth_vdi(&s, 1);
        assert_verdict("vdi dynamic", &s, sizeof(s.head), "vdi", IMAGE_SERVABLE, NULL);
        synth_vdi(&s, 2);
        assert_verdict("vdi fixed", &s, sizeof(s.head), "vdi", IMAGE_SERVABLE, NULL);
        synth_vdi(&s, 4);
        assert_verdict("vdi differencing", &s, sizeof(s.head), "vdi", IMAGE_UNSAFE, "parent");
}

/* A VHD footer of disk type (2 fixed, 3 dynamic, 4 differencing) and current size. */
static void synth_vpc_footer(uint8_t *footer, uint32_t type, uint64_t size)
{
        memcpy(footer, "conectix", 8);
        put_be32(footer + 8, 2); /* features */
        put_be32(footer + 12, 0x00010000); /* version */
        put_be64(footer + 16, type == 2 ? UINT64_MAX : 512); /* data offset */
        memcpy(footer + 28, "qem2", 4); /* creator */
        put_be64(footer + 40, size); /* original size */
        put_be64(footer + 48, size); /* current size */
        put_be32(footer + 60, type);
}

/* Where a VHD keeps its footer: a dynamic (or differencing) one copies it to its start, and has it at the
 * end; a fixed one has it only in its last 512 (or 511) bytes. */
typedef enum VpcWhere { VPC_COPY_AT_START, VPC_FOOTER_512, VPC_FOOTER_511 } VpcWhere;

static void synth_vpc(Synth *s, VpcWhere where, uint32_t type, uint64_t size)
{
        synth_init(s, 64 * MIB + 512);
        if (where == VPC_COPY_AT_START) {
                synth_vpc_footer(s->head, type, size);
                memcpy(s->head + 512, "cxsparse", 8);
                synth_vpc_footer(s->tail, type, size);
        } else if (where == VPC_FOOTER_512)
                synth_vpc_footer(s->tail, type, size);
        else
                synth_vpc_footer(s->tail + 1, type, size);
}

static void test_verdict_vpc_differencing(void)
{
        static const struct {
                VpcWhere where;
                const char *name;
        } places[] = {
                { VPC_COPY_AT_START, "with its copy at the start" },
                { VPC_FOOTER_512, "with only its footer at the end" },
                { VPC_FOOTER_511, "with only a 511-byte footer at the end" },
        };
        Synth s;

        synth_vpc(&s, VPC_COPY_AT_START, 3, 64 * MIB);
        assert_verdict("vpc dynamic", &s, sizeof(s.head), "vpc", IMAGE_SERVABLE, NULL);
        synth_vpc(&s, VPC_FOOTER_512, 2, 64 * MIB);
        assert_verdict("vpc fixed", &s, sizeof(s.head), "vpc", IMAGE_SERVABLE, NULL);
        synth_vpc(&s, VPC_FOOTER_511, 2, 64 * MIB);
        assert_verdict("vpc fixed, 511-byte footer", &s, sizeof(s.head), "vpc", IMAGE_SERVABLE, NULL);

        for (size_t i = 0; i < G_N_ELEMENTS(places); i++) {
                g_autofree char *what = g_strdup_printf("vpc differencing %s", places[i].name);

                synth_vpc(&s, places[i].where, 4, 64 * MIB);
                assert_verdict(what, &s, sizeof(s.head), "vpc", IMAGE_UNSAFE, "parent");
        }
}

static void test_verdict_vpc_size_past_2_63(void)
{
        Synth s;

        synth_vpc(&s, VPC_COPY_AT_START, 3, SIZE_2_63);
        assert_verdict("vpc dynamic of 2^63 bytes", &s, sizeof(s.head), "vpc", IMAGE_UNSUPPORTED, "larger");
        synth_vpc(&s, VPC_FOOTER_512, 2, UINT64_MAX);
        assert_verdict("vpc fixed of 2^64-1 bytes", &s, sizeof(s.head), "vpc", IMAGE_UNSUPPORTED, "larger");
        synth_vpc(&s, VPC_FOOTER_511, 2, SIZE_2_63);
        assert_verdict(
                "vpc fixed (511) of 2^63 bytes", &s, sizeof(s.head), "vpc", IMAGE_UNSUPPORTED, "larger");
        synth_vpc(&s, VPC_COPY_AT_START, 3, SIZE_2_63 - 1);
        assert_verdict("vpc dynamic of 2^63-1 bytes", &s, sizeof(s.head), "vpc", IMAGE_SERVABLE, NULL);
}

static void test_verdict_vhdx(void)
{
        Synth s;

        /* qemu refuses differencing vhdx images itself: loopd has no rule, and must not invent a reason. */
        synth_init(&s, 4 * MIB);
        memcpy(s.head, "vhdxfile", 8);
        assert_verdict("vhdx", &s, sizeof(s.head), "vhdx", IMAGE_SERVABLE, NULL);
}

/* A header cut off before the field a rule reads: the rule does not apply, qemu-storage-daemon refuses the
 * truncated image with its own words. One byte more and the field is there: the rule applies again. */
static void test_verdict_truncated_header(void)
{
        Synth s;

        synth_qcow2(&s, 3);
        synth_qcow2_backing(&s, "base.qcow2");
        assert_verdict("qcow2 overlay, 8 bytes", &s, 8, "qcow2", IMAGE_SERVABLE, NULL);
        assert_verdict("qcow2 overlay, 71 bytes", &s, 71, "qcow2", IMAGE_SERVABLE, NULL);
        assert_verdict("qcow2 overlay, 72 bytes", &s, 72, "qcow2", IMAGE_UNSAFE, "backing file");

        synth_qcow2(&s, 3);
        put_be32(s.head + 32, 2);
        assert_verdict("encrypted qcow2, 35 bytes", &s, 35, "qcow2", IMAGE_SERVABLE, NULL);

        synth_qcow2(&s, 3);
        put_be64(s.head + 72, UINT64_C(1) << 2);
        assert_verdict("qcow2 with a data file, 79 bytes", &s, 79, "qcow2", IMAGE_SERVABLE, NULL);
        assert_verdict("qcow2 with a data file, 80 bytes", &s, 80, "qcow2", IMAGE_UNSAFE, "data file");

        synth_vmdk_sparse(&s, 0);
        assert_verdict("vmdk of capacity 0, 19 bytes", &s, 19, "vmdk", IMAGE_SERVABLE, NULL);
        assert_verdict("vmdk of capacity 0, 20 bytes", &s, 20, "vmdk", IMAGE_UNSAFE, "embedded descriptor");

        synth_vmdk_sparse(&s, 131072);
        memcpy(s.head + 0x200, "parentFileNameHint", strlen("parentFileNameHint"));
        assert_verdict("vmdk overlay, hint cut", &s, 0x200 + strlen("parentFileNameHint") - 1, "vmdk",
                IMAGE_SERVABLE, NULL);
        assert_verdict("vmdk overlay, hint whole", &s, 0x200 + strlen("parentFileNameHint"), "vmdk",
                IMAGE_UNSAFE, "parent");

        synth_vdi(&s, 4);
        assert_verdict("vdi differencing, 0x4f bytes", &s, 0x4f, "vdi", IMAGE_SERVABLE, NULL);
        assert_verdict("vdi differencing, 0x50 bytes", &s, 0x50, "vdi", IMAGE_UNSAFE, "parent");

        synth_vpc(&s, VPC_COPY_AT_START, 4, 64 * MIB);
        memset(s.tail, 0, sizeof(s.tail)); /* an image this short has no other footer */
        assert_verdict("vpc differencing, 63 bytes", &s, 63, "vpc", IMAGE_SERVABLE, NULL);
        assert_verdict("vpc differencing, 64 bytes", &s, 64, "vpc", IMAGE_UNSAFE, "parent");
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
        static const char *const magics[] = { "QFI\xfb", "KDMV", "COWD", "conectix" };
        g_autoptr(GRand) rand = g_rand_new_with_seed(4242);
        static uint8_t head[IMAGE_HEAD_SIZE], tail[512];

        /* No assertion on which result: it must only return, with a sane sector size and a sane verdict. */
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
                /* And the virtual-disk formats, whose random headers get a verdict. */
                if (i % 5 == 0)
                        memcpy(head, magics[(i / 5) % G_N_ELEMENTS(magics)],
                                strlen(magics[(i / 5) % G_N_ELEMENTS(magics)]));
                if (i % 11 == 0)
                        put_le32(head + 0x40, 0xbeda107f);

                r = image_probe_buffer(head, hs, tail, ts, size, &p);
                g_assert_true(r == 0 || r == -ENOTUNIQ);
                if (r == 0 && !p.format)
                        g_assert_true(p.sector_size == 512 || p.sector_size == 1024 ||
                                p.sector_size == 2048 || p.sector_size == 4096);
                /* A raw image has no verdict; a refusal always says why, and only a refusal does. */
                if (r == 0 && !p.format)
                        g_assert_cmpint(p.verdict, ==, IMAGE_SERVABLE);
                if (r == 0) {
                        g_assert_true(p.verdict == IMAGE_SERVABLE || p.verdict == IMAGE_UNSAFE ||
                                p.verdict == IMAGE_UNSUPPORTED);
                        g_assert_true((p.reason != NULL) == (p.verdict != IMAGE_SERVABLE));
                }
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
        /* qemu-img's format names are the names image_probe() gives (the export's driver option). */
        static const char *const formats[] = { "qcow2", "vmdk", "vdi", "vpc", "vhdx" };
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img");

        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        dir = test_tmpdir_new();
        for (size_t i = 0; i < G_N_ELEMENTS(formats); i++) {
                g_autofree char *path = g_strdup_printf("%s/disk.%s", dir, formats[i]);
                ImageProbe p = {};

                g_free(test_sh("qemu-img create -q -f %s '%s' 64M", formats[i], path));
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpstr(p.format, ==, formats[i]);
        }

        /* A fixed-size VHD is raw data plus a footer at the end. */
        {
                g_autofree char *path = g_strdup_printf("%s/fixed.vhd", dir);
                ImageProbe p = {};

                g_free(test_sh("qemu-img create -q -f vpc -o subformat=fixed '%s' 16M", path));
                probe_file(path, 0, 0, &p, 0);
                g_assert_cmpstr(p.format, ==, "vpc");
        }
        test_tmpdir_remove(dir);
}

/* What qemu-img info (the oracle) says about an image: whether it refers to another file (a backing file, a
 * data file, a vmdk extent that is not the image itself) and whether it is encrypted. */
static ImageVerdict oracle_qemu_verdict(const char *dir, const char *name, char **ret_why)
{
        g_autofree char *json = test_sh("cd '%s' && qemu-img info -U --output=json '%s'", dir, name);
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) error = NULL;
        JsonObject *info, *specific, *data;

        g_assert_true(json_parser_load_from_data(parser, json, -1, &error));
        info = json_node_get_object(json_parser_get_root(parser));
        specific = json_object_has_member(info, "format-specific")
                ? json_object_get_object_member(info, "format-specific")
                : NULL;
        data = specific && json_object_has_member(specific, "data")
                ? json_object_get_object_member(specific, "data")
                : NULL;

        if (json_object_has_member(info, "backing-filename")) {
                *ret_why = g_strdup_printf(
                        "backing file %s", json_object_get_string_member(info, "backing-filename"));
                return IMAGE_UNSAFE;
        }
        if (data && json_object_has_member(data, "data-file")) {
                *ret_why = g_strdup_printf("data file %s", json_object_get_string_member(data, "data-file"));
                return IMAGE_UNSAFE;
        }
        if (data && json_object_has_member(data, "extents")) {
                JsonArray *extents = json_object_get_array_member(data, "extents");

                for (guint i = 0; i < json_array_get_length(extents); i++) {
                        const char *file = json_object_get_string_member(
                                json_array_get_object_element(extents, i), "filename");
                        g_autofree char *base = g_path_get_basename(file);

                        if (!g_str_equal(base, name)) {
                                *ret_why = g_strdup_printf("extent %s", file);
                                return IMAGE_UNSAFE;
                        }
                }
        }
        if (json_object_has_member(info, "encrypted") && json_object_get_boolean_member(info, "encrypted")) {
                *ret_why = g_strdup("encrypted");
                return IMAGE_UNSUPPORTED;
        }
        *ret_why = g_strdup("nothing");
        return IMAGE_SERVABLE;
}

static void test_file_qemu_verdicts(void)
{
        /* Made with qemu-img in one directory, in this order (later ones use earlier ones). */
        static const struct {
                const char *name, *create, *format;
                ImageVerdict verdict;
                const char *reason_has;
        } images[] = {
                { "base.qcow2", "qemu-img create -q -f qcow2 base.qcow2 16M", "qcow2", IMAGE_SERVABLE,
                        NULL },
                { "v2.qcow2", "qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M", "qcow2",
                        IMAGE_SERVABLE, NULL },
                /* Empty disks: their empty L1 tables start right at their ends. */
                { "empty.qcow2", "qemu-img create -q -f qcow2 empty.qcow2 0", "qcow2", IMAGE_SERVABLE,
                        NULL },
                { "empty-512.qcow2", "qemu-img create -q -f qcow2 -o cluster_size=512 empty-512.qcow2 0",
                        "qcow2", IMAGE_SERVABLE, NULL },
                { "compressed.qcow2",
                        "qemu-img create -q -f raw compressed.raw 1M && "
                        "qemu-img convert -c -O qcow2 compressed.raw compressed.qcow2",
                        "qcow2", IMAGE_SERVABLE, NULL },
                { "preallocated.qcow2",
                        "qemu-img create -q -f qcow2 -o preallocation=metadata preallocated.qcow2 16M",
                        "qcow2", IMAGE_SERVABLE, NULL },
                { "overlay.qcow2", "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2",
                        "qcow2", IMAGE_UNSAFE, "backing file" },
                { "overlay-v2.qcow2",
                        "qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 overlay-v2.qcow2",
                        "qcow2", IMAGE_UNSAFE, "backing file" },
                /* The same overlay, its backing file dropped from the header: the header decides. */
                { "rebased.qcow2",
                        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 rebased.qcow2 && "
                        "qemu-img rebase -q -u -b '' rebased.qcow2",
                        "qcow2", IMAGE_SERVABLE, NULL },
                { "datafile.qcow2",
                        "qemu-img create -q -f qcow2 -o data_file=datafile.raw,data_file_raw=on datafile.qcow2 16M",
                        "qcow2", IMAGE_UNSAFE, "data file" },
                { "encrypted.qcow2", QEMU_IMG_ENCRYPTED_QCOW2("encrypted.qcow2"), "qcow2", IMAGE_UNSUPPORTED,
                        "encrypted" },
                { "base.vmdk", "qemu-img create -q -f vmdk base.vmdk 16M", "vmdk", IMAGE_SERVABLE, NULL },
                { "stream.vmdk", "qemu-img create -q -f vmdk -o subformat=streamOptimized stream.vmdk 16M",
                        "vmdk", IMAGE_SERVABLE, NULL },
                { "overlay.vmdk", "qemu-img create -q -f vmdk -b base.vmdk -F vmdk overlay.vmdk", "vmdk",
                        IMAGE_UNSAFE, "parent" },
                { "flat.vmdk", "qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 16M",
                        "vmdk", IMAGE_UNSAFE, "extent files" },
                { "split.vmdk",
                        "qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 16M",
                        "vmdk", IMAGE_UNSAFE, "extent files" },
                { "dynamic.vdi", "qemu-img create -q -f vdi dynamic.vdi 16M", "vdi", IMAGE_SERVABLE, NULL },
                { "static.vdi", "qemu-img create -q -f vdi -o static=on static.vdi 16M", "vdi",
                        IMAGE_SERVABLE, NULL },
                { "dynamic.vhd", "qemu-img create -q -f vpc dynamic.vhd 16M", "vpc", IMAGE_SERVABLE, NULL },
                { "fixed.vhd", "qemu-img create -q -f vpc -o subformat=fixed fixed.vhd 16M", "vpc",
                        IMAGE_SERVABLE, NULL },
                { "dynamic.vhdx", "qemu-img create -q -f vhdx dynamic.vhdx 16M", "vhdx", IMAGE_SERVABLE,
                        NULL },
                { "fixed.vhdx", "qemu-img create -q -f vhdx -o subformat=fixed fixed.vhdx 16M", "vhdx",
                        IMAGE_SERVABLE, NULL },
        };
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img");

        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        dir = test_tmpdir_new();
        for (size_t i = 0; i < G_N_ELEMENTS(images); i++) {
                g_autofree char *path = g_build_filename(dir, images[i].name, NULL), *why = NULL;
                ImageVerdict oracle;
                ImageProbe p = {};

                g_free(test_sh("cd '%s' && %s", dir, images[i].create));
                /* The image is what the table says, in qemu's own eyes: else the test proves nothing. */
                oracle = oracle_qemu_verdict(dir, images[i].name, &why);
                if (oracle != images[i].verdict)
                        g_test_fail_printf("%s: qemu-img info finds %s (%s), the test expects %s",
                                images[i].name, why, verdict_name(oracle), verdict_name(images[i].verdict));
                probe_file(path, 0, 0, &p, 0);
                check_verdict(images[i].name, &p, images[i].format, images[i].verdict, images[i].reason_has);
        }
        test_tmpdir_remove(dir);
}

static void test_file_truncated_overlay(void)
{
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img"), *out = NULL;
        ImageProbe p = {};

        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        dir = test_tmpdir_new();
        /* An overlay's first 64 bytes: the backing file's offset is there, the rest of the header is not.
         * loopd has no verdict on it; qemu refuses it (the oracle), as qemu-storage-daemon will. */
        g_free(test_sh("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 16M && "
                       "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2 && "
                       "head -c 64 overlay.qcow2 >cut.qcow2",
                dir));
        g_autofree char *path = g_build_filename(dir, "cut.qcow2", NULL);
        probe_file(path, 0, 0, &p, 0);
        check_verdict("overlay cut at 64 bytes", &p, "qcow2", IMAGE_SERVABLE, NULL);
        g_assert_cmpint(test_sh_status(&out, "qemu-img info -f qcow2 '%s' 2>&1", path), !=, 0);
        test_tmpdir_remove(dir);
}

static void test_file_qcow2_cut_before_tables(void)
{
        g_autofree char *dir = NULL, *qemu_img = g_find_program_in_path("qemu-img");
        g_autofree char *whole = NULL, *cut_64k = NULL, *cut_l1 = NULL;
        ImageProbe p = {};

        if (!qemu_img) {
                g_test_skip("qemu-img is not installed");
                return;
        }
        dir = test_tmpdir_new();
        whole = g_build_filename(dir, "whole.qcow2", NULL);
        cut_64k = g_build_filename(dir, "cut-64k.qcow2", NULL);
        cut_l1 = g_build_filename(dir, "cut-l1.qcow2", NULL);
        g_free(test_sh("qemu-img create -q -f qcow2 '%s' 16M", whole));
        g_free(test_sh(
                "head -c 65536 '%s' >'%s' && head -c 196608 '%s' >'%s'", whole, cut_64k, whole, cut_l1));

        /* The oracle, qemu-img check: the whole image is clean (0), the one cut after its header cluster,
         * both tables gone, has errors (2). */
        g_assert_cmpint(test_sh_status(NULL, "qemu-img check -q -f qcow2 '%s' 2>&1", whole), ==, 0);
        g_assert_cmpint(test_sh_status(NULL, "qemu-img check -q -f qcow2 '%s' 2>&1", cut_64k), ==, 2);
        probe_file(whole, 0, 0, &p, 0);
        check_verdict("whole qcow2", &p, "qcow2", IMAGE_SERVABLE, NULL);
        probe_file(cut_64k, 0, 0, &p, 0);
        check_verdict("qcow2 cut at 64 KiB", &p, "qcow2", IMAGE_UNSUPPORTED, "truncated");

        /* Cut right before its L1 table: qemu-img check lets a table this short off (its entries read as
         * zeros), loopd does not serve a disk whose L1 table is missing. */
        probe_file(cut_l1, 0, 0, &p, 0);
        check_verdict("qcow2 cut before its L1 table", &p, "qcow2", IMAGE_UNSUPPORTED, "truncated");
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

        g_test_add_func("/image/check/refuses-foreign-answers", test_check_refuses_foreign_answers);
        g_test_add_func("/image/format/qcow2", test_format_qcow2);
        g_test_add_func("/image/format/vmdk-sparse", test_format_vmdk_sparse);
        g_test_add_func("/image/format/vmdk-descriptor", test_format_vmdk_descriptor);
        g_test_add_func("/image/format/vdi", test_format_vdi);
        g_test_add_func("/image/format/vhd-dynamic", test_format_vhd_dynamic);
        g_test_add_func("/image/format/vhd-fixed-footer", test_format_vhd_fixed);
        g_test_add_func("/image/format/vhdx", test_format_vhdx);
        g_test_add_func("/image/format/signature-elsewhere-is-raw", test_format_signature_elsewhere_is_raw);

        g_test_add_func("/image/verdict/qcow2-plain-servable", test_verdict_qcow2_plain);
        g_test_add_func("/image/verdict/qcow2-backing-file-unsafe", test_verdict_qcow2_backing_file);
        g_test_add_func("/image/verdict/qcow2-encrypted-unsupported", test_verdict_qcow2_encrypted);
        g_test_add_func(
                "/image/verdict/qcow2-size-past-2^63-unsupported", test_verdict_qcow2_size_past_2_63);
        g_test_add_func(
                "/image/verdict/qcow2-external-data-file-unsafe", test_verdict_qcow2_external_data_file);
        g_test_add_func(
                "/image/verdict/qcow2-v2-has-no-feature-bits", test_verdict_qcow2_v2_has_no_feature_bits);
        g_test_add_func(
                "/image/verdict/qcow2-tables-past-end-unsupported", test_verdict_qcow2_tables_past_end);
        g_test_add_func("/image/verdict/vmdk-descriptor-file-unsafe", test_verdict_vmdk_descriptor_file);
        g_test_add_func("/image/verdict/vmdk-sparse-capacity-0-unsafe", test_verdict_vmdk_sparse);
        g_test_add_func("/image/verdict/vmdk-parent-hint-unsafe", test_verdict_vmdk_parent_hint);
        g_test_add_func("/image/verdict/vdi-differencing-unsafe", test_verdict_vdi);
        g_test_add_func("/image/verdict/vpc-differencing-unsafe", test_verdict_vpc_differencing);
        g_test_add_func("/image/verdict/vpc-size-past-2^63-unsupported", test_verdict_vpc_size_past_2_63);
        g_test_add_func("/image/verdict/vhdx-servable", test_verdict_vhdx);
        g_test_add_func("/image/verdict/truncated-header-left-to-qemu", test_verdict_truncated_header);

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
        g_test_add_func("/image/file/qemu-verdicts", test_file_qemu_verdicts);
        g_test_add_func("/image/file/truncated-overlay-left-to-qemu", test_file_truncated_overlay);
        g_test_add_func("/image/file/qcow2-cut-before-tables", test_file_qcow2_cut_before_tables);
        g_test_add_func("/image/file/sfdisk-sector-sizes", test_file_sfdisk_sector_sizes);
        g_test_add_func("/image/file/offset-and-size", test_file_offset_and_size);
        g_test_add_func("/image/file/ambiguous-gpt", test_file_ambiguous);

        return g_test_run();
}
