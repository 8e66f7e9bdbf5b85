/* test-polkit.c: who may do what. Every method against a fake polkit authority programmed per case (its call
 * log shows what loopd asked), no authority at all, and the real polkitd with the project's policy. What
 * changed is read from the kernel (sysfs, findmnt), the state and media directories and a bus monitor; loopd
 * is asked only what only it knows (who owns a device). */
#include "test-polkit.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Images and what the kernel says about them */

/* A sparse image in the test's image directory, owned by user (NULL: root). */
char *image_new(Harness *h, const char *name, guint64 size, const char *user)
{
        char *path = g_build_filename(h->image_dir, name, NULL);
        uid_t uid;
        gid_t gid;

        image_create(path, size);
        if (user && harness_user(user, &uid, &gid) && chown(path, uid, gid) < 0)
                g_test_fail_printf("chown %s: %s", path, g_strerror(errno));
        return path;
}

void check_bound(const char *file, int line, const char *image, const char *device)
{
        g_autoptr(GPtrArray) loops = oracle_loops_bound_to(image);
        g_autofree char *list = NULL;

        g_ptr_array_add(loops, NULL);
        list = g_strjoinv(", ", (char **)loops->pdata);
        g_ptr_array_set_size(loops, loops->len - 1);
        if (!device && loops->len > 0)
                g_test_fail_printf("%s:%d: %s is bound to %s, expected to nothing", file, line, image, list);
        else if (device && (loops->len != 1 || g_strcmp0(loops->pdata[0], device) != 0))
                g_test_fail_printf(
                        "%s:%d: %s is bound to [%s], expected to %s", file, line, image, list, device);
}

void check_loopctl_detach(const char *file, int line, Harness *h, const char *user, const char *image,
        const char *device, int status)
{
        g_auto(HarnessRun) run = { 0 };
        int got = harness_loopctl(h, user, &run, "--no-ask-password", "detach", device, NULL);

        if (got != status)
                g_test_fail_printf("%s:%d: loopctl detach %s as %s exited %d, expected %d: %s", file, line,
                        device, user, got, status, run.err ? run.err : "");
        else if (status == 1 && !g_str_has_prefix(run.err ? run.err : "", "loopctl: "))
                g_test_fail_printf("%s:%d: loopctl detach failed without a 'loopctl: ' line: %s", file, line,
                        run.err ? run.err : "");
        check_bound(file, line, image, status == 0 ? NULL : device);
}

/* Where node is mounted (findmnt), or NULL. */
char *mount_point_of(const char *node)
{
        g_autofree char *out = NULL;
        g_autofree char *q = g_shell_quote(node);

        if (test_sh_status(&out, "findmnt --noheadings --first-only --output TARGET --source %s", q) != 0)
                return NULL;
        g_strstrip(out);
        return *out ? g_steal_pointer(&out) : NULL;
}

/* Every file under dir, relative names, sorted, one a line: what a denied call must not change. */
char *tree_snapshot(const char *dir)
{
        g_autofree char *q = g_shell_quote(dir);
        char *out = NULL;

        if (test_sh_status(&out, "cd %s 2>/dev/null && find . -mindepth 1 -printf '%%y %%p\\n' | sort", q) !=
                0) {
                g_free(out);
                return g_strdup("");
        }
        return out;
}

/* Detaches device as root through loopd when it is still bound to image; for cleanup after a failure. */
void cleanup_device(Harness *h, const char *image, const char *device)
{
        g_autoptr(GPtrArray) loops = NULL;
        g_autoptr(GError) error = NULL;

        if (!device)
                return;
        loops = oracle_loops_bound_to(image);
        if (!g_ptr_array_find_with_equal_func(loops, device, g_str_equal, NULL))
                return;
        if (!harness_detach(h->bus, device, g_variant_new_parsed("{'unmount': <true>}"), &error))
                g_test_message("cleanup: detaching %s as root failed: %s", device, error->message);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Raw calls with the interactive flag, and calls that overlap */

/* Opens path as the test (root) with open_flags and calls method(h, a{sv}) with that fd. */
GVariant *call_with_image(GDBusConnection *c, const char *method, const char *path, int open_flags,
        GVariant *options, GDBusCallFlags flags, GError **error)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        int fd, index;

        fd = open(path, open_flags | O_CLOEXEC);
        if (fd < 0) {
                int e = errno;
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "open %s: %s", path, g_strerror(e));
                return NULL;
        }
        index = g_unix_fd_list_append(fds, fd, error);
        close(fd);
        if (index < 0)
                return NULL;
        return harness_call(c, method,
                g_variant_new("(h@a{sv})", index, options ? options : harness_empty_options()), fds, flags,
                error);
}

