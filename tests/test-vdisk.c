/* test-vdisk.c: virtual-disk images (qcow2, vmdk, vdi, vhdx, vpc) through loopd's qemu-storage-daemon
 * exports, as the unprivileged test user opens them: the same filesystems as the raw disk they were made
 * from, writes that reach the image only when asked for, refusals of images that refer to other files, and
 * a crashed server cleaned up. This file: the fixture, the test disk, talking to loopd, main();
 * vdisk-oracles.c what the tests ask instead of loopd; vdisk-open.c, vdisk-write.c, vdisk-crash.c and
 * vdisk-refusals.c the tests. */
#include <signal.h>
#include <sys/pidfd.h>

#include "test-vdisk.h"

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

static const VdiskCase default_case = { .format = "qcow2" };

static bool have_tools(void)
{
        static const char *const tools[] = { "qemu-img", "mkfs.ext4", "mkfs.vfat", "mcopy", "debugfs",
                "e2fsck", "sfdisk", "cmp", "sha256sum", NULL };

        for (const char *const *t = tools; *t; t++) {
                g_autofree char *path = g_find_program_in_path(*t);
                if (!path) {
                        g_autofree char *why = g_strdup_printf("%s is not installed", *t);
                        test_cannot_run(why);
                        return false;
                }
        }
        if (access(QSD_PATH, X_OK) < 0) {
                test_cannot_run(QSD_PATH " is not installed (Debian: qemu-system-common)");
                return false;
        }
        return true;
}

void vdisk_setup(Vdisk *v, gconstpointer data)
{
        memset(v, 0, sizeof(*v));
        v->c = data ? data : &default_case;
        v->options.loopd_args = v->c->loopd_args;
        v->options.data = v->c;
        harness_setup(&v->h, &v->options);
        if (v->h.ready && !have_tools())
                v->h.ready = false;
}

void vdisk_teardown(Vdisk *v, gconstpointer data)
{
        Harness *h = &v->h;

        /* A passing test must have left nothing; say so before cleaning up after it (the harness kills
         * the exports a failed test left). */
        if (h->priv && h->tmpdir && h->ready && !g_test_failed())
                check_nothing_left(h, NULL);
        harness_teardown(h, data);
}

GVariant *vdisk_read_write_options(void)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(FALSE));
        return g_variant_builder_end(&b);
}

/* Whether the installed qemu-storage-daemon is one whose writable exports loopd serves (10.0 or later: 7.2
 * can lose written data, and loopd refuses writable virtual disks with it). */
bool qsd_writes_safe(void)
{
        g_autofree char *out = NULL;
        int major = 0;
        const char *v;

        if (test_sh_status(&out, "qemu-storage-daemon --version") != 0 || !(v = strstr(out, "version ")))
                return false;
        return sscanf(v, "version %d", &major) == 1 && major >= 10;
}

/* A writable virtual disk asked of a qemu-storage-daemon older than 10.0: refused (UnsupportedFormat, saying
 * why and what to do), nothing left. */
void check_writable_refused(Harness *h, GError *error, const char *image)
{
        g_test_message("writable %s: %s", image, error ? error->message : "(no error)");
        if (harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FORMAT, NULL) &&
                (!strstr(error->message, "read-only") || !strstr(error->message, "10.0")))
                harness_fail("the refusal does not say to open it read-only, or why: %s", error->message);
        check_nothing_left(h, NULL);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The test disk */

const DiskFile ext4_files[] = {
        { .path = "hello.txt", .text = "hello from ext4\n" },
        { .path = "sub/data.bin", .seed = 17, .size = 300000 },
        { 0 },
};

const DiskFile vfat_files[] = {
        { .path = "README.TXT", .text = "hello from vfat\n" },
        { .path = "DATA.BIN", .seed = 23, .size = 100000 },
        { 0 },
};

guint8 *pattern(guint32 seed, gsize size)
{
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        guint8 *p = g_malloc(size);

        for (gsize i = 0; i < size; i++)
                p[i] = (guint8)g_rand_int_range(rand, 0, 256);
        return p;
}

