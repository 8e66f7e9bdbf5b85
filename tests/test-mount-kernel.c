/* test-mount-kernel.c: real mounts through the mount library: kernel filesystems, FUSE helpers, mount
 * points and the mount table (root, loop devices). */
#include "test-mount-kernel.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "mount-internal.h"
#include "runner.h"

static void fixture_setup(Fixture *f, gconstpointer data)
{
        f->targets = g_ptr_array_new_with_free_func(g_free);
        f->devices = g_ptr_array_new_with_free_func(g_free);
        if (scratch_setup(&f->scratch))
                f->media = g_build_filename(f->scratch.dir, "media", NULL);
}

/* Takes down what the test made and leaves to the teardown (the mount points it mounted, the loop devices
 * it attached), even when it failed halfway; then the scratch teardown fails the test for anything else
 * still bound or mounted under its directory. */
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
        scratch_teardown(&f->scratch);
        g_ptr_array_unref(f->targets);
        g_ptr_array_unref(f->devices);
        g_free(f->media);
}

#define TEST(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)

/* ---- helpers ---- */

char *path_in(Fixture *f, const char *name)
{
        return g_build_filename(f->scratch.dir, name, NULL);
}

/* Attaches image (read-only if asked) to a free loop device; teardown detaches it. */
char *attach(Fixture *f, const char *image, bool read_only)
{
        g_autofree char *q = g_shell_quote(image);
        char *dev = test_sh("losetup --find --show %s %s", read_only ? "--read-only" : "", q);

        g_strstrip(dev);
        g_ptr_array_add(f->devices, g_strdup(dev));
        return dev;
}

dev_t devnum_of(const char *node)
{
        struct stat st;

        g_assert_cmpint(stat(node, &st), ==, 0);
        return st.st_rdev;
}

/* Writes files into a fresh filesystem with mount(8) before the test mounts it through the library:
 * hello.txt, a setuid-root copy of id(1) and a world-writable /dev/null node. */
void populate(Fixture *f, const char *node, const char *text)
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

char *findmnt(const char *target, const char *column)
{
        g_autofree char *q = g_shell_quote(target);
        char *out = test_sh("findmnt --noheadings --first-only --output %s --mountpoint %s", column, q);

        return g_strstrip(out);
}

bool is_mountpoint(const char *path)
{
        g_autofree char *q = g_shell_quote(path);

        return test_sh_status(NULL, "mountpoint -q %s", q) == 0;
}

/* Runs a shell line as uid (setpriv, no groups); returns the exit status and stdout. */
int sh_as(uid_t uid, char **ret_out, const char *line)
{
        g_autofree char *q = g_shell_quote(line);

        return test_sh_status(ret_out, "setpriv --reuid=%u --regid=%u --clear-groups /bin/sh -c %s",
                (unsigned)uid, (unsigned)uid, q);
}

/* Options, mount point and mount for uid, as the daemon does it. fuse: -1 = as mount_pick_driver() says.
 * Returns the mount point or NULL (the test has failed then, unless expect_error). */
char *mount_for(Fixture *f, const char *node, const char *fstype, const char *user_options, bool read_only,
        int fuse, const char *name, int *ret_r)
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
void assert_safe_mount(const char *target, const char *node, bool fuse)
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

void assert_found_in_mount_table(const char *node, const char *target)
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

void assert_not_in_mount_table(const char *node, const char *target)
{
        g_auto(GStrv) targets = NULL;

        g_assert_cmpint(mount_find_targets(devnum_of(node), node, &targets), ==, 0);
        g_assert_nonnull(targets);
        if (targets)
                g_assert_cmpuint(g_strv_length(targets), ==, 0);
        g_assert_cmpint(mount_find_source(target, NULL, NULL), ==, -ENOENT);
}

