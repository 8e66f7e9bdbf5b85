/* context.c: loopctl's connection to org.loopd1, its calls, and the paths and files users name. */
#include <assert.h>
#include <fcntl.h>
#include <stdio_ext.h>
#include <sys/stat.h>

#include "log.h"
#include "loop-name.h"
#include "loopctl.h"
#include "loopd-bus.h"
#include "polkit-agent.h"

#define USEC_PER_SEC UINT64_C(1000000)
/* Attach waits for udev to process the new partitions, which can take a while on a busy machine. */
#define CALL_TIMEOUT_USEC (60 * USEC_PER_SEC)
/* A call that may ask for a password must leave time to type it. */
#define INTERACTIVE_CALL_TIMEOUT_USEC (5 * 60 * USEC_PER_SEC)
/* mkfs on a large image, after zeroing it with "erase", takes minutes; a password fits in it too. */
#define SLOW_CALL_TIMEOUT_USEC (60 * 60 * USEC_PER_SEC)

void context_done(Context *c)
{
        c->agent = polkit_agent_close(c->agent);
        c->bus = sd_bus_flush_close_unref(c->bus);
}

bool context_tell(const Context *c)
{
        return !c->json && !c->quiet && isatty(STDOUT_FILENO);
}

bool context_given(const Context *c, int arg)
{
        return c->given & OPT(arg);
}

/* Connects on first use, so that what can fail locally (a missing image) fails before the bus is touched. */
int context_bus(Context *c)
{
        int r;

        if (c->bus)
                return 0;

        r = sd_bus_open_system(&c->bus);
        if (r < 0)
                return log_error_errno(r, "cannot connect to the system bus");
        r = sd_bus_set_allow_interactive_authorization(c->bus, c->ask_password);
        if (r < 0)
                return log_error_errno(r, "cannot set up the bus connection");
        return 0;
}

int context_new_call(Context *c, sd_bus_message **ret, const char *member)
{
        int r;

        r = context_bus(c);
        if (r < 0)
                return r;
        r = context_message(c, ret, member);
        if (r < 0)
                return log_build_error(r, member);
        return 0;
}

int context_message(Context *c, sd_bus_message **ret, const char *member)
{
        assert(c->bus);
        return sd_bus_message_new_method_call(
                c->bus, ret, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, member);
}

int context_can_pass_fds(Context *c, const char *what)
{
        int r;

        r = context_bus(c);
        if (r < 0)
                return r;
        r = sd_bus_can_send(c->bus, 'h');
        if (r < 0)
                return log_error_errno(r, "cannot connect to the system bus");
        if (r == 0)
                return log_error(
                        -EOPNOTSUPP, "cannot %s %s: the bus connection cannot pass files", what, c->arg);
        return 0;
}

int log_build_error(int r, const char *member)
{
        return log_error_errno(r, "cannot build the %s call", member);
}

int log_reply_error(int r, const char *member)
{
        return log_error_errno(r, "cannot read loopd's reply to %s", member);
}

/* Sends m and waits. For a command that polkit may have to ask about, a text agent runs first when a
 * password can be typed here (root is never asked), and the timeout leaves time to type it. */
static int call(Context *c, sd_bus_message *m, bool slow, sd_bus_error *error, sd_bus_message **ret_reply)
{
        bool interactive = c->auth && c->ask_password;

        if (interactive && !c->agent_tried) {
                c->agent_tried = true;
                if (isatty(STDIN_FILENO) && geteuid() != 0)
                        c->agent = polkit_agent_open();
        }

        uint64_t timeout = interactive ? INTERACTIVE_CALL_TIMEOUT_USEC : CALL_TIMEOUT_USEC;
        return sd_bus_call(c->bus, m, slow ? SLOW_CALL_TIMEOUT_USEC : timeout, error, ret_reply);
}

int context_call(Context *c, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply)
{
        return call(c, m, false, error, ret_reply);
}

int context_call_slow(Context *c, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply)
{
        return call(c, m, true, error, ret_reply);
}

typedef struct PendingReply {
        sd_bus_message *reply;
} PendingReply;

static int pending_reply_arrived(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        PendingReply *p = userdata;

        p->reply = sd_bus_message_ref(reply);
        return 0;
}

int context_call_meanwhile(Context *c, sd_bus_message *m, void (*work)(void *userdata), void *userdata,
        sd_bus_error *error, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        PendingReply p = {};
        int r;

        assert(!(c->auth && c->ask_password));
        /* sd-bus answers a call that times out, or a connection that closes, with an error reply of its
         * own: the wait ends either way. */
        r = sd_bus_call_async(c->bus, &slot, m, pending_reply_arrived, &p, CALL_TIMEOUT_USEC);
        if (r < 0)
                return sd_bus_error_set_errno(error, r);
        /* Out to the daemon before the work, not queued behind the connection's Hello until the wait. */
        r = sd_bus_flush(c->bus);
        if (r < 0)
                return sd_bus_error_set_errno(error, r);
        work(userdata);
        while (!p.reply) {
                r = sd_bus_process(c->bus, NULL);
                if (r == 0)
                        r = sd_bus_wait(c->bus, UINT64_MAX);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        return sd_bus_error_set_errno(error, r);
        }
        reply = TAKE_PTR(p.reply);
        if (sd_bus_message_is_method_error(reply, NULL))
                return sd_bus_error_copy(error, sd_bus_message_get_error(reply));
        *ret_reply = TAKE_PTR(reply);
        return 1;
}

