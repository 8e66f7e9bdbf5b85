/* attach-options.c: the attach suite's options (offset, size limit, read-only, sparse), the virtual disks it
 * refuses, and listings. */
#include "test-attach.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Options */

static bool read_bytes(const char *path, guint64 offset, void *buf, size_t n)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t r;

        if (fd < 0)
                return false;
        r = pread(fd, buf, n, (off_t)offset);
        close(fd);
        return r == (ssize_t)n;
}

static void check_offset_device(
        Harness *h, const char *device, const char *image, guint64 offset, guint64 limit)
{
        g_autofree char *name = basename_of(device);
        g_autofree guint8 *want = g_malloc(MiB), *got = g_malloc(MiB);
        g_autoptr(JsonObject) losetup = oracle_losetup(device);

        g_assert_nonnull(losetup);
        if (losetup) {
                g_assert_cmpint(json_object_get_int_member(losetup, "offset"), ==, offset);
                g_assert_cmpint(json_object_get_int_member(losetup, "sizelimit"), ==, limit);
        }
        g_assert_cmpuint(sys_u64("/sys/class/block/%s/size", name) * 512, ==, limit);
        g_assert_true(read_bytes(image, offset, want, MiB));
        g_assert_true(read_bytes(device, 0, got, MiB));
        g_assert_true(memcmp(want, got, MiB) == 0);
        /* And the last MiB of the device is the partition's last MiB, not what follows it. */
        g_assert_true(read_bytes(image, offset + limit - MiB, want, MiB));
        g_assert_true(read_bytes(device, limit - MiB, got, MiB));
        g_assert_true(memcmp(want, got, MiB) == 0);
}

