/* sandbox.h: runs a program that parses a user's image (qemu-storage-daemon for a virtual disk) with as
 * little as works: not root, no capabilities, no_new_privs, no network, no view of the host's files but
 * /usr, and only the file descriptors it is handed. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define SANDBOX_FDS_MAX 4

typedef struct SandboxSpec {
        const char *path; /* the program (under /usr: the sandbox sees nothing else) */
        char *const *argv;
        uid_t uid; /* runs as uid/gid, no supplementary groups (uid 0: root without a capability) */
        gid_t gid;
        /* Handed over at 3, 4, ...: fds[i] becomes 3 + i. Nothing else of loopd's is inherited. */
        const int *fds;
        size_t n_fds;
        /* Regular (empty) files made at /dev/fd/3 ... in the sandbox's /dev, in place of the /proc
         * symlink: for programs that insist that a path they are given (/dev/fd/N, which libfuse takes
         * as "this fd") is a regular file. */
        bool fake_dev_fd;
        int stderr_fd; /* the program's stderr (its stdout and stdin are /dev/null); -1: /dev/null */
} SandboxSpec;

/* Starts the program in new mount, PID, network, IPC and UTS namespaces (it is PID 1 of its own) with a
 * read-only root of its own: /usr (and the /bin, /lib... links or binds), /proc showing its own processes
 * only, /dev/null, /dev/zero, /dev/urandom. A child of loopd's: returns its pid and a pidfd. A step of the
 * setup that fails is written to stderr_fd and the child exits 127. */
int sandbox_spawn(const SandboxSpec *spec, pid_t *ret_pid, int *ret_pidfd);
