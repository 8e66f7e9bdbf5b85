/* attach-udisks.c: loopd's devices are marked for its udev rule (udev/90-loopd.rules), which tells udisks2
 * to ignore them and their partitions; a device losetup bound is not marked. With udevd running
 * (attach-udev), the rule itself is installed for the test's state dir and udev's database is the oracle. */
#include <glib/gstdio.h>

#include "images.h"
#include "test-attach.h"

/* udev/90-loopd.rules with this loopd's state dir for /run/loopd, in /run/udev/rules.d for the test. */
static char *install_rule(Harness *h)
{
        g_autofree char *source =
                g_build_filename(g_getenv("LOOPD_SOURCE_ROOT"), "udev", "90-loopd.rules", NULL);
        g_autofree char *text = NULL, *marks = g_strdup_printf("%s/udev/", h->state_dir);
        g_autoptr(GError) error = NULL;
        char *path = g_strdup_printf("/run/udev/rules.d/90-loopd-test-%d.rules", (int)getpid());

        g_assert_true(g_file_get_contents(source, &text, NULL, &error));
        g_assert_nonnull(strstr(text, "/run/loopd/udev/"));
        g_auto(GStrv) pieces = g_strsplit(text, "/run/loopd/udev/", -1);
        g_autofree char *rule = g_strjoinv(marks, pieces);
        g_assert_cmpint(g_mkdir_with_parents("/run/udev/rules.d", 0755), ==, 0);
        g_assert_true(g_file_set_contents(path, rule, -1, &error));
        g_free(test_sh("udevadm control --reload"));
        return path;
}

static void remove_rule(char *path)
{
        if (!path)
                return;
        g_unlink(path);
        g_free(test_sh("udevadm control --reload"));
        g_free(path);
}

/* udev's value of key for node ("" when it has none). */
static char *udev_property(const char *node, const char *key)
{
        g_autofree char *q = g_shell_quote(node);
        g_autofree char *out = test_sh("udevadm info --query=property %s", q);
        g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
        g_autofree char *prefix = g_strconcat(key, "=", NULL);

        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, prefix))
                        return g_strdup(*l + strlen(prefix));
        return g_strdup("");
}

static bool marked(Harness *h, const char *device)
{
        g_autofree char *mark = g_strdup_printf("%s/udev/%s", h->state_dir, device + strlen("/dev/"));

        return g_file_test(mark, G_FILE_TEST_EXISTS);
}

static void check_marks(Harness *h, const char *image)
{
        g_autofree char *qimage = g_shell_quote(image), *foreign = NULL, *p1 = NULL, *foreign_p1 = NULL;
        g_autoptr(GPtrArray) parts = NULL;
        g_autofree char *device = loopctl_attach(h, image, NULL, &parts);

        if (!device)
                return;
        p1 = g_strconcat(device, "p1", NULL);
        g_assert_true(marked(h, device));
        if (h->udev) {
                /* Attach returned after udev processed the device and its partitions. */
                g_autofree char *ignore = udev_property(device, "UDISKS_IGNORE"),
                                *ignore_p1 = udev_property(p1, "UDISKS_IGNORE");
                g_assert_cmpstr(ignore, ==, "1");
                g_assert_cmpstr(ignore_p1, ==, "1");
        }

        foreign = test_sh("losetup --find --show --partscan --read-only %s", qimage);
        g_strstrip(foreign);
        foreign_p1 = g_strconcat(foreign, "p1", NULL);
        g_assert_false(marked(h, foreign));
        if (h->udev) {
                g_free(test_sh("udevadm settle -t 30"));
                g_autofree char *ignore = udev_property(foreign, "UDISKS_IGNORE");
                g_assert_cmpstr(ignore, ==, "");
        }
        g_free(test_sh("losetup --detach %s", foreign));

        loopctl_detach(h, device);
        g_assert_false(marked(h, device));
}

void test_udisks_ignores_loopd_devices(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = harness_image_path(h, "udisks.img");
        char *rule = NULL;

        image_create(image, 16 * MiB);
        image_sfdisk(image, "label: gpt\nsize=4MiB\nsize=4MiB\n", 0);
        if (h->udev)
                rule = install_rule(h);
        check_marks(h, image);
        remove_rule(rule);
}
