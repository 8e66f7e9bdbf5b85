/* test-loopctl-cli.c: runs the built loopctl: usage errors, options, local failures before the bus, and,
 * against a mock org.loopd1 on a private dbus-daemon, the calls it makes and what it prints. No loopd. */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images.h"

#define UNREACHABLE_BUS "unix:path=/nonexistent/loopctl-test/bus"
#define NOBODY 65534

/* ---- running loopctl ---- */

typedef struct Run {
        int status; /* exit status, or 128 + signal */
        char *out;
        char *err;
} Run;

static void run_free(Run *r)
{
        if (!r)
                return;
        g_free(r->out);
        g_free(r->err);
        g_free(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Run, run_free)

typedef struct RunOptions {
        const char *bus; /* DBUS_SYSTEM_BUS_ADDRESS; NULL: a socket that does not exist */
        const char *cwd; /* NULL: the test's */
        int stdin_fd; /* taken; 0 means a pipe that is closed at once (not a terminal) */
        const char *stdout_path; /* instead of a pipe (e.g. /dev/full) */
        const char *path_prepend;
        const char *agent_log;
        gboolean as_nobody; /* when the test runs as root */
} RunOptions;

static const char *loopctl_binary(void)
{
        static char *path;

        if (!path) {
                const char *env = g_getenv("LOOPCTL_BINARY");
                if (env)
                        path = g_strdup(env);
                else {
                        /* Not under meson test: the binary of the same build tree. */
                        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
                        g_autofree char *dir = g_path_get_dirname(self ? self : ".");
                        path = g_build_filename(dir, "..", "client", "loopctl", NULL);
                }
        }
        return path;
}

/* Whether "nobody" could reach path: it and every directory on the way searchable by others. */
static gboolean nobody_can_reach(const char *target)
{
        g_autofree char *path = realpath(target, NULL);
        struct stat st;
        char *slash;

        if (!path)
                return FALSE;
        for (;;) {
                if (stat(path, &st) < 0 || !(st.st_mode & S_IXOTH))
                        return FALSE;
                slash = strrchr(path, '/');
                if (!slash || slash == path)
                        return TRUE;
                *slash = '\0';
        }
}

static void drop_to_nobody(gpointer data)
{
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
                _exit(127);
}

static gboolean set_flag(gpointer data)
{
        *(gboolean *)data = TRUE;
        return G_SOURCE_REMOVE;
}

/* Iterates the default main context (where the mock answers) until *flag is set or timeout_ms passed. */
static gboolean iterate_until(const gboolean *flag, guint timeout_ms)
{
        gboolean timed_out = FALSE;
        guint id = g_timeout_add(timeout_ms, set_flag, &timed_out);

        while (!*flag && !timed_out)
                g_main_context_iteration(NULL, TRUE);
        if (!timed_out)
                g_source_remove(id);
        return *flag;
}

static GSubprocessLauncher *launcher_new(const RunOptions *o, GSubprocessFlags flags)
{
        GSubprocessLauncher *l;

        if (o->stdin_fd <= 0)
                flags |= G_SUBPROCESS_FLAGS_STDIN_PIPE;
        if (!o->stdout_path)
                flags |= G_SUBPROCESS_FLAGS_STDOUT_PIPE;
        l = g_subprocess_launcher_new(flags);
        if (o->stdin_fd > 0)
                g_subprocess_launcher_take_stdin_fd(l, o->stdin_fd);
        if (o->stdout_path)
                g_subprocess_launcher_set_stdout_file_path(l, o->stdout_path);
        g_subprocess_launcher_setenv(l, "DBUS_SYSTEM_BUS_ADDRESS", o->bus ? o->bus : UNREACHABLE_BUS, TRUE);
        g_subprocess_launcher_unsetenv(l, "POSIXLY_CORRECT");
        if (o->cwd)
                g_subprocess_launcher_set_cwd(l, o->cwd);
        if (o->path_prepend) {
                g_autofree char *path = g_strdup_printf("%s:%s", o->path_prepend, g_getenv("PATH"));
                g_subprocess_launcher_setenv(l, "PATH", path, TRUE);
        }
        if (o->agent_log)
                g_subprocess_launcher_setenv(l, "AGENT_LOG", o->agent_log, TRUE);
        if (o->as_nobody && geteuid() == 0)
                g_subprocess_launcher_set_child_setup(l, drop_to_nobody, NULL, NULL);
        return l;
}

static GPtrArray *argv_new(va_list ap)
{
        GPtrArray *argv = g_ptr_array_new();
        const char *a;

        g_ptr_array_add(argv, (char *)loopctl_binary());
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(argv, (char *)a);
        g_ptr_array_add(argv, NULL);
        return argv;
}

typedef struct Communicated {
        gboolean done;
        GBytes *out, *err;
} Communicated;

static void communicated(GObject *source, GAsyncResult *res, gpointer data)
{
        Communicated *c = data;
        g_autoptr(GError) error = NULL;

        g_assert_true(g_subprocess_communicate_finish(G_SUBPROCESS(source), res, &c->out, &c->err, &error));
        g_assert_no_error(error);
        c->done = TRUE;
}

static char *bytes_to_string(GBytes *b)
{
        gsize n = 0;
        const char *data = b ? g_bytes_get_data(b, &n) : NULL;
        return g_strndup(data ? data : "", n);
}

/* Runs loopctl with the arguments (NULL-terminated) and returns its status and output. */
static G_GNUC_NULL_TERMINATED Run *run_loopctl(const RunOptions *o, ...)
{
        g_autoptr(GSubprocessLauncher) l = launcher_new(o, G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        Communicated c = {};
        Run *r;
        va_list ap;

        va_start(ap, o);
        argv = argv_new(ap);
        va_end(ap);

        p = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
        g_assert_no_error(error);
        /* With a pipe for stdin, an empty input closes it at once. */
        g_autoptr(GBytes) input = o->stdin_fd > 0 ? NULL : g_bytes_new_static("", 0);
        g_subprocess_communicate_async(p, input, NULL, communicated, &c);
        if (!iterate_until(&c.done, 20000)) {
                g_subprocess_force_exit(p);
                iterate_until(&c.done, 5000);
                g_error("loopctl did not finish within 20 s");
        }

        r = g_new0(Run, 1);
        r->out = bytes_to_string(c.out);
        r->err = bytes_to_string(c.err);
        if (g_subprocess_get_if_exited(p))
                r->status = g_subprocess_get_exit_status(p);
        else
                r->status = 128 + g_subprocess_get_term_sig(p);
        g_clear_pointer(&c.out, g_bytes_unref);
        g_clear_pointer(&c.err, g_bytes_unref);
        if (g_test_verbose())
                g_test_message("status %d\nstdout: %s\nstderr: %s", r->status, r->out, r->err);
        return r;
}

static const RunOptions no_bus = {};

/* The contract's error shape: one line "loopctl: ...", containing what, on stderr, nothing on stdout. */
static void assert_error_line(const Run *r, int status, const char *what)
{
        if (r->status != status || !g_str_has_prefix(r->err, "loopctl: ") ||
                !g_str_has_suffix(r->err, "\n") || strchr(r->err, '\n') != r->err + strlen(r->err) - 1 ||
                !strstr(r->err, what))
                g_error("expected exit %d and one line 'loopctl: ...%s...', got exit %d and stderr <<%s>>",
                        status, what, r->status, r->err);
        g_assert_cmpstr(r->out, ==, "");
}

/* ---- a scratch directory ---- */

static char *make_file(const char *dir, const char *name, gsize size)
{
        char *path = g_build_filename(dir, name, NULL);

        image_create(path, size);
        return path;
}

/* ---- a mock org.loopd1 on a private bus ---- */

static const char mock_xml[] =
        "<node><interface name='org.loopd1.Manager'>"
        "<method name='Attach'><arg type='h' direction='in'/><arg type='a{sv}' direction='in'/>"
        "<arg type='s' direction='out'/><arg type='o' direction='out'/></method>"
        "<method name='Detach'><arg type='s' direction='in'/><arg type='a{sv}' direction='in'/></method>"
        "<method name='ListDevices'><arg type='a(sosttubbbu)' direction='out'/></method>"
        "<method name='ListPartitions'><arg type='s' direction='in'/>"
        "<arg type='a(suttssssss)' direction='out'/></method>"
        "<method name='Mount'><arg type='s' direction='in'/><arg type='a{sv}' direction='in'/>"
        "<arg type='s' direction='out'/></method>"
        "<method name='Unmount'><arg type='s' direction='in'/><arg type='a{sv}' direction='in'/></method>"
        "<method name='MountImage'><arg type='h' direction='in'/><arg type='a{sv}' direction='in'/>"
        "<arg type='s' direction='out'/><arg type='a(ss)' direction='out'/></method>"
        "</interface></node>";

typedef struct MockCall {
        char *method;
        GVariant *params;
        gboolean interactive;
        int fd_accmode; /* of an 'h' argument, -1 without one */
        struct stat fd_stat;
} MockCall;

static void mock_call_free(MockCall *c)
{
        g_free(c->method);
        g_variant_unref(c->params);
        g_free(c);
}

typedef struct Mock {
        char *dir;
        char *address;
        GSubprocess *daemon;
        GDBusConnection *conn;
        GDBusNodeInfo *info;
        guint object_id;
        GPtrArray *calls;
        GVariant *devices; /* a(sosttubbbu) */
        GVariant *partitions; /* a(suttssssss) */
        const char *fail_method;
        const char *fail_name;
        const char *fail_message;
} Mock;

static void mock_method_call(GDBusConnection *conn, const char *sender, const char *path, const char *iface,
        const char *method, GVariant *params, GDBusMethodInvocation *inv, gpointer data)
{
        Mock *m = data;
        GDBusMessage *msg = g_dbus_method_invocation_get_message(inv);
        MockCall *c = g_new0(MockCall, 1);

        c->method = g_strdup(method);
        c->params = g_variant_ref(params);
        c->interactive =
                (g_dbus_message_get_flags(msg) & G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION) != 0;
        c->fd_accmode = -1;
        if (g_str_equal(method, "Attach") || g_str_equal(method, "MountImage")) {
                GUnixFDList *fds = g_dbus_message_get_unix_fd_list(msg);
                gint32 handle;
                int fd;

                g_variant_get_child(params, 0, "h", &handle);
                g_assert_nonnull(fds);
                fd = g_unix_fd_list_get(fds, handle, NULL);
                g_assert_cmpint(fd, >=, 0);
                c->fd_accmode = fcntl(fd, F_GETFL) & O_ACCMODE;
                g_assert_cmpint(fstat(fd, &c->fd_stat), ==, 0);
                close(fd);
        }
        g_ptr_array_add(m->calls, c);

        if (m->fail_method && g_str_equal(m->fail_method, method)) {
                g_dbus_method_invocation_return_dbus_error(inv, m->fail_name, m->fail_message);
                return;
        }

        if (g_str_equal(method, "Attach"))
                g_dbus_method_invocation_return_value(
                        inv, g_variant_new("(so)", "/dev/loop3", "/org/loopd1/device/loop3"));
        else if (g_str_equal(method, "ListDevices"))
                g_dbus_method_invocation_return_value(inv, g_variant_new("(@a(sosttubbbu))", m->devices));
        else if (g_str_equal(method, "ListPartitions"))
                g_dbus_method_invocation_return_value(inv, g_variant_new("(@a(suttssssss))", m->partitions));
        else if (g_str_equal(method, "Mount"))
                g_dbus_method_invocation_return_value(inv, g_variant_new("(s)", "/run/media/tester/DATA"));
        else if (g_str_equal(method, "MountImage"))
                g_dbus_method_invocation_return_value(inv,
                        g_variant_new_parsed("('/dev/loop3', [('/dev/loop3p1', '/run/media/tester/EFI'), "
                                             "('/dev/loop3p2', '/run/media/tester/My Data')])"));
        else
                g_dbus_method_invocation_return_value(inv, NULL);
}

static void die_with_parent(gpointer data)
{
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static const GDBusInterfaceVTable mock_vtable = { mock_method_call, NULL, NULL };

static void mock_set_devices(Mock *m, const char *text)
{
        g_variant_unref(m->devices);
        m->devices = g_variant_ref_sink(g_variant_new_parsed(text));
        g_assert_true(g_variant_is_of_type(m->devices, G_VARIANT_TYPE("a(sosttubbbu)")));
}

static void mock_set_partitions(Mock *m, const char *text)
{
        g_variant_unref(m->partitions);
        m->partitions = g_variant_ref_sink(g_variant_new_parsed(text));
        g_assert_true(g_variant_is_of_type(m->partitions, G_VARIANT_TYPE("a(suttssssss)")));
}

/* Starts a dbus-daemon that anyone may connect to, and on it the mock (owning org.loopd1 when own_name). */
static void mock_setup(Mock *m, gboolean own_name)
{
        g_autoptr(GSubprocessLauncher) l = NULL;
        g_autoptr(GDataInputStream) in = NULL;
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *config = NULL, *config_path = NULL, *line = NULL;
        const char *argv[] = { "dbus-daemon", NULL, "--nofork", "--print-address=1", NULL };
        g_autofree char *config_arg = NULL;
        guint32 ret;

        memset(m, 0, sizeof(*m));
        m->calls = g_ptr_array_new_with_free_func((GDestroyNotify)mock_call_free);
        m->devices = g_variant_ref_sink(g_variant_new_parsed("@a(sosttubbbu) []"));
        m->partitions = g_variant_ref_sink(g_variant_new_parsed("@a(suttssssss) []"));
        m->dir = test_tmpdir_new();

        g_autofree char *daemon_path = g_find_program_in_path("dbus-daemon");
        if (!daemon_path) {
                g_test_skip("dbus-daemon is not installed");
                return;
        }

        config = g_strdup_printf(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\""
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">"
                "<busconfig><type>session</type><listen>unix:path=%s/bus</listen>"
                "<auth>EXTERNAL</auth><policy context='default'><allow user='*'/>"
                "<allow send_destination='*' eavesdrop='true'/><allow eavesdrop='true'/>"
                "<allow own='*'/></policy></busconfig>",
                m->dir);
        config_path = g_build_filename(m->dir, "bus.conf", NULL);
        g_assert_true(g_file_set_contents(config_path, config, -1, &error));
        config_arg = g_strdup_printf("--config-file=%s", config_path);
        argv[1] = config_arg;

        /* Quiet (it complains about fd limits), and gone with the test even when the test aborts. */
        l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
        g_subprocess_launcher_set_child_setup(l, die_with_parent, NULL, NULL);
        m->daemon = g_subprocess_launcher_spawnv(l, argv, &error);
        g_assert_no_error(error);
        in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(m->daemon));
        line = g_data_input_stream_read_line_utf8(in, NULL, NULL, &error);
        g_assert_no_error(error);
        g_assert_nonnull(line);
        m->address = g_strdup(g_strstrip(line));

        m->conn = g_dbus_connection_new_for_address_sync(m->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(m->conn, FALSE);

        m->info = g_dbus_node_info_new_for_xml(mock_xml, &error);
        g_assert_no_error(error);
        m->object_id = g_dbus_connection_register_object(
                m->conn, "/org/loopd1", m->info->interfaces[0], &mock_vtable, m, NULL, &error);
        g_assert_no_error(error);

        if (own_name) {
                reply = g_dbus_connection_call_sync(m->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "RequestName", g_variant_new("(su)", "org.loopd1", 4),
                        G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, -1, NULL, &error);
                g_assert_no_error(error);
                g_variant_get(reply, "(u)", &ret);
                g_assert_cmpuint(ret, ==, 1);
        }
}

static void mock_setup_owned(Mock *m, gconstpointer data)
{
        mock_setup(m, TRUE);
}

static void mock_setup_unowned(Mock *m, gconstpointer data)
{
        mock_setup(m, FALSE);
}

static void mock_stop_bus(Mock *m)
{
        if (m->daemon) {
                g_subprocess_force_exit(m->daemon);
                g_subprocess_wait(m->daemon, NULL, NULL);
                g_clear_object(&m->daemon);
        }
}

static void mock_teardown(Mock *m, gconstpointer data)
{
        if (m->conn) {
                if (m->object_id)
                        g_dbus_connection_unregister_object(m->conn, m->object_id);
                g_dbus_connection_close_sync(m->conn, NULL, NULL);
                g_clear_object(&m->conn);
        }
        mock_stop_bus(m);
        g_clear_pointer(&m->info, g_dbus_node_info_unref);
        g_ptr_array_unref(m->calls);
        g_variant_unref(m->devices);
        g_variant_unref(m->partitions);
        g_free(m->address);
        test_tmpdir_remove(m->dir);
        g_free(m->dir);
}

static RunOptions mock_bus(const Mock *m)
{
        return (RunOptions){ .bus = m->address };
}

/* The only call of this method; fails when there is none or several. */
static MockCall *mock_call(Mock *m, const char *method)
{
        MockCall *found = NULL;

        for (guint i = 0; i < m->calls->len; i++) {
                MockCall *c = m->calls->pdata[i];
                if (g_str_equal(c->method, method)) {
                        if (found)
                                g_error("%s was called more than once", method);
                        found = c;
                }
        }
        if (!found)
                g_error("%s was not called", method);
        return found;
}

static guint mock_count(Mock *m, const char *method)
{
        guint n = 0;

        for (guint i = 0; i < m->calls->len; i++)
                n += g_str_equal(((MockCall *)m->calls->pdata[i])->method, method);
        return n;
}

/* The a{sv} argument at index i holds exactly the entries of expected (GVariant text), with their types. */
static void assert_options(const MockCall *c, gsize i, const char *expected)
{
        g_autoptr(GVariant) got = g_variant_get_child_value(c->params, i);
        g_autoptr(GVariant) want = g_variant_ref_sink(g_variant_new_parsed(expected));
        g_autofree char *got_text = g_variant_print(got, TRUE);
        GVariantIter iter;
        const char *key;
        GVariant *value;

        if (g_variant_n_children(got) != g_variant_n_children(want))
                g_error("%s options: got %s, expected %s", c->method, got_text, expected);
        g_variant_iter_init(&iter, want);
        while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
                g_autoptr(GVariant) v = g_variant_lookup_value(got, key, NULL);
                if (!v || !g_variant_equal(v, value))
                        g_error("%s options: got %s, expected %s", c->method, got_text, expected);
                g_variant_unref(value);
        }
}

static const char *call_string(const MockCall *c, gsize i)
{
        g_autoptr(GVariant) v = g_variant_get_child_value(c->params, i);
        return g_variant_get_string(v, NULL); /* owned by c->params */
}

static void assert_same_file(const MockCall *c, const char *path)
{
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_true(S_ISREG(c->fd_stat.st_mode));
        g_assert_cmpuint(c->fd_stat.st_dev, ==, st.st_dev);
        g_assert_cmpuint(c->fd_stat.st_ino, ==, st.st_ino);
}

/* ---- usage ---- */

static void assert_usage_error(const char *what, ...)
{
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GSubprocessLauncher) l = launcher_new(&no_bus, G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL, *err = NULL;
        va_list ap;

        va_start(ap, what);
        argv = argv_new(ap);
        va_end(ap);
        p = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
        g_assert_no_error(error);
        g_assert_true(g_subprocess_communicate_utf8(p, "", NULL, &out, &err, &error));
        g_assert_no_error(error);

        Run r = { .status = g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : -1,
                .out = out,
                .err = err };
        assert_error_line(&r, 2, what);
}

static void test_usage_no_command(void)
{
        assert_usage_error("missing command", NULL);
        assert_usage_error("missing command", "--json", NULL);
}

static void test_usage_unknown_command(void)
{
        assert_usage_error("unknown command 'frobnicate'", "frobnicate", NULL);
        assert_usage_error("unknown command 'umount'", "umount", "/dev/loop3", NULL);
}

static void test_usage_unknown_option(void)
{
        assert_usage_error("unknown option '--frobnicate'", "list", "--frobnicate", NULL);
        assert_usage_error("unknown option '--frobnicate'", "--frobnicate=1", "list", NULL);
        assert_usage_error("unknown option '-x'", "-x", "list", NULL);
        assert_usage_error("ambiguous option '--s'", "attach", "--s", "1", "disk.img", NULL);
}

static void test_usage_missing_value(void)
{
        assert_usage_error("option '--offset' needs a value", "attach", "disk.img", "--offset", NULL);
        assert_usage_error("option '--fstype' needs a value", "mount", "loop3", "--fstype", NULL);
}

static void test_usage_flag_with_value(void)
{
        assert_usage_error("option '--json' takes no value", "list", "--json=yes", NULL);
        assert_usage_error(
                "option '--read-only' takes no value", "attach", "--read-only=1", "disk.img", NULL);
}

static void test_usage_missing_argument(void)
{
        assert_usage_error("'attach' needs IMAGE", "attach", NULL);
        assert_usage_error("'detach' needs DEVICE|IMAGE", "detach", "--unmount", NULL);
        assert_usage_error("'partitions' needs DEVICE", "--json", "partitions", NULL);
        assert_usage_error("'mount' needs NODE", "mount", NULL);
        assert_usage_error("'unmount' needs NODE|MOUNTPOINT", "unmount", NULL);
        assert_usage_error("'open' needs IMAGE", "open", NULL);
        assert_usage_error("'close' needs DEVICE|IMAGE", "close", NULL);
        assert_usage_error("'attach' needs IMAGE, not an empty string", "attach", "", NULL);
}

static void test_usage_too_many_arguments(void)
{
        assert_usage_error("too many arguments for 'list': 'extra'", "list", "extra", NULL);
        assert_usage_error("too many arguments for 'monitor'", "monitor", "now", NULL);
        assert_usage_error("too many arguments for 'attach': 'b.img'", "attach", "a.img", "b.img", NULL);
        assert_usage_error("too many arguments", "detach", "a", "b", "c", "d", NULL);
}

static void test_usage_option_of_another_command(void)
{
        assert_usage_error("option '--offset' does not apply to 'list'", "list", "--offset", "1", NULL);
        assert_usage_error(
                "option '--writable' does not apply to 'attach'", "--writable", "attach", "x.img", NULL);
        assert_usage_error(
                "option '--unmount' does not apply to 'close'", "close", "--unmount", "loop3", NULL);
        assert_usage_error(
                "option '--read-only' does not apply to 'open'", "open", "--read-only", "x.img", NULL);
        assert_usage_error(
                "option '--fstype' does not apply to 'attach'", "attach", "--fstype=ext4", "x", NULL);
}

static void test_help_prints_usage(void)
{
        static const char *const forms[][3] = { { "--help" }, { "-h" }, { "attach", "--help" },
                { "--help", "bogus" } };

        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r = run_loopctl(&no_bus, forms[i][0], forms[i][1], forms[i][2], NULL);

                g_assert_cmpint(r->status, ==, 0);
                g_assert_cmpstr(r->err, ==, "");
                g_assert_true(g_str_has_prefix(r->out, "Usage: loopctl"));
                for (const char *const *cmd = (const char *const[]){ "attach", "detach", "list",
                             "partitions", "mount", "unmount", "open", "close", "monitor", "--json",
                             "--no-ask-password", "--version", NULL };
                        *cmd; cmd++)
                        g_assert_nonnull(strstr(r->out, *cmd));
        }
}

static void test_version(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "--version", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_true(g_regex_match_simple("^loopctl [0-9]+\\.[0-9]+(\\.[0-9]+)?.*\n$", r->out, 0, 0));
}

/* ---- sizes ---- */

static void test_size_bad_values(void)
{
        static const char *const bad[] = { "", "1X", "-1", "1.5M", "1 M", "M", "0x100", "1MiBs", "1Ki" };

        for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autofree char *what = g_strdup_printf("invalid --offset '%s'", bad[i]);
                assert_usage_error(what, "attach", "--offset", bad[i], "disk.img", NULL);
        }
        assert_usage_error("invalid --size '12Q'", "attach", "--size=12Q", "disk.img", NULL);
        assert_usage_error("invalid --sector-size 'big'", "open", "--sector-size", "big", "disk.img", NULL);
}