void unmount_and_remove(Fixture *f, const char *target)
{
        g_assert_cmpint(unmount_filesystem(target, NULL), ==, 0);
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

void assert_user_reads(const char *target, const char *file, const char *expected)
{
        int status;
        g_autofree char *out = read_as_user(target, file, USER_UID, &status);

        g_assert_cmpint(status, ==, 0);
        g_assert_cmpstr(out, ==, expected);
}

void assert_other_user_kept_out(const char *target, const char *file)
{
        int status;
        g_autofree char *out = read_as_user(target, file, OTHER_UID, &status);

        g_assert_cmpint(status, !=, 0);
}

/* PIDs of FUSE helpers serving target: their command line names it, or the device mounted there together
 * with /dev/fd/3 (squashfuse, a libfuse 3 driver, takes its FUSE fd as the mountpoint). */
GArray *helpers_serving(const char *target)
{
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        g_autoptr(GDir) d = g_dir_open("/proc", 0, NULL);
        g_autofree char *source = NULL;
        const char *e;

        (void)mount_find_source(target, &source, NULL);

        while (d && (e = g_dir_read_name(d))) {
                g_autofree char *file = NULL, *cmdline = NULL;
                gsize len = 0;
                bool match = false;

                if (e[0] < '1' || e[0] > '9')
                        continue;
                file = g_strdup_printf("/proc/%s/cmdline", e);
                if (!g_file_get_contents(file, &cmdline, &len, NULL))
                        continue;
                bool names_source = false, fd_mountpoint = false;
                for (gsize i = 0; i < len; i += strlen(cmdline + i) + 1) {
                        match = match || g_str_equal(cmdline + i, target);
                        names_source = names_source || (source && g_str_equal(cmdline + i, source));
                        fd_mountpoint = fd_mountpoint || g_str_equal(cmdline + i, "/dev/fd/3");
                }
                match = match || (names_source && fd_mountpoint);
                if (match) {
                        pid_t pid = (pid_t)atoi(e);
                        g_array_append_val(pids, pid);
                }
        }
        return pids;
}

/* Gone, or a zombie waiting for its reaper: it has exited either way. */
bool process_exited(pid_t pid)
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
void fuse_unmount_and_check_helper(Fixture *f, const char *target)
{
        g_autoptr(GArray) pids = helpers_serving(target);

        g_assert_cmpuint(pids->len, ==, 1);
        g_assert_cmpint(unmount_filesystem(target, NULL), ==, 0);
        for (guint i = 0; i < pids->len; i++)
                g_assert_true(process_exited(g_array_index(pids, pid_t, i)));
        g_assert_false(is_mountpoint(target));
        g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
}

/* ---- the mount table ---- */

/* The table loopd keeps between lookups (mount_table_load()): the same while nothing changed, read again
 * after every mount and unmount, also one a child forked of loopd made; that child reads the table itself
 * and leaves the news of the change to loopd. In a mount namespace of the test's own. */
static void test_table_cache_follows_changes(Fixture *f, gconstpointer data)
{
        g_autofree char *dir = NULL, *source = NULL;
        MountTable *a = NULL, *b = NULL;
        int status = -1;
        pid_t pid;

        REQUIRE(f);
        if (!g_test_subprocess()) {
                g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
                g_test_trap_assert_passed();
                return;
        }
        g_assert_cmpint(unshare(CLONE_NEWNS), ==, 0);
        g_assert_cmpint(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), ==, 0);
        dir = path_in(f, "cached");
        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);

        g_assert_cmpint(mount_table_load(&a), ==, 0);
        g_assert_cmpint(mount_table_load(&b), ==, 0);
        g_assert_true(a == b);
        mount_table_unref(b);
        g_assert_cmpint(mount_find_source(dir, NULL, NULL), ==, -ENOENT);

        g_assert_cmpint(mount("loopd-cached", dir, "tmpfs", MS_NOSUID | MS_NODEV, NULL), ==, 0);
        g_assert_cmpint(mount_find_source(dir, &source, NULL), ==, 0);
        g_assert_cmpstr(source, ==, "loopd-cached");
        g_assert_cmpint(mount_table_load(&b), ==, 0);
        g_assert_true(a != b);
        mount_table_unref(b);
        mount_table_unref(a);

        /* The child unmounts and looks: were its lookup to poll loopd's fd, loopd would not hear of it. */
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0)
                _exit(umount2(dir, 0) == 0 && mount_find_source(dir, NULL, NULL) == -ENOENT ? 0 : 1);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_cmpint(status, ==, 0);
        g_assert_cmpint(mount_find_source(dir, NULL, NULL), ==, -ENOENT);
        g_assert_cmpint(g_rmdir(dir), ==, 0);
}

