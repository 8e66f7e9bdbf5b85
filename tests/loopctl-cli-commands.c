/* loopctl-cli-commands.c: the loopctl-cli suite's commands against the mock loopd: what they send, what
 * they print. */
#include "test-loopctl-cli.h"

/* ---- against the mock ---- */

void test_bus_daemon_not_running(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "list", NULL);
        assert_error_line(r, 1, "loopctl: cannot list loop devices: ");
        g_assert_nonnull(strstr(r->err, "org.loopd1"));
        g_assert_cmpuint(m->calls->len, ==, 0);
}

void test_attach_passes_writable_fd_and_no_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_same_file(c, img);
        assert_options(c, 1, "@a{sv} {}");
        /* What it prints of the device is the Partitions of the object Attach named: what loopd read as it
         * attached it, not probed again. */
        MockCall *get = mock_call(m, "Get");
        g_assert_cmpstr(call_string(get, 0), ==, "/org/loopd1/device/loop3");
        g_assert_cmpstr(call_string(get, 1), ==, "Partitions");
        g_assert_cmpuint(mock_count(m, "ListPartitions"), ==, 0);
}

void test_attach_read_only_passes_read_only_fd(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        /* Option after the image, as after the command word. */
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, "--read-only", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDONLY);
        assert_same_file(c, img);
        assert_options(c, 1, "{'read-only': <true>}");
}

void test_attach_option_keys_are_the_contracts(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "--read-only", "attach", "--offset", "1MiB", "--size=1MB",
                "--sector-size", "4K", "--no-partscan", "--autoclear", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        assert_options(mock_call(m, "Attach"), 1,
                "{'read-only': <true>, 'offset': <uint64 1048576>, 'size-limit': <uint64 1000000>, "
                "'sector-size': <uint32 4096>, 'partition-scan': <false>, 'autoclear': <true>}");
}

void test_attach_sizes_in_every_notation(Mock *m, gconstpointer data)
{
        static const struct {
                const char *text;
                guint64 bytes;
        } sizes[] = {
                { "0", 0 },
                { "4096", 4096 },
                { "512B", 512 },
                { "32K", 32768 },
                { "32KiB", 32768 },
                { "32KB", 32000 },
                { "3M", 3145728 },
                { "2G", G_GUINT64_CONSTANT(2147483648) },
                { "1TB", G_GUINT64_CONSTANT(1000000000000) },
                { "1T", G_GUINT64_CONSTANT(1099511627776) },
        };
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.img", 1 << 20);
        for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
                g_autofree char *expected =
                        g_strdup_printf("{'offset': <uint64 %" G_GUINT64_FORMAT ">}", sizes[i].bytes);
                g_autoptr(Run) r = run_loopctl(&o, "attach", "--offset", sizes[i].text, img, NULL);

                g_assert_cmpint(r->status, ==, 0);
                assert_options(mock_call(m, "Attach"), 1, expected);
                g_ptr_array_set_size(m->calls, 0);
        }
}

static const char partitions_text[] =
        "[('/dev/loop3p1', uint32 1, uint64 1048576, uint64 104857600, "
        "'c12a7328-f81f-11d2-ba4b-00a0c93ec93b', 'EFI System', 'vfat', 'EFI', '1234-ABCD', ''), "
        "('/dev/loop3p2', uint32 2, uint64 105906176, uint64 966787072, "
        "'0fc63daf-8483-4772-8e79-3d69d8477de4', '', 'ext4', 'My \"Data\"', "
        "'0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1', '/run/media/tester/My \"Data\"')]";

