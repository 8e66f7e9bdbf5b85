/* test-hostile.c: loopd against hostile callers, hostile images, races and faults. Every case checks the
 * contract's error and then that nothing changed that should not have: loopd still answers, the kernel's
 * loop devices and partition nodes (losetup, /dev), the mount table and the state and media directories are
 * as they were, and the state directory agrees with what loopd reports as managed. This file holds the
 * hostile input (fds, numbers, option dictionaries, signatures, names) and registers every test;
 * hostile-images.c holds the partition tables and filesystems, hostile-races.c the races, hostile-faults.c
 * the faults and hostile-world.c what they all look at. */
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
/* Hostile file descriptors, numbers and option dictionaries for Attach and MountImage */

typedef enum FdKind {
        FD_IMAGE_RDWR = 0,
        FD_IMAGE_RDONLY,
        FD_ROOT_ONLY_RDONLY, /* a root-only 0600 image the caller got read-only (loopd could write it) */
        FD_DIRECTORY,
        FD_SOCKET,
        FD_PIPE,
        FD_DEV_NULL,
        FD_BLOCK_DEVICE, /* one of the test's own loop devices */
        FD_O_PATH,
        FD_WRITE_ONLY,
        FD_MEMFD, /* an anonymous regular file */
        FD_EMPTY, /* a zero-byte file */
        FD_511_BYTES,
} FdKind;

typedef struct AttachCase {
        const char *method; /* "Attach" or "MountImage" */
        FdKind fd;
        const char *options; /* the a{sv} as GVariant text; NULL: {} */
        GVariant *(*make_options)(void); /* or built in code */
        gint32 bad_index; /* when not 0: the handle sent is this instead of the fd's index */
        const char *error; /* the expected D-Bus error; NULL: the call must succeed */
        const char *needle; /* the error message must mention this (the field) */
        bool read_only; /* on success: the device must be read-only */
        guint32 sector_size; /* on success: the sector size it must have (0: 512) */
} AttachCase;

/* Makes the fd a case asks for. *ret_device is set to a loop device the test attached for it. */
static int make_fd(Harness *h, FdKind kind, int extra[2], char **ret_device)
{
        g_autofree char *image = harness_image_path(h, "input.img");
        int fd = -1;

        switch (kind) {
        case FD_IMAGE_RDWR:
                return open(image, O_RDWR | O_CLOEXEC);
        case FD_IMAGE_RDONLY:
                return open(image, O_RDONLY | O_CLOEXEC);
        case FD_ROOT_ONLY_RDONLY: {
                g_autofree char *root_only = harness_image_path(h, "root-only.img");
                image_create(root_only, 16 * MiB);
                g_assert_cmpint(chmod(root_only, 0600), ==, 0);
                return open(root_only, O_RDONLY | O_CLOEXEC);
        }
        case FD_DIRECTORY:
                return open(h->image_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        case FD_SOCKET:
                g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, extra), ==, 0);
                fd = extra[0];
                extra[0] = -1;
                return fd;
        case FD_PIPE:
                g_assert_cmpint(pipe2(extra, O_CLOEXEC), ==, 0);
                fd = extra[0];
                extra[0] = -1;
                return fd;
        case FD_DEV_NULL:
                return open("/dev/null", O_RDWR | O_CLOEXEC);
        case FD_BLOCK_DEVICE: {
                g_autoptr(GError) error = NULL;
                g_autofree char *own = harness_image_path(h, "own-device.img");
                image_create(own, 16 * MiB);
                if (!harness_attach_path(h->bus, own, O_RDWR, NULL, ret_device, &error)) {
                        g_test_fail_printf("attaching the test's own device failed: %s", error->message);
                        return -1;
                }
                return open(*ret_device, O_RDWR | O_CLOEXEC);
        }
        case FD_O_PATH:
                return open(image, O_PATH | O_CLOEXEC);
        case FD_WRITE_ONLY:
                return open(image, O_WRONLY | O_CLOEXEC);
        case FD_MEMFD:
                fd = memfd_create("hostile", MFD_CLOEXEC);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(ftruncate(fd, 8 * MiB), ==, 0);
                return fd;
        case FD_EMPTY: {
                g_autofree char *empty = harness_image_path(h, "empty.img");
                image_create(empty, 0);
                return open(empty, O_RDWR | O_CLOEXEC);
        }
        case FD_511_BYTES: {
                g_autofree char *small = harness_image_path(h, "511.img");
                image_create(small, 511);
                return open(small, O_RDWR | O_CLOEXEC);
        }
        }
        g_assert_not_reached();
}

