/* vdisk-write.c: writes through a writable export land in the image: bytes written to the loop device of an
 * image attached read-write, and a file the user writes on a filesystem opened --writable, are in the guest
 * disk qemu-img reads from the image after the device is gone; nothing else of the guest disk changed. */
#include "test-vdisk.h"

/* Reads n bytes at offset of path. */
static guint8 *read_at(const char *path, guint64 offset, gsize n)
{
        guint8 *buf = g_malloc0(n);
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, buf, n, (off_t)offset), ==, (ssize_t)n);
        close(fd);
        return buf;
}

/* Checks that the qemu-storage-daemon that served the image is gone once the call that ended the device
 * returned: until it exits, the image file may lack what it has not flushed yet. */
static void check_server_gone(pid_t server, const char *call)
{
        if (server > 0 && process_running(server))
                harness_fail("qemu-storage-daemon %d still runs after %s returned", (int)server, call);
}

/* The test disk in the case's format, attached read-write by the user (Attach with read-only: false, or
 * `loopctl attach`, which asks for it): a writable device on an export; 64 KiB root writes to the free
 * space after partition 2 are, after Detach, in the guest disk qemu-img reads from the image, and the rest
 * of the guest disk is the raw disk's. */
void test_attach_read_write_lands_in_image(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        const char *format = v->c->format, *how = v->c->data;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *name = NULL, *image = NULL, *device = NULL, *guest = NULL;
        g_autofree char *qdisk = NULL, *qguest = NULL, *qimage = NULL;
        g_autofree guint8 *bytes = pattern(4711, FREE_SIZE), *back = NULL;
        g_autoptr(GError) error = NULL;
        pid_t server;
        int fd;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        disk = make_disk(h, "disk.img");
        name = g_strconcat("image.", format, NULL);
        image = convert_disk(h, disk, format, name);
        give_to(image, HARNESS_USER_A);

        if (!qsd_writes_safe()) {
                g_assert_false(
                        harness_attach_path(a, image, O_RDWR, vdisk_read_write_options(), &device, &error));
                check_writable_refused(h, error, image);
                return;
        }
        if (g_str_equal(how, "dbus")) {
                g_assert_true(
                        harness_attach_path(a, image, O_RDWR, vdisk_read_write_options(), &device, &error));
                harness_assert_no_error(error);
        } else {
                g_autoptr(JsonNode) out = harness_loopctl_json(h, HARNESS_USER_A, "attach", image, NULL);
                device = g_strdup(json_member_string(out, "device"));
        }
        REQUIRE_NONNULL(device);
        g_free(check_export(h, device));
        g_assert_cmpint(loop_read_only(device), ==, 0);
        check_image_format(a, device, format);
        server = server_of(h, image);

        fd = open(device, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        if (fd >= 0) {
                g_assert_cmpint(pwrite(fd, bytes, FREE_SIZE, (off_t)FREE_OFFSET), ==, (ssize_t)FREE_SIZE);
                g_assert_cmpint(fsync(fd), ==, 0);
                close(fd);
        }

        if (g_str_equal(how, "dbus")) {
                g_assert_true(harness_detach(a, device, NULL, &error));
                harness_assert_no_error(error);
        } else
                harness_loopctl_ok(h, HARNESS_USER_A, "detach", device, NULL);
        check_server_gone(server, "Detach");
        check_nothing_left(h, device);

        qimage = g_shell_quote(image);
        if (g_str_equal(format, "qcow2"))
                g_assert_cmpint(test_sh_status(NULL, "qemu-img check -q -f qcow2 %s", qimage), ==, 0);
        guest = guest_bytes(h, image, format, "guest.raw");
        back = read_at(guest, FREE_OFFSET, FREE_SIZE);
        if (memcmp(back, bytes, FREE_SIZE) != 0)
                harness_fail("the guest disk in %s lacks the bytes written at %" G_GUINT64_FORMAT, image,
                        FREE_OFFSET);
        qdisk = g_shell_quote(disk);
        qguest = g_shell_quote(guest);
        g_assert_cmpint(
                test_sh_status(NULL, "cmp -n %" G_GUINT64_FORMAT " %s %s", FREE_OFFSET, qdisk, qguest), ==,
                0);
        g_assert_cmpint(test_sh_status(NULL, "cmp -i %" G_GUINT64_FORMAT " -n %" G_GUINT64_FORMAT " %s %s",
                                FREE_OFFSET + FREE_SIZE, DISK_SIZE - FREE_OFFSET - FREE_SIZE, qdisk, qguest),
                ==, 0);
}

/* `loopctl open --writable` of a qcow2 the user owns: the device and the ext4 mount are writable; a file the
 * user writes there is, after `loopctl close`, in the ext4 filesystem of the guest disk qemu-img reads from
 * the image (debugfs reads it), and that filesystem is clean (e2fsck). */
void test_open_writable_file_lands_in_image(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        static const char text[] = "written through the export\n";
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL, *p1 = NULL;
        g_autofree char *note = NULL, *guest = NULL, *fs = NULL, *qguest = NULL, *qfs = NULL, *got = NULL;
        g_auto(HarnessRun) run = { 0 };
        pid_t server;

        harness_allow_all(h);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        give_to(image, HARNESS_USER_A);

        if (!qsd_writes_safe()) {
                (void)harness_loopctl(h, HARNESS_USER_A, &run, "open", "--writable", image, NULL);
                harness_check_loopctl_refused("loopctl open --writable", &run, "read-only");
                check_nothing_left(h, NULL);
                return;
        }
        device = open_image(h, HARNESS_USER_A, image, true, &mp1, &mp2);
        REQUIRE_NONNULL(device);
        p1 = g_strconcat(device, "p1", NULL);
        g_free(check_export(h, device));
        g_assert_cmpint(loop_read_only(device), ==, 0);
        check_mounted(h, p1, mp1, "ext4", false);
        server = server_of(h, image);
        REQUIRE_NONNULL(mp1);
        note = g_build_filename(mp1, "shared", "note.txt", NULL);
        {
                const char *argv[] = { "sh", "-c", "printf '%s' \"$1\" > \"$2\" && sync -f \"$2\"", "sh",
                        text, note, NULL };
                g_assert_cmpint(harness_spawn_as(h, HARNESS_USER_A, &run, argv), ==, 0);
        }

        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_server_gone(server, "loopctl close");
        check_nothing_left(h, device);

        guest = guest_bytes(h, image, "qcow2", "guest.raw");
        fs = harness_image_path(h, "guest-p1.fs");
        qguest = g_shell_quote(guest);
        qfs = g_shell_quote(fs);
        g_free(test_sh("dd if=%s of=%s bs=1M skip=%" G_GUINT64_FORMAT " count=%" G_GUINT64_FORMAT
                       " status=none",
                qguest, qfs, EXT4_OFFSET / MiB, EXT4_SIZE / MiB));
        g_assert_cmpint(
                test_sh_status(&got, "debugfs -R 'cat /shared/note.txt' %s 2>/dev/null", qfs), ==, 0);
        g_assert_cmpstr(got, ==, text);
        g_assert_cmpint(test_sh_status(NULL, "e2fsck -fn %s >/dev/null", qfs), ==, 0);
}
