/* mount-dbus.c: the Manager's Mount and Unmount methods, and the mount step MountImage shares. */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "auth.h"
#include "bus-options.h"
#include "log.h"
#include "loop.h"
#include "loopd-bus.h"
#include "manager-dbus.h"
#include "mount.h"
#include "probe.h"
#include "strv.h"

int bus_parse_loop_node(
        const char *s, unsigned *ret_number, unsigned *ret_partition, dev_t *ret_devnum, sd_bus_error *error)
{
        unsigned number, partition, maj, min;
        char path[128], buf[32];
        FILE *f;

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
        if (partition == 0)
                snprintf(path, sizeof(path), "/sys/block/loop%u/dev", number);
        else
                snprintf(path, sizeof(path), "/sys/block/loop%u/loop%up%u/dev", number, number, partition);
        f = fopen(path, "re");
        if (!f)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "node: %s does not exist", s);
        if (!fgets(buf, sizeof(buf), f) || sscanf(buf, "%u:%u", &maj, &min) != 2) {
                fclose(f);
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "node: %s does not exist", s);
        }
        fclose(f);

        *ret_number = number;
        *ret_partition = partition;
        *ret_devnum = makedev(maj, min);
        return 0;
}

/* The user's name (the directory under the media dir) and primary group; a uid without a passwd entry
 * gets its number as name and gid = uid. */
static int user_of(uid_t uid, char **ret_name, gid_t *ret_gid)
{
        struct passwd pw, *result = NULL;
        char buf[4096];

        *ret_gid = (gid_t)uid;
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &result) == 0 && result) {
                *ret_gid = result->pw_gid;
                if (!isempty(result->pw_name) && !strchr(result->pw_name, '/') &&
                        result->pw_name[0] != '.') {
                        *ret_name = strdup(result->pw_name);
                        return *ret_name ? 0 : -ENOMEM;
                }
        }
        if (asprintf(ret_name, "%u", (unsigned)uid) < 0)
                return -ENOMEM;
        return 0;
}

int manager_mount_node(Manager *m, uid_t uid, const char *node, dev_t devnum, const char *fstype,
        const char *options, bool read_only, char **ret_mount_point, sd_bus_error *error)
{
        _cleanup_free_ char *probed_type = NULL, *label = NULL, *uuid = NULL, *final_options = NULL,
                            *bad = NULL, *user = NULL, *name = NULL, *mount_point = NULL;
        _cleanup_strv_free_ char **targets = NULL;
        int r;

        r = mount_find_targets(devnum, node, &targets);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to read the mount table");
        if (targets && targets[0])
                return sd_bus_error_setf(
                        error, LOOPD_ERROR_ALREADY_MOUNTED, "%s is already mounted on %s", node, targets[0]);

        r = probe_filesystem(node, &probed_type, &label, &uuid);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to probe the filesystem");
        if (isempty(fstype))
                fstype = probed_type;
        if (isempty(fstype))
                return sd_bus_error_setf(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM,
                        "%s carries no filesystem that could be recognised", node);
        bool fuse;
        r = mount_pick_driver(fstype, &fuse);
        if (r < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM,
                        "Neither the kernel nor an installed FUSE driver can mount %s (%.32s)", node,
                        fstype);

        gid_t gid;
        r = user_of(uid, &user, &gid);
        if (r < 0)
                return r;

        r = mount_options_build(fstype, options, read_only, fuse, uid, gid, node, &final_options, &bad);
        if (r == -EINVAL)
                return sd_bus_error_setf(
                        error, LOOPD_ERROR_INVALID_ARGUMENT, "options: '%s' is not allowed", strempty(bad));
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to build the mount options");

        if (mount_name_sanitize(label, &name) < 0 && mount_name_sanitize(uuid, &name) < 0) {
                name = strdup("disk");
                if (!name)
                        return -ENOMEM;
        }
        r = mount_point_create(m->media_dir, user, uid, gid, name, &mount_point);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to create the mount point");

        r = mount_filesystem(node, mount_point, fstype, final_options, fuse);
        if (r < 0) {
                (void)mount_point_remove(m->media_dir, mount_point);
                if (r == -EPROTONOSUPPORT)
                        return sd_bus_error_setf(error, LOOPD_ERROR_UNSUPPORTED_FILESYSTEM,
                                "No driver can mount %s (%s)", node, fstype);
                return sd_bus_error_setf(error, LOOPD_ERROR_FAILED, "Failed to mount %s (%s): %s", node,
                        fstype, strerror(-r));
        }

        log_info("Mounted %s (%s) on %s for uid %u", node, fstype, mount_point, (unsigned)uid);
        *ret_mount_point = TAKE_PTR(mount_point);
        return 0;
}

/* Mount's and Unmount's polkit check: the caller's own device (loopd's record of loopN) needs `mount`,
 * anything else manage-others. Returns 1 to go on, with *ret_uid the caller; 0 when the call was answered
 * (NotFound) or waits for polkit; < 0 on error. */
static int authorize_node(Manager *m, sd_bus_message *message, unsigned number, const char *const *details,
        uid_t *ret_uid, sd_bus_error *error)
{
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        const char *action = LOOPD_ACTION_MANAGE_OTHERS;
        ManagedDevice *d;
        uid_t uid;
        int r;

        r = auth_caller(message, &uid, error);
        if (r < 0)
                return r;
        if (loop_get_info(number, &info) < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);
        d = manager_find_device(m, number, info->diskseq);
        if (d && d->owner == uid)
                action = LOOPD_ACTION_MOUNT;

        r = auth_check(m->auth, message, uid, action, details, 0, error);
        if (r <= 0)
                return r;
        *ret_uid = uid;
        return 1;
}

int method_mount(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
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
        r = bus_parse_loop_node(node, &number, &partition, &devnum, error);
        if (r < 0)
                return r;
        /* The kernel's path, whatever the caller's spelling ("loopNpM"): for polkit rules and the mount. */
        char canonical[64];
        if (partition)
                snprintf(canonical, sizeof(canonical), "/dev/loop%up%u", number, partition);
        else
                snprintf(canonical, sizeof(canonical), "/dev/loop%u", number);

        const char *details[] = { "device", canonical, "fstype", strempty(fstype), "options",
                strempty(options), "read_only", read_only ? "true" : "false", NULL };
        r = authorize_node(m, message, number, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = loop_get_info(number, &info);
        if (r < 0)
                return sd_bus_error_setf(error, LOOPD_ERROR_NOT_FOUND, "loop%u is not attached", number);

        r = manager_mount_node(m, uid, canonical, devnum, fstype, options, read_only || info->read_only,
                &mount_point, error);
        if (r < 0)
                return r;
        manager_arm_autoclear(m, number, info->diskseq, false);
        return sd_bus_reply_method_return(message, "s", mount_point);
}

int method_unmount(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
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
        r = authorize_node(m, message, number, details, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = unmount_filesystem(target);
        if (r == -EBUSY)
                return sd_bus_error_setf(
                        error, LOOPD_ERROR_BUSY, "%s is busy: a process has files open there", target);
        if (r < 0)
                return bus_reply_errno(error, r, "Failed to unmount");
        manager_remove_mount_point(m, target);
        log_info("Unmounted %s", target);

        manager_release_if_autoclear(m, number);
        return sd_bus_reply_method_return(message, NULL);
}
