/* test-desktop.c: closing an image from the desktop. Unprivileged users open images with `loopctl open`
 * and close them the ways a desktop does: `umount PATH` (libmount hands it to umount.loopd through the
 * mount's uhelper=loopd), `gio mount -u` and, where GIO offers it, `gio mount -e`; what GIO lists; what
 * libmount keeps in /run/mount/utab; and that nobody closes another user's mount through the helper.
 * Mounts go to the real /run/media/<user> (GIO shows nothing else), and the build's umount.loopd is put at
 * /usr/sbin/umount.loopd (where libmount looks) for each test. The kernel, findmnt, losetup and
 * /run/mount/utab are the oracles, never loopd. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <libmount.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"
#include "mount.h"

#define MiB (UINT64_C(1024) * 1024)
#define MEDIA "/run/media"
#define UTAB "/run/mount/utab"
#define HELPER "/usr/sbin/umount.loopd"
/* What was at HELPER before the test put its link there; a run killed before its teardown leaves it. */
#define HELPER_SAVED "/usr/sbin/.umount.loopd.saved-by-loopd-tests"
/* How long the kernel and loopd may take to let an unmounted autoclear device go. */
#define SETTLE_MS 10000

#define REQUIRE_NONNULL(x)                                                  \
        do {                                                                \
                if (!(x)) {                                                 \
                        g_test_fail_printf("%s: %s is NULL", G_STRLOC, #x); \
                        return;                                             \
                }                                                           \
        } while (0)

/* Fails the test with a message that stays in the log (g_test_fail_printf() keeps only the last one). */
#define FAIL(...)                                                         \
        do {                                                              \
                g_autofree char *message_ = g_strdup_printf(__VA_ARGS__); \
                g_test_message("FAIL: %s", message_);                     \
                g_test_fail_printf("%s", message_);                       \
        } while (0)

static const char *const run_media_args[] = { "--media-dir", MEDIA, NULL };
static const HarnessOptions opts_run_media = { .loopd_args = run_media_args };

typedef struct Desktop {
        Harness h;
        bool linked; /* HELPER is our link */
        bool made_media, made_user_dir[2]; /* directories this test created, removed in teardown */
        GPtrArray *mount_points; /* every mount point the test saw, for the teardown */
} Desktop;

static const char *const users[] = { HARNESS_USER_A, HARNESS_USER_B };

static char *user_media_dir(const char *user)
{
        return g_build_filename(MEDIA, user, NULL);
}

/* ---------------------------------------------------------------------------------------------------- */
/* umount.loopd where libmount looks for it */

static bool our_link(void)
{
        char target[PATH_MAX];
        ssize_t n = readlink(HELPER, target, sizeof(target) - 1);

        if (n <= 0)
                return false;
        target[n] = '\0';
        return g_str_has_suffix(target, "/umount/umount.loopd");
}

/* Puts back what was at HELPER before a test linked it. */
static void helper_restore(void)
{
        struct stat st;

        if (our_link() && unlink(HELPER) < 0)
                g_test_message("cannot remove %s: %s", HELPER, g_strerror(errno));
        if (lstat(HELPER_SAVED, &st) == 0 && lstat(HELPER, &st) < 0 && rename(HELPER_SAVED, HELPER) < 0)
                g_test_message("cannot put %s back: %s", HELPER, g_strerror(errno));
}

/* A test that cannot place the helper skips, or fails under CI=true. */
static void cannot(const char *what)
{
        if (g_strcmp0(g_getenv("CI"), "true") == 0)
                g_test_fail_printf("cannot run (and CI=true must not skip): %s", what);
        else
                g_test_skip(what);
}

static bool helper_install(Desktop *d)
{
        const char *build = g_getenv("LOOPD_BUILD_ROOT");
        g_autofree char *built = build ? g_build_filename(build, "umount", "umount.loopd", NULL) : NULL;
        g_autofree char *why = NULL;
        struct stat st;

        helper_restore();
        if (!built || access(built, X_OK) < 0) {
                why = g_strdup_printf("the build's umount.loopd (%s) is missing", built ? built : "?");
                cannot(why);
                return false;
        }
        if (lstat(HELPER, &st) == 0 && rename(HELPER, HELPER_SAVED) < 0) {
                why = g_strdup_printf("cannot move %s aside: %s", HELPER, g_strerror(errno));
                cannot(why);
                return false;
        }
        if (symlink(built, HELPER) < 0) {
                why = g_strdup_printf("cannot link %s to %s: %s", HELPER, built, g_strerror(errno));
                helper_restore();
                cannot(why);
                return false;
        }
        d->linked = true;
        g_test_message("%s -> %s", HELPER, built);
        return true;
}

static void utab_drop(const char *target);

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

static void desktop_setup(Desktop *d, gconstpointer data)
{
        memset(d, 0, sizeof(*d));
        d->mount_points = g_ptr_array_new_with_free_func(g_free);
        d->made_media = !g_file_test(MEDIA, G_FILE_TEST_EXISTS);
        for (guint i = 0; i < G_N_ELEMENTS(users); i++) {
                g_autofree char *dir = user_media_dir(users[i]);
                d->made_user_dir[i] = !g_file_test(dir, G_FILE_TEST_EXISTS);
        }
        harness_setup(&d->h, data);
        if (d->h.ready && !helper_install(d))
                d->h.ready = false;
}

static void desktop_teardown(Desktop *d, gconstpointer data)
{
        /* loopd goes first, and with it everything attached from the test's directory and its mounts. */
        harness_teardown(&d->h, data);
        for (guint i = 0; i < d->mount_points->len; i++) {
                const char *mp = d->mount_points->pdata[i];
                if (g_rmdir(mp) == 0)
                        g_test_message("removed the mount point %s the test left", mp);
                utab_drop(mp);
        }
        for (guint i = 0; i < G_N_ELEMENTS(users); i++) {
                g_autofree char *dir = user_media_dir(users[i]);
                if (d->made_user_dir[i])
                        (void)g_rmdir(dir);
        }
        if (d->made_media)
                (void)g_rmdir(MEDIA);
        if (d->linked)
                helper_restore();
        g_ptr_array_unref(d->mount_points);
}

#define desktop_add(path, func) \
        g_test_add((path), Desktop, &opts_run_media, desktop_setup, (func), desktop_teardown)

#define DESKTOP_REQUIRE(d) HARNESS_REQUIRE(&(d)->h)

/* ---------------------------------------------------------------------------------------------------- */
/* Images and opening them */

static char *make_ext4(Desktop *d, const char *name, const char *label)
{
        char *path = harness_image_path(&d->h, name);

        image_create(path, 32 * MiB);
        g_free(image_mkfs_at(path, 0, 32 * MiB, "ext4", label));
        return path;
}

static char *make_vfat(Desktop *d, const char *name, const char *label)
{
        char *path = harness_image_path(&d->h, name);

        image_create(path, 32 * MiB);
        g_free(image_mkfs_at(path, 0, 32 * MiB, "vfat", label));
        return path;
}

/* A plain ISO 9660 image (no partition table): this kernel has no iso9660, so loopd serves it with
 * fuseiso. */
static char *make_iso(Desktop *d, const char *name, const char *volid)
{
        char *path = harness_image_path(&d->h, name);
        g_autofree char *root = g_build_filename(d->h.tmpdir, "iso-root", NULL);
        g_autofree char *qroot = g_shell_quote(root), *qpath = g_shell_quote(path),
                        *qvolid = g_shell_quote(volid);

        g_free(test_sh("mkdir -p %s && echo 'loopd desktop test' > %s/README.TXT && "
                       "xorriso -as mkisofs -quiet -o %s -V %s -J -R %s 2>/dev/null && rm -rf -- %s",
                qroot, qroot, qpath, qvolid, qroot, qroot));
        return path;
}

typedef struct Opened {
        char *device;
        char *mount_point; /* the first (the only one, for these images) */
} Opened;

static void opened_clear(Opened *o)
{
        g_clear_pointer(&o->device, g_free);
        g_clear_pointer(&o->mount_point, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Opened, opened_clear)

/* `loopctl --json open IMAGE` as user: false (and the test failed) when it did not open one mount. */
static bool open_as(Desktop *d, const char *user, const char *image, Opened *ret)
{
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(JsonNode) out = NULL;
        JsonObject *o;
        JsonArray *mounts;

        if (harness_loopctl(&d->h, user, &run, "--json", "open", image, NULL) != 0) {
                FAIL("loopctl open %s as %s exited %d: %s", image, user, run.status, run.err);
                return false;
        }
        out = harness_run_json(&run);
        o = out && JSON_NODE_HOLDS_OBJECT(out) ? json_node_get_object(out) : NULL;
        mounts = o && json_object_has_member(o, "mounts") ? json_object_get_array_member(o, "mounts") : NULL;
        if (!mounts || json_array_get_length(mounts) != 1) {
                FAIL("loopctl open %s did not mount exactly one filesystem: %s", image, run.out);
                return false;
        }
        ret->device = g_strdup(json_object_get_string_member(o, "device"));
        ret->mount_point = g_strdup(
                json_object_get_string_member(json_array_get_object_element(mounts, 0), "mount_point"));
        g_ptr_array_add(d->mount_points, g_strdup(ret->mount_point));
        g_test_message("%s opened %s: %s on %s", user, image, ret->device, ret->mount_point);
        return true;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles */

/* findmnt's fstype of the mount at target, or NULL when nothing is mounted there. */
static char *fstype_at(const char *target)
{
        g_autofree char *q = g_shell_quote(target);
        char *out = NULL;

        if (test_sh_status(&out, "findmnt -rn -o FSTYPE --mountpoint %s", q) != 0) {
                g_free(out);
                return NULL;
        }
        return g_strstrip(out);
}

static bool mounted_at(const char *target)
{
        g_autofree char *fstype = fstype_at(target);
        return fstype != NULL;
}

/* A field of a utab line ("KEY=value"), its \ooo escapes decoded (util-linux lib/mangle.c); NULL if absent.
 */
static char *utab_field(const char *line, const char *key)
{
        g_auto(GStrv) fields = g_strsplit(line, " ", -1);
        g_autofree char *prefix = g_strconcat(key, "=", NULL);

        for (char **f = fields; *f; f++)
                if (g_str_has_prefix(*f, prefix))
                        return g_strcompress(*f + strlen(prefix)); /* \ooo, as mangle() writes them */
        return NULL;
}

/* The userspace options libmount keeps in /run/mount/utab for target, read from the file itself (NULL: no
 * entry; "" for one without options). The last entry counts, as for libmount. */
static char *utab_options(const char *target)
{
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        char *found = NULL;

        if (!g_file_get_contents(UTAB, &text, NULL, NULL))
                return NULL;
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_autofree char *t = utab_field(*l, "TARGET");

                if (g_strcmp0(t, target) == 0) {
                        g_free(found);
                        found = utab_field(*l, "OPTS");
                        if (!found)
                                found = g_strdup("");
                }
        }
        return found;
}

/* Removes what a test left in utab for target, with libmount's own update (not loopd's code, which may be
 * what failed). */
static void utab_drop(const char *target)
{
        for (int i = 0; i < 16; i++) {
                g_autofree char *left = utab_options(target);
                struct libmnt_update *upd;

                if (!left)
                        return;
                g_test_message("removing the utab entry of %s the test left", target);
                upd = mnt_new_update();
                if (!upd || mnt_update_set_fs(upd, 0, target, NULL) != 0 ||
                        mnt_update_table(upd, NULL) != 0) {
                        mnt_free_update(upd);
                        return;
                }
                mnt_free_update(upd);
        }
}

/* The value of option name in a comma list (NULL when it is not there). */
static char *option_value(const char *options, const char *name)
{
        char *value = NULL;
        size_t len = 0;

        if (!options || mnt_optstr_get_option(options, name, &value, &len) != 0)
                return NULL;
        return g_strndup(value, len);
}

/* Checks what loopd's mount at target carries in utab: uhelper=loopd, the name and icons for GIO. */
static void check_utab(const char *target, const char *name, const char *icon)
{
        g_autofree char *options = utab_options(target);
        g_autofree char *uhelper = option_value(options, "uhelper");
        g_autofree char *encoded = option_value(options, "x-gvfs-name");
        g_autofree char *decoded = encoded ? g_uri_unescape_string(encoded, NULL) : NULL;
        g_autofree char *got_icon = option_value(options, "x-gvfs-icon");
        g_autofree char *got_symbolic = option_value(options, "x-gvfs-symbolic-icon");
        g_autofree char *symbolic = g_strconcat(icon, "-symbolic", NULL);

        g_test_message("utab of %s: %s", target, options ? options : "(no entry)");
        g_assert_nonnull(options);
        g_assert_cmpstr(uhelper, ==, "loopd");
        g_assert_cmpstr(decoded, ==, name);
        g_assert_cmpstr(got_icon, ==, icon);
        g_assert_cmpstr(got_symbolic, ==, symbolic);
}

/* Whether device is a loop device bound to a file under the test's directory (losetup). */
static bool still_bound(Desktop *d, const char *device)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(d->h.tmpdir);

        for (guint i = 0; i < loops->len; i++)
                if (g_str_equal(loops->pdata[i], device))
                        return true;
        return false;
}

/* What the image left behind: the mount, its directory, the device, the utab entry. */
static bool anything_left(Desktop *d, const Opened *o)
{
        g_autofree char *utab = utab_options(o->mount_point);

        return mounted_at(o->mount_point) || g_file_test(o->mount_point, G_FILE_TEST_EXISTS) ||
                still_bound(d, o->device) || utab;
}

/* The image is closed: no mount, no mount point directory, no loop device, no utab entry. The device of an
 * autoclear loop goes when loopd lets go of it, which may take a moment. */
static void check_closed(Desktop *d, const Opened *o)
{
        g_autofree char *utab = NULL;
        gint64 deadline = g_get_monotonic_time() + SETTLE_MS * 1000;

        while (anything_left(d, o) && g_get_monotonic_time() < deadline)
                g_usleep(50 * 1000);
        utab = utab_options(o->mount_point);
        if (mounted_at(o->mount_point))
                FAIL("%s is still mounted", o->mount_point);
        if (g_file_test(o->mount_point, G_FILE_TEST_EXISTS))
                FAIL("the mount point %s is still there", o->mount_point);
        if (still_bound(d, o->device))
                FAIL("%s is still bound", o->device);
        if (utab)
                FAIL("%s still has its utab entry: %s", o->mount_point, utab);
}

/* Nothing of the image changed: still mounted, its directory, its device and its utab entry all there. */
static void check_untouched(Desktop *d, const Opened *o)
{
        g_autofree char *utab = utab_options(o->mount_point);

        g_assert_true(mounted_at(o->mount_point));
        g_assert_true(g_file_test(o->mount_point, G_FILE_TEST_IS_DIR));
        g_assert_true(still_bound(d, o->device));
        g_assert_nonnull(utab);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Running umount and gio as a user */

static int umount_as(Desktop *d, const char *user, HarnessRun *run, const char *option, const char *path)
{
        const char *argv[] = { "umount", option ? option : path, option ? path : NULL, NULL };

        return harness_spawn_as(&d->h, user, run, argv);
}

/* GIO as user: local VFS only (no GVfs daemons, no session bus), a HOME of the user's own. */
static int gio_as(Desktop *d, const char *user, HarnessRun *run, const char *const *args)
{
        g_autofree char *home = g_build_filename(d->h.tmpdir, user, NULL);
        g_autofree char *home_env = g_strconcat("HOME=", home, NULL);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();

        if (!g_file_test(home, G_FILE_TEST_IS_DIR)) {
                g_assert_cmpint(g_mkdir(home, 0700), ==, 0);
                g_assert_cmpint(chown(home, harness_uid_of(user), harness_gid_of(user)), ==, 0);
        }
        g_ptr_array_add(argv, "env");
        g_ptr_array_add(argv, "GIO_USE_VFS=local");
        g_ptr_array_add(argv, "LC_ALL=C.UTF-8");
        g_ptr_array_add(argv, home_env);
        g_ptr_array_add(argv, "gio");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *)*a);
        g_ptr_array_add(argv, NULL);
        return harness_spawn_as(&d->h, user, run, (const char *const *)argv->pdata);
}