static const char partitions_json[] =
        "[{\"node\": \"/dev/loop3p1\", \"number\": 1, \"offset\": 1048576, \"size\": 104857600, "
        "\"part_type\": \"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\", \"part_name\": \"EFI System\", "
        "\"fstype\": \"vfat\", \"label\": \"EFI\", \"uuid\": \"1234-ABCD\", \"mount_point\": \"\"}, "
        "{\"node\": \"/dev/loop3p2\", \"number\": 2, \"offset\": 105906176, \"size\": 966787072, "
        "\"part_type\": \"0fc63daf-8483-4772-8e79-3d69d8477de4\", \"part_name\": \"\", \"fstype\": \"ext4\", "
        "\"label\": \"My \\\"Data\\\"\", \"uuid\": \"0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1\", "
        "\"mount_point\": \"/run/media/tester/My \\\"Data\\\"\"}]";

void test_attach_json_lists_partitions(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL, *expected = NULL;

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        img = make_file(m->dir, "disk.img", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "attach", "--json", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        expected = g_strdup_printf("{\"device\": \"/dev/loop3\", \"partitions\": %s}\n", partitions_json);
        g_assert_cmpstr(r->out, ==, expected);
        g_assert_cmpstr(call_string(mock_call(m, "Get"), 0), ==, "/org/loopd1/device/loop3");

        /* And it is JSON. */
        g_autoptr(JsonParser) parser = json_parser_new();
        g_assert_true(json_parser_load_from_data(parser, r->out, -1, NULL));
}

void test_attach_human_output(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        g_autofree char *img = make_file(m->dir, "disk.img", 1 << 20);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "disk.img", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "Attached disk.img as /dev/loop3.\n"
                "NAME         NR OFFSET SIZE FSTYPE LABEL     UUID                                 MOUNTPOINT\n"
                "/dev/loop3p1  1     1M 100M vfat   EFI       1234-ABCD\n"
                "/dev/loop3p2  2   101M 922M ext4   My \"Data\" 0b8e5ad4-2b7e-4ac4-a1b5-64b5f6a0e2c1 "
                "/run/media/tester/My \"Data\"\n");
}

void test_attach_daemon_error_is_one_line(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *img = NULL;

        if (!m->address)
                return;
        img = make_file(m->dir, "disk.qcow2", 4096);
        m->fail_method = "Attach";
        m->fail_name = "org.loopd1.Error.UnsupportedFormat";
        m->fail_message = "disk.qcow2 is a qcow2 image,\nnot a raw disk image";
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "disk.qcow2", NULL);

        assert_error_line(r, 1,
                "loopctl: cannot attach disk.qcow2: disk.qcow2 is a qcow2 image,\\x0anot a raw disk image\n");
        g_assert_cmpuint(mock_count(m, "Get"), ==, 0);
        g_assert_cmpuint(mock_count(m, "ListPartitions"), ==, 0);
}

void test_attach_partition_listing_failure_says_device_stays(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        m->fail_method = "Get";
        m->fail_message = "loop3 is not attached";
        g_autoptr(Run) r = run_loopctl(&o, "attach", img, NULL);

        g_autofree char *expected = g_strdup_printf(
                "loopctl: cannot list the partitions of /dev/loop3 (%s stays attached): loop3 is not "
                "attached\n",
                img);
        assert_error_line(r, 1, expected);
}

void test_attach_double_dash_ends_options(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "--read-only", 4096);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "attach", "--", "--read-only", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Attach");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_same_file(c, img);
}

const char devices_text[] =
        "[('/dev/loop0', objectpath '/org/loopd1/device/loop0', '/var/lib/images/debian.img', uint64 0, "
        "uint64 0, uint32 512, false, false, false, uint32 0), "
        "('/dev/loop12', objectpath '/org/loopd1/device/loop12', '/home/u/evil\\nname\\u001b[2J.img', "
        "uint64 1048576, uint64 104857600, uint32 4096, true, true, true, uint32 4242424), "
        "('/dev/loop3', objectpath '/org/loopd1/device/loop3', '/root/x.img', uint64 0, uint64 0, uint32 512, "
        "false, true, true, uint32 0)]";

