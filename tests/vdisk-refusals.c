/* vdisk-refusals.c: images loopd must not serve. Those that refer to other files (a qcow2 backing file or
 * external data file, vmdk extent files or a parent, vdi and vpc differencing images) get UnsafeImage, and
 * an inotify watch the test put on the files they name proves nobody opened or read them, root-only ones
 * included; an encrypted qcow2, a qcow2 cut off before its tables, a corrupt one (in qemu's words) and one
 * claiming a 16 EiB disk get UnsupportedFormat. Attach (read-only and read-write) and `loopctl open` (one
 * `loopctl: ...` line, exit 1) both, and nothing is left: no loop device, export or qemu-storage-daemon
 * process. */
#include <sys/inotify.h>

#include "test-vdisk.h"

struct Refusal {
        const char *image; /* the name in the image directory */
        /* Makes the image; adds the paths of the files it names (to be watched) to watched. */
        void (*make)(Harness *h, const char *image, GPtrArray *watched);
        const char *error; /* the D-Bus error */
        const char
                *needle; /* the message (and loopctl's line) must say this, case-insensitively; NULL: any */
};

/* <tmpdir>/root-only, mode 0700, owned by root: no test user reaches what is in it. */
static char *root_only_dir(Harness *h)
{
        char *dir = g_build_filename(h->tmpdir, "root-only", NULL);

        if (!g_file_test(dir, G_FILE_TEST_IS_DIR))
                g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        g_assert_cmpint(chmod(dir, 0700), ==, 0);
        return dir;
}

/* qemu-img create ARGS IMAGE 16M. */
static void qemu_img(const char *args, const char *image)
{
        g_autofree char *q = g_shell_quote(image);

        g_free(test_sh("qemu-img create -q %s %s 16M", args, q));
}

/* Writes n bytes at offset of path. */
static void patch(const char *path, guint64 offset, const void *bytes, gsize n)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, bytes, n, (off_t)offset), ==, (ssize_t)n);
        g_assert_cmpint(close(fd), ==, 0);
}

/* An overlay on a raw backing file the user may read (so a qemu-storage-daemon running as the user could
 * open it). */
static void make_qcow2_backing(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *base = harness_image_path(h, "base.img"), *args = NULL, *q = g_shell_quote(base);

        qemu_img("-f raw", base);
        args = g_strdup_printf("-f qcow2 -b %s -F raw", q);
        qemu_img(args, image);
        g_ptr_array_add(watched, g_steal_pointer(&base));
}

/* A qcow2 whose data lives in a raw data file only root may read (CVE-2024-4467). */
static void make_qcow2_data_file(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *dir = root_only_dir(h), *data = g_build_filename(dir, "data.raw", NULL);
        g_autofree char *q = g_shell_quote(data), *args = NULL;

        args = g_strdup_printf("-f qcow2 -o data_file=%s,data_file_raw=on", q);
        qemu_img(args, image);
        g_assert_cmpint(chmod(data, 0600), ==, 0);
        g_ptr_array_add(watched, g_steal_pointer(&data));
}

/* A vmdk descriptor (text, as VMware writes them: more than a sector) whose one extent is a root-only
 * file. */
