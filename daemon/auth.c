/* auth.c: may the sender of a method call do this? polkit's CheckAuthorization, asked asynchronously. */
#include "auth.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-calls.h"
#include "log.h"
#include "loopd-bus.h"
#include "strv.h"

#define POLKIT_BUS_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_CHECK_ALLOW_INTERACTION 1u

/* A password prompt may take a while; a non-interactive check should not. */
#define POLKIT_TIMEOUT_INTERACTIVE_USEC (300ULL * 1000000ULL)
#define POLKIT_TIMEOUT_USEC (30ULL * 1000000ULL)

typedef struct AuthAnswer {
        char *action;
        char **details; /* what polkit was told of it: a rule may decide by them */
        bool quiet; /* asked without interaction (AUTH_QUIET) */
        char cancel_id[48]; /* what CancelCheckAuthorization names it by */
        int result; /* 1 allowed, 0 pending, < 0 denied (error holds why) */
        sd_bus_error error;
        struct AuthAnswer *next;
} AuthAnswer;

typedef struct AuthSender AuthSender;

/* What one method call waits for: its caller's uid, then polkit's answers. The call is dispatched again when
 * an answer arrives. */
typedef struct AuthQuery {
        Auth *auth;
        sd_bus_message *request;
        sd_bus_message_handler_t handler;
        void *userdata;
        AuthSender *sender; /* the caller's connection: when it leaves, the call is dropped */
        AuthSender *lookup; /* waiting for the caller's uid (then == sender) */
        sd_bus_slot *slot; /* the CheckAuthorization call in flight, if any */
        bool held; /* counted in calls (bus_calls_hold()) */
        AuthAnswer *answers;
        struct AuthQuery *next;
} AuthQuery;

/* A bus connection: its uid, or the question to the bus about it. Unique names are never reused on a bus,
 * and a connection's credentials never change: what the bus said once holds for its lifetime. */
struct AuthSender {
        Auth *auth;
        char *name;
        uid_t uid;
        bool known;
        sd_bus_slot *slot; /* GetConnectionUnixUser in flight */
        /* NameOwnerChanged for it: it left the bus. One match a connection, not an sd_bus_track a call:
         * adding a name to a track asks the bus synchronously whether the name exists, and while loopd waits
         * for that answer sd-bus reads every call queued for it, each with its fds. */
        sd_bus_slot *gone_match;
        unsigned n_waiting;
        struct AuthSender *next;
};

/* Known senders kept (the oldest go first; one asked again costs a round trip, not a wrong answer). */
#define AUTH_SENDERS_MAX 256u
/* Calls of one sender that may wait for its uid: they are not counted against a uid's bound yet (nobody
 * knows it), so this bounds what a flood over fresh connections can hold meanwhile. The bus answers in well
 * under a millisecond unless it is busy with a flood; a client that pipelines more calls than this on a
 * connection loopd has not seen yet is told to try again. */
#define AUTH_LOOKUP_WAITING_MAX 4u

struct Auth {
        BusCalls *calls;
        AuthQuery *queries;
        AuthSender *senders; /* newest first */
        AuthQuery *redispatching; /* whose handler runs again now (auth_redispatch() frees it after) */
        unsigned n_senders;
        uint64_t n_asked; /* for unique cancellation ids */
};

static void auth_answer_free_all(AuthAnswer *a)
{
        while (a) {
                AuthAnswer *next = a->next;
                free(a->action);
                strv_free(a->details);
                sd_bus_error_free(&a->error);
                free(a);
                a = next;
        }
}

static void auth_query_free(AuthQuery *q)
{
        if (!q)
                return;
        for (AuthQuery **p = &q->auth->queries; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        break;
                }
        sd_bus_slot_unref(q->slot);
        if (q->lookup)
                q->lookup->n_waiting--;
        if (q->held)
                bus_calls_release(q->auth->calls, q->request);
        sd_bus_message_unref(q->request);
        auth_answer_free_all(q->answers);
        free(q);
}

