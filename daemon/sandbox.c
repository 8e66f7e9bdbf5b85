/* sandbox.c: a child in namespaces of its own, with a read-only view of /usr, no capabilities and no way
 * to gain any, running as the uid it is given. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "process-util.h"
#include "sandbox-filter.h"
#include "sandbox.h"

/* The sandbox's root is a tmpfs mounted here, in the child's own mount namespace: any directory every Linux
 * system has will do (what it would hide is opened first: child_root()). Where mount(2) ignores the source
 * or the type, they are "none", not NULL: valgrind's memcheck (the tests run loopd under it) reports NULL.
 */
#define SANDBOX_ROOT "/tmp"
/* Spec fds are moved this high first, so that placing them at 3, 4, ... overwrites none of them. */
#define FD_PARK 64

/* The kernel's struct clone_args up to tls (CLONE_ARGS_SIZE_VER0), spelled out: <linux/sched.h> and
 * glibc's <sched.h> do not mix. */
struct clone_args_v0 {
        uint64_t flags;
        uint64_t pidfd;
        uint64_t child_tid;
        uint64_t parent_tid;
        uint64_t exit_signal;
        uint64_t stack;
        uint64_t stack_size;
        uint64_t tls;
};

/* In the child: says which step failed on stderr and exits 127. Only write(2) and snprintf() on a stack
 * buffer: the child is a raw clone of loopd. */
static _Noreturn void child_fail(const char *step, int error)
{
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "loopd sandbox: %.200s: %s\n", step, strerror(error));

        if (n > 0)
                (void)!write(STDERR_FILENO, buf, (size_t)MIN(n, (int)sizeof(buf) - 1));
        _exit(127);
}

static void child_check(int r, const char *step)
{
        if (r < 0)
                child_fail(step, errno);
}

/* stdin and stdout on /dev/null, stderr on spec->stderr_fd, spec->fds at 3, 4, ... and nothing else. */
static void child_fds(const SandboxSpec *spec)
{
        int parked[SANDBOX_FDS_MAX], err = -1, null_fd;

        null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                _exit(127);
        if (spec->stderr_fd >= 0)
                err = fcntl(spec->stderr_fd, F_DUPFD_CLOEXEC, FD_PARK);
        for (size_t i = 0; i < spec->n_fds; i++) {
                parked[i] = fcntl(spec->fds[i], F_DUPFD_CLOEXEC, FD_PARK);
                if (parked[i] < 0)
                        _exit(127);
        }
        if (dup2(null_fd, STDIN_FILENO) < 0 ||
                dup2(spec->stdout_to_stderr && err >= 0 ? err : null_fd, STDOUT_FILENO) < 0 ||
                dup2(err >= 0 ? err : null_fd, STDERR_FILENO) < 0)
                _exit(127);
        for (size_t i = 0; i < spec->n_fds; i++)
                child_check(dup2(parked[i], 3 + (int)i), "placing a file descriptor");
        child_check((int)syscall(SYS_close_range, 3u + (unsigned)spec->n_fds, ~0u, 0u),
                "closing loopd's file descriptors");
}

static void child_signals(void)
{
        sigset_t none;

        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)signal(sig, SIG_DFL);
}

static void bind_read_only(const char *source, const char *target)
{
        child_check(mount(source, target, "none", MS_BIND | MS_REC, NULL), target);
        child_check(
                mount("none", target, "none", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL),
                target);
}

static void write_file(const char *path, const char *text)
{
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
        size_t len = strlen(text);

        child_check(fd, path);
        if (write(fd, text, len) != (ssize_t)len)
                child_fail(path, EIO);
        close(fd);
}

/* An empty file at target with source bound onto it. */
static void bind_file(const char *source, const char *target)
{
        int fd = open(target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);

        child_check(fd, target);
        close(fd);
        child_check(mount(source, target, "none", MS_BIND, NULL), target);
}

/* mkdir -p of path (absolute) under the sandbox's root. */
static void make_dirs(const char *path)
{
        char buf[PATH_MAX];
        int n = snprintf(buf, sizeof(buf), SANDBOX_ROOT "%s", path);

        if (n < 0 || (size_t)n >= sizeof(buf))
                child_fail(path, ENAMETOOLONG);
        for (char *p = strchr(buf + strlen(SANDBOX_ROOT) + 1, '/'); p; p = strchr(p + 1, '/')) {
                *p = '\0';
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        child_fail(buf, errno);
                *p = '/';
        }
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                child_fail(buf, errno);
}

