/* polkit-real.c: the polkit suite against the real polkitd with the project's policy and rules. */
#include "test-polkit.h"

/* ---------------------------------------------------------------------------------------------------- */
/* The real polkitd with the project's policy */

/* Grants every loopd action to test user A; everyone else gets the policy's defaults. Without logind nobody
 * is "active", so those are allow_any: auth_admin (attach, mount) and auth_admin_keep (manage-others). */
const char rules_grant_a[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (action.id.indexOf(\"org.loopd1.\") == 0 && subject.user == \"" HARNESS_USER_A "\")\n"
        "                return polkit.Result.YES;\n"
        "});\n";

/* As rules_grant_a, and user B may attach (and detach its own devices), nothing more. */
const char rules_grant_a_and_b_attach[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (action.id.indexOf(\"org.loopd1.\") == 0 && subject.user == \"" HARNESS_USER_A "\")\n"
        "                return polkit.Result.YES;\n"
        "        if (action.id == \"org.loopd1.attach\" && subject.user == \"" HARNESS_USER_B "\")\n"
        "                return polkit.Result.YES;\n"
        "});\n";

/* loopctl --json attach as user; returns the device or NULL. */
static char *loopctl_attach(Harness *h, const char *user, const char *image)
{
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(JsonNode) json = NULL;

        if (harness_loopctl(h, user, &run, "--no-ask-password", "--json", "attach", image, NULL) != 0) {
                g_test_fail_printf("loopctl attach %s as %s failed: %s", image, user, run.err);
                return NULL;
        }
        json = harness_run_json(&run);
        if (!json || !JSON_NODE_HOLDS_OBJECT(json))
                return NULL;
        return g_strdup(
                json_object_get_string_member_with_default(json_node_get_object(json), "device", ""));
}

void test_real_user_attaches_lists_detaches(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "real.img", 64 * MiB, HARNESS_USER_A);
        g_auto(HarnessRun) run = { 0 };

        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\n", 0);
        g_autofree char *device = loopctl_attach(h, HARNESS_USER_A, image);
        if (!device)
                return;
        assert_bound(image, device);

        /* loopctl list as A: A's device, managed, owned by A. */
        g_assert_cmpint(
                harness_loopctl(h, HARNESS_USER_A, &run, "--no-ask-password", "--json", "list", NULL), ==,
                0);
        g_autoptr(JsonNode) list = harness_run_json(&run);
        bool found = false;
        if (list && JSON_NODE_HOLDS_ARRAY(list)) {
                JsonArray *a = json_node_get_array(list);
                for (guint i = 0; i < json_array_get_length(a); i++) {
                        JsonObject *o = json_array_get_object_element(a, i);
                        if (g_strcmp0(json_object_get_string_member_with_default(o, "device", ""), device) !=
                                0)
                                continue;
                        found = true;
                        g_assert_cmpstr(json_object_get_string_member_with_default(o, "backing_file", ""),
                                ==, image);
                        g_assert_true(json_object_get_boolean_member_with_default(o, "managed", FALSE));
                        g_assert_cmpint(json_object_get_int_member_with_default(o, "owner_uid", -1), ==,
                                harness_uid_of(HARNESS_USER_A));
                }
        }
        g_assert_true(found);

        harness_run_clear(&run);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "--no-ask-password", "--json", "partitions",
                                device, NULL),
                ==, 0);
        assert_loopctl_detach(h, HARNESS_USER_A, image, device, 0);
        cleanup_device(h, image, device);
}

void test_real_other_user_denied(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "real-a.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *image_b = image_new(h, "real-b.img", 32 * MiB, HARNESS_USER_B);
        g_auto(HarnessRun) run = { 0 };
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);

        if (!b)
                return;
        g_autofree char *device = loopctl_attach(h, HARNESS_USER_A, image);
        if (!device)
                return;

        /* manage-others is auth_admin_keep: a password would do. Without interaction allowed, B is told to
         * allow it; with interaction allowed but no agent to ask, polkit still wants one: a plain no. */
        assert_loopctl_detach(h, HARNESS_USER_B, image, device, 1);

        assert_detach_refused(b, device, G_DBUS_CALL_FLAGS_NONE,
                DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL, image);

        assert_detach_refused(b, device, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION,
                LOOPD_ERROR_NOT_AUTHORIZED, NULL, image);

        /* B is not granted attach either (auth_admin). */
        harness_run_clear(&run);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_B, &run, "--no-ask-password", "--json", "attach",
                                image_b, NULL),
                ==, 1);
        g_autofree char *json_error = harness_run_json_error(&run, NULL);
        g_assert_cmpstr(json_error, ==, DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED);
        assert_bound(image_b, NULL);

        assert_loopctl_detach(h, HARNESS_USER_A, image, device, 0);
        cleanup_device(h, image, device);
}

