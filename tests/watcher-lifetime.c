/* watcher-lifetime.c: loopd's own life, as the packaged service runs it (--exit-on-idle, started by the
 * bus): it exits when idle and not while a device of its own is bound, it answers the calls that reached it
 * while it gave its name back, and a second loopd on the same state dir waits until the first has exited
 * before it touches anything. */
#include "test-watcher.h"

/* --exit-on-idle for these tests, in seconds. */
#define IDLE_S 2
#define IDLE_ARGS ((const char *const[]){ "--exit-on-idle", G_STRINGIFY(IDLE_S), NULL })
/* What loopd logs when it decides to exit (bus-service.c). */
#define IDLE_LOG "Idle for " G_STRINGIFY(IDLE_S) " s with nothing attached, exiting"
/* What a second loopd logs while the first holds the state dir (main.c). */
#define WAITING_LOG "Waiting for the loopd that still uses"
/* How often the race test tries before it concludes that the bus never routed its call to loopd in time. */
#define RACE_ATTEMPTS 3

static bool never(gconstpointer data)
{
        return false;
}

/* Runs the default main context for ms (an OwnLoopd's exit is noted there). */
static void run_for(int ms)
{
        (void)wait_until(never, NULL, ms);
}

static bool log_has(const char *path, const char *needle)
{
        g_autofree char *log = NULL;

        return g_file_get_contents(path, &log, NULL, NULL) && strstr(log, needle);
}

/* Who owns the name now (NULL: nobody). */
static char *name_owner(Harness *h)
{
        g_autoptr(GVariant) reply =
                g_dbus_connection_call_sync(h->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "GetNameOwner", g_variant_new("(s)", LOOPD_BUS_NAME),
                        G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, NULL);
        char *owner = NULL;

        if (reply)
                g_variant_get(reply, "(s)", &owner);
        return owner;
}

/* Idle with nothing attached, loopd exits (0) and gives its name back; with a device of its own bound it
 * stays, however long it waits. */
void test_exit_on_idle_not_while_attached(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "idle.img", "IDLE");
        g_auto(OwnLoopd) own = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        REQUIRE(own_loopd_start(h, &own, "loopd-idle", IDLE_ARGS));
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(owner);
        REQUIRE((device = attach(owner, image)));

        /* Three idle times with the device bound and no call: it stays. */
        run_for(3 * IDLE_S * 1000);
        g_assert_false(own.exited);
        g_assert_false(log_has(own.log_path, IDLE_LOG));
        g_autofree char *before = name_owner(h);
        g_assert_nonnull(before);

        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
        own_loopd_check_exits_cleanly(&own, IDLE_S * 1000 + HARNESS_TIMEOUT_MS);
        g_assert_true(log_has(own.log_path, IDLE_LOG));
        g_assert_true(harness_wait_for_name(h->bus, LOOPD_BUS_NAME, false, HARNESS_TIMEOUT_MS));
}

/* An asynchronous call's result; call_result_start() before the call, whose cancellable is cancel. */
typedef struct CallResult {
        bool done;
        GVariant *reply;
        GError *error;
        GCancellable *cancel;
} CallResult;

static bool call_done(gconstpointer data)
{
        return ((const CallResult *)data)->done;
}

static CallResult *call_result_start(CallResult *r)
{
        r->cancel = g_cancellable_new();
        return r;
}

