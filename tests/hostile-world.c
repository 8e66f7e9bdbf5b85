/* hostile-world.c: what the hostile suite looks at and builds: the state of the world a failed call must
 * leave as it was (loop devices, partition nodes, mounts, the state and media directories) and whether the
 * state directory agrees with loopd; partition tables written byte by byte; clients and processes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "hostile.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Small helpers */

/* "/dev/loop7" → "loop7" */
const char *short_name(const char *device)
{
        return g_str_has_prefix(device, "/dev/") ? device + 5 : device;
}

/* The file backing device according to sysfs, or NULL when it is not bound. */
char *backing_of(const char *device)
{
        return test_read_sysfs("/sys/block/%s/loop/backing_file", short_name(device));
}

guint64 device_size(const char *device)
{
        g_autofree char *s = test_read_sysfs("/sys/block/%s/size", short_name(device));
        return s ? g_ascii_strtoull(s, NULL, 10) * 512 : 0;
}

/* A string of n copies of c. */
char *repeat(char c, gsize n)
{
        char *s = g_malloc(n + 1);
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

/* Detaches device as root with unmount, if it is still bound to something under the test's directory. */
void cleanup_device(Harness *h, const char *device)
{
        g_autofree char *backing = NULL;
        g_autoptr(GError) error = NULL;

        if (!device)
                return;
        backing = backing_of(device);
        if (!backing || !g_str_has_prefix(backing, h->tmpdir))
                return;
        if (!harness_detach(h->bus, device, g_variant_new_parsed("{'unmount': <true>}"), &error))
                g_test_message("cleanup: detaching %s failed: %s", device, error->message);
}

/* ---------------------------------------------------------------------------------------------------- */
/* The world a failed call must leave as it was */

void world_clear(World *w)
{
        g_clear_pointer(&w->loops, g_free);
        g_clear_pointer(&w->nodes, g_free);
        g_clear_pointer(&w->mounts, g_free);
        g_clear_pointer(&w->state, g_free);
        g_clear_pointer(&w->media, g_free);
}

static char *sh_or_empty(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static char *sh_or_empty(const char *fmt, ...)
{
        g_autofree char *cmd = NULL;
        char *out = NULL;
        va_list ap;

        va_start(ap, fmt);
        cmd = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (test_sh_status(&out, "%s", cmd) != 0) {
                g_free(out);
                return g_strdup("");
        }
        return out ? out : g_strdup("");
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
        return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

void world_snapshot(Harness *h, World *w)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
        g_autoptr(GString) nodes = g_string_new(NULL);
        g_autoptr(GString) mounts = g_string_new(NULL);
        g_autofree char *mountinfo = NULL;
        g_autofree char *qstate = g_shell_quote(h->state_dir), *qmedia = g_shell_quote(h->media_dir);
        g_autofree char *prefix = g_strconcat(h->tmpdir, "/", NULL);

        world_clear(w);
        w->loops =
                sh_or_empty("losetup --list --noheadings --raw --output NAME,BACK-FILE,OFFSET,SIZELIMIT,RO,"
                            "LOG-SEC | awk -v p=%s 'index($2, p) == 1' | sort",
                        prefix);
        for (guint i = 0; i < loops->len; i++) {
                g_autoptr(GPtrArray) n = oracle_partition_nodes(loops->pdata[i]);
                g_ptr_array_sort(n, compare_strings);
                for (guint j = 0; j < n->len; j++)
                        g_string_append_printf(nodes, "%s\n", (char *)n->pdata[j]);
        }
        w->nodes = g_strdup(nodes->str);

        if (g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL)) {
                g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
                for (char **l = lines; *l && **l; l++) {
                        g_auto(GStrv) f = g_strsplit(*l, " ", -1);
                        const char *target = g_strv_length(f) > 4 ? f[4] : "", *source = "", *fstype = "";
                        bool ours = g_str_has_prefix(target, prefix);

                        for (guint i = 0; f[i]; i++)
                                if (g_str_equal(f[i], "-") && f[i + 1] && f[i + 2]) {
                                        fstype = f[i + 1];
                                        source = f[i + 2];
                                        break;
                                }
                        for (guint i = 0; !ours && i < loops->len; i++) {
                                const char *dev = loops->pdata[i];
                                size_t n = strlen(dev);
                                ours = strncmp(source, dev, n) == 0 &&
                                        (source[n] == '\0' || source[n] == 'p');
                        }
                        if (ours)
                                g_string_append_printf(mounts, "%s %s %s\n", target, source, fstype);
                }
        }
        w->mounts = g_strdup(mounts->str);
        w->state = sh_or_empty(
                "cd %s 2>/dev/null && find . -type f | sort | xargs -r grep -H . /dev/null", qstate);
        w->media = sh_or_empty(
                "cd %s 2>/dev/null && find . -mindepth 2 -printf '%%y %%p %%m %%u\\n' | sort", qmedia);
}

/* The state directory says what loopd reports: one record per managed device, with the device's current
 * disk sequence number, and nothing else (no temporary files left behind). */
void check_state_consistent(const char *file, int line, Harness *h)
{
        g_autofree char *devices_dir = g_build_filename(h->state_dir, "devices", NULL);
        g_autoptr(GHashTable) records = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GVariant) list = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GDir) dir = g_dir_open(devices_dir, 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *path = g_build_filename(devices_dir, name, NULL);
                g_autofree char *contents = NULL, *seq = NULL;
                const char *p;

                /* A temporary file of a record write that a kill -9 interrupted is harmless (the next write
                 * of that record replaces it). */
                if (name[0] == '.' && g_str_has_suffix(name, ".tmp"))
                        continue;
                if (!g_str_has_prefix(name, "loop") || strspn(name + 4, "0123456789") != strlen(name + 4) ||
                        !name[4]) {
                        g_test_fail_printf("%s:%d: stray file %s in the state directory", file, line, name);
                        continue;
                }
                if (!g_file_get_contents(path, &contents, NULL, NULL) ||
                        !(p = strstr(contents, "DISKSEQ="))) {
                        g_test_fail_printf("%s:%d: state record %s has no DISKSEQ", file, line, name);
                        continue;
                }
                seq = test_read_sysfs("/sys/block/%s/diskseq", name);
                g_autofree char *bound = test_read_sysfs("/sys/block/%s/loop/backing_file", name);
                if (!bound)
                        g_test_fail_printf(
                                "%s:%d: state record %s names a device that is not bound", file, line, name);
                else if (seq && g_ascii_strtoull(p + 8, NULL, 10) != g_ascii_strtoull(seq, NULL, 10))
                        g_test_fail_printf("%s:%d: state record %s has diskseq %" G_GUINT64_FORMAT
                                           ", the device has %s",
                                file, line, name, g_ascii_strtoull(p + 8, NULL, 10), seq);
                g_hash_table_add(records, g_strdup(name));
        }

        list = harness_list_devices(h->bus, &error);
        if (!list) {
                g_test_fail_printf("%s:%d: ListDevices failed: %s", file, line, error->message);
                return;
        }
        GVariantIter it;
        const char *device, *backing;
        gboolean managed;
        g_variant_iter_init(&it, list);
        while (g_variant_iter_next(&it,
                "(&so&sttubb"
                "bu)",
                &device, NULL, &backing, NULL, NULL, NULL, NULL, NULL, &managed, NULL)) {
                bool has = g_hash_table_remove(records, short_name(device));
                if (managed && !has)
                        g_test_fail_printf(
                                "%s:%d: %s is managed but has no state record", file, line, device);
                else if (!managed && has)
                        g_test_fail_printf(
                                "%s:%d: %s has a state record but is not managed", file, line, device);
        }
        GHashTableIter hi;
        gpointer key;
        g_hash_table_iter_init(&hi, records);
        while (g_hash_table_iter_next(&hi, &key, NULL))
                g_test_fail_printf("%s:%d: state record %s for a device ListDevices does not list", file,
                        line, (char *)key);
}

