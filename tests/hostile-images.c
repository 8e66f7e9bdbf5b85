/* hostile-images.c: the hostile suite's images: partition tables written byte by byte to run past the end,
 * overlap, fill all 128 GPT entries or chain extended partitions in a loop, and ext4 filesystems that are
 * corrupt, use an unknown feature or ask the kernel to panic on errors. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Hostile partition tables */

typedef enum ImageKind {
        IMG_GPT_PAST_EOF, /* the headers describe a disk 8 times the file */
        IMG_GPT_ENTRIES_PAST_EOF, /* headers fit, entries run past the end */
        IMG_GPT_OVERLAPPING,
        IMG_GPT_128_PARTITIONS,
        IMG_MBR_PAST_EOF,
        IMG_MBR_OVERLAPPING,
        IMG_MBR_EXTENDED_SELF_LOOP, /* an EBR whose link points to itself */
        IMG_MBR_EXTENDED_TWO_CYCLE, /* EBR A → B → A */
        IMG_MBR_EXTENDED_POINTS_BACK_TO_MBR,
        IMG_GPT_AND_MBR_GARBAGE, /* random bytes with both signatures */
} ImageKind;

static const char *const image_kind_names[] = {
        "image/gpt-headers-describe-a-bigger-disk",
        "image/gpt-partitions-run-past-eof",
        "image/gpt-overlapping-partitions",
        "image/gpt-128-partitions",
        "image/mbr-partitions-run-past-eof",
        "image/mbr-overlapping-partitions",
        "image/mbr-extended-chain-loops-on-itself",
        "image/mbr-extended-chain-two-cycle",
        "image/mbr-extended-chain-points-back-to-mbr",
        "image/random-bytes-with-both-signatures",
};

static const ImageKind image_kinds[] = { IMG_GPT_PAST_EOF, IMG_GPT_ENTRIES_PAST_EOF, IMG_GPT_OVERLAPPING,
        IMG_GPT_128_PARTITIONS, IMG_MBR_PAST_EOF, IMG_MBR_OVERLAPPING, IMG_MBR_EXTENDED_SELF_LOOP,
        IMG_MBR_EXTENDED_TWO_CYCLE, IMG_MBR_EXTENDED_POINTS_BACK_TO_MBR, IMG_GPT_AND_MBR_GARBAGE };

/* Writes the image; returns how many partitions its table holds at most (an upper bound for what may be
 * listed) and, in *ret_exact, how many must appear (-1: not known exactly). */
