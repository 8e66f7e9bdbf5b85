/* test-format.c: unit tests of common/format.c: sizes, display escaping and the JSON writer. */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

#include "format.h"

static void assert_size(const char *s, uint64_t expected)
{
        uint64_t v = 0;
        int r = parse_size(s, &v);

        if (r != 0)
                g_error("parse_size(\"%s\") = %d, expected %" G_GUINT64_FORMAT, s, r, expected);
        g_assert_cmpuint(v, ==, expected);
}

static void assert_size_fails(const char *s, int expected)
{
        uint64_t v = 4242;
        int r = parse_size(s, &v);

        if (r != expected)
                g_error("parse_size(\"%s\") = %d, expected %d", s, r, expected);
        g_assert_cmpuint(v, ==, 4242); /* untouched on failure */
}

static void test_parse_size_plain_bytes(void)
{
        assert_size("0", 0);
        assert_size("512", 512);
        assert_size("4096", 4096);
        assert_size("512B", 512);
        assert_size("512b", 512);
        assert_size("18446744073709551615", UINT64_MAX);
}

static void test_parse_size_binary_suffixes(void)
{
        assert_size("1K", 1024);
        assert_size("1k", 1024);
        assert_size("4KiB", 4096);
        assert_size("1M", 1048576);
        assert_size("1MiB", 1048576);
        assert_size("1mib", 1048576);
        assert_size("2G", UINT64_C(2) << 30);
        assert_size("3GiB", UINT64_C(3) << 30);
        assert_size("1T", UINT64_C(1) << 40);
        assert_size("1TiB", UINT64_C(1) << 40);
        assert_size("1P", UINT64_C(1) << 50);
        assert_size("15E", UINT64_C(15) << 60);
        assert_size("0M", 0);
}

static void test_parse_size_decimal_suffixes(void)
{
        assert_size("1KB", 1000);
        assert_size("1kB", 1000);
        assert_size("1MB", 1000000);
        assert_size("1mb", 1000000);
        assert_size("5GB", UINT64_C(5000000000));
        assert_size("2TB", UINT64_C(2000000000000));
        assert_size("18EB", UINT64_C(18000000000000000000));
}