/* A call still under way is cancelled, and its callback run, before r goes. */
static void call_result_clear(CallResult *r)
{
        if (r->cancel && !r->done) {
                g_cancellable_cancel(r->cancel);
                (void)wait_until(call_done, r, HARNESS_TIMEOUT_MS);
        }
        g_clear_object(&r->cancel);
        g_clear_pointer(&r->reply, g_variant_unref);
        g_clear_error(&r->error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CallResult, call_result_clear)

static void call_on_reply(GObject *source, GAsyncResult *result, gpointer data)
{
        CallResult *r = data;

        r->reply = g_dbus_connection_call_with_unix_fd_list_finish(
                G_DBUS_CONNECTION(source), NULL, result, &r->error);
        r->done = true;
}

/* The race of these tests: loopd decides to exit while a call to it is on its way. dbus-daemon is stopped
 * (SIGSTOP) so that the call (method, params, fds, on c) waits in its socket while loopd decides it is idle
 * and sends its ReleaseName; once it runs again it reads the call first (it came first) and routes it to
 * loopd, which still owns the name. Returns whether loopd decided to exit (the test failed otherwise). */
static bool call_while_loopd_leaves(Harness *h, OwnLoopd *own, GDBusConnection *c, const char *method,
        GVariant *params, GUnixFDList *fds, CallResult *result)
{
        GPid bus = harness_bus_pid(h);
        bool decided;

        if (bus <= 0) {
                harness_fail("no dbus-daemon pid");
                return false;
        }
        /* From here to SIGCONT without a return: the bus must run again whatever happens. */
        g_assert_cmpint(kill(bus, SIGSTOP), ==, 0);
        g_dbus_connection_call_with_unix_fd_list(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, method, params, NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS,
                fds, call_result_start(result)->cancel, call_on_reply, result);
        g_usleep(300 * 1000); /* GDBus's thread writes the call */
        decided = harness_wait_for_log(own->log_path, IDLE_LOG, IDLE_S * 1000 + HARNESS_TIMEOUT_MS);
        g_usleep(300 * 1000); /* loopd writes its ReleaseName right after the log line */
        g_assert_cmpint(kill(bus, SIGCONT), ==, 0);
        if (!decided)
                harness_fail("loopd never decided to exit (%s)", own->log_path);
        return decided;
}

/* The call's outcome: 1 when loopd answered it, 0 when the bus had taken the name back before it routed
 * the call (it went nowhere: this bus starts no loopd by activation), -1 after failing the test. */
static int call_outcome(CallResult *result, guint attempt)
{
        if (!wait_until(call_done, result, HARNESS_TIMEOUT_MS)) {
                harness_fail("the call got no answer at all");
                return -1;
        }
        if (!result->error)
                return 1;
        if (g_dbus_error_is_remote_error(result->error)) {
                g_autofree char *remote = g_dbus_error_get_remote_error(result->error);
                if (g_str_equal(remote, "org.freedesktop.DBus.Error.ServiceUnknown") ||
                        g_str_equal(remote, "org.freedesktop.DBus.Error.NameHasNoOwner")) {
                        g_test_message(
                                "attempt %u: the bus took the name back before it routed the call", attempt);
                        return 0;
                }
        }
        /* NoReply: loopd read the call and exited without answering it. */
        harness_fail(
                "a call that reached loopd as it gave its name back failed: %s", result->error->message);
        return -1;
}

static int try_list_while_loopd_leaves(Harness *h, guint attempt)
{
        g_autofree char *name = g_strdup_printf("loopd-idle-race-%u", attempt);
        g_auto(OwnLoopd) own = { 0 };
        g_auto(CallResult) result = { 0 };
        GDBusConnection *c = harness_connect_as(h, HARNESS_USER_A);
        int r;

        if (!c || !own_loopd_start(h, &own, name, IDLE_ARGS) ||
                !call_while_loopd_leaves(h, &own, c, "ListDevices", NULL, NULL, &result))
                return -1;
        r = call_outcome(&result, attempt);
        own_loopd_check_exits_cleanly(&own, HARNESS_TIMEOUT_MS);
        return g_test_failed() ? -1 : r;
}

/* A call that reached loopd while it gave its name back (it had decided to exit) is answered before it
 * exits: not dropped with the connection, its caller told NoReply. */
void test_exit_on_idle_answers_calls_that_came_meanwhile(Harness *h, gconstpointer data)
{
        int r = 0;

        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        for (guint attempt = 1; attempt <= RACE_ATTEMPTS && r == 0; attempt++)
                r = try_list_while_loopd_leaves(h, attempt);
        if (r == 0)
                harness_fail(
                        "in %d attempts the bus never routed the call to loopd as it left", RACE_ATTEMPTS);
}

/* Waits until a loopd other than the one that was first_owner owns the name (or o exited); returns it. */
static char *wait_for_new_owner(Harness *h, OwnLoopd *o, const char *first_owner)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)HARNESS_TIMEOUT_MS * 1000;
        char *owner = NULL;

        while (g_get_monotonic_time() < deadline && !o->exited) {
                g_free(owner);
                owner = name_owner(h);
                if (owner && !g_str_equal(owner, first_owner))
                        return owner;
                run_for(50);
        }
        g_free(owner);
        return NULL;
}