static guint make_hostile_image(const char *path, ImageKind kind, int *ret_exact)
{
        const uint64_t size = 32 * MiB, sectors = size / 512;
        int fd;

        *ret_exact = -1;
        switch (kind) {
        case IMG_GPT_PAST_EOF: {
                const GptPart p[] = { { 2048, 10239 }, { 10240, 8 * sectors - 2048 } };
                gpt_write(path, 8 * sectors, size, p, G_N_ELEMENTS(p));
                return 2;
        }
        case IMG_GPT_ENTRIES_PAST_EOF: {
                const GptPart p[] = { { 2048, 10239 }, { 10240, 4 * sectors },
                        { 2 * sectors, 3 * sectors } };
                gpt_write(path, sectors, size, p, G_N_ELEMENTS(p));
                return 3;
        }
        case IMG_GPT_OVERLAPPING: {
                const GptPart p[] = { { 2048, 20479 }, { 10240, 30719 }, { 2048, 4095 }, { 40000, 50000 } };
                gpt_write(path, sectors, size, p, G_N_ELEMENTS(p));
                return 4;
        }
        case IMG_GPT_128_PARTITIONS: {
                GptPart p[128];
                for (guint i = 0; i < 128; i++)
                        p[i] = (GptPart){ 2048 + i * 256, 2048 + i * 256 + 255 };
                gpt_write(path, sectors, size, p, G_N_ELEMENTS(p));
                *ret_exact = 128;
                return 128;
        }
        default:
                break;
        }

        image_create(path, size);
        fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        switch (kind) {
        case IMG_MBR_PAST_EOF:
                mbr_entry_at(fd, 446, 0x83, 2048, 8192);
                mbr_entry_at(fd, 462, 0x83, (uint32_t)sectors - 2048, 1u << 30);
                mbr_entry_at(fd, 478, 0x83, (uint32_t)sectors + 4096, 2048);
                mbr_entry_at(fd, 494, 0x83, 0xffffff00u, 0xffffffffu);
                boot_signature_at(fd, 0);
                close(fd);
                return 4;
        case IMG_MBR_OVERLAPPING:
                mbr_entry_at(fd, 446, 0x83, 2048, 20480);
                mbr_entry_at(fd, 462, 0x83, 4096, 20480);
                mbr_entry_at(fd, 478, 0x83, 2048, 20480);
                mbr_entry_at(fd, 494, 0x83, 0, 8);
                boot_signature_at(fd, 0);
                close(fd);
                return 4;
        case IMG_MBR_EXTENDED_SELF_LOOP:
                /* Extended partition at 2048; its EBR holds a logical partition and a link to itself. */
                mbr_entry_at(fd, 446, 0x05, 2048, 40960);
                boot_signature_at(fd, 0);
                mbr_entry_at(fd, 2048 * 512 + 446, 0x83, 2048, 4096);
                mbr_entry_at(fd, 2048 * 512 + 462, 0x05, 0, 40960);
                boot_signature_at(fd, 2048);
                close(fd);
                return 1 + 256;
        case IMG_MBR_EXTENDED_TWO_CYCLE:
                mbr_entry_at(fd, 446, 0x0f, 2048, 40960);
                boot_signature_at(fd, 0);
                mbr_entry_at(fd, 2048 * 512 + 446, 0x83, 1024, 2048);
                mbr_entry_at(fd, 2048 * 512 + 462, 0x05, 8192, 8192);
                boot_signature_at(fd, 2048);
                mbr_entry_at(fd, (2048 + 8192) * 512 + 446, 0x83, 1024, 2048);
                mbr_entry_at(fd, (2048 + 8192) * 512 + 462, 0x05, 0, 8192);
                boot_signature_at(fd, 2048 + 8192);
                close(fd);
                return 1 + 256;
        case IMG_MBR_EXTENDED_POINTS_BACK_TO_MBR:
                /* The extended partition starts at sector 0: its "EBR" is the MBR itself. */
                mbr_entry_at(fd, 446, 0x05, 0, (uint32_t)sectors);
                mbr_entry_at(fd, 462, 0x83, 2048, 2048);
                boot_signature_at(fd, 0);
                close(fd);
                return 2 + 256;
        case IMG_GPT_AND_MBR_GARBAGE: {
                g_autofree uint8_t *junk = g_malloc(MiB);
                for (gsize i = 0; i < MiB; i++)
                        junk[i] = (uint8_t)g_random_int();
                pwrite_all(fd, junk, MiB, 0);
                pwrite_all(fd, "EFI PART", 8, 512);
                boot_signature_at(fd, 0);
                close(fd);
                return 256;
        }
        default:
                g_assert_not_reached();
        }
}

/* Attach must succeed (or refuse cleanly), quickly; what it lists must lie inside the device and exist in
 * /dev; Detach must leave no node behind. */
