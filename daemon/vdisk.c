/* vdisk.c: a qemu-storage-daemon per virtual-disk image, its FUSE export, and what a restarted loopd needs
 * to find them again. */
#include "vdisk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "process-util.h"
#include "sandbox.h"
#include "state.h"

#define EXPORTS_DIR "exports"
#define EXPORT_PREFIX "vdisk-"
#define INFO_SUFFIX ".info"
/* How long a writable export may take to flush and exit when asked, before it is killed. */
#define STOP_TIMEOUT_MS (10 * 1000)
#define ERROR_WAIT_MS 1000
/* How long a killed one may take to be gone (it exits at once unless the kernel holds it in a wait that a
 * signal cannot break, on a hung filesystem). */
#define KILL_WAIT_MS 1000
#define INFO_MAX 8192

/* The formats an export serves, by qemu's driver name; those that can have a backing file get backing: null
 * (image.c refuses the ones that say they have one, this makes sure qemu opens none). */
static const struct {
        const char *name;
        bool backing;
} formats[] = {
        { "qcow2", true },
        { "vmdk", true },
        { "vdi", false },
        { "vpc", false },
        { "vhdx", false },
};

/* qemu 7.2's FUSE export reads every request into one buffer and hands a pointer into it to the write it
 * starts; a request that comes in while the write waits overwrites its data before it reaches the image
 * (fixed in qemu 10.0: "fuse: Copy write buffer content before polling"). */
#define SAFE_WRITES_MAJOR 10

int vdisk_writes_safe(const char *qsd_path)
{
        static char *checked_path;
        static int checked = -1;
        char *const argv[] = { (char *)"qemu-storage-daemon", (char *)"--version", NULL };
        char text[256] = "";
        size_t len = 0;
        int pipe_fds[2], major = 0, minor = 0, status;
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int r;

        qsd_path = qsd_path ?: VDISK_QSD_PATH;
        if (checked >= 0 && checked_path && streq(checked_path, qsd_path))
                return checked;
        if (pipe2(pipe_fds, O_CLOEXEC) < 0)
                return negative_errno();
        if (posix_spawn_file_actions_init(&fa) != 0) {
                safe_close(pipe_fds[0]);
                safe_close(pipe_fds[1]);
                return -ENOMEM;
        }
        r = posix_spawn_file_actions_adddup2(&fa, pipe_fds[1], STDOUT_FILENO);
        if (r == 0)
                r = posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        if (r == 0)
                r = posix_spawn(&pid, qsd_path, &fa, NULL, argv, (char *[]){ (char *)"LC_ALL=C", NULL });
        posix_spawn_file_actions_destroy(&fa);
        safe_close(pipe_fds[1]);
        if (r != 0) {
                safe_close(pipe_fds[0]);
                return -r;
        }
        /* It prints one line and exits; a second at most. */
        for (int waited = 0; len < sizeof(text) - 1 && waited < ERROR_WAIT_MS;) {
                struct pollfd pfd = { .fd = pipe_fds[0], .events = POLLIN };
                ssize_t n;

                if (poll(&pfd, 1, 100) == 0) {
                        waited += 100;
                        continue;
                }
                n = read(pipe_fds[0], text + len, sizeof(text) - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t)n;
        }
        text[len] = '\0';
        safe_close(pipe_fds[0]);
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, &status, 0);

        const char *v = strstr(text, "version ");
        if (!v || sscanf(v, "version %d.%d", &major, &minor) < 1)
                return -EBADMSG;
        free(checked_path);
        checked_path = strdup(qsd_path);
        checked = major >= SAFE_WRITES_MAJOR;
        return checked;
}

bool vdisk_format_supported(const char *format)
{
        for (size_t i = 0; format && i < ELEMENTSOF(formats); i++)
                if (streq(formats[i].name, format))
                        return true;
        return false;
}

static bool format_has_backing(const char *format)
{
        for (size_t i = 0; i < ELEMENTSOF(formats); i++)
                if (streq(formats[i].name, format))
                        return formats[i].backing;
        return false;
}

