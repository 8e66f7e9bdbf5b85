/* sandbox-filter.c: the seccomp filter of loopd's sandbox: the system calls that a program parsing a
 * user's image never needs and that reach past the sandbox or widen the kernel's attack surface. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "sandbox-filter.h"

/* Refused with EPERM. Namespaces and mounts (what a sandbox is made of), keys (the kernel keyring is not
 * namespaced), other processes' memory, and the kernel's big attack surfaces (bpf, perf, io_uring,
 * userfaultfd), with what only an administrator does (modules, clocks, swap, reboot). Names this kernel's
 * architecture lacks are skipped. */
static const char *const denied[] = {
        "unshare",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "add_key",
        "keyctl",
        "request_key",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "process_madvise",
        "pidfd_getfd",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "fanotify_init",
        "open_by_handle_at",
        "name_to_handle_at",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "sethostname",
        "setdomainname",
        "iopl",
        "ioperm",
        "modify_ldt",
        "lookup_dcookie",
        "vhangup",
        "uselib",
        /* The sandboxes share their network and IPC namespaces (sandbox.c): nothing may be left in them for
         * another sandbox to find. */
        "bind",
        "listen",
        "connect",
        "accept",
        "accept4",
        "shmget",
        "shmat",
        "shmctl",
        "shmdt",
        "msgget",
        "msgsnd",
        "msgrcv",
        "msgctl",
        "semget",
        "semop",
        "semtimedop",
        "semctl",
        "mq_open",
        "mq_unlink",
        "mq_timedsend",
        "mq_timedreceive",
        "mq_notify",
        "mq_getsetattr",
};

/* The namespace flags clone() must not carry: a new user namespace is a root of its own, the others are
 * refused anyway without capabilities. */
static const unsigned long namespace_flags[] = {
        CLONE_NEWUSER,
        CLONE_NEWNS,
        CLONE_NEWPID,
        CLONE_NEWNET,
        CLONE_NEWIPC,
        CLONE_NEWUTS,
        CLONE_NEWCGROUP,
};

/* Refused to the image reader's children (EPERM) on top of denied[]: they read what they are handed and
 * answer on a socket. All of them run as one uid: no signal may reach another (a waiting one, or another
 * caller's); no lock of the device fd they get (loopd's shared flock rides on the same open file); no
 * file or name made, changed or removed (open() for writing is refused in reader_rules()). */
static const char *const reader_denied[] = {
        "kill",
        "tkill",
        "tgkill",
        "pidfd_send_signal",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "flock",
        "creat",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "symlink",
        "symlinkat",
        "link",
        "linkat",
        "rename",
        "renameat",
        "renameat2",
        "unlink",
        "unlinkat",
        "rmdir",
        "chmod",
        "fchmod",
        "fchmodat",
        "chown",
        "fchown",
        "fchownat",
        "lchown",
        "truncate",
        "ftruncate",
        "utime",
        "utimes",
        "utimensat",
        "futimesat",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
        "memfd_create",
};

/* Refuses the system calls named with EPERM; a name this architecture lacks is skipped. */
static int deny_names(scmp_filter_ctx ctx, const char *const *names, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int nr = seccomp_syscall_resolve_name(names[i]);
                int r;

                if (nr == __NR_SCMP_ERROR)
                        continue;
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int reader_rules(scmp_filter_ctx ctx)
{
        /* open()/openat() for anything but reading: its flags are argument 1 and 2. openat2() takes them
         * in memory, where a filter cannot look: ENOSYS (glibc's open() does not use it). */
        static const unsigned write_flags[] = { O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND };
        int r;

        r = deny_names(ctx, reader_denied, ELEMENTSOF(reader_denied));
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(write_flags); i++) {
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 1,
                        SCMP_A1(SCMP_CMP_MASKED_EQ, write_flags[i], write_flags[i]));
                if (r < 0)
                        return r;
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
                        SCMP_A2(SCMP_CMP_MASKED_EQ, write_flags[i], write_flags[i]));
                if (r < 0)
                        return r;
        }
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(openat2), 0);
        if (r < 0)
                return r;
        /* The loop driver's ioctls (0x4Cxx): LOOP_CLR_FD and LOOP_CHANGE_FD need no capability, only an fd
         * of the device. The kernel reads the request as an unsigned int: the upper half is not compared. */
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffff00u, 0x4c00u));
}

