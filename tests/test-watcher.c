/* test-watcher.c: the watcher as clients see it: the Manager's signals in order (GDBus subscriptions and
 * `loopctl monitor --json`), Device objects through GDBus's own ObjectManager client, changes made by other
 * tools (losetup, partx, umount), and ownership and mounts that survive kill -9 and a restart. What the
 * kernel holds is asked of losetup, findmnt and sysfs, never of loopd. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)
/* The promise for a device set up by another tool: an object within a second. */
#define APPEAR_DEADLINE_MS 1000
#define OBJECT_MANAGER_INTERFACE "org.freedesktop.DBus.ObjectManager"
#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"

/* A test that cannot go on without x: fails and returns (the teardown cleans up). */
#define REQUIRE(x)                                                                \
        do {                                                                      \
                if (!(x)) {                                                       \
                        g_test_fail_printf("%s: %s does not hold", G_STRLOC, #x); \
                        return;                                                   \
                }                                                                 \
        } while (0)

/* ---------------------------------------------------------------------------------------------------- */
/* Small helpers */

static char *object_path_of(const char *device)
{
        return g_strconcat(LOOPD_DEVICE_PATH_PREFIX "/", device + strlen("/dev/"), NULL);
}

/* A 64 MiB GPT image: p1 (16 MiB at 1 MiB) carries ext4 labelled label, p2 the rest, empty. */
static char *make_gpt_image(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        g_free(image_mkfs_at(image, 1 * MiB, 16 * MiB, "ext4", label));
        return image;
}

/* A 32 MiB image with ext4 on the whole of it. */
static char *make_ext4_image(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);

        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", label));
        return image;
}

/* Attach(image opened read-write by the test) on c; the device, or NULL (and the test failed). */
static char *attach(GDBusConnection *c, const char *image)
{
        g_autoptr(GError) error = NULL;
        char *device = NULL;

        if (!harness_attach_path(c, image, O_RDWR, NULL, &device, &error)) {
                harness_assert_no_error(error);
                return NULL;
        }
        return device;
}

/* The kernel's view, not loopd's: is anything mounted on target? */
static bool is_mount_point(const char *target)
{
        g_autofree char *q = g_shell_quote(target);

        return test_sh_status(NULL, "findmnt --mountpoint %s >/dev/null", q) == 0;
}

/* Is device bound, according to losetup? */
static bool losetup_has(const char *device)
{
        g_autofree char *q = g_shell_quote(device);

        return test_sh_status(NULL, "losetup %s >/dev/null 2>&1", q) == 0;
}

/* partx --delete (add = false) or --add of partitions 1..n of device, as a careful script does it: a
 * partition that something has open (udevd's or another daemon's probe of a partition that just appeared)
 * cannot be deleted (EBUSY), and partx -a/-d fail on a partition that is already there/gone. So: wait for
 * udev's queue, act on the partitions not yet as wanted, and try again a bounded number of times. */
static void partx_all(const char *device, guint n, bool add)
{
        g_autofree char *qdevice = g_shell_quote(device);
        const char *name = device + strlen("/dev/");

        g_free(test_sh(
                "dev=%s; name=%s; n=%u; add=%d; "
                "pending() { for i in $(seq $n); do "
                "  if [ -e /sys/block/$name/${name}p$i ]; then [ $add = 1 ] || echo $i; "
                "  else [ $add = 0 ] || echo $i; fi; done; }; "
                "for attempt in $(seq 50); do "
                "  todo=$(pending); [ -z \"$todo\" ] && exit 0; "
                "  udevadm settle --timeout=10 2>/dev/null || true; "
                "  for i in $todo; do partx $([ $add = 1 ] && echo --add || echo --delete) --nr $i $dev "
                "    2>/dev/null || true; done; "
                "  [ -z \"$(pending)\" ] && exit 0; sleep 0.1; "
                "done; echo \"partitions $(pending) of $dev still not as wanted\" >&2; exit 1",
                qdevice, name, n, add ? 1 : 0));
}

/* losetup --detach of device, and a wait until the kernel really unbound it: on this kernel LOOP_CLR_FD only
 * marks a device that others hold open (udevd's or a daemon's probe) for autoclear on their last close. The
 * kernel has no notification a test could wait on besides uevents, so this looks at sysfs every 10 ms. */
static void losetup_detach_and_wait(const char *device)
{
        g_autofree char *qdevice = g_shell_quote(device);
        g_autofree char *backing =
                g_strdup_printf("/sys/block/%s/loop/backing_file", device + strlen("/dev/"));
        gint64 deadline = g_get_monotonic_time() + (gint64)HARNESS_TIMEOUT_MS * 1000;

        g_free(test_sh("losetup --detach %s", qdevice));
        while (g_file_test(backing, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < deadline)
                g_usleep(10 * 1000);
        if (g_file_test(backing, G_FILE_TEST_EXISTS))
                g_test_fail_printf(
                        "%s is still bound %d ms after losetup --detach", device, HARNESS_TIMEOUT_MS);
}

/* One entry of ListDevices, looked up by device. */
typedef struct DeviceEntry {
        bool found;
        char *backing_file;
        guint64 offset, size_limit;
        guint32 sector_size;
        gboolean read_only, autoclear, managed;
        guint32 owner_uid;
} DeviceEntry;

static void device_entry_clear(DeviceEntry *e)
{
        g_free(e->backing_file);
        memset(e, 0, sizeof(*e));
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DeviceEntry, device_entry_clear)

static void list_device(GDBusConnection *c, const char *device, DeviceEntry *ret)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) list = harness_list_devices(c, &error);
        GVariantIter it;
        const char *dev, *object, *backing;
        DeviceEntry e = { 0 };

        harness_assert_no_error(error);
        *ret = e;
        if (!list)
                return;
        g_variant_iter_init(&it, list);
        while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &dev, &object, &backing, &e.offset, &e.size_limit,
                &e.sector_size, &e.read_only, &e.autoclear, &e.managed, &e.owner_uid))
                if (g_str_equal(dev, device)) {
                        g_autofree char *expected_object = object_path_of(device);
                        g_assert_cmpstr(object, ==, expected_object);
                        e.found = true;
                        e.backing_file = g_strdup(backing);
                        *ret = e;
                        return;
                }
}

/* Runs the default main context until pred(data) holds or timeout_ms passed; returns pred's last answer. */
typedef bool (*Predicate)(gconstpointer data);

static gboolean flag_set(gpointer data)
{
        *(bool *)data = true;
        return G_SOURCE_REMOVE;
}

static bool wait_until(Predicate pred, gconstpointer data, int timeout_ms)
{
        bool timed_out = false;
        guint timer = g_timeout_add((guint)timeout_ms, flag_set, &timed_out);

        while (!pred(data) && !timed_out)
                g_main_context_iteration(NULL, TRUE);
        if (!timed_out)
                g_source_remove(timer);
        return pred(data);
}

/* ---------------------------------------------------------------------------------------------------- */
/* What loopd says on the bus, as one client's signal subscription receives it */

typedef struct Event {
        char *name; /* the signal's member */
        char *a; /* Manager signals: the first argument; the others: the object path */
        char *b; /* Manager signals: the second argument; PropertiesChanged: the property names, ","-joined
                  */
        GVariant *data; /* InterfacesAdded: a{sa{sv}}; PropertiesChanged: the changed a{sv} */
} Event;

static void event_free(gpointer p)
{
        Event *e = p;

        g_free(e->name);
        g_free(e->a);
        g_free(e->b);
        if (e->data)
                g_variant_unref(e->data);
        g_free(e);
}

typedef struct EventLog {
        GDBusConnection *c;
        guint subscription;
        GPtrArray *events;
        guint mark; /* events before this index are ignored by the queries */
        char *image; /* see event_log_scope() */
} EventLog;