/* A tmpfs /dev of its own (device nodes work there, unlike on the root): /dev/null and friends bound from
 * the host's, /dev/fd, and the spec's block device. */
static void child_dev(const SandboxSpec *spec)
{
        static const char *const devices[] = { "null", "zero", "full", "random", "urandom", "fuse" };

        child_check(mkdir(SANDBOX_ROOT "/dev", 0755), "/dev");
        child_check(mount("loopd-sandbox-dev", SANDBOX_ROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC,
                            "mode=0755,size=64k,nr_inodes=64"),
                "/dev");
        for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
                char source[32], target[64];

                (void)snprintf(source, sizeof(source), "/dev/%s", devices[i]);
                (void)snprintf(target, sizeof(target), SANDBOX_ROOT "/dev/%s", devices[i]);
                /* /dev/fuse: libfuse 2 opens it before it asks fusermount (its mount(2) fails first). */
                if ((spec->fusermount || !streq(devices[i], "fuse")) && access(source, F_OK) == 0)
                        bind_file(source, target);
        }
        if (spec->fake_dev_fd) {
                child_check(mkdir(SANDBOX_ROOT "/dev/fd", 0755), "/dev/fd");
                for (size_t i = 0; i < spec->n_fds; i++) {
                        char path[64];
                        int fd;

                        (void)snprintf(path, sizeof(path), SANDBOX_ROOT "/dev/fd/%zu", 3 + i);
                        fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
                        child_check(fd, path);
                        close(fd);
                }
        } else
                child_check(symlink("/proc/self/fd", SANDBOX_ROOT "/dev/fd"), "/dev/fd");
        if (spec->node) {
                char path[PATH_MAX + sizeof(SANDBOX_ROOT)];

                if (strncmp(spec->node->path, "/dev/", 5) != 0 || strchr(spec->node->path + 5, '/'))
                        child_fail(spec->node->path, EINVAL);
                (void)snprintf(path, sizeof(path), SANDBOX_ROOT "%s", spec->node->path);
                /* Its own (exfat-fuse and fuse2fs write only to a device node they own), on a /dev made
                 * read-only below: it cannot chmod it, and a read-only mount's driver cannot open its
                 * device for writing. */
                child_check(mknod(path, S_IFBLK | (spec->node->read_only ? 0400 : 0600), spec->node->rdev),
                        path);
                child_check(chown(path, spec->uid, spec->gid), path);
        }
        /* Nothing is made or changed there any more (a chmod of its node: EROFS). */
        child_check(mount("none", SANDBOX_ROOT "/dev", "none",
                            MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL),
                "making /dev read-only");
}

/* /usr, and each of /bin, /lib... as it is here: a link into /usr (merged /usr) or a directory of its own.
 */
