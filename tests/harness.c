/* harness.c: a private system-like bus, polkit (fake, real or none), loopd, udevd and clients for the
 * integration suites. Every process the harness starts is tracked by PID and only those are ever killed. */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define POLKIT_BUS_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_AUTHORITY_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_AUTHORITY_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKITD_BINARY "/usr/lib/polkit-1/polkitd"
#define POLKIT_ACTIONS_DIR "/usr/share/polkit-1/actions"
#define POLKIT_RULES_DIR "/etc/polkit-1/rules.d"
#define UDEVD_BINARY "/lib/systemd/systemd-udevd"
#define UDEV_CONTROL "/run/udev/control"

/* A child the harness started and is responsible for. */
typedef struct HarnessProcess {
        const char *name;
        GPid pid; /* 0 when not running (or already reaped) */
        int pidfd;
        int wait_status;
        char *log_path;
} HarnessProcess;

struct HarnessPrivate {
        HarnessProcess dbus, loopd, polkitd, udevd;
        GPtrArray *connections; /* from harness_connect_as() */
        bool loopd_log_printed;
};

static const HarnessOptions default_options = { 0 };

/* ---------------------------------------------------------------------------------------------------- */
/* Processes */

static void child_setup(gpointer user_data)
{
        /* If the test process dies (a crash, a fatal assertion), take the bus and the daemons with it. */
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
}

static char **environ_with_bus(const char *bus_address)
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
static bool process_spawn(HarnessProcess *p, const char *const *argv, char **envp, int extra_fd)
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
static bool process_wait(HarnessProcess *p, int timeout_ms)
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
static bool process_stop(HarnessProcess *p, int sig)
{
        if (p->pid == 0)
                return true;
        (void)kill(p->pid, sig);
        if (process_wait(p, HARNESS_TIMEOUT_MS))
                return true;
        g_test_message("%s (pid %d) did not exit within %d ms of signal %d: killing it", p->name,
                (int)p->pid, HARNESS_TIMEOUT_MS, sig);
        (void)kill(p->pid, SIGKILL);
        (void)process_wait(p, HARNESS_TIMEOUT_MS);
        return false;
}

static char *describe_wait_status(int status)
{
        if (WIFEXITED(status))
                return g_strdup_printf("exited with status %d", WEXITSTATUS(status));
        if (WIFSIGNALED(status))
                return g_strdup_printf(
                        "was killed by signal %d (%s)", WTERMSIG(status), g_strsignal(WTERMSIG(status)));
        return g_strdup_printf("ended with wait status 0x%x", status);
}

static bool text_has_sanitizer_report(const char *text)
{
        return text && (strstr(text, "Sanitizer") || strstr(text, "runtime error:"));
}

