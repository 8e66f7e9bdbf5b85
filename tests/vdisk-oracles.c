/* vdisk-oracles.c: what the vdisk suite asks instead of loopd: the kernel (sysfs, mountinfo), /proc (which
 * qemu-storage-daemon processes belong to the test, how they run), the files as the user reads them, and
 * the names loopd gives a device; and what a test left behind. */
#include <stdio.h>

#include "test-vdisk.h"
/* ---------------------------------------------------------------------------------------------------- */
/* Oracles: the kernel */

char *loop_backing(const char *device)
{
        g_autofree char *name = g_path_get_basename(device);

        return test_read_sysfs("/sys/block/%s/loop/backing_file", name);
}

int loop_read_only(const char *device)
{
        g_autofree char *name = g_path_get_basename(device), *backing = loop_backing(device);
        g_autofree char *ro = backing ? test_read_sysfs("/sys/block/%s/ro", name) : NULL;

        return ro ? atoi(ro) : -1;
}

guint64 loop_size(const char *device)
{
        g_autofree char *name = g_path_get_basename(device);
        g_autofree char *sectors = test_read_sysfs("/sys/block/%s/size", name);

        return sectors ? g_ascii_strtoull(sectors, NULL, 10) * 512 : 0;
}

/* One line of /proc/self/mountinfo. */
typedef struct MountEntry {
        char *target, *fstype, *source, *options;
} MountEntry;

static void mount_entry_free(gpointer p)
{
        MountEntry *m = p;

        g_free(m->target);
        g_free(m->fstype);
        g_free(m->source);
        g_free(m->options);
        g_free(m);
}

static GPtrArray *mount_table(void)
{
        GPtrArray *table = g_ptr_array_new_with_free_func(mount_entry_free);
        g_autofree char *contents = NULL;
        g_auto(GStrv) lines = NULL;

        if (!g_file_get_contents("/proc/self/mountinfo", &contents, NULL, NULL))
                return table;
        lines = g_strsplit(contents, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) f = g_strsplit(*l, " ", -1);
                guint n = g_strv_length(f), sep;
                MountEntry *m;

                for (sep = 6; sep < n && !g_str_equal(f[sep], "-"); sep++)
                        ;
                if (n < 6 || sep + 2 >= n)
                        continue;
                m = g_new0(MountEntry, 1);
                m->target = g_strcompress(f[4]); /* \040 and the like */
                m->options = g_strdup(f[5]);
                m->fstype = g_strdup(f[sep + 1]);
                m->source = g_strcompress(f[sep + 2]);
                g_ptr_array_add(table, m);
        }
        return table;
}

/* The mount on top at target, or NULL. */
static const MountEntry *mount_at(GPtrArray *table, const char *target)
{
        for (guint i = table->len; i > 0; i--) {
                const MountEntry *m = table->pdata[i - 1];
                if (g_str_equal(m->target, target))
                        return m;
        }
        return NULL;
}

char *mount_fstype(const char *target)
{
        g_autoptr(GPtrArray) table = mount_table();
        const MountEntry *m = mount_at(table, target);

        return m ? g_strdup(m->fstype) : NULL;
}

char *exports_dir(Harness *h)
{
        return g_build_filename(h->state_dir, "exports", NULL);
}

char *check_export(Harness *h, const char *device)
{
        g_autofree char *backing = loop_backing(device), *dir = exports_dir(h), *fstype = NULL;
        g_autofree char *prefix = g_strconcat(dir, "/", NULL);

        if (!backing) {
                harness_fail("%s is not bound", device);
                return NULL;
        }
        g_test_message("%s is bound to %s", device, backing);
        if (!g_str_has_prefix(backing, prefix)) {
                harness_fail("%s is bound to %s, not to an export in %s", device, backing, dir);
                return NULL;
        }
        fstype = mount_fstype(backing);
        if (g_strcmp0(fstype, EXPORT_FSTYPE) != 0) {
                harness_fail("the export %s is %s, expected a %s mount", backing,
                        fstype ? fstype : "not mounted", EXPORT_FSTYPE);
                return NULL;
        }
        return g_steal_pointer(&backing);
}

