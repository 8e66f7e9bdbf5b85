/* loopctl-cli-modify.c: the loopctl-cli suite's image-making commands (format, partition add/delete,
 * create): their usage errors, help, what fails before the bus, and against the mock loopd, what they send,
 * what they print, and that a failed create leaves nothing behind. */
#include "test-loopctl-cli.h"

/* ---- usage ---- */

void test_modify_usage_format(void)
{
        assert_usage_error("'format' needs NODE", "format", NULL);
        assert_usage_error("'format' needs TYPE after NODE", "format", "loop3p1", NULL);
        assert_usage_error("'format' needs TYPE after NODE", "format", "--label", "BOOT", "loop3p1", NULL);
        assert_usage_error("'format' needs TYPE, not an empty string", "format", "loop3p1", "", NULL);
        assert_usage_error(
                "too many arguments for 'format': 'BOOT'", "format", "loop3p1", "ext2", "BOOT", NULL);
        assert_usage_error("option '--label' needs a value", "format", "loop3p1", "ext2", "--label", NULL);
        assert_usage_error(
                "invalid --uuid '': expected a value", "format", "--uuid=", "loop3p1", "ext2", NULL);
        assert_usage_error(
                "option '--erase' takes no value", "format", "--erase=yes", "loop3p1", "ext2", NULL);
        assert_usage_error("option '--table' does not apply to 'format'", "format", "--table", "gpt",
                "loop3", "gpt", NULL);
        assert_usage_error(
                "option '--fs' does not apply to 'format'", "format", "loop3", "ext4", "--fs", "ext4", NULL);
}

void test_modify_usage_partition(void)
{
        assert_usage_error("'partition' needs a command: add or delete", "partition", NULL);
        assert_usage_error("'partition' needs a command: add or delete", "--json", "partition", NULL);
        assert_usage_error("'partition' needs a command: add or delete", "partition", "", NULL);
        assert_usage_error(
                "unknown command 'partition frob'; expected add or delete", "partition", "frob", NULL);
        /* The device is not a sub-command. */
        assert_usage_error("unknown command 'partition loop3'", "partition", "loop3", NULL);
        assert_usage_error("'partition add' needs DEVICE|IMAGE", "partition", "add", NULL);
        assert_usage_error("'partition delete' needs NODE", "partition", "delete", "--json", NULL);
        assert_usage_error("too many arguments for 'partition delete': 'loop3p2'", "partition", "delete",
                "loop3p1", "loop3p2", NULL);
        assert_usage_error("option '--bootable' does not apply to 'partition delete'", "partition", "delete",
                "--bootable", "loop3p1", NULL);
        assert_usage_error("option '--label' does not apply to 'partition add'", "partition", "add",
                "--label", "X", "loop3", NULL);
        assert_usage_error("invalid --start '1.5M'", "partition", "add", "--start", "1.5M", "loop3", NULL);
        assert_usage_error("invalid --size '12Q'", "partition", "add", "loop3", "--size=12Q", NULL);
        assert_usage_error(
                "invalid --type '': expected a value", "partition", "add", "--type", "", "loop3", NULL);
        /* The listing command is another word and keeps its one argument. */
        assert_usage_error("'partitions' needs DEVICE", "partitions", NULL);
        g_autoptr(Run) r = run_loopctl(&no_bus, "partitions", "loop3", NULL);
        assert_error_line(r, 1, "loopctl: cannot connect to the system bus");
}

