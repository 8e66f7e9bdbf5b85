/* test-modify.c: making images from scratch as an unprivileged user (issue 19): the OSDev recipe through
 * loopctl on a DOS and a 4K-sector GPT image, the refusals of Format, CreatePartition and DeletePartition
 * (each leaving the image's bytes alone), and what else the contract implies. This file: the fixture, the
 * helpers, the oracles and main(); modify-recipe.c, modify-refusals.c and modify-more.c the tests. */
#include "test-modify.h"

/* ---------------------------------------------------------------------------------------------------- */
/* The fixture */

static bool have_tools(void)
{
        static const char *const tools[] = { "sfdisk", "blkid", "losetup", "mkfs.ext2", "mkfs.vfat",
                "mkfs.xfs", "mtype", "mcopy", "debugfs", "dd", NULL };

        for (const char *const *t = tools; *t; t++) {
                g_autofree char *path = g_find_program_in_path(*t);
                if (!path) {
                        g_autofree char *why = g_strdup_printf("%s is not installed", *t);
                        test_cannot_run(why);
                        return false;
                }
        }
        return true;
}

void modify_setup(Harness *h, gconstpointer opts)
{
        harness_setup(h, opts);
        if (h->ready && !have_tools())
                h->ready = false;
        if (h->ready)
                harness_allow_all(h);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Helpers */

char *user_home(Harness *h, const char *user)
{
        char *dir = g_build_filename(h->tmpdir, user, NULL);

        if (g_mkdir(dir, 0755) < 0 && errno != EEXIST)
                harness_fail("cannot create %s: %s", dir, g_strerror(errno));
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        g_assert_cmpint(chown(dir, harness_uid_of(user), harness_gid_of(user)), ==, 0);
        return dir;
}

char *device_of(const char *image)
{
        g_autoptr(GPtrArray) loops = oracle_loops_bound_to(image);

        if (loops->len > 1)
                harness_fail("%u loop devices are bound to %s, expected at most one", loops->len, image);
        return loops->len > 0 ? g_strdup(loops->pdata[0]) : NULL;
}

bool polkit_asked(Harness *h, const char *action)
{
        g_autoptr(GPtrArray) calls = fake_authority_calls(h->authority);

        for (guint i = 0; i < calls->len; i++)
                if (g_strcmp0(((FakeAuthCall *)calls->pdata[i])->action_id, action) == 0)
                        return true;
        return false;
}

char *partition_node(const char *device, unsigned n)
{
        return g_strdup_printf("%sp%u", device, n);
}

/* ---------------------------------------------------------------------------------------------------- */
/* D-Bus */

bool call_format(GDBusConnection *c, const char *node, const char *type, const char *label, bool erase,
        GError **error)
{
        g_autoptr(GVariant) reply = NULL;
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (label)
                g_variant_builder_add(&b, "{sv}", "label", g_variant_new_string(label));
        if (erase)
                g_variant_builder_add(&b, "{sv}", "erase", g_variant_new_boolean(TRUE));
        reply = harness_call(c, "Format", g_variant_new("(ssa{sv})", node, type, &b), NULL,
                G_DBUS_CALL_FLAGS_NONE, error);
        return reply != NULL;
}

bool call_create_partition(GDBusConnection *c, const char *device, guint64 offset, guint64 size,
        const char *type, const char *name, char **ret_node, GError **error)
{
        g_autoptr(GVariant) reply = harness_call(c, "CreatePartition",
                g_variant_new("(sttss@a{sv})", device, offset, size, type, name ? name : "",
                        harness_empty_options()),
                NULL, G_DBUS_CALL_FLAGS_NONE, error);

        if (!reply)
                return false;
        if (!g_variant_is_of_type(reply, G_VARIANT_TYPE("(s)"))) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "CreatePartition returned %s, expected (s)", g_variant_get_type_string(reply));
                return false;
        }
        if (ret_node)
                g_variant_get(reply, "(s)", ret_node);
        return true;
}

