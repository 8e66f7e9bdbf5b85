/* test-notify.c: `loopctl open` as the desktop entry runs it: as an unprivileged user with no terminal, in a
 * graphical session whose session bus has a fake notification server and a fake file manager
 * (notify-session.c). A failed open sends exactly one notification with the reason loopctl prints; a
 * successful `open --show` sends none and shows the first mount point; on a terminal, outside a graphical
 * session, with --json, or with no session bus (or one that never answers) there is no notification and
 * loopctl still exits promptly with its error line. */
#include <sys/socket.h>
#include <sys/un.h>

#include "test-notify.h"

/* ---------------------------------------------------------------------------------------------------- */
/* A failed open from the desktop: one notification, whatever failed */

static void test_failure_missing_file(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "missing.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        loopctl_as_desktop(f, &l, &run, NULL, "open", "--show", image, NULL);
        g_assert_true(g_str_has_suffix(run.err, ": No such file or directory\n"));
        check_one_notification(f, &run, "missing.img", true);
        g_assert_cmpuint(fake_desktop_wait(f->desktop, "ShowFolders", 1, 0), ==, 0);
}

static void test_failure_unreadable_file(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "secret.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        image_create(image, 8 * MiB);
        g_assert_cmpint(chmod(image, 0600), ==, 0);
        loopctl_as_desktop(f, &l, &run, NULL, "open", "--show", image, NULL);
        g_assert_true(g_str_has_suffix(run.err, ": Permission denied\n"));
        check_one_notification(f, &run, "secret.img", true);
}

static void test_failure_nothing_to_mount(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "zeros.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        harness_allow_all(&f->h);
        image_create(image, 16 * MiB);
        loopctl_as_desktop(f, &l, &run, NULL, "open", "--show", image, NULL);
        g_assert_true(g_str_has_prefix(run.err, "loopctl: cannot open "));
        check_one_notification(f, &run, "zeros.img", true);
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(f->h.tmpdir);
        g_assert_cmpuint(loops->len, ==, 0);
}

static void test_failure_polkit_denies(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "denied.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        /* The fake authority denies every action unless told otherwise. */
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "DENIED"));
        loopctl_as_desktop(f, &l, &run, NULL, "open", "--show", image, NULL);
        g_assert_true(g_str_has_prefix(run.err, "loopctl: cannot open "));
        check_one_notification(f, &run, "denied.img", true);
        g_autoptr(GPtrArray) mounts = oracle_mounts_below(f->h.media_dir);
        g_assert_cmpuint(mounts->len, ==, 0);
}

static const HarnessOptions opts_no_loopd = { .no_loopd = true };

static void test_failure_loopd_not_running(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "lonely.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        image_create(image, 8 * MiB);
        loopctl_as_desktop(f, &l, &run, NULL, "open", image, NULL);
        g_assert_true(g_str_has_prefix(run.err, "loopctl: cannot open "));
        check_one_notification(f, &run, "lonely.img", true);
}

