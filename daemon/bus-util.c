/* bus-util.c: what the D-Bus face's files share: error names, UTF-8 repair, loop names from callers, the
 * polkit check of a call on one device. */
#include "bus-util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "loop.h"
#include "loopd-bus.h"
#include "registry.h"
#include "sysfs.h"
#include "utf8.h"

/* Maps a failed operation to the contract's error names; what says what was being done. */
int bus_reply_errno(sd_bus_error *error, int r, const char *what)
{
        const char *name;

        switch (-r) {
        case EBUSY:
                name = LOOPD_ERROR_BUSY;
                break;
        case ENXIO:
        case ENODEV:
        case ENOENT:
        case ESTALE:
                name = LOOPD_ERROR_NOT_FOUND;
                break;
        case EMEDIUMTYPE:
                name = LOOPD_ERROR_UNSUPPORTED_FORMAT;
                break;
        case ETIMEDOUT:
                name = LOOPD_ERROR_TIMEOUT;
                break;
        case EINVAL:
        case EROFS:
        case EFBIG:
        case EOVERFLOW:
                name = LOOPD_ERROR_INVALID_ARGUMENT;
                break;
        default:
                name = LOOPD_ERROR_FAILED;
        }
        return sd_bus_error_setf(error, name, "%s: %s", what, strerror(-r));
}

int bus_parse_loop_name(const char *s, unsigned *ret, sd_bus_error *error)
{
        if (isempty(s))
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT, "device: must not be empty");
        /* Not quoted when too long: a cut could split a UTF-8 character, and sd-bus cannot send an error
         * whose message is not UTF-8 (the caller would wait for its timeout instead). */
        if (strlen(s) > 64)
                return sd_bus_error_set(error, LOOPD_ERROR_NOT_MANAGED,
                        "device: too long for a loop device (expected /dev/loopN or loopN)");
        if (loop_parse_name(s, ret) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_MANAGED,
                        "device: '%s' is not a loop device (expected /dev/loopN or loopN)", s);
        return 0;
}

int bus_parse_loop_node(
        const char *s, unsigned *ret_number, unsigned *ret_partition, dev_t *ret_devnum, sd_bus_error *error)
{
        _cleanup_close_ int sysfd = -EBADF;
        unsigned number, partition;
        dev_t devnum;

        if (isempty(s))
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT, "node: must not be empty");
        /* Not quoted when too long: a cut could split a UTF-8 character, and sd-bus cannot send an error
         * whose message is not UTF-8 (the caller would wait for its timeout instead). */
        if (strlen(s) > 64)
                return sd_bus_error_set(error, LOOPD_ERROR_NOT_MANAGED,
                        "node: too long for a loop device or loop partition; loopd mounts nothing else");
        if (loop_parse_node(s, &number, &partition) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_MANAGED,
                        "node: '%s' is not a loop device or loop partition; loopd mounts nothing else", s);

        /* The kernel's name for the device, from sysfs: never a path a caller could have planted. */
        sysfd = sysfs_open_loop(number, partition);
        if (sysfd < 0 || sysfs_read_devnum(sysfd, NULL, "dev", &devnum) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "node: %s does not exist", s);

        *ret_number = number;
        *ret_partition = partition;
        *ret_devnum = devnum;
        return 0;
}

int bus_error_from_engine(sd_bus_error *error, int r, const EngineError *e)
{
        static const char *const names[] = {
                [ENGINE_FAILED] = LOOPD_ERROR_FAILED,
                [ENGINE_INVALID_ARGUMENT] = LOOPD_ERROR_INVALID_ARGUMENT,
                [ENGINE_NOT_FOUND] = LOOPD_ERROR_NOT_FOUND,
                [ENGINE_NOT_MANAGED] = LOOPD_ERROR_NOT_MANAGED,
                [ENGINE_BUSY] = LOOPD_ERROR_BUSY,
                [ENGINE_LIMIT_EXCEEDED] = LOOPD_ERROR_LIMIT_EXCEEDED,
                [ENGINE_NO_FREE_DEVICE] = LOOPD_ERROR_NO_FREE_DEVICE,
                [ENGINE_UNSUPPORTED_FORMAT] = LOOPD_ERROR_UNSUPPORTED_FORMAT,
                [ENGINE_UNSUPPORTED_FILESYSTEM] = LOOPD_ERROR_UNSUPPORTED_FILESYSTEM,
                [ENGINE_ALREADY_MOUNTED] = LOOPD_ERROR_ALREADY_MOUNTED,
                [ENGINE_NOT_MOUNTED] = LOOPD_ERROR_NOT_MOUNTED,
                [ENGINE_NOTHING_TO_MOUNT] = LOOPD_ERROR_NOTHING_TO_MOUNT,
                [ENGINE_TIMEOUT] = LOOPD_ERROR_TIMEOUT,
                [ENGINE_UNSAFE_IMAGE] = LOOPD_ERROR_UNSAFE_IMAGE,
                [ENGINE_READ_ONLY] = LOOPD_ERROR_READ_ONLY,
        };

        /* Without a message the engine failed below its own checks (out of memory): sd-bus says what r is.
         */
        if (!e->message[0])
                return r;
        /* Messages quote callers' and images' bytes: D-Bus needs valid UTF-8. */
        _cleanup_free_ char *text = strdup(e->message);
        if (!text || utf8_make_valid(&text) < 0)
                return -ENOMEM;
        sd_bus_error_set(
                error, (unsigned)e->kind < ELEMENTSOF(names) ? names[e->kind] : LOOPD_ERROR_FAILED, text);
        return r < 0 ? r : -EIO;
}

char *device_object_path(unsigned number)
{
        char *path;

        if (asprintf(&path, LOOPD_DEVICE_PATH_PREFIX "/loop%u", number) < 0)
                return NULL;
        return path;
}

int bus_authorize_node(Bus *b, sd_bus_message *message, unsigned number, const char *own_action,
        const char *const *details, uid_t *ret_uid, sd_bus_error *error)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        const char *action = LOOPD_ACTION_MANAGE_OTHERS;
        ManagedDevice *d;
        uid_t uid;
        int r;

        assert(own_action);

        r = auth_caller(b->auth, message, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 0;
        /* Which binding loopN is (its diskseq) is all the record is matched by. */
        if (loop_get_identity(number, &info) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);
        d = registry_find_device(b->manager->registry, number, info->diskseq);
        if (d && d->owner == uid)
                action = own_action;

        /* And what the device is bound to: for rules, and so that an answer does not hold for another image
         * the number was bound to meanwhile (auth_check() asks again). polkit's details are D-Bus strings;
         * sysfs has the name's bytes as they are. */
        const char *all[32];
        size_t n = 0;

        r = utf8_make_valid(&info->backing_file);
        if (r < 0)
                return r;
        for (; details && details[n]; n++) {
                assert(n + 2 < ELEMENTSOF(all));
                all[n] = details[n];
        }
        all[n++] = "backing_file";
        all[n++] = registry_device_image(b->manager->registry, info, NULL);
        all[n] = NULL;
        r = auth_check(b->auth, message, uid, action, all, 0, error);
        if (r <= 0)
                return r;
        *ret_uid = uid;
        return 1;
}

int bus_get_loop(const char *device, unsigned *ret_number, LoopInfo **ret, sd_bus_error *error)
{
        int r;

        r = bus_parse_loop_name(device, ret_number, error);
        if (r < 0)
                return r;
        r = loop_get_identity(*ret_number, ret);
        if (r == -ENXIO || r == -ENODEV || r == -ENOENT)
                return sd_bus_error_setf(
                        error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", *ret_number);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to read the loop device's state");
        return 0;
}
