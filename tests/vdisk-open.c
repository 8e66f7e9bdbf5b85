/* vdisk-open.c: opening virtual-disk images as the user: `loopctl open` of an image qemu-img made from the
 * test disk mounts the same filesystems with the same files, the guest disk is byte for byte the raw disk,
 * the device names the image and its format, and `loopctl close` leaves nothing; without --writable (or
 * read-only: false) the device cannot be written. */
#include <grp.h>

#include "test-vdisk.h"

/* `loopctl open` of the test disk converted to the case's format, as the unprivileged user: a loop device on
 * an export served by a sandboxed qemu-storage-daemon (none for raw) of the guest disk's size, the guest
 * disk byte for byte the raw disk, both filesystems mounted read-only with the known files; ImageFormat,
 * BackingFile, ListDevices and `loopctl list` name the image and its format; `loopctl close IMAGE` leaves no
 * device, mount, export or process. */
void test_open_same_files(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        const char *format = v->c->format;
        bool raw = g_str_equal(format, "raw");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *name = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL, *qdevice = NULL, *qdisk = NULL;
        guint64 size;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        disk = make_disk(h, "disk.img");
        name = g_strconcat("image.", format, NULL);
        image = convert_disk(h, disk, format, name);
        size = virtual_size(image, format);
        g_test_message("%s: %s image of a %" G_GUINT64_FORMAT "-byte guest disk", image, format, size);
        g_assert_cmpuint(size, >=, DISK_SIZE);

        device = open_image(h, HARNESS_USER_A, image, false, &mp1, &mp2);
        REQUIRE_NONNULL(device);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        qdevice = g_shell_quote(device);
        qdisk = g_shell_quote(disk);

        /* The loop device and what serves it. */
        if (raw) {
                g_autofree char *backing = loop_backing(device);
                g_autoptr(GArray) servers = vdisk_servers(h);
                g_assert_cmpstr(backing, ==, image);
                g_assert_cmpuint(servers->len, ==, 0);
        } else {
                g_autofree char *export = check_export(h, device);
                pid_t server = server_of(h, image);
                if (server)
                        check_sandboxed(server, harness_uid_of(HARNESS_USER_A));
        }
        g_assert_cmpuint(loop_size(device), ==, size);
        g_assert_cmpint(loop_read_only(device), ==, 1);
        /* The guest disk, through the kernel: the raw disk's bytes (vpc rounds the size up to its geometry).
         */
        g_assert_cmpint(
                test_sh_status(NULL, "cmp -n %" G_GUINT64_FORMAT " %s %s", DISK_SIZE, qdevice, qdisk), ==,
                0);

        /* The filesystems, as the user sees them. */
        check_mounted(h, p1, mp1, "ext4", true);
        check_mounted(h, p2, mp2, NULL, true);
        check_files(h, HARNESS_USER_A, mp1, ext4_files);
        check_files(h, HARNESS_USER_A, mp2, vfat_files);
        check_named(h, a, HARNESS_USER_A, device, image, format);

        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_nothing_left(h, device);
}

/* Whether root can write to device: the open or the write must fail on a read-only device. */
static bool device_writable(const char *device)
{
        guint8 sector[512] = { 0 };
        int fd = open(device, O_WRONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0) {
                g_test_message("open(%s, O_WRONLY): %s", device, g_strerror(errno));
                return false;
        }
        /* The free MiB at the end: even if this went through, no filesystem would be harmed. */
        n = pwrite(fd, sector, sizeof(sector), (off_t)FREE_OFFSET);
        if (n < 0)
                g_test_message("pwrite(%s): %s", device, g_strerror(errno));
        close(fd);
        return n == (ssize_t)sizeof(sector);
}

/* `loopctl open` without --writable of an image the user owns (and could write): the device and the mounts
 * are read-only, neither root nor the user can write, and the image file's bytes stay as they were. */
void test_open_read_only_by_default(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autofree char *before = NULL, *after = NULL, *note = NULL, *p1 = NULL;
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        give_to(image, HARNESS_USER_A);
        before = test_sha256_of_file(image);

        device = open_image(h, HARNESS_USER_A, image, false, &mp1, &mp2);
        REQUIRE_NONNULL(device);
        p1 = g_strconcat(device, "p1", NULL);
        g_free(check_export(h, device));
        g_assert_cmpint(loop_read_only(device), ==, 1);
        check_mounted(h, p1, mp1, "ext4", true);
        g_assert_false(device_writable(device));
        if (mp1) {
                const char *argv[] = { "sh", "-c", "printf 'not written' > \"$1\"", "sh", NULL, NULL };
                note = g_build_filename(mp1, "shared", "note.txt", NULL);
                argv[4] = note;
                g_assert_cmpint(harness_spawn_as(h, HARNESS_USER_A, &run, argv), !=, 0);
                g_assert_false(g_file_test(note, G_FILE_TEST_EXISTS));
        }

        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_nothing_left(h, device);
        after = test_sha256_of_file(image);
        g_assert_cmpstr(after, ==, before);
}

/* `loopctl open` of an open virtual disk, more times than one user may have calls waiting: each one gives
 * the same device and mounts back (no second export), and none keeps a call of the user's waiting in loopd
 * (each answered open used to: the user was refused with LimitExceeded from then on); `loopctl close` then
 * leaves nothing. */
