/* umount-loopd.c: /sbin/umount.loopd, the helper libmount runs when a user unmounts a mount that carries
 * uhelper=loopd (every mount loopd makes). It runs as that user and asks loopd to unmount, through polkit
 * like any other call; loopd then also releases a device that MountImage (`loopctl open`) attached.
 *
 * libmount (util-linux context_umount.c, exec_helper()) drops to the caller's real uid and gid and runs
 *     umount.loopd TARGET [-n] [-l] [-f] [-v] [-r] [-t TYPE] [-N NAMESPACE]
 * with TARGET as the mount table spells it; umount(8) exits with this program's status. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "loopd-bus.h"
#include "macro.h"

/* umount(8)'s exit codes (libmount.h MNT_EX_*): this program's status becomes umount's. */
#define EXIT_USAGE 1
#define EXIT_SYSERR 2
#define EXIT_FAIL 32

/* A password typed into a polkit agent takes time. */
#define CALL_TIMEOUT_USEC (UINT64_C(5) * 60 * 1000000)

static const char *program = "umount.loopd";

typedef struct Arguments {
        const char *target;
        bool lazy;
        bool verbose;
        const char *namespace;
} Arguments;

static int fail(int status, const char *target, const char *format, ...) _printf_(3, 4);
static int fail(int status, const char *target, const char *format, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", program);
        if (target)
                fprintf(stderr, "%s: ", target);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        return status;
}

/* What libmount passes, in any order; -n, -f, -r and -t TYPE change nothing here (see main()). Returns 0,
 * or an exit status after saying what is wrong. */
static int parse_arguments(int argc, char *argv[], Arguments *args)
{
        bool options_done = false;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (options_done || a[0] != '-' || a[1] == '\0') {
                        if (args->target)
                                return fail(EXIT_USAGE, NULL, "more than one target given ('%s' and '%s')",
                                        args->target, a);
                        args->target = a;
                        continue;
                }
                if (streq(a, "--")) {
                        options_done = true;
                        continue;
                }
                for (const char *c = a + 1; *c; c++)
                        switch (*c) {
                        case 'l':
                                args->lazy = true;
                                break;
                        case 'v':
                                args->verbose = true;
                                break;
                        case 'n': /* loopd keeps /run/mount/utab itself */
                        case 'f': /* forcing only means something to network filesystems */
                        case 'r': /* loopd unmounts or fails; it never remounts read-only instead */
                                break;
                        case 't':
                        case 'N':
                                /* The value is the rest of this argument or the next one. */
                                if (c[1] == '\0' && i + 1 >= argc)
                                        return fail(EXIT_USAGE, NULL, "option -%c needs a value", *c);
                                if (*c == 'N')
                                        args->namespace = c[1] ? c + 1 : argv[i + 1];
                                if (c[1] == '\0')
                                        i++;
                                c += strlen(c) - 1;
                                break;
                        default:
                                return fail(EXIT_USAGE, NULL, "unknown option -%c", *c);
                        }
        }
        if (!args->target)
                return fail(EXIT_USAGE, NULL,
                        "no target given (usage: %s TARGET [-flnrv] [-t TYPE]; umount(8) runs it for loopd's "
                        "mounts)",
                        program);
        return 0;
}

int main(int argc, char *argv[])
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Arguments args = {};
        int r;

        r = parse_arguments(argc, argv, &args);
        if (r != 0)
                return r;
        /* umount -N (root only, and root never runs this helper): loopd acts in its own namespace. */
        if (args.namespace)
                return fail(EXIT_USAGE, args.target,
                        "loopd unmounts only in its own mount namespace (-N %s)", args.namespace);
        if (args.target[0] != '/')
                return fail(EXIT_USAGE, args.target, "not an absolute path");

        /* DBUS_SYSTEM_BUS_ADDRESS is honoured: libmount dropped the setuid privileges before running this.
         */
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return fail(EXIT_SYSERR, args.target, "cannot connect to the system bus: %s", strerror(-r));
        /* polkit decides as for any other call; the session's agent may ask for a password. */
        r = sd_bus_set_allow_interactive_authorization(bus, true);
        if (r >= 0)
                r = sd_bus_set_method_call_timeout(bus, CALL_TIMEOUT_USEC);
        if (r < 0)
                return fail(EXIT_SYSERR, args.target, "cannot set up the bus connection: %s", strerror(-r));

        /* Unmount has no lazy mode: -l gets the plain unmount, which fails while the mount is busy. */
        r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Unmount",
                &error, &reply, "sa{sv}", args.target, 0);
        if (r < 0) {
                const char *why = error.message ?: strerror(-r);

                if (sd_bus_error_has_name(&error, LOOPD_ERROR_BUSY) && args.lazy)
                        return fail(EXIT_FAIL, args.target, "%s (loopd does not unmount lazily)", why);
                if (sd_bus_error_has_names(
                            &error, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        return fail(EXIT_FAIL, args.target, "loopd is not running: %s", why);
                /* No answer from loopd at all (a timeout, a broken connection, loopd gone before it
                 * answered): not its refusal. sd-bus names these errors too. */
                if (!sd_bus_error_is_set(&error) ||
                        sd_bus_error_has_names(&error, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_TIMEOUT,
                                SD_BUS_ERROR_DISCONNECTED, "System.Error.ECONNRESET",
                                "System.Error.ENOTCONN", "System.Error.EPIPE", "System.Error.ETIMEDOUT"))
                        return fail(EXIT_SYSERR, args.target, "%s", why);
                return fail(EXIT_FAIL, args.target, "%s", why);
        }
        if (args.verbose)
                printf("%s: %s unmounted\n", program, args.target);
        return 0;
}
