/* bus-options.c: strict reading of a method's a{sv} options. */
#include "bus-options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

static const char *option_signature(OptionType type)
{
        switch (type) {
        case OPTION_BOOLEAN:
                return "b";
        case OPTION_UINT32:
                return "u";
        case OPTION_UINT64:
                return "t";
        case OPTION_STRING:
                return "s";
        }
        return NULL;
}

static int read_one(sd_bus_message *message, const OptionSpec *spec)
{
        switch (spec->type) {
        case OPTION_BOOLEAN: {
                int b;
                int r = sd_bus_message_read_basic(message, 'b', &b);
                if (r < 0)
                        return r;
                *(bool *)spec->value = b;
                return 0;
        }
        case OPTION_UINT32:
                return sd_bus_message_read_basic(message, 'u', spec->value);
        case OPTION_UINT64:
                return sd_bus_message_read_basic(message, 't', spec->value);
        case OPTION_STRING: {
                const char *s;
                int r = sd_bus_message_read_basic(message, 's', &s);
                if (r < 0)
                        return r;
                char *copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **)spec->value);
                *(char **)spec->value = copy;
                return 0;
        }
        }
        return -EINVAL;
}

int bus_read_options(sd_bus_message *message, const OptionSpec *specs, sd_bus_error *error)
{
        uint64_t seen_mask = 0;
        int r;

        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        if (r < 0)
                return r;

        for (;;) {
                const char *key, *contents;
                const OptionSpec *spec = NULL;
                size_t index = 0;
                char type;

                r = sd_bus_message_enter_container(message, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;

                r = sd_bus_message_read_basic(message, 's', &key);
                if (r < 0)
                        return r;

                for (const OptionSpec *s = specs; s->key; s++, index++)
                        if (streq(s->key, key)) {
                                spec = s;
                                break;
                        }
                if (!spec)
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option '%s'", key);
                if (index < 64 && (seen_mask & (UINT64_C(1) << index)))
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS, "Option '%s' given twice", key);
                if (index < 64)
                        seen_mask |= UINT64_C(1) << index;

                r = sd_bus_message_peek_type(message, &type, &contents);
                if (r < 0)
                        return r;
                if (type != 'v' || !streq(contents, option_signature(spec->type)))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                "Option '%s' must be of type '%s', got '%s'", key,
                                option_signature(spec->type), strempty(contents));

                r = sd_bus_message_enter_container(message, 'v', contents);
                if (r < 0)
                        return r;
                r = read_one(message, spec);
                if (r < 0)
                        return r;
                if (spec->seen)
                        *spec->seen = true;
                r = sd_bus_message_exit_container(message); /* v */
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(message); /* e */
                if (r < 0)
                        return r;
        }

        return sd_bus_message_exit_container(message);
}
