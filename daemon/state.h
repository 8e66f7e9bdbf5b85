/* state.h: the devices loopd set up and the mount points it made, persisted in the state dir so that owners
 * and mounts survive a restart. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "macro.h"
#include "record.h"

/* Writes dir/name atomically: a temporary file (dir/.name.tmp), fsync, rename over the old one, fsync of the
 * directory. A reader (loopd after a crash) sees the old contents or the new, never a part. */
int state_write_file(const char *dir, const char *name, const char *contents);

/* Writes (atomically: temp file + rename) the record of one device in state_dir/devices/;
 * state_remove_device() removes it and its udev mark, state_remove_record() the record alone. */
int state_save_device(const char *state_dir, const ManagedDevice *d);
int state_remove_device(const char *state_dir, unsigned number);
int state_remove_record(const char *state_dir, unsigned number);

/* The mark loopd's udev rule looks for (it sets UDISKS_IGNORE=1 on the device and its partitions, so that
 * udisks2 does not show them a second time): an empty file state_dir/udev/loopN, made before loopN is bound
 * and removed with its record (state_remove_device()). */
int state_mark_udev(const char *state_dir, unsigned number, bool mark);
/* Whether loopN has its mark: loopd chose that number for a device of its own (and, with no record, did not
 * finish the attach). */
bool state_udev_marked(const char *state_dir, unsigned number);
/* Makes state_dir/udev/ and removes the marks of devices that have no record (a loopd that died between
 * binding and recording). */
void state_prune_udev_marks(const char *state_dir);

/* Which boot the records are of: state_dir/boot-id, written (state_note_boot()) once they are loaded, holds
 * the kernel's boot id (/proc/sys/kernel/random/boot_id). A diskseq names one binding for the whole boot,
 * and after a reboot no device of a record is bound any more. 1 when the note is this boot's, 0 when it is
 * another's (a state dir that outlived a reboot), -ENOENT when there is none (left by a loopd before the
 * note), other -errno. */
int state_boot_is_current(const char *state_dir);
int state_note_boot(const char *state_dir);

/* loopd's lock on its state dir: one loopd a state dir at a time. A loopd that exits when idle gives its bus
 * name back, then still answers the calls that came before the bus took it, and the bus may meanwhile start
 * the next loopd for a later call: that one must not load the records, roll back attaches or stop exports
 * while the first still makes them. state_lock_open() opens (makes) state_dir/lock; state_lock_try() takes
 * an exclusive BSD lock on it without waiting, held for as long as fd is open, and writes the caller's pid
 * there: 0, or -EWOULDBLOCK while another process holds it (*ret_holder: the pid it wrote, 0 if unknown). */
int state_lock_open(const char *state_dir, int *ret_fd);
int state_lock_try(int fd, pid_t *ret_holder);

/* Reads every record. Records that do not parse are skipped (and removed). */
int state_load_devices(const char *state_dir, ManagedDevice **ret_list);

/* The mount points loopd made that are mounted (absolute paths without newlines), one per line in
 * state_dir/mounts, written atomically. Loading a missing file gives an empty list. */
int state_save_mounts(const char *state_dir, char *const *targets);
int state_load_mounts(const char *state_dir, char ***ret);

/* An Attach in progress, noted in state_dir/pending/ before the device is bound and removed once its record
 * exists (or the attach failed): a loopd killed in between leaves the note behind, and the next one finds
 * the half-done attach by it. d's owner, backing_dev, backing_inode and offset are what count. Returns the
 * note's path for state_remove_pending(). */
int state_save_pending(const char *state_dir, const ManagedDevice *d, char **ret_path);
/* Removes the note at path and frees path; NULL is fine. Returns NULL. */
char *state_remove_pending(char *path);
DEFINE_TRIVIAL_CLEANUP_FUNC(char *, state_remove_pending);
/* Reads and removes every note a killed loopd left behind (their diskseq is 0). */
int state_load_pending(const char *state_dir, ManagedDevice **ret_list);
