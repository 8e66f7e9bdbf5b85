/* loop-hostile.c: the loop suite's hostile partition tables, the device node never written on close, the
 * listing against losetup and the name parser. */
#include "test-loop.h"

#include <linux/major.h>

/* Writes one raw MBR entry with dd: the table is the oracle, since no tool writes a broken one. */
static void write_mbr_entry(const char *img, unsigned slot, unsigned type, uint32_t start, uint32_t count)
{
        g_free(test_sh(
                "printf '\\000\\000\\000\\000\\%03o\\000\\000\\000\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o' | "
                "dd of='%s' bs=1 seek=%u conv=notrunc status=none; "
                "printf '\\125\\252' | dd of='%s' bs=1 seek=510 conv=notrunc status=none",
                type, start & 0xff, (start >> 8) & 0xff, (start >> 16) & 0xff, start >> 24, count & 0xff,
                (count >> 8) & 0xff, (count >> 16) & 0xff, count >> 24, img, 446 + 16 * slot, img));
}

void test_hostile_mbr(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL;
        g_autofree KernelPartition *parts = NULL;
        size_t n = 0;
        LoopInfo *info;
        const uint64_t size = 64 * MIB, sectors = size / 512;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "hostile.img");
        image_create(img, size);
        write_mbr_entry(img, 0, 0x83, 2048, 8192); /* fine */
        write_mbr_entry(img, 1, 0x83, (uint32_t)sectors + 100, 2048); /* starts past the end: dropped */
        write_mbr_entry(img, 2, 0x83, (uint32_t)sectors - 2048, 65536); /* runs past the end: truncated */
        write_mbr_entry(img, 3, 0x83, 4096, 8192); /* overlaps 1: skipped */

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpuint(parts[0].number, ==, 1);
        g_assert_cmpuint(parts[0].start, ==, 2048 * 512);
        g_assert_cmpuint(parts[0].size, ==, 8192 * 512);
        g_assert_cmpuint(parts[1].number, ==, 3);
        g_assert_cmpuint(parts[1].start, ==, (sectors - 2048) * 512);
        g_assert_cmpuint(parts[1].size, ==, 2048 * 512);

        /* Probing the garbage is harmless. */
        {
                PartitionInfo *list = NULL;
                size_t nl = 0;
                probe_ok(img, info, &list, &nl);
                g_assert_cmpuint(nl, ==, 2);
                partition_info_array_free(list, nl);
        }
        detach_ok(f, info);
}

void test_hostile_random(Fixture *f, gconstpointer data)
{
        REQUIRE_PRIVILEGES(f);

        /* Random data with partition-table signatures sprinkled in: attach, probe and detach must survive.
         */
        for (unsigned i = 0; i < 8; i++) {
                g_autofree char *img = g_strdup_printf("%s/random%u.img", f->dir, i);
                PartitionInfo *list = NULL;
                size_t n = 0;
                LoopInfo *info;

                g_free(test_sh("head -c 1M /dev/urandom > '%s' && truncate -s 8M '%s'", img, img));
                if (i % 2 == 0)
                        g_free(test_sh(
                                "printf '\\125\\252' | dd of='%s' bs=1 seek=510 conv=notrunc status=none",
                                img));
                if (i % 4 == 1)
                        g_free(test_sh(
                                "printf 'EFI PART' | dd of='%s' bs=1 seek=512 conv=notrunc status=none",
                                img));
                info = attach_ok(img, (LoopConfig){ .sector_size = 512, .partition_scan = true });
                probe_ok(img, info, &list, &n);
                partition_info_array_free(list, n);
                detach_ok(f, info);
        }
}

/* Rewrites the GPT header at offset to ask for n entries, with a valid header CRC (or breaks its signature).
 */
static void patch_gpt_header(const char *img, uint64_t offset, uint32_t entries, gboolean break_signature)
{
        uint8_t h[512];
        uint32_t hs, crc;
        int fd = open(img, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, h, sizeof(h), (off_t)offset), ==, sizeof(h));
        g_assert_cmpint(memcmp(h, "EFI PART", 8), ==, 0);
        if (break_signature)
                h[0] = 'X';
        hs = h[12] | h[13] << 8 | (uint32_t)h[14] << 16 | (uint32_t)h[15] << 24;
        g_assert_cmpuint(hs, >=, 92);
        g_assert_cmpuint(hs, <=, sizeof(h));
        for (int i = 0; i < 4; i++)
                h[80 + i] = (entries >> (8 * i)) & 0xff;
        memset(h + 16, 0, 4);
        crc = test_crc32(h, hs);
        for (int i = 0; i < 4; i++)
                h[16 + i] = (crc >> (8 * i)) & 0xff;
        g_assert_cmpint(pwrite(fd, h, sizeof(h), (off_t)offset), ==, sizeof(h));
        close(fd);
}

