/* desktop-names.c: the desktop suite's checks of what the desktop is told about a mount: the userspace
 * options loopd records (safe whatever the label), and what `gio mount -l` shows. */
#include "test-desktop.h"

/* What loopd records for the desktop never breaks the option string, whatever the label says: exactly
 * uhelper, x-gvfs-name (percent-encoded, valid UTF-8 once decoded, the sanitized label) and the icons. */
void test_userspace_options_hostile_names(void)
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

/* `gio mount -l` as the user lists each of loopd's mounts; what it calls them and which icon it shows are
 * GIO's (GLib 2.74: the mount point's name, which loopd makes from the label, and an icon from the
 * filesystem type), and the name and icons loopd means for them are in utab for those that read them. */
void test_gio_lists_names_and_icons(Desktop *d, gconstpointer data)
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
                        harness_fail("gio mount -l does not list %s (%s)", o->mount_point, want[k].name);
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
