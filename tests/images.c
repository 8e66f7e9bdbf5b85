/* images.c: test images built with real tools, independent oracles, and the privileged-suite gate. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "images.h"

gboolean test_require_privileges(void)
{
        const char *why = NULL;

        if (geteuid() != 0)
                why = "not running as root";
        else if (access("/dev/loop-control", R_OK | W_OK) < 0)
                why = "/dev/loop-control is not accessible";

        if (!why)
                return TRUE;
        test_cannot_run(why);
        return FALSE;
}

void test_cannot_run(const char *why)
{
        if (g_strcmp0(g_getenv("CI"), "true") == 0)
                g_test_fail_printf("cannot run (and CI=true must not skip): %s", why);
        else
                g_test_skip(why);
}

char *test_tmpdir_new(void)
{
        /* Under TMPDIR when set: tools/test gives each run its own, so that what a run leaves behind can be
         * told from other runs' devices. */
        char *dir = g_build_filename(g_get_tmp_dir(), "loopd-test-XXXXXX", NULL);

        g_assert_nonnull(g_mkdtemp(dir));
        /* Unprivileged test clients (setpriv) must be able to reach the images the test makes here. */
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        return dir;
}

GPtrArray *oracle_mounts_below(const char *dir)
{
        GPtrArray *targets = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *contents = NULL;
        size_t dlen = strlen(dir);

        if (!g_file_get_contents("/proc/self/mountinfo", &contents, NULL, NULL))
                return targets;

        g_auto(GStrv) lines = g_strsplit(contents, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) f = g_strsplit(*l, " ", 6);
                if (g_strv_length(f) < 5)
                        continue;
                /* mountinfo escapes blanks as \040; our temp dirs have none, so an exact prefix works. */
                const char *t = f[4];
                if (strncmp(t, dir, dlen) == 0 && (t[dlen] == '\0' || t[dlen] == '/'))
                        g_ptr_array_add(targets, g_strdup(t));
        }
        return targets;
}

/* Unmounts (lazily) whatever is mounted at or below dir, deepest first, so that rm never crosses into a
 * mounted filesystem. */
static void unmount_below(const char *dir)
{
        g_autoptr(GPtrArray) targets = oracle_mounts_below(dir);

        for (guint i = targets->len; i > 0; i--) {
                const char *t = targets->pdata[i - 1];
                g_test_message("cleanup: unmounting %s", t);
                if (umount2(t, MNT_DETACH) < 0)
                        g_test_message("cleanup: umount %s: %s", t, g_strerror(errno));
        }
}

void test_tmpdir_remove(const char *dir)
{
        g_autofree char *quoted = NULL;
        g_autofree char *cmd = NULL;

        if (!dir)
                return;
        g_assert_true(g_str_has_prefix(dir, "/tmp/"));
        unmount_below(dir);
        quoted = g_shell_quote(dir);
        cmd = g_strdup_printf("rm -rf --one-file-system -- %s", quoted);
        (void)!system(cmd);
}

static int run_shell(const char *cmd, char **ret_out, char **ret_err)
{
        const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
        g_autoptr(GError) error = NULL;
        int status = 0;

        if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, ret_out, ret_err, &status,
                    &error)) {
                g_test_message("cannot run '%s': %s", cmd, error->message);
                return -1;
        }
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

char *test_read_sysfs(const char *fmt, ...)
{
        g_autofree char *path = NULL;
        char *contents = NULL;
        va_list ap;

        va_start(ap, fmt);
        path = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (!g_file_get_contents(path, &contents, NULL, NULL))
                return NULL;
        return g_strstrip(contents);
}

char *test_proc_status(pid_t pid, const char *key)
{
        g_autofree char *status = test_read_sysfs("/proc/%d/status", (int)pid);
        g_auto(GStrv) lines = g_strsplit(status ? status : "", "\n", -1);
        size_t len = strlen(key);

        for (char **l = lines; *l; l++)
                if (strncmp(*l, key, len) == 0 && (*l)[len] == ':')
                        return g_strstrip(g_strdup(*l + len + 1));
        return NULL;
}

