/* notify-session.c: the notify suite's session: a private session bus (dbus-daemon) the test user may
 * connect to, a fake notification server and file manager on it, a pkttyagent that only records that it ran,
 * and loopctl run as the desktop entry runs it. */
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "test-notify.h"

#define NOTIFICATIONS_NAME "org.freedesktop.Notifications"
#define NOTIFICATIONS_PATH "/org/freedesktop/Notifications"
#define FILE_MANAGER_NAME "org.freedesktop.FileManager1"
#define FILE_MANAGER_PATH "/org/freedesktop/FileManager1"

/* ---------------------------------------------------------------------------------------------------- */
/* The fake desktop: a notification server and a file manager on the session bus, in a thread of their own
 * (the test's thread blocks while loopctl runs), recording every call. */

typedef struct DesktopCall {
        char *method;
        GVariant *params;
} DesktopCall;

struct FakeDesktop {
        GMutex lock;
        GCond cond;
        bool markup; /* "body-markup" among the capabilities */
        GPtrArray *calls; /* DesktopCall */

        GThread *thread;
        GMainContext *context;
        GMainLoop *loop;
        char *address;
        bool started;
        char *start_error;
};

static const char desktop_xml[] =
        "<node>"
        "  <interface name='" NOTIFICATIONS_NAME "'>"
        "    <method name='GetCapabilities'><arg type='as' direction='out'/></method>"
        "    <method name='Notify'>"
        "      <arg type='s' name='app_name' direction='in'/>"
        "      <arg type='u' name='replaces_id' direction='in'/>"
        "      <arg type='s' name='app_icon' direction='in'/>"
        "      <arg type='s' name='summary' direction='in'/>"
        "      <arg type='s' name='body' direction='in'/>"
        "      <arg type='as' name='actions' direction='in'/>"
        "      <arg type='a{sv}' name='hints' direction='in'/>"
        "      <arg type='i' name='expire_timeout' direction='in'/>"
        "      <arg type='u' name='id' direction='out'/>"
        "    </method>"
        "    <method name='CloseNotification'><arg type='u' direction='in'/></method>"
        "    <method name='GetServerInformation'>"
        "      <arg type='s' direction='out'/><arg type='s' direction='out'/>"
        "      <arg type='s' direction='out'/><arg type='s' direction='out'/>"
        "    </method>"
        "  </interface>"
        "  <interface name='" FILE_MANAGER_NAME "'>"
        "    <method name='ShowFolders'>"
        "      <arg type='as' name='uris' direction='in'/><arg type='s' name='startup_id' direction='in'/>"
        "    </method>"
        "    <method name='ShowItems'>"
        "      <arg type='as' name='uris' direction='in'/><arg type='s' name='startup_id' direction='in'/>"
        "    </method>"
        "  </interface>"
        "</node>";

static void desktop_call_free(gpointer data)
{
        DesktopCall *c = data;

        g_free(c->method);
        g_variant_unref(c->params);
        g_free(c);
}

static void desktop_method_call(GDBusConnection *connection, const char *sender, const char *path,
        const char *interface, const char *method, GVariant *params, GDBusMethodInvocation *invocation,
        gpointer user_data)
{
        static const char *const caps_markup[] = { "body", "body-markup", "icon-static", NULL };
        static const char *const caps_plain[] = { "body", "icon-static", NULL };
        FakeDesktop *d = user_data;
        DesktopCall *call = g_new0(DesktopCall, 1);
        guint n;
        bool markup;

        call->method = g_strdup(method);
        call->params = g_variant_ref(params);
        g_mutex_lock(&d->lock);
        g_ptr_array_add(d->calls, call);
        n = d->calls->len;
        markup = d->markup;
        g_cond_broadcast(&d->cond);
        g_mutex_unlock(&d->lock);

        if (g_str_equal(method, "GetCapabilities"))
                g_dbus_method_invocation_return_value(
                        invocation, g_variant_new("(^as)", markup ? caps_markup : caps_plain));
        else if (g_str_equal(method, "Notify"))
                g_dbus_method_invocation_return_value(invocation, g_variant_new("(u)", n));
        else if (g_str_equal(method, "GetServerInformation"))
                g_dbus_method_invocation_return_value(
                        invocation, g_variant_new("(ssss)", "loopd-test", "loopd", "1", "1.2"));
        else
                g_dbus_method_invocation_return_value(invocation, NULL);
}

static const GDBusInterfaceVTable desktop_vtable = { .method_call = desktop_method_call };