/* A file name is the user's: a server that reads markup gets it escaped, one that does not gets it as is. */
static void test_failure_name_with_markup(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        bool markup = GPOINTER_TO_INT(f->h.options->data);
        g_autofree char *image = harness_image_path(&f->h, "a&b <x>.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        fake_desktop_set_markup(f->desktop, markup);
        loopctl_as_desktop(f, &l, &run, NULL, "open", image, NULL);
        check_one_notification(f, &run, "a&b <x>.img", markup);
}

static const HarnessOptions opts_markup = { .data = GINT_TO_POINTER(1) };
static const HarnessOptions opts_plain = { .data = GINT_TO_POINTER(0) };

/* ---------------------------------------------------------------------------------------------------- */
/* A successful open from the desktop */

/* No notification; the file manager is asked once to show the first mount point; polkit may ask the
 * session's agent (the call allows interactive authorization) and no text agent runs. */
static void test_success_shows_folder(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *image = harness_image_path(&f->h, "disk.img");
        g_auto(HarnessRun) run = { 0 }, close = { 0 };
        g_autoptr(GVariant) params = NULL;
        g_autofree const char **uris = NULL;
        g_autofree char *uri = NULL, *log = NULL;
        const char *startup_id;
        Launch l = desktop_launch(f);

        /* Allowed only when the call lets polkit ask the user. */
        fake_authority_set(f->h.authority, NULL, FAKE_AUTH_INTERACTIVE, 0);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "NOTIFYEXT"));
        loopctl_as_desktop(f, &l, &run, NULL, "open", "--show", image, NULL);
        g_assert_cmpint(run.status, ==, 0);
        g_assert_cmpstr(run.err, ==, "");

        g_autoptr(GPtrArray) mounts = oracle_mounts_below(f->h.media_dir);
        g_assert_cmpuint(mounts->len, ==, 1);
        if (mounts->len == 1) {
                g_assert_true(g_str_has_suffix(mounts->pdata[0], "/NOTIFYEXT"));
                uri = g_filename_to_uri(mounts->pdata[0], NULL, NULL);
        }
        g_assert_cmpuint(fake_desktop_wait(f->desktop, "ShowFolders", 2, QUIET_MS), ==, 1);
        params = fake_desktop_params(f->desktop, "ShowFolders", 0);
        if (params) {
                g_variant_get(params, "(^a&s&s)", &uris, &startup_id);
                g_assert_cmpuint(g_strv_length((char **)uris), ==, 1);
                g_assert_cmpstr(uris[0], ==, uri);
        }
        check_no_notification(f);
        log = agent_log(f);
        g_assert_cmpstr(log, ==, "");

        g_assert_cmpint(harness_loopctl(&f->h, HARNESS_USER_A, &close, "close", image, NULL), ==, 0);
        g_autoptr(GPtrArray) left = oracle_mounts_below(f->h.media_dir);
        g_assert_cmpuint(left->len, ==, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* No notification when someone reads stderr, or nobody would see one */

/* On a terminal the error line is read there: a file that is missing (before the bus) and polkit saying no
 * (after it; the text agent ran: stdin was the terminal). */
static void test_terminal_no_notification(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *missing = harness_image_path(&f->h, "missing.img");
        g_autofree char *image = harness_image_path(&f->h, "denied.img");
        g_auto(HarnessRun) run = { 0 };
        g_autofree char *log = NULL;
        Launch l = desktop_launch(f);

        l.terminal = true;
        loopctl_as_desktop(f, &l, &run, NULL, "open", missing, NULL);
        g_assert_cmpint(run.status, ==, 1);
        g_assert_nonnull(strstr(run.out, "loopctl: cannot open "));

        image_create(image, 8 * MiB);
        loopctl_as_desktop(f, &l, &run, NULL, "open", image, NULL);
        g_assert_cmpint(run.status, ==, 1);
        g_assert_nonnull(strstr(run.out, "loopctl: cannot open "));
        log = agent_log(f);
        g_assert_true(g_str_has_prefix(log, "args: --notify-fd "));

        check_no_notification(f);
}

/* A script's run without a graphical session (cron, ssh) and a program reading --json: no notification. */
static void test_not_a_desktop_no_notification(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *missing = harness_image_path(&f->h, "missing.img");
        g_auto(HarnessRun) run = { 0 };
        Launch l = desktop_launch(f);

        l.no_display = true;
        loopctl_as_desktop(f, &l, &run, NULL, "open", missing, NULL);
        g_assert_cmpint(run.status, ==, 1);
        g_free(error_reason(&run));

        l.no_display = false;
        loopctl_as_desktop(f, &l, &run, NULL, "--json", "open", missing, NULL);
        g_assert_cmpint(run.status, ==, 1);
        /* With --json the error is a JSON object on stderr (issue 20). */
        g_assert_true(g_str_has_prefix(run.err, "{\"error\": \"ENOENT\", \"message\": \"cannot open "));
        g_assert_true(g_str_has_suffix(run.err, "}\n"));

        check_no_notification(f);
}

/* No session bus, or one that accepts the connection and never answers: the error line, exit 1, promptly. */
static void test_no_session_bus_exits_promptly(Fixture *f, gconstpointer data)
{
        FIXTURE_REQUIRE(f);
        g_autofree char *missing = harness_image_path(&f->h, "missing.img");
        g_autofree char *nowhere = g_build_filename(f->session_dir, "nothing-here", NULL);
        g_autofree char *hung = g_build_filename(f->session_dir, "hung", NULL);
        g_autofree char *nowhere_address = g_strconcat("unix:path=", nowhere, NULL);
        g_autofree char *hung_address = g_strconcat("unix:path=", hung, NULL);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        g_auto(HarnessRun) run = { 0 };
        Launch l = { .session = nowhere_address };
        gint64 ms = 0;
        int fd;

        loopctl_as_desktop(f, &l, &run, &ms, "open", missing, NULL);
        g_assert_cmpint(run.status, ==, 1);
        g_assert_true(g_str_has_suffix(run.err, ": No such file or directory\n"));
        g_free(error_reason(&run));
        g_assert_cmpint(ms, <, 5000);

        /* Listening, so that connect() succeeds; nobody ever reads what loopctl writes. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, hung, sizeof(sa.sun_path));
        g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
        g_assert_cmpint(chmod(hung, 0666), ==, 0);
        g_assert_cmpint(listen(fd, 16), ==, 0);
        l.session = hung_address;
        loopctl_as_desktop(f, &l, &run, &ms, "open", missing, NULL);
        close(fd);
        g_assert_cmpint(run.status, ==, 1);
        g_assert_true(g_str_has_suffix(run.err, ": No such file or directory\n"));
        g_free(error_reason(&run));
        /* loopctl gives the session bus 5 s: it did try (it waited), and gave up. */
        g_test_message("loopctl with a session bus that never answers took %" G_GINT64_FORMAT " ms", ms);
        g_assert_cmpint(ms, >=, 4000);
        g_assert_cmpint(ms, <, 15000);

        check_no_notification(f);
}

static void add(const char *path, void (*test)(Fixture *, gconstpointer), const HarnessOptions *options)
{
        g_test_add(path, Fixture, options, fixture_setup, test, fixture_teardown);
}

int main(int argc, char *argv[])
{
        harness_init(&argc, &argv);

        add("/loopd/notify/open-fails/missing-file", test_failure_missing_file, NULL);
        add("/loopd/notify/open-fails/unreadable-file", test_failure_unreadable_file, NULL);
        add("/loopd/notify/open-fails/nothing-to-mount", test_failure_nothing_to_mount, NULL);
        add("/loopd/notify/open-fails/polkit-denies", test_failure_polkit_denies, NULL);
        add("/loopd/notify/open-fails/loopd-not-running", test_failure_loopd_not_running, &opts_no_loopd);
        add("/loopd/notify/open-fails/name-escaped-for-markup-server", test_failure_name_with_markup,
                &opts_markup);
        add("/loopd/notify/open-fails/name-as-is-for-plain-server", test_failure_name_with_markup,
                &opts_plain);
        add("/loopd/notify/open-succeeds/shows-first-mount-point", test_success_shows_folder, NULL);
        add("/loopd/notify/no-notification/on-a-terminal", test_terminal_no_notification, NULL);
        add("/loopd/notify/no-notification/outside-a-graphical-session-or-with-json",
                test_not_a_desktop_no_notification, NULL);
        add("/loopd/notify/no-notification/no-session-bus-exits-promptly",
                test_no_session_bus_exits_promptly, NULL);
        return g_test_run();
}
