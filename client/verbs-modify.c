/* verbs-modify.c: the commands that make images: format, partition add, partition delete, create. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "format.h"
#include "log.h"
#include "loopctl.h"

/* The filesystems Format makes (the contract's list); create checks --fs against it before making a file. */
static const char *const filesystems[] = {
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "vfat",
        "exfat",
        "ntfs",
        "swap",
};

static bool is_table(const char *type)
{
        return streq(type, "gpt") || streq(type, "dos");
}

/* The partition type create gives the one partition that holds fs: what a firmware or another system
 * expects to find it under. */
static const char *partition_type_for(const char *fs)
{
        if (streq(fs, "vfat"))
                return "fat";
        if (streq(fs, "ntfs") || streq(fs, "exfat"))
                return "ntfs";
        if (streq(fs, "swap"))
                return "swap";
        return "linux";
}

/* ---- the calls, on a connected bus; none logs: the caller says what failed ---- */

static int call_format(Context *c, const char *node, const char *type, const char *label, const char *uuid,
        bool erase, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = context_message(c, &m, "Format");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", node, type);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        /* Only what was asked for; "--label ''" is no label, as is no --label. */
        if (r >= 0 && !isempty(label))
                r = sd_bus_message_append(m, "{sv}", "label", "s", label);
        if (r >= 0 && uuid)
                r = sd_bus_message_append(m, "{sv}", "uuid", "s", uuid);
        if (r >= 0 && erase)
                r = sd_bus_message_append(m, "{sv}", "erase", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        return context_call_slow(c, m, error, NULL);
}

static int call_create_partition(Context *c, const char *device, uint64_t start, uint64_t size,
        const char *type, const char *name, bool bootable, sd_bus_error *error, char **ret_node)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *node;
        char *copy;
        int r;

        r = context_message(c, &m, "CreatePartition");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "sttss", device, start, size, type, name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && bootable)
                r = sd_bus_message_append(m, "{sv}", "bootable", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;

        r = context_call(c, m, error, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &node);
        if (r < 0)
                return r;
        copy = strdup(node);
        if (!copy)
                return -ENOMEM;
        *ret_node = copy;
        return 0;
}

static int call_simple(Context *c, const char *member, const char *node, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = context_message(c, &m, member);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", node, 0);
        if (r < 0)
                return r;
        return context_call(c, m, error, NULL);
}

/* Attach(fd) read-write, partitions scanned, no autoclear: the image stays for the commands that follow. */
static int call_attach(Context *c, int fd, sd_bus_error *error, char **ret_device)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *device, *object;
        char *copy;
        int r;

        r = context_message(c, &m, "Attach");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "h", fd);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && context_given(c, ARG_SECTOR_SIZE))
                r = sd_bus_message_append(m, "{sv}", "sector-size", "u", c->sector_size);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;

        r = context_call(c, m, error, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "so", &device, &object);
        if (r < 0)
                return r;
        copy = strdup(device);
        if (!copy)
                return -ENOMEM;
        *ret_device = copy;
        return 0;
}

/* ---- what happened, for a terminal ---- */

static void say_formatted(FILE *f, const char *node, const char *type, const char *label, const char *uuid)
{
        _cleanup_free_ char *n = display_escape(node), *t = display_escape(type), *l = display_escape(label),
                            *u = display_escape(uuid);

        if (is_table(type))
                fprintf(f, "Wrote a new %s partition table on %s.\n", strempty(t), strempty(n));
        else if (streq(type, "empty"))
                fprintf(f, "Wiped the signatures on %s.\n", strempty(n));
        else
                fprintf(f, "Formatted %s as %s%s%s%s%s.\n", strempty(n), strempty(t),
                        isempty(label) ? "" : ", label ", strempty(l), uuid ? ", UUID " : "",
                        uuid ? strempty(u) : "");
}

static void say_node(FILE *f, const char *verb, const char *node)
{
        _cleanup_free_ char *n = display_escape(node);

        fprintf(f, "%s %s.\n", verb, strempty(n));
}

/* ---- the commands ---- */

int verb_format(Context *c)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_free_ char *node = NULL;
        int r;

        r = resolve_node("format", c->arg, &node);
        if (r >= 0)
                r = context_bus(c);
        if (r < 0)
                return r;
        r = call_format(c, node, c->arg2, c->label, c->uuid, context_given(c, ARG_ERASE), &error);
        if (r < 0)
                return log_bus_error(&error, r, "cannot format %s as %s", node, c->arg2);

        r = output_open(&out);
        if (r < 0)
                return r;
        if (c->json) {
                JsonWriter w;

                json_init(&w, out.f);
                json_begin_object(&w);
                json_field_string(&w, "node", node);
                json_field_string(&w, "type", c->arg2);
                json_field_string(&w, "label", c->label);
                json_field_string(&w, "uuid", c->uuid);
                json_end_object(&w);
        } else
                say_formatted(out.f, node, c->arg2, c->label, c->uuid);
        return output_emit(&out);
}

