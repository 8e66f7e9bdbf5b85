/* sandbox.h: runs a program that parses a user's image (qemu-storage-daemon for a virtual disk) with as
 * little as works: not root, no capabilities, no_new_privs, a seccomp filter, no network, no view of the
 * host's files but /usr, and only the file descriptors it is handed. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define SANDBOX_FDS_MAX 4

/* A block device node made in the sandbox's /dev (root's, in the sandbox's group; /dev is read-only): the
 * one device it may open. */
typedef struct SandboxNode {
        const char *path; /* under /dev/ */
        dev_t rdev;
        bool read_only; /* mode 0400, else 0600 */
} SandboxNode;

typedef struct SandboxSpec {
        const char *path; /* the program (under /usr: the sandbox sees nothing else) */
        char *const *argv;
        uid_t uid; /* runs as uid/gid (uid 0: root without a capability) */
        gid_t gid;
        const gid_t *groups; /* its supplementary groups, n_groups of them (NULL: none) */
        size_t n_groups;
        /* Handed over at 3, 4, ...: fds[i] becomes 3 + i. Nothing else of loopd's is inherited. */
        const int *fds;
        size_t n_fds;
        /* Regular (empty) files made at /dev/fd/3 ... in the sandbox's /dev, in place of the /proc
         * symlink: for programs that insist that a path they are given (/dev/fd/N, which libfuse takes
         * as "this fd") is a regular file. */
        bool fake_dev_fd;
        int stderr_fd; /* the program's stderr (its stdout and stdin are /dev/null); -1: /dev/null */
        bool stdout_to_stderr; /* its stdout on stderr_fd too (a mkfs's report, for loopd's log) */
        /* BLKBSZSET and BLKFLSBUF (setting the device's soft block size, dropping its cache: both need
         * CAP_SYS_ADMIN) answer success and do nothing: mkfs.xfs gives up when they fail, and needs neither
         * (it writes whole sectors, and fsync()s before it flushes). Rules of the sandbox's seccomp filter
         * (sandbox-filter.h). */
        bool fake_block_ioctls;
        /* LC_ALL=C.UTF-8 instead of C: for programs that read UTF-8 arguments through the locale. */
        bool utf8_locale;
        const SandboxNode *node; /* NULL: none */
        /* An empty directory made at this path (a FUSE driver's mountpoint argument, which libfuse 2
         * resolves and stats). NULL: none. */
        const char *dir;
        /* Put in place of fusermount (/usr/bin/fusermount, and first in PATH): libfuse 2 asks fusermount for
         * its /dev/fuse fd when it may not mount itself. NULL: none. */
        const char *fusermount;
        /* PID 1 is a reaper that runs the program as its child and exits when its last child did: for
         * programs that daemonize (the namespace would die with its first process). */
        bool reaper;
        /* Killed (SIGKILL) when loopd dies, whatever kills it: for a program whose only bound is loopd's
         * (a mkfs), not for one that outlives it on purpose (a FUSE driver, a qemu-storage-daemon). */
        bool dies_with_loopd;
} SandboxSpec;

/* Starts the program in new mount, PID and UTS namespaces (it is PID 1 of its own), in the empty network and
 * IPC namespaces every sandbox shares, under the seccomp filter (sandbox-filter.h), with a read-only root of
 * its own: /usr (and the /bin, /lib... links or binds), /proc showing its own processes
 * only (read-only), /dev/null, zero, full, random, urandom (and fuse, for libfuse 2), an /etc of its own,
 * and what the spec asks for; the program's own directory too when it is not under /usr. A child of loopd's:
 * returns its pid and a pidfd. A step of the setup that fails is written to stderr_fd and the child exits
 * 127. */
int sandbox_spawn(const SandboxSpec *spec, pid_t *ret_pid, int *ret_pidfd);
