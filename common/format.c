/* format.c: size parsing and formatting, and a small streaming JSON writer. */
#include "format.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

int parse_size(const char *s, uint64_t *ret)
{
        static const char suffixes[] = "KMGTPE";
        uint64_t value = 0, multiplier = 1;
        const char *p = s;

        if (!s || !isdigit((unsigned char)*s))
                return -EINVAL;

        for (; isdigit((unsigned char)*p); p++) {
                unsigned digit = (unsigned)(*p - '0');
                if (value > (UINT64_MAX - digit) / 10)
                        return -ERANGE;
                value = value * 10 + digit;
        }

        if (*p != '\0') {
                const char *found = strchr(suffixes, toupper((unsigned char)*p));
                unsigned base = 1024;

                if (!found || *found == '\0')
                        return -EINVAL;
                p++;
                if (strcmp(p, "iB") == 0 || *p == '\0')
                        base = 1024;
                else if (strcmp(p, "B") == 0)
                        base = 1000;
                else
                        return -EINVAL;

                for (long i = 0; i <= found - suffixes; i++) {
                        if (multiplier > UINT64_MAX / base)
                                return -ERANGE;
                        multiplier *= base;
                }
        }

        if (value != 0 && multiplier > UINT64_MAX / value)
                return -ERANGE;

        *ret = value * multiplier;
        return 0;
}

char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes)
{
        static const char units[] = "KMGTPE";
        uint64_t whole = bytes, rest = 0;
        int unit = -1;

        while (whole >= 1024 && unit < (int)sizeof(units) - 2) {
                rest = whole % 1024;
                whole /= 1024;
                unit++;
        }

        if (unit < 0) {
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 "B", bytes);
                return buf;
        }

        /* One decimal, rounded, dropped when it is zero (lsblk style). */
        unsigned tenth = (unsigned)((rest * 10 + 512) / 1024);
        if (tenth >= 10) {
                whole++;
                tenth = 0;
        }
        if (tenth == 0 || whole >= 100)
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 "%c", whole, units[unit]);
        else
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 ".%u%c", whole, tenth, units[unit]);
        return buf;
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
        json_separate(w);
        fputc(c, w->f);
        if (w->depth + 1 < JSON_MAX_DEPTH)
                w->depth++;
        w->first[w->depth] = true;
}

static void json_close(JsonWriter *w, char c)
{
        fputc(c, w->f);
        if (w->depth > 0)
                w->depth--;
        if (w->depth == 0)
                fputc('\n', w->f);
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

static void json_write_escaped(FILE *f, const char *s)
{
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                switch (*p) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                default:
                        /* Control characters and DEL escaped; bytes >= 0x80 pass through (labels are
                         * sanitised to UTF-8 by the daemon before they reach a client). */
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        }
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
