/* test-mount.c: Mount, Unmount, MountImage and loopctl mount/unmount/open/close through the running daemon,
 * with real filesystems and real mounts, as the unprivileged test user wherever a user would be the caller.
 * What a mount is, is asked of findmnt, stat and the files themselves, never of loopd. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* A test that cannot go on without x: fails and returns (the teardown cleans up). */
#define REQUIRE_NONNULL(x)                                                  \
        do {                                                                \
                if (!(x)) {                                                 \
                        g_test_fail_printf("%s: %s is NULL", G_STRLOC, #x); \
                        return;                                             \
                }                                                           \
        } while (0)

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers: images */

/* Hands the image to user, so that loopctl, which opens it as that user, may open it read-write. */
static void give_image_to(const char *path, const char *user)
{
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
}

/* Writes into the filesystem at offset of image before loopd ever sees it, with mount(8) on a loop device
 * of the test's own: runs the shell line script with $M set to the mount point. */
static void populate(Harness *h, const char *image, guint64 offset, const char *script)
{
        g_autofree char *dir = g_build_filename(h->tmpdir, "populate-XXXXXX", NULL);
        g_autofree char *qdir = NULL, *qimage = g_shell_quote(image), *qscript = g_shell_quote(script);

        g_assert_nonnull(g_mkdtemp(dir));
        qdir = g_shell_quote(dir);
        g_free(test_sh("set -e; dev=$(losetup --find --show --offset %" G_GUINT64_FORMAT " %s); "
                       "trap 'umount %s 2>/dev/null; losetup --detach \"$dev\"' EXIT; "
                       "mount \"$dev\" %s; M=%s sh -ec %s",
                offset, qimage, qdir, qdir, qdir, qscript));
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

/* The bytes of a label as the filesystem stores them, read from the superblock at offset, for the
 * filesystems whose label field is plain bytes: proof that mkfs wrote the hostile label unchanged. */
static char *raw_label(const char *image, guint64 offset, guint64 length)
{
        g_autofree char *buf = g_malloc0(length + 1);
        int fd = open(image, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, buf, length, (off_t)offset), ==, (ssize_t)length);
        close(fd);
        return g_strdup(buf); /* up to the first NUL */
}

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers: talking to loopd */

/* Mount's options: options (a comma list) may be NULL. */
static GVariant *mount_options(const char *options, gboolean read_only)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (options)
                g_variant_builder_add(&b, "{sv}", "options", g_variant_new_string(options));
        if (read_only)
                g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(TRUE));
        return g_variant_builder_end(&b);
}

/* MountImage of path, opened by the test with open_flags; the reply (sa(ss)) or NULL with error set. */
static GVariant *call_mount_image(
        GDBusConnection *c, const char *path, int open_flags, GVariant *options, GError **error)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        int fd = open(path, open_flags | O_CLOEXEC), index;
        GVariant *reply;

        g_assert_cmpint(fd, >=, 0);
        index = g_unix_fd_list_append(fds, fd, NULL);
        close(fd);
        g_assert_cmpint(index, >=, 0);
        reply = harness_call(c, "MountImage",
                g_variant_new("(h@a{sv})", index, options ? options : harness_empty_options()), fds,
                G_DBUS_CALL_FLAGS_NONE, error);
        if (reply)
                g_assert_cmpstr(g_variant_get_type_string(reply), ==, "(sa(ss))");
        return reply;
}

/* The mount point MountImage's reply gives node, or NULL. */
static const char *reply_mount_point(GVariant *reply, const char *node)
{
        g_autoptr(GVariant) mounts = g_variant_get_child_value(reply, 1);
        GVariantIter it;
        const char *n, *mp;

        g_variant_iter_init(&it, mounts);
        while (g_variant_iter_next(&it, "(&s&s)", &n, &mp))
                if (g_str_equal(n, node))
                        return mp;
        return NULL;
}

/* loopctl --json ARGS... as user; the parsed output, or NULL (the test failed) when it did not exit 0. */
static JsonNode *loopctl_json(Harness *h, const char *user, ...) G_GNUC_NULL_TERMINATED;
static JsonNode *loopctl_json(Harness *h, const char *user, ...)
{
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        g_auto(HarnessRun) run = { 0 };
        const char *a;
        va_list ap;

        g_ptr_array_add(args, "--json");
        va_start(ap, user);
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(args, (char *)a);
        va_end(ap);
        g_ptr_array_add(args, NULL);
        if (harness_loopctlv(h, user, &run, (const char *const *)args->pdata) != 0) {
                g_test_fail_printf("loopctl %s exited %d: %s", (char *)args->pdata[1], run.status, run.err);
                return NULL;
        }
        return harness_run_json(&run);
}

static char *json_member(JsonNode *node, const char *member)
{
        JsonObject *o = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;

        if (!o || !json_object_has_member(o, member)) {
                g_test_fail_printf("JSON output has no \"%s\"", member);
                return NULL;
        }
        return g_strdup(json_object_get_string_member(o, member));
}

/* `loopctl attach` as user (read-only unless writable); the device, e.g. "/dev/loop3". */
static char *user_attach(Harness *h, const char *user, const char *image, bool writable)
{
        g_autoptr(JsonNode) out = writable ? loopctl_json(h, user, "attach", image, NULL)
                                           : loopctl_json(h, user, "attach", "--read-only", image, NULL);

        return json_member(out, "device");
}

/* `loopctl mount NODE [--read-only]` as user; the mount point. */
static char *user_mount(Harness *h, const char *user, const char *node, bool read_only)
{
        g_autoptr(JsonNode) out = read_only ? loopctl_json(h, user, "mount", "--read-only", node, NULL)
                                            : loopctl_json(h, user, "mount", node, NULL);
        g_autofree char *reported = json_member(out, "node");

        g_assert_cmpstr(reported, ==, node);
        return json_member(out, "mount_point");
}

