/* loopctl-cli-agent.c: the loopctl-cli suite's password agent, output errors and monitor. */
#include "test-loopctl-cli.h"

/* A pkttyagent that records how it was run, says it is ready by closing the fd it was given, and waits to
 * be stopped. */
static const char fake_agent[] = "#!/bin/sh\n"
                                 "echo \"args: $*\" >> \"$AGENT_LOG\"\n"
                                 "trap 'echo stopped >> \"$AGENT_LOG\"; exit 0' TERM\n"
                                 "[ \"$1\" = --notify-fd ] && eval \"exec $2>&-\"\n"
                                 "while :; do sleep 0.05; done\n";

static void agent_setup(Agent *a, const char *dir)
{
        g_autofree char *script = NULL;

        a->bin = g_build_filename(dir, "bin", NULL);
        a->log = g_build_filename(dir, "agent.log", NULL);
        script = g_build_filename(a->bin, "pkttyagent", NULL);
        g_assert_cmpint(g_mkdir(a->bin, 0755), ==, 0);
        g_assert_true(g_file_set_contents(script, fake_agent, -1, NULL));
        g_assert_cmpint(chmod(script, 0755), ==, 0);
        g_assert_true(g_file_set_contents(a->log, "", -1, NULL));
        g_assert_cmpint(chmod(a->log, 0666), ==, 0);
}

static void agent_clear(Agent *a)
{
        g_free(a->bin);
        g_free(a->log);
}

char *agent_log(const Agent *a)
{
        char *s = NULL;

        g_assert_true(g_file_get_contents(a->log, &s, NULL, NULL));
        return s;
}

/* A terminal for loopctl's stdin. */
static int open_terminal(int *ret_master)
{
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), slave;

        g_assert_cmpint(master, >=, 0);
        g_assert_cmpint(grantpt(master), ==, 0);
        g_assert_cmpint(unlockpt(master), ==, 0);
        slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        g_assert_cmpint(slave, >=, 0);
        *ret_master = master;
        return slave;
}

void test_auth_agent_on_terminal(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        Agent a;
        int master;

        if (!m->address)
                return;
        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(m->dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                return;
        }
        agent_setup(&a, m->dir);
        o.path_prepend = a.bin;
        o.agent_log = a.log;
        o.as_nobody = TRUE; /* root is never asked, so no agent for root */
        o.stdin_fd = open_terminal(&master);

        g_autoptr(Run) r = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_true(mock_call(m, "Unmount")->interactive);

        /* Started with the systemd tools' arguments, and stopped before loopctl exited. */
        g_autofree char *log = agent_log(&a);
        g_assert_true(g_regex_match_simple("^args: --notify-fd [0-9]+ --fallback\nstopped\n$", log, 0, 0));

        close(master);
        agent_clear(&a);
}

void test_auth_no_agent_when_not_asked(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        Agent a;
        int master;

        if (!m->address)
                return;
        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(m->dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                return;
        }
        agent_setup(&a, m->dir);
        o.path_prepend = a.bin;
        o.agent_log = a.log;
        o.as_nobody = TRUE;

        /* stdin is not a terminal: nobody could type a password. */
        g_autoptr(Run) pipe = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(pipe->status, ==, 0);

        /* --no-ask-password on a terminal. */
        o.stdin_fd = open_terminal(&master);
        g_autoptr(Run) no_ask = run_loopctl(&o, "unmount", "--no-ask-password", "/run/media/tester/X", NULL);
        g_assert_cmpint(no_ask->status, ==, 0);
        close(master);

        /* Commands polkit is not asked about. */
        o.stdin_fd = open_terminal(&master);
        g_autoptr(Run) list = run_loopctl(&o, "list", NULL);
        g_assert_cmpint(list->status, ==, 0);
        close(master);

        /* Root: polkit says yes without asking. */
        if (geteuid() == 0) {
                o.as_nobody = FALSE;
                o.stdin_fd = open_terminal(&master);
                g_autoptr(Run) root = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
                g_assert_cmpint(root->status, ==, 0);
                close(master);
        }

        g_autofree char *log = agent_log(&a);
        g_assert_cmpstr(log, ==, "");
        agent_clear(&a);
}

void test_output_write_error_fails(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        if (access("/dev/full", W_OK) != 0) {
                g_test_skip("no /dev/full");
                return;
        }
        mock_set_devices(m, devices_text);
        o.stdout_path = "/dev/full";
        g_autoptr(Run) r = run_loopctl(&o, "list", "--json", NULL);
        assert_error_line(r, 1, "loopctl: cannot write output: No space left on device\n");
}

/* ---- monitor ---- */

