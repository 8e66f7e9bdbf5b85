/* hostile.h: what the hostile suite's files share: the world a failed call must leave as it was, checks of
 * it, partition tables written byte by byte, calls in flight and processes the tests start and kill. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "harness.h"
#include "loopd-bus.h"

#define KiB (UINT64_C(1024))
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)
#define DBUS_ERROR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"
#define DBUS_ERROR_INCONSISTENT "org.freedesktop.DBus.Error.InconsistentMessage"

/* The helper mode of the suite's binary: a polkit authority that never answers (hanging_polkit_main()). */
#define HANGING_POLKIT_ARG "--hanging-polkit-authority"

/* ---- small helpers ---- */

/* "/dev/loop7" → "loop7" */
const char *short_name(const char *device);
/* The file backing device according to sysfs, or NULL when it is not bound. */
char *backing_of(const char *device);
/* The size of a block device in bytes (sysfs), 0 when unknown. */
guint64 device_size(const char *device);
/* A string of n copies of c. */
char *repeat(char c, gsize n);
/* A copy of base with data as its test data, for a table of cases (lives as long as the test program). */
const HarnessOptions *hostile_options_with(const HarnessOptions *base, gconstpointer data);
/* Detaches device as root with unmount, if it is still bound to something under the test's directory. */
void cleanup_device(Harness *h, const char *device);
/* The mount options of the filesystem mounted at target: mountinfo's per-mount and superblock options. */
char *mount_options_of(const char *target);

/* ---- the world a failed call must leave as it was ---- */

typedef struct World {
        char *loops; /* losetup rows of devices backed under the test's directory */
        char *nodes; /* their partition nodes in /dev */
        char *mounts; /* mounts under the test's directory or of those devices */
        char *state; /* the state directory: names and contents */
        char *media; /* mount points in the media directory (not the per-user directories) */
} World;

void world_clear(World *w);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(World, world_clear)
void world_snapshot(Harness *h, World *w);

/* The state directory says what loopd reports: one record per managed device, with the device's current
 * disk sequence number, and nothing else. */
void check_state_consistent(const char *file, int line, Harness *h);
/* loopd answers and the world is as before. */
#define assert_world_unchanged(h, before) check_world(__FILE__, __LINE__, (h), (before))
void check_world(const char *file, int line, Harness *h, const World *before);
/* After a test: nothing of ours bound, no partition node of a free device we used, nothing mounted. */
void check_nothing_left(Harness *h, GPtrArray *devices_used);

/* oracle_loops_bound_to() after a bounded wait for them to go: a device someone held open when it was
 * detached goes away with autoclear when they close it. */
GPtrArray *loops_bound_to_after_settling(const char *file);

/* ---- calls ---- */

/* A connection as test user A, with the fake authority (if any) allowing everything: what a hostile local
 * user with the default desktop policy (active session: yes) has. */
GDBusConnection *connect_allowed_user(Harness *h);
/* Fails the test unless error is one of the D-Bus errors names (NULL-terminated). */
void error_name_is_one_of(const GError *error, const char *const *names);

/* An Attach in flight; its completion is dispatched in the thread-default main context. */
typedef struct Pending {
        GDBusConnection *connection;
        const char *who;
        GVariant *reply;
        GError *error;
        guint *n_done; /* incremented when it completes */
} Pending;
void pending_start_attach(Pending *p, const char *image);
/* Runs the thread-default context until *n_done reaches n or timeout_ms passed. */
bool iterate_until(GMainContext *context, guint *n_done, guint n, guint timeout_ms);
/* A GSourceFunc that sets the bool at user_data. */
gboolean flag_timeout(gpointer user_data);

/* ---- processes ---- */

/* argv with the private bus as system bus, killed with the test process (PR_SET_PDEATHSIG). */
GSubprocess *spawn_with_bus(
        Harness *h, GSubprocessFlags flags, const char *log_path, const char *const *argv, GError **error);
void kill_and_reap(GSubprocess *p);

/* ---- partition tables, byte by byte ---- */

typedef struct GptPart {
        uint64_t first_lba, last_lba; /* inclusive, 512-byte sectors */
} GptPart;

void pwrite_all(int fd, const void *buf, size_t n, uint64_t offset);
/* A protective MBR and primary and backup GPT headers (valid CRCs) for a disk the headers say has
 * disk_sectors sectors, with n partitions (128 entries); the file itself is file_size bytes. */
void gpt_write(const char *path, uint64_t disk_sectors, uint64_t file_size, const GptPart *parts, size_t n);
/* One 16-byte MBR-style entry at offset of the file, and the 0x55aa signature of a sector. */
void mbr_entry_at(int fd, uint64_t offset, uint8_t type, uint32_t start, uint32_t count);
void boot_signature_at(int fd, uint64_t sector);

/* ---- the images (hostile-images.c) ---- */

/* Registers the hostile partition table and filesystem tests. */
void hostile_images_register(const HarnessOptions *base);

/* ---- the races (hostile-races.c) and faults (hostile-faults.c) ---- */

void test_concurrent_clients_and_losetup(Harness *h, gconstpointer data);
void test_limit_under_concurrent_calls(Harness *h, gconstpointer data);
void test_devices_churning_while_listing(Harness *h, gconstpointer data);
void test_client_killed_mid_call(Harness *h, gconstpointer data);
void test_polkit_vanishes_mid_call(Harness *h, gconstpointer data);
void test_backing_file_deleted(Harness *h, gconstpointer data);
void test_udevd_killed_mid_run(Harness *h, gconstpointer data);
void test_loopd_killed_during_attach(Harness *h, gconstpointer data);
void test_loopd_killed_during_format(Harness *h, gconstpointer data);
void test_full_disk_under_sparse_image(Harness *h, gconstpointer data);
/* harness_setup() with systemd-udevd started for the test (LOOPD_TEST_UDEV=1 just for it). */
void setup_with_udev(Harness *h, gconstpointer options);
/* The helper mode: owns org.freedesktop.PolicyKit1 and never answers. */
int hanging_polkit_main(void);
