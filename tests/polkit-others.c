/* polkit-others.c: the polkit suite's other users' and unmanaged devices (manage-others), reading open to
 * all, MountImage's checks and the per-user limit. */
#include "test-polkit.h"

void test_detach_others_device_needs_manage_others(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "owned.img", 32 * MiB, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);

        if (!a || !b)
                return;
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        g_autofree char *device = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;

        /* B may attach its own images, which is not the question here: A's device is A's. */
        fake_authority_clear_calls(h->authority);
        assert_detach_refused(b, device, G_DBUS_CALL_FLAGS_NONE, LOOPD_ERROR_NOT_AUTHORIZED, NULL, image);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, b, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL);
                assert_detail(call_at(calls, 0), "device", device);
                assert_detail(call_at(calls, 0), "backing_file", image);
        }
        assert_loopctl_detach(h, HARNESS_USER_B, image, device, 1);

        /* Granted, B may. */
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_ALLOW, 0);
        fake_authority_clear_calls(h->authority);
        g_assert_true(detach_as(b, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_ptr_array_unref(assert_calls(h, b, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL));
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_mount_others_device_needs_manage_others(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "mount-owned.img", 64 * MiB, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        g_autofree char *mount_point = NULL;

        if (!a || !b)
                return;
        g_free(image_mkfs_at(image, 0, 64 * MiB, "ext4", "owned"));
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        g_autofree char *device = attach_as(a, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;

        /* B mounting A's device: manage-others, not mount; no mount, and no mount point made for it. */
        g_autofree char *media_before = tree_snapshot(h->media_dir);
        fake_authority_clear_calls(h->authority);
        {
                g_autoptr(GVariant) reply =
                        harness_call(b, "Mount", g_variant_new("(s@a{sv})", device, harness_empty_options()),
                                NULL, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
                g_clear_error(&error);
                g_autoptr(GPtrArray) calls = assert_calls(h, b, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL);
                assert_detail(call_at(calls, 0), "device", device);
        }
        g_autofree char *not_mounted = mount_point_of(device);
        g_assert_null(not_mounted);
        g_autofree char *media_after = tree_snapshot(h->media_dir);
        g_assert_cmpstr(media_after, ==, media_before);

        /* A mounting its own: the mount action. */
        fake_authority_clear_calls(h->authority);
        {
                g_autoptr(GVariant) reply =
                        harness_call(a, "Mount", g_variant_new("(s@a{sv})", device, harness_empty_options()),
                                NULL, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                if (reply)
                        g_variant_get(reply, "(s)", &mount_point);
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_MOUNT, NULL);
                assert_detail(call_at(calls, 0), "device", device);
        }
        g_autofree char *mounted = mount_point_of(device);
        g_assert_nonnull(mount_point);
        g_assert_cmpstr(mounted, ==, mount_point);

        /* B unmounting A's mount, by mount point or by node: manage-others again. */
        const char *targets[] = { mount_point, device };
        for (guint i = 0; mount_point && i < G_N_ELEMENTS(targets); i++) {
                fake_authority_clear_calls(h->authority);
                g_autoptr(GVariant) reply = harness_call(b, "Unmount",
                        g_variant_new("(s@a{sv})", targets[i], harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
                g_clear_error(&error);
                g_ptr_array_unref(assert_calls(h, b, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL));
                g_autofree char *still = mount_point_of(device);
                g_assert_cmpstr(still, ==, mount_point);
        }

        if (mount_point) {
                g_autoptr(GVariant) reply = harness_call(a, "Unmount",
                        g_variant_new("(s@a{sv})", mount_point, harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                g_autofree char *after = mount_point_of(device);
                g_assert_null(after);
        }
        g_assert_true(detach_as(a, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_unmanaged_device_needs_manage_others(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "unmanaged.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *q = g_shell_quote(image);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        /* Set up with losetup, not loopd: even the image's owner needs manage-others to detach it. */
        g_autofree char *device = g_strstrip(test_sh("losetup --find --show %s", q));
        assert_bound(image, device);
        ListedDevice d = list_find(a, device);
        g_assert_true(d.found);
        g_assert_false(d.managed);
        list_clear(&d);
        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 0);

        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        assert_detach_refused(a, device, G_DBUS_CALL_FLAGS_NONE, LOOPD_ERROR_NOT_AUTHORIZED, NULL, image);
        {
                g_autoptr(GPtrArray) calls = assert_calls(h, a, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL);
                assert_detail(call_at(calls, 0), "device", device);
        }

        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_ALLOW, 0);
        fake_authority_clear_calls(h->authority);
        g_assert_true(detach_as(a, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_ptr_array_unref(assert_calls(h, a, 0, LOOPD_ACTION_MANAGE_OTHERS, NULL));
        assert_bound(image, NULL);

        g_autoptr(GPtrArray) left = oracle_loops_bound_to(image);
        if (left->len > 0)
                g_free(test_sh("losetup -d %s", device));
}

void test_reading_is_open_to_all(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "read.img", 64 * MiB, NULL);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        g_autofree char *device = attach_as(h->bus, image, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!device)
                return;

        /* polkit says no to everything, and nobody asks it: reading is open. */
        ListedDevice d = list_find(a, device);
        g_assert_true(d.found);
        g_assert_cmpstr(d.backing_file, ==, image);
        g_assert_true(d.managed);
        g_assert_cmpuint(d.owner, ==, 0);
        list_clear(&d);

        g_autoptr(GVariant) parts = harness_list_partitions(a, device, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_nonnull(parts);
        if (parts)
                g_assert_cmpuint(g_variant_n_children(parts), ==, 2);

        g_autofree char *base = g_path_get_basename(device);
        g_autofree char *path = g_strdup_printf(LOOPD_DEVICE_PATH_PREFIX "/%s", base);
        g_autoptr(GVariant) props = g_dbus_connection_call_sync(a, LOOPD_BUS_NAME, path,
                "org.freedesktop.DBus.Properties", "GetAll", g_variant_new("(s)", LOOPD_DEVICE_INTERFACE),
                G_VARIANT_TYPE("(a{sv})"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (props) {
                g_autoptr(GVariant) dict = g_variant_get_child_value(props, 0);
                const char *dev = NULL;
                guint32 owner = G_MAXUINT32;
                g_autoptr(GVariant) p = g_variant_lookup_value(dict, "Partitions", NULL);

                g_assert_true(g_variant_lookup(dict, "Device", "&s", &dev));
                g_assert_cmpstr(dev, ==, device);
                g_assert_true(g_variant_lookup(dict, "OwnerUID", "u", &owner));
                g_assert_cmpuint(owner, ==, 0);
                g_assert_nonnull(p);
                if (p)
                        g_assert_cmpuint(g_variant_n_children(p), ==, 2);
        }

        g_autoptr(GVariant) objects = g_dbus_connection_call_sync(a, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
                G_VARIANT_TYPE("(a{oa{sa{sv}}})"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (objects) {
                g_autoptr(GVariant) dict = g_variant_get_child_value(objects, 0);
                g_autoptr(GVariant) entry = g_variant_lookup_value(dict, path, NULL);
                g_assert_nonnull(entry);
        }

        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(
                harness_loopctl(h, HARNESS_USER_A, &run, "--no-ask-password", "--json", "list", NULL), ==,
                0);
        g_assert_nonnull(strstr(run.out, device));
        harness_run_clear(&run);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "--no-ask-password", "--json", "partitions",
                                device, NULL),
                ==, 0);

        g_assert_cmpuint(fake_authority_n_calls(h->authority), ==, 0);
        g_assert_true(harness_detach(h->bus, device, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_mount_image_asks_attach_and_mount_up_front(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = image_new(h, "open.img", 64 * MiB, HARNESS_USER_A);
        g_autofree char *media_before = tree_snapshot(h->media_dir);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        if (!a)
                return;
        g_free(image_mkfs_at(image, 0, 64 * MiB, "ext4", "open"));

        /* attach refused: mount is not even asked (no second password prompt for nothing). */
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_ALLOW, 0);
        {
                g_autoptr(GVariant) reply = call_with_image(
                        a, "MountImage", image, O_RDONLY, NULL, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
                g_clear_error(&error);
                g_ptr_array_unref(assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, NULL));
                assert_bound(image, NULL);
        }

        /* mount refused: both asked before anything is attached (checked while the mount question is
         * pending), and nothing is. */
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_DENY, 1000);
        {
                g_autoptr(GVariant) reply =
                        call_checking_nothing_before_answer(h, a, "MountImage", image, O_RDONLY, 2, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
                g_clear_error(&error);
                g_ptr_array_unref(assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, LOOPD_ACTION_MOUNT, NULL));
                assert_bound(image, NULL);
                g_autofree char *media_after = tree_snapshot(h->media_dir);
                g_assert_cmpstr(media_after, ==, media_before);
        }

        /* Both granted: one round of the two questions, nothing more for the mounts it makes. */
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_ALLOW, 0);
        fake_authority_clear_calls(h->authority);
        g_autoptr(GVariant) reply =
                call_with_image(a, "MountImage", image, O_RDONLY, NULL, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!reply)
                return;
        {
                g_autoptr(GPtrArray) calls =
                        assert_calls(h, a, 0, LOOPD_ACTION_ATTACH, LOOPD_ACTION_MOUNT, NULL);
                assert_detail(call_at(calls, 0), "backing_file", image);
                assert_detail(call_at(calls, 0), "read_only", "true");
        }
        const char *device = NULL;
        g_autoptr(GVariantIter) mounts = NULL;
        const char *node, *mount_point;
        g_variant_get(reply, "(&sa(ss))", &device, &mounts);
        assert_bound(image, device);
        g_autoptr(GPtrArray) points = g_ptr_array_new_with_free_func(g_free);
        while (g_variant_iter_next(mounts, "(&s&s)", &node, &mount_point)) {
                g_autofree char *found = mount_point_of(node);
                g_assert_cmpstr(found, ==, mount_point);
                g_ptr_array_add(points, g_strdup(mount_point));
        }
        g_assert_cmpuint(points->len, ==, 1);

        /* A's own mounts: A unmounts with the mount action; the autoclear device goes with the last one. */
        for (guint i = 0; i < points->len; i++) {
                g_autoptr(GVariant) r = harness_call(a, "Unmount",
                        g_variant_new("(s@a{sv})", (char *)points->pdata[i], harness_empty_options()), NULL,
                        G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        assert_bound(image, NULL);
        cleanup_device(h, image, device);
}

void test_per_user_limit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        char *images[7] = { 0 };
        char *devices[7] = { 0 };

        if (!a || !b)
                return;
        for (guint i = 0; i < G_N_ELEMENTS(images); i++) {
                g_autofree char *name = g_strdup_printf("limit-%u.img", i);
                images[i] = image_new(h, name, 16 * MiB, i < 3 || i == 6 ? HARNESS_USER_A : HARNESS_USER_B);
        }
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);

        /* loopd runs with --max-devices-per-user 2. */
        for (guint i = 0; i < 2; i++) {
                devices[i] = attach_as(a, images[i], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        devices[2] = attach_as(a, images[2], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_LIMIT_EXCEEDED, NULL);
        g_clear_error(&error);
        assert_bound(images[2], NULL);

        /* Per user: B still may; root has no limit. */
        devices[3] = attach_as(b, images[3], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        for (guint i = 4; i < 6; i++) {
                devices[i] = attach_as(h->bus, images[i], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
        }
        g_autofree char *root_third = attach_as(h->bus, images[2], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        cleanup_device(h, images[2], root_third);

        /* A detaches one and may attach again. */
        if (devices[0]) {
                g_assert_true(detach_as(a, devices[0], G_DBUS_CALL_FLAGS_NONE, &error));
                harness_assert_no_error(error);
                g_clear_error(&error);
                devices[6] = attach_as(a, images[6], O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
                harness_assert_no_error(error);
                g_clear_error(&error);
                assert_bound(images[6], devices[6]);
        }

        for (guint i = 0; i < G_N_ELEMENTS(images); i++) {
                cleanup_device(h, images[i], devices[i]);
                g_free(images[i]);
                g_free(devices[i]);
        }
}

/* An answer is to what polkit was told. B's Detach (data: or another method on a device, "Mount") of A's
 * device waits for manage-others; meanwhile A detaches it and attaches another image, which gets the same
 * number: when polkit has answered, the call finds another device, and loopd asks polkit again, with that
 * device's details (a rule may decide by the backing file), instead of taking the yes about the first one
 * for it. */
void test_asks_again_for_a_rebound_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const char *method = h->options->data ? h->options->data : "Detach";
        g_autofree char *first = image_new(h, "first.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *second = image_new(h, "second.img", 32 * MiB, HARNESS_USER_A);
        g_autofree char *device = NULL, *again = NULL;
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autoptr(GPtrArray) calls = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        guint n_done = 0;
        Overlap call = { .what = method, .n_done = &n_done };
        guint n_others = 0;

        if (!a || !b)
                return;
        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        /* Long enough for A's Detach and Attach meanwhile, under memcheck too. */
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_ALLOW, 4000);
        device = attach_as(a, first, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        if (!device)
                return;

        fake_authority_clear_calls(h->authority);
        g_main_context_push_thread_default(context);
        /* The second image has a filesystem, for a Mount to find. */
        g_free(image_mkfs_at(second, 0, 32 * MiB, "ext4", "second"));
        overlap_start(&call, b, method, g_variant_new("(s@a{sv})", device, harness_empty_options()), NULL);
        g_assert_true(fake_authority_wait_calls(h->authority, 1, HARNESS_TIMEOUT_MS));
        g_assert_true(detach_as(a, device, G_DBUS_CALL_FLAGS_NONE, &error));
        harness_assert_no_error(error);
        again = attach_as(a, second, O_RDWR, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        while (n_done < 1)
                g_main_context_iteration(context, TRUE);
        g_main_context_pop_thread_default(context);
        if (g_strcmp0(again, device) != 0) {
                harness_fail("the second image got %s, not %s: nothing was bound anew under the question",
                        again ? again : "no device", device);
                goto out;
        }

        calls = fake_authority_calls(h->authority);
        print_calls(calls);
        for (guint i = 0; i < calls->len; i++) {
                const FakeAuthCall *c = call_at(calls, i);

                if (!g_str_equal(c->action_id, LOOPD_ACTION_MANAGE_OTHERS))
                        continue;
                assert_detail(c, "backing_file", n_others == 0 ? first : second);
                n_others++;
        }
        g_assert_cmpuint(n_others, ==, 2);
        /* Asked about the second image too (and allowed here): done to it. */
        harness_assert_no_error(call.error);
        if (g_str_equal(method, "Detach"))
                assert_bound(second, NULL);

out:
        overlap_clear(&call);
        if (again)
                cleanup_device(h, second, again);
}
