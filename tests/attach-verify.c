/* attach-verify.c: the attach suite's check of an attached (and a detached) device: what loopd reports on
 * every channel against losetup, sfdisk, blkid and sysfs. */
#include "test-attach.h"

/* ---------------------------------------------------------------------------------------------------- */
/* Verifying an attached device */

/* sfdisk names partition N of FILE "FILEN" and of /dev/loopX "/dev/loopXpN" (the toolkit reads tables with
 * other sector sizes through a loop device): N is the trailing number. */
guint partition_number(const char *node)
{
        size_t n = strlen(node), i = n;

        while (i > 0 && g_ascii_isdigit(node[i - 1]))
                i--;
        g_assert_cmpuint(i, <, n);
        return (guint)g_ascii_strtoull(node + i, NULL, 10);
}

/* The partitions the oracles expect on device: the table (sfdisk --json at the sector size), each node's
 * filesystem (blkid -p on the kernel's node), and the whole device's filesystem if it has one. */
static GPtrArray *expected_parts(const char *device, const Want *w)
{
        GPtrArray *parts = g_ptr_array_new_with_free_func(part_free);
        g_autoptr(GHashTable) whole = oracle_blkid(device, 0);
        g_autofree char *name = basename_of(device);

        if (g_hash_table_contains(whole, "TYPE")) {
                Part *p = g_new0(Part, 1);
                p->node = g_strdup(device);
                p->number = 0;
                p->offset = 0;
                p->size = sys_u64("/sys/class/block/%s/size", name) * 512;
                p->part_type = g_strdup("");
                p->part_name = g_strdup("");
                p->fstype = g_strdup(g_hash_table_lookup(whole, "TYPE"));
                p->label = g_strdup(g_hash_table_lookup(whole, "LABEL") ?: "");
                p->uuid = g_strdup(g_hash_table_lookup(whole, "UUID") ?: "");
                p->mount_point = g_strdup("");
                g_ptr_array_add(parts, p);
        }
        if (!w->has_table)
                return parts;

        g_autoptr(JsonNode) table = oracle_sfdisk_json(w->image, w->sector_size == 512 ? 0 : w->sector_size);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        for (guint i = 0; a && i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                const char *node = json_object_get_string_member(o, "node");
                Part *p = g_new0(Part, 1);

                p->number = partition_number(node);
                p->node = g_strdup_printf("%sp%u", device, p->number);
                p->offset = (guint64)json_object_get_int_member(o, "start") * w->sector_size;
                p->size = (guint64)json_object_get_int_member(o, "size") * w->sector_size;
                p->part_type = g_strdup(json_object_get_string_member(o, "type"));
                p->part_name = g_strdup(json_object_get_string_member_with_default(o, "name", ""));
                g_autoptr(GHashTable) fs = oracle_blkid(p->node, 0);
                p->fstype = g_strdup(g_hash_table_lookup(fs, "TYPE") ?: "");
                p->label = g_strdup(g_hash_table_lookup(fs, "LABEL") ?: "");
                p->uuid = g_strdup(g_hash_table_lookup(fs, "UUID") ?: "");
                p->mount_point = g_strdup("");
                g_ptr_array_add(parts, p);
        }
        return parts;
}

