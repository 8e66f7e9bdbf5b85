/* test-modify.h: what the modify suite's files share (issue 19: Format, CreatePartition, DeletePartition and
 * loopctl's format, partition and create): its fixture, helpers, oracles and tests (test-modify.c registers
 * them). The oracles are sfdisk, blkid -p, mtools, debugfs and the image file's bytes, never loopd. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* The fixture is the harness's (every polkit check allowed); setup also checks the tools the oracles run.
 * opts: a const HarnessOptions * (its data is the test's own), or NULL. */
void modify_setup(Harness *h, gconstpointer opts);
#define modify_add(path, func, opts)                                                                  \
        g_test_add((path), Harness, (opts), modify_setup, (void (*)(Harness *, gconstpointer))(func), \
                harness_teardown)

/* A directory under the test's directory that belongs to user (mode 0755): where the user makes images. */
char *user_home(Harness *h, const char *user);

/* The one loop device bound to image, or NULL (the test fails when more than one is). */
char *device_of(const char *image);
/* Whether the fake authority was asked about action. */
bool polkit_asked(Harness *h, const char *action);
/* device's partition node number n ("/dev/loop3" 2 -> "/dev/loop3p2"). */
char *partition_node(const char *device, unsigned n);

/* D-Bus calls of issue 19 on conn; NULL label: no option; erase: {"erase": true}. Return whether they
 * succeeded; error set if not. */
bool call_format(GDBusConnection *c, const char *node, const char *type, const char *label, bool erase,
        GError **error);
/* CreatePartition; the new node in *ret_node (may be NULL). */
bool call_create_partition(GDBusConnection *c, const char *device, guint64 offset, guint64 size,
        const char *type, const char *name, char **ret_node, GError **error);
bool call_delete_partition(GDBusConnection *c, const char *node, GError **error);

/* One partition of `sfdisk --dump`, in sectors of the dump's sector size. */
typedef struct DumpPartition {
        guint64 start, size;
        char *type; /* as sfdisk prints it: "6", "83", a GUID in capitals */
        char *name; /* GPT name, or NULL */
        bool bootable; /* DOS: the boot (active) flag */
} DumpPartition;

typedef struct SfdiskDump {
        char *label; /* "dos", "gpt", or NULL when sfdisk found no table */
        unsigned sector_size;
        guint64 last_lba; /* GPT's last-lba, 0 for dos */
        GArray *partitions; /* DumpPartition */
} SfdiskDump;
void sfdisk_dump_free(SfdiskDump *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SfdiskDump, sfdisk_dump_free)
/* `sfdisk --dump` of the image file as root; sector_size 4096 reads it through a `losetup -b 4096` of the
 * test's own (detached again). Never NULL; label NULL when sfdisk failed. */
SfdiskDump *oracle_sfdisk_dump(const char *image, unsigned sector_size);
/* Checks one partition of the dump: start and size in bytes, type (sfdisk's spelling, case-insensitive). */
void check_dump_partition(const SfdiskDump *d, guint i, guint64 start, guint64 size, const char *type);
/* Checks that blkid -p at offset of image finds type (NULL: nothing at all) and label (NULL: any). */
void check_blkid(const char *image, guint64 offset, const char *type, const char *label);
/* mtype of ::/name in the FAT filesystem at offset of image (NULL when mtools cannot read it). */
char *fat_read(const char *image, guint64 offset, const char *name);
/* debugfs's cat of /name in the ext* filesystem at [offset, offset + size) of image, read from a copy of
 * those bytes (NULL when debugfs cannot read it). */
char *ext_read(Harness *h, const char *image, guint64 offset, guint64 size, const char *name);

/* A 64 MiB DOS image made by root's tools, owned by user: partition 1 (type 83) at 1 MiB, 32 MiB long, an
 * ext2 filesystem labelled "one" on it; the rest free. */
#define BASE_P1_OFFSET (1 * MiB)
#define BASE_P1_SIZE (32 * MiB)
#define BASE_SIZE (64 * MiB)
char *make_base_image(Harness *h, const char *name, const char *user);

/* modify-recipe.c */
void test_recipe_dos(Harness *h, gconstpointer data);
void test_recipe_gpt_4k(Harness *h, gconstpointer data);

/* modify-refusals.c */
typedef struct Refusal Refusal;
void test_refused(Harness *h, gconstpointer data);
extern const HarnessOptions refuse_format_mounted, refuse_format_disk_partition_mounted,
        refuse_format_other_user, refuse_create_other_user, refuse_delete_other_user,
        refuse_format_not_allowed, refuse_format_read_only, refuse_create_read_only, refuse_label_slash,
        refuse_label_slash_vfat, refuse_label_newline, refuse_label_300_bytes, refuse_format_type,
        refuse_create_type, refuse_create_past_end, refuse_create_overlap, refuse_delete_mounted;

/* modify-more.c */
void test_format_empty_partition(Harness *h, gconstpointer data);
void test_format_empty_whole_device(Harness *h, gconstpointer data);
void test_format_partition_bytes_only(Harness *h, gconstpointer data);
void test_create_size_0_fills_aligned(Harness *h, gconstpointer data);
void test_delete_removes_node(Harness *h, gconstpointer data);
void test_table_write_keeps_partition_tail(Harness *h, gconstpointer data);
void test_create_over_existing_file(Harness *h, gconstpointer data);
void test_create_failing_format_leaves_nothing(Harness *h, gconstpointer data);
void test_create_in_one_go(Harness *h, gconstpointer data);