Vdisk *vdisk_free(Vdisk *v)
{
        if (!v)
                return NULL;
        sd_event_source_disable_unref(v->exit_source);
        sd_event_source_disable_unref(v->stderr_source);
        safe_close(v->pidfd);
        safe_close(v->stderr_fd);
        free(v->error);
        free(v->path);
        free(v->info_path);
        free(v->image);
        free(v->format);
        free(v);
        return NULL;
}

Vdisk *vdisk_stop(Vdisk *v)
{
        if (!v)
                return NULL;
        v->exit_source = sd_event_source_disable_unref(v->exit_source);
        if (v->pidfd >= 0) {
                /* A writable export that served a device flushes what qemu holds of the image (qcow2
                 * metadata) on SIGTERM. Anything else is killed and not waited for: the process may be the
                 * caller's to stop (it runs as them), and loopd must not wait on it long. (A starting qemu,
                 * PID 1 of its namespace without a handler yet, would not even get the SIGTERM.) */
                bool flush = v->writable && v->bound;
                if (pidfd_signal(v->pidfd, flush ? SIGTERM : SIGKILL) >= 0 &&
                        !pidfd_wait_until(v->pidfd, now_ms() + (flush ? STOP_TIMEOUT_MS : KILL_WAIT_MS)) &&
                        flush) {
                        log_warning("qemu-storage-daemon (pid %d) serving %s did not exit, killing it",
                                (int)v->pid, strempty(v->image));
                        (void)pidfd_signal(v->pidfd, SIGKILL);
                        (void)pidfd_wait_until(v->pidfd, now_ms() + KILL_WAIT_MS);
                }
        }
        if (v->path) {
                if (umount2(v->path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
                        log_warning_errno(negative_errno(), "Failed to unmount the export %s: %m", v->path);
                if (unlink(v->path) < 0 && errno != ENOENT)
                        log_debug_errno(negative_errno(), "Failed to remove %s: %m", v->path);
                log_debug("Stopped the export of %s (%s)", strempty(v->image), v->path);
        }
        if (v->info_path && unlink(v->info_path) < 0 && errno != ENOENT)
                log_debug_errno(negative_errno(), "Failed to remove %s: %m", v->info_path);
        return vdisk_free(v);
}

static int vdisk_on_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Vdisk *v = userdata;
        char message[512];

        v->exit_source = sd_event_source_disable_unref(v->exit_source);
        vdisk_error(v, message, sizeof(message));
        v->pidfd = safe_close(v->pidfd);
        if (v->bound)
                log_warning("qemu-storage-daemon serving %s for loop%u exited%s%s; the device reads as I/O "
                            "errors until it is detached",
                        strempty(v->image), v->number, message[0] ? ": " : "", message);
        else
                log_debug("qemu-storage-daemon for %s exited%s%s", strempty(v->image),
                        message[0] ? ": " : "", message);
        return 0;
}

static int watch_exit(Vdisk *v, sd_event *event)
{
        return sd_event_add_io(event, &v->exit_source, v->pidfd, EPOLLIN, vdisk_on_exit, v);
}

/* Written anew (state_write_file()) whenever it changes. The image's name comes last: it may hold
 * anything, newlines included. */
static int info_save(const Vdisk *v)
{
        const char *slash = strrchr(v->info_path, '/');
        _cleanup_free_ char *dir = strndup(v->info_path, (size_t)(slash - v->info_path)), *contents = NULL;
        uint64_t start = 0;

        if (v->pidfd >= 0)
                (void)process_start_time(v->pid, &start);
        if (!dir ||
                asprintf(&contents,
                        "PID=%d\nSTART=%" PRIu64 "\nBOUND=%d\nNUMBER=%u\nDISKSEQ=%" PRIu64
                        "\nWRITABLE=%d\nFORMAT=%s\nIMAGE=%s",
                        (int)v->pid, start, v->bound, v->number, v->diskseq, v->writable, v->format,
                        strempty(v->image)) < 0)
                return -ENOMEM;
        return state_write_file(dir, slash + 1, contents);
}

static int info_load(Vdisk *v, uint64_t *ret_start)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        char format[16] = "";
        int pid, bound, writable, consumed = 0;
        ssize_t n;

        fd = open(v->info_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        text = malloc(INFO_MAX + 1);
        if (!text)
                return -ENOMEM;
        n = read(fd, text, INFO_MAX);
        if (n < 0)
                return negative_errno();
        text[n] = '\0';
        if (sscanf(text,
                    "PID=%d\nSTART=%" SCNu64 "\nBOUND=%d\nNUMBER=%u\nDISKSEQ=%" SCNu64
                    "\nWRITABLE=%d\nFORMAT=%15s\nIMAGE=%n",
                    &pid, ret_start, &bound, &v->number, &v->diskseq, &writable, format, &consumed) != 7 ||
                consumed == 0 || pid <= 0 || !vdisk_format_supported(format))
                return -EBADMSG;
        v->pid = pid;
        v->bound = bound;
        v->writable = writable;
        v->format = strdup(format);
        v->image = strdup(text + consumed);
        return v->format && v->image ? 0 : -ENOMEM;
}

static Vdisk *vdisk_new(void)
{
        Vdisk *v = calloc(1, sizeof(Vdisk));

        if (v)
                v->pidfd = v->stderr_fd = -EBADF;
        return v;
}

static int exports_dir(const char *state_dir, char **ret)
{
        _cleanup_free_ char *dir = NULL;
        struct stat st;

        if (asprintf(&dir, "%s/" EXPORTS_DIR, state_dir) < 0)
                return -ENOMEM;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        if (lstat(dir, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode) || st.st_uid != 0)
                return -ENOTDIR;
        if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
                return negative_errno();
        *ret = TAKE_PTR(dir);
        return 0;
}

int vdisk_start(sd_event *event, const char *state_dir, const char *qsd_path, int image_fd,
        const char *format, bool writable, bool direct, uid_t uid, gid_t gid, const gid_t *groups,
        size_t n_groups, const char *image, Vdisk **ret)
{
        _cleanup_(vdisk_stopp) Vdisk *v = NULL;
        _cleanup_free_ char *dir = NULL, *options = NULL, *file_node = NULL, *format_node = NULL,
                            *export = NULL;
        _cleanup_close_ int fuse_fd = -EBADF, err_write = -EBADF;
        const char *rw = writable ? "false" : "true";
        int pipe_fds[2], fd, r;

        if (!vdisk_format_supported(format))
                return -EMEDIUMTYPE;
        r = exports_dir(state_dir, &dir);
        if (r < 0)
                return r;

        v = vdisk_new();
        if (!v || asprintf(&v->path, "%s/" EXPORT_PREFIX "XXXXXX", dir) < 0)
                return -ENOMEM;
        v->format = strdup(format);
        v->image = strdup(strempty(image));
        v->writable = writable;
        if (!v->format || !v->image)
                return -ENOMEM;
        fd = mkostemp(v->path, O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                v->path = mfree(v->path); /* nothing to remove */
                return r;
        }
        safe_close(fd);
        if (asprintf(&v->info_path, "%s" INFO_SUFFIX, v->path) < 0)
                return -ENOMEM;

        /* The mount is loopd's (root's, in the host's namespace), on a file only root can reach; the process
         * only gets the FUSE fd to serve it. allow_other: the loop device, not its user, reads it. */
        fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fuse_fd < 0)
                return negative_errno();
        if (asprintf(&options, "fd=%d,rootmode=100000,user_id=%u,group_id=%u,allow_other", fuse_fd,
                    (unsigned)uid, (unsigned)gid) < 0)
                return -ENOMEM;
        if (mount("loopd-vdisk", v->path, "fuse.loopd-export", MS_NOSUID | MS_NODEV | MS_NOEXEC, options) <
                0)
                return negative_errno();

        if (pipe2(pipe_fds, O_CLOEXEC) < 0)
                return negative_errno();
        v->stderr_fd = pipe_fds[0];
        err_write = pipe_fds[1];
        if (fcntl(v->stderr_fd, F_SETFL, O_NONBLOCK) < 0)
                return negative_errno();

        /* The image fd is 4 in the sandbox, the FUSE fd 3; no path of the host's appears here, and nothing
         * of the image's choosing: the driver is pinned, the backing chain cut. Where the image's
         * filesystem takes O_DIRECT, qemu reads it so, with Linux AIO: the loop device above reads the
         * export with direct I/O too, and without both the guest's data went through two page caches and
         * a copy more (a sequential read ran at a tenth of the raw image's speed). */
        if (asprintf(&file_node,
                    "{\"driver\":\"file\",\"node-name\":\"image\",\"filename\":\"/proc/self/fd/4\","
                    "\"read-only\":%s%s}",
                    rw, direct ? ",\"cache\":{\"direct\":true},\"aio\":\"native\"" : "") < 0 ||
                asprintf(&format_node,
                        "{\"driver\":\"%s\",\"node-name\":\"disk\",\"file\":\"image\",\"read-only\":%s%s}",
                        format, rw, format_has_backing(format) ? ",\"backing\":null" : "") < 0 ||
                asprintf(&export,
                        "{\"type\":\"fuse\",\"id\":\"export\",\"node-name\":\"disk\",\"mountpoint\":\"/dev/fd/3\","
                        "\"writable\":%s,\"allow-other\":\"off\"}",
                        writable ? "true" : "false") < 0)
                return -ENOMEM;
        char *const argv[] = { (char *)"qemu-storage-daemon", (char *)"--blockdev", file_node,
                (char *)"--blockdev", format_node, (char *)"--export", export, NULL };
        const int fds[] = { fuse_fd, image_fd };
        SandboxSpec spec = {
                .path = qsd_path ?: VDISK_QSD_PATH,
                .argv = argv,
                .uid = uid,
                .gid = gid,
                .groups = groups,
                .n_groups = n_groups,
                .fds = fds,
                .n_fds = ELEMENTSOF(fds),
                .fake_dev_fd = true,
                .stderr_fd = err_write,
        };
        r = sandbox_spawn(&spec, &v->pid, &v->pidfd);
        if (r < 0)
                return r;
        r = watch_exit(v, event);
        if (r < 0)
                return r;
        /* Without its record a restarted loopd could not stop it: no record, no export. */
        r = info_save(v);
        if (r < 0)
                return r;
        log_debug("Serving %s (%s) through %s, qemu-storage-daemon pid %d", strempty(image), format, v->path,
                (int)v->pid);
        *ret = TAKE_PTR(v);
        return 0;
}

