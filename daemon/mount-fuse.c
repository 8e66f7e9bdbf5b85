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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "mount-internal.h"
#include "strv.h"

#define HELPER_TIMEOUT_MS (30 * 1000)
#define HELPER_EXIT_TIMEOUT_MS (10 * 1000)

static int pidfd_open_(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Monotonic milliseconds, for deadlines. */
static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the process behind pidfd has exited or deadline_ms has passed. True if it exited. */
static bool pidfd_wait(int pidfd, int64_t deadline_ms)
{
        for (;;) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                int64_t left = deadline_ms - now_ms();
                int r;

                if (left < 0)
                        left = 0;
                r = poll(&p, 1, (int)MIN(left, (int64_t)INT_MAX));
                if (r > 0)
                        return true;
                if (r == 0)
                        return false;
                if (errno != EINTR)
                        return false;
        }
}

/* Reaps our own child, killing it after timeout_ms. Returns its wait status or -ETIMEDOUT. */
static int child_wait(pid_t pid, int timeout_ms)
{
        _cleanup_close_ int pidfd = pidfd_open_(pid);
        int64_t deadline = now_ms() + timeout_ms;
        bool timed_out = false;
        int status;

        if (pidfd >= 0)
                timed_out = !pidfd_wait(pidfd, deadline);
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
        r = child_wait(pid, HELPER_TIMEOUT_MS);
        if (r < 0)
                return r;
        return WIFEXITED(r) && WEXITSTATUS(r) == 0 ? 0 : -EIO;
}

int mount_fuse_run(const FsDriver *d, const char *node, const char *target, const char *options)
{
        const char *helper = mount_fuse_helper(d->fstype);
        const char *argv[8];
        size_t n = 0;

        if (!helper)
                return -EPROTONOSUPPORT;

        argv[n++] = strrchr(helper, '/') + 1;
        if (d->helper_flag)
                argv[n++] = d->helper_flag;
        if (d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        argv[n++] = node;
        argv[n++] = target;
        if (!d->options_first) {
                argv[n++] = "-o";
                argv[n++] = options;
        }
        argv[n] = NULL;

        return fuse_spawn(helper, (char *const *)argv);
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
                found = fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISBLK(st.st_mode) &&
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
                pidfd = pidfd_open_(pid);
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

void mount_fuse_servers_wait(int *pidfds, size_t n, bool wait)
{
        /* Without a superblock the helper gets ENODEV from /dev/fuse, flushes and exits; the device is
         * only consistent once it has. */
        int64_t deadline = now_ms() + HELPER_EXIT_TIMEOUT_MS;

        for (size_t i = 0; i < n; i++) {
                if (wait)
                        (void)pidfd_wait(pidfds[i], deadline);
                safe_close(pidfds[i]);
        }
}