typedef struct Monitor {
        GSubprocess *proc;
        GDataInputStream *out;
        char *err_path;
        char *line;
        gboolean line_done;
        gboolean exited;
} Monitor;

static void monitor_start(Monitor *mon, Mock *m, const char *const *args)
{
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autoptr(GError) error = NULL;

        memset(mon, 0, sizeof(*mon));
        mon->err_path = g_build_filename(m->dir, "monitor.err", NULL);
        g_subprocess_launcher_set_stdin_file_path(l, "/dev/null");
        g_subprocess_launcher_set_stderr_file_path(l, mon->err_path);
        g_subprocess_launcher_setenv(l, "DBUS_SYSTEM_BUS_ADDRESS", m->address, TRUE);
        g_ptr_array_add(argv, (char *)loopctl_binary());
        for (; *args; args++)
                g_ptr_array_add(argv, (char *)*args);
        g_ptr_array_add(argv, NULL);
        mon->proc = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
        g_assert_no_error(error);
        mon->out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(mon->proc));
}

static void monitor_line_read(GObject *source, GAsyncResult *res, gpointer data)
{
        Monitor *mon = data;

        mon->line = g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(source), res, NULL, NULL);
        mon->line_done = TRUE;
}

static void emit(GDBusConnection *conn, const char *member, GVariant *args)
{
        g_autoptr(GError) error = NULL;

        g_dbus_connection_emit_signal(conn, NULL, "/org/loopd1", "org.loopd1.Manager", member, args, &error);
        g_assert_no_error(error);
        g_dbus_connection_flush_sync(conn, NULL, &error);
        g_assert_no_error(error);
}

/* The next line the monitor prints (NULL at end of output). With probe, keeps sending a DeviceAttached of
 * /dev/loop0 until a line comes: the way to know the monitor has subscribed. */
static char *monitor_next_line(Monitor *mon, Mock *m, gboolean probe)
{
        mon->line_done = FALSE;
        mon->line = NULL;
        g_data_input_stream_read_line_async(mon->out, G_PRIORITY_DEFAULT, NULL, monitor_line_read, mon);
        for (int i = 0; i < 200 && !mon->line_done; i++) {
                if (probe)
                        emit(m->conn, "DeviceAttached",
                                g_variant_new("(so)", "/dev/loop0", "/org/loopd1/device/loop0"));
                iterate_until(&mon->line_done, 50);
        }
        if (!mon->line_done)
                g_error("monitor printed nothing within 10 s");
        return g_steal_pointer(&mon->line);
}

/* The next line that is not a probe. */
static char *monitor_next_event(Monitor *mon, Mock *m)
{
        for (;;) {
                char *line = monitor_next_line(mon, m, FALSE);
                if (!line || !strstr(line, "/dev/loop0"))
                        return line;
                g_free(line);
        }
}

static void monitor_exited(GObject *source, GAsyncResult *res, gpointer data)
{
        g_subprocess_wait_finish(G_SUBPROCESS(source), res, NULL);
        *(gboolean *)data = TRUE;
}

/* Waits for the monitor to exit; returns its exit status and stderr. */
static int monitor_finish(Monitor *mon, char **ret_err)
{
        gboolean done = FALSE;
        int status;

        g_subprocess_wait_async(mon->proc, NULL, monitor_exited, &done);
        if (!iterate_until(&done, 10000))
                g_error("monitor did not exit within 10 s");
        status = g_subprocess_get_if_exited(mon->proc) ? g_subprocess_get_exit_status(mon->proc)
                                                       : 128 + g_subprocess_get_term_sig(mon->proc);
        g_assert_true(g_file_get_contents(mon->err_path, ret_err, NULL, NULL));
        g_clear_object(&mon->out);
        g_clear_object(&mon->proc);
        g_free(mon->err_path);
        return status;
}

static void emit_all_events(Mock *m)
{
        emit(m->conn, "DeviceAttached", g_variant_new("(so)", "/dev/loop7", "/org/loopd1/device/loop7"));
        emit(m->conn, "PartitionAdded", g_variant_new("(ss)", "/dev/loop7", "/dev/loop7p1"));
        emit(m->conn, "Mounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/My \"Disk\""));
        emit(m->conn, "Unmounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/My \"Disk\""));
        emit(m->conn, "PartitionRemoved", g_variant_new("(ss)", "/dev/loop7", "/dev/loop7p1"));
        emit(m->conn, "DeviceDetached", g_variant_new("(so)", "/dev/loop7", "/org/loopd1/device/loop7"));
}

