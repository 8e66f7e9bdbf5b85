/* test-flood.c: one user cannot pin loopd's resources: a bound on the calls one uid may have waiting (for
 * polkit, image I/O or udev) across all its connections, polkit checks cancelled when their caller leaves,
 * and a soft fd limit raised to the hard one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (1024 * 1024)
/* loopd's default --max-pending-per-user. */
#define DEFAULT_BOUND 16
/* fds loopd may hold beyond one per waiting call: a message being read, a query to the bus, ... */
#define FD_SLACK 24
/* Calls of a connection loopd has not seen before that may wait until the bus has said whose it is (loopd
 * asks once per connection, asynchronously): they cannot count against a uid nobody knows yet, so a flood
 * over N fresh connections may briefly hold N times this many fds more than the bound. */
#define LOOKUP_WAITING 4
/* What "back where it started" allows for. */
#define FD_SETTLED_SLACK 4
/* A refusal that did not wait for anyone arrives within this, even under ASan on a loaded machine. */
#define QUICK_US (5 * G_USEC_PER_SEC)
/* The fake authority's "never answers": ten minutes, far beyond any test. */
#define HOLD_MS 600000

/* g_test_fail_printf() keeps only the last message: say each one in the log too. */
#define flood_fail(...)                                 \
        do {                                            \
                g_test_message("FAILED: " __VA_ARGS__); \
                g_test_fail_printf(__VA_ARGS__);        \
        } while (0)

typedef enum Outcome {
        OUTCOME_PENDING = 0, /* no answer yet */
        OUTCOME_OK, /* attached (device holds the node) */
        OUTCOME_LIMIT, /* loopd said LimitExceeded */
        OUTCOME_BUS_LIMIT, /* dbus-daemon said LimitsExceeded: the call never reached loopd */
        OUTCOME_CLOSED, /* our connection was closed while the call waited */
        OUTCOME_OTHER,
} Outcome;

typedef struct Flood Flood;

/* One asynchronous Attach or MountImage. */
typedef struct Call {
        Flood *flood;
        const char *who; /* "A", "B": whose call it is, for counting */
        gint64 sent_us, answered_us;
        Outcome outcome;
        char *device; /* OUTCOME_OK, until detached */
        char *error; /* OUTCOME_OTHER */
} Call;

/* Many calls in flight from the test thread, answered in a context of the test's own, while loopd's fd count
 * is watched. */
struct Flood {
        Harness *h;
        GMainContext *context;
        GPtrArray *calls; /* Call, owned */
        GPtrArray *connections; /* every connection a call went out on (the harness owns them) */
        guint n_answered;
        gint64 last_answer_us;
        guint fd_start, fd_max;
};

static guint loopd_fd_count(Harness *h)
{
        GPid pid = harness_loopd_pid(h);
        g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int)pid);
        g_autoptr(GDir) dir = pid > 0 ? g_dir_open(path, 0, NULL) : NULL;
        guint n = 0;

        if (!dir)
                return 0;
        while (g_dir_read_name(dir))
                n++;
        return n;
}

static void flood_sample(Flood *f)
{
        f->fd_max = MAX(f->fd_max, loopd_fd_count(f->h));
}

static void call_free(gpointer data)
{
        Call *c = data;

        g_free(c->device);
        g_free(c->error);
        g_free(c);
}

/* Starts a flood: its context becomes the thread's default until flood_clear(). The fd count loopd starts
 * from is taken after one round trip, so that nothing it sets up lazily counts as the flood's. */
static void flood_init(Flood *f, Harness *h)
{
        g_autoptr(GError) error = NULL;

        *f = (Flood){ .h = h, .context = g_main_context_new() };
        f->calls = g_ptr_array_new_with_free_func(call_free);
        f->connections = g_ptr_array_new();
        g_main_context_push_thread_default(f->context);
        g_autoptr(GVariant) list = harness_list_devices(h->bus, &error);
        harness_assert_no_error(error);
        f->fd_start = f->fd_max = loopd_fd_count(h);
        g_assert_cmpuint(f->fd_start, >, 0);
}

