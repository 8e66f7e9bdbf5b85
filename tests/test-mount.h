/* test-mount.h: what the mount suite's files share: its helpers, its oracles and its tests (test-mount.c
 * registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* test-mount.c */
void give_image_to(const char *path, const char *user);
void populate(Harness *h, const char *image, guint64 offset, const char *script);
char *raw_label(const char *image, guint64 offset, guint64 length);
GVariant *mount_options(const char *options, gboolean read_only);
GVariant *call_mount_image(
        GDBusConnection *c, const char *path, int open_flags, GVariant *options, GError **error);
const char *reply_mount_point(GVariant *reply, const char *node);
/* The device of a MountImage reply, and the nodes of its partitions 1 and 2 (/dev/loopNp1, /dev/loopNp2). */
char *reply_device(GVariant *reply, char **ret_p1, char **ret_p2);
char *json_member(JsonNode *node, const char *member);
char *user_attach(Harness *h, const char *user, const char *image, bool writable);
char *user_mount(Harness *h, const char *user, const char *node, bool read_only);
void user_loopctl_ok(Harness *h, const char *user, const char *verb, const char *arg);
JsonObject *findmnt_at(const char *target);
GPtrArray *targets_of(const char *node);
guint check_media_mounts_safe(Harness *h);
char *user_dir(Harness *h, const char *user);
GPtrArray *user_dir_entries(Harness *h, const char *user);
void check_user_dir_empty(Harness *h, const char *user);
bool check_mount(
        Harness *h, const char *user, const char *node, const char *mount_point, const char *fstype_prefix);
bool mount_is_read_only(const char *mount_point);
void check_unmounted(const char *mount_point);
void check_gone(Harness *h, const char *device);
int run_as(Harness *h, const char *user, char **ret_out, const char *const *argv);
char *read_as(Harness *h, const char *user, const char *path);
int write_as(Harness *h, const char *user, const char *path, const char *text, char **ret_err);
GPtrArray *holders_of(dev_t rdev, const char *comm);
dev_t rdev_of(const char *node);
bool loopd_alive(Harness *h);

/* mount-filesystems.c */
void test_filesystem_read_back(Harness *h, gconstpointer data);
extern const HarnessOptions opts_ext4;
extern const HarnessOptions opts_xfs;
extern const HarnessOptions opts_btrfs;
extern const HarnessOptions opts_squashfs;
void test_iso9660_owned_by_caller(Harness *h, gconstpointer data);
void test_vfat_partition_owned_by_caller(Harness *h, gconstpointer data);
void test_open_hybrid_iso_mounts_both(Harness *h, gconstpointer data);
char *make_user_ext4(Harness *h, const char *name, const char *label);
void test_read_write_persists_after_reattach(Harness *h, gconstpointer data);
void test_read_only_refuses_writes(Harness *h, gconstpointer data);

/* mount-refusals.c */
void test_hostile_label(Harness *h, gconstpointer data);
extern const HarnessOptions opts_label_dot_dot_etc;
extern const HarnessOptions opts_label_slash;
extern const HarnessOptions opts_label_dot;
extern const HarnessOptions opts_label_dot_dot;
extern const HarnessOptions opts_label_300_bytes;
extern const HarnessOptions opts_label_254_bytes;
extern const HarnessOptions opts_label_control;
extern const HarnessOptions opts_label_format;
extern const HarnessOptions opts_label_bad_utf8;
void test_same_label_twice_distinct(Harness *h, gconstpointer data);
void test_label_invalid_utf8_listed_as_utf8(Harness *h, gconstpointer data);
char *make_two_partitions(Harness *h, const char *name);
void check_nothing_mounted(Harness *h, const char *node);
void test_option_refused(Harness *h, gconstpointer data);
extern const HarnessOptions opts_option_suid;
extern const HarnessOptions opts_option_dev;
extern const HarnessOptions opts_option_uid_0;
extern const HarnessOptions opts_option_ro_suid;
extern const HarnessOptions opts_option_comma_uid;
extern const HarnessOptions opts_option_x_foo;
extern const HarnessOptions opts_option_newline;
void test_fstype_outside_the_list_refused(Harness *h, gconstpointer data);
void test_non_loop_node_not_managed(Harness *h, gconstpointer data);
void test_setuid_and_device_nodes_inert(Harness *h, gconstpointer data);

/* mount-unmount.c */
void test_unmount_removes_mount_point(Harness *h, gconstpointer data);
void test_close_leaves_nothing(Harness *h, gconstpointer data);
void test_mount_image_autoclear_goes_with_last_unmount(Harness *h, gconstpointer data);
void test_second_mount_already_mounted(Harness *h, gconstpointer data);
void test_unmount_not_mounted(Harness *h, gconstpointer data);
void test_mount_image_nothing_to_mount(Harness *h, gconstpointer data);
void test_unsupported_filesystem(Harness *h, gconstpointer data);
void test_fuse_helper_exits_with_unmount(Harness *h, gconstpointer data);
void test_unmount_busy_while_file_open(Harness *h, gconstpointer data);
void test_other_user_cannot_enter_or_unmount(Harness *h, gconstpointer data);
void test_user_fuse_mount_posing_as_device_ignored(Harness *h, gconstpointer data);
void test_user_fuse_decoy_does_not_release_autoclear(Harness *h, gconstpointer data);

/* mount-open-twice.c */
void test_open_twice_same_device_and_mounts(Harness *h, gconstpointer data);
void test_open_again_mounts_what_is_missing(Harness *h, gconstpointer data);
void test_attach_second_writer_refused(Harness *h, gconstpointer data);

/* loopctl-cli-real.c */
void test_loopctl_real_not_a_loop_device(Harness *h, gconstpointer data);
void test_loopctl_real_writable_says_read_only(Harness *h, gconstpointer data);
