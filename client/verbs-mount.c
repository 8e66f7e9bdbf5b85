/* verbs-mount.c: the filesystem commands: mount, unmount, open (attach and mount all), monitor. */
#include <unistd.h>

#include "desktop.h"
#include "format.h"
#include "log.h"
#include "loopctl.h"
#include "monitor.h"

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
        }
        return 0;
}

int verb_unmount(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *target = NULL;
        int r;

        r = resolve_node("unmount", c->arg, &target);
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