/* mount_wait_served() of a FUSE mount whose server took a GETATTR and never answers it (tests/fuse-hang,
 * FUSE_HANG_FREEZE=getattr, frozen), through a runner as loopd has one: the stat() waits in the kernel for
 * good, past any signal, SIGKILL included; the wait ends at its deadline all the same (-ETIMEDOUT), the
 * caller goes on, and until that child ends the node has a mount in progress. A child sharing
 * the caller's memory under CLONE_VFORK, as the wait was made before, held its caller there too. */
static void test_fuse_wait_served_bounded(Fixture *f, gconstpointer data)
{
        static const RunnerOps *const table[] = { &mount_runner_ops };
        const char *node = "/dev/loop-test-served";
        HarnessHang hang = { .freeze_getattr = true };
        gint64 t0, ms;
        int r;

        REQUIRE(f);
        g_assert_cmpint(runner_start(table, G_N_ELEMENTS(table)), ==, 0);
        if (!harness_hang_start_in(f->scratch.dir, &hang))
                goto out;
        g_assert_cmpint(mount_wait_served(hang.mountpoint, node, 2000), ==, 0);
        g_assert_false(mount_in_progress(node));

        harness_hang_freeze(&hang);
        g_usleep(1500 * 1000); /* the kernel's cached attributes of the root (a second) expire */
        t0 = g_get_monotonic_time();
        r = mount_wait_served(hang.mountpoint, node, 1000);
        ms = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("mount_wait_served() of a mount whose GETATTR hangs: %s after %" G_GINT64_FORMAT
                       " ms",
                g_strerror(-r), ms);
        g_assert_cmpint(r, ==, -ETIMEDOUT);
        g_assert_cmpint(ms, <, 3000);
        g_assert_true(mount_in_progress(node));

        /* The server's death ends the stat that waited (ENOTCONN), and with it what was in progress. */
        harness_hang_kill(&hang);
        for (gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
                mount_in_progress(node) && g_get_monotonic_time() < deadline; g_usleep(50 * 1000))
                ;
        g_assert_false(mount_in_progress(node));
out:
        harness_hang_clear(&hang);
        runner_stop();
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

        TEST("/mount/table/cache-follows-changes", test_table_cache_follows_changes);
        TEST("/mount/fuse/wait-served-bounded-when-getattr-hangs", test_fuse_wait_served_bounded);

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

        TEST("/mount/sandbox/fuseiso-confined", test_sandbox_fuseiso_confined);
        TEST("/mount/sandbox/fusefat-confined", test_sandbox_fusefat_confined);
        TEST("/mount/sandbox/exfat-fuse-confined", test_sandbox_exfat_fuse_confined);
        TEST("/mount/sandbox/fuse2fs-confined", test_sandbox_fuse2fs_confined);
        TEST("/mount/sandbox/squashfuse-confined", test_sandbox_squashfuse_confined);
        TEST("/mount/sandbox/ntfs-3g-unconfined", test_sandbox_ntfs_3g_unconfined);
        TEST("/mount/sandbox/hostile-driver-stays-in", test_sandbox_hostile_driver_stays_in);
        TEST("/mount/sandbox/read-only-node-stays-read-only", test_sandbox_read_only_node_stays_read_only);
        TEST("/mount/sandbox/hostile-driver-control", test_sandbox_hostile_driver_control);

        return g_test_run();
}
