/* harness-internal.h: what the harness's own files share (the processes it runs, the fixture's private
 * part); the suites include harness.h only. */
#pragma once

#include "harness.h"

#define POLKIT_BUS_NAME "org.freedesktop.PolicyKit1"

/* A child the harness started and is responsible for. */
typedef struct HarnessProcess {
        const char *name;
        GPid pid; /* 0 when not running (or already reaped) */
        int pidfd;
        int wait_status;
        char *log_path;
} HarnessProcess;

struct HarnessPrivate {
        HarnessProcess dbus, loopd, polkitd, udevd;
        /* loopd's own process, when LOOPD_TEST_WRAPPER runs it in a child of the process the harness
         * started (a tracer: strace -f): the bus names it. Signals go to it; the wrapper exits after it.
         * -1 (and 0) when loopd is the process started (no wrapper, or valgrind, which execs it). */
        int daemon_pidfd;
        GPid daemon_pid;
        GPtrArray *connections; /* from harness_connect_as() */
        bool loopd_log_printed;
};

/* harness-services.c: processes. p logs to <tmpdir>/<name>.log. */
void harness_process_init(HarnessProcess *p, const char *name, const char *tmpdir);
/* The environment children get: the test's, without NOTIFY_SOCKET and the session bus, with
 * DBUS_SYSTEM_BUS_ADDRESS = bus_address (unless NULL). */
char **harness_environ_with_bus(const char *bus_address);
bool harness_process_spawn(HarnessProcess *p, const char *const *argv, char **envp, int extra_fd);
bool harness_process_wait(HarnessProcess *p, int timeout_ms);
bool harness_process_stop(HarnessProcess *p, int sig);
/* loopd leaves its virtual disks' exports running when it exits (a restarted loopd adopts them): after a
 * test, with loopd stopped and the devices detached, kills their qemu-storage-daemons (by the pid each
 * record in <state>/exports names) and unmounts the exports. */
void harness_stop_exports(Harness *h);
/* Waits until name has an owner on c; fails the test when p exits first or on the timeout. */
bool harness_process_wait_for_name(GDBusConnection *c, const char *name, HarnessProcess *p);
char *harness_describe_wait_status(int status);
void harness_print_log_tail(const char *title, const char *path, guint max_lines);
/* loopd's log, once per test: whoever notices a problem first prints it. */
void harness_print_loopd_log(HarnessPrivate *p);

/* harness-services.c: the services loopd needs, each started and stopped by the fixture. */
bool harness_bus_start(Harness *h, const char *source_root);
void harness_bus_stop(Harness *h);
bool harness_polkitd_start(Harness *h, const char *source_root);
void harness_polkitd_stop(Harness *h);
bool harness_udevd_start(Harness *h);
void harness_udevd_stop(Harness *h);
/* Makes a crash of the test process (SIGABRT, SIGTRAP) kill the udevd it started on its way out. */
void harness_handle_crashes(void);

/* harness-authority.c: the fake authority, owning org.freedesktop.PolicyKit1 on the bus at address. NULL
 * (and the test failed) when it could not start. */
FakeAuthority *fake_authority_start(const char *address);
void fake_authority_free(FakeAuthority *a);