static void check_monitor(Mock *m, const char *const *args, const char *const *expected, int sig)
{
        g_autofree char *first = NULL, *err = NULL;
        Monitor mon;

        monitor_start(&mon, m, args);
        first = monitor_next_line(&mon, m, TRUE);
        g_assert_nonnull(strstr(first, "/dev/loop0"));

        emit_all_events(m);
        for (gsize i = 0; expected[i]; i++) {
                g_autofree char *line = monitor_next_event(&mon, m);
                g_assert_cmpstr(line, ==, expected[i]);
        }

        g_subprocess_send_signal(mon.proc, sig);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 0);
        g_assert_cmpstr(err, ==, "");
}

void test_monitor_json_lines(Mock *m, gconstpointer data)
{
        static const char *const expected[] = {
                "{\"event\": \"DeviceAttached\", \"device\": \"/dev/loop7\", \"object\": \"/org/loopd1/device/loop7\"}",
                "{\"event\": \"PartitionAdded\", \"device\": \"/dev/loop7\", \"partition\": \"/dev/loop7p1\"}",
                "{\"event\": \"Mounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/My \\\"Disk\\\"\"}",
                "{\"event\": \"Unmounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/My \\\"Disk\\\"\"}",
                "{\"event\": \"PartitionRemoved\", \"device\": \"/dev/loop7\", \"partition\": \"/dev/loop7p1\"}",
                "{\"event\": \"DeviceDetached\", \"device\": \"/dev/loop7\", \"object\": \"/org/loopd1/device/loop7\"}",
                NULL,
        };

        if (!m->address)
                return;
        check_monitor(m, (const char *const[]){ "monitor", "--json", NULL }, expected, SIGTERM);
}

void test_monitor_human_lines(Mock *m, gconstpointer data)
{
        static const char *const expected[] = {
                "DeviceAttached   /dev/loop7 /org/loopd1/device/loop7",
                "PartitionAdded   /dev/loop7 /dev/loop7p1",
                "Mounted          /dev/loop7p1 /run/media/tester/My \"Disk\"",
                "Unmounted        /dev/loop7p1 /run/media/tester/My \"Disk\"",
                "PartitionRemoved /dev/loop7 /dev/loop7p1",
                "DeviceDetached   /dev/loop7 /org/loopd1/device/loop7",
                NULL,
        };

        if (!m->address)
                return;
        check_monitor(m, (const char *const[]){ "--no-ask-password", "monitor", NULL }, expected, SIGINT);
}

void test_monitor_ignores_other_senders(Mock *m, gconstpointer data)
{
        g_autoptr(GDBusConnection) impostor = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *first = NULL, *line = NULL, *err = NULL;
        Monitor mon;

        if (!m->address)
                return;
        impostor = g_dbus_connection_new_for_address_sync(m->address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(impostor, FALSE);

        monitor_start(&mon, m, (const char *const[]){ "monitor", "--json", NULL });
        first = monitor_next_line(&mon, m, TRUE);

        /* Same path, interface and member, but not from org.loopd1's owner. */
        emit(impostor, "DeviceDetached", g_variant_new("(so)", "/dev/loop66", "/org/loopd1/device/loop66"));
        emit(m->conn, "Mounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/X"));
        /* The wrong signature is not the contract's signal either. */
        emit(m->conn, "Mounted", g_variant_new("(su)", "/dev/loop67", 1));
        emit(m->conn, "Unmounted", g_variant_new("(ss)", "/dev/loop7p1", "/run/media/tester/X"));

        line = monitor_next_event(&mon, m);
        g_assert_cmpstr(line, ==,
                "{\"event\": \"Mounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/X\"}");
        g_clear_pointer(&line, g_free);
        line = monitor_next_event(&mon, m);
        g_assert_cmpstr(line, ==,
                "{\"event\": \"Unmounted\", \"node\": \"/dev/loop7p1\", \"mount_point\": \"/run/media/tester/X\"}");

        g_subprocess_send_signal(mon.proc, SIGTERM);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 0);
        g_dbus_connection_close_sync(impostor, NULL, NULL);
}

void test_monitor_bus_gone_is_an_error(Mock *m, gconstpointer data)
{
        g_autofree char *first = NULL, *err = NULL, *rest = NULL;
        Monitor mon;

        if (!m->address)
                return;
        monitor_start(&mon, m, (const char *const[]){ "monitor", NULL });
        first = monitor_next_line(&mon, m, TRUE);

        mock_stop_bus(m);
        g_autofree char *eof = monitor_next_event(&mon, m);
        g_assert_null(eof);
        g_assert_cmpint(monitor_finish(&mon, &err), ==, 1);
        g_assert_cmpstr(err, ==, "loopctl: lost the connection to the system bus\n");
}