static void test_size_overflow(void)
{
        assert_usage_error("invalid --offset '18446744073709551616': too large", "attach", "--offset",
                "18446744073709551616", "x.img", NULL);
        assert_usage_error("invalid --size '16EiB': too large", "attach", "--size", "16EiB", "x.img", NULL);
}

static void test_size_sector_size_values(void)
{
        static const char *const bad[] = { "1000", "256", "8192", "3K", "4KB" };

        for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
                assert_usage_error("expected 512, 1024, 2048 or 4096", "attach", "--sector-size", bad[i],
                        "x.img", NULL);
}

/* ---- failures before the bus ---- */

static void test_attach_nonexistent_image_fails_before_bus(void)
{
        /* The bus address leads nowhere: if loopctl connected first, the error would be about the bus. */
        g_autoptr(Run) r = run_loopctl(&no_bus, "attach", "/nonexistent/disk.img", NULL);
        assert_error_line(r, 1, "loopctl: cannot attach /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) o = run_loopctl(&no_bus, "open", "--writable", "/nonexistent/disk.img", NULL);
        assert_error_line(o, 1, "loopctl: cannot open /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) d = run_loopctl(&no_bus, "detach", "/nonexistent/disk.img", NULL);
        assert_error_line(d, 1, "loopctl: cannot detach /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) c = run_loopctl(&no_bus, "close", "nonexistent.img", NULL);
        assert_error_line(c, 1, "loopctl: cannot close nonexistent.img: No such file or directory");

        g_autoptr(Run) u = run_loopctl(&no_bus, "unmount", "nonexistent/mnt", NULL);
        assert_error_line(u, 1, "loopctl: cannot unmount nonexistent/mnt: No such file or directory");
}

static void test_attach_refuses_non_regular_files(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);

        g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);

        /* A FIFO would block open() until a writer came: refused without opening it. */
        g_autoptr(Run) f = run_loopctl(&no_bus, "attach", fifo, NULL);
        assert_error_line(f, 1, "a FIFO, not a regular file");
        g_autoptr(Run) fr = run_loopctl(&no_bus, "attach", "--read-only", fifo, NULL);
        assert_error_line(fr, 1, "a FIFO, not a regular file");

        g_autoptr(Run) d = run_loopctl(&no_bus, "attach", dir, NULL);
        assert_error_line(d, 1, "a directory, not a regular file");

        g_autoptr(Run) c = run_loopctl(&no_bus, "attach", "--read-only", "/dev/null", NULL);
        assert_error_line(c, 1, "loopctl: cannot attach /dev/null: a character device, not a regular file");

        g_autoptr(Run) o = run_loopctl(&no_bus, "open", "/dev/zero", NULL);
        assert_error_line(o, 1, "loopctl: cannot open /dev/zero: a character device, not a regular file");

        test_tmpdir_remove(dir);
}

static void test_attach_unwritable_image_suggests_read_only(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *img = make_file(dir, "ro.img", 4096);
        RunOptions o = { .as_nobody = TRUE };

        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                test_tmpdir_remove(dir);
                return;
        }
        /* As root the file is root's, 0644: not writable by nobody. */
        if (geteuid() != 0)
                g_assert_cmpint(chmod(img, 0444), ==, 0);

        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);
        assert_error_line(r, 1, "for writing: Permission denied (use --read-only)");
        g_autoptr(Run) w = run_loopctl(&o, "open", "--writable", img, NULL);
        assert_error_line(w, 1, "for writing: Permission denied (open it without --writable)");

        /* Read-only goes past the file and on to the (unreachable) bus. */
        g_autoptr(Run) ro = run_loopctl(&o, "attach", "--read-only", img, NULL);
        assert_error_line(ro, 1, "loopctl: cannot connect to the system bus: ");

        test_tmpdir_remove(dir);
}