static void user_loopctl_ok(Harness *h, const char *user, const char *verb, const char *arg)
{
        g_auto(HarnessRun) run = { 0 };

        if (harness_loopctl(h, user, &run, verb, arg, NULL) != 0)
                g_test_fail_printf("loopctl %s %s exited %d: %s", verb, arg, run.status, run.err);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles */

/* findmnt's view of the mount at target: the object of `findmnt --json --mountpoint`, or NULL. */
static JsonObject *findmnt_at(const char *target)
{
        g_autofree char *q = g_shell_quote(target), *out = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *root;
        JsonArray *a;

        if (test_sh_status(
                    &out, "findmnt --json --output TARGET,SOURCE,FSTYPE,OPTIONS --mountpoint %s", q) != 0 ||
                !json_parser_load_from_data(parser, out, -1, NULL))
                return NULL;
        root = json_node_get_object(json_parser_get_root(parser));
        a = root ? json_object_get_array_member(root, "filesystems") : NULL;
        if (!a || json_array_get_length(a) == 0)
                return NULL;
        /* Stacked mounts: the last one listed is on top. */
        return json_object_ref(json_array_get_object_element(a, json_array_get_length(a) - 1));
}

/* Every mount target in the system mount table (findmnt --list), with its source and options. */
static JsonArray *findmnt_all(void)
{
        g_autofree char *out = test_sh("findmnt --json --list --output TARGET,SOURCE,FSTYPE,OPTIONS");
        g_autoptr(JsonParser) parser = json_parser_new();

        g_assert_true(json_parser_load_from_data(parser, out, -1, NULL));
        return json_array_ref(json_object_get_array_member(
                json_node_get_object(json_parser_get_root(parser)), "filesystems"));
}

/* Where node is mounted, according to findmnt: targets whose source is node. */
static GPtrArray *targets_of(const char *node)
{
        g_autoptr(JsonArray) all = findmnt_all();
        GPtrArray *targets = g_ptr_array_new_with_free_func(g_free);

        for (guint i = 0; i < json_array_get_length(all); i++) {
                JsonObject *o = json_array_get_object_element(all, i);
                if (g_strcmp0(json_object_get_string_member_with_default(o, "source", ""), node) == 0)
                        g_ptr_array_add(targets, g_strdup(json_object_get_string_member(o, "target")));
        }
        return targets;
}

/* findmnt shows nosuid,nodev on every mount under the media directory (every mount loopd made); returns
 * how many there are. */
static guint check_media_mounts_safe(Harness *h)
{
        g_autoptr(JsonArray) all = findmnt_all();
        g_autofree char *prefix = g_strconcat(h->media_dir, "/", NULL);
        guint n = 0;

        for (guint i = 0; i < json_array_get_length(all); i++) {
                JsonObject *o = json_array_get_object_element(all, i);
                const char *target = json_object_get_string_member_with_default(o, "target", "");
                const char *options = json_object_get_string_member_with_default(o, "options", "");

                if (!g_str_has_prefix(target, prefix))
                        continue;
                n++;
                if (!test_options_have(options, "nosuid") || !test_options_have(options, "nodev"))
                        g_test_fail_printf("%s is mounted without nosuid,nodev: %s", target, options);
        }
        return n;
}

static char *user_dir(Harness *h, const char *user)
{
        return g_build_filename(h->media_dir, user, NULL);
}

/* The names in media/<user> (none if it does not exist), sorted. */
static GPtrArray *user_dir_entries(Harness *h, const char *user)
{
        g_autofree char *dir = user_dir(h, user);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
        const char *name;

        while (d && (name = g_dir_read_name(d)))
                g_ptr_array_add(names, g_strdup(name));
        g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
        return names;
}

static void check_user_dir_empty(Harness *h, const char *user)
{
        g_autoptr(GPtrArray) left = user_dir_entries(h, user);

        for (guint i = 0; i < left->len; i++)
                g_test_fail_printf("%s/%s/%s is left behind", h->media_dir, user, (char *)left->pdata[i]);
}

/* A mount point name is one safe path component: valid UTF-8, no control characters, no leading dot,
 * not "." or "..", bounded. */
static bool check_safe_name(const char *name)
{
        bool ok = true;

        if (!*name || g_str_equal(name, ".") || g_str_equal(name, "..") || name[0] == '.' ||
                strchr(name, '/') || strlen(name) > NAME_MAX) {
                g_test_fail_printf("mount point name '%s' is not a safe path component", name);
                return false;
        }
        if (!g_utf8_validate(name, -1, NULL)) {
                g_test_fail_printf("mount point name '%s' is not valid UTF-8", name);
                return false;
        }
        for (const char *p = name; *p; p = g_utf8_next_char(p))
                if (g_unichar_iscntrl(g_utf8_get_char(p))) {
                        g_test_fail_printf("mount point name '%s' has a control character", name);
                        ok = false;
                        break;
                }
        return ok;
}

/* Checks a mount loopd reports: mount_point is a fresh directory right inside media/<user> (no symlink on
 * the way), findmnt shows node mounted there and nowhere else, with nosuid,nodev (fstype_prefix: the
 * fstype findmnt must show starts with it; NULL: any). */
static bool check_mount(
        Harness *h, const char *user, const char *node, const char *mount_point, const char *fstype_prefix)
{
        g_autofree char *dir = user_dir(h, user), *parent = NULL, *name = NULL, *real = NULL;
        g_autoptr(JsonObject) fs = NULL;
        g_autoptr(GPtrArray) targets = NULL;
        struct stat st;
        int failed_before = g_test_failed();

        if (!mount_point) {
                g_test_fail_printf("no mount point for %s", node);
                return false;
        }
        g_test_message("%s is mounted on '%s'", node, mount_point);
        parent = g_path_get_dirname(mount_point);
        name = g_path_get_basename(mount_point);
        if (!g_str_equal(parent, dir))
                g_test_fail_printf("mount point %s is not right inside %s", mount_point, dir);
        (void)check_safe_name(name);
        real = realpath(mount_point, NULL);
        if (g_strcmp0(real, mount_point) != 0)
                g_test_fail_printf("mount point %s resolves to %s", mount_point, real ? real : "(nothing)");
        if (lstat(mount_point, &st) < 0 || !S_ISDIR(st.st_mode))
                g_test_fail_printf("mount point %s is not a directory", mount_point);

        fs = findmnt_at(mount_point);
        if (!fs) {
                g_test_fail_printf("findmnt: nothing is mounted on %s", mount_point);
                return false;
        }
        const char *source = json_object_get_string_member_with_default(fs, "source", "");
        const char *fstype = json_object_get_string_member_with_default(fs, "fstype", "");
        const char *options = json_object_get_string_member_with_default(fs, "options", "");
        g_test_message("findmnt: %s %s %s", source, fstype, options);
        if (!g_str_equal(source, node))
                g_test_fail_printf("findmnt: %s is mounted from %s, expected %s", mount_point, source, node);
        if (fstype_prefix && !g_str_has_prefix(fstype, fstype_prefix))
                g_test_fail_printf("findmnt: %s is %s, expected %s*", mount_point, fstype, fstype_prefix);
        if (!test_options_have(options, "nosuid") || !test_options_have(options, "nodev"))
                g_test_fail_printf("findmnt: %s lacks nosuid,nodev: %s", mount_point, options);

        targets = targets_of(node);
        if (targets->len != 1)
                g_test_fail_printf("findmnt: %s is mounted %u times, expected once", node, targets->len);
        (void)check_media_mounts_safe(h);
        return g_test_failed() == failed_before;
}

static bool mount_is_read_only(const char *mount_point)
{
        g_autoptr(JsonObject) fs = findmnt_at(mount_point);

        return fs && test_options_have(json_object_get_string_member_with_default(fs, "options", ""), "ro");
}

/* After Unmount: not mounted, and the directory is gone. */
static void check_unmounted(const char *mount_point)
{
        g_autoptr(JsonObject) fs = findmnt_at(mount_point);

        if (fs)
                g_test_fail_printf("%s is still mounted after Unmount", mount_point);
        if (g_file_test(mount_point, G_FILE_TEST_EXISTS))
                g_test_fail_printf("the mount point %s is left behind after Unmount", mount_point);
}

/* After close/detach: the device is no longer bound to the test's image, and no partition node is left. */
static void check_gone(Harness *h, const char *device)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
        g_autoptr(GPtrArray) parts = NULL;
        g_autofree char *name = g_path_get_basename(device);
        g_autofree char *bound = g_strdup_printf("/sys/block/%s/loop/backing_file", name);

        for (guint i = 0; i < loops->len; i++)
                g_test_fail_printf(
                        "%s is still attached (backed under %s)", (char *)loops->pdata[i], h->tmpdir);
        /* A free number is anybody's: once somebody has bound it again, its partitions are theirs. */
        if (g_file_test(bound, G_FILE_TEST_EXISTS) && loops->len == 0) {
                g_test_message(
                        "%s was bound again by someone else; not checking its partition nodes", device);
                return;
        }
        parts = oracle_partition_nodes(device);
        for (guint i = 0; i < parts->len; i++)
                g_test_fail_printf(
                        "partition node %s of %s is left behind", (char *)parts->pdata[i], device);
}

/* Runs argv as user; returns the exit status, *ret_out gets stdout (may be NULL). */
static int run_as(Harness *h, const char *user, char **ret_out, const char *const *argv)
{
        g_auto(HarnessRun) run = { 0 };
        int status = harness_spawn_as(h, user, &run, argv);

        if (ret_out)
                *ret_out = g_strdup(run.out ? run.out : "");
        if (status != 0)
                g_test_message("%s as %s: exit %d: %s", argv[0], user ? user : "root", status, run.err);
        return status;
}

/* The contents of path, read by user (cat), or NULL when user cannot read it. */
static char *read_as(Harness *h, const char *user, const char *path)
{
        const char *argv[] = { "cat", "--", path, NULL };
        char *out = NULL;

        if (run_as(h, user, &out, argv) != 0)
                g_clear_pointer(&out, g_free);
        return out;
}

/* Writes text into path as user; returns the shell's exit status and its stderr in *ret_err. */
static int write_as(Harness *h, const char *user, const char *path, const char *text, char **ret_err)
{
        const char *argv[] = { "sh", "-c", "printf '%s' \"$1\" > \"$2\"", "sh", text, path, NULL };
        g_auto(HarnessRun) run = { 0 };
        int status = harness_spawn_as(h, user, &run, argv);

        if (ret_err)
                *ret_err = g_strdup(run.err ? run.err : "");
        return status;
}

/* The pids of processes that have the block device rdev open (e.g. a FUSE helper serving it); comm: only
 * processes of that name (other daemons on the machine may be probing the device for a moment). */