/* One mount as `gio mount -l -i` lists it. */
typedef struct GioMount {
        char *name;
        char *path;
        char *icons; /* "themed icons:" line, e.g. "[drive-harddisk]  [drive]" */
        char *symbolic_icons;
        bool can_unmount, can_eject;
} GioMount;

static void gio_mount_free(gpointer p)
{
        GioMount *m = p;

        g_free(m->name);
        g_free(m->path);
        g_free(m->icons);
        g_free(m->symbolic_icons);
        g_free(m);
}

/* Parses `gio mount -l -i`: "Mount(N): NAME -> URI" followed by indented "key=value" and "themed icons:"
 * lines. */
static GPtrArray *gio_mounts(Desktop *d, const char *user)
{
        const char *const args[] = { "mount", "-l", "-i", NULL };
        g_auto(HarnessRun) run = { 0 };
        GPtrArray *list = g_ptr_array_new_with_free_func(gio_mount_free);
        g_auto(GStrv) lines = NULL;
        GioMount *m = NULL;

        if (gio_as(d, user, &run, args) != 0) {
                FAIL("gio mount -l -i exited %d: %s", run.status, run.err);
                return list;
        }
        g_test_message("gio mount -l -i as %s:\n%s", user, run.out);
        lines = g_strsplit(run.out, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *line = g_strstrip(*l), *arrow;

                if (g_str_has_prefix(line, "Mount(") && (arrow = strstr(line, " -> "))) {
                        const char *colon = strstr(line, "): ");
                        g_autofree char *uri = g_strdup(arrow + 4);

                        m = g_new0(GioMount, 1);
                        m->name = colon ? g_strndup(colon + 3, arrow - colon - 3) : g_strdup("");
                        m->path = g_filename_from_uri(uri, NULL, NULL);
                        g_ptr_array_add(list, m);
                } else if (g_str_has_prefix(line, "Volume(") || g_str_has_prefix(line, "Drive("))
                        m = NULL;
                else if (m && g_str_has_prefix(line, "themed icons:"))
                        m->icons = g_strdup(g_strstrip((char *)line + strlen("themed icons:")));
                else if (m && g_str_has_prefix(line, "symbolic themed icons:"))
                        m->symbolic_icons =
                                g_strdup(g_strstrip((char *)line + strlen("symbolic themed icons:")));
                else if (m && g_str_has_prefix(line, "can_unmount="))
                        m->can_unmount = g_str_equal(line, "can_unmount=1");
                else if (m && g_str_has_prefix(line, "can_eject="))
                        m->can_eject = g_str_equal(line, "can_eject=1");
        }
        return list;
}

