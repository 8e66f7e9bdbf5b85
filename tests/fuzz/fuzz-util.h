/* fuzz-util.h: what the fuzz targets share: a strict UTF-8 check (an oracle independent of the daemon's own
 * decoder) and a way to stop with a message that libFuzzer reports as a crash. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        abort();
}

#define fuzz_check(cond, ...)                   \
        do {                                    \
                if (!(cond))                    \
                        fuzz_fail(__VA_ARGS__); \
        } while (0)

/* Decodes one code point of well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
 * Returns its length, 0 if s[0..n) does not start with one. */
static inline size_t fuzz_utf8_next(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
        uint32_t cp, min;
        size_t len;

        if (n == 0)
                return 0;
        if (s[0] < 0x80) {
                *ret_cp = s[0];
                return 1;
        }
        if ((s[0] & 0xe0) == 0xc0) {
                len = 2;
                cp = s[0] & 0x1f;
                min = 0x80;
        } else if ((s[0] & 0xf0) == 0xe0) {
                len = 3;
                cp = s[0] & 0x0f;
                min = 0x800;
        } else if ((s[0] & 0xf8) == 0xf0) {
                len = 4;
                cp = s[0] & 0x07;
                min = 0x10000;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret_cp = cp;
        return len;
}

static inline bool fuzz_utf8_valid(const char *s, size_t n)
{
        uint32_t cp;

        for (size_t i = 0; i < n;) {
                size_t len = fuzz_utf8_next((const unsigned char *)s + i, n - i, &cp);
                if (len == 0)
                        return false;
                i += len;
        }
        return true;
}

/* A NUL-terminated copy of data (cut at its first NUL). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        size_t n = 0;

        if (!s)
                abort();
        while (n < size && data[n])
                n++;
        for (size_t i = 0; i < n; i++)
                s[i] = (char)data[i];
        s[n] = '\0';
        return s;
}