/* A grant for one's own devices is not one for other users' devices. */
void test_real_own_grant_is_not_manage_others(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "grant-a.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *image_b = image_new(h, "grant-b.img", 32 * MiB, HARNESS_USER_B);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);

        if (!b)
                return;
        g_autofree char *device = loopctl_attach(h, HARNESS_USER_A, image);
        if (!device)
                return;

        /* B is granted attach: its own device comes and goes. */
        g_autofree char *dev_b = loopctl_attach(h, HARNESS_USER_B, image_b);
        if (dev_b) {
                assert_bound(image_b, dev_b);
                assert_loopctl_detach(h, HARNESS_USER_B, image_b, dev_b, 0);
        }

        /* A's device needs manage-others, which B is not granted. */
        assert_detach_refused(b, device, G_DBUS_CALL_FLAGS_NONE,
                DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, "manage-others", image);
        assert_loopctl_detach(h, HARNESS_USER_B, image, device, 1);

        assert_loopctl_detach(h, HARNESS_USER_A, image, device, 0);
        cleanup_device(h, image, device);
        cleanup_device(h, image_b, dev_b);
}

void test_real_unreadable_image_fails_before_bus(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *secret = image_new(h, "secret.img", 32 * MiB, NULL);
        g_autofree char *readable = image_new(h, "readable.img", 32 * MiB, HARNESS_USER_A);
        g_autoptr(HarnessBusMonitor) monitor = harness_bus_monitor_new(h, NULL);
        g_auto(HarnessRun) run = { 0 };

        g_assert_cmpint(chmod(secret, 0600), ==, 0);
        const char *const variants[][6] = {
                { "--no-ask-password", "--json", "attach", secret, NULL },
                { "--no-ask-password", "--json", "attach", "--read-only", secret, NULL },
                { "--no-ask-password", "--json", "open", secret, NULL },
        };
        for (guint i = 0; i < G_N_ELEMENTS(variants); i++) {
                harness_run_clear(&run);
                g_autofree char *message = NULL;

                g_assert_cmpint(harness_loopctlv(h, HARNESS_USER_A, &run, variants[i]), ==, 1);
                /* loopctl's own failure, before any call: the errno's name. */
                g_autofree char *json_error = harness_run_json_error(&run, &message);
                g_assert_cmpstr(json_error, ==, "EACCES");
                g_assert_nonnull(strstr(message ? message : "", secret));
                g_assert_nonnull(strstr(message ? message : "", "Permission denied"));
                g_assert_cmpstr(run.out, ==, "");
        }
        assert_bound(secret, NULL);
        g_assert_cmpuint(harness_bus_monitor_count(h, monitor, LOOPD_MANAGER_INTERFACE ".Attach"), ==, 0);
        g_assert_cmpuint(
                harness_bus_monitor_count(h, monitor, LOOPD_MANAGER_INTERFACE ".MountImage"), ==, 0);
        g_assert_cmpuint(harness_bus_monitor_count(
                                 h, monitor, "org.freedesktop.PolicyKit1.Authority.CheckAuthorization"),
                ==, 0);

        /* The monitor does see it when the image is readable. */
        g_autofree char *device = loopctl_attach(h, HARNESS_USER_A, readable);
        g_assert_cmpuint(harness_bus_monitor_count(h, monitor, LOOPD_MANAGER_INTERFACE ".Attach"), ==, 1);
        g_assert_cmpuint(harness_bus_monitor_count(
                                 h, monitor, "org.freedesktop.PolicyKit1.Authority.CheckAuthorization"),
                >=, 1);
        if (device) {
                harness_run_clear(&run);
                g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "--no-ask-password", "detach",
                                        device, NULL),
                        ==, 0);
                assert_bound(readable, NULL);
                cleanup_device(h, readable, device);
        }
}
