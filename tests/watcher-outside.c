/* watcher-outside.c: the watcher suite's changes behind loopd's back (umount, losetup -d) and loopd
 * restarted (kill -9) with its state. */
#include "test-watcher.h"

static char *state_record_path(Harness *h, const char *device)
{
        return g_strdup_printf("%s/devices/%s", h->state_dir, device + strlen("/dev/"));
}

/* root unmounts a loopd mount behind loopd's back: Unmounted, the empty mount point directory goes, the
 * Partitions property follows. */
void test_outside_umount_removes_mount_point(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "umount.img", "OUTSIDE");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *mount_point = NULL, *qmp = NULL;

        REQUIRE(owner);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        REQUIRE((device = attach(owner, image)));
        mount_point = harness_mount(owner, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE(mount_point);
        g_assert_true(g_str_has_prefix(mount_point, h->media_dir));
        wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        event_log_mark(log);

        qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        wait_event(log, device, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(is_mount_point(mount_point));
        /* Gone by the time the signal is out. */
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        wait_event(log, device, "PropertiesChanged", "Partitions", 1, HARNESS_TIMEOUT_MS);

        /* The device stays (it was not attached with autoclear), and loopd still serves it. */
        g_autoptr(GVariant) parts = harness_list_partitions(owner, device, &error);
        harness_assert_no_error(error);
        if (parts) {
                const char *mp = NULL;
                g_autoptr(GVariant) first =
                        g_variant_n_children(parts) ? g_variant_get_child_value(parts, 0) : NULL;
                if (first)
                        g_variant_get_child(first, 9, "&s", &mp);
                g_assert_cmpstr(mp, ==, "");
        }
        g_assert_true(losetup_has(device));
        g_assert_true(harness_detach(owner, device, NULL, &error));
        harness_assert_no_error(error);
}

/* MountImage's device is autoclear: when root unmounts its filesystem, the device goes too. */
void test_outside_umount_releases_autoclear_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = make_ext4_image(h, "open.img", "OPENED");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        const char *device = NULL, *node, *mount_point = NULL;
        int fd;

        REQUIRE(owner);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        fd = open(image, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        close(fd);
        g_autoptr(GVariant) reply = harness_call(owner, "MountImage",
                g_variant_new("(h@a{sv})", 0, harness_empty_options()), fds, G_DBUS_CALL_FLAGS_NONE, &error);
        harness_assert_no_error(error);
        REQUIRE(reply);
        g_autoptr(GVariant) mounts = NULL;
        g_variant_get(reply, "(&s@a(ss))", &device, &mounts);
        REQUIRE(g_variant_n_children(mounts) == 1);
        g_variant_get_child(mounts, 0, "(&s&s)", &node, &mount_point);
        wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);

        g_autofree char *qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        wait_event(log, device, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);
        wait_event(log, device, "DeviceDetached", NULL, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
        g_assert_cmpuint(left->len, ==, 0);

        /* Unmounted before the device goes. */
        g_autoptr(GPtrArray) got = manager_events(log, device);
        g_autofree char *attached = g_strdup_printf("DeviceAttached %s", device);
        g_autofree char *mounted = g_strdup_printf("Mounted %s", mount_point);
        g_autofree char *unmounted = g_strdup_printf("Unmounted %s", mount_point);
        guint i_mounted = G_MAXUINT, i_unmounted = G_MAXUINT, i_detached = G_MAXUINT;
        for (guint i = 0; i < got->len; i++) {
                if (g_str_equal(got->pdata[i], mounted))
                        i_mounted = i;
                else if (g_str_equal(got->pdata[i], unmounted))
                        i_unmounted = i;
                else if (g_str_has_prefix(got->pdata[i], "DeviceDetached "))
                        i_detached = i;
        }
        if (!(got->len > 0 && g_str_has_prefix(got->pdata[0], attached) && i_mounted < i_unmounted &&
                    i_unmounted < i_detached)) {
                g_autoptr(GString) text = g_string_new(NULL);
                for (guint i = 0; i < got->len; i++)
                        g_string_append_printf(text, "\n  %s", (char *)got->pdata[i]);
                for (guint i = 0; i < log->events->len; i++) {
                        Event *e = log->events->pdata[i];
                        if (event_is_about(e, device))
                                g_string_append_printf(
                                        text, "\n  (all) %s %s %s", e->name, e->a, e->b ? e->b : "");
                }
                g_test_fail_printf(
                        "expected DeviceAttached, Mounted, Unmounted, DeviceDetached in this order, got:%s",
                        text->str);
        }
}

/* losetup -d of a device loopd set up: the object goes, and so does loopd's record of its owner. */
void test_losetup_detach_of_managed_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        harness_allow_all(h);
        g_autofree char *image = harness_image_path(h, "managed.img");
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL, *record = NULL, *qdevice = NULL;

        REQUIRE(owner);
        image_create(image, 16 * MiB);
        g_autoptr(EventLog) log = event_log_new(owner);
        event_log_scope(log, image);
        REQUIRE((device = attach(owner, image)));
        /* As a client would: once loopd has announced it. */
        wait_event(log, device, "InterfacesAdded", NULL, 1, HARNESS_TIMEOUT_MS);
        record = state_record_path(h, device);
        g_assert_true(g_file_test(record, G_FILE_TEST_IS_REGULAR));
        g_auto(DeviceEntry) before = { 0 };
        list_device(owner, device, &before);
        g_assert_true(before.managed);
        g_assert_cmpuint(before.owner_uid, ==, harness_uid_of(HARNESS_USER_A));

        qdevice = g_shell_quote(device);
        g_free(test_sh("losetup --detach %s", qdevice));
        wait_event(log, device, "DeviceDetached", NULL, 1, HARNESS_TIMEOUT_MS);
        wait_event(log, device, "InterfacesRemoved", NULL, 1, HARNESS_TIMEOUT_MS);
        g_assert_false(g_file_test(record, G_FILE_TEST_EXISTS));
        g_auto(DeviceEntry) after = { 0 };
        list_device(owner, device, &after);
        /* Someone else may have bound the number since; it is not ours in any case. */
        g_assert_false(after.found && after.managed);
}

