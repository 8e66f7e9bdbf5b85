/* mount-fuse.c: FUSE helper processes: running one to mount, finding the servers of a device's FUSE mounts
 * and waiting for them to exit after the unmount. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "fd-util.h"
#include "log.h"
#include "macro.h"
#include "mount-internal.h"
#include "process-util.h"
#include "sandbox.h"
#include "strv.h"

/* After SIGKILL, how long a driver whose mount failed is waited for: it exits at once unless the kernel
 * holds it (a read of a hung image), and then waiting longer only holds loopd. */
#define HELPER_KILL_WAIT_MS 1000
#define HELPER_EXIT_TIMEOUT_MS (10 * 1000)

/* How long a FUSE mount may take to be served: as long as a kernel mount (twice --io-timeout), whose reads
 * of the device it does in the driver instead. */
static int helper_timeout_ms(void)
{
        return (int)MIN(mount_get_timeout() / 1000, (uint64_t)INT32_MAX);
}

/* Reaps our own child, killing it after timeout_ms. Returns its wait status or -ETIMEDOUT. */
static int child_wait(pid_t pid, int timeout_ms)
{
        _cleanup_close_ int pidfd = pidfd_open_pid(pid);
        int64_t deadline = now_ms() + timeout_ms;
        bool timed_out = false;
        int status;

        if (pidfd >= 0)
                timed_out = !pidfd_wait_until(pidfd, deadline);
        else
                /* No pidfd (kernel < 5.3): poll the child. */
                for (;;) {
                        pid_t p = waitpid(pid, &status, WNOHANG);
                        if (p == pid)
                                return status;
                        if (p < 0 && errno != EINTR)
                                return -errno;
                        if (now_ms() >= deadline) {
                                timed_out = true;
                                break;
                        }
                        (void)nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
                }

        if (timed_out)
                (void)kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return timed_out ? -ETIMEDOUT : status;
}

/* A driver that cannot be confined (mount_fuse_run()): run as root, as before; it daemonizes once the mount
 * is there. */
