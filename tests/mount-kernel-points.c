/* mount-kernel-points.c: the mount-kernel suite's mount points: who may enter, unique names, and the
 * directories it refuses to trust. */
#include "test-mount-kernel.h"

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

void test_point_user_dir_only_user_may_enter(Fixture *f, gconstpointer data)
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

void test_point_unique_names(Fixture *f, gconstpointer data)
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
        g_autofree char *dotted = g_strconcat(f->scratch.dir, "/./media", NULL);
        g_assert_cmpint(mount_point_create(dotted, "user", USER_UID, USER_UID, "x", &bad), ==, -EINVAL);
        g_assert_cmpint(
                mount_point_create("relative/media", "user", USER_UID, USER_UID, "x", &bad), ==, -EINVAL);
        g_assert_null(bad);

        g_assert_cmpint(mount_point_remove(f->media, a), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, c), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, d), ==, 0);
        g_assert_cmpint(mount_point_remove(f->media, d), ==, -ENOENT);
}

void test_point_remove_only_under_media_dir(Fixture *f, gconstpointer data)
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

void test_point_refuses_symlinked_user_dir(Fixture *f, gconstpointer data)
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

void test_point_refuses_symlinked_media_dir(Fixture *f, gconstpointer data)
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

void test_point_refuses_foreign_owned_user_dir(Fixture *f, gconstpointer data)
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

void test_point_refuses_writable_parent(Fixture *f, gconstpointer data)
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

void test_point_root_user_dir_has_no_acl(Fixture *f, gconstpointer data)
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
