/* sandbox-filter.h: the seccomp filter of loopd's sandbox (sandbox.c), as a BPF program. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>

/* The filter, built on the first call (libseccomp), for a child to load after no_new_privs: loading it
 * allocates nothing. fake_block_ioctls: BLKBSZSET and BLKFLSBUF succeed without doing anything (mkfs.xfs).
 */
int sandbox_filter_get(bool fake_block_ioctls, const struct sock_fprog **ret);
