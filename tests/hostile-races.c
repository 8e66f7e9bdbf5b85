/* hostile-races.c: the hostile suite's races: eight clients attaching and detaching at once while a losetup
 * loop steals devices under them, devices bound and unbound while clients list them, and the per-user limit
 * under concurrent calls. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "hostile.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Concurrency: many clients, and losetup stealing devices under them */

typedef struct Shared {
        GMutex lock;
        GHashTable *incarnations; /* "loopN:diskseq" every Attach returned: one caller each */
        GPtrArray *used; /* devices ever handed out */
        GPtrArray *problems; /* what went wrong, for the main thread to report */
        guint attached, refused;
        gint partitions_restored; /* devices whose partitions a table re-read dropped for a moment */
} Shared;

typedef struct Client {
        Shared *shared;
        GDBusConnection *connection;
        char *image;
        guint cycles;
        const char *const *clean_errors; /* what a refused Attach may say */
} Client;

static void shared_problem(Shared *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void shared_problem(Shared *s, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_mutex_lock(&s->lock);
        g_ptr_array_add(s->problems, g_strdup_vprintf(fmt, ap));
        g_mutex_unlock(&s->lock);
        va_end(ap);
}

static bool error_is_one_of(const GError *error, const char *const *names, char **ret_name)
{
        g_autofree char *remote = g_dbus_error_get_remote_error(error);

        for (const char *const *n = names; *n; n++)
                if (g_strcmp0(remote, *n) == 0)
                        return true;
        *ret_name = g_steal_pointer(&remote);
        return false;
}

/* Attach, check that the device is the caller's alone, Detach; cycles times. */
static gpointer client_thread(gpointer data)
{
        Client *c = data;
        Shared *s = c->shared;

        for (guint i = 0; i < c->cycles; i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL, *backing = NULL, *seq = NULL, *key = NULL, *name = NULL;

                if (!harness_attach_path(c->connection, c->image, O_RDWR, NULL, &device, &error)) {
                        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) {
                                /* loopd may still finish it: take back what it attaches, then go on. */
                                shared_problem(s, "loopd did not answer an Attach of %s within %d ms",
                                        c->image, HARNESS_TIMEOUT_MS);
                                g_usleep(5 * G_USEC_PER_SEC);
                                g_autoptr(GPtrArray) late = oracle_loops_bound_to(c->image);
                                for (guint k = 0; k < late->len; k++)
                                        (void)harness_detach(c->connection, late->pdata[k], NULL, NULL);
                                g_mutex_lock(&s->lock);
                                s->refused++;
                                g_mutex_unlock(&s->lock);
                                continue;
                        }
                        if (!error_is_one_of(error, c->clean_errors, &name))
                                shared_problem(s, "Attach of %s: %s: %s", c->image, name ? name : "?",
                                        error->message);
                        g_autoptr(GPtrArray) left = loops_bound_to_after_settling(c->image);
                        if (left->len > 0)
                                shared_problem(s, "a refused Attach left %s bound to %s",
                                        (char *)left->pdata[0], c->image);
                        g_mutex_lock(&s->lock);
                        s->refused++;
                        g_mutex_unlock(&s->lock);
                        continue;
                }

                backing = backing_of(device);
                seq = test_read_sysfs("/sys/block/%s/diskseq", short_name(device));
                if (g_strcmp0(backing, c->image) != 0)
                        shared_problem(s, "Attach of %s returned %s, which is bound to %s", c->image, device,
                                backing ? backing : "nothing");
                /* With a udevd running, a losetup that opened this device for writing (racing for the
                 * number) makes udev re-read its partition table on close, which drops partitions added with
                 * BLKPG on a kernel without partition parsers; loopd puts them back. */
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
                for (guint k = 0; nodes->len != 2 && k < 50; k++) {
                        g_usleep(100 * 1000);
                        g_ptr_array_unref(nodes);
                        nodes = oracle_partition_nodes(device);
                        if (nodes->len == 2)
                                g_atomic_int_inc(&s->partitions_restored);
                }
                if (nodes->len != 2)
                        shared_problem(s, "%s (%s) has %u partition nodes, expected 2", device, c->image,
                                nodes->len);
                key = g_strdup_printf("%s:%s", device, seq ? seq : "?");
                g_mutex_lock(&s->lock);
                s->attached++;
                if (!g_ptr_array_find_with_equal_func(s->used, device, g_str_equal, NULL))
                        g_ptr_array_add(s->used, g_strdup(device));
                bool twice = !g_hash_table_add(s->incarnations, g_strdup(key));
                g_mutex_unlock(&s->lock);
                if (twice)
                        shared_problem(s, "%s was handed out twice", key);

                if (!harness_detach(c->connection, device, NULL, &error))
                        shared_problem(s, "Detach of %s (%s): %s", device, c->image, error->message);
                g_autoptr(GPtrArray) left = oracle_loops_bound_to(c->image);
                if (left->len > 0)
                        shared_problem(s, "after Detach of %s, %s is still bound to %s", device,
                                (char *)left->pdata[0], c->image);
        }
        return NULL;
}

