/* test-watcher.h: what the watcher suite's files share: small helpers, what loopd says on the bus, and the
 * tests (test-watcher.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "loopd-bus.h"

#define MiB (UINT64_C(1024) * 1024)

/* The promise for a device set up by another tool: an object within a second. */
#define APPEAR_DEADLINE_MS 1000

#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"

/* A test that cannot go on without x: fails and returns (the teardown cleans up). */
#define REQUIRE(x)                                                                \
        do {                                                                      \
                if (!(x)) {                                                       \
                        g_test_fail_printf("%s: %s does not hold", G_STRLOC, #x); \
                        return;                                                   \
                }                                                                 \
        } while (0)

/* One entry of ListDevices, looked up by device. */
typedef struct DeviceEntry {
        bool found;
        char *backing_file;
        guint64 offset, size_limit;
        guint32 sector_size;
        gboolean read_only, autoclear, managed;
        guint32 owner_uid;
} DeviceEntry;

/* Runs the default main context until pred(data) holds or timeout_ms passed; returns pred's last answer. */
typedef bool (*Predicate)(gconstpointer data);

typedef struct Event {
        char *name; /* the signal's member */
        char *a; /* Manager signals: the first argument; the others: the object path */
        char *b; /* Manager signals: the second argument; PropertiesChanged: the property names, ","-joined
                  */
        GVariant *data; /* InterfacesAdded: a{sa{sv}}; PropertiesChanged: the changed a{sv} */
} Event;

typedef struct EventLog {
        GDBusConnection *c;
        guint subscription;
        GPtrArray *events;
        guint mark; /* events before this index are ignored by the queries */
        char *image; /* see event_log_scope() */
} EventLog;

/* A loopd of the test's own (the harness's must end with a clean SIGTERM): its log in the test's directory,
 * and whether it has exited (noted in the default main context: wait_until() runs it). */
typedef struct OwnLoopd {
        GSubprocess *process;
        char *log_path;
        bool exited;
} OwnLoopd;

/* test-watcher.c */
char *object_path_of(const char *device);
char *make_gpt_image(Harness *h, const char *name, const char *label);
char *make_ext4_image(Harness *h, const char *name, const char *label);
char *attach(GDBusConnection *c, const char *image);
bool is_mount_point(const char *target);
bool losetup_has(const char *device);
void partx_all(const char *device, guint n, bool add);
void losetup_detach_and_wait(const char *device);
void device_entry_clear(DeviceEntry *e);
void list_device(GDBusConnection *c, const char *device, DeviceEntry *ret);
bool wait_until(Predicate pred, gconstpointer data, int timeout_ms);
/* Starts one (log <tmpdir>/<name>.log, args after the harness's) and waits until it owns the name; notes its
 * exit once it has one (own_loopd_watch(), for one spawned otherwise). */
bool own_loopd_start(Harness *h, OwnLoopd *l, const char *name, const char *const *args);
bool own_loopd_watch(OwnLoopd *l);
bool own_loopd_has_exited(gconstpointer l);
/* Fails the test unless it exits with 0 within timeout_ms; own_loopd_stop() sends SIGTERM first. */
void own_loopd_check_exits_cleanly(OwnLoopd *l, int timeout_ms);
void own_loopd_stop(OwnLoopd *l);
/* kill -9; returns once the bus has seen it go. */
bool own_loopd_kill(Harness *h, OwnLoopd *l);
/* Kills it if it still runs; fails the test on a sanitizer report in its log, prints the log on failure. */
void own_loopd_clear(OwnLoopd *l);
EventLog *event_log_new(GDBusConnection *c);
void event_log_free(EventLog *log);
void event_log_mark(EventLog *log);
bool event_is_about(const Event *e, const char *device);
void event_log_scope(EventLog *log, const char *image);
GPtrArray *manager_events(EventLog *log, const char *device);
bool wait_event(
        EventLog *log, const char *device, const char *name, const char *arg, guint n, int timeout_ms);
Event *last_event(EventLog *log, const char *device, const char *name);
void assert_event_groups(GPtrArray *got, const char *const *want, const char *who);
guint collapse_restores(
        GPtrArray *got, const char *const *removed, const char *const *added, guint n, guint max);
guint count_substrings(const char *haystack, const char *needle);

/* watcher-events.c */
void test_events_in_order(Harness *h, gconstpointer data);
void test_losetup_device_appears_unmanaged(Harness *h, gconstpointer data);
void test_gdbus_object_manager_client(Harness *h, gconstpointer data);

/* watcher-outside.c */
void test_outside_umount_removes_mount_point(Harness *h, gconstpointer data);
void test_outside_umount_releases_autoclear_device(Harness *h, gconstpointer data);
void test_losetup_detach_of_managed_device(Harness *h, gconstpointer data);
void test_restart_keeps_owners_and_mounts(Harness *h, gconstpointer data);
void test_restart_removes_mount_point_unmounted_while_down(Harness *h, gconstpointer data);
void test_stale_state_records_dropped(Harness *h, gconstpointer data);

/* watcher-lifetime.c */
void test_exit_on_idle_not_while_attached(Harness *h, gconstpointer data);
void test_exit_on_idle_answers_calls_that_came_meanwhile(Harness *h, gconstpointer data);
void test_exit_on_idle_finishes_attach_despite_sigterm(Harness *h, gconstpointer data);
void test_sigterm_answers_calls_waiting_for_polkit(Harness *h, gconstpointer data);
void test_exits_when_the_bus_goes(Harness *h, gconstpointer data);
void test_starts_with_a_device_whose_path_is_too_long(Harness *h, gconstpointer data);
void test_second_loopd_waits_for_the_first(Harness *h, gconstpointer data);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DeviceEntry, device_entry_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OwnLoopd, own_loopd_clear)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(EventLog, event_log_free)
