/* log.c: loopctl's error lines, as text or as JSON. */
#include "log.h"

#include <stdarg.h>
#include <string.h>

#include "format.h"

/* The last line written, for a notification to repeat. */
static char *last_line = NULL;
static bool log_json = false;
static bool log_usage = false;

void log_set_json(bool json)
{
        log_json = json;
}

void log_set_usage(bool usage)
{
        log_usage = usage;
}

/* A local error's kind: "usage", or the errno name of r. */
static const char *local_kind(int r)
{
        const char *name;

        if (log_usage)
                return "usage";
        name = strerrorname_np(r < 0 ? -r : EIO);
        return name ?: "EIO";
}

static int log_line(int r, const char *kind, const char *why, const char *fmt, va_list ap)
{
        _cleanup_free_ char *what = NULL, *line = NULL, *safe = NULL;

        if (vasprintf(&what, fmt, ap) < 0)
                what = NULL;
        if (asprintf(&line, "%s%s%s", what ? what : fmt, why ? ": " : "", why ? why : "") < 0)
                line = NULL;

        if (log_json) {
                JsonWriter w;

                /* The JSON writer escapes what needs escaping; the message stays as it was. */
                json_init(&w, stderr);
                json_begin_object(&w);
                json_field_string(&w, "error", kind ?: local_kind(r));
                json_field_string(&w, "message", line ? line : fmt);
                json_end_object(&w);
        }
        safe = display_escape(line ? line : fmt);
        if (!log_json)
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
        r = log_line(r, NULL, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int log_error_errno(int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        r = log_line(r, NULL, strerror(r < 0 ? -r : EIO), fmt, ap);
        va_end(ap);
        return r;
}

int log_bus_error(const sd_bus_error *error, int r, const char *fmt, ...)
{
        _cleanup_free_ char *text = NULL;
        const char *why, *kind = NULL;
        va_list ap;

        if (sd_bus_error_is_set(error)) {
                kind = error->name;
                text = !isempty(error->message) ? bus_error_text(error->name, error->message) : NULL;
                why = text ?: !isempty(error->message) ? error->message : error->name;
        } else
                why = strerror(r < 0 ? -r : EIO);

        va_start(ap, fmt);
        r = log_line(r, kind, why, fmt, ap);
        va_end(ap);
        return r;
}