void check_mounted(Harness *h, const char *node, const char *mount_point, const char *fstype, bool read_only)
{
        g_autoptr(GPtrArray) table = mount_table();
        g_autofree char *dir = g_build_filename(h->media_dir, HARNESS_USER_A, NULL);
        g_autofree char *parent = NULL;
        const MountEntry *m;

        if (!mount_point) {
                harness_fail("%s has no mount point", node);
                return;
        }
        parent = g_path_get_dirname(mount_point);
        if (!g_str_equal(parent, dir))
                harness_fail("mount point %s is not right inside %s", mount_point, dir);
        m = mount_at(table, mount_point);
        if (!m) {
                harness_fail("nothing is mounted on %s", mount_point);
                return;
        }
        g_test_message("%s: %s %s %s", mount_point, m->source, m->fstype, m->options);
        if (!g_str_equal(m->source, node))
                harness_fail("%s is mounted from %s, expected %s", mount_point, m->source, node);
        if (fstype && !g_str_equal(m->fstype, fstype))
                harness_fail("%s is %s, expected %s", mount_point, m->fstype, fstype);
        if (!test_options_have(m->options, "nosuid") || !test_options_have(m->options, "nodev"))
                harness_fail("%s lacks nosuid,nodev: %s", mount_point, m->options);
        if (test_options_have(m->options, "ro") != read_only)
                harness_fail(
                        "%s is mounted %s, expected %s", mount_point, m->options, read_only ? "ro" : "rw");
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles: processes */

/* A process's state letter and parent pid (/proc/PID/stat); false when it is gone. */
static bool proc_stat(pid_t pid, char *ret_state, pid_t *ret_ppid)
{
        g_autofree char *stat = test_read_sysfs("/proc/%d/stat", (int)pid);
        const char *p = stat ? strrchr(stat, ')') : NULL;
        char state;
        int ppid;

        if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
                return false;
        *ret_state = state;
        *ret_ppid = (pid_t)ppid;
        return true;
}

bool process_running(pid_t pid)
{
        char state;
        pid_t ppid;

        return proc_stat(pid, &state, &ppid) && state != 'Z' && state != 'X';
}

static char *inode_key(const struct stat *st)
{
        return g_strdup_printf("%ju:%ju", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
}

/* "dev:ino" of every regular file in the test's image directory. */
static GHashTable *image_inodes(Harness *h)
{
        GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GDir) d = g_dir_open(h->image_dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(h->image_dir, name, NULL);
                struct stat st;

                if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
                        g_hash_table_add(set, inode_key(&st));
        }
        return set;
}

/* Whether pid has a file open whose "dev:ino" is in inodes, or that lies under dir. */
static bool holds_any(pid_t pid, GHashTable *inodes, const char *dir)
{
        g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd", (int)pid);
        g_autoptr(GDir) fds = g_dir_open(fd_dir, 0, NULL);
        g_autofree char *prefix = dir ? g_strconcat(dir, "/", NULL) : NULL;
        const char *fd;

        while (fds && (fd = g_dir_read_name(fds))) {
                g_autofree char *link = g_build_filename(fd_dir, fd, NULL);
                g_autofree char *target = g_file_read_link(link, NULL);
                struct stat st;

                if (!target || target[0] != '/')
                        continue; /* pipes, sockets, anon inodes */
                if (prefix && g_str_has_prefix(target, prefix))
                        return true;
                if (g_str_has_prefix(target, "/dev/"))
                        continue; /* /dev/fuse, /dev/null */
                if (stat(link, &st) == 0) {
                        g_autofree char *key = inode_key(&st);
                        if (g_hash_table_contains(inodes, key))
                                return true;
                }
        }
        return false;
}

static bool is_server(pid_t pid)
{
        g_autofree char *comm = test_read_sysfs("/proc/%d/comm", (int)pid);

        /* comm holds 15 characters: "qemu-storage-da". */
        return comm && g_str_has_prefix(comm, "qemu-storage-d") && process_running(pid);
}

GArray *vdisk_servers(Harness *h)
{
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        g_autoptr(GHashTable) inodes = image_inodes(h);
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        GPid loopd = harness_loopd_pid(h);
        const char *name;

        while (proc && (name = g_dir_read_name(proc))) {
                pid_t pid = (pid_t)g_ascii_strtoll(name, NULL, 10), ppid = 0;
                g_autofree char *cmdline = NULL;
                char state;
                gsize n = 0;

                if (!g_ascii_isdigit(name[0]) || !is_server(pid) || !proc_stat(pid, &state, &ppid))
                        continue;
                {
                        g_autofree char *path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
                        if (g_file_get_contents(path, &cmdline, &n, NULL))
                                for (gsize i = 0; i < n; i++)
                                        if (cmdline[i] == '\0')
                                                cmdline[i] = ' ';
                }
                if ((loopd > 0 && ppid == loopd) || (cmdline && strstr(cmdline, h->tmpdir)) ||
                        holds_any(pid, inodes, h->tmpdir))
                        g_array_append_val(pids, pid);
        }
        return pids;
}

pid_t server_of(Harness *h, const char *image)
{
        g_autoptr(GArray) servers = vdisk_servers(h);
        g_autoptr(GHashTable) one = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        struct stat st;
        pid_t found = 0;
        guint n = 0;

        g_assert_cmpint(stat(image, &st), ==, 0);
        g_hash_table_add(one, inode_key(&st));
        for (guint i = 0; i < servers->len; i++) {
                pid_t pid = g_array_index(servers, pid_t, i);
                if (holds_any(pid, one, NULL)) {
                        found = pid;
                        n++;
                }
        }
        if (n != 1) {
                harness_fail(
                        "%u qemu-storage-daemon processes hold %s open (of %u the test has), expected one",
                        n, image, servers->len);
                return 0;
        }
        g_test_message("qemu-storage-daemon %d serves %s", (int)found, image);
        return found;
}

void check_sandboxed(pid_t pid, uid_t uid)
{
        g_autofree char *uids = test_proc_status(pid, "Uid"), *cap_eff = test_proc_status(pid, "CapEff");
        g_autofree char *cap_prm = test_proc_status(pid, "CapPrm"),
                        *nnp = test_proc_status(pid, "NoNewPrivs");
        g_autofree char *seccomp = test_proc_status(pid, "Seccomp");
        g_autofree char *want = g_strdup_printf(
                "%u\t%u\t%u\t%u", (unsigned)uid, (unsigned)uid, (unsigned)uid, (unsigned)uid);

        g_test_message("qemu-storage-daemon %d: Uid %s, CapEff %s, CapPrm %s, NoNewPrivs %s, Seccomp %s",
                (int)pid, uids, cap_eff, cap_prm, nnp, seccomp);
        if (g_strcmp0(uids, want) != 0)
                harness_fail("qemu-storage-daemon %d runs as uids %s, expected the caller's %u", (int)pid,
                        uids, (unsigned)uid);
        if (g_strcmp0(cap_eff, "0000000000000000") != 0 || g_strcmp0(cap_prm, "0000000000000000") != 0)
                harness_fail("qemu-storage-daemon %d has capabilities: CapEff %s, CapPrm %s", (int)pid,
                        cap_eff, cap_prm);
        if (g_strcmp0(nnp, "1") != 0)
                harness_fail("qemu-storage-daemon %d may gain privileges (NoNewPrivs %s)", (int)pid, nnp);
        if (g_strcmp0(seccomp, "2") != 0)
                harness_fail("qemu-storage-daemon %d has no seccomp filter (Seccomp %s)", (int)pid, seccomp);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles: files and names */

int run_as(Harness *h, const char *user, char **ret_out, const char *const *argv)
{
        g_auto(HarnessRun) run = { 0 };
        int status = harness_spawn_as(h, user, &run, argv);

        if (ret_out)
                *ret_out = g_strdup(run.out ? run.out : "");
        return status;
}

static char *sha256_of_bytes(GBytes *b)
{
        gsize n = 0;
        const guint8 *d = g_bytes_get_data(b, &n);

        return g_compute_checksum_for_data(G_CHECKSUM_SHA256, d, n);
}

void check_files(Harness *h, const char *user, const char *mount_point, const DiskFile *files)
{
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GHashTable) got = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *out = NULL;
        g_auto(GStrv) lines = NULL;

        if (!mount_point)
                return;
        g_ptr_array_add(argv, g_strdup("sha256sum"));
        g_ptr_array_add(argv, g_strdup("--"));
        for (const DiskFile *f = files; f->path; f++)
                g_ptr_array_add(argv, g_build_filename(mount_point, f->path, NULL));
        g_ptr_array_add(argv, NULL);
        if (run_as(h, user, &out, (const char *const *)argv->pdata) != 0)
                harness_fail("%s cannot read every file under %s", user, mount_point);
        lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *space = strchr(*l, ' ');
                if (space && space[1] == ' ')
                        g_hash_table_replace(got, g_strdup(space + 2), g_strndup(*l, space - *l));
        }
        for (const DiskFile *f = files; f->path; f++) {
                g_autofree char *path = g_build_filename(mount_point, f->path, NULL);
                g_autoptr(GBytes) b = disk_file_contents(f);
                g_autofree char *want = sha256_of_bytes(b);
                const char *have = g_hash_table_lookup(got, path);

                if (g_strcmp0(have, want) != 0)
                        harness_fail("%s: sha256 %s, expected %s", path, have ? have : "(not read)", want);
        }
}

