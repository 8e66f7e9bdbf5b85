/* auth.h: may the sender of a method call do this? polkit's answer, asked asynchronously. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include <sys/types.h>

typedef struct Auth Auth;
typedef struct BusCalls BusCalls;

/* Calls waiting for polkit count against calls' bound. */
int auth_new(BusCalls *calls, Auth **ret);
Auth *auth_free(Auth *a);

/* Checks action for the sender of message. Returns 1 when allowed (root always is); 0 when the question is
 * now with polkit, in which case the method handler must return 1 at once: when polkit answers, the
 * message is dispatched to the handler again and this call then returns the answer; < 0 with error set
 * (NotAuthorized, InteractiveAuthorizationRequired) when denied. details: NULL-terminated key, value list
 * handed to polkit rules. */
typedef enum AuthFlags {
        /* Ask without interaction, whatever the call allows: a "password needed" answer is then
         * InteractiveAuthorizationRequired (see authorize_image(): one prompt for two actions). The answer
         * is kept apart from an interactive one for the same action. */
        AUTH_QUIET = 1 << 0,
} AuthFlags;

/* A call waiting for polkit counts against the caller's bound (bus-calls.h): over it, LimitExceeded. When
 * the caller leaves the bus before polkit answered, the question is cancelled at polkit and the call is
 * dropped (its handler never runs again). */
int auth_check(Auth *a, sd_bus_message *message, uid_t uid, const char *action, const char *const *details,
        AuthFlags flags, sd_bus_error *error);

/* Is a question with polkit still unanswered? */
bool auth_busy(Auth *a);
/* loopd exits: every call still waiting for polkit (or for its caller's uid) is answered Failed, nothing of
 * it having been done (every handler asks all its questions before it does anything), and its question
 * withdrawn at polkit. Not from a handler. */
void auth_cancel_queries(Auth *a);

/* The caller's uid, from the bus (never from /proc). Returns 1 with *ret_uid; 0 when the bus is being asked
 * (asynchronously, once per connection: the answer is kept), in which case the method handler must return 1
 * at once and the message is dispatched to it again with the answer; < 0 with error set (NotAuthorized when
 * the bus cannot say, LimitExceeded when this connection has too many calls waiting for it already). */
int auth_caller(Auth *a, sd_bus_message *message, uid_t *ret_uid, sd_bus_error *error);
