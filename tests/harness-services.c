/* harness-services.c: the processes the harness runs for a test (the private dbus-daemon, the real polkitd,
 * systemd-udevd), tracked by PID: only those are ever killed. */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness-internal.h"

#define POLKITD_BINARY "/usr/lib/polkit-1/polkitd"
#define POLKIT_ACTIONS_DIR "/usr/share/polkit-1/actions"
#define POLKIT_RULES_DIR "/etc/polkit-1/rules.d"
#define UDEVD_BINARY "/lib/systemd/systemd-udevd"
#define UDEV_CONTROL "/run/udev/control"

/* ---------------------------------------------------------------------------------------------------- */
/* Processes */

void harness_process_init(HarnessProcess *p, const char *name, const char *tmpdir)
{
        g_autofree char *file = g_strconcat(name, ".log", NULL);

        p->name = name;
        p->pid = 0;
        p->pidfd = -1;
        p->log_path = g_build_filename(tmpdir, file, NULL);
}

static void child_setup(gpointer user_data)
{
        /* If the test process dies (a crash, a fatal assertion), take the bus and the daemons with it. */
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
}

char **harness_environ_with_bus(const char *bus_address)
{
        char **env = g_get_environ();

        env = g_environ_unsetenv(env, "NOTIFY_SOCKET");
        env = g_environ_unsetenv(env, "DBUS_SESSION_BUS_ADDRESS");
        if (bus_address)
                env = g_environ_setenv(env, "DBUS_SYSTEM_BUS_ADDRESS", bus_address, TRUE);
        return env;
}

/* Starts argv with stdout and stderr appended to p->log_path; extra_fd (if >= 0) becomes fd 3 in the
 * child. */
bool harness_process_spawn(HarnessProcess *p, const char *const *argv, char **envp, int extra_fd)
{
        g_autoptr(GError) error = NULL;
        int source_fds[1] = { extra_fd }, target_fds[1] = { 3 };
        int log_fd;
        GPid pid;
        bool ok;

        g_assert(p->pid == 0);
        log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) {
                g_test_fail_printf("cannot open %s: %s", p->log_path, g_strerror(errno));
                return false;
        }
        ok = g_spawn_async_with_pipes_and_fds("/", argv, (const char *const *)envp,
                G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL, child_setup, NULL, -1, log_fd,
                log_fd, extra_fd >= 0 ? source_fds : NULL, extra_fd >= 0 ? target_fds : NULL,
                extra_fd >= 0 ? 1 : 0, &pid, NULL, NULL, NULL, &error);
        close(log_fd);
        if (!ok) {
                g_test_fail_printf("cannot start %s (%s): %s", p->name, argv[0], error->message);
                return false;
        }
        p->pid = pid;
        p->pidfd = pidfd_open(pid, 0);
        if (p->pidfd < 0) {
                g_test_fail_printf("pidfd_open(%s): %s", p->name, g_strerror(errno));
                kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                p->pid = 0;
                return false;
        }
        return true;
}

/* Waits up to timeout_ms for p to exit and reaps it. Returns whether it exited. */
bool harness_process_wait(HarnessProcess *p, int timeout_ms)
{
        struct pollfd pfd = { .fd = p->pidfd, .events = POLLIN };
        int r;

        if (p->pid == 0)
                return true;
        do
                r = poll(&pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r <= 0)
                return false;
        if (waitpid(p->pid, &p->wait_status, 0) != p->pid)
                return false;
        close(p->pidfd);
        p->pidfd = -1;
        p->pid = 0;
        return true;
}

/* SIGTERM (or sig), a bounded wait, then SIGKILL. Returns false when it had to be killed. */
bool harness_process_stop(HarnessProcess *p, int sig)
{
        if (p->pid == 0)
                return true;
        (void)kill(p->pid, sig);
        if (harness_process_wait(p, HARNESS_TIMEOUT_MS))
                return true;
        g_test_message("%s (pid %d) did not exit within %d ms of signal %d: killing it", p->name,
                (int)p->pid, HARNESS_TIMEOUT_MS, sig);
        (void)kill(p->pid, SIGKILL);
        (void)harness_process_wait(p, HARNESS_TIMEOUT_MS);
        return false;
}

