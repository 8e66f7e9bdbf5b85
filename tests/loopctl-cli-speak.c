/* loopctl-cli-speak.c: the loopctl-cli suite's tests of how loopctl speaks to people: per-command help,
 * JSON errors, the empty list, error wordings in the command line's terms, what a command says it did. */
#include "test-loopctl-cli.h"

/* A terminal for loopctl's stdout: its path, and the master side to read from. */
static char *terminal_new(int *ret_master)
{
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

        g_assert_cmpint(master, >=, 0);
        g_assert_cmpint(grantpt(master), ==, 0);
        g_assert_cmpint(unlockpt(master), ==, 0);
        *ret_master = master;
        return g_strdup(ptsname(master));
}

/* What was written to the terminal, without the "\r" the line discipline adds. */
static char *terminal_read(int master)
{
        g_autoptr(GString) s = g_string_new(NULL);
        char buf[4096];
        ssize_t n;

        g_assert_cmpint(fcntl(master, F_SETFL, O_NONBLOCK), ==, 0);
        while ((n = read(master, buf, sizeof(buf))) > 0)
                for (ssize_t i = 0; i < n; i++)
                        if (buf[i] != '\r')
                                g_string_append_c(s, buf[i]);
        close(master);
        return g_string_free(g_steal_pointer(&s), FALSE);
}

/* ---- help ---- */

void test_speak_help_per_command(void)
{
        static const struct {
                const char *words[2];
                const char *usage;
                const char *options;
        } commands[] = {
                { { "attach" }, "attach [OPTIONS] IMAGE",
                        "--read-only --offset --size --sector-size --no-partscan --autoclear --shared" },
                { { "detach" }, "detach [--unmount] DEVICE|IMAGE", "--unmount" },
                { { "list" }, "list", "" },
                { { "partitions" }, "partitions DEVICE", "" },
                { { "mount" }, "mount [OPTIONS] NODE", "--read-only --options --fstype" },
                { { "unmount" }, "unmount NODE|MOUNTPOINT", "" },
                { { "open" }, "open [OPTIONS] IMAGE", "--writable --sector-size --show" },
                { { "close" }, "close DEVICE|IMAGE", "" },
                { { "monitor" }, "monitor", "" },
                { { "format" }, "format [OPTIONS] NODE TYPE", "--label --uuid --erase" },
                { { "partition", "add" }, "partition add [OPTIONS] DEVICE|IMAGE",
                        "--start --size --type --name --bootable" },
                { { "partition", "delete" }, "partition delete NODE", "" },
                { { "partition" }, "partition add [OPTIONS] DEVICE|IMAGE", "" },
                { { "create" }, "create --size N [OPTIONS] IMAGE",
                        "--size --table --fs --label --sector-size" },
        };

        for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
                const char *const *w = commands[i].words;
                g_autofree char *usage = g_strdup_printf("Usage: loopctl %s\n", commands[i].usage);
                g_auto(GStrv) options = g_strsplit(commands[i].options, " ", -1);
                /* After the command, before it, with its arguments: the same help. */
                g_autoptr(Run) after =
                        run_loopctl(&no_bus, w[0], w[1] ?: "--help", w[1] ? "--help" : NULL, NULL);
                g_autoptr(Run) before = run_loopctl(&no_bus, "-h", w[0], w[1], NULL);

                g_test_message("loopctl %s %s --help", w[0], w[1] ? w[1] : "");
                g_assert_cmpint(after->status, ==, 0);
                g_assert_cmpstr(after->err, ==, "");
                g_assert_true(g_str_has_prefix(after->out, usage));
                g_assert_cmpstr(before->out, ==, after->out);
                /* Not the global help: no list of commands. */
                g_assert_null(strstr(after->out, "Commands:"));
                g_assert_nonnull(strstr(after->out, "--json"));
                g_assert_nonnull(strstr(after->out, "--quiet"));
                for (char **o = options; *o; o++)
                        if (**o) {
                                g_autofree char *line = g_strdup_printf("\n  %s", *o);
                                g_assert_nonnull(strstr(after->out, line));
                        }
        }

        /* A command's options only: mount's help does not offer attach's. */
        g_autoptr(Run) mount = run_loopctl(&no_bus, "mount", "--help", NULL);
        g_assert_null(strstr(mount->out, "--autoclear"));
        g_autoptr(Run) args = run_loopctl(&no_bus, "format", "loop3", "ext4", "--help", NULL);
        g_assert_true(g_str_has_prefix(args->out, "Usage: loopctl format "));
}