/* Prints the last lines of a log into the test output. */
static void print_log_tail(const char *title, const char *path, guint max_lines)
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
static void print_loopd_log(HarnessPrivate *p)
{
        if (p->loopd_log_printed)
                return;
        p->loopd_log_printed = true;
        print_log_tail("loopd", p->loopd.log_path, 200);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Users */

bool harness_user(const char *name, uid_t *ret_uid, gid_t *ret_gid)
{
        struct passwd *pw = getpwnam(name);

        if (!pw) {
                const char *argv[] = { "useradd", "--system", "--no-create-home", "--user-group", "--shell",
                        "/usr/sbin/nologin", name, NULL };
                g_autoptr(GError) error = NULL;
                g_autofree char *err = NULL;
                int status;

                /* Another suite may create it at the same time: only the result counts. */
                if (!g_spawn_sync(NULL, (char **)argv, NULL,
                            G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                            &status, &error))
                        g_test_message("useradd %s: %s", name, error->message);
                pw = getpwnam(name);
                if (!pw) {
                        g_test_fail_printf("cannot create test user %s: %s", name, err ? err : "");
                        return false;
                }
        }
        if (ret_uid)
                *ret_uid = pw->pw_uid;
        if (ret_gid)
                *ret_gid = pw->pw_gid;
        return true;
}

uid_t harness_uid_of(const char *user)
{
        uid_t uid = (uid_t)-1;

        g_assert_true(harness_user(user, &uid, NULL));
        return uid;
}

gid_t harness_gid_of(const char *user)
{
        gid_t gid = (gid_t)-1;

        g_assert_true(harness_user(user, NULL, &gid));
        return gid;
}

char *harness_image_path(Harness *h, const char *name)
{
        return g_build_filename(h->image_dir, name, NULL);
}

void harness_allow_all(Harness *h)
{
        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Waiting for a bus name, event-driven and bounded */

typedef struct NameWait {
        bool appeared;
        bool died;
        bool timed_out;
} NameWait;

static void name_appeared(GDBusConnection *c, const char *name, const char *owner, gpointer user_data)
{
        ((NameWait *)user_data)->appeared = true;
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

/* Waits until name has an owner on c, or p exits, or the timeout. */
static bool wait_for_name(GDBusConnection *c, const char *name, HarnessProcess *p)
{
        g_autoptr(GMainContext) context = g_main_context_new();
        GSource *died = NULL, *timeout;
        NameWait w = { 0 };
        guint watch;

        g_main_context_push_thread_default(context);
        watch = g_bus_watch_name_on_connection(
                c, name, G_BUS_NAME_WATCHER_FLAGS_NONE, name_appeared, NULL, &w, NULL);
        if (p && p->pidfd >= 0) {
                died = g_unix_fd_source_new(p->pidfd, G_IO_IN);
                g_source_set_callback(died, G_SOURCE_FUNC(name_wait_process_died), &w, NULL);
                g_source_attach(died, context);
        }
        timeout = g_timeout_source_new(HARNESS_TIMEOUT_MS);
        g_source_set_callback(timeout, name_wait_timeout, &w, NULL);
        g_source_attach(timeout, context);

        while (!w.appeared && !w.died && !w.timed_out)
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

        if (w.appeared)
                return true;
        if (w.died) {
                (void)process_wait(p, HARNESS_TIMEOUT_MS);
                g_autofree char *how = describe_wait_status(p->wait_status);
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

static bool bus_start(Harness *h, const char *source_root)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *dir = g_build_filename(h->tmpdir, "bus", NULL);
        g_autofree char *socket_path = g_build_filename(dir, "system_bus_socket", NULL);
        g_autofree char *config_path = g_build_filename(dir, "bus.conf", NULL);
        g_autofree char *config = NULL, *address = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = environ_with_bus(NULL);
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
        ok = process_spawn(&p->dbus, argv, env, pipefd[1]);
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

static void bus_stop(Harness *h)
{
        if (h->bus) {
                (void)g_dbus_connection_close_sync(h->bus, NULL, NULL);
                g_clear_object(&h->bus);
        }
        if (!process_stop(&h->priv->dbus, SIGTERM))
                g_test_message("dbus-daemon had to be killed");
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fake polkit authority */

typedef struct FakeAuthRule {
        FakeAuthResult result;
        guint delay_ms;
} FakeAuthRule;

struct FakeAuthority {
        GMutex lock;
        GCond cond;
        GHashTable *rules; /* action id → FakeAuthRule */
        FakeAuthRule default_rule;
        GPtrArray *calls; /* FakeAuthCall */
        GPtrArray *cancellations; /* char * */

        /* Owned by the authority's thread once it runs. */
        GThread *thread;
        GMainContext *context;
        GMainLoop *loop;
        char *address;
        GDBusConnection *connection;
        GHashTable *pending; /* PendingCheck */

        /* The thread's start result. */
        bool started;
        char *start_error;
};

typedef struct PendingCheck {
        FakeAuthority *authority;
        GDBusMethodInvocation *invocation;
        char *cancellation_id;
        GSource *timer;
        bool authorized, challenge;
} PendingCheck;

static const char authority_xml[] = "<node>"
                                    "  <interface name='" POLKIT_AUTHORITY_INTERFACE "'>"
                                    "    <method name='CheckAuthorization'>"
                                    "      <arg type='(sa{sv})' name='subject' direction='in'/>"
                                    "      <arg type='s' name='action_id' direction='in'/>"
                                    "      <arg type='a{ss}' name='details' direction='in'/>"
                                    "      <arg type='u' name='flags' direction='in'/>"
                                    "      <arg type='s' name='cancellation_id' direction='in'/>"
                                    "      <arg type='(bba{ss})' name='result' direction='out'/>"
                                    "    </method>"
                                    "    <method name='CancelCheckAuthorization'>"
                                    "      <arg type='s' name='cancellation_id' direction='in'/>"
                                    "    </method>"
                                    "  </interface>"
                                    "</node>";

static void fake_auth_call_free(gpointer data)
{
        FakeAuthCall *c = data;

        g_free(c->action_id);
        g_free(c->subject_kind);
        g_free(c->subject_bus_name);
        g_clear_pointer(&c->details, g_hash_table_unref);
        g_free(c->cancellation_id);
        g_free(c->sender);
        g_free(c);
}

static FakeAuthCall *fake_auth_call_copy(const FakeAuthCall *c)
{
        FakeAuthCall *n = g_new0(FakeAuthCall, 1);
        GHashTableIter it;
        gpointer k, v;

        n->action_id = g_strdup(c->action_id);
        n->subject_kind = g_strdup(c->subject_kind);
        n->subject_bus_name = g_strdup(c->subject_bus_name);
        n->details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_iter_init(&it, c->details);
        while (g_hash_table_iter_next(&it, &k, &v))
                g_hash_table_insert(n->details, g_strdup(k), g_strdup(v));
        n->flags = c->flags;
        n->cancellation_id = g_strdup(c->cancellation_id);
        n->sender = g_strdup(c->sender);
        return n;
}

static void pending_check_free(PendingCheck *pc)
{
        if (pc->timer) {
                g_source_destroy(pc->timer);
                g_source_unref(pc->timer);
        }
        g_clear_object(&pc->invocation);
        g_free(pc->cancellation_id);
        g_free(pc);
}

static void pending_check_reply(PendingCheck *pc)
{
        g_dbus_method_invocation_return_value(g_steal_pointer(&pc->invocation),
                g_variant_new("((bb@a{ss}))", pc->authorized, pc->challenge,
                        g_variant_new_array(G_VARIANT_TYPE("{ss}"), NULL, 0)));
}

static gboolean pending_check_fire(gpointer user_data)
{
        PendingCheck *pc = user_data;

        pending_check_reply(pc);
        g_hash_table_remove(pc->authority->pending, pc); /* frees pc */
        return G_SOURCE_REMOVE;
}

static void authority_check(FakeAuthority *a, GDBusMethodInvocation *invocation, GVariant *params)
{
        g_autoptr(GVariant) subject_details = NULL, details = NULL;
        const char *kind, *action, *cancellation_id, *name = NULL;
        FakeAuthCall *call;
        FakeAuthRule rule;
        PendingCheck *pc;
        guint32 flags;
        GVariantIter it;
        const char *k, *v;

        g_variant_get(params, "((&s@a{sv})&s@a{ss}u&s)", &kind, &subject_details, &action, &details, &flags,
                &cancellation_id);
        (void)g_variant_lookup(subject_details, "name", "&s", &name);

        call = g_new0(FakeAuthCall, 1);
        call->action_id = g_strdup(action);
        call->subject_kind = g_strdup(kind);
        call->subject_bus_name = g_strcmp0(kind, "system-bus-name") == 0 ? g_strdup(name) : NULL;
        call->details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_variant_iter_init(&it, details);
        while (g_variant_iter_next(&it, "{&s&s}", &k, &v))
                g_hash_table_insert(call->details, g_strdup(k), g_strdup(v));
        call->flags = flags;
        call->cancellation_id = g_strdup(cancellation_id);
        call->sender = g_strdup(g_dbus_method_invocation_get_sender(invocation));

        g_mutex_lock(&a->lock);
        g_ptr_array_add(a->calls, call);
        FakeAuthRule *r = g_hash_table_lookup(a->rules, action);
        rule = r ? *r : a->default_rule;
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);

        pc = g_new0(PendingCheck, 1);
        pc->authority = a;
        pc->invocation = g_object_ref(invocation);
        pc->cancellation_id = g_strdup(cancellation_id);
        switch (rule.result) {
        case FAKE_AUTH_ALLOW:
                pc->authorized = true;
                break;
        case FAKE_AUTH_CHALLENGE:
                pc->challenge = true;
                break;
        case FAKE_AUTH_INTERACTIVE:
                pc->authorized = flags & 1;
                pc->challenge = !(flags & 1);
                break;
        case FAKE_AUTH_DENY:
        default:
                break;
        }

        if (rule.delay_ms == 0) {
                pending_check_reply(pc);
                pending_check_free(pc);
                return;
        }
        pc->timer = g_timeout_source_new(rule.delay_ms);
        g_source_set_callback(pc->timer, pending_check_fire, pc, NULL);
        g_source_attach(pc->timer, a->context);
        g_hash_table_add(a->pending, pc);
}

static void authority_cancel(FakeAuthority *a, GDBusMethodInvocation *invocation, GVariant *params)
{
        const char *id;
        GHashTableIter it;
        gpointer key;

        g_variant_get(params, "(&s)", &id);
        g_mutex_lock(&a->lock);
        g_ptr_array_add(a->cancellations, g_strdup(id));
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);

        g_hash_table_iter_init(&it, a->pending);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
                PendingCheck *pc = key;
                if (*id && g_strcmp0(pc->cancellation_id, id) == 0 &&
                        g_strcmp0(g_dbus_method_invocation_get_sender(pc->invocation),
                                g_dbus_method_invocation_get_sender(invocation)) == 0) {
                        g_dbus_method_invocation_return_dbus_error(g_steal_pointer(&pc->invocation),
                                "org.freedesktop.PolicyKit1.Error.Cancelled",
                                "The authorization check was cancelled");
                        g_hash_table_iter_remove(&it);
                        g_dbus_method_invocation_return_value(invocation, NULL);
                        return;
                }
        }
        /* What polkitd answers for an unknown id. */
        g_dbus_method_invocation_return_dbus_error(
                invocation, "org.freedesktop.PolicyKit1.Error.Failed", "No such cancellation_id");
}

static void authority_method_call(GDBusConnection *c, const char *sender, const char *path,
        const char *interface, const char *method, GVariant *params, GDBusMethodInvocation *invocation,
        gpointer user_data)
{
        FakeAuthority *a = user_data;

        if (g_str_equal(method, "CheckAuthorization"))
                authority_check(a, invocation, params);
        else if (g_str_equal(method, "CancelCheckAuthorization"))
                authority_cancel(a, invocation, params);
        else
                g_dbus_method_invocation_return_dbus_error(
                        invocation, "org.freedesktop.DBus.Error.UnknownMethod", method);
}

static const GDBusInterfaceVTable authority_vtable = { .method_call = authority_method_call };

static void authority_start_done(FakeAuthority *a, char *error)
{
        g_mutex_lock(&a->lock);
        a->started = true;
        a->start_error = error;
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);
}

static gpointer authority_thread(gpointer data)
{
        FakeAuthority *a = data;
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusNodeInfo) info = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint registration = 0;
        guint32 result = 0;

        g_main_context_push_thread_default(a->context);

        a->connection = g_dbus_connection_new_for_address_sync(a->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!a->connection)
                goto fail;
        g_dbus_connection_set_exit_on_close(a->connection, FALSE);

        info = g_dbus_node_info_new_for_xml(authority_xml, &error);
        if (!info)
                goto fail;
        registration = g_dbus_connection_register_object(a->connection, POLKIT_AUTHORITY_PATH,
                info->interfaces[0], &authority_vtable, a, NULL, &error);
        if (registration == 0)
                goto fail;

        reply = g_dbus_connection_call_sync(a->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "RequestName",
                g_variant_new("(su)", POLKIT_BUS_NAME, 4 /* do not queue */), G_VARIANT_TYPE("(u)"),
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        if (!reply)
                goto fail;
        g_variant_get(reply, "(u)", &result);
        if (result != 1 /* primary owner */) {
                authority_start_done(
                        a, g_strdup_printf("RequestName(%s) answered %u", POLKIT_BUS_NAME, result));
                goto out;
        }

        authority_start_done(a, NULL);
        g_main_loop_run(a->loop);
        goto out;

fail:
        authority_start_done(a, g_strdup(error ? error->message : "unknown error"));
out:
        /* Whoever still waits gets an answer rather than a hang. */
        g_hash_table_remove_all(a->pending);
        if (registration)
                g_dbus_connection_unregister_object(a->connection, registration);
        if (a->connection) {
                (void)g_dbus_connection_close_sync(a->connection, NULL, NULL);
                g_clear_object(&a->connection);
        }
        while (g_main_context_iteration(a->context, FALSE))
                ;
        g_main_context_pop_thread_default(a->context);
        return NULL;
}

static void fake_authority_free(FakeAuthority *a)
{
        if (!a)
                return;
        if (a->thread) {
                g_main_loop_quit(a->loop);
                g_thread_join(a->thread);
        }
        g_hash_table_unref(a->pending);
        g_main_loop_unref(a->loop);
        g_main_context_unref(a->context);
        g_hash_table_unref(a->rules);
        g_ptr_array_unref(a->calls);
        g_ptr_array_unref(a->cancellations);
        g_free(a->address);
        g_free(a->start_error);
        g_mutex_clear(&a->lock);
        g_cond_clear(&a->cond);
        g_free(a);
}

static FakeAuthority *fake_authority_start(const char *address)
{
        FakeAuthority *a = g_new0(FakeAuthority, 1);
        bool ok;

        g_mutex_init(&a->lock);
        g_cond_init(&a->cond);
        a->rules = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        a->default_rule.result = FAKE_AUTH_DENY;
        a->calls = g_ptr_array_new_with_free_func(fake_auth_call_free);
        a->cancellations = g_ptr_array_new_with_free_func(g_free);
        a->context = g_main_context_new();
        a->loop = g_main_loop_new(a->context, FALSE);
        a->address = g_strdup(address);
        a->pending = g_hash_table_new_full(
                g_direct_hash, g_direct_equal, (GDestroyNotify)pending_check_free, NULL);
        a->thread = g_thread_new("fake-polkit", authority_thread, a);

        g_mutex_lock(&a->lock);
        while (!a->started)
                g_cond_wait(&a->cond, &a->lock);
        ok = !a->start_error;
        g_mutex_unlock(&a->lock);
        if (!ok) {
                g_test_fail_printf("the fake polkit authority did not start: %s", a->start_error);
                fake_authority_free(a);
                return NULL;
        }
        return a;
}

void fake_authority_set(FakeAuthority *a, const char *action_id, FakeAuthResult result, guint delay_ms)
{
        FakeAuthRule rule = { .result = result, .delay_ms = delay_ms };

        g_return_if_fail(a);
        g_mutex_lock(&a->lock);
        if (action_id)
                g_hash_table_replace(a->rules, g_strdup(action_id), g_memdup2(&rule, sizeof(rule)));
        else
                a->default_rule = rule;
        g_mutex_unlock(&a->lock);
}

GPtrArray *fake_authority_calls(FakeAuthority *a)
{
        GPtrArray *copy = g_ptr_array_new_with_free_func(fake_auth_call_free);

        g_return_val_if_fail(a, copy);
        g_mutex_lock(&a->lock);
        for (guint i = 0; i < a->calls->len; i++)
                g_ptr_array_add(copy, fake_auth_call_copy(a->calls->pdata[i]));
        g_mutex_unlock(&a->lock);
        return copy;
}

guint fake_authority_n_calls(FakeAuthority *a)
{
        guint n;

        g_return_val_if_fail(a, 0);
        g_mutex_lock(&a->lock);
        n = a->calls->len;
        g_mutex_unlock(&a->lock);
        return n;
}

void fake_authority_clear_calls(FakeAuthority *a)
{
        g_return_if_fail(a);
        g_mutex_lock(&a->lock);
        g_ptr_array_set_size(a->calls, 0);
        g_ptr_array_set_size(a->cancellations, 0);
        g_mutex_unlock(&a->lock);
}

bool fake_authority_wait_calls(FakeAuthority *a, guint n, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        bool ok;

        g_return_val_if_fail(a, false);
        g_mutex_lock(&a->lock);
        while (a->calls->len < n)
                if (!g_cond_wait_until(&a->cond, &a->lock, deadline))
                        break;
        ok = a->calls->len >= n;
        g_mutex_unlock(&a->lock);
        return ok;
}

GPtrArray *fake_authority_cancellations(FakeAuthority *a)
{
        GPtrArray *copy = g_ptr_array_new_with_free_func(g_free);

        g_return_val_if_fail(a, copy);
        g_mutex_lock(&a->lock);
        for (guint i = 0; i < a->cancellations->len; i++)
                g_ptr_array_add(copy, g_strdup(a->cancellations->pdata[i]));
        g_mutex_unlock(&a->lock);
        return copy;
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
static bool polkit_real_start(Harness *h, const char *source_root)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *policy_src = g_build_filename(source_root, "polkit", "org.loopd1.policy", NULL);
        g_autofree char *dir = g_build_filename(h->tmpdir, "polkit", NULL);
        g_autofree char *actions = g_build_filename(dir, "actions", NULL);
        g_autofree char *rules = g_build_filename(dir, "rules.d", NULL);
        g_autofree char *policy_dst = g_build_filename(actions, "org.loopd1.policy", NULL);
        g_autofree char *rules_dst = g_build_filename(rules, "00-loopd-test.rules", NULL);
        g_autofree char *policy = NULL;
        g_auto(GStrv) env = environ_with_bus(h->bus_address);
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
        if (!process_spawn(&p->polkitd, argv, env, -1))
                return false;
        return wait_for_name(h->bus, POLKIT_BUS_NAME, &p->polkitd);
}

static void polkit_real_stop(Harness *h)
{
        /* Its mount namespace, and the bind mounts in it, go away with it. */
        (void)process_stop(&h->priv->polkitd, SIGTERM);
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

static bool udevd_start(Harness *h)
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

        g_auto(GStrv) env = environ_with_bus(NULL);
        env = g_environ_setenv(env, "NOTIFY_SOCKET", notify_path, TRUE);
        if (!process_spawn(&p->udevd, argv, env, -1)) {
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

static void udevd_stop(Harness *h)
{
        HarnessPrivate *p = h->priv;

        if (p->udevd.pid == 0)
                return;
        crash_udevd_pid = 0;
        (void)process_stop(&p->udevd, SIGTERM);
        /* udevd leaves its control socket behind; a stale one would make loopd wait for a udev that is
         * gone. Remove it only if nobody (e.g. a udevd started meanwhile) answers on it. */
        if (udev_control_state() < 0)
                (void)unlink(UDEV_CONTROL);
}

/* ---------------------------------------------------------------------------------------------------- */
/* loopd */

bool harness_start_loopd(Harness *h)
{
        HarnessPrivate *p = h->priv;
        const char *binary = g_getenv("LOOPD_BINARY");
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(GStrv) env = environ_with_bus(h->bus_address);

        if (p->loopd.pid != 0) {
                g_test_fail_printf("loopd is already running");
                return false;
        }
        if (!binary) {
                g_test_fail_printf("LOOPD_BINARY is not set (run the suite with meson test)");
                return false;
        }
        /* LOOPD_TEST_WRAPPER: a command line loopd runs under (tools/valgrind: valgrind --error-exitcode=99
         * ...); an error it finds makes loopd's exit status non-zero, which fails the test. */
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

        if (!process_spawn(&p->loopd, (const char *const *)argv->pdata, env, -1))
                return false;
        if (!wait_for_name(h->bus, LOOPD_BUS_NAME, &p->loopd)) {
                (void)process_stop(&p->loopd, SIGKILL);
                print_loopd_log(p);
                return false;
        }
        return true;
}

GPid harness_loopd_pid(Harness *h)
{
        return h->priv ? h->priv->loopd.pid : 0;
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
        if (!process_wait(&p->loopd, 0))
                return true;
        g_autofree char *how = describe_wait_status(p->loopd.wait_status);
        g_test_fail_printf("loopd %s while the test ran", how);
        print_loopd_log(p);
        return false;
}

bool harness_stop_loopd(Harness *h)
{
        HarnessPrivate *p = h->priv;
        g_autofree char *how = NULL, *log = NULL;
        bool clean;

        if (p->loopd.pid == 0)
                return true;
        clean = process_stop(&p->loopd, SIGTERM);
        how = describe_wait_status(p->loopd.wait_status);
        log = harness_loopd_log(h);
        if (!clean) {
                g_test_fail_printf("loopd did not exit within %d ms of SIGTERM", HARNESS_TIMEOUT_MS);
        } else if (!WIFEXITED(p->loopd.wait_status) || WEXITSTATUS(p->loopd.wait_status) != 0) {
                g_test_fail_printf("loopd %s on SIGTERM (expected a clean exit 0)", how);
                clean = false;
        } else if (text_has_sanitizer_report(log)) {
                g_test_fail_printf("loopd's log has a sanitizer report");
                clean = false;
        }
        if (!clean)
                print_loopd_log(p);
        return clean;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Clients */

typedef struct ConnectAs {
        const char *address;
        uid_t uid;
        gid_t gid;
        GDBusConnection *connection;
        char *error;
} ConnectAs;

/* Runs in a thread of its own that exits afterwards. The raw syscalls change only this thread's
 * credentials (glibc's setresuid() would change every thread's), and the bus authenticates a connection by
 * the credentials of the thread that connect()s: SO_PEERCRED and the EXTERNAL uid. */
static gpointer connect_as_thread(gpointer data)
{
        ConnectAs *c = data;
        g_autoptr(GError) error = NULL;

        if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, c->gid, c->gid, c->gid) < 0 ||
                syscall(SYS_setresuid, c->uid, c->uid, c->uid) < 0) {
                c->error = g_strdup_printf(
                        "cannot switch the thread to uid %u: %s", (unsigned)c->uid, g_strerror(errno));
                return NULL;
        }
        c->connection = g_dbus_connection_new_for_address_sync(c->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!c->connection)
                c->error = g_strdup(error->message);
        return NULL;
}

GDBusConnection *harness_connect_as(Harness *h, const char *user)
{
        ConnectAs c = { .address = h->bus_address };
        g_autoptr(GError) error = NULL;
        GDBusConnection *conn;

        if (!h->bus_address) {
                g_test_fail_printf("no bus");
                return NULL;
        }
        if (!user || g_str_equal(user, "root")) {
                conn = g_dbus_connection_new_for_address_sync(h->bus_address,
                        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                        NULL, NULL, &error);
                if (!conn) {
                        g_test_fail_printf("cannot connect to the bus as root: %s", error->message);
                        return NULL;
                }
        } else {
                if (!harness_user(user, &c.uid, &c.gid))
                        return NULL;
                g_thread_join(g_thread_new("connect-as", connect_as_thread, &c));
                if (!c.connection) {
                        g_test_fail_printf("cannot connect to the bus as %s: %s", user, c.error);
                        g_free(c.error);
                        return NULL;
                }
                conn = c.connection;
        }
        g_dbus_connection_set_exit_on_close(conn, FALSE);
        g_ptr_array_add(h->priv->connections, conn);
        return conn;
}

void harness_run_clear(HarnessRun *r)
{
        g_clear_pointer(&r->out, g_free);
        g_clear_pointer(&r->err, g_free);
        r->status = -1;
}

typedef struct Communicate {
        bool done;
        bool timed_out;
        GBytes *out, *err;
        GError *error;
} Communicate;

static void communicate_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
        Communicate *c = user_data;

        (void)g_subprocess_communicate_finish(G_SUBPROCESS(source), result, &c->out, &c->err, &c->error);
        c->done = true;
}

static gboolean communicate_timeout(gpointer user_data)
{
        ((Communicate *)user_data)->timed_out = true;
        return G_SOURCE_REMOVE;
}

static char *bytes_to_string(GBytes *b)
{
        gsize n = 0;
        const char *d = b ? g_bytes_get_data(b, &n) : NULL;

        return d ? g_strndup(d, n) : g_strdup("");
}

int harness_spawn_as(Harness *h, const char *user, HarnessRun *ret, const char *const *argv)
{
        g_autoptr(GSubprocessLauncher) launcher =
                g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_autoptr(GPtrArray) full = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GSubprocess) proc = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GMainContext) context = NULL;
        g_autofree char *cmdline = NULL;
        Communicate c = { 0 };
        GSource *timeout;

        g_assert(ret);
        harness_run_clear(ret);

        if (user && !g_str_equal(user, "root")) {
                uid_t uid;
                gid_t gid;
                if (!harness_user(user, &uid, &gid)) {
                        ret->out = g_strdup("");
                        ret->err = g_strdup("no such test user");
                        return -1;
                }
                g_ptr_array_add(full, g_strdup("setpriv"));
                g_ptr_array_add(full, g_strdup_printf("--reuid=%u", (unsigned)uid));
                g_ptr_array_add(full, g_strdup_printf("--regid=%u", (unsigned)gid));
                g_ptr_array_add(full, g_strdup("--clear-groups"));
                g_ptr_array_add(full, g_strdup("--"));
        }
        for (const char *const *a = argv; *a; a++)
                g_ptr_array_add(full, g_strdup(*a));
        g_ptr_array_add(full, NULL);
        cmdline = g_strjoinv(" ", (char **)full->pdata);
        g_test_message("run%s%s: %s", user ? " as " : "", user ? user : "", cmdline);

        /* An unprivileged client must not depend on the test's working directory being readable. */
        g_subprocess_launcher_set_cwd(launcher, "/");
        g_subprocess_launcher_unsetenv(launcher, "DBUS_SESSION_BUS_ADDRESS");
        if (h && h->bus_address)
                g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", h->bus_address, TRUE);
        proc = g_subprocess_launcher_spawnv(launcher, (const char *const *)full->pdata, &error);
        if (!proc) {
                g_test_fail_printf("cannot run %s: %s", cmdline, error->message);
                ret->out = g_strdup("");
                ret->err = g_strdup(error->message);
                return -1;
        }

        context = g_main_context_new();
        g_main_context_push_thread_default(context);
        g_subprocess_communicate_async(proc, NULL, NULL, communicate_done, &c);
        timeout = g_timeout_source_new(HARNESS_TIMEOUT_MS);
        g_source_set_callback(timeout, communicate_timeout, &c, NULL);
        g_source_attach(timeout, context);
        while (!c.done) {
                g_main_context_iteration(context, TRUE);
                if (c.timed_out && !c.done) {
                        g_test_fail_printf(
                                "%s did not finish within %d ms: killed", cmdline, HARNESS_TIMEOUT_MS);
                        g_subprocess_force_exit(proc);
                        c.timed_out = false; /* now wait for the pipes to close */
                        ret->status = -2;
                }
        }
        g_source_destroy(timeout);
        g_source_unref(timeout);
        g_main_context_pop_thread_default(context);

        ret->out = bytes_to_string(c.out);
        ret->err = bytes_to_string(c.err);
        g_clear_pointer(&c.out, g_bytes_unref);
        g_clear_pointer(&c.err, g_bytes_unref);
        if (c.error) {
                g_test_fail_printf("talking to %s failed: %s", cmdline, c.error->message);
                g_clear_error(&c.error);
                ret->status = -1;
                return -1;
        }
        if (ret->status == -2)
                ret->status = -1;
        else if (g_subprocess_get_if_exited(proc))
                ret->status = g_subprocess_get_exit_status(proc);
        else if (g_subprocess_get_if_signaled(proc))
                ret->status = 128 + g_subprocess_get_term_sig(proc);

        if (ret->status != 0 || *ret->err)
                g_test_message("exit %d; stdout: %s; stderr: %s", ret->status, ret->out, ret->err);
        if (text_has_sanitizer_report(ret->err))
                g_test_fail_printf("%s: sanitizer report on stderr", cmdline);
        return ret->status;
}

