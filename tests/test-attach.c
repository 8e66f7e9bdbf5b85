/* test-attach.c: Attach, Detach, ListDevices and ListPartitions against the real kernel, through loopctl
 * --json and the raw D-Bus API. Every expected value comes from an independent oracle (sfdisk --json,
 * blkid -p, losetup --json, sysfs, the image's bytes), never from loopd. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)
#define GiB (MiB * 1024)
#define TiB (GiB * 1024)

/* ---------------------------------------------------------------------------------------------------- */
/* What loopd reports, and what the oracles say it should */

typedef struct Part {
        char *node;
        guint number;
        guint64 offset, size;
        char *part_type, *part_name, *fstype, *label, *uuid, *mount_point;
} Part;

static void part_free(gpointer data)
{
        Part *p = data;

        g_free(p->node);
        g_free(p->part_type);
        g_free(p->part_name);
        g_free(p->fstype);
        g_free(p->label);
        g_free(p->uuid);
        g_free(p->mount_point);
        g_free(p);
}

static GPtrArray *parts_from_variant(GVariant *a)
{
        GPtrArray *parts = g_ptr_array_new_with_free_func(part_free);
        GVariantIter it;
        Part p;

        if (!a)
                return parts;
        g_variant_iter_init(&it, a);
        while (g_variant_iter_next(&it, LOOPD_PARTITION_STRUCT, &p.node, &p.number, &p.offset, &p.size,
                &p.part_type, &p.part_name, &p.fstype, &p.label, &p.uuid, &p.mount_point))
                g_ptr_array_add(parts, g_memdup2(&p, sizeof(p)));
        return parts;
}

static char *json_str(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || JSON_NODE_HOLDS_NULL(n))
                return g_strdup("");
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
                g_test_fail_printf("JSON member \"%s\" is not a string", member);
                return g_strdup("");
        }
        return g_strdup(json_node_get_string(n));
}

static gint64 json_int(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
                g_test_fail_printf("JSON member \"%s\" is missing or not an integer", member);
                return -1;
        }
        return json_node_get_int(n);
}

static gboolean json_bool(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN) {
                g_test_fail_printf("JSON member \"%s\" is missing or not a boolean", member);
                return FALSE;
        }
        return json_node_get_boolean(n);
}

/* loopctl's P objects: {"node", "number", "offset", "size", "part_type", "part_name", "fstype", "label",
 * "uuid", "mount_point"}. */
static GPtrArray *parts_from_json(JsonNode *array)
{
        GPtrArray *parts = g_ptr_array_new_with_free_func(part_free);
        JsonArray *a;

        if (!array || !JSON_NODE_HOLDS_ARRAY(array)) {
                g_test_fail_printf("expected a JSON array of partitions");
                return parts;
        }
        a = json_node_get_array(array);
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                Part *p = g_new0(Part, 1);

                p->node = json_str(o, "node");
                p->number = (guint)json_int(o, "number");
                p->offset = (guint64)json_int(o, "offset");
                p->size = (guint64)json_int(o, "size");
                p->part_type = json_str(o, "part_type");
                p->part_name = json_str(o, "part_name");
                p->fstype = json_str(o, "fstype");
                p->label = json_str(o, "label");
                p->uuid = json_str(o, "uuid");
                p->mount_point = json_str(o, "mount_point");
                g_ptr_array_add(parts, p);
        }
        return parts;
}

static Part *parts_find(GPtrArray *parts, guint number)
{
        for (guint i = 0; i < parts->len; i++)
                if (((Part *)parts->pdata[i])->number == number)
                        return parts->pdata[i];
        return NULL;
}

/* sfdisk says "7" or "ef" for MBR types and a GUID for GPT; libblkid-based code may say "0x07". */
static bool part_type_equal(const char *a, const char *b)
{
        const char *x = g_str_has_prefix(a, "0x") ? a + 2 : a, *y = g_str_has_prefix(b, "0x") ? b + 2 : b;
        char *ex, *ey;
        guint64 vx, vy;

        if (*x && *y && strlen(x) <= 2 && strlen(y) <= 2) {
                vx = g_ascii_strtoull(x, &ex, 16);
                vy = g_ascii_strtoull(y, &ey, 16);
                if (!*ex && !*ey)
                        return vx == vy;
        }
        return g_ascii_strcasecmp(x, y) == 0;
}

static bool is_extended_type(const char *type)
{
        return part_type_equal(type, "5") || part_type_equal(type, "f") || part_type_equal(type, "85");
}