static void test_bus_unreachable_is_one_line(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "list", NULL);
        assert_error_line(r, 1, "loopctl: cannot connect to the system bus: No such file or directory");

        g_autoptr(Run) m = run_loopctl(&no_bus, "monitor", "--json", NULL);
        assert_error_line(m, 1, "loopctl: cannot connect to the system bus: No such file or directory");
}

static void test_options_before_and_after_command_reach_the_same_parser(void)
{
        /* Without a bus these all get as far as connecting: none is a usage error. */
        static const char *const forms[][4] = {
                { "--json", "list" },
                { "list", "--json" },
                { "--no-ask-password", "--json", "partitions", "loop3" },
                { "partitions", "loop3", "--json", "--no-ask-password" },
                { "--unmount", "detach", "loop3" },
                { "detach", "loop3", "--unmount" },
        };

        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r =
                        run_loopctl(&no_bus, forms[i][0], forms[i][1], forms[i][2], forms[i][3], NULL);
                assert_error_line(r, 1, "cannot connect to the system bus");
        }
}

/* ---- against the mock ---- */

static void test_bus_daemon_not_running(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "list", NULL);
        assert_error_line(r, 1, "loopctl: cannot list loop devices: ");
        g_assert_nonnull(strstr(r->err, "org.loopd1"));
        g_assert_cmpuint(m->calls->len, ==, 0);
}