int harness_loopctlv(Harness *h, const char *user, HarnessRun *ret, const char *const *args)
{
        const char *binary = g_getenv("LOOPCTL_BINARY");
        g_autoptr(GPtrArray) argv = g_ptr_array_new();

        if (!binary) {
                g_test_fail_printf("LOOPCTL_BINARY is not set (run the suite with meson test)");
                harness_run_clear(ret);
                ret->out = g_strdup("");
                ret->err = g_strdup("");
                return -1;
        }
        g_ptr_array_add(argv, (char *)binary);
        for (const char *const *a = args; a && *a; a++)
                g_ptr_array_add(argv, (char *)*a);
        g_ptr_array_add(argv, NULL);
        return harness_spawn_as(h, user, ret, (const char *const *)argv->pdata);
}

int harness_loopctl(Harness *h, const char *user, HarnessRun *ret, ...)
{
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        const char *a;
        va_list ap;

        va_start(ap, ret);
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(args, (char *)a);
        va_end(ap);
        g_ptr_array_add(args, NULL);
        return harness_loopctlv(h, user, ret, (const char *const *)args->pdata);
}

JsonNode *harness_run_json(const HarnessRun *run)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) error = NULL;

        if (!run->out || !json_parser_load_from_data(parser, run->out, -1, &error)) {
                g_test_fail_printf("output is not JSON (%s): %s", error ? error->message : "no output",
                        run->out ? run->out : "");
                return NULL;
        }
        if (!json_parser_get_root(parser)) {
                g_test_fail_printf("output is empty, expected JSON");
                return NULL;
        }
        return json_node_copy(json_parser_get_root(parser));
}

