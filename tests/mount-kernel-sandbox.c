/* mount-kernel-sandbox.c: the mount-kernel suite's checks of the FUSE drivers' sandbox (issue 18): what
 * /proc shows of each driver serving a mount, a stand-in driver that tries to get out, and ntfs-3g, which
 * cannot be confined. */
#include <libgen.h>
#include <sys/wait.h>

#include "test-mount-kernel.h"

/* The uid and gid loopd runs the driver of a device as (daemon/mount-fuse.c). */
#define DRIVER_ID_BASE 0x7a6c0000u
#define DRIVER_ID_SPAN 0x10000u

static uid_t driver_id_of(const char *node)
{
        return DRIVER_ID_BASE + (minor(devnum_of(node)) % DRIVER_ID_SPAN);
}

/* A driver that is not installed skips the test, or fails it under CI=true (tools/install-deps installs
 * them all). */
static bool require_driver(const char *fstype)
{
        g_autofree char *why = NULL;

        if (mount_fuse_helper(fstype))
                return true;
        why = g_strdup_printf("no FUSE driver for %s installed", fstype);
        test_cannot_run(why);
        return false;
}

static bool process_is_zombie(const char *pid)
{
        g_autofree char *file = g_strdup_printf("/proc/%s/stat", pid), *stat = NULL;
        const char *p;

        if (!g_file_get_contents(file, &stat, NULL, NULL))
                return true;
        p = strrchr(stat, ')');
        return !p || (p[1] == ' ' && p[2] == 'Z');
}

/* The process serving a FUSE mount of node: the one whose command line has node as an argument (the
 * driver is run as HELPER ... NODE ...; the sandbox's reaper is a copy of this test binary and names no
 * node), alive. Fails the test unless there is exactly one. 0 if none. */
static pid_t driver_serving(const char *node)
{
        g_autoptr(GDir) d = g_dir_open("/proc", 0, NULL);
        pid_t found = 0;
        unsigned n = 0;
        const char *e;

        while (d && (e = g_dir_read_name(d))) {
                g_autofree char *file = NULL, *cmdline = NULL;
                gsize len = 0;

                if (e[0] < '1' || e[0] > '9' || process_is_zombie(e))
                        continue;
                file = g_strdup_printf("/proc/%s/cmdline", e);
                if (!g_file_get_contents(file, &cmdline, &len, NULL))
                        continue;
                for (gsize i = 0; i < len; i += strlen(cmdline + i) + 1)
                        if (g_str_equal(cmdline + i, node)) {
                                g_test_message("driver of %s: pid %s, %s", node, e, cmdline);
                                found = (pid_t)atoi(e);
                                n++;
                                break;
                        }
        }
        g_assert_cmpuint(n, ==, 1);
        return n == 1 ? found : 0;
}

/* Uid: or Gid: of pid: all four (real, effective, saved, filesystem) are id. */
static void assert_ids(pid_t pid, const char *field, unsigned id)
{
        g_autofree char *value = test_proc_status(pid, field);
        g_auto(GStrv) ids = NULL;

        g_test_message("%s: %s (expected %u)", field, value ? value : "(none)", id);
        g_assert_nonnull(value);
        if (!value)
                return;
        ids = g_strsplit_set(value, " \t", -1);
        guint n = 0;
        for (char **i = ids; *i; i++) {
                if (**i == '\0')
                        continue;
                g_assert_cmpuint(g_ascii_strtoull(*i, NULL, 10), ==, id);
                n++;
        }
        g_assert_cmpuint(n, ==, 4);
}

static char *ns_of(const char *pid, const char *ns)
{
        g_autofree char *link = g_strdup_printf("/proc/%s/ns/%s", pid, ns);

        return g_file_read_link(link, NULL);
}

/* The innermost of NSpid's pids: the one the process has in its own PID namespace. */
static const char *ns_pid_last(const char *nspid)
{
        const char *tab = strrchr(nspid, '\t');

        return tab ? tab + 1 : nspid;
}

