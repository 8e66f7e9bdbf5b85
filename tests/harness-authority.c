/* harness-authority.c: a fake polkit authority that owns org.freedesktop.PolicyKit1 on the private bus in a
 * thread of its own, answers CheckAuthorization as the test programmed it and records every call. */
#include "harness-internal.h"

#define POLKIT_AUTHORITY_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_AUTHORITY_INTERFACE "org.freedesktop.PolicyKit1.Authority"

/* ---------------------------------------------------------------------------------------------------- */
/* The fake polkit authority */

typedef struct FakeAuthRule {
        FakeAuthResult result;
        guint delay_ms;
} FakeAuthRule;

struct FakeAuthority {
        GMutex lock;
        GCond cond;
        GHashTable *rules; /* action id → FakeAuthRule */
        FakeAuthRule default_rule;
        GPtrArray *calls; /* FakeAuthCall */
        GPtrArray *cancellations; /* char * */

        /* Owned by the authority's thread once it runs. */
        GThread *thread;
        GMainContext *context;
        GMainLoop *loop;
        char *address;
        GDBusConnection *connection;
        GHashTable *pending; /* PendingCheck */

        /* The thread's start result. */
        bool started;
        char *start_error;
};

typedef struct PendingCheck {
        FakeAuthority *authority;
        GDBusMethodInvocation *invocation;
        char *cancellation_id;
        GSource *timer;
        bool authorized, challenge;
} PendingCheck;

static const char authority_xml[] = "<node>"
                                    "  <interface name='" POLKIT_AUTHORITY_INTERFACE "'>"
                                    "    <method name='CheckAuthorization'>"
                                    "      <arg type='(sa{sv})' name='subject' direction='in'/>"
                                    "      <arg type='s' name='action_id' direction='in'/>"
                                    "      <arg type='a{ss}' name='details' direction='in'/>"
                                    "      <arg type='u' name='flags' direction='in'/>"
                                    "      <arg type='s' name='cancellation_id' direction='in'/>"
                                    "      <arg type='(bba{ss})' name='result' direction='out'/>"
                                    "    </method>"
                                    "    <method name='CancelCheckAuthorization'>"
                                    "      <arg type='s' name='cancellation_id' direction='in'/>"
                                    "    </method>"
                                    "  </interface>"
                                    "</node>";

static void fake_auth_call_free(gpointer data)
{
        FakeAuthCall *c = data;

        g_free(c->action_id);
        g_free(c->subject_kind);
        g_free(c->subject_bus_name);
        g_clear_pointer(&c->details, g_hash_table_unref);
        g_free(c->cancellation_id);
        g_free(c->sender);
        g_free(c);
}

static FakeAuthCall *fake_auth_call_copy(const FakeAuthCall *c)
{
        FakeAuthCall *n = g_new0(FakeAuthCall, 1);
        GHashTableIter it;
        gpointer k, v;

        n->action_id = g_strdup(c->action_id);
        n->subject_kind = g_strdup(c->subject_kind);
        n->subject_bus_name = g_strdup(c->subject_bus_name);
        n->details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_iter_init(&it, c->details);
        while (g_hash_table_iter_next(&it, &k, &v))
                g_hash_table_insert(n->details, g_strdup(k), g_strdup(v));
        n->flags = c->flags;
        n->cancellation_id = g_strdup(c->cancellation_id);
        n->sender = g_strdup(c->sender);
        return n;
}

static void pending_check_free(PendingCheck *pc)
{
        if (pc->timer) {
                g_source_destroy(pc->timer);
                g_source_unref(pc->timer);
        }
        g_clear_object(&pc->invocation);
        g_free(pc->cancellation_id);
        g_free(pc);
}

static void pending_check_reply(PendingCheck *pc)
{
        g_dbus_method_invocation_return_value(g_steal_pointer(&pc->invocation),
                g_variant_new("((bb@a{ss}))", pc->authorized, pc->challenge,
                        g_variant_new_array(G_VARIANT_TYPE("{ss}"), NULL, 0)));
}

static gboolean pending_check_fire(gpointer user_data)
{
        PendingCheck *pc = user_data;

        pending_check_reply(pc);
        g_hash_table_remove(pc->authority->pending, pc); /* frees pc */
        return G_SOURCE_REMOVE;
}