static guint64 sys_u64(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static guint64 sys_u64(const char *fmt, ...)
{
        g_autofree char *path = NULL, *v = NULL;
        va_list ap;

        va_start(ap, fmt);
        path = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        v = test_read_sysfs("%s", path);
        if (!v) {
                g_test_fail_printf("cannot read %s", path);
                return G_MAXUINT64;
        }
        return g_ascii_strtoull(v, NULL, 10);
}

static char *basename_of(const char *device)
{
        return g_path_get_basename(device);
}

/* losetup's view of one device: its object in `losetup --list --json`, or NULL. */
static JsonObject *oracle_losetup(const char *device)
{
        g_autofree char *out = NULL;
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *root;
        JsonArray *devs;

        if (test_sh_status(&out,
                    "losetup --list --json --output "
                    "NAME,BACK-FILE,OFFSET,SIZELIMIT,RO,AUTOCLEAR,LOG-SEC") != 0 ||
                !*out || !json_parser_load_from_data(parser, out, -1, NULL))
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

/* ---------------------------------------------------------------------------------------------------- */
/* Verifying an attached device */

/* A filesystem the test itself made, so its label and UUID are known without asking anyone. */
typedef struct WantFs {
        guint number; /* 0: the whole device */
        const char *fstype;
        const char *label;
        char *uuid; /* what blkid read from the fresh filesystem (image_mkfs_at) */
} WantFs;

typedef struct Want {
        const char *image;
        unsigned sector_size; /* the logical sector size the device must get */
        bool has_table; /* the image (at offset) carries a partition table sfdisk reads */
        guint64 offset, size_limit;
        bool read_only;
        const WantFs *fs; /* filesystems the test made, terminated by fstype NULL; may be NULL */
} Want;

/* sfdisk names partition N of FILE "FILEN" and of /dev/loopX "/dev/loopXpN" (the toolkit reads tables with
 * other sector sizes through a loop device): N is the trailing number. */
static guint partition_number(const char *node)
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

#define check_str(what, got, want)                                                                          \
        do {                                                                                                \
                if (g_strcmp0((got), (want)) != 0)                                                          \
                        g_test_fail_printf("%s: %s is '%s', expected '%s'", source, (what), (got), (want)); \
        } while (0)

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
static void compare_device_row(const char *source, const char *device, const char *backing, guint64 offset,
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
                                json_bool(o, "read_only"), json_bool(o, "autoclear"),
                                json_bool(o, "managed"), json_int(o, "owner_uid"), losetup);
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
static void verify_attached(Harness *h, const char *device, const Want *w, GPtrArray *reported)
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
static void verify_detached(Harness *h, const char *device, const char *image)
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

/* ---------------------------------------------------------------------------------------------------- */
/* Attaching with each client */

/* loopctl attach --json [args] IMAGE as root: the device, and the partitions it printed. */
static char *loopctl_attach(Harness *h, const char *image, const char *const *args, GPtrArray **ret_parts)
{
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(HarnessRun) run = { 0 };
        g_autoptr(JsonNode) json = NULL;
        JsonObject *o;

        g_ptr_array_add(argv, "attach");
        g_ptr_array_add(argv, "--json");
        for (const char *const *a = args; a && *a; a++)
                g_ptr_array_add(argv, (char *)*a);
        g_ptr_array_add(argv, (char *)image);
        g_ptr_array_add(argv, NULL);

        if (harness_loopctlv(h, NULL, &run, (const char *const *)argv->pdata) != 0) {
                g_test_fail_printf("loopctl attach %s failed (exit %d): %s", image, run.status, run.err);
                return NULL;
        }
        json = harness_run_json(&run);
        if (!json)
                return NULL;
        if (!JSON_NODE_HOLDS_OBJECT(json)) {
                g_test_fail_printf("loopctl attach --json did not print an object: %s", run.out);
                return NULL;
        }
        o = json_node_get_object(json);
        if (ret_parts)
                *ret_parts = parts_from_json(json_object_get_member(o, "partitions"));
        return json_str(o, "device");
}

static char *raw_attach(Harness *h, const char *image, int open_flags, GVariant *options)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        if (!harness_attach_path(h->bus, image, open_flags, options, &device, &error)) {
                harness_assert_no_error(error);
                return NULL;
        }
        return g_steal_pointer(&device);
}

static void raw_detach(Harness *h, const char *device)
{
        g_autoptr(GError) error = NULL;

        (void)harness_detach(h->bus, device, NULL, &error);
        harness_assert_no_error(error);
}

static void loopctl_detach(Harness *h, const char *what)
{
        g_auto(HarnessRun) run = { 0 };

        if (harness_loopctl(h, NULL, &run, "detach", what, NULL) != 0)
                g_test_fail_printf("loopctl detach %s failed (exit %d): %s", what, run.status, run.err);
}

/* The whole round twice: loopctl attach --json + raw Detach, then raw Attach + loopctl detach. */
static void attach_verify_detach(Harness *h, const Want *w)
{
        g_autoptr(GPtrArray) printed = NULL;
        g_autofree char *dev1 = NULL, *dev2 = NULL;

        dev1 = loopctl_attach(h, w->image, NULL, &printed);
        if (dev1) {
                verify_attached(h, dev1, w, printed);
                raw_detach(h, dev1);
                verify_detached(h, dev1, w->image);
        }

        dev2 = raw_attach(h, w->image, O_RDWR, NULL);
        if (dev2) {
                verify_attached(h, dev2, w, NULL);
                loopctl_detach(h, dev2);
                verify_detached(h, dev2, w->image);
        }
        g_assert_true(harness_loopd_alive(h));
}

/* ---------------------------------------------------------------------------------------------------- */
/* Layouts */

static void test_gpt_ext4_xfs(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "gpt.img");

        image_create(image, 512 * MiB);
        image_sfdisk(image,
                "label: gpt\nsize=64MiB, type=linux, name=\"loopd-root\"\n"
                "size=320MiB, type=linux, name=\"loopd-data\"\n",
                0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(json_array_get_length(a), ==, 2);
        guint64 s1 = json_object_get_int_member(json_array_get_object_element(a, 0), "start") * 512;
        guint64 n1 = json_object_get_int_member(json_array_get_object_element(a, 0), "size") * 512;
        guint64 s2 = json_object_get_int_member(json_array_get_object_element(a, 1), "start") * 512;
        guint64 n2 = json_object_get_int_member(json_array_get_object_element(a, 1), "size") * 512;
        g_autofree char *u1 = image_mkfs_at(image, s1, n1, "ext4", "root-fs");
        g_autofree char *u2 = image_mkfs_at(image, s2, n2, "xfs", "data-fs");
        const WantFs fs[] = { { 1, "ext4", "root-fs", u1 }, { 2, "xfs", "data-fs", u2 }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        g_assert_cmpstr(u1, !=, "");
        g_assert_cmpstr(u2, !=, "");
        attach_verify_detach(h, &w);
}

static void test_mbr_extended_logical(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "laptop.img");

        /* An old laptop disk: NTFS, then an extended partition holding swap and Linux. */
        image_create(image, 256 * MiB);
        image_sfdisk(image, "label: dos\nsize=96MiB, type=7\ntype=5\nsize=32MiB, type=82\ntype=83\n", 0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        g_assert_cmpuint(json_array_get_length(a), ==, 4);
        char *uuids[3] = { NULL };
        const char *types[] = { "ntfs", "swap", "ext4" }, *labels[] = { "Windows", "swap", "linux" };
        guint fs_index[] = { 0, 2, 3 }; /* partitions 1, 5 and 6 in sfdisk's order */
        for (guint i = 0; i < 3; i++) {
                JsonObject *o = json_array_get_object_element(a, fs_index[i]);
                uuids[i] = image_mkfs_at(image, json_object_get_int_member(o, "start") * 512,
                        json_object_get_int_member(o, "size") * 512, types[i], labels[i]);
        }
        const WantFs fs[] = { { 1, "ntfs", "Windows", uuids[0] }, { 5, "swap", "swap", uuids[1] },
                { 6, "ext4", "linux", uuids[2] }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
        for (guint i = 0; i < 3; i++)
                g_free(uuids[i]);
}

static void test_partitionless_ext4(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "plain.img");

        image_create(image, 64 * MiB);
        g_autofree char *uuid = image_mkfs_at(image, 0, 64 * MiB, "ext4", "plain");
        const WantFs fs[] = { { 0, "ext4", "plain", uuid }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = false, .fs = fs };

        attach_verify_detach(h, &w);
}

static void test_hybrid_iso_efi(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "hybrid.iso");

        image_make_hybrid_iso(image, "LOOPD_LIVE");
        g_autoptr(GHashTable) whole = oracle_blkid(image, 0);
        g_assert_cmpstr(g_hash_table_lookup(whole, "TYPE"), ==, "iso9660");

        /* The EFI partition: whichever the table marks 0xef. */
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonArray *a = json_object_get_array_member(json_node_get_object(table), "partitions");
        guint efi = 0;
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                if (part_type_equal(json_object_get_string_member(o, "type"), "ef"))
                        efi = partition_number(json_object_get_string_member(o, "node"));
        }
        g_assert_cmpuint(efi, >, 0);
        const WantFs fs[] = { { 0, "iso9660", "LOOPD_LIVE", g_hash_table_lookup(whole, "UUID") },
                { efi, "vfat", "EFIBOOT", NULL }, { 0 } };
        const Want w = { .image = image, .sector_size = 512, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
}

/* Writes a table with 4096-byte sectors and filesystems into its partitions; returns the WantFs list. */
static WantFs *make_4k_image(const char *image, guint64 size, const char *script, const char *const *types)
{
        g_autoptr(JsonNode) table = NULL;
        JsonArray *a;
        WantFs *fs;
        guint n;

        image_create(image, size);
        image_sfdisk(image, script, 4096);
        table = oracle_sfdisk_json(image, 4096);
        a = json_object_get_array_member(json_node_get_object(table), "partitions");
        n = a ? json_array_get_length(a) : 0;
        fs = g_new0(WantFs, n + 1);
        for (guint i = 0; i < n && types[i]; i++) {
                JsonObject *o = json_array_get_object_element(a, i);
                fs[i].number = i + 1;
                fs[i].fstype = types[i];
                fs[i].uuid = image_mkfs_at(image, json_object_get_int_member(o, "start") * 4096,
                        json_object_get_int_member(o, "size") * 4096, types[i], NULL);
        }
        return fs;
}

static void wantfs_free(WantFs *fs)
{
        for (WantFs *f = fs; f && f->fstype; f++)
                g_free(f->uuid);
        g_free(fs);
}

static void test_gpt_4k_sectors(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "gpt4k.img");
        const char *types[] = { "ext4", "ext4", NULL };
        WantFs *fs = make_4k_image(image, 256 * MiB,
                "label: gpt\nsize=64MiB, type=linux, name=\"first\"\ntype=linux, name=\"second\"\n", types);
        const Want w = { .image = image, .sector_size = 4096, .has_table = true, .fs = fs };

        /* No sector-size is given: loopd finds the GPT header at 4096. */
        attach_verify_detach(h, &w);
        wantfs_free(fs);
}

