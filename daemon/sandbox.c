/* sandbox.c: a child in namespaces of its own, with a read-only view of /usr, no capabilities and no way
 * to gain any, running as the uid it is given. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "sandbox.h"

/* The sandbox's root is a tmpfs mounted here, in the child's own mount namespace: any directory every
 * Linux system has will do. */
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
        int n = snprintf(buf, sizeof(buf), "loopd sandbox: %s: %s\n", step, strerror(error));

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
        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(null_fd, STDOUT_FILENO) < 0 ||
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
        child_check(mount(source, target, NULL, MS_BIND | MS_REC, NULL), target);
        child_check(mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL),
                target);
}

static void bind_device(const char *name)
{
        char source[64], target[64];
        int fd;

        (void)snprintf(source, sizeof(source), "/dev/%s", name);
        (void)snprintf(target, sizeof(target), SANDBOX_ROOT "/dev/%s", name);
        fd = open(target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        child_check(fd, target);
        close(fd);
        child_check(mount(source, target, NULL, MS_BIND, NULL), target);
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

static void child_root(const SandboxSpec *spec)
{
        static const char *const devices[] = { "null", "zero", "full", "random", "urandom" };

        child_check(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "making the mounts private");
        child_check(mount("loopd-sandbox", SANDBOX_ROOT, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                            "mode=0755,size=1m,nr_inodes=256"),
                "the sandbox's root");
        child_usr();

        child_check(mkdir(SANDBOX_ROOT "/proc", 0555), "/proc");
        /* Its own processes only (it is PID 1 of a namespace of its own), and no /proc/sys or the like. */
        if (mount("proc", SANDBOX_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "hidepid=invisible,subset=pid") < 0)
                child_check(
                        mount("proc", SANDBOX_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
                        "/proc");

        child_check(mkdir(SANDBOX_ROOT "/dev", 0755), "/dev");
        for (size_t i = 0; i < ELEMENTSOF(devices); i++)
                bind_device(devices[i]);
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
        }

        child_check(chdir(SANDBOX_ROOT), "entering the sandbox's root");
        child_check((int)syscall(SYS_pivot_root, ".", "."), "pivot_root");
        child_check(umount2(".", MNT_DETACH), "leaving the host's root");
        child_check(chdir("/"), "/");
        child_check(mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
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
        child_check(setgroups(0, NULL), "setgroups");
        child_check(setresgid(spec->gid, spec->gid, spec->gid), "setresgid");
        child_check(setresuid(spec->uid, spec->uid, spec->uid), "setresuid");
        child_check((int)syscall(SYS_capset, &header, data), "capset");
        child_check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
}

static _Noreturn void child_run(const SandboxSpec *spec)
{
        static char *const envp[] = { (char *)"PATH=/usr/bin:/bin", (char *)"LC_ALL=C", NULL };

        child_fds(spec);
        child_signals();
        child_check(setsid(), "setsid");
        child_root(spec);
        child_credentials(spec);
        execve(spec->path, spec->argv, envp);
        child_fail(spec->path, errno);
}

int sandbox_spawn(const SandboxSpec *spec, pid_t *ret_pid, int *ret_pidfd)
{
        int pidfd = -EBADF;
        struct clone_args_v0 args = {
                .flags = CLONE_PIDFD | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                        CLONE_NEWUTS,
                .pidfd = (uint64_t)(uintptr_t)&pidfd,
                .exit_signal = SIGCHLD,
        };
        long pid;

        if (!spec || !spec->path || !spec->argv || spec->n_fds > SANDBOX_FDS_MAX || !ret_pid || !ret_pidfd)
                return -EINVAL;

        pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid < 0 && errno == ENOSYS)
                /* systemd's RestrictNamespaces= answers clone3() ENOSYS (its flags are out of a seccomp
                 * filter's reach): clone() takes the same flags, the pidfd through parent_tid. */
                pid = syscall(SYS_clone, (unsigned long)args.flags | SIGCHLD, NULL, &pidfd, NULL, NULL);
        if (pid < 0)
                return negative_errno();
        if (pid == 0)
                child_run(spec);

        *ret_pid = (pid_t)pid;
        *ret_pidfd = pidfd;
        return 0;
}
