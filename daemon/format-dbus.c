/* format-dbus.c: the Manager's Format method: its arguments, polkit (org.loopd1.modify for the caller's own
 * device), and the reply once the engine's mkfs has ended. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-calls.h"
#include "bus-context.h"
#include "bus-options.h"
#include "bus-util.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "utf8.h"

/* A Format whose mkfs runs: answered when it ends. */
struct FormatCall {
        Bus *bus;
        sd_bus_message *message;
        FormatJob *job;
        FormatCall *next;
};

static FormatCall *format_call_free(FormatCall *c)
{
        if (!c)
                return NULL;
        for (FormatCall **p = &c->bus->format_calls; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        engine_format_cancel(c->job);
        bus_calls_release(c->bus->calls, c->message);
        sd_bus_message_unref(c->message);
        free(c);
        return NULL;
}

void format_cancel_calls(Bus *b)
{
        while (b->format_calls) {
                FormatCall *c = b->format_calls;

                (void)sd_bus_reply_method_errorf(c->message, LOOPD_ERROR_FAILED,
                        "loopd is exiting; the mkfs was stopped and the node holds no filesystem");
                format_call_free(c);
        }
}

static void format_on_done(int result, const EngineError *e, void *userdata)
{
        FormatCall *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        c->job = NULL; /* the engine frees it */
        if (result >= 0)
                r = sd_bus_reply_method_return(c->message, NULL);
        else {
                (void)bus_error_from_engine(&error, result, e);
                r = sd_bus_reply_method_error(c->message, &error);
        }
        if (r < 0)
                log_debug_errno(r, "Failed to reply to Format: %m");
        format_call_free(c);
}

int method_format(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        EngineError e = {};
        _cleanup_free_ char *label = NULL, *uuid = NULL;
        bool erase = false, label_set = false, uuid_set = false;
        const OptionSpec specs[] = { { "label", OPTION_STRING, &label, &label_set },
                { "uuid", OPTION_STRING, &uuid, &uuid_set }, { "erase", OPTION_BOOLEAN, &erase }, {} };
        unsigned number, partition;
        const char *node, *type;
        FormatCall *c;
        dev_t devnum;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "ss", &node, &type);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        /* Only what polkit rules may see is checked here; the rest is the engine's. */
        if (strlen(type) > 32 || !utf8_is_valid(type) || strpbrk(type, "\n"))
                return sd_bus_error_set(
                        error, LOOPD_ERROR_INVALID_ARGUMENT, "type: not a filesystem or table Format makes");
        if (label && (strlen(label) > 4096 || !utf8_is_valid(label)))
                return sd_bus_error_set(
                        error, LOOPD_ERROR_INVALID_ARGUMENT, "label: too long, or not UTF-8");
        r = bus_parse_loop_node(node, &number, &partition, &devnum, error);
        if (r < 0)
                return r;
        char canonical[LOOP_NODE_MAX];
        loop_node_format(canonical, number, partition);

        const char *details[] = { "device", canonical, "type", type, "label", strempty(label), NULL };
        r = bus_authorize_node(b, message, number, LOOPD_ACTION_MODIFY, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        /* An empty label is no label. */
        const FormatOptions opts = { .type = type,
                .label = label_set && !isempty(label) ? label : NULL,
                .uuid = uuid_set ? uuid : NULL,
                .erase = erase };
        /* A mkfs may run: the call then waits for it, counted against the caller's bound of waiting
         * calls (a call that waited for polkit is counted already). */
        r = bus_calls_hold(b->calls, message, uid, error);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(FormatCall));
        if (!c) {
                bus_calls_release(b->calls, message);
                return -ENOMEM;
        }
        r = engine_format(b->manager, uid, canonical, number, partition, devnum, &opts, format_on_done, c,
                &c->job, &e);
        if (r <= 0) {
                free(c);
                bus_calls_release(b->calls, message);
                if (r < 0)
                        return bus_error_from_engine(error, r, &e);
                return sd_bus_reply_method_return(message, NULL);
        }
        c->bus = b;
        c->message = sd_bus_message_ref(message);
        c->next = b->format_calls;
        b->format_calls = c;
        return 1;
}