static void desktop_start_done(FakeDesktop *d, char *error)
{
        g_mutex_lock(&d->lock);
        d->started = true;
        d->start_error = error;
        g_cond_broadcast(&d->cond);
        g_mutex_unlock(&d->lock);
}

static bool own_name(GDBusConnection *c, const char *name, GError **error)
{
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(c, "org.freedesktop.DBus",
                "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
                g_variant_new("(su)", name, 4 /* do not queue */), G_VARIANT_TYPE("(u)"),
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, error);
        guint32 result = 0;

        if (!reply)
                return false;
        g_variant_get(reply, "(u)", &result);
        if (result != 1 /* primary owner */) {
                g_set_error(
                        error, G_IO_ERROR, G_IO_ERROR_EXISTS, "RequestName(%s) answered %u", name, result);
                return false;
        }
        return true;
}

static gpointer desktop_thread(gpointer data)
{
        FakeDesktop *d = data;
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusNodeInfo) info = NULL;
        g_autoptr(GDBusConnection) connection = NULL;
        guint notifications = 0, file_manager = 0;

        g_main_context_push_thread_default(d->context);
        connection = g_dbus_connection_new_for_address_sync(d->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (connection)
                g_dbus_connection_set_exit_on_close(connection, FALSE);
        if (connection)
                info = g_dbus_node_info_new_for_xml(desktop_xml, &error);
        if (info)
                notifications = g_dbus_connection_register_object(connection, NOTIFICATIONS_PATH,
                        info->interfaces[0], &desktop_vtable, d, NULL, &error);
        if (notifications)
                file_manager = g_dbus_connection_register_object(connection, FILE_MANAGER_PATH,
                        info->interfaces[1], &desktop_vtable, d, NULL, &error);
        if (file_manager && own_name(connection, NOTIFICATIONS_NAME, &error) &&
                own_name(connection, FILE_MANAGER_NAME, &error)) {
                desktop_start_done(d, NULL);
                g_main_loop_run(d->loop);
        } else
                desktop_start_done(d, g_strdup(error ? error->message : "unknown error"));

        if (notifications)
                g_dbus_connection_unregister_object(connection, notifications);
        if (file_manager)
                g_dbus_connection_unregister_object(connection, file_manager);
        if (connection)
                (void)g_dbus_connection_close_sync(connection, NULL, NULL);
        g_clear_object(&connection);
        while (g_main_context_iteration(d->context, FALSE))
                ;
        g_main_context_pop_thread_default(d->context);
        return NULL;
}

static void fake_desktop_free(FakeDesktop *d)
{
        if (!d)
                return;
        if (d->thread) {
                g_main_loop_quit(d->loop);
                g_thread_join(d->thread);
        }
        g_main_loop_unref(d->loop);
        g_main_context_unref(d->context);
        g_ptr_array_unref(d->calls);
        g_free(d->address);
        g_free(d->start_error);
        g_mutex_clear(&d->lock);
        g_cond_clear(&d->cond);
        g_free(d);
}

static FakeDesktop *fake_desktop_start(const char *address)
{
        FakeDesktop *d = g_new0(FakeDesktop, 1);
        bool ok;

        g_mutex_init(&d->lock);
        g_cond_init(&d->cond);
        d->markup = true;
        d->calls = g_ptr_array_new_with_free_func(desktop_call_free);
        d->context = g_main_context_new();
        d->loop = g_main_loop_new(d->context, FALSE);
        d->address = g_strdup(address);
        d->thread = g_thread_new("fake-desktop", desktop_thread, d);

        g_mutex_lock(&d->lock);
        while (!d->started)
                g_cond_wait(&d->cond, &d->lock);
        ok = !d->start_error;
        g_mutex_unlock(&d->lock);
        if (!ok) {
                g_test_fail_printf("the fake desktop did not start: %s", d->start_error);
                fake_desktop_free(d);
                return NULL;
        }
        return d;
}

void fake_desktop_set_markup(FakeDesktop *d, bool markup)
{
        g_mutex_lock(&d->lock);
        d->markup = markup;
        g_mutex_unlock(&d->lock);
}

static guint count_locked(FakeDesktop *d, const char *method)
{
        guint n = 0;

        for (guint i = 0; i < d->calls->len; i++)
                n += g_str_equal(((DesktopCall *)d->calls->pdata[i])->method, method);
        return n;
}