static void on_loopd_signal(GDBusConnection *c, const char *sender, const char *path, const char *interface,
        const char *member, GVariant *params, gpointer data)
{
        EventLog *log = data;
        Event *e = g_new0(Event, 1);

        e->name = g_strdup(member);
        if (g_str_equal(interface, LOOPD_MANAGER_INTERFACE) &&
                (g_variant_is_of_type(params, G_VARIANT_TYPE("(ss)")) ||
                        g_variant_is_of_type(params, G_VARIANT_TYPE("(so)")))) {
                g_autoptr(GVariant) a = g_variant_get_child_value(params, 0);
                g_autoptr(GVariant) b = g_variant_get_child_value(params, 1);
                e->a = g_variant_dup_string(a, NULL);
                e->b = g_variant_dup_string(b, NULL);
        } else if (g_str_equal(interface, OBJECT_MANAGER_INTERFACE) &&
                g_str_equal(member, "InterfacesAdded") &&
                g_variant_is_of_type(params, G_VARIANT_TYPE("(oa{sa{sv}})"))) {
                g_variant_get(params, "(o@a{sa{sv}})", &e->a, &e->data);
        } else if (g_str_equal(interface, OBJECT_MANAGER_INTERFACE) &&
                g_str_equal(member, "InterfacesRemoved") &&
                g_variant_is_of_type(params, G_VARIANT_TYPE("(oas)"))) {
                g_autofree const char **names = NULL;
                g_variant_get(params, "(o^a&s)", &e->a, &names);
                e->b = g_strjoinv(",", (char **)names);
        } else if (g_str_equal(interface, PROPERTIES_INTERFACE) &&
                g_str_equal(member, "PropertiesChanged") &&
                g_variant_is_of_type(params, G_VARIANT_TYPE("(sa{sv}as)"))) {
                g_autoptr(GString) names = g_string_new(NULL);
                g_autofree const char **invalidated = NULL;
                const char *iface, *name;
                GVariantIter it;

                g_variant_get(params, "(&s@a{sv}^a&s)", &iface, &e->data, &invalidated);
                g_variant_iter_init(&it, e->data);
                while (g_variant_iter_next(&it, "{&sv}", &name, NULL))
                        g_string_append_printf(names, "%s%s", names->len ? "," : "", name);
                for (size_t i = 0; invalidated[i]; i++)
                        g_string_append_printf(names, "%s%s", names->len ? "," : "", invalidated[i]);
                e->a = g_strdup(path);
                e->b = g_strdup(names->str);
        } else {
                event_free(e);
                return;
        }
        g_ptr_array_add(log->events, e);
}

/* Subscribes to everything org.loopd1 emits, on connection c. The match rule is in place when this returns
 * (GDBus sends AddMatch before any later message of c; the test's own calls go out on c or after it). */