static void check_same(const char *file, int line, const char *what, const char *before, const char *now)
{
        if (g_strcmp0(before, now) != 0)
                g_test_fail_printf(
                        "%s:%d: %s changed:\n--- before\n%s--- now\n%s", file, line, what, before, now);
}

/* loopd answers and the world is as before. */
void check_world(const char *file, int line, Harness *h, const World *before)
{
        g_auto(World) now = { 0 };

        if (!harness_loopd_alive(h)) {
                g_test_fail_printf("%s:%d: loopd is gone", file, line);
                return;
        }
        world_snapshot(h, &now);
        check_same(file, line, "the loop devices under the test directory", before->loops, now.loops);
        check_same(file, line, "their partition nodes", before->nodes, now.nodes);
        check_same(file, line, "the mount table", before->mounts, now.mounts);
        check_same(file, line, "the state directory", before->state, now.state);
        check_same(file, line, "the media directory", before->media, now.media);
        check_state_consistent(file, line, h);
}

/* After a test: nothing of ours bound, no partition node of a device we used, nothing mounted. */
void check_nothing_left(Harness *h, GPtrArray *devices_used)
{
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(h->tmpdir);
        g_auto(World) now = { 0 };

        /* A device someone (udevd, blkid) still held open when it was detached is only marked autoclear
         * and goes away when they close it: give that a moment. */
        for (guint i = 0; loops->len > 0 && i < 50; i++) {
                g_usleep(100 * 1000);
                g_ptr_array_unref(loops);
                loops = oracle_loops_backed_by(h->tmpdir);
        }

        for (guint i = 0; i < loops->len; i++) {
                g_autofree char *backing = backing_of(loops->pdata[i]);
                g_test_fail_printf("%s is still bound to %s", (char *)loops->pdata[i], backing);
        }
        for (guint i = 0; devices_used && i < devices_used->len; i++) {
                const char *dev = devices_used->pdata[i];
                g_autofree char *backing = backing_of(dev);
                /* Only a device that is free now: another test run may have bound the number since. */
                if (backing)
                        continue;
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev);
                for (guint j = 0; j < nodes->len; j++)
                        g_test_fail_printf(
                                "%s is free but %s is left in /dev", dev, (char *)nodes->pdata[j]);
        }
        world_snapshot(h, &now);
        if (*now.mounts)
                g_test_fail_printf("mounts left behind:\n%s", now.mounts);
        check_state_consistent(__FILE__, __LINE__, h);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Calls */