bool call_delete_partition(GDBusConnection *c, const char *node, GError **error)
{
        g_autoptr(GVariant) reply =
                harness_call(c, "DeletePartition", g_variant_new("(s@a{sv})", node, harness_empty_options()),
                        NULL, G_DBUS_CALL_FLAGS_NONE, error);

        return reply != NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Oracles */

void sfdisk_dump_free(SfdiskDump *d)
{
        if (!d)
                return;
        for (guint i = 0; d->partitions && i < d->partitions->len; i++) {
                DumpPartition *p = &g_array_index(d->partitions, DumpPartition, i);
                g_free(p->type);
                g_free(p->name);
        }
        if (d->partitions)
                g_array_unref(d->partitions);
        g_free(d->label);
        g_free(d);
}

/* The value of "key=VALUE" in a dump line's comma list: up to the next comma, quotes taken off. */
static char *dump_field(const char *line, const char *key)
{
        g_autofree char *k = g_strconcat(key, "=", NULL);
        const char *p = line;

        while ((p = strstr(p, k))) {
                if (p == line || p[-1] == ' ' || p[-1] == ',') {
                        const char *v = p + strlen(k), *end;
                        while (*v == ' ')
                                v++;
                        if (*v == '"') {
                                end = strchr(v + 1, '"');
                                return end ? g_strndup(v + 1, end - v - 1) : g_strdup(v + 1);
                        }
                        end = strchr(v, ',');
                        return g_strstrip(end ? g_strndup(v, end - v) : g_strdup(v));
                }
                p += strlen(k);
        }
        return NULL;
}

SfdiskDump *oracle_sfdisk_dump(const char *image, unsigned sector_size)
{
        SfdiskDump *d = g_new0(SfdiskDump, 1);
        g_autofree char *q = g_shell_quote(image), *out = NULL;
        g_auto(GStrv) lines = NULL;
        int status;

        d->partitions = g_array_new(FALSE, TRUE, sizeof(DumpPartition));
        d->sector_size = 512;
        if (sector_size > 512)
                status = test_sh_status(&out,
                        "dev=$(losetup --sector-size %u --read-only --show --find %s) || exit 1; "
                        "trap 'losetup --detach \"$dev\"' EXIT; sfdisk --dump \"$dev\"",
                        sector_size, q);
        else
                status = test_sh_status(&out, "sfdisk --dump %s", q);
        g_test_message("sfdisk --dump %s (exit %d):\n%s", image, status, out);
        if (status != 0)
                return d;
        lines = g_strsplit(out, "\n", -1);
        for (char **l = lines; *l; l++) {
                if (g_str_has_prefix(*l, "label: "))
                        d->label = g_strstrip(g_strdup(*l + strlen("label: ")));
                else if (g_str_has_prefix(*l, "sector-size: "))
                        d->sector_size = (unsigned)g_ascii_strtoull(*l + strlen("sector-size: "), NULL, 10);
                else if (g_str_has_prefix(*l, "last-lba: "))
                        d->last_lba = g_ascii_strtoull(*l + strlen("last-lba: "), NULL, 10);
                else if (strstr(*l, " : start=")) {
                        const char *fields = strstr(*l, " : ") + 3;
                        g_autofree char *start = dump_field(fields, "start"),
                                        *size = dump_field(fields, "size");
                        DumpPartition p = {
                                .start = start ? g_ascii_strtoull(start, NULL, 10) : 0,
                                .size = size ? g_ascii_strtoull(size, NULL, 10) : 0,
                                .type = dump_field(fields, "type"),
                                .name = dump_field(fields, "name"),
                                .bootable = strstr(fields, ", bootable") != NULL,
                        };
                        g_array_append_val(d->partitions, p);
                }
        }
        return d;
}

void check_dump_partition(const SfdiskDump *d, guint i, guint64 start, guint64 size, const char *type)
{
        const DumpPartition *p;

        if (i >= d->partitions->len) {
                harness_fail("sfdisk --dump shows no partition %u", i + 1);
                return;
        }
        p = &g_array_index(d->partitions, DumpPartition, i);
        if (p->start * d->sector_size != start || p->size * d->sector_size != size)
                harness_fail("partition %u: start %" G_GUINT64_FORMAT " size %" G_GUINT64_FORMAT
                             " bytes, expected %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT,
                        i + 1, p->start * d->sector_size, p->size * d->sector_size, start, size);
        if (type && g_ascii_strcasecmp(p->type ? p->type : "", type) != 0)
                harness_fail("partition %u has type %s, expected %s", i + 1, p->type, type);
}

void check_blkid(const char *image, guint64 offset, const char *type, const char *label)
{
        g_autoptr(GHashTable) found = oracle_blkid(image, offset);
        const char *t = g_hash_table_lookup(found, "TYPE"), *l = g_hash_table_lookup(found, "LABEL");

        g_test_message("blkid -p -O %" G_GUINT64_FORMAT " %s: TYPE=%s LABEL=%s VERSION=%s PTTYPE=%s", offset,
                image, t, l, (char *)g_hash_table_lookup(found, "VERSION"),
                (char *)g_hash_table_lookup(found, "PTTYPE"));
        if (!type) {
                if (g_hash_table_size(found) > 0)
                        harness_fail("blkid -p finds %s at offset %" G_GUINT64_FORMAT ", expected nothing",
                                t ? t : (char *)g_hash_table_lookup(found, "PTTYPE"), offset);
                return;
        }
        if (g_strcmp0(t, type) != 0)
                harness_fail("blkid -p finds TYPE=%s at offset %" G_GUINT64_FORMAT ", expected %s", t,
                        offset, type);
        if (label && g_strcmp0(l, label) != 0)
                harness_fail("blkid -p finds LABEL=%s at offset %" G_GUINT64_FORMAT ", expected %s", l,
                        offset, label);
}

char *fat_read(const char *image, guint64 offset, const char *name)
{
        g_autofree char *q = g_shell_quote(image), *out = NULL;

        /* mtools refuses a FAT whose geometry looks odd for a floppy; mkfs.fat's on a partition is fine. */
        if (test_sh_status(&out, "MTOOLS_SKIP_CHECK=1 mtype -i %s@@%" G_GUINT64_FORMAT " ::/%s", q, offset,
                    name) != 0)
                return NULL;
        return g_steal_pointer(&out);
}

char *ext_read(Harness *h, const char *image, guint64 offset, guint64 size, const char *name)
{
        g_autofree char *copy = g_build_filename(h->tmpdir, "ext-copy.img", NULL);
        g_autofree char *q = g_shell_quote(image), *qcopy = g_shell_quote(copy), *out = NULL;
        int status;

        g_assert_cmpuint(offset % MiB, ==, 0);
        g_free(test_sh("dd if=%s of=%s bs=1M skip=%" G_GUINT64_FORMAT " count=%" G_GUINT64_FORMAT
                       " conv=sparse status=none",
                q, qcopy, offset / MiB, (size + MiB - 1) / MiB));
        status = test_sh_status(&out, "debugfs -R 'cat /%s' %s 2>/dev/null", name, qcopy);
        (void)g_unlink(copy);
        return status == 0 ? g_steal_pointer(&out) : NULL;
}

char *make_base_image(Harness *h, const char *name, const char *user)
{
        char *path = harness_image_path(h, name);

        image_create(path, BASE_SIZE);
        image_sfdisk(path, "label: dos\nstart=2048, size=65536, type=83\n", 0);
        g_free(image_mkfs_at(path, BASE_P1_OFFSET, BASE_P1_SIZE, "ext2", "one"));
        g_assert_cmpint(chown(path, harness_uid_of(user), harness_gid_of(user)), ==, 0);
        g_assert_cmpint(chmod(path, 0644), ==, 0);
        return path;
}

/* ---------------------------------------------------------------------------------------------------- */
/* The tests */

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);

        modify_add("/loopd/modify/recipe/dos-fat16-ext2-as-user", test_recipe_dos, NULL);
        modify_add("/loopd/modify/recipe/gpt-4k-sectors-read-back-as-4k", test_recipe_gpt_4k, NULL);

        modify_add(
                "/loopd/modify/refuse/format-mounted-partition-busy", test_refused, &refuse_format_mounted);
        modify_add("/loopd/modify/refuse/format-table-while-partition-mounted-busy", test_refused,
                &refuse_format_disk_partition_mounted);
        modify_add("/loopd/modify/refuse/format-other-users-device-not-authorized", test_refused,
                &refuse_format_other_user);
        modify_add("/loopd/modify/refuse/create-partition-other-users-device-not-authorized", test_refused,
                &refuse_create_other_user);
        modify_add("/loopd/modify/refuse/delete-partition-other-users-device-not-authorized", test_refused,
                &refuse_delete_other_user);
        modify_add("/loopd/modify/refuse/format-own-device-polkit-says-no", test_refused,
                &refuse_format_not_allowed);
        modify_add("/loopd/modify/refuse/format-read-only-device", test_refused, &refuse_format_read_only);
        modify_add("/loopd/modify/refuse/create-partition-read-only-device", test_refused,
                &refuse_create_read_only);
        modify_add("/loopd/modify/refuse/label-with-slash", test_refused, &refuse_label_slash);
        modify_add("/loopd/modify/refuse/label-with-slash-vfat", test_refused, &refuse_label_slash_vfat);
        modify_add("/loopd/modify/refuse/label-with-newline", test_refused, &refuse_label_newline);
        modify_add("/loopd/modify/refuse/label-of-300-bytes", test_refused, &refuse_label_300_bytes);
        modify_add("/loopd/modify/refuse/format-type-outside-the-list", test_refused, &refuse_format_type);
        modify_add("/loopd/modify/refuse/partition-type-unknown", test_refused, &refuse_create_type);
        modify_add("/loopd/modify/refuse/partition-past-the-end", test_refused, &refuse_create_past_end);
        modify_add(
                "/loopd/modify/refuse/partition-overlapping-another", test_refused, &refuse_create_overlap);
        modify_add(
                "/loopd/modify/refuse/delete-mounted-partition-busy", test_refused, &refuse_delete_mounted);

        modify_add("/loopd/modify/format/empty-partition-leaves-no-signature", test_format_empty_partition,
                NULL);
        modify_add("/loopd/modify/format/empty-whole-device-leaves-no-signature",
                test_format_empty_whole_device, NULL);
        modify_add("/loopd/modify/format/partition-only-its-bytes-erase-zeroes-them",
                test_format_partition_bytes_only, NULL);
        modify_add("/loopd/modify/partition/size-0-fills-to-the-end-aligned",
                test_create_size_0_fills_aligned, NULL);
        modify_add(
                "/loopd/modify/partition/delete-removes-node-and-signals", test_delete_removes_node, NULL);
        modify_add("/loopd/modify/partition/table-write-keeps-last-partition-tail",
                test_table_write_keeps_partition_tail, NULL);
        modify_add("/loopd/modify/create/table-partition-filesystem-in-one-go", test_create_in_one_go, NULL);
        modify_add("/loopd/modify/create/over-existing-file-refused-untouched",
                test_create_over_existing_file, NULL);
        modify_add("/loopd/modify/create/failing-format-leaves-no-file-no-device",
                test_create_failing_format_leaves_nothing, NULL);

        return g_test_run();
}
