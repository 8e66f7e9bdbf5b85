/* test-mount.c: Mount, Unmount, MountImage and loopctl mount/unmount/open/close through the running daemon,
 * with real filesystems and real mounts, as the unprivileged test user wherever a user would be the caller.
 * What a mount is, is asked of findmnt, stat and the files themselves, never of loopd. */
#include "test-mount.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers: images */

/* Hands the image to user, so that loopctl, which opens it as that user, may open it read-write. */
void give_image_to(const char *path, const char *user)
{
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
}

/* Writes into the filesystem at offset of image before loopd ever sees it, with mount(8) on a loop device
 * of the test's own: runs the shell line script with $M set to the mount point. */
void populate(Harness *h, const char *image, guint64 offset, const char *script)
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
char *raw_label(const char *image, guint64 offset, guint64 length)
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
GVariant *mount_options(const char *options, gboolean read_only)
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
GVariant *call_mount_image(
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

char *reply_device(GVariant *reply, char **ret_p1, char **ret_p2)
{
        char *device = NULL;

        g_variant_get_child(reply, 0, "s", &device);
        *ret_p1 = g_strconcat(device, "p1", NULL);
        *ret_p2 = g_strconcat(device, "p2", NULL);
        return device;
}

/* The mount point MountImage's reply gives node, or NULL. */
const char *reply_mount_point(GVariant *reply, const char *node)
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

char *json_member(JsonNode *node, const char *member)
{
        JsonObject *o = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;

        if (!o || !json_object_has_member(o, member)) {
                g_test_fail_printf("JSON output has no \"%s\"", member);
                return NULL;
        }
        return g_strdup(json_object_get_string_member(o, member));
}

/* `loopctl attach` as user (read-only unless writable); the device, e.g. "/dev/loop3". */
char *user_attach(Harness *h, const char *user, const char *image, bool writable)
{
        g_autoptr(JsonNode) out = writable
                ? harness_loopctl_json(h, user, "attach", image, NULL)
                : harness_loopctl_json(h, user, "attach", "--read-only", image, NULL);

        return json_member(out, "device");
}

/* `loopctl mount NODE [--read-only]` as user; the mount point. */
char *user_mount(Harness *h, const char *user, const char *node, bool read_only)
{
        g_autoptr(JsonNode) out = read_only
                ? harness_loopctl_json(h, user, "mount", "--read-only", node, NULL)
                : harness_loopctl_json(h, user, "mount", node, NULL);
        g_autofree char *reported = json_member(out, "node");

        g_assert_cmpstr(reported, ==, node);
        return json_member(out, "mount_point");
}

void user_loopctl_ok(Harness *h, const char *user, const char *verb, const char *arg)
{
        g_auto(HarnessRun) run = { 0 };

        if (harness_loopctl(h, user, &run, verb, arg, NULL) != 0)
                g_test_fail_printf("loopctl %s %s exited %d: %s", verb, arg, run.status, run.err);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles */

/* findmnt's view of the mount at target: the object of `findmnt --json --mountpoint`, or NULL. */
JsonObject *findmnt_at(const char *target)
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
GPtrArray *targets_of(const char *node)
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
guint check_media_mounts_safe(Harness *h)
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

char *user_dir(Harness *h, const char *user)
{
        return g_build_filename(h->media_dir, user, NULL);
}

/* The names in media/<user> (none if it does not exist), sorted. */
GPtrArray *user_dir_entries(Harness *h, const char *user)
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

void check_user_dir_empty(Harness *h, const char *user)
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
bool check_mount(
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

bool mount_is_read_only(const char *mount_point)
{
        g_autoptr(JsonObject) fs = findmnt_at(mount_point);

        return fs && test_options_have(json_object_get_string_member_with_default(fs, "options", ""), "ro");
}

/* After Unmount: not mounted, and the directory is gone. */
void check_unmounted(const char *mount_point)
{
        g_autoptr(JsonObject) fs = findmnt_at(mount_point);

        if (fs)
                g_test_fail_printf("%s is still mounted after Unmount", mount_point);
        if (g_file_test(mount_point, G_FILE_TEST_EXISTS))
                g_test_fail_printf("the mount point %s is left behind after Unmount", mount_point);
}

/* After close/detach: the device is no longer bound to the test's image, and no partition node is left. */
void check_gone(Harness *h, const char *device)
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
int run_as(Harness *h, const char *user, char **ret_out, const char *const *argv)
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
char *read_as(Harness *h, const char *user, const char *path)
{
        const char *argv[] = { "cat", "--", path, NULL };
        char *out = NULL;

        if (run_as(h, user, &out, argv) != 0)
                g_clear_pointer(&out, g_free);
        return out;
}

/* Writes text into path as user; returns the shell's exit status and its stderr in *ret_err. */
int write_as(Harness *h, const char *user, const char *path, const char *text, char **ret_err)
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
GPtrArray *holders_of(dev_t rdev, const char *comm)
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

dev_t rdev_of(const char *node)
{
        struct stat st;

        g_assert_cmpint(stat(node, &st), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        return st.st_rdev;
}

bool loopd_alive(Harness *h)
{
        bool alive = harness_loopd_alive(h);

        if (!alive)
                g_test_fail_printf("loopd is not running any more");
        return alive;
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
        harness_add("/loopd/loopctl/not-a-loop-device-in-words-and-json",
                test_loopctl_real_not_a_loop_device, NULL);
        harness_add("/loopd/loopctl/open-writable-says-read-only", test_loopctl_real_writable_says_read_only,
                NULL);
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

        harness_add(
                "/loopd/open/twice-same-device-and-mounts", test_open_twice_same_device_and_mounts, NULL);
        harness_add(
                "/loopd/open/again-mounts-what-is-missing", test_open_again_mounts_what_is_missing, NULL);
        harness_add("/loopd/attach/second-writer-refused", test_attach_second_writer_refused, NULL);

        return g_test_run();
}