void test_hostile_gpt_entry_array(Fixture *f, gconstpointer data)
{
        REQUIRE_PRIVILEGES(f);

        /* A GPT header (valid CRC) asking for 512Ki entries of 128 bytes, 64 MiB (up to 4 GiB are possible):
         * libblkid allocates and reads all of it before any check, and with 16Mi entries takes 2 GiB and
         * many seconds. The kernel's parser refuses arrays over 4 MiB; we refuse the whole table (libblkid
         * cannot be told to skip one header): no partitions, quickly and without the memory. The size here
         * is kept small so that a running udevd, whose libblkid has no such guard, is not stalled by it.
         * First the primary header, then the backup one behind a broken primary. */
        for (unsigned variant = 0; variant < 2; variant++) {
                g_autofree char *img = g_strdup_printf("%s/hostile-gpt%u.img", f->dir, variant);
                g_autofree KernelPartition *parts = NULL;
                PartitionInfo *list = NULL;
                size_t n = 99, nl = 0;
                struct rusage before, after;
                gint64 t0, elapsed;
                LoopInfo *info;

                image_create(img, 4 * GIB);
                image_sfdisk(img, "label: gpt\ntype=L\n", 0);
                if (variant == 0)
                        patch_gpt_header(img, 512, 0x00080000, FALSE);
                else {
                        patch_gpt_header(img, 4 * GIB - 512, 0x00080000, FALSE);
                        patch_gpt_header(img, 512, 128, TRUE);
                }

                g_assert_cmpint(getrusage(RUSAGE_SELF, &before), ==, 0);
                t0 = g_get_monotonic_time();
                info = attach_ok(img, (LoopConfig){ .sector_size = 512, .partition_scan = true });
                g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
                g_assert_cmpuint(n, ==, 0);
                probe_ok(img, info, &list, &nl);
                partition_info_array_free(list, nl);
                elapsed = g_get_monotonic_time() - t0;
                g_assert_cmpint(getrusage(RUSAGE_SELF, &after), ==, 0);
                g_test_message("variant %u: %" G_GINT64_FORMAT " us, max RSS %ld -> %ld KiB", variant,
                        elapsed, before.ru_maxrss, after.ru_maxrss);
                g_assert_cmpint(elapsed, <, 3 * G_USEC_PER_SEC);
                g_assert_cmpint(after.ru_maxrss - before.ru_maxrss, <, 256 * 1024);
                detach_ok(f, info);
        }
}

void test_no_close_write_on_node(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *name = NULL;
        g_autofree KernelPartition *parts = NULL;
        char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
        size_t n = 0;
        LoopInfo *info;
        ssize_t k;
        int ifd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "inotify.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);

        /* udevd re-reads the partition table (BLKRRPART) whenever a writable fd of /dev/loopN is closed,
         * which on a kernel without partition parsers drops our BLKPG partitions. The attach must never do
         * that. */
        ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        g_assert_cmpint(ifd, >=, 0);
        g_assert_cmpint(inotify_add_watch(ifd, "/dev", IN_CLOSE_WRITE), >=, 0);

        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        name = g_strdup_printf("loop%u", info->number);

        while ((k = read(ifd, buf, sizeof(buf))) > 0)
                for (char *p = buf; p < buf + k;) {
                        struct inotify_event *e = (struct inotify_event *)p;
                        if (e->len > 0 && g_str_equal(e->name, name))
                                g_test_message("IN_CLOSE_WRITE on /dev/%s", e->name);
                        g_assert_false(e->len > 0 && g_str_equal(e->name, name));
                        p += sizeof(struct inotify_event) + e->len;
                }
        close(ifd);

        /* What udevd does on such a close, done by hand: the partitions would be gone. Not done here; but
         * the partitions must still be there. */
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        detach_ok(f, info);
}

/* loop_get_info() of mine (sysfs says which device it is, the device's ioctls the rest) says what the
 * sysfs-only listing, losetup and the device say, field by field. */
