/* desktop.c: loopctl in the user's graphical session: a desktop notification for an error nobody would read,
 * the file manager for --show. Every call on the session bus has a deadline: a session bus or a server that
 * does not answer must not keep loopctl from exiting. */
#include "desktop.h"

#include <stdint.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "log.h"
#include "macro.h"

#define USEC_PER_SEC UINT64_C(1000000)
/* A notification server may be started by D-Bus activation on the first call. */
#define NOTIFY_TIMEOUT_USEC (5 * USEC_PER_SEC)
/* So may a file manager, which takes longer to start. */
#define SHOW_TIMEOUT_USEC (25 * USEC_PER_SEC)

#define NOTIFICATIONS_NAME "org.freedesktop.Notifications"
#define NOTIFICATIONS_PATH "/org/freedesktop/Notifications"
#define FILE_MANAGER_NAME "org.freedesktop.FileManager1"
#define FILE_MANAGER_PATH "/org/freedesktop/FileManager1"

/* Who the notification comes from: the desktop entry's Name and Icon, and its file name, by which servers
 * group notifications and find the application's settings. */
#define APP_NAME "Disk Image Mounter"
#define APP_ICON "drive-removable-media"
#define APP_DESKTOP_ENTRY "loopd-open"

static uint64_t now_usec(void)
{
        struct timespec ts;

        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static bool graphical_session(void)
{
        return !isempty(getenv("WAYLAND_DISPLAY")) || !isempty(getenv("DISPLAY"));
}

/* Not a terminal on any of the three: a script's "loopctl open x 2>log" typed in a terminal still has one on
 * stdin, and its user sees the error. Without a graphical session (a cron job, ssh) nobody would see a
 * notification either. */
bool desktop_unattended(void)
{
        if (isatty(STDIN_FILENO) || isatty(STDOUT_FILENO) || isatty(STDERR_FILENO))
                return false;
        return graphical_session();
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        *(sd_bus_message **)userdata = sd_bus_message_ref(m);
        return 0;
}

/* Sends m and waits for the reply until deadline (CLOCK_MONOTONIC), connecting and authenticating included:
 * sd_bus_call() waits for a bus that accepted the connection but never answers for sd-bus's own
 * authentication timeout, far longer than anyone waits for an error message. */
static int call_until(sd_bus *bus, sd_bus_message *m, uint64_t deadline, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint64_t now = now_usec();
        int r;

        if (now >= deadline)
                return -ETIMEDOUT;
        r = sd_bus_call_async(bus, &slot, m, on_reply, &reply, deadline - now);
        if (r < 0)
                return r;
        while (!reply) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                now = now_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                r = sd_bus_wait(bus, deadline - now);
                if (r < 0 && r != -EINTR)
                        return r;
        }
        if (sd_bus_message_is_method_error(reply, NULL)) {
                r = sd_bus_message_get_errno(reply);
                return r > 0 ? -r : -EIO;
        }
        if (ret_reply)
                *ret_reply = TAKE_PTR(reply);
        return 0;
}

/* s with &, < and > as entities, for a notification server that reads markup in bodies. */
static char *markup_escape(const char *s)
{
        size_t n = 1;
        char *e, *q;

        for (const char *p = s; *p; p++)
                n += *p == '&' ? 5 : *p == '<' || *p == '>' ? 4 : 1;
        e = q = malloc(n);
        if (!e)
                return NULL;
        for (; *s; s++) {
                if (*s == '&')
                        q = stpcpy(q, "&amp;");
                else if (*s == '<')
                        q = stpcpy(q, "&lt;");
                else if (*s == '>')
                        q = stpcpy(q, "&gt;");
                else
                        *q++ = *s;
        }
        *q = '\0';
        return e;
}

/* Whether the server reads markup in bodies ("body-markup" among its capabilities). The specification says
 * markup sent to a server without it shows through as text, so a body is escaped only for a server with it.
 * A server that does not say is taken to read markup, as nearly all do: an entity shown as text loses less
 * than a file name a markup parser swallowed. */
