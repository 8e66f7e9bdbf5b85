/* harness.h: the integration test harness: a private system-like D-Bus, a fake (or the real, or no) polkit
 * authority, loopd from the build tree, systemd-udevd on request, and the clients (loopctl, raw GDBus).
 * harness.c holds the fixture, harness-services.c the processes, harness-loopd.c loopd,
 * harness-authority.c the fake authority, harness-clients.c the clients, harness-load.c the clients that
 * load loopd from threads of their own, and harness-scratch.c the scratch fixture of the suites that need no
 * services. */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>

#include "images.h"

/* The scratch fixture of the kernel-level suites (engine, loop, mount-kernel), which need no services:
 * the privilege gate and a directory of the test's own under $TMPDIR. Embed a Scratch in the suite's fixture
 * (or use it as the fixture); a body starts with SCRATCH_REQUIRE(). */
typedef struct Scratch {
        bool ready; /* setup succeeded */
        char *dir; /* test_tmpdir_new(), mode 0755: images, state, media dirs all go here */
        GPtrArray *left; /* what scratch_clean() found left (descriptions) */
} Scratch;

/* test_require_privileges() (skips, or fails under CI=true) and the directory; returns s->ready. */
bool scratch_setup(Scratch *s);
/* Notes the loop devices backed by files under s->dir and the mounts at or below it, then takes them down.
 * For a suite that must do so before it frees what would hide a leak (an autoclear device goes when its
 * last opener closes); scratch_teardown() calls it otherwise. Once per test. */
void scratch_clean(Scratch *s);
/* scratch_clean(), removes the directory, and fails the test if anything had been left. Nothing when setup
 * did not succeed. */
void scratch_teardown(Scratch *s);

#define SCRATCH_REQUIRE(s)       \
        do {                     \
                if (!(s)->ready) \
                        return;  \
        } while (0)

/* Unprivileged system users the harness creates when missing (useradd --system). */
#define HARNESS_USER_A "loopd-test-a"
#define HARNESS_USER_B "loopd-test-b"

/* How long the harness waits for a process to get ready, to exit, or for a client to answer. Generous:
 * everything runs under ASan. */
#define HARNESS_TIMEOUT_MS 30000

typedef enum HarnessPolkit {
        HARNESS_POLKIT_FAKE = 0, /* a FakeAuthority owns org.freedesktop.PolicyKit1 (h->authority) */
        HARNESS_POLKIT_NONE, /* nobody owns it: loopd must deny */
        HARNESS_POLKIT_REAL, /* /usr/lib/polkit-1/polkitd with the project's policy and polkit_rules */
} HarnessPolkit;

/* Per-test configuration, passed as the test data of harness_add(); NULL means all defaults. */
typedef struct HarnessOptions {
        HarnessPolkit polkit;
        /* HARNESS_POLKIT_REAL: JavaScript polkitd loads as its only rules file. polkitd runs in a mount
         * namespace of its own where /usr/share/polkit-1/actions holds just polkit/org.loopd1.policy from
         * the source tree and /etc/polkit-1/rules.d just this: nothing on the machine is changed. */
        const char *polkit_rules;
        /* Start the bus (and the authority) but not loopd; the test calls harness_start_loopd(). */
        bool no_loopd;
        /* Extra loopd arguments, NULL-terminated, after --state-dir/--media-dir. */
        const char *const *loopd_args;
        /* The test's own data. */
        gconstpointer data;
} HarnessOptions;

/* The fake polkit authority: answers CheckAuthorization per action as programmed, in its own thread. */
typedef struct FakeAuthority FakeAuthority;

typedef enum FakeAuthResult {
        FAKE_AUTH_DENY = 0, /* (is_authorized=false, is_challenge=false); the default for every action */
        FAKE_AUTH_ALLOW, /* (true, false) */
        FAKE_AUTH_CHALLENGE, /* (false, true): "a password is needed", whatever the flags say */
        /* auth_admin with an agent that types the right password: allowed when the call has the
         * AllowUserInteraction flag (1), a challenge otherwise. */
        FAKE_AUTH_INTERACTIVE,
} FakeAuthResult;