int verb_partition_add(Context *c)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *parts = NULL;
        _cleanup_free_ char *device = NULL, *node = NULL, *made = NULL;
        _cleanup_(output_done) Output out = {};
        int r;

        r = resolve_device(c, "add a partition to", &device);
        if (r >= 0)
                r = context_bus(c);
        if (r < 0)
                return r;
        r = call_create_partition(c, device, c->start, context_given(c, ARG_SIZE) ? c->size_limit : 0,
                c->part_type ?: "linux", strempty(c->part_name), context_given(c, ARG_BOOTABLE), &error,
                &node);
        if (r < 0)
                return log_bus_error(&error, r, "cannot add a partition to %s", device);

        /* The partition exists from here on; an error must say so. */
        if (asprintf(&made, " (%s was created)", node) < 0)
                return log_error_errno(-ENOMEM, "%s was created", node);
        r = list_partitions(c, device, made, &parts);
        if (r < 0)
                return r;

        r = output_open(&out);
        if (r < 0)
                return r;
        if (!c->json)
                say_node(out.f, "Created", node);
        r = output_partition(c, out.f, node, parts);
        if (r == -ENOENT)
                return log_error(r, "cannot find %s in the partitions of %s%s", node, device, made);
        if (r < 0)
                return log_error_errno(r, "cannot read loopd's reply to ListPartitions%s", made);
        return output_emit(&out);
}

int verb_partition_delete(Context *c)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_free_ char *node = NULL;
        int r;

        r = resolve_node("delete", c->arg, &node);
        if (r >= 0)
                r = context_bus(c);
        if (r < 0)
                return r;
        r = call_simple(c, "DeletePartition", node, &error);
        if (r < 0)
                return log_bus_error(&error, r, "cannot delete %s", node);

        r = output_open(&out);
        if (r < 0)
                return r;
        if (c->json) {
                JsonWriter w;

                json_init(&w, out.f);
                json_begin_object(&w);
                json_field_string(&w, "node", node);
                json_end_object(&w);
        } else
                say_node(out.f, "Deleted", node);
        return output_emit(&out);
}

/* ---- create ---- */

int verb_create_check(const Context *c)
{
        uint32_t sector = c->sector_size ?: 512;

        if (!context_given(c, ARG_SIZE))
                return log_error(-EINVAL, "'create' needs --size");
        if (c->size_limit == 0)
                return log_error(-EINVAL, "invalid --size '0': an image needs a size");
        if (c->size_limit % sector != 0)
                return log_error(-EINVAL,
                        "invalid --size: %" PRIu64 " bytes is not a multiple of %" PRIu32
                        " (the sector size)",
                        c->size_limit, sector);
        if (c->table && !is_table(c->table))
                return log_error(-EINVAL, "invalid --table '%s': expected gpt or dos", c->table);
        if (c->fs) {
                bool known = false;

                for (size_t i = 0; i < ELEMENTSOF(filesystems); i++)
                        known = known || streq(c->fs, filesystems[i]);
                if (is_table(c->fs))
                        return log_error(
                                -EINVAL, "invalid --fs '%s': a partition table is --table %s", c->fs, c->fs);
                if (!known)
                        return log_error(-EINVAL,
                                "invalid --fs '%s': expected ext2, ext3, ext4, xfs, btrfs, vfat, exfat, ntfs or "
                                "swap",
                                c->fs);
        }
        if (c->label && !c->fs)
                return log_error(-EINVAL, "option '--label' of 'create' needs --fs");
        return 0;
}

/* What create made so far, to be undone when a later step fails: nothing is left behind. */
typedef struct Creation {
        const char *image;
        int fd; /* the new file, read-write */
        char *device; /* attached to it; NULL before */
} Creation;

/* The signals that would end loopctl wait while create runs, so that ^C during a long mkfs undoes what was
 * made (after the step under way) instead of leaving it half done. They stay blocked to the end: once
 * create succeeded, a late one changes nothing. */
static int block_signals(void)
{
        sigset_t set;

        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        return sigprocmask(SIG_BLOCK, &set, NULL) < 0 ? -errno : 0;
}

static bool interrupted(void)
{
        sigset_t pending;

        return sigpending(&pending) == 0 &&
                (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1 ||
                        sigismember(&pending, SIGHUP) == 1);
}

/* Detaches the device and removes the file, and says so for the error line: " (disk.img removed)". Never
 * NULL. The file goes only while it is still the one created here, and not while a device holds it. */