static void assert_info_matches_listing(const LoopInfo *mine)
{
        g_autofree char *dev = device_path(mine);
        g_autoptr(JsonObject) row = NULL;
        JsonObject *lo = losetup_of(mine, &row);
        LoopInfo **infos = NULL, *listed = NULL, *got = NULL;
        size_t n = 0;
        struct stat st;

        g_assert_cmpint(loop_list(&infos, &n), ==, 0);
        for (size_t i = 0; i < n; i++)
                if (infos[i]->number == mine->number)
                        listed = infos[i];
        g_assert_nonnull(listed);
        g_assert_cmpint(loop_get_info(mine->number, &got), ==, 0);

        g_assert_cmpuint(got->number, ==, listed->number);
        g_assert_cmpuint(got->diskseq, ==, mine->diskseq);
        g_assert_cmpstr(got->backing_file, ==, json_object_get_string_member(lo, "back-file"));
        g_assert_cmpuint(got->devnum, ==, listed->devnum);
        g_assert_cmpuint(got->diskseq, ==, listed->diskseq);
        g_assert_cmpstr(got->backing_file, ==, listed->backing_file);
        g_assert_cmpuint(got->offset, ==, listed->offset);
        g_assert_cmpuint(got->size_limit, ==, listed->size_limit);
        g_assert_cmpuint(got->size, ==, listed->size);
        g_assert_cmpuint(got->sector_size, ==, listed->sector_size);
        g_assert_cmpuint(got->read_only, ==, listed->read_only);
        g_assert_cmpuint(got->autoclear, ==, listed->autoclear);
        g_assert_cmpuint(got->partscan, ==, listed->partscan);
        g_assert_cmpuint(got->direct_io, ==, listed->direct_io);

        g_assert_cmpuint(got->offset, ==, json_u64(lo, "offset"));
        g_assert_cmpuint(got->size_limit, ==, json_u64(lo, "sizelimit"));
        g_assert_cmpuint(got->sector_size, ==, json_u64(lo, "log-sec"));
        g_assert_cmpuint(got->read_only, ==, json_u64(lo, "ro"));
        g_assert_cmpuint(got->autoclear, ==, json_u64(lo, "autoclear"));
        g_assert_cmpuint(got->partscan, ==, json_u64(lo, "partscan"));
        g_assert_cmpuint(got->direct_io, ==, json_u64(lo, "dio"));
        g_assert_cmpuint(got->size, ==, oracle_getsize64(dev));
        /* What only the backing file's filesystem says, asked in a child. */
        g_assert_cmpint(stat(got->backing_file, &st), ==, 0);
        g_assert_cmpint(
                loop_backing_is(got->number, got->diskseq, st.st_dev, st.st_ino, ASK_TIMEOUT_USEC), ==, 1);
        g_assert_cmpint(
                loop_backing_is(got->number, got->diskseq, st.st_dev, st.st_ino + 1, ASK_TIMEOUT_USEC), ==,
                0);
        g_assert_cmpint(
                loop_backing_is(got->number, got->diskseq + 1000, st.st_dev, st.st_ino, ASK_TIMEOUT_USEC),
                ==, -ESTALE);

        loop_info_free(got);
        loop_info_array_free(infos, n);
}

void test_list_and_info(Fixture *f, gconstpointer data)
{
        g_autofree char *a = NULL, *b = NULL;
        LoopInfo *ia, *ib, **infos = NULL;
        size_t n = 0;

        REQUIRE_PRIVILEGES(f);
        a = fixture_path(f, "list-a.img");
        b = fixture_path(f, "list-b.img");
        image_create(a, 16 * MIB);
        image_create(b, 32 * MIB);
        ia = attach_ok(a, (LoopConfig){ .partition_scan = true });
        ib = attach_ok(b, (LoopConfig){ .offset = 1 * MIB, .size_limit = 8 * MIB, .sector_size = 4096 });

        g_assert_cmpint(loop_list(&infos, &n), ==, 0);
        for (size_t i = 1; i < n; i++)
                g_assert_cmpuint(infos[i - 1]->number, <, infos[i]->number);

        assert_info_matches_listing(ia);
        assert_info_matches_listing(ib);
        g_assert_cmpuint(ib->size, ==, 8 * MIB);
        g_assert_cmpuint(ib->sector_size, ==, 4096);

        /* The same list again and again (sysfs only). How long it takes is bench/'s to measure (a timed
         * assertion failed here once a thousand unbound devices were left on the machine): the time is only
         * reported. */
        {
                gint64 t0 = g_get_monotonic_time();
                for (unsigned i = 0; i < 10; i++) {
                        LoopInfo **again = NULL;
                        size_t m = 0;
                        g_assert_cmpint(loop_list(&again, &m), ==, 0);
                        g_assert_cmpuint(m, >=, 2);
                        loop_info_array_free(again, m);
                }
                g_test_message("loop_list: %" G_GINT64_FORMAT " us for %zu devices",
                        (g_get_monotonic_time() - t0) / 10, n);
        }
        loop_info_array_free(infos, n);

        detach_ok(f, ia);
        detach_ok(f, ib);
}

