/* log.c: the daemon's logging to stderr, with a "<N>" syslog priority prefix the journal understands. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int max_level = LOG_INFO;

void log_set_max_level(int level)
{
        max_level = level;
}

int log_get_max_level(void)
{
        return max_level;
}

/* Copies s to out (at least 4 * strlen(s) + 1 bytes) with control characters written as \xNN: messages
 * quote paths, labels and names that callers and images choose, and a newline in one would start a line of
 * its own, which the journal reads with whatever "<N>" priority prefix it carries. */
static void escape_controls(const char *s, char *out)
{
        static const char hex[] = "0123456789abcdef";

        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c < 0x20 || c == 0x7f) {
                        *out++ = '\\';
                        *out++ = 'x';
                        *out++ = hex[c >> 4];
                        *out++ = hex[c & 15];
                } else
                        *out++ = (char)c;
        }
        *out = '\0';
}

int log_internal(int level, int error, const char *fmt, ...)
{
        char message[2048], escaped[4 * sizeof(message)];
        int saved = errno;
        va_list ap;

        errno = abs(error);
        va_start(ap, fmt);
        (void)vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        escape_controls(message, escaped);
        /* Under systemd the journal reads the priority prefix; on a terminal a name reads better. */
        if (getenv("JOURNAL_STREAM"))
                fprintf(stderr, "<%d>%s\n", level, escaped);
        else
                fprintf(stderr, "loopd: %s\n", escaped);
        errno = saved;
        return -abs(error);
}
