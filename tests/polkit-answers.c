/* polkit-answers.c: the polkit suite's answers of the fake authority and what loopd does with them: allowed,
 * denied, challenged, interactive, absent, slow, caller gone, root. */
#include "test-polkit.h"

/* ---------------------------------------------------------------------------------------------------- */
/* The fake authority: what loopd asks, and what it does with the answer */

void test_allowed(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "allowed.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *state_before = tree_snapshot(h->state_dir), *state_attached = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);

        g_autofree char *device = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        assert_bound(image, device);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL);
                assert_detail(call_at(calls, 0), "backing_file", image);
                assert_detail(call_at(calls, 0), "read_only", "false");
        }

        /* The caller owns what it attached, and loopd recorded it. */
        ListedDevice d = list_find(a, device);
        g_assert_true(d.found);
        g_assert_true(d.managed);
        g_assert_cmpuint(d.owner, ==, harness_uid_of(HARNESS_USER_A));
        list_clear(&d);
        state_attached = tree_snapshot(h->state_dir);
        g_assert_cmpstr(state_attached, !=, state_before);

        /* Detaching one's own device is the attach action again, with the device in the details. */
        fake_authority_clear_calls(h->authority);
        g_assert_true(detach_as(a, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL);
                assert_detail(call_at(calls, 0), "device", device);
                assert_detail(call_at(calls, 0), "backing_file", image);
        }
        assert_bound(image, NULL);
        g_autofree char *state_after = tree_snapshot(h->state_dir);
        g_assert_cmpstr(state_after, ==, state_before);
        cleanup_device(h, image, device);
}

void test_denied_changes_nothing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "denied.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *fs_image = image_new(h, "denied-fs.img", 64 * MiB, HARNESS_USER_A);
        g_autofree char *state_before = tree_snapshot(h->state_dir);
        g_autofree char *media_before = tree_snapshot(h->media_dir);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        g_free(image_mkfs_at(fs_image, 0, 64 * MiB, "ext4", "denied"));

        /* Attach: polkit says no, after a while; loopd touches nothing before the answer nor after it. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_DENY, 1000);
        g_autoptr(GVariant) attached =
                call_checking_nothing_before_answer(h, a, "Attach", image, O_RDWR, 1, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL);
        assert_bound(image, NULL);

        /* MountImage: neither a device nor a mount. */
        g_autoptr(GVariant) reply =
                call_checking_nothing_before_answer(h, a, "MountImage", fs_image, O_RDONLY, 1, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_ptr_array_unref(assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL));
        assert_bound(fs_image, NULL);

        g_autofree char *state_after = tree_snapshot(h->state_dir);
        g_autofree char *media_after = tree_snapshot(h->media_dir);
        g_assert_cmpstr(state_after, ==, state_before);
        g_assert_cmpstr(media_after, ==, media_before);

        /* A denied Detach of one's own device leaves it bound and recorded. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        g_autofree char *own = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!own)
                return;
        g_autofree char *state_attached = tree_snapshot(h->state_dir);
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_DENY, 0);
        fake_authority_clear_calls(h->authority);
        assert_detach_refused(a, own, G_DBUS_CALL_FLAGS_NONE, LOOPD_ERROR_NOT_AUTHORIZED, NULL, image);
        g_autoptr(GPtrArray) detach_calls = assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL);
        g_autofree char *state_still = tree_snapshot(h->state_dir);
        g_assert_cmpstr(state_still, ==, state_attached);
        ListedDevice d = list_find(h->bus, own);
        g_assert_true(d.managed);
        g_assert_cmpuint(d.owner, ==, harness_uid_of(HARNESS_USER_A));
        list_clear(&d);

        g_assert_true(harness_detach(h->bus, own, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, own);
}

void test_challenge_without_interaction(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "challenge.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *state_before = tree_snapshot(h->state_dir);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* "A password would do": the caller did not allow interaction, so it must be told to ask again with
         * it, not just "no". */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_CHALLENGE, 0);
        g_autofree char *device = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);
        g_clear_error(&error);
        g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL);
        assert_bound(image, NULL);
        g_autofree char *state_after = tree_snapshot(h->state_dir);
        g_assert_cmpstr(state_after, ==, state_before);
        cleanup_device(h, image, device);
}