void test_modify_usage_create(void)
{
        assert_usage_error("'create' needs IMAGE", "create", "--size", "64M", NULL);
        assert_usage_error("'create' needs --size", "create", "disk.img", NULL);
        assert_usage_error(
                "'create' needs --size", "create", "disk.img", "--table", "gpt", "--fs", "ext4", NULL);
        assert_usage_error(
                "invalid --size '0': an image needs a size", "create", "--size", "0", "disk.img", NULL);
        assert_usage_error("invalid --size '12Q'", "create", "--size", "12Q", "disk.img", NULL);
        assert_usage_error("invalid --size '-1M'", "create", "--size", "-1M", "disk.img", NULL);
        assert_usage_error("invalid --size: 1000 bytes is not a multiple of 512 (the sector size)", "create",
                "--size", "1000", "disk.img", NULL);
        assert_usage_error("invalid --size: 1050624 bytes is not a multiple of 4096 (the sector size)",
                "create", "--sector-size", "4096", "--size", "1026K", "disk.img", NULL);
        assert_usage_error("invalid --table 'mbr': expected gpt or dos", "create", "--size", "64M",
                "--table", "mbr", "disk.img", NULL);
        assert_usage_error("invalid --table 'GPT': expected gpt or dos", "create", "--size", "64M",
                "--table=GPT", "disk.img", NULL);
        assert_usage_error("invalid --fs 'gpt': a partition table is --table gpt", "create", "--size", "64M",
                "--fs", "gpt", "disk.img", NULL);
        assert_usage_error(
                "invalid --fs 'zfs': expected ext2, ext3, ext4, xfs, btrfs, vfat, exfat, ntfs or swap",
                "create", "--size", "64M", "--fs", "zfs", "disk.img", NULL);
        assert_usage_error(
                "invalid --fs 'empty'", "create", "--size", "64M", "--fs", "empty", "disk.img", NULL);
        assert_usage_error("option '--label' of 'create' needs --fs", "create", "--size", "64M", "--table",
                "dos", "--label", "DATA", "disk.img", NULL);
        assert_usage_error("option '--erase' does not apply to 'create'", "create", "--size", "64M",
                "--erase", "disk.img", NULL);
        assert_usage_error("option '--read-only' does not apply to 'create'", "create", "--size", "64M",
                "--read-only", "disk.img", NULL);
}

/* Nothing is made by a command line that is refused, nor when loopd cannot be reached. */
void test_modify_create_refused_makes_no_file(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *img = g_build_filename(dir, "disk.img", NULL);
        RunOptions o = { .cwd = dir };

        assert_usage_error("invalid --table", "create", "--size", "1M", "--table", "mbr", img, NULL);
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));

        g_autoptr(Run) r = run_loopctl(&o, "create", "--size", "1M", "disk.img", NULL);
        assert_error_line(r, 1, "loopctl: cannot connect to the system bus");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));

        test_tmpdir_remove(dir);
}

static char *file_digest(const char *path)
{
        g_autofree char *data = NULL;
        gsize n = 0;

        g_assert_true(g_file_get_contents(path, &data, &n, NULL));
        return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, n);
}

/* An existing file, or a symlink to where one would be made, is never written: the error comes before the
 * bus. */
void test_modify_create_never_overwrites(void)
{
        g_autofree char *dir = test_tmpdir_new();
        g_autofree char *img = make_file(dir, "disk.img", 8192);
        g_autofree char *link = g_build_filename(dir, "link.img", NULL);
        g_autofree char *target = g_build_filename(dir, "target.img", NULL);
        g_autofree char *before = NULL, *after = NULL;
        struct stat st_before, st_after;

        g_assert_true(g_file_set_contents(img, "precious bytes", -1, NULL));
        before = file_digest(img);
        g_assert_cmpint(stat(img, &st_before), ==, 0);

        g_autoptr(Run) r = run_loopctl(&no_bus, "create", "--size", "64M", "--table", "gpt", img, NULL);
        g_autofree char *expected = g_strdup_printf("loopctl: cannot create %s: File exists\n", img);
        assert_error_line(r, 1, expected);
        after = file_digest(img);
        g_assert_cmpstr(after, ==, before);
        g_assert_cmpint(stat(img, &st_after), ==, 0);
        g_assert_cmpint(st_after.st_size, ==, st_before.st_size);
        g_assert_cmpint(st_after.st_mtim.tv_sec, ==, st_before.st_mtim.tv_sec);
        g_assert_cmpint(st_after.st_mtim.tv_nsec, ==, st_before.st_mtim.tv_nsec);

        /* A dangling symlink: following it would make a file elsewhere. */
        g_assert_cmpint(symlink(target, link), ==, 0);
        g_autoptr(Run) l = run_loopctl(&no_bus, "create", "--size", "1M", link, NULL);
        assert_error_line(l, 1, "File exists");
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));

        test_tmpdir_remove(dir);
}