/* The loopd that took over (next) adopted device, the owner's (on owner): then the owner detaches it and
 * next is stopped. */
static void check_adopted_then_detach(Harness *h, OwnLoopd *next, GDBusConnection *owner, const char *device)
{
        g_auto(DeviceEntry) entry = { 0 };
        g_autoptr(GError) error = NULL;

        g_assert_true(log_has(next->log_path, "Re-adopted"));
        list_device(owner, device, &entry);
        g_assert_true(entry.found);
        g_assert_true(entry.managed);
        g_assert_cmpuint(entry.owner_uid, ==, harness_uid_of(HARNESS_USER_A));
        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
        own_loopd_stop(next);
}

/* One try of the Attach race (see the test below); 1, 0 or -1 as call_outcome(). *next is the loopd started
 * meanwhile: on 1 it has taken over, else it is stopped. */
static int try_attach_while_loopd_leaves(
        Harness *h, const char *image, guint attempt, char **ret_device, OwnLoopd *next)
{
        g_autofree char *name = g_strdup_printf("loopd-idle-attach-%u", attempt);
        g_autofree char *next_name = g_strdup_printf("%s/loopd-next-%u.log", h->tmpdir, attempt);
        g_autofree char *first_owner = NULL, *new_owner = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_auto(OwnLoopd) own = { 0 };
        g_auto(CallResult) result = { 0 };
        GDBusConnection *c = harness_connect_as(h, HARNESS_USER_A);
        int fd = open(image, O_RDWR | O_CLOEXEC), r;
        bool waited;

        if (fd < 0 || g_unix_fd_list_append(fds, fd, NULL) != 0) {
                harness_fail("cannot pass %s", image);
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        close(fd);
        if (!c || !own_loopd_start(h, &own, name, IDLE_ARGS) || !(first_owner = name_owner(h)) ||
                !call_while_loopd_leaves(h, &own, c, "Attach",
                        g_variant_new("(h@a{sv})", 0, harness_empty_options()), fds, &result))
                return -1;
        if (!harness_wait_for_name(h->bus, LOOPD_BUS_NAME, false, HARNESS_TIMEOUT_MS)) {
                harness_fail("loopd kept its name");
                return -1;
        }
        /* As systemd does once a Type=dbus service's name is gone, while the call waits for polkit; and the
         * bus starts the next loopd for a later call meanwhile. */
        g_subprocess_send_signal(own.process, SIGTERM);
        next->log_path = g_steal_pointer(&next_name);
        next->process = harness_spawn_own_loopd(h, next->log_path, NULL);
        if (!own_loopd_watch(next))
                return -1;
        /* While the first still waits for polkit's answer (10 s after it asked). */
        waited = harness_wait_for_log(next->log_path, WAITING_LOG, 9000);
        r = call_outcome(&result, attempt);
        own_loopd_check_exits_cleanly(&own, HARNESS_TIMEOUT_MS);
        if (r <= 0) {
                own_loopd_clear(next);
                g_assert_true(harness_wait_for_name(h->bus, LOOPD_BUS_NAME, false, HARNESS_TIMEOUT_MS));
                return r;
        }

        g_variant_get(result.reply, "(so)", ret_device, NULL);
        g_assert_true(log_has(own.log_path, "SIGTERM while exiting on idle"));
        /* The next one waited for the first, then took over. */
        if (!waited)
                harness_fail("the next loopd did not wait for the first (%s)", next->log_path);
        new_owner = wait_for_new_owner(h, next, first_owner);
        if (!new_owner) {
                harness_fail("the next loopd did not take the name (%s)", next->log_path);
                return -1;
        }
        return g_test_failed() ? -1 : 1;
}

/* An Attach that reached loopd as it gave its name back, still waiting for polkit when systemd sends SIGTERM
 * (it does once a Type=dbus service's name goes), is carried out and answered before loopd exits; the loopd
 * the bus starts meanwhile waits for the first, then adopts the device. */
void test_exit_on_idle_finishes_attach_despite_sigterm(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        fake_authority_set(h->authority, "org.loopd1.attach", FAKE_AUTH_ALLOW, 10000);
        g_autofree char *image = make_ext4_image(h, "late.img", "LATE");
        g_autofree char *device = NULL;
        g_auto(OwnLoopd) next = { 0 };
        int r = 0;

        for (guint attempt = 1; attempt <= RACE_ATTEMPTS && r == 0; attempt++)
                r = try_attach_while_loopd_leaves(h, image, attempt, &device, &next);
        if (r == 0)
                harness_fail(
                        "in %d attempts the bus never routed the call to loopd as it left", RACE_ATTEMPTS);
        REQUIRE(r > 0 && device && next.process);

        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(owner);
        check_adopted_then_detach(h, &next, owner, device);
}

static bool polkit_check_cancelled(gconstpointer authority)
{
        g_autoptr(GPtrArray) cancelled = fake_authority_cancellations((FakeAuthority *)authority);

        return cancelled->len > 0;
}

/* A SIGTERM (not while exiting on idle) ends loopd at once; a call still waiting for polkit is answered
 * Failed, nothing of it done, not left to the bus's NoReply. */
void test_sigterm_answers_calls_waiting_for_polkit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        fake_authority_set(h->authority, "org.loopd1.attach", FAKE_AUTH_ALLOW, 5000);
        g_autofree char *image = make_ext4_image(h, "stopped.img", "STOPPED");
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_auto(OwnLoopd) own = { 0 };
        g_auto(CallResult) result = { 0 };
        GDBusConnection *c = harness_connect_as(h, HARNESS_USER_A);
        int fd = open(image, O_RDWR | O_CLOEXEC);

        REQUIRE(c);
        REQUIRE(fd >= 0);
        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        close(fd);
        REQUIRE(own_loopd_start(h, &own, "loopd-stopped", NULL));
        g_dbus_connection_call_with_unix_fd_list(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, "Attach", g_variant_new("(h@a{sv})", 0, harness_empty_options()),
                NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, fds, call_result_start(&result)->cancel,
                call_on_reply, &result);
        REQUIRE(fake_authority_wait_calls(h->authority, 1, HARNESS_TIMEOUT_MS));
        own_loopd_stop(&own);
        REQUIRE(wait_until(call_done, &result, HARNESS_TIMEOUT_MS));
        harness_assert_dbus_error(result.error, LOOPD_ERROR_FAILED, "loopd is exiting");
        /* Its question was withdrawn at polkit (the authority reads that in a thread of its own). */
        g_assert_true(wait_until(polkit_check_cancelled, h->authority, HARNESS_TIMEOUT_MS));
        g_autoptr(GPtrArray) cancelled = fake_authority_cancellations(h->authority);
        g_assert_cmpuint(cancelled->len, ==, 1);
        g_autoptr(GPtrArray) bound = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(bound->len, ==, 0);
}

