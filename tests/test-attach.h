/* test-attach.h: what the attach suite's files share: what loopd reports against what the oracles say,
 * attaching with each client, and the tests (test-attach.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

#define GiB (MiB * 1024)

#define TiB (GiB * 1024)

typedef struct Part {
        char *node;
        guint number;
        guint64 offset, size;
        char *part_type, *part_name, *fstype, *label, *uuid, *mount_point;
} Part;

/* A filesystem the test itself made, so its label and UUID are known without asking anyone. */
typedef struct WantFs {
        guint number; /* 0: the whole device */
        const char *fstype;
        const char *label;
        char *uuid; /* what blkid read from the fresh filesystem (image_mkfs_at) */
} WantFs;

typedef struct Want {
        const char *image;
        unsigned sector_size; /* the logical sector size the device must get */
        bool has_table; /* the image (at offset) carries a partition table sfdisk reads */
        guint64 offset, size_limit;
        bool read_only;
        const WantFs *fs; /* filesystems the test made, terminated by fstype NULL; may be NULL */
} Want;

#define check_str(what, got, want)                                                                          \
        do {                                                                                                \
                if (g_strcmp0((got), (want)) != 0)                                                          \
                        g_test_fail_printf("%s: %s is '%s', expected '%s'", source, (what), (got), (want)); \
        } while (0)

/* test-attach.c */
void part_free(gpointer data);
GPtrArray *parts_from_variant(GVariant *a);
char *json_str(JsonObject *o, const char *member);
gint64 json_int(JsonObject *o, const char *member);
gboolean json_member_bool(JsonObject *o, const char *member);
GPtrArray *parts_from_json(JsonNode *array);
Part *parts_find(GPtrArray *parts, guint number);
bool part_type_equal(const char *a, const char *b);
bool is_extended_type(const char *type);
guint64 sys_u64(const char *fmt, ...);
char *basename_of(const char *device);
char *loopctl_attach(Harness *h, const char *image, const char *const *args, GPtrArray **ret_parts);
char *raw_attach(Harness *h, const char *image, int open_flags, GVariant *options);
void raw_detach(Harness *h, const char *device);
void loopctl_detach(Harness *h, const char *what);
void attach_verify_detach(Harness *h, const Want *w);

/* attach-verify.c */
guint partition_number(const char *node);
void compare_device_row(const char *source, const char *device, const char *backing, guint64 offset,
        guint64 size_limit, guint32 sector_size, gboolean read_only, gboolean autoclear, gboolean managed,
        guint32 owner, JsonObject *losetup);
void verify_attached(Harness *h, const char *device, const Want *w, GPtrArray *reported);
void verify_detached(Harness *h, const char *device, const char *image);

/* attach-layouts.c */
void test_gpt_ext4_xfs(Harness *h, gconstpointer data);
void test_mbr_extended_logical(Harness *h, gconstpointer data);
void test_partitionless_ext4(Harness *h, gconstpointer data);
void test_hybrid_iso_efi(Harness *h, gconstpointer data);
void test_gpt_4k_sectors(Harness *h, gconstpointer data);
void test_mbr_4k_phone(Harness *h, gconstpointer data);
void test_ambiguous_sector_size_refused(Harness *h, gconstpointer data);
void test_no_partition_scan(Harness *h, gconstpointer data);

/* attach-options.c */
void test_offset_size_limit(Harness *h, gconstpointer data);
void test_disk_at_offset(Harness *h, gconstpointer data);
void test_read_only(Harness *h, gconstpointer data);
void test_rdonly_fd_read_write_refused(Harness *h, gconstpointer data);
void test_sparse_1tib(Harness *h, gconstpointer data);
void test_overlay_and_encrypted_refused(Harness *h, gconstpointer data);
void test_detach_by_image(Harness *h, gconstpointer data);
void test_list_agrees_with_losetup(Harness *h, gconstpointer data);

/* attach-refusals.c */
void test_non_root_not_authorized(Harness *h, gconstpointer data);
void test_invalid_options(Harness *h, gconstpointer data);
void test_non_regular_fd_refused(Harness *h, gconstpointer data);
void test_partitions_survive_udev_watch(Harness *h, gconstpointer data);

/* attach-udisks.c */
void test_udisks_ignores_loopd_devices(Harness *h, gconstpointer data);