/* Attach with call flags; returns the device or NULL with error set. */
char *attach_as(GDBusConnection *c, const char *path, int open_flags, GDBusCallFlags flags, GError **error)
{
        g_autoptr(GVariant) reply = call_with_image(c, "Attach", path, open_flags, NULL, flags, error);
        char *device = NULL;

        if (reply)
                g_variant_get(reply, "(so)", &device, NULL);
        return device;
}

bool detach_as(GDBusConnection *c, const char *device, GDBusCallFlags flags, GError **error)
{
        g_autoptr(GVariant) reply = harness_call(c, "Detach",
                g_variant_new("(s@a{sv})", device, harness_empty_options()), NULL, flags, error);
        return reply != NULL;
}

void check_detach_refused(const char *file, int line, GDBusConnection *c, const char *device,
        GDBusCallFlags flags, const char *error_name, const char *needle, const char *image)
{
        g_autoptr(GError) error = NULL;

        if (detach_as(c, device, flags, &error))
                g_test_fail_printf("%s:%d: Detach of %s was not refused", file, line, device);
        else
                harness_assert_dbus_error(error, error_name, needle);
        check_bound(file, line, image, device);
}

static void overlap_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
        Overlap *o = user_data;

        o->reply = g_dbus_connection_call_with_unix_fd_list_finish(
                G_DBUS_CONNECTION(source), NULL, result, &o->error);
        o->order = ++*o->n_done;
        g_test_message(
                "%s completed %s (#%u)", o->what, o->reply ? "successfully" : o->error->message, o->order);
}

/* Starts method on c; its completion is dispatched in the thread-default main context. */
void overlap_start(Overlap *o, GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds)
{
        g_dbus_connection_call_with_unix_fd_list(c, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, method, params, NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS,
                fds, NULL, overlap_done, o);
}

static void overlap_start_with_image(
        Overlap *o, GDBusConnection *c, const char *method, const char *path, int open_flags)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        int fd = open(path, open_flags | O_CLOEXEC);

        if (fd < 0 || g_unix_fd_list_append(fds, fd, &o->error) < 0) {
                /* Completed (failed) at once, so that nobody waits for it. */
                if (!o->error)
                        o->error = g_error_new(G_IO_ERROR, g_io_error_from_errno(errno), "open %s: %s", path,
                                g_strerror(errno));
                o->order = ++*o->n_done;
                if (fd >= 0)
                        close(fd);
                return;
        }
        close(fd);
        overlap_start(o, c, method, g_variant_new("(h@a{sv})", 0, harness_empty_options()), fds);
}

void overlap_start_attach(Overlap *o, GDBusConnection *c, const char *path)
{
        overlap_start_with_image(o, c, "Attach", path, O_RDWR);
}

void overlap_clear(Overlap *o)
{
        g_clear_pointer(&o->reply, g_variant_unref);
        g_clear_error(&o->error);
}

/* Calls method(image fd, {}) as c and, once the fake authority has received n_questions (the last answer
 * programmed with a delay), checks that loopd changed nothing before it had the answer: the image is not
 * bound, the state and media directories are as they were. Returns the reply or NULL with error set. */
