/* fuzz-mount-name.c: mount_name_sanitize(), which turns a filesystem label (written by whoever made the
 * image) into a directory name under /run/media/<user>/. Input: the label. */
#include <errno.h>
#include <string.h>

#include "fuzz-util.h"
#include "mount.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_forbidden(uint32_t cp)
{
        return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == '/' ||
                (cp >= 0x200b && cp <= 0x200f) || cp == 0x2028 || cp == 0x2029 ||
                (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff ||
                (cp >= 0xfff9 && cp <= 0xfffb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *label = fuzz_strndup(data, size), *name = NULL, *again = NULL;
        int r;

        r = mount_name_sanitize(label, &name);
        if (r < 0) {
                fuzz_check(r == -EINVAL, "mount_name_sanitize() returned %d", r);
                free(label);
                return 0;
        }

        size_t n = strlen(name);
        fuzz_check(n > 0 && n <= 64, "name of %zu bytes", n);
        fuzz_check(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, "name is '%s'", name);
        fuzz_check(name[0] != '.' && name[0] != ' ', "name starts with '%c'", name[0]);
        fuzz_check(name[n - 1] != ' ', "name ends with a space");
        fuzz_check(n <= strlen(label), "name (%zu bytes) longer than the label (%zu)", n, strlen(label));
        fuzz_check(fuzz_utf8_valid(name, n), "name is not valid UTF-8");
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t len = fuzz_utf8_next((const unsigned char *)name + i, n - i, &cp);
                fuzz_check(!is_forbidden(cp), "name holds U+%04X", cp);
                i += len;
        }

        /* What comes out is a fixed point: sanitising it again changes nothing. */
        r = mount_name_sanitize(name, &again);
        fuzz_check(r == 0 && strcmp(again, name) == 0, "not idempotent: '%s' -> '%s'", name,
                again ? again : "");

        free(again);
        free(name);
        free(label);
        return 0;
}
