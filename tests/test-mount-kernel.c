/* test-mount-kernel.c: real mounts through the mount library: kernel filesystems, FUSE helpers, mount
 * points and the mount table (root, loop devices). */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "images.h"
#include "mount.h"

#define USER_UID 65534 /* nobody: the user the mounts are for */
#define OTHER_UID 65533 /* another unprivileged user, who must not get in */
#define MB (1024 * 1024)

typedef struct Fixture {
        bool ready;
        char *dir; /* the test's directory, mode 0755 */
        char *media; /* <dir>/media: the media directory, made by the library */
        GPtrArray *targets; /* mount points the test made; teardown makes sure they are gone */
        GPtrArray *devices; /* loop devices the test attached; teardown detaches them */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
        f->targets = g_ptr_array_new_with_free_func(g_free);
        f->devices = g_ptr_array_new_with_free_func(g_free);
        if (!test_require_privileges())
                return;
        f->dir = test_tmpdir_new();
        f->media = g_build_filename(f->dir, "media", NULL);
        f->ready = true;
}

/* Takes down whatever the test left, even when it failed halfway: only mounts it made and loop devices
 * backed by its own files. */
static void fixture_teardown(Fixture *f, gconstpointer data)
{
        for (guint i = 0; i < f->targets->len; i++) {
                const char *t = f->targets->pdata[i];
                g_autofree char *q = g_shell_quote(t);

                if (test_sh_status(NULL, "mountpoint -q %s", q) == 0) {
                        g_test_message("teardown: %s is still mounted", t);
                        (void)test_sh_status(NULL, "umount %s || umount -l %s", q, q);
                }
        }
        for (guint i = 0; i < f->devices->len; i++) {
                g_autofree char *q = g_shell_quote(f->devices->pdata[i]);
                (void)test_sh_status(NULL, "losetup --detach %s", q);
        }
        if (f->dir) {
                /* Only reports (and cleans) something when the above missed it. */
                test_cleanup_loops_under(f->dir);
                g_autoptr(GPtrArray) left = oracle_loops_backed_by(f->dir);
                g_assert_cmpuint(left->len, ==, 0);
                test_tmpdir_remove(f->dir);
        }
        g_ptr_array_unref(f->targets);
        g_ptr_array_unref(f->devices);
        g_free(f->media);
        g_free(f->dir);
}

#define TEST(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
#define REQUIRE(f)               \
        do {                     \
                if (!(f)->ready) \
                        return;  \
        } while (0)

/* ---- helpers ---- */

static char *path_in(Fixture *f, const char *name)
{
        return g_build_filename(f->dir, name, NULL);
}

/* Attaches image (read-only if asked) to a free loop device; teardown detaches it. */
static char *attach(Fixture *f, const char *image, bool read_only)
{
        g_autofree char *q = g_shell_quote(image);
        char *dev = test_sh("losetup --find --show %s %s", read_only ? "--read-only" : "", q);

        g_strstrip(dev);
        g_ptr_array_add(f->devices, g_strdup(dev));
        return dev;
}

static dev_t devnum_of(const char *node)
{
        struct stat st;

        g_assert_cmpint(stat(node, &st), ==, 0);
        return st.st_rdev;
}

/* Writes files into a fresh filesystem with mount(8) before the test mounts it through the library:
 * hello.txt, a setuid-root copy of id(1) and a world-writable /dev/null node. */
static void populate(Fixture *f, const char *node, const char *text)
{
        g_autofree char *w = path_in(f, "populate");
        g_autofree char *qw = g_shell_quote(w), *qn = g_shell_quote(node), *qt = g_shell_quote(text);

        g_assert_cmpint(g_mkdir_with_parents(w, 0755), ==, 0);
        g_free(test_sh("set -e; mount %s %s; trap 'umount %s' EXIT; "
                       "printf '%%s' %s > %s/hello.txt; chmod 0644 %s/hello.txt; "
                       "cp /usr/bin/id %s/id; chown root:root %s/id; chmod 4755 %s/id; "
                       "mknod -m 0666 %s/null c 1 3; chmod 0755 %s",
                qn, qw, qw, qt, qw, qw, qw, qw, qw, qw, qw));
}

static char *findmnt(const char *target, const char *column)
{
        g_autofree char *q = g_shell_quote(target);
        char *out = test_sh("findmnt --noheadings --first-only --output %s --mountpoint %s", column, q);

        return g_strstrip(out);
}

static bool is_mountpoint(const char *path)
{
        g_autofree char *q = g_shell_quote(path);

        return test_sh_status(NULL, "mountpoint -q %s", q) == 0;
}

/* Runs a shell line as uid (setpriv, no groups); returns the exit status and stdout. */
static int sh_as(uid_t uid, char **ret_out, const char *line)
{
        g_autofree char *q = g_shell_quote(line);

        return test_sh_status(ret_out, "setpriv --reuid=%u --regid=%u --clear-groups /bin/sh -c %s",
                (unsigned)uid, (unsigned)uid, q);
}

