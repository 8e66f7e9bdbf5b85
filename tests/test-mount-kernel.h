/* test-mount-kernel.h: what the mount-kernel suite's files share: its fixture, its helpers and the tests
 * (test-mount-kernel.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "harness.h"
#include "mount.h"

#define USER_UID 65534 /* nobody: the user the mounts are for */

#define OTHER_UID 65533 /* another unprivileged user, who must not get in */

#define MB (1024 * 1024)

typedef struct Fixture {
        Scratch scratch; /* the test's directory (scratch.dir, mode 0755) */
        char *media; /* <dir>/media: the media directory, made by the library */
        GPtrArray *targets; /* mount points the test made; teardown makes sure they are gone */
        GPtrArray *devices; /* loop devices the test attached; teardown detaches them */
} Fixture;

#define REQUIRE(f) SCRATCH_REQUIRE(&(f)->scratch)

/* test-mount-kernel.c */
char *path_in(Fixture *f, const char *name);
char *attach(Fixture *f, const char *image, bool read_only);
dev_t devnum_of(const char *node);
void populate(Fixture *f, const char *node, const char *text);
char *findmnt(const char *target, const char *column);
bool is_mountpoint(const char *path);
int sh_as(uid_t uid, char **ret_out, const char *line);
char *mount_for(Fixture *f, const char *node, const char *fstype, const char *user_options, bool read_only,
        int fuse, const char *name, int *ret_r);
void assert_safe_mount(const char *target, const char *node, bool fuse);
void assert_found_in_mount_table(const char *node, const char *target);
void assert_not_in_mount_table(const char *node, const char *target);
void unmount_and_remove(Fixture *f, const char *target);
void assert_user_reads(const char *target, const char *file, const char *expected);
void assert_other_user_kept_out(const char *target, const char *file);
GArray *helpers_serving(const char *target);
bool process_exited(pid_t pid);
void fuse_unmount_and_check_helper(Fixture *f, const char *target);

/* mount-kernel-points.c */
void test_point_user_dir_only_user_may_enter(Fixture *f, gconstpointer data);
void test_point_unique_names(Fixture *f, gconstpointer data);
void test_point_remove_only_under_media_dir(Fixture *f, gconstpointer data);
void test_point_refuses_symlinked_user_dir(Fixture *f, gconstpointer data);
void test_point_refuses_symlinked_media_dir(Fixture *f, gconstpointer data);
void test_point_refuses_foreign_owned_user_dir(Fixture *f, gconstpointer data);
void test_point_refuses_writable_parent(Fixture *f, gconstpointer data);
void test_point_root_user_dir_has_no_acl(Fixture *f, gconstpointer data);

/* mount-kernel-filesystems.c */
void test_kernel_ext4_nosuid_nodev(Fixture *f, gconstpointer data);
void test_kernel_ext4_errors_panic_becomes_remount_ro(Fixture *f, gconstpointer data);
void make_dirty_journal(Fixture *f, const char *node);
void test_kernel_ext4_read_only_does_not_replay_journal(Fixture *f, gconstpointer data);
void test_kernel_xfs_read_only_does_not_replay_log(Fixture *f, gconstpointer data);
void test_kernel_xfs_read_back(Fixture *f, gconstpointer data);
void test_kernel_btrfs_read_back(Fixture *f, gconstpointer data);
void test_kernel_squashfs_read_back(Fixture *f, gconstpointer data);
void test_kernel_unmount_busy(Fixture *f, gconstpointer data);
void test_kernel_refuses_unsafe_calls(Fixture *f, gconstpointer data);
void test_kernel_read_only_device_needs_read_only(Fixture *f, gconstpointer data);
void test_kernel_label_needing_escapes(Fixture *f, gconstpointer data);

/* mount-kernel-fuse.c */
void test_fuse_iso9660_as_user(Fixture *f, gconstpointer data);
void test_fuse_vfat_as_user(Fixture *f, gconstpointer data);
void test_fuse_exfat_as_user_writes(Fixture *f, gconstpointer data);
void test_fuse_ntfs_as_user_writes(Fixture *f, gconstpointer data);
void test_fuse_ext4_via_fuse2fs_read_only(Fixture *f, gconstpointer data);
void test_fuse_ext4_via_fuse2fs_writes_reach_the_device(Fixture *f, gconstpointer data);
void test_fuse_squashfs_via_squashfuse(Fixture *f, gconstpointer data);
void test_fuse_helper_failure_leaves_nothing_mounted(Fixture *f, gconstpointer data);

/* mount-kernel-sandbox.c */
void test_sandbox_fuseiso_confined(Fixture *f, gconstpointer data);
void test_sandbox_fusefat_confined(Fixture *f, gconstpointer data);
void test_sandbox_exfat_fuse_confined(Fixture *f, gconstpointer data);
void test_sandbox_fuse2fs_confined(Fixture *f, gconstpointer data);
void test_sandbox_squashfuse_confined(Fixture *f, gconstpointer data);
void test_sandbox_ntfs_3g_unconfined(Fixture *f, gconstpointer data);
void test_sandbox_hostile_driver_stays_in(Fixture *f, gconstpointer data);
void test_sandbox_read_only_node_stays_read_only(Fixture *f, gconstpointer data);
void test_sandbox_hostile_driver_control(Fixture *f, gconstpointer data);