/* Reads the process's stderr to its end (for a moment at most) and keeps the message in v->error. */
static void read_error(Vdisk *v)
{
        char text[4096], *line, *p;
        size_t len = 0;

        if (v->error || v->stderr_fd < 0)
                return;
        for (int waited = 0; len < sizeof(text) - 1;) {
                ssize_t n = read(v->stderr_fd, text + len, sizeof(text) - 1 - len);
                if (n > 0) {
                        len += (size_t)n;
                        continue;
                }
                if (n == 0 || (errno != EAGAIN && errno != EINTR) || waited >= ERROR_WAIT_MS)
                        break;
                struct pollfd pfd = { .fd = v->stderr_fd, .events = POLLIN };
                (void)poll(&pfd, 1, 100);
                waited += 100;
        }
        v->stderr_source = sd_event_source_disable_unref(v->stderr_source);
        v->stderr_fd = safe_close(v->stderr_fd);
        text[len] = '\0';
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
                text[--len] = '\0';
        /* "qemu-storage-daemon: --blockdev {...}: Failed to get "write" lock\nIs another process using the
         * image [/proc/self/fd/4]?": the option (loopd's own JSON, no ": " in it) goes. */
        line = text;
        p = strstr(line, "}: ");
        if (p)
                line = p + 3;
        else if (strncmp(line, "qemu-storage-daemon: ", 21) == 0)
                line += 21;
        /* Its lines joined with "; ", and qemu's name for the image (the fd it reopened) left out. */
        _cleanup_free_ char *joined = malloc(2 * strlen(line) + 1);
        if (!joined)
                return;
        joined[0] = '\0';
        for (char *save = NULL, *l = strtok_r(line, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char *fd_name = strstr(l, " [/proc/self/fd/");
                if (fd_name && strchr(fd_name, ']'))
                        memmove(fd_name, strchr(fd_name, ']') + 1, strlen(strchr(fd_name, ']') + 1) + 1);
                if (joined[0])
                        strcat(joined, "; ");
                strcat(joined, l);
        }
        v->error = TAKE_PTR(joined);
}

void vdisk_error(Vdisk *v, char *buf, size_t size)
{
        if (size == 0)
                return;
        /* Its stderr ends when it does: a process still there is killed first, never waited for. */
        if (!v->error && v->pidfd >= 0 && pidfd_signal(v->pidfd, SIGKILL) >= 0)
                (void)pidfd_wait_until(v->pidfd, now_ms() + ERROR_WAIT_MS);
        read_error(v);
        (void)snprintf(buf, size, "%s", strempty(v->error));
}

static int vdisk_on_stderr(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Vdisk *v = userdata;
        char text[1024];
        ssize_t n = read(fd, text, sizeof(text) - 1);

        if (n > 0) {
                text[n] = '\0';
                log_debug("qemu-storage-daemon for loop%u: %s", v->number, text);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                v->stderr_source = sd_event_source_disable_unref(v->stderr_source);
        return 0;
}

int vdisk_bind(Vdisk *v, sd_event *event, unsigned number, uint64_t diskseq)
{
        v->bound = true;
        if (v->stderr_fd >= 0 && !v->stderr_source &&
                sd_event_add_io(event, &v->stderr_source, v->stderr_fd, EPOLLIN, vdisk_on_stderr, v) < 0)
                log_debug("Cannot read qemu-storage-daemon's stderr for loop%u", number);
        v->number = number;
        v->diskseq = diskseq;
        return info_save(v);
}

/* An export left by a loopd that is gone, with its record read: the process adopted if it is still the
 * one that was started. */
static Vdisk *vdisk_adopt(sd_event *event, const char *dir, const char *name)
{
        _cleanup_(vdisk_stopp) Vdisk *v = vdisk_new();
        uint64_t start = 0, now = 0;
        int r;

        if (!v || asprintf(&v->path, "%s/%s", dir, name) < 0 ||
                asprintf(&v->info_path, "%s" INFO_SUFFIX, v->path) < 0)
                return NULL;
        r = info_load(v, &start);
        if (r < 0) {
                log_info_errno(r, "Tearing down the export %s, its record is unreadable: %m", v->path);
                return NULL; /* stopped: unmounted, removed */
        }
        v->pidfd = pidfd_open_pid(v->pid);
        if (v->pidfd >= 0 && (process_start_time(v->pid, &now) < 0 || now != start))
                v->pidfd = safe_close(v->pidfd); /* another process got the pid */
        if (v->pidfd >= 0 && watch_exit(v, event) < 0)
                return NULL;
        return TAKE_PTR(v);
}

Vdisk *vdisk_load(sd_event *event, const char *state_dir)
{
        _cleanup_free_ char *dir = NULL;
        Vdisk *list = NULL;
        DIR *d;

        if (asprintf(&dir, "%s/" EXPORTS_DIR, state_dir) < 0)
                return NULL;
        d = opendir(dir);
        if (!d)
                return NULL;
        for (struct dirent *de; (de = readdir(d));) {
                size_t len = strlen(de->d_name);
                Vdisk *v;

                if (de->d_name[0] == '.' &&
                        strncmp(de->d_name + 1, EXPORT_PREFIX, strlen(EXPORT_PREFIX)) == 0) {
                        (void)unlinkat(dirfd(d), de->d_name, 0); /* state_write_file()'s, cut short */
                        continue;
                }
                if (strncmp(de->d_name, EXPORT_PREFIX, strlen(EXPORT_PREFIX)) != 0)
                        continue;
                if (len > strlen(INFO_SUFFIX) &&
                        streq(de->d_name + len - strlen(INFO_SUFFIX), INFO_SUFFIX)) {
                        /* A record whose export is gone. */
                        char export[NAME_MAX + 1];
                        (void)snprintf(export, sizeof(export), "%.*s", (int)(len - strlen(INFO_SUFFIX)),
                                de->d_name);
                        if (faccessat(dirfd(d), export, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
                                (void)unlinkat(dirfd(d), de->d_name, 0);
                        continue;
                }
                if (strchr(de->d_name, '.'))
                        continue;
                v = vdisk_adopt(event, dir, de->d_name);
                if (v) {
                        v->next = list;
                        list = v;
                }
        }
        closedir(d);
        return list;
}