static void child_usr(void)
{
        static const char *const tops[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32" };

        child_check(mkdir(SANDBOX_ROOT "/usr", 0755), "/usr");
        bind_read_only("/usr", SANDBOX_ROOT "/usr");
        for (size_t i = 0; i < ELEMENTSOF(tops); i++) {
                char source[32], target[64], link[256];
                struct stat st;
                ssize_t n;

                (void)snprintf(source, sizeof(source), "/%s", tops[i]);
                (void)snprintf(target, sizeof(target), SANDBOX_ROOT "/%s", tops[i]);
                if (lstat(source, &st) < 0)
                        continue;
                if (S_ISLNK(st.st_mode)) {
                        n = readlink(source, link, sizeof(link) - 1);
                        child_check(n < 0 ? -1 : 0, source);
                        link[n] = '\0';
                        child_check(symlink(link, target), target);
                } else if (S_ISDIR(st.st_mode)) {
                        child_check(mkdir(target, 0755), target);
                        bind_read_only(source, target);
                }
        }
}

/* The program's own directory when it is not under /usr (a test's stand-in), as its directory path; else
 * false. */
static bool program_dir(const SandboxSpec *spec, char *dir, size_t size)
{
        char *slash;

        if (strncmp(spec->path, "/usr/", 5) == 0)
                return false;
        (void)snprintf(dir, size, "%s", spec->path);
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                child_fail(spec->path, EINVAL);
        *slash = '\0';
        return true;
}

/* The program's directory (dir_fd: an O_PATH fd of it, or -1) and fusermount's stand-in (fusermount_fd),
 * both opened before the sandbox's root hid what lies under it. */
static void child_programs(const SandboxSpec *spec, int dir_fd, int fusermount_fd)
{
        char source[64];

        if (dir_fd >= 0) {
                char dir[PATH_MAX], target[PATH_MAX + sizeof(SANDBOX_ROOT)];

                (void)program_dir(spec, dir, sizeof(dir));
                make_dirs(dir);
                (void)snprintf(source, sizeof(source), "/proc/self/fd/%d", dir_fd);
                (void)snprintf(target, sizeof(target), SANDBOX_ROOT "%s", dir);
                bind_read_only(source, target);
        }
        if (fusermount_fd >= 0) {
                struct stat st;

                (void)snprintf(source, sizeof(source), "/proc/self/fd/%d", fusermount_fd);
                child_check(mkdir(SANDBOX_ROOT "/loopd", 0755), "/loopd");
                child_check(mkdir(SANDBOX_ROOT "/loopd/bin", 0755), "/loopd/bin");
                bind_file(source, SANDBOX_ROOT "/loopd/bin/fusermount");
                /* libfuse 2 runs /bin/fusermount before it searches PATH (here a link to fusermount3). */
                if (stat(SANDBOX_ROOT "/usr/bin/fusermount", &st) == 0)
                        child_check(mount(source, SANDBOX_ROOT "/usr/bin/fusermount", "none", MS_BIND, NULL),
                                "/usr/bin/fusermount");
        }
}

/* Its own processes only (it is PID 1 of a namespace of its own), and no /proc/sys or the like: a kernel
 * that cannot mount proc so (before 5.8) gets no sandbox at all. */
static void child_proc(void)
{
        child_check(mkdir(SANDBOX_ROOT "/proc", 0555), "/proc");
        child_check(mount("proc", SANDBOX_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                            "hidepid=invisible,subset=pid"),
                "/proc");
}

/* An /etc with the sandbox's user and group in it (exfat-fuse gives up when getpwuid() finds no name),
 * /etc/mtab as systems have it (ntfs-3g looks there) and the host's ld.so.cache; nothing else of the host's.
 */
static void child_etc(const SandboxSpec *spec)
{
        char text[256];

        child_check(mkdir(SANDBOX_ROOT "/etc", 0755), "/etc");
        (void)snprintf(text, sizeof(text),
                "root:x:0:0::/:/usr/sbin/nologin\nloopd-sandbox:x:%u:%u::/:/usr/sbin/nologin\n",
                (unsigned)spec->uid, (unsigned)spec->gid);
        write_file(SANDBOX_ROOT "/etc/passwd", text);
        (void)snprintf(text, sizeof(text), "root:x:0:\nloopd-sandbox:x:%u:\n", (unsigned)spec->gid);
        write_file(SANDBOX_ROOT "/etc/group", text);
        child_check(symlink("../proc/self/mounts", SANDBOX_ROOT "/etc/mtab"), "/etc/mtab");
        /* The dynamic linker's cache of /usr's libraries, read-only: without it every library is looked for
         * in a dozen directories first. */
        if (access("/etc/ld.so.cache", R_OK) == 0) {
                write_file(SANDBOX_ROOT "/etc/ld.so.cache", "");
                bind_read_only("/etc/ld.so.cache", SANDBOX_ROOT "/etc/ld.so.cache");
        }
}

static void child_root(const SandboxSpec *spec)
{
        char dir[PATH_MAX];
        int dir_fd = -1, fusermount_fd = -1;

        /* What the root's tmpfs may hide (a build tree under /tmp): opened first. */
        if (program_dir(spec, dir, sizeof(dir))) {
                dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
                child_check(dir_fd, dir);
        }
        if (spec->fusermount) {
                fusermount_fd = open(spec->fusermount, O_PATH | O_CLOEXEC);
                child_check(fusermount_fd, spec->fusermount);
        }
        child_check(mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL), "making the mounts private");
        child_check(mount("loopd-sandbox", SANDBOX_ROOT, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            "mode=0755,size=1m,nr_inodes=256"),
                "the sandbox's root");
        child_usr();
        child_programs(spec, dir_fd, fusermount_fd);
        child_proc();
        child_dev(spec);
        child_etc(spec);
        if (spec->dir)
                make_dirs(spec->dir);

        child_check(chdir(SANDBOX_ROOT), "entering the sandbox's root");
        child_check((int)syscall(SYS_pivot_root, ".", "."), "pivot_root");
        child_check(umount2(".", MNT_DETACH), "leaving the host's root");
        child_check(chdir("/"), "/");
        child_check(
                mount("none", "/", "none", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
                "making the root read-only");
}

/* No capability now or after execve(), whatever the uid; none to be gained through setuid binaries. */
static void child_credentials(const SandboxSpec *spec)
{
        struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
        struct rlimit no_core = { 0, 0 };

        child_check(setrlimit(RLIMIT_CORE, &no_core), "RLIMIT_CORE");
        child_check(prctl(PR_SET_SECUREBITS,
                            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                                    SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
                            0, 0, 0),
                "securebits");
        for (unsigned long c = 0; c <= 63; c++)
                if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
                        child_fail("dropping the bounding set", errno);
        child_check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient capabilities");
        /* The system calls, not glibc's wrappers, which would signal every thread of loopd's to change its
         * ids too (the child may share loopd's memory: clone_vfork()). */
        child_check((int)syscall(SYS_setgroups, spec->n_groups, spec->groups), "setgroups");
        child_check((int)syscall(SYS_setresgid, spec->gid, spec->gid, spec->gid), "setresgid");
        child_check((int)syscall(SYS_setresuid, spec->uid, spec->uid, spec->uid), "setresuid");
        child_check((int)syscall(SYS_capset, &header, data), "capset");
        child_check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
}

/* PID 1 of the sandbox, as its uid: runs the program as its child, reaps whatever gets reparented to it (a
 * daemonized program) and exits when the last child did, with the program's first process's status. */
static _Noreturn void child_reap(const SandboxSpec *spec, char *const envp[])
{
        int status = 0;
        bool first = true;
        pid_t program = fork();

        if (program < 0)
                child_fail("fork", errno);
        if (program == 0) {
                execve(spec->path, spec->argv, envp);
                child_fail(spec->path, errno);
        }
        for (;;) {
                int s;
                pid_t pid = wait(&s);

                if (pid < 0) {
                        if (errno == EINTR)
                                continue;
                        break; /* ECHILD: the last one is gone */
                }
                if (pid == program && first) {
                        status = s;
                        first = false;
                }
        }
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
}

/* What every sandbox shares, made once in loopd (the child allocates nothing). */
typedef struct SandboxShared {
        const struct sock_fprog *filter;
        int net_fd;
        int ipc_fd;
} SandboxShared;

static _Noreturn void child_run(const SandboxSpec *spec, const SandboxShared *shared)
{
        static char *const envp[] = { (char *)"PATH=/usr/bin:/bin", (char *)"LC_ALL=C", NULL };
        static char *const envp_fusermount[] = { (char *)"PATH=/loopd/bin:/usr/bin:/bin", (char *)"LC_ALL=C",
                NULL };
        /* glibc's C.UTF-8 (under /usr/lib/locale): mkfs.exfat and mkntfs convert a label to UTF-16 through
         * the locale, and the C locale's charset is ASCII. */
        static char *const envp_utf8[] = { (char *)"PATH=/usr/bin:/bin", (char *)"LC_ALL=C.UTF-8", NULL };
        char *const *env = spec->fusermount ? envp_fusermount : spec->utf8_locale ? envp_utf8 : envp;

        /* Before child_fds() closes them. */
        child_check(setns(shared->net_fd, CLONE_NEWNET), "joining the sandboxes' network namespace");
        child_check(setns(shared->ipc_fd, CLONE_NEWIPC), "joining the sandboxes' IPC namespace");
        child_fds(spec);
        child_signals();
        child_check(setsid(), "setsid");
        child_root(spec);
        child_credentials(spec);
        /* After the ids changed, which clears it. */
        if (spec->dies_with_loopd)
                child_check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "the parent-death signal");
        /* Last: the filter refuses what the steps above did (mount, unshare). prctl(), not seccomp(2), which
         * valgrind (the tests run loopd under memcheck) does not know. */
        child_check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, shared->filter, 0, 0), "seccomp");
        if (spec->reaper)
                child_reap(spec, env);
        execve(spec->path, spec->argv, env);
        child_fail(spec->path, errno);
}