/* What /proc shows of a driver in the sandbox: its ids, no capabilities, no_new_privs, namespaces of its own
 * under its reaper, and a view without the host's files in which its device node is its own. */
static void assert_driver_confined(pid_t pid, const char *node, const char *image, bool read_only)
{
        static const char *const caps[] = { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" };
        static const char *const namespaces[] = { "mnt", "net", "pid", "ipc", "uts" };
        static const char *const hidden[] = { "/home", "/etc/shadow", "/run", "/root" };
        const unsigned id = driver_id_of(node);
        g_autofree char *spid = g_strdup_printf("%d", (int)pid);
        g_autofree char *no_new_privs = test_proc_status(pid, "NoNewPrivs");
        g_autofree char *seccomp = test_proc_status(pid, "Seccomp");
        g_autofree char *ppid = test_proc_status(pid, "PPid");
        struct stat st;

        g_assert_cmpuint(id, !=, 0);
        g_assert_cmpuint(id, !=, getuid());
        assert_ids(pid, "Uid", id);
        assert_ids(pid, "Gid", id);
        g_autofree char *groups = test_proc_status(pid, "Groups");
        g_assert_cmpstr(groups, ==, "");

        for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
                g_autofree char *value = test_proc_status(pid, caps[i]);

                g_test_message("%s: %s", caps[i], value ? value : "(none)");
                g_assert_nonnull(value);
                if (value)
                        g_assert_cmpuint(g_ascii_strtoull(value, NULL, 16), ==, 0);
        }
        g_test_message("NoNewPrivs: %s", no_new_privs ? no_new_privs : "(none)");
        g_assert_cmpstr(no_new_privs, ==, "1");
        /* 2: a seccomp filter (SECCOMP_MODE_FILTER). */
        g_test_message("Seccomp: %s", seccomp ? seccomp : "(none)");
        g_assert_cmpstr(seccomp, ==, "2");

        for (size_t i = 0; i < G_N_ELEMENTS(namespaces); i++) {
                g_autofree char *theirs = ns_of(spid, namespaces[i]), *ours = ns_of("self", namespaces[i]);

                g_test_message("ns/%s: %s (ours %s)", namespaces[i], theirs, ours);
                g_assert_nonnull(theirs);
                g_assert_nonnull(ours);
                g_assert_cmpstr(theirs, !=, ours);
        }

        /* PID 1 of its namespace (a driver in the foreground), or a child of PID 1 there, the reaper, which
         * runs as the same uid in the same namespaces (a driver that daemonizes). */
        g_autofree char *nspid = test_proc_status(pid, "NSpid");
        g_test_message("NSpid %s, PPid %s", nspid ? nspid : "(none)", ppid ? ppid : "(none)");
        g_assert_nonnull(nspid);
        g_assert_nonnull(ppid);
        if (nspid && ppid && !g_str_equal(ns_pid_last(nspid), "1")) {
                g_autofree char *parent_nspid = test_proc_status((pid_t)atoi(ppid), "NSpid");
                g_autofree char *theirs = ns_of(spid, "pid"), *parents = ns_of(ppid, "pid");

                g_test_message("reaper %s: NSpid %s", ppid, parent_nspid ? parent_nspid : "(none)");
                g_assert_nonnull(parent_nspid);
                if (parent_nspid)
                        g_assert_cmpstr(ns_pid_last(parent_nspid), ==, "1");
                g_assert_cmpstr(theirs, ==, parents);
                assert_ids((pid_t)atoi(ppid), "Uid", id);
        }

        /* Its view of the file system. */
        for (size_t i = 0; i < G_N_ELEMENTS(hidden); i++) {
                g_autofree char *path = g_strdup_printf("/proc/%d/root%s", (int)pid, hidden[i]);
                int r = lstat(path, &st);

                g_test_message("%s: %s", path, r < 0 ? g_strerror(errno) : "exists");
                g_assert_cmpint(r, <, 0);
        }
        /* The image behind its device, in the test's directory. */
        g_autofree char *image_path = g_strdup_printf("/proc/%d/root%s", (int)pid, image);
        g_assert_cmpint(lstat(image_path, &st), <, 0);
        g_autofree char *usr = g_strdup_printf("/proc/%d/root/usr/bin", (int)pid);
        g_assert_true(g_file_test(usr, G_FILE_TEST_IS_DIR));

        /* /etc/passwd names root and its own uid, nobody else. */
        g_autofree char *passwd_path = g_strdup_printf("/proc/%d/root/etc/passwd", (int)pid), *passwd = NULL;
        g_assert_true(g_file_get_contents(passwd_path, &passwd, NULL, NULL));
        if (passwd) {
                g_auto(GStrv) lines = g_strsplit(passwd, "\n", -1);
                g_autofree char *own = g_strdup_printf(":%u:%u:", id, id);
                guint n = 0;

                for (char **l = lines; *l; l++) {
                        if (**l == '\0')
                                continue;
                        g_assert_true(g_str_has_prefix(*l, "root:x:0:0:") || strstr(*l, own));
                        n++;
                }
                g_assert_cmpuint(n, ==, 2);
        }

        /* Its device node: the one device, its own (on a read-only /dev: it cannot chmod it), read-only for
         * a read-only mount. */
        g_autofree char *dev = g_strdup_printf("/proc/%d/root%s", (int)pid, node);
        g_assert_cmpint(stat(dev, &st), ==, 0);
        g_test_message("%s: %o %u:%u", dev, (unsigned)st.st_mode, (unsigned)st.st_uid, (unsigned)st.st_gid);
        g_assert_true(S_ISBLK(st.st_mode));
        g_assert_cmpuint(st.st_rdev, ==, devnum_of(node));
        g_assert_cmpuint(st.st_uid, ==, id);
        g_assert_cmpuint(st.st_gid, ==, id);
        g_assert_cmpuint(st.st_mode & 07777, ==, read_only ? 0400 : 0600);
}