static GioMount *gio_mount_at(GPtrArray *list, const char *path)
{
        for (guint i = 0; i < list->len; i++) {
                GioMount *m = list->pdata[i];
                if (g_strcmp0(m->path, path) == 0)
                        return m;
        }
        return NULL;
}

/* The first icon name of a "[a]  [b]" list. */
static char *first_icon(const char *icons)
{
        const char *start = icons ? strchr(icons, '[') : NULL, *end = start ? strchr(start, ']') : NULL;

        return end ? g_strndup(start + 1, end - start - 1) : NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The tests */

/* What loopd records for the desktop never breaks the option string, whatever the label says: exactly
 * uhelper, x-gvfs-name (percent-encoded, valid UTF-8 once decoded, the sanitized label) and the icons. */
static void test_userspace_options_hostile_names(void)
{
        static const struct {
                const char *name, *fstype, *icon;
        } cases[] = {
                { "My Disk", "ext4", "drive-removable-media" },
                { "a,b=c\"d'e\\f", "vfat", "drive-removable-media" },
                { "ctl\x01\x1f\x7f\xc2\x85x", "iso9660", "media-optical" },
                { "\xff\xfe bad \xc3", "udf", "media-optical" },
                { "\xc3\xbc\xe6\x97\xa5\xe6\x9c\xac %41 ~._-", "exfat", "drive-removable-media" },
                { "..", "ext4", "drive-removable-media" }, { "", "ext4", "drive-removable-media" },
                { NULL, "xfs", "drive-removable-media" },
                { "lots", "ext4", "drive-removable-media" }, /* 300 bytes, below */
        };

        for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *long_name = g_strnfill(300, 'x');
                const char *name =
                        g_str_equal(cases[i].name ? cases[i].name : "", "lots") ? long_name : cases[i].name;
                g_autofree char *options = NULL, *sane = NULL, *encoded = NULL, *decoded = NULL;
                g_autofree char *icon = NULL, *symbolic = NULL, *uhelper = NULL;
                g_autofree char *want_symbolic = g_strconcat(cases[i].icon, "-symbolic", NULL);
                char *rest, *opt_name, *value;
                size_t name_len, value_len;
                guint n = 0;

                g_assert_cmpint(mount_userspace_options(cases[i].fstype, name, &options), ==, 0);
                g_autofree char *shown = name ? g_strescape(name, NULL) : g_strdup("(null)");

                g_test_message("%s -> %s", shown, options);
                /* Only what cannot end an option or a utab field. */
                for (const char *p = options; *p; p++)
                        g_assert_true(g_ascii_isalnum(*p) || strchr(",=%-._~", *p));
                for (rest = options;
                        mnt_optstr_next_option(&rest, &opt_name, &name_len, &value, &value_len) == 0;)
                        n++;
                uhelper = option_value(options, "uhelper");
                encoded = option_value(options, "x-gvfs-name");
                icon = option_value(options, "x-gvfs-icon");
                symbolic = option_value(options, "x-gvfs-symbolic-icon");
                g_assert_cmpstr(uhelper, ==, "loopd");
                g_assert_cmpstr(icon, ==, cases[i].icon);
                g_assert_cmpstr(symbolic, ==, want_symbolic);
                if (mount_name_sanitize(name, &sane) < 0) {
                        g_assert_null(encoded);
                        g_assert_cmpuint(n, ==, 3);
                        continue;
                }
                g_assert_cmpuint(n, ==, 4);
                REQUIRE_NONNULL(encoded);
                decoded = g_uri_unescape_string(encoded, NULL);
                g_assert_cmpstr(decoded, ==, sane);
                g_assert_true(g_utf8_validate(decoded, -1, NULL));
                g_assert_cmpuint(strlen(decoded), <=, 64);
        }
}

