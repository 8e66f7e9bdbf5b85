/* verbs-device.c: the loop device commands: attach, detach, close, list, partitions. */
#include <pwd.h>
#include <sys/stat.h>

#include "format.h"
#include "log.h"
#include "loop-name.h"
#include "loopctl.h"
#include "loopd-bus.h"

static const char *const partition_headers[] = {
        "NAME",
        ">NR",
        ">OFFSET",
        ">SIZE",
        "FSTYPE",
        "LABEL",
        "UUID",
        "MOUNTPOINT",
};

/* Reads ListPartitions' a(suttssssss) into a JSON array (w) or a table (t), or only counts (neither); with
 * only, just that node's entry, as one JSON object (no array). Returns the number of entries. Does not log:
 * the caller knows what the listing was for. */
static int read_partitions(sd_bus_message *reply, const char *only, JsonWriter *w, Table *t)
{
        const char *node, *part_type, *part_name, *fstype, *label, *uuid, *mount_point;
        uint64_t offset, size;
        uint32_t number;
        int n = 0, r;

        r = sd_bus_message_enter_container(reply, 'a', LOOPD_PARTITION_STRUCT);
        if (r < 0)
                return r;
        if (w && !only)
                json_begin_array(w);

        while ((r = sd_bus_message_read(reply, LOOPD_PARTITION_STRUCT, &node, &number, &offset, &size,
                        &part_type, &part_name, &fstype, &label, &uuid, &mount_point)) > 0) {
                if (only && !streq(node, only))
                        continue;
                n++;
                if (w) {
                        json_begin_object(w);
                        json_field_string(w, "node", node);
                        json_field_uint(w, "number", number);
                        json_field_uint(w, "offset", offset);
                        json_field_uint(w, "size", size);
                        json_field_string(w, "part_type", part_type);
                        json_field_string(w, "part_name", part_name);
                        json_field_string(w, "fstype", fstype);
                        json_field_string(w, "label", label);
                        json_field_string(w, "uuid", uuid);
                        json_field_string(w, "mount_point", mount_point);
                        json_end_object(w);
                } else if (t) {
                        char nr[12], off[FORMAT_BYTES_MAX], sz[FORMAT_BYTES_MAX];

                        snprintf(nr, sizeof(nr), "%" PRIu32, number);
                        r = table_add_row(t, node, nr, format_bytes(off, offset), format_bytes(sz, size),
                                fstype, label, uuid, mount_point);
                        if (r < 0)
                                return r;
                }
        }
        if (r < 0)
                return r;

        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        if (w && !only)
                json_end_array(w);
        return n;
}

/* The partitions of reply (only that node's with only) as JSON (w) or as a table printed to f. Returns
 * the number of entries, as read_partitions(). */
static int output_partitions(sd_bus_message *reply, const char *only, JsonWriter *w, FILE *f)
{
        _cleanup_(table_freep) Table *t = NULL;
        int r;

        if (w)
                return read_partitions(reply, only, w, NULL);
        r = output_table_new(&t, ELEMENTSOF(partition_headers), partition_headers);
        if (r >= 0)
                r = read_partitions(reply, only, NULL, t);
        if (r >= 0)
                table_print(t, f);
        return r;
}

int output_partition(const Context *c, FILE *f, const char *node, sd_bus_message *parts)
{
        JsonWriter w;
        int r;

        /* Counted before anything is printed: JSON output must not be half an object. */
        r = read_partitions(parts, node, NULL, NULL);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        r = sd_bus_message_rewind(parts, true);
        if (r < 0)
                return r;
        if (c->json)
                json_init(&w, f);
        return output_partitions(parts, node, c->json ? &w : NULL, f);
}

