/* test-watcher.c: the watcher as clients see it: the Manager's signals in order (GDBus subscriptions and
 * `loopctl monitor --json`), Device objects through GDBus's own ObjectManager client, changes made by other
 * tools (losetup, partx, umount), and ownership and mounts that survive kill -9 and a restart. What the
 * kernel holds is asked of losetup, findmnt and sysfs, never of loopd. */
#include "test-watcher.h"

#define OBJECT_MANAGER_INTERFACE "org.freedesktop.DBus.ObjectManager"

/* ---------------------------------------------------------------------------------------------------- */
/* Small helpers */

char *object_path_of(const char *device)
{
        return g_strconcat(LOOPD_DEVICE_PATH_PREFIX "/", device + strlen("/dev/"), NULL);
}

/* A 64 MiB GPT image: p1 (16 MiB at 1 MiB) carries ext4 labelled label, p2 the rest, empty. */
char *make_gpt_image(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        g_free(image_mkfs_at(image, 1 * MiB, 16 * MiB, "ext4", label));
        return image;
}

/* A 32 MiB image with ext4 on the whole of it. */
char *make_ext4_image(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);

        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", label));
        return image;
}

/* Attach(image opened read-write by the test) on c; the device, or NULL (and the test failed). */
char *attach(GDBusConnection *c, const char *image)
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
bool is_mount_point(const char *target)
{
        g_autofree char *q = g_shell_quote(target);

        return test_sh_status(NULL, "findmnt --mountpoint %s >/dev/null", q) == 0;
}

/* Is device bound, according to losetup? */
bool losetup_has(const char *device)
{
        g_autofree char *q = g_shell_quote(device);

        return test_sh_status(NULL, "losetup %s >/dev/null 2>&1", q) == 0;
}

/* partx --delete (add = false) or --add of partitions 1..n of device, as a careful script does it: a
 * partition that something has open (udevd's or another daemon's probe of a partition that just appeared)
 * cannot be deleted (EBUSY), and partx -a/-d fail on a partition that is already there/gone. So: wait for
 * udev's queue, act on the partitions not yet as wanted, and try again a bounded number of times. */
void partx_all(const char *device, guint n, bool add)
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
void losetup_detach_and_wait(const char *device)
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

void device_entry_clear(DeviceEntry *e)
{
        g_free(e->backing_file);
        memset(e, 0, sizeof(*e));
}

void list_device(GDBusConnection *c, const char *device, DeviceEntry *ret)
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

static gboolean flag_set(gpointer data)
{
        *(bool *)data = true;
        return G_SOURCE_REMOVE;
}

bool wait_until(Predicate pred, gconstpointer data, int timeout_ms)
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
/* A loopd of the test's own */

static void own_loopd_on_exit(GObject *source, GAsyncResult *result, gpointer data)
{
        *(bool *)data = true;
}

bool own_loopd_watch(OwnLoopd *l)
{
        if (l->process)
                g_subprocess_wait_async(l->process, NULL, own_loopd_on_exit, &l->exited);
        return l->process != NULL;
}

bool own_loopd_start(Harness *h, OwnLoopd *l, const char *name, const char *const *args)
{
        l->log_path = g_strdup_printf("%s/%s.log", h->tmpdir, name);
        l->process = harness_start_own_loopd(h, l->log_path, args);
        return own_loopd_watch(l);
}

bool own_loopd_has_exited(gconstpointer l)
{
        return ((const OwnLoopd *)l)->exited;
}

void own_loopd_check_exits_cleanly(OwnLoopd *l, int timeout_ms)
{
        if (!wait_until(own_loopd_has_exited, l, timeout_ms)) {
                harness_fail("loopd (%s) did not exit within %d ms", l->log_path, timeout_ms);
                return;
        }
        if (!g_subprocess_get_if_exited(l->process) || g_subprocess_get_exit_status(l->process) != 0)
                harness_fail("loopd (%s) did not exit with 0", l->log_path);
}

