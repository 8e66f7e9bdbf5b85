/* test-desktop.c: closing an image from the desktop. Unprivileged users open images with `loopctl open`
 * and close them the ways a desktop does: `umount PATH` (libmount hands it to umount.loopd through the
 * mount's uhelper=loopd), `gio mount -u` and, where GIO offers it, `gio mount -e`; what GIO lists; what
 * libmount keeps in /run/mount/utab; and that nobody closes another user's mount through the helper.
 * Mounts go to the real /run/media/<user> (GIO shows nothing else), and the build's umount.loopd is put at
 * /usr/sbin/umount.loopd (where libmount looks) for each test. The kernel, findmnt, losetup and
 * /run/mount/utab are the oracles, never loopd. This file: the fixture, helpers and oracles, main();
 * desktop-close.c the ways to close, desktop-names.c what the desktop is told about a mount. */
#include "test-desktop.h"

const char *const desktop_loopd_args[] = { "--media-dir", MEDIA, NULL };
const HarnessOptions desktop_options = { .loopd_args = desktop_loopd_args };

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

static bool helper_install(Desktop *d)
{
        const char *build = g_getenv("LOOPD_BUILD_ROOT");
        g_autofree char *built = build ? g_build_filename(build, "umount", "umount.loopd", NULL) : NULL;
        g_autofree char *why = NULL;
        struct stat st;

        helper_restore();
        if (!built || access(built, X_OK) < 0) {
                why = g_strdup_printf("the build's umount.loopd (%s) is missing", built ? built : "?");
                test_cannot_run(why);
                return false;
        }
        if (lstat(HELPER, &st) == 0 && rename(HELPER, HELPER_SAVED) < 0) {
                why = g_strdup_printf("cannot move %s aside: %s", HELPER, g_strerror(errno));
                test_cannot_run(why);
                return false;
        }
        if (symlink(built, HELPER) < 0) {
                why = g_strdup_printf("cannot link %s to %s: %s", HELPER, built, g_strerror(errno));
                helper_restore();
                test_cannot_run(why);
                return false;
        }
        d->linked = true;
        g_test_message("%s -> %s", HELPER, built);
        return true;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

void desktop_setup(Desktop *d, gconstpointer data)
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

void desktop_teardown(Desktop *d, gconstpointer data)
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

/* ---------------------------------------------------------------------------------------------------- */
/* Images and opening them */

char *make_ext4(Desktop *d, const char *name, const char *label)
{
        char *path = harness_image_path(&d->h, name);

        image_create(path, 32 * MiB);
        g_free(image_mkfs_at(path, 0, 32 * MiB, "ext4", label));
        return path;
}

char *make_vfat(Desktop *d, const char *name, const char *label)
{
        char *path = harness_image_path(&d->h, name);

        image_create(path, 32 * MiB);
        g_free(image_mkfs_at(path, 0, 32 * MiB, "vfat", label));
        return path;
}

/* A plain ISO 9660 image (no partition table): this kernel has no iso9660, so loopd serves it with
 * fuseiso. */
char *make_iso(Desktop *d, const char *name, const char *volid)
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

void opened_clear(Opened *o)
{
        g_clear_pointer(&o->device, g_free);
        g_clear_pointer(&o->mount_point, g_free);
}

/* `loopctl --json open IMAGE` as user: false (and the test failed) when it did not open one mount. */
bool open_as(Desktop *d, const char *user, const char *image, Opened *ret)
{
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(JsonNode) out = NULL;
        JsonObject *o;
        JsonArray *mounts;

        if (harness_loopctl(&d->h, user, &run, "--json", "open", image, NULL) != 0) {
                harness_fail("loopctl open %s as %s exited %d: %s", image, user, run.status, run.err);
                return false;
        }
        out = harness_run_json(&run);
        o = out && JSON_NODE_HOLDS_OBJECT(out) ? json_node_get_object(out) : NULL;
        mounts = o && json_object_has_member(o, "mounts") ? json_object_get_array_member(o, "mounts") : NULL;
        if (!mounts || json_array_get_length(mounts) != 1) {
                harness_fail("loopctl open %s did not mount exactly one filesystem: %s", image, run.out);
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
char *fstype_at(const char *target)
{
        g_autofree char *q = g_shell_quote(target);
        char *out = NULL;

        if (test_sh_status(&out, "findmnt -rn -o FSTYPE --mountpoint %s", q) != 0) {
                g_free(out);
                return NULL;
        }
        return g_strstrip(out);
}

bool mounted_at(const char *target)
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
char *utab_options(const char *target)
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
void utab_drop(const char *target)
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
char *option_value(const char *options, const char *name)
{
        char *value = NULL;
        size_t len = 0;

        if (!options || mnt_optstr_get_option(options, name, &value, &len) != 0)
                return NULL;
        return g_strndup(value, len);
}

/* Checks what loopd's mount at target carries in utab: uhelper=loopd, the name and icons for GIO. */
void check_utab(const char *target, const char *name, const char *icon)
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
bool still_bound(Desktop *d, const char *device)
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
void check_closed(Desktop *d, const Opened *o)
{
        g_autofree char *utab = NULL;
        gint64 deadline = g_get_monotonic_time() + SETTLE_MS * 1000;

        while (anything_left(d, o) && g_get_monotonic_time() < deadline)
                g_usleep(50 * 1000);
        utab = utab_options(o->mount_point);
        if (mounted_at(o->mount_point))
                harness_fail("%s is still mounted", o->mount_point);
        if (g_file_test(o->mount_point, G_FILE_TEST_EXISTS))
                harness_fail("the mount point %s is still there", o->mount_point);
        if (still_bound(d, o->device))
                harness_fail("%s is still bound", o->device);
        if (utab)
                harness_fail("%s still has its utab entry: %s", o->mount_point, utab);
}

/* Nothing of the image changed: still mounted, its directory, its device and its utab entry all there. */
void check_untouched(Desktop *d, const Opened *o)
{
        g_autofree char *utab = utab_options(o->mount_point);

        g_assert_true(mounted_at(o->mount_point));
        g_assert_true(g_file_test(o->mount_point, G_FILE_TEST_IS_DIR));
        g_assert_true(still_bound(d, o->device));
        g_assert_nonnull(utab);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Running umount and gio as a user */

int umount_as(Desktop *d, const char *user, HarnessRun *run, const char *option, const char *path)
{
        const char *argv[] = { "umount", option ? option : path, option ? path : NULL, NULL };

        return harness_spawn_as(&d->h, user, run, argv);
}

/* GIO as user: local VFS only (no GVfs daemons, no session bus), a HOME of the user's own. */
int gio_as(Desktop *d, const char *user, HarnessRun *run, const char *const *args)
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

void gio_mount_free(gpointer p)
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
GPtrArray *gio_mounts(Desktop *d, const char *user)
{
        const char *const args[] = { "mount", "-l", "-i", NULL };
        g_auto(HarnessRun) run = { 0 };
        GPtrArray *list = g_ptr_array_new_with_free_func(gio_mount_free);
        g_auto(GStrv) lines = NULL;
        GioMount *m = NULL;

        if (gio_as(d, user, &run, args) != 0) {
                harness_fail("gio mount -l -i exited %d: %s", run.status, run.err);
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

GioMount *gio_mount_at(GPtrArray *list, const char *path)
{
        for (guint i = 0; i < list->len; i++) {
                GioMount *m = list->pdata[i];
                if (g_strcmp0(m->path, path) == 0)
                        return m;
        }
        return NULL;
}

/* The first icon name of a "[a]  [b]" list. */
char *first_icon(const char *icons)
{
        const char *start = icons ? strchr(icons, '[') : NULL, *end = start ? strchr(start, ']') : NULL;

        return end ? g_strndup(start + 1, end - start - 1) : NULL;
}

int main(int argc, char *argv[])
{
        harness_init(&argc, &argv);
        g_test_add_func("/desktop/userspace-options/hostile-names", test_userspace_options_hostile_names);
        desktop_add("/desktop/umount/kernel-mount", test_umount_as_user, &opts_umount_ext4);
        desktop_add("/desktop/umount/fuse-mount", test_umount_as_user, &opts_umount_iso);
        desktop_add("/desktop/umount/lazy", test_umount_as_user, &opts_umount_ext4_lazy);
        desktop_add("/desktop/umount/other-users-mount-refused", test_other_users_mount_refused,
                &desktop_options);
        desktop_add("/desktop/umount/other-unmounts-leave-no-utab", test_other_unmounts_leave_no_utab,
                &desktop_options);
        desktop_add("/desktop/gio/unmount", test_gio_unmount, &desktop_options);
        desktop_add("/desktop/gio/eject-where-offered", test_gio_eject, &desktop_options);
        desktop_add("/desktop/gio/names-and-icons", test_gio_lists_names_and_icons, &desktop_options);
        return g_test_run();
}