/* The network and IPC namespaces every sandbox joins: made once, empty (no interface but a loopback that is
 * down, no IPC object), kept while loopd runs. A network namespace is the costliest to make and to tear down
 * (its cleanup keeps a kernel worker busy for milliseconds), and a sandbox needs none of its own: the filter
 * refuses every socket() and bind(), connect() and listen() (socketpair() stays, for libfuse 2), and every
 * System V and POSIX IPC call, so nothing in them can reach from one sandbox to another. */
static int shared_namespaces(int *ret_net, int *ret_ipc)
{
        static int net_fd = -EBADF, ipc_fd = -EBADF;
        _cleanup_close_ int net = -EBADF, ipc = -EBADF;
        char path[64];
        int gate[2], r = 0;
        long pid;

        if (net_fd >= 0) {
                *ret_net = net_fd;
                *ret_ipc = ipc_fd;
                return 0;
        }

        /* A child in new namespaces waits on a pipe while loopd opens them, then exits. */
        if (pipe2(gate, O_CLOEXEC) < 0)
                return -errno;
        pid = syscall(
                SYS_clone, (unsigned long)(CLONE_NEWNET | CLONE_NEWIPC | SIGCHLD), NULL, NULL, NULL, NULL);
        if (pid == 0) {
                char c;
                (void)close(gate[1]);
                (void)read(gate[0], &c, 1); /* EOF once loopd closed its end */
                _exit(0);
        }
        if (pid < 0)
                r = -errno;
        else {
                snprintf(path, sizeof(path), "/proc/%ld/ns/net", pid);
                net = open(path, O_RDONLY | O_CLOEXEC);
                if (net < 0)
                        r = -errno;
                snprintf(path, sizeof(path), "/proc/%ld/ns/ipc", pid);
                ipc = open(path, O_RDONLY | O_CLOEXEC);
                if (ipc < 0 && r == 0)
                        r = -errno;
        }
        safe_close(gate[1]);
        safe_close(gate[0]);
        if (pid > 0)
                while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        if (r < 0)
                return r;

        net_fd = TAKE_FD(net);
        ipc_fd = TAKE_FD(ipc);
        *ret_net = net_fd;
        *ret_ipc = ipc_fd;
        return 0;
}

