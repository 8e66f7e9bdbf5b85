/* modify-more.c: what else the contract of Format, CreatePartition, DeletePartition and loopctl create
 * implies: "empty" wipes every signature, size 0 fills to the end on the 1 MiB grain, a deleted partition's
 * node is gone when the call returns (and PartitionRemoved says so), and loopctl create neither overwrites a
 * file nor leaves one (or a device) behind when its format step fails. */
#include "test-modify.h"

/* The user's own read-write device of image (D-Bus Attach); NULL and the test failed when it did not attach.
 */
static char *attach_own(Harness *h, GDBusConnection *c, const char *image)
{
        g_autoptr(GError) error = NULL;
        char *device = NULL;

        if (!harness_attach_path(c, image, O_RDWR, NULL, &device, &error))
                harness_fail("Attach %s: %s", image, error->message);
        return device;
}

static void detach_own(GDBusConnection *c, const char *device)
{
        g_autoptr(GError) error = NULL;

        if (device && !harness_detach(c, device, NULL, &error))
                harness_fail("Detach %s: %s", device, error->message);
}

void test_format_empty_partition(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_base_image(h, "base.img", HARNESS_USER_A);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *device = NULL, *p1 = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(SfdiskDump) dump = NULL;

        REQUIRE_NONNULL(a);
        check_blkid(image, BASE_P1_OFFSET, "ext2", "one");
        device = attach_own(h, a, image);
        REQUIRE_NONNULL(device);
        p1 = partition_node(device, 1);
        if (!call_format(a, p1, "empty", NULL, false, &error))
                harness_fail("Format %s empty: %s", p1, error->message);
        else if (!polkit_asked(h, LOOPD_ACTION_MODIFY))
                harness_fail("loopd formatted %s without asking polkit for %s", p1, LOOPD_ACTION_MODIFY);
        detach_own(a, device);

        check_blkid(image, BASE_P1_OFFSET, NULL, NULL);
        /* The table around it stays. */
        dump = oracle_sfdisk_dump(image, 0);
        if (g_strcmp0(dump->label, "dos") != 0 || dump->partitions->len != 1)
                harness_fail(
                        "after wiping partition 1, sfdisk shows label %s, %u partitions; expected dos, 1",
                        dump->label, dump->partitions->len);
        check_dump_partition(dump, 0, BASE_P1_OFFSET, BASE_P1_SIZE, "83");
}

void test_format_empty_whole_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "plain.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *device = NULL;
        g_autoptr(GError) error = NULL;

        REQUIRE_NONNULL(a);
        image_create(image, 16 * MiB);
        g_free(image_mkfs_at(image, 0, 16 * MiB, "ext4", "whole"));
        g_assert_cmpint(chown(image, harness_uid_of(HARNESS_USER_A), harness_gid_of(HARNESS_USER_A)), ==, 0);
        check_blkid(image, 0, "ext4", "whole");
        device = attach_own(h, a, image);
        REQUIRE_NONNULL(device);
        if (!call_format(a, device, "empty", NULL, false, &error))
                harness_fail("Format %s empty: %s", device, error->message);
        detach_own(a, device);
        check_blkid(image, 0, NULL, NULL);
}

/* sha256 of bytes [offset, offset + size) of image (MiB multiples). */
static char *sha256_of_range(const char *image, guint64 offset, guint64 size)
{
        g_autofree char *q = g_shell_quote(image);

        return test_sh("dd if=%s bs=1M skip=%" G_GUINT64_FORMAT " count=%" G_GUINT64_FORMAT
                       " status=none | sha256sum",
                q, offset / MiB, size / MiB);
}

/* Whether bytes [offset, offset + size) of image are all zero (MiB multiples). */
static bool range_is_zero(const char *image, guint64 offset, guint64 size)
{
        g_autofree char *q = g_shell_quote(image);

        return test_sh_status(NULL,
                       "dd if=%s bs=1M skip=%" G_GUINT64_FORMAT " count=%" G_GUINT64_FORMAT
                       " status=none | cmp -s -n %" G_GUINT64_FORMAT " - /dev/zero",
                       q, offset / MiB, size / MiB, size) == 0;
}