/* A shell loop binding free devices with losetup and unbinding them, until stop_file exists. */
static GSubprocess *start_stealer(const char *image, const char *stop_file, const char *count_file)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *script =
                g_strdup_printf("n=0; while [ ! -e '%s' ]; do d=$(losetup -f --show '%s' 2>/dev/null) && "
                                "{ n=$((n+1)); losetup -d \"$d\"; }; done; echo $n > '%s'",
                        stop_file, image, count_file);
        GSubprocess *p = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, &error, "/bin/sh", "-c", script, NULL);

        if (!p)
                g_test_fail_printf("cannot start the losetup loop: %s", error->message);
        return p;
}

void test_concurrent_clients_and_losetup(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const guint n_clients = 8, cycles = 25;
        /* Timeout: when a udevd (another test run's) comes and goes meanwhile, udev may not process a device
         * in time; the attach is then rolled back. */
        const char *const clean[] = { LOOPD_ERROR_NO_FREE_DEVICE, LOOPD_ERROR_BUSY, LOOPD_ERROR_TIMEOUT,
                NULL };
        g_autofree char *stop = g_build_filename(h->tmpdir, "stop-stealing", NULL);
        Shared s = { 0 };
        Client clients[8];
        GThread *threads[8];
        GSubprocess *stealers[2] = { NULL };
        char *counts[2] = { NULL };

        g_mutex_init(&s.lock);
        s.incarnations = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        s.used = g_ptr_array_new_with_free_func(g_free);
        s.problems = g_ptr_array_new_with_free_func(g_free);
        if (h->authority)
                fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 0);

        for (guint i = 0; i < n_clients; i++) {
                g_autofree char *name = g_strdup_printf("client-%u.img", i);
                /* Half root, half the two test users: owners and the per-user count are in play too. */
                const char *user = i % 2 == 0 ? NULL : i % 4 == 1 ? HARNESS_USER_A : HARNESS_USER_B;
                clients[i] = (Client){ .shared = &s,
                        .image = harness_image_path(h, name),
                        .cycles = cycles,
                        .clean_errors = clean,
                        .connection = harness_connect_as(h, user) };
                image_create(clients[i].image, 16 * MiB);
                image_sfdisk(clients[i].image, "label: gpt\nsize=4MiB, type=linux\ntype=linux\n", 0);
                g_assert_nonnull(clients[i].connection);
                if (!clients[i].connection)
                        return;
        }
        for (guint i = 0; i < G_N_ELEMENTS(stealers); i++) {
                g_autofree char *name = g_strdup_printf("stolen-%u.img", i);
                g_autofree char *img = harness_image_path(h, name);
                g_autofree char *count = g_strdup_printf("%s/stealer-%u.count", h->tmpdir, i);
                image_create(img, 4 * MiB);
                counts[i] = g_strdup(count);
                stealers[i] = start_stealer(img, stop, count);
        }

        /* ListDevices over and over while the clients work: loopd keeps answering everyone. */
        HarnessReader reader = { .connection = harness_connect_as(h, HARNESS_USER_B), .interval_ms = 50 };
        if (reader.connection)
                harness_reader_start(&reader);
        gint64 t0 = g_get_monotonic_time();
        for (guint i = 0; i < n_clients; i++)
                threads[i] = g_thread_new("client", client_thread, &clients[i]);
        for (guint i = 0; i < n_clients; i++)
                g_thread_join(threads[i]);
        harness_reader_stop(&reader);
        g_test_message(
                "a reader's ListDevices meanwhile: %u calls, %u failed, %u refused by dbus-daemon, slowest "
                "%" G_GINT64_FORMAT " ms",
                reader.calls, reader.failures, reader.bus_refusals, reader.max_us / 1000);
        g_assert_cmpuint(reader.failures + reader.bus_refusals, ==, 0);
        g_test_message("%u clients x %u cycles in %" G_GINT64_FORMAT
                       " ms: %u attached, %u refused; %d had their "
                       "partitions dropped for a moment",
                n_clients, cycles, (g_get_monotonic_time() - t0) / 1000, s.attached, s.refused,
                s.partitions_restored);

        g_assert_true(g_file_set_contents(stop, "", 0, NULL));
        for (guint i = 0; i < G_N_ELEMENTS(stealers); i++) {
                g_autofree char *n = NULL;
                if (!stealers[i])
                        continue;
                g_assert_true(g_subprocess_wait(stealers[i], NULL, NULL));
                g_object_unref(stealers[i]);
                if (g_file_get_contents(counts[i], &n, NULL, NULL))
                        g_test_message(
                                "losetup loop %u bound and unbound %s devices meanwhile", i, g_strstrip(n));
                g_free(counts[i]);
        }

        for (guint i = 0; i < s.problems->len; i++)
                g_test_fail_printf("%s", (char *)s.problems->pdata[i]);
        g_assert_cmpuint(s.attached + s.refused, ==, n_clients * cycles);
        /* Refusals are clean, but most calls must have worked. */
        g_assert_cmpuint(s.attached, >=, n_clients * cycles * 9 / 10);
        g_assert_true(harness_loopd_alive(h));
        check_nothing_left(h, s.used);

        for (guint i = 0; i < n_clients; i++)
                g_free(clients[i].image);
        g_hash_table_unref(s.incarnations);
        g_ptr_array_unref(s.used);
        g_ptr_array_unref(s.problems);
        g_mutex_clear(&s.lock);
}