gboolean test_options_have(const char *options, const char *item)
{
        g_auto(GStrv) items = g_strsplit(options ? options : "", ",", -1);

        return g_strv_contains((const char *const *)items, item);
}

char *test_sha256_of_file(const char *path)
{
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
        guint8 buf[65536];
        ssize_t n;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0) {
                g_test_message("FAIL: cannot open %s: %s", path, g_strerror(errno));
                g_test_fail_printf("cannot open %s: %s", path, g_strerror(errno));
                return NULL;
        }
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                g_checksum_update(sum, buf, (gssize)n);
        if (n < 0) {
                int e = errno;
                g_test_message("FAIL: cannot read %s: %s", path, g_strerror(e));
                g_test_fail_printf("cannot read %s: %s", path, g_strerror(e));
        }
        close(fd);
        return n == 0 ? g_strdup(g_checksum_get_string(sum)) : NULL;
}

uint32_t test_crc32(const uint8_t *p, size_t n)
{
        uint32_t c = 0xffffffffu;

        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
        }
        return ~c;
}

char *test_sh(const char *fmt, ...)
{
        g_autofree char *cmd = NULL;
        g_autofree char *err = NULL;
        char *out = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        cmd = g_strdup_vprintf(fmt, ap);
        va_end(ap);

        r = run_shell(cmd, &out, &err);
        if (r != 0) {
                g_test_message("command failed (status %d): %s", r, cmd);
                g_test_message("stdout: %s", out ? out : "");
                g_test_message("stderr: %s", err ? err : "");
        }
        g_assert_cmpint(r, ==, 0);
        return out ? out : g_strdup("");
}

int test_sh_status(char **ret_out, const char *fmt, ...)
{
        g_autofree char *cmd = NULL;
        g_autofree char *err = NULL;
        g_autofree char *out = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        cmd = g_strdup_vprintf(fmt, ap);
        va_end(ap);

        r = run_shell(cmd, &out, &err);
        if (r != 0 && err && *err)
                g_test_message("'%s' exited %d: %s", cmd, r, err);
        if (ret_out)
                *ret_out = out ? g_steal_pointer(&out) : g_strdup("");
        return r;
}

void image_create(const char *path, uint64_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, (off_t)size), ==, 0);
        g_assert_cmpint(close(fd), ==, 0);
}

/* sfdisk of util-linux < 2.39 has no --sector-size: it takes the sector size from the device. For anything
 * but 512 the image is run through a loop device of that logical sector size (root only), detached by the
 * shell whatever sfdisk does. */
static char *sfdisk_target(const char *qpath, unsigned sector_size, const char *cmd)
{
        if (sector_size == 0 || sector_size == 512)
                return g_strdup_printf("%s %s", cmd, qpath);
        if (geteuid() != 0)
                g_error("writing or reading a %u-byte-sector table needs root (a loop device)", sector_size);
        return g_strdup_printf("dev=$(losetup --sector-size %u --show --find %s) || exit 1; "
                               "trap 'losetup --detach \"$dev\"' EXIT; %s \"$dev\"",
                sector_size, qpath, cmd);
}

void image_sfdisk(const char *path, const char *script, unsigned sector_size)
{
        g_autofree char *qscript = g_shell_quote(script);
        g_autofree char *qpath = g_shell_quote(path);
        g_autofree char *target = NULL;

        target = sfdisk_target(
                qpath, sector_size, "sfdisk --quiet --no-reread --no-tell-kernel --wipe always");
        g_free(test_sh("printf '%%s\\n' %s | { %s; }", qscript, target));
}