static void flood_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
        Call *c = user_data;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_finish(
                G_DBUS_CONNECTION(source), NULL, result, &error);
        g_autofree char *remote = error ? g_dbus_error_get_remote_error(error) : NULL;

        c->answered_us = g_get_monotonic_time();
        if (reply) {
                c->outcome = OUTCOME_OK;
                /* Attach's (so) and MountImage's (sa(ss)) both start with the device. */
                g_variant_get_child(reply, 0, "s", &c->device);
        } else if (g_strcmp0(remote, LOOPD_ERROR_LIMIT_EXCEEDED) == 0)
                c->outcome = OUTCOME_LIMIT;
        else if (g_strcmp0(remote, HARNESS_DBUS_ERROR_LIMITS_EXCEEDED) == 0)
                c->outcome = OUTCOME_BUS_LIMIT;
        else if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED))
                c->outcome = OUTCOME_CLOSED;
        else {
                c->outcome = OUTCOME_OTHER;
                c->error = g_strdup_printf("%s: %s", remote ? remote : "not a D-Bus error", error->message);
        }
        c->flood->n_answered++;
        c->flood->last_answer_us = c->answered_us;
}

/* Sends method(fd, {}) on connection without waiting; the call never times out on our side. */
static Call *flood_send(Flood *f, GDBusConnection *connection, const char *who, const char *method, int fd)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        g_autoptr(GError) error = NULL;
        Call *c = g_new0(Call, 1);
        int index;

        c->flood = f;
        c->who = who;
        g_ptr_array_add(f->calls, c);
        if (!g_ptr_array_find(f->connections, connection, NULL))
                g_ptr_array_add(f->connections, connection);
        index = g_unix_fd_list_append(fds, fd, &error);
        if (index < 0) {
                c->outcome = OUTCOME_OTHER;
                c->error = g_strdup_printf("cannot pass the fd: %s", error->message);
                f->n_answered++;
                return c;
        }
        c->sent_us = g_get_monotonic_time();
        g_dbus_connection_call_with_unix_fd_list(connection, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, method, g_variant_new("(h@a{sv})", index, harness_empty_options()),
                NULL, G_DBUS_CALL_FLAGS_NONE, G_MAXINT, fds, NULL, flood_done, c);
        return c;
}

static gboolean set_flag(gpointer data)
{
        *(bool *)data = true;
        return G_SOURCE_REMOVE;
}

/* Dispatches answers for ms, then samples loopd's fd count. */
static void flood_run_for(Flood *f, guint ms)
{
        GSource *timer = g_timeout_source_new(ms);
        bool fired = false;

        g_source_set_callback(timer, set_flag, &fired, NULL);
        g_source_attach(timer, f->context);
        while (!fired)
                g_main_context_iteration(f->context, TRUE);
        g_source_destroy(timer);
        g_source_unref(timer);
        flood_sample(f);
}

/* Waits until n calls in all are answered, or no answer came for quiet_ms, or timeout_ms passed. */
static bool flood_wait_answered(Flood *f, guint n, guint quiet_ms, guint timeout_ms)
{
        gint64 start = g_get_monotonic_time(), now = start;

        while (f->n_answered < n && now - start < (gint64)timeout_ms * 1000 &&
                now - MAX(start, f->last_answer_us) < (gint64)quiet_ms * 1000) {
                flood_run_for(f, 10);
                now = g_get_monotonic_time();
        }
        return f->n_answered >= n;
}

/* Dispatches answers until cond holds or timeout_ms passed; evaluates to whether cond held. */
#define flood_until(f, timeout_ms, cond)                                          \
        ({                                                                        \
                gint64 _end = g_get_monotonic_time() + (gint64)(timeout_ms)*1000; \
                while (!(cond) && g_get_monotonic_time() < _end)                  \
                        flood_run_for((f), 20);                                   \
                (cond);                                                           \
        })
#define flood_wait_call(f, c, timeout_ms) flood_until((f), (timeout_ms), (c)->outcome != OUTCOME_PENDING)

static guint flood_count(Flood *f, const char *who, Outcome outcome)
{
        guint n = 0;

        for (guint i = 0; i < f->calls->len; i++) {
                Call *c = f->calls->pdata[i];
                n += g_str_equal(c->who, who) && c->outcome == outcome;
        }
        return n;
}

static gint64 flood_max_latency(Flood *f, const char *who, Outcome outcome)
{
        gint64 max = 0;

        for (guint i = 0; i < f->calls->len; i++) {
                Call *c = f->calls->pdata[i];
                if (g_str_equal(c->who, who) && c->outcome == outcome)
                        max = MAX(max, c->answered_us - c->sent_us);
        }
        return max;
}

