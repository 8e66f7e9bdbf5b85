/* desktop-close.c: the desktop suite's ways to close an image: umount PATH as the user (kernel and FUSE
 * mounts, lazy), gio mount -u, gio mount -e where GIO offers it, not another user's, and the unmounts that
 * bypass umount(8) leaving no utab entry behind. */
#include "test-desktop.h"

/* `umount PATH` as the user who opened the image: kernel (ext4) and FUSE (fuseiso) mounts alike, plain and
 * lazy (-l reaches umount.loopd, which unmounts plainly). */
typedef struct UmountCase {
        const char *kind; /* "ext4" or "iso" */
        const char *option; /* umount's option, or NULL */
} UmountCase;

void test_umount_as_user(Desktop *d, gconstpointer data)
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
const HarnessOptions opts_umount_ext4 = { .loopd_args = desktop_loopd_args, .data = &umount_ext4 };
const HarnessOptions opts_umount_iso = { .loopd_args = desktop_loopd_args, .data = &umount_iso };
const HarnessOptions opts_umount_ext4_lazy = { .loopd_args = desktop_loopd_args, .data = &umount_ext4_lazy };

/* A file manager's Unmount: `gio mount -u PATH` (GIO runs `umount PATH` as the user). */
void test_gio_unmount(Desktop *d, gconstpointer data)
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
void test_gio_eject(Desktop *d, gconstpointer data)
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
                        harness_fail("gio mount -l does not list %s", o->mount_point);
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

/* A user cannot close another user's image through the helper: umount.loopd, run as libmount runs it,
 * asks loopd, which needs manage-others (auth_admin_keep: without an agent, a challenge is a no); neither
 * the helper nor `umount PATH` changes anything. The owner then can. */
void test_other_users_mount_refused(Desktop *d, gconstpointer data)
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
void test_other_unmounts_leave_no_utab(Desktop *d, gconstpointer data)
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