void test_modify_nodes_fail_before_the_bus(void)
{
        g_autoptr(Run) f = run_loopctl(&no_bus, "format", "nonexistent/p1", "ext4", NULL);
        assert_error_line(f, 1, "loopctl: cannot format nonexistent/p1: No such file or directory");
        g_autoptr(Run) d = run_loopctl(&no_bus, "partition", "delete", "nonexistent/p1", NULL);
        assert_error_line(d, 1, "loopctl: cannot delete nonexistent/p1: No such file or directory");
        g_autoptr(Run) a = run_loopctl(&no_bus, "partition", "add", "nonexistent.img", NULL);
        assert_error_line(
                a, 1, "loopctl: cannot add a partition to nonexistent.img: No such file or directory");
        /* Well-formed: they get as far as the bus. */
        g_autoptr(Run) b = run_loopctl(&no_bus, "format", "loop3p1", "ext4", NULL);
        assert_error_line(b, 1, "loopctl: cannot connect to the system bus");
}

void test_modify_help_lists_commands(void)
{
        g_autoptr(Run) r = run_loopctl(&no_bus, "--help", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        for (const char *const *s = (const char *const[]){ "\n  format [", "\n  partition add [",
                     "\n  partition delete NODE", "\n  create --size N", "--label L", "--uuid U", "--erase",
                     "--start N", "--type T", "--name S", "--bootable", "--table gpt|dos", "--fs TYPE",
                     "it stays attached", NULL };
                *s; s++)
                if (!strstr(r->out, *s))
                        g_error("loopctl --help lacks '%s':\n%s", *s, r->out);

        /* Help after a sub-command, or instead of one, is that command's (loopctl-cli-speak.c). */
        g_autoptr(Run) p = run_loopctl(&no_bus, "partition", "--help", NULL);
        g_assert_cmpint(p->status, ==, 0);
        g_assert_true(g_str_has_prefix(p->out, "Usage: loopctl partition add "));
        g_assert_nonnull(strstr(p->out, "loopctl partition delete NODE"));
        g_autoptr(Run) c = run_loopctl(&no_bus, "create", "x.img", "-h", NULL);
        g_assert_cmpint(c->status, ==, 0);
        g_assert_true(g_str_has_prefix(c->out, "Usage: loopctl create --size N"));
}

/* ---- against the mock ---- */

static const char modify_partitions_text[] =
        "[('/dev/loop3p1', uint32 1, uint64 1048576, uint64 16777216, '0x6', '', 'vfat', 'BOOT', '1234-ABCD', ''), "
        "('/dev/loop3p2', uint32 2, uint64 17825792, uint64 48234496, '0x83', '', 'ext2', 'ROOT', "
        "'0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1', '')]";

static const char p2_json[] =
        "{\"node\": \"/dev/loop3p2\", \"number\": 2, \"offset\": 17825792, \"size\": 48234496, "
        "\"part_type\": \"0x83\", \"part_name\": \"\", \"fstype\": \"ext2\", \"label\": \"ROOT\", "
        "\"uuid\": \"0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\", \"mount_point\": \"\"}";

static guint64 call_uint64(const MockCall *c, gsize i)
{
        g_autoptr(GVariant) v = g_variant_get_child_value(c->params, i);
        return g_variant_get_uint64(v);
}

/* The methods called, in order, as "Attach Format ...". */
static char *mock_sequence(Mock *m)
{
        GString *s = g_string_new(NULL);

        for (guint i = 0; i < m->calls->len; i++)
                g_string_append_printf(s, "%s%s", i ? " " : "", ((MockCall *)m->calls->pdata[i])->method);
        return g_string_free(s, FALSE);
}

static MockCall *mock_nth(Mock *m, guint i)
{
        g_assert_cmpuint(i, <, m->calls->len);
        return m->calls->pdata[i];
}

void test_modify_format_sends_node_type_and_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "format", "loop3p1", "ext2", "--label", "BOOT", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_cmpstr(r->out, ==, "Formatted /dev/loop3p1 as ext2, label BOOT.\n");
        MockCall *c = mock_call(m, "Format");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3p1");
        g_assert_cmpstr(call_string(c, 1), ==, "ext2");
        assert_options(c, 2, "{'label': <'BOOT'>}");
        g_assert_true(c->interactive);
        g_ptr_array_set_size(m->calls, 0);

        /* Options before the command, every one of them, and --json. */
        g_autoptr(Run) j =
                run_loopctl(&o, "--erase", "--json", "--uuid", "0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1",
                        "format", "/dev/loop3", "--label=My Disk", "vfat", "--no-ask-password", NULL);
        g_assert_cmpint(j->status, ==, 0);
        g_assert_cmpstr(j->out, ==,
                "{\"node\": \"/dev/loop3\", \"type\": \"vfat\", \"label\": \"My Disk\", "
                "\"uuid\": \"0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\"}\n");
        c = mock_call(m, "Format");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
        assert_options(c, 2,
                "{'label': <'My Disk'>, 'uuid': <'0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1'>, 'erase': <true>}");
        g_assert_false(c->interactive);
        g_ptr_array_set_size(m->calls, 0);

        /* Tables and "empty" say what they did; nothing asked, nothing sent. */
        g_autoptr(Run) t = run_loopctl(&o, "format", "loop3", "gpt", NULL);
        g_assert_cmpint(t->status, ==, 0);
        g_assert_cmpstr(t->out, ==, "Wrote a new gpt partition table on /dev/loop3.\n");
        assert_options(mock_call(m, "Format"), 2, "@a{sv} {}");
        g_autoptr(Run) e = run_loopctl(&o, "format", "loop3", "empty", NULL);
        g_assert_cmpstr(e->out, ==, "Wiped the signatures on /dev/loop3.\n");
        g_autoptr(Run) je = run_loopctl(&o, "--json", "format", "loop3", "empty", NULL);
        g_assert_cmpstr(je->out, ==,
                "{\"node\": \"/dev/loop3\", \"type\": \"empty\", \"label\": \"\", \"uuid\": \"\"}\n");
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, j->out, -1, NULL));
}