static EventLog *event_log_new(GDBusConnection *c)
{
        EventLog *log = g_new0(EventLog, 1);
        g_autoptr(GError) error = NULL;

        log->c = g_object_ref(c);
        log->events = g_ptr_array_new_with_free_func(event_free);
        log->subscription = g_dbus_connection_signal_subscribe(c, LOOPD_BUS_NAME, NULL, NULL, NULL, NULL,
                G_DBUS_SIGNAL_FLAGS_NONE, on_loopd_signal, log, NULL);
        /* A round trip on c: the bus has handled AddMatch when the reply comes. */
        g_autoptr(GVariant) id = g_dbus_connection_call_sync(c, "org.freedesktop.DBus",
                "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", NULL, G_VARIANT_TYPE("(s)"),
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        return log;
}

static void event_log_free(EventLog *log)
{
        if (!log)
                return;
        g_dbus_connection_signal_unsubscribe(log->c, log->subscription);
        g_ptr_array_unref(log->events);
        g_object_unref(log->c);
        g_free(log->image);
        g_free(log);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(EventLog, event_log_free)

static void event_log_mark(EventLog *log)
{
        log->mark = log->events->len;
}

static bool is_manager_signal(const char *name)
{
        return g_str_equal(name, "DeviceAttached") || g_str_equal(name, "DeviceDetached") ||
                g_str_equal(name, "PartitionAdded") || g_str_equal(name, "PartitionRemoved") ||
                g_str_equal(name, "Mounted") || g_str_equal(name, "Unmounted");
}

/* Is e about device ("/dev/loopN") or one of its partitions? Other loop devices on the machine (other
 * users' and other tests') are reported on the same bus and are none of this test's business. */
static bool event_is_about(const Event *e, const char *device)
{
        g_autofree char *path = object_path_of(device);
        g_autofree char *partition_prefix = g_strconcat(device, "p", NULL);

        if (g_str_equal(e->name, "Mounted") || g_str_equal(e->name, "Unmounted"))
                return g_str_equal(e->a, device) || g_str_has_prefix(e->a, partition_prefix);
        if (is_manager_signal(e->name))
                return g_str_equal(e->a, device);
        return g_str_equal(e->a, path);
}

static bool event_added_backing(const Event *e, const char *image)
{
        g_autoptr(GVariant) props = NULL;
        const char *backing = NULL;

        if (!g_str_equal(e->name, "InterfacesAdded") || !e->data)
                return false;
        props = g_variant_lookup_value(e->data, LOOPD_DEVICE_INTERFACE, G_VARIANT_TYPE("a{sv}"));
        return props && g_variant_lookup(props, "BackingFile", "&s", &backing) &&
                g_str_equal(backing, image);
}

/* Is event index about the test's device? When the log has an image set (event_log_scope()), only
 * those of the device backed by it, from its InterfacesAdded to its DeviceDetached. Numbers are recycled at
 * once on a busy machine: the same loopN may be someone else's just before and just after. */
static bool event_in_scope(EventLog *log, guint index, const char *device)
{
        guint start = G_MAXUINT, end = G_MAXUINT;

        if (!event_is_about(log->events->pdata[index], device))
                return false;
        if (!log->image)
                return true;
        for (guint i = 0; i < log->events->len && start == G_MAXUINT; i++)
                if (event_is_about(log->events->pdata[i], device) &&
                        event_added_backing(log->events->pdata[i], log->image))
                        start = i;
        for (guint i = start; start != G_MAXUINT && i < log->events->len && end == G_MAXUINT; i++) {
                Event *e = log->events->pdata[i];
                if (g_str_equal(e->name, "DeviceDetached") && event_is_about(e, device))
                        end = i;
        }
        return start != G_MAXUINT && index >= start && index <= end;
}

/* From now on, only the device backed by image (NULL: any device) is the test's. */
static void event_log_scope(EventLog *log, const char *image)
{
        g_free(log->image);
        log->image = g_strdup(image);
}

/* "Name arg" lines for the Manager signals about device (in scope, since the mark). */
static GPtrArray *manager_events(EventLog *log, const char *device)
{
        GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

        for (guint i = log->mark; i < log->events->len; i++) {
                Event *e = log->events->pdata[i];

                if (!is_manager_signal(e->name) || !event_in_scope(log, i, device))
                        continue;
                if (g_str_equal(e->name, "DeviceAttached") || g_str_equal(e->name, "DeviceDetached"))
                        g_ptr_array_add(out, g_strdup_printf("%s %s %s", e->name, e->a, e->b));
                else
                        g_ptr_array_add(out, g_strdup_printf("%s %s", e->name, e->b));
        }
        return out;
}

typedef struct EventQuery {
        EventLog *log;
        const char *device;
        const char *name;
        const char *arg; /* NULL: any; else the event's b (Manager signals) */
        guint n;
} EventQuery;

static guint event_count(const EventQuery *q)
{
        guint n = 0;

        for (guint i = q->log->mark; i < q->log->events->len; i++) {
                Event *e = q->log->events->pdata[i];
                if (g_str_equal(e->name, q->name) && (!q->arg || g_strcmp0(e->b, q->arg) == 0) &&
                        event_in_scope(q->log, i, q->device))
                        n++;
        }
        return n;
}

static bool event_query_done(gconstpointer data)
{
        const EventQuery *q = data;
        return event_count(q) >= q->n;
}

/* Waits until the log holds n events name (with second argument arg, unless NULL) about device. */
static bool wait_event(
        EventLog *log, const char *device, const char *name, const char *arg, guint n, int timeout_ms)
{
        EventQuery q = { log, device, name, arg, n };

        if (wait_until(event_query_done, &q, timeout_ms))
                return true;
        /* What there was instead, for the log. */
        for (guint i = 0; i < log->events->len; i++) {
                Event *e = log->events->pdata[i];
                if (event_is_about(e, device))
                        g_test_message("event %u%s: %s %s %s", i,
                                event_in_scope(log, i, device) ? "" : " (not ours)", e->name, e->a,
                                e->b ? e->b : "");
        }
        g_test_fail_printf("no %u× %s %s about %s within %d ms (saw %u)", n, name, arg ? arg : "", device,
                timeout_ms, event_count(&q));
        return false;
}

/* The last event name about device (in scope, since the mark), or NULL. */
static Event *last_event(EventLog *log, const char *device, const char *name)
{
        for (guint i = log->events->len; i > log->mark; i--) {
                Event *e = log->events->pdata[i - 1];
                if (g_str_equal(e->name, name) && event_in_scope(log, i - 1, device))
                        return e;
        }
        return NULL;
}

/* Checks that got is want, except that the lines within one group (want's entries separated by NULL) may
 * come in any order among themselves: loopd reports partitions that changed together in table order. */
static void assert_event_groups(GPtrArray *got, const char *const *want, const char *who)
{
        g_autoptr(GString) got_text = g_string_new(NULL);
        guint pos = 0;
        bool ok = true;

        for (guint i = 0; i < got->len; i++)
                g_string_append_printf(got_text, "\n  %s", (char *)got->pdata[i]);

        for (const char *const *group = want; *group && ok;) {
                const char *const *end = group;
                while (*end)
                        end++;
                guint size = (guint)(end - group);
                if (pos + size > got->len) {
                        ok = false;
                        break;
                }
                for (const char *const *w = group; *w && ok; w++) {
                        bool found = false;
                        for (guint i = pos; i < pos + size; i++)
                                found = found || g_str_equal(got->pdata[i], *w);
                        ok = found;
                }
                pos += size;
                group = end + 1;
        }
        if (ok && pos != got->len)
                ok = false;
        if (!ok) {
                g_autoptr(GString) want_text = g_string_new(NULL);
                for (const char *const *w = want; *w || *(w + 1); w++)
                        g_string_append_printf(want_text, "\n  %s", *w ? *w : "--");
                g_test_fail_printf("%s: events out of order or missing.\nexpected:%s\ngot:%s", who,
                        want_text->str, got_text->str);
        }
}

/* Is got[i..i+n) the lines of set in any order? */
static bool lines_are(GPtrArray *got, guint i, const char *const *set, guint n)
{
        if (i + n > got->len)
                return false;
        for (guint j = 0; j < n; j++) {
                bool found = false;
                for (guint k = 0; k < n && !found; k++)
                        found = g_str_equal(got->pdata[i + k], set[j]);
                if (!found)
                        return false;
        }
        return true;
}

/* With udevd running, a close after writing to the disk makes udevd re-read its partition table; a kernel
 * without a parser for it then drops the partitions, and loopd puts them back ("Restored" in its log). Each
 * such cycle is a correct pair of events (removed, added) the test did not cause: takes out up to max of
 * them. As they equal the test's own partx cycle, which one is taken out does not matter. */
static guint collapse_restores(
        GPtrArray *got, const char *const *removed, const char *const *added, guint n, guint max)
{
        guint done = 0, cycles = 0;

        /* The test's own cycle stays. */
        for (guint i = 0; i < got->len; i++)
                if (lines_are(got, i, removed, n) && lines_are(got, i + n, added, n))
                        cycles++;
        max = MIN(max, cycles > 0 ? cycles - 1 : 0);
        for (guint i = 0; done < max && i < got->len;)
                if (lines_are(got, i, removed, n) && lines_are(got, i + n, added, n)) {
                        g_ptr_array_remove_range(got, i, 2 * n);
                        done++;
                } else
                        i++;
        return done;
}

static guint count_substrings(const char *haystack, const char *needle)
{
        guint n = 0;

        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* ---------------------------------------------------------------------------------------------------- */
/* `loopctl monitor --json` as a child process of the test */

typedef struct Monitor {
        GSubprocess *process;
        GDataInputStream *out;
        GCancellable *cancel;
        GPtrArray *lines;
        bool eof;
        char *err_path;
} Monitor;

static void monitor_read_next(Monitor *m);

static void monitor_on_line(GObject *source, GAsyncResult *result, gpointer data)
{
        g_autoptr(GError) error = NULL;
        gsize length;
        char *line =
                g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(source), result, &length, &error);
        Monitor *m;

        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
                return; /* data is gone */
        m = data;
        if (!line) {
                m->eof = true;
                return;
        }
        g_ptr_array_add(m->lines, line);
        monitor_read_next(m);
}

static void monitor_read_next(Monitor *m)
{
        g_data_input_stream_read_line_async(m->out, G_PRIORITY_DEFAULT, m->cancel, monitor_on_line, m);
}

/* Starts `loopctl monitor --json` as user and returns once it has subscribed to loopd's signals (its
 * AddMatch for the last of them, Unmounted, has reached the bus). */
static Monitor *monitor_start(Harness *h, const char *user)
{
        g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        const char *const add_match[] = {
                "type='method_call',interface='org.freedesktop.DBus',member='AddMatch'", NULL
        };
        g_autoptr(HarnessBusMonitor) spy = harness_bus_monitor_new(h, add_match);
        g_autoptr(GError) error = NULL;
        g_autofree char *reuid = g_strdup_printf("--reuid=%u", (unsigned)harness_uid_of(user));
        g_autofree char *regid = g_strdup_printf("--regid=%u", (unsigned)harness_gid_of(user));
        const char *loopctl = g_getenv("LOOPCTL_BINARY");
        Monitor *m = g_new0(Monitor, 1);

        m->lines = g_ptr_array_new_with_free_func(g_free);
        m->cancel = g_cancellable_new();
        m->err_path = g_build_filename(h->tmpdir, "monitor.err", NULL);
        if (!loopctl) {
                g_test_fail_printf("LOOPCTL_BINARY is not set (run the suite with meson test)");
                return m;
        }
        g_subprocess_launcher_setenv(launcher, "DBUS_SYSTEM_BUS_ADDRESS", h->bus_address, TRUE);
        g_subprocess_launcher_set_stderr_file_path(launcher, m->err_path);
        m->process = g_subprocess_launcher_spawn(launcher, &error, "setpriv", reuid, regid, "--clear-groups",
                loopctl, "monitor", "--json", NULL);
        harness_assert_no_error(error);
        if (!m->process)
                return m;
        m->out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(m->process));
        monitor_read_next(m);

        if (!harness_bus_monitor_wait(
                    spy, "org.freedesktop.DBus.AddMatch", "member='Unmounted'", HARNESS_TIMEOUT_MS))
                g_test_fail_printf("loopctl monitor did not subscribe within %d ms", HARNESS_TIMEOUT_MS);
        return m;
}

/* Parses a monitor line; NULL (and the test fails) unless it is a JSON object with a string "event". */
static JsonObject *monitor_line_object(const char *line, JsonParser *parser)
{
        g_autoptr(GError) error = NULL;
        JsonNode *root;

        if (!json_parser_load_from_data(parser, line, -1, &error)) {
                g_test_fail_printf("loopctl monitor --json printed a line that is not JSON: %s (%s)", line,
                        error->message);
                return NULL;
        }
        root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root) ||
                !json_object_has_member(json_node_get_object(root), "event")) {
                g_test_fail_printf("loopctl monitor --json printed a line without \"event\": %s", line);
                return NULL;
        }
        return json_node_get_object(root);
}

static const char *json_string_or_empty(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
                return "";
        return json_node_get_string(n);
}

/* The monitor's lines about device as "Name arg" (the same shape as manager_events()), all of them: the
 * number may have been someone else's device before and after the test's. */