static GPtrArray *holders_of(dev_t rdev, const char *comm)
{
        GPtrArray *pids = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        const char *pid;

        while (proc && (pid = g_dir_read_name(proc))) {
                g_autofree char *fd_dir = g_build_filename("/proc", pid, "fd", NULL);
                g_autoptr(GDir) fds = NULL;
                const char *fd;

                if (!g_ascii_isdigit(pid[0]))
                        continue;
                if (comm) {
                        g_autofree char *comm_path = g_build_filename("/proc", pid, "comm", NULL), *c = NULL;
                        if (!g_file_get_contents(comm_path, &c, NULL, NULL) ||
                                !g_str_equal(g_strchomp(c), comm))
                                continue;
                }
                fds = g_dir_open(fd_dir, 0, NULL);
                while (fds && (fd = g_dir_read_name(fds))) {
                        g_autofree char *link = g_build_filename(fd_dir, fd, NULL);
                        struct stat st;

                        if (stat(link, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == rdev) {
                                g_ptr_array_add(pids, g_strdup(pid));
                                break;
                        }
                }
        }
        return pids;
}

static dev_t rdev_of(const char *node)
{
        struct stat st;

        g_assert_cmpint(stat(node, &st), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        return st.st_rdev;
}

static bool loopd_alive(Harness *h)
{
        bool alive = harness_loopd_alive(h);

        if (!alive)
                g_test_fail_printf("loopd is not running any more");
        return alive;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Filesystems: a file written beforehand is read back by the user through loopd's mount */

typedef struct FsCase {
        const char *fstype;
        guint64 size;
        bool read_only; /* attach read-only: the mount must be read-only and replay nothing */
        const char *no_replay; /* the option findmnt shows for "no journal replay" on a read-only mount */
} FsCase;

static void test_filesystem_read_back(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const FsCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "fs.img"), *device = NULL, *mount_point = NULL;
        g_autofree char *hello = NULL, *got = NULL, *expected = NULL;

        harness_allow_all(h);
        image_create(image, c->size);
        g_free(image_mkfs_at(image, 0, c->size, c->fstype, "DATA"));
        if (g_str_equal(c->fstype, "squashfs"))
                /* mksquashfs takes its files at creation: image_mkfs_at() put "loopd" into /hello. */
                expected = g_strdup("loopd\n");
        else {
                expected = g_strdup_printf("written into %s before loopd saw it\n", c->fstype);
                g_autofree char *script = g_strdup_printf(
                        "mkdir \"$M/dir\"; printf '%%s\\n' 'written into %s before loopd saw it' > \"$M/dir/hello\"; "
                        "chmod 0644 \"$M/dir/hello\"",
                        c->fstype);
                populate(h, image, 0, script);
        }
        if (!c->read_only)
                give_image_to(image, HARNESS_USER_A);

        device = user_attach(h, HARNESS_USER_A, image, !c->read_only);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, device, mount_point,
                    g_str_equal(c->fstype, "squashfs") ? NULL : c->fstype)) {
                hello = g_build_filename(
                        mount_point, g_str_equal(c->fstype, "squashfs") ? "hello" : "dir/hello", NULL);
                got = read_as(h, HARNESS_USER_A, hello);
                g_assert_cmpstr(got, ==, expected);
                /* A read-only device gets a read-only mount, without journal replay; nobody had to say so.
                 */
                if (c->read_only)
                        g_assert_true(mount_is_read_only(mount_point));
                if (c->no_replay) {
                        g_autoptr(JsonObject) fs = findmnt_at(mount_point);
                        const char *options = fs ? json_object_get_string_member(fs, "options") : "";
                        if (!test_options_have(options, c->no_replay))
                                g_test_fail_printf("%s: no %s in %s", mount_point, c->no_replay, options);
                }
        }

        /* By mount point, as a file manager's eject would. */
        user_loopctl_ok(h, HARNESS_USER_A, "unmount", mount_point);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

static const FsCase fs_ext4 = { "ext4", 32 * MiB, false };
static const FsCase fs_xfs = { "xfs", 300 * MiB, true, "norecovery" };
static const FsCase fs_btrfs = { "btrfs", 128 * MiB, false };
static const FsCase fs_squashfs = { "squashfs", 8 * MiB, true };
static const HarnessOptions opts_ext4 = { .data = &fs_ext4 };
static const HarnessOptions opts_xfs = { .data = &fs_xfs };
static const HarnessOptions opts_btrfs = { .data = &fs_btrfs };
static const HarnessOptions opts_squashfs = { .data = &fs_squashfs };

/* An xorriso ISO (iso9660, here through fuseiso): the files are the caller's, as iso9660 has no owners. */
static void test_iso9660_owned_by_caller(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "disc.iso"),
                        *tree = g_build_filename(h->tmpdir, "iso-root", NULL);
        g_autofree char *qimage = g_shell_quote(image), *qtree = g_shell_quote(tree);
        g_autofree char *device = NULL, *mount_point = NULL, *file = NULL, *got = NULL, *owner = NULL;

        harness_allow_all(h);
        g_free(test_sh("set -e; mkdir -p %s/docs; printf 'from the disc\\n' > %s/docs/readme.txt; "
                       "xorriso -as mkisofs -quiet -o %s -V LOOPD_DISC -J -R %s 2>/dev/null",
                qtree, qtree, qimage, qtree));
        g_autoptr(GHashTable) blkid = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(blkid, "TYPE"), ==, "iso9660");

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, device, mount_point, NULL)) {
                g_autofree char *name = g_path_get_basename(mount_point);
                g_assert_cmpstr(name, ==, "LOOPD_DISC");
                file = g_build_filename(mount_point, "docs", "readme.txt", NULL);
                got = read_as(h, HARNESS_USER_A, file);
                g_assert_cmpstr(got, ==, "from the disc\n");
                const char *argv[] = { "stat", "--format=%u:%g", file, NULL };
                g_assert_cmpint(run_as(h, HARNESS_USER_A, &owner, argv), ==, 0);
                g_autofree char *want = g_strdup_printf("%u:%u\n", (unsigned)harness_uid_of(HARNESS_USER_A),
                        (unsigned)harness_gid_of(HARNESS_USER_A));
                g_assert_cmpstr(owner, ==, want);
                g_assert_true(mount_is_read_only(mount_point));
        }

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", device);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
}

/* A vfat partition of a partitioned image (fusefat here): files belong to the caller. */
static void test_vfat_partition_owned_by_caller(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "stick.img"), *qimage = g_shell_quote(image);
        g_autofree char *device = NULL, *node = NULL, *mount_point = NULL, *file = NULL, *got = NULL;
        g_autofree char *owner = NULL;

        harness_allow_all(h);
        image_create(image, 40 * MiB);
        image_sfdisk(image, "label: dos\nstart=2048, size=65536, type=c\n", 0);
        g_free(image_mkfs_at(image, MiB, 32 * MiB, "vfat", "STICK"));
        g_free(test_sh(
                "set -e; printf 'on the stick\\n' > %s.txt; mcopy -i %s@@1M %s.txt ::/NOTES.TXT; rm %s.txt",
                qimage, qimage, qimage, qimage));

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        node = g_strconcat(device, "p1", NULL);
        mount_point = user_mount(h, HARNESS_USER_A, node, false);
        REQUIRE_NONNULL(mount_point);
        if (check_mount(h, HARNESS_USER_A, node, mount_point, NULL)) {
                file = g_build_filename(mount_point, "NOTES.TXT", NULL);
                got = read_as(h, HARNESS_USER_A, file);
                g_assert_cmpstr(got, ==, "on the stick\n");
                const char *argv[] = { "stat", "--format=%u:%g", file, mount_point, NULL };
                g_assert_cmpint(run_as(h, HARNESS_USER_A, &owner, argv), ==, 0);
                g_autofree char *want = g_strdup_printf("%u:%u\n%u:%u\n",
                        (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A),
                        (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A));
                g_assert_cmpstr(owner, ==, want);
        }

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", node);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
}

/* The number at the end of a node name ("live.iso2", "/dev/loop3p2"). */
static guint trailing_number(const char *s)
{
        size_t n = strlen(s), i = n;

        while (i > 0 && g_ascii_isdigit(s[i - 1]))
                i--;
        return i < n ? (guint)g_ascii_strtoull(s + i, NULL, 10) : 0;
}

/* `loopctl open` on a hybrid ISO mounts the ISO (the whole device, number 0) and its EFI partition. */
static void test_open_hybrid_iso_mounts_both(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "live.iso"), *device = NULL, *efi = NULL;
        g_autoptr(JsonNode) out = NULL, table = NULL;
        const char *iso_mp = NULL, *efi_mp = NULL;
        guint efi_number = 0;
        JsonArray *a, *mounts;

        harness_allow_all(h);
        image_make_hybrid_iso(image, "LOOPD_LIVE");
        table = oracle_sfdisk_json(image, 0);
        a = json_object_get_array_member(json_node_get_object(table), "partitions");
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (g_ascii_strcasecmp(json_object_get_string_member(o, "type"), "ef") == 0)
                        efi_number = trailing_number(json_object_get_string_member(o, "node"));
        }
        g_assert_cmpuint(efi_number, >, 0);

        out = loopctl_json(h, HARNESS_USER_A, "open", image, NULL);
        REQUIRE_NONNULL(out);
        device = json_member(out, "device");
        REQUIRE_NONNULL(device);
        efi = g_strdup_printf("%sp%u", device, efi_number);
        mounts = json_object_get_array_member(json_node_get_object(out), "mounts");
        /* The ISO once (xorriso's partition 1 starts at sector 0: it is the same ISO again) and the EFI
         * partition. */
        g_assert_cmpuint(mounts ? json_array_get_length(mounts) : 0, ==, 2);
        for (guint i = 0; mounts && i < json_array_get_length(mounts); i++) {
                JsonObject *m = json_array_get_object_element(mounts, i);
                const char *node = json_object_get_string_member(m, "node");
                const char *mp = json_object_get_string_member(m, "mount_point");

                g_test_message("open mounted %s on %s", node, mp);
                if (g_strcmp0(node, device) == 0)
                        iso_mp = mp;
                else if (g_strcmp0(node, efi) == 0)
                        efi_mp = mp;
        }
        if (check_mount(h, HARNESS_USER_A, device, iso_mp, NULL)) {
                g_autofree char *readme = g_build_filename(iso_mp, "README.TXT", NULL);
                g_autofree char *got = read_as(h, HARNESS_USER_A, readme);
                g_autofree char *name = g_path_get_basename(iso_mp);

                g_assert_cmpstr(got, ==, "loopd test medium\n");
                g_assert_cmpstr(name, ==, "LOOPD_LIVE");
                /* Read-only by default: a double-clicked image is not changed by looking at it. */
                g_assert_true(mount_is_read_only(iso_mp));
        }
        if (check_mount(h, HARNESS_USER_A, efi, efi_mp, NULL)) {
                g_autofree char *readme = g_build_filename(efi_mp, "EFI", "BOOT", "README.TXT", NULL);
                g_autofree char *got = read_as(h, HARNESS_USER_A, readme);
                g_autofree char *name = g_path_get_basename(efi_mp);

                g_assert_cmpstr(got, ==, "loopd test medium\n");
                g_assert_cmpstr(name, ==, "EFIBOOT");
                g_assert_true(mount_is_read_only(efi_mp));
        }

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        if (iso_mp)
                check_unmounted(iso_mp);
        if (efi_mp)
                check_unmounted(efi_mp);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Read-write and read-only */

/* An ext4 image with /home owned by the test user, handed to the user (so a writable attach works). */
static char *make_user_ext4(Harness *h, const char *name, const char *label)
{
        char *image = harness_image_path(h, name);
        g_autofree char *script = g_strdup_printf("mkdir \"$M/home\"; chown %u:%u \"$M/home\"",
                (unsigned)harness_uid_of(HARNESS_USER_A), (unsigned)harness_gid_of(HARNESS_USER_A));

        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", label));
        populate(h, image, 0, script);
        give_image_to(image, HARNESS_USER_A);
        return image;
}