/* Options, mount point and mount for uid, as the daemon does it. fuse: -1 = as mount_pick_driver() says.
 * Returns the mount point or NULL (the test has failed then, unless expect_error). */
static char *mount_for(Fixture *f, const char *node, const char *fstype, const char *user_options,
        bool read_only, int fuse, const char *name, int *ret_r)
{
        g_autofree char *options = NULL, *bad = NULL, *target = NULL;
        bool use_fuse = fuse > 0;
        int r;

        if (fuse < 0) {
                r = mount_pick_driver(fstype, &use_fuse);
                g_assert_cmpint(r, ==, 0);
                if (r < 0)
                        return NULL;
        }
        r = mount_options_build(
                fstype, user_options, read_only, use_fuse, USER_UID, USER_UID, node, &options, &bad);
        if (r < 0)
                g_test_message("options refused: %s (%s)", g_strerror(-r), bad ? bad : "");
        g_assert_cmpint(r, ==, 0);
        if (r < 0)
                return NULL;
        r = mount_point_create(f->media, "user", USER_UID, USER_UID, name, &target);
        g_assert_cmpint(r, ==, 0);
        if (r < 0)
                return NULL;
        g_ptr_array_add(f->targets, g_strdup(target));

        g_test_message(
                "mounting %s (%s%s) on %s with %s", node, fstype, use_fuse ? ", FUSE" : "", target, options);
        r = mount_filesystem(node, target, fstype, options, use_fuse);
        if (ret_r)
                *ret_r = r;
        if (r < 0) {
                if (!ret_r)
                        g_test_message("mount_filesystem: %s", g_strerror(-r));
                g_assert_true(ret_r != NULL);
                g_assert_false(is_mountpoint(target));
                g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
                return NULL;
        }
        return g_steal_pointer(&target);
}

/* What every mount for a user must look like, from findmnt(8), an oracle independent of libmount. */
static void assert_safe_mount(const char *target, const char *node, bool fuse)
{
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_autofree char *source = findmnt(target, "SOURCE");
        g_autofree char *fstype = findmnt(target, "FSTYPE");

        g_test_message("%s: %s %s %s", target, source, fstype, options);
        g_assert_true(test_options_have(options, "nosuid"));
        g_assert_true(test_options_have(options, "nodev"));
        g_assert_cmpstr(source, ==, node);
        if (fuse) {
                g_assert_true(g_str_has_prefix(fstype, "fuse"));
                g_assert_true(test_options_have(options, "allow_other"));
        } else
                g_assert_false(g_str_has_prefix(fstype, "fuse"));
}

static void assert_found_in_mount_table(const char *node, const char *target)
{
        g_auto(GStrv) targets = NULL;
        g_autofree char *source = NULL;
        dev_t devnum = 0;

        g_assert_cmpint(mount_find_targets(devnum_of(node), node, &targets), ==, 0);
        g_assert_nonnull(targets);
        if (targets) {
                g_assert_cmpuint(g_strv_length(targets), ==, 1);
                g_assert_cmpstr(targets[0], ==, target);
        }
        g_assert_cmpint(mount_find_source(target, &source, &devnum), ==, 0);
        g_assert_cmpstr(source, ==, node);
        g_assert_cmpuint(devnum, ==, devnum_of(node));
}

static void assert_not_in_mount_table(const char *node, const char *target)
{
        g_auto(GStrv) targets = NULL;

        g_assert_cmpint(mount_find_targets(devnum_of(node), node, &targets), ==, 0);
        g_assert_nonnull(targets);
        if (targets)
                g_assert_cmpuint(g_strv_length(targets), ==, 0);
        g_assert_cmpint(mount_find_source(target, NULL, NULL), ==, -ENOENT);
}