static void test_attach_passes_writable_fd_and_no_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_same_file(c, img);
        assert_options(c, 1, "@a{sv} {}");
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop3");
}

static void test_attach_read_only_passes_read_only_fd(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        /* Option after the image, as after the command word. */
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, "--read-only", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDONLY);
        assert_same_file(c, img);
        assert_options(c, 1, "{'read-only': <true>}");
}

static void test_attach_option_keys_are_the_contracts(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "--read-only", "attach", "--offset", "1MiB", "--size=1MB",
                "--sector-size", "4K", "--no-partscan", "--autoclear", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        assert_options(mock_call(m, "Attach"), 1,
                "{'read-only': <true>, 'offset': <uint64 1048576>, 'size-limit': <uint64 1000000>, "
                "'sector-size': <uint32 4096>, 'partition-scan': <false>, 'autoclear': <true>}");
}

static void test_attach_sizes_in_every_notation(Mock *m, gconstpointer data)
{
        static const struct {
                const char *text;
                guint64 bytes;
        } sizes[] = {
                { "0", 0 },
                { "4096", 4096 },
                { "512B", 512 },
                { "32K", 32768 },
                { "32KiB", 32768 },
                { "32KB", 32000 },
                { "3M", 3145728 },
                { "2G", G_GUINT64_CONSTANT(2147483648) },
                { "1TB", G_GUINT64_CONSTANT(1000000000000) },
                { "1T", G_GUINT64_CONSTANT(1099511627776) },
        };
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
                g_autofree char *expected =
                        g_strdup_printf("{'offset': <uint64 %" G_GUINT64_FORMAT ">}", sizes[i].bytes);
                g_autoptr(Run) r = run_loopctl(&o, "attach", "--offset", sizes[i].text, img, NULL);

                g_assert_cmpint(r->status, ==, 0);
                assert_options(mock_call(m, "Attach"), 1, expected);
                g_ptr_array_set_size(m->calls, 0);
        }
}

static const char partitions_text[] =
        "[('/dev/loop3p1', uint32 1, uint64 1048576, uint64 104857600, "
        "'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', 'EFI System', 'vfat', 'EFI', '1234-ABCD', ''), "
        "('/dev/loop3p2', uint32 2, uint64 105906176, uint64 966787072, "
        "'0fc63daf-8483-4772-8e79-3d69d8477de4', '', 'ext4', 'My \"Data\"', "
        "'0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1', '/run/media/tester/My \"Data\"')]";

static const char partitions_json[] =
        "[{\"node\": \"/dev/loop3p1\", \"number\": 1, \"offset\": 1048576, \"size\": 104857600, "
        "\"part_type\": \"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\", \"part_name\": \"EFI System\", "
        "\"fstype\": \"vfat\", \"label\": \"EFI\", \"uuid\": \"1234-ABCD\", \"mount_point\": \"\"}, "
        "{\"node\": \"/dev/loop3p2\", \"number\": 2, \"offset\": 105906176, \"size\": 966787072, "
        "\"part_type\": \"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"part_name\": \"\", \"fstype\": \"ext4\", "
        "\"label\": \"My \\\"Data\\\"\", \"uuid\": \"0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\", "
        "\"mount_point\": \"/run/media/tester/My \\\"Data\\\"\"}]";

static void test_attach_json_lists_partitions(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL, *expected = NULL;

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "attach", "--json", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        expected = g_strdup_printf("{\"device\": \"/dev/loop3\", \"partitions\": %s}\n", partitions_json);
        g_assert_cmpstr(r->out, ==, expected);
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop3");

        /* And it is JSON. */
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, r->out, -1, NULL));
}