void test_interactive_flag_reaches_polkit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "interactive.img", 32 * MiB, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* auth_admin with an agent that knows the password: yes only when loopd lets polkit ask. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_INTERACTIVE, 0);

        g_autofree char *none = attach_as(a, image, O_RDONLY, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);
        g_clear_error(&error);
        g_ptr_array_unref(assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL));
        assert_bound(image, NULL);
        cleanup_device(h, image, none);

        fake_authority_clear_calls(h->authority);
        g_autofree char *device =
                attach_as(a, image, O_RDONLY, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        assert_bound(image, device);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 1, LOOPD_ACTION_ATTACH, NULL);
                assert_detail(call_at(calls, 0), "backing_file", image);
                assert_detail(call_at(calls, 0), "read_only", "true");
        }

        fake_authority_clear_calls(h->authority);
        g_assert_true(detach_as(a, device, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 1, LOOPD_ACTION_ATTACH, NULL);
                assert_detail(call_at(calls, 0), "device", device);
        }
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_challenge_after_interaction_is_denied(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "no-agent.img", 32 * MiB, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* Interaction was allowed and polkit still wants a password (no agent, or the user gave up): asking
         * again with interaction cannot help, so this is a plain no. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_CHALLENGE, 0);
        g_autofree char *device =
                attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_autoptr(GPtrArray) calls = assert_calls(h, a, 1, LOOPD_ACTION_ATTACH, NULL);
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_polkit_absent_denies(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "absent.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *state_before = tree_snapshot(h->state_dir);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* Nobody owns org.freedesktop.PolicyKit1: no, not an error about the bus, and not a hang. */
        g_autofree char *device = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
        g_autofree char *interactive =
                attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, interactive);
        g_autofree char *state_after = tree_snapshot(h->state_dir);
        g_assert_cmpstr(state_after, ==, state_before);

        /* Root needs no polkit. */
        g_autofree char *root_dev = attach_as(h->bus, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!root_dev)
                return;
        assert_bound(image, root_dev);
        g_assert_true(harness_detach(h->bus, root_dev, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, root_dev);
}

void test_slow_authority_does_not_block_others(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image_a = image_new(h, "slow-a.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *image_b = image_new(h, "slow-b.img", 32 * MiB, HARNESS_USER_B);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        GDBusConnection *reader = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GMainContext) context = g_main_context_new();
        guint n_done = 0;
        Overlap slow = { .what = "A's Attach (polkit answers in 5 s)", .n_done = &n_done };
        Overlap list = { .what = "ListDevices", .n_done = &n_done };
        Overlap fast = { .what = "B's Attach (polkit answers at once)", .n_done = &n_done };
        g_autofree char *dev_a = NULL, *dev_b = NULL;

        if (!a || !b || !reader)
                return;
        g_main_context_push_thread_default(context);

        /* A's question stays with polkit for a while (the time to type a password)... */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 5000);
        overlap_start_attach(&slow, a, image_a);
        g_assert_true(fake_authority_wait_calls(h->authority, 1, HARNESS_TIMEOUT_MS));

        /* ...while loopd serves everyone else: a reader and another user's attach that polkit answers at
         * once (the fake took A's rule when A's question came). */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        overlap_start(&list, reader, "ListDevices", NULL, NULL);
        overlap_start_attach(&fast, b, image_b);
        while (n_done < 3)
                g_main_context_iteration(context, TRUE);
        g_main_context_pop_thread_default(context);

        g_assert_no_error(slow.error);
        g_assert_no_error(list.error);
        g_assert_no_error(fast.error);
        if (slow.reply)
                g_variant_get(slow.reply, "(so)", &dev_a, NULL);
        if (fast.reply)
                g_variant_get(fast.reply, "(so)", &dev_b, NULL);
        if (list.order > slow.order)
                g_test_fail_printf(
                        "ListDevices (#%u) waited for A's polkit check (#%u)", list.order, slow.order);
        if (fast.order > slow.order)
                g_test_fail_printf(
                        "B's Attach (#%u) waited for A's polkit check (#%u)", fast.order, slow.order);
        {
                g_autoptr(GPtrArray) calls = fake_authority_calls(h->authority);
                print_calls(calls);
                g_assert_cmpuint(calls->len, ==, 2);
                if (calls->len == 2) {
                        g_assert_cmpstr(
                                ((FakeAuthCall *)calls->pdata[0])->subject_bus_name, ==, unique_name(a));
                        g_assert_cmpstr(
                                ((FakeAuthCall *)calls->pdata[1])->subject_bus_name, ==, unique_name(b));
                }
        }
        if (dev_a)
                assert_bound(image_a, dev_a);
        if (dev_b)
                assert_bound(image_b, dev_b);
        overlap_clear(&slow);
        overlap_clear(&list);
        overlap_clear(&fast);
        cleanup_device(h, image_a, dev_a);
        cleanup_device(h, image_b, dev_b);
}