/* The caller left while polkit was still deciding (maybe waiting for a password nobody will type): withdraw
 * the question at polkit, and let go of the call and its file descriptors now, not when polkit times out. */
static void auth_query_abandon(AuthQuery *q)
{
        sd_bus *bus = sd_bus_message_get_bus(q->request);

        for (AuthAnswer *a = q->answers; a; a = a->next) {
                if (a->result != 0)
                        continue;
                int r = sd_bus_call_method_async(bus, NULL, POLKIT_BUS_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                        "CancelCheckAuthorization", NULL, NULL, "s", a->cancel_id);
                if (r < 0)
                        log_debug_errno(r, "Failed to cancel polkit check %s: %m", a->cancel_id);
        }
        auth_query_free(q);
}

int auth_new(BusCalls *calls, Auth **ret)
{
        Auth *a = calloc(1, sizeof(Auth));
        if (!a)
                return -ENOMEM;
        a->calls = calls;
        *ret = a;
        return 0;
}

Auth *auth_free(Auth *a)
{
        if (!a)
                return NULL;
        while (a->queries)
                auth_query_free(a->queries);
        while (a->senders) {
                AuthSender *next = a->senders->next;
                sd_bus_slot_unref(a->senders->slot);
                sd_bus_slot_unref(a->senders->gone_match);
                free(a->senders->name);
                free(a->senders);
                a->senders = next;
        }
        free(a);
        return NULL;
}

static void auth_redispatch(AuthQuery *q);
static int auth_get_query(Auth *a, sd_bus_message *message, AuthQuery **ret);

static void auth_sender_free(Auth *a, AuthSender *s)
{
        for (AuthSender **p = &a->senders; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        a->n_senders--;
                        break;
                }
        sd_bus_slot_unref(s->slot);
        sd_bus_slot_unref(s->gone_match);
        free(s->name);
        free(s);
}

/* Makes room among the known senders. */
static void auth_sender_forget_oldest(Auth *a)
{
        AuthSender **last = NULL;

        /* The oldest known one (the list is newest first) that no call of loopd's still refers to. */
        for (AuthSender **p = &a->senders; *p; p = &(*p)->next) {
                bool used = false;

                for (AuthQuery *q = a->queries; q && !used; q = q->next)
                        used = q->sender == *p;
                if ((*p)->known && !used)
                        last = p;
        }
        if (last)
                auth_sender_free(a, *last);
}

/* NameOwnerChanged(name, old, new) for a sender: with no new owner, the connection left the bus. */
static int auth_on_sender_gone(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        AuthSender *s = userdata;
        Auth *a = s->auth;
        const char *name, *old_owner, *new_owner;
        bool dropped = false;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !isempty(new_owner))
                return 0;
        for (AuthQuery *q = a->queries, *next; q; q = next) {
                next = q->next;
                if (q->sender != s)
                        continue;
                auth_query_abandon(q);
                dropped = true;
                /* abandoning may have freed others (it frees only q): start over to be safe */
                next = a->queries;
        }
        if (dropped)
                log_debug("%s left while its calls waited, dropped them", s->name);
        auth_sender_free(a, s);
        return 0;
}

/* The entry of message's sender, made (and followed: see gone_match) when there is none. */
static int auth_sender_get(Auth *a, sd_bus_message *message, AuthSender **ret)
{
        const char *sender = sd_bus_message_get_sender(message);
        _cleanup_free_ char *match = NULL;
        AuthSender *s;
        int r;

        if (!sender)
                return -ENXIO;
        for (s = a->senders; s; s = s->next)
                if (streq(s->name, sender)) {
                        *ret = s;
                        return 0;
                }

        if (a->n_senders >= AUTH_SENDERS_MAX)
                auth_sender_forget_oldest(a);
        s = calloc(1, sizeof(AuthSender));
        if (!s)
                return -ENOMEM;
        s->auth = a;
        s->name = strdup(sender);
        if (!s->name ||
                asprintf(&match,
                        "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                        "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'",
                        sender) < 0) {
                free(s->name);
                free(s);
                return -ENOMEM;
        }
        r = sd_bus_add_match_async(
                sd_bus_message_get_bus(message), &s->gone_match, match, auth_on_sender_gone, NULL, s);
        if (r < 0) {
                free(s->name);
                free(s);
                return r;
        }
        s->next = a->senders;
        a->senders = s;
        a->n_senders++;
        *ret = s;
        return 0;
}