/* A second loopd on the same state dir (the bus starts one for a call that came after the first gave its
 * name back, while the first still answers what came before) waits until the first has exited, then takes
 * over its devices; it does not load, roll back or stop anything while the first runs. */
void test_second_loopd_waits_for_the_first(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "kept.img", "KEPT");
        g_auto(OwnLoopd) first = { 0 };
        g_auto(OwnLoopd) second = { 0 };
        g_autofree char *device = NULL, *first_owner = NULL, *second_owner = NULL;

        REQUIRE(own_loopd_start(h, &first, "loopd-first", NULL));
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(owner);
        REQUIRE((device = attach(owner, image)));
        first_owner = name_owner(h);
        REQUIRE(first_owner);

        second.log_path = g_strdup_printf("%s/loopd-second.log", h->tmpdir);
        second.process = harness_spawn_own_loopd(h, second.log_path, NULL);
        REQUIRE(own_loopd_watch(&second));
        g_assert_true(harness_wait_for_log(second.log_path, WAITING_LOG, HARNESS_TIMEOUT_MS));
        /* It keeps waiting: it neither gave up nor started on the first one's state. */
        run_for(500);
        g_assert_false(second.exited);
        g_assert_false(log_has(second.log_path, "Re-adopted"));
        g_autofree char *still = name_owner(h);
        g_assert_cmpstr(still, ==, first_owner);

        own_loopd_stop(&first);
        /* The second takes over once the first has exited: the name, and the first one's device. */
        second_owner = wait_for_new_owner(h, &second, first_owner);
        REQUIRE(second_owner);
        check_adopted_then_detach(h, &second, owner, device);
}