#define check_u64(what, got, want)                                                                         \
        do {                                                                                               \
                if ((guint64)(got) != (guint64)(want))                                                     \
                        g_test_fail_printf("%s: %s is %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT, \
                                source, (what), (guint64)(got), (guint64)(want));                          \
        } while (0)

/* Compares what source (e.g. "ListPartitions") reported with the oracles' expectation. */
static void compare_parts(const char *source, GPtrArray *got, GPtrArray *want, const Want *w)
{
        for (guint i = 0; i < got->len; i++) {
                Part *g = got->pdata[i];
                g_test_message("%s: %u %s offset %" G_GUINT64_FORMAT " size %" G_GUINT64_FORMAT
                               " type '%s' name '%s' fs '%s' label '%s' uuid '%s'",
                        source, g->number, g->node, g->offset, g->size, g->part_type, g->part_name,
                        g->fstype, g->label, g->uuid);
        }
        for (guint i = 0; i < want->len; i++) {
                Part *e = want->pdata[i];
                Part *g = parts_find(got, e->number);
                g_autofree char *what = g_strdup_printf("partition %u", e->number);

                if (!g) {
                        g_test_fail_printf("%s: partition %u (%s, offset %" G_GUINT64_FORMAT ") is missing",
                                source, e->number, e->node, e->offset);
                        continue;
                }
                g_autofree char *w_node = g_strconcat(what, " node", NULL);
                g_autofree char *w_offset = g_strconcat(what, " offset", NULL);
                g_autofree char *w_size = g_strconcat(what, " size", NULL);
                g_autofree char *w_fstype = g_strconcat(what, " fstype", NULL);
                g_autofree char *w_label = g_strconcat(what, " label", NULL);
                g_autofree char *w_uuid = g_strconcat(what, " uuid", NULL);
                g_autofree char *w_name = g_strconcat(what, " part_name", NULL);
                g_autofree char *w_mp = g_strconcat(what, " mount_point", NULL);

                check_str(w_node, g->node, e->node);
                check_u64(w_offset, g->offset, e->offset);
                /* The kernel (and BLKPG, "as the kernel does") gives a DOS extended partition a node of 1-2
                 * sectors; either that or the table's size is an honest answer. */
                if (e->number > 0 && is_extended_type(e->part_type)) {
                        if (g->size != e->size && g->size > 2 * (guint64)w->sector_size)
                                g_test_fail_printf("%s: extended partition %u size is %" G_GUINT64_FORMAT
                                                   ", expected %" G_GUINT64_FORMAT " or at most 2 sectors",
                                        source, e->number, g->size, e->size);
                } else
                        check_u64(w_size, g->size, e->size);
                if (e->number > 0 && !part_type_equal(g->part_type, e->part_type))
                        g_test_fail_printf("%s: partition %u part_type is '%s', expected '%s'", source,
                                e->number, g->part_type, e->part_type);
                if (e->number > 0)
                        check_str(w_name, g->part_name, e->part_name);
                check_str(w_fstype, g->fstype, e->fstype);
                check_str(w_label, g->label, e->label);
                g_autofree char *got_uuid = g_ascii_strdown(g->uuid, -1);
                g_autofree char *want_uuid = g_ascii_strdown(e->uuid, -1);
                check_str(w_uuid, got_uuid, want_uuid);
                check_str(w_mp, g->mount_point, "");
        }
        for (guint i = 0; i < got->len; i++) {
                Part *g = got->pdata[i];
                if (!parts_find(want, g->number))
                        g_test_fail_printf("%s: lists partition %u (%s) that the oracles do not know",
                                source, g->number, g->node);
        }
        /* The filesystems the test made itself, by name. */
        for (const WantFs *f = w->fs; f && f->fstype; f++) {
                Part *g = parts_find(got, f->number);
                if (!g) {
                        g_test_fail_printf(
                                "%s: no entry %u for the %s the test made", source, f->number, f->fstype);
                        continue;
                }
                check_str("fstype", g->fstype, f->fstype);
                if (f->label)
                        check_str("label", g->label, f->label);
                if (f->uuid && *f->uuid && g_ascii_strcasecmp(g->uuid, f->uuid) != 0)
                        g_test_fail_printf("%s: entry %u uuid is '%s', mkfs made '%s'", source, f->number,
                                g->uuid, f->uuid);
        }
}

/* The device row (sosttubbbu / loopctl list object) must say what losetup says. */
void compare_device_row(const char *source, const char *device, const char *backing, guint64 offset,
        guint64 size_limit, guint32 sector_size, gboolean read_only, gboolean autoclear, gboolean managed,
        guint32 owner, JsonObject *losetup)
{
        check_str("backing_file", backing,
                json_object_get_string_member_with_default(losetup, "back-file", ""));
        check_u64("offset", offset, json_object_get_int_member_with_default(losetup, "offset", -1));
        check_u64(
                "size_limit", size_limit, json_object_get_int_member_with_default(losetup, "sizelimit", -1));
        check_u64(
                "sector_size", sector_size, json_object_get_int_member_with_default(losetup, "log-sec", -1));
        if (read_only != json_object_get_boolean_member_with_default(losetup, "ro", !read_only))
                g_test_fail_printf(
                        "%s: %s read_only is %d, losetup says otherwise", source, device, read_only);
        if (autoclear != json_object_get_boolean_member_with_default(losetup, "autoclear", !autoclear))
                g_test_fail_printf(
                        "%s: %s autoclear is %d, losetup says otherwise", source, device, autoclear);
        if (!managed)
                g_test_fail_printf("%s: %s was attached through loopd but is not managed", source, device);
        check_u64("owner_uid", owner, 0);
}

static void verify_lists(Harness *h, const char *device, JsonObject *losetup)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) devices = harness_list_devices(h->bus, &error);
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(JsonNode) list = NULL;
        bool found = false;

        harness_assert_no_error(error);
        if (devices) {
                GVariantIter it;
                const char *dev, *object, *backing;
                guint64 offset, size_limit;
                guint32 sector_size, owner;
                gboolean ro, ac, managed;
                const char *source = "ListDevices";

                g_variant_iter_init(&it, devices);
                while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &dev, &object, &backing, &offset,
                        &size_limit, &sector_size, &ro, &ac, &managed, &owner)) {
                        if (!g_str_equal(dev, device))
                                continue;
                        found = true;
                        g_autofree char *name = basename_of(device);
                        g_autofree char *want_object = g_strconcat(LOOPD_DEVICE_PATH_PREFIX "/", name, NULL);
                        check_str("object", object, want_object);
                        compare_device_row("ListDevices", dev, backing, offset, size_limit, sector_size, ro,
                                ac, managed, owner, losetup);
                }
                if (!found)
                        g_test_fail_printf("ListDevices does not list %s", device);
        }

        g_assert_cmpint(harness_loopctl(h, NULL, &run, "list", "--json", NULL), ==, 0);
        list = harness_run_json(&run);
        found = false;
        if (list && JSON_NODE_HOLDS_ARRAY(list)) {
                JsonArray *a = json_node_get_array(list);
                for (guint i = 0; i < json_array_get_length(a); i++) {
                        JsonObject *o = json_array_get_object_element(a, i);
                        g_autofree char *dev = json_str(o, "device");
                        g_autofree char *backing = NULL;
                        if (!g_str_equal(dev, device))
                                continue;
                        found = true;
                        backing = json_str(o, "backing_file");
                        compare_device_row("loopctl list --json", dev, backing, json_int(o, "offset"),
                                json_int(o, "size_limit"), json_int(o, "sector_size"),
                                json_member_bool(o, "read_only"), json_member_bool(o, "autoclear"),
                                json_member_bool(o, "managed"), json_int(o, "owner_uid"), losetup);
                }
        } else if (list)
                g_test_fail_printf("loopctl list --json did not print an array: %s", run.out);
        if (!found)
                g_test_fail_printf("loopctl list --json does not list %s", device);
}