/* Non-zombie processes whose real uid is uid. */
static guint processes_running_as(uid_t uid)
{
        g_autoptr(GDir) d = g_dir_open("/proc", 0, NULL);
        guint n = 0;
        const char *e;

        while (d && (e = g_dir_read_name(d))) {
                struct stat st;
                g_autofree char *dir = g_strdup_printf("/proc/%s", e);

                if (e[0] < '1' || e[0] > '9' || stat(dir, &st) < 0 || st.st_uid != uid)
                        continue;
                if (!process_is_zombie(e)) {
                        g_test_message("still running as %u: %s", (unsigned)uid, e);
                        n++;
                }
        }
        return n;
}

/* After the unmount: the driver has exited (unmount_filesystem() waited for it), and the reaper follows it
 * at once: nothing runs as the device's uid any more. */
static void assert_nothing_runs_as(uid_t uid)
{
        for (int i = 0; i < 100 && processes_running_as(uid) > 0; i++)
                g_usleep(50 * 1000);
        g_assert_cmpuint(processes_running_as(uid), ==, 0);
}

/* Mounts node with fstype through FUSE, checks its driver's confinement, unmounts. */
static void check_confined(
        Fixture *f, const char *image, const char *node, const char *fstype, bool read_only)
{
        g_autofree char *target = NULL;
        pid_t pid;

        target = mount_for(f, node, fstype, NULL, read_only, 1, "disk", NULL);
        if (!target)
                return;
        assert_safe_mount(target, node, true);
        pid = driver_serving(node);
        if (pid > 0)
                assert_driver_confined(pid, node, image, read_only);
        fuse_unmount_and_check_helper(f, target);
        if (pid > 0)
                g_assert_true(process_exited(pid));
        assert_nothing_runs_as(driver_id_of(node));
}

