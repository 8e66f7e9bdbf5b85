/* log.c: loopctl's error lines. */
#include "log.h"

#include <stdarg.h>

#include "format.h"

/* The last line written, for a notification to repeat. */
static char *last_line = NULL;

static int log_line(int r, const char *why, const char *fmt, va_list ap)
{
        _cleanup_free_ char *what = NULL, *line = NULL, *safe = NULL;

        if (vasprintf(&what, fmt, ap) < 0)
                what = NULL;
        if (asprintf(&line, "%s%s%s", what ? what : fmt, why ? ": " : "", why ? why : "") < 0)
                line = NULL;
        safe = display_escape(line ? line : fmt);

        fprintf(stderr, "loopctl: %s\n", safe ? safe : "out of memory");
        free(last_line);
        last_line = TAKE_PTR(safe);
        return r < 0 ? r : -EIO;
}

const char *log_last_line(void)
{
        return last_line;
}

void log_forget(void)
{
        last_line = mfree(last_line);
}

int log_error(int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        r = log_line(r, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int log_error_errno(int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        r = log_line(r, strerror(r < 0 ? -r : EIO), fmt, ap);
        va_end(ap);
        return r;
}

int log_bus_error(const sd_bus_error *error, int r, const char *fmt, ...)
{
        const char *why;
        va_list ap;

        if (sd_bus_error_is_set(error))
                why = !isempty(error->message) ? error->message : error->name;
        else
                why = strerror(r < 0 ? -r : EIO);

        va_start(ap, fmt);
        r = log_line(r, why, fmt, ap);
        va_end(ap);
        return r;
}