/* Format of a partition writes inside it only: the bytes before it (the table) and after it (a neighbour's)
 * stay as they were; with erase, the whole partition is zero first ("empty" leaves it zero). */
void test_format_partition_bytes_only(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_base_image(h, "base.img", HARNESS_USER_A);
        g_autofree char *q = g_shell_quote(image), *device = NULL, *p1 = NULL;
        g_autofree char *head = NULL, *tail = NULL, *head_after = NULL, *tail_after = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const guint64 tail_offset = BASE_P1_OFFSET + BASE_P1_SIZE, tail_size = BASE_SIZE - tail_offset;
        g_autoptr(GError) error = NULL;

        REQUIRE_NONNULL(a);
        /* Data everywhere but the table: in the partition (after its filesystem) and after it. */
        g_free(test_sh("set -e; head -c %" G_GUINT64_FORMAT
                       " /dev/urandom | dd of=%s bs=1M seek=%" G_GUINT64_FORMAT
                       " conv=notrunc status=none; head -c %" G_GUINT64_FORMAT
                       " /dev/urandom | dd of=%s bs=1M seek=%" G_GUINT64_FORMAT " conv=notrunc status=none",
                16 * MiB, q, (BASE_P1_OFFSET + 16 * MiB) / MiB, tail_size, q, tail_offset / MiB));
        head = sha256_of_range(image, 0, BASE_P1_OFFSET);
        tail = sha256_of_range(image, tail_offset, tail_size);
        device = attach_own(h, a, image);
        REQUIRE_NONNULL(device);
        p1 = partition_node(device, 1);

        if (!call_format(a, p1, "ext4", "inside", false, &error))
                harness_fail("Format %s ext4: %s", p1, error->message);
        g_clear_error(&error);
        if (!call_format(a, p1, "empty", NULL, true, &error))
                harness_fail("Format %s empty with erase: %s", p1, error->message);
        detach_own(a, device);

        head_after = sha256_of_range(image, 0, BASE_P1_OFFSET);
        tail_after = sha256_of_range(image, tail_offset, tail_size);
        if (g_strcmp0(head, head_after) != 0)
                harness_fail("formatting %s changed the bytes before it (the table)", p1);
        if (g_strcmp0(tail, tail_after) != 0)
                harness_fail("formatting %s changed the bytes after it", p1);
        if (!range_is_zero(image, BASE_P1_OFFSET, BASE_P1_SIZE))
                harness_fail("after Format empty with erase, %s is not all zero", p1);
        check_blkid(image, BASE_P1_OFFSET, NULL, NULL);
}

/* A 64 MiB image like the base one with a GPT: partition 1 (Linux) at 1 MiB, 32 MiB long. */
static char *make_gpt_base(Harness *h, const char *name)
{
        char *path = harness_image_path(h, name);

        image_create(path, BASE_SIZE);
        image_sfdisk(path, "label: gpt\nstart=2048, size=65536, type=linux\n", 0);
        g_assert_cmpint(chown(path, harness_uid_of(HARNESS_USER_A), harness_gid_of(HARNESS_USER_A)), ==, 0);
        return path;
}