static void unmount_and_remove(Fixture *f, const char *target)
{
        g_assert_cmpint(unmount_filesystem(target), ==, 0);
        g_assert_false(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
        g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
}

static char *read_as_user(const char *target, const char *file, uid_t uid, int *ret_status)
{
        g_autofree char *path = g_build_filename(target, file, NULL);
        g_autofree char *line = g_strdup_printf("cat '%s'", path);
        char *out = NULL;

        *ret_status = sh_as(uid, &out, line);
        return out;
}

static void assert_user_reads(const char *target, const char *file, const char *expected)
{
        int status;
        g_autofree char *out = read_as_user(target, file, USER_UID, &status);

        g_assert_cmpint(status, ==, 0);
        g_assert_cmpstr(out, ==, expected);
}

static void assert_other_user_kept_out(const char *target, const char *file)
{
        int status;
        g_autofree char *out = read_as_user(target, file, OTHER_UID, &status);

        g_assert_cmpint(status, !=, 0);
}

static char *sha256_of(const char *path)
{
        g_autofree char *q = g_shell_quote(path);
        char *out = test_sh("sha256sum < %s", q);

        return g_strstrip(out);
}

/* PIDs of FUSE helpers serving target (their command line names it). */
static GArray *helpers_serving(const char *target)
{
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        g_autoptr(GDir) d = g_dir_open("/proc", 0, NULL);
        const char *e;

        while (d && (e = g_dir_read_name(d))) {
                g_autofree char *file = NULL, *cmdline = NULL;
                gsize len = 0;
                bool match = false;

                if (e[0] < '1' || e[0] > '9')
                        continue;
                file = g_strdup_printf("/proc/%s/cmdline", e);
                if (!g_file_get_contents(file, &cmdline, &len, NULL))
                        continue;
                for (gsize i = 0; i < len; i += strlen(cmdline + i) + 1)
                        match = match || g_str_equal(cmdline + i, target);
                if (match) {
                        pid_t pid = (pid_t)atoi(e);
                        g_array_append_val(pids, pid);
                }
        }
        return pids;
}

/* Gone, or a zombie waiting for its reaper: it has exited either way. */
static bool process_exited(pid_t pid)
{
        g_autofree char *file = g_strdup_printf("/proc/%d/stat", (int)pid);
        g_autofree char *stat = NULL;
        const char *p;

        if (!g_file_get_contents(file, &stat, NULL, NULL))
                return true;
        p = strrchr(stat, ')');
        return p && p[1] == ' ' && p[2] == 'Z';
}

/* Unmounts a FUSE mount and checks that its helper has exited by the time unmount_filesystem() returns. */
static void fuse_unmount_and_check_helper(Fixture *f, const char *target)
{
        g_autoptr(GArray) pids = helpers_serving(target);

        g_assert_cmpuint(pids->len, ==, 1);
        g_assert_cmpint(unmount_filesystem(target), ==, 0);
        for (guint i = 0; i < pids->len; i++)
                g_assert_true(process_exited(g_array_index(pids, pid_t, i)));
        g_assert_false(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

/* ---- mount points ---- */

/* The POSIX ACL of path as (tag, perm, id) triples. */
static GArray *acl_of(const char *path)
{
        GArray *entries = g_array_new(FALSE, FALSE, sizeof(uint32_t) * 3);
        uint8_t buf[256];
        ssize_t n = getxattr(path, "system.posix_acl_access", buf, sizeof(buf));

        if (n < 4)
                return entries;
        g_assert_cmpuint(GUINT32_FROM_LE(*(uint32_t *)buf), ==, 2);
        for (ssize_t off = 4; off + 8 <= n; off += 8) {
                uint32_t e[3] = { GUINT16_FROM_LE(*(uint16_t *)(buf + off)),
                        GUINT16_FROM_LE(*(uint16_t *)(buf + off + 2)),
                        GUINT32_FROM_LE(*(uint32_t *)(buf + off + 4)) };
                g_array_append_val(entries, e);
        }
        return entries;
}

static void test_point_user_dir_only_user_may_enter(Fixture *f, gconstpointer data)
{
        g_autofree char *target = NULL, *user_dir = NULL, *out = NULL;
        struct stat st;

        REQUIRE(f);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        user_dir = g_build_filename(f->media, "user", NULL);
        g_autofree char *expected = g_build_filename(user_dir, "disk", NULL);
        g_assert_cmpstr(target, ==, expected);

        g_assert_cmpint(stat(f->media, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0755);

        g_assert_cmpint(stat(user_dir, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, 0);
        g_assert_cmpuint(st.st_gid, ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0750);

        /* The ACL: user:<uid>:r-x and no other named entry; others nothing. */
        g_autoptr(GArray) acl = acl_of(user_dir);
        guint named = 0;
        for (guint i = 0; i < acl->len; i++) {
                uint32_t *e = &g_array_index(acl, uint32_t, i * 3);
                if (e[0] == 0x02) {
                        named++;
                        g_assert_cmpuint(e[2], ==, USER_UID);
                        g_assert_cmpuint(e[1], ==, 5);
                }
                if (e[0] == 0x20)
                        g_assert_cmpuint(e[1], ==, 0);
        }
        g_assert_cmpuint(named, ==, 1);

        /* The kernel agrees: the user may enter but not write; another user may not enter. */
        g_autofree char *ls = g_strdup_printf("ls '%s'", user_dir);
        g_assert_cmpint(sh_as(USER_UID, &out, ls), ==, 0);
        g_assert_cmpint(sh_as(OTHER_UID, NULL, ls), !=, 0);
        g_autofree char *mk = g_strdup_printf("mkdir '%s/mine'", user_dir);
        g_assert_cmpint(sh_as(USER_UID, NULL, mk), !=, 0);
        g_autofree char *mv = g_strdup_printf("mv '%s/disk' '%s/moved'", user_dir, user_dir);
        g_assert_cmpint(sh_as(USER_UID, NULL, mv), !=, 0);

        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

static void test_point_unique_names(Fixture *f, gconstpointer data)
{
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        REQUIRE(f);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &a), ==, 0);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &b), ==, 0);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &c), ==, 0);
        g_assert_true(g_str_has_suffix(a, "/user/disk"));
        g_assert_true(g_str_has_suffix(b, "/user/disk-1"));
        g_assert_true(g_str_has_suffix(c, "/user/disk-2"));

        /* A freed name is taken again first. */
        g_assert_cmpint(mount_point_remove(f->media, b), ==, 0);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &d), ==, 0);
        g_assert_cmpstr(d, ==, b);

        /* Not a plain component: refused. */
        g_autofree char *bad = NULL;
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "../x", &bad), ==, -EINVAL);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "..", &bad), ==, -EINVAL);
        g_assert_cmpint(mount_point_create(f->media, "../user", USER_UID, USER_UID, "x", &bad), ==, -EINVAL);
        g_autofree char *dotted = g_strconcat(f->dir, "/./media", NULL);
        g_assert_cmpint(mount_point_create(dotted, "user", USER_UID, USER_UID, "x", &bad), ==, -EINVAL);
        g_assert_cmpint(
                mount_point_create("relative/media", "user", USER_UID, USER_UID, "x", &bad), ==, -EINVAL);
        g_assert_null(bad);

        g_assert_cmpint(mount_point_remove(f->media, a), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, c), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, d), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, d), ==, -ENOENT);
}