void check_image_format(GDBusConnection *conn, const char *device, const char *format)
{
        g_autoptr(GVariant) image_format = device_property(conn, device, "ImageFormat");

        if (image_format && !g_variant_is_of_type(image_format, G_VARIANT_TYPE_STRING))
                harness_fail(
                        "ImageFormat is of type %s, expected s", g_variant_get_type_string(image_format));
        else if (image_format && g_strcmp0(g_variant_get_string(image_format, NULL), format) != 0)
                harness_fail("ImageFormat of %s is '%s', expected '%s'", device,
                        g_variant_get_string(image_format, NULL), format);
}

void check_named(Harness *h, GDBusConnection *conn, const char *user, const char *device, const char *image,
        const char *format)
{
        g_autoptr(GVariant) backing = device_property(conn, device, "BackingFile");
        g_autofree char *listed = listed_backing_file(conn, device);
        g_autoptr(JsonObject) entry = loopctl_list_entry(h, user, device);

        check_image_format(conn, device, format);
        if (backing && g_strcmp0(g_variant_get_string(backing, NULL), image) != 0)
                harness_fail("BackingFile of %s is '%s', expected '%s'", device,
                        g_variant_get_string(backing, NULL), image);
        if (g_strcmp0(listed, image) != 0)
                harness_fail("ListDevices gives %s the backing file '%s', expected '%s'", device,
                        listed ? listed : "(not listed)", image);
        if (!entry) {
                harness_fail("loopctl list does not list %s", device);
                return;
        }
        if (g_strcmp0(json_object_get_string_member_with_default(entry, "backing_file", NULL), image) != 0)
                harness_fail("loopctl list gives %s the backing_file '%s', expected '%s'", device,
                        json_object_get_string_member_with_default(entry, "backing_file", "(none)"), image);
        /* The guest disk's size, though sysfs names the export as the backing file. */
        harness_check_list_size(h, user, device, NULL);
}