int output_attached(const Context *c, FILE *f, const char *image, const char *device, sd_bus_message *parts)
{
        int r;

        if (c->json) {
                JsonWriter w;

                json_init(&w, f);
                json_begin_object(&w);
                json_field_string(&w, "device", device);
                json_key(&w, "partitions");
                r = output_partitions(parts, NULL, &w, f);
                json_end_object(&w);
        } else {
                _cleanup_free_ char *img = display_escape(image), *dev = display_escape(device);

                if (image)
                        fprintf(f, "Attached %s as %s.\n", strempty(img), strempty(dev));
                r = output_partitions(parts, NULL, NULL, f);
        }
        return r < 0 ? r : 0;
}

int call_list_partitions(Context *c, const char *device, sd_bus_error *error, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = context_message(c, &m, "ListPartitions");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", device);
        if (r < 0)
                return r;
        return context_call(c, m, error, ret_reply);
}

int list_partitions(Context *c, const char *device, const char *suffix, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = context_bus(c);
        if (r < 0)
                return r;
        r = call_list_partitions(c, device, &error, ret_reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot list the partitions of %s%s", device, suffix);
        return 0;
}

int verb_attach(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL, *parts = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_close_ int fd = -1;
        const char *device, *object;
        int r;

        r = open_image("attach", c->arg, !context_given(c, ARG_READ_ONLY), "use --read-only", &fd);
        if (r < 0)
                return r;

        r = context_new_call(c, &m, "Attach");
        if (r < 0)
                return r;
        r = context_can_pass_fds(c, "attach");
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "h", fd);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        /* Only what was asked for: the daemon's defaults (read-only from the fd's mode, partition scan on,
         * sector size detected) are the contract's. */
        if (r >= 0 && context_given(c, ARG_READ_ONLY))
                r = sd_bus_message_append(m, "{sv}", "read-only", "b", 1);
        if (r >= 0 && context_given(c, ARG_OFFSET))
                r = sd_bus_message_append(m, "{sv}", "offset", "t", c->offset);
        if (r >= 0 && context_given(c, ARG_SIZE))
                r = sd_bus_message_append(m, "{sv}", "size-limit", "t", c->size_limit);
        if (r >= 0 && context_given(c, ARG_SECTOR_SIZE))
                r = sd_bus_message_append(m, "{sv}", "sector-size", "u", c->sector_size);
        if (r >= 0 && context_given(c, ARG_NO_PARTSCAN))
                r = sd_bus_message_append(m, "{sv}", "partition-scan", "b", 0);
        if (r >= 0 && context_given(c, ARG_AUTOCLEAR))
                r = sd_bus_message_append(m, "{sv}", "autoclear", "b", 1);
        if (r >= 0 && context_given(c, ARG_SHARED))
                r = sd_bus_message_append(m, "{sv}", "shared", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_build_error(r, "Attach");

        r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot attach %s", c->arg);
        r = sd_bus_message_read(reply, "so", &device, &object);
        if (r < 0)
                return log_reply_error(r, "Attach");

        /* The device is attached from here on; an error must say so, or the caller would not know to
         * detach it. */
        _cleanup_free_ char *stays = NULL;
        if (asprintf(&stays, " (%s stays attached)", c->arg) < 0)
                return log_error_errno(-ENOMEM, "%s stays attached as %s", c->arg, device);
        r = list_partitions(c, device, stays, &parts);
        if (r < 0)
                return r;

        r = output_open(&out);
        if (r < 0)
                return r;
        r = output_attached(c, out.f, c->arg, device, parts);
        if (r < 0)
                return log_error_errno(r,
                        "cannot read loopd's reply to ListPartitions (%s stays attached as %s)", c->arg,
                        device);
        return output_emit(&out);
}

int verb_partitions(Context *c)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_free_ char *device = NULL;
        int r;

        r = resolve_node("list the partitions of", c->arg, &device);
        if (r < 0)
                return r;
        r = list_partitions(c, device, "", &reply);
        if (r < 0)
                return r;

        r = output_open(&out);
        if (r < 0)
                return r;
        if (c->json) {
                JsonWriter w;

                json_init(&w, out.f);
                r = output_partitions(reply, NULL, &w, out.f);
        } else
                r = output_partitions(reply, NULL, NULL, out.f);
        if (r < 0)
                return log_reply_error(r, "ListPartitions");
        return output_emit(&out);
}