static void test_attach_human_output(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        g_autofree char *img = make_file(m->dir, "disk.img", 1 << 20);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "disk.img", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "Attached disk.img as /dev/loop3.\n"
                "NAME         NR OFFSET SIZE FSTYPE LABEL     UUID                                 MOUNTPOINT\n"
                "/dev/loop3p1  1     1M 100M vfat   EFI       1234-ABCD\n"
                "/dev/loop3p2  2   101M 922M ext4   My \"Data\" 0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1 "
                "/run/media/tester/My \"Data\"\n");
}

static void test_attach_daemon_error_is_one_line(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.qcow2", 4096);
        m->fail_method = "Attach";
        m->fail_name = "org.loopd1.Error.UnsupportedFormat";
        m->fail_message = "disk.qcow2 is a qcow2 image,\nnot a raw disk image";
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "disk.qcow2", NULL);

        assert_error_line(r, 1,
                "loopctl: cannot attach disk.qcow2: disk.qcow2 is a qcow2 image,\\x0anot a raw disk image\n");
        g_assert_cmpuint(mock_count(m, "ListPartitions"), ==, 0);
}

static void test_attach_partition_listing_failure_says_device_stays(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        m->fail_method = "ListPartitions";
        m->fail_name = "org.loopd1.Error.Failed";
        m->fail_message = "udev is slow";
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);

        g_autofree char *expected = g_strdup_printf(
                "loopctl: cannot list the partitions of /dev/loop3 (%s stays attached): udev is slow\n",
                img);
        assert_error_line(r, 1, expected);
}

static void test_attach_double_dash_ends_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "--read-only", 4096);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "--", "--read-only", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_same_file(c, img);
}

static const char devices_text[] =
        "[('/dev/loop0', objectpath '/org/loopd1/device/loop0', '/var/lib/images/debian.img', uint64 0, "
        "uint64 0, uint32 512, false, false, false, uint32 0), "
        "('/dev/loop12', objectpath '/org/loopd1/device/loop12', '/home/u/evil\\nname\\u001b[2J.img', "
        "uint64 1048576, uint64 104857600, uint32 4096, true, true, true, uint32 4242424), "
        "('/dev/loop3', objectpath '/org/loopd1/device/loop3', '/root/x.img', uint64 0, uint64 0, uint32 512, "
        "false, true, true, uint32 0)]";

static void test_list_json_shape(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_devices(m, devices_text);
        g_autoptr(Run) before = run_loopctl(&o, "--json", "list", NULL);
        g_autoptr(Run) after = run_loopctl(&o, "list", "--json", NULL);

        g_assert_cmpint(before->status, ==, 0);
        g_assert_cmpstr(before->err, ==, "");
        g_assert_cmpstr(before->out, ==,
                "[{\"device\": \"/dev/loop0\", \"backing_file\": \"/var/lib/images/debian.img\", \"offset\": 0, "
                "\"size_limit\": 0, \"sector_size\": 512, \"read_only\": false, \"autoclear\": false, "
                "\"managed\": false, \"owner_uid\": 0}, "
                "{\"device\": \"/dev/loop12\", \"backing_file\": \"/home/u/evil\\nname\\u001b[2J.img\", "
                "\"offset\": 1048576, \"size_limit\": 104857600, \"sector_size\": 4096, \"read_only\": true, "
                "\"autoclear\": true, \"managed\": true, \"owner_uid\": 4242424}, "
                "{\"device\": \"/dev/loop3\", \"backing_file\": \"/root/x.img\", \"offset\": 0, \"size_limit\": 0, "
                "\"sector_size\": 512, \"read_only\": false, \"autoclear\": true, \"managed\": true, "
                "\"owner_uid\": 0}]\n");
        g_assert_cmpstr(after->out, ==, before->out);
        g_assert_cmpint(after->status, ==, 0);
}

static void test_list_empty(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) j = run_loopctl(&o, "list", "--json", NULL);
        g_assert_cmpint(j->status, ==, 0);
        g_assert_cmpstr(j->out, ==, "[]\n");

        g_autoptr(Run) h = run_loopctl(&o, "list", NULL);
        g_assert_cmpint(h->status, ==, 0);
        g_assert_cmpstr(h->out, ==, "");
}

static void test_list_table_aligned_and_escaped(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_devices(m, devices_text);
        g_autoptr(Run) r = run_loopctl(&o, "list", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "NAME        SIZELIMIT OFFSET SECTOR RO AUTOCLEAR OWNER   BACK-FILE\n"
                "/dev/loop0         0B     0B    512  0         0 -       /var/lib/images/debian.img\n"
                "/dev/loop12      100M     1M   4096  1         1 4242424 /home/u/evil\\x0aname\\x1b[2J.img\n"
                "/dev/loop3         0B     0B    512  0         1 root    /root/x.img\n");
}

static void test_partitions_json_and_device_name(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *expected = NULL;

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        g_autoptr(Run) r = run_loopctl(&o, "partitions", "loop3", "--json", NULL);

        g_assert_cmpint(r->status, ==, 0);
        expected = g_strdup_printf("%s\n", partitions_json);
        g_assert_cmpstr(r->out, ==, expected);
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop3");
}

static void test_partitions_empty(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "--json", "partitions", "/dev/loop7", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==, "[]\n");
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop7");
}

static void test_partitions_error(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "ListPartitions";
        m->fail_name = "org.loopd1.Error.NotFound";
        m->fail_message = "No loop device /dev/loop9";
        g_autoptr(Run) r = run_loopctl(&o, "partitions", "loop9", NULL);
        assert_error_line(
                r, 1, "loopctl: cannot list the partitions of /dev/loop9: No loop device /dev/loop9\n");
}

static void test_detach_device_names(Mock *m, gconstpointer data)
{
        static const char *const forms[] = { "loop3", "/dev/loop3" };
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r = run_loopctl(&o, "detach", forms[i], NULL);

                g_assert_cmpint(r->status, ==, 0);
                g_assert_cmpstr(r->out, ==, "");
                MockCall *c = mock_call(m, "Detach");
                g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
                assert_options(c, 1, "@a{sv} {}");
                g_assert_cmpuint(mock_count(m, "ListDevices"), ==, 0);
                g_ptr_array_set_size(m->calls, 0);
        }

        g_autoptr(Run) u = run_loopctl(&o, "detach", "--unmount", "loop3", NULL);
        g_assert_cmpint(u->status, ==, 0);
        assert_options(mock_call(m, "Detach"), 1, "{'unmount': <true>}");
}

static void test_detach_image_resolved_to_its_device(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        g_autofree char *text = g_strdup_printf(
                "[('/dev/loop4', objectpath '/org/loopd1/device/loop4', '/elsewhere/disk.img', uint64 0, uint64 0, "
                "uint32 512, false, false, true, uint32 0), "
                "('/dev/loop5', objectpath '/org/loopd1/device/loop5', '%s', uint64 0, uint64 0, uint32 512, "
                "false, false, true, uint32 0)]",
                img);
        mock_set_devices(m, text);
        g_autofree char *sub = g_build_filename(m->dir, "sub", NULL);
        g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
        o.cwd = m->dir;
        /* Through a relative path with a detour: the real path is what the kernel reports. */
        g_autoptr(Run) r = run_loopctl(&o, "detach", "./sub/../disk.img", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        MockCall *c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop5");
        assert_options(c, 1, "@a{sv} {}");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) close = run_loopctl(&o, "close", "disk.img", NULL);
        g_assert_cmpint(close->status, ==, 0);
        c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop5");
        assert_options(c, 1, "{'unmount': <true>}");
}

static void test_detach_image_on_several_devices_refused(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        g_autofree char *text = g_strdup_printf(
                "[('/dev/loop5', objectpath '/org/loopd1/device/loop5', '%s', uint64 0, uint64 0, uint32 512, "
                "false, false, true, uint32 0), "
                "('/dev/loop6', objectpath '/org/loopd1/device/loop6', '%s', uint64 0, uint64 0, uint32 512, "
                "true, false, true, uint32 0), "
                "('/dev/loop9', objectpath '/org/loopd1/device/loop9', '%s', uint64 0, uint64 0, uint32 512, "
                "true, false, false, uint32 0)]",
                img, img, img);
        mock_set_devices(m, text);
        g_autoptr(Run) r = run_loopctl(&o, "detach", img, NULL);

        assert_error_line(r, 1, "it is attached to /dev/loop5, /dev/loop6, /dev/loop9; name the device");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);
}