GBytes *disk_file_contents(const DiskFile *f)
{
        if (f->text)
                return g_bytes_new_static(f->text, strlen(f->text));
        return g_bytes_new_take(pattern(f->seed, f->size), f->size);
}

static void write_tree(const char *dir, const DiskFile *files)
{
        for (const DiskFile *f = files; f->path; f++) {
                g_autofree char *path = g_build_filename(dir, f->path, NULL);
                g_autofree char *parent = g_path_get_dirname(path);
                g_autoptr(GBytes) b = disk_file_contents(f);
                gsize n = 0;
                const char *d = g_bytes_get_data(b, &n);

                g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
                g_assert_true(g_file_set_contents(path, d, (gssize)n, NULL));
                g_assert_cmpint(chmod(path, 0644), ==, 0);
        }
}

void give_to(const char *path, const char *user)
{
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
}

char *make_disk(Harness *h, const char *name)
{
        char *path = harness_image_path(h, name);
        g_autofree char *src = g_build_filename(h->tmpdir, "disk-src-XXXXXX", NULL);
        g_autofree char *ext = NULL, *fat = NULL, *shared = NULL, *fs = NULL;
        g_autofree char *qpath = g_shell_quote(path), *qext = NULL, *qfs = NULL, *qsrc = NULL;

        g_assert_nonnull(g_mkdtemp(src));
        ext = g_build_filename(src, "ext", NULL);
        fat = g_build_filename(src, "fat", NULL);
        shared = g_build_filename(ext, "shared", NULL);
        fs = g_build_filename(src, "ext4.fs", NULL);
        qext = g_shell_quote(ext);
        qfs = g_shell_quote(fs);
        qsrc = g_shell_quote(src);
        write_tree(ext, ext4_files);
        write_tree(fat, vfat_files);
        /* Where the user may write on the ext4 filesystem (mke2fs -d keeps owners). */
        g_assert_cmpint(g_mkdir(shared, 0755), ==, 0);
        give_to(shared, HARNESS_USER_A);

        image_create(path, DISK_SIZE);
        image_sfdisk(path,
                "label: gpt\n"
                "start=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=linux\n"
                "start=67584, size=61440, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\n",
                0);
        image_create(fs, EXT4_SIZE);
        g_free(test_sh("set -e; mkfs.ext4 -q -F -E nodiscard -L VDEXT -d %s %s; "
                       "dd if=%s of=%s bs=1M seek=%" G_GUINT64_FORMAT " conv=notrunc,sparse status=none",
                qext, qfs, qfs, qpath, EXT4_OFFSET / MiB));
        g_free(image_mkfs_at(path, VFAT_OFFSET, VFAT_SIZE, "vfat", "VDFAT"));
        for (const DiskFile *f = vfat_files; f->path; f++) {
                g_autofree char *file = g_build_filename(fat, f->path, NULL), *qfile = g_shell_quote(file);
                g_free(test_sh(
                        "mcopy -i %s@@%" G_GUINT64_FORMAT " %s ::/%s", qpath, VFAT_OFFSET, qfile, f->path));
        }
        g_free(test_sh("rm -rf -- %s", qsrc));
        return path;
}

char *convert_disk(Harness *h, const char *raw, const char *format, const char *name)
{
        char *path = harness_image_path(h, name);
        g_autofree char *qraw = g_shell_quote(raw), *qpath = g_shell_quote(path);

        if (g_str_equal(format, "raw"))
                g_free(test_sh("cp --sparse=always -- %s %s", qraw, qpath));
        else
                g_free(test_sh("qemu-img convert -q -f raw -O %s %s %s", format, qraw, qpath));
        g_assert_cmpint(chmod(path, 0644), ==, 0);
        return path;
}

