/* engine-mount.c: Mount and Unmount in the engine: the checks, the probe, the mount point and its name, and
 * the mount itself (mount.h). */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-reader.h"
#include "log.h"
#include "mount.h"
#include "probe.h"
#include "registry.h"
#include "strv.h"
#include "watcher.h"

int engine_user_of(uid_t uid, char **ret_name, gid_t *ret_gid)
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

/* What the desktop calls node's mount (x-gvfs-name): the filesystem's label, else the name of the image file
 * the loop device is bound to (as the watcher last saw it, else as the kernel says); NULL when neither is
 * usable. The mount layer makes it safe for an option string. */
static char *display_name_of(Manager *m, const char *node, const char *label)
{
        _cleanup_(loop_info_freep) LoopInfo *read = NULL;
        _cleanup_free_ char *name = NULL;
        const LoopInfo *info = NULL;
        const char *base;
        unsigned number;
        size_t len;

        if (mount_name_sanitize(label, &name) >= 0)
                return TAKE_PTR(name);
        if (loop_parse_node(node, &number, NULL) < 0)
                return NULL;
        if (m->watcher)
                info = watcher_device(m->watcher, number);
        if (!info && loop_get_info(number, &read) >= 0)
                info = read;
        if (!info)
                return NULL;
        /* A virtual disk's image, not its export. */
        const char *backing = registry_device_image(m->registry, info, NULL);
        if (isempty(backing))
                return NULL;
        base = strrchr(backing, '/');
        name = strdup(base ? base + 1 : backing);
        if (!name)
                return NULL;
        /* sysfs names a file unlinked since "PATH (deleted)". */
        len = strlen(name);
        if (len > strlen(" (deleted)") && streq(name + len - strlen(" (deleted)"), " (deleted)"))
                name[len - strlen(" (deleted)")] = '\0';
        return TAKE_PTR(name);
}

/* The filesystem type the watcher's last look at loopN found on devnum (node is loopN or one of its
 * partitions); NULL when it found none or has not looked. */
static const char *expected_fstype(Manager *m, const char *node, dev_t devnum)
{
        const PartitionInfo *parts;
        unsigned number;
        size_t n = 0;

        if (!m->watcher || loop_parse_node(node, &number, NULL) < 0)
                return NULL;
        parts = watcher_device_partitions(m->watcher, number, &n);
        for (size_t i = 0; parts && i < n; i++)
                if (parts[i].devnum == devnum && !isempty(parts[i].fstype))
                        return parts[i].fstype;
        return NULL;
}

int engine_probe_filesystem(Manager *m, const char *node, dev_t devnum, const char *expected,
        char **ret_fstype, char **ret_label, char **ret_uuid)
{
        _cleanup_close_ int fd = probe_open_node(node, devnum);

        if (fd < 0)
                return fd;
        return image_reader_probe_filesystem(m->image_reader, fd, expected, ret_fstype, ret_label, ret_uuid);
}

