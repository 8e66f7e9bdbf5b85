/* main.c: loopd's command line, signals and event loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <systemd/sd-event.h>

#include "bus-service.h"
#include "config.h"
#include "image-reader.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "manager-dbus.h"
#include "manager.h"
#include "mount.h"
#include "process-util.h"
#include "runner.h"
#include "state.h"
#include "vdisk.h"

static void help(void)
{
        printf("Usage: loopd [OPTIONS]\n\n"
               "Owns loop devices on the system bus (" LOOPD_BUS_NAME
               ") and lets unprivileged users attach and\n"
               "mount disk images, as polkit allows.\n\n"
               "  -h --help                      Show this help\n"
               "     --version                  Show the version\n"
               "     --state-dir DIR            Where device ownership is recorded (default /run/loopd)\n"
               "     --media-dir DIR            Where mount points are made (default /run/media)\n"
               "     --max-devices-per-user N   Devices one user may have attached at once (default 32)\n"
               "     --partition-timeout SECS   How long Attach waits for udev (default 30)\n"
               "     --io-timeout SECS          How long loopd waits for a caller's image: a read, its binding\n"
               "                                (default 10; a mount or an unmount twice that)\n"
               "     --max-pending-per-user N   Calls one user may have waiting at once (default 16)\n"
               "     --unconfined-fuse-drivers yes|no\n"
               "                                Use FUSE drivers that cannot run in loopd's sandbox\n"
               "                                (ntfs-3g: as root) (default yes)\n"
               "     --qemu-storage-daemon PATH What serves virtual disks (qcow2, vmdk, vdi, vhd, vhdx)\n"
               "                                (default " VDISK_QSD_PATH ")\n"
               "     --exit-on-idle SECS        Exit after SECS without calls while no device is attached\n"
               "                                (for bus activation)\n"
               "     --debug                    Log debug messages\n");
}

/* A plain decimal number in [min, max]: no sign, no suffix, no spaces. */
static int parse_number(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_argv(Manager *m, Bus *b, int argc, char *argv[])
{
        enum {
                ARG_VERSION = 0x100,
                ARG_STATE_DIR,
                ARG_MEDIA_DIR,
                ARG_MAX_DEVICES,
                ARG_PARTITION_TIMEOUT,
                ARG_DEBUG,
                ARG_EXIT_ON_IDLE,
                ARG_IO_TIMEOUT,
                ARG_MAX_PENDING,
                ARG_QSD,
                ARG_UNCONFINED,
        };
        static const struct option options[] = { { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "media-dir", required_argument, NULL, ARG_MEDIA_DIR },
                { "max-devices-per-user", required_argument, NULL, ARG_MAX_DEVICES },
                { "partition-timeout", required_argument, NULL, ARG_PARTITION_TIMEOUT },
                { "debug", no_argument, NULL, ARG_DEBUG },
                { "exit-on-idle", required_argument, NULL, ARG_EXIT_ON_IDLE },
                { "io-timeout", required_argument, NULL, ARG_IO_TIMEOUT },
                { "max-pending-per-user", required_argument, NULL, ARG_MAX_PENDING },
                { "qemu-storage-daemon", required_argument, NULL, ARG_QSD },
                { "unconfined-fuse-drivers", required_argument, NULL, ARG_UNCONFINED }, {} };
        uint64_t value;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("loopd " PACKAGE_VERSION "\n");
                        return 0;
                case ARG_STATE_DIR:
                case ARG_MEDIA_DIR:
                case ARG_QSD: {
                        char **dest = c == ARG_STATE_DIR ? &m->state_dir
                                : c == ARG_MEDIA_DIR     ? &m->media_dir
                                                         : &m->qsd_path;
                        if (optarg[0] != '/') {
                                fprintf(stderr, "loopd: %s must be an absolute path: %s\n",
                                        c == ARG_STATE_DIR           ? "--state-dir"
                                                : c == ARG_MEDIA_DIR ? "--media-dir"
                                                                     : "--qemu-storage-daemon",
                                        optarg);
                                return -EINVAL;
                        }
                        free(*dest);
                        *dest = strdup(optarg);
                        if (!*dest)
                                return -ENOMEM;
                        break;
                }
                case ARG_MAX_DEVICES:
                        if (parse_number(optarg, 0, 100000, &value) < 0) {
                                fprintf(stderr, "loopd: invalid --max-devices-per-user: %s\n", optarg);
                                return -EINVAL;
                        }
                        m->max_devices_per_user = (unsigned)value;
                        break;
                case ARG_PARTITION_TIMEOUT:
                        if (parse_number(optarg, 1, 3600, &value) < 0) {
                                fprintf(stderr, "loopd: invalid --partition-timeout: %s\n", optarg);
                                return -EINVAL;
                        }
                        m->partition_timeout_usec = value * 1000000ULL;
                        break;
                case ARG_EXIT_ON_IDLE:
                        if (parse_number(optarg, 1, 86400, &value) < 0) {
                                fprintf(stderr, "loopd: invalid --exit-on-idle: %s\n", optarg);
                                return -EINVAL;
                        }
                        b->exit_on_idle_usec = value * 1000000ULL;
                        break;
                case ARG_IO_TIMEOUT:
                        if (parse_number(optarg, 1, 3600, &value) < 0) {
                                fprintf(stderr, "loopd: invalid --io-timeout: %s\n", optarg);
                                return -EINVAL;
                        }
                        m->io_timeout_usec = value * 1000000ULL;
                        mount_set_timeout(2 * m->io_timeout_usec);
                        break;
                case ARG_MAX_PENDING:
                        if (parse_number(optarg, 1, 100000, &value) < 0) {
                                fprintf(stderr, "loopd: invalid --max-pending-per-user: %s\n", optarg);
                                return -EINVAL;
                        }
                        b->max_pending_per_user = (unsigned)value;
                        break;
                case ARG_UNCONFINED:
                        if (!streq(optarg, "yes") && !streq(optarg, "no")) {
                                fprintf(stderr, "loopd: invalid --unconfined-fuse-drivers (yes or no): %s\n",
                                        optarg);
                                return -EINVAL;
                        }
                        mount_set_unconfined_drivers(streq(optarg, "yes"));
                        break;
                case ARG_DEBUG:
                        log_set_max_level(LOG_DEBUG);
                        break;
                case '?':
                        return -EINVAL;
                default:
                        abort();
                }

        if (optind < argc) {
                fprintf(stderr, "loopd: unexpected argument: %s\n", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

/* FUSE helpers daemonize; as a subreaper loopd inherits them and must reap them when they exit after their
 * unmount. Synchronous children (mount helpers) are waited for where they are started, before the event
 * loop runs again, so this never takes one of theirs. */
static int on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);
                if (pid <= 0)
                        break;
                log_debug("Reaped helper process "
                          "%d",
                        (int)pid);
        }
        return 0;
}

