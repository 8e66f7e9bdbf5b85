/* utf8.h: strict UTF-8: decoding one sequence, validating and repairing strings (daemon and client). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes the well-formed UTF-8 sequence at s: returns its length (1 to 4 bytes) and, if ret_cp is not NULL,
 * its code point; 0 when s does not start one (stray continuation byte, overlong form, surrogate, beyond
 * U+10FFFF, truncated by the string's end). */
size_t utf8_decode(const char *s, uint32_t *ret_cp);

/* utf8_decode() without the code point. */
size_t utf8_sequence_length(const char *s);

/* Whether all of s is well-formed UTF-8. */
bool utf8_is_valid(const char *s);

/* D-Bus strings must be UTF-8, and file names, labels, UUIDs and partition names come from users' files and
 * images: replaces every byte of *s that is not part of well-formed UTF-8 with U+FFFD (reallocating *s), so
 * that one such string cannot fail a whole reply. A valid *s is left as it is. -ENOMEM, else 0. */
int utf8_make_valid(char **s);