static void make_vmdk_root_only_extent(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *dir = root_only_dir(h), *secret = g_build_filename(dir, "secret.img", NULL);
        g_autofree char *descriptor = NULL;

        image_create(secret, 1 * MiB);
        patch(secret, 0, "root's secret\n", 14);
        g_assert_cmpint(chmod(secret, 0600), ==, 0);
        descriptor = g_strdup_printf("# Disk DescriptorFile\n"
                                     "version=1\n"
                                     "CID=fffffffe\n"
                                     "parentCID=ffffffff\n"
                                     "createType=\"monolithicFlat\"\n"
                                     "\n"
                                     "# Extent description\n"
                                     "RW 2048 FLAT \"%s\" 0\n"
                                     "\n"
                                     "# The Disk Data Base\n"
                                     "#DDB\n"
                                     "ddb.virtualHWVersion = \"14\"\n"
                                     "ddb.geometry.cylinders = \"2\"\n"
                                     "ddb.geometry.heads = \"16\"\n"
                                     "ddb.geometry.sectors = \"63\"\n"
                                     "ddb.adapterType = \"lsilogic\"\n"
                                     "ddb.longContentID = \"8f1d6c0e5c5a4b8e9d7f3a2b1c0d9e8f\"\n"
                                     "ddb.uuid = \"60 00 C2 9a 4b 3c 2d 1e-0f 9e 8d 7c 6b 5a 49 38\"\n"
                                     "ddb.toolsInstallType = \"4\"\n"
                                     "ddb.toolsVersion = \"12352\"\n",
                secret);
        g_assert_true(g_file_set_contents(image, descriptor, -1, NULL));
        g_assert_cmpint(chmod(image, 0644), ==, 0);
        g_ptr_array_add(watched, g_steal_pointer(&secret));
}

/* What qemu-img makes of subformat=twoGbMaxExtentSparse: a descriptor (shorter than a sector) and an extent
 * file next to it. */
static void make_vmdk_split_extents(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *extent = harness_image_path(h, "split-s001.vmdk");

        qemu_img("-f vmdk -o subformat=twoGbMaxExtentSparse", image);
        g_assert_true(g_file_test(extent, G_FILE_TEST_IS_REGULAR));
        g_ptr_array_add(watched, g_steal_pointer(&extent));
}

/* A sparse vmdk on a parent (parentFileNameHint in its embedded descriptor). */
static void make_vmdk_parent(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *parent = harness_image_path(h, "parent.vmdk"), *q = g_shell_quote(parent),
                        *args = NULL;

        qemu_img("-f vmdk", parent);
        args = g_strdup_printf("-f vmdk -b %s -F vmdk", q);
        qemu_img(args, image);
        g_ptr_array_add(watched, g_steal_pointer(&parent));
}

/* A vdi whose header says "differencing" (image type 4 at 0x4c; qemu-img makes none, and qemu 7.2 opens
 * one as if it were whole). */
static void make_vdi_differencing(Harness *h, const char *image, GPtrArray *watched)
{
        static const guint8 diff[4] = { 4, 0, 0, 0 };

        qemu_img("-f vdi", image);
        patch(image, 0x4c, diff, sizeof(diff));
}

