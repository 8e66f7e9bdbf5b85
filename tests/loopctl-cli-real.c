/* loopctl-cli-real.c: loopctl against the real loopd (in the mount suite): its errors in the command
 * line's words and as JSON, and open --writable saying which filesystem its driver mounted read-only.
 * Oracles: the mount table (findmnt), loopd's own D-Bus error names. */
#include <json-glib/json-glib.h>

#include "test-mount.h"

/* run's stderr as a --json error: the object's "error" and "message"; fails the test otherwise. */
static bool json_error_of(const HarnessRun *run, char **ret_error, char **ret_message)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *o;

        if (!run->err || !g_str_has_suffix(run->err, "}\n") ||
                strchr(run->err, '\n') != run->err + strlen(run->err) - 1 ||
                !json_parser_load_from_data(parser, run->err, -1, NULL) ||
                !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
                g_test_fail_printf("stderr is not one JSON object: '%s'", run->err);
                return false;
        }
        o = json_node_get_object(json_parser_get_root(parser));
        *ret_error = g_strdup(json_object_get_string_member_with_default(o, "error", ""));
        *ret_message = g_strdup(json_object_get_string_member_with_default(o, "message", ""));
        return true;
}

/* A node loopd does not manage: "not a loop device or loop partition: /dev/null", in words and in JSON. */
void test_loopctl_real_not_a_loop_device(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_auto(HarnessRun) run = { 0 }, json = { 0 };
        g_autofree char *error = NULL, *message = NULL;

        harness_allow_all(h);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &run, "mount", "/dev/null", NULL), ==, 1);
        g_assert_cmpstr(run.err, ==,
                "loopctl: cannot mount /dev/null: not a loop device or loop partition: /dev/null; loopd mounts "
                "nothing else\n");

        g_assert_cmpint(
                harness_loopctl(h, HARNESS_USER_A, &json, "--json", "mount", "/dev/null", NULL), ==, 1);
        g_assert_cmpstr(json.out, ==, "");
        if (json_error_of(&json, &error, &message)) {
                g_assert_cmpstr(error, ==, LOOPD_ERROR_NOT_MANAGED);
                g_assert_cmpstr(message, ==,
                        "cannot mount /dev/null: not a loop device or loop partition: /dev/null; loopd mounts "
                        "nothing else");
        }
}

/* open --writable of an image with an ext4 and a vfat partition: each filesystem the mount table shows
 * read-only is said to be, with its driver; detach of the mounted device says --unmount; --quiet close says
 * nothing. */
void test_loopctl_real_writable_says_read_only(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        g_autofree char *image = make_two_partitions(h, "speak.img"), *device = NULL, *error = NULL,
                        *message = NULL;
        g_auto(HarnessRun) open = { 0 }, busy = { 0 }, json = { 0 }, close = { 0 };
        g_autoptr(JsonNode) parts = NULL;
        JsonArray *a;
        guint n_read_only = 0;

        harness_allow_all(h);
        give_image_to(image, HARNESS_USER_A);
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &open, "open", "--writable", image, NULL), ==, 0);
        g_test_message("loopctl open --writable: %s", open.out);
        g_assert_cmpstr(open.err, ==, "");
        g_assert_true(g_str_has_prefix(open.out, "Attached "));
        device = g_strndup(strstr(open.out, " as ") + 4, strcspn(strstr(open.out, " as ") + 4, ".\n"));

        parts = harness_loopctl_json(h, HARNESS_USER_A, "partitions", device, NULL);
        REQUIRE_NONNULL(parts);
        a = json_node_get_array(parts);
        for (guint i = 0; i < json_array_get_length(a); i++) {
                JsonObject *p = json_array_get_object_element(a, i);
                const char *mp = json_object_get_string_member(p, "mount_point");
                g_autoptr(JsonObject) fs = NULL;
                g_autofree char *mounted = NULL, *note = NULL;

                if (!*mp)
                        continue;
                fs = findmnt_at(mp);
                REQUIRE_NONNULL(fs);
                /* The line after "Mounted NODE at MP." */
                mounted =
                        g_strdup_printf("Mounted %s at %s.\n", json_object_get_string_member(p, "node"), mp);
                const char *after = strstr(open.out, mounted);
                REQUIRE_NONNULL(after);
                after += strlen(mounted);
                const char *fstype = json_object_get_string_member(fs, "fstype");
                note = g_strdup_printf("Note: mounted read-only: %s cannot write.\n",
                        g_str_has_prefix(fstype, "fuse.") ? fstype + strlen("fuse.") : fstype);
                if (mount_is_read_only(mp)) {
                        n_read_only++;
                        g_assert_true(g_str_has_prefix(after, note));
                } else
                        g_assert_false(g_str_has_prefix(after, "Note: mounted read-only"));
        }
        g_test_message("%u of the filesystems are read-only", n_read_only);
        /* The ext4 partition is writable (fuse2fs writes): not everything is said to be read-only. */
        g_assert_cmpuint(n_read_only, <, 2);

        /* Mounted: detach refuses, in the command line's words. */
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &busy, "detach", device, NULL), ==, 1);
        g_assert_nonnull(strstr(busy.err, "--unmount"));
        g_assert_null(strstr(busy.err, "the unmount option"));
        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &json, "detach", device, "--json", NULL), ==, 1);
        if (json_error_of(&json, &error, &message)) {
                g_assert_cmpstr(error, ==, LOOPD_ERROR_BUSY);
                g_assert_nonnull(strstr(message, "--unmount"));
        }

        g_assert_cmpint(harness_loopctl(h, HARNESS_USER_A, &close, "--quiet", "close", image, NULL), ==, 0);
        g_assert_cmpstr(close.out, ==, "");
        g_assert_cmpstr(close.err, ==, "");
        check_gone(h, device);
        check_user_dir_empty(h, HARNESS_USER_A);
}