/* Loop devices bound and unbound as fast as the kernel allows (devices of the test's own, LOOP_CTL_ADD at
 * numbers nobody uses, and its own backing file) while a client lists: a device that goes away while loopd
 * reads its sysfs attributes (a read then fails with ENODEV) is simply not listed; it must not fail
 * ListDevices. */
static const char churn_script[] =
        "import errno, fcntl, os, sys, time\n"
        "image, base, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
        "ctl = os.open('/dev/loop-control', os.O_RDWR)\n"
        "backing = os.open(image, os.O_RDWR)\n"
        "def settle(call):\n"
        "    for _ in range(2000):\n"
        "        try:\n"
        "            return call()\n"
        "        except OSError as e:\n"
        "            if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENXIO): raise\n"
        "            time.sleep(0.001)\n"
        "    return call()\n"
        "numbers, cycles = [], 0\n"
        "for n in range(base, base + 64):\n"
        "    if len(numbers) == 4: break\n"
        "    try:\n"
        "        fcntl.ioctl(ctl, 0x4C80, n)\n"
        "    except OSError as e:\n"
        "        if e.errno == errno.EEXIST: continue\n"
        "        raise\n"
        "    numbers.append(n)\n"
        "end = time.monotonic() + seconds\n"
        "while time.monotonic() < end:\n"
        "    for n in numbers:\n"
        "        fd = settle(lambda: os.open('/dev/loop%d' % n, os.O_RDWR))\n"
        "        try:\n"
        "            fcntl.ioctl(fd, 0x4C00, backing)\n"
        "            fcntl.ioctl(fd, 0x4C01, 0)\n"
        "            cycles += 1\n"
        "        except OSError as e:\n"
        "            if e.errno != errno.EBUSY: raise\n"
        "        os.close(fd)\n"
        "for n in numbers:\n"
        "    for _ in range(10):\n"
        "        try:\n"
        "            settle(lambda: fcntl.ioctl(ctl, 0x4C81, n)); break\n"
        "        except OSError as e:\n"
        "            if e.errno != errno.EBUSY: raise\n"
        "print(cycles)\n";

typedef struct Lister {
        GDBusConnection *connection;
        gint64 end;
        guint calls, failures;
        char *first_error;
} Lister;

static gpointer lister_thread(gpointer data)
{
        Lister *l = data;

        while (g_get_monotonic_time() < l->end) {
                g_autoptr(GError) e = NULL;
                g_autoptr(GVariant) list = harness_list_devices(l->connection, &e);
                l->calls++;
                if (!list && l->failures++ == 0)
                        l->first_error = g_strdup(e->message);
        }
        return NULL;
}