void test_offset_size_limit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "two.img");
        g_autofree guint8 *noise = g_malloc(MiB);
        g_autoptr(GRand) rand = g_rand_new();
        int fd;

        image_create(image, 128 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\nsize=32MiB, type=linux\n", 0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonObject *p2 = json_array_get_object_element(
                json_object_get_array_member(json_node_get_object(table), "partitions"), 1);
        guint64 offset = json_object_get_int_member(p2, "start") * 512;
        guint64 limit = json_object_get_int_member(p2, "size") * 512;

        /* Recognisable bytes at both ends of partition 2, different ones just after it. */
        fd = open(image, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        for (guint64 at = 0; at < 3; at++) {
                for (size_t i = 0; i < MiB; i += 4)
                        *(guint32 *)(noise + i) = g_rand_int(rand);
                guint64 where = at == 0 ? offset : at == 1 ? offset + limit - MiB : offset + limit;
                g_assert_cmpint(pwrite(fd, noise, MiB, (off_t)where), ==, (ssize_t)MiB);
        }
        close(fd);

        /* losetup -o / --sizelimit, through loopctl. */
        g_autofree char *s_offset = g_strdup_printf("%" G_GUINT64_FORMAT, offset);
        g_autofree char *s_limit = g_strdup_printf("%" G_GUINT64_FORMAT "MiB", limit / MiB);
        const char *args[] = { "--offset", s_offset, "--size", s_limit, NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                check_offset_device(h, dev1, image, offset, limit);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }

        /* And raw. */
        g_autofree char *dev2 = raw_attach(h, image, O_RDWR,
                g_variant_new_parsed("{'offset': <%t>, 'size-limit': <%t>}", offset, limit));
        if (dev2) {
                check_offset_device(h, dev2, image, offset, limit);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

/* A partitioned disk that starts inside the file (a disk image with a header of its own, or one inside
 * another's partition): attached at its offset, its partitions are its own table's, as on the device, with
 * what they hold; a size limit that cuts the disk short cuts them too. */
void test_disk_at_offset(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *inner = harness_image_path(h, "inner.img");
        g_autofree char *image = harness_image_path(h, "outer.img");
        g_autoptr(GPtrArray) parts = NULL, cut = NULL;
        const guint64 offset = 3 * MiB;

        image_create(inner, 64 * MiB);
        image_sfdisk(inner, "label: dos\nstart=2048,size=16MiB,type=83\nsize=32MiB,type=c\n", 0);
        g_free(image_mkfs_at(inner, MiB, 16 * MiB, "ext4", "inside"));
        /* The outer file: 3 MiB of a table of its own (a GPT that says nothing of the inner disk), then the
         * inner disk. */
        image_create(image, 8 * MiB);
        image_sfdisk(image, "label: gpt\nstart=2048,size=2MiB,name=outer\n", 0);
        g_free(test_sh("truncate -s %" G_GUINT64_FORMAT
                       " %s && dd if=%s of=%s bs=1M seek=3 conv=notrunc,sparse "
                       "status=none",
                offset, image, inner, image));

        g_autofree char *s_offset = g_strdup_printf("%" G_GUINT64_FORMAT, offset);
        const char *args[] = { "--offset", s_offset, NULL };
        g_autofree char *dev = loopctl_attach(h, image, args, &parts);
        if (dev) {
                g_autofree char *name = basename_of(dev);
                Part *p1 = parts ? parts_find(parts, 1) : NULL, *p2 = parts ? parts_find(parts, 2) : NULL;

                g_assert_nonnull(p1);
                g_assert_nonnull(p2);
                g_assert_cmpuint(p1->offset, ==, MiB);
                g_assert_cmpuint(p1->size, ==, 16 * MiB);
                g_assert_true(part_type_equal(p1->part_type, "83"));
                g_assert_cmpstr(p1->fstype, ==, "ext4");
                g_assert_cmpstr(p1->label, ==, "inside");
                g_assert_cmpuint(p2->offset, ==, 17 * MiB);
                g_assert_cmpuint(p2->size, ==, 32 * MiB);
                g_assert_true(part_type_equal(p2->part_type, "c"));
                g_assert_cmpuint(sys_u64("/sys/class/block/%sp1/start", name) * 512, ==, MiB);
                g_assert_cmpuint(sys_u64("/sys/class/block/%sp2/size", name) * 512, ==, 32 * MiB);
                loopctl_detach(h, dev);
                verify_detached(h, dev, image);
        }

        /* 24 MiB of it: partition 1 whole, partition 2 cut at the end of the device (an MBR has no size of
         * its own to disagree with the device's; a GPT that does is no table, to the kernel's parser too).
         */
        const char *cut_args[] = { "--offset", s_offset, "--size", "24MiB", NULL };
        g_autofree char *dev2 = loopctl_attach(h, image, cut_args, &cut);
        if (dev2) {
                g_autofree char *name = basename_of(dev2);
                Part *p2 = cut ? parts_find(cut, 2) : NULL;

                g_assert_nonnull(p2);
                g_assert_cmpuint(p2->offset, ==, 17 * MiB);
                g_assert_cmpuint(p2->size, ==, 7 * MiB);
                g_assert_cmpuint(sys_u64("/sys/class/block/%sp2/size", name) * 512, ==, 7 * MiB);
                loopctl_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

/* Whether writing (and syncing) 4 KiB at the start of node succeeds. */
static bool write_succeeds(const char *node)
{
        guint8 buf[4096];
        int fd = open(node, O_WRONLY | O_CLOEXEC);
        ssize_t n;
        int r;

        if (fd < 0)
                return false;
        memset(buf, 0x5a, sizeof(buf));
        n = pwrite(fd, buf, sizeof(buf), 0);
        r = fsync(fd);
        close(fd);
        return n == (ssize_t)sizeof(buf) && r == 0;
}

static char *file_checksum(const char *path)
{
        g_autofree char *q = g_shell_quote(path);
        char *out = test_sh("sha256sum %s | cut -d' ' -f1", q);

        return g_strstrip(out);
}

static void check_read_only_device(Harness *h, const char *device, const char *image)
{
        g_autoptr(JsonObject) losetup = oracle_losetup(device);
        g_autofree char *name = basename_of(device);
        g_autofree char *p1 = g_strconcat(device, "p1", NULL);

        g_assert_nonnull(losetup);
        if (losetup)
                g_assert_true(json_object_get_boolean_member(losetup, "ro"));
        g_assert_cmpuint(sys_u64("/sys/block/%s/ro", name), ==, 1);
        if (write_succeeds(device))
                g_test_fail_printf("writing to the read-only %s succeeded", device);
        if (access(p1, F_OK) == 0 && write_succeeds(p1))
                g_test_fail_printf("writing to the read-only %s succeeded", p1);
}

void test_read_only(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "ro.img");
        g_autofree char *before = NULL, *after = NULL;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        before = file_checksum(image);

        /* loopctl attach --read-only. */
        const char *args[] = { "--read-only", NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                check_read_only_device(h, dev1, image);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }

        /* A read-write fd with read-only: true. */
        g_autofree char *dev2 = raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'read-only': <true>}"));
        if (dev2) {
                check_read_only_device(h, dev2, image);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }

        /* An O_RDONLY fd and no option: read-only comes from the fd's access mode. */
        g_autofree char *dev3 = raw_attach(h, image, O_RDONLY, NULL);
        if (dev3) {
                check_read_only_device(h, dev3, image);
                raw_detach(h, dev3);
                verify_detached(h, dev3, image);
        }

        after = file_checksum(image);
        g_assert_cmpstr(after, ==, before);

        /* The control: the same write to a read-write device of the same image succeeds, so the refusals
         * above were the read-only flag's doing. */
        g_autofree char *dev4 = raw_attach(h, image, O_RDWR, NULL);
        if (dev4) {
                if (!write_succeeds(dev4))
                        g_test_fail_printf("writing to the read-write %s failed", dev4);
                raw_detach(h, dev4);
                verify_detached(h, dev4, image);
        }
}

void test_rdonly_fd_read_write_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "rofd.img");
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        image_create(image, 16 * MiB);
        /* Not a silent downgrade: asking for a writable device with a read-only fd is an error. */
        g_assert_false(harness_attach_path(
                h->bus, image, O_RDONLY, g_variant_new_parsed("{'read-only': <false>}"), &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, "read-only");
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(left->len, ==, 0);
}

void test_sparse_1tib(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "huge.img");
        g_autofree char *q = g_shell_quote(image);
        struct stat st;

        image_create(image, TiB);
        image_sfdisk(
                image, "label: gpt\nsize=1GiB, type=linux, name=\"small\"\ntype=linux, name=\"rest\"\n", 0);
        const Want w = { .image = image, .sector_size = 512, .has_table = true };

        attach_verify_detach(h, &w);

        g_assert_cmpint(stat(image, &st), ==, 0);
        g_assert_cmpuint((guint64)st.st_size, ==, TiB);
        g_autofree char *du = test_sh("du --block-size=1 %s | cut -f1", q);
        g_assert_cmpuint(g_ascii_strtoull(du, NULL, 10), <, MiB);
        g_assert_cmpuint((guint64)st.st_blocks * 512, <, MiB);
}