/* kill -9 loopd while two users have devices attached (one mounted); a new loopd knows the owners, lets
 * the owner unmount and detach without manage-others, and nothing is left behind. */
void test_restart_keeps_owners_and_mounts(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image_a = make_ext4_image(h, "a.img", "RESTARTA");
        g_autofree char *image_b = harness_image_path(h, "b.img");
        g_autofree char *dev_a = NULL, *dev_b = NULL, *mount_point = NULL;
        uid_t uid_a = harness_uid_of(HARNESS_USER_A), uid_b = harness_uid_of(HARNESS_USER_B);

        image_create(image_b, 16 * MiB);
        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first, "loopd-killed", NULL));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
                REQUIRE(a && b);
                REQUIRE((dev_a = attach(a, image_a)));
                REQUIRE((dev_b = attach(b, image_b)));
                mount_point = harness_mount(a, dev_a, NULL, &error);
                harness_assert_no_error(error);
                REQUIRE(mount_point);
        }
        g_autofree char *record_a = state_record_path(h, dev_a);
        g_autofree char *record_b = state_record_path(h, dev_b);
        g_assert_true(g_file_test(record_a, G_FILE_TEST_IS_REGULAR));
        g_assert_true(g_file_test(record_b, G_FILE_TEST_IS_REGULAR));

        REQUIRE(own_loopd_kill(h, &first));
        /* Nothing happened to the kernel's side. */
        g_assert_true(losetup_has(dev_a));
        g_assert_true(losetup_has(dev_b));
        g_assert_true(is_mount_point(mount_point));

        REQUIRE(harness_start_loopd(h));
        /* From now on owners act on their own devices only: someone else's needs manage-others. */
        fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        GDBusConnection *b = harness_connect_as(h, HARNESS_USER_B);
        REQUIRE(a && b);
        g_autoptr(EventLog) log = event_log_new(a);

        g_auto(DeviceEntry) entry_a = { 0 };
        g_auto(DeviceEntry) entry_b = { 0 };
        list_device(a, dev_a, &entry_a);
        list_device(a, dev_b, &entry_b);
        g_assert_true(entry_a.found && entry_a.managed);
        g_assert_cmpuint(entry_a.owner_uid, ==, uid_a);
        g_assert_cmpstr(entry_a.backing_file, ==, image_a);
        g_assert_true(entry_b.found && entry_b.managed);
        g_assert_cmpuint(entry_b.owner_uid, ==, uid_b);

        /* The Device object says the same. */
        g_autofree char *path_a = object_path_of(dev_a);
        g_autoptr(GVariant) owner_prop = g_dbus_connection_call_sync(b, LOOPD_BUS_NAME, path_a,
                PROPERTIES_INTERFACE, "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, "OwnerUID"),
                G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        if (owner_prop) {
                g_autoptr(GVariant) v = NULL;
                g_variant_get(owner_prop, "(v)", &v);
                g_assert_cmpuint(g_variant_get_uint32(v), ==, uid_a);
        }

        /* b may not touch a's device; a may. */
        g_assert_false(harness_detach(b, dev_a, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_false(is_mount_point(mount_point));
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        wait_event(log, dev_a, "Unmounted", mount_point, 1, HARNESS_TIMEOUT_MS);

        g_assert_true(harness_detach(a, dev_a, NULL, &error));
        harness_assert_no_error(error);
        g_clear_error(&error);
        g_assert_true(harness_detach(b, dev_b, NULL, &error));
        harness_assert_no_error(error);

        /* Nothing leaked: no device, no mount, no mount point, no record. */
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
        g_assert_cmpuint(left->len, ==, 0);
        g_autofree char *media_user = g_build_filename(h->media_dir, HARNESS_USER_A, NULL);
        g_autofree char *mounts =
                test_sh("findmnt --raw --noheadings --output TARGET | grep -F %s || true", h->media_dir);
        g_assert_cmpstr(mounts, ==, "");
        g_autofree char *entries = test_sh("ls -A %s", media_user);
        g_assert_cmpstr(entries, ==, "");
        g_assert_false(g_file_test(record_a, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_b, G_FILE_TEST_EXISTS));
}

/* A loopd mount that root unmounts while loopd is down: the new loopd removes its mount point directory. */
void test_restart_removes_mount_point_unmounted_while_down(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image = make_ext4_image(h, "down.img", "WHILEDOWN");
        g_autofree char *device = NULL, *mount_point = NULL, *qmp = NULL;

        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first, "loopd-killed", NULL));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                REQUIRE(a);
                g_autoptr(EventLog) log = event_log_new(a);
                REQUIRE((device = attach(a, image)));
                mount_point = harness_mount(a, device, NULL, &error);
                harness_assert_no_error(error);
                REQUIRE(mount_point);
                /* loopd records its mount points as the mount table shows them: once it announced the mount,
                 * and answered a call after that, the record is written. */
                wait_event(log, device, "Mounted", mount_point, 1, HARNESS_TIMEOUT_MS);
                g_autoptr(GVariant) parts = harness_list_partitions(a, device, &error);
                harness_assert_no_error(error);
        }
        g_autofree char *mounts_record = g_build_filename(h->state_dir, "mounts", NULL);
        g_autofree char *recorded = NULL;
        g_assert_true(g_file_get_contents(mounts_record, &recorded, NULL, NULL));
        g_assert_true(recorded && strstr(recorded, mount_point));
        REQUIRE(own_loopd_kill(h, &first));

        qmp = g_shell_quote(mount_point);
        g_free(test_sh("umount %s", qmp));
        g_assert_true(g_file_test(mount_point, G_FILE_TEST_IS_DIR));

        REQUIRE(harness_start_loopd(h));
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));

        /* The device is still the user's. */
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(a);
        g_auto(DeviceEntry) entry = { 0 };
        list_device(a, device, &entry);
        g_assert_true(entry.found && entry.managed);
        g_assert_cmpuint(entry.owner_uid, ==, harness_uid_of(HARNESS_USER_A));
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
}