void test_modify_format_error_is_one_line(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Format";
        m->fail_name = "org.loopd1.Error.InvalidArgument";
        m->fail_message = "label: 'A/B' has a '/', which vfat labels cannot hold";
        g_autoptr(Run) r = run_loopctl(&o, "format", "loop3p1", "vfat", "--label", "A/B", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot format /dev/loop3p1 as vfat: --label: 'A/B' has a '/', which vfat labels cannot "
                "hold\n");

        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "/dev/loop3p1 is mounted on /run/media/tester/BOOT";
        g_autoptr(Run) b = run_loopctl(&o, "--json", "format", "loop3p1", "ext4", NULL);
        assert_error_line(b, 1, "loopctl: cannot format /dev/loop3p1 as ext4: /dev/loop3p1 is mounted on");
}

void test_modify_partition_add_defaults_and_output(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_partitions(m, modify_partitions_text);
        g_autoptr(Run) r = run_loopctl(&o, "partition", "add", "loop3", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_cmpstr(r->out, ==,
                "Created /dev/loop3p2.\n"
                "NAME         NR OFFSET SIZE FSTYPE LABEL UUID                                 MOUNTPOINT\n"
                "/dev/loop3p2  2    17M  46M ext2   ROOT  0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\n");
        MockCall *c = mock_call(m, "CreatePartition");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
        g_assert_cmpuint(call_uint64(c, 1), ==, 0);
        g_assert_cmpuint(call_uint64(c, 2), ==, 0);
        g_assert_cmpstr(call_string(c, 3), ==, "linux");
        g_assert_cmpstr(call_string(c, 4), ==, "");
        assert_options(c, 5, "@a{sv} {}");
        g_assert_true(c->interactive);
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop3");
        g_ptr_array_set_size(m->calls, 0);

        g_autoptr(Run) j = run_loopctl(&o, "--json", "partition", "add", "/dev/loop3", NULL);
        g_assert_cmpint(j->status, ==, 0);
        g_autofree char *expected = g_strdup_printf("%s\n", p2_json);
        g_assert_cmpstr(j->out, ==, expected);
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, j->out, -1, NULL));
}

void test_modify_partition_add_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_partitions(m, modify_partitions_text);
        g_autoptr(Run) r = run_loopctl(&o, "--bootable", "partition", "--start", "1MiB", "add", "--size=16M",
                "--type", "esp", "--name", "EFI system", "loop3", NULL);
        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "CreatePartition");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
        g_assert_cmpuint(call_uint64(c, 1), ==, 1048576);
        g_assert_cmpuint(call_uint64(c, 2), ==, 16777216);
        g_assert_cmpstr(call_string(c, 3), ==, "esp");
        g_assert_cmpstr(call_string(c, 4), ==, "EFI system");
        assert_options(c, 5, "{'bootable': <true>}");
}

