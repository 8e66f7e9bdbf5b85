/* images.h: test images made with real tools (sfdisk, mkfs.*, xorriso, qemu-img), independent oracles
 * (sfdisk --json, blkid -p, losetup, findmnt), and the privilege gate of the privileged suites. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* TRUE when the suite can touch the kernel (root and /dev/loop-control). Otherwise it skips the test,
 * or fails it when CI=true: CI is root with loop devices, so a skip there hides a broken suite. */
gboolean test_require_privileges(void);
/* The pid of the mkfs named name (mke2fs for ext2) formatting device (loopd's: its mkfs uid for the
 * device), past its execve, or 0. */
pid_t test_find_mkfs(dev_t device, const char *name);
/* Stops pid and waits until the kernel says it is stopped: false when it had exited already. */
bool test_stop_running(pid_t pid);
/* A test that cannot run (why) skips, or fails under CI=true. */
void test_cannot_run(const char *why);

/* A fresh directory under /tmp for one test; test_tmpdir_remove() deletes it and all it holds. */
char *test_tmpdir_new(void);
void test_tmpdir_remove(const char *dir);

/* Runs a shell command line built with printf-style arguments. test_sh() asserts exit status 0 and
 * returns stdout (never NULL); test_sh_status() returns the exit status and sets *ret_out (may be NULL). */
char *test_sh(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* A shell command that makes an encrypted (LUKS) 16 MiB qcow2 at NAME (a string literal; "%s" for a
 * test_sh() argument). qemu-img times its key derivation in CPU time first, and on a busy machine that can
 * fail ("Unable to get accurate CPU usage"): a short iteration time, and up to three tries. */
#define QEMU_IMG_ENCRYPTED_QCOW2(name)                                                  \
        "for try in 1 2 3; do qemu-img create -q -f qcow2 --object secret,id=s,data=x " \
        "-o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 " name " 16M && break; done"
int test_sh_status(char **ret_out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* The contents of a (sysfs, procfs) file whose path is fmt, stripped; NULL when it cannot be read. */
char *test_read_sysfs(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* The value of the "key:" line of /proc/PID/status ("Uid": "0\t0\t0\t0"), stripped; NULL when pid is gone
 * or has no such line. */
char *test_proc_status(pid_t pid, const char *key);
/* Whether the comma-separated list options (mount options; NULL: none) has item, exactly. */
gboolean test_options_have(const char *options, const char *item);
/* The sha256 of a file's bytes, in hex; NULL, and the test failed, when it cannot be read. */
char *test_sha256_of_file(const char *path);
/* CRC-32 (IEEE 802.3, as GPT headers and entry arrays use it). */
uint32_t test_crc32(const uint8_t *p, size_t n);

/* Creates a sparse file of size bytes. */
void image_create(const char *path, uint64_t size);
/* Writes a partition table with sfdisk from a script; sector_size 0 = 512. */
void image_sfdisk(const char *path, const char *script, unsigned sector_size);
/* Makes a filesystem of fstype ("ext4", "xfs", "btrfs", "vfat", "swap", ...) with label (may be NULL) and
 * writes it into path at offset (bytes), size bytes long, keeping the image sparse. Returns the UUID blkid
 * reads from the new filesystem (free with g_free). */
char *image_mkfs_at(const char *path, uint64_t offset, uint64_t size, const char *fstype, const char *label);
/* A hybrid ISO (xorriso): an iso9660 filesystem on the whole image plus an MBR with an EFI (vfat)
 * partition, as distribution boot media are. volid is the ISO's label. */
void image_make_hybrid_iso(const char *path, const char *volid);

/* Oracles. sfdisk --json of an image, sector size as given (0 = 512): the "partitiontable" object. */
JsonNode *oracle_sfdisk_json(const char *path, unsigned sector_size);
/* blkid -p -o export of a node or file at an offset: KEY=VALUE pairs in a hash table (TYPE, LABEL, UUID...).
 */
GHashTable *oracle_blkid(const char *path, uint64_t offset);

/* losetup --list --json's row for device (NAME, BACK-FILE, OFFSET, SIZELIMIT, AUTOCLEAR, RO, LOG-SEC,
 * PARTSCAN, DIO; numbers as this losetup prints them), a new reference; NULL when losetup does not list it.
 */
JsonObject *oracle_losetup(const char *device);
/* Loop devices whose backing file lies under dir, as `losetup -l` lists them (their names, "/dev/loopN").
 * The suites assert this is empty at the end of every test. */
GPtrArray *oracle_loops_backed_by(const char *dir);
/* Mount points at or below dir (its own included), in mount order, from /proc/self/mountinfo. */
GPtrArray *oracle_mounts_below(const char *dir);
/* Loop devices the kernel has bound to exactly this file (sysfs; no subprocess, so cheap enough to call in a
 * loop from many threads). */
GPtrArray *oracle_loops_bound_to(const char *file);
/* /dev/loopNp* nodes that exist for /dev/loopN. */
GPtrArray *oracle_partition_nodes(const char *device);
/* Emergency cleanup for a test's teardown: detaches every loop device backed by a file under dir (and
 * unmounts whatever of them is mounted). Never fails the test; logs what it had to clean. */
void test_cleanup_loops_under(const char *dir);