guint64 virtual_size(const char *image, const char *format)
{
        g_autofree char *q = g_shell_quote(image);
        g_autofree char *out = test_sh("qemu-img info --output=json --force-share -f %s %s", format, q);
        g_autoptr(JsonParser) parser = json_parser_new();

        g_assert_true(json_parser_load_from_data(parser, out, -1, NULL));
        return (guint64)json_object_get_int_member(
                json_node_get_object(json_parser_get_root(parser)), "virtual-size");
}

char *guest_bytes(Harness *h, const char *image, const char *format, const char *name)
{
        char *path = harness_image_path(h, name);
        g_autofree char *qimage = g_shell_quote(image), *qpath = g_shell_quote(path);

        g_free(test_sh("qemu-img convert -q -f %s -O raw %s %s", format, qimage, qpath));
        return path;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Talking to loopd */

const char *json_member_string(JsonNode *node, const char *member)
{
        JsonObject *o = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;

        if (!o || !json_object_has_member(o, member)) {
                harness_fail("JSON output has no \"%s\"", member);
                return NULL;
        }
        return json_object_get_string_member(o, member);
}

char *open_image(
        Harness *h, const char *user, const char *image, bool writable, char **ret_mp1, char **ret_mp2)
{
        g_autoptr(JsonNode) out = writable ? harness_loopctl_json(h, user, "open", "--writable", image, NULL)
                                           : harness_loopctl_json(h, user, "open", image, NULL);
        g_autofree char *p1 = NULL, *p2 = NULL;
        const char *device = json_member_string(out, "device");
        JsonObject *o;
        JsonArray *mounts;

        *ret_mp1 = *ret_mp2 = NULL;
        if (!device)
                return NULL;
        o = json_node_get_object(out);
        mounts = json_object_has_member(o, "mounts") ? json_object_get_array_member(o, "mounts") : NULL;
        if (!mounts || json_array_get_length(mounts) != 2)
                harness_fail("loopctl open %s did not mount two filesystems", image);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        for (guint i = 0; mounts && i < json_array_get_length(mounts); i++) {
                JsonObject *m = json_array_get_object_element(mounts, i);
                const char *node = json_object_get_string_member_with_default(m, "node", "");
                const char *mp = json_object_get_string_member_with_default(m, "mount_point", "");

                g_test_message("%s: %s on %s", image, node, mp);
                if (g_str_equal(node, p1))
                        *ret_mp1 = g_strdup(mp);
                else if (g_str_equal(node, p2))
                        *ret_mp2 = g_strdup(mp);
        }
        return g_strdup(device);
}

static char *object_of(const char *device)
{
        g_autofree char *name = g_path_get_basename(device);

        return g_strconcat(LOOPD_DEVICE_PATH_PREFIX, "/", name, NULL);
}

GVariant *device_property(GDBusConnection *conn, const char *device, const char *name)
{
        g_autofree char *object = object_of(device);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply =
                g_dbus_connection_call_sync(conn, LOOPD_BUS_NAME, object, "org.freedesktop.DBus.Properties",
                        "Get", g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, name), G_VARIANT_TYPE("(v)"),
                        G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        GVariant *value = NULL;

        if (!reply) {
                harness_fail("cannot read %s of %s: %s", name, object, error->message);
                return NULL;
        }
        g_variant_get(reply, "(v)", &value);
        return value;
}

char *listed_backing_file(GDBusConnection *conn, const char *device)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) devices = harness_list_devices(conn, &error);
        GVariantIter it;
        const char *dev, *backing;

        if (!devices) {
                harness_fail("ListDevices: %s", error->message);
                return NULL;
        }
        g_variant_iter_init(&it, devices);
        while (g_variant_iter_next(
                &it, "(&s&o&sttubbbu)", &dev, NULL, &backing, NULL, NULL, NULL, NULL, NULL, NULL, NULL))
                if (g_str_equal(dev, device))
                        return g_strdup(backing);
        return NULL;
}