static char *creation_undo(Context *c, Creation *k)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *img = display_escape(k->image);
        struct stat made, now;
        char *note = NULL;
        int r;

        if (k->device) {
                r = call_simple(c, "Detach", k->device, &error);
                if (r < 0) {
                        if (asprintf(&note, " (%s stays attached as %s: cannot detach it: %s)",
                                    strempty(img), k->device, error.message ?: strerror(-r)) < 0)
                                note = NULL;
                        return note ?: strdup("");
                }
                k->device = mfree(k->device);
        }

        if (fstat(k->fd, &made) < 0 || lstat(k->image, &now) < 0 || made.st_dev != now.st_dev ||
                made.st_ino != now.st_ino)
                r = asprintf(&note, " (%s was replaced meanwhile: left as it is)", strempty(img));
        else if (unlink(k->image) < 0)
                r = asprintf(&note, " (cannot remove %s: %s)", strempty(img), strerror(errno));
        else
                r = asprintf(&note, " (%s removed)", strempty(img));
        return r < 0 ? strdup("") : note;
}

/* Logs what failed, after undoing what was made: "cannot format /dev/loop3p1 as vfat (disk.img removed):
 * why". */
_printf_(5, 6) static int creation_fail(
        Context *c, Creation *k, const sd_bus_error *error, int r, const char *fmt, ...)
{
        _cleanup_free_ char *what = NULL, *note = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&what, fmt, ap);
        va_end(ap);
        note = creation_undo(c, k);
        k->device = mfree(k->device); /* when it stays attached, this was the last word about it */
        if (n < 0)
                return log_error_errno(-ENOMEM, "cannot create %s%s", k->image, strempty(note));
        return log_bus_error(error, r, "%s%s", what, strempty(note));
}

int verb_create(Context *c)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *parts = NULL;
        _cleanup_free_ char *node = NULL, *img = NULL, *dev = NULL;
        _cleanup_(output_done) Output out = {};
        _cleanup_close_ int fd = -1;
        char size[FORMAT_BYTES_MAX];
        Creation k = { .image = c->arg };
        const char *target;
        struct stat st;
        int r;

        /* What can fail before anything is made fails first: an existing file (open() below checks again),
         * the bus. */
        if (lstat(c->arg, &st) >= 0)
                return log_error_errno(-EEXIST, "cannot create %s", c->arg);
        if (errno != ENOENT)
                return log_error_errno(-errno, "cannot create %s", c->arg);
        r = context_can_pass_fds(c, "create");
        if (r < 0)
                return r;
        r = output_open(&out);
        if (r < 0)
                return r;
        r = block_signals();
        if (r < 0)
                return log_error_errno(r, "cannot create %s", c->arg);

        /* As the calling user, never over an existing file (not even through a symlink); 0644 less the
         * umask, as a new file from touch or dd. */
        fd = open(c->arg, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return log_error_errno(-errno, "cannot create %s", c->arg);
        k.fd = fd;
        /* Sparse: the size is a promise, the blocks come as they are written. */
        if (ftruncate(fd, (off_t)c->size_limit) < 0)
                return creation_fail(c, &k, NULL, -errno, "cannot make %s %" PRIu64 " bytes large", c->arg,
                        c->size_limit);

        r = call_attach(c, fd, &error, &k.device);
        if (r < 0)
                return creation_fail(c, &k, &error, r, "cannot attach %s", c->arg);
        img = display_escape(c->arg);
        dev = display_escape(k.device);
        if (!c->json)
                fprintf(out.f, "Created %s (%s) and attached it as %s.\n", strempty(img),
                        format_bytes(size, c->size_limit), strempty(dev));
        target = k.device;

        if (!interrupted() && c->table) {
                r = call_format(c, k.device, c->table, NULL, NULL, false, &error);
                if (r < 0)
                        return creation_fail(c, &k, &error, r, "cannot write a %s partition table on %s",
                                c->table, k.device);
                if (!c->json)
                        say_formatted(out.f, k.device, c->table, NULL, NULL);
        }
        if (!interrupted() && c->table && c->fs) {
                r = call_create_partition(
                        c, k.device, 0, 0, partition_type_for(c->fs), "", false, &error, &node);
                if (r < 0)
                        return creation_fail(c, &k, &error, r, "cannot add a partition to %s", k.device);
                if (!c->json)
                        say_node(out.f, "Created", node);
                target = node;
        }
        if (!interrupted() && c->fs) {
                r = call_format(c, target, c->fs, c->label, NULL, false, &error);
                if (r < 0)
                        return creation_fail(c, &k, &error, r, "cannot format %s as %s", target, c->fs);
                if (!c->json)
                        say_formatted(out.f, target, c->fs, c->label, NULL);
        }
        if (interrupted())
                return creation_fail(c, &k, NULL, -EINTR, "cannot create %s", c->arg);

        r = call_list_partitions(c, k.device, &error, &parts);
        if (r < 0)
                return creation_fail(c, &k, &error, r, "cannot list the partitions of %s", k.device);
        r = output_attached(c, out.f, NULL, k.device, parts);
        if (r < 0)
                return creation_fail(c, &k, NULL, r, "cannot read loopd's reply to ListPartitions");

        /* Done: the device stays. */
        free(k.device);
        return output_emit(&out);
}