static bool server_reads_markup(sd_bus *bus, uint64_t deadline)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *capability;
        bool markup = false;
        int r;

        r = sd_bus_message_new_method_call(
                bus, &m, NOTIFICATIONS_NAME, NOTIFICATIONS_PATH, NOTIFICATIONS_NAME, "GetCapabilities");
        if (r >= 0)
                r = call_until(bus, m, deadline, &reply);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "s");
        if (r < 0)
                return true;
        while ((r = sd_bus_message_read(reply, "s", &capability)) > 0)
                if (streq(capability, "body-markup"))
                        markup = true;
        return r < 0 || markup;
}

void desktop_notify_error(const char *summary, const char *body)
{
        /* Not flushed on close: a bus that never authenticated would make the flush wait for it. */
        _cleanup_(sd_bus_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *escaped = NULL;
        uint64_t deadline = now_usec() + NOTIFY_TIMEOUT_USEC;
        int r;

        if (sd_bus_open_user(&bus) < 0)
                return;
        if (server_reads_markup(bus, deadline)) {
                escaped = markup_escape(body);
                if (!escaped)
                        return;
                body = escaped;
        }

        r = sd_bus_message_new_method_call(
                bus, &m, NOTIFICATIONS_NAME, NOTIFICATIONS_PATH, NOTIFICATIONS_NAME, "Notify");
        /* No replaces_id, no actions, the server's default expiry (-1). */
        if (r >= 0)
                r = sd_bus_message_append(m, "susssasa{sv}i", APP_NAME, UINT32_C(0), APP_ICON, summary, body,
                        0, 1, "desktop-entry", "s", APP_DESKTOP_ENTRY, INT32_C(-1));
        if (r >= 0)
                (void)call_until(bus, m, deadline, NULL);
}

/* "file://" and path with every byte but the unreserved ones and "/" percent-encoded: a mount point is
 * named after the filesystem's label, which whoever made the image chose ("a#b", "100%", spaces). */
static char *file_uri(const char *path)
{
        static const char hex[] = "0123456789ABCDEF";
        char *uri = malloc(strlen("file://") + 3 * strlen(path) + 1), *q;

        if (!uri)
                return NULL;
        q = stpcpy(uri, "file://");
        for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
                if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                        strchr("-._~/", *p))
                        *q++ = (char)*p;
                else {
                        *q++ = '%';
                        *q++ = hex[*p >> 4];
                        *q++ = hex[*p & 15];
                }
        }
        *q = '\0';
        return uri;
}

/* org.freedesktop.FileManager1 is what Nautilus, Dolphin, Nemo and Thunar implement. */
static int show_on_session_bus(const char *uri)
{
        _cleanup_(sd_bus_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_open_user(&bus);
        if (r >= 0)
                r = sd_bus_message_new_method_call(
                        bus, &m, FILE_MANAGER_NAME, FILE_MANAGER_PATH, FILE_MANAGER_NAME, "ShowFolders");
        if (r >= 0)
                r = sd_bus_message_append(m, "ass", 1, uri, "");
        if (r >= 0)
                r = call_until(bus, m, now_usec() + SHOW_TIMEOUT_USEC, NULL);
        return r;
}

void desktop_show_folder(const char *path)
{
        _cleanup_free_ char *uri = file_uri(path);
        int status = 0;
        pid_t pid;

        if (!uri) {
                (void)log_error_errno(-ENOMEM, "cannot show %s", path);
                return;
        }
        if (show_on_session_bus(uri) >= 0)
                return;

        /* Outside a graphical session xdg-open would start a text-mode browser, or wait for one. */
        if (!graphical_session()) {
                (void)log_error(-ENXIO, "cannot show %s: no file manager on the session bus", path);
                return;
        }
        pid = fork();
        if (pid == 0) {
                execlp("xdg-open", "xdg-open", path, (char *)NULL);
                _exit(127);
        }
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                (void)log_error(-EIO, "cannot show %s: no file manager answered", path);
}