static void test_mbr_4k_phone(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "phone.img");
        const char *types[] = { "ext4", "ext4", NULL };
        /* Read with 512-byte sectors this table covers an eighth of the image; with 4096 it ends at its
         * end: the phone image case. */
        WantFs *fs = make_4k_image(image, 256 * MiB, "label: dos\nsize=32MiB, type=83\ntype=83\n", types);
        const Want w = { .image = image, .sector_size = 4096, .has_table = true, .fs = fs };

        attach_verify_detach(h, &w);
        wantfs_free(fs);
}

/* A GPT header at 512 and a copy of it at 4096: the table fits two sector sizes, and loopd must not guess.
 */
static void test_ambiguous_sector_size_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "ambiguous.img");
        g_autofree char *q = g_shell_quote(image);
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        g_free(test_sh("dd if=%s of=%s bs=512 skip=1 seek=8 count=1 conv=notrunc status=none", q, q));
        g_autofree char *sig = test_sh("dd if=%s bs=1 skip=4096 count=8 status=none", q);
        g_assert_cmpstr(sig, ==, "EFI PART");

        g_assert_false(harness_attach_path(h->bus, image, O_RDWR, NULL, &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, "sector-size");
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        /* loopctl passes the refusal on; an explicit sector size settles it. */
        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, NULL, &run, "attach", image, NULL), ==, 1);
        g_assert_nonnull(strstr(run.err, "sector-size"));
        const char *args[] = { "--sector-size", "512", NULL };
        g_autoptr(GPtrArray) printed = NULL;
        g_autofree char *dev = loopctl_attach(h, image, args, &printed);
        if (dev) {
                const Want w = { .image = image, .sector_size = 512, .has_table = true };
                verify_attached(h, dev, &w, printed);
                loopctl_detach(h, dev);
                verify_detached(h, dev, image);
        }
        g_autofree char *dev2 =
                raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'sector-size': <uint32 512>}"));
        if (dev2) {
                const Want w = { .image = image, .sector_size = 512, .has_table = true };
                verify_attached(h, dev2, &w, NULL);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

static void test_no_partition_scan(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "noscan.img");

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);

        const char *args[] = { "--no-partscan", NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev1);
                g_assert_cmpuint(nodes->len, ==, 0);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }
        g_autofree char *dev2 =
                raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'partition-scan': <false>}"));
        if (dev2) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(dev2);
                g_assert_cmpuint(nodes->len, ==, 0);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