static void flood_report(Flood *f, const char *who)
{
        static const char *const names[] = { "waiting", "attached", "LimitExceeded from loopd",
                "LimitsExceeded from dbus-daemon", "closed", "other" };
        g_autoptr(GString) counts = g_string_new(NULL);
        guint shown = 0;

        for (Outcome o = 0; o < G_N_ELEMENTS(names); o++)
                g_string_append_printf(counts, "%s%u %s", o ? ", " : "", flood_count(f, who, o), names[o]);
        g_test_message("%s's calls: %s (the slowest refusal after %" G_GINT64_FORMAT
                       " ms); loopd's fds: %u at the start, at most %u meanwhile",
                who, counts->str, flood_max_latency(f, who, OUTCOME_LIMIT) / 1000, f->fd_start, f->fd_max);
        for (guint i = 0; i < f->calls->len && shown < 5; i++) {
                Call *c = f->calls->pdata[i];
                if (g_str_equal(c->who, who) && c->outcome == OUTCOME_OTHER) {
                        g_test_message("%s's call #%u: %s", who, i, c->error);
                        shown++;
                }
        }
}

/* Detaches (as root) every device a call of the flood got. */
static void flood_detach_attached(Flood *f)
{
        for (guint i = 0; i < f->calls->len; i++) {
                Call *c = f->calls->pdata[i];
                g_autoptr(GError) error = NULL;

                if (!c->device)
                        continue;
                if (!harness_detach(f->h->bus, c->device, NULL, &error))
                        flood_fail("cannot detach %s: %s", c->device, error->message);
                g_clear_pointer(&c->device, g_free);
        }
}

/* Ends a flood whatever state it is in: closes its connections, waits for every callback, detaches what got
 * attached. */
static void flood_clear(Flood *f)
{
        for (guint i = 0; i < f->connections->len; i++)
                (void)g_dbus_connection_close_sync(f->connections->pdata[i], NULL, NULL);
        if (!flood_wait_answered(f, f->calls->len, HARNESS_TIMEOUT_MS, HARNESS_TIMEOUT_MS)) {
                /* A callback may still come: leak the calls rather than free what it would write to. */
                flood_fail("%u calls never finished, even after their connections were closed",
                        f->calls->len - f->n_answered);
                g_main_context_pop_thread_default(f->context);
                return;
        }
        flood_detach_attached(f);
        g_ptr_array_unref(f->calls);
        g_ptr_array_unref(f->connections);
        g_main_context_pop_thread_default(f->context);
        g_main_context_unref(f->context);
}

/* The cancellation ids of the checks the fake authority got on behalf of these connections. */
static GPtrArray *checks_from(Harness *h, GDBusConnection *const *connections, guint n)
{
        g_autoptr(GPtrArray) calls = fake_authority_calls(h->authority);
        GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);

        for (guint i = 0; i < calls->len; i++) {
                FakeAuthCall *call = calls->pdata[i];
                for (guint k = 0; k < n; k++)
                        if (g_strcmp0(call->subject_bus_name,
                                    g_dbus_connection_get_unique_name(connections[k])) == 0)
                                g_ptr_array_add(ids, g_strdup(call->cancellation_id));
        }
        return ids;
}

static guint n_checks_from(Harness *h, GDBusConnection *connection)
{
        g_autoptr(GPtrArray) ids = checks_from(h, &connection, 1);

        return ids->len;
}

/* A cancellation id must name one check: non-empty, and no two checks share one. */
static void assert_cancellation_ids_sound(Harness *h)
{
        g_autoptr(GPtrArray) calls = fake_authority_calls(h->authority);
        g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

        for (guint i = 0; i < calls->len; i++) {
                const char *id = ((FakeAuthCall *)calls->pdata[i])->cancellation_id;
                if (!id || !*id) {
                        flood_fail("check #%u carried no cancellation id: loopd cannot cancel it", i);
                        return;
                }
                if (!g_hash_table_add(seen, (char *)id))
                        flood_fail("check #%u reuses the cancellation id '%s'", i, id);
        }
}

static bool cancelled(Harness *h, const char *id)
{
        g_autoptr(GPtrArray) done = fake_authority_cancellations(h->authority);

        return g_ptr_array_find_with_equal_func(done, id, g_str_equal, NULL);
}