/* The mkfs command line for fstype writing to the file qtmp, or NULL for an unknown type. */
static char *mkfs_command(const char *fstype, const char *qtmp, const char *qlabel, const char *tmpdir)
{
        gboolean l = qlabel != NULL;

        if (g_str_equal(fstype, "ext2") || g_str_equal(fstype, "ext3") || g_str_equal(fstype, "ext4"))
                return g_strdup_printf(
                        "mkfs.%s -q -F -E nodiscard %s%s %s", fstype, l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "xfs"))
                return g_strdup_printf("mkfs.xfs -q -f -K %s%s %s", l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "btrfs"))
                return g_strdup_printf(
                        "mkfs.btrfs -q -f --nodiscard %s%s %s", l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "vfat"))
                return g_strdup_printf(
                        "mkfs.vfat %s%s %s >/dev/null", l ? "-n " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "swap"))
                return g_strdup_printf("mkswap -q %s%s %s", l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "exfat"))
                return g_strdup_printf(
                        "mkfs.exfat %s%s %s >/dev/null", l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "ntfs"))
                return g_strdup_printf("mkntfs -q -F -f %s%s %s", l ? "-L " : "", l ? qlabel : "", qtmp);
        if (g_str_equal(fstype, "squashfs"))
                /* squashfs has no label; the file's size is what mksquashfs makes of a small tree. */
                return g_strdup_printf("rm -f %s && mkdir -p %s/sq && echo loopd > %s/sq/hello && "
                                       "mksquashfs %s/sq %s -quiet -no-progress -noappend >/dev/null",
                        qtmp, tmpdir, tmpdir, tmpdir, qtmp);
        if (g_str_equal(fstype, "erofs"))
                return g_strdup_printf("rm -f %s && mkdir -p %s/sq && echo loopd > %s/sq/hello && "
                                       "mkfs.erofs -q %s%s %s %s/sq",
                        qtmp, tmpdir, tmpdir, l ? "-L " : "", l ? qlabel : "", qtmp, tmpdir);
        return NULL;
}

char *image_mkfs_at(const char *path, uint64_t offset, uint64_t size, const char *fstype, const char *label)
{
        g_autofree char *dir = g_path_get_dirname(path);
        g_autofree char *tmpdir = g_build_filename(dir, ".mkfs-XXXXXX", NULL);
        g_autofree char *tmp = NULL, *qtmp = NULL, *qpath = NULL, *qlabel = NULL, *qtmpdir = NULL;
        g_autofree char *cmd = NULL, *uuid = NULL;
        struct stat st;

        g_assert_nonnull(g_mkdtemp(tmpdir));
        tmp = g_build_filename(tmpdir, "fs.img", NULL);
        qtmp = g_shell_quote(tmp);
        qpath = g_shell_quote(path);
        qtmpdir = g_shell_quote(tmpdir);
        qlabel = label ? g_shell_quote(label) : NULL;

        image_create(tmp, size);
        cmd = mkfs_command(fstype, qtmp, qlabel, qtmpdir);
        if (!cmd)
                g_error("image_mkfs_at: unknown filesystem type '%s'", fstype);
        g_free(test_sh("%s", cmd));

        g_assert_cmpint(stat(tmp, &st), ==, 0);
        g_assert_cmpuint((uint64_t)st.st_size, <=, size);

        uuid = test_sh("blkid -p -o value -s UUID %s || true", qtmp);
        g_strstrip(uuid);

        /* Punch the target range first: dd conv=sparse skips zero blocks, which must read as zeros. */
        g_free(test_sh("fallocate --punch-hole --offset %" G_GUINT64_FORMAT " --length %" G_GUINT64_FORMAT
                       " %s 2>/dev/null || true",
                offset, size, qpath));
        g_free(test_sh("dd if=%s of=%s bs=1M seek=%" G_GUINT64_FORMAT
                       " oflag=seek_bytes conv=notrunc,sparse status=none",
                qtmp, qpath, offset));
        g_free(test_sh("rm -rf -- %s", qtmpdir));
        return g_steal_pointer(&uuid);
}

