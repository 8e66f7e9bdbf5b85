/* harness-clients.c: the test's clients: the test users, bus connections as them, loopctl and other programs
 * run as them, raw D-Bus calls to loopd and the checks of their errors, a bus monitor. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "format.h"
#include "harness-internal.h"
#include "loopd-bus.h"

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
/* ---------------------------------------------------------------------------------------------------- */
/* Connections and program runs as a user */

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
        if (harness_text_has_sanitizer_report(ret->err))
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

/* harness_loopctlv() with the arguments of a NULL-terminated va_list, "--json" first when json. */
static int loopctl_va(Harness *h, const char *user, HarnessRun *ret, bool json, va_list ap)
{
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        const char *a;

        if (json)
                g_ptr_array_add(args, "--json");
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(args, (char *)a);
        g_ptr_array_add(args, NULL);
        return harness_loopctlv(h, user, ret, (const char *const *)args->pdata);
}

int harness_loopctl(Harness *h, const char *user, HarnessRun *ret, ...)
{
        va_list ap;
        int status;

        va_start(ap, ret);
        status = loopctl_va(h, user, ret, false, ap);
        va_end(ap);
        return status;
}

void harness_fail(const char *format, ...)
{
        g_autofree char *message = NULL;
        va_list ap;

        va_start(ap, format);
        message = g_strdup_vprintf(format, ap);
        va_end(ap);
        g_test_message("FAIL: %s", message);
        g_test_fail_printf("%s", message);
}

/* loopctl_va(), which must exit 0 (the test fails otherwise); returns whether it did. */
static bool loopctl_succeeds_va(Harness *h, const char *user, HarnessRun *run, bool json, va_list ap)
{
        int status = loopctl_va(h, user, run, json, ap);

        if (status != 0)
                harness_fail("loopctl%s exited %d: %s", json ? " --json" : "", status, run->err);
        return status == 0;
}

bool harness_loopctl_ok(Harness *h, const char *user, ...)
{
        g_auto(HarnessRun) run = { 0 };
        va_list ap;
        bool ok;

        va_start(ap, user);
        ok = loopctl_succeeds_va(h, user, &run, false, ap);
        va_end(ap);
        return ok;
}

JsonNode *harness_loopctl_json(Harness *h, const char *user, ...)
{
        g_auto(HarnessRun) run = { 0 };
        va_list ap;
        bool ok;

        va_start(ap, user);
        ok = loopctl_succeeds_va(h, user, &run, true, ap);
        va_end(ap);
        return ok ? harness_run_json(&run) : NULL;
}

void harness_check_list_size(Harness *h, const char *user, const char *device, const char *expected)
{
        g_autofree char *name = g_path_get_basename(device);
        g_autofree char *sectors = test_read_sysfs("/sys/block/%s/size", name);
        g_auto(HarnessRun) run = { 0 };
        g_auto(GStrv) lines = NULL;
        char kernels[FORMAT_BYTES_MAX];

        if (!sectors) {
                harness_fail("%s: no size in sysfs", device);
                return;
        }
        format_bytes(kernels, g_ascii_strtoull(sectors, NULL, 10) * 512);
        if (expected && !g_str_equal(kernels, expected))
                harness_fail("the kernel's size of %s is %s, expected %s", device, kernels, expected);
        if (harness_loopctl(h, user, &run, "list", NULL) != 0) {
                harness_fail("loopctl list exited %d: %s", run.status, run.err);
                return;
        }
        lines = g_strsplit(run.out, "\n", -1);
        for (char **l = lines; *l; l++) {
                char dev[64], size[32];

                if (sscanf(*l, "%63s %31s", dev, size) != 2 || !g_str_equal(dev, device))
                        continue;
                if (!g_str_equal(size, kernels))
                        harness_fail("loopctl list gives %s the size %s; the kernel's is %s", device, size,
                                kernels);
                return;
        }
        harness_fail("loopctl list does not list %s: %s", device, run.out);
}