/* ---------------------------------------------------------------------------------------------------- */
/* Options */

static bool read_bytes(const char *path, guint64 offset, void *buf, size_t n)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t r;

        if (fd < 0)
                return false;
        r = pread(fd, buf, n, (off_t)offset);
        close(fd);
        return r == (ssize_t)n;
}

static void check_offset_device(
        Harness *h, const char *device, const char *image, guint64 offset, guint64 limit)
{
        g_autofree char *name = basename_of(device);
        g_autofree guint8 *want = g_malloc(MiB), *got = g_malloc(MiB);
        g_autoptr(JsonObject) losetup = oracle_losetup(device);

        g_assert_nonnull(losetup);
        if (losetup) {
                g_assert_cmpint(json_object_get_int_member(losetup, "offset"), ==, offset);
                g_assert_cmpint(json_object_get_int_member(losetup, "sizelimit"), ==, limit);
        }
        g_assert_cmpuint(sys_u64("/sys/class/block/%s/size", name) * 512, ==, limit);
        g_assert_true(read_bytes(image, offset, want, MiB));
        g_assert_true(read_bytes(device, 0, got, MiB));
        g_assert_true(memcmp(want, got, MiB) == 0);
        /* And the last MiB of the device is the partition's last MiB, not what follows it. */
        g_assert_true(read_bytes(image, offset + limit - MiB, want, MiB));
        g_assert_true(read_bytes(device, limit - MiB, got, MiB));
        g_assert_true(memcmp(want, got, MiB) == 0);
}