void test_list_json_shape(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        mock_set_devices(m, devices_text);
        g_autoptr(Run) before = run_loopctl(&o, "--json", "list", NULL);
        g_autoptr(Run) after = run_loopctl(&o, "list", "--json", NULL);

        g_assert_cmpint(before->status, ==, 0);
        g_assert_cmpstr(before->err, ==, "");
        g_assert_cmpstr(before->out, ==,
                "[{\"device\": \"/dev/loop0\", \"backing_file\": \"/var/lib/images/debian.img\", \"offset\": 0, "
                "\"size_limit\": 0, \"sector_size\": 512, \"read_only\": false, \"autoclear\": false, "
                "\"managed\": false, \"owner_uid\": 0}, "
                "{\"device\": \"/dev/loop12\", \"backing_file\": \"/home/u/evil\\nname\\u001b[2J.img\", "
                "\"offset\": 1048576, \"size_limit\": 104857600, \"sector_size\": 4096, \"read_only\": true, "
                "\"autoclear\": true, \"managed\": true, \"owner_uid\": 4242424}, "
                "{\"device\": \"/dev/loop3\", \"backing_file\": \"/root/x.img\", \"offset\": 0, \"size_limit\": 0, "
                "\"sector_size\": 512, \"read_only\": false, \"autoclear\": true, \"managed\": true, "
                "\"owner_uid\": 0}]\n");
        g_assert_cmpstr(after->out, ==, before->out);
        g_assert_cmpint(after->status, ==, 0);
}

void test_list_empty(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) j = run_loopctl(&o, "list", "--json", NULL);
        g_assert_cmpint(j->status, ==, 0);
        g_assert_cmpstr(j->out, ==, "[]\n");

        /* The header even so (loopctl-cli-speak.c: and on a terminal, "no loop devices"). */
        g_autoptr(Run) h = run_loopctl(&o, "list", NULL);
        g_assert_cmpint(h->status, ==, 0);
        g_assert_cmpstr(h->out, ==, "NAME SIZE SIZELIMIT OFFSET SECTOR RO AUTOCLEAR OWNER BACK-FILE\n");
}

void test_list_table_aligned_and_escaped(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        /* devices_text's devices under numbers that are not bound (what the kernel has bound would show its
         * size). */
        g_autoptr(GString) text = g_string_new(devices_text);
        const char *const numbers[][2] = { { "loop0'", "loop99990'" }, { "loop12'", "loop99912'" },
                { "loop3'", "loop9993'" } };
        for (size_t i = 0; i < G_N_ELEMENTS(numbers); i++) {
                g_autofree char *attr = g_strdup_printf(
                        "/sys/block/%.*s/loop/backing_file", (int)strlen(numbers[i][1]) - 1, numbers[i][1]);
                if (g_file_test(attr, G_FILE_TEST_EXISTS)) {
                        g_test_skip_printf("%s exists: someone has that device bound", attr);
                        return;
                }
                g_assert_cmpuint(g_string_replace(text, numbers[i][0], numbers[i][1], 0), ==, 2);
        }
        mock_set_devices(m, text->str);
        g_autoptr(Run) r = run_loopctl(&o, "list", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                /* SIZE is the kernel's, of a device it has bound: none of these. A size limit of 0 is none:
                 * "-". */
                "NAME           SIZE SIZELIMIT OFFSET SECTOR RO AUTOCLEAR OWNER   BACK-FILE\n"
                "/dev/loop99990    -         -     0B    512  0         0 -       /var/lib/images/debian.img\n"
                "/dev/loop99912    -      100M     1M   4096  1         1 4242424 "
                "/home/u/evil\\x0aname\\x1b[2J.img\n"
                "/dev/loop9993     -         -     0B    512  0         1 root    /root/x.img\n");
}

void test_partitions_json_and_device_name(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *expected = NULL;

        if (!m->address)
                return;
        mock_set_partitions(m, partitions_text);
        g_autoptr(Run) r = run_loopctl(&o, "partitions", "loop3", "--json", NULL);

        g_assert_cmpint(r->status, ==, 0);
        expected = g_strdup_printf("%s\n", partitions_json);
        g_assert_cmpstr(r->out, ==, expected);
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop3");
}