/* DEVICE may be the image: the device it is attached to, found as detach finds it. */
void test_modify_partition_add_to_image(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 1 << 20);
        g_autofree char *devices = g_strdup_printf(
                "[('/dev/loop7', objectpath '/org/loopd1/device/loop7', '%s', uint64 0, uint64 0, uint32 512, "
                "false, false, true, uint32 1000)]",
                img);
        mock_set_devices(m, devices);
        mock_set_partitions(m, modify_partitions_text);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "partition", "add", "disk.img", "--json", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "CreatePartition"), 0), ==, "/dev/loop7");
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop7");

        /* Not attached: said so, nothing asked of loopd but the listing. */
        mock_set_devices(m, "@a(sosttubbbu) []");
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) n = run_loopctl(&o, "partition", "add", "disk.img", NULL);
        assert_error_line(
                n, 1, "loopctl: cannot add a partition to disk.img: it is not attached to a loop device");
        g_assert_cmpuint(mock_count(m, "CreatePartition"), ==, 0);
}

void test_modify_partition_add_errors(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "CreatePartition";
        m->fail_name = "org.loopd1.Error.InvalidArgument";
        m->fail_message = "offset: 1 MiB to 17 MiB overlaps partition 1";
        g_autoptr(Run) r = run_loopctl(&o, "partition", "add", "--start", "1M", "loop3", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot add a partition to /dev/loop3: offset: 1 MiB to 17 MiB overlaps "
                "partition 1\n");
        g_assert_cmpuint(mock_count(m, "ListPartitions"), ==, 0);

        /* Made, but not in the listing: the error says it was made. */
        m->fail_method = NULL;
        g_autoptr(Run) l = run_loopctl(&o, "partition", "add", "loop3", NULL);
        assert_error_line(l, 1,
                "loopctl: cannot find /dev/loop3p2 in the partitions of /dev/loop3 (/dev/loop3p2 was created)");
        g_autoptr(Run) lj = run_loopctl(&o, "--json", "partition", "add", "loop3", NULL);
        assert_error_line(lj, 1, "(/dev/loop3p2 was created)");
}

void test_modify_partition_delete(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "partition", "delete", "loop3p2", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==, "Deleted /dev/loop3p2.\n");
        MockCall *c = mock_call(m, "DeletePartition");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3p2");
        assert_options(c, 1, "@a{sv} {}");
        g_assert_true(c->interactive);

        g_autoptr(Run) j = run_loopctl(&o, "partition", "delete", "/dev/loop3p2", "--json", NULL);
        g_assert_cmpint(j->status, ==, 0);
        g_assert_cmpstr(j->out, ==, "{\"node\": \"/dev/loop3p2\"}\n");

        m->fail_method = "DeletePartition";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "/dev/loop3p2 is mounted on /run/media/tester/ROOT";
        g_autoptr(Run) b = run_loopctl(&o, "partition", "delete", "loop3p2", NULL);
        assert_error_line(b, 1,
                "loopctl: cannot delete /dev/loop3p2: /dev/loop3p2 is mounted on /run/media/tester/ROOT\n");
}

/* The OSDev recipe's first step: a new sparse file of the user's, attached read-write and kept, a table,
 * one partition, a filesystem on it; then what attach prints. */