char *harness_describe_wait_status(int status)
{
        if (WIFEXITED(status))
                return g_strdup_printf("exited with status %d", WEXITSTATUS(status));
        if (WIFSIGNALED(status))
                return g_strdup_printf(
                        "was killed by signal %d (%s)", WTERMSIG(status), g_strsignal(WTERMSIG(status)));
        return g_strdup_printf("ended with wait status 0x%x", status);
}

bool harness_text_has_sanitizer_report(const char *text)
{
        return text && (strstr(text, "Sanitizer") || strstr(text, "runtime error:"));
}

/* Prints the last lines of a log into the test output. */
void harness_print_log_tail(const char *title, const char *path, guint max_lines)
{
        g_autofree char *contents = NULL;
        g_auto(GStrv) lines = NULL;
        guint n, first;

        if (!path || !g_file_get_contents(path, &contents, NULL, NULL) || !*contents)
                return;
        lines = g_strsplit(contents, "\n", -1);
        n = g_strv_length(lines);
        first = n > max_lines ? n - max_lines : 0;
        g_test_message("---- %s (%s)%s ----", title, path, first > 0 ? ", last lines" : "");
        for (guint i = first; i < n; i++)
                if (lines[i][0])
                        g_test_message("%s: %s", title, lines[i]);
}