void test_sandbox_fuseiso_confined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "medium.iso"), *node = NULL;

        REQUIRE(f);
        if (!require_driver("iso9660"))
                return;
        image_make_hybrid_iso(image, "MY ISO");
        node = attach(f, image, false);
        /* iso9660 is read-only by nature: the mount is. */
        check_confined(f, image, node, "iso9660", true);
}

void test_sandbox_fusefat_confined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "vfat.img"), *node = NULL;

        REQUIRE(f);
        if (!require_driver("vfat"))
                return;
        g_free(image_mkfs_at(image, 0, 64 * MB, "vfat", "MYVFAT"));
        node = attach(f, image, false);
        /* vfat through fusefat is read-only. */
        check_confined(f, image, node, "vfat", true);
}

void test_sandbox_exfat_fuse_confined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "exfat.img"), *node = NULL;

        REQUIRE(f);
        if (!require_driver("exfat"))
                return;
        g_free(image_mkfs_at(image, 0, 64 * MB, "exfat", "MYEXFAT"));
        node = attach(f, image, false);
        check_confined(f, image, node, "exfat", true);
        /* Read-write: its node is 0600, still its own. */
        check_confined(f, image, node, "exfat", false);
}

void test_sandbox_fuse2fs_confined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ext4.img"), *node = NULL;

        REQUIRE(f);
        if (!require_driver("ext4"))
                return;
        g_free(image_mkfs_at(image, 0, 64 * MB, "ext4", NULL));
        node = attach(f, image, false);
        check_confined(f, image, node, "ext4", true);
}

void test_sandbox_squashfuse_confined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "sq.img"), *node = NULL;

        REQUIRE(f);
        if (!require_driver("squashfs"))
                return;
        g_free(image_mkfs_at(image, 0, 4 * MB, "squashfs", NULL));
        node = attach(f, image, false);
        check_confined(f, image, node, "squashfs", true);
}

/* ntfs-3g cannot be confined: it runs as root, and --unconfined-fuse-drivers=no leaves ntfs without a
 * driver. */
void test_sandbox_ntfs_3g_unconfined(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "ntfs.img"), *node = NULL, *target = NULL;
        bool fuse = true;
        pid_t pid;
        int r;

        REQUIRE(f);
        if (!require_driver("ntfs"))
                return;
        g_assert_true(mount_fuse_helper_unconfined("ntfs"));
        g_free(image_mkfs_at(image, 0, 64 * MB, "ntfs", "MYNTFS"));
        node = attach(f, image, false);

        target = mount_for(f, node, "ntfs", NULL, true, 1, "disk", NULL);
        if (target) {
                g_autofree char *no_new_privs = NULL;
                assert_safe_mount(target, node, true);
                pid = driver_serving(node);
                if (pid > 0) {
                        g_autofree char *cap_eff = test_proc_status(pid, "CapEff");

                        no_new_privs = test_proc_status(pid, "NoNewPrivs");
                        assert_ids(pid, "Uid", 0);
                        g_test_message("ntfs-3g: CapEff %s, NoNewPrivs %s", cap_eff, no_new_privs);
                        /* Its mount namespace is the host's. */
                        g_autofree char *spid = g_strdup_printf("%d", (int)pid);
                        g_autofree char *theirs = ns_of(spid, "mnt"), *ours = ns_of("self", "mnt");
                        g_assert_cmpstr(theirs, ==, ours);
                }
                fuse_unmount_and_check_helper(f, target);
        }

        mount_set_unconfined_drivers(false);
        g_assert_null(mount_fuse_helper("ntfs"));
        r = mount_pick_driver("ntfs", &fuse);
        if (mount_kernel_has_filesystem("ntfs")) {
                g_assert_cmpint(r, ==, 0);
                g_assert_false(fuse);
        } else
                g_assert_cmpint(r, ==, -EPROTONOSUPPORT);
        /* Confined drivers are still there. */
        if (mount_fuse_helper("vfat"))
                g_assert_cmpint(mount_pick_driver("vfat", &fuse), ==, 0);
        mount_set_unconfined_drivers(true);
        g_assert_nonnull(mount_fuse_helper("ntfs"));
}