typedef struct DeviceEntry {
        const char *device, *object, *backing_file;
        uint64_t offset, size_limit;
        uint32_t sector_size;
        int read_only, autoclear, managed;
        uint32_t owner_uid;
} DeviceEntry;

static int read_device(sd_bus_message *reply, DeviceEntry *d)
{
        return sd_bus_message_read(reply, LOOPD_DEVICE_STRUCT, &d->device, &d->object, &d->backing_file,
                &d->offset, &d->size_limit, &d->sector_size, &d->read_only, &d->autoclear, &d->managed,
                &d->owner_uid);
}

static int list_devices(Context *c, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = context_new_call(c, &m, "ListDevices");
        if (r < 0)
                return r;
        r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot list loop devices");
        r = sd_bus_message_enter_container(reply, 'a', LOOPD_DEVICE_STRUCT);
        if (r < 0)
                return log_reply_error(r, "ListDevices");
        *ret_reply = TAKE_PTR(reply);
        return 0;
}

/* The first line of dir/name, without its newline. */
static int read_line(const char *dir, const char *name, char **ret)
{
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0;
        ssize_t n;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f)
                return -errno;
        n = getline(&line, &size, f);
        if (n <= 0)
                return -ENODATA;
        if (line[n - 1] == '\n')
                line[n - 1] = '\0';
        *ret = TAKE_PTR(line);
        return 0;
}

static void format_owner(char buf[static 32], const DeviceEntry *d)
{
        const struct passwd *pw;

        if (!d->managed) {
                snprintf(buf, 32, "-");
                return;
        }
        pw = getpwuid(d->owner_uid);
        if (pw && strlen(pw->pw_name) < 32)
                snprintf(buf, 32, "%s", pw->pw_name);
        else
                snprintf(buf, 32, "%" PRIu32, d->owner_uid);
}

/* The device's size as the kernel has it, from sysfs; "-" when sysfs does not show this device backed by
 * this file (not bound any more, or bound again to another). */
static void format_size(char buf[static FORMAT_BYTES_MAX], const DeviceEntry *d)
{
        _cleanup_free_ char *dir = NULL, *backing = NULL, *sectors = NULL;
        unsigned number;
        uint64_t n;

        snprintf(buf, FORMAT_BYTES_MAX, "-");
        if (loop_parse_name(d->device, &number) < 0 || asprintf(&dir, "/sys/block/loop%u", number) < 0)
                return;
        if (read_line(dir, "loop/backing_file", &backing) < 0 || !streq(backing, d->backing_file) ||
                read_line(dir, "size", &sectors) < 0 || sscanf(sectors, "%" SCNu64, &n) != 1)
                return;
        format_bytes(buf, n * 512);
}