static void test_parse_size_rejects_garbage(void)
{
        static const char *const bad[] = {
                "",
                "K",
                "-1",
                "+1",
                " 1",
                "1 ",
                "1.5M",
                "1,5M",
                "0x10",
                "1X",
                "1KK",
                "1KiBB",
                "1Ki",
                "1iB",
                "1MBs",
                "1M ",
                "abc",
                "1e3",
                "1BB",
                "1Bi",
                "1 K",
                "M1",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                assert_size_fails(bad[i], -EINVAL);

        uint64_t v;
        g_assert_cmpint(parse_size(NULL, &v), ==, -EINVAL);
}

static void test_parse_size_overflow_is_erange(void)
{
        assert_size_fails("18446744073709551616", -ERANGE); /* UINT64_MAX + 1 */
        assert_size_fails("99999999999999999999999", -ERANGE);
        assert_size_fails("16E", -ERANGE);
        assert_size_fails("16EiB", -ERANGE);
        assert_size_fails("17179869184G", -ERANGE); /* 2^34 GiB = 2^64 */
        assert_size_fails("19EB", -ERANGE);
        assert_size("17179869183G", UINT64_C(17179869183) << 30);
}

static void assert_bytes(uint64_t bytes, const char *expected)
{
        char buf[FORMAT_BYTES_MAX];

        g_assert_cmpstr(format_bytes(buf, bytes), ==, expected);
}

static void test_format_bytes_lsblk_style(void)
{
        assert_bytes(0, "0B");
        assert_bytes(1, "1B");
        assert_bytes(512, "512B");
        assert_bytes(1023, "1023B");
        assert_bytes(1024, "1K");
        assert_bytes(1536, "1.5K");
        assert_bytes(4096, "4K");
        assert_bytes(UINT64_C(100) << 20, "100M");
        assert_bytes(UINT64_C(1) << 30, "1G");
        assert_bytes((UINT64_C(3) << 30) / 2, "1.5G");
        /* A "1 TB" disk, as lsblk shows it. */
        assert_bytes(UINT64_C(1000204886016), "931.5G");
        assert_bytes(UINT64_C(1) << 40, "1T");
        assert_bytes(UINT64_C(1) << 50, "1P");
        assert_bytes(UINT64_C(1) << 60, "1E");
        assert_bytes(UINT64_MAX, "16E");
}

static void test_format_bytes_rounds_whole_remainder(void)
{
        /* 1.95M: the tenth comes from all of the remainder, not only its top 1024ths. */
        assert_bytes(UINT64_C(2044724), "2M"); /* 1.950000(4)M: the low 820 bytes tip it over */
        assert_bytes(UINT64_C(2044723), "1.9M"); /* 1.949999(8)M */
        assert_bytes(UINT64_C(1048576) + 104857, "1.1M"); /* 1.09999... */
        assert_bytes(UINT64_C(1048576) + 52428, "1M"); /* 1.04999... */
        assert_bytes(UINT64_C(1048576) + 52429, "1.1M"); /* 1.05000... */
        /* Rounding up past 1023.9 moves to the next unit. */
        assert_bytes(UINT64_C(1048575), "1M");
        assert_bytes(UINT64_C(1024) * 1024 * 1024 - 1, "1G");
        assert_bytes(1023 * 1024 + 921, "1023.9K");
}

static void test_utf8_sequences(void)
{
        g_assert_cmpuint(utf8_sequence_length("a"), ==, 1);
        g_assert_cmpuint(utf8_sequence_length("\xc3\xa9"), ==, 2); /* é */
        g_assert_cmpuint(utf8_sequence_length("\xe2\x82\xac"), ==, 3); /* € */
        g_assert_cmpuint(utf8_sequence_length("\xf0\x9f\x92\xbe"), ==, 4); /* floppy disk */
        g_assert_cmpuint(utf8_sequence_length("\x80"), ==, 0); /* stray continuation */
        g_assert_cmpuint(utf8_sequence_length("\xc0\xaf"), ==, 0); /* overlong '/' */
        g_assert_cmpuint(utf8_sequence_length("\xe0\x80\xaf"), ==, 0); /* overlong '/' */
        g_assert_cmpuint(utf8_sequence_length("\xed\xa0\x80"), ==, 0); /* surrogate */
        g_assert_cmpuint(utf8_sequence_length("\xf4\x90\x80\x80"), ==, 0); /* beyond U+10FFFF */
        g_assert_cmpuint(utf8_sequence_length("\xc3"), ==, 0); /* truncated */
        g_assert_cmpuint(utf8_sequence_length("\xe2\x82"), ==, 0);
        g_assert_cmpuint(utf8_sequence_length("\xff"), ==, 0);
}

static void assert_escape(const char *s, const char *expected)
{
        char *e = display_escape(s);

        g_assert_nonnull(e);
        g_assert_cmpstr(e, ==, expected);
        free(e);
}

static void test_display_escape_keeps_lines_and_terminals_safe(void)
{
        assert_escape(NULL, "");
        assert_escape("/home/user/disk.img", "/home/user/disk.img");
        assert_escape("Café €", "Café €");
        assert_escape("a\nb", "a\\x0ab");
        assert_escape("a\tb\r", "a\\x09b\\x0d");
        assert_escape("\x1b[2Jgone", "\\x1b[2Jgone"); /* ANSI escape */
        assert_escape("x\xc2\x9b"
                      "31m",
                "x\\xc2\\x9b31m"); /* C1 CSI */
        assert_escape("del\x7f", "del\\x7f");
        assert_escape("latin1 \xe9t\xe9", "latin1 \\xe9t\\xe9");
        assert_escape("cut \xe2\x82", "cut \\xe2\\x82");
}

static void test_display_width_counts_code_points(void)
{
        g_assert_cmpuint(display_width(""), ==, 0);
        g_assert_cmpuint(display_width("abc"), ==, 3);
        g_assert_cmpuint(display_width("Café"), ==, 4);
        g_assert_cmpuint(display_width("\\x0a"), ==, 4);
}

/* Runs fn with a JsonWriter on a memory stream and returns what it wrote. */
static char *json_capture(void (*fn)(JsonWriter *w))
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        JsonWriter w;

        g_assert_nonnull(f);
        json_init(&w, f);
        fn(&w);
        g_assert_cmpint(fclose(f), ==, 0);
        return buf;
}