/* debugfs reads the image file itself: what really reached the disk. NULL when the file is not there. */
static char *debugfs_cat(const char *image, const char *path)
{
        g_autofree char *qimage = g_shell_quote(image), *out = NULL;
        g_autofree char *request = g_strdup_printf("stat %s", path), *qrequest = g_shell_quote(request);
        g_autofree char *cat = g_strdup_printf("cat %s", path), *qcat = g_shell_quote(cat);

        if (test_sh_status(&out, "debugfs -R %s %s 2>&1 | grep -q 'Inode:'", qrequest, qimage) != 0)
                return NULL;
        return test_sh("debugfs -R %s %s 2>/dev/null", qcat, qimage);
}

static void test_read_write_persists_after_reattach(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "rw.img", "RW");
        g_autofree char *device = NULL, *mount_point = NULL, *file = NULL, *on_disk = NULL, *got = NULL;
        g_autofree char *device2 = NULL, *mount_point2 = NULL, *file2 = NULL;

        harness_allow_all(h);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        g_assert_false(mount_is_read_only(mount_point));
        file = g_build_filename(mount_point, "home", "note.txt", NULL);
        g_assert_cmpint(write_as(h, HARNESS_USER_A, file, "kept across attaches\n", NULL), ==, 0);

        user_loopctl_ok(h, HARNESS_USER_A, "unmount", mount_point);
        check_unmounted(mount_point);
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);

        /* The image file itself has it (debugfs, without any mount)... */
        on_disk = debugfs_cat(image, "/home/note.txt");
        g_assert_cmpstr(on_disk, ==, "kept across attaches\n");

        /* ...and so does a fresh attach and mount, as the user sees it. */
        device2 = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device2);
        mount_point2 = user_mount(h, HARNESS_USER_A, device2, false);
        REQUIRE_NONNULL(mount_point2);
        g_assert_true(check_mount(h, HARNESS_USER_A, device2, mount_point2, "ext4"));
        file2 = g_build_filename(mount_point2, "home", "note.txt", NULL);
        got = read_as(h, HARNESS_USER_A, file2);
        g_assert_cmpstr(got, ==, "kept across attaches\n");
        user_loopctl_ok(h, HARNESS_USER_A, "close", device2);
        check_unmounted(mount_point2);
        check_gone(h, device2);
}

/* A read-only mount of a writable device refuses writes with EROFS, asked either way (the read-only
 * option, or "ro" among the options), and nothing reaches the image. */
static void test_read_only_refuses_writes(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "ro.img", "RO");
        g_autofree char *device = NULL, *on_disk = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);

        for (int round = 0; round < 2; round++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, device,
                        round == 0 ? mount_options(NULL, TRUE) : mount_options("ro,noatime", FALSE), &error);
                g_autofree char *file = NULL, *err = NULL;

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
                g_assert_true(mount_is_read_only(mount_point));
                file = g_build_filename(mount_point, "home", "refused.txt", NULL);
                g_assert_cmpint(write_as(h, HARNESS_USER_A, file, "must not land\n", &err), !=, 0);
                if (!strstr(err, "Read-only file system"))
                        g_test_fail_printf(
                                "writing into %s failed, but not with EROFS: %s", mount_point, err);
                g_assert_true(harness_unmount(a, mount_point, &error));
                harness_assert_no_error(error);
                check_unmounted(mount_point);
        }

        g_assert_true(harness_detach(a, device, NULL, NULL));
        check_gone(h, device);
        on_disk = debugfs_cat(image, "/home/refused.txt");
        g_assert_null(on_disk);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Hostile labels */

typedef struct LabelCase {
        const char *fstype;
        guint64 size;
        const char *label; /* as written by mkfs */
        guint64 raw_offset; /* where the superblock keeps the label as plain bytes; 0: check with blkid */
        guint64 raw_length;
        bool expect_uuid; /* nothing of the label is usable: the mount point must be named by the UUID */
        const char *expect_prefix, *expect_suffix; /* what of the label must survive; may be NULL */
        const char *expect_inside; /* a part of the label that must survive; may be NULL */
        const char *expect_name; /* the exact name, when the label is already safe; may be NULL */
} LabelCase;

/* Superblock label fields: ext4 s_volume_name (1024 + 0x78, 16 bytes), xfs sb_fname (108, 12 bytes),
 * btrfs label (65536 + 0x12b, 256 bytes). */
#define EXT4_LABEL 1144, 16
#define XFS_LABEL 108, 12
#define BTRFS_LABEL 65835, 256

static void test_hostile_label(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const LabelCase *c = h->options->data;
        g_autofree char *image = harness_image_path(h, "label.img"), *uuid = NULL, *device = NULL;
        g_autofree char *mount_point = NULL, *name = NULL;
        g_autoptr(GError) error = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, c->size);
        /* mkntfs turns the label into UTF-16 through the locale. */
        g_autofree char *lc_all = g_strdup(g_getenv("LC_ALL"));
        g_setenv("LC_ALL", "C.UTF-8", TRUE);
        uuid = image_mkfs_at(image, 0, c->size, c->fstype, c->label);
        if (lc_all)
                g_setenv("LC_ALL", lc_all, TRUE);
        else
                g_unsetenv("LC_ALL");
        /* The case is real only if the filesystem carries the label as given. */
        if (c->raw_offset) {
                g_autofree char *raw = raw_label(image, c->raw_offset, c->raw_length);
                g_assert_cmpstr(raw, ==, c->label);
        } else {
                /* NTFS keeps UTF-16: ntfslabel reads it back as UTF-8. */
                g_autofree char *qimage = g_shell_quote(image);
                g_autofree char *seen = test_sh("LC_ALL=C.UTF-8 ntfslabel %s", qimage);
                g_assert_cmpstr(g_strchomp(seen), ==, c->label);
        }

        /* Attach through D-Bus: the mount is what this is about (loopctl attach also lists the partitions,
         * see label-invalid-utf8-listed-as-utf8). */
        g_assert_true(harness_attach_path(a, image, O_RDONLY, NULL, &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, NULL));
        name = g_path_get_basename(mount_point);
        if (c->expect_uuid)
                g_assert_cmpstr(name, ==, uuid);
        if (c->expect_name)
                g_assert_cmpstr(name, ==, c->expect_name);
        if (c->expect_prefix && !g_str_has_prefix(name, c->expect_prefix))
                g_test_fail_printf("mount point name '%s' does not start with '%s'", name, c->expect_prefix);
        if (c->expect_suffix && !g_str_has_suffix(name, c->expect_suffix))
                g_test_fail_printf("mount point name '%s' does not end with '%s'", name, c->expect_suffix);
        if (c->expect_inside && !strstr(name, c->expect_inside))
                g_test_fail_printf("mount point name '%s' lost '%s'", name, c->expect_inside);
        /* Nothing appeared beside the user's directory (the media dir holds only user directories). */
        g_autoptr(GDir) media = g_dir_open(h->media_dir, 0, NULL);
        for (const char *e; media && (e = g_dir_read_name(media));)
                if (!g_str_equal(e, HARNESS_USER_A))
                        g_test_fail_printf("%s/%s appeared in the media directory", h->media_dir, e);
        g_assert_true(loopd_alive(h));

        /* The path loopd returned works as an Unmount target as it is. */
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* 100 x U+20AC (3 bytes each): 300 bytes of UTF-8 in NTFS's 128-unit UTF-16 label. */
#define EURO_10 \
        "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
#define EURO_100 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10 EURO_10
#define X_50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X_254 X_50 X_50 X_50 X_50 X_50 "xxxx" /* mkfs.btrfs keeps at most 254 bytes */

static const LabelCase label_dot_dot_etc = { "xfs", 300 * MiB, "../../etc", XFS_LABEL,
        .expect_suffix = "etc" };
static const LabelCase label_slash = { "ext4", 32 * MiB, "a/b", EXT4_LABEL, .expect_prefix = "a",
        .expect_suffix = "b" };
static const LabelCase label_dot = { "ext4", 32 * MiB, ".", EXT4_LABEL, .expect_uuid = true };
static const LabelCase label_dot_dot = { "ext4", 32 * MiB, "..", EXT4_LABEL, .expect_uuid = true };
static const LabelCase label_300_bytes = { "ntfs", 32 * MiB, EURO_100, .expect_prefix = "\xe2\x82\xac" };
static const LabelCase label_254_bytes = { "btrfs", 128 * MiB, X_254, BTRFS_LABEL,
        .expect_prefix = "xxxxxxxx" };
static const LabelCase label_control = { "ext4", 32 * MiB, "a\001b\033[0m\nc", EXT4_LABEL,
        .expect_prefix = "a", .expect_suffix = "c" };
static const LabelCase label_format = { "ext4", 32 * MiB, "%n%s%x", EXT4_LABEL, .expect_name = "%n%s%x" };
static const LabelCase label_bad_utf8 = { "ext4", 32 * MiB, "\xff\xfe\xc3(ok\xe2\x82", EXT4_LABEL,
        .expect_inside = "(ok" };
static const HarnessOptions opts_label_dot_dot_etc = { .data = &label_dot_dot_etc };
static const HarnessOptions opts_label_slash = { .data = &label_slash };
static const HarnessOptions opts_label_dot = { .data = &label_dot };
static const HarnessOptions opts_label_dot_dot = { .data = &label_dot_dot };
static const HarnessOptions opts_label_300_bytes = { .data = &label_300_bytes };
static const HarnessOptions opts_label_254_bytes = { .data = &label_254_bytes };
static const HarnessOptions opts_label_control = { .data = &label_control };
static const HarnessOptions opts_label_format = { .data = &label_format };
static const HarnessOptions opts_label_bad_utf8 = { .data = &label_bad_utf8 };