/* The oldest call waiting for s's uid (the list is newest first): they go on in the order they came. */
static AuthQuery *auth_find_waiting(Auth *a, AuthSender *s)
{
        AuthQuery *found = NULL;

        for (AuthQuery *q = a->queries; q; q = q->next)
                if (q->lookup == s)
                        found = q;
        return found;
}

static int auth_on_sender_uid(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        AuthSender *s = userdata;
        Auth *a = s->auth;
        uint32_t uid;
        AuthQuery *q;

        s->slot = sd_bus_slot_unref(s->slot);
        if (!sd_bus_message_is_method_error(reply, NULL) && sd_bus_message_read(reply, "u", &uid) >= 0) {
                s->uid = uid;
                s->known = true;
        }
        /* Every call that waited for it goes on; when the bus could not say (the caller left already, most
         * likely), they are refused and the sender is forgotten. Redispatching may change the list: look
         * again from the start each time. */
        while ((q = auth_find_waiting(a, s))) {
                q->lookup = NULL;
                s->n_waiting--;
                if (s->known)
                        auth_redispatch(q);
                else {
                        (void)sd_bus_reply_method_errorf(q->request, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized: cannot tell who the caller is");
                        auth_query_free(q);
                }
        }
        if (!s->known)
                auth_sender_free(a, s);
        return 0;
}

int auth_caller(Auth *a, sd_bus_message *message, uid_t *ret_uid, sd_bus_error *error)
{
        AuthSender *s;
        AuthQuery *q;
        int r;

        r = auth_sender_get(a, message, &s);
        if (r == -ENXIO)
                return sd_bus_error_set(
                        error, LOOPD_ERROR_NOT_AUTHORIZED, "Not authorized: cannot tell who the caller is");
        if (r < 0)
                return r;
        if (s->known) {
                *ret_uid = s->uid;
                return 1;
        }

        /* Asked of the bus (the only one that knows), never of /proc (racy): asynchronously, because a
         * synchronous call makes sd-bus read every message queued for loopd, each with its fds, while it
         * waits, and stops everyone else. After gone_match: had the caller left before that was in place,
         * this question fails, and its calls are refused. */
        if (!s->slot) {
                r = sd_bus_call_method_async(sd_bus_message_get_bus(message), &s->slot,
                        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "GetConnectionUnixUser", auth_on_sender_uid, s, "s", s->name);
                if (r < 0)
                        return sd_bus_error_setf(error, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized: cannot ask the bus who the caller is: %s", strerror(-r));
        }
        if (s->n_waiting >= AUTH_LOOKUP_WAITING_MAX)
                return sd_bus_error_setf(error, LOOPD_ERROR_LIMIT_EXCEEDED,
                        "%u calls of this connection already wait until loopd knows who is calling; try again "
                        "once they are answered",
                        AUTH_LOOKUP_WAITING_MAX);
        r = auth_get_query(a, message, &q);
        if (r < 0)
                return r;
        q->lookup = s;
        s->n_waiting++;
        return 0;
}

void auth_cancel_queries(Auth *a)
{
        /* Not from a handler that a query's answer runs (auth_redispatch() frees that query after it). */
        assert(!a || !a->redispatching);
        while (a && a->queries) {
                AuthQuery *q = a->queries;

                (void)sd_bus_reply_method_errorf(
                        q->request, LOOPD_ERROR_FAILED, "loopd is exiting; nothing was done (call again)");
                auth_query_abandon(q);
        }
}

bool auth_busy(Auth *a)
{
        return a && a->queries;
}

static AuthQuery *auth_find_query(Auth *a, sd_bus_message *message)
{
        for (AuthQuery *q = a->queries; q; q = q->next)
                if (q->request == message)
                        return q;
        return NULL;
}

static void auth_redispatch(AuthQuery *q)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *request = sd_bus_message_ref(q->request);
        int r;

        r = sd_bus_message_rewind(request, true);
        q->auth->redispatching = q;
        if (r >= 0)
                r = q->handler(request, q->userdata, &error);
        q->auth->redispatching = NULL;
        if (r < 0) {
                if (sd_bus_error_is_set(&error))
                        (void)sd_bus_reply_method_error(request, &error);
                else
                        (void)sd_bus_reply_method_errno(request, r, NULL);
        }

        /* The handler either finished (replied or will reply from elsewhere) or asked polkit another
         * question, in which case the query lives on until that answer. */
        if (!q->slot)
                auth_query_free(q);
}

static int auth_on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        AuthQuery *q = userdata;
        AuthAnswer *answer = NULL;
        const sd_bus_error *e;

        for (AuthAnswer *a = q->answers; a; a = a->next)
                if (a->result == 0)
                        answer = a;
        q->slot = sd_bus_slot_unref(q->slot);
        if (!answer) {
                auth_query_free(q);
                return 0;
        }

        e = sd_bus_message_get_error(reply);
        if (e) {
                /* polkit absent or broken: deny, and say which. */
                answer->result = -EACCES;
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        sd_bus_error_setf(&answer->error, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized for %s: polkit is not available", answer->action);
                else
                        sd_bus_error_setf(&answer->error, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized for %s: polkit failed: %s", answer->action,
                                e->message ?: e->name);
        } else {
                int authorized, challenge, r;

                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                if (r < 0) {
                        answer->result = -EACCES;
                        sd_bus_error_setf(&answer->error, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized for %s: malformed reply from polkit", answer->action);
                } else if (authorized)
                        answer->result = 1;
                else if (challenge &&
                        (answer->quiet || !sd_bus_message_get_allow_interactive_authorization(q->request))) {
                        answer->result = -EACCES;
                        sd_bus_error_setf(&answer->error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                "Authentication is required for %s, and the call did not allow "
                                "interactive authorization",
                                answer->action);
                } else {
                        answer->result = -EACCES;
                        sd_bus_error_setf(&answer->error, LOOPD_ERROR_NOT_AUTHORIZED,
                                "Not authorized for %s", answer->action);
                }
        }

        auth_redispatch(q);
        return 0;
}

static int auth_ask_polkit(AuthQuery *q, AuthAnswer *answer, const char *const *details)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        bool interactive = sd_bus_message_get_allow_interactive_authorization(q->request) && !answer->quiet;
        int r;

        r = sd_bus_message_new_method_call(
                bus, &call, POLKIT_BUS_NAME, POLKIT_PATH, POLKIT_INTERFACE, "CheckAuthorization");
        if (r < 0)
                return r;

        r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s",
                sd_bus_message_get_sender(q->request), answer->action);
        if (r < 0)
                return r;

        r = sd_bus_message_open_container(call, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char *const *d = details; d && d[0] && d[1]; d += 2) {
                r = sd_bus_message_append(call, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(call);
        if (r < 0)
                return r;

        r = sd_bus_message_append(call, "us",
                interactive && !answer->quiet ? POLKIT_CHECK_ALLOW_INTERACTION : 0u, answer->cancel_id);
        if (r < 0)
                return r;

        return sd_bus_call_async(bus, &q->slot, call, auth_on_reply, q,
                interactive ? POLKIT_TIMEOUT_INTERACTIVE_USEC : POLKIT_TIMEOUT_USEC);
}

/* The handler that dispatched the current message: sd-bus tells us the message, and the vtable entry's
 * handler is what must run again. */
static int auth_current_handler(
        sd_bus_message *message, sd_bus_message_handler_t *ret_handler, void **ret_userdata)
{
        sd_bus *bus = sd_bus_message_get_bus(message);
        sd_bus_message_handler_t h = sd_bus_get_current_handler(bus);
        if (!h)
                return -EINVAL;
        *ret_handler = h;
        *ret_userdata = sd_bus_get_current_userdata(bus);
        return 0;
}

/* The query of the current dispatch of message, made when there is none: it remembers the handler to run
 * again, and its sender (whose leaving drops it). */
static int auth_get_query(Auth *a, sd_bus_message *message, AuthQuery **ret)
{
        sd_bus_message_handler_t handler;
        AuthSender *sender;
        void *userdata;
        AuthQuery *q;
        int r;

        q = auth_find_query(a, message);
        if (q) {
                *ret = q;
                return 0;
        }
        r = auth_current_handler(message, &handler, &userdata);
        if (r < 0)
                return r;
        r = auth_sender_get(a, message, &sender);
        if (r < 0)
                return r;
        q = calloc(1, sizeof(AuthQuery));
        if (!q)
                return -ENOMEM;
        q->auth = a;
        q->sender = sender;
        q->request = sd_bus_message_ref(message);
        q->handler = handler;
        q->userdata = userdata;
        q->next = a->queries;
        a->queries = q;
        *ret = q;
        return 0;
}

/* Whether the answer was to these details: key and value after key and value, the same. */
static bool answer_details_are(const AuthAnswer *ans, const char *const *details)
{
        size_t i = 0;

        for (; ans->details && ans->details[i] && details && details[i]; i++)
                if (!streq(ans->details[i], details[i]))
                        return false;
        return !(ans->details && ans->details[i]) && !(details && details[i]);
}

int auth_check(Auth *a, sd_bus_message *message, uid_t uid, const char *action, const char *const *details,
        AuthFlags flags, sd_bus_error *error)
{
        bool quiet = flags & AUTH_QUIET;
        AuthQuery *q;
        int r;

        if (uid == 0)
                return 1;

        q = auth_find_query(a, message);
        /* An answer is to its details too: the handler, run again once polkit answered, reads the device
         * again, and one that is not the same any more (its number bound anew meanwhile, another image) is
         * asked about again. */
        for (AuthAnswer *ans = q ? q->answers : NULL; ans; ans = ans->next) {
                if (!streq(ans->action, action) || ans->quiet != quiet || !answer_details_are(ans, details))
                        continue;
                if (ans->result > 0)
                        return 1;
                if (ans->result < 0)
                        return sd_bus_error_copy(error, &ans->error);
                return 0;
        }
        /* Bounded before polkit hears of it: a flood of calls must not become a flood of questions. */
        if (!q || !q->held) {
                r = bus_calls_hold(a->calls, message, uid, error);
                if (r < 0)
                        return r;
        }
        r = auth_get_query(a, message, &q);
        if (r < 0) {
                bus_calls_release(a->calls, message);
                return r;
        }
        q->held = true;

        AuthAnswer *answer = calloc(1, sizeof(AuthAnswer));
        if (!answer)
                return -ENOMEM;
        answer->action = strdup(action);
        r = answer->action ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && details && details[i]; i++)
                r = strv_consume(&answer->details, strdup(details[i]));
        if (r < 0) {
                auth_answer_free_all(answer);
                return r;
        }
        answer->quiet = quiet;
        snprintf(answer->cancel_id, sizeof(answer->cancel_id), "loopd-%" PRIu64, ++a->n_asked);
        answer->next = q->answers;
        q->answers = answer;

        r = auth_ask_polkit(q, answer, details);
        if (r < 0) {
                q->answers = answer->next;
                answer->next = NULL;
                auth_answer_free_all(answer);
                /* Nothing else keeps it: but a query whose handler runs again is auth_redispatch()'s to
                 * free. */
                if (!q->answers && !q->lookup && q != a->redispatching)
                        auth_query_free(q);
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_AUTHORIZED,
                        "Not authorized for %s: cannot ask polkit: %s", action, strerror(-r));
        }
        return 0;
}
