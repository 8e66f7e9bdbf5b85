/* harness.c: the fixture of the integration suites: sets up a private bus, polkit (fake, real or none),
 * loopd and udevd for each test and tears everything down, whatever the test did. */
#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "harness-internal.h"

static const HarnessOptions default_options = { 0 };

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

void harness_init(int *argc, char ***argv)
{
        g_test_init(argc, argv, NULL);
        /* A failed check must not abort the process: the teardown has to detach what the test attached. */
        g_test_set_nonfatal_assertions();
        /* Create GLib's worker thread (it reaps GSubprocess children) now, as root, before
         * harness_connect_as() ever changes a thread's credentials: a thread inherits the credentials of the
         * thread that creates it. */
        g_autoptr(GSubprocess) warmup = g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, NULL, "true", NULL);
        if (warmup)
                (void)g_subprocess_wait(warmup, NULL, NULL);
        signal(SIGPIPE, SIG_IGN);
        harness_handle_crashes();
}

void harness_setup(Harness *h, gconstpointer options)
{
        const char *source_root = g_getenv("LOOPD_SOURCE_ROOT");
        HarnessPrivate *p;

        memset(h, 0, sizeof(*h));
        h->options = options ? options : &default_options;
        if (!test_require_privileges())
                return;
        if (!source_root) {
                g_test_fail_printf("LOOPD_SOURCE_ROOT is not set (run the suite with meson test)");
                return;
        }
        /* Make sure the test users exist before anything runs, so a test can rely on them. */
        if (!harness_user(HARNESS_USER_A, NULL, NULL) || !harness_user(HARNESS_USER_B, NULL, NULL))
                return;

        h->priv = p = g_new0(HarnessPrivate, 1);
        p->connections = g_ptr_array_new();
        p->daemon_pidfd = -1;
        h->tmpdir = test_tmpdir_new();
        h->image_dir = g_build_filename(h->tmpdir, "images", NULL);
        h->state_dir = g_build_filename(h->tmpdir, "state", NULL);
        h->media_dir = g_build_filename(h->tmpdir, "media", NULL);
        harness_process_init(&p->dbus, "dbus-daemon", h->tmpdir);
        harness_process_init(&p->loopd, "loopd", h->tmpdir);
        harness_process_init(&p->polkitd, "polkitd", h->tmpdir);
        harness_process_init(&p->udevd, "systemd-udevd", h->tmpdir);
        if (g_mkdir(h->image_dir, 0755) < 0 || chmod(h->image_dir, 0755) < 0) {
                g_test_fail_printf("cannot create %s: %s", h->image_dir, g_strerror(errno));
                return;
        }

        if (g_strcmp0(g_getenv("LOOPD_TEST_UDEV"), "1") == 0 && !harness_udevd_start(h))
                return;
        if (!harness_bus_start(h, source_root))
                return;
        switch (h->options->polkit) {
        case HARNESS_POLKIT_FAKE:
                h->authority = fake_authority_start(h->bus_address);
                if (!h->authority)
                        return;
                break;
        case HARNESS_POLKIT_REAL:
                if (!harness_polkitd_start(h, source_root))
                        return;
                break;
        case HARNESS_POLKIT_NONE:
                break;
        }
        if (!h->options->no_loopd && !harness_start_loopd(h))
                return;
        h->ready = true;
}

void harness_teardown(Harness *h, gconstpointer options)
{
        HarnessPrivate *p = h->priv;

        if (!p)
                return;

        /* A passing test must have detached what it attached; say so before cleaning up after it. */
        if (h->ready && !g_test_failed()) {
                g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->tmpdir);
                for (guint i = 0; i < left->len; i++)
                        g_test_fail_printf("%s is still attached after the test (backed by a file under %s)",
                                (char *)left->pdata[i], h->tmpdir);
        }

        (void)harness_stop_loopd(h);
        test_cleanup_loops_under(h->tmpdir);
        harness_stop_exports(h);

        for (guint i = 0; i < p->connections->len; i++) {
                GDBusConnection *c = p->connections->pdata[i];
                (void)g_dbus_connection_close_sync(c, NULL, NULL);
                g_object_unref(c);
        }
        g_ptr_array_unref(p->connections);

        g_clear_pointer(&h->authority, fake_authority_free);
        harness_polkitd_stop(h);
        harness_bus_stop(h);
        harness_udevd_stop(h);

        if (g_test_failed()) {
                harness_print_loopd_log(p);
                harness_print_log_tail("polkitd", p->polkitd.log_path, 50);
                harness_print_log_tail("dbus-daemon", p->dbus.log_path, 50);
                harness_print_log_tail("systemd-udevd", p->udevd.log_path, 50);
        }

        test_tmpdir_remove(h->tmpdir);
        g_free(p->dbus.log_path);
        g_free(p->loopd.log_path);
        g_free(p->polkitd.log_path);
        g_free(p->udevd.log_path);
        g_free(p);
        g_free(h->tmpdir);
        g_free(h->image_dir);
        g_free(h->state_dir);
        g_free(h->media_dir);
        g_free(h->bus_address);
        memset(h, 0, sizeof(*h));
}

char *harness_image_path(Harness *h, const char *name)
{
        return g_build_filename(h->image_dir, name, NULL);
}

void harness_allow_all(Harness *h)
{
        fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 0);
}