/* How many of the checks in ids polkit was not asked to cancel. */
static guint n_uncancelled(Harness *h, GPtrArray *ids)
{
        guint missing = 0;

        for (guint i = 0; i < ids->len; i++)
                missing += !cancelled(h, ids->pdata[i]);
        return missing;
}

/* Neither the kernel nor loopd knows a device backed by one of the test's images. */
static void assert_nothing_attached(Harness *h)
{
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->image_dir);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) list = harness_list_devices(h->bus, &error);

        for (guint i = 0; i < left->len; i++)
                flood_fail("%s is still attached to an image of the test", (char *)left->pdata[i]);
        harness_assert_no_error(error);
        for (gsize i = 0; list && i < g_variant_n_children(list); i++) {
                const char *device, *backing;
                g_variant_get_child(list, i, "(&s&o&sttubbbu)", &device, NULL, &backing, NULL, NULL, NULL,
                        NULL, NULL, NULL, NULL);
                if (g_str_has_prefix(backing, h->image_dir))
                        flood_fail("ListDevices still lists %s, backed by %s", device, backing);
        }
}

/* Stops the reader and checks that every ListDevices that reached loopd was answered, each within 2 s.
 * dbus-daemon itself refuses calls to loopd while its queue to loopd is full of the flood's fds: those are
 * counted apart (no daemon can answer what the bus does not deliver). */
static void reader_stop_and_check(HarnessReader *r)
{
        if (!r->thread)
                return;
        harness_reader_stop(r);
        g_test_message(
                "B's ListDevices during the flood: %u calls, %u failed, %u refused by dbus-daemon, the "
                "slowest took %" G_GINT64_FORMAT " ms",
                r->calls, r->failures, r->bus_refusals, r->max_us / 1000);
        g_assert_cmpuint(r->calls, >, r->bus_refusals);
        g_assert_cmpuint(r->failures, ==, 0);
        g_assert_cmpint(r->max_us, <, 2 * G_USEC_PER_SEC);
}

/* n connections of user into ret; false when one could not be made. */
static bool connect_many(Harness *h, const char *user, guint n, GPtrArray *ret)
{
        for (guint i = 0; i < n; i++) {
                GDBusConnection *c = harness_connect_as(h, user);
                if (!c)
                        return false;
                g_ptr_array_add(ret, c);
        }
        return true;
}