static guint32 be32(const guint8 *p)
{
        return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static void put_be32(guint8 *p, guint32 v)
{
        p[0] = v >> 24;
        p[1] = v >> 16;
        p[2] = v >> 8;
        p[3] = v;
}

/* A dynamic VHD whose footers (the copy at the start and the one at the end) say "differencing" (disk type
 * 4 at 60, the checksum at 64 made anew). */
static void make_vpc_differencing(Harness *h, const char *image, GPtrArray *watched)
{
        struct stat st;

        qemu_img("-f vpc", image);
        g_assert_cmpint(stat(image, &st), ==, 0);
        for (int i = 0; i < 2; i++) {
                guint64 offset = i == 0 ? 0 : (guint64)st.st_size - 512;
                g_autofree guint8 *footer = NULL;
                guint32 sum = 0;
                int fd = open(image, O_RDONLY | O_CLOEXEC);

                footer = g_malloc(512);
                g_assert_cmpint(pread(fd, footer, 512, (off_t)offset), ==, 512);
                close(fd);
                g_assert_cmpint(memcmp(footer, "conectix", 8), ==, 0);
                g_assert_cmpuint(be32(footer + 60), ==, 3); /* dynamic */
                put_be32(footer + 60, 4);
                put_be32(footer + 64, 0);
                for (int k = 0; k < 512; k++)
                        sum += footer[k];
                put_be32(footer + 64, ~sum);
                patch(image, offset, footer, 512);
        }
}

static void make_qcow2_encrypted(Harness *h, const char *image, GPtrArray *watched)
{
        g_autofree char *q = g_shell_quote(image);

        g_free(test_sh(QEMU_IMG_ENCRYPTED_QCOW2("%s"), q));
}

/* A qcow2 cut off after its first cluster: its L1 and refcount tables lie past its end (qemu would serve
 * them as zeros, a disk with nothing on it). */
static void make_qcow2_truncated(Harness *h, const char *image, GPtrArray *watched)
{
        qemu_img("-f qcow2", image);
        g_assert_cmpint(truncate(image, 65536), ==, 0);
}

/* A corrupt qcow2: its header says clusters of 2^31 bytes (cluster_bits, big-endian at 20). loopd's look at
 * the header lets it through; qemu refuses it. */
static void make_qcow2_corrupt(Harness *h, const char *image, GPtrArray *watched)
{
        static const guint8 bits[4] = { 0, 0, 0, 31 };

        qemu_img("-f qcow2", image);
        patch(image, 20, bits, sizeof(bits));
}

/* A qcow2 whose header (the big-endian size at 24) claims 2^64 - 512 bytes. */
static void make_qcow2_16_eib(Harness *h, const char *image, GPtrArray *watched)
{
        static const guint8 size[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00 };

        qemu_img("-f qcow2", image);
        patch(image, 24, size, sizeof(size));
}

const Refusal refuse_qcow2_backing = { "overlay.qcow2", make_qcow2_backing, LOOPD_ERROR_UNSAFE_IMAGE, NULL };
const Refusal refuse_qcow2_data_file = { "data-file.qcow2", make_qcow2_data_file, LOOPD_ERROR_UNSAFE_IMAGE,
        NULL };
const Refusal refuse_vmdk_root_only_extent = { "descriptor.vmdk", make_vmdk_root_only_extent,
        LOOPD_ERROR_UNSAFE_IMAGE, NULL };
const Refusal refuse_vmdk_split_extents = { "split.vmdk", make_vmdk_split_extents, LOOPD_ERROR_UNSAFE_IMAGE,
        NULL };
const Refusal refuse_vmdk_parent = { "child.vmdk", make_vmdk_parent, LOOPD_ERROR_UNSAFE_IMAGE, NULL };
const Refusal refuse_vdi_differencing = { "diff.vdi", make_vdi_differencing, LOOPD_ERROR_UNSAFE_IMAGE,
        NULL };
const Refusal refuse_vpc_differencing = { "diff.vhd", make_vpc_differencing, LOOPD_ERROR_UNSAFE_IMAGE,
        NULL };
const Refusal refuse_qcow2_encrypted = { "encrypted.qcow2", make_qcow2_encrypted,
        LOOPD_ERROR_UNSUPPORTED_FORMAT, "encrypt" };
const Refusal refuse_qcow2_truncated = { "truncated.qcow2", make_qcow2_truncated,
        LOOPD_ERROR_UNSUPPORTED_FORMAT, "truncated" };
/* qemu's words. */
const Refusal refuse_qcow2_corrupt = { "corrupt.qcow2", make_qcow2_corrupt, LOOPD_ERROR_UNSUPPORTED_FORMAT,
        "cluster size" };
const Refusal refuse_qcow2_16_eib = { "huge.qcow2", make_qcow2_16_eib, LOOPD_ERROR_UNSUPPORTED_FORMAT,
        NULL };

/* ---------------------------------------------------------------------------------------------------- */
/* inotify */

/* The events waiting on fd, "PATH: open" / "PATH: read" (watched[wd - first]). */
static GPtrArray *inotify_events(int fd, GHashTable *names)
{
        GPtrArray *events = g_ptr_array_new_with_free_func(g_free);
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0)
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *e = (const struct inotify_event *)p;
                        const char *name = g_hash_table_lookup(names, GINT_TO_POINTER(e->wd));

                        if (e->mask & (IN_OPEN | IN_ACCESS))
                                g_ptr_array_add(events,
                                        g_strdup_printf("%s: %s", name ? name : "?",
                                                e->mask & IN_OPEN ? "open" : "read"));
                        p += sizeof(*e) + e->len;
                }
        g_assert_true(n < 0 && errno == EAGAIN);
        return events;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The test */