static void test_point_remove_only_under_media_dir(Fixture *f, gconstpointer data)
{
        g_autofree char *target = NULL, *outside = path_in(f, "outside");
        g_autofree char *user_dir = NULL, *deeper = NULL;

        REQUIRE(f);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        g_assert_cmpint(g_mkdir(outside, 0755), ==, 0);
        user_dir = g_build_filename(f->media, "user", NULL);
        deeper = g_build_filename(target, "sub", NULL);
        g_assert_cmpint(g_mkdir(deeper, 0755), ==, 0);

        g_assert_cmpint(mount_point_remove(f->media, outside), ==, -EINVAL);
        g_assert_cmpint(mount_point_remove(f->media, user_dir), ==, -EINVAL);
        g_assert_cmpint(mount_point_remove(f->media, deeper), ==, -EINVAL);
        g_assert_cmpint(mount_point_remove(f->media, "/mnt"), ==, -EINVAL);
        g_autofree char *escape = g_strconcat(f->media, "/user/../user/disk", NULL);
        g_assert_cmpint(mount_point_remove(f->media, escape), ==, -EINVAL);
        g_assert_true(g_file_test(outside, G_FILE_TEST_IS_DIR));
        g_assert_true(g_file_test(user_dir, G_FILE_TEST_IS_DIR));

        /* Not empty: refused, kept. */
        g_assert_cmpint(mount_point_remove(f->media, target), ==, -ENOTEMPTY);
        g_assert_cmpint(g_rmdir(deeper), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

static void test_point_refuses_symlinked_user_dir(Fixture *f, gconstpointer data)
{
        g_autofree char *elsewhere = path_in(f, "elsewhere"), *link = NULL, *target = NULL;
        g_autofree char *victim = NULL;

        REQUIRE(f);
        g_assert_cmpint(g_mkdir(f->media, 0755), ==, 0);
        g_assert_cmpint(g_mkdir(elsewhere, 0755), ==, 0);
        link = g_build_filename(f->media, "user", NULL);
        g_assert_cmpint(symlink(elsewhere, link), ==, 0);

        int r = mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target);
        g_assert_true(r == -ELOOP || r == -ENOTDIR);
        g_assert_null(target);
        victim = g_build_filename(elsewhere, "disk", NULL);
        g_assert_false(g_file_test(victim, G_FILE_TEST_EXISTS));

        struct stat st;
        g_assert_cmpint(stat(elsewhere, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0755);
}

static void test_point_refuses_symlinked_media_dir(Fixture *f, gconstpointer data)
{
        g_autofree char *elsewhere = path_in(f, "elsewhere"), *target = NULL;

        REQUIRE(f);
        g_assert_cmpint(g_mkdir(elsewhere, 0755), ==, 0);
        g_assert_cmpint(symlink(elsewhere, f->media), ==, 0);

        int r = mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target);
        g_assert_true(r == -ELOOP || r == -ENOTDIR);
        g_autofree char *victim = g_build_filename(elsewhere, "user", NULL);
        g_assert_false(g_file_test(victim, G_FILE_TEST_EXISTS));
}

static void test_point_refuses_foreign_owned_user_dir(Fixture *f, gconstpointer data)
{
        g_autofree char *user_dir = NULL, *target = NULL;

        REQUIRE(f);
        g_assert_cmpint(g_mkdir(f->media, 0755), ==, 0);
        user_dir = g_build_filename(f->media, "user", NULL);
        g_assert_cmpint(g_mkdir(user_dir, 0755), ==, 0);
        g_assert_cmpint(chown(user_dir, USER_UID, USER_UID), ==, 0);

        g_assert_cmpint(
                mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, -EPERM);
}

static void test_point_refuses_writable_parent(Fixture *f, gconstpointer data)
{
        g_autofree char *open_dir = path_in(f, "open"), *media = NULL, *target = NULL;

        REQUIRE(f);
        /* Anyone could rename a component of this path between creation and mount(2). */
        g_assert_cmpint(g_mkdir(open_dir, 0755), ==, 0);
        g_assert_cmpint(chmod(open_dir, 0777), ==, 0);
        media = g_build_filename(open_dir, "media", NULL);
        g_assert_cmpint(mount_point_create(media, "user", USER_UID, USER_UID, "disk", &target), ==, -EPERM);

        /* Sticky, like /tmp: fine. */
        g_assert_cmpint(chmod(open_dir, 01777), ==, 0);
        g_assert_cmpint(mount_point_create(media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        g_assert_cmpint(mount_point_remove(media, target), ==, 0);
}

static void test_point_root_user_dir_has_no_acl(Fixture *f, gconstpointer data)
{
        g_autofree char *target = NULL, *user_dir = NULL;

        REQUIRE(f);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
        g_clear_pointer(&target, g_free);
        /* The same directory handed to uid 0 (say, a uid was reused): the old ACL entry must go. */
        g_assert_cmpint(mount_point_create(f->media, "user", 0, 0, "disk", &target), ==, 0);
        user_dir = g_build_filename(f->media, "user", NULL);
        g_autoptr(GArray) acl = acl_of(user_dir);
        g_assert_cmpuint(acl->len, ==, 0);
        g_autofree char *ls = g_strdup_printf("ls '%s'", user_dir);
        g_assert_cmpint(sh_as(USER_UID, NULL, ls), !=, 0);
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

/* ---- kernel filesystems ---- */

static void test_kernel_ext4_nosuid_nodev(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", "MYEXT4"));
        node = attach(f, image, false);
        populate(f, node, "hello from ext4");

        target = mount_for(f, node, "ext4", NULL, false, -1, "MYEXT4", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from ext4");

        /* nosuid: the setuid-root id runs as the user. */
        g_autofree char *id = g_strdup_printf("'%s/id' -u", target);
        g_assert_cmpint(sh_as(USER_UID, &out, id), ==, 0);
        g_assert_cmpstr(g_strstrip(out), ==, "65534");
        /* nodev: a world-writable /dev/null node on the image cannot be opened. */
        g_autofree char *null = g_strdup_printf("echo x > '%s/null'", target);
        g_assert_cmpint(test_sh_status(NULL, "%s", null), !=, 0);

        unmount_and_remove(f, target);
        assert_not_in_mount_table(node, target);
}

static void test_kernel_ext4_errors_panic_becomes_remount_ro(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        g_autofree char *qnode = NULL, *super = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        qnode = g_shell_quote(node);
        g_free(test_sh("tune2fs -e panic %s >/dev/null", qnode));
        super = test_sh("dumpe2fs -h %s 2>/dev/null | grep -i 'errors behavior'", qnode);
        g_assert_nonnull(strstr(super, "Panic"));

        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        /* The kernel shows errors= only when it differs from the superblock's. */
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "errors=remount-ro"));
        unmount_and_remove(f, target);
}

/* Leaves a filesystem whose journal must be replayed: written, then shut down with the log flushed but
 * the filesystem not checkpointed (the ioctl ext4 and xfs share). */
static void make_dirty_journal(Fixture *f, const char *node)
{
        g_autofree char *w = path_in(f, "dirty");
        g_autofree char *qw = g_shell_quote(w), *qn = g_shell_quote(node);

        g_assert_cmpint(g_mkdir_with_parents(w, 0755), ==, 0);
        g_free(test_sh("set -e; mount %s %s; trap 'umount %s' EXIT; echo data > %s/new.txt; "
                       "xfs_io -x -c 'shutdown -f' %s",
                qn, qw, qw, qw, qw));
}

static void assert_read_only_mount_leaves_image_alone(Fixture *f, const char *fstype, const char *no_replay)
{
        g_autofree char *image = path_in(f, "fs.img"), *node = NULL, *target = NULL;
        g_autofree char *before = NULL, *after = NULL;

        g_free(image_mkfs_at(image, 0, 320 * MB, fstype, NULL));
        node = attach(f, image, false);
        make_dirty_journal(f, node);
        before = sha256_of(image);

        target = mount_for(f, node, fstype, NULL, true, -1, "disk", NULL);
        if (!target)
                return;
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, no_replay));
        unmount_and_remove(f, target);

        /* Without no_replay the kernel replays the journal even for a read-only mount, and the image
         * changes. */
        after = sha256_of(image);
        g_assert_cmpstr(before, ==, after);
}

static void test_kernel_ext4_read_only_does_not_replay_journal(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        /* ext4 shows noload as norecovery. */
        assert_read_only_mount_leaves_image_alone(f, "ext4", "norecovery");
}

static void test_kernel_xfs_read_only_does_not_replay_log(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_read_only_mount_leaves_image_alone(f, "xfs", "norecovery");
}

static void test_kernel_xfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "xfs.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 320 * MB, "xfs", "MYXFS"));
        node = attach(f, image, false);
        populate(f, node, "hello from xfs");

        target = mount_for(f, node, "xfs", "noatime", false, -1, "MYXFS", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from xfs");
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "noatime"));
        unmount_and_remove(f, target);
}