/* SIGTERM and SIGINT end the event loop, before anything else that is pending: a flood of uevents keeps the
 * watcher busy, and it must not keep loopd from exiting when asked. Except a first SIGTERM while loopd gives
 * its name back to exit on idle: systemd sends it as soon as a Type=dbus service's name goes, and the calls
 * that reached loopd before are answered first (loopd exits right after them; systemd's stop timeout, or a
 * second SIGTERM, bounds that). */
static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        Bus *b = userdata;

        if (si->ssi_signo == SIGTERM && bus_defer_exit(b)) {
                log_info("SIGTERM while exiting on idle: the calls that came before are answered first");
                return 0;
        }
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int add_exit_signal(sd_event *e, int sig, Bus *b)
{
        sd_event_source *s = NULL;
        int r;

        r = sd_event_add_signal(e, &s, sig, on_exit_signal, b);
        if (r < 0)
                return r;
        r = sd_event_source_set_priority(s, SD_EVENT_PRIORITY_IMPORTANT);
        if (r >= 0)
                r = sd_event_source_set_floating(s, true);
        sd_event_source_unref(s);
        return r;
}

/* How long loopd waits for another loopd to let go of the state dir (lock_state_dir()). */
#define STATE_LOCK_WAIT_MS (90 * 1000)

/* One loopd a state dir (state_lock_try()): a second one waits for the first to exit, as one started by bus
 * activation must while the one that exits on idle still answers its last calls. A SIGTERM or SIGINT
 * meanwhile (blocked: they are taken here) ends the wait: -ECANCELED. */
