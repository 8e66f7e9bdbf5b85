/* mount-dbus.c: the Manager's Mount and Unmount methods. */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "auth.h"
#include "bus-context.h"
#include "bus-options.h"
#include "bus-util.h"
#include "engine.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "mount.h"
#include "probe.h"
#include "registry.h"
#include "strv.h"

int method_mount(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        Manager *m = b->manager;
        EngineError e = {};
        _cleanup_free_ char *fstype = NULL, *options = NULL, *mount_point = NULL;
        bool read_only = false;
        const OptionSpec specs[] = { { "fstype", OPTION_STRING, &fstype },
                { "options", OPTION_STRING, &options }, { "read-only", OPTION_BOOLEAN, &read_only }, {} };
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        unsigned number, partition;
        const char *node;
        dev_t devnum;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "s", &node);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        if (fstype && strlen(fstype) > 32) /* not quoted, see bus_parse_loop_node() */
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "fstype: too long for a filesystem loopd mounts");
        if (fstype && (isempty(fstype) || strpbrk(fstype, ",/\n")))
                return sd_bus_error_setf(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "fstype: '%s' is not a filesystem loopd mounts", fstype);
        if (options && (strlen(options) > 4096 || strchr(options, '\n')))
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "options: must be one line of at most 4096 bytes");
        /* Who calls, before anything is read from the kernel: a new connection's first call is dispatched
         * again once the bus said, and what was read before would be read twice. */
        r = auth_caller(b->auth, message, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = bus_parse_loop_node(node, &number, &partition, &devnum, error);
        if (r < 0)
                return r;
        /* The kernel's path, whatever the caller's spelling ("loopNpM"): for polkit rules and the mount. */
        char canonical[LOOP_NODE_MAX];
        loop_node_format(canonical, number, partition);

        const char *details[] = { "device", canonical, "fstype", strempty(fstype), "options",
                strempty(options), "read_only", read_only ? "true" : "false", NULL };
        r = bus_authorize_node(b, message, number, LOOPD_ACTION_MOUNT, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        /* Read-only and the incarnation, from the kernel now (sysfs: the device is not opened). */
        r = loop_get_info_brief(number, &info);
        if (r < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);

        r = engine_mount_node(
                m, uid, canonical, devnum, fstype, options, read_only || info->read_only, &mount_point, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        registry_arm_autoclear(m->registry, number, info->diskseq, false);
        return sd_bus_reply_method_return(message, "s", mount_point);
}

int method_unmount(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Bus *b = userdata;
        EngineError e = {};
        const OptionSpec specs[] = { {} };
        _cleanup_free_ char *source = NULL, *target = NULL;
        _cleanup_strv_free_ char **targets = NULL;
        unsigned number, partition;
        const char *arg;
        dev_t devnum;
        uid_t uid;
        int r;

        r = sd_bus_message_read(message, "s", &arg);
        if (r < 0)
                return r;
        r = bus_read_options(message, specs, error);
        if (r < 0)
                return r;
        if (isempty(arg) || strlen(arg) > 4096 || arg[0] != '/')
                return sd_bus_error_set(error, LOOPD_ERROR_INVALID_ARGUMENT,
                        "target: must be a device node or an absolute mount point path");
        /* Who calls, before the mount table is read: see method_mount(). */
        r = auth_caller(b->auth, message, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (strncmp(arg, "/dev/", 5) == 0) {
                r = bus_parse_loop_node(arg, &number, &partition, &devnum, error);
                if (r < 0)
                        return r;
                r = mount_find_targets(devnum, arg, &targets);
                if (r < 0)
                        return bus_reply_errno(error, r, "Failed to read the mount table");
                if (!targets || !targets[0])
                        return sd_bus_error_setf(error, LOOPD_ERROR_NOT_MOUNTED, "%s is not mounted", arg);
                target = strdup(targets[0]);
                if (!target)
                        return -ENOMEM;
        } else {
                r = mount_find_source(arg, &source, NULL);
                if (r == -ENOENT)
                        return sd_bus_error_setf(
                                error, LOOPD_ERROR_NOT_MOUNTED, "%.4096s is not a mount point", arg);
                if (r < 0)
                        return bus_reply_errno(error, r, "Failed to read the mount table");
                r = bus_parse_loop_node(source, &number, &partition, &devnum, error);
                if (r < 0)
                        return r;
                target = strdup(arg);
                if (!target)
                        return -ENOMEM;
                /* As the mount table spells it ("/run/media/u/x/" is "/run/media/u/x"): the directory is
                 * removed below by that name. */
                for (size_t len = strlen(target); len > 1 && target[len - 1] == '/';)
                        target[--len] = '\0';
        }

        const char *details[] = { "device", source ?: arg, "mount_point", target, NULL };
        r = bus_authorize_node(b, message, number, LOOPD_ACTION_MOUNT, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = engine_unmount(b->manager, number, target, &e);
        if (r < 0)
                return bus_error_from_engine(error, r, &e);
        return sd_bus_reply_method_return(message, NULL);
}
