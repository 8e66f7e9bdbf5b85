/* test-vdisk.h: what the vdisk suite's files share: its fixture (the harness, plus the qemu-storage-daemon
 * processes loopd started, killed by pid in teardown if a failed test left them), its images, helpers and
 * oracles, and its tests (test-vdisk.c registers them). The oracles are the kernel (sysfs, mountinfo),
 * /proc, qemu-img and the files themselves, never loopd. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)
/* --max-pending-per-user of the open case that counts pending calls: how many of one user may wait at once.
 */
#define MAX_PENDING_PER_USER 2
/* How long loopd may take to let an autoclear device, its export and its process go after the call that
 * ended them returned. */
#define SETTLE_MS 10000
/* The FUSE mount loopd serves a virtual disk's guest disk on: what findmnt calls it. */
#define EXPORT_FSTYPE "fuse.loopd-export"
#define QSD_PATH "/usr/bin/qemu-storage-daemon"

/* The test disk: 64 MiB, GPT, partition 1 ext4 (label VDEXT) at 1 MiB, 32 MiB long, partition 2 vfat
 * (label VDFAT) at 33 MiB, 30 MiB long; the last MiB before the backup table is free. */
#define DISK_SIZE (64 * MiB)
#define EXT4_OFFSET (1 * MiB)
#define EXT4_SIZE (32 * MiB)
#define VFAT_OFFSET (33 * MiB)
#define VFAT_SIZE (30 * MiB)
#define FREE_OFFSET (63 * MiB) /* 64 KiB here belong to no partition */
#define FREE_SIZE (64 * 1024)

/* A test's configuration (the test data). */
typedef struct VdiskCase {
        const char *format; /* qemu-img's name of the image format the test uses ("raw": none) */
        const char *const *loopd_args; /* extra loopd arguments (a stand-in qemu-storage-daemon) */
        gconstpointer data; /* the test's own */
} VdiskCase;

typedef struct Vdisk {
        Harness h;
        HarnessOptions options; /* the harness's, from the VdiskCase */
        const VdiskCase *c; /* never NULL */
} Vdisk;

void vdisk_setup(Vdisk *v, gconstpointer data);
void vdisk_teardown(Vdisk *v, gconstpointer data);
#define vdisk_add(path, func, c) \
        g_test_add((path), Vdisk, (c), vdisk_setup, (void (*)(Vdisk *, gconstpointer))(func), vdisk_teardown)
#define VDISK_REQUIRE(v) HARNESS_REQUIRE(&(v)->h)

/* Images (test-vdisk.c). */
/* A file the test disk holds and its contents. */
typedef struct DiskFile {
        const char *path; /* relative to the filesystem's root */
        const char *text; /* the contents, or NULL: size bytes made from seed */
        guint32 seed;
        gsize size;
} DiskFile;
extern const DiskFile ext4_files[];
extern const DiskFile vfat_files[];
/* The contents of a DiskFile. */
GBytes *disk_file_contents(const DiskFile *f);
/* The raw test disk at <image_dir>/name (the ext4 directory /shared belongs to HARNESS_USER_A). */
char *make_disk(Harness *h, const char *name);
/* qemu-img convert of raw to format, at <image_dir>/name; "raw": a copy. */
char *convert_disk(Harness *h, const char *raw, const char *format, const char *name);
/* qemu-img info's virtual-size of image (its size for a raw one). */
guint64 virtual_size(const char *image, const char *format);
/* qemu-img convert -O raw of image into a new file <image_dir>/name. */
char *guest_bytes(Harness *h, const char *image, const char *format, const char *name);
void give_to(const char *path, const char *user);
/* A deterministic pattern (for writes the test checks later). */
guint8 *pattern(guint32 seed, gsize size);

/* Talking to loopd. */
const char *json_member_string(JsonNode *node, const char *member);
/* `loopctl --json open [--writable] IMAGE` as user: the device; the mount points of partitions 1 and 2. */
char *open_image(
        Harness *h, const char *user, const char *image, bool writable, char **ret_mp1, char **ret_mp2);
/* A property of device's object, as conn sees it (NULL and the test failed when it cannot be read). */
GVariant *device_property(GDBusConnection *conn, const char *device, const char *name);
/* The backing_file ListDevices gives device (NULL when it does not list it). */
char *listed_backing_file(GDBusConnection *conn, const char *device);
/* device's entry in `loopctl --json list` as user, a new reference (NULL when it is not listed). */
JsonObject *loopctl_list_entry(Harness *h, const char *user, const char *device);