/* One CheckAuthorization the fake authority received. */
typedef struct FakeAuthCall {
        char *action_id;
        char *subject_kind; /* "system-bus-name", "unix-process", ... */
        char *subject_bus_name; /* the subject's "name" when kind is system-bus-name, else NULL */
        GHashTable *details; /* a{ss} as received */
        guint32 flags; /* 1 = AllowUserInteraction */
        char *cancellation_id;
        char *sender; /* who asked (loopd's unique name) */
} FakeAuthCall;

/* Programs the answer for action_id (NULL: for every action without its own rule), given after delay_ms.
 * While an answer is delayed the authority keeps serving other checks. */
void fake_authority_set(FakeAuthority *a, const char *action_id, FakeAuthResult result, guint delay_ms);
/* A copy of the calls received so far, oldest first (elements are FakeAuthCall; the array frees them). */
GPtrArray *fake_authority_calls(FakeAuthority *a);
guint fake_authority_n_calls(FakeAuthority *a);
void fake_authority_clear_calls(FakeAuthority *a);
/* Blocks until at least n calls were received in total, or timeout_ms passed; returns whether they were. */
bool fake_authority_wait_calls(FakeAuthority *a, guint n, guint timeout_ms);
/* Cancellation ids received with CancelCheckAuthorization (a copy; strings). */
GPtrArray *fake_authority_cancellations(FakeAuthority *a);

typedef struct HarnessPrivate HarnessPrivate;

/* The fixture. Everything is torn down by harness_teardown(), whatever the test did. */
typedef struct Harness {
        const HarnessOptions *options; /* never NULL */
        bool ready; /* setup succeeded; a test body starts with HARNESS_REQUIRE(h) */
        char *tmpdir; /* the test's directory (test_tmpdir_new), mode 0755 */
        char *image_dir; /* <tmpdir>/images, mode 0755: make images here */
        char *state_dir; /* loopd --state-dir */
        char *media_dir; /* loopd --media-dir */
        char *bus_address; /* the private bus, "unix:path=..." */
        GDBusConnection *bus; /* root's connection to it */
        FakeAuthority *authority; /* HARNESS_POLKIT_FAKE only */
        bool udev; /* systemd-udevd runs (LOOPD_TEST_UDEV=1) */
        HarnessPrivate *priv;
} Harness;

/* g_test_init() plus what every harness-based suite needs: non-fatal g_assert_*() (so a failed check
 * still reaches the teardown that cleans the kernel up), the test users, GLib's helper threads. */
void harness_init(int *argc, char ***argv);

void harness_setup(Harness *h, gconstpointer options);
void harness_teardown(Harness *h, gconstpointer options);

/* Adds a test with the Harness fixture; opts is a const HarnessOptions * or NULL. */
#define harness_add(path, func, opts)                                                                  \
        g_test_add((path), Harness, (opts), harness_setup, (void (*)(Harness *, gconstpointer))(func), \
                harness_teardown)

/* h's image directory / name (free with g_free()). */
char *harness_image_path(Harness *h, const char *name);
/* Lets every polkit check through the fake authority: for tests about something else than authorization. */
void harness_allow_all(Harness *h);

/* A test body's first line: returns when setup did not succeed (skipped, or already failed). */
#define HARNESS_REQUIRE(h)       \
        do {                     \
                if (!(h)->ready) \
                        return;  \
        } while (0)

/* Starts loopd (waits until it owns org.loopd1) / stops it (SIGTERM, bounded wait, SIGKILL) and checks it
 * exited 0 with no sanitizer report. Both fail the test and return false on any problem. */
bool harness_start_loopd(Harness *h);
bool harness_stop_loopd(Harness *h);
/* Whether loopd is (still) running; fails the test with its log when it died. */
bool harness_loopd_alive(Harness *h);
/* tests/fuse-hang (LOOPD_FUSE_HANG, else under LOOPD_BUILD_ROOT) serving <tmpdir>/hung/disk.img, 64 MiB,
 * whose reads are never answered: a process that reads it waits until the server is killed. With source
 * set (by the caller, before harness_hang_start()), disk.img is a copy of that file whose reads are
 * answered, except those touching the bytes from hang_from to hang_to (the end excluded). freeze_getattr:
 * harness_hang_freeze() stops only the answers to GETATTR (a stat() of the file, once the kernel's cached
 * attributes expired after a second), not reads and writes; freeze_statfs: only those to STATFS. */