/* Two images with one label, mounted at once: two distinct mount points, each showing its own files. */
static void test_same_label_twice_distinct(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *first = make_user_ext4(h, "first.img", "twin");
        g_autofree char *second = make_user_ext4(h, "second.img", "twin");
        g_autofree char *dev1 = NULL, *dev2 = NULL, *mp1 = NULL, *mp2 = NULL;
        g_autofree char *f1 = NULL, *f2 = NULL, *got1 = NULL, *got2 = NULL;

        harness_allow_all(h);
        populate(h, first, 0, "echo first > \"$M/which\"; chmod 0644 \"$M/which\"");
        populate(h, second, 0, "echo second > \"$M/which\"; chmod 0644 \"$M/which\"");
        dev1 = user_attach(h, HARNESS_USER_A, first, false);
        dev2 = user_attach(h, HARNESS_USER_A, second, false);
        REQUIRE_NONNULL(dev1);
        REQUIRE_NONNULL(dev2);
        mp1 = user_mount(h, HARNESS_USER_A, dev1, false);
        mp2 = user_mount(h, HARNESS_USER_A, dev2, false);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);
        g_assert_cmpstr(mp1, !=, mp2);
        g_assert_true(check_mount(h, HARNESS_USER_A, dev1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, dev2, mp2, "ext4"));
        g_autofree char *n1 = g_path_get_basename(mp1), *n2 = g_path_get_basename(mp2);
        g_assert_true(g_str_has_prefix(n1, "twin"));
        g_assert_true(g_str_has_prefix(n2, "twin"));
        f1 = g_build_filename(mp1, "which", NULL);
        f2 = g_build_filename(mp2, "which", NULL);
        got1 = read_as(h, HARNESS_USER_A, f1);
        got2 = read_as(h, HARNESS_USER_A, f2);
        g_assert_cmpstr(got1, ==, "first\n");
        g_assert_cmpstr(got2, ==, "second\n");
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 2);

        user_loopctl_ok(h, HARNESS_USER_A, "close", dev1);
        user_loopctl_ok(h, HARNESS_USER_A, "close", dev2);
        check_unmounted(mp1);
        check_unmounted(mp2);
        check_gone(h, dev1);
        check_gone(h, dev2);
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* A label that is not UTF-8 must not break what lists it: D-Bus strings are UTF-8, so `loopctl attach`
 * (which lists the partitions), ListPartitions and the Partitions property must still answer, with a
 * valid UTF-8 label. */
static void test_label_invalid_utf8_listed_as_utf8(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "latin1.img"), *device = NULL, *object = NULL;
        g_autofree char *raw = NULL, *mount_point = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) parts = NULL, property = NULL;
        g_autoptr(JsonNode) out = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "caf\xe9 \xff"));
        raw = raw_label(image, EXT4_LABEL);
        g_assert_cmpstr(raw, ==, "caf\xe9 \xff");

        out = loopctl_json(h, HARNESS_USER_A, "attach", "--read-only", image, NULL);
        if (out)
                device = json_member(out, "device");
        if (!device) {
                /* It may be attached all the same: find it, to go on and to detach it. */
                g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
                REQUIRE_NONNULL(loops->len ? loops->pdata[0] : NULL);
                device = g_strdup(loops->pdata[0]);
        }

        parts = harness_list_partitions(a, device, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);
        if (parts) {
                GVariantIter it;
                const char *node, *fstype, *label, *uuid, *s1, *s2, *s3;
                guint32 number;
                guint64 offset, size;
                bool found = false;

                g_variant_iter_init(&it, parts);
                while (g_variant_iter_next(&it, "(&sutt&s&s&s&s&s&s)", &node, &number, &offset, &size, &s1,
                        &s2, &fstype, &label, &uuid, &s3))
                        if (number == 0) {
                                found = true;
                                g_assert_true(g_utf8_validate(label, -1, NULL));
                                g_assert_true(g_str_has_prefix(label, "caf"));
                        }
                g_assert_true(found);
        }
        object = g_strdup_printf("/org/loopd1/device/%s", device + 5);
        property = g_dbus_connection_call_sync(a, LOOPD_BUS_NAME, object, "org.freedesktop.DBus.Properties",
                "Get", g_variant_new("(ss)", "org.loopd1.Device", "Partitions"), NULL,
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        harness_assert_no_error(error);
        g_clear_error(&error);

        /* Mounting it works either way; the name is made safe. */
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Refused options, nodes and filesystems: an error, and nothing mounted, and no directory left */

/* An image with an ext4 (p1, the kernel's driver) and a vfat (p2, a FUSE helper here) partition. */
static char *make_two_partitions(Harness *h, const char *name)
{
        char *image = harness_image_path(h, name);

        image_create(image, 72 * MiB);
        image_sfdisk(
                image, "label: dos\nstart=2048, size=65536, type=83\nstart=67584, size=65536, type=c\n", 0);
        g_free(image_mkfs_at(image, MiB, 32 * MiB, "ext4", "LINUX"));
        g_free(image_mkfs_at(image, 33 * MiB, 32 * MiB, "vfat", "FAT"));
        return image;
}

static void check_nothing_mounted(Harness *h, const char *node)
{
        g_autoptr(GPtrArray) targets = targets_of(node);

        for (guint i = 0; i < targets->len; i++)
                g_test_fail_printf("%s is mounted on %s", node, (char *)targets->pdata[i]);
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);
}

typedef struct OptionCase {
        const char *options;
        const char *needle; /* what the error message must name */
} OptionCase;

static void test_option_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const OptionCase *c = h->options->data;
        g_autofree char *image = make_two_partitions(h, "options.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        give_image_to(image, HARNESS_USER_A);
        device = user_attach(h, HARNESS_USER_A, image, true);
        REQUIRE_NONNULL(device);

        for (guint p = 1; p <= 2; p++) {
                g_autofree char *node = g_strdup_printf("%sp%u", device, p);
                g_autofree char *mount_point = NULL;
                g_autoptr(GError) error = NULL;
                g_auto(HarnessRun) run = { 0 };

                /* Raw D-Bus, with and without read-only. */
                mount_point = harness_mount(a, node, mount_options(c->options, FALSE), &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, c->needle);
                g_assert_null(mount_point);
                check_nothing_mounted(h, node);
                g_clear_error(&error);
                g_clear_pointer(&mount_point, g_free);
                mount_point = harness_mount(a, node, mount_options(c->options, TRUE), &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, c->needle);
                g_assert_null(mount_point);
                check_nothing_mounted(h, node);

                /* And what a user types. */
                g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", "--options", c->options,
                                        node, NULL),
                        ==, 1);
                g_assert_nonnull(strstr(run.err, "loopctl: "));
                check_nothing_mounted(h, node);
        }

        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

static const OptionCase option_suid = { "suid", "'suid'" };
static const OptionCase option_dev = { "dev", "'dev'" };
static const OptionCase option_uid_0 = { "uid=0", "'uid=0'" };
static const OptionCase option_ro_suid = { "ro,suid", "'suid'" };
/* On ext4 shortname= is foreign; through fusefat (no kernel vfat here) it is refused as well, since the
 * helper has no such option: either way the smuggled uid=0 never reaches a mount. */
static const OptionCase option_comma_uid = { "shortname=lower,uid=0", "options" };
static const OptionCase option_x_foo = { "x-foo", "'x-foo'" };
static const OptionCase option_newline = { "noatime\nsuid", "options" };
static const HarnessOptions opts_option_suid = { .data = &option_suid };
static const HarnessOptions opts_option_dev = { .data = &option_dev };
static const HarnessOptions opts_option_uid_0 = { .data = &option_uid_0 };
static const HarnessOptions opts_option_ro_suid = { .data = &option_ro_suid };
static const HarnessOptions opts_option_comma_uid = { .data = &option_comma_uid };
static const HarnessOptions opts_option_x_foo = { .data = &option_x_foo };
static const HarnessOptions opts_option_newline = { .data = &option_newline };

/* Ten "é": strings that a 32- or 64-byte cut would split in the middle of a character. */
#define E_ACUTE_10 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"

/* fstype names a filesystem, never tmpfs, proc, a FUSE type or anything smuggling options. */
static void test_fstype_outside_the_list_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "fstype.img"), *device = NULL, *node = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const char *const fstypes[] = { "tmpfs", "proc", "fuse", "fuse.sshfs", "overlay", "ext4,uid=0",
                "../ext4", "ext4\n", "ext" E_ACUTE_10 E_ACUTE_10, NULL };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        node = g_strconcat(device, "p1", NULL);
        for (const char *const *t = fstypes; *t; t++) {
                GVariantBuilder b;
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = NULL;
                g_autofree char *remote = NULL;

                g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
                g_variant_builder_add(&b, "{sv}", "fstype", g_variant_new_string(*t));
                mount_point = harness_mount(a, node, g_variant_builder_end(&b), &error);
                g_assert_null(mount_point);
                g_assert_nonnull(error);
                remote = error ? g_dbus_error_get_remote_error(error) : NULL;
                if (g_strcmp0(remote, LOOPD_ERROR_INVALID_ARGUMENT) != 0 &&
                        g_strcmp0(remote, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM) != 0)
                        g_test_fail_printf(
                                "fstype '%s': expected InvalidArgument or UnsupportedFilesystem, got %s", *t,
                                remote ? remote : "success");
                check_nothing_mounted(h, node);
        }

        /* A filesystem loopd knows, but not the one there: the mount fails, and leaves nothing behind. */
        for (const char *const *t = (const char *const[]){ "xfs", "vfat", "iso9660", NULL }; *t; t++) {
                GVariantBuilder b;
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = NULL;

                g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
                g_variant_builder_add(&b, "{sv}", "fstype", g_variant_new_string(*t));
                mount_point = harness_mount(a, node, g_variant_builder_end(&b), &error);
                g_assert_null(mount_point);
                g_assert_nonnull(error);
                check_nothing_mounted(h, node);
        }
        g_assert_true(loopd_alive(h));
        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
}