/* A connection as test user A, with the fake authority allowing everything: what a hostile local user
 * with the default desktop policy (active session: yes) has. */
GDBusConnection *connect_allowed_user(Harness *h)
{
        if (h->authority)
                fake_authority_set(h->authority, NULL, FAKE_AUTH_ALLOW, 0);
        return harness_connect_as(h, HARNESS_USER_A);
}

void error_name_is_one_of(const GError *error, const char *const *names)
{
        g_autofree char *remote = error ? g_dbus_error_get_remote_error(error) : NULL;

        if (!error) {
                g_test_fail_printf("expected an error, the call succeeded");
                return;
        }
        for (const char *const *n = names; *n; n++)
                if (g_strcmp0(remote, *n) == 0)
                        return;
        g_autofree char *list = g_strjoinv(", ", (char **)names);
        g_test_fail_printf("expected one of %s, got %s: %s", list, remote ? remote : "(no D-Bus error)",
                error->message);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Who is bound to what */

/* Waits (bounded) until nothing is bound to file: a rolled-back device that someone held open at that moment
 * goes away with autoclear when they close it. Returns what is still bound then. */
GPtrArray *loops_bound_to_after_settling(const char *file)
{
        GPtrArray *left = oracle_loops_bound_to(file);

        for (guint i = 0; left->len > 0 && i < 50; i++) {
                g_usleep(100 * 1000);
                g_ptr_array_unref(left);
                left = oracle_loops_bound_to(file);
        }
        return left;
}

/* The mount options of the filesystem mounted at target: mountinfo's per-mount and superblock options. */
char *mount_options_of(const char *target)
{
        g_autofree char *q = g_shell_quote(target);
        char *out = sh_or_empty("findmnt --noheadings --output VFS-OPTIONS,FS-OPTIONS --mountpoint %s", q);
        return g_strstrip(out);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Partition tables written byte by byte (sfdisk refuses to write most hostile ones) */

static void put_le32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (v >> (8 * i)) & 0xff;
}

static void put_le64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (v >> (8 * i)) & 0xff;
}

void pwrite_all(int fd, const void *buf, size_t n, uint64_t offset)
{
        g_assert_cmpint(pwrite(fd, buf, n, (off_t)offset), ==, (ssize_t)n);
}

/* Writes a protective MBR and primary and backup GPT headers (valid CRCs) for a disk the headers say has
 * disk_sectors sectors, with n partitions (128 entries); the file itself is file_size bytes. */
