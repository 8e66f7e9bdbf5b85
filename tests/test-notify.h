/* test-notify.h: what the notify suite's files share: the fixture (the harness plus a private session bus
 * with a fake notification server and file manager), running loopctl as the desktop entry does, and the
 * checks of what reached the session bus. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define MiB (UINT64_C(1024) * 1024)

/* How long a check that something did not happen waits for it anyway. */
#define QUIET_MS 300

/* notify-session.c: the fake desktop, in a thread of its own, recording every call it gets. */
typedef struct FakeDesktop FakeDesktop;
/* Whether GetCapabilities lists "body-markup" (it does unless told otherwise). */
void fake_desktop_set_markup(FakeDesktop *d, bool markup);
/* Waits up to timeout_ms until method was called n times in all; returns how many times it was. */
guint fake_desktop_wait(FakeDesktop *d, const char *method, guint n, guint timeout_ms);
/* The parameters of the i-th call of method (a new reference), or NULL. */
GVariant *fake_desktop_params(FakeDesktop *d, const char *method, guint i);

typedef struct Fixture {
        Harness h;
        bool ready;
        char *session_dir;
        char *session_address;
        GPid session_pid;
        int session_pidfd;
        FakeDesktop *desktop;
        char *bin; /* holds the fake pkttyagent; first in loopctl's PATH */
        char *agent_log;
} Fixture;

/* The harness, then the session bus, the fake desktop and the fake pkttyagent; torn down in reverse. */
void fixture_setup(Fixture *f, gconstpointer options);
void fixture_teardown(Fixture *f, gconstpointer options);

#define FIXTURE_REQUIRE(f)       \
        do {                     \
                if (!(f)->ready) \
                        return;  \
        } while (0)

typedef struct Launch {
        const char *session; /* DBUS_SESSION_BUS_ADDRESS; NULL: unset */
        bool no_display; /* neither DISPLAY nor WAYLAND_DISPLAY: not a graphical session */
        bool terminal; /* under script(1): a terminal on stdin, stdout and stderr */
} Launch;

/* Runs loopctl with args (NULL-terminated) as HARNESS_USER_A, stdin /dev/null and stdout, stderr pipes
 * (harness_spawn_as()) unless l->terminal, in the environment l describes, the fake pkttyagent first in
 * PATH. Returns the exit status; *ret_ms (may be NULL) is how long it took. */
int loopctl_as_desktop(
        Fixture *f, const Launch *l, HarnessRun *run, gint64 *ret_ms, ...) G_GNUC_NULL_TERMINATED;
/* The graphical session with the fake desktop, no terminal: what the desktop entry gets. */
Launch desktop_launch(Fixture *f);
/* What the fake pkttyagent logged (one line per run). */
char *agent_log(Fixture *f);
/* The reason of loopctl's one error line: stderr without "loopctl: " and the newline. */
char *error_reason(const HarnessRun *run);
/* loopctl failed (exit 1, one error line) and sent exactly one notification saying why: "Cannot open
 * <name>" over the error line (escaped when markup), from the desktop entry's application. */
void check_one_notification(Fixture *f, const HarnessRun *run, const char *name, bool markup);
void check_no_notification(Fixture *f);