static void test_offset_size_limit(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "two.img");
        g_autofree guint8 *noise = g_malloc(MiB);
        g_autoptr(GRand) rand = g_rand_new();
        int fd;

        image_create(image, 128 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\nsize=32MiB, type=linux\n", 0);
        g_autoptr(JsonNode) table = oracle_sfdisk_json(image, 0);
        JsonObject *p2 = json_array_get_object_element(
                json_object_get_array_member(json_node_get_object(table), "partitions"), 1);
        guint64 offset = json_object_get_int_member(p2, "start") * 512;
        guint64 limit = json_object_get_int_member(p2, "size") * 512;

        /* Recognisable bytes at both ends of partition 2, different ones just after it. */
        fd = open(image, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        for (guint64 at = 0; at < 3; at++) {
                for (size_t i = 0; i < MiB; i += 4)
                        *(guint32 *)(noise + i) = g_rand_int(rand);
                guint64 where = at == 0 ? offset : at == 1 ? offset + limit - MiB : offset + limit;
                g_assert_cmpint(pwrite(fd, noise, MiB, (off_t)where), ==, (ssize_t)MiB);
        }
        close(fd);

        /* losetup -o / --sizelimit, through loopctl. */
        g_autofree char *s_offset = g_strdup_printf("%" G_GUINT64_FORMAT, offset);
        g_autofree char *s_limit = g_strdup_printf("%" G_GUINT64_FORMAT "MiB", limit / MiB);
        const char *args[] = { "--offset", s_offset, "--size", s_limit, NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                check_offset_device(h, dev1, image, offset, limit);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }

        /* And raw. */
        g_autofree char *dev2 = raw_attach(h, image, O_RDWR,
                g_variant_new_parsed("{'offset': <%t>, 'size-limit': <%t>}", offset, limit));
        if (dev2) {
                check_offset_device(h, dev2, image, offset, limit);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }
}

/* Whether writing (and syncing) 4 KiB at the start of node succeeds. */
static bool write_succeeds(const char *node)
{
        guint8 buf[4096];
        int fd = open(node, O_WRONLY | O_CLOEXEC);
        ssize_t n;
        int r;

        if (fd < 0)
                return false;
        memset(buf, 0x5a, sizeof(buf));
        n = pwrite(fd, buf, sizeof(buf), 0);
        r = fsync(fd);
        close(fd);
        return n == (ssize_t)sizeof(buf) && r == 0;
}

static char *file_checksum(const char *path)
{
        g_autofree char *q = g_shell_quote(path);
        char *out = test_sh("sha256sum %s | cut -d' ' -f1", q);

        return g_strstrip(out);
}

static void check_read_only_device(Harness *h, const char *device, const char *image)
{
        g_autoptr(JsonObject) losetup = oracle_losetup(device);
        g_autofree char *name = basename_of(device);
        g_autofree char *p1 = g_strconcat(device, "p1", NULL);

        g_assert_nonnull(losetup);
        if (losetup)
                g_assert_true(json_object_get_boolean_member(losetup, "ro"));
        g_assert_cmpuint(sys_u64("/sys/block/%s/ro", name), ==, 1);
        if (write_succeeds(device))
                g_test_fail_printf("writing to the read-only %s succeeded", device);
        if (access(p1, F_OK) == 0 && write_succeeds(p1))
                g_test_fail_printf("writing to the read-only %s succeeded", p1);
}

static void test_read_only(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "ro.img");
        g_autofree char *before = NULL, *after = NULL;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        before = file_checksum(image);

        /* loopctl attach --read-only. */
        const char *args[] = { "--read-only", NULL };
        g_autofree char *dev1 = loopctl_attach(h, image, args, NULL);
        if (dev1) {
                check_read_only_device(h, dev1, image);
                loopctl_detach(h, dev1);
                verify_detached(h, dev1, image);
        }

        /* A read-write fd with read-only: true. */
        g_autofree char *dev2 = raw_attach(h, image, O_RDWR, g_variant_new_parsed("{'read-only': <true>}"));
        if (dev2) {
                check_read_only_device(h, dev2, image);
                raw_detach(h, dev2);
                verify_detached(h, dev2, image);
        }

        /* An O_RDONLY fd and no option: read-only comes from the fd's access mode. */
        g_autofree char *dev3 = raw_attach(h, image, O_RDONLY, NULL);
        if (dev3) {
                check_read_only_device(h, dev3, image);
                raw_detach(h, dev3);
                verify_detached(h, dev3, image);
        }

        after = file_checksum(image);
        g_assert_cmpstr(after, ==, before);

        /* The control: the same write to a read-write device of the same image succeeds, so the refusals
         * above were the read-only flag's doing. */
        g_autofree char *dev4 = raw_attach(h, image, O_RDWR, NULL);
        if (dev4) {
                if (!write_succeeds(dev4))
                        g_test_fail_printf("writing to the read-write %s failed", dev4);
                raw_detach(h, dev4);
                verify_detached(h, dev4, image);
        }
}

static void test_rdonly_fd_read_write_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "rofd.img");
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        image_create(image, 16 * MiB);
        /* Not a silent downgrade: asking for a writable device with a read-only fd is an error. */
        g_assert_false(harness_attach_path(
                h->bus, image, O_RDONLY, g_variant_new_parsed("{'read-only': <false>}"), &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, "read-only");
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(left->len, ==, 0);
}

static void test_sparse_1tib(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "huge.img");
        g_autofree char *q = g_shell_quote(image);
        struct stat st;

        image_create(image, TiB);
        image_sfdisk(
                image, "label: gpt\nsize=1GiB, type=linux, name=\"small\"\ntype=linux, name=\"rest\"\n", 0);
        const Want w = { .image = image, .sector_size = 512, .has_table = true };

        attach_verify_detach(h, &w);

        g_assert_cmpint(stat(image, &st), ==, 0);
        g_assert_cmpuint((guint64)st.st_size, ==, TiB);
        g_autofree char *du = test_sh("du --block-size=1 %s | cut -f1", q);
        g_assert_cmpuint(g_ascii_strtoull(du, NULL, 10), <, MiB);
        g_assert_cmpuint((guint64)st.st_blocks * 512, <, MiB);
}