GVariant *harness_call(GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds,
        GDBusCallFlags flags, GError **error)
{
        g_return_val_if_fail(c, NULL);
        return g_dbus_connection_call_with_unix_fd_list_sync(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, method, params, NULL, flags, HARNESS_TIMEOUT_MS, fds, NULL, NULL,
                error);
}

GVariant *harness_empty_options(void)
{
        return g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0);
}

static GVariant *options_or_empty(GVariant *options)
{
        return options ? options : harness_empty_options();
}

bool harness_attach_fd(
        GDBusConnection *c, int fd, GVariant *options, char **ret_device, char **ret_object, GError **error)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GVariant) reply = NULL;
        const char *device, *object;
        int index;

        index = g_unix_fd_list_append(fds, fd, error);
        if (index < 0) {
                if (options)
                        g_variant_unref(g_variant_ref_sink(options));
                return false;
        }
        reply = harness_call(c, "Attach", g_variant_new("(h@a{sv})", index, options_or_empty(options)), fds,
                G_DBUS_CALL_FLAGS_NONE, error);
        if (!reply)
                return false;
        if (!g_variant_is_of_type(reply, G_VARIANT_TYPE("(so)"))) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "Attach returned %s, expected (so)",
                        g_variant_get_type_string(reply));
                return false;
        }
        g_variant_get(reply, "(&s&o)", &device, &object);
        if (ret_device)
                *ret_device = g_strdup(device);
        if (ret_object)
                *ret_object = g_strdup(object);
        return true;
}