/* The device object the contract promises, with properties that agree with losetup. */
static void verify_device_object(Harness *h, const char *device, JsonObject *losetup)
{
        g_autofree char *name = basename_of(device);
        g_autofree char *path = g_strconcat(LOOPD_DEVICE_PATH_PREFIX "/", name, NULL);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(h->bus, LOOPD_BUS_NAME, path,
                "org.freedesktop.DBus.Properties", "GetAll", g_variant_new("(s)", LOOPD_DEVICE_INTERFACE),
                G_VARIANT_TYPE("(a{sv})"), G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        g_autoptr(GVariant) props = NULL;
        const char *s, *source = "Device properties";
        guint64 t;
        guint32 u;
        gboolean b;

        if (!harness_assert_no_error(error))
                return;
        props = g_variant_get_child_value(reply, 0);
        if (g_variant_lookup(props, "Device", "&s", &s))
                check_str("Device", s, device);
        else
                g_test_fail_printf("%s has no Device property", path);
        if (g_variant_lookup(props, "BackingFile", "&s", &s))
                check_str("BackingFile", s,
                        json_object_get_string_member_with_default(losetup, "back-file", ""));
        else
                g_test_fail_printf("%s has no BackingFile property", path);
        if (g_variant_lookup(props, "Offset", "t", &t))
                check_u64("Offset", t, json_object_get_int_member_with_default(losetup, "offset", -1));
        else
                g_test_fail_printf("%s has no Offset property", path);
        if (g_variant_lookup(props, "SectorSize", "u", &u))
                check_u64("SectorSize", u, json_object_get_int_member_with_default(losetup, "log-sec", -1));
        else
                g_test_fail_printf("%s has no SectorSize property", path);
        if (!g_variant_lookup(props, "ReadOnly", "b", &b) ||
                b != json_object_get_boolean_member_with_default(losetup, "ro", !b))
                g_test_fail_printf("%s: ReadOnly is missing or disagrees with losetup", path);
        if (!g_variant_lookup(props, "Managed", "b", &b) || !b)
                g_test_fail_printf("%s: Managed is missing or false", path);
        if (!g_variant_lookup(props, "OwnerUID", "u", &u) || u != 0)
                g_test_fail_printf("%s: OwnerUID is missing or not 0", path);
}

/* Everything the oracles can check about device right after Attach returned. reported: the partitions
 * the attaching client printed (loopctl attach --json), or NULL. */
void verify_attached(Harness *h, const char *device, const Want *w, GPtrArray *reported)
{
        g_autofree char *name = basename_of(device);
        g_autoptr(JsonObject) losetup = oracle_losetup(device);
        g_autoptr(GPtrArray) want = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        g_autoptr(GError) error = NULL;
        const char *source = "losetup";

        if (!losetup) {
                g_test_fail_printf("losetup does not list %s after Attach returned it", device);
                return;
        }
        check_str(
                "back-file", json_object_get_string_member_with_default(losetup, "back-file", ""), w->image);
        check_u64("offset", json_object_get_int_member_with_default(losetup, "offset", -1), w->offset);
        check_u64("sizelimit", json_object_get_int_member_with_default(losetup, "sizelimit", -1),
                w->size_limit);
        check_u64(
                "log-sec", json_object_get_int_member_with_default(losetup, "log-sec", -1), w->sector_size);
        if (json_object_get_boolean_member_with_default(losetup, "ro", !w->read_only) != w->read_only)
                g_test_fail_printf("losetup: %s is %s, expected %s", device,
                        w->read_only ? "read-write" : "read-only",
                        w->read_only ? "read-only" : "read-write");
        source = "sysfs";
        check_u64("queue/logical_block_size", sys_u64("/sys/block/%s/queue/logical_block_size", name),
                w->sector_size);
        check_u64("ro", sys_u64("/sys/block/%s/ro", name), w->read_only ? 1 : 0);

        verify_lists(h, device, losetup);
        verify_device_object(h, device, losetup);

        want = expected_parts(device, w);
        if (reported)
                compare_parts("loopctl attach --json", reported, want, w);
        {
                g_autoptr(GVariant) v = harness_list_partitions(h->bus, device, &error);
                g_autoptr(GPtrArray) got = parts_from_variant(v);
                harness_assert_no_error(error);
                compare_parts("ListPartitions", got, want, w);
        }
        {
                g_auto(HarnessRun) run = { 0 };
                g_autoptr(JsonNode) json = NULL;
                g_assert_cmpint(harness_loopctl(h, NULL, &run, "partitions", "--json", device, NULL), ==, 0);
                json = harness_run_json(&run);
                if (json) {
                        g_autoptr(GPtrArray) got = parts_from_json(json);
                        compare_parts("loopctl partitions --json", got, want, w);
                }
        }

        /* The nodes exist (they did before Attach returned: nothing waited in between) and the kernel
         * placed them where the table says. */
        source = "/dev and sysfs";
        nodes = oracle_partition_nodes(device);
        for (guint i = 0; i < want->len; i++) {
                Part *e = want->pdata[i];
                g_autofree char *pname = NULL;
                struct stat st;
                bool present = false;

                if (e->number == 0)
                        continue;
                for (guint j = 0; j < nodes->len; j++)
                        present = present || g_str_equal(nodes->pdata[j], e->node);
                if (!present) {
                        g_test_fail_printf("%s does not exist after Attach returned", e->node);
                        continue;
                }
                pname = basename_of(e->node);
                check_u64("partition start", sys_u64("/sys/class/block/%s/start", pname) * 512, e->offset);
                if (!is_extended_type(e->part_type))
                        check_u64(
                                "partition size", sys_u64("/sys/class/block/%s/size", pname) * 512, e->size);
                /* With udevd running, Attach returns only once udev has processed the partitions: their
                 * udev database entries exist and describe this partition (udev's blkid builtin gives the
                 * offset in 512-byte units, whatever the sector size). */
                if (h->udev && stat(e->node, &st) == 0) {
                        g_autofree char *db = g_strdup_printf(
                                "/run/udev/data/b%u:%u", major(st.st_rdev), minor(st.st_rdev));
                        g_autofree char *contents = NULL;
                        g_autofree char *line = g_strdup_printf(
                                "\nE:ID_PART_ENTRY_OFFSET=%" G_GUINT64_FORMAT "\n", e->offset / 512);
                        if (!g_file_get_contents(db, &contents, NULL, NULL))
                                g_test_fail_printf("udev has not processed %s (no %s) when Attach returned",
                                        e->node, db);
                        else if (!strstr(contents, line))
                                g_test_fail_printf("udev's entry %s for %s is not about this partition "
                                                   "(no ID_PART_ENTRY_OFFSET=%" G_GUINT64_FORMAT ")",
                                        db, e->node, e->offset / 512);
                }
        }
        for (guint j = 0; j < nodes->len; j++) {
                bool expected = false;
                for (guint i = 0; i < want->len; i++)
                        expected = expected || g_str_equal(((Part *)want->pdata[i])->node, nodes->pdata[j]);
                if (!expected)
                        g_test_fail_printf(
                                "%s exists but the table has no such partition", (char *)nodes->pdata[j]);
        }
}

/* After Detach: the device is unbound (or bound by someone else to something else), its partition nodes
 * are gone, and loopd no longer lists it. */
void verify_detached(Harness *h, const char *device, const char *image)
{
        g_autoptr(JsonObject) losetup = oracle_losetup(device);
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) devices = NULL;
        const char *back =
                losetup ? json_object_get_string_member_with_default(losetup, "back-file", "") : NULL;

        if (back && g_str_equal(back, image)) {
                g_test_fail_printf("%s is still bound to %s after Detach returned", device, image);
                return;
        }
        if (back)
                /* LOOP_CTL_GET_FREE handed the number to another process already: its nodes are its own. */
                g_test_message("%s was reused by someone else (%s); not checking its nodes", device, back);
        else {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
                for (guint i = 0; i < nodes->len; i++)
                        g_test_fail_printf("%s still exists after Detach returned", (char *)nodes->pdata[i]);
        }

        devices = harness_list_devices(h->bus, &error);
        harness_assert_no_error(error);
        if (devices) {
                GVariantIter it;
                const char *dev, *backing;
                g_variant_iter_init(&it, devices);
                while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &dev, NULL, &backing, NULL, NULL, NULL,
                        NULL, NULL, NULL, NULL))
                        if (g_str_equal(backing, image))
                                g_test_fail_printf(
                                        "ListDevices still lists %s for %s after Detach", dev, image);
        }
}
