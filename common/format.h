/* format.h: size parsing and formatting, and a small streaming JSON writer (for loopctl's --json). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Parses "4096", "1M", "1MiB" (powers of 1024) and "1MB" (powers of 1000), K/M/G/T/P/E. Rejects
 * signs, spaces, fractions and overflow with -EINVAL / -ERANGE. */
int parse_size(const char *s, uint64_t *ret);

#define FORMAT_BYTES_MAX 16
/* Formats a byte count the way lsblk does: "512", "1K", "1.5M", "931.5G". Returns buf. */
char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes);

#define JSON_MAX_DEPTH 16

typedef struct JsonWriter {
        FILE *f;
        unsigned depth;
        bool first[JSON_MAX_DEPTH]; /* nothing written yet at this level */
        bool after_key;
} JsonWriter;

void json_init(JsonWriter *w, FILE *f);
void json_begin_object(JsonWriter *w);
void json_end_object(JsonWriter *w);
void json_begin_array(JsonWriter *w);
void json_end_array(JsonWriter *w);
void json_key(JsonWriter *w, const char *key);
void json_string(JsonWriter *w, const char *s); /* NULL is written as "" */
void json_uint(JsonWriter *w, uint64_t v);
void json_bool(JsonWriter *w, bool v);
