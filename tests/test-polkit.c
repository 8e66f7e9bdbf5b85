/* test-polkit.c: who may do what. Every method against a fake polkit authority programmed per case (its call
 * log shows what loopd asked), no authority at all, and the real polkitd with the project's policy. What
 * changed is read from the kernel (sysfs, findmnt), the state and media directories and a bus monitor; loopd
 * is asked only what only it knows (who owns a device). */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)
#define DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED \
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"

/* ---------------------------------------------------------------------------------------------------- */
/* Images and what the kernel says about them */

/* A sparse image in the test's image directory, owned by user (NULL: root). */
static char *image_new(Harness *h, const char *name, guint64 size, const char *user)
{
        char *path = g_build_filename(h->image_dir, name, NULL);
        uid_t uid;
        gid_t gid;

        image_create(path, size);
        if (user && harness_user(user, &uid, &gid) && chown(path, uid, gid) < 0)
                g_test_fail_printf("chown %s: %s", path, g_strerror(errno));
        return path;
}

/* Checks that image is bound to exactly device (NULL: to nothing at all). */
#define assert_bound(image, device) check_bound(__FILE__, __LINE__, (image), (device))
static void check_bound(const char *file, int line, const char *image, const char *device)
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

/* loopctl --no-ask-password detach device, as user, exits with status (1 with a "loopctl: " line), and
 * afterwards image is bound to nothing (status 0) or still to device. */
#define assert_loopctl_detach(h, user, image, device, status) \
        check_loopctl_detach(__FILE__, __LINE__, (h), (user), (image), (device), (status))