JsonObject *loopctl_list_entry(Harness *h, const char *user, const char *device)
{
        g_autoptr(JsonNode) out = harness_loopctl_json(h, user, "list", NULL);
        JsonArray *a = out && JSON_NODE_HOLDS_ARRAY(out) ? json_node_get_array(out) : NULL;

        if (!a) {
                harness_fail("loopctl --json list did not print an array");
                return NULL;
        }
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (g_strcmp0(json_object_get_string_member_with_default(o, "device", ""), device) == 0)
                        return json_object_ref(o);
        }
        return NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The tests */

static const VdiskCase open_raw = { .format = "raw" };
static const VdiskCase open_qcow2 = { .format = "qcow2" };
static const VdiskCase restart_detached = { .format = "qcow2", .data = "detached" };
static const VdiskCase open_vmdk = { .format = "vmdk" };
static const VdiskCase open_vdi = { .format = "vdi" };
static const VdiskCase open_vhdx = { .format = "vhdx" };
static const VdiskCase open_vpc = { .format = "vpc" };

static const VdiskCase write_dbus_qcow2 = { .format = "qcow2", .data = "dbus" };
static const VdiskCase write_loopctl_qcow2 = { .format = "qcow2", .data = "loopctl" };
static const VdiskCase write_dbus_vmdk = { .format = "vmdk", .data = "dbus" };
static const VdiskCase write_dbus_vdi = { .format = "vdi", .data = "dbus" };
static const VdiskCase write_dbus_vhdx = { .format = "vhdx", .data = "dbus" };
static const VdiskCase write_dbus_vpc = { .format = "vpc", .data = "dbus" };

static const char *const qsd_false[] = { "--qemu-storage-daemon=/usr/bin/false", NULL };
static const char *const qsd_true[] = { "--qemu-storage-daemon=/usr/bin/true", NULL };
static const VdiskCase stand_in_false = { .format = "qcow2", .loopd_args = qsd_false };
static const char *const pending_2[] = { "--max-pending-per-user", G_STRINGIFY(MAX_PENDING_PER_USER), NULL };
static const VdiskCase open_qcow2_pending_2 = { .format = "qcow2", .loopd_args = pending_2 };
static const VdiskCase stand_in_true = { .format = "qcow2", .loopd_args = qsd_true };