static GPtrArray *monitor_events(Monitor *m, const char *device)
{
        GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *partition_prefix = g_strconcat(device, "p", NULL);

        for (guint i = 0; i < m->lines->len; i++) {
                g_autoptr(JsonParser) parser = json_parser_new();
                JsonObject *o = monitor_line_object(m->lines->pdata[i], parser);
                const char *event;

                if (!o)
                        continue;
                event = json_string_or_empty(o, "event");
                if (g_str_equal(event, "DeviceAttached") || g_str_equal(event, "DeviceDetached")) {
                        if (g_str_equal(json_string_or_empty(o, "device"), device))
                                g_ptr_array_add(out,
                                        g_strdup_printf("%s %s %s", event, device,
                                                json_string_or_empty(o, "object")));
                } else if (g_str_equal(event, "PartitionAdded") || g_str_equal(event, "PartitionRemoved")) {
                        if (g_str_equal(json_string_or_empty(o, "device"), device))
                                g_ptr_array_add(out,
                                        g_strdup_printf(
                                                "%s %s", event, json_string_or_empty(o, "partition")));
                } else if (g_str_equal(event, "Mounted") || g_str_equal(event, "Unmounted")) {
                        const char *node = json_string_or_empty(o, "node");
                        if (g_str_equal(node, device) || g_str_has_prefix(node, partition_prefix))
                                g_ptr_array_add(out,
                                        g_strdup_printf(
                                                "%s %s", event, json_string_or_empty(o, "mount_point")));
                } else
                        g_test_fail_printf("loopctl monitor --json printed an unknown event: %s",
                                (char *)m->lines->pdata[i]);
        }
        return out;
}

/* Does haystack hold needle as a contiguous run? */
static bool has_run(GPtrArray *haystack, GPtrArray *needle)
{
        for (guint i = 0; needle->len > 0 && i + needle->len <= haystack->len; i++) {
                guint j = 0;
                while (j < needle->len && g_str_equal(haystack->pdata[i + j], needle->pdata[j]))
                        j++;
                if (j == needle->len)
                        return true;
        }
        return false;
}

typedef struct LineQuery {
        Monitor *m;
        const char *device;
        GPtrArray *want;
} LineQuery;

static bool monitor_printed(gconstpointer data)
{
        const LineQuery *q = data;
        g_autoptr(GPtrArray) events = monitor_events(q->m, q->device);

        return q->m->eof || has_run(events, q->want);
}

static bool monitor_exited(gconstpointer data)
{
        const Monitor *m = data;
        return g_subprocess_get_identifier((GSubprocess *)m->process) == NULL;
}

static void on_monitor_waited(GObject *source, GAsyncResult *result, gpointer data)
{
        (void)g_subprocess_wait_finish(G_SUBPROCESS(source), result, NULL);
}

/* SIGTERM, then waits for a clean exit 0: the monitor's documented way to end. */
static void monitor_stop(Monitor *m)
{
        g_autofree char *err = NULL;

        if (!m->process)
                return;
        if (g_subprocess_get_identifier(m->process)) {
                g_subprocess_send_signal(m->process, SIGTERM);
                g_subprocess_wait_async(m->process, NULL, on_monitor_waited, NULL);
                if (!wait_until(monitor_exited, m, HARNESS_TIMEOUT_MS)) {
                        g_test_fail_printf(
                                "loopctl monitor did not exit within %d ms of SIGTERM", HARNESS_TIMEOUT_MS);
                        g_subprocess_force_exit(m->process);
                        (void)g_subprocess_wait(m->process, NULL, NULL);
                        return;
                }
        }
        (void)g_file_get_contents(m->err_path, &err, NULL, NULL);
        if (!g_subprocess_get_if_exited(m->process) || g_subprocess_get_exit_status(m->process) != 0)
                g_test_fail_printf("loopctl monitor did not exit 0 on SIGTERM; stderr: %s", err ? err : "");
}

static void monitor_free(Monitor *m)
{
        if (!m)
                return;
        if (m->process && g_subprocess_get_identifier(m->process)) {
                g_subprocess_force_exit(m->process);
                (void)g_subprocess_wait(m->process, NULL, NULL);
        }
        g_cancellable_cancel(m->cancel);
        /* Let the cancelled read report itself before its stream goes. */
        while (g_main_context_iteration(NULL, FALSE))
                ;
        g_clear_object(&m->out);
        g_clear_object(&m->process);
        g_clear_object(&m->cancel);
        g_ptr_array_unref(m->lines);
        g_free(m->err_path);
        g_free(m);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Monitor, monitor_free)

/* ---------------------------------------------------------------------------------------------------- */
/* A loopd of the test's own, for kill -9 (the harness's loopd must end with a clean SIGTERM) */

typedef struct OwnLoopd {
        GSubprocess *process;
        char *log_path;
} OwnLoopd;

static bool own_loopd_start(Harness *h, OwnLoopd *l)
{
        l->log_path = g_build_filename(h->tmpdir, "loopd-killed.log", NULL);
        l->process = harness_start_own_loopd(h, l->log_path);
        return l->process != NULL;
}

/* kill -9, reaped; returns once the bus has seen it go. */
static bool own_loopd_kill(Harness *h, OwnLoopd *l)
{
        if (!l->process)
                return false;
        g_subprocess_send_signal(l->process, SIGKILL);
        g_assert_true(g_subprocess_wait(l->process, NULL, NULL));
        g_assert_true(g_subprocess_get_if_signaled(l->process));
        g_assert_cmpint(g_subprocess_get_term_sig(l->process), ==, SIGKILL);
        g_clear_object(&l->process);
        if (harness_wait_for_name(h->bus, LOOPD_BUS_NAME, false, HARNESS_TIMEOUT_MS))
                return true;
        g_test_fail_printf("%s did not go away within %d ms", LOOPD_BUS_NAME, HARNESS_TIMEOUT_MS);
        return false;
}

