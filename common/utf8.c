/* utf8.c: strict UTF-8: decoding one sequence, validating and repairing strings (daemon and client). */
#include "utf8.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t utf8_decode(const char *s, uint32_t *ret_cp)
{
        const unsigned char *p = (const unsigned char *)s;
        unsigned char lo = 0x80, hi = 0xbf;
        size_t len;
        uint32_t cp;

        if (p[0] < 0x80) {
                if (ret_cp)
                        *ret_cp = p[0];
                return 1;
        }
        if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                len = 2;
                cp = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                len = 3;
                cp = p[0] & 0x0f;
                if (p[0] == 0xe0)
                        lo = 0xa0; /* overlong */
                else if (p[0] == 0xed)
                        hi = 0x9f; /* surrogates */
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                len = 4;
                cp = p[0] & 0x07;
                if (p[0] == 0xf0)
                        lo = 0x90; /* overlong */
                else if (p[0] == 0xf4)
                        hi = 0x8f; /* beyond U+10FFFF */
        } else
                return 0;

        /* The first continuation byte has the narrowed range; the string's NUL stops us at its end. */
        if (p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (ret_cp)
                *ret_cp = cp;
        return len;
}

size_t utf8_sequence_length(const char *s)
{
        return utf8_decode(s, NULL);
}

/* The first byte of s that does not start a well-formed sequence, or its NUL. */
static const char *utf8_first_invalid(const char *s)
{
        while (*s) {
                size_t len = utf8_decode(s, NULL);
                if (len == 0)
                        break;
                s += len;
        }
        return s;
}

bool utf8_is_valid(const char *s)
{
        return *utf8_first_invalid(s) == '\0';
}

int utf8_make_valid(char **s)
{
        const char *p;
        char *buf, *q;

        if (utf8_is_valid(*s))
                return 0;

        /* At most three bytes (U+FFFD) for every byte. */
        buf = malloc(strlen(*s) * 3 + 1);
        if (!buf)
                return -ENOMEM;
        for (p = *s, q = buf; *p;) {
                size_t len = utf8_decode(p, NULL);
                if (len == 0) {
                        q = mempcpy(q, "\xef\xbf\xbd", 3);
                        p++;
                } else {
                        q = mempcpy(q, p, len);
                        p += len;
                }
        }
        *q = '\0';
        free(*s);
        *s = buf;
        return 0;
}
