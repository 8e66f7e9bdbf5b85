/* modify-recipe.c: the OSDev recipe replayed by an unprivileged user through loopctl (create, partition add,
 * format, open, copy, close) on a 512-byte-sector DOS image and a 4096-byte-sector GPT image, checked as
 * root on the image file with sfdisk --dump, blkid -p, mtools and debugfs. */
#include "test-modify.h"

#define TYPE_ESP "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#define TYPE_LINUX "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

/* Text of n bytes (debugfs and mtype print files to a pipe the oracle reads as a string). */
static char *text_of(guint seed, gsize n)
{
        GString *s = g_string_sized_new(n + 64);

        for (guint line = 0; s->len < n; line++)
                g_string_append_printf(s, "line %u of file %u: the quick brown fox\n", line, seed);
        g_string_truncate(s, n);
        return g_string_free(s, FALSE);
}

static void write_file(const char *path, const char *text, const char *user)
{
        g_assert_true(g_file_set_contents(path, text, -1, NULL));
        g_assert_cmpint(chmod(path, 0644), ==, 0);
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
}

/* The device loopctl create left bound to image, or one `loopctl attach` binds now: the contract does not
 * say whether create detaches at the end, and partition add needs a device either way. */
static char *device_for(Harness *h, const char *user, const char *image)
{
        g_autoptr(JsonNode) out = NULL;
        JsonObject *o;
        char *device = device_of(image);

        g_test_message("after loopctl create, %s is %s", image, device ? device : "not attached");
        if (device)
                return device;
        out = harness_loopctl_json(h, user, "attach", image, NULL);
        o = out && JSON_NODE_HOLDS_OBJECT(out) ? json_node_get_object(out) : NULL;
        if (!o || !json_object_has_member(o, "device")) {
                harness_fail("loopctl attach %s printed no device", image);
                return NULL;
        }
        return g_strdup(json_object_get_string_member(o, "device"));
}

static void check_node_exists(const char *node)
{
        struct stat st;

        if (stat(node, &st) < 0 || !S_ISBLK(st.st_mode))
                harness_fail("%s is not a block device after the call returned", node);
}

/* `loopctl format NODE TYPE --label L` as the user, which must work and print loopd's word only: mkfs's own
 * output goes to loopd's log, never to the user. */
static bool format_as_user(Harness *h, const char *node, const char *type, const char *label)
{
        static const char *const mkfs_words[] = { "mke2fs", "Writing superblocks", "mkfs.fat", "Discarding",
                "Allocating group tables", NULL };
        g_auto(HarnessRun) run = { 0 };

        if (harness_loopctl(h, HARNESS_USER_A, &run, "format", node, type, "--label", label, NULL) != 0) {
                harness_fail("loopctl format %s %s exited %d: %s", node, type, run.status, run.err);
                return false;
        }
        for (const char *const *w = mkfs_words; *w; w++)
                if (strstr(run.out ? run.out : "", *w) || strstr(run.err ? run.err : "", *w))
                        harness_fail("loopctl format %s %s shows mkfs's output ('%s'): %s%s", node, type, *w,
                                run.out, run.err);
        return true;
}

/* The mount point `loopctl open` gave node, or NULL. */
static const char *mount_point_of(JsonNode *open, const char *node)
{
        JsonObject *o = open && JSON_NODE_HOLDS_OBJECT(open) ? json_node_get_object(open) : NULL;
        JsonArray *mounts =
                o && json_object_has_member(o, "mounts") ? json_object_get_array_member(o, "mounts") : NULL;

        for (guint i = 0; mounts && i < json_array_get_length(mounts); i++) {
                JsonObject *m = json_array_get_object_element(mounts, i);
                if (g_strcmp0(json_object_get_string_member_with_default(m, "node", ""), node) == 0)
                        return json_object_get_string_member_with_default(m, "mount_point", NULL);
        }
        harness_fail("loopctl open mounted nothing of %s", node);
        return NULL;
}

/* cp src dst as user; the exit status. */
static int copy_as(Harness *h, const char *user, const char *src, const char *dst)
{
        g_auto(HarnessRun) run = { 0 };
        const char *argv[] = { "cp", "--", src, dst, NULL };
        int status = harness_spawn_as(h, user, &run, argv);

        g_test_message("cp %s %s as %s: exit %d %s", src, dst, user, status, run.err ? run.err : "");
        return status;
}

