/* test-introspect.c: the published interface files (dbus/org.loopd1.Manager.xml, dbus/org.loopd1.Device.xml)
 * are what the running loopd exports: org.freedesktop.DBus.Introspectable.Introspect on /org/loopd1 and on a
 * device object gives exactly their interfaces, methods (names, argument names, in and out signatures),
 * properties (name, type, access, change signal) and signals, both ways, so that neither can change
 * without the other. */
#include <fcntl.h>
#include <string.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* ---------------------------------------------------------------------------------------------------- */
/* Parsing and describing introspection data */

/* The XML file dbus/NAME of the source tree, parsed; NULL (and the test failed) when it cannot be read. */
static GDBusNodeInfo *node_from_file(const char *name)
{
        g_autofree char *path = g_build_filename(g_getenv("LOOPD_SOURCE_ROOT"), "dbus", name, NULL);
        g_autofree char *xml = NULL;
        g_autoptr(GError) error = NULL;
        GDBusNodeInfo *node;

        if (!g_file_get_contents(path, &xml, NULL, &error)) {
                g_test_fail_printf("cannot read %s: %s", path, error->message);
                return NULL;
        }
        node = g_dbus_node_info_new_for_xml(xml, &error);
        if (!node)
                g_test_fail_printf("%s does not parse: %s", path, error->message);
        return node;
}

/* What the daemon answers to Introspect on path, parsed; NULL (and the test failed) on an error. */
static GDBusNodeInfo *node_from_daemon(GDBusConnection *c, const char *path)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(c, LOOPD_BUS_NAME, path,
                "org.freedesktop.DBus.Introspectable", "Introspect", NULL, G_VARIANT_TYPE("(s)"),
                G_DBUS_CALL_FLAGS_NONE, HARNESS_TIMEOUT_MS, NULL, &error);
        const char *xml;
        GDBusNodeInfo *node;

        if (!reply) {
                g_test_fail_printf("Introspect on %s: %s", path, error->message);
                return NULL;
        }
        g_variant_get(reply, "(&s)", &xml);
        node = g_dbus_node_info_new_for_xml(xml, &error);
        if (!node)
                g_test_fail_printf(
                        "Introspect on %s gave XML that does not parse: %s", path, error->message);
        return node;
}

/* "(s device, a{sv} options)": the types and names of args, for messages and comparisons. */
static char *args_describe(GDBusArgInfo **args)
{
        GString *s = g_string_new("(");

        for (size_t i = 0; args && args[i]; i++)
                g_string_append_printf(s, "%s%s %s", i ? ", " : "", args[i]->signature, args[i]->name);
        g_string_append_c(s, ')');
        return g_string_free(s, false);
}

/* The value of annotation name among annotations, or NULL. */
static const char *annotation(GDBusAnnotationInfo **annotations, const char *name)
{
        for (size_t i = 0; annotations && annotations[i]; i++)
                if (g_str_equal(annotations[i]->key, name))
                        return annotations[i]->value;
        return NULL;
}

static const char *access_name(GDBusPropertyInfoFlags flags)
{
        bool r = flags & G_DBUS_PROPERTY_INFO_FLAGS_READABLE,
             w = flags & G_DBUS_PROPERTY_INFO_FLAGS_WRITABLE;

        return r && w ? "readwrite" : r ? "read" : w ? "write" : "none";
}

/* The member descriptions of an interface, by name: "method Attach(h image, a{sv} options) -> (s device, o
 * object)", "property Offset t read emits-change=true", "signal Mounted(s node, s mount_point)". */
static GHashTable *members_describe(GDBusInterfaceInfo *iface)
{
        GHashTable *members = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

        for (size_t i = 0; iface->methods && iface->methods[i]; i++) {
                GDBusMethodInfo *m = iface->methods[i];
                g_autofree char *in = args_describe(m->in_args), *out = args_describe(m->out_args);

                g_hash_table_insert(members, g_strconcat("method ", m->name, NULL),
                        g_strdup_printf("method %s%s -> %s", m->name, in, out));
        }
        for (size_t i = 0; iface->properties && iface->properties[i]; i++) {
                GDBusPropertyInfo *p = iface->properties[i];
                /* Absent means "true" (the D-Bus specification's default). */
                const char *emits =
                        annotation(p->annotations, "org.freedesktop.DBus.Property.EmitsChangedSignal");

                g_hash_table_insert(members, g_strconcat("property ", p->name, NULL),
                        g_strdup_printf("property %s %s %s emits-change=%s", p->name, p->signature,
                                access_name(p->flags), emits ?: "true"));
        }
        for (size_t i = 0; iface->signals && iface->signals[i]; i++) {
                GDBusSignalInfo *s = iface->signals[i];
                g_autofree char *args = args_describe(s->args);

                g_hash_table_insert(members, g_strconcat("signal ", s->name, NULL),
                        g_strdup_printf("signal %s%s", s->name, args));
        }
        return members;
}

