/* sandbox-filter.h: the seccomp filter of loopd's sandbox (sandbox.c), as a BPF program. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>

typedef enum SandboxFilterKind {
        SANDBOX_FILTER_PROGRAM, /* qemu-storage-daemon, the FUSE drivers, mkfs */
        SANDBOX_FILTER_MKFS_XFS, /* the same, and BLKBSZSET and BLKFLSBUF succeed without doing anything */
        SANDBOX_FILTER_READER, /* the image reader's children: also no signal to anyone, no flock, no loop
                                * ioctl, and nothing written, made or changed by name in any filesystem */
        SANDBOX_FILTER_READER_OWN, /* those last rules alone, for a child of a process that loaded
                                    * SANDBOX_FILTER_PROGRAM: the two stacked are SANDBOX_FILTER_READER */
        _SANDBOX_FILTER_MAX,
} SandboxFilterKind;

/* The filter, built on the first call (libseccomp), for a child to load after no_new_privs (or a process
 * with CAP_SYS_ADMIN, the reader, without): loading it allocates nothing. */
int sandbox_filter_get(SandboxFilterKind kind, const struct sock_fprog **ret);
