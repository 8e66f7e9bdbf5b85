/* auth.c: may the sender of a method call do this? polkit's CheckAuthorization, asked asynchronously. */
#include "auth.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-calls.h"
#include "log.h"
#include "loopd-bus.h"

#define POLKIT_BUS_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_CHECK_ALLOW_INTERACTION 1u

/* A password prompt may take a while; a non-interactive check should not. */
#define POLKIT_TIMEOUT_INTERACTIVE_USEC (300ULL * 1000000ULL)
#define POLKIT_TIMEOUT_USEC (30ULL * 1000000ULL)

typedef struct AuthAnswer {
        char *action;
        bool quiet; /* asked without interaction (AUTH_QUIET) */
        char cancel_id[48]; /* what CancelCheckAuthorization names it by */
        int result; /* 1 allowed, 0 pending, < 0 denied (error holds why) */
        sd_bus_error error;
        struct AuthAnswer *next;
} AuthAnswer;

/* All polkit questions asked for one method call. The call is dispatched again when an answer arrives. */
typedef struct AuthQuery {
        Auth *auth;
        sd_bus_message *request;
        sd_bus_message_handler_t handler;
        void *userdata;
        sd_bus_slot *slot; /* the CheckAuthorization call in flight, if any */
        sd_bus_track *caller; /* the sender: when it leaves, the question is withdrawn */
        AuthAnswer *answers;
        struct AuthQuery *next;
} AuthQuery;

struct Auth {
        Manager *manager;
        AuthQuery *queries;
        uint64_t n_asked; /* for unique cancellation ids */
};

static void auth_answer_free_all(AuthAnswer *a)
{
        while (a) {
                AuthAnswer *next = a->next;
                free(a->action);
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
        sd_bus_track_unref(q->caller);
        bus_calls_release(q->auth->manager->calls, q->request);
        sd_bus_message_unref(q->request);
        auth_answer_free_all(q->answers);
        free(q);
}

/* The caller left while polkit was still deciding (maybe waiting for a password nobody will type): withdraw
 * the question at polkit, and let go of the call and its file descriptors now, not when polkit times out. */
static int auth_on_caller_gone(sd_bus_track *track, void *userdata)
{
        AuthQuery *q = userdata;
        sd_bus *bus = sd_bus_message_get_bus(q->request);

        for (AuthAnswer *a = q->answers; a; a = a->next) {
                if (a->result != 0)
                        continue;
                int r = sd_bus_call_method_async(bus, NULL, POLKIT_BUS_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                        "CancelCheckAuthorization", NULL, NULL, "s", a->cancel_id);
                if (r < 0)
                        log_debug_errno(r, "Failed to cancel polkit check %s: %m", a->cancel_id);
        }
        log_debug("%s left while polkit decided, dropping its call",
                sd_bus_message_get_sender(q->request) ?: "A caller");
        auth_query_free(q);
        return 0;
}

int auth_new(Manager *m, Auth **ret)
{
        Auth *a = calloc(1, sizeof(Auth));
        if (!a)
                return -ENOMEM;
        a->manager = m;
        *ret = a;
        return 0;
}

Auth *auth_free(Auth *a)
{
        if (!a)
                return NULL;
        while (a->queries)
                auth_query_free(a->queries);
        free(a);
        return NULL;
}

static int auth_sender_uid(sd_bus_message *message, uid_t *ret)
{
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uint64_t mask = SD_BUS_CREDS_EUID | SD_BUS_CREDS_UID;
        int r;

        r = sd_bus_query_sender_creds(message, mask, &creds);
        if (r < 0)
                return r;

        /* Only what the bus itself vouches for: values read from /proc are racy (the sender may have exec'd
         * a setuid binary since). */
        uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
        if (!(augmented & SD_BUS_CREDS_EUID) && sd_bus_creds_get_euid(creds, ret) >= 0)
                return 0;
        if (!(augmented & SD_BUS_CREDS_UID) && sd_bus_creds_get_uid(creds, ret) >= 0)
                return 0;
        return -EPERM;
}

int auth_caller(sd_bus_message *message, uid_t *ret_uid, sd_bus_error *error)
{
        if (auth_sender_uid(message, ret_uid) < 0)
                return sd_bus_error_set(
                        error, LOOPD_ERROR_NOT_AUTHORIZED, "Not authorized: cannot tell who the caller is");
        return 0;
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
        if (r >= 0)
                r = q->handler(request, q->userdata, &error);
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
static int auth_current_handler(Auth *a, sd_bus_message_handler_t *ret_handler, void **ret_userdata)
{
        sd_bus *bus = a->manager->bus;
        sd_bus_message_handler_t h = sd_bus_get_current_handler(bus);
        if (!h)
                return -EINVAL;
        *ret_handler = h;
        *ret_userdata = sd_bus_get_current_userdata(bus);
        return 0;
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
        if (q) {
                for (AuthAnswer *ans = q->answers; ans; ans = ans->next) {
                        if (!streq(ans->action, action) || ans->quiet != quiet)
                                continue;
                        if (ans->result > 0)
                                return 1;
                        if (ans->result < 0)
                                return sd_bus_error_copy(error, &ans->error);
                        return 0;
                }
        } else {
                sd_bus_message_handler_t handler;
                void *userdata;

                r = auth_current_handler(a, &handler, &userdata);
                if (r < 0)
                        return r;
                /* Bounded before polkit hears of it: a flood of calls must not become a flood of questions.
                 */
                r = bus_calls_hold(a->manager->calls, message, uid, error);
                if (r < 0)
                        return r;
                q = calloc(1, sizeof(AuthQuery));
                if (!q) {
                        bus_calls_release(a->manager->calls, message);
                        return -ENOMEM;
                }
                q->auth = a;
                q->request = sd_bus_message_ref(message);
                q->handler = handler;
                q->userdata = userdata;
                q->next = a->queries;
                a->queries = q;
                r = bus_track_sender(message, auth_on_caller_gone, q, &q->caller);
                if (r < 0)
                        log_debug_errno(r, "Failed to follow the caller of a polkit check: %m");
        }

        AuthAnswer *answer = calloc(1, sizeof(AuthAnswer));
        if (!answer)
                return -ENOMEM;
        answer->action = strdup(action);
        if (!answer->action) {
                free(answer);
                return -ENOMEM;
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
                if (!q->answers)
                        auth_query_free(q);
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_AUTHORIZED,
                        "Not authorized for %s: cannot ask polkit: %s", action, strerror(-r));
        }
        return 0;
}