void test_speak_global_help_points_to_commands(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "--help", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_nonnull(strstr(r->out, "Commands:"));
        g_assert_nonnull(strstr(r->out, "'loopctl COMMAND --help'"));
        g_assert_nonnull(strstr(r->out, "--quiet"));
}

/* ---- JSON errors ---- */

static void assert_json_error(const Run *r, int status, const char *kind, const char *what)
{
        g_autofree char *got_kind = NULL;
        g_autofree char *message = json_error_message(r->err, &got_kind);

        if (!message)
                g_error("expected a JSON error on stderr, got <<%s>>", r->err);
        g_assert_cmpint(r->status, ==, status);
        g_assert_cmpstr(got_kind, ==, kind);
        g_assert_nonnull(strstr(message, what));
        g_assert_cmpstr(r->out, ==, "");
}

void test_speak_json_usage_errors(void)
{
        g_autoptr(Run) unknown = run_loopctl(&no_bus, "--json", "frobnicate", NULL);
        assert_json_error(unknown, 2, "usage", "unknown command 'frobnicate'");
        /* --json after the word that is wrong. */
        g_autoptr(Run) option = run_loopctl(&no_bus, "list", "--frob", "--json", NULL);
        assert_json_error(option, 2, "usage", "unknown option '--frob'");
        g_autoptr(Run) create = run_loopctl(&no_bus, "create", "x.img", "--json", NULL);
        assert_json_error(create, 2, "usage", "'create' needs --size");
        /* Without --json, the line as ever. */
        g_autoptr(Run) text = run_loopctl(&no_bus, "frobnicate", NULL);
        assert_error_line(text, 2, "loopctl: unknown command 'frobnicate'");
        g_assert_false(g_str_has_prefix(text->err, "{"));
}

void test_speak_json_local_errors(void)
{
        g_autoptr(Run) missing = run_loopctl(&no_bus, "--json", "attach", "/nonexistent/disk.img", NULL);
        assert_json_error(missing, 1, "ENOENT", "cannot attach /nonexistent/disk.img");
        g_autoptr(Run) bus = run_loopctl(&no_bus, "list", "--json", NULL);
        assert_json_error(bus, 1, "ENOENT", "cannot connect to the system bus");
        /* What getopt made of the words decides: an abbreviation is --json, a label that reads "--json"
         * is not. */
        g_autoptr(Run) abbreviated = run_loopctl(&no_bus, "--js", "list", NULL);
        assert_json_error(abbreviated, 1, "ENOENT", "cannot connect to the system bus");
        g_autoptr(Run) label = run_loopctl(&no_bus, "format", "--label", "--json", "loop3p1", "vfat", NULL);
        assert_error_line(label, 1, "cannot connect to the system bus");
        g_assert_false(g_str_has_prefix(label->err, "{"));
}

void test_speak_json_bus_errors(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Detach";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message =
                "loop3 is mounted on /run/media/tester/\"A\"; unmount it first (or detach with the "
                "unmount option)";
        g_autoptr(Run) r = run_loopctl(&o, "--json", "detach", "loop3", NULL);
        assert_json_error(r, 1, "org.loopd1.Error.Busy",
                "cannot detach /dev/loop3: loop3 is mounted on /run/media/tester/\"A\"; unmount it first (or "
                "detach with --unmount)");
}

/* ---- the words ---- */

void test_speak_error_wordings(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Detach";
        m->fail_name = "org.loopd1.Error.NotManaged";
        m->fail_message = "device: '/dev/vda' is not a loop device (expected /dev/loopN or loopN)";
        g_autoptr(Run) vda = run_loopctl(&o, "detach", "/dev/vda", NULL);
        assert_error_line(vda, 1, "loopctl: cannot detach /dev/vda: not a loop device: /dev/vda (expected");
        g_assert_null(strstr(vda->err, "is not a loop device"));

        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message =
                "loop3 is mounted on /run/media/tester/A; unmount it first (or detach with the unmount "
                "option)";
        g_autoptr(Run) busy = run_loopctl(&o, "detach", "loop3", NULL);
        assert_error_line(busy, 1, "unmount it first (or detach with --unmount)\n");

        m->fail_method = "Mount";
        m->fail_name = "org.loopd1.Error.NotManaged";
        m->fail_message =
                "node: '/dev/sda1' is not a loop device or loop partition; loopd mounts nothing else";
        g_autoptr(Run) node = run_loopctl(&o, "mount", "/dev/sda1", NULL);
        assert_error_line(
                node, 1, "not a loop device or loop partition: /dev/sda1; loopd mounts nothing else");

        m->fail_name = "org.loopd1.Error.UnsupportedFilesystem";
        m->fail_message = "fstype: 'proc' is not a filesystem loopd mounts";
        g_autoptr(Run) fstype = run_loopctl(&o, "mount", "loop3", "--fstype", "proc", NULL);
        assert_error_line(
                fstype, 1, "cannot mount /dev/loop3: --fstype: 'proc' is not a filesystem loopd mounts");
}

