/* log.h: loopctl's error lines, "loopctl: <what failed>: <why>", always exactly one line on stderr; with
 * --json, one JSON object instead: {"error": "<D-Bus error name or a short kind>", "message": "..."}. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "macro.h"

/* With json, each error is written as a JSON object on one line. */
void log_set_json(bool json);
/* While set, errors are usage errors: their kind is "usage". */
void log_set_usage(bool usage);
/* Each prints "loopctl: " and the formatted text, with control characters escaped so that a file name
 * cannot break the line, and returns r (or -EIO when r is not negative) so that callers can
 * "return log_error_errno(r, ...);". The kind of a JSON error is the errno name of r ("ENOENT"). */
_printf_(2, 3) int log_error(int r, const char *fmt, ...);
/* Appends ": " and strerror(-r). */
_printf_(2, 3) int log_error_errno(int r, const char *fmt, ...);
/* Appends ": " and the D-Bus error's message as a command-line user reads it (bus_error_text()), its name
 * when it has none, strerror(-r) when unset. The kind of a JSON error is the D-Bus error's name. */
_printf_(3, 4) int log_bus_error(const sd_bus_error *error, int r, const char *fmt, ...);
/* loopd's message in the words of the command line: "--unmount", not "the unmount option"; "not a loop
 * device: /dev/vda"; a polkit refusal says what to do. The daemon's messages stay as they are (programs
 * read them); this is the client's translation. Never NULL but on -ENOMEM. */
char *bus_error_text(const char *name, const char *message);
/* The last line logged, without "loopctl: " (NULL when none, or when it could not be kept): what a desktop
 * notification repeats. */
const char *log_last_line(void);
/* Lets go of it (at exit). */
void log_forget(void);