/* A new 4 MiB image, opened with flags. */
static int image_new_open(Harness *h, const char *name, int flags)
{
        g_autofree char *path = harness_image_path(h, name);
        int fd;

        image_create(path, 4 * MiB);
        fd = open(path, flags | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

/* ---------------------------------------------------------------------------------------------------- */

/* A floods loopd with 2,000 Attach calls over 16 connections while polkit never answers: loopd keeps at most
 * 16 of them (and their fds), refuses the rest at once, still serves B, and when A leaves it cancels A's
 * checks and lets go of A's fds. */
static void test_pending_calls_bounded_per_user(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { N_CONNECTIONS = 16, N_CALLS = 2000 };
        const guint bound = DEFAULT_BOUND;
        g_autoptr(GPtrArray) a = g_ptr_array_new();
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        HarnessReader reader = { .connection = harness_connect_as(h, HARNESS_USER_B), .interval_ms = 20 };
        Flood f;
        int fd;

        if (!connect_many(h, HARNESS_USER_A, N_CONNECTIONS, a) || !b || !reader.connection)
                return;
        /* Read-only: a second read-write device of one image would be refused as a second writer. */
        fd = image_new_open(h, "flood.img", O_RDONLY);
        if (fd < 0)
                return;
        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, HOLD_MS);

        flood_init(&f, h);
        harness_reader_start(&reader);
        /* 125 calls a connection: under dbus-daemon's 128 pending replies per connection. */
        for (guint i = 0; i < N_CALLS; i++) {
                flood_send(&f, a->pdata[i % N_CONNECTIONS], "A", "Attach", fd);
                if (i == N_CALLS / 2)
                        flood_send(&f, b, "B", "Attach", fd);
                if (i % 25 == 24)
                        flood_run_for(&f, 0);
        }
        /* All but the calls loopd keeps (A's bound, B's one) are answered soon; then a moment for
         * stragglers. */
        (void)flood_wait_answered(&f, N_CALLS - bound, 5000, 60000);
        flood_run_for(&f, 500);
        /* dbus-daemon refuses calls to loopd while its queue to loopd is full of A's fds ("destination has
         * a full message queue"): not loopd's doing. If it refused B's, B calls again now that the flood has
         * been delivered. */
        for (guint tries = 0; tries < 3 && flood_count(&f, "B", OUTCOME_BUS_LIMIT) > tries; tries++) {
                flood_send(&f, b, "B", "Attach", fd);
                flood_run_for(&f, 500);
        }
        close(fd);
        g_assert_true(flood_until(&f, 5000, n_checks_from(h, b) >= 1));
        reader_stop_and_check(&reader);
        flood_report(&f, "A");

        guint pending = flood_count(&f, "A", OUTCOME_PENDING), limit = flood_count(&f, "A", OUTCOME_LIMIT);
        guint reached = N_CALLS - flood_count(&f, "A", OUTCOME_BUS_LIMIT);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_OTHER), ==, 0);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_OK), ==, 0);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_CLOSED), ==, 0);
        /* dbus-daemon's own limits must leave loopd enough of the flood for the rest to mean something. */
        g_assert_cmpuint(reached, >=, 4 * bound);
        g_assert_cmpuint(pending, ==, MIN(bound, reached));
        g_assert_cmpuint(limit, ==, reached - pending);
        g_assert_cmpint(flood_max_latency(&f, "A", OUTCOME_LIMIT), <, QUICK_US);
        g_assert_cmpuint(f.fd_max, <=, f.fd_start + bound + LOOKUP_WAITING * N_CONNECTIONS + FD_SLACK);

        g_autoptr(GPtrArray) a_ids = checks_from(h, (GDBusConnection **)a->pdata, a->len);
        g_autoptr(GPtrArray) b_ids = checks_from(h, &b, 1);
        g_assert_cmpuint(a_ids->len, <=, bound);
        g_assert_cmpuint(a_ids->len, ==, pending);
        /* B is another uid: its call went to polkit and waits there, it was not refused. */
        flood_report(&f, "B");
        g_assert_cmpuint(flood_count(&f, "B", OUTCOME_PENDING), ==, 1);
        g_assert_cmpuint(b_ids->len, ==, 1);
        assert_cancellation_ids_sound(h);

        /* A leaves: polkit hears of every check still pending for A, and loopd drops A's calls and fds. */
        for (guint i = 0; i < a->len; i++)
                (void)g_dbus_connection_close_sync(a->pdata[i], NULL, NULL);
        g_assert_true(flood_wait_answered(&f, N_CALLS, 5000, 10000));
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_PENDING), ==, 0);
        (void)flood_until(&f, 5000, n_uncancelled(h, a_ids) == 0);
        g_assert_cmpuint(n_uncancelled(h, a_ids), ==, 0);
        g_assert_cmpuint(n_uncancelled(h, b_ids), ==, b_ids->len); /* B is still there */
        /* B's waiting call holds one fd. */
        (void)flood_until(&f, 5000, loopd_fd_count(h) <= f.fd_start + 1 + FD_SETTLED_SLACK);
        g_assert_cmpuint(loopd_fd_count(h), <=, f.fd_start + 1 + FD_SETTLED_SLACK);

        /* B leaves too. */
        (void)g_dbus_connection_close_sync(b, NULL, NULL);
        (void)flood_until(&f, 5000, n_uncancelled(h, b_ids) == 0);
        g_assert_cmpuint(n_uncancelled(h, b_ids), ==, 0);
        (void)flood_until(&f, 5000, loopd_fd_count(h) <= f.fd_start + FD_SETTLED_SLACK);
        g_assert_cmpuint(loopd_fd_count(h), <=, f.fd_start + FD_SETTLED_SLACK);
        flood_clear(&f);
        assert_nothing_attached(h);
        g_assert_true(harness_loopd_alive(h));
}

/* --max-pending-per-user 3: the bound counts A's calls on every connection, MountImage with Attach, frees up
 * when a connection goes; it is per uid, and root has one too. */