void test_create_size_0_fills_aligned(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        REQUIRE_NONNULL(a);
        for (guint gpt = 0; gpt <= 1; gpt++) {
                g_autofree char *image =
                        gpt ? make_gpt_base(h, "gpt.img") : make_base_image(h, "dos.img", HARNESS_USER_A);
                g_autofree char *device = attach_own(h, a, image), *p2 = NULL, *node = NULL;
                g_autoptr(GError) error = NULL;
                g_autoptr(SfdiskDump) dump = NULL;
                const DumpPartition *p;
                guint64 start, end, usable_end;

                REQUIRE_NONNULL(device);
                p2 = partition_node(device, 2);
                if (!call_create_partition(
                            a, device, 33 * MiB, 0, "linux", gpt ? "rest" : "", &node, &error))
                        harness_fail("%s: CreatePartition at 33 MiB, size 0: %s", image, error->message);
                else if (g_strcmp0(node, p2) != 0)
                        harness_fail("CreatePartition returned %s, expected %s", node, p2);
                else if (!g_file_test(p2, G_FILE_TEST_EXISTS))
                        harness_fail("%s does not exist when CreatePartition returned", p2);
                detach_own(a, device);

                dump = oracle_sfdisk_dump(image, 0);
                if (dump->partitions->len != 2) {
                        harness_fail(
                                "%s: sfdisk shows %u partitions, expected 2", image, dump->partitions->len);
                        continue;
                }
                p = &g_array_index(dump->partitions, DumpPartition, 1);
                start = p->start * 512;
                end = (p->start + p->size) * 512;
                usable_end = gpt ? (dump->last_lba + 1) * 512 : BASE_SIZE;
                g_test_message("%s: partition 2 at %" G_GUINT64_FORMAT ", ends at %" G_GUINT64_FORMAT
                               " (usable up to %" G_GUINT64_FORMAT ")",
                        image, start, end, usable_end);
                if (start != 33 * MiB || start % MiB != 0)
                        harness_fail("%s: partition 2 starts at %" G_GUINT64_FORMAT ", expected 33 MiB",
                                image, start);
                if (end > usable_end || usable_end - end >= MiB)
                        harness_fail("%s: partition 2 ends at %" G_GUINT64_FORMAT
                                     ", not at the end (%" G_GUINT64_FORMAT ")",
                                image, end, usable_end);
                if (!gpt && end != BASE_SIZE)
                        harness_fail("%s: the DOS partition ends at %" G_GUINT64_FORMAT ", expected 64 MiB",
                                image, end);
        }
}

/* A table written through loopN keeps what a partition's node wrote into the partition's last sectors. With
 * a GPT, the block that holds the first backup entries also holds the last sectors of a partition that
 * reaches the last usable one, and loopN's page cache held them as an earlier read of loopN (udevd's, a file
 * manager's) found them: the table's write must not put those back. */
void test_table_write_keeps_partition_tail(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "tail.img"), *q = g_shell_quote(image);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *device = NULL, *p1 = NULL, *p2 = NULL, *script = NULL, *tail = NULL;
        g_autoptr(GError) error = NULL;
        /* 64 MiB is 131072 sectors: the backup entries take 131039-131070, the backup header 131071. */
        const guint64 p2_start = 69632, last_usable = 131038;

        REQUIRE_NONNULL(a);
        image_create(image, BASE_SIZE);
        script = g_strdup_printf("label: gpt\nstart=2048, size=65536, type=linux\nstart=%" G_GUINT64_FORMAT
                                 ", size=%" G_GUINT64_FORMAT ", type=linux\n",
                p2_start, last_usable - p2_start + 1);
        image_sfdisk(image, script, 0);
        g_assert_cmpint(chown(image, harness_uid_of(HARNESS_USER_A), harness_gid_of(HARNESS_USER_A)), ==, 0);
        device = attach_own(h, a, image);
        REQUIRE_NONNULL(device);
        p1 = partition_node(device, 1);
        p2 = partition_node(device, 2);

        /* As root: the whole device read into its cache, then the last sector of partition 2 written
         * through partition 2's node, and synced to the image (udevd may hold that node open, and then dd's
         * close would not be the last). */
        g_free(test_sh("dd if=%s of=/dev/null bs=1M status=none", device));
        g_free(test_sh("printf loopd-tail-sector | dd of=%s bs=512 seek=%" G_GUINT64_FORMAT
                       " conv=notrunc,fsync status=none",
                p2, last_usable - p2_start));
        if (!call_delete_partition(a, p1, &error))
                harness_fail("DeletePartition %s: %s", p1, error->message);
        detach_own(a, device);

        tail = test_sh("dd if=%s bs=512 skip=%" G_GUINT64_FORMAT " count=1 status=none | head -c 17", q,
                last_usable);
        if (g_strcmp0(tail, "loopd-tail-sector") != 0)
                harness_fail("after DeletePartition of %s, the last sector of %s reads \"%s\", not what was "
                             "written through %s",
                        p1, p2, tail, p2);
}

