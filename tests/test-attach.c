/* test-attach.c: Attach, Detach, ListDevices and ListPartitions against the real kernel, through loopctl
 * --json and the raw D-Bus API. Every expected value comes from an independent oracle (sfdisk --json,
 * blkid -p, losetup --json, sysfs, the image's bytes), never from loopd. */
#include "test-attach.h"

/* ---------------------------------------------------------------------------------------------------- */
/* What loopd reports, and what the oracles say it should */

void part_free(gpointer data)
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

GPtrArray *parts_from_variant(GVariant *a)
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

char *json_str(JsonObject *o, const char *member)
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

gint64 json_int(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) {
                g_test_fail_printf("JSON member \"%s\" is missing or not an integer", member);
                return -1;
        }
        return json_node_get_int(n);
}

gboolean json_member_bool(JsonObject *o, const char *member)
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
GPtrArray *parts_from_json(JsonNode *array)
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

Part *parts_find(GPtrArray *parts, guint number)
{
        for (guint i = 0; i < parts->len; i++)
                if (((Part *)parts->pdata[i])->number == number)
                        return parts->pdata[i];
        return NULL;
}

/* sfdisk says "7" or "ef" for MBR types and a GUID for GPT; libblkid-based code may say "0x07". */
bool part_type_equal(const char *a, const char *b)
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

bool is_extended_type(const char *type)
{
        return part_type_equal(type, "5") || part_type_equal(type, "f") || part_type_equal(type, "85");
}

guint64 sys_u64(const char *fmt, ...)
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

char *basename_of(const char *device)
{
        return g_path_get_basename(device);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Attaching with each client */

/* loopctl attach --json [args] IMAGE as root: the device, and the partitions it printed. */
char *loopctl_attach(Harness *h, const char *image, const char *const *args, GPtrArray **ret_parts)
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

char *raw_attach(Harness *h, const char *image, int open_flags, GVariant *options)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *device = NULL;

        if (!harness_attach_path(h->bus, image, open_flags, options, &device, &error)) {
                harness_assert_no_error(error);
                return NULL;
        }
        return g_steal_pointer(&device);
}

void raw_detach(Harness *h, const char *device)
{
        g_autoptr(GError) error = NULL;

        (void)harness_detach(h->bus, device, NULL, &error);
        harness_assert_no_error(error);
}

void loopctl_detach(Harness *h, const char *what)
{
        g_auto(HarnessRun) run = { 0 };

        if (harness_loopctl(h, NULL, &run, "detach", what, NULL) != 0)
                g_test_fail_printf("loopctl detach %s failed (exit %d): %s", what, run.status, run.err);
}

/* The whole round twice: loopctl attach --json + raw Detach, then raw Attach + loopctl detach. */
void attach_verify_detach(Harness *h, const Want *w)
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
        harness_add("/loopd/attach/disk-at-offset", test_disk_at_offset, NULL);
        harness_add("/loopd/attach/no-partition-scan", test_no_partition_scan, NULL);
        harness_add("/loopd/attach/read-only", test_read_only, NULL);
        harness_add("/loopd/attach/rdonly-fd-read-write-refused", test_rdonly_fd_read_write_refused, NULL);
        harness_add("/loopd/attach/sparse-1tib", test_sparse_1tib, NULL);
        harness_add("/loopd/attach/overlay-and-encrypted-refused", test_overlay_and_encrypted_refused, NULL);
        harness_add("/loopd/attach/detach-by-image", test_detach_by_image, NULL);
        harness_add("/loopd/attach/list-agrees-with-losetup", test_list_agrees_with_losetup, NULL);
        harness_add("/loopd/attach/non-root-not-authorized", test_non_root_not_authorized, &deny_all);
        harness_add("/loopd/attach/invalid-options", test_invalid_options, NULL);
        harness_add("/loopd/attach/non-regular-fd-refused", test_non_regular_fd_refused, NULL);
        harness_add("/loopd/attach/udisks-ignores-loopd-devices", test_udisks_ignores_loopd_devices, NULL);
        if (g_strcmp0(g_getenv("LOOPD_TEST_UDEV"), "1") == 0)
                harness_add("/loopd/attach/partitions-survive-udev-watch",
                        test_partitions_survive_udev_watch, NULL);

        return g_test_run();
}