/* `umount PATH` as the user who opened the image: kernel (ext4) and FUSE (fuseiso) mounts alike, plain and
 * lazy (-l reaches umount.loopd, which unmounts plainly). */
typedef struct UmountCase {
        const char *kind; /* "ext4" or "iso" */
        const char *option; /* umount's option, or NULL */
} UmountCase;

static void test_umount_as_user(Desktop *d, gconstpointer data)
{
        const UmountCase *c = d->h.options->data;
        DESKTOP_REQUIRE(d);
        bool iso = g_str_equal(c->kind, "iso");
        g_autofree char *image =
                iso ? make_iso(d, "desk.iso", "DESK_ISO") : make_ext4(d, "desk.img", "DESK_EXT");
        g_autofree char *fstype = NULL;
        g_auto(Opened) o = { 0 };
        g_auto(HarnessRun) run = { 0 };

        harness_allow_all(&d->h);
        if (!open_as(d, HARNESS_USER_A, image, &o))
                return;
        fstype = fstype_at(o.mount_point);
        g_test_message("%s is %s", o.mount_point, fstype);
        if (iso)
                g_assert_true(g_str_has_prefix(fstype, "fuse"));
        else
                g_assert_cmpstr(fstype, ==, "ext4");
        check_utab(o.mount_point, iso ? "DESK_ISO" : "DESK_EXT",
                iso ? "media-optical" : "drive-removable-media");

        g_assert_cmpint(umount_as(d, HARNESS_USER_A, &run, c->option, o.mount_point), ==, 0);
        g_assert_cmpstr(run.err, ==, "");
        check_closed(d, &o);
}