void gpt_write(const char *path, uint64_t disk_sectors, uint64_t file_size, const GptPart *parts, size_t n)
{
        static const uint8_t linux_data[16] = { 0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79,
                0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4 };
        const uint32_t n_entries = 128, entry_size = 128;
        g_autofree uint8_t *entries = g_malloc0(n_entries * entry_size);
        uint8_t mbr[512] = { 0 }, hdr[512] = { 0 };
        int fd;

        g_assert_cmpuint(n, <=, n_entries);
        image_create(path, file_size);
        fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        mbr[446 + 4] = 0xee;
        put_le32(mbr + 446 + 8, 1);
        put_le32(mbr + 446 + 12, (uint32_t)MIN(disk_sectors - 1, 0xffffffffu));
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        pwrite_all(fd, mbr, sizeof(mbr), 0);

        for (size_t i = 0; i < n; i++) {
                uint8_t *e = entries + i * entry_size;
                memcpy(e, linux_data, 16);
                for (int k = 0; k < 16; k++)
                        e[16 + k] = (uint8_t)g_random_int();
                put_le64(e + 32, parts[i].first_lba);
                put_le64(e + 40, parts[i].last_lba);
                g_autofree char *name = g_strdup_printf("p%zu", i + 1);
                for (size_t k = 0; name[k]; k++)
                        e[56 + 2 * k] = (uint8_t)name[k];
        }
        uint32_t entries_crc = test_crc32(entries, n_entries * entry_size);

        for (int backup = 0; backup < 2; backup++) {
                uint64_t my_lba = backup ? disk_sectors - 1 : 1;
                uint64_t entries_lba = backup ? disk_sectors - 33 : 2;

                memset(hdr, 0, sizeof(hdr));
                memcpy(hdr, "EFI PART", 8);
                put_le32(hdr + 8, 0x00010000);
                put_le32(hdr + 12, 92);
                put_le64(hdr + 24, my_lba);
                put_le64(hdr + 32, backup ? 1 : disk_sectors - 1);
                put_le64(hdr + 40, 34);
                put_le64(hdr + 48, disk_sectors - 34);
                for (int k = 0; k < 16; k++)
                        hdr[56 + k] = (uint8_t)(k * 7 + 1);
                put_le64(hdr + 72, entries_lba);
                put_le32(hdr + 80, n_entries);
                put_le32(hdr + 84, entry_size);
                put_le32(hdr + 88, entries_crc);
                put_le32(hdr + 16, test_crc32(hdr, 92));
                if ((my_lba + 1) * 512 <= file_size) {
                        pwrite_all(fd, hdr, sizeof(hdr), my_lba * 512);
                        pwrite_all(fd, entries, n_entries * entry_size, entries_lba * 512);
                }
        }
        close(fd);
}

/* One 16-byte MBR-style entry at offset of the file. */
void mbr_entry_at(int fd, uint64_t offset, uint8_t type, uint32_t start, uint32_t count)
{
        uint8_t e[16] = { 0 };

        e[4] = type;
        put_le32(e + 8, start);
        put_le32(e + 12, count);
        pwrite_all(fd, e, sizeof(e), offset);
}

void boot_signature_at(int fd, uint64_t sector)
{
        static const uint8_t sig[2] = { 0x55, 0xaa };
        pwrite_all(fd, sig, 2, sector * 512 + 510);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Calls in flight, processes */

static void pending_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
        Pending *p = user_data;

        p->reply = g_dbus_connection_call_with_unix_fd_list_finish(
                G_DBUS_CONNECTION(source), NULL, result, &p->error);
        (*p->n_done)++;
}

void pending_start_attach(Pending *p, const char *image)
{
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        int fd = open(image, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(g_unix_fd_list_append(fds, fd, NULL), ==, 0);
        close(fd);
        g_dbus_connection_call_with_unix_fd_list(p->connection, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                LOOPD_MANAGER_INTERFACE, "Attach", g_variant_new("(h@a{sv})", 0, harness_empty_options()),
                NULL, G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, fds, NULL, pending_done, p);
}

static void child_dies_with_parent(gpointer user_data)
{
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
}

GSubprocess *spawn_with_bus(
        Harness *h, GSubprocessFlags flags, const char *log_path, const char *const *argv, GError **error)
{
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(flags);

        g_subprocess_launcher_setenv(l, "DBUS_SYSTEM_BUS_ADDRESS", h->bus_address, TRUE);
        g_subprocess_launcher_unsetenv(l, "DBUS_SESSION_BUS_ADDRESS");
        g_subprocess_launcher_set_child_setup(l, child_dies_with_parent, NULL, NULL);
        g_subprocess_launcher_set_cwd(l, "/");
        if (log_path) {
                g_subprocess_launcher_set_stdout_file_path(l, log_path);
                g_subprocess_launcher_set_stderr_file_path(l, log_path);
        }
        return g_subprocess_launcher_spawnv(l, argv, error);
}

void kill_and_reap(GSubprocess *p)
{
        if (!p)
                return;
        g_subprocess_send_signal(p, SIGKILL);
        (void)g_subprocess_wait(p, NULL, NULL);
}

gboolean flag_timeout(gpointer user_data)
{
        *(bool *)user_data = true;
        return G_SOURCE_REMOVE;
}

/* Runs the thread-default context until *n_done reaches n or timeout_ms passed. */
bool iterate_until(GMainContext *context, guint *n_done, guint n, guint timeout_ms)
{
        bool timed_out = false;
        GSource *t = g_timeout_source_new(timeout_ms);

        g_source_set_callback(t, flag_timeout, &timed_out, NULL);
        g_source_attach(t, context);
        while (*n_done < n && !timed_out)
                g_main_context_iteration(context, TRUE);
        g_source_destroy(t);
        g_source_unref(t);
        return *n_done >= n;
}

const HarnessOptions *hostile_options_with(const HarnessOptions *base, gconstpointer data)
{
        HarnessOptions *o = g_memdup2(base, sizeof(*o));
        o->data = data;
        return o;
}