static void authority_check(FakeAuthority *a, GDBusMethodInvocation *invocation, GVariant *params)
{
        g_autoptr(GVariant) subject_details = NULL, details = NULL;
        const char *kind, *action, *cancellation_id, *name = NULL;
        FakeAuthCall *call;
        FakeAuthRule rule;
        PendingCheck *pc;
        guint32 flags;
        GVariantIter it;
        const char *k, *v;

        g_variant_get(params, "((&s@a{sv})&s@a{ss}u&s)", &kind, &subject_details, &action, &details, &flags,
                &cancellation_id);
        (void)g_variant_lookup(subject_details, "name", "&s", &name);

        call = g_new0(FakeAuthCall, 1);
        call->action_id = g_strdup(action);
        call->subject_kind = g_strdup(kind);
        call->subject_bus_name = g_strcmp0(kind, "system-bus-name") == 0 ? g_strdup(name) : NULL;
        call->details = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_variant_iter_init(&it, details);
        while (g_variant_iter_next(&it, "{&s&s}", &k, &v))
                g_hash_table_insert(call->details, g_strdup(k), g_strdup(v));
        call->flags = flags;
        call->cancellation_id = g_strdup(cancellation_id);
        call->sender = g_strdup(g_dbus_method_invocation_get_sender(invocation));

        g_mutex_lock(&a->lock);
        g_ptr_array_add(a->calls, call);
        FakeAuthRule *r = g_hash_table_lookup(a->rules, action);
        rule = r ? *r : a->default_rule;
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);

        pc = g_new0(PendingCheck, 1);
        pc->authority = a;
        pc->invocation = g_object_ref(invocation);
        pc->cancellation_id = g_strdup(cancellation_id);
        switch (rule.result) {
        case FAKE_AUTH_ALLOW:
                pc->authorized = true;
                break;
        case FAKE_AUTH_CHALLENGE:
                pc->challenge = true;
                break;
        case FAKE_AUTH_INTERACTIVE:
                pc->authorized = flags & 1;
                pc->challenge = !(flags & 1);
                break;
        case FAKE_AUTH_DENY:
        default:
                break;
        }

        if (rule.delay_ms == 0) {
                pending_check_reply(pc);
                pending_check_free(pc);
                return;
        }
        pc->timer = g_timeout_source_new(rule.delay_ms);
        g_source_set_callback(pc->timer, pending_check_fire, pc, NULL);
        g_source_attach(pc->timer, a->context);
        g_hash_table_add(a->pending, pc);
}

static void authority_cancel(FakeAuthority *a, GDBusMethodInvocation *invocation, GVariant *params)
{
        const char *id;
        GHashTableIter it;
        gpointer key;

        g_variant_get(params, "(&s)", &id);
        g_mutex_lock(&a->lock);
        g_ptr_array_add(a->cancellations, g_strdup(id));
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);

        g_hash_table_iter_init(&it, a->pending);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
                PendingCheck *pc = key;
                if (*id && g_strcmp0(pc->cancellation_id, id) == 0 &&
                        g_strcmp0(g_dbus_method_invocation_get_sender(pc->invocation),
                                g_dbus_method_invocation_get_sender(invocation)) == 0) {
                        g_dbus_method_invocation_return_dbus_error(g_steal_pointer(&pc->invocation),
                                "org.freedesktop.PolicyKit1.Error.Cancelled",
                                "The authorization check was cancelled");
                        g_hash_table_iter_remove(&it);
                        g_dbus_method_invocation_return_value(invocation, NULL);
                        return;
                }
        }
        /* What polkitd answers for an unknown id. */
        g_dbus_method_invocation_return_dbus_error(
                invocation, "org.freedesktop.PolicyKit1.Error.Failed", "No such cancellation_id");
}

static void authority_method_call(GDBusConnection *c, const char *sender, const char *path,
        const char *interface, const char *method, GVariant *params, GDBusMethodInvocation *invocation,
        gpointer user_data)
{
        FakeAuthority *a = user_data;

        if (g_str_equal(method, "CheckAuthorization"))
                authority_check(a, invocation, params);
        else if (g_str_equal(method, "CancelCheckAuthorization"))
                authority_cancel(a, invocation, params);
        else
                g_dbus_method_invocation_return_dbus_error(
                        invocation, "org.freedesktop.DBus.Error.UnknownMethod", method);
}

static const GDBusInterfaceVTable authority_vtable = { .method_call = authority_method_call };

static void authority_start_done(FakeAuthority *a, char *error)
{
        g_mutex_lock(&a->lock);
        a->started = true;
        a->start_error = error;
        g_cond_broadcast(&a->cond);
        g_mutex_unlock(&a->lock);
}

static gpointer authority_thread(gpointer data)
{
        FakeAuthority *a = data;
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusNodeInfo) info = NULL;
        g_autoptr(GVariant) reply = NULL;
        guint registration = 0;
        guint32 result = 0;

        g_main_context_push_thread_default(a->context);

        a->connection = g_dbus_connection_new_for_address_sync(a->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!a->connection)
                goto fail;
        g_dbus_connection_set_exit_on_close(a->connection, FALSE);

        info = g_dbus_node_info_new_for_xml(authority_xml, &error);
        if (!info)
                goto fail;
        registration = g_dbus_connection_register_object(a->connection, POLKIT_AUTHORITY_PATH,
                info->interfaces[0], &authority_vtable, a, NULL, &error);
        if (registration == 0)
                goto fail;

        reply = g_dbus_connection_call_sync(a->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "RequestName",
                g_variant_new("(su)", POLKIT_BUS_NAME, 4 /* do not queue */), G_VARIANT_TYPE("(u)"),
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        if (!reply)
                goto fail;
        g_variant_get(reply, "(u)", &result);
        if (result != 1 /* primary owner */) {
                authority_start_done(
                        a, g_strdup_printf("RequestName(%s) answered %u", POLKIT_BUS_NAME, result));
                goto out;
        }

        authority_start_done(a, NULL);
        g_main_loop_run(a->loop);
        goto out;

fail:
        authority_start_done(a, g_strdup(error ? error->message : "unknown error"));
out:
        /* Whoever still waits gets an answer rather than a hang. */
        g_hash_table_remove_all(a->pending);
        if (registration)
                g_dbus_connection_unregister_object(a->connection, registration);
        if (a->connection) {
                (void)g_dbus_connection_close_sync(a->connection, NULL, NULL);
                g_clear_object(&a->connection);
        }
        while (g_main_context_iteration(a->context, FALSE))
                ;
        g_main_context_pop_thread_default(a->context);
        return NULL;
}

