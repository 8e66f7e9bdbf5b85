/* verbs-mount.c: the filesystem commands: mount, unmount, open (attach and mount all), monitor. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "desktop.h"
#include "format.h"
#include "log.h"
#include "loopctl.h"
#include "monitor.h"

/* What the mount table says of mount_point: its filesystem type ("fuse.fusefat") and whether it is mounted
 * read-only (per mount or per superblock). -ENOENT when it is not there. */
static int mount_info(const char *mount_point, char **ret_fstype, bool *ret_read_only)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        while (f && getline(&line, &size, f) > 0) {
                char target[PATH_MAX], *fields = line, *dash, *out = target, *options, *fstype, *super;
                const char *p;

                /* ID PARENT MAJ:MIN ROOT TARGET OPTIONS ... - FSTYPE SOURCE SUPER-OPTIONS; TARGET
                 * octal-escaped. */
                for (int i = 0; i < 4 && fields; i++)
                        fields = strchr(fields + 1, ' ');
                dash = strstr(line, " - ");
                if (!fields || !dash)
                        continue;
                for (p = fields + 1; *p && *p != ' ' && out < target + sizeof(target) - 1; out++)
                        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
                                p[3] >= '0' && p[3] <= '7') {
                                *out = (char)((p[1] - '0') << 6 | (p[2] - '0') << 3 | (p[3] - '0'));
                                p += 4;
                        } else
                                *out = *p++;
                *out = '\0';
                if (!streq(target, mount_point))
                        continue;

                options = strchr(p, ' ');
                fstype = dash + 3;
                super = strchr(fstype, ' ');
                super = super ? strchr(super + 1, ' ') : NULL;
                *ret_read_only =
                        (options && (startswith(options + 1, "ro,") || startswith(options + 1, "ro "))) ||
                        (super && (startswith(super + 1, "ro,") || startswith(super + 1, "ro\n")));
                *ret_fstype = strndup(fstype, strcspn(fstype, " "));
                return *ret_fstype ? 0 : -ENOMEM;
        }
        return -ENOENT;
}

/* The driver's name from the mount table when mount_point is served by a FUSE driver loopd cannot confine:
 * "fuse.ntfs-3g" (its built-in FUSE library mounts by itself; loopd(8)). NULL otherwise. */
static const char *unconfined_driver(const char *mount_point)
{
        _cleanup_free_ char *fstype = NULL;
        bool read_only;

        if (mount_info(mount_point, &fstype, &read_only) >= 0 && streq(fstype, "fuse.ntfs-3g"))
                return "ntfs-3g";
        return NULL;
}

/* open --writable: a filesystem whose driver here can only read is mounted read-only all the same; the
 * mount table tells, and the user is told: "mounted read-only: fusefat cannot write". */
static void note_read_only(FILE *out, const char *mount_point)
{
        _cleanup_free_ char *fstype = NULL, *driver = NULL;
        bool read_only = false;

        if (mount_info(mount_point, &fstype, &read_only) < 0 || !read_only)
                return;
        driver = display_escape(startswith(fstype, "fuse.") ? fstype + strlen("fuse.") : fstype);
        fprintf(out, "Note: mounted read-only: %s cannot write.\n", strempty(driver));
}

/* Says so, on a terminal's output, when the filesystem at mount_point is served by a driver running as root.
 */
static void note_unconfined(FILE *out, const char *mount_point)
{
        const char *driver = unconfined_driver(mount_point);

        if (driver)
                fprintf(out,
                        "Note: %s serves it as root: it cannot run in loopd's sandbox (an administrator can "
                        "switch it off: loopd --unconfined-fuse-drivers=no).\n",
                        driver);
}

