/* loopctl-cli-usage.c: the loopctl-cli suite's usage errors, help, sizes, and what fails before the bus. */
#include "test-loopctl-cli.h"

void test_usage_no_command(void)
{
        assert_usage_error("missing command", NULL);
        assert_usage_error("missing command", "--json", NULL);
}

void test_usage_unknown_command(void)
{
        assert_usage_error("unknown command 'frobnicate'", "frobnicate", NULL);
        assert_usage_error("unknown command 'umount'", "umount", "/dev/loop3", NULL);
}

void test_usage_unknown_option(void)
{
        assert_usage_error("unknown option '--frobnicate'", "list", "--frobnicate", NULL);
        assert_usage_error("unknown option '--frobnicate'", "--frobnicate=1", "list", NULL);
        assert_usage_error("unknown option '-x'", "-x", "list", NULL);
        assert_usage_error("ambiguous option '--s'", "attach", "--s", "1", "disk.img", NULL);
}

void test_usage_missing_value(void)
{
        assert_usage_error("option '--offset' needs a value", "attach", "disk.img", "--offset", NULL);
        assert_usage_error("option '--fstype' needs a value", "mount", "loop3", "--fstype", NULL);
}

void test_usage_flag_with_value(void)
{
        assert_usage_error("option '--json' takes no value", "list", "--json=yes", NULL);
        assert_usage_error(
                "option '--read-only' takes no value", "attach", "--read-only=1", "disk.img", NULL);
}

void test_usage_missing_argument(void)
{
        assert_usage_error("'attach' needs IMAGE", "attach", NULL);
        assert_usage_error("'detach' needs DEVICE|IMAGE", "detach", "--unmount", NULL);
        assert_usage_error("'partitions' needs DEVICE", "--json", "partitions", NULL);
        assert_usage_error("'mount' needs NODE", "mount", NULL);
        assert_usage_error("'unmount' needs NODE|MOUNTPOINT", "unmount", NULL);
        assert_usage_error("'open' needs IMAGE", "open", NULL);
        assert_usage_error("'close' needs DEVICE|IMAGE", "close", NULL);
        assert_usage_error("'attach' needs IMAGE, not an empty string", "attach", "", NULL);
}

void test_usage_too_many_arguments(void)
{
        assert_usage_error("too many arguments for 'list': 'extra'", "list", "extra", NULL);
        assert_usage_error("too many arguments for 'monitor'", "monitor", "now", NULL);
        assert_usage_error("too many arguments for 'attach': 'b.img'", "attach", "a.img", "b.img", NULL);
        assert_usage_error("too many arguments", "detach", "a", "b", "c", "d", NULL);
}

void test_usage_option_of_another_command(void)
{
        assert_usage_error("option '--offset' does not apply to 'list'", "list", "--offset", "1", NULL);
        assert_usage_error(
                "option '--writable' does not apply to 'attach'", "--writable", "attach", "x.img", NULL);
        assert_usage_error(
                "option '--unmount' does not apply to 'close'", "close", "--unmount", "loop3", NULL);
        assert_usage_error(
                "option '--read-only' does not apply to 'open'", "open", "--read-only", "x.img", NULL);
        assert_usage_error(
                "option '--fstype' does not apply to 'attach'", "attach", "--fstype=ext4", "x", NULL);
}

void test_help_prints_usage(void)
{
        static const char *const forms[][3] = { { "--help" }, { "-h" }, { "--help", "bogus" } };

        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r = run_loopctl(&no_bus, forms[i][0], forms[i][1], forms[i][2], NULL);

                g_assert_cmpint(r->status, ==, 0);
                g_assert_cmpstr(r->err, ==, "");
                g_assert_true(g_str_has_prefix(r->out, "Usage: loopctl"));
                for (const char *const *cmd = (const char *const[]){ "attach", "detach", "list",
                             "partitions", "mount", "unmount", "open", "close", "monitor", "--json",
                             "--no-ask-password", "--version", NULL };
                        *cmd; cmd++)
                        g_assert_nonnull(strstr(r->out, *cmd));
        }
}

void test_version(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "--version", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_true(g_regex_match_simple("^loopctl [0-9]+\\.[0-9]+(\\.[0-9]+)?.*\n$", r->out, 0, 0));
}

/* ---- sizes ---- */

void test_size_bad_values(void)
{
        static const char *const bad[] = { "", "1X", "-1", "1.5M", "1 M", "M", "0x100", "1MiBs", "1Ki" };

        for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autofree char *what = g_strdup_printf("invalid --offset '%s'", bad[i]);
                assert_usage_error(what, "attach", "--offset", bad[i], "disk.img", NULL);
        }
        assert_usage_error("invalid --size '12Q'", "attach", "--size=12Q", "disk.img", NULL);
        assert_usage_error("invalid --sector-size 'big'", "open", "--sector-size", "big", "disk.img", NULL);
}