void test_open_again_many_times(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        g_autofree char *disk = NULL, *image = NULL, *device = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autoptr(GArray) servers = NULL;

        harness_allow_all(h);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        give_to(image, HARNESS_USER_A);
        device = open_image(h, HARNESS_USER_A, image, false, &mp1, &mp2);
        REQUIRE_NONNULL(device);

        for (guint i = 0; i <= MAX_PENDING_PER_USER; i++) {
                g_autofree char *again = NULL, *again1 = NULL, *again2 = NULL;

                again = open_image(h, HARNESS_USER_A, image, false, &again1, &again2);
                if (!again) {
                        harness_fail("open %u of the open image failed", i + 2);
                        break;
                }
                g_assert_cmpstr(again, ==, device);
                g_assert_cmpstr(again1, ==, mp1);
                g_assert_cmpstr(again2, ==, mp2);
        }
        servers = vdisk_servers(h);
        g_assert_cmpuint(servers->len, ==, 1);

        harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        check_nothing_left(h, device);
}

/* Attaches image as how says, checks the device's read-only flag, detaches it and checks nothing is left. */
static void attach_check_ro(Harness *h, GDBusConnection *a, const char *image, const char *how, int want_ro)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        g_test_message("attach %s: %s", image, how);
        if (g_str_equal(how, "dbus-rw-fd-no-options"))
                (void)harness_attach_path(a, image, O_RDWR, NULL, &device, &error);
        else if (g_str_equal(how, "dbus-rw-fd-read-only-false"))
                (void)harness_attach_path(a, image, O_RDWR, vdisk_read_write_options(), &device, &error);
        else {
                g_autoptr(JsonNode) out = g_str_equal(how, "loopctl-read-only")
                        ? harness_loopctl_json(h, HARNESS_USER_A, "attach", "--read-only", image, NULL)
                        : harness_loopctl_json(h, HARNESS_USER_A, "attach", image, NULL);
                device = g_strdup(json_member_string(out, "device"));
        }
        harness_assert_no_error(error);
        if (!device) {
                harness_fail("attach %s (%s) gave no device", image, how);
                return;
        }
        g_free(check_export(h, device));
        if (loop_read_only(device) != want_ro)
                harness_fail("attach %s: %s is %s, expected %s", how, device,
                        loop_read_only(device) ? "read-only" : "writable",
                        want_ro ? "read-only" : "writable");
        else if (want_ro && device_writable(device))
                harness_fail("attach %s: root wrote to the read-only %s", how, device);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_nothing_left(h, device);
}

/* The export (and so the device) is writable only when read-write was asked outright (read-only: false),
 * and only with a qemu-storage-daemon whose exports keep written data (10.0 or later); else refused. */
void test_attach_read_only_unless_asked(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *image = NULL, *before = NULL, *after = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "image.qcow2");
        give_to(image, HARNESS_USER_A);
        before = test_sha256_of_file(image);

        /* Unlike a raw image's, a virtual disk's device is read-only unless read-write was asked outright:
         * a read-write fd alone is not enough (loopctl attach opens the image read-write by default). */
        attach_check_ro(h, a, image, "loopctl-read-only", 1);
        attach_check_ro(h, a, image, "dbus-rw-fd-no-options", 1);
        attach_check_ro(h, a, image, "loopctl", 1);
        after = test_sha256_of_file(image);
        g_assert_cmpstr(after, ==, before);
        if (qsd_writes_safe())
                attach_check_ro(h, a, image, "dbus-rw-fd-read-only-false", 0);
        else {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_assert_false(
                        harness_attach_path(a, image, O_RDWR, vdisk_read_write_options(), &device, &error));
                check_writable_refused(h, error, image);
        }
}

/* The group the vdisk suite gives HARNESS_USER_A as a supplementary one (created once, like the test users):
 * its gid, 0 when it could not be made. */
static gid_t test_group(void)
{
        const char *name = "loopd-test-g";
        g_autofree char *out = NULL;
        struct group *g;

        if (test_sh_status(&out,
                    "(getent group %s >/dev/null || groupadd --system %s) && gpasswd -a %s %s >/dev/null",
                    name, name, HARNESS_USER_A, name) != 0) {
                g_test_fail_printf("cannot make the group %s with %s in it: %s", name, HARNESS_USER_A, out);
                return 0;
        }
        g = getgrnam(name);
        return g ? g->gr_gid : 0;
}

/* A qcow2 image the user may read only through a supplementary group (0640, root and that group's): Attach
 * of an fd of it serves it. qemu-storage-daemon runs as the user and reopens the image by its /proc/self/fd
 * path, which the kernel allows only with that group: it gets it, and no other. */
void test_attach_through_group(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *disk = NULL, *image = NULL, *device = NULL;
        g_autoptr(GError) error = NULL;
        gid_t group;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        group = test_group();
        if (group == 0)
                return;
        disk = make_disk(h, "disk.img");
        image = convert_disk(h, disk, "qcow2", "group.qcow2");
        g_assert_cmpint(chown(image, 0, group), ==, 0);
        g_assert_cmpint(chmod(image, 0640), ==, 0);

        g_assert_true(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);
        g_free(check_export(h, device));
        /* That group and no other. */
        pid_t server = server_of(h, image);
        if (server) {
                g_autofree char *groups = test_proc_status(server, "Groups");
                g_autofree char *want = g_strdup_printf("%u", (unsigned)group);
                g_assert_cmpstr(g_strstrip(groups), ==, want);
        }
        g_assert_cmpuint(loop_size(device), >=, DISK_SIZE);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_nothing_left(h, device);
}