void test_parse_name(void)
{
        unsigned n = 99;

        g_assert_cmpint(loop_parse_name("loop0", &n), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        g_assert_cmpint(loop_parse_name("/dev/loop17", &n), ==, 0);
        g_assert_cmpuint(n, ==, 17);
        g_assert_cmpint(loop_parse_name("loop", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop1p2", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/dev/loop1p2", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/dev/../dev/loop1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("/tmp/loop1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop01", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop-1", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("loop99999999999", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("vda", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name("", &n), ==, -EINVAL);
        g_assert_cmpint(loop_parse_name(NULL, &n), ==, -EINVAL);
}

/* fls(max_part), as the loop driver computes its part_shift. */
void test_part_shift(void)
{
        static const struct {
                uint64_t max_part;
                int shift;
        } cases[] = {
                { 0, 0 },
                { 1, 1 },
                { 2, 2 },
                { 3, 2 },
                { 4, 3 },
                { 7, 3 },
                { 8, 4 },
                { 15, 4 },
                { 255, 8 },
                { (1u << 20) - 1, 20 },
                { 1u << 20, -ERANGE },
                { UINT64_MAX, -ERANGE },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
                g_assert_cmpint(loop_part_shift_of(cases[i].max_part), ==, cases[i].shift);
}

/* The flags both ways: offset, size limit and 4096-byte sectors; read-only; partition scan; autoclear. */
void test_info_matches_listing(Fixture *f, gconstpointer data)
{
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *dev = NULL;
        LoopInfo *ia, *ib, *ic = NULL;
        int hold, shift;

        REQUIRE_PRIVILEGES(f);
        a = fixture_path(f, "info-a.img");
        b = fixture_path(f, "info-b.img");
        c = fixture_path(f, "info-c.img");
        image_create(a, 16 * MIB);
        image_create(b, 32 * MIB);
        image_create(c, 8 * MIB);
        ia = attach_ok(a, (LoopConfig){ .partition_scan = true });
        ib = attach_ok(b, (LoopConfig){ .offset = 1 * MIB, .size_limit = 8 * MIB, .sector_size = 4096 });
        g_assert_cmpint(attach_path(c, O_RDONLY, (LoopConfig){ .read_only = true }, &ic), ==, 0);

        assert_info_matches_listing(ia);
        assert_info_matches_listing(ib);
        assert_info_matches_listing(ic);
        g_assert_cmpuint(ib->size, ==, 8 * MIB);
        g_assert_cmpuint(ib->sector_size, ==, 4096);
        g_assert_true(ic->read_only);
        /* loopN's minor is N << part_shift: the watcher finds a device by its devnum in one look. */
        shift = loop_part_shift();
        g_assert_cmpint(shift, >=, 0);
        for (const LoopInfo *const *i = (const LoopInfo *const[]){ ia, ib, ic, NULL }; *i; i++)
                g_assert_cmpuint((*i)->devnum, ==, makedev(LOOP_MAJOR, (*i)->number << shift));

        /* Autoclear, while something holds the device (else it would go at once). */
        dev = device_path(ia);
        hold = open(dev, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(hold, >=, 0);
        g_assert_cmpint(loop_set_autoclear(ia->number, ia->diskseq, true, ASK_TIMEOUT_USEC), ==, 0);
        assert_info_matches_listing(ia);
        g_assert_cmpint(loop_set_autoclear(ia->number, ia->diskseq, false, ASK_TIMEOUT_USEC), ==, 0);
        close(hold);

        detach_ok(f, ia);
        detach_ok(f, ib);
        detach_ok(f, ic);
}