static const UmountCase umount_ext4 = { "ext4", NULL };
static const UmountCase umount_iso = { "iso", NULL };
static const UmountCase umount_ext4_lazy = { "ext4", "-l" };
static const HarnessOptions opts_umount_ext4 = { .loopd_args = run_media_args, .data = &umount_ext4 };
static const HarnessOptions opts_umount_iso = { .loopd_args = run_media_args, .data = &umount_iso };
static const HarnessOptions opts_umount_ext4_lazy = { .loopd_args = run_media_args,
        .data = &umount_ext4_lazy };

/* A file manager's Unmount: `gio mount -u PATH` (GIO runs `umount PATH` as the user). */
static void test_gio_unmount(Desktop *d, gconstpointer data)
{
        DESKTOP_REQUIRE(d);
        g_autofree char *ext4 = make_ext4(d, "gio.img", "DESK_GIO"),
                        *iso = make_iso(d, "gio.iso", "DESK_GISO");
        g_auto(Opened) e = { 0 };
        g_auto(Opened) i = { 0 };

        harness_allow_all(&d->h);
        if (!open_as(d, HARNESS_USER_A, ext4, &e) || !open_as(d, HARNESS_USER_A, iso, &i))
                return;
        for (const Opened *o = &e; o; o = o == &e ? &i : NULL) {
                const char *const args[] = { "mount", "-u", o->mount_point, NULL };
                g_auto(HarnessRun) run = { 0 };

                g_assert_cmpint(gio_as(d, HARNESS_USER_A, &run, args), ==, 0);
                g_assert_cmpstr(run.err, ==, "");
                check_closed(d, o);
        }
}