static int fuse_spawn(const char *helper, char *const argv[])
{
        static char *const envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", (char *)"LC_ALL=C",
                NULL };
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        pid_t pid;
        int r;

        sigemptyset(&none);
        sigfillset(&all);
        if (posix_spawn_file_actions_init(&fa) != 0)
                return -ENOMEM;
        if (posix_spawnattr_init(&attr) != 0) {
                posix_spawn_file_actions_destroy(&fa);
                return -ENOMEM;
        }

        /* stdin, stdout and stderr on /dev/null, nothing else inherited; default signal handling and an
         * empty mask (the daemon blocks signals for its signalfd), a session of its own. */
        r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, 0, 1);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, 0, 2);
        if (r == 0)
                r = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        if (r == 0)
                r = posix_spawn_file_actions_addchdir_np(&fa, "/");
        if (r == 0)
                r = posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0)
                r = posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = posix_spawnattr_setflags(
                        &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
        if (r == 0)
                r = posix_spawn(&pid, helper, &fa, &attr, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (r != 0)
                return -r;

        /* The helper's first process exits once the mount exists; its daemon lives on. */
        r = child_wait(pid, helper_timeout_ms());
        if (r < 0)
                return r;
        return WIFEXITED(r) && WEXITSTATUS(r) == 0 ? 0 : -EIO;
}

#define DRIVER_ARGV_MAX 10

/* The driver's command line: NAME [FLAG] [-o OPTIONS] NODE MOUNTPOINT [-o OPTIONS] [-f]. */
static void driver_argv(const FsDriver *d, const char *name, const char *node, const char *mountpoint,
        const char *options, bool foreground, const char *argv[DRIVER_ARGV_MAX])
{
        size_t n = 0;

        argv[n++] = name;
        if (d->helper_flag)
                argv[n++] = d->helper_flag;
        if (d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        argv[n++] = node;
        argv[n++] = mountpoint;
        if (!d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        if (foreground)
                argv[n++] = "-f";
        argv[n] = NULL;
}

static int fuse_spawn_unconfined(
        const char *helper, const FsDriver *d, const char *node, const char *target, const char *options)
{
        const char *argv[DRIVER_ARGV_MAX];

        driver_argv(d, strrchr(helper, '/') + 1, node, target, options, false, argv);
        return fuse_spawn(helper, (char *const *)argv);
}

/* The uid and gid a FUSE driver runs as, one pair per device (its minor number): ids that no user and no
 * file has (systemd leaves 0x70000000-0x7ffdffff unassigned), so that the driver owns nothing and two
 * drivers cannot signal or trace each other. */
#define DRIVER_ID_BASE 0x7a6c0000u
#define DRIVER_ID_SPAN 0x10000u

/* The mount flags the caller's options ask for (the rest of them are the driver's). */
static unsigned long mount_flags_of(const char *options)
{
        static const struct {
                const char *name;
                unsigned long flag;
        } flags[] = {
                { "ro", MS_RDONLY },
                { "noexec", MS_NOEXEC },
                { "noatime", MS_NOATIME },
                { "sync", MS_SYNCHRONOUS },
                { "dirsync", MS_DIRSYNC },
        };
        unsigned long result = MS_NOSUID | MS_NODEV;

        for (const char *p = options; p && *p;) {
                size_t len = strcspn(p, ",");

                for (size_t i = 0; i < ELEMENTSOF(flags); i++)
                        if (strlen(flags[i].name) == len && strncmp(p, flags[i].name, len) == 0)
                                result |= flags[i].flag;
                p += len + (p[len] == ',');
        }
        return result;
}

/* loopd-fusermount: next to loopd (the installed libexec dir, or the build tree's daemon/), in the build
 * tree's daemon/ for a test binary in tests/, else where it is installed. */
static char *fusermount_path(void)
{
        char exe[PATH_MAX], *slash;
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

        if (n > 0) {
                exe[n] = '\0';
                slash = strrchr(exe, '/');
                if (slash) {
                        *slash = '\0';
                        for (size_t i = 0; i < 2; i++) {
                                char *path;

                                if (asprintf(&path,
                                            i == 0 ? "%s/loopd-fusermount" : "%s/../daemon/loopd-fusermount",
                                            exe) < 0)
                                        return NULL;
                                if (access(path, X_OK) == 0)
                                        return path;
                                free(path);
                        }
                }
        }
        return access(LIBEXECDIR "/loopd-fusermount", X_OK) == 0 ? strdup(LIBEXECDIR "/loopd-fusermount")
                                                                 : NULL;
}

/* What the driver said on stderr, for the log (it exited, or was killed). */
static void log_driver_error(const char *helper, int fd)
{
        char text[1024];
        ssize_t n = read(fd, text, sizeof(text) - 1);

        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
                n--;
        text[n > 0 ? n : 0] = '\0';
        if (n > 0)
                log_warning("%s: %s", helper, text);
}

int mount_fuse_run(const FsDriver *d, const char *node, const char *target, const char *options)
{
        const char *helper = mount_fuse_helper(d->fstype);
        _cleanup_free_ char *path = NULL, *fusermount = NULL, *type = NULL, *kernel_options = NULL;
        _cleanup_close_ int fuse_fd = -EBADF, err_read = -EBADF, err_write = -EBADF, pidfd = -EBADF;
        const char *argv[DRIVER_ARGV_MAX], *name;
        unsigned long flags = mount_flags_of(options);
        struct stat st;
        pid_t pid;
        int pipe_fds[2], r;

        if (!helper)
                return -EPROTONOSUPPORT;
        /* The wait for an earlier mount of node still runs (mount_wait_served()): a new driver would only
         * read the hung device too. */
        if (mount_in_progress(node))
                return -EINPROGRESS;
        if (d->unconfined)
                return fuse_spawn_unconfined(helper, d, node, target, options);
        path = realpath(helper, NULL);
        if (!path)
                return -errno;
        name = strrchr(path, '/') + 1;
        if (stat(node, &st) < 0)
                return -errno;
        if (!d->libfuse3) {
                fusermount = fusermount_path();
                if (!fusermount)
                        return -ENOENT;
        }
        if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        err_read = pipe_fds[0];
        err_write = pipe_fds[1];

        /* Root makes the mount (nosuid,nodev, allow_other with the kernel's permission checks, user_id=0 as
         * fusermount never writes it: how a restarted loopd knows its FUSE mounts) and opens /dev/fuse; the
         * driver gets the FUSE fd and a node of its device, nothing else. */
        fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fuse_fd < 0)
                return -errno;
        if (asprintf(&kernel_options,
                    "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
                    fuse_fd) < 0 ||
                asprintf(&type, "fuse.%s", name) < 0)
                return -ENOMEM;
        if (mount(node, target, type, flags, kernel_options) < 0)
                return -errno;

        /* libfuse 3 takes /dev/fd/N as "this fd"; libfuse 2 gets it from fusermount's stand-in. In the
         * foreground it is the sandbox's PID 1, no fork, no reaper: a mount cycle costs less. */
        driver_argv(d, name, node, d->libfuse3 ? "/dev/fd/3" : target, options, d->foreground, argv);

        const uid_t id = DRIVER_ID_BASE + (minor(st.st_rdev) % DRIVER_ID_SPAN);
        const SandboxNode device = { .path = node, .rdev = st.st_rdev, .read_only = flags & MS_RDONLY };
        const int fds[] = { fuse_fd };
        const SandboxSpec spec = {
                .path = path,
                .argv = (char *const *)argv,
                .uid = id,
                .gid = id,
                .fds = fds,
                .n_fds = ELEMENTSOF(fds),
                .stderr_fd = err_write,
                .node = &device,
                .dir = d->libfuse3 ? NULL : target,
                .fusermount = fusermount,
                .reaper = !d->foreground,
        };
        r = sandbox_spawn(&spec, &pid, &pidfd);
        /* The driver holds the connection now: it ends when the driver does. */
        fuse_fd = safe_close(fuse_fd);
        err_write = safe_close(err_write);
        if (r >= 0)
                r = mount_wait_served(target, node, helper_timeout_ms());
        if (r < 0) {
                if (pidfd >= 0) {
                        (void)pidfd_signal(pidfd, SIGKILL);
                        (void)pidfd_wait_until(pidfd, now_ms() + HELPER_KILL_WAIT_MS);
                }
                log_driver_error(name, err_read);
                (void)umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
                return r;
        }
        return 0;
}

static bool process_holds_device(int proc_fd, const char *pid, dev_t rdev)
{
        _cleanup_free_ char *fd_dir = NULL;
        _cleanup_close_ int dfd = -1;
        DIR *d;
        struct dirent *de;
        bool found = false;

        if (asprintf(&fd_dir, "%s/fd", pid) < 0)
                return false;
        dfd = openat(proc_fd, fd_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return false;
        d = fdopendir(dfd);
        if (!d)
                return false;
        TAKE_FD(dfd);
        while (!found && (de = readdir(d))) {
                struct stat st;

                if (de->d_name[0] == '.')
                        continue;
                /* The file the fd leads to may be on a FUSE filesystem whose server stopped answering: its
                 * cached attributes only. */
                found = fd_stat_cached_at(dirfd(d), de->d_name, &st) == 0 && S_ISBLK(st.st_mode) &&
                        st.st_rdev == rdev;
        }
        closedir(d);
        return found;
}

/* The server's pid is not known otherwise: the helper daemonized. */
size_t mount_fuse_servers_of(dev_t rdev, int *pidfds, size_t max)
{
        _cleanup_close_ int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_strv_free_ char **exes = NULL;
        size_t n = 0;
        DIR *d;
        struct dirent *de;

        if (proc_fd < 0)
                return 0;
        exes = mount_fuse_helper_exes();
        if (!exes)
                return 0;
        d = opendir("/proc");
        if (!d)
                return 0;
        while (n < max && (de = readdir(d))) {
                char exe_link[sizeof(de->d_name) + 8], exe[PATH_MAX];
                ssize_t len;
                pid_t pid;
                int pidfd;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                pid = (pid_t)strtol(de->d_name, NULL, 10);
                /* Open the pidfd first, so a recycled pid is caught by the checks that follow. */
                pidfd = pidfd_open_pid(pid);
                if (pidfd < 0)
                        continue;
                snprintf(exe_link, sizeof(exe_link), "%s/exe", de->d_name);
                len = readlinkat(proc_fd, exe_link, exe, sizeof(exe) - 1);
                if (len > 0) {
                        exe[len] = '\0';
                        if (strv_contains(exes, exe) && process_holds_device(proc_fd, de->d_name, rdev)) {
                                pidfds[n++] = pidfd;
                                continue;
                        }
                }
                safe_close(pidfd);
        }
        closedir(d);
        return n;
}

void mount_servers_close(MountServers *servers)
{
        while (servers->n > 0)
                safe_close(servers->pidfds[--servers->n]);
}

void mount_fuse_servers_holding(dev_t rdev, MountServers *servers)
{
        servers->n += mount_fuse_servers_of(
                rdev, servers->pidfds + servers->n, ELEMENTSOF(servers->pidfds) - servers->n);
}

void mount_fuse_servers_wait(int *pidfds, size_t n, bool wait, MountServers *ret_left)
{
        /* Without a superblock the helper gets ENODEV from /dev/fuse, flushes and exits; the device is
         * only consistent once it has. */
        int64_t deadline = now_ms() + HELPER_EXIT_TIMEOUT_MS;

        if (ret_left)
                ret_left->n = 0;
        for (size_t i = 0; i < n; i++) {
                bool exited = wait && pidfd_wait_until(pidfds[i], deadline);

                if (!exited && ret_left && ret_left->n < ELEMENTSOF(ret_left->pidfds))
                        ret_left->pidfds[ret_left->n++] = pidfds[i];
                else
                        safe_close(pidfds[i]);
        }
}