void image_make_hybrid_iso(const char *path, const char *volid)
{
        g_autofree char *dir = g_path_get_dirname(path);
        g_autofree char *tmpdir = g_build_filename(dir, ".iso-XXXXXX", NULL);
        g_autofree char *qtmpdir = NULL, *qpath = NULL, *qvolid = NULL;

        g_assert_nonnull(g_mkdtemp(tmpdir));
        qtmpdir = g_shell_quote(tmpdir);
        qpath = g_shell_quote(path);
        qvolid = g_shell_quote(volid);

        g_free(test_sh("set -e; cd %s; mkdir -p root/EFI/BOOT; echo 'loopd test medium' > root/README.TXT; "
                       "mkfs.vfat -C -n EFIBOOT efi.img 2048 >/dev/null; "
                       "mmd -i efi.img ::/EFI ::/EFI/BOOT; mcopy -i efi.img root/README.TXT ::/EFI/BOOT/; "
                       "xorriso -as mkisofs -quiet -o %s -V %s -J -R "
                       "-append_partition 2 0xef efi.img -partition_cyl_align all root 2>/dev/null",
                qtmpdir, qpath, qvolid));
        g_free(test_sh("rm -rf -- %s", qtmpdir));
}

JsonNode *oracle_sfdisk_json(const char *path, unsigned sector_size)
{
        g_autofree char *qpath = g_shell_quote(path);
        g_autofree char *out = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) error = NULL;
        JsonObject *root;

        g_autofree char *target = sfdisk_target(qpath, sector_size, "sfdisk --json");

        out = test_sh("%s", target);

        if (!json_parser_load_from_data(parser, out, -1, &error))
                g_error("sfdisk --json output does not parse: %s", error->message);
        root = json_node_get_object(json_parser_get_root(parser));
        g_assert_nonnull(root);
        g_assert_true(json_object_has_member(root, "partitiontable"));
        return json_node_copy(json_object_get_member(root, "partitiontable"));
}

/* blkid -o export protects shell-special characters with a backslash; the oracle returns the raw value. */
static char *export_unescape(const char *s)
{
        GString *v = g_string_new(NULL);

        for (; *s; s++) {
                if (*s == '\\' && s[1])
                        s++;
                g_string_append_c(v, *s);
        }
        return g_string_free(v, FALSE);
}

GHashTable *oracle_blkid(const char *path, uint64_t offset)
{
        GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *qpath = g_shell_quote(path);
        g_autofree char *out = NULL;

        /* Exit status 2 means "nothing found": an empty table, not an error. */
        (void)test_sh_status(&out, "blkid -p -o export -O %" G_GUINT64_FORMAT " %s", offset, qpath);

        g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++) {
                const char *eq = strchr(*l, '=');
                if (!eq || eq == *l)
                        continue;
                g_hash_table_replace(h, g_strndup(*l, eq - *l), export_unescape(eq + 1));
        }
        return h;
}

/* Loop devices whose backing file is path (under: lies under the directory path). The kernel's own account,
 * not `losetup --json`: one backing file anywhere on the machine whose name is not UTF-8 makes losetup print
 * invalid JSON, and a parse failure here would read as "nothing is attached" (the teardown's leak check
 * passes, its cleanup detaches nothing). No subprocess: cheap enough to call in a loop from many threads. */