typedef struct ChildArgs {
        const SandboxSpec *spec;
        const SandboxShared *shared;
} ChildArgs;

static int child_main(void *userdata)
{
        const ChildArgs *args = userdata;

        child_run(args->spec, args->shared);
}

int sandbox_spawn(const SandboxSpec *spec, pid_t *ret_pid, int *ret_pidfd)
{
        int pidfd = -EBADF;
        struct clone_args_v0 args = {
                .flags = CLONE_PIDFD | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS,
                .pidfd = (uint64_t)(uintptr_t)&pidfd,
                .exit_signal = SIGCHLD,
        };
        SandboxShared shared;
        long pid;
        int r;

        if (!spec || !spec->path || !spec->argv || spec->n_fds > SANDBOX_FDS_MAX || !ret_pid || !ret_pidfd)
                return -EINVAL;
        r = sandbox_filter_get(
                spec->fake_block_ioctls ? SANDBOX_FILTER_MKFS_XFS : SANDBOX_FILTER_PROGRAM, &shared.filter);
        if (r < 0)
                return r;
        r = shared_namespaces(&shared.net_fd, &shared.ipc_fd);
        if (r < 0)
                return r;

        /* A program that stays in the foreground (it execs, so loopd need not wait long): in loopd's memory,
         * with loopd waiting, which copies none of it. A reaper never execs: a copy of loopd's. */
        if (!spec->reaper) {
                pid = clone_vfork(child_main, &(ChildArgs){ spec, &shared },
                        CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS, &pidfd);
                if (pid < 0)
                        return (int)pid;
                *ret_pid = (pid_t)pid;
                *ret_pidfd = pidfd;
                return 0;
        }
        pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid < 0 && errno == ENOSYS)
                /* systemd's RestrictNamespaces= answers clone3() ENOSYS (its flags are out of a seccomp
                 * filter's reach): clone() takes the same flags, the pidfd through parent_tid. */
                pid = syscall(SYS_clone, (unsigned long)args.flags | SIGCHLD, NULL, &pidfd, NULL, NULL);
        if (pid < 0)
                return negative_errno();
        if (pid == 0)
                child_run(spec, &shared);

        *ret_pid = (pid_t)pid;
        *ret_pidfd = pidfd;
        return 0;
}
