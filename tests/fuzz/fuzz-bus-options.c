/* fuzz-bus-options.c: bus_read_options(), the strict reading of a method's a{sv} (Attach's and Mount's
 * keys): any key, any value type, nested containers, repeats. Whatever arrives, it either fills exactly the
 * options given with the right types or fails with InvalidArgs naming the key; it never leaks or reads
 * outside the message.
 * Input: a little program that builds the a{sv}: per entry, one byte picks the key and one the value's
 * type, then the value's bytes. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus-options.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static sd_bus *bus;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        int fds[2];

        /* sd-bus makes messages only on a bus that has been started: one end of a socket pair, never used
         * to send anything. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0 || sd_bus_new(&bus) < 0 ||
                sd_bus_set_fd(bus, fds[0], fds[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        return 0;
}

typedef struct Input {
        const uint8_t *data;
        size_t size;
} Input;

static uint8_t take_byte(Input *in)
{
        if (in->size == 0)
                return 0;
        in->size--;
        return *in->data++;
}

static uint64_t take_u64(Input *in, unsigned bytes)
{
        uint64_t v = 0;
        for (unsigned i = 0; i < bytes; i++)
                v |= (uint64_t)take_byte(in) << (8 * i);
        return v;
}

/* A string of up to 31 input bytes (sd-bus refuses invalid UTF-8 and embedded NULs itself). */
static void take_string(Input *in, char buf[static 32])
{
        size_t n = take_byte(in) % 32;
        size_t i;

        for (i = 0; i < n && in->size > 0; i++)
                buf[i] = (char)take_byte(in);
        buf[i] = '\0';
}

static const char *const keys[] = { "read-only", "offset", "size-limit", "sector-size", "partition-scan",
        "autoclear", "direct-io", "fstype", "options", "unmount", "writable", "", "Offset", "offset\n",
        "read-only ", "bogus" };

/* Appends one value of the type kind picks, as the variant's contents. */
static int append_value(sd_bus_message *m, Input *in, uint8_t kind, unsigned depth)
{
        char s[32];

        switch (kind % 16) {
        case 0:
                return sd_bus_message_append(m, "v", "b", (int)(take_byte(in) & 1));
        case 1:
                return sd_bus_message_append(m, "v", "u", (uint32_t)take_u64(in, 4));
        case 2:
                return sd_bus_message_append(m, "v", "t", take_u64(in, 8));
        case 3:
                take_string(in, s);
                return sd_bus_message_append(m, "v", "s", s);
        case 4:
                return sd_bus_message_append(m, "v", "x", (int64_t)take_u64(in, 8));
        case 5:
                return sd_bus_message_append(m, "v", "i", (int32_t)take_u64(in, 4));
        case 6:
                return sd_bus_message_append(m, "v", "y", take_byte(in));
        case 7:
                return sd_bus_message_append(m, "v", "q", (uint16_t)take_u64(in, 2));
        case 8:
                return sd_bus_message_append(m, "v", "d", (double)take_u64(in, 8));
        case 9:
                return sd_bus_message_append(m, "v", "o", "/org/loopd1");
        case 10:
                return sd_bus_message_append(m, "v", "g", "a{sv}");
        case 11:
                return sd_bus_message_append(
                        m, "v", "au", 2, (uint32_t)take_byte(in), (uint32_t)take_byte(in));
        case 12:
                return sd_bus_message_append(m, "v", "(bt)", (int)(take_byte(in) & 1), take_u64(in, 8));
        case 13:
                take_string(in, s);
                return sd_bus_message_append(m, "v", "as", 1, s);
        case 14: {
                /* A variant in a variant. */
                int r = sd_bus_message_open_container(m, 'v', "v");
                if (r < 0)
                        return r;
                r = append_value(m, in, depth < 4 ? take_byte(in) : 0, depth + 1);
                if (r < 0)
                        return r;
                return sd_bus_message_close_container(m);
        }
        default: {
                /* An a{sv} in a variant. */
                int r = sd_bus_message_open_container(m, 'v', "a{sv}");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "{sv}");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "offset");
                if (r >= 0)
                        r = append_value(m, in, depth < 4 ? take_byte(in) : 0, depth + 1);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r;
        }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL;
        Input in = { data, size };
        bool read_only = false, partition_scan = true, autoclear = false, direct_io = false;
        bool read_only_seen = false, offset_seen = false, fstype_seen = false;
        uint64_t offset = 0, size_limit = 0;
        uint32_t sector_size = 0;
        char *fstype = NULL, *options = NULL;
        const OptionSpec specs[] = { { "read-only", OPTION_BOOLEAN, &read_only, &read_only_seen },
                { "offset", OPTION_UINT64, &offset, &offset_seen },
                { "size-limit", OPTION_UINT64, &size_limit }, { "sector-size", OPTION_UINT32, &sector_size },
                { "partition-scan", OPTION_BOOLEAN, &partition_scan },
                { "autoclear", OPTION_BOOLEAN, &autoclear }, { "direct-io", OPTION_BOOLEAN, &direct_io },
                { "fstype", OPTION_STRING, &fstype, &fstype_seen }, { "options", OPTION_STRING, &options },
                {} };
        int r;

        if (sd_bus_message_new_method_call(
                    bus, &m, "org.loopd1", "/org/loopd1", "org.loopd1.Manager", "Attach") < 0)
                abort();
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (unsigned i = 0; r >= 0 && in.size > 0 && i < 64; i++) {
                char key[32];
                uint8_t k = take_byte(&in);

                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r < 0)
                        break;
                if (k < 0xf0)
                        r = sd_bus_message_append(m, "s", keys[k % (sizeof(keys) / sizeof(keys[0]))]);
                else {
                        take_string(&in, key);
                        r = sd_bus_message_append(m, "s", key);
                }
                if (r >= 0)
                        r = append_value(m, &in, take_byte(&in), 0);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r < 0) {
                /* sd-bus refused to build it (invalid UTF-8, a NUL): not a message anyone can send. */
                sd_bus_message_unref(m);
                return 0;
        }
        if (sd_bus_message_close_container(m) < 0 || sd_bus_message_seal(m, 1, 0) < 0 ||
                sd_bus_message_rewind(m, true) < 0)
                abort();

        r = bus_read_options(m, specs, &error);
        if (r >= 0) {
                fuzz_check(!sd_bus_error_is_set(&error), "success with an error set");
                fuzz_check(!fstype_seen || fstype, "fstype seen but not set");
                fuzz_check(!fstype || fstype_seen, "fstype set but not seen");
                fuzz_check(sd_bus_message_at_end(m, true) > 0, "options left unread");
        } else if (sd_bus_error_is_set(&error)) {
                fuzz_check(sd_bus_error_has_name(&error, SD_BUS_ERROR_INVALID_ARGS), "error %s", error.name);
                fuzz_check(error.message && fuzz_utf8_valid(error.message, strlen(error.message)),
                        "error message is not UTF-8: the reply could not be sent");
        } else
                fuzz_fail("bus_read_options() failed (%d) without an error", r);

        sd_bus_error_free(&error);
        free(fstype);
        free(options);
        sd_bus_message_unref(m);
        return 0;
}
