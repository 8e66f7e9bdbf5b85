/* modify-refusals.c: what Format, CreatePartition and DeletePartition refuse, over D-Bus (the error's name
 * and what its message names) and through loopctl (exit 1, one line naming it), each leaving every byte of
 * the image as it was (sha256 of the file before and after). */
#include "test-modify.h"

typedef enum RefusedCall {
        CALL_FORMAT,
        CALL_CREATE,
        CALL_DELETE,
} RefusedCall;

typedef enum RefusalSetup {
        SETUP_PLAIN, /* the user's own read-write device */
        SETUP_MOUNTED, /* ... with partition 1 mounted (read-only, so that the mount writes nothing) */
        SETUP_READ_ONLY, /* the user's own read-only device */
        SETUP_OTHER_USER, /* another user asks, without manage-others */
        SETUP_NOT_ALLOWED, /* the user's own device, and polkit says no to org.loopd1.modify */
} RefusalSetup;

struct Refusal {
        RefusedCall call;
        RefusalSetup setup;
        bool whole_disk; /* Format the disk, not partition 1 */
        const char *type;
        const char *label;
        gsize label_repeat; /* label: this many 'x' */
        guint64 offset, size;
        const char *error;
        /* What the D-Bus message and loopctl's line must name ("a|b": either), NULL: the mount point (Busy)
         * or nothing. */
        const char *needle;
};

#define REFUSAL(id, ...)                                  \
        static const Refusal id##_case = { __VA_ARGS__ }; \
        const HarnessOptions id = { .data = &id##_case }

REFUSAL(refuse_format_mounted, .call = CALL_FORMAT, .setup = SETUP_MOUNTED, .type = "ext2",
        .error = LOOPD_ERROR_BUSY);
REFUSAL(refuse_format_disk_partition_mounted, .call = CALL_FORMAT, .setup = SETUP_MOUNTED,
        .whole_disk = true, .type = "dos", .error = LOOPD_ERROR_BUSY);
REFUSAL(refuse_format_other_user, .call = CALL_FORMAT, .setup = SETUP_OTHER_USER, .type = "ext2",
        .error = LOOPD_ERROR_NOT_AUTHORIZED);
REFUSAL(refuse_create_other_user, .call = CALL_CREATE, .setup = SETUP_OTHER_USER, .type = "linux",
        .offset = 33 * MiB, .size = 8 * MiB, .error = LOOPD_ERROR_NOT_AUTHORIZED);
REFUSAL(refuse_delete_other_user, .call = CALL_DELETE, .setup = SETUP_OTHER_USER,
        .error = LOOPD_ERROR_NOT_AUTHORIZED);
REFUSAL(refuse_format_not_allowed, .call = CALL_FORMAT, .setup = SETUP_NOT_ALLOWED, .type = "ext2",
        .error = LOOPD_ERROR_NOT_AUTHORIZED);
REFUSAL(refuse_format_read_only, .call = CALL_FORMAT, .setup = SETUP_READ_ONLY, .type = "ext2",
        .error = LOOPD_ERROR_READ_ONLY, .needle = "read");
REFUSAL(refuse_create_read_only, .call = CALL_CREATE, .setup = SETUP_READ_ONLY, .type = "linux",
        .offset = 33 * MiB, .size = 8 * MiB, .error = LOOPD_ERROR_READ_ONLY, .needle = "read");
REFUSAL(refuse_label_slash, .call = CALL_FORMAT, .type = "ext4", .label = "boot/efi",
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "label");
REFUSAL(refuse_label_slash_vfat, .call = CALL_FORMAT, .type = "vfat", .label = "A/B",
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "label");
REFUSAL(refuse_label_newline, .call = CALL_FORMAT, .type = "ext4", .label = "two\nlines",
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "label");
REFUSAL(refuse_label_300_bytes, .call = CALL_FORMAT, .type = "ext4", .label_repeat = 300,
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "label");
REFUSAL(refuse_format_type, .call = CALL_FORMAT, .type = "minix", .error = LOOPD_ERROR_INVALID_ARGUMENT,
        .needle = "type");
REFUSAL(refuse_create_type, .call = CALL_CREATE, .type = "no-such-type", .offset = 33 * MiB, .size = 8 * MiB,
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "type");
REFUSAL(refuse_create_past_end, .call = CALL_CREATE, .type = "linux", .offset = 60 * MiB, .size = 16 * MiB,
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "offset|size");
REFUSAL(refuse_create_overlap, .call = CALL_CREATE, .type = "linux", .offset = 16 * MiB, .size = 8 * MiB,
        .error = LOOPD_ERROR_INVALID_ARGUMENT, .needle = "offset|size");
REFUSAL(refuse_delete_mounted, .call = CALL_DELETE, .setup = SETUP_MOUNTED, .error = LOOPD_ERROR_BUSY);

static bool refused_call(
        const Refusal *r, GDBusConnection *c, const char *device, const char *label, GError **error)
{
        g_autofree char *p1 = partition_node(device, 1);

        switch (r->call) {
        case CALL_FORMAT:
                return call_format(c, r->whole_disk ? device : p1, r->type, label, false, error);
        case CALL_CREATE:
                return call_create_partition(c, device, r->offset, r->size, r->type, "", NULL, error);
        case CALL_DELETE:
                return call_delete_partition(c, p1, error);
        }
        g_assert_not_reached();
}

static int refused_loopctl(const Refusal *r, Harness *h, const char *user, const char *device,
        const char *label, HarnessRun *run)
{
        g_autofree char *p1 = partition_node(device, 1);
        g_autofree char *start = g_strdup_printf("%" G_GUINT64_FORMAT, r->offset);
        g_autofree char *size = g_strdup_printf("%" G_GUINT64_FORMAT, r->size);

        switch (r->call) {
        case CALL_FORMAT:
                if (label)
                        return harness_loopctl(h, user, run, "format", r->whole_disk ? device : p1, r->type,
                                "--label", label, NULL);
                return harness_loopctl(h, user, run, "format", r->whole_disk ? device : p1, r->type, NULL);
        case CALL_CREATE:
                return harness_loopctl(h, user, run, "partition", "add", device, "--start", start, "--size",
                        size, "--type", r->type, NULL);
        case CALL_DELETE:
                return harness_loopctl(h, user, run, "partition", "delete", p1, NULL);
        }
        g_assert_not_reached();
}

static GVariant *read_only_mount(void)
{
        GVariantBuilder b;

        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(TRUE));
        return g_variant_builder_end(&b);
}