/* A file manager's Eject: `gio mount -e PATH` where GIO offers it (can_eject; GLib offers it for kernel
 * iso9660 and udf mounts), closing the image; where GIO does not offer it, it refuses and nothing changes
 * (the file manager shows Unmount instead, which test_gio_unmount covers). */
static void test_gio_eject(Desktop *d, gconstpointer data)
{
        DESKTOP_REQUIRE(d);
        g_autofree char *ext4 = make_ext4(d, "ej.img", "DESK_EJ"),
                        *iso = make_iso(d, "ej.iso", "DESK_EJISO");
        g_auto(Opened) e = { 0 };
        g_auto(Opened) i = { 0 };
        g_autoptr(GPtrArray) listed = NULL;

        harness_allow_all(&d->h);
        if (!open_as(d, HARNESS_USER_A, ext4, &e) || !open_as(d, HARNESS_USER_A, iso, &i))
                return;
        listed = gio_mounts(d, HARNESS_USER_A);
        for (const Opened *o = &e; o; o = o == &e ? &i : NULL) {
                const char *const eject[] = { "mount", "-e", o->mount_point, NULL };
                const char *const unmount[] = { "mount", "-u", o->mount_point, NULL };
                GioMount *m = gio_mount_at(listed, o->mount_point);
                g_auto(HarnessRun) run = { 0 };
                int status;

                if (!m) {
                        FAIL("gio mount -l does not list %s", o->mount_point);
                        continue;
                }
                status = gio_as(d, HARNESS_USER_A, &run, eject);
                if (m->can_eject) {
                        g_test_message("GIO offers eject for %s", o->mount_point);
                        g_assert_cmpint(status, ==, 0);
                        check_closed(d, o);
                        continue;
                }
                g_test_message("GIO offers no eject for %s: %s", o->mount_point, run.err);
                g_assert_cmpint(status, !=, 0);
                check_untouched(d, o);
                g_assert_cmpint(gio_as(d, HARNESS_USER_A, &run, unmount), ==, 0);
                check_closed(d, o);
        }
}