/* loopd's log, once per test: whoever notices a problem first prints it. */
void harness_print_loopd_log(HarnessPrivate *p)
{
        if (p->loopd_log_printed)
                return;
        p->loopd_log_printed = true;
        harness_print_log_tail("loopd", p->loopd.log_path, 200);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Waiting for a bus name, event-driven and bounded */

typedef struct NameWait {
        bool owned; /* what is waited for: an owner, or none */
        bool done; /* the name was seen as wanted */
        bool died;
        bool timed_out;
} NameWait;

static void name_appeared(GDBusConnection *c, const char *name, const char *owner, gpointer user_data)
{
        NameWait *w = user_data;

        if (w->owned)
                w->done = true;
}

static void name_vanished(GDBusConnection *c, const char *name, gpointer user_data)
{
        NameWait *w = user_data;

        if (!w->owned)
                w->done = true;
}

static gboolean name_wait_process_died(gint fd, GIOCondition cond, gpointer user_data)
{
        ((NameWait *)user_data)->died = true;
        return G_SOURCE_REMOVE;
}

static gboolean name_wait_timeout(gpointer user_data)
{
        ((NameWait *)user_data)->timed_out = true;
        return G_SOURCE_REMOVE;
}

/* Waits until name has an owner on c (owned) or has none (!owned), or the process behind pidfd (if >= 0)
 * exits, or timeout_ms passed. In a main context of its own: the caller's sources do not run meanwhile. */
static NameWait name_wait(GDBusConnection *c, const char *name, bool owned, int pidfd, guint timeout_ms)
{
        g_autoptr(GMainContext) context = g_main_context_new();
        GSource *died = NULL, *timeout;
        NameWait w = { .owned = owned };
        guint watch;

        g_main_context_push_thread_default(context);
        watch = g_bus_watch_name_on_connection(
                c, name, G_BUS_NAME_WATCHER_FLAGS_NONE, name_appeared, name_vanished, &w, NULL);
        if (pidfd >= 0) {
                died = g_unix_fd_source_new(pidfd, G_IO_IN);
                g_source_set_callback(died, G_SOURCE_FUNC(name_wait_process_died), &w, NULL);
                g_source_attach(died, context);
        }
        timeout = g_timeout_source_new(timeout_ms);
        g_source_set_callback(timeout, name_wait_timeout, &w, NULL);
        g_source_attach(timeout, context);

        while (!w.done && !w.died && !w.timed_out)
                g_main_context_iteration(context, TRUE);

        g_bus_unwatch_name(watch);
        g_source_destroy(timeout);
        g_source_unref(timeout);
        if (died) {
                g_source_destroy(died);
                g_source_unref(died);
        }
        /* Let the unwatch finish its business in this context before dropping it. */
        while (g_main_context_iteration(context, FALSE))
                ;
        g_main_context_pop_thread_default(context);
        return w;
}

bool harness_wait_for_name(GDBusConnection *c, const char *name, bool owned, guint timeout_ms)
{
        return name_wait(c, name, owned, -1, timeout_ms).done;
}

bool harness_process_wait_for_name(GDBusConnection *c, const char *name, HarnessProcess *p)
{
        NameWait w = name_wait(c, name, true, p ? p->pidfd : -1, HARNESS_TIMEOUT_MS);

        if (w.done)
                return true;
        if (w.died) {
                (void)harness_process_wait(p, HARNESS_TIMEOUT_MS);
                g_autofree char *how = harness_describe_wait_status(p->wait_status);
                g_test_fail_printf("%s %s before it owned %s", p->name, how, name);
        } else
                g_test_fail_printf("%s did not appear on the bus within %d ms", name, HARNESS_TIMEOUT_MS);
        return false;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The private bus */

static char *bus_config(const char *socket_path, const char *source_root)
{
        g_autofree char *project_policy = g_build_filename(source_root, "dbus", "org.loopd1.conf", NULL);

        /* The default policy is Debian's system.conf: deny owning and calling, allow signals and replies,
         * allow talking to the bus itself. The project's own policy file then punches its holes, exactly as
         * it does on a real system bus. */
        return g_markup_printf_escaped(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>system</type>\n"
                "  <listen>unix:path=%s</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <policy context=\"default\">\n"
                "    <allow user=\"*\"/>\n"
                "    <deny own=\"*\"/>\n"
                "    <deny send_type=\"method_call\"/>\n"
                "    <allow send_type=\"signal\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
                "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
                "    <allow receive_type=\"method_call\"/>\n"
                "    <allow receive_type=\"method_return\"/>\n"
                "    <allow receive_type=\"error\"/>\n"
                "    <allow receive_type=\"signal\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus.Properties\"/>\n"
                "    <deny send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"\n"
                "          send_member=\"UpdateActivationEnvironment\"/>\n"
                "  </policy>\n"
                "  <policy user=\"root\">\n"
                "    <allow send_destination=\"org.freedesktop.DBus\"\n"
                "           send_interface=\"org.freedesktop.DBus.Monitoring\"/>\n"
                "    <!-- the fake authority runs as root -->\n"
                "    <allow own=\"" POLKIT_BUS_NAME "\"/>\n"
                "  </policy>\n"
                "  <include>%s</include>\n"
                "  <include ignore_missing=\"yes\">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>\n"
                "</busconfig>\n",
                socket_path, project_policy);
}

static bool read_line_bounded(int fd, char **ret_line)
{
        GString *s = g_string_new(NULL);
        gint64 deadline = g_get_monotonic_time() + (gint64)HARNESS_TIMEOUT_MS * 1000;

        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                char buf[256];
                ssize_t n;
                int r;

                if (left <= 0)
                        break;
                r = poll(&pfd, 1, (int)left);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        break;
                n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                g_string_append_len(s, buf, n);
                if (strchr(s->str, '\n')) {
                        *strchr(s->str, '\n') = '\0';
                        *ret_line = g_string_free(s, FALSE);
                        return true;
                }
        }
        g_string_free(s, TRUE);
        return false;
}

bool harness_bus_start(Harness *h, const char *source_root)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *dir = g_build_filename(h->tmpdir, "bus", NULL);
        g_autofree char *socket_path = g_build_filename(dir, "system_bus_socket", NULL);
        g_autofree char *config_path = g_build_filename(dir, "bus.conf", NULL);
        g_autofree char *config = NULL, *address = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = harness_environ_with_bus(NULL);
        int pipefd[2];
        bool ok;

        /* Unprivileged test users connect too: the directory must be searchable by everyone. */
        if (g_mkdir_with_parents(dir, 0755) < 0 || chmod(dir, 0755) < 0) {
                g_test_fail_printf("cannot create %s: %s", dir, g_strerror(errno));
                return false;
        }
        config = bus_config(socket_path, source_root);
        if (!g_file_set_contents(config_path, config, -1, &error)) {
                g_test_fail_printf("cannot write %s: %s", config_path, error->message);
                return false;
        }

        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                g_test_fail_printf("pipe: %s", g_strerror(errno));
                return false;
        }
        g_autofree char *config_arg = g_strconcat("--config-file=", config_path, NULL);
        const char *argv[] = { "dbus-daemon", config_arg, "--nofork", "--nopidfile", "--print-address=3",
                NULL };
        g_autofree char *dbus_daemon = g_find_program_in_path("dbus-daemon");
        if (!dbus_daemon) {
                g_test_fail_printf("dbus-daemon is not installed");
                close(pipefd[0]);
                close(pipefd[1]);
                return false;
        }
        argv[0] = dbus_daemon;
        ok = harness_process_spawn(&p->dbus, argv, env, pipefd[1]);
        close(pipefd[1]);
        if (ok && !read_line_bounded(pipefd[0], &address)) {
                g_test_fail_printf("dbus-daemon did not print its address within %d ms", HARNESS_TIMEOUT_MS);
                ok = false;
        }
        close(pipefd[0]);
        if (!ok)
                return false;

        /* Use the path we configured, not the printed address with its guid: clients need no guid. */
        h->bus_address = g_strconcat("unix:path=", socket_path, NULL);
        h->bus = g_dbus_connection_new_for_address_sync(h->bus_address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!h->bus) {
                g_test_fail_printf(
                        "cannot connect to the private bus %s: %s", h->bus_address, error->message);
                return false;
        }
        g_dbus_connection_set_exit_on_close(h->bus, FALSE);
        return true;
}