void test_caller_gone_before_answer(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image_a = image_new(h, "gone-a.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *image_b = image_new(h, "gone-b.img", 32 * MiB, HARNESS_USER_B);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autoptr(GError) error = NULL;
        guint n_done = 0;
        Overlap gone = { .what = "A's Attach", .n_done = &n_done };

        if (!a || !b)
                return;
        g_main_context_push_thread_default(context);
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 3000);
        overlap_start_attach(&gone, a, image_a);
        g_assert_true(fake_authority_wait_calls(h->authority, 1, HARNESS_TIMEOUT_MS));
        /* B's answer comes later than A's: when B's Attach returns, loopd has handled A's answer. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 4000);
        g_assert_true(g_dbus_connection_close_sync(a, NULL, NULL));
        while (n_done < 1)
                g_main_context_iteration(context, TRUE);
        g_main_context_pop_thread_default(context);
        if (gone.reply) {
                /* The test thread stalled for seconds: the answer came before A left. */
                g_test_incomplete("A's Attach was answered before A disconnected");
                g_autofree char *dev = NULL;
                g_variant_get(gone.reply, "(so)", &dev, NULL);
                overlap_clear(&gone);
                cleanup_device(h, image_a, dev);
                return;
        }
        overlap_clear(&gone);

        g_autofree char *dev_b = attach_as(b, image_b, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 2);

        /* Nobody is left to own, use or detach a device for A: loopd must not have attached one. */
        assert_bound(image_a, NULL);
        g_autoptr(GPtrArray) left = oracle_loops_bound_to(image_a);
        for (guint i = 0; i < left->len; i++)
                cleanup_device(h, image_a, left->pdata[i]);
        if (dev_b) {
                assert_bound(image_b, dev_b);
                cleanup_device(h, image_b, dev_b);
        }
        g_assert_true(harness_loopd_alive(h));
}

void test_root_allowed_without_asking(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "root.img", 32 * MiB, NULL);
        g_autofree char *image_a = image_new(h, "root-a.img", 32 * MiB, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* polkit says no to everything (the fake's default): root does not ask it. */
        g_autofree char *device = attach_as(h->bus, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;
        assert_bound(image, device);
        ListedDevice d = list_find(h->bus, device);
        g_assert_true(d.managed);
        g_assert_cmpuint(d.owner, ==, 0);
        list_clear(&d);
        g_assert_true(detach_as(h->bus, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image, NULL);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 0);

        /* Nor for another user's device. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        g_autofree char *dev_a = attach_as(a, image_a, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!dev_a)
                return;
        fake_authority_clear_calls(h->authority);
        g_assert_true(detach_as(h->bus, dev_a, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image_a, NULL);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 0);
        cleanup_device(h, image, device);
        cleanup_device(h, image_a, dev_a);
}