/* ---- a hostile driver ---- */

static const char *hostile_driver_path(void)
{
        static char *path;

        if (!path)
                path = g_strdup(g_getenv("LOOPD_HOSTILE_DRIVER")
                                ?: g_build_filename(g_getenv("LOOPD_BUILD_ROOT") ?: ".", "tests",
                                           "hostile-driver", NULL));
        return path;
}

/* A root-only file next to the mountpoint (<dirname(target)>/secret-file): what a driver must not read. */
static char *make_secret_next_to(const char *target)
{
        g_autofree char *copy = g_strdup(target);
        char *secret = g_build_filename(dirname(copy), "secret-file", NULL);

        g_assert_true(g_file_set_contents(secret, "root only\n", -1, NULL));
        g_assert_cmpint(chown(secret, 0, 0), ==, 0);
        g_assert_cmpint(chmod(secret, 0600), ==, 0);
        return secret;
}

/* Mounts a vfat image holding HELLO.TXT with driver in fusefat's place, a root-only secret file next to the
 * mountpoint. Returns what mount_filesystem() said; on failure checks that nothing is left. */
static int mount_with_stand_in(Fixture *f, const char *driver, char **ret_node, char **ret_target)
{
        g_autofree char *image = path_in(f, "vfat.img"), *node = NULL, *target = NULL, *qimage = NULL;
        g_autofree char *options = NULL, *bad = NULL, *secret = NULL;
        int r;

        g_assert_true(g_file_test(driver, G_FILE_TEST_IS_EXECUTABLE));
        g_free(image_mkfs_at(image, 0, 64 * MB, "vfat", "MYVFAT"));
        qimage = g_shell_quote(image);
        g_free(test_sh("printf 'hello from vfat' > %s/hello.txt && mcopy -i %s %s/hello.txt ::/hello.txt",
                f->scratch.dir, qimage, f->scratch.dir));
        node = attach(f, image, false);

        g_assert_cmpint(
                mount_options_build("vfat", NULL, false, true, USER_UID, USER_UID, node, &options, &bad), ==,
                0);
        g_assert_cmpint(mount_point_create(f->media, "user", USER_UID, USER_UID, "MYVFAT", &target), ==, 0);
        if (!target || !options)
                return -EINVAL;
        g_ptr_array_add(f->targets, g_strdup(target));
        secret = make_secret_next_to(target);

        mount_set_fuse_helper("vfat", driver);
        g_test_message("mounting %s with %s in fusefat's place", node, driver);
        r = mount_filesystem(node, target, "vfat", options, true);
        mount_set_fuse_helper(NULL, NULL);
        if (r < 0) {
                g_test_message("mount_filesystem: %s (the driver's stderr is in the log)", g_strerror(-r));
                g_assert_false(is_mountpoint(target));
                g_assert_cmpint(mount_point_remove(f->media, target), ==, 0);
                assert_nothing_runs_as(driver_id_of(node));
        }
        *ret_node = g_steal_pointer(&node);
        *ret_target = g_steal_pointer(&target);
        return r;
}

/* Unmounts what the stand-in serves (fusefat by now) and checks that nothing is left of it. */
static void unmount_stand_in(Fixture *f, const char *node, const char *target)
{
        fuse_unmount_and_check_helper(f, target);
        assert_nothing_runs_as(driver_id_of(node));
        assert_not_in_mount_table(node, target);
        g_assert_cmpint(test_sh_status(NULL, "findmnt --source %s >/dev/null", node), !=, 0);
}

/* The stand-in for fusefat tries to get out before it serves, in loopd's sandbox: every attempt fails, so it
 * becomes fusefat and the mount works. */
