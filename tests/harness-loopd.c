/* harness-loopd.c: loopd from the build tree, as the fixture runs it (started, watched, stopped, its log,
 * the virtual-disk exports it leaves), and a second one of the test's own for tests that kill it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness-internal.h"
#include "loopd-bus.h"

/* ---------------------------------------------------------------------------------------------------- */
/* loopd */

/* The process that owns org.loopd1 is loopd's own. When it is not the process started (a wrapper that forks
 * loopd, such as strace -f, rather than one that execs it, such as valgrind), hold a pidfd of it: stopping
 * must signal loopd, since a tracer that gets the signal detaches and leaves loopd running. */
static bool find_daemon(Harness *h)
{
        HarnessPrivate *p = h->priv;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint32 pid = 0;

        reply = g_dbus_connection_call_sync(h->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "GetConnectionUnixProcessID", g_variant_new("(s)", LOOPD_BUS_NAME),
                G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        if (!reply) {
                g_test_fail_printf("which process owns %s: %s", LOOPD_BUS_NAME, error->message);
                return false;
        }
        g_variant_get(reply, "(u)", &pid);
        if ((GPid)pid == p->loopd.pid)
                return true;
        p->daemon_pidfd = pidfd_open((pid_t)pid, 0);
        if (p->daemon_pidfd < 0) {
                g_test_fail_printf("pidfd_open(loopd, pid %u): %s", pid, g_strerror(errno));
                return false;
        }
        p->daemon_pid = (GPid)pid;
        return true;
}

/* Whether the process behind pfd (a pidfd) exits within timeout_ms. */
static bool poll_exit(struct pollfd *pfd, int timeout_ms)
{
        int r;

        do
                r = poll(pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        return r > 0;
}

/* harness_process_stop() of loopd: the signal goes to loopd's own process, whose exit is what is waited for
 * (then SIGKILL). A wrapper that forked it follows: a tracer exits once every process it follows has, which
 * may be never (a FUSE driver, a virtual disk's export outlive loopd by design), so it is waited for a
 * moment, then killed, and *ret_status_known is false (loopd's exit status is the wrapper's to tell).
 * Returns whether loopd exited of its own. */
static bool stop_daemon(HarnessPrivate *p, int sig, bool *ret_status_known)
{
        struct pollfd pfd = { .fd = p->daemon_pidfd, .events = POLLIN };
        bool clean;

        *ret_status_known = true;
        if (p->daemon_pidfd < 0)
                return harness_process_stop(&p->loopd, sig);
        (void)pidfd_send_signal(p->daemon_pidfd, sig, NULL, 0);
        clean = poll_exit(&pfd, HARNESS_TIMEOUT_MS);
        if (!clean) {
                g_test_message("loopd (pid %d) did not exit within %d ms of signal %d: killing it",
                        (int)p->daemon_pid, HARNESS_TIMEOUT_MS, sig);
                (void)pidfd_send_signal(p->daemon_pidfd, SIGKILL, NULL, 0);
                (void)poll_exit(&pfd, HARNESS_TIMEOUT_MS);
        }
        if (!harness_process_wait(&p->loopd, 2000)) {
                g_test_message(
                        "loopd's wrapper (pid %d) did not exit after loopd: killing it", (int)p->loopd.pid);
                (void)harness_process_stop(&p->loopd, SIGKILL);
                *ret_status_known = false;
        }
        close(p->daemon_pidfd);
        p->daemon_pidfd = -1;
        p->daemon_pid = 0;
        return clean;
}

bool harness_start_loopd(Harness *h)
{
        HarnessPrivate *p = h->priv;
        const char *binary = g_getenv("LOOPD_BINARY");
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(GStrv) env = harness_environ_with_bus(h->bus_address);

        if (p->loopd.pid != 0) {
                g_test_fail_printf("loopd is already running");
                return false;
        }
        if (!binary) {
                g_test_fail_printf("LOOPD_BINARY is not set (run the suite with meson test)");
                return false;
        }
        /* LOOPD_TEST_WRAPPER: a command line loopd runs under (tools/valgrind: valgrind --error-exitcode=99
         * ...); an error it finds makes loopd's exit status non-zero, which fails the test. A tracer that
         * forks loopd (strace -f) does too: find_daemon() then finds loopd through the bus. */
        g_auto(GStrv) wrapper = NULL;
        const char *wrapper_line = g_getenv("LOOPD_TEST_WRAPPER");
        if (wrapper_line && *wrapper_line) {
                g_autoptr(GError) error = NULL;
                if (!g_shell_parse_argv(wrapper_line, NULL, &wrapper, &error)) {
                        g_test_fail_printf("LOOPD_TEST_WRAPPER: %s", error->message);
                        return false;
                }
                char *path = g_find_program_in_path(wrapper[0]);
                if (path) {
                        g_free(wrapper[0]);
                        wrapper[0] = path;
                }
                for (char **w = wrapper; *w; w++)
                        g_ptr_array_add(argv, *w);
        }
        g_ptr_array_add(argv, (char *)binary);
        g_ptr_array_add(argv, "--state-dir");
        g_ptr_array_add(argv, h->state_dir);
        g_ptr_array_add(argv, "--media-dir");
        g_ptr_array_add(argv, h->media_dir);
        for (const char *const *a = h->options->loopd_args; a && *a; a++)
                g_ptr_array_add(argv, (char *)*a);
        g_ptr_array_add(argv, NULL);

        if (!harness_process_spawn(&p->loopd, (const char *const *)argv->pdata, env, -1))
                return false;
        if (!harness_process_wait_for_name(h->bus, LOOPD_BUS_NAME, &p->loopd)) {
                (void)harness_process_stop(&p->loopd, SIGKILL);
                harness_print_loopd_log(p);
                return false;
        }
        if (!find_daemon(h)) {
                bool known;

                (void)stop_daemon(p, SIGKILL, &known);
                return false;
        }
        return true;
}

GPid harness_bus_pid(Harness *h)
{
        return h->priv ? h->priv->dbus.pid : 0;
}

GPid harness_loopd_pid(Harness *h)
{
        if (!h->priv)
                return 0;
        return h->priv->daemon_pidfd >= 0 ? h->priv->daemon_pid : h->priv->loopd.pid;
}

bool harness_wait_for_log(const char *path, const char *needle, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;

        for (;;) {
                g_autofree char *log = NULL;

                if (g_file_get_contents(path, &log, NULL, NULL) && strstr(log, needle))
                        return true;
                if (g_get_monotonic_time() > deadline)
                        return false;
                g_usleep(20 * 1000);
        }
}

const char *harness_loopd_log_path(Harness *h)
{
        return h->priv && h->priv->loopd.log_path ? h->priv->loopd.log_path : "";
}

char *harness_loopd_log(Harness *h)
{
        char *contents = NULL;

        if (!h->priv || !g_file_get_contents(h->priv->loopd.log_path, &contents, NULL, NULL))
                return g_strdup("");
        return contents;
}

bool harness_loopd_alive(Harness *h)
{
        HarnessPrivate *p = h->priv;

        if (!p || p->loopd.pid == 0)
                return false;
        if (!harness_process_wait(&p->loopd, 0))
                return true;
        g_autofree char *how = harness_describe_wait_status(p->loopd.wait_status);
        g_test_fail_printf("loopd %s while the test ran", how);
        harness_print_loopd_log(p);
        return false;
}

bool harness_stop_loopd(Harness *h)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *how = NULL, *log = NULL;
        bool clean, status_known;

        if (p->loopd.pid == 0)
                return true;
        clean = stop_daemon(p, SIGTERM, &status_known);
        how = harness_describe_wait_status(p->loopd.wait_status);
        log = harness_loopd_log(h);
        if (!clean) {
                g_test_fail_printf("loopd did not exit within %d ms of SIGTERM", HARNESS_TIMEOUT_MS);
        } else if (status_known &&
                (!WIFEXITED(p->loopd.wait_status) || WEXITSTATUS(p->loopd.wait_status) != 0)) {
                g_test_fail_printf("loopd %s on SIGTERM (expected a clean exit 0)", how);
                clean = false;
        } else if (harness_text_has_sanitizer_report(log)) {
                g_test_fail_printf("loopd's log has a sanitizer report");
                clean = false;
        }
        if (!clean)
                harness_print_loopd_log(p);
        return clean;
}

/* ---------------------------------------------------------------------------------------------------- */
/* A loopd of the test's own */

static void own_loopd_child_setup(gpointer user_data)
{
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

GSubprocess *harness_spawn_own_loopd(Harness *h, const char *log_path, const char *const *args)
{
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GError) error = NULL;
        const char *binary = g_getenv("LOOPD_BINARY");
        GSubprocess *loopd;
        int fd;

        if (!binary) {
                g_test_fail_printf("LOOPD_BINARY is not set (run the suite with meson test)");
                return NULL;
        }
        fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
                g_test_fail_printf("cannot open %s: %s", log_path, g_strerror(errno));
                return NULL;
        }
        g_subprocess_launcher_take_stdout_fd(launcher, dup(fd));
        g_subprocess_launcher_take_stderr_fd(launcher, fd);
        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", h->bus_address, TRUE);
        g_subprocess_launcher_unsetenv(launcher, "DBUS_SESSION_BUS_ADDRESS");
        g_subprocess_launcher_unsetenv(launcher, "NOTIFY_SOCKET");
        g_subprocess_launcher_set_cwd(launcher, "/");
        /* A test that crashes takes it along, as the harness's own processes. */
        g_subprocess_launcher_set_child_setup(launcher, own_loopd_child_setup, NULL, NULL);
        g_ptr_array_add(argv, (gpointer)binary);
        g_ptr_array_add(argv, (gpointer) "--state-dir");
        g_ptr_array_add(argv, h->state_dir);
        g_ptr_array_add(argv, (gpointer) "--media-dir");
        g_ptr_array_add(argv, h->media_dir);
        for (size_t i = 0; args && args[i]; i++)
                g_ptr_array_add(argv, (gpointer)args[i]);
        g_ptr_array_add(argv, NULL);
        loopd = g_subprocess_launcher_spawnv(launcher, (const char *const *)argv->pdata, &error);
        if (!loopd)
                g_test_fail_printf("cannot start the test's own loopd: %s", error->message);
        return loopd;
}