/* Waits up to timeout_ms until method was called n times in all; returns how many times it was. */
guint fake_desktop_wait(FakeDesktop *d, const char *method, guint n, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        guint got;

        g_mutex_lock(&d->lock);
        while ((got = count_locked(d, method)) < n && g_cond_wait_until(&d->cond, &d->lock, deadline))
                ;
        got = count_locked(d, method);
        g_mutex_unlock(&d->lock);
        return got;
}

/* The parameters of the i-th call of method (a new reference), or NULL. */
GVariant *fake_desktop_params(FakeDesktop *d, const char *method, guint i)
{
        GVariant *params = NULL;

        g_mutex_lock(&d->lock);
        for (guint k = 0; k < d->calls->len && !params; k++) {
                DesktopCall *c = d->calls->pdata[k];
                if (g_str_equal(c->method, method) && i-- == 0)
                        params = g_variant_ref(c->params);
        }
        g_mutex_unlock(&d->lock);
        return params;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture: the harness (private system bus, fake polkit, loopd), a private session bus, the fake
 * desktop on it, and a pkttyagent that only records that it ran. */

static void child_setup(gpointer user_data)
{
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
}

/* The bus runs as root; the test user authenticates with EXTERNAL as its own uid, which a bus admits only
 * when told to (by default, only the uid it runs as): allow user="*". Everyone may own, send and receive
 * anything, as on a session bus (a policy with rules but none for receiving refuses even the bus's replies).
 * No service directories: nothing real is ever activated. */
static char *session_bus_config(const char *socket_path)
{
        return g_markup_printf_escaped(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>session</type>\n"
                "  <listen>unix:path=%s</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <policy context=\"default\">\n"
                "    <allow user=\"*\"/>\n"
                "    <allow own=\"*\"/>\n"
                "    <allow send_destination=\"*\"/>\n"
                "    <allow receive_sender=\"*\"/>\n"
                "  </policy>\n"
                "</busconfig>\n",
                socket_path);
}

/* Reads the address dbus-daemon prints (one line) within HARNESS_TIMEOUT_MS. */
static bool read_address_line(int fd)
{
        char buf[512];
        size_t n = 0;
        gint64 deadline = g_get_monotonic_time() + HARNESS_TIMEOUT_MS * G_GINT64_CONSTANT(1000);

        while (n < sizeof(buf) - 1 && !memchr(buf, '\n', n)) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                ssize_t k;

                if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                        return false;
                k = read(fd, buf + n, sizeof(buf) - 1 - n);
                if (k <= 0)
                        return false;
                n += (size_t)k;
        }
        return true;
}

static bool session_bus_start(Fixture *f)
{
        g_autofree char *socket_path = g_build_filename(f->session_dir, "bus", NULL);
        g_autofree char *config_path = g_build_filename(f->session_dir, "bus.conf", NULL);
        g_autofree char *log_path = g_build_filename(f->h.tmpdir, "session-bus.log", NULL);
        g_autofree char *config = session_bus_config(socket_path);
        g_autofree char *config_arg = g_strconcat("--config-file=", config_path, NULL);
        const char *argv[] = { "dbus-daemon", config_arg, "--nofork", "--nopidfile", "--print-address=1",
                NULL };
        g_autoptr(GError) error = NULL;
        int out = -1, log_fd;
        bool ok;

        if (!g_file_set_contents(config_path, config, -1, &error)) {
                g_test_fail_printf("cannot write %s: %s", config_path, error->message);
                return false;
        }
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) {
                g_test_fail_printf("cannot open %s: %s", log_path, g_strerror(errno));
                return false;
        }
        ok = g_spawn_async_with_pipes_and_fds("/", argv, NULL,
                G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL, child_setup,
                NULL, -1, -1, log_fd, NULL, NULL, 0, &f->session_pid, NULL, &out, NULL, &error);
        close(log_fd);
        if (!ok) {
                g_test_fail_printf("cannot start the session dbus-daemon: %s", error->message);
                return false;
        }
        f->session_pidfd = pidfd_open(f->session_pid, 0);
        ok = f->session_pidfd >= 0 && read_address_line(out);
        close(out);
        if (!ok) {
                g_test_fail_printf("the session dbus-daemon did not print its address");
                return false;
        }
        f->session_address = g_strconcat("unix:path=", socket_path, NULL);
        return true;
}

static void session_bus_stop(Fixture *f)
{
        struct pollfd p = { .fd = f->session_pidfd, .events = POLLIN };

        if (f->session_pid <= 0)
                return;
        (void)kill(f->session_pid, SIGTERM);
        if (f->session_pidfd < 0 || poll(&p, 1, HARNESS_TIMEOUT_MS) <= 0) {
                g_test_message("the session dbus-daemon had to be killed");
                (void)kill(f->session_pid, SIGKILL);
        }
        (void)waitpid(f->session_pid, NULL, 0);
        if (f->session_pidfd >= 0)
                close(f->session_pidfd);
        f->session_pid = 0;
        f->session_pidfd = -1;
}

