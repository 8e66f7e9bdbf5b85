/* format.h: size parsing and formatting, display escaping, and a small streaming JSON writer (for loopctl).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "utf8.h" /* utf8_sequence_length(), which the escaping below uses */

/* Parses "4096", "4096B", "1M", "1MiB" (powers of 1024) and "1MB" (powers of 1000), K/M/G/T/P/E, the
 * letters in either case. Rejects empty strings, signs, spaces, fractions and unknown suffixes with
 * -EINVAL and values that do not fit in 64 bits with -ERANGE. *ret is written only on success. */
int parse_size(const char *s, uint64_t *ret);

#define FORMAT_BYTES_MAX 16
/* Formats a byte count the way lsblk does: "0B", "512B", "1K", "1.5M", "931.5G" (powers of 1024, one
 * decimal rounded to nearest, dropped when it is zero). Returns buf. */
char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes);

/* A copy of s that is safe to print on a terminal on one line: C0 and C1 control characters, DEL and bytes
 * that are not well-formed UTF-8 become "\xNN" (one per byte). NULL is treated as "". Returns NULL only when
 * out of memory. Free with free(). */
char *display_escape(const char *s);
/* Columns s takes on a terminal, counting one per code point (s should come from display_escape()). */
size_t display_width(const char *s);

#define JSON_MAX_DEPTH 16

typedef struct JsonWriter {
        FILE *f;
        unsigned depth;
        bool first[JSON_MAX_DEPTH]; /* nothing written yet at this level */
        bool after_key;
} JsonWriter;

/* Writes compact one-line JSON ("{"a": 1, "b": [true]}") and a newline after each top-level value. Strings
 * are escaped as JSON requires; bytes that are not well-formed UTF-8 are written as U+FFFD. */
void json_init(JsonWriter *w, FILE *f);
void json_begin_object(JsonWriter *w);
void json_end_object(JsonWriter *w);
void json_begin_array(JsonWriter *w);
void json_end_array(JsonWriter *w);
void json_key(JsonWriter *w, const char *key);
void json_string(JsonWriter *w, const char *s); /* NULL is written as "" */
void json_uint(JsonWriter *w, uint64_t v);
void json_bool(JsonWriter *w, bool v);
/* A key and its value: json_key() followed by json_string(), json_uint() or json_bool(). */
void json_field_string(JsonWriter *w, const char *key, const char *s);
void json_field_uint(JsonWriter *w, const char *key, uint64_t v);
void json_field_bool(JsonWriter *w, const char *key, bool v);