typedef struct HarnessHang {
        const char *source;
        guint64 hang_from, hang_to;
        bool freeze_getattr, freeze_statfs;
        char *mountpoint;
        char *file;
        GSubprocess *server;
} HarnessHang;

/* Starts the server and waits until the file shows; fails the test and returns false on any problem. */
bool harness_hang_start(Harness *h, HarnessHang *hang);
/* The same with the mount point in dir (<dir>/hung) rather than the harness's directory. */
bool harness_hang_start_in(const char *dir, HarnessHang *hang);
/* With a source: from now on no read or write of the file is answered, or with freeze_getattr no GETATTR,
 * with freeze_statfs no STATFS (SIGUSR1 to the server). */
void harness_hang_freeze(HarnessHang *hang);
/* Kills the server (by its pid; the only way to free whoever reads the file): from then on reads fail. */
void harness_hang_kill(HarnessHang *hang);
/* Kills the server if it still runs, detaches what is bound to the file, unmounts it. */
void harness_hang_clear(HarnessHang *hang);

/* The private bus's dbus-daemon's pid (0 when it is not running): to stop it for a moment. */
GPid harness_bus_pid(Harness *h);
/* loopd's pid (0 when it is not running): for /proc/PID/fd and the like. */
GPid harness_loopd_pid(Harness *h);
/* Waits until the log at path has needle, at most timeout_ms; returns whether it did. Does not fail the
 * test. */
bool harness_wait_for_log(const char *path, const char *needle, guint timeout_ms);
/* loopd's stderr so far, and the file it goes to ("" before setup). */
char *harness_loopd_log(Harness *h);
const char *harness_loopd_log_path(Harness *h);
/* A second loopd of the test's own, for tests that kill it (the harness's must exit cleanly): same bus,
 * state and media directories, then args (NULL-terminated; NULL: none), stdout and stderr appended to
 * log_path, killed when the test process dies. Returns it once it owns org.loopd1; NULL (and the test
 * failed) when it did not. Only one loopd can own the name: such tests set HarnessOptions.no_loopd.
 * harness_spawn_own_loopd() returns it at once, without waiting for the name. */
GSubprocess *harness_start_own_loopd(Harness *h, const char *log_path, const char *const *args);
GSubprocess *harness_spawn_own_loopd(Harness *h, const char *log_path, const char *const *args);
/* Whether a process's log (text) has an AddressSanitizer or UndefinedBehaviorSanitizer report. */
bool harness_text_has_sanitizer_report(const char *text);
/* Waits until name has an owner on c (owned) or has none (!owned), at most timeout_ms; returns whether it
 * did. Does not fail the test. */
bool harness_wait_for_name(GDBusConnection *c, const char *name, bool owned, guint timeout_ms);

/* The test users. harness_user() creates the user when missing and returns its ids. */
bool harness_user(const char *name, uid_t *ret_uid, gid_t *ret_gid);
/* The uid / gid of a test user (asserts that it exists). */
uid_t harness_uid_of(const char *user);
gid_t harness_gid_of(const char *user);

/* A new connection to the private bus, authenticated as user (NULL: root). Owned by the harness (closed in
 * teardown); do not unref. */
GDBusConnection *harness_connect_as(Harness *h, const char *user);

/* The result of running a program. */
typedef struct HarnessRun {
        int status; /* exit code; 128+N when killed by signal N; -1 when it could not run or timed out */
        char *out;
        char *err;
} HarnessRun;

