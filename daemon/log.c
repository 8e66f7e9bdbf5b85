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

int log_internal(int level, int error, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;

        errno = abs(error);
        /* Under systemd the journal reads the priority prefix; on a terminal a name reads better. */
        if (getenv("JOURNAL_STREAM"))
                fprintf(stderr, "<%d>", level);
        else
                fputs("loopd: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        errno = saved;
        return -abs(error);
}