void fake_authority_free(FakeAuthority *a)
{
        if (!a)
                return;
        if (a->thread) {
                g_main_loop_quit(a->loop);
                g_thread_join(a->thread);
        }
        g_hash_table_unref(a->pending);
        g_main_loop_unref(a->loop);
        g_main_context_unref(a->context);
        g_hash_table_unref(a->rules);
        g_ptr_array_unref(a->calls);
        g_ptr_array_unref(a->cancellations);
        g_free(a->address);
        g_free(a->start_error);
        g_mutex_clear(&a->lock);
        g_cond_clear(&a->cond);
        g_free(a);
}

FakeAuthority *fake_authority_start(const char *address)
{
        FakeAuthority *a = g_new0(FakeAuthority, 1);
        bool ok;

        g_mutex_init(&a->lock);
        g_cond_init(&a->cond);
        a->rules = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        a->default_rule.result = FAKE_AUTH_DENY;
        a->calls = g_ptr_array_new_with_free_func(fake_auth_call_free);
        a->cancellations = g_ptr_array_new_with_free_func(g_free);
        a->context = g_main_context_new();
        a->loop = g_main_loop_new(a->context, FALSE);
        a->address = g_strdup(address);
        a->pending = g_hash_table_new_full(
                g_direct_hash, g_direct_equal, (GDestroyNotify)pending_check_free, NULL);
        a->thread = g_thread_new("fake-polkit", authority_thread, a);

        g_mutex_lock(&a->lock);
        while (!a->started)
                g_cond_wait(&a->cond, &a->lock);
        ok = !a->start_error;
        g_mutex_unlock(&a->lock);
        if (!ok) {
                g_test_fail_printf("the fake polkit authority did not start: %s", a->start_error);
                fake_authority_free(a);
                return NULL;
        }
        return a;
}

void fake_authority_set(FakeAuthority *a, const char *action_id, FakeAuthResult result, guint delay_ms)
{
        FakeAuthRule rule = { .result = result, .delay_ms = delay_ms };

        g_return_if_fail(a);
        g_mutex_lock(&a->lock);
        if (action_id)
                g_hash_table_replace(a->rules, g_strdup(action_id), g_memdup2(&rule, sizeof(rule)));
        else
                a->default_rule = rule;
        g_mutex_unlock(&a->lock);
}

GPtrArray *fake_authority_calls(FakeAuthority *a)
{
        GPtrArray *copy = g_ptr_array_new_with_free_func(fake_auth_call_free);

        g_return_val_if_fail(a, copy);
        g_mutex_lock(&a->lock);
        for (guint i = 0; i < a->calls->len; i++)
                g_ptr_array_add(copy, fake_auth_call_copy(a->calls->pdata[i]));
        g_mutex_unlock(&a->lock);
        return copy;
}

guint fake_authority_n_calls(FakeAuthority *a)
{
        guint n;

        g_return_val_if_fail(a, 0);
        g_mutex_lock(&a->lock);
        n = a->calls->len;
        g_mutex_unlock(&a->lock);
        return n;
}

void fake_authority_clear_calls(FakeAuthority *a)
{
        g_return_if_fail(a);
        g_mutex_lock(&a->lock);
        g_ptr_array_set_size(a->calls, 0);
        g_ptr_array_set_size(a->cancellations, 0);
        g_mutex_unlock(&a->lock);
}

bool fake_authority_wait_calls(FakeAuthority *a, guint n, guint timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        bool ok;

        g_return_val_if_fail(a, false);
        g_mutex_lock(&a->lock);
        while (a->calls->len < n)
                if (!g_cond_wait_until(&a->cond, &a->lock, deadline))
                        break;
        ok = a->calls->len >= n;
        g_mutex_unlock(&a->lock);
        return ok;
}

GPtrArray *fake_authority_cancellations(FakeAuthority *a)
{
        GPtrArray *copy = g_ptr_array_new_with_free_func(g_free);

        g_return_val_if_fail(a, copy);
        g_mutex_lock(&a->lock);
        for (guint i = 0; i < a->cancellations->len; i++)
                g_ptr_array_add(copy, g_strdup(a->cancellations->pdata[i]));
        g_mutex_unlock(&a->lock);
        return copy;
}