void test_partitions_empty(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "--json", "partitions", "/dev/loop7", NULL);
        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==, "[]\n");
        g_assert_cmpstr(call_string(mock_call(m, "ListPartitions"), 0), ==, "/dev/loop7");
}

void test_partitions_error(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "ListPartitions";
        m->fail_name = "org.loopd1.Error.NotFound";
        m->fail_message = "No loop device /dev/loop9";
        g_autoptr(Run) r = run_loopctl(&o, "partitions", "loop9", NULL);
        assert_error_line(
                r, 1, "loopctl: cannot list the partitions of /dev/loop9: No loop device /dev/loop9\n");
}

void test_detach_device_names(Mock *m, gconstpointer data)
{
        static const char *const forms[] = { "loop3", "/dev/loop3" };
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
                g_autoptr(Run) r = run_loopctl(&o, "detach", forms[i], NULL);

                g_assert_cmpint(r->status, ==, 0);
                g_assert_cmpstr(r->out, ==, "");
                MockCall *c = mock_call(m, "Detach");
                g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
                assert_options(c, 1, "@a{sv} {}");
                g_assert_cmpuint(mock_count(m, "ListDevices"), ==, 0);
                g_ptr_array_set_size(m->calls, 0);
        }

        g_autoptr(Run) u = run_loopctl(&o, "detach", "--unmount", "loop3", NULL);
        g_assert_cmpint(u->status, ==, 0);
        assert_options(mock_call(m, "Detach"), 1, "{'unmount': <true>}");
}

void test_detach_image_resolved_to_its_device(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        g_autofree char *text = g_strdup_printf(
                "[('/dev/loop4', objectpath '/org/loopd1/device/loop4', '/elsewhere/disk.img', uint64 0, uint64 0, "
                "uint32 512, false, false, true, uint32 0), "
                "('/dev/loop5', objectpath '/org/loopd1/device/loop5', '%s', uint64 0, uint64 0, uint32 512, "
                "false, false, true, uint32 0)]",
                img);
        mock_set_devices(m, text);
        g_autofree char *sub = g_build_filename(m->dir, "sub", NULL);
        g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
        o.cwd = m->dir;
        /* Through a relative path with a detour: the real path is what the kernel reports. */
        g_autoptr(Run) r = run_loopctl(&o, "detach", "./sub/../disk.img", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        MockCall *c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop5");
        assert_options(c, 1, "@a{sv} {}");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) close = run_loopctl(&o, "close", "disk.img", NULL);
        g_assert_cmpint(close->status, ==, 0);
        c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop5");
        assert_options(c, 1, "{'unmount': <true>}");
}

/* One ListDevices entry, as the mock's text: /dev/loopN backed by backing, 512-byte sectors, owned by uid
 * when managed. */
static char *device_entry(unsigned number, const char *backing, bool read_only, bool managed, guint32 uid)
{
        return g_strdup_printf(
                "('/dev/loop%u', objectpath '/org/loopd1/device/loop%u', '%s', uint64 0, uint64 0, "
                "uint32 512, %s, false, %s, uint32 %u)",
                number, number, backing, read_only ? "true" : "false", managed ? "true" : "false", uid);
}

/* The mock's ListDevices: the entries (device_entry(), taken), NULL-terminated. */
static void mock_set_entries(Mock *m, ...)
{
        g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(g_free);
        va_list ap;
        char *e;

        va_start(ap, m);
        while ((e = va_arg(ap, char *)))
                g_ptr_array_add(entries, e);
        va_end(ap);
        g_ptr_array_add(entries, NULL);
        g_autofree char *joined = g_strjoinv(", ", (char **)entries->pdata);
        g_autofree char *text = g_strdup_printf("[%s]", joined);
        mock_set_devices(m, text);
}

/* Several devices of the caller's own on the image: refused (which one?). Several of nobody's or of other
 * users' (and none of the caller's): refused too, naming them all. */