static void test_bound_is_configurable_and_covers_root(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "bound.img");
        g_autofree char *root_image = harness_image_path(h, "root.img");
        GDBusConnection *c1 = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *c2 = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *c3 = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *root_device = NULL;
        g_autoptr(GError) error = NULL;
        Call *first[2], *second[3], *c;
        guint n;
        Flood f;
        int rw, ro;

        if (!c1 || !c2 || !c3)
                return;
        image_create(image, 4 * MiB);
        image_create(root_image, 4 * MiB);
        /* A 4 MiB file a root process just made: these opens do not fail. */
        rw = open(image, O_RDWR | O_CLOEXEC);
        ro = open(image, O_RDONLY | O_CLOEXEC);
        g_assert_true(rw >= 0 && ro >= 0);
        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, HOLD_MS);
        flood_init(&f, h);

        /* Two of A's calls wait for polkit on one connection; three more come on another: one fits. */
        for (guint i = 0; i < G_N_ELEMENTS(first); i++)
                first[i] = flood_send(&f, c1, "A", "Attach", rw);
        g_assert_true(fake_authority_wait_calls(h->authority, 2, 5000));
        for (guint i = 0; i < G_N_ELEMENTS(second); i++)
                second[i] = flood_send(&f, c2, "A", "Attach", rw);
        g_assert_true(flood_wait_answered(&f, 2, 5000, 10000));
        flood_run_for(&f, 300);
        g_assert_cmpint(first[0]->outcome, ==, OUTCOME_PENDING);
        g_assert_cmpint(first[1]->outcome, ==, OUTCOME_PENDING);
        g_assert_cmpint(second[0]->outcome, ==, OUTCOME_PENDING);
        g_assert_cmpint(second[1]->outcome, ==, OUTCOME_LIMIT);
        g_assert_cmpint(second[2]->outcome, ==, OUTCOME_LIMIT);
        g_assert_cmpint(flood_max_latency(&f, "A", OUTCOME_LIMIT), <, QUICK_US);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 3);

        /* MountImage is held to the same bound. */
        c = flood_send(&f, c3, "A", "MountImage", ro);
        g_assert_true(flood_wait_call(&f, c, 10000));
        g_assert_cmpint(c->outcome, ==, OUTCOME_LIMIT);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 3);

        /* The bound is per uid: root, whom polkit does not hold up, attaches and detaches meanwhile. */
        g_assert_true(harness_attach_path(h->bus, root_image, O_RDWR, NULL, &root_device, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (root_device) {
                g_assert_true(harness_detach(h->bus, root_device, NULL, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
        }

        /* Root is bound too: polkit does not hold its calls, but reading a hung image does. */
        HarnessHang hang = { 0 };
        GDBusConnection *r = harness_connect_as(h, NULL);
        if (r && harness_hang_start(h, &hang)) {
                int hung = open(hang.file, O_RDONLY | O_CLOEXEC);
                Call *held[3];

                g_assert_cmpint(hung, >=, 0);
                for (guint i = 0; hung >= 0 && i < G_N_ELEMENTS(held); i++)
                        held[i] = flood_send(&f, r, "root", "Attach", hung);
                flood_run_for(&f, 500); /* they reach loopd and get stuck reading */
                c = hung >= 0 ? flood_send(&f, r, "root", "Attach", hung) : NULL;
                if (c) {
                        g_assert_true(flood_wait_call(&f, c, 10000));
                        g_assert_cmpint(c->outcome, ==, OUTCOME_LIMIT);
                        g_assert_cmpint(flood_max_latency(&f, "root", OUTCOME_LIMIT), <, QUICK_US);
                        for (guint i = 0; i < G_N_ELEMENTS(held); i++)
                                g_assert_cmpint(held[i]->outcome, ==, OUTCOME_PENDING);
                }
                /* The reads fail once the server is gone: root's calls end (with an error: nothing to
                 * attach). */
                harness_hang_clear(&hang);
                for (guint i = 0; hung >= 0 && i < G_N_ELEMENTS(held); i++) {
                        g_assert_true(flood_wait_call(&f, held[i], 10000));
                        g_assert_cmpint(held[i]->outcome, !=, OUTCOME_OK);
                }
                if (hung >= 0)
                        close(hung);
                flood_report(&f, "root");
        }
        harness_hang_clear(&hang);

        /* c1's two calls end with c1: polkit is told, and their places are free again... */
        g_autoptr(GPtrArray) c1_ids = checks_from(h, &c1, 1);
        g_assert_cmpuint(c1_ids->len, ==, 2);
        (void)g_dbus_connection_close_sync(c1, NULL, NULL);
        g_assert_true(flood_wait_call(&f, first[0], 5000));
        g_assert_true(flood_wait_call(&f, first[1], 5000));
        (void)flood_until(&f, 5000, n_uncancelled(h, c1_ids) == 0);
        g_assert_cmpuint(n_uncancelled(h, c1_ids), ==, 0);

        /* ...for a MountImage and an Attach, which go to polkit; a third is one too many. */
        n = fake_authority_n_calls(h->authority);
        c = flood_send(&f, c3, "A", "MountImage", ro);
        g_assert_true(fake_authority_wait_calls(h->authority, n + 1, 5000));
        c = flood_send(&f, c3, "A", "Attach", rw);
        g_assert_true(fake_authority_wait_calls(h->authority, n + 2, 5000));
        flood_run_for(&f, 300);
        g_assert_cmpint(c->outcome, ==, OUTCOME_PENDING);
        c = flood_send(&f, c3, "A", "Attach", rw);
        g_assert_true(flood_wait_call(&f, c, 10000));
        g_assert_cmpint(c->outcome, ==, OUTCOME_LIMIT);
        g_assert_cmpint(flood_max_latency(&f, "A", OUTCOME_LIMIT), <, QUICK_US);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_PENDING), ==, 3);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_OTHER), ==, 0);
        assert_cancellation_ids_sound(h);
        flood_report(&f, "A");
        flood_clear(&f);
        assert_nothing_attached(h);
        g_assert_true(harness_loopd_alive(h));
        close(rw);
        close(ro);
}