static void test_detach_image_not_attached(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        g_autoptr(Run) r = run_loopctl(&o, "close", img, NULL);

        assert_error_line(r, 1, "it is not attached to a loop device");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);
}

static void test_detach_busy_error(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Detach";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "/dev/loop3p1 is mounted on /run/media/tester/DATA";
        g_autoptr(Run) r = run_loopctl(&o, "detach", "loop3", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot detach /dev/loop3: /dev/loop3p1 is mounted on /run/media/tester/DATA\n");
}

static void test_mount_option_keys_and_json(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "mount", "--json", "--read-only", "--options", "noatime,ro",
                "--fstype", "vfat", "loop3p1", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(
                r->out, ==, "{\"node\": \"/dev/loop3p1\", \"mount_point\": \"/run/media/tester/DATA\"}\n");
        MockCall *c = mock_call(m, "Mount");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3p1");
        assert_options(c, 1, "{'fstype': <'vfat'>, 'options': <'noatime,ro'>, 'read-only': <true>}");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) h = run_loopctl(&o, "mount", "/dev/loop3", NULL);
        g_assert_cmpint(h->status, ==, 0);
        g_assert_cmpstr(h->out, ==, "Mounted /dev/loop3 at /run/media/tester/DATA.\n");
        assert_options(mock_call(m, "Mount"), 1, "@a{sv} {}");
}

static void test_unmount_targets(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *mnt = g_build_filename(m->dir, "mnt", NULL);
        g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
        o.cwd = m->dir;

        /* A relative mount point goes as an absolute path: the daemon has another working directory. */
        g_autoptr(Run) rel = run_loopctl(&o, "unmount", "mnt/", NULL);
        g_assert_cmpint(rel->status, ==, 0);
        g_assert_cmpstr(rel->out, ==, "");
        MockCall *c = mock_call(m, "Unmount");
        g_assert_cmpstr(call_string(c, 0), ==, mnt);
        assert_options(c, 1, "@a{sv} {}");

        /* An absolute path that does not exist here goes unchanged (the daemon decides). */
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) gone = run_loopctl(&o, "unmount", "/run/media/tester/Gone", NULL);
        g_assert_cmpint(gone->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, "/run/media/tester/Gone");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) node = run_loopctl(&o, "unmount", "loop3p2", NULL);
        g_assert_cmpint(node->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, "/dev/loop3p2");

        m->fail_method = "Unmount";
        m->fail_name = "org.loopd1.Error.NotMounted";
        m->fail_message = "/dev/loop3p2 is not mounted";
        g_autoptr(Run) err = run_loopctl(&o, "unmount", "loop3p2", NULL);
        assert_error_line(err, 1, "loopctl: cannot unmount /dev/loop3p2: /dev/loop3p2 is not mounted\n");
}

static void test_open_read_only_by_default_and_json(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "boot.iso", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "--json", "open", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "{\"device\": \"/dev/loop3\", \"mounts\": [{\"node\": \"/dev/loop3p1\", \"mount_point\": "
                "\"/run/media/tester/EFI\"}, {\"node\": \"/dev/loop3p2\", \"mount_point\": "
                "\"/run/media/tester/My Data\"}]}\n");
        MockCall *c = mock_call(m, "MountImage");
        g_assert_cmpint(c->fd_accmode, ==, O_RDONLY);
        assert_same_file(c, img);
        assert_options(c, 1, "@a{sv} {}");
}

static void test_open_writable_and_sector_size(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "phone.img", 1 << 20);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "open", "phone.img", "--writable", "--sector-size=4096", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "Attached phone.img as /dev/loop3.\n"
                "Mounted /dev/loop3p1 at /run/media/tester/EFI.\n"
                "Mounted /dev/loop3p2 at /run/media/tester/My Data.\n");
        MockCall *c = mock_call(m, "MountImage");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_options(c, 1, "{'writable': <true>, 'sector-size': <uint32 4096>}");
}

static void test_open_nothing_to_mount(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "blank.img", 4096);
        m->fail_method = "MountImage";
        m->fail_name = "org.loopd1.Error.NothingToMount";
        m->fail_message = "no filesystem found";
        g_autoptr(Run) r = run_loopctl(&o, "open", "--json", img, NULL);
        assert_error_line(r, 1, ": no filesystem found\n");
}

static void test_close_device_unmounts(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "close", "/dev/loop3", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
        assert_options(c, 1, "{'unmount': <true>}");
}

static void test_auth_interactive_flag(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) ask = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(ask->status, ==, 0);
        g_assert_true(mock_call(m, "Unmount")->interactive);

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) before = run_loopctl(&o, "--no-ask-password", "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(before->status, ==, 0);
        g_assert_false(mock_call(m, "Unmount")->interactive);

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) after = run_loopctl(&o, "detach", "loop3", "--no-ask-password", NULL);
        g_assert_cmpint(after->status, ==, 0);
        g_assert_false(mock_call(m, "Detach")->interactive);
}

static void test_auth_error_passed_through(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Mount";
        m->fail_name = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
        m->fail_message = "Interactive authentication required.";
        g_autoptr(Run) r = run_loopctl(&o, "--no-ask-password", "mount", "loop3p1", NULL);
        assert_error_line(
                r, 1, "loopctl: cannot mount /dev/loop3p1: Interactive authentication required.\n");
}

/* A pkttyagent that records how it was run, says it is ready by closing the fd it was given, and waits to
 * be stopped. */
static const char fake_agent[] = "#!/bin/sh\n"
                                 "echo \"args: $*\" >> \"$AGENT_LOG\"\n"
                                 "trap 'echo stopped >> \"$AGENT_LOG\"; exit 0' TERM\n"
                                 "[ \"$1\" = --notify-fd ] && eval \"exec $2>&-\"\n"
                                 "while :; do sleep 0.05; done\n";

typedef struct Agent {
        char *bin;
        char *log;
} Agent;

static void agent_setup(Agent *a, const char *dir)
{
        g_autofree char *script = NULL;

        a->bin = g_build_filename(dir, "bin", NULL);
        a->log = g_build_filename(dir, "agent.log", NULL);
        script = g_build_filename(a->bin, "pkttyagent", NULL);
        g_assert_cmpint(g_mkdir(a->bin, 0755), ==, 0);
        g_assert_true(g_file_set_contents(script, fake_agent, -1, NULL));
        g_assert_cmpint(chmod(script, 0755), ==, 0);
        g_assert_true(g_file_set_contents(a->log, "", -1, NULL));
        g_assert_cmpint(chmod(a->log, 0666), ==, 0);
}

static void agent_clear(Agent *a)
{
        g_free(a->bin);
        g_free(a->log);
}

static char *agent_log(const Agent *a)
{
        char *s = NULL;

        g_assert_true(g_file_get_contents(a->log, &s, NULL, NULL));
        return s;
}

/* A terminal for loopctl's stdin. */
static int open_terminal(int *ret_master)
{
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), slave;

        g_assert_cmpint(master, >=, 0);
        g_assert_cmpint(grantpt(master), ==, 0);
        g_assert_cmpint(unlockpt(master), ==, 0);
        slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        g_assert_cmpint(slave, >=, 0);
        *ret_master = master;
        return slave;
}

static void test_auth_agent_on_terminal(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        Agent a;
        int master;

        if (!m->address)
                return;
        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(m->dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                return;
        }
        agent_setup(&a, m->dir);
        o.path_prepend = a.bin;
        o.agent_log = a.log;
        o.as_nobody = TRUE; /* root is never asked, so no agent for root */
        o.stdin_fd = open_terminal(&master);

        g_autoptr(Run) r = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_true(mock_call(m, "Unmount")->interactive);

        /* Started with the systemd tools' arguments, and stopped before loopctl exited. */
        g_autofree char *log = agent_log(&a);
        g_assert_true(g_regex_match_simple("^args: --notify-fd [0-9]+ --fallback\nstopped\n$", log, 0, 0));

        close(master);
        agent_clear(&a);
}

