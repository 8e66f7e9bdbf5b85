/* bus-service.c: the D-Bus face's life on the system bus: it hears of the engine's changes, connects,
 * exports the objects, exits when idle, and answers what still waits when loopd stops. */
#include "bus-service.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>

#include "auth.h"
#include "bus-calls.h"
#include "device-dbus.h"
#include "log.h"
#include "loopd-bus.h"
#include "manager-dbus.h"
#include "process-util.h"

int bus_new(Manager *m, Bus **ret)
{
        _cleanup_(bus_freep) Bus *b = calloc(1, sizeof(Bus));
        int r;

        if (!b)
                return -ENOMEM;
        b->manager = m;
        b->max_pending_per_user = 16;
        r = bus_calls_new(b->max_pending_per_user, &b->calls);
        if (r < 0)
                return r;
        r = auth_new(b->calls, &b->auth);
        if (r < 0)
                return r;
        m->on_change = device_dbus_on_change;
        m->on_change_userdata = b;
        *ret = TAKE_PTR(b);
        return 0;
}

Bus *bus_free(Bus *b)
{
        if (!b)
                return NULL;
        bus_cancel_calls(b);
        sd_event_source_disable_unref(b->idle_timer);
        sd_bus_slot_unref(b->release_slot);
        auth_free(b->auth);
        bus_calls_free(b->calls);
        sd_bus_flush_close_unref(b->bus);
        free(b);
        return NULL;
}

/* How long loopd tries to take its name while another connection still owns it (bus_start()). */
#define BUS_NAME_WAIT_MS 5000

/* How often loopd looks again, once its name went back, whether the calls that came before are answered. */
#define BUS_EXIT_CHECK_USEC (100 * UINT64_C(1000))

/* Idle means: no message for the idle time, nothing waiting (polkit, an image, udev), and nothing of the
 * engine's to keep: devices and mounts keep loopd alive, because their owners live only in its memory and
 * its state dir, and because an autoclear device's last unmount is loopd's to clean up after. */
static bool bus_is_idle(Bus *b, uint64_t now)
{
        if (now < b->last_activity_usec + b->exit_on_idle_usec)
                return false;
        if (bus_calls_count(b->calls) > 0 || auth_busy(b->auth))
                return false;
        return manager_is_idle(b->manager);
}

static int bus_arm_idle_timer(Bus *b, uint64_t usec)
{
        /* A timer source is one-shot: arm it again. */
        int r = sd_event_source_set_time(b->idle_timer, usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(b->idle_timer, SD_EVENT_ONESHOT);
}

/* After the name went back: the calls that came before are answered (those that wait for polkit, an image or
 * udev included), then loopd exits. What they set up (an Attach that came just then) keeps its record: the
 * next loopd, which waits for this one (main.c's lock of the state dir), takes it over. */
static int bus_exit_when_answered(Bus *b, uint64_t now)
{
        if (bus_calls_count(b->calls) == 0 && !auth_busy(b->auth))
                return sd_event_exit(b->manager->event, 0);
        return bus_arm_idle_timer(b, now + BUS_EXIT_CHECK_USEC);
}

static int bus_on_name_released(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        Bus *b = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint64_t now;

        b->release_slot = sd_bus_slot_unref(b->release_slot);
        (void)sd_event_now(b->manager->event, CLOCK_MONOTONIC, &now);
        /* The bus sent this reply after every call it routed to loopd under the name, and sd-bus dispatches
         * in order: those calls have all been taken. A later one starts a new loopd by activation. An error
         * (the bus refused, or sd-bus gave up waiting) changes nothing: the name goes with the connection,
         * and a SIGTERM may have been put off for this already (bus_defer_exit()). */
        if (e)
                log_warning("Failed to give back the bus name, exiting all the same: %s", e->message);
        b->name_released = true;
        return bus_exit_when_answered(b, now);
}

static int bus_on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Bus *b = userdata;
        uint64_t now;
        int r;

        (void)sd_event_now(b->manager->event, CLOCK_MONOTONIC, &now);
        if (b->name_released)
                return bus_exit_when_answered(b, now);
        if (!bus_is_idle(b, now))
                return bus_arm_idle_timer(b, MAX(now, b->last_activity_usec) + b->exit_on_idle_usec);

        log_info("Idle for %" PRIu64 " s with nothing attached, exiting", b->exit_on_idle_usec / 1000000);
        /* Give the name back first, and not by a call that waits for the reply: the calls the bus routes
         * to loopd until it has taken the name back would be read into sd-bus's queue meanwhile and dropped
         * with the connection, their callers told NoReply. They are answered as usual instead, and loopd
         * exits after (bus_on_name_released()). */
        r = sd_bus_release_name_async(b->bus, &b->release_slot, LOOPD_BUS_NAME, bus_on_name_released, b);
        if (r < 0) {
                log_warning_errno(r, "Failed to give back the bus name, not exiting: %m");
                return bus_arm_idle_timer(b, now + b->exit_on_idle_usec);
        }
        return 0;
}