void harness_bus_stop(Harness *h)
{
        if (h->bus) {
                (void)g_dbus_connection_close_sync(h->bus, NULL, NULL);
                g_clear_object(&h->bus);
        }
        if (!harness_process_stop(&h->priv->dbus, SIGTERM))
                g_test_message("dbus-daemon had to be killed");
}

/* ---------------------------------------------------------------------------------------------------- */
/* The real polkitd */

static bool write_file(const char *path, const char *contents)
{
        g_autoptr(GError) error = NULL;

        if (!g_file_set_contents_full(path, contents, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, &error)) {
                g_test_fail_printf("cannot write %s: %s", path, error->message);
                return false;
        }
        return true;
}

/* polkitd reads actions only from /usr/share/polkit-1/actions and rules from /etc/polkit-1/rules.d. Rather
 * than install files there (other test runs on the machine install and remove the same names, and polkitd
 * reloads when they change), it runs in a mount namespace of its own where both are this test's
 * directories: the project's policy from the source tree and the test's rules, nothing else. */
bool harness_polkitd_start(Harness *h, const char *source_root)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *policy_src = g_build_filename(source_root, "polkit", "org.loopd1.policy", NULL);
        g_autofree char *dir = g_build_filename(h->tmpdir, "polkit", NULL);
        g_autofree char *actions = g_build_filename(dir, "actions", NULL);
        g_autofree char *rules = g_build_filename(dir, "rules.d", NULL);
        g_autofree char *policy_dst = g_build_filename(actions, "org.loopd1.policy", NULL);
        g_autofree char *rules_dst = g_build_filename(rules, "00-loopd-test.rules", NULL);
        g_autofree char *policy = NULL;
        g_auto(GStrv) env = harness_environ_with_bus(h->bus_address);
        const char *argv[] = { "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                "mount --bind \"$1\" " POLKIT_ACTIONS_DIR " && mount --bind \"$2\" " POLKIT_RULES_DIR
                " && exec \"$3\" --no-debug",
                "sh", actions, rules, POLKITD_BINARY, NULL };

        if (!g_file_get_contents(policy_src, &policy, NULL, NULL)) {
                g_test_fail_printf("the real polkitd needs %s, which does not exist", policy_src);
                return false;
        }
        if (!g_file_test(POLKIT_ACTIONS_DIR, G_FILE_TEST_IS_DIR) ||
                !g_file_test(POLKIT_RULES_DIR, G_FILE_TEST_IS_DIR)) {
                g_test_fail_printf(
                        "polkitd is not installed (no %s or %s)", POLKIT_ACTIONS_DIR, POLKIT_RULES_DIR);
                return false;
        }
        /* polkitd drops to its own user: everything must be readable by others. */
        if (g_mkdir_with_parents(actions, 0755) < 0 || g_mkdir_with_parents(rules, 0755) < 0) {
                g_test_fail_printf("cannot create %s: %s", dir, g_strerror(errno));
                return false;
        }
        if (!write_file(policy_dst, policy))
                return false;
        if (h->options->polkit_rules && !write_file(rules_dst, h->options->polkit_rules))
                return false;

        g_autofree char *unshare = g_find_program_in_path("unshare");
        if (!unshare) {
                g_test_fail_printf("unshare (util-linux) is not installed");
                return false;
        }
        argv[0] = unshare;
        /* unshare and sh exec: the PID we keep is polkitd's. */
        if (!harness_process_spawn(&p->polkitd, argv, env, -1))
                return false;
        return harness_process_wait_for_name(h->bus, POLKIT_BUS_NAME, &p->polkitd);
}