typedef struct Removed {
        char *device, *partition;
        guint n;
} Removed;

static void on_partition_removed(GDBusConnection *c, const char *sender, const char *path, const char *iface,
        const char *signal, GVariant *params, gpointer data)
{
        Removed *r = data;

        r->n++;
        g_clear_pointer(&r->device, g_free);
        g_clear_pointer(&r->partition, g_free);
        g_variant_get(params, "(ss)", &r->device, &r->partition);
}

void test_delete_removes_node(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_base_image(h, "base.img", HARNESS_USER_A);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autofree char *device = NULL, *p1 = NULL, *base = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) ping = NULL;
        g_autoptr(SfdiskDump) dump = NULL;
        Removed removed = { 0 };
        struct stat st;
        gint64 deadline;
        guint id;

        REQUIRE_NONNULL(a);
        device = attach_own(h, a, image);
        REQUIRE_NONNULL(device);
        p1 = partition_node(device, 1);
        base = g_path_get_basename(p1);

        g_main_context_push_thread_default(context);
        id = g_dbus_connection_signal_subscribe(h->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_INTERFACE,
                "PartitionRemoved", LOOPD_MANAGER_PATH, NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_partition_removed,
                &removed, NULL);
        /* The AddMatch went out before this call on the same connection: the bus has it. */
        ping = harness_list_devices(h->bus, NULL);

        if (!call_delete_partition(a, p1, &error))
                harness_fail("DeletePartition %s: %s", p1, error->message);
        else if (stat(p1, &st) == 0)
                harness_fail("%s still exists when DeletePartition returned", p1);
        deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        while (removed.n == 0 && g_get_monotonic_time() < deadline)
                if (!g_main_context_iteration(context, FALSE))
                        g_usleep(10 * 1000);
        g_dbus_connection_signal_unsubscribe(h->bus, id);
        while (g_main_context_iteration(context, FALSE))
                ;
        g_main_context_pop_thread_default(context);

        if (removed.n == 0)
                harness_fail("no PartitionRemoved within 10 s of deleting %s", p1);
        else if (!removed.partition || !g_str_has_suffix(removed.partition, base))
                harness_fail("PartitionRemoved(%s, %s), expected %s", removed.device, removed.partition, p1);

        /* The same through loopctl: a new partition in the freed slot, deleted again. */
        if (harness_loopctl_ok(h, HARNESS_USER_A, "partition", "add", device, "--size", "8M", NULL)) {
                if (stat(p1, &st) < 0)
                        harness_fail("loopctl partition add did not make %s", p1);
                if (harness_loopctl_ok(h, HARNESS_USER_A, "partition", "delete", p1, NULL) &&
                        stat(p1, &st) == 0)
                        harness_fail("%s still exists when loopctl partition delete returned", p1);
        }
        detach_own(a, device);
        g_free(removed.device);
        g_free(removed.partition);

        dump = oracle_sfdisk_dump(image, 0);
        if (g_strcmp0(dump->label, "dos") != 0 || dump->partitions->len != 0)
                harness_fail(
                        "after DeletePartition, sfdisk shows label %s with %u partitions; expected dos with none",
                        dump->label, dump->partitions->len);
}

void test_create_over_existing_file(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *home = user_home(h, HARNESS_USER_A);
        g_autofree char *image = g_build_filename(home, "precious.img", NULL);
        g_autofree char *text = g_strnfill(MiB, 'p'), *before = NULL, *after = NULL, *device = NULL;
        g_auto(HarnessRun) run = { 0 };

        g_assert_true(g_file_set_contents(image, text, -1, NULL));
        g_assert_cmpint(chown(image, harness_uid_of(HARNESS_USER_A), harness_gid_of(HARNESS_USER_A)), ==, 0);
        before = test_sha256_of_file(image);
        harness_loopctl(h, HARNESS_USER_A, &run, "create", image, "--size", "64M", "--table", "dos", NULL);
        harness_check_loopctl_refused("loopctl create over an existing file", &run, "exist");
        after = test_sha256_of_file(image);
        if (g_strcmp0(before, after) != 0)
                harness_fail("loopctl create changed %s: sha256 %s before, %s after", image, before, after);
        device = device_of(image);
        if (device)
                harness_fail("loopctl create left %s bound to %s", device, image);
}