/* `gio mount -l` as the user lists each of loopd's mounts; what it calls them and which icon it shows are
 * GIO's (GLib 2.74: the mount point's name, which loopd makes from the label, and an icon from the
 * filesystem type), and the name and icons loopd means for them are in utab for those that read them. */
static void test_gio_lists_names_and_icons(Desktop *d, gconstpointer data)
{
        DESKTOP_REQUIRE(d);
        g_autofree char *ext4 = make_ext4(d, "list.img", "DESK_LIST"),
                        *iso = make_iso(d, "list.iso", "DESK_LISO");
        g_autofree char *bare = make_vfat(d, "no-label.img", NULL);
        g_auto(Opened) e = { 0 };
        g_auto(Opened) i = { 0 };
        g_auto(Opened) v = { 0 };
        g_autoptr(GPtrArray) listed = NULL;
        struct {
                const Opened *o;
                const char *name, *icon;
        } want[] = {
                { &e, "DESK_LIST", "drive-removable-media" }, { &i, "DESK_LISO", "media-optical" },
                { &v, "no-label.img", "drive-removable-media" }, /* no label: the image's file name */
        };

        harness_allow_all(&d->h);
        if (!open_as(d, HARNESS_USER_A, ext4, &e) || !open_as(d, HARNESS_USER_A, iso, &i) ||
                !open_as(d, HARNESS_USER_A, bare, &v))
                return;
        listed = gio_mounts(d, HARNESS_USER_A);
        for (guint k = 0; k < G_N_ELEMENTS(want); k++) {
                const Opened *o = want[k].o;
                GioMount *m = gio_mount_at(listed, o->mount_point);
                g_autofree char *fstype = fstype_at(o->mount_point),
                                *basename = g_path_get_basename(o->mount_point);
                g_autofree char *icon = NULL, *symbolic = NULL;
                bool optical = g_strcmp0(fstype, "iso9660") == 0 || g_strcmp0(fstype, "udf") == 0;

                check_utab(o->mount_point, want[k].name, want[k].icon);
                if (!m) {
                        FAIL("gio mount -l does not list %s (%s)", o->mount_point, want[k].name);
                        continue;
                }
                icon = first_icon(m->icons);
                symbolic = first_icon(m->symbolic_icons);
                g_test_message("GIO: %s is \"%s\", icon %s / %s, can_unmount %d, can_eject %d",
                        o->mount_point, m->name, icon, symbolic, m->can_unmount, m->can_eject);
                /* GIO's rules (gunixmounts.c g_unix_mount_guess_name/_icon/_can_eject). */
                g_assert_cmpstr(m->name, ==, basename);
                g_assert_cmpstr(icon, ==, optical ? "media-optical" : "drive-harddisk");
                g_assert_cmpstr(
                        symbolic, ==, optical ? "media-optical-symbolic" : "drive-harddisk-symbolic");
                g_assert_true(m->can_unmount);
                g_assert_true(m->can_eject == optical);
        }
        /* With a label the name GIO shows is the label. */
        g_assert_true(g_str_has_suffix(e.mount_point, "/DESK_LIST"));
        g_assert_true(g_str_has_suffix(i.mount_point, "/DESK_LISO"));

        for (guint k = 0; k < G_N_ELEMENTS(want); k++) {
                g_auto(HarnessRun) run = { 0 };
                g_assert_cmpint(umount_as(d, HARNESS_USER_A, &run, NULL, want[k].o->mount_point), ==, 0);
                check_closed(d, want[k].o);
        }
}

/* A user cannot close another user's image through the helper: umount.loopd, run as libmount runs it,
 * asks loopd, which needs manage-others (auth_admin_keep: without an agent, a challenge is a no); neither
 * the helper nor `umount PATH` changes anything. The owner then can. */