void test_speak_polkit_denial_says_what_to_do(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Mount";
        m->fail_name = "org.loopd1.Error.NotAuthorized";
        m->fail_message = "Not authorized for org.loopd1.mount";
        g_autoptr(Run) denied = run_loopctl(&o, "mount", "loop3p1", NULL);
        assert_error_line(
                denied, 1, "cannot mount /dev/loop3p1: not authorized (polkit action org.loopd1.mount)");
        g_assert_nonnull(strstr(denied->err, "an administrator can grant it with a polkit rule"));
        g_assert_nonnull(strstr(denied->err, "log in to a local session"));

        m->fail_name = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
        m->fail_message = "Authentication is required for org.loopd1.mount, and the call did not allow "
                          "interactive authorization";
        g_autoptr(Run) asked = run_loopctl(&o, "--no-ask-password", "mount", "loop3p1", NULL);
        assert_error_line(asked, 1, "polkit action org.loopd1.mount needs a password");
        g_assert_nonnull(strstr(asked->err, "without --no-ask-password"));
        g_assert_nonnull(strstr(asked->err, "polkit rule"));

        /* The D-Bus name stays the JSON error's. */
        g_autoptr(Run) json = run_loopctl(&o, "--json", "--no-ask-password", "mount", "loop3p1", NULL);
        assert_json_error(json, 1, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
                "org.loopd1.mount needs a password");
}

/* ---- list ---- */

void test_speak_list_empty_has_a_header(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        int master;

        if (!m->address)
                return;
        g_autoptr(Run) piped = run_loopctl(&o, "list", NULL);
        g_assert_cmpint(piped->status, ==, 0);
        g_assert_cmpstr(piped->out, ==, "NAME SIZE SIZELIMIT OFFSET SECTOR RO AUTOCLEAR OWNER BACK-FILE\n");

        g_autofree char *tty = terminal_new(&master);
        o.stdout_path = tty;
        g_autoptr(Run) shown = run_loopctl(&o, "list", NULL);
        g_autofree char *out = terminal_read(master);
        g_assert_cmpint(shown->status, ==, 0);
        g_assert_cmpstr(out, ==,
                "NAME SIZE SIZELIMIT OFFSET SECTOR RO AUTOCLEAR OWNER BACK-FILE\nno loop devices\n");

        o.stdout_path = NULL;
        g_autoptr(Run) json = run_loopctl(&o, "list", "--json", NULL);
        g_assert_cmpstr(json->out, ==, "[]\n");
}

/* ---- what was done ---- */

void test_speak_commands_say_what_they_did(Mock *m, gconstpointer data)
{
        static const struct {
                const char *words[3];
                const char *said;
        } commands[] = {
                { { "detach", "loop3" }, "Detached /dev/loop3.\n" },
                { { "detach", "--unmount", "loop3" }, "Unmounted and detached /dev/loop3.\n" },
                { { "close", "loop7" }, "Unmounted and detached /dev/loop7.\n" },
                { { "unmount", "/run/media/tester/DATA" }, "Unmounted /run/media/tester/DATA.\n" },
                { { "unmount", "loop3p1" }, "Unmounted /dev/loop3p1.\n" },
        };
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
                const char *const *w = commands[i].words;
                int master;

                g_test_message("loopctl %s %s %s", w[0], w[1], w[2] ? w[2] : "");
                g_autofree char *tty = terminal_new(&master);
                o.stdout_path = tty;
                g_autoptr(Run) said = run_loopctl(&o, w[0], w[1], w[2], NULL);
                g_autofree char *out = terminal_read(master);
                g_assert_cmpint(said->status, ==, 0);
                g_assert_cmpstr(out, ==, commands[i].said);

                g_autofree char *tty2 = terminal_new(&master);
                o.stdout_path = tty2;
                g_autoptr(Run) quiet = run_loopctl(&o, "--quiet", w[0], w[1], w[2], NULL);
                g_autofree char *nothing = terminal_read(master);
                g_assert_cmpint(quiet->status, ==, 0);
                g_assert_cmpstr(nothing, ==, "");

                /* A script reads nothing new. */
                o.stdout_path = NULL;
                g_autoptr(Run) piped = run_loopctl(&o, w[0], w[1], w[2], NULL);
                g_assert_cmpint(piped->status, ==, 0);
                g_assert_cmpstr(piped->out, ==, "");
                g_assert_cmpstr(piped->err, ==, "");
        }
}