bool harness_attach_path(GDBusConnection *c, const char *path, int open_flags, GVariant *options,
        char **ret_device, GError **error)
{
        int fd = open(path, open_flags | O_CLOEXEC);
        bool ok;

        if (fd < 0) {
                int e = errno;
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "open %s: %s", path, g_strerror(e));
                if (options)
                        g_variant_unref(g_variant_ref_sink(options));
                return false;
        }
        ok = harness_attach_fd(c, fd, options, ret_device, NULL, error);
        close(fd);
        return ok;
}

bool harness_detach(GDBusConnection *c, const char *device, GVariant *options, GError **error)
{
        g_autoptr(GVariant) reply =
                harness_call(c, "Detach", g_variant_new("(s@a{sv})", device, options_or_empty(options)),
                        NULL, G_DBUS_CALL_FLAGS_NONE, error);

        return reply != NULL;
}

char *harness_mount(GDBusConnection *c, const char *node, GVariant *options, GError **error)
{
        g_autoptr(GVariant) reply =
                harness_call(c, "Mount", g_variant_new("(s@a{sv})", node, options_or_empty(options)), NULL,
                        G_DBUS_CALL_FLAGS_NONE, error);
        const char *mount_point;

        if (!reply)
                return NULL;
        g_variant_get(reply, "(&s)", &mount_point);
        return g_strdup(mount_point);
}