static void test_non_raw_formats_unsupported(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        /* qemu-img format → the name the error message must use. */
        const char *formats[][2] = { { "qcow2", "qcow2" }, { "vmdk", "vmdk" }, { "vdi", "vdi" },
                { "vpc", "vhd" }, { "vhdx", "vhdx" } };

        for (guint i = 0; i < G_N_ELEMENTS(formats); i++) {
                g_autofree char *name = g_strdup_printf("disk.%s", formats[i][0]);
                g_autofree char *image = harness_image_path(h, name);
                g_autofree char *q = g_shell_quote(image);
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_free(test_sh("qemu-img create -q -f %s %s 64M", formats[i][0], q));
                g_assert_false(harness_attach_path(h->bus, image, O_RDWR, NULL, &device, &error));
                if (harness_assert_dbus_error(error, LOOPD_ERROR_UNSUPPORTED_FORMAT, NULL)) {
                        g_autofree char *lower = g_ascii_strdown(error->message, -1);
                        if (!strstr(lower, formats[i][1]))
                                g_test_fail_printf(
                                        "the UnsupportedFormat message does not say the image is %s: %s",
                                        formats[i][1], error->message);
                }
        }

        /* loopctl says so too, in one line, and exits 1. */
        g_autofree char *qcow2 = harness_image_path(h, "disk.qcow2");
        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, NULL, &run, "attach", "--json", qcow2, NULL), ==, 1);
        g_assert_true(g_str_has_prefix(run.err, "loopctl: "));
        g_autofree char *lower = g_ascii_strdown(run.err, -1);
        g_assert_nonnull(strstr(lower, "qcow2"));

        g_autoptr(GPtrArray) left = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(left->len, ==, 0);
}

static void test_detach_by_image(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "byfile.img");

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\ntype=linux\n", 0);
        g_autofree char *device = loopctl_attach(h, image, NULL, NULL);
        if (!device)
                return;
        g_autoptr(GPtrArray) bound = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(bound->len, ==, 1);

        /* By the image's path: loopctl finds the device by its backing file. */
        loopctl_detach(h, image);
        verify_detached(h, device, image);
}

static void test_list_agrees_with_losetup(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *a = harness_image_path(h, "a.img"), *b = harness_image_path(h, "b.img"),
                        *c = harness_image_path(h, "c.img");
        g_autofree char *qc = g_shell_quote(c);
        g_autoptr(GError) error = NULL;

        image_create(a, 32 * MiB);
        image_create(b, 32 * MiB);
        image_create(c, 32 * MiB);
        g_autofree char *dev_a = raw_attach(h, a, O_RDWR, NULL);
        g_autofree char *dev_b = raw_attach(h, b, O_RDONLY,
                g_variant_new_parsed(
                        "{'offset': <%t>, 'size-limit': <%t>}", (guint64)MiB, (guint64)(8 * MiB)));
        /* One set up behind loopd's back: listed, but not managed. */
        g_autofree char *dev_c = test_sh("losetup --find --show %s", qc);
        g_strstrip(dev_c);
        if (!dev_a || !dev_b)
                return;

        g_autoptr(GVariant) devices = harness_list_devices(h->bus, &error);
        harness_assert_no_error(error);
        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, NULL, &run, "list", "--json", NULL), ==, 0);
        g_autoptr(JsonNode) list = harness_run_json(&run);

        const char *devs[] = { dev_a, dev_b, dev_c }, *files[] = { a, b, c };
        for (guint i = 0; i < 3; i++) {
                g_autoptr(JsonObject) losetup = oracle_losetup(devs[i]);
                bool in_dbus = false, in_json = false;
                const char *source = "ListDevices";

                g_assert_nonnull(losetup);
                if (!losetup)
                        continue;
                check_str(
                        "losetup back-file", json_object_get_string_member(losetup, "back-file"), files[i]);
                if (devices) {
                        GVariantIter it;
                        const char *dev, *object, *backing;
                        guint64 offset, limit;
                        guint32 ss, owner;
                        gboolean ro, ac, managed;
                        g_variant_iter_init(&it, devices);
                        while (g_variant_iter_next(&it, "(&s&o&sttubbbu)", &dev, &object, &backing, &offset,
                                &limit, &ss, &ro, &ac, &managed, &owner)) {
                                if (!g_str_equal(dev, devs[i]))
                                        continue;
                                in_dbus = true;
                                if (i < 2)
                                        compare_device_row(source, dev, backing, offset, limit, ss, ro, ac,
                                                managed, owner, losetup);
                                else {
                                        check_str("backing_file", backing, files[i]);
                                        if (managed)
                                                g_test_fail_printf(
                                                        "ListDevices: %s (set up by losetup) is managed",
                                                        dev);
                                }
                        }
                }
                source = "loopctl list --json";
                for (guint j = 0; list && JSON_NODE_HOLDS_ARRAY(list) &&
                        j < json_array_get_length(json_node_get_array(list));
                        j++) {
                        JsonObject *o = json_array_get_object_element(json_node_get_array(list), j);
                        g_autofree char *dev = json_str(o, "device");
                        g_autofree char *backing = NULL;
                        if (!g_str_equal(dev, devs[i]))
                                continue;
                        in_json = true;
                        backing = json_str(o, "backing_file");
                        if (i < 2)
                                compare_device_row(source, dev, backing, json_int(o, "offset"),
                                        json_int(o, "size_limit"), json_int(o, "sector_size"),
                                        json_bool(o, "read_only"), json_bool(o, "autoclear"),
                                        json_bool(o, "managed"), json_int(o, "owner_uid"), losetup);
                        else {
                                check_str("backing_file", backing, files[i]);
                                if (json_bool(o, "managed"))
                                        g_test_fail_printf(
                                                "loopctl list: %s (set up by losetup) is managed", dev);
                        }
                }
                if (!in_dbus)
                        g_test_fail_printf("ListDevices does not list %s", devs[i]);
                if (!in_json)
                        g_test_fail_printf("loopctl list --json does not list %s", devs[i]);
        }

        raw_detach(h, dev_a);
        loopctl_detach(h, dev_b);
        g_free(test_sh("losetup -d %s", dev_c));
        verify_detached(h, dev_a, a);
        verify_detached(h, dev_b, b);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Refusals */