void test_modify_create_table_partition_filesystem(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = g_build_filename(m->dir, "disk.img", NULL);
        mode_t old_mask;
        struct stat st;

        if (!m->address)
                return;
        mock_set_partitions(m, modify_partitions_text);
        o.cwd = m->dir;
        old_mask = umask(027);
        g_autoptr(Run) r = run_loopctl(&o, "create", "disk.img", "--size", "64M", "--table", "dos", "--fs",
                "ext2", "--label", "ROOT", NULL);
        umask(old_mask);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        g_assert_cmpstr(r->out, ==,
                "Created disk.img (64M) and attached it as /dev/loop3.\n"
                "Wrote a new dos partition table on /dev/loop3.\n"
                "Created /dev/loop3p2.\n"
                "Formatted /dev/loop3p2 as ext2, label ROOT.\n"
                "NAME         NR OFFSET SIZE FSTYPE LABEL UUID                                 MOUNTPOINT\n"
                "/dev/loop3p1  1     1M  16M vfat   BOOT  1234-ABCD\n"
                "/dev/loop3p2  2    17M  46M ext2   ROOT  0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\n");

        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach Format CreatePartition Format ListPartitions");
        MockCall *attach = mock_nth(m, 0);
        g_assert_cmpint(attach->fd_accmode, ==, O_RDWR);
        assert_same_file(attach, img);
        assert_options(attach, 1, "@a{sv} {}"); /* read-write from the fd, no autoclear: it stays */
        g_assert_cmpstr(call_string(mock_nth(m, 1), 0), ==, "/dev/loop3");
        g_assert_cmpstr(call_string(mock_nth(m, 1), 1), ==, "dos");
        assert_options(mock_nth(m, 1), 2, "@a{sv} {}");
        MockCall *part = mock_nth(m, 2);
        g_assert_cmpstr(call_string(part, 0), ==, "/dev/loop3");
        g_assert_cmpuint(call_uint64(part, 1), ==, 0);
        g_assert_cmpuint(call_uint64(part, 2), ==, 0);
        g_assert_cmpstr(call_string(part, 3), ==, "linux");
        g_assert_cmpstr(call_string(part, 4), ==, "");
        g_assert_cmpstr(call_string(mock_nth(m, 3), 0), ==, "/dev/loop3p2");
        g_assert_cmpstr(call_string(mock_nth(m, 3), 1), ==, "ext2");
        assert_options(mock_nth(m, 3), 2, "{'label': <'ROOT'>}");
        g_assert_cmpstr(call_string(mock_nth(m, 4), 0), ==, "/dev/loop3");

        /* The file: the user's, 0644 less the umask, the size asked, and sparse. */
        g_assert_cmpint(stat(img, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, geteuid());
        g_assert_cmpuint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpuint(st.st_size, ==, 64 << 20);
        g_assert_cmpuint(st.st_blocks, ==, 0);
}

void test_modify_create_json_is_attachs(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_partitions(m, modify_partitions_text);
        o.cwd = m->dir;
        g_autoptr(Run) r =
                run_loopctl(&o, "--json", "create", "--size=64MiB", "--table", "gpt", "disk.img", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_true(g_str_has_prefix(r->out,
                "{\"device\": \"/dev/loop3\", \"partitions\": [{\"node\": "
                "\"/dev/loop3p1\""));
        g_assert_true(g_str_has_suffix(r->out, "]}\n"));
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, r->out, -1, NULL));
        JsonObject *root = json_node_get_object(json_parser_get_root(parser));
        g_assert_cmpuint(json_object_get_size(root), ==, 2);
        g_assert_cmpuint(json_array_get_length(json_object_get_array_member(root, "partitions")), ==, 2);

        /* A table alone: no partition, no filesystem. */
        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach Format ListPartitions");
        g_assert_cmpstr(call_string(mock_nth(m, 1), 1), ==, "gpt");
}

void test_modify_create_filesystem_on_the_whole_device(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "create", "--size", "32M", "--fs", "vfat", "--label", "STICK",
                "--sector-size", "4096", "stick.img", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "Created stick.img (32M) and attached it as /dev/loop3.\n"
                "Formatted /dev/loop3 as vfat, label STICK.\n");
        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach Format ListPartitions");
        assert_options(mock_nth(m, 0), 1, "{'sector-size': <uint32 4096>}");
        g_assert_cmpstr(call_string(mock_nth(m, 1), 0), ==, "/dev/loop3");
        g_assert_cmpstr(call_string(mock_nth(m, 1), 1), ==, "vfat");
        assert_options(mock_nth(m, 1), 2, "{'label': <'STICK'>}");
}

/* The one partition's type fits its filesystem. */
void test_modify_create_partition_type_fits_filesystem(Mock *m, gconstpointer data)
{
        static const char *const cases[][2] = {
                { "vfat", "fat" },
                { "exfat", "ntfs" },
                { "ntfs", "ntfs" },
                { "swap", "swap" },
                { "ext4", "linux" },
                { "xfs", "linux" },
                { "btrfs", "linux" },
        };
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        o.cwd = m->dir;
        for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *name = g_strdup_printf("%s.img", cases[i][0]);
                g_autoptr(Run) r = run_loopctl(
                        &o, "create", "--size", "1G", "--table", "gpt", "--fs", cases[i][0], name, NULL);

                g_assert_cmpint(r->status, ==, 0);
                g_assert_cmpstr(call_string(mock_call(m, "CreatePartition"), 3), ==, cases[i][1]);
                g_ptr_array_set_size(m->calls, 0);
        }
}

