/* strv.h: NULL-terminated string arrays. */
#pragma once

#include <stdlib.h>
#include <string.h>

#include "macro.h"

static inline char **strv_free(char **v)
{
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

static inline size_t strv_length(char *const *v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

static inline bool strv_contains(char *const *v, const char *s)
{
        for (; v && *v; v++)
                if (streq(*v, s))
                        return true;
        return false;
}

/* Appends s (taking ownership) to *v; on failure frees s. */
static inline int strv_consume(char ***v, char *s)
{
        size_t n = strv_length(*v);
        char **grown;

        if (!s)
                return -ENOMEM;
        grown = realloc(*v, (n + 2) * sizeof(char *));
        if (!grown) {
                free(s);
                return -ENOMEM;
        }
        grown[n] = s;
        grown[n + 1] = NULL;
        *v = grown;
        return 0;
}

/* "a, b, c" (NULL on ENOMEM). */
static inline char *strv_join(char *const *v, const char *separator)
{
        size_t len = 1, k = strlen(separator);
        char *text, *p;

        for (char *const *s = v; s && *s; s++)
                len += strlen(*s) + k;
        p = text = malloc(len);
        if (!text)
                return NULL;
        for (char *const *s = v; s && *s; s++)
                p = stpcpy(s == v ? p : stpcpy(p, separator), *s);
        *p = '\0';
        return text;
}