static void test_non_root_not_authorized(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "user.img");
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;
        uid_t uid;
        gid_t gid;

        image_create(image, 32 * MiB);
        g_assert_true(harness_user(HARNESS_USER_A, &uid, &gid));
        g_assert_cmpint(chown(image, uid, gid), ==, 0);

        /* polkit says no to everything (the fake authority's default): an unprivileged caller cannot
         * attach, raw or through loopctl, and cannot detach root's device. */
        GDBusConnection *user = harness_connect_as(h, HARNESS_USER_A);
        if (!user)
                return;
        g_assert_false(harness_attach_path(user, image, O_RDWR, NULL, &device, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);

        g_auto(HarnessRun) run = { 0 };
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "attach", "--json", "--no-ask-password",
                                image, NULL),
                ==, 1);
        g_assert_true(g_str_has_prefix(run.err, "loopctl: "));
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        g_autofree char *root_dev = raw_attach(h, image, O_RDWR, NULL);
        if (!root_dev)
                return;
        g_assert_false(harness_detach(user, root_dev, NULL, &error));
        harness_assert_dbus_error(error, LOOPD_ERROR_NOT_AUTHORIZED, NULL);
        g_clear_error(&error);
        harness_run_clear(&run);
        g_assert_cmpint(
                harness_loopctl(h, HARNESS_USER_A, &run, "detach", "--no-ask-password", root_dev, NULL), ==,
                1);
        g_autoptr(JsonObject) still = oracle_losetup(root_dev);
        g_assert_nonnull(still);
        if (still)
                g_assert_cmpstr(json_object_get_string_member(still, "back-file"), ==, image);

        raw_detach(h, root_dev);
        verify_detached(h, root_dev, image);
}

static void test_invalid_options(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "opts.img");
        /* option dictionary → the key the error must name */
        const struct {
                const char *options;
                const char *error;
                const char *key;
        } cases[] = {
                { "{'no-such-option': <true>}", "org.freedesktop.DBus.Error.InvalidArgs", "no-such-option" },
                { "{'offset': <'4096'>}", "org.freedesktop.DBus.Error.InvalidArgs", "offset" },
                { "{'read-only': <uint32 1>}", "org.freedesktop.DBus.Error.InvalidArgs", "read-only" },
                { "{'sector-size': <uint64 4096>}", "org.freedesktop.DBus.Error.InvalidArgs",
                        "sector-size" },
                { "{'partition-scan': <'yes'>}", "org.freedesktop.DBus.Error.InvalidArgs",
                        "partition-scan" },
                { "{'sector-size': <uint32 1000>}", LOOPD_ERROR_INVALID_ARGUMENT, "sector-size" },
        };

        image_create(image, 16 * MiB);
        for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_test_message("Attach with %s", cases[i].options);
                g_assert_false(harness_attach_path(
                        h->bus, image, O_RDWR, g_variant_new_parsed(cases[i].options), &device, &error));
                harness_assert_dbus_error(error, cases[i].error, cases[i].key);
        }
        g_autoptr(GPtrArray) none = oracle_loops_backed_by(h->image_dir);
        g_assert_cmpuint(none->len, ==, 0);

        /* Detach checks its options before it touches the device. */
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        g_autoptr(GError) error = NULL;
        g_assert_false(harness_detach(h->bus, device, g_variant_new_parsed("{'bogus': <true>}"), &error));
        harness_assert_dbus_error(error, "org.freedesktop.DBus.Error.InvalidArgs", "bogus");
        g_clear_error(&error);
        g_assert_false(harness_detach(h->bus, device, g_variant_new_parsed("{'unmount': <'yes'>}"), &error));
        harness_assert_dbus_error(error, "org.freedesktop.DBus.Error.InvalidArgs", "unmount");
        g_autoptr(JsonObject) still = oracle_losetup(device);
        g_assert_nonnull(still);
        raw_detach(h, device);
        verify_detached(h, device, image);
}

static void test_non_regular_fd_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "fd.img");
        int pipefd[2], sv[2], fd;

        image_create(image, 16 * MiB);
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
        const struct {
                const char *what;
                int fd;
        } cases[] = {
                { "a directory", open(h->image_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) },
                { "an O_PATH fd", open(image, O_PATH | O_CLOEXEC) },
                { "a pipe", pipefd[0] },
                { "a socket", sv[0] },
                { "a character device", open("/dev/null", O_RDWR | O_CLOEXEC) },
        };

        for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *device = NULL;

                g_test_message("Attach with %s", cases[i].what);
                g_assert_cmpint(cases[i].fd, >=, 0);
                g_assert_false(harness_attach_fd(h->bus, cases[i].fd, NULL, &device, NULL, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, NULL);
                close(cases[i].fd);
        }
        close(pipefd[1]);
        close(sv[1]);

        /* A block device is not an image either: attach one of our own devices to itself. */
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        fd = open(device, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        {
                g_autoptr(GError) error = NULL;
                g_autofree char *nested = NULL;
                g_assert_false(harness_attach_fd(h->bus, fd, NULL, &nested, NULL, &error));
                harness_assert_dbus_error(error, LOOPD_ERROR_INVALID_ARGUMENT, NULL);
                if (nested)
                        raw_detach(h, nested);
        }
        close(fd);
        raw_detach(h, device);
        verify_detached(h, device, image);
        g_assert_true(harness_loopd_alive(h));
}