int engine_mount_node(Manager *m, uid_t uid, const char *node, dev_t devnum, const char *fstype,
        const char *options, bool read_only, char **ret_mount_point, EngineError *e)
{
        _cleanup_free_ char *probed_type = NULL, *label = NULL, *uuid = NULL, *final_options = NULL,
                            *bad = NULL, *user = NULL, *name = NULL, *mount_point = NULL;
        _cleanup_free_ char *display_name = NULL;
        _cleanup_strv_free_ char **targets = NULL;
        bool fuse;
        unsigned number;
        gid_t gid;
        int r;

        if (loop_parse_node(node, &number, NULL) >= 0) {
                r = engine_check_not_formatting(m, number, e);
                if (r < 0)
                        return r;
        }
        /* Before the probe: an image that hung a mount in the kernel hangs every read of the device. */
        if (mount_in_progress(node))
                return engine_error(e, -EINPROGRESS, ENGINE_BUSY,
                        "An earlier mount or unmount of %s still waits in the kernel (its image may be hung)",
                        node);
        r = mount_find_targets(devnum, node, &targets);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to read the mount table");
        if (targets && targets[0])
                return engine_error(e, -EALREADY, ENGINE_ALREADY_MOUNTED, "%s is already mounted on %s",
                        node, targets[0]);

        r = engine_probe_filesystem(
                m, node, devnum, expected_fstype(m, node, devnum), &probed_type, &label, &uuid);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to probe the filesystem");
        if (isempty(fstype))
                fstype = probed_type;
        if (isempty(fstype))
                return engine_error(e, -EMEDIUMTYPE, ENGINE_UNSUPPORTED_FILESYSTEM,
                        "%s carries no filesystem that could be recognised", node);
        r = mount_pick_driver(fstype, &fuse);
        if (r < 0)
                return engine_error(e, r, ENGINE_UNSUPPORTED_FILESYSTEM,
                        "Neither the kernel nor an installed FUSE driver can mount %s (%.32s)", node,
                        fstype);

        r = engine_user_of(uid, &user, &gid);
        if (r < 0)
                return r;

        r = mount_options_build(fstype, options, read_only, fuse, uid, gid, node, &final_options, &bad);
        if (r == -EINVAL)
                return engine_error(
                        e, r, ENGINE_INVALID_ARGUMENT, "options: '%s' is not allowed", strempty(bad));
        if (r < 0)
                return engine_error_errno(e, r, "Failed to build the mount options");

        if (mount_name_sanitize(label, &name) < 0 && mount_name_sanitize(uuid, &name) < 0) {
                name = strdup("disk");
                if (!name)
                        return -ENOMEM;
        }
        r = mount_point_create(m->media_dir, user, uid, gid, name, &mount_point);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to create the mount point");

        display_name = display_name_of(m, node, label);
        r = mount_filesystem_named(node, mount_point, fstype, final_options, fuse, display_name);
        if (r < 0) {
                (void)mount_point_remove(m->media_dir, mount_point);
                if (r == -EPROTONOSUPPORT)
                        return engine_error(e, r, ENGINE_UNSUPPORTED_FILESYSTEM,
                                "No driver can mount %s (%s)", node, fstype);
                if (r == -ETIMEDOUT)
                        return engine_error(e, r, ENGINE_TIMEOUT,
                                "Mounting %s (%s) did not finish within %" PRIu64
                                " s (its image may be hung); nothing stays mounted",
                                node, fstype, mount_get_timeout() / 1000000);
                if (r == -EINPROGRESS)
                        return engine_error(e, r, ENGINE_BUSY,
                                "An earlier mount or unmount of %s still waits in the kernel (its image may be hung)",
                                node);
                return engine_error(
                        e, r, ENGINE_FAILED, "Failed to mount %s (%s): %s", node, fstype, strerror(-r));
        }

        log_info("Mounted %s (%s) on %s for uid %u", node, fstype, mount_point, (unsigned)uid);
        /* Mounted, and the mount point in Partitions, before the caller hears of it. */
        if (m->watcher)
                watcher_update_mounts(m->watcher);
        *ret_mount_point = TAKE_PTR(mount_point);
        return 0;
}

int engine_unmount(Manager *m, unsigned number, const char *target, EngineError *e)
{
        ManagedDevice *d = registry_find_number(m->registry, number);
        uint64_t diskseq = d ? d->diskseq : 0;
        MountServers left = { 0 };
        int r;

        r = unmount_filesystem(target, &left);
        if (r < 0)
                return engine_error_unmount(e, r, target);
        manager_remove_mount_point(m, target);
        log_info("Unmounted %s", target);

        /* While its FUSE servers still hold the device, a release would wait for them in vain. */
        if (left.n > 0 && d && (d->autoclear || loop_autoclear_of(number, diskseq) > 0)) {
                log_info("A FUSE server of %s still runs: loop%u goes once it has exited", target, number);
                manager_release_after_servers(m, number, diskseq, &left);
        } else
                (void)registry_release_if_autoclear(m->registry, number);
        mount_servers_close(&left);
        if (m->watcher)
                watcher_update_mounts(m->watcher);
        return 0;
}