/* loopd is not a general disk mounter: anything but a loop device or loop partition is NotManaged. */
static void test_non_loop_node_not_managed(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GDir) blocks = g_dir_open("/sys/class/block", 0, NULL);
        g_auto(HarnessRun) run = { 0 };
        const char *e;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_ptr_array_add(nodes, g_strdup("/dev/vda1"));
        /* Whatever real disks this machine has. */
        while (blocks && (e = g_dir_read_name(blocks)))
                if (!g_str_has_prefix(e, "loop") && !g_str_has_prefix(e, "zram") &&
                        !g_str_has_prefix(e, "ram"))
                        g_ptr_array_add(nodes, g_strconcat("/dev/", e, NULL));
        g_ptr_array_add(nodes, g_strdup("/dev/loop0/../vda"));
        g_ptr_array_add(nodes, g_strdup("/dev/zero"));
        g_ptr_array_add(nodes, g_strdup("/dev/loop-control"));
        g_ptr_array_add(nodes, g_strdup("loop00"));
        g_ptr_array_add(nodes, g_strdup("/dev/loop1p0"));
        g_ptr_array_add(nodes, g_strdup("/tmp"));
        /* Too long, and cut in the middle of a character if the error message quotes 64 bytes of it. */
        g_ptr_array_add(nodes, g_strconcat("/dev/loop", E_ACUTE_10, E_ACUTE_10, E_ACUTE_10, NULL));
        g_assert_cmpuint(nodes->len, >=, 8);

        for (guint i = 0; i < nodes->len; i++) {
                const char *node = nodes->pdata[i];
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, node, NULL, &error);

                g_test_message("Mount(%s)", node);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MANAGED, NULL);
                g_assert_null(mount_point);
                if (g_str_has_prefix(node, "/dev/") && g_file_test(node, G_FILE_TEST_EXISTS)) {
                        g_autoptr(GPtrArray) targets = targets_of(node);
                        /* Only what was mounted before (the root disk): nothing under the media dir. */
                        for (guint j = 0; j < targets->len; j++)
                                if (g_str_has_prefix(targets->pdata[j], h->media_dir))
                                        g_test_fail_printf(
                                                "%s is mounted on %s", node, (char *)targets->pdata[j]);
                }
        }
        g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);

        /* Unmount of the root filesystem's mount point or its disk: not a loop device either. */
        for (const char *const *t = (const char *const[]){ "/", "/dev/vda", NULL }; *t; t++) {
                g_autoptr(GError) error = NULL;
                g_assert_false(harness_unmount(a, *t, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MANAGED, NULL);
        }
        g_autoptr(JsonObject) root = findmnt_at("/");
        g_assert_nonnull(root);

        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", "/dev/vda1", NULL), ==, 1);
        g_assert_true(loopd_alive(h));
}

/* ---------------------------------------------------------------------------------------------------- */
/* nosuid,nodev in effect, not just in the table */

static void test_setuid_and_device_nodes_inert(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "suid.img"), *device = NULL, *mount_point = NULL;
        g_autofree char *id = NULL, *null = NULL, *out = NULL, *want = NULL;

        harness_allow_all(h);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "SUID"));
        populate(h, image, 0,
                "cp /usr/bin/id \"$M/id\"; chown root:root \"$M/id\"; chmod 4755 \"$M/id\"; "
                "mknod -m 0666 \"$M/null\" c 1 3");
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = user_mount(h, HARNESS_USER_A, device, false);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        id = g_build_filename(mount_point, "id", NULL);
        null = g_build_filename(mount_point, "null", NULL);
        struct stat st;
        g_assert_cmpint(stat(id, &st), ==, 0);
        g_assert_true(st.st_mode & S_ISUID); /* the bit is there: nosuid is what makes it inert */
        const char *run_id[] = { id, "-u", NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_A, &out, run_id), ==, 0);
        want = g_strdup_printf("%u\n", (unsigned)harness_uid_of(HARNESS_USER_A));
        g_assert_cmpstr(out, ==, want);
        const char *open_null[] = { "cat", null, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_A, NULL, open_null), !=, 0);

        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_unmounted(mount_point);
        check_gone(h, device);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Unmount, close, autoclear */

/* Unmount by node or by mount point (a trailing slash is fine) removes the directory every time. */
static void test_unmount_removes_mount_point(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "um.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(image, 32 * MiB);
        g_free(image_mkfs_at(image, 0, 32 * MiB, "ext4", "UM"));
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);

        for (int round = 0; round < 3; round++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, device, NULL, &error);
                g_autofree char *target = NULL;

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
                target = round == 0  ? g_strdup(device)
                        : round == 1 ? g_strdup(mount_point)
                                     : g_strconcat(mount_point, "/", NULL);
                g_test_message("Unmount(%s)", target);
                g_assert_true(harness_unmount(a, target, &error));
                harness_assert_no_error(error);
                check_unmounted(mount_point);
                check_user_dir_empty(h, HARNESS_USER_A);
        }
        g_assert_true(harness_detach(a, device, NULL, NULL));
        check_gone(h, device);
}

/* `loopctl close` unmounts everything of the device, removes the directories, the partitions and the
 * device. */
static void test_close_leaves_nothing(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "close.img"), *device = NULL;
        g_autofree char *p1 = NULL, *p2 = NULL, *mp1 = NULL, *mp2 = NULL;

        harness_allow_all(h);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        g_autoptr(GPtrArray) parts = oracle_partition_nodes(device);
        g_assert_cmpuint(parts->len, ==, 2);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        mp1 = user_mount(h, HARNESS_USER_A, p1, false);
        mp2 = user_mount(h, HARNESS_USER_A, p2, false);
        g_assert_true(check_mount(h, HARNESS_USER_A, p1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, p2, mp2, NULL));

        user_loopctl_ok(h, HARNESS_USER_A, "close", image);
        if (mp1)
                check_unmounted(mp1);
        if (mp2)
                check_unmounted(mp2);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* Whether /dev/loopN is bound to a file under dir (a number can be re-used by anyone once it is free). */
static bool loop_bound_under(const char *device, const char *dir)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(dir);

        for (guint i = 0; i < loops->len; i++)
                if (g_str_equal(loops->pdata[i], device))
                        return true;
        return false;
}

/* MountImage's device is autoclear: it stays while anything of it is mounted and goes, partitions and all,
 * with the last Unmount. */
static void test_mount_image_autoclear_goes_with_last_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "auto.img"), *device = NULL, *p1 = NULL, *p2 = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GVariant) reply = NULL;
        g_autoptr(GError) error = NULL;
        const char *mp1, *mp2;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(reply);
        g_variant_get_child(reply, 0, "s", &device);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        mp1 = reply_mount_point(reply, p1);
        mp2 = reply_mount_point(reply, p2);
        g_assert_true(check_mount(h, HARNESS_USER_A, p1, mp1, "ext4"));
        g_assert_true(check_mount(h, HARNESS_USER_A, p2, mp2, NULL));
        g_autoptr(GVariant) mounts = g_variant_get_child_value(reply, 1);
        g_assert_cmpuint(g_variant_n_children(mounts), ==, 2);
        REQUIRE_NONNULL(mp1);
        REQUIRE_NONNULL(mp2);
        g_assert_true(mount_is_read_only(mp1));
        g_assert_true(mount_is_read_only(mp2));
        g_autofree char *sys_autoclear = g_strdup_printf("/sys/block/%s/loop/autoclear", device + 5),
                        *ac = NULL;
        g_assert_true(g_file_get_contents(sys_autoclear, &ac, NULL, NULL));
        g_assert_cmpstr(g_strstrip(ac), ==, "1");

        g_assert_true(harness_unmount(a, mp1, &error));
        harness_assert_no_error(error);
        check_unmounted(mp1);
        /* One mount left: the device stays, with both partitions. */
        g_assert_true(loop_bound_under(device, h->tmpdir));
        g_autoptr(GPtrArray) parts = oracle_partition_nodes(device);
        g_assert_cmpuint(parts->len, ==, 2);

        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);
        check_unmounted(mp2);
        g_assert_false(loop_bound_under(device, h->tmpdir));
        g_autofree char *sys_backing = g_strdup_printf("/sys/block/%s/loop/backing_file", device + 5);
        if (!g_file_test(sys_backing, G_FILE_TEST_EXISTS))
                check_gone(h, device);
        else
                g_test_message(
                        "%s was re-used by someone else at once; not checking its partitions", device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The errors of the contract */

static void test_second_mount_already_mounted(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "twice.img"), *device = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);

        /* The kernel's driver (ext4) and a FUSE helper's mount (vfat) alike. */
        for (guint p = 1; p <= 2; p++) {
                g_autofree char *node = g_strdup_printf("%sp%u", device, p);
                g_autoptr(GError) error = NULL;
                g_autofree char *mount_point = harness_mount(a, node, NULL, &error), *again = NULL;
                g_auto(HarnessRun) run = { 0 };

                harness_assert_no_error(error);
                REQUIRE_NONNULL(mount_point);
                again = harness_mount(a, node, NULL, &error);
                harness_assert_dbus_error(error, LOOPD_ERROR_ALREADY_MOUNTED, mount_point);
                g_assert_null(again);
                g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", node, NULL), ==, 1);
                g_autoptr(GPtrArray) targets = targets_of(node);
                g_assert_cmpuint(targets->len, ==, 1);
                g_autoptr(GPtrArray) entries = user_dir_entries(h, HARNESS_USER_A);
                g_assert_cmpuint(entries->len, ==, p);
        }
        user_loopctl_ok(h, HARNESS_USER_A, "close", device);
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}