static void test_kernel_btrfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "btrfs.img"), *node = NULL, *target = NULL, *ro_target = NULL;
        g_autofree char *majmin = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 320 * MB, "btrfs", "MYBTRFS"));
        node = attach(f, image, false);
        populate(f, node, "hello from btrfs");

        target = mount_for(f, node, "btrfs", NULL, false, -1, "MYBTRFS", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        /* btrfs reports an anonymous device number in mountinfo: found by its source anyway. */
        majmin = findmnt(target, "MAJ:MIN");
        g_autofree char *dev = g_strdup_printf("%u:%u", major(devnum_of(node)), minor(devnum_of(node)));
        g_assert_cmpstr(majmin, !=, dev);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello.txt", "hello from btrfs");
        unmount_and_remove(f, target);

        ro_target = mount_for(f, node, "btrfs", NULL, true, -1, "MYBTRFS", NULL);
        if (!ro_target)
                return;
        g_autofree char *options = findmnt(ro_target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, "rescue=nologreplay"));
        assert_user_reads(ro_target, "hello.txt", "hello from btrfs");
        unmount_and_remove(f, ro_target);
}

static void test_kernel_squashfs_read_back(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "sq.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 4 * MB, "squashfs", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "squashfs", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, false);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        assert_user_reads(target, "hello", "loopd\n");
        unmount_and_remove(f, target);
}