/* A step that fails undoes the steps before: the device detached, the file gone; one error line. */
void test_modify_create_failure_leaves_nothing(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = g_build_filename(m->dir, "disk.img", NULL);

        if (!m->address)
                return;
        o.cwd = m->dir;
        m->fail_method = "CreatePartition";
        m->fail_name = "org.loopd1.Error.InvalidArgument";
        m->fail_message = "size: the disk has no room for a partition";
        g_autoptr(Run) r = run_loopctl(
                &o, "create", "--size", "1M", "--table", "gpt", "--fs", "ext4", "disk.img", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot add a partition to /dev/loop3 (disk.img removed): size: the disk has no room for "
                "a partition\n");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));
        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach Format CreatePartition Detach");
        MockCall *d = mock_nth(m, 3);
        g_assert_cmpstr(call_string(d, 0), ==, "/dev/loop3");
        assert_options(d, 1, "@a{sv} {}");

        /* The filesystem step. */
        g_ptr_array_set_size(m->calls, 0);
        m->fail_method = "Format";
        m->fail_name = "org.loopd1.Error.InvalidArgument";
        m->fail_message = "label: longer than 11 bytes";
        g_autoptr(Run) f = run_loopctl(
                &o, "create", "--size", "1M", "--fs", "vfat", "--label", "MUCH TOO LONG", "disk.img", NULL);
        assert_error_line(
                f, 1, "loopctl: cannot format /dev/loop3 as vfat (disk.img removed): --label: longer");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));
        g_autofree char *sequence2 = mock_sequence(m);
        g_assert_cmpstr(sequence2, ==, "Attach Format Detach");
}

void test_modify_create_attach_refused_removes_file(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = g_build_filename(m->dir, "disk.img", NULL);

        if (!m->address)
                return;
        o.cwd = m->dir;
        m->fail_method = "Attach";
        m->fail_name = "org.loopd1.Error.LimitExceeded";
        m->fail_message = "you have 32 loop devices already";
        g_autoptr(Run) r = run_loopctl(&o, "create", "--size", "1M", "--table", "gpt", "disk.img", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot attach disk.img (disk.img removed): you have 32 loop devices already\n");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));
        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach");
}

/* When detaching fails too, the file stays with the device that holds it, and the line says so. */
void test_modify_create_undo_failure_is_said(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = g_build_filename(m->dir, "disk.img", NULL);

        if (!m->address)
                return;
        o.cwd = m->dir;
        m->fail_method = "Format";
        m->also_fail_method = "Detach";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "in use by mkfs";
        g_autoptr(Run) r = run_loopctl(&o, "create", "--size", "1M", "--fs", "ext4", "disk.img", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot format /dev/loop3 as ext4 (disk.img stays attached as /dev/loop3: cannot detach "
                "it: in use by mkfs): in use by mkfs\n");
        g_assert_true(g_file_test(img, G_FILE_TEST_IS_REGULAR));
}

/* ^C while a step runs (a long mkfs): the step finishes, nothing more is asked, and what was made goes. */
void test_modify_create_interrupted_leaves_nothing(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = g_build_filename(m->dir, "disk.img", NULL);

        if (!m->address)
                return;
        o.cwd = m->dir;
        m->interrupt_method = "CreatePartition";
        g_autoptr(Run) r = run_loopctl(
                &o, "create", "--size", "64M", "--table", "gpt", "--fs", "ext4", "disk.img", NULL);
        assert_error_line(
                r, 1, "loopctl: cannot create disk.img (disk.img removed): Interrupted system call\n");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));
        g_autofree char *sequence = mock_sequence(m);
        g_assert_cmpstr(sequence, ==, "Attach Format CreatePartition Detach");
        g_assert_cmpstr(call_string(mock_nth(m, 3), 0), ==, "/dev/loop3");

        /* Before the first step too: the file made, attached, and both undone. */
        g_ptr_array_set_size(m->calls, 0);
        m->interrupt_method = "Attach";
        g_autoptr(Run) a = run_loopctl(&o, "create", "--size", "64M", "--fs", "ext4", "disk.img", NULL);
        assert_error_line(a, 1, "(disk.img removed): Interrupted system call\n");
        g_assert_false(g_file_test(img, G_FILE_TEST_EXISTS));
        g_autofree char *sequence2 = mock_sequence(m);
        g_assert_cmpstr(sequence2, ==, "Attach Detach");
}