void test_detach_image_on_several_devices_refused(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        guint32 me = (guint32)geteuid(), other = me + 1000;

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        mock_set_entries(m, device_entry(5, img, false, true, me), device_entry(6, img, true, true, me),
                device_entry(9, img, true, false, 0), NULL);
        g_autoptr(Run) r = run_loopctl(&o, "detach", img, NULL);

        assert_error_line(r, 1, "it is attached to /dev/loop5, /dev/loop6; name the device");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);

        mock_set_entries(
                m, device_entry(5, img, false, true, other), device_entry(9, img, true, false, 0), NULL);
        g_autoptr(Run) others = run_loopctl(&o, "close", img, NULL);

        assert_error_line(others, 1, "it is attached to /dev/loop5, /dev/loop9; name the device");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);
}

/* Closes img, which must reach the mock as a Detach of device with the unmount option. */
static void check_close_detaches(Mock *m, const char *img, const char *device)
{
        RunOptions o = mock_bus(m);
        g_autoptr(Run) r = run_loopctl(&o, "close", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->err, ==, "");
        MockCall *c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, device);
        assert_options(c, 1, "{'unmount': <true>}");
}

/* Another user's device of the same image (a shared ISO) is theirs: close IMAGE closes the caller's own. */
void test_detach_image_prefers_own_device(Mock *m, gconstpointer data)
{
        guint32 me = (guint32)geteuid(), other = me + 1000;

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "shared.iso", 4096);
        mock_set_entries(m, device_entry(5, img, true, true, other), device_entry(6, img, true, true, me),
                device_entry(7, img, true, false, 0), NULL);
        check_close_detaches(m, img, "/dev/loop6");
}

/* An image whose name is not UTF-8: loopd says it with U+FFFD for the byte that is not, and close IMAGE
 * still finds its device. */
void test_detach_image_not_utf8(Mock *m, gconstpointer data)
{
        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "caf\xe9.img", 4096);
        g_autofree char *said = g_strdup_printf("%s/caf\xef\xbf\xbd.img", m->dir);
        /* A number no machine binds: loopctl reads the kernel's own name of it, when there is one. */
        mock_set_entries(m, device_entry(4000, said, false, true, (guint32)geteuid()), NULL);
        check_close_detaches(m, img, "/dev/loop4000");
}

/* "loop3" where an image file is named loop3: the device or the file? The user says which. */
void test_detach_name_of_device_and_file(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "loop3", 4096);
        mock_set_entries(m, device_entry(7, img, false, true, (guint32)geteuid()), NULL);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "close", "loop3", NULL);
        assert_error_line(r, 1, "it names both /dev/loop3 and the file ./loop3; say which");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);

        g_autoptr(Run) file = run_loopctl(&o, "close", "./loop3", NULL);
        g_assert_cmpint(file->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Detach"), 0), ==, "/dev/loop7");
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) device = run_loopctl(&o, "close", "/dev/loop3", NULL);
        g_assert_cmpint(device->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Detach"), 0), ==, "/dev/loop3");
}

void test_detach_image_not_attached(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "disk.img", 4096);
        g_autoptr(Run) r = run_loopctl(&o, "close", img, NULL);

        assert_error_line(r, 1, "it is not attached to a loop device");
        g_assert_cmpuint(mock_count(m, "Detach"), ==, 0);
}

void test_detach_busy_error(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Detach";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "/dev/loop3p1 is mounted on /run/media/tester/DATA";
        g_autoptr(Run) r = run_loopctl(&o, "detach", "loop3", NULL);
        assert_error_line(r, 1,
                "loopctl: cannot detach /dev/loop3: /dev/loop3p1 is mounted on /run/media/tester/DATA\n");
}