void bus_leave(Bus *b)
{
        if (!b->bus || b->release_slot || b->name_released)
                return;
        b->name_released = true;
        /* Not waited for: bus_free() flushes it with the answers. */
        (void)sd_bus_release_name_async(b->bus, NULL, LOOPD_BUS_NAME, NULL, NULL);
}

bool bus_defer_exit(Bus *b)
{
        if (!(b->release_slot || b->name_released) || b->exit_deferred)
                return false;
        b->exit_deferred = true;
        return true;
}

/* Every incoming message, before it is dispatched: it counts as activity, and a question about the devices
 * finds the watcher's table up to date. */
static int bus_on_message(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;

        (void)sd_event_now(b->manager->event, CLOCK_MONOTONIC, &b->last_activity_usec);
        device_dbus_before_dispatch(b, message);
        return 0;
}

static int bus_setup_idle_exit(Bus *b)
{
        sd_event *event = b->manager->event;

        if (b->exit_on_idle_usec == 0)
                return 0;
        (void)sd_event_now(event, CLOCK_MONOTONIC, &b->last_activity_usec);
        return sd_event_add_time_relative(
                event, &b->idle_timer, CLOCK_MONOTONIC, b->exit_on_idle_usec, 0, bus_on_idle_timer, b);
}

int bus_start(Bus *b)
{
        int64_t deadline;
        int r;

        bus_calls_set_max(b->calls, b->max_pending_per_user);
        r = sd_bus_default_system(&b->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_add_filter(b->bus, NULL, bus_on_message, b);
        if (r >= 0)
                r = manager_dbus_register(b);
        if (r >= 0)
                r = device_dbus_register(b);
        if (r < 0)
                return log_error_errno(r, "Failed to export the objects: %m");

        /* Callers before the watcher: with hundreds of loop devices and a burst of uevents (another tool
         * binding and unbinding in a loop), one rescan takes long enough that at equal priority the bus got
         * a turn only between rescans, and calls timed out. The watcher catches up whenever the bus is
         * quiet, and a client's question brings the part of its table the question is about up to date first
         * (device_dbus_before_dispatch()). */
        r = sd_bus_attach_event(b->bus, b->manager->event, SD_EVENT_PRIORITY_IMPORTANT);
        if (r >= 0)
                /* Not closed as the loop ends: the calls still waiting are answered after it (main.c), then
                 * bus_free() flushes and closes. */
                r = sd_bus_set_close_on_exit(b->bus, false);
        if (r >= 0)
                /* sd-bus then ends the loop with EXIT_FAILURE (BUS_EXIT_DISCONNECTED). */
                r = sd_bus_set_exit_on_disconnect(b->bus, true);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        r = bus_setup_idle_exit(b);
        if (r < 0)
                return log_error_errno(r, "Failed to set up exiting when idle: %m");

        /* The name last: a client that sees it can use everything. The loopd before this one may still own
         * it for a moment: it lets go of the state dir after closing its connection, and the bus gives the
         * name up once it has read that hangup. */
        deadline = now_ms() + BUS_NAME_WAIT_MS;
        while ((r = sd_bus_request_name(b->bus, LOOPD_BUS_NAME, 0)) == -EEXIST && now_ms() < deadline)
                (void)poll(NULL, 0, 20);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire the bus name " LOOPD_BUS_NAME ": %m");
        return 0;
}