/* Records how it was run, says it is ready by closing the fd it was given, waits to be stopped. */
static const char fake_agent[] = "#!/bin/sh\n"
                                 "echo \"args: $*\" >> \"$AGENT_LOG\"\n"
                                 "trap 'exit 0' TERM\n"
                                 "[ \"$1\" = --notify-fd ] && eval \"exec $2>&-\"\n"
                                 "while :; do sleep 0.05; done\n";

static bool agent_setup(Fixture *f)
{
        g_autofree char *script = g_build_filename(f->h.tmpdir, "bin", "pkttyagent", NULL);

        f->bin = g_build_filename(f->h.tmpdir, "bin", NULL);
        f->agent_log = g_build_filename(f->h.tmpdir, "agent.log", NULL);
        return g_mkdir(f->bin, 0755) == 0 && chmod(f->bin, 0755) == 0 &&
                g_file_set_contents(script, fake_agent, -1, NULL) && chmod(script, 0755) == 0 &&
                g_file_set_contents(f->agent_log, "", -1, NULL) && chmod(f->agent_log, 0666) == 0;
}

char *agent_log(Fixture *f)
{
        char *s = NULL;

        g_assert_true(g_file_get_contents(f->agent_log, &s, NULL, NULL));
        return s;
}

void fixture_setup(Fixture *f, gconstpointer options)
{
        memset(f, 0, sizeof(*f));
        f->session_pidfd = -1;
        harness_setup(&f->h, options);
        if (!f->h.ready)
                return;

        f->session_dir = g_build_filename(f->h.tmpdir, "session", NULL);
        if (g_mkdir(f->session_dir, 0755) < 0 || chmod(f->session_dir, 0755) < 0) {
                g_test_fail_printf("cannot create %s: %s", f->session_dir, g_strerror(errno));
                return;
        }
        if (!agent_setup(f)) {
                g_test_fail_printf("cannot set up the fake pkttyagent in %s", f->h.tmpdir);
                return;
        }
        if (!session_bus_start(f))
                return;
        f->desktop = fake_desktop_start(f->session_address);
        f->ready = f->desktop != NULL;
}

void fixture_teardown(Fixture *f, gconstpointer options)
{
        g_clear_pointer(&f->desktop, fake_desktop_free);
        session_bus_stop(f);
        if (g_test_failed() && f->h.tmpdir) {
                g_autofree char *log_path = g_build_filename(f->h.tmpdir, "session-bus.log", NULL);
                g_autofree char *log = NULL;
                if (g_file_get_contents(log_path, &log, NULL, NULL) && *log)
                        g_test_message("session dbus-daemon:\n%s", log);
        }
        harness_teardown(&f->h, options);
        g_free(f->session_dir);
        g_free(f->session_address);
        g_free(f->bin);
        g_free(f->agent_log);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Running loopctl as the desktop would */

/* Runs loopctl with args (NULL-terminated) as HARNESS_USER_A, stdin /dev/null and stdout, stderr pipes
 * (harness_spawn_as()) unless l->terminal, in the environment l describes, the fake pkttyagent first in
 * PATH. Returns the exit status; *ret_ms is how long it took. */
int loopctl_as_desktop(Fixture *f, const Launch *l, HarnessRun *run, gint64 *ret_ms, ...)
{
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) command = g_ptr_array_new_with_free_func(g_free);
        const char *binary = g_getenv("LOOPCTL_BINARY"), *a;
        gint64 start;
        va_list ap;
        int status;

        g_assert_nonnull(binary);
        g_ptr_array_add(command, g_strdup(binary));
        va_start(ap, ret_ms);
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(command, g_strdup(a));
        va_end(ap);

        for (const char *const *s = (const char *const[]){ "env", "-u", "DISPLAY", "-u", "WAYLAND_DISPLAY",
                     "-u", "XDG_RUNTIME_DIR", "-u", "DBUS_SESSION_BUS_ADDRESS", NULL };
                *s; s++)
                g_ptr_array_add(argv, g_strdup(*s));
        g_ptr_array_add(argv, g_strdup_printf("AGENT_LOG=%s", f->agent_log));
        g_ptr_array_add(argv, g_strdup_printf("PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin", f->bin));
        /* script(1) runs the command with $SHELL; the test user's login shell is nologin. */
        g_ptr_array_add(argv, g_strdup("SHELL=/bin/sh"));
        if (l->session)
                g_ptr_array_add(argv, g_strdup_printf("DBUS_SESSION_BUS_ADDRESS=%s", l->session));
        if (!l->no_display)
                g_ptr_array_add(argv, g_strdup("DISPLAY=:73"));
        if (l->terminal) {
                g_autoptr(GString) line = g_string_new(NULL);
                for (guint i = 0; i < command->len; i++) {
                        g_autofree char *q = g_shell_quote(command->pdata[i]);
                        g_string_append_printf(line, "%s%s", i ? " " : "", q);
                }
                for (const char *const *s = (const char *const[]){ "script", "--quiet", "--return",
                             "--command", line->str, "/dev/null", NULL };
                        *s; s++)
                        g_ptr_array_add(argv, g_strdup(*s));
        } else
                for (guint i = 0; i < command->len; i++)
                        g_ptr_array_add(argv, g_strdup(command->pdata[i]));
        g_ptr_array_add(argv, NULL);

        start = g_get_monotonic_time();
        status = harness_spawn_as(&f->h, HARNESS_USER_A, run, (const char *const *)argv->pdata);
        if (ret_ms)
                *ret_ms = (g_get_monotonic_time() - start) / 1000;
        return status;
}