/* loopd exits (1) when its bus goes: nobody could reach it any more, and it would keep the state dir from
 * the loopd started once the bus is back. */
void test_exits_when_the_bus_goes(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) own = { 0 };
        GPid bus = harness_bus_pid(h);

        REQUIRE(bus > 0);
        REQUIRE(own_loopd_start(h, &own, "loopd-busless", NULL));
        g_assert_cmpint(kill(bus, SIGTERM), ==, 0);
        if (!wait_until(own_loopd_has_exited, &own, HARNESS_TIMEOUT_MS)) {
                harness_fail("loopd kept running without its bus (%s)", own.log_path);
                return;
        }
        g_assert_true(g_subprocess_get_if_exited(own.process));
        g_assert_cmpint(g_subprocess_get_exit_status(own.process), ==, 1);
        g_assert_true(log_has(own.log_path, "Lost the connection to the system bus"));
}

/* Makes a chain of directories under dir whose path is longer than a page (the kernel's limit for a
 * backing file's path in sysfs); returns an fd of the deepest, or -1 (the test failed). */
static int make_deep_dir(const char *dir)
{
        char name[201];
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        memset(name, 'd', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        for (int i = 0; fd >= 0 && i < 25; i++) {
                int next = -1;

                if (mkdirat(fd, name, 0755) == 0)
                        next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                close(fd);
                fd = next;
        }
        if (fd < 0)
                harness_fail("cannot make a deep directory under %s: %s", dir, g_strerror(errno));
        return fd;
}

/* A device whose backing file was moved where its path is longer than a page: the kernel cannot say the
 * path (sysfs answers ENAMETOOLONG). Any user can do that to an image of theirs. A loopd starting then still
 * starts, adopts that device (its BackingFile is empty) and lists the others. */
void test_starts_with_a_device_whose_path_is_too_long(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "moved.img", "MOVED");
        g_autofree char *other = make_ext4_image(h, "other.img", "OTHER");
        g_autofree char *device = NULL, *other_device = NULL, *name = NULL;
        g_auto(OwnLoopd) first = { 0 };
        g_auto(OwnLoopd) second = { 0 };
        g_auto(DeviceEntry) entry = { 0 };
        g_auto(DeviceEntry) other_entry = { 0 };
        g_autoptr(GError) error = NULL;
        int deep;

        REQUIRE(own_loopd_start(h, &first, "loopd-before-move", NULL));
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        REQUIRE(a && b);
        REQUIRE((device = attach(a, image)));
        REQUIRE((other_device = attach(b, other)));
        own_loopd_stop(&first);

        deep = make_deep_dir(h->tmpdir);
        REQUIRE(deep >= 0);
        if (renameat(AT_FDCWD, image, deep, "moved.img") < 0) {
                harness_fail("cannot move %s: %s", image, g_strerror(errno));
                close(deep);
                return;
        }
        name = test_read_sysfs("/sys/block/%s/loop/backing_file", device + strlen("/dev/"));
        g_assert_null(name); /* the kernel cannot say it */

        bool started = own_loopd_start(h, &second, "loopd-after-move", NULL);
        if (started) {
                list_device(a, device, &entry);
                g_assert_true(entry.found);
                g_assert_cmpstr(entry.backing_file, ==, "");
                g_assert_true(entry.managed);
                g_assert_cmpuint(entry.owner_uid, ==, harness_uid_of(HARNESS_USER_A));
                list_device(b, other_device, &other_entry);
                g_assert_true(other_entry.found);
                g_assert_cmpstr(other_entry.backing_file, ==, other);
        }
        /* Back where the harness finds it, whatever happened. */
        g_assert_cmpint(renameat(deep, "moved.img", AT_FDCWD, image), ==, 0);
        close(deep);
        REQUIRE(started);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        g_assert_true(harness_detach(b, other_device, NULL, &error));
        harness_assert_no_error(error);
        own_loopd_stop(&second);
}