static void check_nothing_bound(const char *image, const char *device)
{
        g_autofree char *still = device_of(image);
        g_autoptr(GPtrArray) parts = device ? oracle_partition_nodes(device) : NULL;

        if (still)
                harness_fail("%s is still bound to %s after loopctl close", still, image);
        else if (parts && parts->len > 0)
                harness_fail("%s is left after loopctl close", (char *)parts->pdata[0]);
}

void test_recipe_dos(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *home = user_home(h, HARNESS_USER_A);
        g_autofree char *image = g_build_filename(home, "disk.img", NULL);
        g_autofree char *device = NULL, *p1 = NULL, *p2 = NULL, *opened = NULL;
        g_autofree char *hello = g_build_filename(home, "hello.txt", NULL);
        g_autofree char *kernel = g_build_filename(home, "kernel.bin", NULL);
        g_autofree char *loader = g_build_filename(home, "loader.sys", NULL);
        g_autofree char *kernel_text = text_of(1, 100000), *loader_text = text_of(2, 20000);
        g_autofree char *ext_hello = NULL, *ext_kernel = NULL, *fat_loader = NULL;
        g_autoptr(JsonNode) open = NULL;
        g_autoptr(SfdiskDump) dump = NULL;
        const char *mp1 = NULL, *mp2 = NULL;
        bool fat_written = false;
        struct stat st;

        write_file(hello, "hello from the OSDev recipe\n", HARNESS_USER_A);
        write_file(kernel, kernel_text, HARNESS_USER_A);
        write_file(loader, loader_text, HARNESS_USER_A);

        if (!harness_loopctl_ok(h, HARNESS_USER_A, "create", image, "--size", "64M", "--table", "dos", NULL))
                return;
        if (stat(image, &st) < 0) {
                harness_fail("loopctl create made no %s", image);
                return;
        }
        if (st.st_uid != harness_uid_of(HARNESS_USER_A) || (guint64)st.st_size != 64 * MiB)
                harness_fail("%s: uid %u, %" G_GUINT64_FORMAT " bytes; expected the user's and 64 MiB",
                        image, (unsigned)st.st_uid, (guint64)st.st_size);
        device = device_for(h, HARNESS_USER_A, image);
        REQUIRE_NONNULL(device);
        p1 = partition_node(device, 1);
        p2 = partition_node(device, 2);

        /* A bootable FAT16 partition (type 6) of 32 MiB, and an ext2 one after it to the end, where the
         * defaults put them as a user types it: no --start (the first free 1 MiB-aligned byte), no --size
         * for the last one (to the end). The 4K test gives explicit starts. */
        if (!harness_loopctl_ok(h, HARNESS_USER_A, "partition", "add", device, "--size", "32M", "--type",
                    "0x06", "--bootable", NULL))
                goto close;
        check_node_exists(p1);
        if (!harness_loopctl_ok(h, HARNESS_USER_A, "partition", "add", device, "--type", "linux", NULL))
                goto close;
        check_node_exists(p2);
        if (!format_as_user(h, p1, "vfat", "BOOT") || !format_as_user(h, p2, "ext2", "root"))
                goto close;

        open = harness_loopctl_json(h, HARNESS_USER_A, "open", "--writable", image, NULL);
        opened = open ? g_strdup(json_object_get_string_member_with_default(
                                json_node_get_object(open), "device", ""))
                      : NULL;
        if (open && g_strcmp0(opened, device) != 0)
                harness_fail("loopctl open gave %s, expected the device the image is attached to, %s",
                        opened, device);
        mp1 = mount_point_of(open, p1);
        mp2 = mount_point_of(open, p2);
        if (mp2) {
                g_autofree char *dst = g_build_filename(mp2, "hello.txt", NULL);
                g_autofree char *boot = g_build_filename(mp2, "boot", NULL);
                g_autofree char *dst_kernel = g_build_filename(boot, "kernel.bin", NULL);
                g_auto(HarnessRun) run = { 0 };
                const char *mkdir_argv[] = { "mkdir", "--", boot, NULL };

                /* The user copies into the new ext2 through the mount: its root must be theirs. */
                if (copy_as(h, HARNESS_USER_A, hello, dst) != 0)
                        harness_fail("%s cannot copy a file into the ext2 filesystem it just made (%s)",
                                HARNESS_USER_A, mp2);
                if (harness_spawn_as(h, HARNESS_USER_A, &run, mkdir_argv) != 0 ||
                        copy_as(h, HARNESS_USER_A, kernel, dst_kernel) != 0)
                        harness_fail("%s cannot make /boot/kernel.bin on the ext2 filesystem: %s",
                                HARNESS_USER_A, run.err);
        }
        if (mp1) {
                g_autofree char *dst = g_build_filename(mp1, "LOADER.SYS", NULL);

                /* vfat: this kernel has none, and loopd mounts it through fusefat, read-only (its write
                 * support is experimental). If the copy works, the oracle checks it landed; if not, root
                 * puts the file there with mcopy after close, and only the oracle's reading is checked. */
                fat_written = copy_as(h, HARNESS_USER_A, loader, dst) == 0;
                g_test_message("the FAT mount %s is %s", mp1, fat_written ? "writable" : "not writable");
        }

close:
        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_nothing_bound(image, device);
        if (g_test_failed())
                return;

        if (!fat_written) {
                g_autofree char *q = g_shell_quote(image), *ql = g_shell_quote(loader);
                g_free(test_sh("MTOOLS_SKIP_CHECK=1 mcopy -i %s@@%" G_GUINT64_FORMAT " %s ::/LOADER.SYS", q,
                        1 * MiB, ql));
        }

        /* The oracles, as root, on the image file. */
        dump = oracle_sfdisk_dump(image, 0);
        if (g_strcmp0(dump->label, "dos") != 0 || dump->partitions->len != 2)
                harness_fail("sfdisk --dump shows label %s with %u partitions, expected dos with 2",
                        dump->label, dump->partitions->len);
        check_dump_partition(dump, 0, 1 * MiB, 32 * MiB, "6");
        check_dump_partition(dump, 1, 33 * MiB, 31 * MiB, "83");
        if (dump->partitions->len == 2 &&
                (!g_array_index(dump->partitions, DumpPartition, 0).bootable ||
                        g_array_index(dump->partitions, DumpPartition, 1).bootable))
                harness_fail("the boot flag is not on partition 1 alone, as --bootable asked");
        check_blkid(image, 1 * MiB, "vfat", "BOOT");
        check_blkid(image, 33 * MiB, "ext2", "root");
        {
                /* A type-6 partition holds FAT16 (what mkfs.fat makes of 32 MiB unless told otherwise). */
                g_autoptr(GHashTable) fat = oracle_blkid(image, 1 * MiB);
                if (g_strcmp0(g_hash_table_lookup(fat, "VERSION"), "FAT16") != 0)
                        harness_fail("the FAT partition holds %s, expected FAT16",
                                (char *)g_hash_table_lookup(fat, "VERSION"));
        }

        fat_loader = fat_read(image, 1 * MiB, "LOADER.SYS");
        if (g_strcmp0(fat_loader, loader_text) != 0)
                harness_fail(
                        "mtype reads %s of LOADER.SYS from the FAT partition, expected the %zu bytes copied",
                        fat_loader ? "other bytes" : "nothing", strlen(loader_text));
        ext_hello = ext_read(h, image, 33 * MiB, 31 * MiB, "hello.txt");
        ext_kernel = ext_read(h, image, 33 * MiB, 31 * MiB, "boot/kernel.bin");
        if (g_strcmp0(ext_hello, "hello from the OSDev recipe\n") != 0)
                harness_fail("debugfs reads '%s' of /hello.txt from the ext2 partition", ext_hello);
        if (g_strcmp0(ext_kernel, kernel_text) != 0)
                harness_fail(
                        "debugfs reads %s of /boot/kernel.bin from the ext2 partition, expected the %zu bytes "
                        "copied",
                        ext_kernel ? "other bytes" : "nothing", strlen(kernel_text));
}