static void test_auth_no_agent_when_not_asked(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        Agent a;
        int master;

        if (!m->address)
                return;
        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(m->dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                return;
        }
        agent_setup(&a, m->dir);
        o.path_prepend = a.bin;
        o.agent_log = a.log;
        o.as_nobody = TRUE;

        /* stdin is not a terminal: nobody could type a password. */
        g_autoptr(Run) pipe = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(pipe->status, ==, 0);

        /* --no-ask-password on a terminal. */
        o.stdin_fd = open_terminal(&master);
        g_autoptr(Run) no_ask = run_loopctl(&o, "unmount", "--no-ask-password", "/run/media/tester/X", NULL);
        g_assert_cmpint(no_ask->status, ==, 0);
        close(master);

        /* Commands polkit is not asked about. */
        o.stdin_fd = open_terminal(&master);
        g_autoptr(Run) list = run_loopctl(&o, "list", NULL);
        g_assert_cmpint(list->status, ==, 0);
        close(master);

        /* Root: polkit says yes without asking. */
        if (geteuid() == 0) {
                o.as_nobody = FALSE;
                o.stdin_fd = open_terminal(&master);
                g_autoptr(Run) root = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
                g_assert_cmpint(root->status, ==, 0);
                close(master);
        }

        g_autofree char *log = agent_log(&a);
        g_assert_cmpstr(log, ==, "");
        agent_clear(&a);
}

static void test_output_write_error_fails(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        if (access("/dev/full", W_OK) != 0) {
                g_test_skip("no /dev/full");
                return;
        }
        mock_set_devices(m, devices_text);
        o.stdout_path = "/dev/full";
        g_autoptr(Run) r = run_loopctl(&o, "list", "--json", NULL);
        assert_error_line(r, 1, "loopctl: cannot write output: No space left on device\n");
}

/* ---- monitor ---- */

typedef struct Monitor {
        GSubprocess *proc;
        GDataInputStream *out;
        char *err_path;
        char *line;
        gboolean line_done;
        gboolean exited;
} Monitor;

static void monitor_start(Monitor *mon, Mock *m, const char *const *args)
{
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GError) error = NULL;

        memset(mon, 0, sizeof(*mon));
        mon->err_path = g_build_filename(m->dir, "monitor.err", NULL);
        g_subprocess_launcher_set_stdin_file_path(l, "/dev/null");
        g_subprocess_launcher_set_stderr_file_path(l, mon->err_path);
        g_subprocess_launcher_setenv(l, "DBUS_SYSTEM_BUS_ADDRESS", m->address, TRUE);
        g_ptr_array_add(argv, (char *)loopctl_binary());
        for (; *args; args++)
                g_ptr_array_add(argv, (char *)*args);
        g_ptr_array_add(argv, NULL);
        mon->proc = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
        g_assert_no_error(error);
        mon->out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(mon->proc));
}

static void monitor_line_read(GObject *source, GAsyncResult *res, gpointer data)
{
        Monitor *mon = data;

        mon->line = g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(source), res, NULL, NULL);
        mon->line_done = TRUE;
}

static void emit(GDBusConnection *conn, const char *member, GVariant *args)
{
        g_autoptr(GError) error = NULL;

        g_dbus_connection_emit_signal(conn, NULL, "/org/loopd1", "org.loopd1.Manager", member, args, &error);
        g_assert_no_error(error);
        g_dbus_connection_flush_sync(conn, NULL, &error);
        g_assert_no_error(error);
}

/* The next line the monitor prints (NULL at end of output). With probe, keeps sending a DeviceAttached of
 * /dev/loop0 until a line comes: the way to know the monitor has subscribed. */
static char *monitor_next_line(Monitor *mon, Mock *m, gboolean probe)
{
        mon->line_done = FALSE;
        mon->line = NULL;
        g_data_input_stream_read_line_async(mon->out, G_PRIORITY_DEFAULT, NULL, monitor_line_read, mon);
        for (int i = 0; i < 200 && !mon->line_done; i++) {
                if (probe)
                        emit(m->conn, "DeviceAttached",
                                g_variant_new("(so)", "/dev/loop0", "/org/loopd1/device/loop0"));
                iterate_until(&mon->line_done, 50);
        }
        if (!mon->line_done)
                g_error("monitor printed nothing within 10 s");
        return g_steal_pointer(&mon->line);
}

/* The next line that is not a probe. */
static char *monitor_next_event(Monitor *mon, Mock *m)
{
        for (;;) {
                char *line = monitor_next_line(mon, m, FALSE);
                if (!line || !strstr(line, "/dev/loop0"))
                        return line;
                g_free(line);
        }
}

static void monitor_exited(GObject *source, GAsyncResult *res, gpointer data)
{
        g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        *(gboolean *)data = TRUE;
}

/* Waits for the monitor to exit; returns its exit status and stderr. */
static int monitor_finish(Monitor *mon, char **ret_err)
{
        gboolean done = FALSE;
        int status;

        g_subprocess_wait_async(mon->proc, NULL, monitor_exited, &done);
        if (!iterate_until(&done, 10000))
                g_error("monitor did not exit within 10 s");
        status = g_subprocess_get_if_exited(mon->proc) ? g_subprocess_get_exit_status(mon->proc)
                                                       : 128 + g_subprocess_get_term_sig(mon->proc);
        g_assert_true(g_file_get_contents(mon->err_path, ret_err, NULL, NULL));
        g_clear_object(&mon->out);
        g_clear_object(&mon->proc);
        g_free(mon->err_path);
        return status;
}

static void emit_all_events(Mock *m)
{
        emit(m->conn, "DeviceAttached", g_variant_new("(so)", "/dev/loop7", "/org/loopd1/device/loop7"));
        emit(m->conn, "PartitionAdded", g_variant_new("(ss)", "/dev/loop7", "/dev/loop7p1"));
        emit(m->conn, "Mounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/My \"Disk\""));
        emit(m->conn, "Unmounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/My \"Disk\""));
        emit(m->conn, "PartitionRemoved", g_variant_new("(ss)", "/dev/loop7", "/dev/loop7p1"));
        emit(m->conn, "DeviceDetached", g_variant_new("(so)", "/dev/loop7", "/org/loopd1/device/loop7"));
}

static void check_monitor(Mock *m, const char *const *args, const char *const *expected, int sig)
{
        g_autofree char *first = NULL, *err = NULL;
        Monitor mon;

        monitor_start(&mon, m, args);
        first = monitor_next_line(&mon, m, TRUE);
        g_assert_nonnull(strstr(first, "/dev/loop0"));

        emit_all_events(m);
        for (gsize i = 0; expected[i]; i++) {
                g_autofree char *line = monitor_next_event(&mon, m);
                g_assert_cmpstr(line, ==, expected[i]);
        }

        g_subprocess_send_signal(mon.proc, sig);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 0);
        g_assert_cmpstr(err, ==, "");
}

static void test_monitor_json_lines(Mock *m, gconstpointer data)
{
        static const char *const expected[] = {
                "{\"event\": \"DeviceAttached\", \"device\": \"/dev/loop7\", \"object\": \"/org/loopd1/device/loop7\"}",
                "{\"event\": \"PartitionAdded\", \"device\": \"/dev/loop7\", \"partition\": \"/dev/loop7p1\"}",
                "{\"event\": \"Mounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/My \\\"Disk\\\"\"}",
                "{\"event\": \"Unmounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/My \\\"Disk\\\"\"}",
                "{\"event\": \"PartitionRemoved\", \"device\": \"/dev/loop7\", \"partition\": \"/dev/loop7p1\"}",
                "{\"event\": \"DeviceDetached\", \"device\": \"/dev/loop7\", \"object\": \"/org/loopd1/device/loop7\"}",
                NULL,
        };

        if (!m->address)
                return;
        check_monitor(m, (const char *const[]){ "monitor", "--json", NULL }, expected, SIGTERM);
}

static void test_monitor_human_lines(Mock *m, gconstpointer data)
{
        static const char *const expected[] = {
                "DeviceAttached   /dev/loop7 /org/loopd1/device/loop7",
                "PartitionAdded   /dev/loop7 /dev/loop7p1",
                "Mounted          /dev/loop7p1 /run/media/tester/My \"Disk\"",
                "Unmounted        /dev/loop7p1 /run/media/tester/My \"Disk\"",
                "PartitionRemoved /dev/loop7 /dev/loop7p1",
                "DeviceDetached   /dev/loop7 /org/loopd1/device/loop7",
                NULL,
        };

        if (!m->address)
                return;
        check_monitor(m, (const char *const[]){ "--no-ask-password", "monitor", NULL }, expected, SIGINT);
}