bool harness_unmount(GDBusConnection *c, const char *target, GError **error)
{
        g_autoptr(GVariant) reply =
                harness_call(c, "Unmount", g_variant_new("(s@a{sv})", target, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, error);

        return reply != NULL;
}

static GVariant *call_expecting(
        GDBusConnection *c, const char *method, GVariant *params, const char *type, GError **error)
{
        g_autoptr(GVariant) reply = harness_call(c, method, params, NULL, G_DBUS_CALL_FLAGS_NONE, error);

        if (!reply)
                return NULL;
        if (!g_variant_is_of_type(reply, G_VARIANT_TYPE(type))) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s returned %s, expected %s",
                        method, g_variant_get_type_string(reply), type);
                return NULL;
        }
        return g_variant_get_child_value(reply, 0);
}

GVariant *harness_list_devices(GDBusConnection *c, GError **error)
{
        return call_expecting(c, "ListDevices", NULL, "(a" LOOPD_DEVICE_STRUCT ")", error);
}

GVariant *harness_list_partitions(GDBusConnection *c, const char *device, GError **error)
{
        return call_expecting(
                c, "ListPartitions", g_variant_new("(s)", device), "(a" LOOPD_PARTITION_STRUCT ")", error);
}

bool harness_check_dbus_error(
        const char *file, int line, const GError *error, const char *name, const char *needle)
{
        g_autofree char *remote = NULL;

        if (!error) {
                g_test_fail_printf(
                        "%s:%d: expected the D-Bus error %s, but the call succeeded", file, line, name);
                return false;
        }
        remote = g_dbus_error_get_remote_error(error);
        if (g_strcmp0(remote, name) != 0) {
                g_test_fail_printf("%s:%d: expected the D-Bus error %s, got %s: %s", file, line, name,
                        remote ? remote : "(not a D-Bus error)", error->message);
                return false;
        }
        if (needle && !strstr(error->message, needle)) {
                g_test_fail_printf("%s:%d: the %s message does not mention '%s': %s", file, line, name,
                        needle, error->message);
                return false;
        }
        return true;
}

