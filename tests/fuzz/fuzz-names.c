/* fuzz-names.c: the device and node names callers send (Detach, ListPartitions, Mount, Unmount) and the
 * UTF-8 repair of strings from images: loop_parse_name(), bus_parse_loop_name(), bus_parse_loop_node()
 * and utf8_make_valid(). Only "[/dev/]loopN" (and "/dev/loopNpM" for nodes) may ever be accepted, and an
 * error message must be sendable (valid UTF-8). Input: the string. */
#include <errno.h>
#include <string.h>

#include "bus-util.h"
#include "fuzz-util.h"
#include "loop.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The grammar, independently: [/dev/]loop(0|[1-9][0-9]*) with N < 2^20, then (nodes only) p[1-9][0-9]*. */
static bool matches(const char *s, bool node, unsigned *ret_number)
{
        unsigned long long n = 0, part = 0;
        const char *p;

        if (strncmp(s, "/dev/", 5) == 0)
                s += 5;
        if (strncmp(s, "loop", 4) != 0)
                return false;
        p = s + 4;
        if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
                return false;
        for (; *p >= '0' && *p <= '9'; p++)
                if ((n = n * 10 + (unsigned)(*p - '0')) >= (1u << 20))
                        return false;
        if (node && *p == 'p') {
                p++;
                if (*p < '1' || *p > '9')
                        return false;
                for (; *p >= '0' && *p <= '9'; p++)
                        if ((part = part * 10 + (unsigned)(*p - '0')) > 65535)
                                return false;
        }
        *ret_number = (unsigned)n;
        return *p == '\0';
}

static void check_error(const sd_bus_error *e)
{
        fuzz_check(sd_bus_error_is_set(e), "failure without an error");
        fuzz_check(e->message && fuzz_utf8_valid(e->message, strlen(e->message)),
                "error message is not UTF-8: the reply could not be sent");
        fuzz_check(strlen(e->message) < 1024, "error message of %zu bytes", strlen(e->message));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = fuzz_strndup(data, size);
        unsigned number = 0, want = 0, partition = 0;
        bool valid_utf8 = fuzz_utf8_valid(s, strlen(s));
        dev_t devnum;
        int r;

        r = loop_parse_name(s, &number);
        bool ok = matches(s, false, &want);
        fuzz_check((r == 0) == ok, "loop_parse_name('%s') = %d", s, r);
        if (r == 0)
                fuzz_check(number == want, "loop_parse_name('%s') gave %u", s, number);

        /* The D-Bus face sees only valid UTF-8 (sd-bus refuses anything else). */
        if (valid_utf8) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                r = bus_parse_loop_name(s, &number, &e);
                if (r < 0)
                        check_error(&e);
                else
                        fuzz_check(ok && number == want, "bus_parse_loop_name('%s') accepted it", s);
                sd_bus_error_free(&e);

                r = bus_parse_loop_node(s, &number, &partition, &devnum, &e);
                if (r < 0)
                        check_error(&e);
                else
                        fuzz_check(
                                matches(s, true, &want) && number == want, "bus_parse_loop_node('%s')", s);
                sd_bus_error_free(&e);
        }

        /* utf8_make_valid() makes anything valid, and leaves valid strings as they are. */
        char *copy = strdup(s);
        if (!copy || utf8_make_valid(&copy) < 0)
                abort();
        fuzz_check(fuzz_utf8_valid(copy, strlen(copy)), "utf8_make_valid() left invalid UTF-8");
        if (valid_utf8)
                fuzz_check(strcmp(copy, s) == 0, "utf8_make_valid() changed a valid string");
        free(copy);
        free(s);
        return 0;
}
