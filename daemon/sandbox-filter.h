/* sandbox-filter.h: the seccomp filter of loopd's sandbox (sandbox.c), as a BPF program. */
#pragma once

#include <linux/filter.h>

/* The filter, built on the first call (libseccomp), for a child to load with seccomp(2) after
 * no_new_privs: loading it allocates nothing. */
int sandbox_filter_get(const struct sock_fprog **ret);