static GPtrArray *loops_backed_by(const char *path, gboolean under)
{
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *prefix = g_strconcat(path, "/", NULL);
        g_autoptr(GDir) sys = g_dir_open("/sys/block", 0, NULL);
        const char *name;

        if (!sys) {
                g_test_fail_printf("cannot read /sys/block");
                return a;
        }
        while ((name = g_dir_read_name(sys))) {
                g_autofree char *file = NULL, *back = NULL;
                gsize len;

                if (!g_str_has_prefix(name, "loop"))
                        continue;
                file = g_strdup_printf("/sys/block/%s/loop/backing_file", name);
                if (!g_file_get_contents(file, &back, &len, NULL))
                        continue; /* not bound */
                if (len > 0 && back[len - 1] == '\n')
                        back[len - 1] = '\0';
                if (under ? g_str_has_prefix(back, prefix) : g_str_equal(back, path))
                        g_ptr_array_add(a, g_strdup_printf("/dev/%s", name));
        }
        return a;
}

JsonObject *oracle_losetup(const char *device)
{
        g_autofree char *q = g_shell_quote(device);
        g_autofree char *out = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *root;
        JsonArray *devs;

        if (test_sh_status(&out,
                    "losetup --list --json --output "
                    "NAME,BACK-FILE,OFFSET,SIZELIMIT,AUTOCLEAR,RO,LOG-SEC,PARTSCAN,DIO %s 2>/dev/null",
                    q) != 0 ||
                !out || !*out || !json_parser_load_from_data(parser, out, -1, NULL))
                return NULL;
        root = json_node_get_object(json_parser_get_root(parser));
        devs = root && json_object_has_member(root, "loopdevices")
                ? json_object_get_array_member(root, "loopdevices")
                : NULL;
        for (guint i = 0; devs && i < json_array_get_length(devs); i++) {
                JsonObject *o = json_array_get_object_element(devs, i);
                if (g_strcmp0(json_object_get_string_member_with_default(o, "name", ""), device) == 0)
                        return json_object_ref(o);
        }
        return NULL;
}

GPtrArray *oracle_loops_backed_by(const char *dir)
{
        return loops_backed_by(dir, TRUE);
}

GPtrArray *oracle_loops_bound_to(const char *file)
{
        return loops_backed_by(file, FALSE);
}

GPtrArray *oracle_partition_nodes(const char *device)
{
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *base = g_path_get_basename(device);
        g_autofree char *prefix = g_strconcat(base, "p", NULL);
        g_autoptr(GDir) d = g_dir_open("/dev", 0, NULL);
        const char *name;

        if (!d)
                return a;
        while ((name = g_dir_read_name(d))) {
                const char *rest;
                if (!g_str_has_prefix(name, prefix))
                        continue;
                rest = name + strlen(prefix);
                if (!*rest || strspn(rest, "0123456789") != strlen(rest))
                        continue;
                g_ptr_array_add(a, g_strconcat("/dev/", name, NULL));
        }
        g_ptr_array_sort(a, (GCompareFunc)g_strcmp0);
        return a;
}

/* Device numbers "MAJ:MIN" of loopN and its partitions, from sysfs. */
static GPtrArray *loop_devnums(const char *name)
{
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *sys = g_strconcat("/sys/block/", name, NULL);
        g_autofree char *dev = NULL;
        g_autoptr(GDir) d = NULL;
        const char *e;

        g_autofree char *devfile = g_build_filename(sys, "dev", NULL);
        if (g_file_get_contents(devfile, &dev, NULL, NULL))
                g_ptr_array_add(a, g_strdup(g_strstrip(dev)));
        d = g_dir_open(sys, 0, NULL);
        while (d && (e = g_dir_read_name(d))) {
                g_autofree char *pdev = NULL;
                g_autofree char *pfile = NULL;
                if (!g_str_has_prefix(e, name))
                        continue;
                pfile = g_build_filename(sys, e, "dev", NULL);
                if (g_file_get_contents(pfile, &pdev, NULL, NULL))
                        g_ptr_array_add(a, g_strdup(g_strstrip(pdev)));
        }
        return a;
}