/* The daemon sees paths in its own terms: absolute, symlinks (/dev/disk/by-label/...) resolved. A bare
 * "loop3p1" means the node in /dev. An absolute path that does not resolve goes as it is: the daemon knows
 * best whether it names something (an unmount of a mount point whose FUSE server died, say). */
int resolve_node(const char *what, const char *arg, char **ret)
{
        char *p;

        if (startswith(arg, "loop") && loop_parse_node(arg, NULL, NULL) >= 0)
                p = strjoin2("/dev/", arg);
        else {
                p = realpath(arg, NULL);
                if (!p && arg[0] != '/')
                        return log_error_errno(-errno, "cannot %s %s", what, arg);
                if (!p)
                        p = strdup(arg);
        }
        if (!p)
                return log_error_errno(-ENOMEM, "cannot %s %s", what, arg);
        *ret = p;
        return 0;
}

int resolve_unmount_target(const char *arg, char **ret)
{
        _cleanup_free_ char *copy = strdup(arg), *dir = NULL;
        const char *base;
        char *slash, *p;

        if (!copy)
                return log_error_errno(-ENOMEM, "cannot unmount %s", arg);
        /* A node (loopN..., /dev/...), or a name that only the whole path resolves ("mnt/", ".", ".."). */
        slash = strrchr(copy, '/');
        base = slash ? slash + 1 : copy;
        if ((startswith(arg, "loop") && loop_parse_node(arg, NULL, NULL) >= 0) || startswith(arg, "/dev/") ||
                isempty(base) || streq(base, ".") || streq(base, ".."))
                return resolve_node("unmount", arg, ret);

        /* A mount point itself is not looked at: its stat() waits for a FUSE driver that hangs, and fails
         * once that driver died, when the user wants it unmounted most. Its directory is resolved. */
        if (slash)
                *slash = '\0';
        dir = realpath(slash ? (slash == copy ? "/" : copy) : ".", NULL);
        if (!dir && arg[0] == '/')
                /* As resolve_node() has it: the daemon knows best whether it names something. */
                dir = strdup(copy);
        if (!dir)
                return log_error_errno(-errno, "cannot unmount %s", arg);
        if (asprintf(&p, "%s%s%s", dir, streq(dir, "/") ? "" : "/", base) < 0)
                return log_error_errno(-ENOMEM, "cannot unmount %s", arg);
        *ret = p;
        return 0;
}

static const char *file_type_name(mode_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFDIR:
                return "a directory";
        case S_IFBLK:
                return "a block device";
        case S_IFCHR:
                return "a character device";
        case S_IFIFO:
                return "a FIFO";
        case S_IFSOCK:
                return "a socket";
        default:
                return "not a regular file";
        }
}

/* Opens IMAGE as the calling user, which is the point: the daemon never opens a path for anyone. Only
 * regular files; a FIFO or a device is refused before open() could block on it or have side effects, and
 * again after, in case the path changed in between. */
int open_image(const char *what, const char *path, bool writable, const char *hint, int *ret_fd)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        int flags, r;

        if (stat(path, &st) < 0)
                return log_error_errno(-errno, "cannot %s %s", what, path);
        if (!S_ISREG(st.st_mode))
                return log_error(-EBADF, "cannot %s %s: %s, not a regular file", what, path,
                        file_type_name(st.st_mode));

        fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                r = -errno;
                if (writable && (r == -EACCES || r == -EPERM || r == -EROFS))
                        return log_error(r, "cannot open %s for writing: %s (%s)", path, strerror(-r), hint);
                return log_error_errno(r, "cannot open %s", path);
        }
        if (fstat(fd, &st) < 0)
                return log_error_errno(-errno, "cannot %s %s", what, path);
        if (!S_ISREG(st.st_mode))
                return log_error(-EBADF, "cannot %s %s: %s, not a regular file", what, path,
                        file_type_name(st.st_mode));

        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return log_error_errno(-errno, "cannot %s %s", what, path);

        *ret_fd = TAKE_FD(fd);
        return 0;
}

int output_open(Output *o)
{
        o->f = open_memstream(&o->buf, &o->size);
        if (!o->f)
                return log_error_errno(-errno, "cannot allocate output");
        /* One thread: no lock taken at each of the many small writes a long list makes. */
        (void)__fsetlocking(o->f, FSETLOCKING_BYCALLER);
        return 0;
}

void output_done(Output *o)
{
        if (o->f)
                fclose(o->f);
        free(o->buf);
        *o = (Output){};
}

int output_emit(Output *o)
{
        if (fclose(TAKE_PTR(o->f)) != 0)
                return log_error_errno(-ENOMEM, "cannot allocate output");
        fwrite(o->buf, 1, o->size, stdout);
        return 0;
}

int output_table_new(Table **ret, size_t n, const char *const *headers)
{
        int r = table_new(ret, n, headers);
        return r < 0 ? log_error_errno(r, "cannot allocate output") : 0;
}
