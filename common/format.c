/* format.c: size parsing and formatting, display escaping, and a small streaming JSON writer. */
#include "format.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char size_units[] = "KMGTPE";

int parse_size(const char *s, uint64_t *ret)
{
        uint64_t value = 0, multiplier = 1;
        const char *p = s;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;

        for (; *p >= '0' && *p <= '9'; p++) {
                unsigned digit = (unsigned)(*p - '0');
                if (value > (UINT64_MAX - digit) / 10)
                        return -ERANGE;
                value = value * 10 + digit;
        }

        if (*p == 'B' || *p == 'b') {
                /* "512B": plain bytes, the way format_bytes() writes small sizes. */
                if (p[1] != '\0')
                        return -EINVAL;
        } else if (*p != '\0') {
                const char *found =
                        *p >= 'a' && *p <= 'z' ? strchr(size_units, *p - 'a' + 'A') : strchr(size_units, *p);
                unsigned base;

                if (!found)
                        return -EINVAL;
                p++;
                if (*p == '\0' ||
                        ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'B' || p[1] == 'b') && p[2] == '\0'))
                        base = 1024;
                else if ((p[0] == 'B' || p[0] == 'b') && p[1] == '\0')
                        base = 1000;
                else
                        return -EINVAL;

                for (long i = 0; i <= found - size_units; i++)
                        multiplier *= base; /* at most 1024^6 = 2^60: cannot overflow */
        }

        if (value != 0 && multiplier > UINT64_MAX / value)
                return -ERANGE;

        *ret = value * multiplier;
        return 0;
}

char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes)
{
        unsigned exp = 0; /* bytes >= 2^exp units */

        while (exp < 10 * (sizeof(size_units) - 1) && bytes >> (exp + 10) != 0)
                exp += 10;

        if (exp == 0) {
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 "B", bytes);
                return buf;
        }

        /* The fraction is the whole remainder below the unit, not just the last step's, rounded to the
         * nearest tenth. rest < 2^60, so rest * 10 + 2^59 fits in 64 bits. */
        /* whole <= 1024: below the next unit (or at most 15 for E). */
        uint64_t whole = bytes >> exp, rest = bytes & ((UINT64_C(1) << exp) - 1);
        uint64_t tenth = (rest * 10 + (UINT64_C(1) << (exp - 1))) >> exp;
        char unit = size_units[exp / 10 - 1];

        if (tenth >= 10) {
                whole++;
                tenth = 0;
        }
        if (whole == 1024 && exp < 10 * (sizeof(size_units) - 1)) {
                /* 1023.95K rounds up to 1M, not to 1024K. */
                whole = 1;
                unit = size_units[exp / 10];
        }
        if (tenth == 0)
                snprintf(buf, FORMAT_BYTES_MAX, "%u%c", (unsigned)whole, unit);
        else
                snprintf(buf, FORMAT_BYTES_MAX, "%u.%u%c", (unsigned)whole, (unsigned)tenth, unit);
        return buf;
}

char *display_escape(const char *s)
{
        const char *p = s ? s : "";
        char *buf, *q;

        /* Worst case: every byte becomes four. */
        buf = malloc(strlen(p) * 4 + 1);
        if (!buf)
                return NULL;

        for (q = buf; *p;) {
                unsigned char c = (unsigned char)*p;
                size_t len = utf8_sequence_length(p);
                bool c1 = len == 2 && c == 0xc2 && (unsigned char)p[1] < 0xa0; /* U+0080..U+009F */

                if (len == 0 || c1 || c < 0x20 || c == 0x7f) {
                        size_t n = len == 0 ? 1 : len;
                        for (size_t i = 0; i < n; i++)
                                q += sprintf(q, "\\x%02x", (unsigned char)p[i]);
                        p += n;
                } else {
                        memcpy(q, p, len);
                        q += len;
                        p += len;
                }
        }
        *q = '\0';
        return buf;
}

size_t display_width(const char *s)
{
        size_t width = 0;

        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        width++;
        return width;
}

void json_init(JsonWriter *w, FILE *f)
{
        *w = (JsonWriter){ .f = f };
        w->first[0] = true;
}

static void json_separate(JsonWriter *w)
{
        if (w->after_key) {
                w->after_key = false;
                return;
        }
        if (!w->first[w->depth])
                fputs(", ", w->f);
        w->first[w->depth] = false;
}

static void json_open(JsonWriter *w, char c)
{
        assert(w->depth + 1 < JSON_MAX_DEPTH);

        json_separate(w);
        fputc(c, w->f);
        w->depth++;
        w->first[w->depth] = true;
}

static void json_close(JsonWriter *w, char c)
{
        assert(w->depth > 0);

        fputc(c, w->f);
        w->depth--;
        if (w->depth == 0) {
                fputc('\n', w->f);
                w->first[0] = true; /* the next top-level value starts a new line, not a list */
        }
}

void json_begin_object(JsonWriter *w)
{
        json_open(w, '{');
}

void json_end_object(JsonWriter *w)
{
        json_close(w, '}');
}

void json_begin_array(JsonWriter *w)
{
        json_open(w, '[');
}

void json_end_array(JsonWriter *w)
{
        json_close(w, ']');
}

/* What JSON carries as it is is written in runs, not a byte at a time: a list of a thousand devices is a
 * couple of hundred kilobytes of it. */
static void json_write_escaped(FILE *f, const char *s)
{
        const char *run = s, *p = s;

        fputc('"', f);
        while (*p) {
                unsigned char c = (unsigned char)*p;
                size_t len = utf8_sequence_length(p);

                if (len > 0 && c >= 0x20 && c != 0x7f && c != '"' && c != '\\') {
                        p += len;
                        continue;
                }
                fwrite(run, 1, (size_t)(p - run), f);
                if (len == 0)
                        /* JSON strings are Unicode: a byte that is not UTF-8 (a file name from another
                         * locale) cannot be carried, only marked. */
                        fputs("\\ufffd", f);
                else if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c == '\t')
                        fputs("\\t", f);
                else if (c == '\r')
                        fputs("\\r", f);
                else
                        fprintf(f, "\\u%04x", c);
                p++;
                run = p;
        }
        fwrite(run, 1, (size_t)(p - run), f);
        fputc('"', f);
}

void json_key(JsonWriter *w, const char *key)
{
        json_separate(w);
        json_write_escaped(w->f, key);
        fputs(": ", w->f);
        w->after_key = true;
}

void json_string(JsonWriter *w, const char *s)
{
        json_separate(w);
        json_write_escaped(w->f, s ? s : "");
}

void json_uint(JsonWriter *w, uint64_t v)
{
        json_separate(w);
        fprintf(w->f, "%" PRIu64, v);
}

void json_bool(JsonWriter *w, bool v)
{
        json_separate(w);
        fputs(v ? "true" : "false", w->f);
}

void json_field_string(JsonWriter *w, const char *key, const char *s)
{
        json_key(w, key);
        json_string(w, s);
}

void json_field_uint(JsonWriter *w, const char *key, uint64_t v)
{
        json_key(w, key);
        json_uint(w, v);
}

void json_field_bool(JsonWriter *w, const char *key, bool v)
{
        json_key(w, key);
        json_bool(w, v);
}