/* device's logical sector size, from sysfs. */
static unsigned sector_size_of(const char *device)
{
        g_autofree char *name = g_path_get_basename(device);
        g_autofree char *s = test_read_sysfs("/sys/block/%s/queue/logical_block_size", name);

        return s ? (unsigned)g_ascii_strtoull(s, NULL, 10) : 0;
}

/* Checks the sector_size `loopctl --json list` gives device. */
static void check_listed_sector_size(Harness *h, const char *device, gint64 sector_size)
{
        g_autoptr(JsonNode) out = harness_loopctl_json(h, HARNESS_USER_A, "list", NULL);
        JsonArray *a = out && JSON_NODE_HOLDS_ARRAY(out) ? json_node_get_array(out) : NULL;

        for (guint i = 0; a && i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (g_strcmp0(json_object_get_string_member_with_default(o, "device", ""), device) != 0)
                        continue;
                if (json_object_get_int_member_with_default(o, "sector_size", 0) != sector_size)
                        harness_fail("loopctl list gives %s sector_size %" G_GINT64_FORMAT
                                     ", expected %" G_GINT64_FORMAT,
                                device, json_object_get_int_member_with_default(o, "sector_size", 0),
                                sector_size);
                return;
        }
        harness_fail("loopctl list does not list %s", device);
}

