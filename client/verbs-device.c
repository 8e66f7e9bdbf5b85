/* verbs-device.c: the loop device commands: attach, detach, close, list, partitions. */
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "log.h"
#include "loop-name.h"
#include "loopctl.h"
#include "loopd-bus.h"
#include "utf8.h"

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

/* The Partitions property of loopd's object for a device it has just attached: what it read of the device
 * as it attached it. ListPartitions would read it all again. */
static int attached_partitions(
        Context *c, const char *object, const char *device, const char *suffix, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_new_method_call(
                c->bus, &m, LOOPD_BUS_NAME, object, "org.freedesktop.DBus.Properties", "Get");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", LOOPD_DEVICE_INTERFACE, "Partitions");
        if (r < 0)
                return log_build_error(r, "Get");
        r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot list the partitions of %s%s", device, suffix);
        r = sd_bus_message_enter_container(reply, 'v', "a" LOOPD_PARTITION_STRUCT);
        if (r < 0)
                return log_error_errno(r, "cannot read loopd's Partitions of %s%s", object, suffix);
        *ret_reply = TAKE_PTR(reply);
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
        r = attached_partitions(c, object, device, stays, &parts);
        if (r < 0)
                return r;

        r = output_open(&out);
        if (r < 0)
                return r;
        r = output_attached(c, out.f, c->arg, device, parts);
        if (r < 0)
                return log_error_errno(r, "cannot read loopd's Partitions of %s (%s stays attached as %s)",
                        object, c->arg, device);
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

/* ListDevices, with work(userdata) done while loopd answers (none when work is NULL). */
static int list_devices(Context *c, void (*work)(void *userdata), void *userdata, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = context_new_call(c, &m, "ListDevices");
        if (r < 0)
                return r;
        if (work)
                r = context_call_meanwhile(c, m, work, userdata, &error, &reply);
        else
                r = context_call(c, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "cannot list loop devices");
        r = sd_bus_message_enter_container(reply, 'a', LOOPD_DEVICE_STRUCT);
        if (r < 0)
                return log_reply_error(r, "ListDevices");
        *ret_reply = TAKE_PTR(reply);
        return 0;
}

/* The first line of /sys/block/NAME/ATTR (at most size - 1 bytes), without its newline. */
static int read_sysfs_line(int blockfd, const char *name, const char *attr, char *buf, size_t size)
{
        char path[64];
        ssize_t n;
        int fd;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", name, attr) >= sizeof(path))
                return -ENAMETOOLONG;
        fd = openat(blockfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        n = n < 0 ? -errno : n;
        close(fd);
        if (n <= 0)
                return n < 0 ? (int)n : -ENODATA;
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        return 0;
}

/* The owner's name, the last one looked up kept: every device of a list may have the same owner, and each
 * getpwuid() reads the passwd database again. */
static void format_owner(char buf[static 32], const DeviceEntry *d)
{
        static uid_t cached_uid = (uid_t)-1;
        static char cached[32];
        const struct passwd *pw;

        if (!d->managed) {
                snprintf(buf, 32, "-");
                return;
        }
        if (cached_uid != (uid_t)d->owner_uid) {
                pw = getpwuid(d->owner_uid);
                if (pw && strlen(pw->pw_name) < 32)
                        snprintf(cached, sizeof(cached), "%s", pw->pw_name);
                else
                        snprintf(cached, sizeof(cached), "%" PRIu32, d->owner_uid);
                cached_uid = (uid_t)d->owner_uid;
        }
        snprintf(buf, 32, "%s", cached);
}

/* The sizes of the loop devices, all in one read of /proc/partitions ("major minor #blocks name", in KiB):
 * with a thousand devices bound, reading each one's sysfs attributes costs tens of milliseconds. kib[N] is
 * loopN's size + 1 (0: not listed). */
typedef struct SizeTable {
        uint64_t *kib;
        size_t n;
} SizeTable;

static void size_table_done(SizeTable *s)
{
        s->kib = mfree(s->kib);
        s->n = 0;
}

static void size_table_load(void *userdata)
{
        SizeTable *s = userdata;
        /* A page a read(): the kernel fills no more than that at once, and walks its list of disks from the
         * start again at each read() of /proc/partitions. stdio would read 1 KiB at a time (procfs's
         * st_blksize), four times as many walks. The buffer outlives f (cleaned up after it). */
        char buffer[4096];
        _cleanup_fclose_ FILE *f = fopen("/proc/partitions", "re");
        _cleanup_free_ char *line = NULL;
        size_t size = 0;

        if (f)
                (void)setvbuf(f, buffer, _IOFBF, sizeof(buffer));
        while (f && getline(&line, &size, f) > 0) {
                char *fields[4], *p = line, *end;
                size_t n_fields = 0;
                unsigned number;
                uint64_t kib;

                /* "major minor #blocks name": split at the blanks, then only loopN (two thirds of the lines
                 * are partitions with a thousand devices bound) has its size parsed. No sscanf(): it
                 * costs a microsecond a line, more than the rest of the list. */
                while (n_fields < ELEMENTSOF(fields)) {
                        p += strspn(p, " \t");
                        if (*p == '\0' || *p == '\n')
                                break;
                        fields[n_fields++] = p;
                        p += strcspn(p, " \t\n");
                        if (*p != '\0')
                                *p++ = '\0';
                }
                if (n_fields != ELEMENTSOF(fields) || loop_parse_name(fields[3], &number) < 0 ||
                        number > 1u << 20 || fields[2][0] < '0' || fields[2][0] > '9')
                        continue;
                errno = 0;
                kib = strtoull(fields[2], &end, 10);
                if (errno != 0 || *end != '\0')
                        continue;
                if (number >= s->n) {
                        size_t n = MAX((size_t)number + 1, s->n * 2);
                        uint64_t *a = reallocarray(s->kib, n, sizeof(uint64_t));

                        if (!a) {
                                size_table_done(s);
                                return;
                        }
                        memset(a + s->n, 0, (n - s->n) * sizeof(uint64_t));
                        s->kib = a;
                        s->n = n;
                }
                s->kib[number] = kib + 1;
        }
}

/* loopN's size in KiB, as /proc/partitions has it; -ENOENT when it is not there. */
static int size_table_kib(const SizeTable *s, unsigned number, uint64_t *ret)
{
        if (number >= s->n || s->kib[number] == 0)
                return -ENOENT;
        *ret = s->kib[number] - 1;
        return 0;
}

/* The device's size as the kernel has it, from /proc/partitions, which rounds down to KiB. From sysfs only
 * when that could change what is printed (an odd number of sectors near a rounding step) or when the size
 * there is 0; "-" when sysfs does not show the device bound. Not checked against the reply's backing file:
 * that is two sysfs reads a device, more than all the rest of a list of a thousand devices costs, and for a
 * virtual disk sysfs names the export, not the image the reply names. */
static void format_size(
        char buf[static FORMAT_BYTES_MAX], const SizeTable *sizes, int blockfd, const DeviceEntry *d)
{
        char name[32], backing[4096 + 16], sectors[32], lo[FORMAT_BYTES_MAX], hi[FORMAT_BYTES_MAX];
        unsigned number;
        uint64_t n;

        snprintf(buf, FORMAT_BYTES_MAX, "-");
        if (loop_parse_name(d->device, &number) < 0)
                return;
        if (size_table_kib(sizes, number, &n) >= 0 && n > 0 &&
                streq(format_bytes(lo, n * 1024), format_bytes(hi, n * 1024 + 512))) {
                snprintf(buf, FORMAT_BYTES_MAX, "%s", lo);
                return;
        }
        if (blockfd < 0)
                return;
        snprintf(name, sizeof(name), "loop%u", number);
        /* Still bound (loop/backing_file can fail for a path longer than a page: not that). */
        if (read_sysfs_line(blockfd, name, "loop/offset", backing, sizeof(backing)) < 0 ||
                read_sysfs_line(blockfd, name, "size", sectors, sizeof(sectors)) < 0 ||
                sscanf(sectors, "%" SCNu64, &n) != 1)
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
        _cleanup_close_ int blockfd = -EBADF;
        _cleanup_(size_table_done) SizeTable sizes = {};
        DeviceEntry d;
        JsonWriter w;
        int r;

        /* The sizes are read while loopd answers. A device bound since is not in them: its size comes from
         * sysfs (format_size()). One detached and bound again in between shows the size of its earlier
         * binding: a window of a few milliseconds, as between any list and the moment it is read. */
        r = list_devices(c, c->json ? NULL : size_table_load, &sizes, &reply);
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
                /* Where /sys/block's loopN links point to: a path through the link costs the kernel one
                 * more lookup a device. */
                blockfd = open("/sys/devices/virtual/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (blockfd < 0)
                        blockfd = open("/sys/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
                        format_size(size, &sizes, blockfd, &d);
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

/* Whether the kernel names path as device's backing file, byte for byte (or cannot say): ListDevices' name
 * is made UTF-8, so caf\xe9.img and caf\xe8.img look the same there. */
static bool backing_is(const char *device, const char *path)
{
        _cleanup_close_ int blockfd = open("/sys/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *raw = malloc(PATH_MAX + 16);
        const char *name = startswith(device, "/dev/") ? device + strlen("/dev/") : device;

        if (blockfd < 0 || !raw ||
                read_sysfs_line(blockfd, name, "loop/backing_file", raw, PATH_MAX + 16) < 0)
                return true;
        return streq(raw, path);
}

/* DEVICE|IMAGE of detach, close and partition add: a loop device by name, or the one device an image is
 * attached to: the caller's own, if it has one (another user's device of the same file is theirs to close),
 * else any. Several devices backed by the same file are refused rather than all detached: the user names
 * one. */
int resolve_device(Context *c, const char *what, char **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL, *said = NULL, *found = NULL;
        unsigned n_found = 0, number;
        bool found_own = false;
        DeviceEntry d;
        struct stat st;
        int r;

        if (loop_parse_name(c->arg, &number) >= 0) {
                /* An image of that name here would be as good a reading: the user says which. */
                if (!strchr(c->arg, '/') && lstat(c->arg, &st) == 0 && S_ISREG(st.st_mode))
                        return log_error(-ENOTUNIQ,
                                "cannot %s %s: it names both /dev/%s and the file ./%s; say which", what,
                                c->arg, c->arg, c->arg);
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

        /* loopd says a file's name in UTF-8, each byte that is not part of it as U+FFFD: a name that is not
         * UTF-8 is compared as loopd says it. */
        said = strdup(path);
        if (!said || utf8_make_valid(&said) < 0)
                return log_error_errno(-ENOMEM, "cannot %s %s", what, c->arg);

        r = list_devices(c, NULL, NULL, &reply);
        if (r < 0)
                return r;
        while ((r = read_device(reply, &d)) > 0) {
                /* loopd records the caller's effective uid. */
                bool own = d.managed && d.owner_uid == (uint32_t)geteuid();

                if (!streq(d.backing_file, said) || (found_own && !own) ||
                        (!streq(said, path) && !backing_is(d.device, path)))
                        continue;
                if (own && !found_own) {
                        /* The first of the caller's own: the others' found so far do not count. */
                        found = mfree(found);
                        n_found = 0;
                        found_own = true;
                }
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