/* The real polkitd, slowed down by a rule that runs sleep for every check of A's, then says yes. */
static const char rules_slow_grant_a[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (action.id.indexOf(\"org.loopd1.\") == 0 && subject.user == \"" HARNESS_USER_A "\") {\n"
        "                polkit.spawn([\"/bin/sleep\", \"1\"]);\n"
        "                return polkit.Result.YES;\n"
        "        }\n"
        "});\n";
#define SLOW_BOUND 8

/* A's 200 Attach calls over 8 connections meet a real, slow polkit: loopd keeps at most its bound of them,
 * refuses the rest at once, attaches what polkit allowed, and B's ListDevices stays fast. */
static void test_slow_real_polkit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { N_CONNECTIONS = 8, N_CALLS = 200 };
        const guint bound = SLOW_BOUND;
        g_autoptr(GPtrArray) a = g_ptr_array_new();
        HarnessReader reader = { .connection = harness_connect_as(h, HARNESS_USER_B), .interval_ms = 20 };
        gint64 last_refusal = 0, first_success = G_MAXINT64;
        Flood f;
        int fd;

        if (!connect_many(h, HARNESS_USER_A, N_CONNECTIONS, a) || !reader.connection)
                return;
        /* Read-only: a second read-write device of one image would be refused as a second writer. */
        fd = image_new_open(h, "slow.img", O_RDONLY);
        if (fd < 0)
                return;

        flood_init(&f, h);
        harness_reader_start(&reader);
        for (guint i = 0; i < N_CALLS; i++) {
                flood_send(&f, a->pdata[i % N_CONNECTIONS], "A", "Attach", fd);
                if (i % 25 == 24)
                        flood_run_for(&f, 0);
        }
        close(fd);
        /* polkit takes a second or more a check: the allowed calls end one by one. */
        (void)flood_wait_answered(&f, N_CALLS, 10000, 50000);
        reader_stop_and_check(&reader);
        flood_report(&f, "A");

        guint ok = flood_count(&f, "A", OUTCOME_OK), limit = flood_count(&f, "A", OUTCOME_LIMIT);
        guint reached = N_CALLS - flood_count(&f, "A", OUTCOME_BUS_LIMIT);
        for (guint i = 0; i < f.calls->len; i++) {
                Call *c = f.calls->pdata[i];
                if (c->outcome == OUTCOME_LIMIT)
                        last_refusal = MAX(last_refusal, c->answered_us);
                else if (c->outcome == OUTCOME_OK)
                        first_success = MIN(first_success, c->answered_us);
        }
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_PENDING), ==, 0);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_OTHER), ==, 0);
        g_assert_cmpuint(flood_count(&f, "A", OUTCOME_CLOSED), ==, 0);
        g_assert_cmpuint(reached, >=, 4 * bound);
        /* The first calls to reach loopd all fit, and polkit allows them all. */
        g_assert_cmpuint(ok, >=, MIN(bound, reached));
        g_assert_cmpuint(limit, ==, reached - ok);
        /* Refused at once: polkit answers one check a second, so a refusal after polkit would take seconds.
         */
        g_assert_cmpint(flood_max_latency(&f, "A", OUTCOME_LIMIT), <, QUICK_US);
        /* When every refusal came before the first attach, no place had become free yet: exactly the bound.
         */
        if (last_refusal < first_success)
                g_assert_cmpuint(ok, ==, bound);
        else
                g_test_message("a place became free while the flood was still arriving: %u attached", ok);
        g_assert_cmpuint(f.fd_max, <=, f.fd_start + bound + LOOKUP_WAITING * N_CONNECTIONS + FD_SLACK);

        flood_detach_attached(&f);
        flood_clear(&f);
        assert_nothing_attached(h);
        g_assert_true(harness_loopd_alive(h));
}