GVariant *call_checking_nothing_before_answer(Harness *h, GDBusConnection *c, const char *method,
        const char *image, int open_flags, guint n_questions, GError **error)
{
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autofree char *state_before = tree_snapshot(h->state_dir);
        g_autofree char *media_before = tree_snapshot(h->media_dir);
        guint n_done = 0;
        Overlap o = { .what = method, .n_done = &n_done };

        fake_authority_clear_calls(h->authority);
        g_main_context_push_thread_default(context);
        overlap_start_with_image(&o, c, method, image, open_flags);
        if (fake_authority_wait_calls(h->authority, n_questions, HARNESS_TIMEOUT_MS)) {
                g_autofree char *state_now = tree_snapshot(h->state_dir);
                g_autofree char *media_now = tree_snapshot(h->media_dir);

                g_test_message("%s waits for polkit: checking that nothing changed yet", method);
                assert_bound(image, NULL);
                g_assert_cmpstr(state_now, ==, state_before);
                g_assert_cmpstr(media_now, ==, media_before);
        } else
                g_test_fail_printf(
                        "%s: loopd did not ask polkit %u question(s) before answering", method, n_questions);
        while (n_done == 0)
                g_main_context_iteration(context, TRUE);
        g_main_context_pop_thread_default(context);
        if (o.error)
                g_propagate_error(error, g_steal_pointer(&o.error));
        return o.reply;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fake authority's call log */

const char *unique_name(GDBusConnection *c)
{
        return c ? g_dbus_connection_get_unique_name(c) : NULL;
}

/* Prints the log into the test output, to make a failure readable. */
void print_calls(GPtrArray *calls)
{
        for (guint i = 0; i < calls->len; i++) {
                const FakeAuthCall *c = calls->pdata[i];
                g_autoptr(GString) details = g_string_new(NULL);
                GHashTableIter it;
                gpointer k, v;

                g_hash_table_iter_init(&it, c->details);
                while (g_hash_table_iter_next(&it, &k, &v))
                        g_string_append_printf(details, " %s=%s", (char *)k, (char *)v);
                g_test_message("polkit call %u: %s subject %s:%s flags %u details:%s", i, c->action_id,
                        c->subject_kind, c->subject_bus_name ? c->subject_bus_name : "-", c->flags,
                        details->str);
        }
}

GPtrArray *check_calls(const char *file, int line, Harness *h, GDBusConnection *caller, guint32 flags, ...)
{
        GPtrArray *calls = fake_authority_calls(h->authority);
        g_autoptr(GPtrArray) want = g_ptr_array_new();
        const char *action;
        va_list ap;

        va_start(ap, flags);
        while ((action = va_arg(ap, const char *)))
                g_ptr_array_add(want, (char *)action);
        va_end(ap);

        print_calls(calls);
        if (calls->len != want->len) {
                g_test_fail_printf("%s:%d: polkit was asked %u time(s), expected %u", file, line, calls->len,
                        want->len);
                return calls;
        }
        for (guint i = 0; i < calls->len; i++) {
                const FakeAuthCall *c = calls->pdata[i];

                if (g_strcmp0(c->action_id, want->pdata[i]) != 0)
                        g_test_fail_printf("%s:%d: polkit call %u asked %s, expected %s", file, line, i,
                                c->action_id, (char *)want->pdata[i]);
                if (g_strcmp0(c->subject_kind, "system-bus-name") != 0)
                        g_test_fail_printf(
                                "%s:%d: polkit call %u has a %s subject, expected system-bus-name", file,
                                line, i, c->subject_kind);
                if (g_strcmp0(c->subject_bus_name, unique_name(caller)) != 0)
                        g_test_fail_printf("%s:%d: polkit call %u is about %s, expected the caller %s", file,
                                line, i, c->subject_bus_name, unique_name(caller));
                if (c->flags != flags)
                        g_test_fail_printf("%s:%d: polkit call %u has flags %u, expected %u", file, line, i,
                                c->flags, flags);
        }
        return calls;
}

void check_detail(const char *file, int line, const FakeAuthCall *call, const char *key, const char *want)
{
        const char *got;

        if (!call)
                return;
        got = g_hash_table_lookup(call->details, key);
        if (g_strcmp0(got, want) != 0)
                g_test_fail_printf("%s:%d: polkit detail %s of %s is '%s', expected '%s'", file, line, key,
                        call->action_id, got ? got : "(missing)", want);
}

const FakeAuthCall *call_at(GPtrArray *calls, guint i)
{
        return calls && i < calls->len ? calls->pdata[i] : NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* ListDevices */

ListedDevice list_find(GDBusConnection *c, const char *device)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) devices = harness_list_devices(c, &error);
        ListedDevice d = { 0 };
        GVariantIter it;
        const char *name, *backing;
        gboolean managed;
        guint32 owner;

        harness_assert_no_error(error);
        g_clear_error(&error);
        if (!devices)
                return d;
        g_variant_iter_init(&it, devices);
        while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &name, NULL, &backing, NULL, NULL, NULL, NULL,
                NULL, &managed, &owner)) {
                if (!g_str_equal(name, device))
                        continue;
                d.found = true;
                d.backing_file = g_strdup(backing);
                d.managed = managed;
                d.owner = owner;
        }
        return d;
}