static void test_kernel_unmount_busy(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *file = NULL;
        int fd;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "busy");

        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", NULL);
        if (!target)
                return;
        file = g_build_filename(target, "hello.txt", NULL);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        /* No lazy unmount behind the caller's back. */
        g_assert_cmpint(unmount_filesystem(target), ==, -EBUSY);
        g_assert_true(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, -EBUSY);

        close(fd);
        unmount_and_remove(f, target);
        g_assert_cmpint(unmount_filesystem(target), !=, 0);
}

static void test_kernel_refuses_unsafe_calls(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "disk", &target), ==, 0);
        g_ptr_array_add(f->targets, g_strdup(target));

        /* Options that did not come from mount_options_build(). */
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "rw", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid,nodev,suid", false), ==, -EINVAL);
        g_assert_cmpint(mount_filesystem(node, target, "ext4", "nosuid,nodev,dev", false), ==, -EINVAL);
        /* Not a filesystem loopd mounts. */
        g_assert_cmpint(
                mount_filesystem(node, target, "tmpfs", "nosuid,nodev", false), ==, -EPROTONOSUPPORT);
        g_assert_cmpint(mount_filesystem(node, target, "fuse", "nosuid,nodev", true), ==, -EPROTONOSUPPORT);
        /* Not a block device: libmount would set up a loop device for a file. */
        g_assert_cmpint(mount_filesystem(image, target, "ext4", "nosuid,nodev", false), ==, -ENOTBLK);
        /* No FUSE helper for xfs. */
        g_assert_cmpint(mount_filesystem(node, target, "xfs", "nosuid,nodev", true), ==, -EPROTONOSUPPORT);
        /* The wrong filesystem: the kernel's error, nothing left mounted. */
        g_assert_cmpint(mount_filesystem(node, target, "xfs", "nosuid,nodev", false), <, 0);
        g_assert_false(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

static void test_kernel_read_only_device_needs_read_only(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        int r = 0;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, true);

        /* No silent read-only fallback (it would mount without noload). */
        target = mount_for(f, node, "ext4", NULL, false, -1, "disk", &r);
        g_assert_null(target);
        g_assert_true(r == -EROFS || r == -EACCES);

        target = mount_for(f, node, "ext4", NULL, true, -1, "disk", NULL);
        if (!target)
                return;
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        unmount_and_remove(f, target);
}

/* mountinfo escapes blanks and backslashes in mount points; every lookup must still find them. */
static void test_kernel_label_needing_escapes(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *name = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        g_assert_cmpint(mount_name_sanitize("  My Disk\\042 \xc3\xbcn\xc3\xaf\tx ", &name), ==, 0);
        g_assert_cmpstr(name, ==, "My Disk\\042 \xc3\xbcn\xc3\xaf x");

        target = mount_for(f, node, "ext4", NULL, false, 0, name, NULL);
        if (!target)
                return;
        g_assert_true(g_str_has_suffix(target, name));
        assert_found_in_mount_table(node, target);
        unmount_and_remove(f, target);
        assert_not_in_mount_table(node, target);
}

/* ---- FUSE ---- */