/* loopctl --json's error for a refused image: one JSON line {"error", "message"}, exit 1, the error loopd
 * gave, the message naming the format and the reason. */
static void check_loopctl_refuses(Harness *h, const char *image, const char *error_name, const char *reason)
{
        g_auto(HarnessRun) run = { 0 };
        g_autofree char *lower = NULL, *name = NULL, *message = NULL;

        g_assert_cmpint(harness_loopctl(h, NULL, &run, "attach", "--json", image, NULL), ==, 1);
        g_assert_cmpstr(run.out, ==, "");
        name = harness_run_json_error(&run, &message);
        g_assert_cmpstr(name, ==, error_name);
        lower = g_ascii_strdown(message ? message : "", -1);
        if (!strstr(lower, "qcow2") || !strstr(lower, reason))
                g_test_fail_printf(
                        "loopctl attach %s does not say qcow2 and %s: %s", image, reason, run.err);
}

void test_overlay_and_encrypted_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        /* Virtual disks are served, but not these: an overlay's disk lies partly in a file its header names
         * by path, an encrypted one's behind a key loopd has not got. */
        static const struct {
                const char *name, *create, *error, *reason;
        } images[] = {
                { "overlay.qcow2", "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2",
                        LOOPD_ERROR_UNSAFE_IMAGE, "backing file" },
                { "encrypted.qcow2", QEMU_IMG_ENCRYPTED_QCOW2("encrypted.qcow2"),
                        LOOPD_ERROR_UNSUPPORTED_FORMAT, "encrypted" },
        };
        g_autofree char *dir = g_shell_quote(h->image_dir);

        g_free(test_sh("cd %s && qemu-img create -q -f qcow2 base.qcow2 16M", dir));
        for (guint i = 0; i < G_N_ELEMENTS(images); i++) {
                g_autofree char *image = harness_image_path(h, images[i].name);

                g_free(test_sh("cd %s && %s", dir, images[i].create));
                /* Read-write or read-only: an overlay read-only still reads its backing file. */
                for (int ro = 0; ro <= 1; ro++) {
                        g_autoptr(GError) error = NULL;
                        g_autofree char *device = NULL, *lower = NULL;

                        g_assert_false(harness_attach_path(h->bus, image, ro ? O_RDONLY : O_RDWR,
                                ro ? g_variant_new_parsed("{'read-only': <true>}") : NULL, &device, &error));
                        g_assert_null(device);
                        if (!harness_assert_dbus_error(error, images[i].error, NULL))
                                continue;
                        lower = g_ascii_strdown(error->message, -1);
                        if (!strstr(lower, "qcow2") || !strstr(lower, images[i].reason))
                                g_test_fail_printf("%s (%s): the %s message does not say qcow2 and %s: %s",
                                        images[i].name, ro ? "read-only" : "read-write", images[i].error,
                                        images[i].reason, error->message);
                }
                check_loopctl_refuses(h, image, images[i].error, images[i].reason);
        }

        /* Nothing attached, no export left mounted. */
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(left->len, ==, 0);
        g_autoptr(GPtrArray) exports = oracle_mounts_below(h->state_dir);
        g_assert_cmpuint(exports->len, ==, 0);
        g_assert_true(harness_loopd_alive(h));
}