/* Compares the interface iface_name of the file's node with the daemon's: every member of one must be in
 * the other, described alike. Every difference fails the test and is logged. Returns how many there were. */
static unsigned compare_interface(GDBusNodeInfo *file, GDBusNodeInfo *daemon, const char *iface_name)
{
        GDBusInterfaceInfo *fi = g_dbus_node_info_lookup_interface(file, iface_name);
        GDBusInterfaceInfo *di = g_dbus_node_info_lookup_interface(daemon, iface_name);
        unsigned differences = 0;

        if (!fi || !di) {
                g_test_fail_printf("%s is %s", iface_name,
                        !fi ? "not in the XML file" : "not exported by loopd on this object");
                return 1;
        }
        g_autoptr(GHashTable) fm = members_describe(fi), dm = members_describe(di);
        GHashTableIter it;
        gpointer key, value;

        g_hash_table_iter_init(&it, fm);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                const char *d = g_hash_table_lookup(dm, key);

                if (!d) {
                        g_test_message("%s: in the XML file, not in loopd: %s", iface_name, (char *)value);
                        differences++;
                } else if (!g_str_equal(d, value)) {
                        g_test_message("%s: the XML file says  %s", iface_name, (char *)value);
                        g_test_message("%s: loopd says         %s", iface_name, d);
                        differences++;
                }
        }
        g_hash_table_iter_init(&it, dm);
        while (g_hash_table_iter_next(&it, &key, &value))
                if (!g_hash_table_contains(fm, key)) {
                        g_test_message("%s: in loopd, not in the XML file: %s", iface_name, (char *)value);
                        differences++;
                }
        if (differences > 0)
                g_test_fail_printf(
                        "%s: %u difference(s) between the XML file and loopd's Introspect (see the "
                        "log)",
                        iface_name, differences);
        /* A sanity bound: an empty description on both sides would compare equal. */
        g_assert_cmpuint(g_hash_table_size(fm), >, 0);
        return differences;
}

/* The org.loopd1.* interfaces of node must be exactly expected (one name). */
static void check_loopd_interfaces(GDBusNodeInfo *node, const char *where, const char *expected)
{
        unsigned n = 0;

        for (size_t i = 0; node->interfaces && node->interfaces[i]; i++) {
                const char *name = node->interfaces[i]->name;

                if (!g_str_has_prefix(name, "org.loopd1."))
                        continue;
                n++;
                if (!g_str_equal(name, expected))
                        g_test_fail_printf("%s has interface %s, which has no XML file", where, name);
        }
        g_assert_cmpuint(n, ==, 1);
}

/* Compares dbus/<iface>.xml with the daemon's Introspect on path. */
static void check_object(GDBusConnection *c, const char *path, const char *iface)
{
        g_autofree char *file_name = g_strconcat(iface, ".xml", NULL);
        g_autoptr(GDBusNodeInfo) file = node_from_file(file_name);
        g_autoptr(GDBusNodeInfo) daemon = node_from_daemon(c, path);

        if (!file || !daemon)
                return;
        /* The file describes one interface and nothing else. */
        g_assert_nonnull(file->interfaces);
        g_assert_nonnull(file->interfaces[0]);
        g_assert_null(file->interfaces[1]);
        g_assert_cmpstr(file->interfaces[0]->name, ==, iface);
        check_loopd_interfaces(daemon, path, iface);
        g_assert_cmpuint(compare_interface(file, daemon, iface), ==, 0);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Tests */

static void test_manager_matches_xml(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        check_object(h->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE);

        /* The manager object also is the ObjectManager the device objects hang from. */
        g_autoptr(GDBusNodeInfo) daemon = node_from_daemon(h->bus, LOOPD_MANAGER_PATH);
        g_assert_nonnull(daemon);
        if (daemon)
                g_assert_nonnull(
                        g_dbus_node_info_lookup_interface(daemon, "org.freedesktop.DBus.ObjectManager"));
}

static void test_device_matches_xml(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "introspect.img");
        g_autofree char *device = NULL, *object = NULL;
        g_autoptr(GError) error = NULL;

        image_create(image, 8 * MiB);
        int fd = open(image, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        bool attached = harness_attach_fd(h->bus, fd, NULL, &device, &object, &error);
        close(fd);
        harness_assert_no_error(error);
        if (!attached)
                return;
        g_assert_true(g_str_has_prefix(object, LOOPD_DEVICE_PATH_PREFIX "/"));

        check_object(h->bus, object, LOOPD_DEVICE_INTERFACE);

        g_assert_true(harness_detach(h->bus, device, NULL, &error));
        harness_assert_no_error(error);
}

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);
        harness_add("/loopd/introspect/manager-matches-xml", test_manager_matches_xml, NULL);
        harness_add("/loopd/introspect/device-matches-xml", test_device_matches_xml, NULL);
        return g_test_run();
}