static int add_rules(scmp_filter_ctx ctx, SandboxFilterKind kind)
{
        bool fake_block_ioctls = kind == SANDBOX_FILTER_MKFS_XFS;
        int r;

        if (kind == SANDBOX_FILTER_READER || kind == SANDBOX_FILTER_READER_OWN) {
                r = reader_rules(ctx);
                if (r < 0 || kind == SANDBOX_FILTER_READER_OWN)
                        return r;
        }

        /* mkfs.xfs insists on BLKBSZSET and BLKFLSBUF, which need CAP_SYS_ADMIN and which it does not need
         * on a device nobody else has open (Format opened it O_EXCL): they succeed without doing anything.
         * The kernel reads the request as an unsigned int. */
        if (fake_block_ioctls) {
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(0), SCMP_SYS(ioctl), 1,
                        SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)BLKBSZSET));
                if (r < 0)
                        return r;
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(0), SCMP_SYS(ioctl), 1,
                        SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (uint32_t)BLKFLSBUF));
                if (r < 0)
                        return r;
        }

        r = deny_names(ctx, denied, ELEMENTSOF(denied));
        if (r < 0)
                return r;

        /* No socket of any family, as systemd's RestrictAddressFamilies= answers: an AF_UNIX one could bind
         * an abstract name that another sandbox in the shared network namespace connects to. socketpair()
         * stays (libfuse 2 talks to fusermount over one). */
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 0);
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(namespace_flags); i++) {
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                        SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
                if (r < 0)
                        return r;
        }
        /* clone3() takes its flags in memory, where a filter cannot look: ENOSYS makes glibc use clone(). */
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        if (r < 0)
                return r;

        /* Typing into a terminal someone else reads (there should be none, but the filter is the last
         * line). */
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TIOCSTI));
        if (r < 0)
                return r;
        return seccomp_rule_add(
                ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TIOCLINUX));
}

/* The filter as BPF, in memory (libseccomp 2.5 exports to an fd only). */
static int filter_build(SandboxFilterKind kind, struct sock_filter **ret_code, size_t *ret_n)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ struct sock_filter *code = NULL;
        struct stat st;
        ssize_t n;
        int r;

        if (!ctx)
                return -ENOMEM;
        /* Only the native architecture: a system call of another (i386's int 0x80 on x86-64, x32) kills the
         * process, libseccomp's default for architectures the filter does not list. */
        r = add_rules(ctx, kind);
        if (r >= 0) {
                fd = memfd_create("loopd-seccomp", MFD_CLOEXEC);
                r = fd < 0 ? -errno : seccomp_export_bpf(ctx, fd);
        }
        seccomp_release(ctx);
        if (r < 0)
                return r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 || st.st_size > BPF_MAXINSNS * 8)
                return -EINVAL;
        code = malloc(st.st_size);
        if (!code)
                return -ENOMEM;
        n = pread(fd, code, st.st_size, 0);
        if (n < 0)
                return -errno;
        if (n != st.st_size)
                return -EIO;
        *ret_n = (size_t)st.st_size / sizeof(struct sock_filter);
        *ret_code = TAKE_PTR(code);
        return 0;
}

int sandbox_filter_get(SandboxFilterKind kind, const struct sock_fprog **ret)
{
        /* Built once each: the rules do not change while loopd runs. Kept until loopd exits. */
        static struct sock_fprog programs[_SANDBOX_FILTER_MAX];
        struct sock_fprog *program;

        if (kind < 0 || kind >= _SANDBOX_FILTER_MAX)
                return -EINVAL;
        program = &programs[kind];
        struct sock_filter *code = NULL;
        size_t n = 0;
        int r;

        if (!program->filter) {
                r = filter_build(kind, &code, &n);
                if (r < 0)
                        return r;
                *program = (struct sock_fprog){ .len = (unsigned short)n, .filter = code };
        }
        *ret = program;
        return 0;
}