void test_detach_by_image(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "byfile.img");

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        g_autofree char *device = loopctl_attach(h, image, NULL, NULL);
        if (!device)
                return;
        g_autoptr(GPtrArray) bound = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(bound->len, ==, 1);

        /* By the image's path: loopctl finds the device by its backing file. */
        loopctl_detach(h, image);
        verify_detached(h, device, image);
}

void test_list_agrees_with_losetup(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *a = harness_image_path(h, "a.img"), *b = harness_image_path(h, "b.img"),
                        *c = harness_image_path(h, "c.img");
        g_autofree char *qc = g_shell_quote(c);
        g_autoptr(GError) error = NULL;

        image_create(a, 32 * MiB);
        image_create(b, 32 * MiB);
        image_create(c, 32 * MiB);
        g_autofree char *dev_a = raw_attach(h, a, O_RDWR, NULL);
        g_autofree char *dev_b = raw_attach(h, b, O_RDONLY,
                g_variant_new_parsed(
                        "{'offset': <%t>, 'size-limit': <%t>}", (guint64)MiB, (guint64)(8 * MiB)));
        /* One set up behind loopd's back: listed, but not managed. */
        g_autofree char *dev_c = test_sh("losetup --find --show %s", qc);
        g_strstrip(dev_c);
        if (!dev_a || !dev_b)
                return;

        g_autoptr(GVariant) devices = harness_list_devices(h->bus, &error);
        harness_assert_no_error(error);
        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, NULL, &run, "list", "--json", NULL), ==, 0);
        g_autoptr(JsonNode) list = harness_run_json(&run);

        const char *devs[] = { dev_a, dev_b, dev_c }, *files[] = { a, b, c };
        for (guint i = 0; i < 3; i++) {
                g_autoptr(JsonObject) losetup = oracle_losetup(devs[i]);
                bool in_dbus = false, in_json = false;
                const char *source = "ListDevices";

                g_assert_nonnull(losetup);
                if (!losetup)
                        continue;
                check_str(
                        "losetup back-file", json_object_get_string_member(losetup, "back-file"), files[i]);
                if (devices) {
                        GVariantIter it;
                        const char *dev, *object, *backing;
                        guint64 offset, limit;
                        guint32 ss, owner;
                        gboolean ro, ac, managed;
                        g_variant_iter_init(&it, devices);
                        while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &dev, &object, &backing, &offset,
                                &limit, &ss, &ro, &ac, &managed, &owner)) {
                                if (!g_str_equal(dev, devs[i]))
                                        continue;
                                in_dbus = true;
                                if (i < 2)
                                        compare_device_row(source, dev, backing, offset, limit, ss, ro, ac,
                                                managed, owner, losetup);
                                else {
                                        check_str("backing_file", backing, files[i]);
                                        if (managed)
                                                g_test_fail_printf(
                                                        "ListDevices: %s (set up by losetup) is managed",
                                                        dev);
                                }
                        }
                }
                source = "loopctl list --json";
                for (guint j = 0; list && JSON_NODE_HOLDS_ARRAY(list) &&
                        j < json_array_get_length(json_node_get_array(list));
                        j++) {
                        JsonObject *o = json_array_get_object_element(json_node_get_array(list), j);
                        g_autofree char *dev = json_str(o, "device");
                        g_autofree char *backing = NULL;
                        if (!g_str_equal(dev, devs[i]))
                                continue;
                        in_json = true;
                        backing = json_str(o, "backing_file");
                        if (i < 2)
                                compare_device_row(source, dev, backing, json_int(o, "offset"),
                                        json_int(o, "size_limit"), json_int(o, "sector_size"),
                                        json_member_bool(o, "read_only"), json_member_bool(o, "autoclear"),
                                        json_member_bool(o, "managed"), json_int(o, "owner_uid"), losetup);
                        else {
                                check_str("backing_file", backing, files[i]);
                                if (json_member_bool(o, "managed"))
                                        g_test_fail_printf(
                                                "loopctl list: %s (set up by losetup) is managed", dev);
                        }
                }
                if (!in_dbus)
                        g_test_fail_printf("ListDevices does not list %s", devs[i]);
                if (!in_json)
                        g_test_fail_printf("loopctl list --json does not list %s", devs[i]);
                /* The table's SIZE: the whole image, the size limit, the whole image. */
                harness_check_list_size(h, NULL, devs[i], (const char *[]){ "32M", "8M", "32M" }[i]);
        }

        raw_detach(h, dev_a);
        loopctl_detach(h, dev_b);
        g_free(test_sh("losetup -d %s", dev_c));
        verify_detached(h, dev_a, a);
        verify_detached(h, dev_b, b);
}