void harness_polkitd_stop(Harness *h)
{
        /* Its mount namespace, and the bind mounts in it, go away with it. */
        (void)harness_process_stop(&h->priv->polkitd, SIGTERM);
}

/* ---------------------------------------------------------------------------------------------------- */
/* systemd-udevd */

/* 1: a udevd answers on /run/udev/control; 0: no socket; -1: a stale socket nobody listens on. */
static int udev_control_state(void)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = UDEV_CONTROL };
        int fd, r;

        if (access(UDEV_CONTROL, F_OK) < 0)
                return 0;
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return 1; /* cannot tell: assume it is alive and leave it alone */
        r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        return r == 0 || errno != ECONNREFUSED ? 1 : -1;
}

/* The udevd this process started, for the crash handler. */
static volatile pid_t crash_udevd_pid;

/* A crash (a fatal g_error(), a segfault) skips the teardown. loopd, the bus and polkitd die with us
 * (PR_SET_PDEATHSIG), but udevd would leave /run/udev/control behind, and a stale control socket makes
 * every loopd on the machine wait for a udev that is gone. Async-signal-safe calls only. */
static void crash_handler(int sig)
{
        pid_t pid = crash_udevd_pid;

        if (pid > 0) {
                (void)kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                (void)unlink(UDEV_CONTROL);
        }
        signal(sig, SIG_DFL);
        raise(sig);
}

bool harness_udevd_start(Harness *h)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *notify_path = g_build_filename(h->tmpdir, "udevd-notify", NULL);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *argv[] = { UDEVD_BINARY, NULL };
        gint64 deadline;
        bool ready = false;
        int state = udev_control_state(), nfd;

        if (state > 0) {
                g_test_message("systemd-udevd is already running; using it");
                h->udev = true;
                return true;
        }
        if (state < 0) {
                g_test_message("removing the stale %s of a udevd that is gone", UDEV_CONTROL);
                (void)unlink(UDEV_CONTROL);
        }

        /* udevd sends READY=1 on $NOTIFY_SOCKET once its control socket and uevent monitor are set up and
         * its event loop runs: no polling for files. */
        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        g_strlcpy(sa.sun_path, notify_path, sizeof(sa.sun_path));
        if (nfd < 0 || bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                g_test_fail_printf("cannot create the notify socket %s: %s", notify_path, g_strerror(errno));
                if (nfd >= 0)
                        close(nfd);
                return false;
        }

        g_auto(GStrv) env = harness_environ_with_bus(NULL);
        env = g_environ_setenv(env, "NOTIFY_SOCKET", notify_path, TRUE);
        if (!harness_process_spawn(&p->udevd, argv, env, -1)) {
                close(nfd);
                return false;
        }
        crash_udevd_pid = p->udevd.pid;

        deadline = g_get_monotonic_time() + (gint64)HARNESS_TIMEOUT_MS * 1000;
        while (!ready) {
                struct pollfd pfd[2] = { { .fd = nfd, .events = POLLIN },
                        { .fd = p->udevd.pidfd, .events = POLLIN } };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                char buf[1024];
                ssize_t n;

                if (left <= 0 || poll(pfd, 2, (int)left) <= 0)
                        break;
                if (pfd[1].revents)
                        break;
                n = recv(nfd, buf, sizeof(buf) - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = '\0';
                ready = g_str_has_prefix(buf, "READY=1") || strstr(buf, "\nREADY=1");
        }
        close(nfd);
        (void)unlink(notify_path);

        if (!ready) {
                g_test_fail_printf("systemd-udevd did not get ready within %d ms", HARNESS_TIMEOUT_MS);
                return false;
        }
        if (udev_control_state() <= 0) {
                g_test_fail_printf("systemd-udevd is ready but %s does not answer", UDEV_CONTROL);
                return false;
        }
        h->udev = true;
        return true;
}

void harness_udevd_stop(Harness *h)
{
        HarnessPrivate *p = h->priv;

        if (p->udevd.pid == 0)
                return;
        crash_udevd_pid = 0;
        (void)harness_process_stop(&p->udevd, SIGTERM);
        /* udevd leaves its control socket behind; a stale one would make loopd wait for a udev that is
         * gone. Remove it only if nobody (e.g. a udevd started meanwhile) answers on it. */
        if (udev_control_state() < 0)
                (void)unlink(UDEV_CONTROL);
}