static void test_attach_input(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const AttachCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "input.img");
        g_autofree char *own_device = NULL, *device = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);
        int extra[2] = { -1, -1 }, fd, index;

        if (!user)
                return;
        image_create(image, 16 * MiB);
        fd = make_fd(h, c->fd, extra, &own_device);
        g_assert_cmpint(fd, >=, 0);
        if (fd < 0)
                return;
        index = g_unix_fd_list_append(fds, fd, NULL);
        close(fd);
        world_snapshot(h, &before);

        GVariant *options = c->make_options ? c->make_options()
                : c->options                ? g_variant_new_parsed(c->options)
                                            : harness_empty_options();
        reply = harness_call(user, c->method,
                g_variant_new("(h@a{sv})", c->bad_index ? c->bad_index : index, options), fds,
                G_DBUS_CALL_FLAGS_NONE, &error);

        if (c->error) {
                harness_assert_dbus_error(error, c->error, c->needle);
                g_assert_null(reply);
                assert_world_unchanged(h, &before);
        } else {
                harness_assert_no_error(error);
                if (reply) {
                        g_variant_get_child(reply, 0, "s", &device);
                        g_autofree char *ro = test_read_sysfs("/sys/block/%s/ro", short_name(device));
                        g_autofree char *ss = test_read_sysfs(
                                "/sys/block/%s/queue/logical_block_size", short_name(device));
                        g_assert_cmpstr(ro, ==, c->read_only ? "1" : "0");
                        g_assert_cmpuint(g_ascii_strtoull(ss ? ss : "0", NULL, 10), ==,
                                c->sector_size ? c->sector_size : 512);
                        g_assert_true(harness_detach(user, device, NULL, &error));
                        harness_assert_no_error(error);
                        g_clear_error(&error);
                }
                assert_world_unchanged(h, &before);
        }
        if (extra[1] >= 0)
                close(extra[1]);
        g_clear_object(&fds); /* its copy of a loop device's fd would keep the device busy */
        cleanup_device(h, device);
        cleanup_device(h, own_device);
}

/* 10000 unknown keys: refused at the first, without reading the rest. */
static GVariant *options_many_unknown_keys(void)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        for (guint i = 0; i < 10000; i++) {
                g_autofree char *key = g_strdup_printf("unknown-%u", i);
                g_variant_builder_add(&b, "{sv}", key, g_variant_new_boolean(TRUE));
        }
        return g_variant_builder_end(&b);
}

/* A 1 MiB key. */
static GVariant *options_huge_key(void)
{
        g_autofree char *key = repeat('k', MiB);
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&b, "{sv}", key, g_variant_new_boolean(TRUE));
        return g_variant_builder_end(&b);
}

/* A valid option first, then one of the wrong type: nothing of the first may stick. */
static GVariant *options_valid_then_wrong(void)
{
        return g_variant_new_parsed("{'read-only': <true>, 'offset': <int64 4096>}");
}