static void test_fuse_iso9660_as_user(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "medium.iso"), *node = NULL, *target = NULL;
        struct stat st;
        bool fuse;

        REQUIRE(f);
        image_make_hybrid_iso(image, "MY ISO");
        node = attach(f, image, false);
        g_assert_cmpint(mount_pick_driver("iso9660", &fuse), ==, 0);
        if (mount_kernel_has_filesystem("iso9660"))
                g_test_message("this kernel has iso9660: forcing the FUSE path");

        target = mount_for(f, node, "iso9660", NULL, false, 1, "MY, ISO", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_found_in_mount_table(node, target);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));

        g_autofree char *readme = g_build_filename(target, "README.TXT", NULL);
        g_assert_cmpint(stat(readme, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        g_assert_cmpuint(st.st_gid, ==, USER_UID);
        assert_user_reads(target, "README.TXT", "loopd test medium\n");
        assert_other_user_kept_out(target, "README.TXT");

        fuse_unmount_and_check_helper(f, target);
        assert_not_in_mount_table(node, target);
}

static void test_fuse_vfat_as_user(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "vfat.img"), *node = NULL, *target = NULL, *qimage = NULL;
        struct stat st;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "vfat", "MYVFAT"));
        qimage = g_shell_quote(image);
        g_free(test_sh("printf 'hello from vfat' > %s/hello.txt && mcopy -i %s %s/hello.txt ::/hello.txt",
                f->dir, qimage, f->dir));
        node = attach(f, image, false);

        target = mount_for(f, node, "vfat", "noexec", false, 1, "MYVFAT", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_autofree char *options = findmnt(target, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        g_assert_true(test_options_have(options, "noexec"));

        /* fusefat shows the short name. */
        g_autofree char *hello = g_build_filename(target, "HELLO.TXT", NULL);
        g_assert_cmpint(stat(hello, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        assert_user_reads(target, "HELLO.TXT", "hello from vfat");
        assert_other_user_kept_out(target, "HELLO.TXT");

        fuse_unmount_and_check_helper(f, target);
}

/* Writes as the user through FUSE, unmounts (which waits for the helper to flush and exit), mounts again
 * and reads back. */
static void assert_user_writes_survive_remount(Fixture *f, const char *fstype)
{
        g_autofree char *image = path_in(f, "fs.img"), *node = NULL, *target = NULL, *again = NULL;
        struct stat st;

        g_free(image_mkfs_at(image, 0, 64 * MB, fstype, "MYDISK"));
        node = attach(f, image, false);

        target = mount_for(f, node, fstype, NULL, false, 1, "MYDISK", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_assert_cmpint(stat(target, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        g_autofree char *write = g_strdup_printf("printf 'written by the user' > '%s/new.txt'", target);
        g_assert_cmpint(sh_as(USER_UID, NULL, write), ==, 0);
        assert_other_user_kept_out(target, "new.txt");
        fuse_unmount_and_check_helper(f, target);

        again = mount_for(f, node, fstype, NULL, true, 1, "MYDISK", NULL);
        if (!again)
                return;
        g_autofree char *options = findmnt(again, "OPTIONS");
        g_assert_true(test_options_have(options, "ro"));
        assert_user_reads(again, "new.txt", "written by the user");
        g_autofree char *file = g_build_filename(again, "new.txt", NULL);
        g_assert_cmpint(stat(file, &st), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, USER_UID);
        /* umask=0022: not writable by group or others. */
        g_assert_cmpuint(st.st_mode & 022, ==, 0);
        fuse_unmount_and_check_helper(f, again);
}

static void test_fuse_exfat_as_user_writes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_user_writes_survive_remount(f, "exfat");
}

static void test_fuse_ntfs_as_user_writes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        assert_user_writes_survive_remount(f, "ntfs");
}

static void test_fuse_ext4_via_fuse2fs_read_only(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;
        g_autofree char *before = NULL, *after = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "hello from fuse2fs");
        make_dirty_journal(f, node);
        before = sha256_of(image);

        target = mount_for(f, node, "ext4", NULL, true, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_user_reads(target, "hello.txt", "hello from fuse2fs");
        /* nosuid holds for FUSE too. */
        g_autofree char *id = g_strdup_printf("'%s/id' -u", target);
        g_assert_cmpint(sh_as(USER_UID, &out, id), ==, 0);
        g_assert_cmpstr(g_strstrip(out), ==, "65534");
        g_autofree char *write = g_strdup_printf("echo x > '%s/hello.txt'", target);
        g_assert_cmpint(test_sh_status(NULL, "%s", write), !=, 0);
        fuse_unmount_and_check_helper(f, target);

        after = sha256_of(image);
        g_assert_cmpstr(before, ==, after);
}

static void test_fuse_ext4_via_fuse2fs_writes_reach_the_device(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL, *out = NULL;
        g_autofree char *qnode = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        populate(f, node, "hello from fuse2fs");
        qnode = g_shell_quote(node);

        target = mount_for(f, node, "ext4", NULL, false, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        g_autofree char *big = g_strdup_printf(
                "head -c 8M /dev/urandom > '%s/big' && sha256sum < '%s/big'", target, target);
        g_autofree char *sum = test_sh("%s", big);
        g_autoptr(GArray) pids = helpers_serving(target);
        g_assert_cmpuint(pids->len, ==, 1);

        /* fuse2fs writes its caches back only after the kernel let go of the mount: once
         * unmount_filesystem() returns, that must have happened. */
        g_assert_cmpint(unmount_filesystem(target), ==, 0);
        for (guint i = 0; i < pids->len; i++)
                g_assert_true(process_exited(g_array_index(pids, pid_t, i)));
        out = test_sh("e2fsck -fn %s >/dev/null 2>&1 && debugfs -R 'cat /big' %s 2>/dev/null | sha256sum",
                qnode, qnode);
        g_assert_cmpstr(out, ==, sum);
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

static void test_fuse_squashfs_via_squashfuse(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "sq.img"), *node = NULL, *target = NULL;

        REQUIRE(f);
        g_free(image_mkfs_at(image, 0, 4 * MB, "squashfs", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "squashfs", NULL, false, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        assert_found_in_mount_table(node, target);
        assert_user_reads(target, "hello", "loopd\n");
        fuse_unmount_and_check_helper(f, target);
}

static void test_fuse_helper_failure_leaves_nothing_mounted(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL, *target = NULL;
        int r = 0;

        REQUIRE(f);
        /* Not an ISO: fuseiso fails. */
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);

        target = mount_for(f, node, "iso9660", NULL, true, 1, "disk", &r);
        g_assert_null(target);
        g_assert_cmpint(r, <, 0);
        g_autoptr(GArray) pids = helpers_serving(node);
        g_assert_cmpuint(pids->len, ==, 0);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        /* A failed check must still reach the teardown that unmounts and detaches. */
        g_test_set_nonfatal_assertions();

        TEST("/mount/point/user-dir-only-user-may-enter", test_point_user_dir_only_user_may_enter);
        TEST("/mount/point/unique-names", test_point_unique_names);
        TEST("/mount/point/remove-only-under-media-dir", test_point_remove_only_under_media_dir);
        TEST("/mount/point/refuses-symlinked-user-dir", test_point_refuses_symlinked_user_dir);
        TEST("/mount/point/refuses-symlinked-media-dir", test_point_refuses_symlinked_media_dir);
        TEST("/mount/point/refuses-foreign-owned-user-dir", test_point_refuses_foreign_owned_user_dir);
        TEST("/mount/point/refuses-writable-parent", test_point_refuses_writable_parent);
        TEST("/mount/point/root-user-dir-has-no-acl", test_point_root_user_dir_has_no_acl);

        TEST("/mount/kernel/ext4-nosuid-nodev", test_kernel_ext4_nosuid_nodev);
        TEST("/mount/kernel/ext4-errors-panic-becomes-remount-ro",
                test_kernel_ext4_errors_panic_becomes_remount_ro);
        TEST("/mount/kernel/ext4-read-only-does-not-replay-journal",
                test_kernel_ext4_read_only_does_not_replay_journal);
        TEST("/mount/kernel/xfs-read-only-does-not-replay-log",
                test_kernel_xfs_read_only_does_not_replay_log);
        TEST("/mount/kernel/xfs-read-back", test_kernel_xfs_read_back);
        TEST("/mount/kernel/btrfs-read-back", test_kernel_btrfs_read_back);
        TEST("/mount/kernel/squashfs-read-back", test_kernel_squashfs_read_back);
        TEST("/mount/kernel/unmount-busy", test_kernel_unmount_busy);
        TEST("/mount/kernel/refuses-unsafe-calls", test_kernel_refuses_unsafe_calls);
        TEST("/mount/kernel/read-only-device-needs-read-only", test_kernel_read_only_device_needs_read_only);

        TEST("/mount/kernel/label-needing-escapes", test_kernel_label_needing_escapes);

        TEST("/mount/fuse/iso9660-as-user", test_fuse_iso9660_as_user);
        TEST("/mount/fuse/vfat-as-user", test_fuse_vfat_as_user);
        TEST("/mount/fuse/exfat-as-user-writes", test_fuse_exfat_as_user_writes);
        TEST("/mount/fuse/ntfs-as-user-writes", test_fuse_ntfs_as_user_writes);
        TEST("/mount/fuse/ext4-via-fuse2fs-read-only", test_fuse_ext4_via_fuse2fs_read_only);
        TEST("/mount/fuse/ext4-via-fuse2fs-writes-reach-the-device",
                test_fuse_ext4_via_fuse2fs_writes_reach_the_device);
        TEST("/mount/fuse/squashfs-via-squashfuse", test_fuse_squashfs_via_squashfuse);
        TEST("/mount/fuse/helper-failure-leaves-nothing-mounted",
                test_fuse_helper_failure_leaves_nothing_mounted);

        return g_test_run();
}
