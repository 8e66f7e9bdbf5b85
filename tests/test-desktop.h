/* test-desktop.h: what the desktop suite's files share: its fixture (loopd mounting under the real
 * /run/media, the build's umount.loopd where libmount looks for it), its helpers and oracles, and its tests
 * (test-desktop.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <libmount.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"
#include "mount.h"

#define MiB (UINT64_C(1024) * 1024)
#define MEDIA "/run/media"
#define UTAB "/run/mount/utab"
#define HELPER "/usr/sbin/umount.loopd"
/* What was at HELPER before the test put its link there; a run killed before its teardown leaves it. */
#define HELPER_SAVED "/usr/sbin/.umount.loopd.saved-by-loopd-tests"
/* How long the kernel and loopd may take to let an unmounted autoclear device go. */
#define SETTLE_MS 10000

/* loopd's arguments in every desktop test: mount points under the real /run/media. */
extern const char *const desktop_loopd_args[];
extern const HarnessOptions desktop_options;

typedef struct Desktop {
        Harness h;
        bool linked; /* HELPER is our link */
        bool made_media, made_user_dir[2]; /* directories this test created, removed in teardown */
        GPtrArray *mount_points; /* every mount point the test saw, for the teardown */
} Desktop;

void desktop_setup(Desktop *d, gconstpointer data);
void desktop_teardown(Desktop *d, gconstpointer data);
#define desktop_add(path, func, opts) \
        g_test_add((path), Desktop, (opts), desktop_setup, (func), desktop_teardown)
#define DESKTOP_REQUIRE(d) HARNESS_REQUIRE(&(d)->h)

/* Images */
char *make_ext4(Desktop *d, const char *name, const char *label);
char *make_vfat(Desktop *d, const char *name, const char *label);
char *make_iso(Desktop *d, const char *name, const char *volid);

/* What `loopctl open` gave. */
typedef struct Opened {
        char *device;
        char *mount_point; /* the first (the only one, for these images) */
} Opened;
void opened_clear(Opened *o);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Opened, opened_clear)
bool open_as(Desktop *d, const char *user, const char *image, Opened *ret);

/* Oracles */
char *fstype_at(const char *target);
bool mounted_at(const char *target);
char *utab_options(const char *target);
void utab_drop(const char *target);
char *option_value(const char *options, const char *name);
void check_utab(const char *target, const char *name, const char *icon);
bool still_bound(Desktop *d, const char *device);
void check_closed(Desktop *d, const Opened *o);
void check_untouched(Desktop *d, const Opened *o);

/* umount and gio as a user */
int umount_as(Desktop *d, const char *user, HarnessRun *run, const char *option, const char *path);
int gio_as(Desktop *d, const char *user, HarnessRun *run, const char *const *args);
typedef struct GioMount {
        char *name;
        char *path;
        char *icons; /* "themed icons:" line, e.g. "[drive-harddisk]  [drive]" */
        char *symbolic_icons;
        bool can_unmount, can_eject;
} GioMount;
void gio_mount_free(gpointer p);
GPtrArray *gio_mounts(Desktop *d, const char *user);
GioMount *gio_mount_at(GPtrArray *list, const char *path);
char *first_icon(const char *icons);

/* desktop-close.c */
void test_umount_as_user(Desktop *d, gconstpointer data);
extern const HarnessOptions opts_umount_ext4;
extern const HarnessOptions opts_umount_iso;
extern const HarnessOptions opts_umount_ext4_lazy;
void test_gio_unmount(Desktop *d, gconstpointer data);
void test_gio_eject(Desktop *d, gconstpointer data);
void test_other_users_mount_refused(Desktop *d, gconstpointer data);
void test_other_unmounts_leave_no_utab(Desktop *d, gconstpointer data);

/* desktop-names.c */
void test_userspace_options_hostile_names(void);
void test_gio_lists_names_and_icons(Desktop *d, gconstpointer data);