static void own_loopd_clear(OwnLoopd *l)
{
        if (l->process) {
                g_subprocess_force_exit(l->process);
                (void)g_subprocess_wait(l->process, NULL, NULL);
                g_clear_object(&l->process);
        }
        if (l->log_path && g_test_failed()) {
                g_autofree char *log = NULL;
                if (g_file_get_contents(l->log_path, &log, NULL, NULL))
                        g_test_message("log of the loopd that was killed:\n%s", log);
        }
        g_clear_pointer(&l->log_path, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OwnLoopd, own_loopd_clear)

static char *state_record_path(Harness *h, const char *device)
{
        return g_strdup_printf("%s/devices/%s", h->state_dir, device + strlen("/dev/"));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Tests */

/* Attach, partitions removed and added again by partx (another tool), mount, unmount, detach: every
 * subscriber sees the same events, in the order they happened. Two independent subscribers: a GDBus
 * signal subscription of another user and `loopctl monitor --json` of the owner. */
static void test_events_in_order(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_gpt_image(h, "events.img", "WATCHP1");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *other = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *mount_point = NULL, *path = NULL, *p1 = NULL, *p2 = NULL;

        REQUIRE(owner && other);
        g_autoptr(EventLog) log = event_log_new(other);
        event_log_scope(log, image);
        g_autoptr(Monitor) monitor = monitor_start(h, HARNESS_USER_A);
        REQUIRE(monitor->process);

        REQUIRE((device = attach(owner, image)));
        harness_assert_no_error(error);
        path = object_path_of(device);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        wait_event(log, device, "PartitionAdded", NULL, 2, HARNESS_TIMEOUT_MS);

        /* Another tool takes the partitions away and puts them back. */
        partx_all(device, 2, false);
        wait_event(log, device, "PartitionRemoved", NULL, 2, HARNESS_TIMEOUT_MS);
        partx_all(device, 2, true);
        wait_event(log, device, "PartitionAdded", NULL, 4, HARNESS_TIMEOUT_MS);

        mount_point = harness_mount(owner, p1, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(mount_point);
        wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        g_assert_true(harness_unmount(owner, mount_point, &error));
        harness_assert_no_error(error);
        wait_event(log, device, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);

        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
        wait_event(log, device, "DeviceDetached", NULL, 1, HARNESS_TIMEOUT_MS);

        g_autofree char *attached = g_strdup_printf("DeviceAttached %s %s", device, path);
        g_autofree char *detached = g_strdup_printf("DeviceDetached %s %s", device, path);
        g_autofree char *added1 = g_strdup_printf("PartitionAdded %s", p1);
        g_autofree char *added2 = g_strdup_printf("PartitionAdded %s", p2);
        g_autofree char *removed1 = g_strdup_printf("PartitionRemoved %s", p1);
        g_autofree char *removed2 = g_strdup_printf("PartitionRemoved %s", p2);
        g_autofree char *mounted = g_strdup_printf("Mounted %s", mount_point);
        g_autofree char *unmounted = g_strdup_printf("Unmounted %s", mount_point);
        const char *const want[] = { attached, NULL, added1, added2, NULL, removed1, removed2, NULL, added1,
                added2, NULL, mounted, NULL, unmounted, NULL, removed1, removed2, NULL, detached, NULL,
                NULL };

        g_autoptr(GPtrArray) got = manager_events(log, device);
        g_autoptr(GPtrArray) expected_got = g_ptr_array_new_with_free_func(g_free);
        for (guint i = 0; i < got->len; i++)
                g_ptr_array_add(expected_got, g_strdup(got->pdata[i]));
        if (h->udev) {
                g_autofree char *loopd_log = harness_loopd_log(h);
                const char *removed[] = { removed1, removed2 }, *added[] = { added1, added2 };
                guint restores = count_substrings(loopd_log, "Restored ");
                guint collapsed = collapse_restores(expected_got, removed, added, 2, restores);
                if (collapsed > 0)
                        g_test_message(
                                "udevd re-read the partition table %u time(s), loopd restored the partitions",
                                collapsed);
        }
        assert_event_groups(expected_got, want, "GDBus subscription");

        /* The Mounted/Unmounted signals name the partition node. */
        Event *e = last_event(log, device, "Mounted");
        g_assert_nonnull(e);
        if (e)
                g_assert_cmpstr(e->a, ==, p1);

        /* The monitor printed the same, one JSON object per line. */
        LineQuery q = { monitor, device, got };
        if (!wait_until(monitor_printed, &q, HARNESS_TIMEOUT_MS)) {
                g_autoptr(GPtrArray) printed = monitor_events(monitor, device);
                g_autoptr(GString) text = g_string_new(NULL);
                for (guint i = 0; i < printed->len; i++)
                        g_string_append_printf(text, "\n  %s", (char *)printed->pdata[i]);
                g_test_fail_printf(
                        "loopctl monitor --json did not print the same events; it printed:%s", text->str);
        }
        monitor_stop(monitor);

        /* The object went with the device. */
        g_assert_nonnull(last_event(log, device, "InterfacesRemoved"));
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
}

/* A device another tool (losetup, as root) sets up is an object of its own at once: unmanaged, owned by
 * nobody, with the kernel's values; it goes when that tool detaches it. */
static void test_losetup_device_appears_unmanaged(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "outside.img");
        GDBusConnection *user = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *path = NULL, *qimage = g_shell_quote(image);

        REQUIRE(user);
        image_create(image, 32 * MiB);
        g_autoptr(EventLog) log = event_log_new(user);
        event_log_scope(log, image);

        gint64 start = g_get_monotonic_time();
        device = g_strstrip(
                test_sh("losetup --find --show --read-only --offset 1048576 --sector-size 4096 %s", qimage));
        REQUIRE(g_str_has_prefix(device, "/dev/loop"));
        path = object_path_of(device);

        wait_event(log, device, "InterfacesAdded", NULL, 1, APPEAR_DEADLINE_MS);
        wait_event(log, device, "DeviceAttached", NULL, 1, APPEAR_DEADLINE_MS);
        g_test_message("the object appeared %" G_GINT64_FORMAT " ms after losetup started",
                (g_get_monotonic_time() - start) / 1000);

        /* InterfacesAdded carries the properties. */
        Event *added = last_event(log, device, "InterfacesAdded");
        if (added) {
                g_autoptr(GVariant) props =
                        g_variant_lookup_value(added->data, LOOPD_DEVICE_INTERFACE, NULL);
                const char *s;
                guint64 t;
                guint32 u;
                gboolean b;

                REQUIRE(props);
                g_assert_true(g_variant_lookup(props, "Device", "&s", &s));
                g_assert_cmpstr(s, ==, device);
                g_assert_true(g_variant_lookup(props, "BackingFile", "&s", &s));
                g_assert_cmpstr(s, ==, image);
                g_assert_true(g_variant_lookup(props, "Offset", "t", &t));
                g_assert_cmpuint(t, ==, 1048576);
                g_assert_true(g_variant_lookup(props, "SizeLimit", "t", &t));
                g_assert_cmpuint(t, ==, 0);
                g_assert_true(g_variant_lookup(props, "SectorSize", "u", &u));
                g_assert_cmpuint(u, ==, 4096);
                g_assert_true(g_variant_lookup(props, "ReadOnly", "b", &b));
                g_assert_true(b);
                g_assert_true(g_variant_lookup(props, "Autoclear", "b", &b));
                g_assert_false(b);
                g_assert_true(g_variant_lookup(props, "Managed", "b", &b));
                g_assert_false(b);
                g_assert_true(g_variant_lookup(props, "OwnerUID", "u", &u));
                g_assert_cmpuint(u, ==, 0);
                g_autoptr(GVariant) parts = g_variant_lookup_value(
                        props, "Partitions", G_VARIANT_TYPE("a" LOOPD_PARTITION_STRUCT));
                g_assert_nonnull(parts);
        }

        /* The object answers Get as any user, and ListDevices agrees. */
        g_autoptr(GVariant) managed = g_dbus_connection_call_sync(user, LOOPD_BUS_NAME, path,
                PROPERTIES_INTERFACE, "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, "Managed"),
                G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (managed) {
                g_autoptr(GVariant) v = NULL;
                g_variant_get(managed, "(v)", &v);
                g_assert_false(g_variant_get_boolean(v));
        }
        g_auto(DeviceEntry) entry = { 0 };
        list_device(user, device, &entry);
        g_assert_true(entry.found);
        g_assert_false(entry.managed);
        g_assert_cmpstr(entry.backing_file, ==, image);

        /* losetup -d: the object and the device go within the same second. */
        g_autofree char *qdevice = g_shell_quote(device);
        g_free(test_sh("losetup --detach %s", qdevice));
        wait_event(log, device, "InterfacesRemoved", NULL, 1, APPEAR_DEADLINE_MS);
        wait_event(log, device, "DeviceDetached", NULL, 1, APPEAR_DEADLINE_MS);
        Event *removed = last_event(log, device, "InterfacesRemoved");
        if (removed) {
                /* Every interface the object had (the standard ones too), or GDBus's ObjectManager client
                 * would keep the object. */
                g_auto(GStrv) names = g_strsplit(removed->b, ",", -1);
                g_assert_true(g_strv_contains((const char *const *)names, LOOPD_DEVICE_INTERFACE));
                g_assert_true(g_strv_contains((const char *const *)names, PROPERTIES_INTERFACE));
        }

        /* No such object any more, unless someone else bound the number meanwhile: then it is not ours. */
        g_autoptr(GVariant) gone = g_dbus_connection_call_sync(user, LOOPD_BUS_NAME, path,
                PROPERTIES_INTERFACE, "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, "BackingFile"),
                G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        if (gone) {
                g_autoptr(GVariant) v = NULL;
                g_variant_get(gone, "(v)", &v);
                g_assert_cmpstr(g_variant_get_string(v, NULL), !=, image);
        }
}

/* GDBus's own ObjectManager client (a client nobody here wrote) sees the objects, their properties and their
 * changes. */
/* Does the client have an org.loopd1.Device at the path with BackingFile image? (The number may have been
 * someone else's device a moment ago, or be again.) */
typedef struct OmQuery {
        GDBusObjectManager *om;
        const char *path;
        const char *image;
} OmQuery;

static bool om_has_image(gconstpointer data)
{
        const OmQuery *q = data;
        g_autoptr(GDBusInterface) iface =
                g_dbus_object_manager_get_interface(q->om, q->path, LOOPD_DEVICE_INTERFACE);
        g_autoptr(GVariant) backing =
                iface ? g_dbus_proxy_get_cached_property(G_DBUS_PROXY(iface), "BackingFile") : NULL;

        return backing && g_str_equal(g_variant_get_string(backing, NULL), q->image);
}

static bool om_lacks_image(gconstpointer data)
{
        return !om_has_image(data);
}

/* The paths GDBusObjectManagerClient announced with object-added / object-removed. */
static void on_om_object_added(GDBusObjectManager *om, GDBusObject *object, gpointer data)
{
        g_ptr_array_add(data, g_strconcat("+", g_dbus_object_get_object_path(object), NULL));
}

static void on_om_object_removed(GDBusObjectManager *om, GDBusObject *object, gpointer data)
{
        g_ptr_array_add(data, g_strconcat("-", g_dbus_object_get_object_path(object), NULL));
}

/* The cached Partitions of proxy: the mount point of partition number, or NULL when there is no such entry.
 */
static char *proxy_partition_mount_point(GDBusProxy *proxy, guint number)
{
        g_autoptr(GVariant) parts = g_dbus_proxy_get_cached_property(proxy, "Partitions");
        GVariantIter it;
        const char *node, *type, *name, *fstype, *label, *uuid, *mount_point;
        guint32 n;
        guint64 offset, size;

        if (!parts)
                return NULL;
        g_variant_iter_init(&it, parts);
        while (g_variant_iter_next(&it, "(&sutt&s&s&s&s&s&s)", &node, &n, &offset, &size, &type, &name,
                &fstype, &label, &uuid, &mount_point))
                if (n == number)
                        return g_strdup(mount_point);
        return NULL;
}

typedef struct MountPointQuery {
        GDBusProxy *proxy;
        guint number;
        const char *want;
} MountPointQuery;

static bool proxy_mount_point_is(gconstpointer data)
{
        const MountPointQuery *q = data;
        g_autofree char *mp = proxy_partition_mount_point(q->proxy, q->number);
        return g_strcmp0(mp, q->want) == 0;
}

static void check_proxy_properties(GDBusProxy *proxy, const char *device, const char *image, uid_t owner)
{
        g_autoptr(GVariant) dev = g_dbus_proxy_get_cached_property(proxy, "Device");
        g_autoptr(GVariant) backing = g_dbus_proxy_get_cached_property(proxy, "BackingFile");
        g_autoptr(GVariant) managed = g_dbus_proxy_get_cached_property(proxy, "Managed");
        g_autoptr(GVariant) uid = g_dbus_proxy_get_cached_property(proxy, "OwnerUID");
        g_autoptr(GVariant) sector = g_dbus_proxy_get_cached_property(proxy, "SectorSize");
        g_autoptr(GVariant) ro = g_dbus_proxy_get_cached_property(proxy, "ReadOnly");
        g_autoptr(GVariant) offset = g_dbus_proxy_get_cached_property(proxy, "Offset");
        g_autoptr(GVariant) parts = g_dbus_proxy_get_cached_property(proxy, "Partitions");

        g_assert_nonnull(dev);
        g_assert_nonnull(backing);
        g_assert_nonnull(managed);
        g_assert_nonnull(uid);
        g_assert_nonnull(sector);
        g_assert_nonnull(ro);
        g_assert_nonnull(offset);
        g_assert_nonnull(parts);
        if (!dev || !backing || !managed || !uid || !sector || !ro || !offset || !parts)
                return;
        g_assert_cmpstr(g_variant_get_string(dev, NULL), ==, device);
        g_assert_cmpstr(g_variant_get_string(backing, NULL), ==, image);
        g_assert_true(g_variant_get_boolean(managed));
        g_assert_cmpuint(g_variant_get_uint32(uid), ==, owner);
        g_assert_cmpuint(g_variant_get_uint32(sector), ==, 512);
        g_assert_false(g_variant_get_boolean(ro));
        g_assert_cmpuint(g_variant_get_uint64(offset), ==, 0);
        g_assert_cmpstr(g_variant_get_type_string(parts), ==, "a" LOOPD_PARTITION_STRUCT);

        /* p1 with the filesystem blkid finds there, p2 empty. */
        g_autoptr(GHashTable) blkid = oracle_blkid(image, 1 * MiB);
        GVariantIter it;
        const char *node, *type, *name, *fstype, *label, *uuid, *mount_point;
        guint32 n;
        guint64 off, size;
        guint seen = 0;
        g_variant_iter_init(&it, parts);
        while (g_variant_iter_next(&it, "(&sutt&s&s&s&s&s&s)", &node, &n, &off, &size, &type, &name, &fstype,
                &label, &uuid, &mount_point)) {
                g_autofree char *want_node = g_strdup_printf("%sp%u", device, n);
                g_assert_cmpstr(node, ==, want_node);
                if (n == 1) {
                        g_assert_cmpuint(off, ==, 1 * MiB);
                        g_assert_cmpuint(size, ==, 16 * MiB);
                        g_assert_cmpstr(fstype, ==, g_hash_table_lookup(blkid, "TYPE"));
                        g_assert_cmpstr(label, ==, g_hash_table_lookup(blkid, "LABEL"));
                        g_assert_cmpstr(uuid, ==, g_hash_table_lookup(blkid, "UUID"));
                }
                seen |= 1u << n;
        }
        g_assert_cmpuint(seen, ==, (1u << 1) | (1u << 2));
}

static void test_gdbus_object_manager_client(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_gpt_image(h, "om.img", "OMP1");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *other = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *path = NULL, *p1 = NULL, *mount_point = NULL;

        REQUIRE(owner && other);
        g_autoptr(GDBusObjectManager) om =
                g_dbus_object_manager_client_new_sync(other, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE,
                        LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, NULL, NULL, NULL, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(om);

        /* The path is known only after Attach; record every addition and removal. */
        g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
        gulong added_id = g_signal_connect(om, "object-added", G_CALLBACK(on_om_object_added), seen);
        gulong removed_id = g_signal_connect(om, "object-removed", G_CALLBACK(on_om_object_removed), seen);

        REQUIRE((device = attach(owner, image)));
        path = object_path_of(device);
        p1 = g_strconcat(device, "p1", NULL);
        OmQuery ours = { om, path, image };
        if (!wait_until(om_has_image, &ours, HARNESS_TIMEOUT_MS))
                g_test_fail_printf("GDBusObjectManagerClient never showed %s backed by %s", path, image);
        g_autoptr(GDBusInterface) iface =
                g_dbus_object_manager_get_interface(om, path, LOOPD_DEVICE_INTERFACE);
        REQUIRE(iface && G_IS_DBUS_PROXY(iface));
        GDBusProxy *proxy = G_DBUS_PROXY(iface);
        check_proxy_properties(proxy, device, image, harness_uid_of(HARNESS_USER_A));
        g_autofree char *plus = g_strconcat("+", path, NULL);
        g_assert_true(g_ptr_array_find_with_equal_func(seen, plus, g_str_equal, NULL));

        /* The manager object itself is not a managed object; the devices are under it. */
        g_autoptr(GDBusObject) manager = g_dbus_object_manager_get_object(om, LOOPD_MANAGER_PATH);
        g_assert_null(manager);

        /* A mount shows in the cached Partitions through PropertiesChanged. */
        mount_point = harness_mount(owner, p1, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(mount_point);
        MountPointQuery q = { proxy, 1, mount_point };
        if (!wait_until(proxy_mount_point_is, &q, HARNESS_TIMEOUT_MS))
                g_test_fail_printf("the cached Partitions never showed the mount point %s", mount_point);

        /* A client that starts now gets the same from GetManagedObjects. */
        g_autoptr(GDBusObjectManager) late =
                g_dbus_object_manager_client_new_sync(owner, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE,
                        LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, NULL, NULL, NULL, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(late);
        g_autoptr(GDBusInterface) late_iface =
                g_dbus_object_manager_get_interface(late, path, LOOPD_DEVICE_INTERFACE);
        REQUIRE(late_iface);
        check_proxy_properties(G_DBUS_PROXY(late_iface), device, image, harness_uid_of(HARNESS_USER_A));
        g_autofree char *late_mp = proxy_partition_mount_point(G_DBUS_PROXY(late_iface), 1);
        g_assert_cmpstr(late_mp, ==, mount_point);

        /* Unmount clears it again. */
        g_assert_true(harness_unmount(owner, mount_point, &error));
        harness_assert_no_error(error);
        q.want = "";
        if (!wait_until(proxy_mount_point_is, &q, HARNESS_TIMEOUT_MS))
                g_test_fail_printf("the cached Partitions still show a mount point after Unmount");

        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
        /* Gone from the client's view (InterfacesRemoved must name every interface the object had, or the
         * client keeps it); the number may hold someone else's device by now, never ours. */
        if (!wait_until(om_lacks_image, &ours, HARNESS_TIMEOUT_MS))
                g_test_fail_printf("GDBusObjectManagerClient still shows %s backed by %s", path, image);
        g_autofree char *minus = g_strconcat("-", path, NULL);
        g_assert_true(g_ptr_array_find_with_equal_func(seen, minus, g_str_equal, NULL));

        g_signal_handler_disconnect(om, added_id);
        g_signal_handler_disconnect(om, removed_id);
}

/* root unmounts a loopd mount behind loopd's back: Unmounted, the empty mount point directory goes, the
 * Partitions property follows. */
static void test_outside_umount_removes_mount_point(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "umount.img", "OUTSIDE");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *mount_point = NULL, *qmp = NULL;

        REQUIRE(owner);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        REQUIRE((device = attach(owner, image)));
        mount_point = harness_mount(owner, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(mount_point);
        g_assert_true(g_str_has_prefix(mount_point, h->media_dir));
        wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        event_log_mark(log);

        qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        wait_event(log, device, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(is_mount_point(mount_point));
        /* Gone by the time the signal is out. */
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        wait_event(log, device, "PropertiesChanged", "Partitions", 1, HARNESS_TIMEOUT_MS);

        /* The device stays (it was not attached with autoclear), and loopd still serves it. */
        g_autoptr(GVariant) parts = harness_list_partitions(owner, device, &error);
        harness_assert_no_error(error);
        if (parts) {
                const char *mp = NULL;
                g_autoptr(GVariant) first =
                        g_variant_n_children(parts) ? g_variant_get_child_value(parts, 0) : NULL;
                if (first)
                        g_variant_get_child(first, 9, "&s", &mp);
                g_assert_cmpstr(mp, ==, "");
        }
        g_assert_true(losetup_has(device));
        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
}

/* MountImage's device is autoclear: when root unmounts its filesystem, the device goes too. */
static void test_outside_umount_releases_autoclear_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "open.img", "OPENED");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        const char *device = NULL, *node, *mount_point = NULL;
        int fd;

        REQUIRE(owner);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        fd = open(image, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        close(fd);
        g_autoptr(GVariant) reply = harness_call(owner, "MountImage",
                g_variant_new("(h@a{sv})", 0, harness_empty_options()), fds, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        REQUIRE(reply);
        g_autoptr(GVariant) mounts = NULL;
        g_variant_get(reply, "(&s@a(ss))", &device, &mounts);
        REQUIRE(g_variant_n_children(mounts) == 1);
        g_variant_get_child(mounts, 0, "(&s&s)", &node, &mount_point);
        wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);

        g_autofree char *qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        wait_event(log, device, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        wait_event(log, device, "DeviceDetached", NULL, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
        g_assert_cmpuint(left->len, ==, 0);

        /* Unmounted before the device goes. */
        g_autoptr(GPtrArray) got = manager_events(log, device);
        g_autofree char *attached = g_strdup_printf("DeviceAttached %s", device);
        g_autofree char *mounted = g_strdup_printf("Mounted %s", mount_point);
        g_autofree char *unmounted = g_strdup_printf("Unmounted %s", mount_point);
        guint i_mounted = G_MAXUINT, i_unmounted = G_MAXUINT, i_detached = G_MAXUINT;
        for (guint i = 0; i < got->len; i++) {
                if (g_str_equal(got->pdata[i], mounted))
                        i_mounted = i;
                else if (g_str_equal(got->pdata[i], unmounted))
                        i_unmounted = i;
                else if (g_str_has_prefix(got->pdata[i], "DeviceDetached "))
                        i_detached = i;
        }
        if (!(got->len > 0 && g_str_has_prefix(got->pdata[0], attached) && i_mounted < i_unmounted &&
                    i_unmounted < i_detached)) {
                g_autoptr(GString) text = g_string_new(NULL);
                for (guint i = 0; i < got->len; i++)
                        g_string_append_printf(text, "\n  %s", (char *)got->pdata[i]);
                for (guint i = 0; i < log->events->len; i++) {
                        Event *e = log->events->pdata[i];
                        if (event_is_about(e, device))
                                g_string_append_printf(
                                        text, "\n  (all) %s %s %s", e->name, e->a, e->b ? e->b : "");
                }
                g_test_fail_printf(
                        "expected DeviceAttached, Mounted, Unmounted, DeviceDetached in this order, got:%s",
                        text->str);
        }
}

/* losetup -d of a device loopd set up: the object goes, and so does loopd's record of its owner. */
static void test_losetup_detach_of_managed_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = harness_image_path(h, "managed.img");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *record = NULL, *qdevice = NULL;

        REQUIRE(owner);
        image_create(image, 16 * MiB);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        REQUIRE((device = attach(owner, image)));
        /* As a client would: once loopd has announced it. */
        wait_event(log, device, "InterfacesAdded", NULL, 1, HARNESS_TIMEOUT_MS);
        record = state_record_path(h, device);
        g_assert_true(g_file_test(record, G_FILE_TEST_IS_REGULAR));
        g_auto(DeviceEntry) before = { 0 };
        list_device(owner, device, &before);
        g_assert_true(before.managed);
        g_assert_cmpuint(before.owner_uid, ==, harness_uid_of(HARNESS_USER_A));

        qdevice = g_shell_quote(device);
        g_free(test_sh("losetup --detach %s", qdevice));
        wait_event(log, device, "DeviceDetached", NULL, 1, HARNESS_TIMEOUT_MS);
        wait_event(log, device, "InterfacesRemoved", NULL, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
        g_auto(DeviceEntry) after = { 0 };
        list_device(owner, device, &after);
        /* Someone else may have bound the number since; it is not ours in any case. */
        g_assert_false(after.found && after.managed);
}

/* kill -9 loopd while two users have devices attached (one mounted); a new loopd knows the owners, lets
 * the owner unmount and detach without manage-others, and nothing is left behind. */
static void test_restart_keeps_owners_and_mounts(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image_a = make_ext4_image(h, "a.img", "RESTARTA");
        g_autofree char *image_b = harness_image_path(h, "b.img");
        g_autofree char *dev_a = NULL, *dev_b = NULL, *mount_point = NULL;
        uid_t uid_a = harness_uid_of(HARNESS_USER_A), uid_b = harness_uid_of(HARNESS_USER_B);

        image_create(image_b, 16 * MiB);
        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
                REQUIRE(a && b);
                REQUIRE((dev_a = attach(a, image_a)));
                REQUIRE((dev_b = attach(b, image_b)));
                mount_point = harness_mount(a, dev_a, NULL, &error);
                harness_assert_no_error(error);
                REQUIRE(mount_point);
        }
        g_autofree char *record_a = state_record_path(h, dev_a);
        g_autofree char *record_b = state_record_path(h, dev_b);
        g_assert_true(g_file_test(record_a, G_FILE_TEST_IS_REGULAR));
        g_assert_true(g_file_test(record_b, G_FILE_TEST_IS_REGULAR));

        REQUIRE(own_loopd_kill(h, &first));
        /* Nothing happened to the kernel's side. */
        g_assert_true(losetup_has(dev_a));
        g_assert_true(losetup_has(dev_b));
        g_assert_true(is_mount_point(mount_point));

        REQUIRE(harness_start_loopd(h));
        /* From now on owners act on their own devices only: someone else's needs manage-others. */
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        REQUIRE(a && b);
        g_autoptr(EventLog) log = event_log_new(a);

        g_auto(DeviceEntry) entry_a = { 0 };
        g_auto(DeviceEntry) entry_b = { 0 };
        list_device(a, dev_a, &entry_a);
        list_device(a, dev_b, &entry_b);
        g_assert_true(entry_a.found && entry_a.managed);
        g_assert_cmpuint(entry_a.owner_uid, ==, uid_a);
        g_assert_cmpstr(entry_a.backing_file, ==, image_a);
        g_assert_true(entry_b.found && entry_b.managed);
        g_assert_cmpuint(entry_b.owner_uid, ==, uid_b);

        /* The Device object says the same. */
        g_autofree char *path_a = object_path_of(dev_a);
        g_autoptr(GVariant) owner_prop = g_dbus_connection_call_sync(b, LOOPD_BUS_NAME, path_a,
                PROPERTIES_INTERFACE, "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, "OwnerUID"),
                G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        if (owner_prop) {
                g_autoptr(GVariant) v = NULL;
                g_variant_get(owner_prop, "(v)", &v);
                g_assert_cmpuint(g_variant_get_uint32(v), ==, uid_a);
        }

        /* b may not touch a's device; a may. */
        g_assert_false(harness_detach(b, dev_a, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_false(is_mount_point(mount_point));
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        wait_event(log, dev_a, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);

        g_assert_true(harness_detach(a, dev_a, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_true(harness_detach(b, dev_b, NULL, &error));
        harness_assert_no_error(error);

        /* Nothing leaked: no device, no mount, no mount point, no record. */
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
        g_assert_cmpuint(left->len, ==, 0);
        g_autofree char *media_user = g_build_filename(h->media_dir, HARNESS_USER_A, NULL);
        g_autofree char *mounts =
                test_sh("findmnt --raw --noheadings --output TARGET | grep -F %s || true", h->media_dir);
        g_assert_cmpstr(mounts, ==, "");
        g_autofree char *entries = test_sh("ls -A %s", media_user);
        g_assert_cmpstr(entries, ==, "");
        g_assert_false(g_file_test(record_a, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_b, G_FILE_TEST_EXISTS));
}

/* A loopd mount that root unmounts while loopd is down: the new loopd removes its mount point directory. */
static void test_restart_removes_mount_point_unmounted_while_down(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image = make_ext4_image(h, "down.img", "WHILEDOWN");
        g_autofree char *device = NULL, *mount_point = NULL, *qmp = NULL;

        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                REQUIRE(a);
                g_autoptr(EventLog) log = event_log_new(a);
                REQUIRE((device = attach(a, image)));
                mount_point = harness_mount(a, device, NULL, &error);
                harness_assert_no_error(error);
                REQUIRE(mount_point);
                /* loopd records its mount points as the mount table shows them: once it announced the mount,
                 * and answered a call after that, the record is written. */
                wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);
                g_autoptr(GVariant) parts = harness_list_partitions(a, device, &error);
                harness_assert_no_error(error);
        }
        g_autofree char *mounts_record = g_build_filename(h->state_dir, "mounts", NULL);
        g_autofree char *recorded = NULL;
        g_assert_true(g_file_get_contents(mounts_record, &recorded, NULL, NULL));
        g_assert_true(recorded && strstr(recorded, mount_point));
        REQUIRE(own_loopd_kill(h, &first));

        qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        g_assert_true(g_file_test(mount_point, G_FILE_TEST_IS_DIR));

        REQUIRE(harness_start_loopd(h));
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));

        /* The device is still the user's. */
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(a);
        g_auto(DeviceEntry) entry = { 0 };
        list_device(a, device, &entry);
        g_assert_true(entry.found && entry.managed);
        g_assert_cmpuint(entry.owner_uid, ==, harness_uid_of(HARNESS_USER_A));
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* Records whose device was detached, or whose number now holds another device, while loopd was down are
 * dropped at start; a record that still matches is kept; one that does not parse is removed. */
static void test_stale_state_records_dropped(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image_x = harness_image_path(h, "x.img"), *image_y = harness_image_path(h, "y.img");
        g_autofree char *image_z = harness_image_path(h, "z.img");
        g_autofree char *dev_x = NULL, *dev_y = NULL, *dev_z = NULL, *reused = NULL;
        uid_t uid_a = harness_uid_of(HARNESS_USER_A);

        image_create(image_x, 8 * MiB);
        image_create(image_y, 8 * MiB);
        image_create(image_z, 8 * MiB);
        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                REQUIRE(a);
                REQUIRE((dev_x = attach(a, image_x)));
                REQUIRE((dev_y = attach(a, image_y)));
                REQUIRE((dev_z = attach(a, image_z)));
        }
        g_autofree char *record_x = state_record_path(h, dev_x);
        g_autofree char *record_y = state_record_path(h, dev_y);
        g_autofree char *record_z = state_record_path(h, dev_z);
        g_autofree char *record_junk = g_strdup_printf("%s/devices/loop1048574", h->state_dir);
        REQUIRE(own_loopd_kill(h, &first));

        /* While loopd is down: x is detached; y is detached and its number bound again, to the same file
         * (same backing file and offset, but a new diskseq); a record is garbage. */
        g_autofree char *qy = g_shell_quote(dev_y), *qimage_y = g_shell_quote(image_y);
        losetup_detach_and_wait(dev_x);
        losetup_detach_and_wait(dev_y);
        if (test_sh_status(NULL, "losetup %s %s", qy, qimage_y) == 0)
                reused = g_strdup(dev_y);
        else
                g_test_message("%s was taken by someone else; the re-use case is covered by that", dev_y);
        g_assert_true(g_file_set_contents(record_junk, "DISKSEQ=banana\n", -1, NULL));

        REQUIRE(harness_start_loopd(h));
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(a);

        g_assert_false(g_file_test(record_x, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_y, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_junk, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(record_z, G_FILE_TEST_IS_REGULAR));

        g_auto(DeviceEntry) x = { 0 };
        g_auto(DeviceEntry) y = { 0 };
        g_auto(DeviceEntry) z = { 0 };
        list_device(a, dev_x, &x);
        list_device(a, dev_y, &y);
        list_device(a, dev_z, &z);
        g_assert_false(x.found && x.managed);
        g_assert_false(y.found && y.managed);
        if (reused) {
                g_assert_true(y.found);
                g_assert_cmpstr(y.backing_file, ==, image_y);
                g_assert_cmpuint(y.owner_uid, ==, 0);
        }
        g_assert_true(z.found && z.managed);
        g_assert_cmpuint(z.owner_uid, ==, uid_a);

        g_autofree char *log = harness_loopd_log(h);
        g_assert_nonnull(strstr(log, "Dropped the record of"));

        if (reused)
                losetup_detach_and_wait(dev_y);
        g_assert_true(harness_detach(a, dev_z, NULL, &error));
        harness_assert_no_error(error);
}

int main(int argc, char **argv)
{
        static const HarnessOptions own_start = { .polkit = HARNESS_POLKIT_FAKE, .no_loopd = true };

        harness_init(&argc, &argv);

        harness_add("/loopd/watcher/events-in-order", test_events_in_order, NULL);
        harness_add("/loopd/watcher/losetup-device-appears-unmanaged", test_losetup_device_appears_unmanaged,
                NULL);
        harness_add("/loopd/watcher/gdbus-object-manager-client", test_gdbus_object_manager_client, NULL);
        harness_add("/loopd/watcher/outside-umount-removes-mount-point",
                test_outside_umount_removes_mount_point, NULL);
        harness_add("/loopd/watcher/outside-umount-releases-autoclear-device",
                test_outside_umount_releases_autoclear_device, NULL);
        harness_add("/loopd/watcher/losetup-detach-of-managed-device", test_losetup_detach_of_managed_device,
                NULL);
        harness_add("/loopd/watcher/restart-keeps-owners-and-mounts", test_restart_keeps_owners_and_mounts,
                &own_start);
        harness_add("/loopd/watcher/restart-removes-mount-point-unmounted-while-down",
                test_restart_removes_mount_point_unmounted_while_down, &own_start);
        harness_add(
                "/loopd/watcher/stale-state-records-dropped", test_stale_state_records_dropped, &own_start);

        return g_test_run();
}