void test_create_failing_format_leaves_nothing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *home = user_home(h, HARNESS_USER_A);
        g_autofree char *small = g_build_filename(home, "small.img", NULL);
        g_autofree char *labelled = g_build_filename(home, "named.img", NULL);
        g_autofree char *long_label = g_strnfill(300, 'x');
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(GPtrArray) loops = NULL;

        /* mkfs.xfs refuses a filesystem under 300 MB: the daemon's Format fails after the image exists. */
        harness_loopctl(h, HARNESS_USER_A, &run, "create", small, "--size", "16M", "--fs", "xfs", NULL);
        harness_check_loopctl_refused("loopctl create --size 16M --fs xfs", &run, NULL);
        if (g_file_test(small, G_FILE_TEST_EXISTS))
                harness_fail("loopctl create left %s behind after its format step failed", small);

        /* A label loopd refuses, after the table was written. */
        harness_loopctl(h, HARNESS_USER_A, &run, "create", labelled, "--size", "64M", "--table", "gpt",
                "--fs", "ext4", "--label", long_label, NULL);
        harness_check_loopctl_refused("loopctl create --label <300 bytes>", &run, "label");
        if (g_file_test(labelled, G_FILE_TEST_EXISTS))
                harness_fail("loopctl create left %s behind after its format step failed", labelled);

        loops = oracle_loops_backed_by(h->tmpdir);
        for (guint i = 0; i < loops->len; i++)
                harness_fail("loopctl create left %s attached", (char *)loops->pdata[i]);
}

/* loopctl create in one go: a table, one partition to the end with a filesystem; or a filesystem on the
 * whole image. The image stays attached (loopctl(1)) until the user detaches it. */
void test_create_in_one_go(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *home = user_home(h, HARNESS_USER_A);
        g_autofree char *parted = g_build_filename(home, "parted.img", NULL);
        g_autofree char *whole = g_build_filename(home, "whole.img", NULL);
        g_autofree char *device = NULL;
        g_autoptr(SfdiskDump) dump = NULL;

        if (harness_loopctl_ok(h, HARNESS_USER_A, "create", parted, "--size", "64M", "--table", "gpt",
                    "--fs", "ext4", "--label", "data", NULL)) {
                device = device_of(parted);
                if (!device)
                        harness_fail("loopctl create did not leave %s attached", parted);
                else
                        harness_loopctl_ok(h, HARNESS_USER_A, "detach", device, NULL);
                g_clear_pointer(&device, g_free);
                dump = oracle_sfdisk_dump(parted, 0);
                if (g_strcmp0(dump->label, "gpt") != 0 || dump->partitions->len != 1)
                        harness_fail("sfdisk shows label %s with %u partitions, expected gpt with one",
                                dump->label, dump->partitions->len);
                else {
                        const DumpPartition *p = &g_array_index(dump->partitions, DumpPartition, 0);
                        guint64 end = (p->start + p->size) * 512, usable_end = (dump->last_lba + 1) * 512;

                        if (p->start * 512 != MiB || end > usable_end || usable_end - end >= MiB)
                                harness_fail("the partition spans [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                                             "), expected from 1 MiB to the end (%" G_GUINT64_FORMAT ")",
                                        p->start * 512, end, usable_end);
                        check_dump_partition(
                                dump, 0, MiB, p->size * 512, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
                }
                check_blkid(parted, MiB, "ext4", "data");
        }

        if (harness_loopctl_ok(h, HARNESS_USER_A, "create", whole, "--size", "32M", "--fs", "vfat",
                    "--label", "WHOLE", NULL)) {
                device = device_of(whole);
                if (!device)
                        harness_fail("loopctl create did not leave %s attached", whole);
                else
                        harness_loopctl_ok(h, HARNESS_USER_A, "detach", device, NULL);
                check_blkid(whole, 0, "vfat", "WHOLE");
        }
}