bool harness_check_no_error(const char *file, int line, const GError *error)
{
        if (!error)
                return true;
        g_autofree char *remote = g_dbus_error_get_remote_error(error);
        g_test_fail_printf(
                "%s:%d: unexpected error %s: %s", file, line, remote ? remote : "", error->message);
        return false;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

void harness_init(int *argc, char ***argv)
{
        g_test_init(argc, argv, NULL);
        /* A failed check must not abort the process: the teardown has to detach what the test attached. */
        g_test_set_nonfatal_assertions();
        /* Create GLib's worker thread (it reaps GSubprocess children) now, as root, before
         * harness_connect_as() ever changes a thread's credentials: a thread inherits the credentials of the
         * thread that creates it. */
        g_autoptr(GSubprocess) warmup = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, NULL, "true", NULL);
        if (warmup)
                (void)g_subprocess_wait(warmup, NULL, NULL);
        signal(SIGPIPE, SIG_IGN);
        /* g_error() and failed g_assert() abort, fatal criticals trap; a sanitizer report ends in abort()
         * too (abort_on_error=1), so its own SIGSEGV handler stays in place. */
        static const int fatal[] = { SIGABRT, SIGTRAP };
        for (size_t i = 0; i < G_N_ELEMENTS(fatal); i++)
                signal(fatal[i], crash_handler);
}

