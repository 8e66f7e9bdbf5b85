/* watcher-events.c: the watcher suite's events as clients see them: signals in order, `loopctl monitor`,
 * devices other tools set up, and GDBus's own ObjectManager client. */
#include "test-watcher.h"

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
/* Tests */

/* Attach, partitions removed and added again by partx (another tool), mount, unmount, detach: every
 * subscriber sees the same events, in the order they happened. Two independent subscribers: a GDBus
 * signal subscription of another user and `loopctl monitor --json` of the owner. */
void test_events_in_order(Harness *h, gconstpointer data)
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
void test_losetup_device_appears_unmanaged(Harness *h, gconstpointer data)
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

void test_gdbus_object_manager_client(Harness *h, gconstpointer data)
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