static int lock_state_dir(const char *state_dir, int *ret_fd)
{
        _cleanup_close_ int fd = -EBADF;
        int64_t deadline = now_ms() + STATE_LOCK_WAIT_MS;
        const struct timespec step = { .tv_nsec = 50 * 1000 * 1000 };
        sigset_t stop;
        pid_t holder;
        int r;

        r = state_lock_open(state_dir, &fd);
        if (r < 0)
                return log_error_errno(r, "Failed to open the lock of %s: %m", state_dir);
        r = state_lock_try(fd, &holder);
        if (r == -EWOULDBLOCK) {
                if (holder > 0)
                        log_info("Waiting for the loopd that still uses %s (pid %d) to exit", state_dir,
                                (int)holder);
                else
                        log_info("Waiting for the loopd that still uses %s to exit", state_dir);
        }
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        while (r == -EWOULDBLOCK && now_ms() < deadline) {
                if (sigtimedwait(&stop, NULL, &step) >= 0) {
                        log_info("Stopped while waiting for %s", state_dir);
                        return -ECANCELED;
                }
                r = state_lock_try(fd, &holder);
        }
        if (r == -EWOULDBLOCK)
                return log_error_errno(-EBUSY, "Another loopd still uses %s after %d s, exiting", state_dir,
                        STATE_LOCK_WAIT_MS / 1000);
        if (r < 0)
                return log_error_errno(r, "Failed to lock %s: %m", state_dir);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Everything loopd runs in a child of its runner (runner.h): what the kernel may hold for as long as a
 * device's image pleases. */
static const RunnerOps *const runner_table[] = {
        &mount_runner_ops,
        &loop_configure_runner_ops,
        &loop_status_runner_ops,
};

/* loopd never uses select(), so the soft limit of 1024 file descriptors protects nothing here: every call
 * waiting for polkit holds its image fd, and running out would refuse everyone. The hard limit bounds it. */
static void raise_fd_limit(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                log_warning_errno(errno, "Failed to raise the file descriptor limit: %m");
}

static int run(int argc, char *argv[])
{
        /* Freed in the reverse order: the engine first (stopping the watcher answers the Attach calls still
         * waiting for udev, through the face), then the face, then the state dir's lock: a loopd waiting for
         * it starts once this one's connection is closed (the bus frees the name once it has read that,
         * which bus_start() waits for). */
        _cleanup_close_ int state_lock = -EBADF;
        _cleanup_(bus_freep) Bus *b = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        sigset_t mask;
        int r;

        /* The engine, and the D-Bus face that hears of its changes. */
        r = manager_new(&m);
        if (r >= 0)
                r = bus_new(m, &b);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m");

        r = parse_argv(m, b, argc, argv);
        if (r <= 0)
                return r;

        if (geteuid() != 0)
                log_warning("Not running as root: attaching and mounting will fail");
        /* Now, while loopd is small and its signals are not blocked yet. */
        r = image_reader_new(m->io_timeout_usec, &m->image_reader);
        if (r == -EOPNOTSUPP)
                log_debug("No pidfds here: each image is read in a worker forked for it");
        else if (r < 0)
                log_warning_errno(r,
                        "Failed to start the image reader, each image is read in a worker forked for it: %m");
        r = runner_start(runner_table, ELEMENTSOF(runner_table));
        if (r < 0)
                log_warning_errno(r,
                        "Failed to start the runner, each mount and each binding forks a child of loopd: %m");
        raise_fd_limit();

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        r = add_exit_signal(m->event, SIGTERM, b);
        if (r >= 0)
                r = add_exit_signal(m->event, SIGINT, b);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGCHLD, on_sigchld, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to handle signals: %m");

        if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
                log_warning_errno(
                        errno, "Failed to become a subreaper, FUSE helpers will be reaped by init: %m");

        r = lock_state_dir(m->state_dir, &state_lock);
        if (r == -ECANCELED)
                return 0;
        if (r < 0)
                return r;
        r = manager_start(m);
        if (r < 0)
                return r;
        r = bus_start(b);
        if (r < 0)
                return r;

        log_info("Serving " LOOPD_BUS_NAME " (state in %s, mounts under %s)", m->state_dir, m->media_dir);
        r = sd_event_loop(m->event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
        else if (r == BUS_EXIT_DISCONNECTED)
                log_error("Lost the connection to the system bus, exiting");
        else
                log_info("Exiting");
        /* Calls still waiting are answered while the bus is there: those waiting for polkit or reading their
         * images, then the Attach calls waiting for udev (stopping the watcher rolls them back). On an error
         * of the loop too: a Format's job freed with the face would touch the engine's registry, freed
         * before it. */
        bus_leave(b);
        bus_cancel_calls(b);
        manager_stop(m);
        if (r == BUS_EXIT_DISCONNECTED)
                return -ECONNRESET;
        return r < 0 ? r : 0;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);

        runner_stop();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
