/* monitor.c: "loopctl monitor": prints loopd's Manager signals as they arrive. */
#include "monitor.h"

#include <signal.h>
#include <systemd/sd-event.h>

#include "format.h"
#include "log.h"
#include "loopd-bus.h"

typedef struct MonitorEvent {
        const char *name;
        const char *signature;
        const char *keys[2]; /* JSON keys of the two arguments, named as in the contract */
} MonitorEvent;

static const MonitorEvent monitor_events[] = {
        { "DeviceAttached", "so", { "device", "object" } },
        { "DeviceDetached", "so", { "device", "object" } },
        { "PartitionAdded", "ss", { "device", "partition" } },
        { "PartitionRemoved", "ss", { "device", "partition" } },
        { "Mounted", "ss", { "node", "mount_point" } },
        { "Unmounted", "ss", { "node", "mount_point" } },
};

typedef struct Monitor {
        sd_event *event;
        bool json;
} Monitor;

static int on_event(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Monitor *mon = userdata;
        const MonitorEvent *ev = NULL;
        const char *a, *b;

        for (size_t i = 0; i < ELEMENTSOF(monitor_events); i++)
                if (sd_bus_message_is_signal(m, LOOPD_MANAGER_INTERFACE, monitor_events[i].name) > 0)
                        ev = &monitor_events[i];
        /* A signal with arguments other than the contract's is not one of ours: skip it. */
        if (!ev || !sd_bus_message_has_signature(m, ev->signature) ||
                sd_bus_message_read(m, ev->signature, &a, &b) < 0)
                return 0;

        if (mon->json) {
                JsonWriter w;

                json_init(&w, stdout);
                json_begin_object(&w);
                json_field_string(&w, "event", ev->name);
                json_field_string(&w, ev->keys[0], a);
                json_field_string(&w, ev->keys[1], b);
                json_end_object(&w);
        } else {
                _cleanup_free_ char *ea = display_escape(a), *eb = display_escape(b);

                printf("%-16s %s %s\n", ev->name, ea ? ea : "?", eb ? eb : "?");
        }

        /* Readers are scripts and tests waiting for a line, not a full buffer. A reader that went away
         * ends the monitor like any other writer. */
        if (fflush(stdout) != 0)
                return sd_event_exit(mon->event, -errno);
        return 0;
}

/* sd-bus has already detached itself from the loop when it reports this: hence the loop in userdata. */
static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Monitor *mon = userdata;
        return sd_event_exit(mon->event, -ECONNRESET);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

typedef struct MonitorSlots {
        sd_bus_slot *slots[ELEMENTSOF(monitor_events) + 1];
} MonitorSlots;

static void monitor_slots_done(MonitorSlots *m)
{
        for (size_t i = 0; i < ELEMENTSOF(m->slots); i++)
                m->slots[i] = sd_bus_slot_unref(m->slots[i]);
}

/* Detaches the bus from the loop before the loop goes: the bus outlives this function. */
static void bus_detach_eventp(sd_bus **bus)
{
        if (*bus)
                (void)sd_bus_detach_event(*bus);
}

int monitor_run(sd_bus *bus, bool json)
{
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(monitor_slots_done) MonitorSlots subscriptions = {};
        _cleanup_(bus_detach_eventp) sd_bus *attached = NULL;
        Monitor mon = { .json = json };
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(-errno, "cannot block signals");

        r = sd_event_new(&event);
        if (r < 0)
                return log_error_errno(r, "cannot create an event loop");
        r = sd_event_add_signal(event, NULL, SIGINT, on_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGTERM, on_signal, NULL);
        if (r < 0)
                return log_error_errno(r, "cannot watch SIGINT and SIGTERM");

        mon.event = event;
        r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "cannot attach the bus to the event loop");
        attached = bus;

        r = sd_bus_match_signal(bus, &subscriptions.slots[0], "org.freedesktop.DBus.Local",
                "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local", "Disconnected", on_disconnected,
                &mon);
        if (r < 0)
                return log_error_errno(r, "cannot watch the bus connection");

        /* Matching the well-known name makes the bus deliver only what org.loopd1's owner sends: nobody
         * else can fake an event. The matches are in place when this returns, so nothing that happens
         * after is missed. */
        for (size_t i = 0; i < ELEMENTSOF(monitor_events); i++) {
                r = sd_bus_match_signal(bus, &subscriptions.slots[i + 1], LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                        LOOPD_MANAGER_INTERFACE, monitor_events[i].name, on_event, &mon);
                if (r < 0)
                        return log_error_errno(r, "cannot subscribe to %s", monitor_events[i].name);
        }

        r = sd_event_loop(event);
        if (r == -ECONNRESET)
                return log_error(r, "lost the connection to the system bus");
        if (r < 0)
                return log_error_errno(r, "cannot print events");
        return 0;
}