static void write_nested(JsonWriter *w)
{
        json_begin_object(w);
        json_key(w, "device");
        json_string(w, "/dev/loop3");
        json_key(w, "partitions");
        json_begin_array(w);
        json_begin_object(w);
        json_key(w, "number");
        json_uint(w, 1);
        json_key(w, "size");
        json_uint(w, UINT64_MAX);
        json_key(w, "read_only");
        json_bool(w, true);
        json_key(w, "managed");
        json_bool(w, false);
        json_key(w, "label");
        json_string(w, NULL);
        json_end_object(w);
        json_begin_object(w);
        json_end_object(w);
        json_end_array(w);
        json_key(w, "empty");
        json_begin_array(w);
        json_end_array(w);
        json_end_object(w);
}

static void test_json_nested_values(void)
{
        char *s = json_capture(write_nested);

        g_assert_cmpstr(s, ==,
                "{\"device\": \"/dev/loop3\", \"partitions\": [{\"number\": 1, \"size\": 18446744073709551615, "
                "\"read_only\": true, \"managed\": false, \"label\": \"\"}, {}], \"empty\": []}\n");
        free(s);
}

static void write_lines(JsonWriter *w)
{
        for (int i = 0; i < 3; i++) {
                json_begin_object(w);
                json_key(w, "event");
                json_uint(w, (uint64_t)i);
                json_end_object(w);
        }
        json_begin_array(w);
        json_end_array(w);
}

static void test_json_top_level_values_one_per_line(void)
{
        char *s = json_capture(write_lines);

        /* What monitor --json relies on: no separator between top-level values, one per line. */
        g_assert_cmpstr(s, ==, "{\"event\": 0}\n{\"event\": 1}\n{\"event\": 2}\n[]\n");
        free(s);
}

static void write_strings(JsonWriter *w)
{
        json_begin_array(w);
        json_string(w, "quote\" backslash\\ slash/");
        json_string(w, "nl\n tab\t cr\r bell\a esc\x1b del\x7f");
        json_string(w, "Café € \xf0\x9f\x92\xbe");
        json_string(w, "latin1 \xe9t\xe9 cut \xe2\x82");
        json_end_array(w);
}

static void test_json_string_escaping(void)
{
        char *s = json_capture(write_strings);

        g_assert_cmpstr(s, ==,
                "[\"quote\\\" backslash\\\\ slash/\", "
                "\"nl\\n tab\\t cr\\r bell\\u0007 esc\\u001b del\\u007f\", "
                "\"Café € \xf0\x9f\x92\xbe\", "
                "\"latin1 \\ufffdt\\ufffd cut \\ufffd\\ufffd\"]\n");
        g_assert_true(g_utf8_validate(s, -1, NULL));
        free(s);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/format/parse-size/plain-bytes", test_parse_size_plain_bytes);
        g_test_add_func(
                "/format/parse-size/binary-suffixes-are-powers-of-1024", test_parse_size_binary_suffixes);
        g_test_add_func(
                "/format/parse-size/B-suffixes-are-powers-of-1000", test_parse_size_decimal_suffixes);
        g_test_add_func("/format/parse-size/rejects-signs-spaces-fractions-and-unknown-suffixes",
                test_parse_size_rejects_garbage);
        g_test_add_func("/format/parse-size/overflow-is-erange", test_parse_size_overflow_is_erange);
        g_test_add_func("/format/format-bytes/lsblk-style", test_format_bytes_lsblk_style);
        g_test_add_func(
                "/format/format-bytes/rounds-the-whole-remainder", test_format_bytes_rounds_whole_remainder);
        g_test_add_func("/format/utf8/sequence-lengths-reject-malformed", test_utf8_sequences);
        g_test_add_func("/format/display-escape/control-characters-and-bad-utf8-become-hex",
                test_display_escape_keeps_lines_and_terminals_safe);
        g_test_add_func("/format/display-width/counts-code-points", test_display_width_counts_code_points);
        g_test_add_func("/format/json/nested-objects-and-arrays", test_json_nested_values);
        g_test_add_func(
                "/format/json/top-level-values-one-per-line", test_json_top_level_values_one_per_line);
        g_test_add_func("/format/json/strings-escaped-and-always-utf8", test_json_string_escaping);

        return g_test_run();
}