static void test_hostile_image(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const ImageKind *kind = h->options->data;
        g_autofree char *image = harness_image_path(h, "hostile.img");
        g_autofree char *device = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);
        int exact;
        guint max_parts;
        gint64 t0;

        if (!user)
                return;
        max_parts = make_hostile_image(image, *kind, &exact);
        world_snapshot(h, &before);

        t0 = g_get_monotonic_time();
        if (!harness_attach_path(user, image, O_RDWR, NULL, &device, &error)) {
                const char *clean[] = { LOOPD_ERROR_INVALID_ARGUMENT, NULL };
                error_name_is_one_of(error, clean);
                assert_world_unchanged(h, &before);
                return;
        }
        g_test_message(
                "attached %s in %" G_GINT64_FORMAT " ms", device, (g_get_monotonic_time() - t0) / 1000);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 20 * G_USEC_PER_SEC);
        g_ptr_array_add(used, g_strdup(device));

        guint64 size = device_size(device);
        g_autoptr(GVariant) parts = harness_list_partitions(user, device, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
        if (parts) {
                GVariantIter it;
                const char *node;
                guint32 number;
                guint64 offset, psize;
                guint n = 0;

                g_variant_iter_init(&it, parts);
                while (g_variant_iter_next(&it, "(&suttssssss)", &node, &number, &offset, &psize, NULL, NULL,
                        NULL, NULL, NULL, NULL)) {
                        if (number == 0)
                                continue;
                        n++;
                        if (offset + psize > size || offset + psize < offset)
                                g_test_fail_printf("%s: offset %" G_GUINT64_FORMAT
                                                   " + size %" G_GUINT64_FORMAT
                                                   " lies outside the %" G_GUINT64_FORMAT "-byte device",
                                        node, offset, psize, size);
                        if (!g_ptr_array_find_with_equal_func(nodes, node, g_str_equal, NULL))
                                g_test_fail_printf("%s is listed but does not exist in /dev", node);
                }
                g_test_message("%u partitions listed, %u nodes in /dev", n, nodes->len);
                g_assert_cmpuint(n, <=, max_parts);
                g_assert_cmpuint(n, ==, nodes->len);
                if (exact >= 0)
                        g_assert_cmpuint(n, ==, (guint)exact);
        }
        /* Every kernel partition lies inside the device. */
        for (guint i = 0; i < nodes->len; i++) {
                const char *node = short_name(nodes->pdata[i]);
                g_autofree char *start = test_read_sysfs("/sys/block/%s/%s/start", short_name(device), node);
                g_autofree char *psize = test_read_sysfs("/sys/block/%s/%s/size", short_name(device), node);
                if (start && psize &&
                        (g_ascii_strtoull(start, NULL, 10) + g_ascii_strtoull(psize, NULL, 10)) * 512 > size)
                        g_test_fail_printf("the kernel's %s runs past the end of the device", node);
        }

        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        assert_world_unchanged(h, &before);
        check_nothing_left(h, used);
        cleanup_device(h, device);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Hostile filesystems */

typedef enum FsKind {
        FS_EXT4_CORRUPT_SUPERBLOCK, /* blkid still says ext4, the kernel refuses it */
        FS_EXT4_UNKNOWN_INCOMPAT_FEATURE,
} FsKind;

static const FsKind fs_kinds[] = { FS_EXT4_CORRUPT_SUPERBLOCK, FS_EXT4_UNKNOWN_INCOMPAT_FEATURE };
static const char *const fs_kind_names[] = {
        "filesystem/ext4-corrupt-superblock-mount-fails-cleanly",
        "filesystem/ext4-unknown-incompat-feature-mount-fails-cleanly",
};

static void make_broken_ext4(const char *image, FsKind kind)
{
        g_autofree char *q = g_shell_quote(image);

        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "broken"));
        /* debugfs rewrites the superblock with a valid checksum, so that blkid still recognises it. */
        if (kind == FS_EXT4_CORRUPT_SUPERBLOCK)
                g_free(test_sh("debugfs -w -R 'ssv inodes_per_group 0' %s 2>&1", q));
        else
                g_free(test_sh("debugfs -w -R 'ssv feature_incompat 0x80000242' %s 2>&1", q));
        g_autoptr(GHashTable) fs = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(fs, "TYPE"), ==, "ext4");
}