void harness_run_clear(HarnessRun *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(HarnessRun, harness_run_clear)

/* ret must be initialized (HarnessRun r = { 0 }); a used one may be passed again, its old output is freed.
 * Runs loopctl (LOOPCTL_BINARY) on the private bus as user (NULL: root; else via setpriv --reuid --regid
 * --clear-groups), stdin /dev/null, bounded by HARNESS_TIMEOUT_MS. Returns ret->status. A sanitizer report
 * on its stderr fails the test. */
int harness_loopctl(Harness *h, const char *user, HarnessRun *ret, ...) G_GNUC_NULL_TERMINATED;
int harness_loopctlv(Harness *h, const char *user, HarnessRun *ret, const char *const *args);
/* Fails the test with a message that also stays in the log (g_test_fail_printf() keeps only the last). */
void harness_fail(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* loopctl as user (args NULL-terminated), which must exit 0 (the test fails otherwise); returns whether it
 * did. */
bool harness_loopctl_ok(Harness *h, const char *user, ...) G_GNUC_NULL_TERMINATED;
/* loopctl --json as user (args NULL-terminated; "--json" is added), which must exit 0 and print JSON: that,
 * parsed (NULL and the test failed otherwise). */
JsonNode *harness_loopctl_json(Harness *h, const char *user, ...) G_GNUC_NULL_TERMINATED;
/* `loopctl list` as user must show device with the kernel's size of it in SIZE (as loopctl writes sizes:
 * 64M, 1.5G), and that must be expected if not NULL; the test fails otherwise. */
void harness_check_list_size(Harness *h, const char *user, const char *device, const char *expected);
/* Whether text names one of the '|'-separated needles (case-insensitive). */
bool harness_names_one_of(const char *text, const char *needles);
/* loopctl failed as the contract says: exit 1, one line "loopctl: ..." on stderr naming needles (as
 * harness_names_one_of(); NULL: anything). what names the call in the failure message. */
void harness_check_loopctl_refused(const char *what, const HarnessRun *run, const char *needles);
/* Runs any program the same way (argv[0] a path or a name in PATH), with DBUS_SYSTEM_BUS_ADDRESS set. */
int harness_spawn_as(Harness *h, const char *user, HarnessRun *ret, const char *const *argv);
/* Parses run->out as JSON; fails the test (and returns NULL) when it does not parse. */
JsonNode *harness_run_json(const HarnessRun *run);
/* loopctl --json's error: run->err is one line, a JSON object {"error": NAME, "message": TEXT}. Returns NAME
 * (and TEXT in *ret_message if not NULL), or NULL after failing the test when it is not that. */
char *harness_run_json_error(const HarnessRun *run, char **ret_message);

/* Raw D-Bus: calls org.loopd1.Manager.<method> on /org/loopd1 (fds may be NULL). flags may carry
 * G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION. Returns the reply or NULL with error set. */
GVariant *harness_call(GDBusConnection *c, const char *method, GVariant *params, GUnixFDList *fds,
        GDBusCallFlags flags, GError **error);
/* Attach(h, a{sv}) with fd (not consumed) and options (a{sv}, floating or not; NULL: empty). */
bool harness_attach_fd(
        GDBusConnection *c, int fd, GVariant *options, char **ret_device, char **ret_object, GError **error);
/* Opens path with open_flags (O_RDONLY / O_RDWR, O_CLOEXEC added) as the test process and attaches it. */
bool harness_attach_path(GDBusConnection *c, const char *path, int open_flags, GVariant *options,
        char **ret_device, GError **error);
bool harness_detach(GDBusConnection *c, const char *device, GVariant *options, GError **error);
/* Mount(node, options) (NULL options: none): the mount point, or NULL with error set. */
char *harness_mount(GDBusConnection *c, const char *node, GVariant *options, GError **error);
bool harness_unmount(GDBusConnection *c, const char *target, GError **error);
/* An empty a{sv} (floating). */
GVariant *harness_empty_options(void);
/* ListDevices()'s a(sosttubbbu) / ListPartitions(device)'s a(suttssssss), or NULL with error set. */
GVariant *harness_list_devices(GDBusConnection *c, GError **error);
GVariant *harness_list_partitions(GDBusConnection *c, const char *device, GError **error);

/* Checks that error is the D-Bus error named name and, when needle is not NULL, that its message contains
 * needle. Fails the test (non-fatally) otherwise; returns whether it matched. */
#define harness_assert_dbus_error(error, name, needle) \
        harness_check_dbus_error(__FILE__, __LINE__, (error), (name), (needle))
bool harness_check_dbus_error(
        const char *file, int line, const GError *error, const char *name, const char *needle);
/* Checks that no error was set; prints it otherwise. */
#define harness_assert_no_error(error) harness_check_no_error(__FILE__, __LINE__, (error))

/* A test that cannot go on without x: fails (as harness_fail(), so the message stays in the log) and returns
 * (the teardown cleans up). */
#define REQUIRE_NONNULL(x)                                            \
        do {                                                          \
                if (!(x)) {                                           \
                        harness_fail("%s: %s is NULL", G_STRLOC, #x); \
                        return;                                       \
                }                                                     \
        } while (0)
bool harness_check_no_error(const char *file, int line, const GError *error);

/* A root connection that became a monitor of the private bus (BecomeMonitor) and records the method calls
 * it sees: those that match rules (match rules, NULL-terminated; NULL: every message). */
typedef struct HarnessBusMonitor HarnessBusMonitor;
HarnessBusMonitor *harness_bus_monitor_new(Harness *h, const char *const *rules);
void harness_bus_monitor_free(HarnessBusMonitor *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HarnessBusMonitor, harness_bus_monitor_free)
/* How many calls of call ("interface.member") m saw, counting every call a client made that already has
 * its answer: root pings loopd, and the bus routes that ping (and copies it to the monitor) after all of
 * those; when the monitor has read the ping, it has read them. */
guint harness_bus_monitor_count(Harness *h, HarnessBusMonitor *m, const char *call);
/* Waits up to timeout_ms until m saw a call of call whose first argument, a string, contains needle;
 * returns whether it did. */
bool harness_bus_monitor_wait(HarnessBusMonitor *m, const char *call, const char *needle, guint timeout_ms);

/* dbus-daemon's own refusal (pending replies per connection, a full queue to the destination): the call
 * never reached loopd. */
#define HARNESS_DBUS_ERROR_LIMITS_EXCEEDED "org.freedesktop.DBus.Error.LimitsExceeded"

/* ListDevices over and over on connection, every interval_ms, in a thread of its own, while a test loads
 * loopd: loopd must keep answering everyone. Set connection and interval_ms, the rest zero. dbus-daemon's
 * own refusals are counted apart (bus_refusals): no daemon can answer what the bus does not deliver. */
typedef struct HarnessReader {
        GDBusConnection *connection;
        guint interval_ms;
        GThread *thread;
        gint stop;
        guint calls, failures, bus_refusals;
        gint64 max_us; /* the slowest call that reached loopd */
} HarnessReader;

void harness_reader_start(HarnessReader *r);
/* Stops the thread and waits for it (nothing when it was never started); then read the counts. */
void harness_reader_stop(HarnessReader *r);

/* Attach (read-write) and Detach of image on connection, cycles times: run harness_cycler_thread() in a
 * thread of its own and read the results after joining it. Set connection, image, cycles, problems (a
 * GPtrArray of strings) and, if needed, the hooks and data; the rest zero. */
typedef struct HarnessCycler HarnessCycler;
struct HarnessCycler {
        GDBusConnection *connection;
        char *image; /* not freed by the cycler */
        guint cycles;
        /* Attach of cycle i failed with error; NULL: that is a problem. */
        void (*attach_failed)(HarnessCycler *c, guint i, const GError *error);
        /* Attach of cycle i returned device after attach_us; called before the Detach. May be NULL. */
        void (*attached)(HarnessCycler *c, guint i, const char *device, gint64 attach_us);
        gpointer data;
        gint started; /* cycles begun (atomic) */
        guint done; /* cycles whose Attach and Detach both worked */
        GPtrArray *problems; /* strings; the thread's only until it was joined */
};

gpointer harness_cycler_thread(gpointer cycler);
/* Records a problem (from the cycler's thread, or its hooks). */
void harness_cycler_problem(HarnessCycler *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
