/* errors.c: loopd's error messages in the words of loopctl's command line. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "loopd-bus.h"

/* Words of the D-Bus interface and the command-line words for them, replaced wherever they appear. */
static const struct {
        const char *bus, *cli;
} phrases[] = {
        { "with the unmount option", "with --unmount" },
        { "the unmount option", "--unmount" },
        { "pass sector-size explicitly", "pass --sector-size" },
        { "pass shared: true", "use --shared" },
        { "writable: true was asked", "--writable was asked" },
};

/* A message that starts with an option's key names the command line's option: "size-limit: ..." is about
 * --size. Only keys that mean one option whatever the call ("offset" is attach's --offset but partition
 * add's --start). */
static const struct {
        const char *key, *option;
} keys[] = {
        { "size-limit: ", "--size: " },
        { "sector-size: ", "--sector-size: " },
        { "fstype: ", "--fstype: " },
        { "options: ", "--options: " },
        { "label: ", "--label: " },
        { "uuid: ", "--uuid: " },
};

/* "device: 'X' is not a loop device (...)" -> "not a loop device: X (...)"; the same for "node:". */
static char *not_a_loop_device(const char *message)
{
        static const char *const shapes[][2] = {
                { "device: '", "' is not a loop device" },
                { "node: '", "' is not a loop device or loop partition" },
        };
        char *text;

        for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
                const char *what, *end;

                if (!startswith(message, shapes[i][0]))
                        continue;
                what = message + strlen(shapes[i][0]);
                end = strstr(what, shapes[i][1]);
                if (!end)
                        continue;
                if (asprintf(&text, "%s: %.*s%s", shapes[i][1] + strlen("' is "), (int)(end - what), what,
                            end + strlen(shapes[i][1])) < 0)
                        return NULL;
                return text;
        }
        return strdup(message);
}

/* polkit said no: which action, and what can make it yes. */
static char *not_authorized(const char *name, const char *message)
{
        static const char *const prefixes[] = { "Not authorized for ", "Authentication is required for " };
        const char *action = NULL, *rest = "";
        char *text;
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(prefixes) && !action; i++)
                if (startswith(message, prefixes[i])) {
                        action = message + strlen(prefixes[i]);
                        n = strcspn(action, ":, ");
                        rest = action[n] == ':' ? action + n : "";
                }
        if (!action || n == 0)
                return strdup(message);

        if (streq(name, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                return asprintf(&text,
                               "polkit action %.*s needs a password, and none could be asked (run it on a "
                               "terminal without --no-ask-password); an administrator can grant it with a "
                               "polkit rule, or log in to a local session",
                               (int)n, action) < 0
                        ? NULL
                        : text;
        return asprintf(&text,
                       "not authorized (polkit action %.*s%s); an administrator can grant it with a polkit "
                       "rule, or log in to a local session",
                       (int)n, action, rest) < 0
                ? NULL
                : text;
}

static char *replace_all(char *s, const char *from, const char *to)
{
        char *at;

        while ((at = strstr(s, from))) {
                char *t;

                if (asprintf(&t, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) < 0) {
                        free(s);
                        return NULL;
                }
                free(s);
                s = t;
        }
        return s;
}

char *bus_error_text(const char *name, const char *message)
{
        char *text;

        if (!message)
                return strdup(strempty(name));
        if (streq_ptr(name, LOOPD_ERROR_NOT_AUTHORIZED) ||
                streq_ptr(name, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                return not_authorized(name, message);

        text = not_a_loop_device(message);
        for (size_t i = 0; text && i < ELEMENTSOF(keys); i++)
                if (startswith(text, keys[i].key)) {
                        char *t;

                        if (asprintf(&t, "%s%s", keys[i].option, text + strlen(keys[i].key)) < 0)
                                t = NULL;
                        free(text);
                        text = t;
                        break;
                }
        for (size_t i = 0; text && i < ELEMENTSOF(phrases); i++)
                text = replace_all(text, phrases[i].bus, phrases[i].cli);
        return text;
}
