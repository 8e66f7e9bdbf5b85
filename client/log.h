/* log.h: loopctl's error lines, "loopctl: <what failed>: <why>", always exactly one line on stderr. */
#pragma once

#include <systemd/sd-bus.h>

#include "macro.h"

/* Each prints "loopctl: " and the formatted text, with control characters escaped so that a file name
 * cannot break the line, and returns r (or -EIO when r is not negative) so that callers can
 * "return log_error_errno(r, ...);". */
_printf_(2, 3) int log_error(int r, const char *fmt, ...);
/* Appends ": " and strerror(-r). */
_printf_(2, 3) int log_error_errno(int r, const char *fmt, ...);
/* Appends ": " and the D-Bus error's message (its name when it has none; strerror(-r) when unset). */
_printf_(3, 4) int log_bus_error(const sd_bus_error *error, int r, const char *fmt, ...);
/* The last line logged, without "loopctl: " (NULL when none, or when it could not be kept): what a desktop
 * notification repeats. */
const char *log_last_line(void);
/* Lets go of it (at exit). */
void log_forget(void);