/* The graphical session with the fake desktop, no terminal: what the desktop entry gets. */
Launch desktop_launch(Fixture *f)
{
        return (Launch){ .session = f->session_address };
}

/* The reason of loopctl's one error line: stderr without "loopctl: " and the newline. */
char *error_reason(const HarnessRun *run)
{
        const char *nl = strchr(run->err, '\n');

        if (!g_str_has_prefix(run->err, "loopctl: ") || !nl || nl[1] != '\0') {
                g_test_fail_printf("stderr is not one 'loopctl: ' line: '%s'", run->err);
                return g_strdup("");
        }
        return g_strndup(run->err + strlen("loopctl: "), (gsize)(nl - run->err) - strlen("loopctl: "));
}

/* s as a body in markup: &, < and > as entities. */
static char *markup_text(const char *s)
{
        g_auto(GStrv) amp = g_strsplit(s, "&", -1);
        g_autofree char *a = g_strjoinv("&amp;", amp);
        g_auto(GStrv) lt = g_strsplit(a, "<", -1);
        g_autofree char *b = g_strjoinv("&lt;", lt);
        g_auto(GStrv) gt = g_strsplit(b, ">", -1);

        return g_strjoinv("&gt;", gt);
}

/* loopctl failed (exit 1, one error line) and sent exactly one notification saying why: "Cannot open
 * <name>" over the error line, from the desktop entry's application. */
void check_one_notification(Fixture *f, const HarnessRun *run, const char *name, bool markup)
{
        g_autofree char *reason = error_reason(run);
        g_autofree char *summary = g_strdup_printf("Cannot open %s", name);
        g_autofree char *body = markup ? markup_text(reason) : g_strdup(reason);
        g_autoptr(GVariant) params = NULL, actions = NULL, hints = NULL;
        const char *app, *icon, *got_summary, *got_body, *entry = NULL;
        guint32 replaces;
        gint32 expire;

        g_assert_cmpint(run->status, ==, 1);
        g_assert_cmpuint(fake_desktop_wait(f->desktop, "Notify", 2, QUIET_MS), ==, 1);
        params = fake_desktop_params(f->desktop, "Notify", 0);
        if (!params)
                return;
        g_variant_get(params, "(&su&s&s&s@as@a{sv}i)", &app, &replaces, &icon, &got_summary, &got_body,
                &actions, &hints, &expire);
        g_assert_cmpstr(app, ==, "Disk Image Mounter");
        g_assert_cmpuint(replaces, ==, 0);
        g_assert_cmpstr(icon, ==, "drive-removable-media");
        g_assert_cmpstr(got_summary, ==, summary);
        g_assert_cmpstr(got_body, ==, body);
        g_assert_cmpuint(g_variant_n_children(actions), ==, 0);
        g_assert_true(g_variant_lookup(hints, "desktop-entry", "&s", &entry));
        g_assert_cmpstr(entry, ==, "loopd-open");
        g_assert_cmpint(expire, ==, -1);
}

void check_no_notification(Fixture *f)
{
        g_assert_cmpuint(fake_desktop_wait(f->desktop, "Notify", 1, QUIET_MS), ==, 0);
}