/* Checks `loopctl --json partitions device`'s entry for node n: offset, size, fstype, label. */
static void check_listed(JsonNode *parts, const char *device, guint n, guint64 offset, guint64 size,
        const char *fstype, const char *label)
{
        JsonArray *a = parts && JSON_NODE_HOLDS_ARRAY(parts) ? json_node_get_array(parts) : NULL;
        g_autofree char *node = partition_node(device, n);

        for (guint i = 0; a && i < json_array_get_length(a); i++) {
                JsonObject *p = json_array_get_object_element(a, i);
                if (g_strcmp0(json_object_get_string_member_with_default(p, "node", ""), node) != 0)
                        continue;
                if ((guint64)json_object_get_int_member_with_default(p, "offset", -1) != offset ||
                        (size && (guint64)json_object_get_int_member_with_default(p, "size", -1) != size))
                        harness_fail("loopctl partitions: %s at %" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                                     " bytes; expected %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT,
                                node, json_object_get_int_member_with_default(p, "offset", -1),
                                json_object_get_int_member_with_default(p, "size", -1), offset, size);
                if (g_strcmp0(json_object_get_string_member_with_default(p, "fstype", ""), fstype) != 0 ||
                        g_strcmp0(json_object_get_string_member_with_default(p, "label", ""), label) != 0)
                        harness_fail("loopctl partitions: %s is %s '%s', expected %s '%s'", node,
                                json_object_get_string_member_with_default(p, "fstype", ""),
                                json_object_get_string_member_with_default(p, "label", ""), fstype, label);
                return;
        }
        harness_fail("loopctl partitions %s does not list %s", device, node);
}