/* ---------------------------------------------------------------------------------------------------- */
/* What is left */

static GPtrArray *what_is_left(Harness *h, const char *device)
{
        GPtrArray *left = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
        g_autoptr(GPtrArray) mounts = oracle_mounts_below(h->media_dir);
        g_autoptr(GPtrArray) table = mount_table();
        g_autoptr(GArray) servers = vdisk_servers(h);
        g_autofree char *exports = exports_dir(h),
                        *user_dir = g_build_filename(h->media_dir, HARNESS_USER_A, NULL);
        g_autofree char *prefix = g_strconcat(h->tmpdir, "/", NULL);
        g_autoptr(GDir) d = g_dir_open(exports, 0, NULL);
        g_autoptr(GDir) u = g_dir_open(user_dir, 0, NULL);
        const char *name;

        g_autofree char *rebound = device ? loop_backing(device) : NULL;

        for (guint i = 0; i < loops->len; i++) {
                g_autofree char *backing = loop_backing(loops->pdata[i]);
                g_ptr_array_add(left,
                        g_strdup_printf(
                                "the loop device %s (bound to %s)", (char *)loops->pdata[i], backing));
        }
        /* A free number is anybody's: once somebody else bound it again, its partitions are theirs. */
        if (device && !rebound) {
                g_autoptr(GPtrArray) parts = oracle_partition_nodes(device);
                for (guint i = 0; i < parts->len; i++)
                        g_ptr_array_add(
                                left, g_strdup_printf("the partition node %s", (char *)parts->pdata[i]));
        }
        for (guint i = 0; i < mounts->len; i++)
                g_ptr_array_add(left, g_strdup_printf("the mount on %s", (char *)mounts->pdata[i]));
        while (u && (name = g_dir_read_name(u)))
                g_ptr_array_add(left, g_strdup_printf("the mount point directory %s/%s", user_dir, name));
        for (guint i = 0; i < table->len; i++) {
                const MountEntry *m = table->pdata[i];
                if (g_str_equal(m->fstype, EXPORT_FSTYPE) && g_str_has_prefix(m->target, prefix))
                        g_ptr_array_add(left, g_strdup_printf("the export mount on %s", m->target));
        }
        while (d && (name = g_dir_read_name(d)))
                g_ptr_array_add(left, g_strdup_printf("the file %s/%s", exports, name));
        for (guint i = 0; i < servers->len; i++)
                g_ptr_array_add(left,
                        g_strdup_printf(
                                "qemu-storage-daemon process %d", (int)g_array_index(servers, pid_t, i)));
        return left;
}

void check_nothing_left(Harness *h, const char *device)
{
        gint64 start = g_get_monotonic_time(), deadline = start + (gint64)SETTLE_MS * 1000;
        g_autoptr(GPtrArray) left = what_is_left(h, device);

        while (left->len > 0 && g_get_monotonic_time() < deadline) {
                g_usleep(50 * 1000);
                g_ptr_array_unref(left);
                left = what_is_left(h, device);
        }
        if (left->len == 0 && g_get_monotonic_time() - start > 100 * 1000)
                g_test_message("everything was gone after %" G_GINT64_FORMAT " ms",
                        (g_get_monotonic_time() - start) / 1000);
        for (guint i = 0; i < left->len; i++)
                harness_fail("%s is left behind", (char *)left->pdata[i]);
}
