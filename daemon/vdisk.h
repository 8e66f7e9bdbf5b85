/* vdisk.h: virtual-disk images (qcow2, vmdk, vdi, vpc, vhdx) served to a loop device through a
 * qemu-storage-daemon FUSE export: one sandboxed process per image, reading the caller's fd with the format
 * driver pinned and no backing file, presenting the guest disk as a regular file in the state dir
 * (<state_dir>/exports/vdisk-XXXXXX, reachable by root only) that the loop device binds. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define VDISK_QSD_PATH "/usr/bin/qemu-storage-daemon"

typedef struct Vdisk {
        char *path; /* the export file */
        char *info_path; /* what a restarted loopd needs to know of it: <path>.info */
        char *image; /* the name of the image the user opened (what BackingFile says) */
        char *format;
        bool writable;
        bool bound; /* a loop device binds it: number, diskseq */
        unsigned number;
        uint64_t diskseq;
        pid_t pid;
        int pidfd; /* -EBADF once the process is known to be gone */
        int stderr_fd; /* its stderr's read end (loopd's own child only), until read to the end */
        char *error; /* what it said there, once read */
        sd_event_source *exit_source;
        sd_event_source *stderr_source; /* once bound: what it says goes to the debug log */
        struct Vdisk *next; /* vdisk_load()'s list only */
} Vdisk;

/* Whether qemu-storage-daemon (qsd_path; NULL: VDISK_QSD_PATH) writes what a writable export is given
 * (qemu 7.2 can lose it, see vdisk.c): 1, 0, or -errno when its version cannot be told. */
int vdisk_writes_safe(const char *qsd_path);

/* Is format one loopd serves through an export? */
bool vdisk_format_supported(const char *format);

/* Starts serving the image behind image_fd (a format image_probe() named) for uid/gid: makes the export
 * file, mounts FUSE on it and starts qemu-storage-daemon (qsd_path) in a sandbox, as uid/gid with the
 * supplementary groups (n_groups of them), on the FUSE fd and the image fd. Writable only if writable (the
 * fd must be open read-write then); direct: qemu reads the image with O_DIRECT (image_probe() found that its
 * filesystem takes it). The export answers once qemu opened the image: open it (in a worker: it blocks until
 * then) to know; if qemu refused the image, the open fails with ENOTCONN and vdisk_error() says why. */
int vdisk_start(sd_event *event, const char *state_dir, const char *qsd_path, int image_fd,
        const char *format, bool writable, bool direct, uid_t uid, gid_t gid, const gid_t *groups,
        size_t n_groups, const char *image, Vdisk **ret);

/* What qemu-storage-daemon said when it failed ("" if nothing), waiting a moment for it to finish: its
 * message without the option it quotes, its lines joined. */
void vdisk_error(Vdisk *v, char *buf, size_t size);

/* Notes the loop device bound to the export, for a restarted loopd; from now on its stderr is read as it
 * comes (a full pipe would stop it, and the device with it). */
int vdisk_bind(Vdisk *v, sd_event *event, unsigned number, uint64_t diskseq);

/* Tears the export down (qemu-storage-daemon asked to exit, flushing a writable image, and killed if it
 * does not; the FUSE mount lazily unmounted; the files removed) and frees v. NULL is fine; returns NULL. */
Vdisk *vdisk_stop(Vdisk *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(Vdisk *, vdisk_stop);
/* Frees v and what loopd holds of it, leaving the export running (loopd exits; a restart adopts it). */
Vdisk *vdisk_free(Vdisk *v);

/* The exports a previous loopd left: a list of those whose records could be read, with the process adopted
 * where it still runs (number/diskseq say which device they were bound to). Exports without a record are
 * torn down. */
Vdisk *vdisk_load(sd_event *event, const char *state_dir);