int verb_mount(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *node = NULL;
        const char *mount_point;
        int r;

        r = resolve_node("mount", c->arg, &node);
        if (r < 0)
                return r;

        r = context_new_call(c, &m, "Mount");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", node);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && context_given(c, ARG_FSTYPE))
                r = sd_bus_message_append(m, "{sv}", "fstype", "s", c->fstype);
        if (r >= 0 && context_given(c, ARG_OPTIONS))
                r = sd_bus_message_append(m, "{sv}", "options", "s", c->mount_options);
        if (r >= 0 && context_given(c, ARG_READ_ONLY))
                r = sd_bus_message_append(m, "{sv}", "read-only", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_build_error(r, "Mount");

        r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot mount %s", node);
        r = sd_bus_message_read(reply, "s", &mount_point);
        if (r < 0)
                return log_reply_error(r, "Mount");

        if (c->json) {
                JsonWriter w;

                json_init(&w, stdout);
                json_begin_object(&w);
                json_field_string(&w, "node", node);
                json_field_string(&w, "mount_point", mount_point);
                json_end_object(&w);
        } else {
                _cleanup_free_ char *n = display_escape(node), *p = display_escape(mount_point);

                printf("Mounted %s at %s.\n", strempty(n), strempty(p));
                note_unconfined(stdout, mount_point);
        }
        return 0;
}

int verb_unmount(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *target = NULL;
        int r;

        r = resolve_unmount_target(c->arg, &target);
        if (r < 0)
                return r;

        r = context_new_call(c, &m, "Unmount");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "sa{sv}", target, 0);
        if (r < 0)
                return log_build_error(r, "Unmount");

        r = context_call(c, m, &error, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "cannot unmount %s", target);
        if (context_tell(c)) {
                _cleanup_free_ char *t = display_escape(target);

                printf("Unmounted %s.\n", strempty(t));
        }
        return 0;
}

int verb_open(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_close_ int fd = -1;
        const char *device, *node, *mount_point;
        _cleanup_free_ char *first = NULL;
        bool writable = context_given(c, ARG_WRITABLE);
        JsonWriter w;
        int r;

        r = open_image("open", c->arg, writable, "open it without --writable", &fd);
        if (r < 0)
                return r;

        r = context_new_call(c, &m, "MountImage");
        if (r < 0)
                return r;
        r = context_can_pass_fds(c, "open");
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "h", fd);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && writable)
                r = sd_bus_message_append(m, "{sv}", "writable", "b", 1);
        if (r >= 0 && context_given(c, ARG_SECTOR_SIZE))
                r = sd_bus_message_append(m, "{sv}", "sector-size", "u", c->sector_size);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_build_error(r, "MountImage");

        r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot open %s", c->arg);

        r = sd_bus_message_read(reply, "s", &device);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ss)");
        if (r < 0)
                return log_reply_error(r, "MountImage");

        r = output_open(&out);
        if (r < 0)
                return r;
        if (c->json) {
                json_init(&w, out.f);
                json_begin_object(&w);
                json_field_string(&w, "device", device);
                json_key(&w, "mounts");
                json_begin_array(&w);
        } else {
                _cleanup_free_ char *img = display_escape(c->arg), *dev = display_escape(device);

                fprintf(out.f, "Attached %s as %s.\n", strempty(img), strempty(dev));
        }

        while ((r = sd_bus_message_read(reply, "(ss)", &node, &mount_point)) > 0) {
                if (!first && !(first = strdup(mount_point)))
                        return log_error_errno(-ENOMEM, "cannot open %s", c->arg);
                if (c->json) {
                        json_begin_object(&w);
                        json_field_string(&w, "node", node);
                        json_field_string(&w, "mount_point", mount_point);
                        json_end_object(&w);
                } else {
                        _cleanup_free_ char *n = display_escape(node), *p = display_escape(mount_point);

                        fprintf(out.f, "Mounted %s at %s.\n", strempty(n), strempty(p));
                        note_unconfined(out.f, mount_point);
                        if (writable)
                                note_read_only(out.f, mount_point);
                }
        }
        if (r < 0)
                return log_reply_error(r, "MountImage");

        if (c->json) {
                json_end_array(&w);
                json_end_object(&w);
        }
        r = output_emit(&out);
        if (r >= 0 && first && context_given(c, ARG_SHOW))
                desktop_show_folder(first);
        return r;
}

int verb_monitor(Context *c)
{
        int r = context_bus(c);
        return r < 0 ? r : monitor_run(c->bus, c->json);
}