void test_mount_option_keys_and_json(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "mount", "--json", "--read-only", "--options", "noatime,ro",
                "--fstype", "vfat", "loop3p1", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(
                r->out, ==, "{\"node\": \"/dev/loop3p1\", \"mount_point\": \"/run/media/tester/DATA\"}\n");
        MockCall *c = mock_call(m, "Mount");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3p1");
        assert_options(c, 1, "{'fstype': <'vfat'>, 'options': <'noatime,ro'>, 'read-only': <true>}");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) h = run_loopctl(&o, "mount", "/dev/loop3", NULL);
        g_assert_cmpint(h->status, ==, 0);
        g_assert_cmpstr(h->out, ==, "Mounted /dev/loop3 at /run/media/tester/DATA.\n");
        assert_options(mock_call(m, "Mount"), 1, "@a{sv} {}");
}

void test_unmount_targets(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *mnt = g_build_filename(m->dir, "mnt", NULL);
        g_assert_cmpint(g_mkdir(mnt, 0755), ==, 0);
        o.cwd = m->dir;

        /* A relative mount point goes as an absolute path: the daemon has another working directory. */
        g_autoptr(Run) rel = run_loopctl(&o, "unmount", "mnt/", NULL);
        g_assert_cmpint(rel->status, ==, 0);
        g_assert_cmpstr(rel->out, ==, "");
        MockCall *c = mock_call(m, "Unmount");
        g_assert_cmpstr(call_string(c, 0), ==, mnt);
        assert_options(c, 1, "@a{sv} {}");

        /* A relative one that cannot be looked at (its FUSE driver died: ENOTCONN; here: gone) goes as an
         * absolute path too, through its directory, and through a detour: the mount point itself is never
         * stat()ed, so a driver that hangs cannot hold loopctl either. */
        g_autofree char *sub = g_build_filename(m->dir, "sub", NULL);
        g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
        g_autofree char *dead = g_build_filename(m->dir, "Dead", NULL);
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) dead_rel = run_loopctl(&o, "unmount", "sub/../Dead", NULL);
        g_assert_cmpint(dead_rel->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, dead);
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) dead_here = run_loopctl(&o, "unmount", "Dead", NULL);
        g_assert_cmpint(dead_here->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, dead);

        /* An absolute path that does not exist here goes unchanged (the daemon decides). */
        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) gone = run_loopctl(&o, "unmount", "/run/media/tester/Gone", NULL);
        g_assert_cmpint(gone->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, "/run/media/tester/Gone");

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) node = run_loopctl(&o, "unmount", "loop3p2", NULL);
        g_assert_cmpint(node->status, ==, 0);
        g_assert_cmpstr(call_string(mock_call(m, "Unmount"), 0), ==, "/dev/loop3p2");

        m->fail_method = "Unmount";
        m->fail_name = "org.loopd1.Error.NotMounted";
        m->fail_message = "/dev/loop3p2 is not mounted";
        g_autoptr(Run) err = run_loopctl(&o, "unmount", "loop3p2", NULL);
        assert_error_line(err, 1, "loopctl: cannot unmount /dev/loop3p2: /dev/loop3p2 is not mounted\n");
}

void test_open_read_only_by_default_and_json(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "boot.iso", 1 << 20);
        g_autoptr(Run) r = run_loopctl(&o, "--json", "open", img, NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "{\"device\": \"/dev/loop3\", \"mounts\": [{\"node\": \"/dev/loop3p1\", \"mount_point\": "
                "\"/run/media/tester/EFI\"}, {\"node\": \"/dev/loop3p2\", \"mount_point\": "
                "\"/run/media/tester/My Data\"}]}\n");
        MockCall *c = mock_call(m, "MountImage");
        g_assert_cmpint(c->fd_accmode, ==, O_RDONLY);
        assert_same_file(c, img);
        assert_options(c, 1, "@a{sv} {}");
}

void test_open_writable_and_sector_size(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "phone.img", 1 << 20);
        o.cwd = m->dir;
        g_autoptr(Run) r = run_loopctl(&o, "open", "phone.img", "--writable", "--sector-size=4096", NULL);

        g_assert_cmpint(r->status, ==, 0);
        g_assert_cmpstr(r->out, ==,
                "Attached phone.img as /dev/loop3.\n"
                "Mounted /dev/loop3p1 at /run/media/tester/EFI.\n"
                "Mounted /dev/loop3p2 at /run/media/tester/My Data.\n");
        MockCall *c = mock_call(m, "MountImage");
        g_assert_cmpint(c->fd_accmode, ==, O_RDWR);
        assert_options(c, 1, "{'writable': <true>, 'sector-size': <uint32 4096>}");
}