static void test_broken_filesystem(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const FsKind *kind = h->options->data;
        g_autofree char *image = harness_image_path(h, "broken.img");
        g_autofree char *device = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        make_broken_ext4(image, *kind);

        /* Mount of the attached device fails, leaving no mount point and the device attached. */
        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        g_ptr_array_add(used, g_strdup(device));
        world_snapshot(h, &before);
        reply = harness_call(user, "Mount", g_variant_new("(s@a{sv})", device, harness_empty_options()),
                NULL, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_FAILED, "ext4");
        g_clear_error(&error);
        assert_world_unchanged(h, &before);
        /* ...and read-only, which takes another path (noload). */
        g_clear_pointer(&reply, g_variant_unref);
        reply = harness_call(user, "Mount", g_variant_new_parsed("(%s, {'read-only': <true>})", device),
                NULL, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_FAILED, NULL);
        g_clear_error(&error);
        assert_world_unchanged(h, &before);
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);

        /* MountImage rolls back: nothing attached, nothing mounted. */
        world_snapshot(h, &before);
        int fd = open(image, O_RDONLY | O_CLOEXEC);
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
        g_clear_pointer(&reply, g_variant_unref);
        reply = harness_call(user, "MountImage", g_variant_new("(h@a{sv})", 0, harness_empty_options()), fds,
                G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_FAILED, NULL);
        assert_world_unchanged(h, &before);
        check_nothing_left(h, used);
        cleanup_device(h, device);
}

/* An ext4 whose superblock says errors=panic is mounted errors=remount-ro: a corrupt image must not take
 * the machine down. */
static void test_ext4_errors_panic(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "panic.img");
        g_autofree char *q = g_shell_quote(image);
        g_autofree char *device = NULL, *mount_point = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "panic"));
        g_free(test_sh("tune2fs -e panic %s >/dev/null", q));
        g_autofree char *said = test_sh("dumpe2fs -h %s 2>/dev/null | grep -i '^Errors behavior'", q);
        g_assert_nonnull(strstr(said, "Panic"));

        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        world_snapshot(h, &before);
        for (int ro = 0; ro < 2; ro++) {
                reply = harness_call(user, "Mount",
                        g_variant_new_parsed("(%s, {'read-only': <%b>})", device, ro), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                if (!reply)
                        break;
                g_variant_get(reply, "(s)", &mount_point);
                g_autofree char *options = mount_options_of(mount_point);
                g_test_message("%s mounted on %s with %s", device, mount_point, options);
                g_assert_nonnull(strstr(options, "errors=remount-ro"));
                g_assert_nonnull(strstr(options, "nosuid"));
                g_assert_nonnull(strstr(options, "nodev"));
                g_assert_null(strstr(options, "errors=panic"));
                g_clear_pointer(&reply, g_variant_unref);
                reply = harness_call(user, "Unmount",
                        g_variant_new("(s@a{sv})", mount_point, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                g_clear_pointer(&reply, g_variant_unref);
                g_clear_pointer(&mount_point, g_free);
        }
        assert_world_unchanged(h, &before);
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        cleanup_device(h, device);
}

void hostile_images_register(const HarnessOptions *base)
{
        for (guint i = 0; i < G_N_ELEMENTS(image_kinds); i++) {
                g_autofree char *path = g_strconcat("/loopd/hostile/", image_kind_names[i], NULL);
                harness_add(path, test_hostile_image, hostile_options_with(base, &image_kinds[i]));
        }
        for (guint i = 0; i < G_N_ELEMENTS(fs_kinds); i++) {
                g_autofree char *path = g_strconcat("/loopd/hostile/", fs_kind_names[i], NULL);
                harness_add(path, test_broken_filesystem, hostile_options_with(base, &fs_kinds[i]));
        }
        harness_add("/loopd/hostile/filesystem/ext4-errors-panic-mounted-remount-ro", test_ext4_errors_panic,
                base);
}