#define REFUSAL(name) static const VdiskCase case_##name = { .data = &refuse_##name }
REFUSAL(qcow2_backing);
REFUSAL(qcow2_data_file);
REFUSAL(vmdk_root_only_extent);
REFUSAL(vmdk_split_extents);
REFUSAL(vmdk_parent);
REFUSAL(vdi_differencing);
REFUSAL(vpc_differencing);
REFUSAL(qcow2_encrypted);
REFUSAL(qcow2_truncated);
REFUSAL(qcow2_corrupt);
REFUSAL(qcow2_16_eib);

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);

        vdisk_add("/loopd/vdisk/open/raw-mounts-the-known-files", test_open_same_files, &open_raw);
        vdisk_add("/loopd/vdisk/open/qcow2-mounts-the-raw-disks-files", test_open_same_files, &open_qcow2);
        vdisk_add("/loopd/vdisk/open/vmdk-mounts-the-raw-disks-files", test_open_same_files, &open_vmdk);
        vdisk_add("/loopd/vdisk/open/vdi-mounts-the-raw-disks-files", test_open_same_files, &open_vdi);
        vdisk_add("/loopd/vdisk/open/vhdx-mounts-the-raw-disks-files", test_open_same_files, &open_vhdx);
        vdisk_add("/loopd/vdisk/open/vpc-mounts-the-raw-disks-files", test_open_same_files, &open_vpc);
        vdisk_add("/loopd/vdisk/open/read-only-by-default", test_open_read_only_by_default, &open_qcow2);
        vdisk_add("/loopd/vdisk/open/again-many-times-keeps-no-call", test_open_again_many_times,
                &open_qcow2_pending_2);
        vdisk_add("/loopd/vdisk/attach/readable-through-a-group", test_attach_through_group, &open_qcow2);
        vdisk_add("/loopd/vdisk/attach/read-only-unless-read-write-asked",
                test_attach_read_only_unless_asked, &open_qcow2);

        vdisk_add("/loopd/vdisk/write/attach-read-write-bytes-land-in-qcow2",
                test_attach_read_write_lands_in_image, &write_dbus_qcow2);
        vdisk_add("/loopd/vdisk/write/loopctl-attach-bytes-land-in-qcow2",
                test_attach_read_write_lands_in_image, &write_loopctl_qcow2);
        vdisk_add("/loopd/vdisk/write/attach-read-write-bytes-land-in-vmdk",
                test_attach_read_write_lands_in_image, &write_dbus_vmdk);
        vdisk_add("/loopd/vdisk/write/attach-read-write-bytes-land-in-vdi",
                test_attach_read_write_lands_in_image, &write_dbus_vdi);
        vdisk_add("/loopd/vdisk/write/attach-read-write-bytes-land-in-vhdx",
                test_attach_read_write_lands_in_image, &write_dbus_vhdx);
        vdisk_add("/loopd/vdisk/write/attach-read-write-bytes-land-in-vpc",
                test_attach_read_write_lands_in_image, &write_dbus_vpc);
        vdisk_add("/loopd/vdisk/write/open-writable-file-lands-in-qcow2",
                test_open_writable_file_lands_in_image, &open_qcow2);

        vdisk_add("/loopd/vdisk/refuse/qcow2-backing-file-never-opened", test_refused, &case_qcow2_backing);
        vdisk_add("/loopd/vdisk/refuse/qcow2-external-data-file-never-opened", test_refused,
                &case_qcow2_data_file);
        vdisk_add("/loopd/vdisk/refuse/vmdk-root-only-extent-never-opened", test_refused,
                &case_vmdk_root_only_extent);
        vdisk_add("/loopd/vdisk/refuse/vmdk-split-extents-never-opened", test_refused,
                &case_vmdk_split_extents);
        vdisk_add("/loopd/vdisk/refuse/vmdk-parent-never-opened", test_refused, &case_vmdk_parent);
        vdisk_add("/loopd/vdisk/refuse/vdi-differencing", test_refused, &case_vdi_differencing);
        vdisk_add("/loopd/vdisk/refuse/vpc-differencing", test_refused, &case_vpc_differencing);
        vdisk_add("/loopd/vdisk/refuse/qcow2-encrypted-unsupported", test_refused, &case_qcow2_encrypted);
        vdisk_add("/loopd/vdisk/refuse/qcow2-truncated-tables-unsupported", test_refused,
                &case_qcow2_truncated);
        vdisk_add("/loopd/vdisk/refuse/qcow2-corrupt-unsupported-in-qemus-words", test_refused,
                &case_qcow2_corrupt);
        vdisk_add("/loopd/vdisk/refuse/qcow2-16-eib-size-unsupported", test_refused, &case_qcow2_16_eib);

        vdisk_add("/loopd/vdisk/crash/server-killed-detach-cleans-up", test_server_killed_detach_cleans_up,
                &open_qcow2);
        vdisk_add("/loopd/vdisk/crash/server-killed-under-mounts-close-cleans-up",
                test_server_killed_under_mounts_close_cleans_up, &open_qcow2);
        vdisk_add("/loopd/vdisk/crash/server-exits-1-at-start-rolls-back", test_server_fails_to_start,
                &stand_in_false);
        vdisk_add("/loopd/vdisk/crash/server-exits-0-without-serving-rolls-back", test_server_fails_to_start,
                &stand_in_true);
        vdisk_add("/loopd/vdisk/crash/loopd-killed-export-adopted", test_loopd_killed_export_adopted,
                &open_qcow2);
        vdisk_add("/loopd/vdisk/crash/loopd-killed-device-detached-export-torn-down",
                test_loopd_killed_export_adopted, &restart_detached);

        return g_test_run();
}