void test_open_nothing_to_mount(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autofree char *img = make_file(m->dir, "blank.img", 4096);
        m->fail_method = "MountImage";
        m->fail_name = "org.loopd1.Error.NothingToMount";
        m->fail_message = "no filesystem found";
        g_autoptr(Run) r = run_loopctl(&o, "open", "--json", img, NULL);
        assert_error_line(r, 1, ": no filesystem found\n");
}

void test_close_device_unmounts(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) r = run_loopctl(&o, "close", "/dev/loop3", NULL);

        g_assert_cmpint(r->status, ==, 0);
        MockCall *c = mock_call(m, "Detach");
        g_assert_cmpstr(call_string(c, 0), ==, "/dev/loop3");
        assert_options(c, 1, "{'unmount': <true>}");
}

void test_auth_interactive_flag(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        g_autoptr(Run) ask = run_loopctl(&o, "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(ask->status, ==, 0);
        g_assert_true(mock_call(m, "Unmount")->interactive);

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) before = run_loopctl(&o, "--no-ask-password", "unmount", "/run/media/tester/X", NULL);
        g_assert_cmpint(before->status, ==, 0);
        g_assert_false(mock_call(m, "Unmount")->interactive);

        g_ptr_array_set_size(m->calls, 0);
        g_autoptr(Run) after = run_loopctl(&o, "detach", "loop3", "--no-ask-password", NULL);
        g_assert_cmpint(after->status, ==, 0);
        g_assert_false(mock_call(m, "Detach")->interactive);
}

void test_auth_error_passed_through(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);

        if (!m->address)
                return;
        m->fail_method = "Mount";
        m->fail_name = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
        m->fail_message = "Interactive authentication required.";
        g_autoptr(Run) r = run_loopctl(&o, "--no-ask-password", "mount", "loop3p1", NULL);
        assert_error_line(
                r, 1, "loopctl: cannot mount /dev/loop3p1: Interactive authentication required.\n");
}

/* umount.loopd's exit status, as umount(8) reads it: 32 when loopd refused, 2 when loopd never answered
 * (here: it went away before it did, and the bus said NoReply), each with one line on stderr. */
/* umount.loopd's answer: status, and one line on stderr that starts with prefix and has what. */
static void check_helper_line(const Run *r, int status, const char *prefix, const char *what)
{
        g_assert_cmpint(r->status, ==, status);
        g_assert_true(g_str_has_prefix(r->err, prefix));
        g_assert_nonnull(strstr(r->err, what));
        g_assert_true(g_str_has_suffix(r->err, "\n") && !strchr(r->err, '\n')[1]); /* one line */
}

void test_umount_helper_exit_status(Mock *m, gconstpointer data)
{
        RunOptions o = mock_bus(m);
        g_autofree char *helper =
                g_build_filename(g_getenv("LOOPD_BUILD_ROOT") ?: ".", "umount", "umount.loopd", NULL);
        const char *target = "/run/media/tester/DATA", *prefix = "umount.loopd: /run/media/tester/DATA: ";

        if (!m->address)
                return;
        o.binary = helper;
        m->fail_method = "Unmount";
        m->fail_name = "org.loopd1.Error.Busy";
        m->fail_message = "it is in use";
        g_autoptr(Run) refused = run_loopctl(&o, target, NULL);
        check_helper_line(refused, 32, prefix, "it is in use");

        m->fail_method = NULL;
        m->vanish_method = "Unmount";
        g_autoptr(Run) gone = run_loopctl(&o, target, NULL);
        check_helper_line(gone, 2, prefix, "");
}