bool harness_names_one_of(const char *text, const char *needles)
{
        g_autofree char *lower = g_ascii_strdown(text ? text : "", -1);
        g_auto(GStrv) each = g_strsplit(needles, "|", -1);

        for (char **n = each; *n; n++) {
                g_autofree char *l = g_ascii_strdown(*n, -1);
                if (strstr(lower, l))
                        return true;
        }
        return false;
}

void harness_check_loopctl_refused(const char *what, const HarnessRun *run, const char *needles)
{
        g_autofree char *err = g_strdup(run->err ? run->err : "");
        g_auto(GStrv) lines = g_strsplit(g_strchomp(err), "\n", -1);

        g_test_message("%s: exit %d, stderr: %s", what, run->status, run->err);
        if (run->status != 1)
                harness_fail("%s: loopctl exited %d, expected 1 (stderr: %s)", what, run->status, run->err);
        if (g_strv_length(lines) != 1 || !g_str_has_prefix(lines[0], "loopctl: "))
                harness_fail("%s: loopctl's stderr is not one 'loopctl: ...' line: '%s'", what, run->err);
        if (needles && !harness_names_one_of(run->err, needles))
                harness_fail("%s: loopctl's error does not mention '%s': %s", what, needles, run->err);
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

char *harness_run_json_error(const HarnessRun *run, char **ret_message)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        const char *err = run->err ? run->err : "", *newline = strchr(err, '\n');
        JsonObject *o;

        if (!newline || newline[1] != '\0' || !json_parser_load_from_data(parser, err, -1, NULL) ||
                !json_parser_get_root(parser) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
                g_test_fail_printf("stderr is not one line of a JSON object: %s", err);
                return NULL;
        }
        o = json_node_get_object(json_parser_get_root(parser));
        if (!json_object_has_member(o, "error") || !json_object_has_member(o, "message") ||
                !json_object_get_string_member(o, "error") || !json_object_get_string_member(o, "message")) {
                g_test_fail_printf("the JSON error has no string \"error\" and \"message\": %s", err);
                return NULL;
        }
        if (ret_message)
                *ret_message = g_strdup(json_object_get_string_member(o, "message"));
        return g_strdup(json_object_get_string_member(o, "error"));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Raw D-Bus calls to loopd */

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

/* ---------------------------------------------------------------------------------------------------- */
/* Checks of their errors */

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
/* A bus monitor */

typedef struct MonitoredCall {
        char *call; /* "interface.member" */
        char *arg0; /* the first argument when it is a string, else NULL */
} MonitoredCall;

struct HarnessBusMonitor {
        GDBusConnection *connection;
        guint filter;
        GMutex lock;
        GCond cond;
        GPtrArray *calls; /* MonitoredCall */
};

static void monitored_call_free(gpointer data)
{
        MonitoredCall *mc = data;

        g_free(mc->call);
        g_free(mc->arg0);
        g_free(mc);
}

/* In GDBus's worker thread. */
static GDBusMessage *bus_monitor_filter(
        GDBusConnection *c, GDBusMessage *message, gboolean incoming, gpointer user_data)
{
        HarnessBusMonitor *m = user_data;
        GVariant *body = g_dbus_message_get_body(message);
        MonitoredCall *mc;

        /* Calls seen as a monitor are not for us: record them and drop them, or GDBus would answer them
         * (and the bus disconnects a monitor that sends anything). Replies and signals pass. */
        if (!incoming || g_dbus_message_get_message_type(message) != G_DBUS_MESSAGE_TYPE_METHOD_CALL)
                return message;
        mc = g_new0(MonitoredCall, 1);
        mc->call = g_strdup_printf(
                "%s.%s", g_dbus_message_get_interface(message), g_dbus_message_get_member(message));
        if (body && g_variant_is_container(body) && g_variant_n_children(body) > 0) {
                g_autoptr(GVariant) arg0 = g_variant_get_child_value(body, 0);
                if (g_variant_is_of_type(arg0, G_VARIANT_TYPE_STRING))
                        mc->arg0 = g_variant_dup_string(arg0, NULL);
        }
        g_mutex_lock(&m->lock);
        g_ptr_array_add(m->calls, mc);
        g_cond_broadcast(&m->cond);
        g_mutex_unlock(&m->lock);
        g_object_unref(message);
        return NULL;
}

HarnessBusMonitor *harness_bus_monitor_new(Harness *h, const char *const *rules)
{
        HarnessBusMonitor *m = g_new0(HarnessBusMonitor, 1);
        g_autoptr(GPtrArray) all = g_ptr_array_new();
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;

        g_mutex_init(&m->lock);
        g_cond_init(&m->cond);
        m->calls = g_ptr_array_new_with_free_func(monitored_call_free);
        /* harness_bus_monitor_count() needs to see root's Ping, whatever else the rules choose. */
        for (const char *const *r = rules; r && *r; r++)
                g_ptr_array_add(all, (char *)*r);
        if (rules)
                g_ptr_array_add(
                        all, "type='method_call',interface='org.freedesktop.DBus.Peer',member='Ping'");
        g_ptr_array_add(all, NULL);

        m->connection = g_dbus_connection_new_for_address_sync(h->bus_address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!m->connection) {
                g_test_fail_printf("cannot connect the bus monitor: %s", error->message);
                return m;
        }
        g_dbus_connection_set_exit_on_close(m->connection, FALSE);
        m->filter = g_dbus_connection_add_filter(m->connection, bus_monitor_filter, m, NULL);
        reply = g_dbus_connection_call_sync(m->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus.Monitoring", "BecomeMonitor",
                g_variant_new("(^asu)", (char **)all->pdata, 0u), NULL, G_DBUS_CALL_FLAGS_NONE,
                HARNESS_TIMEOUT_MS, NULL, &error);
        if (!reply)
                g_test_fail_printf("BecomeMonitor: %s", error->message);
        return m;
}

void harness_bus_monitor_free(HarnessBusMonitor *m)
{
        if (!m)
                return;
        if (m->connection) {
                g_dbus_connection_remove_filter(m->connection, m->filter);
                (void)g_dbus_connection_close_sync(m->connection, NULL, NULL);
                g_object_unref(m->connection);
        }
        g_ptr_array_unref(m->calls);
        g_mutex_clear(&m->lock);
        g_cond_clear(&m->cond);
        g_free(m);
}

/* How many calls of call ("interface.member") m saw whose first argument contains needle (NULL: any). */
static guint bus_monitor_count_locked(HarnessBusMonitor *m, const char *call, const char *needle)
{
        guint n = 0;

        for (guint i = 0; i < m->calls->len; i++) {
                const MonitoredCall *mc = m->calls->pdata[i];
                if (g_str_equal(mc->call, call) && (!needle || (mc->arg0 && strstr(mc->arg0, needle))))
                        n++;
        }
        return n;
}

guint harness_bus_monitor_count(Harness *h, HarnessBusMonitor *m, const char *call)
{
        static const char ping[] = "org.freedesktop.DBus.Peer.Ping";
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        gint64 deadline = g_get_monotonic_time() + (gint64)HARNESS_TIMEOUT_MS * 1000;
        guint pings, n;

        g_mutex_lock(&m->lock);
        pings = bus_monitor_count_locked(m, ping, NULL);
        g_mutex_unlock(&m->lock);
        reply = g_dbus_connection_call_sync(h->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                "org.freedesktop.DBus.Peer", "Ping", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS,
                NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);

        g_mutex_lock(&m->lock);
        while (bus_monitor_count_locked(m, ping, NULL) == pings)
                if (!g_cond_wait_until(&m->cond, &m->lock, deadline)) {
                        g_test_fail_printf(
                                "the bus monitor did not see root's ping within %d ms", HARNESS_TIMEOUT_MS);
                        break;
                }
        n = bus_monitor_count_locked(m, call, NULL);
        g_mutex_unlock(&m->lock);
        return n;
}

bool harness_bus_monitor_wait(HarnessBusMonitor *m, const char *call, const char *needle, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        bool seen;

        g_mutex_lock(&m->lock);
        while (bus_monitor_count_locked(m, call, needle) == 0 &&
                g_cond_wait_until(&m->cond, &m->lock, deadline))
                ;
        seen = bus_monitor_count_locked(m, call, needle) > 0;
        g_mutex_unlock(&m->lock);
        return seen;
}