void list_clear(ListedDevice *d)
{
        g_clear_pointer(&d->backing_file, g_free);
}

int main(int argc, char **argv)
{
        static const char *const limit_args[] = { "--max-devices-per-user", "2", NULL };
        static const HarnessOptions fake = { .polkit = HARNESS_POLKIT_FAKE };
        static const HarnessOptions fake_mount = { .polkit = HARNESS_POLKIT_FAKE, .data = "Mount" };
        static const HarnessOptions none = { .polkit = HARNESS_POLKIT_NONE };
        static const HarnessOptions limit = { .polkit = HARNESS_POLKIT_FAKE, .loopd_args = limit_args };
        static const HarnessOptions real = { .polkit = HARNESS_POLKIT_REAL, .polkit_rules = rules_grant_a };
        static const HarnessOptions real_b_attach = { .polkit = HARNESS_POLKIT_REAL,
                .polkit_rules = rules_grant_a_and_b_attach };

        harness_init(&argc, &argv);

        harness_add("/loopd/polkit/allowed", test_allowed, &fake);
        harness_add("/loopd/polkit/denied-changes-nothing", test_denied_changes_nothing, &fake);
        harness_add(
                "/loopd/polkit/challenge-without-interaction", test_challenge_without_interaction, &fake);
        harness_add("/loopd/polkit/interactive-flag-reaches-polkit", test_interactive_flag_reaches_polkit,
                &fake);
        harness_add("/loopd/polkit/challenge-after-interaction-is-denied",
                test_challenge_after_interaction_is_denied, &fake);
        harness_add("/loopd/polkit/absent-denies", test_polkit_absent_denies, &none);
        harness_add("/loopd/polkit/slow-authority-does-not-block-others",
                test_slow_authority_does_not_block_others, &fake);
        harness_add("/loopd/polkit/caller-gone-before-answer-changes-nothing",
                test_caller_gone_before_answer, &fake);
        harness_add("/loopd/polkit/root-allowed-without-asking", test_root_allowed_without_asking, &fake);
        harness_add("/loopd/polkit/detach-others-device-needs-manage-others",
                test_detach_others_device_needs_manage_others, &fake);
        harness_add("/loopd/polkit/detach-asks-again-for-a-device-bound-anew",
                test_asks_again_for_a_rebound_device, &fake);
        harness_add("/loopd/polkit/mount-asks-again-for-a-device-bound-anew",
                test_asks_again_for_a_rebound_device, &fake_mount);
        harness_add("/loopd/polkit/mount-others-device-needs-manage-others",
                test_mount_others_device_needs_manage_others, &fake);
        harness_add("/loopd/polkit/unmanaged-device-needs-manage-others",
                test_unmanaged_device_needs_manage_others, &fake);
        harness_add("/loopd/polkit/reading-is-open-to-all", test_reading_is_open_to_all, &fake);
        harness_add("/loopd/polkit/mount-image-asks-attach-and-mount-up-front",
                test_mount_image_asks_attach_and_mount_up_front, &fake);
        harness_add("/loopd/polkit/per-user-limit", test_per_user_limit, &limit);
        harness_add("/loopd/polkit/real/granted-user-attaches-lists-detaches",
                test_real_user_attaches_lists_detaches, &real);
        harness_add("/loopd/polkit/real/other-user-denied", test_real_other_user_denied, &real);
        harness_add("/loopd/polkit/real/own-grant-is-not-manage-others",
                test_real_own_grant_is_not_manage_others, &real_b_attach);
        harness_add("/loopd/polkit/real/unreadable-image-fails-before-bus",
                test_real_unreadable_image_fails_before_bus, &real);

        return g_test_run();
}