static void test_monitor_ignores_other_senders(Mock *m, gconstpointer data)
{
        g_autoptr(GDBusConnection) impostor = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *first = NULL, *line = NULL, *err = NULL;
        Monitor mon;

        if (!m->address)
                return;
        impostor = g_dbus_connection_new_for_address_sync(m->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(impostor, FALSE);

        monitor_start(&mon, m, (const char *const[]){ "monitor", "--json", NULL });
        first = monitor_next_line(&mon, m, TRUE);

        /* Same path, interface and member, but not from org.loopd1's owner. */
        emit(impostor, "DeviceDetached", g_variant_new("(so)", "/dev/loop66", "/org/loopd1/device/loop66"));
        emit(m->conn, "Mounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/X"));
        /* The wrong signature is not the contract's signal either. */
        emit(m->conn, "Mounted", g_variant_new("(su)", "/dev/loop67", 1));
        emit(m->conn, "Unmounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/X"));

        line = monitor_next_event(&mon, m);
        g_assert_cmpstr(line, ==,
                "{\"event\": \"Mounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/X\"}");
        g_clear_pointer(&line, g_free);
        line = monitor_next_event(&mon, m);
        g_assert_cmpstr(line, ==,
                "{\"event\": \"Unmounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/X\"}");

        g_subprocess_send_signal(mon.proc, SIGTERM);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 0);
        g_dbus_connection_close_sync(impostor, NULL, NULL);
}

static void test_monitor_bus_gone_is_an_error(Mock *m, gconstpointer data)
{
        g_autofree char *first = NULL, *err = NULL, *rest = NULL;
        Monitor mon;

        if (!m->address)
                return;
        monitor_start(&mon, m, (const char *const[]){ "monitor", NULL });
        first = monitor_next_line(&mon, m, TRUE);

        mock_stop_bus(m);
        g_autofree char *eof = monitor_next_event(&mon, m);
        g_assert_null(eof);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 1);
        g_assert_cmpstr(err, ==, "loopctl: lost the connection to the system bus\n");
}

#define ADD_MOCK(path, fn) g_test_add(path, Mock, NULL, mock_setup_owned, fn, mock_teardown)

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/loopctl/usage/no-command-exits-2", test_usage_no_command);
        g_test_add_func("/loopctl/usage/unknown-command-exits-2", test_usage_unknown_command);
        g_test_add_func("/loopctl/usage/unknown-or-ambiguous-option-exits-2", test_usage_unknown_option);
        g_test_add_func("/loopctl/usage/option-without-its-value-exits-2", test_usage_missing_value);
        g_test_add_func("/loopctl/usage/flag-given-a-value-exits-2", test_usage_flag_with_value);
        g_test_add_func("/loopctl/usage/missing-argument-exits-2", test_usage_missing_argument);
        g_test_add_func("/loopctl/usage/too-many-arguments-exits-2", test_usage_too_many_arguments);
        g_test_add_func(
                "/loopctl/usage/option-of-another-command-exits-2", test_usage_option_of_another_command);
        g_test_add_func("/loopctl/help/prints-usage-to-stdout-exits-0", test_help_prints_usage);
        g_test_add_func("/loopctl/version/prints-version-exits-0", test_version);
        g_test_add_func("/loopctl/size/bad-number-or-suffix-exits-2", test_size_bad_values);
        g_test_add_func("/loopctl/size/overflow-exits-2", test_size_overflow);
        g_test_add_func(
                "/loopctl/size/sector-size-outside-512-to-4096-exits-2", test_size_sector_size_values);
        g_test_add_func("/loopctl/options/before-and-after-the-command-word",
                test_options_before_and_after_command_reach_the_same_parser);
        g_test_add_func("/loopctl/attach/nonexistent-image-fails-before-the-bus",
                test_attach_nonexistent_image_fails_before_bus);
        g_test_add_func(
                "/loopctl/attach/fifo-directory-and-device-refused", test_attach_refuses_non_regular_files);
        g_test_add_func("/loopctl/attach/unwritable-image-suggests-read-only",
                test_attach_unwritable_image_suggests_read_only);
        g_test_add_func("/loopctl/bus/unreachable-bus-is-one-error-line", test_bus_unreachable_is_one_line);

        g_test_add("/loopctl/bus/daemon-not-running-is-one-error-line", Mock, NULL, mock_setup_unowned,
                test_bus_daemon_not_running, mock_teardown);
        ADD_MOCK("/loopctl/attach/passes-read-write-fd-of-the-image-and-no-options",
                test_attach_passes_writable_fd_and_no_options);
        ADD_MOCK("/loopctl/attach/read-only-passes-read-only-fd", test_attach_read_only_passes_read_only_fd);
        ADD_MOCK("/loopctl/attach/option-keys-and-types-are-the-contracts",
                test_attach_option_keys_are_the_contracts);
        ADD_MOCK("/loopctl/attach/sizes-in-every-notation", test_attach_sizes_in_every_notation);
        ADD_MOCK("/loopctl/attach/json-has-device-and-partitions", test_attach_json_lists_partitions);
        ADD_MOCK("/loopctl/attach/human-output-is-an-aligned-table", test_attach_human_output);
        ADD_MOCK("/loopctl/attach/daemon-error-is-one-line", test_attach_daemon_error_is_one_line);
        ADD_MOCK("/loopctl/attach/partition-listing-failure-says-device-stays",
                test_attach_partition_listing_failure_says_device_stays);
        ADD_MOCK("/loopctl/attach/double-dash-ends-options", test_attach_double_dash_ends_options);
        ADD_MOCK("/loopctl/list/json-shape-and-option-placement", test_list_json_shape);
        ADD_MOCK("/loopctl/list/no-devices", test_list_empty);
        ADD_MOCK(
                "/loopctl/list/table-aligned-and-backing-file-escaped", test_list_table_aligned_and_escaped);
        ADD_MOCK(
                "/loopctl/partitions/json-shape-and-bare-device-name", test_partitions_json_and_device_name);
        ADD_MOCK("/loopctl/partitions/none-is-empty-array", test_partitions_empty);
        ADD_MOCK("/loopctl/partitions/daemon-error-is-one-line", test_partitions_error);
        ADD_MOCK("/loopctl/detach/device-names-and-unmount-option", test_detach_device_names);
        ADD_MOCK("/loopctl/detach/image-resolved-to-its-device", test_detach_image_resolved_to_its_device);
        ADD_MOCK("/loopctl/detach/image-on-several-devices-refused",
                test_detach_image_on_several_devices_refused);
        ADD_MOCK("/loopctl/detach/image-not-attached-refused", test_detach_image_not_attached);
        ADD_MOCK("/loopctl/detach/busy-error-is-one-line", test_detach_busy_error);
        ADD_MOCK("/loopctl/mount/option-keys-and-json", test_mount_option_keys_and_json);
        ADD_MOCK("/loopctl/unmount/mount-points-and-nodes", test_unmount_targets);
        ADD_MOCK("/loopctl/open/read-only-by-default-and-json", test_open_read_only_by_default_and_json);
        ADD_MOCK("/loopctl/open/writable-and-sector-size", test_open_writable_and_sector_size);
        ADD_MOCK("/loopctl/open/nothing-to-mount-is-one-line", test_open_nothing_to_mount);
        ADD_MOCK("/loopctl/close/device-detached-with-unmount", test_close_device_unmounts);
        ADD_MOCK("/loopctl/auth/interactive-unless-no-ask-password", test_auth_interactive_flag);
        ADD_MOCK("/loopctl/auth/daemon-auth-error-is-one-line", test_auth_error_passed_through);
        ADD_MOCK("/loopctl/auth/pkttyagent-runs-on-a-terminal-and-is-stopped", test_auth_agent_on_terminal);
        ADD_MOCK("/loopctl/auth/no-agent-without-terminal-or-when-not-asked",
                test_auth_no_agent_when_not_asked);
        ADD_MOCK("/loopctl/output/write-error-exits-1", test_output_write_error_fails);
        ADD_MOCK("/loopctl/monitor/json-line-per-event", test_monitor_json_lines);
        ADD_MOCK("/loopctl/monitor/human-line-per-event-and-sigint-exits-0", test_monitor_human_lines);
        ADD_MOCK("/loopctl/monitor/ignores-signals-not-from-org.loopd1", test_monitor_ignores_other_senders);
        ADD_MOCK("/loopctl/monitor/lost-bus-is-an-error", test_monitor_bus_gone_is_an_error);

        return g_test_run();
}