static void check_loopctl_detach(const char *file, int line, Harness *h, const char *user, const char *image,
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
static char *mount_point_of(const char *node)
{
        g_autofree char *out = NULL;
        g_autofree char *q = g_shell_quote(node);

        if (test_sh_status(&out, "findmnt --noheadings --first-only --output TARGET --source %s", q) != 0)
                return NULL;
        g_strstrip(out);
        return *out ? g_steal_pointer(&out) : NULL;
}

/* Every file under dir, relative names, sorted, one a line: what a denied call must not change. */
static char *tree_snapshot(const char *dir)
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
static void cleanup_device(Harness *h, const char *image, const char *device)
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
static GVariant *call_with_image(GDBusConnection *c, const char *method, const char *path, int open_flags,
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
static char *attach_as(
        GDBusConnection *c, const char *path, int open_flags, GDBusCallFlags flags, GError **error)
{
        g_autoptr(GVariant) reply = call_with_image(c, "Attach", path, open_flags, NULL, flags, error);
        char *device = NULL;

        if (reply)
                g_variant_get(reply, "(so)", &device, NULL);
        return device;
}

static bool detach_as(GDBusConnection *c, const char *device, GDBusCallFlags flags, GError **error)
{
        g_autoptr(GVariant) reply = harness_call(c, "Detach",
                g_variant_new("(s@a{sv})", device, harness_empty_options()), NULL, flags, error);
        return reply != NULL;
}

/* Detach of device over c with flags is refused with error_name (whose message has needle, unless NULL),
 * and image is still bound to device. */
#define assert_detach_refused(c, device, flags, error_name, needle, image) \
        check_detach_refused(__FILE__, __LINE__, (c), (device), (flags), (error_name), (needle), (image))
static void check_detach_refused(const char *file, int line, GDBusConnection *c, const char *device,
        GDBusCallFlags flags, const char *error_name, const char *needle, const char *image)
{
        g_autoptr(GError) error = NULL;

        if (detach_as(c, device, flags, &error))
                g_test_fail_printf("%s:%d: Detach of %s was not refused", file, line, device);
        else
                harness_assert_dbus_error(error, error_name, needle);
        check_bound(file, line, image, device);
}

/* One call of several that run at the same time; order says which completed when (1 = first). */
typedef struct Overlap {
        const char *what;
        GVariant *reply;
        GError *error;
        guint order;
        guint *n_done;
} Overlap;

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
static void overlap_start(
        Overlap *o, GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds)
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

static void overlap_start_attach(Overlap *o, GDBusConnection *c, const char *path)
{
        overlap_start_with_image(o, c, "Attach", path, O_RDWR);
}

static void overlap_clear(Overlap *o)
{
        g_clear_pointer(&o->reply, g_variant_unref);
        g_clear_error(&o->error);
}

/* Calls method(image fd, {}) as c and, once the fake authority has received n_questions (the last answer
 * programmed with a delay), checks that loopd changed nothing before it had the answer: the image is not
 * bound, the state and media directories are as they were. Returns the reply or NULL with error set. */
static GVariant *call_checking_nothing_before_answer(Harness *h, GDBusConnection *c, const char *method,
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

static const char *unique_name(GDBusConnection *c)
{
        return c ? g_dbus_connection_get_unique_name(c) : NULL;
}

/* Prints the log into the test output, to make a failure readable. */
static void print_calls(GPtrArray *calls)
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

/* Checks that the fake authority was asked exactly the actions listed (in this order, NULL-terminated), each
 * by loopd for the sender behind caller, with flags; returns the log. */
static GPtrArray *check_calls(const char *file, int line, Harness *h, GDBusConnection *caller, guint32 flags,
        ...) G_GNUC_NULL_TERMINATED;
#define assert_calls(h, caller, flags, ...) \
        check_calls(__FILE__, __LINE__, (h), (caller), (flags), __VA_ARGS__)
static GPtrArray *check_calls(
        const char *file, int line, Harness *h, GDBusConnection *caller, guint32 flags, ...)
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

#define assert_detail(call, key, want) check_detail(__FILE__, __LINE__, (call), (key), (want))
static void check_detail(
        const char *file, int line, const FakeAuthCall *call, const char *key, const char *want)
{
        const char *got;

        if (!call)
                return;
        got = g_hash_table_lookup(call->details, key);
        if (g_strcmp0(got, want) != 0)
                g_test_fail_printf("%s:%d: polkit detail %s of %s is '%s', expected '%s'", file, line, key,
                        call->action_id, got ? got : "(missing)", want);
}

static const FakeAuthCall *call_at(GPtrArray *calls, guint i)
{
        return calls && i < calls->len ? calls->pdata[i] : NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* ListDevices */

typedef struct ListedDevice {
        bool found;
        char *backing_file;
        bool managed;
        guint32 owner;
} ListedDevice;

static ListedDevice list_find(GDBusConnection *c, const char *device)
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

static void list_clear(ListedDevice *d)
{
        g_clear_pointer(&d->backing_file, g_free);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fake authority: what loopd asks, and what it does with the answer */

static void test_allowed(Harness *h, gconstpointer data)
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

static void test_denied_changes_nothing(Harness *h, gconstpointer data)
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

static void test_challenge_without_interaction(Harness *h, gconstpointer data)
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

static void test_interactive_flag_reaches_polkit(Harness *h, gconstpointer data)
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

static void test_challenge_after_interaction_is_denied(Harness *h, gconstpointer data)
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

static void test_polkit_absent_denies(Harness *h, gconstpointer data)
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

static void test_slow_authority_does_not_block_others(Harness *h, gconstpointer data)
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

static void test_caller_gone_before_answer(Harness *h, gconstpointer data)
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

static void test_root_allowed_without_asking(Harness *h, gconstpointer data)
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

static void test_detach_others_device_needs_manage_others(Harness *h, gconstpointer data)
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

static void test_mount_others_device_needs_manage_others(Harness *h, gconstpointer data)
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

static void test_unmanaged_device_needs_manage_others(Harness *h, gconstpointer data)
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

static void test_reading_is_open_to_all(Harness *h, gconstpointer data)
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

static void test_mount_image_asks_attach_and_mount_up_front(Harness *h, gconstpointer data)
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

static void test_per_user_limit(Harness *h, gconstpointer data)
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

/* ---------------------------------------------------------------------------------------------------- */
/* The real polkitd with the project's policy */

/* Grants every loopd action to test user A; everyone else gets the policy's defaults. Without logind nobody
 * is "active", so those are allow_any: auth_admin (attach, mount) and auth_admin_keep (manage-others). */
static const char rules_grant_a[] =
        "polkit.addRule(function(action, subject) {\n"
        "        if (action.id.indexOf(\"org.loopd1.\") == 0 && subject.user == \"" HARNESS_USER_A "\")\n"
        "                return polkit.Result.YES;\n"
        "});\n";

/* As rules_grant_a, and user B may attach (and detach its own devices), nothing more. */
static const char rules_grant_a_and_b_attach[] =
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

static void test_real_user_attaches_lists_detaches(Harness *h, gconstpointer data)
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

static void test_real_other_user_denied(Harness *h, gconstpointer data)
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
        g_assert_true(g_str_has_prefix(run.err, "loopctl: "));
        assert_bound(image_b, NULL);

        assert_loopctl_detach(h, HARNESS_USER_A, image, device, 0);
        cleanup_device(h, image, device);
}

/* A grant for one's own devices is not one for other users' devices. */
static void test_real_own_grant_is_not_manage_others(Harness *h, gconstpointer data)
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

static void test_real_unreadable_image_fails_before_bus(Harness *h, gconstpointer data)
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
                g_assert_cmpint(harness_loopctlv(h, HARNESS_USER_A, &run, variants[i]), ==, 1);
                g_assert_true(g_str_has_prefix(run.err, "loopctl: "));
                g_assert_nonnull(strstr(run.err, secret));
                g_assert_nonnull(strstr(run.err, "Permission denied"));
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

int main(int argc, char **argv)
{
        static const char *const limit_args[] = { "--max-devices-per-user", "2", NULL };
        static const HarnessOptions fake = { .polkit = HARNESS_POLKIT_FAKE };
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