void test_recipe_gpt_4k(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *home = user_home(h, HARNESS_USER_A);
        g_autofree char *image = g_build_filename(home, "disk4k.img", NULL);
        g_autofree char *hello = g_build_filename(home, "hello.txt", NULL), *ext_hello = NULL;
        g_autoptr(JsonNode) open = NULL;
        const char *mp1 = NULL, *mp2 = NULL;
        g_autofree char *device = NULL, *p1 = NULL, *p2 = NULL, *again = NULL;
        g_autoptr(JsonNode) attach = NULL, parts = NULL;
        g_autoptr(SfdiskDump) dump = NULL, at_512 = NULL;
        guint64 p2_size = 0;

        if (!harness_loopctl_ok(h, HARNESS_USER_A, "create", image, "--size", "64M", "--sector-size", "4096",
                    "--table", "gpt", NULL))
                return;
        device = device_for(h, HARNESS_USER_A, image);
        REQUIRE_NONNULL(device);
        if (sector_size_of(device) != 4096)
                harness_fail("%s has %u-byte sectors, expected 4096", device, sector_size_of(device));
        p1 = partition_node(device, 1);
        p2 = partition_node(device, 2);
        if (!harness_loopctl_ok(h, HARNESS_USER_A, "partition", "add", device, "--start", "1M", "--size",
                    "16M", "--type", "esp", "--name", "EFI", NULL))
                goto close;
        check_node_exists(p1);
        if (!harness_loopctl_ok(h, HARNESS_USER_A, "partition", "add", device, "--start", "17M", "--type",
                    "linux", "--name", "root", NULL))
                goto close;
        check_node_exists(p2);
        if (!format_as_user(h, p1, "vfat", "EFI") || !format_as_user(h, p2, "ext4", "root"))
                goto close;

        /* Opened, both filesystems mount (vfat with 4096-byte sectors through fusefat), and a file goes into
         * the ext4 one. */
        write_file(hello, "hello from a 4K disk\n", HARNESS_USER_A);
        open = harness_loopctl_json(h, HARNESS_USER_A, "open", "--writable", image, NULL);
        mp1 = mount_point_of(open, p1);
        mp2 = mount_point_of(open, p2);
        if (mp2) {
                g_autofree char *dst = g_build_filename(mp2, "hello.txt", NULL);
                if (copy_as(h, HARNESS_USER_A, hello, dst) != 0)
                        harness_fail("%s cannot copy a file into the ext4 filesystem it just made (%s)",
                                HARNESS_USER_A, mp2);
        }
        if (mp1) {
                g_auto(HarnessRun) run = { 0 };
                const char *ls[] = { "ls", "-a", "--", mp1, NULL };
                if (harness_spawn_as(h, HARNESS_USER_A, &run, ls) != 0)
                        harness_fail("%s cannot list the 4K FAT filesystem at %s: %s", HARNESS_USER_A, mp1,
                                run.err);
        }
close:
        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_nothing_bound(image, device);
        if (g_test_failed())
                return;

        /* A later attach, without --sector-size, reads the table as 4K. */
        attach = harness_loopctl_json(h, HARNESS_USER_A, "attach", image, NULL);
        REQUIRE_NONNULL(attach);
        again = g_strdup(
                json_object_get_string_member_with_default(json_node_get_object(attach), "device", ""));
        if (sector_size_of(again) != 4096)
                harness_fail("attached again, %s has %u-byte sectors, expected 4096", again,
                        sector_size_of(again));
        check_listed_sector_size(h, again, 4096);
        parts = harness_loopctl_json(h, HARNESS_USER_A, "partitions", again, NULL);
        check_listed(parts, again, 1, 1 * MiB, 16 * MiB, "vfat", "EFI");
        check_listed(parts, again, 2, 17 * MiB, 0, "ext4", "root");
        harness_loopctl_ok(h, HARNESS_USER_A, "detach", again, NULL);
        check_nothing_bound(image, again);

        /* The oracles, as root: the table through a 4096-byte-sector loop device of the oracle's own. */
        dump = oracle_sfdisk_dump(image, 4096);
        if (g_strcmp0(dump->label, "gpt") != 0 || dump->sector_size != 4096 || dump->partitions->len != 2)
                harness_fail(
                        "sfdisk --dump (4K) shows label %s, sector-size %u, %u partitions; expected gpt, 4096, 2",
                        dump->label, dump->sector_size, dump->partitions->len);
        check_dump_partition(dump, 0, 1 * MiB, 16 * MiB, TYPE_ESP);
        if (dump->partitions->len == 2) {
                const DumpPartition *p = &g_array_index(dump->partitions, DumpPartition, 1);
                guint64 end = (p->start + p->size) * 4096, usable_end = (dump->last_lba + 1) * 4096;

                p2_size = p->size * 4096;
                /* "To the end": up to the last usable sector, or short of it by less than the 1 MiB grain.
                 */
                if (end > usable_end || usable_end - end >= MiB)
                        harness_fail("partition 2 ends at %" G_GUINT64_FORMAT
                                     ", the last usable byte is %" G_GUINT64_FORMAT,
                                end, usable_end);
                check_dump_partition(dump, 1, 17 * MiB, p2_size, TYPE_LINUX);
                if (g_strcmp0(p->name, "root") != 0)
                        harness_fail("partition 2 is named '%s', expected 'root'", p->name);
                if (g_strcmp0(g_array_index(dump->partitions, DumpPartition, 0).name, "EFI") != 0)
                        harness_fail("partition 1 is named '%s', expected 'EFI'",
                                g_array_index(dump->partitions, DumpPartition, 0).name);
        }
        /* Read with 512-byte sectors, there is no GPT: the table really is a 4K one. */
        at_512 = oracle_sfdisk_dump(image, 0);
        if (g_strcmp0(at_512->label, "gpt") == 0)
                harness_fail("sfdisk reads a GPT with 512-byte sectors too");
        check_blkid(image, 1 * MiB, "vfat", "EFI");
        check_blkid(image, 17 * MiB, "ext4", "root");
        ext_hello = ext_read(h, image, 17 * MiB, p2_size, "hello.txt");
        if (g_strcmp0(ext_hello, "hello from a 4K disk\n") != 0)
                harness_fail("debugfs reads '%s' of /hello.txt from the ext4 partition", ext_hello);
}