int verb_list(Context *c)
{
        static const char *const headers[] = {
                "NAME",
                ">SIZE",
                ">SIZELIMIT",
                ">OFFSET",
                ">SECTOR",
                ">RO",
                ">AUTOCLEAR",
                "OWNER",
                "BACK-FILE",
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_(table_freep) Table *t = NULL;
        DeviceEntry d;
        JsonWriter w;
        int r;

        r = list_devices(c, &reply);
        if (r < 0)
                return r;
        r = output_open(&out);
        if (r < 0)
                return r;
        if (c->json) {
                json_init(&w, out.f);
                json_begin_array(&w);
        } else {
                r = output_table_new(&t, ELEMENTSOF(headers), headers);
                if (r < 0)
                        return r;
        }

        while ((r = read_device(reply, &d)) > 0) {
                if (c->json) {
                        json_begin_object(&w);
                        json_field_string(&w, "device", d.device);
                        json_field_string(&w, "backing_file", d.backing_file);
                        json_field_uint(&w, "offset", d.offset);
                        json_field_uint(&w, "size_limit", d.size_limit);
                        json_field_uint(&w, "sector_size", d.sector_size);
                        json_field_bool(&w, "read_only", d.read_only);
                        json_field_bool(&w, "autoclear", d.autoclear);
                        json_field_bool(&w, "managed", d.managed);
                        json_field_uint(&w, "owner_uid", d.owner_uid);
                        json_end_object(&w);
                } else {
                        char size[FORMAT_BYTES_MAX], limit[FORMAT_BYTES_MAX], offset[FORMAT_BYTES_MAX],
                                sector[12], owner[32];

                        snprintf(sector, sizeof(sector), "%" PRIu32, d.sector_size);
                        format_owner(owner, &d);
                        format_size(size, &d);
                        /* A size limit of 0 is none. */
                        r = table_add_row(t, d.device, size,
                                d.size_limit == 0 ? "-" : format_bytes(limit, d.size_limit),
                                format_bytes(offset, d.offset), sector, d.read_only ? "1" : "0",
                                d.autoclear ? "1" : "0", owner, d.backing_file);
                        if (r < 0)
                                return log_error_errno(r, "cannot allocate output");
                }
        }
        if (r < 0)
                return log_reply_error(r, "ListDevices");

        if (c->json)
                json_end_array(&w);
        else {
                table_print_always(t, out.f);
                if (table_empty(t) && isatty(STDOUT_FILENO))
                        fputs("no loop devices\n", out.f);
        }
        return output_emit(&out);
}

/* DEVICE|IMAGE of detach, close and partition add: a loop device by name, or the one device an image is
 * attached to. Several devices backed by the same file are refused rather than all detached: the user names
 * one. */
int resolve_device(Context *c, const char *what, char **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL, *found = NULL;
        unsigned n_found = 0, number;
        DeviceEntry d;
        struct stat st;
        int r;

        if (loop_parse_name(c->arg, &number) >= 0) {
                *ret = loop_node_new(number, 0);
                return *ret ? 0 : log_error_errno(-ENOMEM, "cannot %s %s", what, c->arg);
        }

        path = realpath(c->arg, NULL);
        if (!path || stat(path, &st) < 0)
                return log_error_errno(-errno, "cannot %s %s", what, c->arg);
        if (S_ISBLK(st.st_mode)) {
                /* A device under another name (/dev/disk/by-...): the daemon decides what it is. */
                *ret = TAKE_PTR(path);
                return 0;
        }

        r = list_devices(c, &reply);
        if (r < 0)
                return r;
        while ((r = read_device(reply, &d)) > 0) {
                if (!streq(d.backing_file, path))
                        continue;
                char *list;
                if (asprintf(&list, "%s%s%s", strempty(found), found ? ", " : "", d.device) < 0)
                        return log_error_errno(-ENOMEM, "cannot %s %s", what, c->arg);
                free(found);
                found = list;
                n_found++;
        }
        if (r < 0)
                return log_reply_error(r, "ListDevices");

        if (n_found == 0)
                return log_error(-ENXIO, "cannot %s %s: it is not attached to a loop device", what, c->arg);
        if (n_found > 1)
                return log_error(-ENOTUNIQ, "cannot %s %s: it is attached to %s; name the device", what,
                        c->arg, found);
        *ret = TAKE_PTR(found);
        return 0;
}

static int detach(Context *c, const char *what, bool unmount)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *device = NULL;
        int r;

        r = resolve_device(c, what, &device);
        if (r < 0)
                return r;

        r = context_new_call(c, &m, "Detach");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", device);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && unmount)
                r = sd_bus_message_append(m, "{sv}", "unmount", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_build_error(r, "Detach");

        r = context_call(c, m, &error, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "cannot %s %s", what, device);
        if (context_tell(c)) {
                _cleanup_free_ char *d = display_escape(device);

                printf("%s %s.\n", unmount ? "Unmounted and detached" : "Detached", strempty(d));
        }
        return 0;
}

int verb_detach(Context *c)
{
        return detach(c, "detach", context_given(c, ARG_UNMOUNT));
}

int verb_close(Context *c)
{
        return detach(c, "close", true);
}