/* Oracles (vdisk-oracles.c). */
/* The device's loop attributes from sysfs: backing_file (NULL: unbound), ro, size in bytes. */
char *loop_backing(const char *device);
int loop_read_only(const char *device); /* -1: unbound */
guint64 loop_size(const char *device);
/* The fstype of the mount on top at target (mountinfo), or NULL. */
char *mount_fstype(const char *target);
char *exports_dir(Harness *h);
/* Checks that node is mounted on mount_point, right inside the media directory of HARNESS_USER_A,
 * nosuid,nodev, read-only or not as asked; fstype NULL: any. */
void check_mounted(
        Harness *h, const char *node, const char *mount_point, const char *fstype, bool read_only);
/* Checks device is served by an export: its loop device binds a file in <state>/exports/, mounted as
 * EXPORT_FSTYPE; returns that file (NULL and the test failed otherwise). */
char *check_export(Harness *h, const char *device);
/* The qemu-storage-daemon processes that belong to the test (holding one of its images, naming its
 * directory, or children of its loopd): pids. Zombies are gone. */
GArray *vdisk_servers(Harness *h);
/* The one qemu-storage-daemon process holding image open (0 when none or more than one, and the test
 * failed). */
pid_t server_of(Harness *h, const char *image);
/* Checks a process runs as uid with no effective capability. */
void check_sandboxed(pid_t pid, uid_t uid);
/* Checks that the files of the table are in the filesystem mounted at mount_point with their contents,
 * read by user. */
void check_files(Harness *h, const char *user, const char *mount_point, const DiskFile *files);
/* Checks the ImageFormat property of device. */
void check_image_format(GDBusConnection *conn, const char *device, const char *format);
/* Checks what an opened image shows: ImageFormat and BackingFile (the image) of its device, ListDevices'
 * and loopctl list's backing_file. */
void check_named(Harness *h, GDBusConnection *conn, const char *user, const char *device, const char *image,
        const char *format);
/* Nothing of the test's images is left: no loop device bound to a file under the test's directory, no
 * partition node of device (may be NULL), no mount under the media directory and no mount point
 * directory, no export (file, record or mount), no qemu-storage-daemon process. Waits up to SETTLE_MS for
 * what goes asynchronously. */
void check_nothing_left(Harness *h, const char *device);
/* Attach options asking for a read-write device: {"read-only": false} (floating). */
GVariant *vdisk_read_write_options(void);
bool qsd_writes_safe(void);
void check_writable_refused(Harness *h, GError *error, const char *image);
/* Whether pid runs (a zombie does not). */
bool process_running(pid_t pid);
/* Runs argv as user; the exit status, stdout in *ret_out (may be NULL). */
int run_as(Harness *h, const char *user, char **ret_out, const char *const *argv);

/* vdisk-open.c */
void test_open_same_files(Vdisk *v, gconstpointer data);
void test_open_read_only_by_default(Vdisk *v, gconstpointer data);
void test_open_again_many_times(Vdisk *v, gconstpointer data);
void test_attach_through_group(Vdisk *v, gconstpointer data);
void test_attach_read_only_unless_asked(Vdisk *v, gconstpointer data);

/* vdisk-write.c */
void test_attach_read_write_lands_in_image(Vdisk *v, gconstpointer data);
void test_open_writable_file_lands_in_image(Vdisk *v, gconstpointer data);

/* vdisk-crash.c */
void test_server_killed_detach_cleans_up(Vdisk *v, gconstpointer data);
void test_server_killed_under_mounts_close_cleans_up(Vdisk *v, gconstpointer data);
void test_server_fails_to_start(Vdisk *v, gconstpointer data);
void test_loopd_killed_export_adopted(Vdisk *v, gconstpointer data);

/* vdisk-refusals.c */
typedef struct Refusal Refusal;
extern const Refusal refuse_qcow2_backing, refuse_qcow2_data_file, refuse_vmdk_root_only_extent,
        refuse_vmdk_split_extents, refuse_vmdk_parent, refuse_vdi_differencing, refuse_vpc_differencing,
        refuse_qcow2_encrypted, refuse_qcow2_truncated, refuse_qcow2_corrupt, refuse_qcow2_16_eib;
void test_refused(Vdisk *v, gconstpointer data);