static void process_init(HarnessProcess *p, const char *name, const char *tmpdir)
{
        g_autofree char *file = g_strconcat(name, ".log", NULL);

        p->name = name;
        p->pid = 0;
        p->pidfd = -1;
        p->log_path = g_build_filename(tmpdir, file, NULL);
}

void harness_setup(Harness *h, gconstpointer options)
{
        const char *source_root = g_getenv("LOOPD_SOURCE_ROOT");
        HarnessPrivate *p;

        memset(h, 0, sizeof(*h));
        h->options = options ? options : &default_options;
        if (!test_require_privileges())
                return;
        if (!source_root) {
                g_test_fail_printf("LOOPD_SOURCE_ROOT is not set (run the suite with meson test)");
                return;
        }
        /* Make sure the test users exist before anything runs, so a test can rely on them. */
        if (!harness_user(HARNESS_USER_A, NULL, NULL) || !harness_user(HARNESS_USER_B, NULL, NULL))
                return;

        h->priv = p = g_new0(HarnessPrivate, 1);
        p->connections = g_ptr_array_new();
        h->tmpdir = test_tmpdir_new();
        h->image_dir = g_build_filename(h->tmpdir, "images", NULL);
        h->state_dir = g_build_filename(h->tmpdir, "state", NULL);
        h->media_dir = g_build_filename(h->tmpdir, "media", NULL);
        process_init(&p->dbus, "dbus-daemon", h->tmpdir);
        process_init(&p->loopd, "loopd", h->tmpdir);
        process_init(&p->polkitd, "polkitd", h->tmpdir);
        process_init(&p->udevd, "systemd-udevd", h->tmpdir);
        if (g_mkdir(h->image_dir, 0755) < 0 || chmod(h->image_dir, 0755) < 0) {
                g_test_fail_printf("cannot create %s: %s", h->image_dir, g_strerror(errno));
                return;
        }

        if (g_strcmp0(g_getenv("LOOPD_TEST_UDEV"), "1") == 0 && !udevd_start(h))
                return;
        if (!bus_start(h, source_root))
                return;
        switch (h->options->polkit) {
        case HARNESS_POLKIT_FAKE:
                h->authority = fake_authority_start(h->bus_address);
                if (!h->authority)
                        return;
                break;
        case HARNESS_POLKIT_REAL:
                if (!polkit_real_start(h, source_root))
                        return;
                break;
        case HARNESS_POLKIT_NONE:
                break;
        }
        if (!h->options->no_loopd && !harness_start_loopd(h))
                return;
        h->ready = true;
}

void harness_teardown(Harness *h, gconstpointer options)
{
        HarnessPrivate *p = h->priv;

        if (!p)
                return;

        /* A passing test must have detached what it attached; say so before cleaning up after it. */
        if (h->ready && !g_test_failed()) {
                g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
                for (guint i = 0; i < left->len; i++)
                        g_test_fail_printf("%s is still attached after the test (backed by a file under %s)",
                                (char *)left->pdata[i], h->tmpdir);
        }

        (void)harness_stop_loopd(h);
        test_cleanup_loops_under(h->tmpdir);

        for (guint i = 0; i < p->connections->len; i++) {
                GDBusConnection *c = p->connections->pdata[i];
                (void)g_dbus_connection_close_sync(c, NULL, NULL);
                g_object_unref(c);
        }
        g_ptr_array_unref(p->connections);

        g_clear_pointer(&h->authority, fake_authority_free);
        polkit_real_stop(h);
        bus_stop(h);
        udevd_stop(h);

        if (g_test_failed()) {
                print_loopd_log(p);
                print_log_tail("polkitd", p->polkitd.log_path, 50);
                print_log_tail("dbus-daemon", p->dbus.log_path, 50);
                print_log_tail("systemd-udevd", p->udevd.log_path, 50);
        }

        test_tmpdir_remove(h->tmpdir);
        g_free(p->dbus.log_path);
        g_free(p->loopd.log_path);
        g_free(p->polkitd.log_path);
        g_free(p->udevd.log_path);
        g_free(p);
        g_free(h->tmpdir);
        g_free(h->image_dir);
        g_free(h->state_dir);
        g_free(h->media_dir);
        g_free(h->bus_address);
        memset(h, 0, sizeof(*h));
}