void test_devices_churning_while_listing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "churn.img");
        g_autofree char *base = g_strdup_printf("%u", 3000 + (unsigned)(getpid() % 1000) * 8);
        g_autofree char *out = NULL;
        g_autoptr(GSubprocess) churn = NULL;
        g_autoptr(GError) error = NULL;
        Lister listers[3] = { { 0 } };
        GThread *threads[3];
        guint calls = 0, failures = 0;

        image_create(image, 4 * MiB);
        churn = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, "python3", "-c", churn_script,
                image, base, "10", NULL);
        g_assert_no_error(error);
        if (!churn)
                return;
        for (guint i = 0; i < G_N_ELEMENTS(listers); i++) {
                listers[i].connection = harness_connect_as(h, HARNESS_USER_B);
                listers[i].end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
                threads[i] = g_thread_new("lister", lister_thread, &listers[i]);
        }
        for (guint i = 0; i < G_N_ELEMENTS(listers); i++) {
                g_thread_join(threads[i]);
                calls += listers[i].calls;
                failures += listers[i].failures;
                if (listers[i].first_error)
                        g_test_message("ListDevices failed while devices came and went (first of %u): %s",
                                listers[i].failures, listers[i].first_error);
                g_free(listers[i].first_error);
        }
        g_assert_true(g_subprocess_communicate_utf8(churn, NULL, NULL, &out, NULL, &error));
        g_assert_no_error(error);
        g_assert_true(g_subprocess_get_successful(churn));
        g_test_message("%u ListDevices calls while devices were bound and unbound %s times: %u failed",
                calls, out ? g_strstrip(out) : "?", failures);
        g_assert_cmpuint(failures, ==, 0);
        g_assert_true(harness_loopd_alive(h));
        check_nothing_left(h, NULL);
}

/* The per-user limit holds when the calls come at once: each user gets exactly the limit (3), the rest
 * LimitExceeded; root has no limit. */
void test_limit_under_concurrent_calls(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        enum { PER_USER = 12, ROOT = 5, N = 2 * PER_USER + ROOT };
        const char *users[3] = { HARNESS_USER_A, HARNESS_USER_B, NULL };
        g_autoptr(GMainContext) context = g_main_context_new();
        GDBusConnection *connections[3][4];
        Pending p[N];
        guint n_done = 0, ok[3] = { 0 }, limited[3] = { 0 };
        g_autoptr(GPtrArray) used = g_ptr_array_new_with_free_func(g_free);

        /* Every polkit answer takes 300 ms: all calls are in flight together, then answered in a burst. */
        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 300);
        g_main_context_push_thread_default(context);
        for (guint u = 0; u < 3; u++)
                for (guint k = 0; k < 4; k++) {
                        connections[u][k] = harness_connect_as(h, users[u]);
                        g_assert_nonnull(connections[u][k]);
                }
        for (guint i = 0; i < N; i++) {
                guint u = i < PER_USER ? 0 : i < 2 * PER_USER ? 1 : 2;
                g_autofree char *name = g_strdup_printf("limit-%u.img", i);
                g_autofree char *image = harness_image_path(h, name);
                image_create(image, 8 * MiB);
                p[i] = (Pending){ .connection = connections[u][i % 4],
                        .who = users[u] ? users[u] : "root",
                        .n_done = &n_done };
                if (p[i].connection)
                        pending_start_attach(&p[i], image);
                else
                        n_done++;
        }
        while (n_done < N)
                g_main_context_iteration(context, TRUE);
        g_main_context_pop_thread_default(context);

        for (guint i = 0; i < N; i++) {
                guint u = i < PER_USER ? 0 : i < 2 * PER_USER ? 1 : 2;
                if (p[i].reply) {
                        char *device = NULL;
                        ok[u]++;
                        g_variant_get(p[i].reply, "(so)", &device, NULL);
                        g_ptr_array_add(used, device);
                        g_variant_unref(p[i].reply);
                } else if (p[i].error) {
                        g_autofree char *remote = g_dbus_error_get_remote_error(p[i].error);
                        if (g_strcmp0(remote, LOOPD_ERROR_LIMIT_EXCEEDED) == 0)
                                limited[u]++;
                        else
                                g_test_fail_printf("%s's Attach: %s", p[i].who, p[i].error->message);
                        g_error_free(p[i].error);
                }
        }
        g_test_message("A: %u attached, %u over the limit; B: %u, %u; root: %u, %u", ok[0], limited[0],
                ok[1], limited[1], ok[2], limited[2]);
        g_assert_cmpuint(ok[0], ==, 3);
        g_assert_cmpuint(limited[0], ==, PER_USER - 3);
        g_assert_cmpuint(ok[1], ==, 3);
        g_assert_cmpuint(limited[1], ==, PER_USER - 3);
        g_assert_cmpuint(ok[2], ==, ROOT);

        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 0);
        check_state_consistent(__FILE__, __LINE__, h);
        for (guint i = 0; i < used->len; i++) {
                g_autoptr(GError) error = NULL;
                g_assert_true(harness_detach(h->bus, used->pdata[i], NULL, &error));
                harness_assert_no_error(error);
        }
        check_nothing_left(h, used);
}