void harness_handle_crashes(void)
{
        /* g_error() and failed g_assert() abort, fatal criticals trap; a sanitizer report ends in abort()
         * too (abort_on_error=1), so its own SIGSEGV handler stays in place. */
        static const int fatal[] = { SIGABRT, SIGTRAP };
        for (size_t i = 0; i < G_N_ELEMENTS(fatal); i++)
                signal(fatal[i], crash_handler);
}

/* ---------------------------------------------------------------------------------------------------- */
/* A hung image: tests/fuse-hang */

bool harness_hang_start(Harness *h, HarnessHang *hang)
{
        return harness_hang_start_in(h->tmpdir, hang);
}

bool harness_hang_start_in(const char *dir, HarnessHang *hang)
{
        const char *exe = g_getenv("LOOPD_FUSE_HANG");
        g_autofree char *fallback = NULL;
        g_autoptr(GError) error = NULL;

        if (!exe)
                exe = fallback =
                        g_build_filename(g_getenv("LOOPD_BUILD_ROOT") ?: ".", "tests", "fuse-hang", NULL);
        if (!g_file_test(exe, G_FILE_TEST_IS_EXECUTABLE)) {
                g_test_fail_printf("no FUSE helper at %s (set LOOPD_FUSE_HANG)", exe);
                return false;
        }
        hang->mountpoint = g_build_filename(dir, "hung", NULL);
        hang->file = g_build_filename(hang->mountpoint, "disk.img", NULL);
        g_assert_cmpint(g_mkdir(hang->mountpoint, 0755), ==, 0);
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
        goffset size = (goffset)64 * 1024 * 1024;
        if (hang->source) {
                g_autofree char *from = g_strdup_printf("%" G_GUINT64_FORMAT, hang->hang_from);
                g_autofree char *to = g_strdup_printf("%" G_GUINT64_FORMAT, hang->hang_to);
                struct stat st;

                g_assert_cmpint(stat(hang->source, &st), ==, 0);
                size = st.st_size;
                g_subprocess_launcher_setenv(launcher, "FUSE_HANG_SOURCE", hang->source, TRUE);
                g_subprocess_launcher_setenv(launcher, "FUSE_HANG_FROM", from, TRUE);
                g_subprocess_launcher_setenv(launcher, "FUSE_HANG_TO", to, TRUE);
        }
        if (hang->freeze_getattr || hang->freeze_statfs)
                g_subprocess_launcher_setenv(
                        launcher, "FUSE_HANG_FREEZE", hang->freeze_getattr ? "getattr" : "statfs", TRUE);
        hang->server = g_subprocess_launcher_spawn(
                launcher, &error, exe, "-f", "-o", "allow_other", hang->mountpoint, NULL);
        if (!hang->server) {
                g_test_fail_printf("cannot start %s: %s", exe, error->message);
                return false;
        }
        /* Mounted once the file shows (the directory is empty before); stat() is answered, never blocks. */
        for (gint64 deadline = g_get_monotonic_time() + HARNESS_TIMEOUT_MS * 1000;
                g_get_monotonic_time() < deadline; g_usleep(50 * 1000)) {
                struct stat st;

                if (stat(hang->file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == size)
                        return true;
                if (!g_subprocess_get_identifier(hang->server)) {
                        g_test_fail_printf("%s exited before it mounted %s", exe, hang->mountpoint);
                        return false;
                }
        }
        g_test_fail_printf("%s did not mount %s within %d ms", exe, hang->mountpoint, HARNESS_TIMEOUT_MS);
        return false;
}

void harness_hang_freeze(HarnessHang *hang)
{
        g_assert_nonnull(hang->server);
        g_subprocess_send_signal(hang->server, SIGUSR1);
}

void harness_hang_kill(HarnessHang *hang)
{
        if (!hang->server)
                return;
        g_subprocess_force_exit(hang->server);
        (void)g_subprocess_wait(hang->server, NULL, NULL);
        g_clear_object(&hang->server);
}

void harness_hang_clear(HarnessHang *hang)
{
        harness_hang_kill(hang);
        if (hang->mountpoint) {
                test_cleanup_loops_under(hang->mountpoint);
                if (umount2(hang->mountpoint, MNT_DETACH) < 0 && errno != EINVAL)
                        g_test_message("cleanup: umount -l %s: %s", hang->mountpoint, g_strerror(errno));
        }
        g_clear_pointer(&hang->mountpoint, g_free);
        g_clear_pointer(&hang->file, g_free);
}