static void test_other_users_mount_refused(Desktop *d, gconstpointer data)
{
        DESKTOP_REQUIRE(d);
        g_autofree char *image = make_ext4(d, "theirs.img", "DESK_B");
        g_autoptr(GPtrArray) calls = NULL;
        g_auto(Opened) o = { 0 };
        g_auto(HarnessRun) run = { 0 };
        g_autofree char *prefix = NULL;
        bool asked_interactively = false;

        harness_allow_all(&d->h);
        fake_authority_set(d->h.authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_CHALLENGE, 0);
        if (!open_as(d, HARNESS_USER_B, image, &o))
                return;
        fake_authority_clear_calls(d->h.authority);

        const char *const helper[] = { HELPER, o.mount_point, NULL };
        g_assert_cmpint(harness_spawn_as(&d->h, HARNESS_USER_A, &run, helper), ==, 32);
        prefix = g_strdup_printf("umount.loopd: %s: ", o.mount_point);
        g_assert_true(g_str_has_prefix(run.err, prefix));
        g_assert_cmpuint(strlen(run.err), >, strlen(prefix) + 1);
        g_assert_true(strchr(run.err, '\n') == run.err + strlen(run.err) - 1); /* one line */
        check_untouched(d, &o);
        /* polkit was asked for manage-others, with interaction allowed (an agent could have said yes). */
        calls = fake_authority_calls(d->h.authority);
        for (guint i = 0; i < calls->len; i++) {
                FakeAuthCall *call = calls->pdata[i];
                if (g_str_equal(call->action_id, LOOPD_ACTION_MANAGE_OTHERS) && call->flags == 1)
                        asked_interactively = true;
        }
        g_assert_true(asked_interactively);

        g_assert_cmpint(umount_as(d, HARNESS_USER_A, &run, NULL, o.mount_point), !=, 0);
        g_test_message("umount as %s: %s", HARNESS_USER_A, run.err);
        check_untouched(d, &o);

        g_assert_cmpint(umount_as(d, HARNESS_USER_B, &run, NULL, o.mount_point), ==, 0);
        check_closed(d, &o);
}

/* Unmounts after which umount(8) does not drop the utab entry leave none behind either: loopd's own
 * (Unmount and `loopctl close`, which call umount2()), root's `umount -n` (no utab update: loopd's watcher
 * removes the mount point and the entry with it); and root's plain and lazy umount(8), where libmount drops
 * it. The autoclear devices go with their mounts. (After umount.loopd, umount(8) itself drops the entry
 * as well: the other tests cannot tell whose removal it was.) */
static void test_other_unmounts_leave_no_utab(Desktop *d, gconstpointer data)
{
        DESKTOP_REQUIRE(d);
        static const char *const ways[] = { "loopctl unmount", "loopctl close", "umount -n", "umount",
                "umount -l" };

        harness_allow_all(&d->h);
        for (guint k = 0; k < G_N_ELEMENTS(ways); k++) {
                g_autofree char *name = g_strdup_printf("other-%u.img", k),
                                *label = g_strdup_printf("DESK_O%u", k);
                /* FUSE and kernel mounts in turn. */
                g_autofree char *image = k % 2 ? make_iso(d, name, label) : make_ext4(d, name, label);
                g_autofree char *utab = NULL;
                g_auto(HarnessRun) run = { 0 };
                g_auto(Opened) o = { 0 };

                if (!open_as(d, HARNESS_USER_A, image, &o))
                        return;
                utab = utab_options(o.mount_point);
                g_assert_nonnull(utab);
                g_test_message("%s of %s", ways[k], o.mount_point);
                if (g_str_equal(ways[k], "loopctl unmount"))
                        g_assert_cmpint(
                                harness_loopctl(&d->h, HARNESS_USER_A, &run, "unmount", o.mount_point, NULL),
                                ==, 0);
                else if (g_str_equal(ways[k], "loopctl close"))
                        g_assert_cmpint(
                                harness_loopctl(&d->h, HARNESS_USER_A, &run, "close", image, NULL), ==, 0);
                else
                        g_assert_cmpint(
                                umount_as(d, NULL, &run, ways[k][6] ? ways[k] + 7 : NULL, o.mount_point), ==,
                                0);
                check_closed(d, &o);
        }
}

int main(int argc, char *argv[])
{
        harness_init(&argc, &argv);
        g_test_add_func("/desktop/userspace-options/hostile-names", test_userspace_options_hostile_names);
        g_test_add("/desktop/umount/kernel-mount", Desktop, &opts_umount_ext4, desktop_setup,
                test_umount_as_user, desktop_teardown);
        g_test_add("/desktop/umount/fuse-mount", Desktop, &opts_umount_iso, desktop_setup,
                test_umount_as_user, desktop_teardown);
        g_test_add("/desktop/umount/lazy", Desktop, &opts_umount_ext4_lazy, desktop_setup,
                test_umount_as_user, desktop_teardown);
        desktop_add("/desktop/umount/other-users-mount-refused", test_other_users_mount_refused);
        desktop_add("/desktop/umount/other-unmounts-leave-no-utab", test_other_unmounts_leave_no_utab);
        desktop_add("/desktop/gio/unmount", test_gio_unmount);
        desktop_add("/desktop/gio/eject-where-offered", test_gio_eject);
        desktop_add("/desktop/gio/names-and-icons", test_gio_lists_names_and_icons);
        return g_test_run();
}