GSubprocess *harness_start_own_loopd(Harness *h, const char *log_path, const char *const *args)
{
        GSubprocess *loopd = harness_spawn_own_loopd(h, log_path, args);

        if (loopd && !harness_wait_for_name(h->bus, LOOPD_BUS_NAME, true, HARNESS_TIMEOUT_MS)) {
                g_test_fail_printf("the test's own loopd did not own %s within %d ms", LOOPD_BUS_NAME,
                        HARNESS_TIMEOUT_MS);
                g_subprocess_send_signal(loopd, SIGKILL);
                (void)g_subprocess_wait(loopd, NULL, NULL);
                g_clear_object(&loopd);
        }
        return loopd;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Virtual disks' exports */

/* Field 22 of /proc/PID/stat, 0 when it cannot be read. */
static guint64 process_start_time(int pid)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid), *text = NULL;
        const char *p;
        guint64 start = 0;

        if (!g_file_get_contents(path, &text, NULL, NULL) || !(p = strrchr(text, ')')))
                return 0;
        for (int field = 2; p && field < 22; field++)
                p = strchr(p + 1, ' ');
        if (!p || sscanf(p + 1, "%" G_GUINT64_FORMAT, &start) != 1)
                return 0;
        return start;
}

static void kill_export_server(const char *info_path)
{
        g_autofree char *text = NULL;
        struct pollfd pfd = { .events = POLLIN };
        guint64 start = 0;
        int pid = 0;

        if (!g_file_get_contents(info_path, &text, NULL, NULL) ||
                sscanf(text, "PID=%d\nSTART=%" G_GUINT64_FORMAT, &pid, &start) != 2 || pid <= 0)
                return;
        pfd.fd = pidfd_open(pid, 0);
        if (pfd.fd < 0)
                return;
        /* Only the process loopd started (pid and start time): the pid may be anyone's by now. */
        if (start != 0 && process_start_time(pid) == start &&
                pidfd_send_signal(pfd.fd, SIGKILL, NULL, 0) == 0) {
                g_test_message("cleanup: killed qemu-storage-daemon %d, left by the test", pid);
                (void)poll(&pfd, 1, HARNESS_TIMEOUT_MS);
        }
        close(pfd.fd);
}

void harness_stop_exports(Harness *h)
{
        g_autofree char *dir = g_build_filename(h->state_dir, "exports", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        if (!d)
                return;
        while ((name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);

                if (g_str_has_suffix(name, ".info"))
                        kill_export_server(path);
                else if (!strchr(name, '.') && umount2(path, MNT_DETACH) == 0)
                        g_test_message("cleanup: unmounted the export %s, left by the test", path);
        }
}
