/* test-loopctl-cli.c: runs the built loopctl: usage errors, options, local failures before the bus, and,
 * against a mock org.loopd1 on a private dbus-daemon, the calls it makes and what it prints. No loopd. */
#include "test-loopctl-cli.h"

#define UNREACHABLE_BUS "unix:path=/nonexistent/loopctl-test/bus"
#define NOBODY 65534

/* ---- running loopctl ---- */

void run_free(Run *r)
{
        if (!r)
                return;
        g_free(r->out);
        g_free(r->err);
        g_free(r);
}

const char *loopctl_binary(void)
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
gboolean nobody_can_reach(const char *target)
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
gboolean iterate_until(const gboolean *flag, guint timeout_ms)
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

static GPtrArray *argv_new(const RunOptions *o, va_list ap)
{
        GPtrArray *argv = g_ptr_array_new();
        const char *a;

        g_ptr_array_add(argv, (char *)(o->binary ? o->binary : loopctl_binary()));
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
G_GNUC_NULL_TERMINATED Run *run_loopctl(const RunOptions *o, ...)
{
        g_autoptr(GSubprocessLauncher) l = launcher_new(o, G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        Communicated c = {};
        Run *r;
        va_list ap;

        va_start(ap, o);
        argv = argv_new(o, ap);
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

const RunOptions no_bus = {};

/* The contract's error shape: one line "loopctl: ...", containing what, on stderr, nothing on stdout. */
/* A --json error: one line of stderr, {"error": KIND, "message": "..."}; returns the message (NULL when the
 * line is not such an object) and the kind in ret_kind. */
char *json_error_message(const char *err, char **ret_kind)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *o;

        if (!g_str_has_prefix(err, "{") || !g_str_has_suffix(err, "}\n") ||
                strchr(err, '\n') != err + strlen(err) - 1 ||
                !json_parser_load_from_data(parser, err, -1, NULL) ||
                !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
                return NULL;
        o = json_node_get_object(json_parser_get_root(parser));
        if (json_object_get_size(o) != 2 || !json_object_has_member(o, "error") ||
                !json_object_has_member(o, "message"))
                return NULL;
        if (ret_kind)
                *ret_kind = g_strdup(json_object_get_string_member(o, "error"));
        return g_strdup(json_object_get_string_member(o, "message"));
}

/* One error line, "loopctl: ...what...", or with --json the JSON object whose message says what. */
void assert_error_line(const Run *r, int status, const char *what)
{
        g_autofree char *message = json_error_message(r->err, NULL);
        /* The same words in a JSON error: no "loopctl: ", no newline, the line's end the message's. */
        g_autofree char *line = message ? g_strdup_printf("loopctl: %s\n", message) : NULL;

        if (line && r->status == status && strstr(line, what)) {
                g_assert_cmpstr(r->out, ==, "");
                return;
        }
        if (r->status != status || !g_str_has_prefix(r->err, "loopctl: ") ||
                !g_str_has_suffix(r->err, "\n") || strchr(r->err, '\n') != r->err + strlen(r->err) - 1 ||
                !strstr(r->err, what))
                g_error("expected exit %d and one line 'loopctl: ...%s...', got exit %d and stderr <<%s>>",
                        status, what, r->status, r->err);
        g_assert_cmpstr(r->out, ==, "");
}

/* ---- a scratch directory ---- */

char *make_file(const char *dir, const char *name, gsize size)
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
        "<method name='Format'><arg type='s' direction='in'/><arg type='s' direction='in'/>"
        "<arg type='a{sv}' direction='in'/></method>"
        "<method name='CreatePartition'><arg type='s' direction='in'/><arg type='t' direction='in'/>"
        "<arg type='t' direction='in'/><arg type='s' direction='in'/><arg type='s' direction='in'/>"
        "<arg type='a{sv}' direction='in'/><arg type='s' direction='out'/></method>"
        "<method name='DeletePartition'><arg type='s' direction='in'/><arg type='a{sv}' direction='in'/>"
        "</method>"
        "</interface>"
        "<interface name='org.loopd1.Device'>"
        "<property name='Partitions' type='a(suttssssss)' access='read'/>"
        "</interface></node>";

static void mock_call_free(MockCall *c)
{
        g_free(c->method);
        g_variant_unref(c->params);
        g_free(c);
}

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

        if (m->interrupt_method && g_str_equal(m->interrupt_method, method)) {
                g_autoptr(GVariant) pid = g_dbus_connection_call_sync(conn, "org.freedesktop.DBus",
                        "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                        g_variant_new("(s)", sender), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, -1,
                        NULL, NULL);
                guint32 caller = 0;

                g_assert_nonnull(pid);
                g_variant_get(pid, "(u)", &caller);
                g_assert_cmpint(kill((pid_t)caller, SIGINT), ==, 0);
        }

        if (m->vanish_method && g_str_equal(m->vanish_method, method)) {
                /* The bus answers NoReply: loopd went away before it answered. */
                g_dbus_connection_close(m->conn, NULL, NULL, NULL);
                return;
        }
        if ((m->fail_method && g_str_equal(m->fail_method, method)) ||
                (m->also_fail_method && g_str_equal(m->also_fail_method, method))) {
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
        else if (g_str_equal(method, "CreatePartition"))
                g_dbus_method_invocation_return_value(inv, g_variant_new("(s)", "/dev/loop3p2"));
        else if (g_str_equal(method, "MountImage"))
                g_dbus_method_invocation_return_value(inv,
                        g_variant_new_parsed("('/dev/loop3', [('/dev/loop3p1', '/run/media/tester/EFI'), "
                                             "('/dev/loop3p2', '/run/media/tester/My Data')])"));
        else
                g_dbus_method_invocation_return_value(inv, NULL);
}

/* The Device object Attach names: its Partitions property, recorded as a call "Get" of (path, property). */
static GVariant *mock_get_property(GDBusConnection *conn, const char *sender, const char *path,
        const char *iface, const char *property, GError **error, gpointer data)
{
        Mock *m = data;
        MockCall *c = g_new0(MockCall, 1);

        c->method = g_strdup("Get");
        c->params = g_variant_ref_sink(g_variant_new("(ss)", path, property));
        c->fd_accmode = -1;
        g_ptr_array_add(m->calls, c);

        /* As if the object went: GDBus names a getter's error after its GError code, not fail_name. */
        if (m->fail_method && g_str_equal(m->fail_method, "Get")) {
                g_set_error_literal(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_OBJECT, m->fail_message);
                return NULL;
        }
        return g_variant_ref(m->partitions);
}

static void die_with_parent(gpointer data)
{
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static const GDBusInterfaceVTable mock_vtable = { mock_method_call, NULL, NULL };
static const GDBusInterfaceVTable mock_device_vtable = { NULL, mock_get_property, NULL };

void mock_set_devices(Mock *m, const char *text)
{
        g_variant_unref(m->devices);
        m->devices = g_variant_ref_sink(g_variant_new_parsed(text));
        g_assert_true(g_variant_is_of_type(m->devices, G_VARIANT_TYPE("a(sosttubbbu)")));
}

void mock_set_partitions(Mock *m, const char *text)
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
        m->device_object_id = g_dbus_connection_register_object(m->conn, "/org/loopd1/device/loop3",
                m->info->interfaces[1], &mock_device_vtable, m, NULL, &error);
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

void mock_stop_bus(Mock *m)
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
                if (m->device_object_id)
                        g_dbus_connection_unregister_object(m->conn, m->device_object_id);
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

RunOptions mock_bus(const Mock *m)
{
        return (RunOptions){ .bus = m->address };
}

/* The only call of this method; fails when there is none or several. */
MockCall *mock_call(Mock *m, const char *method)
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

guint mock_count(Mock *m, const char *method)
{
        guint n = 0;

        for (guint i = 0; i < m->calls->len; i++)
                n += g_str_equal(((MockCall *)m->calls->pdata[i])->method, method);
        return n;
}

/* The a{sv} argument at index i holds exactly the entries of expected (GVariant text), with their types. */
void assert_options(const MockCall *c, gsize i, const char *expected)
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

const char *call_string(const MockCall *c, gsize i)
{
        g_autoptr(GVariant) v = g_variant_get_child_value(c->params, i);
        return g_variant_get_string(v, NULL); /* owned by c->params */
}

void assert_same_file(const MockCall *c, const char *path)
{
        struct stat st;

        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_true(S_ISREG(c->fd_stat.st_mode));
        g_assert_cmpuint(c->fd_stat.st_dev, ==, st.st_dev);
        g_assert_cmpuint(c->fd_stat.st_ino, ==, st.st_ino);
}

/* ---- usage ---- */

void assert_usage_error(const char *what, ...)
{
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GSubprocessLauncher) l = launcher_new(&no_bus, G_SUBPROCESS_FLAGS_STDERR_PIPE);
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL, *err = NULL;
        va_list ap;

        va_start(ap, what);
        argv = argv_new(&no_bus, ap);
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
        ADD_MOCK("/loopctl/detach/image-prefers-own-device", test_detach_image_prefers_own_device);
        ADD_MOCK("/loopctl/detach/image-not-utf8", test_detach_image_not_utf8);
        ADD_MOCK("/loopctl/detach/name-of-device-and-file", test_detach_name_of_device_and_file);
        ADD_MOCK("/loopctl/umount-helper/exit-status", test_umount_helper_exit_status);
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

        g_test_add_func("/loopctl/modify/usage/format-needs-node-and-type", test_modify_usage_format);
        g_test_add_func("/loopctl/modify/usage/partition-needs-add-or-delete", test_modify_usage_partition);
        g_test_add_func(
                "/loopctl/modify/usage/create-needs-size-and-known-table-and-fs", test_modify_usage_create);
        g_test_add_func("/loopctl/modify/create/refused-or-unreachable-makes-no-file",
                test_modify_create_refused_makes_no_file);
        g_test_add_func("/loopctl/modify/create/never-overwrites-a-file-or-follows-a-symlink",
                test_modify_create_never_overwrites);
        g_test_add_func(
                "/loopctl/modify/missing-nodes-fail-before-the-bus", test_modify_nodes_fail_before_the_bus);
        g_test_add_func("/loopctl/modify/help-lists-the-commands", test_modify_help_lists_commands);
        ADD_MOCK("/loopctl/modify/format/node-type-and-option-keys",
                test_modify_format_sends_node_type_and_options);
        ADD_MOCK("/loopctl/modify/format/daemon-error-is-one-line", test_modify_format_error_is_one_line);
        ADD_MOCK("/loopctl/modify/partition-add/defaults-and-the-new-row",
                test_modify_partition_add_defaults_and_output);
        ADD_MOCK("/loopctl/modify/partition-add/option-values", test_modify_partition_add_options);
        ADD_MOCK("/loopctl/modify/partition-add/image-resolved-to-its-device",
                test_modify_partition_add_to_image);
        ADD_MOCK("/loopctl/modify/partition-add/errors-say-what-was-made", test_modify_partition_add_errors);
        ADD_MOCK("/loopctl/modify/partition-delete/node-json-and-busy", test_modify_partition_delete);
        ADD_MOCK("/loopctl/modify/create/table-partition-filesystem-sparse-file",
                test_modify_create_table_partition_filesystem);
        ADD_MOCK("/loopctl/modify/create/json-is-attachs", test_modify_create_json_is_attachs);
        ADD_MOCK("/loopctl/modify/create/filesystem-on-the-whole-device-4k",
                test_modify_create_filesystem_on_the_whole_device);
        ADD_MOCK("/loopctl/modify/create/partition-type-fits-the-filesystem",
                test_modify_create_partition_type_fits_filesystem);
        ADD_MOCK("/loopctl/modify/create/failed-step-detaches-and-removes",
                test_modify_create_failure_leaves_nothing);
        ADD_MOCK("/loopctl/modify/create/refused-attach-removes-the-file",
                test_modify_create_attach_refused_removes_file);
        ADD_MOCK("/loopctl/modify/create/failed-undo-is-said", test_modify_create_undo_failure_is_said);
        ADD_MOCK("/loopctl/modify/create/interrupted-step-finishes-then-all-is-undone",
                test_modify_create_interrupted_leaves_nothing);

        g_test_add_func("/loopctl/speak/help-per-command", test_speak_help_per_command);
        g_test_add_func(
                "/loopctl/speak/global-help-points-to-commands", test_speak_global_help_points_to_commands);
        g_test_add_func("/loopctl/speak/json-usage-errors", test_speak_json_usage_errors);
        g_test_add_func("/loopctl/speak/json-local-errors", test_speak_json_local_errors);
        ADD_MOCK("/loopctl/speak/json-bus-errors", test_speak_json_bus_errors);
        ADD_MOCK("/loopctl/speak/error-wordings", test_speak_error_wordings);
        ADD_MOCK("/loopctl/speak/polkit-denial-says-what-to-do", test_speak_polkit_denial_says_what_to_do);
        ADD_MOCK("/loopctl/speak/list-empty-has-a-header", test_speak_list_empty_has_a_header);
        ADD_MOCK("/loopctl/speak/commands-say-what-they-did", test_speak_commands_say_what_they_did);

        return g_test_run();
}