static void test_unmount_not_mounted(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "nm.img"), *device = NULL, *p1 = NULL,
                        *mount_point = NULL;
        g_autofree char *not_a_mount = g_build_filename(h->tmpdir, "plain-dir", NULL);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_assert_cmpint(g_mkdir(not_a_mount, 0755), ==, 0);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        p1 = g_strconcat(device, "p1", NULL);

        /* Never mounted. */
        g_assert_false(harness_unmount(a, p1, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, not_a_mount, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_true(g_file_test(not_a_mount, G_FILE_TEST_IS_DIR)); /* not loopd's to remove */

        /* Mounted and unmounted: a second Unmount, by node or by the old mount point. */
        mount_point = harness_mount(a, p1, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(harness_unmount(a, p1, &error));
        harness_assert_no_error(error);
        g_assert_false(harness_unmount(a, p1, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(a, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "unmount", p1, NULL), ==, 1);

        user_loopctl_ok(h, HARNESS_USER_A, "detach", device);
        check_gone(h, device);
        g_assert_true(loopd_alive(h));
}

/* MountImage of images without a mountable filesystem: NothingToMount, and the attach is rolled back. */
static void test_mount_image_nothing_to_mount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *zeros = harness_image_path(h, "zeros.img"),
                        *empty = harness_image_path(h, "empty-parts.img");
        g_autofree char *swap = harness_image_path(h, "swap.img");
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        const char *const images[] = { zeros, empty, swap, NULL };
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        image_create(zeros, 16 * MiB);
        image_create(empty, 16 * MiB);
        image_sfdisk(empty, "label: gpt\nsize=4MiB\nsize=4MiB\n", 0);
        image_create(swap, 16 * MiB);
        g_free(image_mkfs_at(swap, 0, 16 * MiB, "swap", "SWAP"));

        for (const char *const *i = images; *i; i++) {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) reply = call_mount_image(a, *i, O_RDONLY, NULL, &error);

                g_test_message("MountImage(%s)", *i);
                g_assert_null(reply);
                harness_assert_dbus_error(error, LOOPD_ERROR_NOTHING_TO_MOUNT, NULL);
                check_gone(h, "/dev/loop-none");
                g_assert_cmpuint(check_media_mounts_safe(h), ==, 0);
                check_user_dir_empty(h, HARNESS_USER_A);
        }
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "open", zeros, NULL), ==, 1);
        check_gone(h, "/dev/loop-none");
        g_assert_true(loopd_alive(h));
}

/* minix: blkid knows it, this kernel has no driver for it (not in /proc/filesystems, no modules) and no
 * FUSE helper exists: UnsupportedFilesystem naming the type, through Mount and MountImage alike. */
static void test_unsupported_filesystem(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "minix.img"), *qimage = g_shell_quote(image),
                        *device = NULL;
        g_autofree char *filesystems = NULL, *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_assert_true(g_file_get_contents("/proc/filesystems", &filesystems, NULL, NULL));
        if (strstr(filesystems, "\tminix\n")) {
                g_test_skip("this kernel has a minix driver: minix is no unsupported filesystem here");
                return;
        }
        image_create(image, 8 * MiB);
        g_free(test_sh("mkfs.minix -3 %s >/dev/null", qimage));
        g_autoptr(GHashTable) blkid = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(blkid, "TYPE"), ==, "minix");

        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM, "minix");
        g_assert_null(mount_point);
        check_nothing_mounted(h, device);
        g_clear_error(&error);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);

        g_autoptr(GVariant) reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        g_assert_null(reply);
        harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM, "minix");
        check_gone(h, "/dev/loop-none");
        check_user_dir_empty(h, HARNESS_USER_A);
        g_assert_true(loopd_alive(h));
}

/* The FUSE helper serving a mount is gone when Unmount returns: nothing holds the device any more. */
static void test_fuse_helper_exits_with_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "helper.iso"),
                        *tree = g_build_filename(h->tmpdir, "tree", NULL);
        g_autofree char *qimage = g_shell_quote(image), *qtree = g_shell_quote(tree);
        g_autofree char *device = NULL, *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo x > %s/x; xorriso -as mkisofs -quiet -o %s -V HELPER %s 2>/dev/null",
                qtree, qtree, qimage, qtree));
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "fuse"));
        g_autoptr(GPtrArray) serving = holders_of(rdev_of(device), "fuseiso");
        g_assert_cmpuint(serving->len, >=, 1); /* the oracle sees the helper */

        g_assert_true(harness_unmount(a, mount_point, &error));
        /* At once, before anything else runs: Unmount returns only once the helper is gone. */
        g_autoptr(GPtrArray) left = holders_of(rdev_of(device), "fuseiso");
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        for (guint i = 0; i < left->len; i++)
                g_test_fail_printf(
                        "process %s still holds %s after Unmount returned", (char *)left->pdata[i], device);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* A file open in the mount: Unmount is Busy and changes nothing, Detach without unmount is Busy too;
 * once the file is closed both work. */