static void unmount_loop(const char *device)
{
        g_autofree char *name = g_path_get_basename(device);
        g_autoptr(GPtrArray) devnums = loop_devnums(name);
        g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *contents = NULL;

        if (!g_file_get_contents("/proc/self/mountinfo", &contents, NULL, NULL))
                return;
        g_auto(GStrv) lines = g_strsplit(contents, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) f = g_strsplit(*l, " ", -1);
                gboolean match = FALSE;
                guint n = g_strv_length(f), i;

                if (n < 5)
                        continue;
                for (i = 0; i < devnums->len; i++)
                        if (g_str_equal(f[2], devnums->pdata[i]))
                                match = TRUE;
                /* FUSE mounts have their own device number; their source names the loop node. */
                for (i = 5; i + 1 < n; i++)
                        if (g_str_equal(f[i], "-") && i + 2 < n &&
                                (g_str_equal(f[i + 2], device) ||
                                        (g_str_has_prefix(f[i + 2], device) &&
                                                f[i + 2][strlen(device)] == 'p')))
                                match = TRUE;
                if (match)
                        g_ptr_array_add(targets, g_strdup(f[4]));
        }
        for (guint i = targets->len; i > 0; i--) {
                const char *t = targets->pdata[i - 1];
                g_test_message("cleanup: unmounting %s (on %s)", t, device);
                if (umount2(t, 0) < 0 && umount2(t, MNT_DETACH) < 0)
                        g_test_message("cleanup: umount %s: %s", t, g_strerror(errno));
        }
}

void test_cleanup_loops_under(const char *dir)
{
        g_autoptr(GPtrArray) devs = NULL;

        if (!dir || geteuid() != 0)
                return;
        devs = oracle_loops_backed_by(dir);
        for (guint i = 0; i < devs->len; i++) {
                const char *dev = devs->pdata[i];
                g_autofree char *q = g_shell_quote(dev);

                g_test_message("cleanup: %s is still attached (backed under %s), detaching", dev, dir);
                unmount_loop(dev);
                (void)test_sh_status(NULL, "partx -d %s 2>/dev/null; losetup -d %s", q, q);
        }
}

/* The ids a mkfs runs as (format-fs.c). */
#define MKFS_ID_BASE 0x7a6e0000u
#define MKFS_ID_SPAN 0x10000u

/* The pid of the mkfs named name (mke2fs for ext2) now formatting device, past its execve, or 0. It runs as
 * the device's own mkfs uid, so that another run's mkfs on this machine is left alone. Between the sandbox's
 * setresuid() and its execve() the child already has that uid, and loopd, which made it with CLONE_VFORK,
 * waits for the execve: a child stopped there would hold loopd's event loop (only root or that uid can stop
 * it). Until the execve the child has loopd's name. */
pid_t test_find_mkfs(dev_t device, const char *name)
{
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        const guint64 want = MKFS_ID_BASE + minor(device) % MKFS_ID_SPAN;

        for (const char *e; proc && (e = g_dir_read_name(proc));) {
                pid_t pid = (pid_t)g_ascii_strtoull(e, NULL, 10);
                g_autofree char *comm = NULL, *uid = NULL;

                if (pid <= 0)
                        continue;
                comm = test_proc_status(pid, "Name");
                if (g_strcmp0(comm, name) != 0)
                        continue;
                uid = test_proc_status(pid, "Uid");
                if (uid && g_ascii_strtoull(uid, NULL, 10) == want)
                        return pid;
        }
        return 0;
}

/* Stops pid and waits until the kernel says it is stopped: false when it had exited already (a zombie that
 * loopd has not reaped yet takes the signal too, and is not a running mkfs). */
bool test_stop_running(pid_t pid)
{
        gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

        if (kill(pid, SIGSTOP) < 0)
                return false;
        while (g_get_monotonic_time() < deadline) {
                g_autofree char *state = test_proc_status(pid, "State");

                if (!state || state[0] == 'Z' || state[0] == 'X')
                        return false;
                if (state[0] == 'T')
                        return true;
                g_usleep(1000);
        }
        (void)kill(pid, SIGCONT);
        return false;
}