#define IA LOOPD_ERROR_INVALID_ARGUMENT
static const AttachCase attach_cases[] = {
        /* fds */
        { "Attach", FD_DIRECTORY, .error = IA, .needle = "directory" },
        { "Attach", FD_SOCKET, .error = IA, .needle = "socket" },
        { "Attach", FD_PIPE, .error = IA, .needle = "pipe" },
        { "Attach", FD_DEV_NULL, .error = IA, .needle = "character device" },
        { "Attach", FD_BLOCK_DEVICE, .error = IA, .needle = "block device" },
        { "Attach", FD_O_PATH, .error = IA, .needle = "O_PATH" },
        { "Attach", FD_WRITE_ONLY, .error = IA, .needle = "write-only" },
        { "Attach", FD_ROOT_ONLY_RDONLY, "{'read-only': <false>}", .error = IA, .needle = "read-only" },
        { "Attach", FD_ROOT_ONLY_RDONLY, .read_only = true },
        { "Attach", FD_IMAGE_RDONLY, "{'read-only': <false>}", .error = IA, .needle = "read-only" },
        { "Attach", FD_MEMFD },
        { "Attach", FD_IMAGE_RDWR, .bad_index = 7, .error = DBUS_ERROR_INCONSISTENT },
        { "Attach", FD_IMAGE_RDWR, .bad_index = -1, .error = DBUS_ERROR_INCONSISTENT },
        { "Attach", FD_EMPTY, .error = IA, .needle = "image" },
        { "Attach", FD_511_BYTES, .error = IA, .needle = "image" },
        { "MountImage", FD_DIRECTORY, .error = IA, .needle = "directory" },
        { "MountImage", FD_O_PATH, .error = IA, .needle = "O_PATH" },
        { "MountImage", FD_WRITE_ONLY, .error = IA, .needle = "write-only" },
        { "MountImage", FD_PIPE, .error = IA, .needle = "pipe" },
        { "MountImage", FD_IMAGE_RDONLY, "{'writable': <true>}", .error = IA, .needle = "read-only" },
        { "MountImage", FD_EMPTY, .error = IA },
        /* numbers */
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 33554432>}", .error = IA, .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 16777216>}", .error = IA, .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 18446744073709551615>}", .error = IA,
                .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 18446744073709551104>}", .error = IA,
                .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 512>, 'size-limit': <uint64 18446744073709551104>}",
                .error = IA, .needle = "size-limit" },
        { "Attach", FD_IMAGE_RDWR, "{'size-limit': <uint64 18446744073709551615>}", .error = IA,
                .needle = "size-limit" },
        { "Attach", FD_IMAGE_RDWR, "{'size-limit': <uint64 16777728>}", .error = IA,
                .needle = "size-limit" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 100>}", .error = IA, .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 2048>, 'sector-size': <uint32 4096>}",
                .sector_size = 4096 },
        { "Attach", FD_IMAGE_RDWR, "{'size-limit': <uint64 100>}", .error = IA, .needle = "size-limit" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 0>}" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 4096>}", .sector_size = 4096 },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 3>}", .error = IA, .needle = "sector-size" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 8192>}", .error = IA, .needle = "sector-size" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 2147483648>}", .error = IA,
                .needle = "sector-size" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint32 4294967295>}", .error = IA,
                .needle = "sector-size" },
        { "MountImage", FD_IMAGE_RDWR, "{'sector-size': <uint32 3>}", .error = IA, .needle = "sector-size" },
        /* option dictionaries */
        { "Attach", FD_IMAGE_RDWR, "{'bogus': <true>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "bogus" },
        { "Attach", FD_IMAGE_RDWR, "{'': <true>}", .error = DBUS_ERROR_INVALID_ARGS },
        { "Attach", FD_IMAGE_RDWR, "{'Offset': <uint64 0>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "Offset" },
        { "Attach", FD_IMAGE_RDWR, .make_options = options_huge_key, .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "kkkkkkkk" },
        { "Attach", FD_IMAGE_RDWR, .make_options = options_many_unknown_keys,
                .error = DBUS_ERROR_INVALID_ARGS, .needle = "unknown-0" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <uint64 0>, 'offset': <uint64 512>}",
                .error = DBUS_ERROR_INVALID_ARGS, .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <int64 4096>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <'4096'>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'offset': <[uint64 1, 2]>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "offset" },
        { "Attach", FD_IMAGE_RDWR, "{'read-only': <<true>>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "read-only" },
        { "Attach", FD_IMAGE_RDWR, "{'read-only': <uint32 1>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "read-only" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint64 4096>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "sector-size" },
        { "Attach", FD_IMAGE_RDWR, "{'sector-size': <uint16 4096>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "sector-size" },
        { "Attach", FD_IMAGE_RDWR, "{'autoclear': <{'x': <true>}>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "autoclear" },
        { "Attach", FD_IMAGE_RDWR, "{'partition-scan': <(true,)>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "partition-scan" },
        { "Attach", FD_IMAGE_RDWR, "{'direct-io': <objectpath '/'>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "direct-io" },
        { "Attach", FD_IMAGE_RDWR, .make_options = options_valid_then_wrong,
                .error = DBUS_ERROR_INVALID_ARGS, .needle = "offset" },
        { "MountImage", FD_IMAGE_RDWR, "{'writable': <'yes'>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "writable" },
        { "MountImage", FD_IMAGE_RDWR, "{'offset': <uint64 0>}", .error = DBUS_ERROR_INVALID_ARGS,
                .needle = "offset" },
};

static const char *const attach_case_names[G_N_ELEMENTS(attach_cases)] = {
        "fd/directory",
        "fd/socket",
        "fd/pipe",
        "fd/dev-null",
        "fd/block-device",
        "fd/o-path",
        "fd/write-only",
        "fd/rdonly-of-root-only-file-asking-read-write",
        "fd/rdonly-of-root-only-file-gives-read-only-device",
        "fd/rdonly-asking-read-write",
        "fd/memfd-is-a-regular-file",
        "fd/index-beyond-fd-list",
        "fd/negative-index",
        "image/zero-bytes",
        "image/511-bytes",
        "mount-image/fd-directory",
        "mount-image/fd-o-path",
        "mount-image/fd-write-only",
        "mount-image/fd-pipe",
        "mount-image/rdonly-asking-writable",
        "mount-image/zero-bytes",
        "number/offset-beyond-eof",
        "number/offset-at-eof",
        "number/offset-max",
        "number/offset-max-aligned",
        "number/offset-plus-size-limit-overflows",
        "number/size-limit-max",
        "number/size-limit-beyond-eof",
        "number/offset-unaligned",
        "number/offset-512-aligned-with-sector-size-4096",
        "number/size-limit-below-one-sector",
        "number/sector-size-0-detects",
        "number/sector-size-4096",
        "number/sector-size-3",
        "number/sector-size-8192",
        "number/sector-size-2-31",
        "number/sector-size-max",
        "mount-image/sector-size-3",
        "option/unknown-key",
        "option/empty-key",
        "option/key-case-matters",
        "option/1-mib-key",
        "option/10000-unknown-keys",
        "option/duplicate-key",
        "option/offset-int64",
        "option/offset-string",
        "option/offset-array",
        "option/read-only-nested-variant",
        "option/read-only-uint32",
        "option/sector-size-uint64",
        "option/sector-size-uint16",
        "option/autoclear-dict",
        "option/partition-scan-struct",
        "option/direct-io-object-path",
        "option/valid-then-wrong-type",
        "mount-image/option-writable-string",
        "mount-image/option-of-attach-only",
};

/* ---------------------------------------------------------------------------------------------------- */
/* Calls with the wrong signature: sd-bus refuses them before any handler runs */

typedef struct RawCase {
        const char *method;
        const char *params; /* GVariant text of the whole tuple; NULL: no arguments */
        guint n_fds; /* fds to pass along (the image, opened read-write) */
} RawCase;

static const RawCase raw_cases[] = {
        { "Attach", NULL, 0 },
        { "Attach", "('/tmp/image', @a{sv} {})", 0 },
        { "Attach", "(handle 0, @a{ss} {})", 1 },
        { "Attach", "(handle 0, @a{sv} {}, 'extra')", 1 },
        { "Attach", "(handle 0,)", 1 },
        { "MountImage", "(0, @a{sv} {})", 1 },
        { "Detach", "(uint32 0, @a{sv} {})", 0 },
        { "Detach", "('loop0',)", 0 },
        { "ListPartitions", "(objectpath '/org/loopd1/device/loop0',)", 0 },
        { "Mount", "('/dev/loop0', @a{sv} {}, @a{sv} {})", 0 },
        { "Unmount", "(@as [],)", 0 },
        { "ListDevices", "('x',)", 0 },
};

static const char *const raw_case_names[G_N_ELEMENTS(raw_cases)] = {
        "signature/attach-no-arguments",
        "signature/attach-path-instead-of-fd",
        "signature/attach-options-a-ss",
        "signature/attach-extra-argument",
        "signature/attach-no-options",
        "signature/mount-image-int-instead-of-fd",
        "signature/detach-uint32-device",
        "signature/detach-no-options",
        "signature/list-partitions-object-path",
        "signature/mount-two-option-dicts",
        "signature/unmount-string-array",
        "signature/list-devices-with-argument",
};

/* An image whose name carries a newline and a priority prefix: loopd logs the name, and a line of its own
 * would reach the journal as a message at that priority. The log keeps it inside one line, escaped. */
static void test_newline_in_image_name_stays_one_line(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "evil\n<0>forged by the image name.img");
        g_autofree char *device = NULL, *log = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        image_create(image, 8 * MiB);
        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        if (!device)
                return;
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);

        log = harness_loopd_log(h);
        g_assert_nonnull(strstr(log, "evil\\x0a<0>forged by the image name.img"));
        g_auto(GStrv) lines = g_strsplit(log, "\n", -1);
        for (char **l = lines; *l; l++)
                g_assert_false(g_str_has_prefix(*l, "<0>forged"));
}

/* An image whose name is not UTF-8: its owner can still detach it (the name goes to polkit, whose details
 * are D-Bus strings), and ListDevices shows the name repaired. */
static void test_non_utf8_image_name_detaches(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "latin1-\xe9t\xe9.img");
        g_autofree char *device = NULL;
        g_autoptr(GVariant) devices = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        image_create(image, 8 * MiB);
        g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_no_error(error);
        if (!device)
                return;
        devices = harness_list_devices(user, &error);
        harness_assert_no_error(error);
        g_assert_nonnull(devices);
        g_assert_true(g_variant_is_normal_form(devices));
        g_assert_true(harness_detach(user, device, NULL, &error));
        harness_assert_no_error(error);
        g_autoptr(GPtrArray) left = oracle_loops_bound_to(image);
        g_assert_cmpuint(left->len, ==, 0);
}

static void test_raw_signature(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const RawCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "raw.img");
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        image_create(image, 16 * MiB);
        for (guint i = 0; i < c->n_fds; i++) {
                int fd = open(image, O_RDWR | O_CLOEXEC);
                g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, (gint)i);
                close(fd);
        }
        world_snapshot(h, &before);
        reply = harness_call(user, c->method, c->params ? g_variant_new_parsed(c->params) : NULL,
                c->n_fds ? fds : NULL, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, DBUS_ERROR_INVALID_ARGS, NULL);
        assert_world_unchanged(h, &before);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Hostile device names, nodes and mount points */

typedef enum StringKind {
        STR_LITERAL = 0,
        STR_1_MIB,
        STR_PARTITION_OF_ATTACHED, /* "/dev/loopNp1" of a GPT image the test attached */
        STR_DISK_OF_ATTACHED, /* "/dev/loopN" of it */
        STR_MISSING_PARTITION_OF_ATTACHED, /* "/dev/loopNp9" */
} StringKind;

typedef struct StringCase {
        const char *method; /* Detach, ListPartitions, Mount, Unmount */
        StringKind kind;
        const char *literal;
        const char *error;
} StringCase;

#define NM LOOPD_ERROR_NOT_MANAGED
#define NF LOOPD_ERROR_NOT_FOUND
#define STRING_CASES(method, dev_error, unmount_relative)                                                 \
        { method, STR_LITERAL, "", IA }, { method, STR_LITERAL, "/dev/vda", NM },                         \
                { method, STR_LITERAL, "/dev/loop99999", NF },                                            \
                { method, STR_LITERAL, "loop0/../vda", unmount_relative },                                \
                { method, STR_LITERAL, "../../etc", unmount_relative },                                   \
                { method, STR_1_MIB, NULL, dev_error }, { method, STR_LITERAL, "/dev/loop0/../vda", NM }, \
                { method, STR_LITERAL, "/dev/loop1048576", NM },                                          \
                { method, STR_LITERAL, "/dev/loop4294967296", NM },                                       \
                { method, STR_LITERAL, "/dev/loop01", NM }, { method, STR_LITERAL, "/dev/loop-1", NM },   \
                { method, STR_LITERAL, "/dev/loop0\n", NM }, { method, STR_LITERAL, "/dev/loop 0", NM },  \
        {                                                                                                 \
                method, STR_LITERAL, "/dev//loop0", NM                                                    \
        }

static const StringCase string_cases[] = {
        STRING_CASES("Detach", NM, NM),
        { "Detach", STR_PARTITION_OF_ATTACHED, NULL, NM },
        { "Detach", STR_LITERAL, "/dev/loop99999p1", NM },
        STRING_CASES("ListPartitions", NM, NM),
        { "ListPartitions", STR_PARTITION_OF_ATTACHED, NULL, NM },
        STRING_CASES("Mount", NM, NM),
        { "Mount", STR_LITERAL, "/dev/loop99999p1", NF },
        { "Mount", STR_MISSING_PARTITION_OF_ATTACHED, NULL, NF },
        { "Mount", STR_DISK_OF_ATTACHED, NULL, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM },
        { "Mount", STR_LITERAL, "/etc/passwd", NM },
        STRING_CASES("Unmount", IA, IA),
        { "Unmount", STR_LITERAL, "/", NM },
        { "Unmount", STR_LITERAL, "/proc", NM },
        { "Unmount", STR_LITERAL, "/etc", LOOPD_ERROR_NOT_MOUNTED },
        { "Unmount", STR_LITERAL, "/nonexistent/../../etc/", LOOPD_ERROR_NOT_MOUNTED },
        { "Unmount", STR_DISK_OF_ATTACHED, NULL, LOOPD_ERROR_NOT_MOUNTED },
        { "Unmount", STR_PARTITION_OF_ATTACHED, NULL, LOOPD_ERROR_NOT_MOUNTED },
};

static char *string_case_name(const StringCase *c)
{
        g_autofree char *method = g_ascii_strdown(c->method, -1);
        g_autofree char *what = NULL;
        GString *s;

        switch (c->kind) {
        case STR_1_MIB:
                what = g_strdup("1-mib-string");
                break;
        case STR_PARTITION_OF_ATTACHED:
                what = g_strdup("partition-where-disk-expected");
                break;
        case STR_DISK_OF_ATTACHED:
                what = g_strdup("disk-where-partition-expected");
                break;
        case STR_MISSING_PARTITION_OF_ATTACHED:
                what = g_strdup("missing-partition-of-attached-disk");
                break;
        case STR_LITERAL:
                s = g_string_new(NULL);
                for (const char *p = c->literal; *p; p++) {
                        if (g_ascii_isalnum(*p))
                                g_string_append_c(s, *p);
                        else if (*p == '/')
                                g_string_append(s, s->len ? "-" : "");
                        else if (*p == '.')
                                g_string_append(s, "dot");
                        else
                                g_string_append_printf(s, "%%%02x", (unsigned char)*p);
                }
                what = g_string_free(s, FALSE);
                if (!*what) {
                        g_free(what);
                        what = g_strdup(c->literal[0] ? "root" : "empty");
                }
                break;
        }
        return g_strdup_printf("string/%s/%s", method, what);
}

static void test_string_input(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const StringCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "strings.img");
        g_autofree char *device = NULL, *arg = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(World) before = { 0 };
        GDBusConnection *user = connect_allowed_user(h);

        if (!user)
                return;
        if (c->kind != STR_LITERAL && c->kind != STR_1_MIB) {
                image_create(image, 32 * MiB);
                image_sfdisk(image, "label: gpt\nsize=8MiB, type=linux\ntype=linux\n", 0);
                g_assert_true(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
                if (!device)
                        return;
        }
        switch (c->kind) {
        case STR_LITERAL:
                arg = g_strdup(c->literal);
                break;
        case STR_1_MIB:
                arg = repeat('a', MiB);
                arg[0] = '/';
                break;
        case STR_PARTITION_OF_ATTACHED:
                arg = g_strconcat(device, "p1", NULL);
                break;
        case STR_DISK_OF_ATTACHED:
                arg = g_strdup(device);
                break;
        case STR_MISSING_PARTITION_OF_ATTACHED:
                arg = g_strconcat(device, "p9", NULL);
                break;
        }
        /* /dev/loop99999 must really not exist (loop999 did, after a benchmark of 1,024 devices) for its
         * NotFound. */
        if (strstr(arg, "loop99999")) {
                g_autofree char *bound = test_read_sysfs("/sys/block/loop99999/loop/backing_file");
                if (bound) {
                        g_test_skip("someone has loop99999 bound");
                        cleanup_device(h, device);
                        return;
                }
        }

        world_snapshot(h, &before);
        if (g_str_equal(c->method, "ListPartitions"))
                reply = harness_call(
                        user, c->method, g_variant_new("(s)", arg), NULL, G_DBUS_CALL_FLAGS_NONE, &error);
        else
                reply = harness_call(user, c->method,
                        g_variant_new("(s@a{sv})", arg, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, c->error, NULL);
        if (error && strlen(error->message) > 8192)
                g_test_fail_printf(
                        "the error message quotes the whole argument (%zu bytes)", strlen(error->message));
        assert_world_unchanged(h, &before);

        if (device) {
                g_clear_error(&error);
                g_assert_true(harness_detach(user, device, NULL, &error));
                harness_assert_no_error(error);
        }
        cleanup_device(h, device);
}

int main(int argc, char **argv)
{
        static const HarnessOptions fake = { .polkit = HARNESS_POLKIT_FAKE };
        static const HarnessOptions none = { .polkit = HARNESS_POLKIT_NONE };
        static const char *const limit_args[] = { "--max-devices-per-user", "3", NULL };
        static const HarnessOptions limit = { .polkit = HARNESS_POLKIT_FAKE, .loopd_args = limit_args };
        /* A bounded udev wait well below the clients' call timeout: a slow udev gives Timeout, not silence.
         */
        static const char *const udev_args[] = { "--partition-timeout", "3", NULL };
        static const HarnessOptions udev = { .polkit = HARNESS_POLKIT_FAKE, .loopd_args = udev_args };
        static const HarnessOptions no_loopd = { .polkit = HARNESS_POLKIT_FAKE, .no_loopd = true };
        static const HarnessOptions no_loopd_stall = {
                .polkit = HARNESS_POLKIT_FAKE, .no_loopd = true, .data = "stall"
        };

        if (argc == 2 && g_str_equal(argv[1], HANGING_POLKIT_ARG))
                return hanging_polkit_main();

        harness_init(&argc, &argv);

        for (guint i = 0; i < G_N_ELEMENTS(attach_cases); i++) {
                g_autofree char *path = g_strconcat("/loopd/hostile/", attach_case_names[i], NULL);
                harness_add(path, test_attach_input, hostile_options_with(&fake, &attach_cases[i]));
        }
        for (guint i = 0; i < G_N_ELEMENTS(raw_cases); i++) {
                g_autofree char *path = g_strconcat("/loopd/hostile/", raw_case_names[i], NULL);
                harness_add(path, test_raw_signature, hostile_options_with(&fake, &raw_cases[i]));
        }
        for (guint i = 0; i < G_N_ELEMENTS(string_cases); i++) {
                g_autofree char *name = string_case_name(&string_cases[i]);
                g_autofree char *path = g_strconcat("/loopd/hostile/", name, NULL);
                harness_add(path, test_string_input, hostile_options_with(&fake, &string_cases[i]));
        }
        hostile_images_register(&fake);
        harness_add("/loopd/hostile/string/non-utf8-image-name-detaches", test_non_utf8_image_name_detaches,
                &fake);
        harness_add("/loopd/hostile/log/newline-in-image-name-stays-one-line",
                test_newline_in_image_name_stays_one_line, &fake);

        harness_add("/loopd/hostile/concurrency/8-clients-25-cycles-with-losetup-stealing",
                test_concurrent_clients_and_losetup, &udev);
        harness_add("/loopd/hostile/concurrency/devices-bound-and-unbound-while-listing",
                test_devices_churning_while_listing, &fake);
        harness_add("/loopd/hostile/limit/per-user-limit-under-concurrent-calls",
                test_limit_under_concurrent_calls, &limit);

        harness_add("/loopd/hostile/fault/client-killed-while-polkit-thinks", test_client_killed_mid_call,
                &fake);
        harness_add("/loopd/hostile/fault/polkit-vanishes-mid-call", test_polkit_vanishes_mid_call, &none);
        harness_add("/loopd/hostile/fault/backing-file-deleted-while-attached", test_backing_file_deleted,
                &fake);
        g_test_add("/loopd/hostile/fault/udevd-killed-mid-run", Harness, &udev, setup_with_udev,
                (void (*)(Harness *, gconstpointer))test_udevd_killed_mid_run, harness_teardown);
        harness_add("/loopd/hostile/fault/loopd-killed-while-adding-partitions",
                test_loopd_killed_during_attach, &no_loopd);
        harness_add("/loopd/hostile/fault/loopd-killed-before-recording-attach",
                test_loopd_killed_during_attach, &no_loopd_stall);
        harness_add("/loopd/hostile/fault/loopd-killed-during-format-takes-its-mkfs",
                test_loopd_killed_during_format, &no_loopd);
        harness_add("/loopd/hostile/fault/full-disk-under-sparse-image", test_full_disk_under_sparse_image,
                &fake);

        return g_test_run();
}