void test_size_overflow(void)
{
        assert_usage_error("invalid --offset '18446744073709551616': too large", "attach", "--offset",
                "18446744073709551616", "x.img", NULL);
        assert_usage_error("invalid --size '16EiB': too large", "attach", "--size", "16EiB", "x.img", NULL);
}

void test_size_sector_size_values(void)
{
        static const char *const bad[] = { "1000", "256", "8192", "3K", "4KB" };

        for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
                assert_usage_error("expected 512, 1024, 2048 or 4096", "attach", "--sector-size", bad[i],
                        "x.img", NULL);
}

/* ---- failures before the bus ---- */

void test_attach_nonexistent_image_fails_before_bus(void)
{
        /* The bus address leads nowhere: if loopctl connected first, the error would be about the bus. */
        g_autoptr(Run) r = run_loopctl(&no_bus, "attach", "/nonexistent/disk.img", NULL);
        assert_error_line(r, 1, "loopctl: cannot attach /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) o = run_loopctl(&no_bus, "open", "--writable", "/nonexistent/disk.img", NULL);
        assert_error_line(o, 1, "loopctl: cannot open /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) d = run_loopctl(&no_bus, "detach", "/nonexistent/disk.img", NULL);
        assert_error_line(d, 1, "loopctl: cannot detach /nonexistent/disk.img: No such file or directory");

        g_autoptr(Run) c = run_loopctl(&no_bus, "close", "nonexistent.img", NULL);
        assert_error_line(c, 1, "loopctl: cannot close nonexistent.img: No such file or directory");

        g_autoptr(Run) u = run_loopctl(&no_bus, "unmount", "nonexistent/mnt", NULL);
        assert_error_line(u, 1, "loopctl: cannot unmount nonexistent/mnt: No such file or directory");
}

void test_attach_refuses_non_regular_files(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);

        g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);

        /* A FIFO would block open() until a writer came: refused without opening it. */
        g_autoptr(Run) f = run_loopctl(&no_bus, "attach", fifo, NULL);
        assert_error_line(f, 1, "a FIFO, not a regular file");
        g_autoptr(Run) fr = run_loopctl(&no_bus, "attach", "--read-only", fifo, NULL);
        assert_error_line(fr, 1, "a FIFO, not a regular file");

        g_autoptr(Run) d = run_loopctl(&no_bus, "attach", dir, NULL);
        assert_error_line(d, 1, "a directory, not a regular file");

        g_autoptr(Run) c = run_loopctl(&no_bus, "attach", "--read-only", "/dev/null", NULL);
        assert_error_line(c, 1, "loopctl: cannot attach /dev/null: a character device, not a regular file");

        g_autoptr(Run) o = run_loopctl(&no_bus, "open", "/dev/zero", NULL);
        assert_error_line(o, 1, "loopctl: cannot open /dev/zero: a character device, not a regular file");

        test_tmpdir_remove(dir);
}

void test_attach_unwritable_image_suggests_read_only(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *img = make_file(dir, "ro.img", 4096);
        RunOptions o = { .as_nobody = TRUE };

        if (geteuid() == 0 && (!nobody_can_reach(loopctl_binary()) || !nobody_can_reach(dir))) {
                g_test_skip("nobody cannot reach loopctl or the temporary directory here");
                test_tmpdir_remove(dir);
                return;
        }
        /* As root the file is root's, 0644: not writable by nobody. */
        if (geteuid() != 0)
                g_assert_cmpint(chmod(img, 0444), ==, 0);

        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);
        assert_error_line(r, 1, "for writing: Permission denied (use --read-only)");
        g_autoptr(Run) w = run_loopctl(&o, "open", "--writable", img, NULL);
        assert_error_line(w, 1, "for writing: Permission denied (open it without --writable)");

        /* Read-only goes past the file and on to the (unreachable) bus. */
        g_autoptr(Run) ro = run_loopctl(&o, "attach", "--read-only", img, NULL);
        assert_error_line(ro, 1, "loopctl: cannot connect to the system bus: ");

        test_tmpdir_remove(dir);
}

void test_bus_unreachable_is_one_line(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "list", NULL);
        assert_error_line(r, 1, "loopctl: cannot connect to the system bus: No such file or directory");

        g_autoptr(Run) m = run_loopctl(&no_bus, "monitor", "--json", NULL);
        assert_error_line(m, 1, "loopctl: cannot connect to the system bus: No such file or directory");
}

void test_options_before_and_after_command_reach_the_same_parser(void)
{
        /* Without a bus these all get as far as connecting: none is a usage error. */
        static const char *const forms[][4] = {
                { "--json", "list" },
                { "list", "--json" },
                { "--no-ask-password", "--json", "partitions", "loop3" },
                { "partitions", "loop3", "--json", "--no-ask-password" },
                { "--unmount", "detach", "loop3" },
                { "detach", "loop3", "--unmount" },
        };

        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r =
                        run_loopctl(&no_bus, forms[i][0], forms[i][1], forms[i][2], forms[i][3], NULL);
                assert_error_line(r, 1, "cannot connect to the system bus");
        }
}