void test_refused(Harness *h, gconstpointer data)
{
        HARNESS_REQUIRE(h);
        const Refusal *r = ((const HarnessOptions *)data)->data;
        g_autofree char *image = make_base_image(h, "base.img", HARNESS_USER_A);
        g_autofree char *label = r->label_repeat ? g_strnfill(r->label_repeat, 'x') : g_strdup(r->label);
        g_autofree char *device = NULL, *p1 = NULL, *p2 = NULL, *mount_point = NULL;
        g_autofree char *before = NULL, *after = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(HarnessRun) run = { 0 };
        GDBusConnection *owner = harness_connect_as(h, HARNESS_USER_A), *caller = owner;
        const char *user = HARNESS_USER_A;
        const char *needle;
        bool done;

        REQUIRE_NONNULL(owner);
        if (!harness_attach_path(
                    owner, image, r->setup == SETUP_READ_ONLY ? O_RDONLY : O_RDWR, NULL, &device, &error)) {
                harness_fail("Attach %s: %s", image, error->message);
                return;
        }
        p1 = partition_node(device, 1);
        p2 = partition_node(device, 2);
        if (r->setup == SETUP_MOUNTED) {
                mount_point = harness_mount(owner, p1, read_only_mount(), &error);
                if (!mount_point) {
                        harness_fail("Mount %s: %s", p1, error->message);
                        goto out;
                }
        }
        if (r->setup == SETUP_OTHER_USER) {
                caller = harness_connect_as(h, HARNESS_USER_B);
                user = HARNESS_USER_B;
                fake_authority_set(h->authority, LOOPD_ACTION_MANAGE_OTHERS, FAKE_AUTH_DENY, 0);
                if (!caller) {
                        harness_fail("cannot connect as %s", HARNESS_USER_B);
                        goto out;
                }
        }
        if (r->setup == SETUP_NOT_ALLOWED)
                fake_authority_set(h->authority, LOOPD_ACTION_MODIFY, FAKE_AUTH_DENY, 0);
        needle = r->needle ? r->needle : mount_point;

        g_free(test_sh("sync"));
        before = test_sha256_of_file(image);

        done = refused_call(r, caller, device, label, &error);
        if (done)
                harness_fail("the call was done, expected %s", r->error);
        else {
                g_test_message("D-Bus: %s", error->message);
                harness_assert_dbus_error(error, r->error, NULL);
                if (needle && !harness_names_one_of(error->message, needle))
                        harness_fail("the D-Bus error does not name %s: %s", needle, error->message);
        }
        g_clear_error(&error);

        refused_loopctl(r, h, user, device, label, &run);
        harness_check_loopctl_refused("loopctl", &run, needle);

        if (r->setup == SETUP_OTHER_USER && !polkit_asked(h, LOOPD_ACTION_MANAGE_OTHERS))
                harness_fail("loopd did not ask polkit for %s", LOOPD_ACTION_MANAGE_OTHERS);
        if (r->setup == SETUP_NOT_ALLOWED && !polkit_asked(h, LOOPD_ACTION_MODIFY))
                harness_fail("loopd did not ask polkit for %s", LOOPD_ACTION_MODIFY);
        if (r->call == CALL_CREATE && g_file_test(p2, G_FILE_TEST_EXISTS))
                harness_fail("%s exists after CreatePartition was refused", p2);
        if (r->call == CALL_DELETE && !g_file_test(p1, G_FILE_TEST_EXISTS))
                harness_fail("%s is gone after DeletePartition was refused", p1);

out:
        if (mount_point && !harness_unmount(owner, mount_point, &error)) {
                harness_fail("Unmount %s: %s", mount_point, error->message);
                g_clear_error(&error);
        }
        if (!harness_detach(owner, device, NULL, &error))
                harness_fail("Detach %s: %s", device, error->message);
        after = test_sha256_of_file(image);
        if (before && g_strcmp0(before, after) != 0)
                harness_fail("the image's bytes changed: sha256 %s before, %s after", before, after);
}
