/* bus-calls.c: method calls that are answered later: at most so many of one uid's at once (a user must not
 * pin loopd's file descriptors and memory by queueing calls over many connections while polkit thinks). */
#include "bus-calls.h"

#include <errno.h>
#include <stdlib.h>

#include "loopd-bus.h"

typedef struct BusCall {
        sd_bus_message *message; /* a reference: what identifies the call */
        uid_t uid;
        unsigned holds;
        struct BusCall *next;
} BusCall;

struct BusCalls {
        unsigned max_per_uid;
        unsigned n;
        BusCall *calls;
};

int bus_calls_new(unsigned max_per_uid, BusCalls **ret)
{
        BusCalls *c = calloc(1, sizeof(BusCalls));

        if (!c)
                return -ENOMEM;
        c->max_per_uid = max_per_uid;
        *ret = c;
        return 0;
}

void bus_calls_set_max(BusCalls *c, unsigned max_per_uid)
{
        c->max_per_uid = max_per_uid;
}

BusCalls *bus_calls_free(BusCalls *c)
{
        if (!c)
                return NULL;
        while (c->calls) {
                BusCall *next = c->calls->next;
                sd_bus_message_unref(c->calls->message);
                free(c->calls);
                c->calls = next;
        }
        free(c);
        return NULL;
}

int bus_calls_hold(BusCalls *c, sd_bus_message *message, uid_t uid, sd_bus_error *error)
{
        unsigned of_uid = 0;
        BusCall *call;

        for (call = c->calls; call; call = call->next) {
                if (call->message == message) {
                        call->holds++;
                        return 0;
                }
                if (call->uid == uid)
                        of_uid++;
        }
        if (of_uid >= c->max_per_uid)
                return sd_bus_error_setf(error, LOOPD_ERROR_LIMIT_EXCEEDED,
                        "uid %u already has %u calls waiting for an answer, the most allowed; try again once "
                        "they are answered",
                        (unsigned)uid, c->max_per_uid);

        call = calloc(1, sizeof(BusCall));
        if (!call)
                return -ENOMEM;
        call->message = sd_bus_message_ref(message);
        call->uid = uid;
        call->holds = 1;
        call->next = c->calls;
        c->calls = call;
        c->n++;
        return 0;
}

void bus_calls_release(BusCalls *c, sd_bus_message *message)
{
        for (BusCall **p = &c->calls; *p; p = &(*p)->next) {
                BusCall *call = *p;

                if (call->message != message)
                        continue;
                if (--call->holds > 0)
                        return;
                *p = call->next;
                sd_bus_message_unref(call->message);
                free(call);
                c->n--;
                return;
        }
}

unsigned bus_calls_count(BusCalls *c)
{
        return c ? c->n : 0;
}