/* Records whose device was detached, or whose number now holds another device, while loopd was down are
 * dropped at start; a record that still matches is kept; one that does not parse is removed. */
void test_stale_state_records_dropped(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(OwnLoopd) first = { 0 };
        g_autoptr(GError) error = NULL;
        g_autofree char *image_x = harness_image_path(h, "x.img"), *image_y = harness_image_path(h, "y.img");
        g_autofree char *image_z = harness_image_path(h, "z.img");
        g_autofree char *dev_x = NULL, *dev_y = NULL, *dev_z = NULL, *reused = NULL;
        uid_t uid_a = harness_uid_of(HARNESS_USER_A);

        image_create(image_x, 8 * MiB);
        image_create(image_y, 8 * MiB);
        image_create(image_z, 8 * MiB);
        harness_allow_all(h);
        REQUIRE(own_loopd_start(h, &first, "loopd-killed", NULL));
        {
                GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
                REQUIRE(a);
                REQUIRE((dev_x = attach(a, image_x)));
                REQUIRE((dev_y = attach(a, image_y)));
                REQUIRE((dev_z = attach(a, image_z)));
        }
        g_autofree char *record_x = state_record_path(h, dev_x);
        g_autofree char *record_y = state_record_path(h, dev_y);
        g_autofree char *record_z = state_record_path(h, dev_z);
        g_autofree char *record_junk = g_strdup_printf("%s/devices/loop1048574", h->state_dir);
        REQUIRE(own_loopd_kill(h, &first));

        /* While loopd is down: x is detached; y is detached and its number bound again, to the same file
         * (same backing file and offset, but a new diskseq); a record is garbage. */
        g_autofree char *qy = g_shell_quote(dev_y), *qimage_y = g_shell_quote(image_y);
        losetup_detach_and_wait(dev_x);
        losetup_detach_and_wait(dev_y);
        if (test_sh_status(NULL, "losetup %s %s", qy, qimage_y) == 0)
                reused = g_strdup(dev_y);
        else
                g_test_message("%s was taken by someone else; the re-use case is covered by that", dev_y);
        g_assert_true(g_file_set_contents(record_junk, "DISKSEQ=banana\n", -1, NULL));

        REQUIRE(harness_start_loopd(h));
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        REQUIRE(a);

        g_assert_false(g_file_test(record_x, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_y, G_FILE_TEST_EXISTS));
        g_assert_false(g_file_test(record_junk, G_FILE_TEST_EXISTS));
        g_assert_true(g_file_test(record_z, G_FILE_TEST_IS_REGULAR));

        g_auto(DeviceEntry) x = { 0 };
        g_auto(DeviceEntry) y = { 0 };
        g_auto(DeviceEntry) z = { 0 };
        list_device(a, dev_x, &x);
        list_device(a, dev_y, &y);
        list_device(a, dev_z, &z);
        g_assert_false(x.found && x.managed);
        g_assert_false(y.found && y.managed);
        if (reused) {
                g_assert_true(y.found);
                g_assert_cmpstr(y.backing_file, ==, image_y);
                g_assert_cmpuint(y.owner_uid, ==, 0);
        }
        g_assert_true(z.found && z.managed);
        g_assert_cmpuint(z.owner_uid, ==, uid_a);

        g_autofree char *log = harness_loopd_log(h);
        g_assert_nonnull(strstr(log, "Dropped the record of"));

        if (reused)
                losetup_detach_and_wait(dev_y);
        g_assert_true(harness_detach(a, dev_z, NULL, &error));
        harness_assert_no_error(error);
}