void test_sandbox_hostile_driver_stays_in(Fixture *f, gconstpointer data)
{
        g_autofree char *node = NULL, *target = NULL;
        int r;

        REQUIRE(f);
        if (!require_driver("vfat"))
                return;
        r = mount_with_stand_in(f, hostile_driver_path(), &node, &target);
        g_assert_cmpint(r, ==, 0);
        if (r < 0)
                return;

        assert_safe_mount(target, node, true);
        assert_user_reads(target, "HELLO.TXT", "hello from vfat");
        /* It became fusefat: the server loopd waits for at the unmount. */
        pid_t pid = driver_serving(node);
        if (pid > 0) {
                g_autofree char *exe_link = g_strdup_printf("/proc/%d/exe", (int)pid);
                g_autofree char *exe = g_file_read_link(exe_link, NULL);
                g_autofree char *image = path_in(f, "vfat.img");

                g_assert_cmpstr(exe, ==, "/usr/bin/fusefat");
                assert_driver_confined(pid, node, image, true);
        }
        unmount_stand_in(f, node, target);
}

/* The driver of a read-only mount must not be able to make its device node writable (chmod) and write to
 * the device (the loop device itself is writable): its node lies on a read-only /dev. */
void test_sandbox_read_only_node_stays_read_only(Fixture *f, gconstpointer data)
{
        g_autofree char *bin = path_in(f, "bin"), *writer = NULL, *node = NULL, *target = NULL;
        int r;

        REQUIRE(f);
        if (!require_driver("vfat"))
                return;
        g_assert_cmpint(g_mkdir_with_parents(bin, 0755), ==, 0);
        writer = g_build_filename(bin, "hostile-node-writer", NULL);
        g_autofree char *qdriver = g_shell_quote(hostile_driver_path()), *qwriter = g_shell_quote(writer);
        g_free(test_sh("cp %s %s && chmod 0755 %s", qdriver, qwriter, qwriter));

        r = mount_with_stand_in(f, writer, &node, &target);
        g_assert_cmpint(r, ==, 0);
        if (r < 0)
                return;
        assert_user_reads(target, "HELLO.TXT", "hello from vfat");
        unmount_stand_in(f, node, target);
}

/* The control: the same program as root on the host, outside any sandbox, gets out. Its exit status is the
 * number of attempts that worked. */
void test_sandbox_hostile_driver_control(Fixture *f, gconstpointer data)
{
        g_autofree char *image = path_in(f, "vfat.img"), *node = NULL, *secret = NULL, *out = NULL;
        g_autofree char *dir = path_in(f, "host"), *target = NULL, *err = NULL;
        const char *driver = hostile_driver_path();
        int status = -1;

        REQUIRE(f);
        g_assert_true(g_file_test(driver, G_FILE_TEST_IS_EXECUTABLE));
        g_free(image_mkfs_at(image, 0, 4 * MB, "vfat", "MYVFAT"));
        node = attach(f, image, false);
        g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
        target = g_build_filename(dir, "disk", NULL);
        secret = make_secret_next_to(target);

        const char *argv[] = { driver, "--check-only", node, target, NULL };
        g_assert_true(g_spawn_sync(
                NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, NULL));
        g_test_message("as root on the host: status %d\n%s", status, err ? err : "");
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), >=, 5);
        g_assert_nonnull(strstr(err, "succeeded: open the secret file next to the mountpoint"));
        g_assert_nonnull(strstr(err, "succeeded: open /etc/shadow"));
        g_assert_nonnull(strstr(err, "succeeded: setuid(0)"));
        g_assert_nonnull(strstr(err, "succeeded: open /etc/passwd for appending"));
        g_assert_nonnull(strstr(err, "succeeded: open its device node for writing"));
        g_assert_nonnull(strstr(err, "succeeded: make an AF_INET socket"));
        g_assert_nonnull(strstr(err, "succeeded: a child in a new user namespace"));
        g_assert_nonnull(strstr(err, "succeeded: unshare(CLONE_NEWUSER)"));
        g_assert_nonnull(strstr(err, "succeeded: keyctl(KEYCTL_JOIN_SESSION_KEYRING)"));
}