static void test_unmount_busy_while_file_open(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "busy.img", "BUSY"), *device = NULL, *mount_point = NULL;
        g_autofree char *file = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        int fd;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        file = g_build_filename(mount_point, "home", NULL);
        fd = open(file, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        g_assert_false(harness_unmount(a, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, NULL);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        g_assert_false(harness_detach(a, device, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_BUSY, mount_point);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        close(fd);
        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* Another user can neither look into the user's mounts nor unmount them (manage-others is denied here). */
static void test_other_user_cannot_enter_or_unmount(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_user_ext4(h, "mine.img", "MINE"), *device = NULL, *mount_point = NULL;
        g_autofree char *file = NULL, *dir = user_dir(h, HARNESS_USER_A), *got = NULL, *again = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A),
                        *b = harness_connect_as(h, HARNESS_USER_B);
        g_autoptr(GError) error = NULL;

        fake_authority_set(h->authority, LOOPD_ACTION_ATTACH, FAKE_AUTH_ALLOW, 0);
        fake_authority_set(h->authority, LOOPD_ACTION_MOUNT, FAKE_AUTH_ALLOW, 0);
        REQUIRE_NONNULL(a);
        REQUIRE_NONNULL(b);
        populate(h, image, 0, "echo private > \"$M/home/secret\"; chmod 0644 \"$M/home/secret\"");
        device = user_attach(h, HARNESS_USER_A, image, false);
        REQUIRE_NONNULL(device);
        mount_point = harness_mount(a, device, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));
        file = g_build_filename(mount_point, "home", "secret", NULL);

        got = read_as(h, HARNESS_USER_A, file);
        g_assert_cmpstr(got, ==, "private\n");
        g_clear_pointer(&got, g_free);
        got = read_as(h, HARNESS_USER_B, file);
        g_assert_null(got);
        const char *ls[] = { "ls", dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, ls), !=, 0);

        g_assert_false(harness_unmount(b, mount_point, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_false(harness_unmount(b, device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        g_assert_true(check_mount(h, HARNESS_USER_A, device, mount_point, "ext4"));

        g_assert_true(harness_unmount(a, mount_point, &error));
        harness_assert_no_error(error);
        again = harness_mount(b, device, NULL, &error);
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_assert_null(again);
        g_clear_error(&error);
        check_nothing_mounted(h, device);
        g_autoptr(GPtrArray) b_entries = user_dir_entries(h, HARNESS_USER_B);
        g_assert_cmpuint(b_entries->len, ==, 0);

        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

/* Any user can make a FUSE mount and call its source "/dev/loopN" (fusermount takes fsname=). Such a mount
 * of another user's is not the device's: the owner's Mount, Unmount and autoclear are not fooled by it,
 * and loopd never unmounts it. */
static void test_user_fuse_mount_posing_as_device_ignored(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "real.img"), *device = NULL, *p1 = NULL, *p2 = NULL;
        g_autofree char *decoy = harness_image_path(h, "decoy.sqfs"),
                        *decoy_dir = g_build_filename(h->tmpdir, "decoy", NULL);
        g_autofree char *tree = g_build_filename(h->tmpdir, "decoy-tree", NULL), *fsname = NULL;
        g_autofree char *qdecoy = g_shell_quote(decoy), *qtree = g_shell_quote(tree), *mount_point = NULL;
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        const char *mp1;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo decoy > %s/decoy; mksquashfs %s %s -quiet -no-progress >/dev/null; "
                "chmod 0644 %s",
                qtree, qtree, qtree, qdecoy, qdecoy));
        g_assert_cmpint(g_mkdir(decoy_dir, 0755), ==, 0);
        g_assert_cmpint(
                chown(decoy_dir, harness_uid_of(HARNESS_USER_B), harness_gid_of(HARNESS_USER_B)), ==, 0);

        /* A's device, attached autoclear through MountImage; its vfat partition is a FUSE mount. */
        reply = call_mount_image(a, image, O_RDONLY, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(reply);
        g_variant_get_child(reply, 0, "s", &device);
        p1 = g_strconcat(device, "p1", NULL);
        p2 = g_strconcat(device, "p2", NULL);
        mp1 = reply_mount_point(reply, p1);
        REQUIRE_NONNULL(mp1);
        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);

        /* B's decoy, named after A's partition. */
        fsname = g_strconcat("fsname=", p2, NULL);
        const char *squashfuse[] = { "squashfuse", "-o", fsname, decoy, decoy_dir, NULL };
        if (run_as(h, HARNESS_USER_B, NULL, squashfuse) != 0) {
                g_test_skip("an unprivileged user cannot make a FUSE mount here (fusermount)");
                user_loopctl_ok(h, HARNESS_USER_A, "close", device);
                return;
        }
        g_autoptr(JsonObject) fake = findmnt_at(decoy_dir);
        REQUIRE_NONNULL(fake);
        g_assert_cmpstr(json_object_get_string_member(fake, "source"), ==, p2);

        /* Unmount by the decoy's path is not an unmount of A's partition: root never unmounts it. */
        g_assert_false(harness_unmount(a, decoy_dir, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);
        g_autoptr(JsonObject) fake_still = findmnt_at(decoy_dir);
        g_assert_nonnull(fake_still);

        /* Mount is not AlreadyMounted, and Unmount takes down A's mount, not B's. */
        mount_point = harness_mount(a, p2, NULL, &error);
        harness_assert_no_error(error);
        REQUIRE_NONNULL(mount_point);
        g_assert_true(harness_unmount(a, p2, &error));
        harness_assert_no_error(error);
        check_unmounted(mount_point);
        g_assert_false(harness_unmount(a, p2, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_MOUNTED, NULL);
        g_clear_error(&error);

        /* The last real mount goes: the autoclear device goes with it, whatever B's decoy says. */
        g_assert_true(harness_unmount(a, mp1, &error));
        harness_assert_no_error(error);
        g_assert_false(loop_bound_under(device, h->tmpdir));

        /* B's mount was never loopd's to touch. */
        g_autoptr(JsonObject) still = findmnt_at(decoy_dir);
        g_assert_nonnull(still);
        const char *fusermount[] = { "fusermount3", "-u", decoy_dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, fusermount), ==, 0);
        check_user_dir_empty(h, HARNESS_USER_A);
}

/* A user's FUSE decoy named after another user's device, mounted and unmounted again, is not that device's
 * last unmount: an autoclear device nobody has mounted yet stays attached. */
static void test_user_fuse_decoy_does_not_release_autoclear(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "victim.img"), *device = NULL, *fsname = NULL;
        g_autofree char *decoy = harness_image_path(h, "decoy.sqfs"),
                        *decoy_dir = g_build_filename(h->tmpdir, "decoy", NULL);
        g_autofree char *tree = g_build_filename(h->tmpdir, "decoy-tree", NULL);
        g_autofree char *qdecoy = g_shell_quote(decoy), *qtree = g_shell_quote(tree);
        GDBusConnection *a = harness_connect_as(h, HARNESS_USER_A);
        g_autoptr(GError) error = NULL;

        harness_allow_all(h);
        REQUIRE_NONNULL(a);
        g_free(test_sh(
                "set -e; mkdir -p %s; echo decoy > %s/decoy; mksquashfs %s %s -quiet -no-progress >/dev/null; "
                "chmod 0644 %s",
                qtree, qtree, qtree, qdecoy, qdecoy));
        g_assert_cmpint(g_mkdir(decoy_dir, 0755), ==, 0);
        g_assert_cmpint(
                chown(decoy_dir, harness_uid_of(HARNESS_USER_B), harness_gid_of(HARNESS_USER_B)), ==, 0);

        g_assert_true(harness_attach_path(
                a, image, O_RDONLY, g_variant_new_parsed("{'autoclear': <true>}"), &device, &error));
        harness_assert_no_error(error);
        REQUIRE_NONNULL(device);

        fsname = g_strconcat("fsname=", device, NULL);
        const char *squashfuse[] = { "squashfuse", "-o", fsname, decoy, decoy_dir, NULL };
        if (run_as(h, HARNESS_USER_B, NULL, squashfuse) != 0) {
                g_test_skip("an unprivileged user cannot make a FUSE mount here (fusermount)");
                g_assert_true(harness_detach(a, device, NULL, NULL));
                return;
        }
        const char *fusermount[] = { "fusermount3", "-u", decoy_dir, NULL };
        g_assert_cmpint(run_as(h, HARNESS_USER_B, NULL, fusermount), ==, 0);

        /* loopd hears of both mount table changes within milliseconds; releasing would be as quick. */
        for (int i = 0; i < 40; i++) {
                g_usleep(50 * 1000);
                g_assert_true(loop_bound_under(device, h->tmpdir));
        }
        g_assert_true(harness_detach(a, device, NULL, &error));
        harness_assert_no_error(error);
        check_gone(h, device);
}

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);

        harness_add("/loopd/mount/ext4-file-read-back-by-user", test_filesystem_read_back, &opts_ext4);
        harness_add("/loopd/mount/xfs-read-only-device-file-read-back-by-user", test_filesystem_read_back,
                &opts_xfs);
        harness_add("/loopd/mount/btrfs-file-read-back-by-user", test_filesystem_read_back, &opts_btrfs);
        harness_add(
                "/loopd/mount/squashfs-file-read-back-by-user", test_filesystem_read_back, &opts_squashfs);
        harness_add("/loopd/mount/iso9660-files-owned-by-caller", test_iso9660_owned_by_caller, NULL);
        harness_add("/loopd/mount/vfat-partition-files-owned-by-caller", test_vfat_partition_owned_by_caller,
                NULL);
        harness_add("/loopd/open/hybrid-iso-mounts-both", test_open_hybrid_iso_mounts_both, NULL);

        harness_add("/loopd/mount/read-write-persists-after-reattach",
                test_read_write_persists_after_reattach, NULL);
        harness_add("/loopd/mount/read-only-refuses-writes", test_read_only_refuses_writes, NULL);

        harness_add(
                "/loopd/mount/label-dot-dot-etc-stays-inside", test_hostile_label, &opts_label_dot_dot_etc);
        harness_add("/loopd/mount/label-with-slash-stays-inside", test_hostile_label, &opts_label_slash);
        harness_add("/loopd/mount/label-dot-falls-back-to-uuid", test_hostile_label, &opts_label_dot);
        harness_add(
                "/loopd/mount/label-dot-dot-falls-back-to-uuid", test_hostile_label, &opts_label_dot_dot);
        harness_add("/loopd/mount/label-300-bytes-is-bounded", test_hostile_label, &opts_label_300_bytes);
        harness_add("/loopd/mount/label-254-bytes-is-bounded", test_hostile_label, &opts_label_254_bytes);
        harness_add(
                "/loopd/mount/label-control-characters-replaced", test_hostile_label, &opts_label_control);
        harness_add("/loopd/mount/label-format-string-is-literal", test_hostile_label, &opts_label_format);
        harness_add("/loopd/mount/label-invalid-utf8-replaced", test_hostile_label, &opts_label_bad_utf8);
        harness_add("/loopd/mount/same-label-twice-distinct", test_same_label_twice_distinct, NULL);
        harness_add("/loopd/mount/label-invalid-utf8-listed-as-utf8", test_label_invalid_utf8_listed_as_utf8,
                NULL);

        harness_add("/loopd/mount/option-suid-refused", test_option_refused, &opts_option_suid);
        harness_add("/loopd/mount/option-dev-refused", test_option_refused, &opts_option_dev);
        harness_add("/loopd/mount/option-uid-0-refused", test_option_refused, &opts_option_uid_0);
        harness_add("/loopd/mount/option-ro-suid-refused", test_option_refused, &opts_option_ro_suid);
        harness_add("/loopd/mount/option-comma-smuggled-uid-refused", test_option_refused,
                &opts_option_comma_uid);
        harness_add("/loopd/mount/option-x-foo-refused", test_option_refused, &opts_option_x_foo);
        harness_add("/loopd/mount/option-newline-refused", test_option_refused, &opts_option_newline);
        harness_add(
                "/loopd/mount/fstype-outside-the-list-refused", test_fstype_outside_the_list_refused, NULL);
        harness_add("/loopd/mount/non-loop-node-not-managed", test_non_loop_node_not_managed, NULL);
        harness_add("/loopd/mount/setuid-and-device-nodes-inert", test_setuid_and_device_nodes_inert, NULL);

        harness_add("/loopd/unmount/removes-mount-point", test_unmount_removes_mount_point, NULL);
        harness_add("/loopd/mount/user-fuse-decoy-does-not-release-autoclear",
                test_user_fuse_decoy_does_not_release_autoclear, NULL);
        harness_add("/loopd/close/leaves-no-device-or-partition-nodes", test_close_leaves_nothing, NULL);
        harness_add("/loopd/open/autoclear-device-goes-with-last-unmount",
                test_mount_image_autoclear_goes_with_last_unmount, NULL);

        harness_add("/loopd/mount/second-mount-already-mounted", test_second_mount_already_mounted, NULL);
        harness_add("/loopd/unmount/not-mounted", test_unmount_not_mounted, NULL);
        harness_add("/loopd/open/nothing-to-mount-rolls-back", test_mount_image_nothing_to_mount, NULL);
        harness_add("/loopd/mount/minix-unsupported-filesystem", test_unsupported_filesystem, NULL);
        harness_add("/loopd/unmount/fuse-helper-exits", test_fuse_helper_exits_with_unmount, NULL);
        harness_add("/loopd/unmount/busy-while-file-open", test_unmount_busy_while_file_open, NULL);
        harness_add("/loopd/mount/other-user-cannot-enter-or-unmount",
                test_other_user_cannot_enter_or_unmount, NULL);
        harness_add("/loopd/mount/user-fuse-mount-posing-as-device-ignored",
                test_user_fuse_mount_posing_as_device_ignored, NULL);

        return g_test_run();
}