/* Checks a D-Bus error is the refusal's, with a message (saying the needle). */
static void check_refusal_error(const Refusal *r, const GError *error, const char *call)
{
        if (!harness_assert_dbus_error(error, r->error, NULL))
                return;
        g_test_message("%s: %s", call, error->message);
        if (!*error->message)
                harness_fail("%s: %s without a message", call, r->error);
        if (r->needle) {
                g_autofree char *lower = g_ascii_strdown(error->message, -1);
                if (!strstr(lower, r->needle))
                        harness_fail(
                                "%s: the message does not say '%s': %s", call, r->needle, error->message);
        }
}

/* The case's image, watched (IN_OPEN | IN_ACCESS on every file it names): Attach of it by the user
 * (read-only, then read-write) and `loopctl open` of it are refused as the case says, leave nothing behind,
 * and nobody opened or read a watched file meanwhile; then the test opens and reads them itself to show the
 * watch works. */
void test_refused(Vdisk *v, gconstpointer data)
{
        VDISK_REQUIRE(v);
        Harness *h = &v->h;
        const Refusal *r = v->c->data;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autofree char *image = harness_image_path(h, r->image);
        g_autoptr(GPtrArray) watched = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GHashTable) names = g_hash_table_new(g_direct_hash, g_direct_equal);
        g_autoptr(GPtrArray) events = NULL, control = NULL;
        g_auto(HarnessRun) run = { 0 };
        int ifd;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        r->make(h, image, watched);
        give_to(image, HARNESS_USER_A);

        ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        g_assert_cmpint(ifd, >=, 0);
        for (guint i = 0; i < watched->len; i++) {
                int wd = inotify_add_watch(ifd, watched->pdata[i], IN_OPEN | IN_ACCESS);
                g_assert_cmpint(wd, >=, 0);
                g_hash_table_insert(names, GINT_TO_POINTER(wd), watched->pdata[i]);
                g_test_message("watching %s", (char *)watched->pdata[i]);
        }
        g_ptr_array_unref(inotify_events(ifd, names));

        for (int rw = 0; rw < 2; rw++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;
                GVariant *options = NULL;

                if (rw)
                        options = vdisk_read_write_options();
                if (harness_attach_path(a, image, rw ? O_RDWR : O_RDONLY, options, &device, &error)) {
                        harness_fail("Attach (%s) of %s gave %s", rw ? "read-write" : "read-only", r->image,
                                device);
                        (void)harness_detach(a, device, NULL, NULL);
                }
                /* A refusal that only qemu can make is not reached read-write where loopd refuses writable
                 * virtual disks first (qemu-storage-daemon older than 10.0). */
                if (rw && !qsd_writes_safe() && error &&
                        strstr(error->message, "can only be opened read-only"))
                        check_writable_refused(h, error, image);
                else
                        check_refusal_error(r, error, rw ? "Attach read-write" : "Attach");
                check_nothing_left(h, NULL);
        }

        (void)harness_loopctl(h, HARNESS_USER_A, &run, "open", image, NULL);
        if (run.status == 0)
                harness_loopctl_ok(h, HARNESS_USER_A, "close", image, NULL);
        harness_check_loopctl_refused("loopctl open", &run, r->needle);
        check_nothing_left(h, NULL);
        g_assert_true(harness_loopd_alive(h));

        events = inotify_events(ifd, names);
        for (guint i = 0; i < events->len; i++)
                harness_fail("a file the image names was touched: %s", (char *)events->pdata[i]);

        /* The watch sees an open and a read (the oracle works). */
        for (guint i = 0; i < watched->len; i++) {
                char byte;
                int fd = open(watched->pdata[i], O_RDONLY | O_CLOEXEC);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(read(fd, &byte, 1), ==, 1);
                close(fd);
        }
        control = inotify_events(ifd, names);
        g_assert_cmpuint(control->len, >=, 2 * watched->len);
        close(ifd);
}