/* Reads "Max open files" soft and hard from /proc/PID/limits. */
static bool read_nofile_limits(GPid pid, char ret_soft[static 32], char ret_hard[static 32])
{
        g_autofree char *path = g_strdup_printf("/proc/%d/limits", (int)pid);
        g_autofree char *contents = NULL;
        g_auto(GStrv) lines = NULL;

        if (!g_file_get_contents(path, &contents, NULL, NULL))
                return false;
        lines = g_strsplit(contents, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, "Max open files") &&
                        sscanf(*l + strlen("Max open files"), "%31s %31s", ret_soft, ret_hard) == 2)
                        return true;
        return false;
}

/* loopd started with a low soft RLIMIT_NOFILE runs with the soft limit raised to the hard one. */
static void test_soft_fd_limit_raised(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        struct rlimit saved, low;
        char soft[32], hard[32];
        g_autofree char *expected_hard = NULL;
        bool started;

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 256) {
                g_test_skip("the hard fd limit is too low to start loopd below it");
                return;
        }
        /* loopd inherits our limits: start it with a soft limit well below the hard one, as systemd starts
         * services (1024 soft, 512K hard). */
        low = (struct rlimit){ .rlim_cur = MIN((rlim_t)1024, saved.rlim_max / 2),
                .rlim_max = saved.rlim_max };
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &low), ==, 0);
        started = harness_start_loopd(h);
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        if (!started)
                return;

        g_assert_true(read_nofile_limits(harness_loopd_pid(h), soft, hard));
        g_test_message("loopd's Max open files: soft %s, hard %s", soft, hard);
        expected_hard = saved.rlim_max == RLIM_INFINITY
                ? g_strdup("unlimited")
                : g_strdup_printf("%llu", (unsigned long long)saved.rlim_max);
        g_assert_cmpstr(hard, ==, expected_hard);
        g_assert_cmpstr(soft, ==, hard);
        g_assert_true(harness_loopd_alive(h));
}

int main(int argc, char **argv)
{
        static const char *const bound3_args[] = { "--max-pending-per-user", "3", NULL };
        static const char *const slow_bound_args[] = { "--max-pending-per-user", G_STRINGIFY(SLOW_BOUND),
                NULL };
        static const HarnessOptions fake = { .polkit = HARNESS_POLKIT_FAKE };
        static const HarnessOptions bound3 = { .polkit = HARNESS_POLKIT_FAKE, .loopd_args = bound3_args };
        static const HarnessOptions slow = { .polkit = HARNESS_POLKIT_REAL,
                .polkit_rules = rules_slow_grant_a,
                .loopd_args = slow_bound_args };
        static const HarnessOptions no_loopd = { .polkit = HARNESS_POLKIT_FAKE, .no_loopd = true };
        struct rlimit rl;

        harness_init(&argc, &argv);
        /* Thousands of calls in flight hold as many fds in this process for a moment. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
        }

        harness_add(
                "/loopd/flood/pending-calls-bounded-per-user", test_pending_calls_bounded_per_user, &fake);
        harness_add("/loopd/flood/bound-is-configurable-and-covers-root",
                test_bound_is_configurable_and_covers_root, &bound3);
        harness_add("/loopd/flood/slow-real-polkit", test_slow_real_polkit, &slow);
        harness_add("/loopd/flood/soft-fd-limit-raised", test_soft_fd_limit_raised, &no_loopd);

        return g_test_run();
}