void own_loopd_stop(OwnLoopd *l)
{
        g_subprocess_send_signal(l->process, SIGTERM);
        own_loopd_check_exits_cleanly(l, HARNESS_TIMEOUT_MS);
}

bool own_loopd_kill(Harness *h, OwnLoopd *l)
{
        if (!l->process)
                return false;
        g_subprocess_send_signal(l->process, SIGKILL);
        g_assert_true(wait_until(own_loopd_has_exited, l, HARNESS_TIMEOUT_MS));
        g_assert_true(g_subprocess_get_if_signaled(l->process));
        g_assert_cmpint(g_subprocess_get_term_sig(l->process), ==, SIGKILL);
        if (harness_wait_for_name(h->bus, LOOPD_BUS_NAME, false, HARNESS_TIMEOUT_MS))
                return true;
        g_test_fail_printf("%s did not go away within %d ms", LOOPD_BUS_NAME, HARNESS_TIMEOUT_MS);
        return false;
}

void own_loopd_clear(OwnLoopd *l)
{
        if (l->process && !l->exited) {
                g_subprocess_force_exit(l->process);
                (void)wait_until(own_loopd_has_exited, l, HARNESS_TIMEOUT_MS);
        }
        g_clear_object(&l->process);
        if (l->log_path) {
                g_autofree char *log = NULL;
                if (g_file_get_contents(l->log_path, &log, NULL, NULL)) {
                        if (harness_text_has_sanitizer_report(log))
                                harness_fail("%s has a sanitizer report", l->log_path);
                        if (g_test_failed())
                                g_test_message("%s:\n%s", l->log_path, log);
                }
        }
        g_clear_pointer(&l->log_path, g_free);
}

/* ---------------------------------------------------------------------------------------------------- */
/* What loopd says on the bus, as one client's signal subscription receives it */

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
EventLog *event_log_new(GDBusConnection *c)
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

void event_log_free(EventLog *log)
{
        if (!log)
                return;
        g_dbus_connection_signal_unsubscribe(log->c, log->subscription);
        g_ptr_array_unref(log->events);
        g_object_unref(log->c);
        g_free(log->image);
        g_free(log);
}

void event_log_mark(EventLog *log)
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
bool event_is_about(const Event *e, const char *device)
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
void event_log_scope(EventLog *log, const char *image)
{
        g_free(log->image);
        log->image = g_strdup(image);
}

/* "Name arg" lines for the Manager signals about device (in scope, since the mark). */
GPtrArray *manager_events(EventLog *log, const char *device)
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
bool wait_event(
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
Event *last_event(EventLog *log, const char *device, const char *name)
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
void assert_event_groups(GPtrArray *got, const char *const *want, const char *who)
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
guint collapse_restores(
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

guint count_substrings(const char *haystack, const char *needle)
{
        guint n = 0;

        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
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
        harness_add("/loopd/watcher/exit-on-idle-not-while-attached", test_exit_on_idle_not_while_attached,
                &own_start);
        harness_add("/loopd/watcher/exit-on-idle-answers-calls-that-came-meanwhile",
                test_exit_on_idle_answers_calls_that_came_meanwhile, &own_start);
        harness_add("/loopd/watcher/exit-on-idle-finishes-attach-despite-sigterm",
                test_exit_on_idle_finishes_attach_despite_sigterm, &own_start);
        harness_add("/loopd/watcher/sigterm-answers-calls-waiting-for-polkit",
                test_sigterm_answers_calls_waiting_for_polkit, &own_start);
        harness_add("/loopd/watcher/exits-when-the-bus-goes", test_exits_when_the_bus_goes, &own_start);
        harness_add("/loopd/watcher/starts-with-a-device-whose-path-is-too-long",
                test_starts_with_a_device_whose_path_is_too_long, &own_start);
        harness_add("/loopd/watcher/second-loopd-waits-for-the-first", test_second_loopd_waits_for_the_first,
                &own_start);

        return g_test_run();
}
