/* test-polkit.h: what the polkit suite's files share: images and the kernel's view of them, raw calls, the
 * fake authority's call log, ListDevices, and the tests (test-polkit.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

#define DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED \
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"

/* Checks that image is bound to exactly device (NULL: to nothing at all). */
#define assert_bound(image, device) check_bound(__FILE__, __LINE__, (image), (device))

/* loopctl --no-ask-password detach device, as user, exits with status (1 with a "loopctl: " line), and
 * afterwards image is bound to nothing (status 0) or still to device. */
#define assert_loopctl_detach(h, user, image, device, status) \
        check_loopctl_detach(__FILE__, __LINE__, (h), (user), (image), (device), (status))

/* Detach of device over c with flags is refused with error_name (whose message has needle, unless NULL),
 * and image is still bound to device. */
#define assert_detach_refused(c, device, flags, error_name, needle, image) \
        check_detach_refused(__FILE__, __LINE__, (c), (device), (flags), (error_name), (needle), (image))

/* One call of several that run at the same time; order says which completed when (1 = first). */
typedef struct Overlap {
        const char *what;
        GVariant *reply;
        GError *error;
        guint order;
        guint *n_done;
} Overlap;

#define assert_calls(h, caller, flags, ...) \
        check_calls(__FILE__, __LINE__, (h), (caller), (flags), __VA_ARGS__)

#define assert_detail(call, key, want) check_detail(__FILE__, __LINE__, (call), (key), (want))

typedef struct ListedDevice {
        bool found;
        char *backing_file;
        bool managed;
        guint32 owner;
} ListedDevice;

/* test-polkit.c */
char *image_new(Harness *h, const char *name, guint64 size, const char *user);
void check_bound(const char *file, int line, const char *image, const char *device);
void check_loopctl_detach(const char *file, int line, Harness *h, const char *user, const char *image,
        const char *device, int status);
char *mount_point_of(const char *node);
char *tree_snapshot(const char *dir);
void cleanup_device(Harness *h, const char *image, const char *device);
GVariant *call_with_image(GDBusConnection *c, const char *method, const char *path, int open_flags,
        GVariant *options, GDBusCallFlags flags, GError **error);
char *attach_as(GDBusConnection *c, const char *path, int open_flags, GDBusCallFlags flags, GError **error);
bool detach_as(GDBusConnection *c, const char *device, GDBusCallFlags flags, GError **error);
void check_detach_refused(const char *file, int line, GDBusConnection *c, const char *device,
        GDBusCallFlags flags, const char *error_name, const char *needle, const char *image);
void overlap_start(Overlap *o, GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds);
void overlap_start_attach(Overlap *o, GDBusConnection *c, const char *path);
void overlap_clear(Overlap *o);
GVariant *call_checking_nothing_before_answer(Harness *h, GDBusConnection *c, const char *method,
        const char *image, int open_flags, guint n_questions, GError **error);
const char *unique_name(GDBusConnection *c);
void print_calls(GPtrArray *calls);
GPtrArray *check_calls(const char *file, int line, Harness *h, GDBusConnection *caller, guint32 flags, ...);
void check_detail(const char *file, int line, const FakeAuthCall *call, const char *key, const char *want);
const FakeAuthCall *call_at(GPtrArray *calls, guint i);
ListedDevice list_find(GDBusConnection *c, const char *device);
void list_clear(ListedDevice *d);

/* polkit-answers.c */
void test_allowed(Harness *h, gconstpointer data);
void test_denied_changes_nothing(Harness *h, gconstpointer data);
void test_challenge_without_interaction(Harness *h, gconstpointer data);
void test_interactive_flag_reaches_polkit(Harness *h, gconstpointer data);
void test_challenge_after_interaction_is_denied(Harness *h, gconstpointer data);
void test_polkit_absent_denies(Harness *h, gconstpointer data);
void test_slow_authority_does_not_block_others(Harness *h, gconstpointer data);
void test_caller_gone_before_answer(Harness *h, gconstpointer data);
void test_root_allowed_without_asking(Harness *h, gconstpointer data);

/* polkit-others.c */
void test_detach_others_device_needs_manage_others(Harness *h, gconstpointer data);
void test_asks_again_for_a_rebound_device(Harness *h, gconstpointer data);
void test_mount_others_device_needs_manage_others(Harness *h, gconstpointer data);
void test_unmanaged_device_needs_manage_others(Harness *h, gconstpointer data);
void test_reading_is_open_to_all(Harness *h, gconstpointer data);
void test_mount_image_asks_attach_and_mount_up_front(Harness *h, gconstpointer data);
void test_per_user_limit(Harness *h, gconstpointer data);

/* polkit-real.c */
extern const char rules_grant_a[];
extern const char rules_grant_a_and_b_attach[];
void test_real_user_attaches_lists_detaches(Harness *h, gconstpointer data);
void test_real_other_user_denied(Harness *h, gconstpointer data);
void test_real_own_grant_is_not_manage_others(Harness *h, gconstpointer data);
void test_real_unreadable_image_fails_before_bus(Harness *h, gconstpointer data);
