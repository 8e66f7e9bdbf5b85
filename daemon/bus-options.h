/* bus-options.h: strict reading of a method's a{sv} options: unknown keys and wrong types are refused. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

typedef enum OptionType {
        OPTION_BOOLEAN, /* "b" into bool */
        OPTION_UINT32, /* "u" into uint32_t */
        OPTION_UINT64, /* "t" into uint64_t */
        OPTION_STRING, /* "s" into char * (owned by the caller afterwards) */
} OptionType;

typedef struct OptionSpec {
        const char *key;
        OptionType type;
        void *value;
        bool *seen; /* may be NULL */
} OptionSpec;

/* Reads an a{sv} from message into the specs (terminated by a { NULL } entry). An unknown key, a value of
 * another type or a key given twice fails with org.freedesktop.DBus.Error.InvalidArgs naming the key. */
int bus_read_options(sd_bus_message *message, const OptionSpec *specs, sd_bus_error *error);