/* Waits (inotify on /dev, bounded) until device has n partition nodes; returns whether it has. */
static bool wait_for_partition_nodes(const char *device, guint n, int timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
        int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        bool ok = false;

        g_assert_cmpint(fd, >=, 0);
        /* Watch first, then look: a node made in between is not missed. */
        g_assert_cmpint(inotify_add_watch(fd, "/dev", IN_CREATE | IN_DELETE), >=, 0);
        for (;;) {
                g_autoptr(GPtrArray) nodes = oracle_partition_nodes(device);
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                char buf[4096];

                if (nodes->len == n) {
                        ok = true;
                        break;
                }
                if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                        break;
                while (read(fd, buf, sizeof(buf)) > 0)
                        ;
        }
        close(fd);
        return ok;
}

/* udev's "watch" rule turns a close-after-write of a whole disk into a partition table re-read (BLKRRPART);
 * on a kernel without partition parsers that drops the partitions loopd added with BLKPG. They must come
 * back (a desktop kernel would re-create them from the table). */
static void test_partitions_survive_udev_watch(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "watch.img");
        g_autoptr(GError) error = NULL;
        int fd;

        image_create(image, 64 * MiB);
        image_sfdisk(image, "label: gpt\nsize=16MiB, type=linux\ntype=linux\n", 0);
        g_autofree char *device = raw_attach(h, image, O_RDWR, NULL);
        if (!device)
                return;
        g_autoptr(GPtrArray) before = oracle_partition_nodes(device);
        g_assert_cmpuint(before->len, ==, 2);

        fd = open(device, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        close(fd);
        /* The test (not loopd) may wait for udev's queue: the re-read has happened after this. */
        g_free(test_sh("udevadm settle --timeout=30"));

        if (!wait_for_partition_nodes(device, 2, HARNESS_TIMEOUT_MS))
                g_test_fail_printf(
                        "the partitions of %s did not come back within %d ms after udev re-read its table",
                        device, HARNESS_TIMEOUT_MS);
        g_autoptr(GVariant) parts = harness_list_partitions(h->bus, device, &error);
        harness_assert_no_error(error);
        if (parts)
                g_assert_cmpuint(g_variant_n_children(parts), ==, 2);
        raw_detach(h, device);
        verify_detached(h, device, image);
}

int main(int argc, char **argv)
{
        static const HarnessOptions deny_all = { .polkit = HARNESS_POLKIT_FAKE };

        harness_init(&argc, &argv);

        harness_add("/loopd/attach/gpt-ext4-xfs", test_gpt_ext4_xfs, NULL);
        harness_add("/loopd/attach/mbr-extended-logical", test_mbr_extended_logical, NULL);
        harness_add("/loopd/attach/partitionless-ext4", test_partitionless_ext4, NULL);
        harness_add("/loopd/attach/hybrid-iso-efi", test_hybrid_iso_efi, NULL);
        harness_add("/loopd/attach/gpt-4k-sectors", test_gpt_4k_sectors, NULL);
        harness_add("/loopd/attach/mbr-4k-phone", test_mbr_4k_phone, NULL);
        harness_add("/loopd/attach/ambiguous-sector-size-refused", test_ambiguous_sector_size_refused, NULL);
        harness_add("/loopd/attach/offset-size-limit", test_offset_size_limit, NULL);
        harness_add("/loopd/attach/no-partition-scan", test_no_partition_scan, NULL);
        harness_add("/loopd/attach/read-only", test_read_only, NULL);
        harness_add("/loopd/attach/rdonly-fd-read-write-refused", test_rdonly_fd_read_write_refused, NULL);
        harness_add("/loopd/attach/sparse-1tib", test_sparse_1tib, NULL);
        harness_add("/loopd/attach/non-raw-formats-unsupported", test_non_raw_formats_unsupported, NULL);
        harness_add("/loopd/attach/detach-by-image", test_detach_by_image, NULL);
        harness_add("/loopd/attach/list-agrees-with-losetup", test_list_agrees_with_losetup, NULL);
        harness_add("/loopd/attach/non-root-not-authorized", test_non_root_not_authorized, &deny_all);
        harness_add("/loopd/attach/invalid-options", test_invalid_options, NULL);
        harness_add("/loopd/attach/non-regular-fd-refused", test_non_regular_fd_refused, NULL);
        if (g_strcmp0(g_getenv("LOOPD_TEST_UDEV"), "1") == 0)
                harness_add("/loopd/attach/partitions-survive-udev-watch",
                        test_partitions_survive_udev_watch, NULL);

        return g_test_run();
}
