/* harness-load.c: clients that load loopd from threads of their own: a reader that lists devices over and
 * over, and a cycler that attaches and detaches an image over and over. */
#include <fcntl.h>

#include "harness-internal.h"

static gpointer reader_thread(gpointer data)
{
        HarnessReader *r = data;

        while (!g_atomic_int_get(&r->stop)) {
                g_autoptr(GError) error = NULL;
                gint64 t0 = g_get_monotonic_time();
                g_autoptr(GVariant) list = harness_list_devices(r->connection, &error);

                r->calls++;
                if (!list && g_dbus_error_is_remote_error(error)) {
                        g_autofree char *name = g_dbus_error_get_remote_error(error);
                        /* dbus-daemon's own refusal ("destination has a full message queue": its queue to
                         * loopd holds at most so many fds): the call never reached loopd. */
                        if (g_strcmp0(name, HARNESS_DBUS_ERROR_LIMITS_EXCEEDED) == 0) {
                                r->bus_refusals++;
                                g_usleep(r->interval_ms * 1000);
                                continue;
                        }
                }
                r->max_us = MAX(r->max_us, g_get_monotonic_time() - t0);
                if (!list) {
                        g_test_message("the reader's ListDevices failed: %s", error->message);
                        r->failures++;
                }
                g_usleep(r->interval_ms * 1000);
        }
        return NULL;
}

void harness_reader_start(HarnessReader *r)
{
        g_assert_nonnull(r->connection);
        g_assert_null(r->thread);
        r->thread = g_thread_new("reader", reader_thread, r);
}

void harness_reader_stop(HarnessReader *r)
{
        if (!r->thread)
                return;
        g_atomic_int_set(&r->stop, 1);
        g_thread_join(g_steal_pointer(&r->thread));
}

void harness_cycler_problem(HarnessCycler *c, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        g_ptr_array_add(c->problems, g_strdup_vprintf(fmt, ap));
        va_end(ap);
}

gpointer harness_cycler_thread(gpointer data)
{
        HarnessCycler *c = data;

        for (guint i = 0; i < c->cycles; i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;
                gint64 t0 = g_get_monotonic_time();

                g_atomic_int_inc(&c->started);
                if (!harness_attach_path(c->connection, c->image, O_RDWR, NULL, &device, &error)) {
                        if (c->attach_failed)
                                c->attach_failed(c, i, error);
                        else
                                harness_cycler_problem(
                                        c, "Attach of %s (cycle %u): %s", c->image, i, error->message);
                        continue;
                }
                if (c->attached)
                        c->attached(c, i, device, g_get_monotonic_time() - t0);
                if (!harness_detach(c->connection, device, NULL, &error)) {
                        harness_cycler_problem(
                                c, "Detach of %s (%s, cycle %u): %s", device, c->image, i, error->message);
                        continue;
                }
                c->done++;
        }
        return NULL;
}
