/* engine-format.c: Format: the checks, wiping and erasing the node, and the confined mkfs run asynchronously
 * (its pidfd and its output watched by the event loop, bounded in time), then the new filesystem probed. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format-fs.h"
#include "image-reader.h"
#include "log.h"
#include "partition.h"
#include "probe.h"
#include "process-util.h"
#include "registry.h"
#include "watcher.h"
#include "worker.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* A mkfs writes metadata only (no discard, quick modes): minutes would mean it hangs. */
#define FORMAT_TIMEOUT_USEC (5 * 60 * UINT64_C(1000000))
/* Wiping, and erasing with plain writes where the device cannot zero ranges: an hour is a stuck device. */
#define PREPARE_TIMEOUT_USEC (60 * 60 * UINT64_C(1000000))
/* What of its output is kept for the log. */
#define FORMAT_OUTPUT_MAX (64 * 1024)

struct FormatJob {
        Manager *manager;
        const FormatType *type;
        char *node;
        unsigned number;
        unsigned partition;
        dev_t devnum;
        uint64_t diskseq; /* the binding the job is for */
        uid_t uid;
        bool erase;
        char *label;
        char *uuid;
        int node_fd; /* held (O_EXCL) while the worker prepares the node */
        Worker *worker; /* wiping and erasing, off the event loop */
        pid_t pid;
        int pidfd;
        int output_fd;
        char *output;
        size_t output_size;
        bool output_truncated;
        sd_event_source *exit_source;
        sd_event_source *output_source;
        sd_event_source *timer;
        bool timed_out;
        bool marked; /* the registry's mark of the device is this job's */
        /* A whole device's worker ran: the kernel's partitions are to follow the table when the job ends. */
        bool resync;
        FormatDone done;
        void *userdata;
};

int engine_check_not_formatting(Manager *m, unsigned number, EngineError *e)
{
        if (registry_is_formatting(m->registry, number))
                return engine_error(e, -EBUSY, ENGINE_BUSY,
                        "loop%u is being formatted; try again when the Format has finished", number);
        return 0;
}

static void job_read_output(FormatJob *job)
{
        for (;;) {
                char buf[4096];
                ssize_t n = read(job->output_fd, buf, sizeof(buf));

                if (n <= 0)
                        return; /* EAGAIN, or the tool closed it */
                if (job->output_size + (size_t)n > FORMAT_OUTPUT_MAX) {
                        job->output_truncated = true;
                        n = (ssize_t)(FORMAT_OUTPUT_MAX - job->output_size);
                }
                if (n > 0) {
                        char *grown = realloc(job->output, job->output_size + (size_t)n + 1);

                        if (!grown)
                                return;
                        job->output = grown;
                        memcpy(job->output + job->output_size, buf, (size_t)n);
                        job->output_size += (size_t)n;
                        job->output[job->output_size] = '\0';
                }
        }
}

/* The tool's output, line by line, in loopd's log (never the caller's: it names paths and sizes of
 * loopd's). */
static void job_log_output(FormatJob *job)
{
        const char *program = format_type_program(job->type);
        char *line = job->output;

        while (line && *line) {
                size_t len = strcspn(line, "\r\n");

                /* Progress bars are runs of backspaces: only the printable part is worth a line. */
                if (len > 0 && strspn(line, " \b\t") < len)
                        log_info("%s %s: %.*s", program, job->node, (int)len, line);
                line += len;
                line += strspn(line, "\r\n");
        }
        if (job->output_truncated)
                log_info("%s %s: (more output, not kept)", program, job->node);
}

static FormatJob *job_free(FormatJob *job)
{
        if (!job)
                return NULL;
        job->exit_source = sd_event_source_disable_unref(job->exit_source);
        job->output_source = sd_event_source_disable_unref(job->output_source);
        job->timer = sd_event_source_disable_unref(job->timer);
        job->worker = worker_cancel(job->worker);
        safe_close(job->node_fd);
        if (job->pidfd >= 0) {
                siginfo_t si = {};

                /* Still running (loopd exits): killed and reaped here, not left to the SIGCHLD handler. */
                (void)pidfd_signal(job->pidfd, SIGKILL);
                (void)waitid((idtype_t)P_PIDFD, (id_t)job->pidfd, &si, WEXITED);
                safe_close(job->pidfd);
        }
        safe_close(job->output_fd);
        if (job->marked)
                registry_unmark_formatting(job->manager->registry, job->number);
        free(job->output);
        free(job->node);
        free(job->label);
        free(job->uuid);
        free(job);
        return NULL;
}

FormatJob *engine_format_cancel(FormatJob *job)
{
        return job_free(job);
}

/* Did the tool make what was asked? For when its exit status could not be read (the SIGCHLD handler reaped
 * it first): the device is asked instead. */
static bool node_has_type(const FormatJob *job, const char *type)
{
        _cleanup_free_ char *fstype = NULL, *label = NULL, *uuid = NULL;

        return engine_probe_filesystem(job->manager, job->node, job->devnum, type, &fstype, &label, &uuid) >=
                0 &&
                streq(fstype, type);
}

/* A whole device's worker removed its partitions from the kernel, or some of them: one held open made it
 * Busy after the others had gone, or the erase or the wipe failed after. The kernel's partitions now
 * follow what the device holds: the table still there (a failure before the wipe) brings them back, none
 * (after the wipe) leaves none, and dead /dev/loopNpM nodes go. Then the job is done with the device. */
static void job_release_device(FormatJob *job)
{
        int r;

        registry_unmark_formatting(job->manager->registry, job->number);
        job->marked = false;
        if (job->resync) {
                job->resync = false;
                r = loop_update_partitions(job->number, job->diskseq, job->manager->image_reader);
                if (r < 0 && r != -ENODEV && r != -ESTALE)
                        log_warning_errno(r, "loop%u: Failed to update its partitions after the Format: %m",
                                job->number);
        }
        if (job->manager->watcher)
                (void)watcher_probe_device(job->manager->watcher, job->number);
}

static int job_finish(FormatJob *job, const siginfo_t *si, bool status_known)
{
        const char *program = format_type_program(job->type);
        EngineError e = {};
        int r = 0;

        job_read_output(job);
        job_log_output(job);

        if (job->timed_out)
                r = engine_error(&e, -ETIMEDOUT, ENGINE_TIMEOUT,
                        "%s did not finish within %u seconds and was stopped; loopd's log has its output",
                        program, (unsigned)(FORMAT_TIMEOUT_USEC / 1000000));
        else if (status_known && si->si_code == CLD_EXITED && si->si_status == 0)
                r = 0;
        else if (status_known && si->si_code == CLD_EXITED)
                r = engine_error(&e, -EIO, ENGINE_FAILED,
                        "%s failed (exit status %d); loopd's log has its output", program, si->si_status);
        else if (status_known)
                r = engine_error(&e, -EIO, ENGINE_FAILED,
                        "%s was killed by signal %d; loopd's log has its output", program, si->si_status);
        else if (!node_has_type(job, format_type_name(job->type)))
                r = engine_error(&e, -EIO, ENGINE_FAILED,
                        "%s failed (no %s on %s afterwards); loopd's log has its output", program,
                        format_type_name(job->type), job->node);
        if (r < 0)
                log_warning(
                        "Format of %s as %s failed: %s", job->node, format_type_name(job->type), e.message);
        else
                log_info("Formatted %s as %s", job->node, format_type_name(job->type));

        /* What the Device's Partitions say now: no udev event comes while loopd holds the device locked. */
        job->pidfd = safe_close(job->pidfd);
        job_release_device(job);

        job->done(r, &e, job->userdata);
        job_free(job);
        return 0;
}

static int job_on_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        FormatJob *job = userdata;
        siginfo_t si = {};
        int r;

        (void)s;
        (void)fd;
        (void)revents;
        /* ECHILD: reaped by the SIGCHLD handler after all; job_finish() asks the device instead. */
        r = waitid((idtype_t)P_PIDFD, (id_t)job->pidfd, &si, WEXITED | WNOHANG);
        if (r >= 0 && si.si_pid == 0)
                return 0; /* not yet */
        return job_finish(job, &si, r >= 0);
}

static int job_on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        FormatJob *job = userdata;

        (void)fd;
        job_read_output(job);
        if (revents & (EPOLLHUP | EPOLLERR))
                /* Closed: the rest is read when the tool has exited. */
                (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static int job_on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        FormatJob *job = userdata;

        siginfo_t si = {};

        (void)s;
        (void)usec;
        /* Exited already, its exit not yet handled (or reaped by the SIGCHLD handler): not a timeout,
         * job_on_exit() follows. */
        if (waitid((idtype_t)P_PIDFD, (id_t)job->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0
                        ? errno == ECHILD
                        : si.si_pid != 0)
                return 0;
        job->timed_out = true;
        (void)pidfd_signal(job->pidfd, SIGKILL);
        return 0;
}

/* ---- before the tool ---- */

/* A DOS extended partition holds the logical ones (5 and up): its node, as the kernel and
 * partition_plan() make it, is only the first 1 KiB (or sector) of the chain of their tables, and a
 * Format of it would cut them off, even from under their mounts. The watcher's probe of this binding
 * (diskseq) says which type partition M has. Before it has looked, the kernel's partitions tell: a primary
 * one that small while logical ones exist is the extended one. */
static int check_not_extended(
        Manager *m, unsigned number, unsigned partition, uint64_t diskseq, const char *node, EngineError *e)
{
        const LoopInfo *seen = m->watcher ? watcher_device(m->watcher, number) : NULL;
        _cleanup_free_ KernelPartition *parts = NULL;
        bool logical = false, small = false, extended = false, known = false;
        size_t n = 0;
        int r;

        if (partition == 0 || partition > 4)
                return 0;
        if (seen && diskseq != 0 && seen->diskseq == diskseq) {
                const PartitionInfo *probed = watcher_device_partitions(m->watcher, number, &n);

                for (size_t i = 0; probed && i < n; i++)
                        if (probed[i].number == partition && !isempty(probed[i].part_type)) {
                                known = true;
                                extended = partition_type_is_extended(probed[i].part_type);
                        }
        }
        if (!known) {
                r = partition_list_kernel(number, &parts, &n);
                if (r < 0)
                        return engine_error_errno(e, r, "Failed to read the device's partitions");
                for (size_t i = 0; i < n; i++) {
                        logical = logical || parts[i].number >= 5;
                        small = small || (parts[i].number == partition && parts[i].size <= 4096);
                }
                extended = logical && small;
        }
        if (extended)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                        "node: %s is an extended partition, which holds the logical ones (/dev/loop%up5 and up); "
                        "format those, or the whole device",
                        node, number);
        return 0;
}

static int check_options(const FormatType *t, const FormatOptions *opts, EngineError *e)
{
        const char *why = NULL;
        int r;

        if (opts->label) {
                r = format_check_label(t, opts->label, &why);
                if (r == -EOPNOTSUPP)
                        return engine_error(
                                e, -EINVAL, ENGINE_INVALID_ARGUMENT, "label: %s takes no label", opts->type);
                if (r < 0)
                        return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT, "label: %s", why);
        }
        if (opts->uuid) {
                r = format_check_uuid(t, opts->uuid, &why);
                if (r == -EOPNOTSUPP && format_type_kind(t) == FORMAT_FILESYSTEM)
                        return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                                "uuid: %s cannot set one for %s; leave uuid out", format_type_program(t),
                                opts->type);
                if (r == -EOPNOTSUPP)
                        return engine_error(
                                e, -EINVAL, ENGINE_INVALID_ARGUMENT, "uuid: %s takes no uuid", opts->type);
                if (r < 0)
                        return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT, "uuid: %s", why);
        }
        return 0;
}

/* The node opened for writing, exclusively: nothing else holds it (a mount, a swap, another mkfs) while
 * loopd wipes and erases it. */
static int open_node(const char *node, dev_t devnum, int *ret_fd, EngineError *e)
{
        _cleanup_close_ int fd = open(node, O_RDWR | O_EXCL | O_CLOEXEC | O_NONBLOCK);
        struct stat st;

        if (fd < 0) {
                int r = negative_errno();

                if (r == -EBUSY)
                        return engine_error(e, r, ENGINE_BUSY, "%s is in use (mounted or held open)", node);
                if (r == -EROFS || r == -EACCES)
                        return engine_error(e, -EROFS, ENGINE_READ_ONLY, "%s is read-only", node);
                return engine_error_errno(e, r, "Failed to open the device");
        }
        /* Opened by path: a stale node whose number was handed to another device is not the one the
         * caller named. */
        if (fstat(fd, &st) < 0)
                return engine_error_errno(e, negative_errno(), "Failed to open the device");
        if (!S_ISBLK(st.st_mode) || st.st_rdev != devnum)
                return engine_error(e, -ESTALE, ENGINE_NOT_FOUND,
                        "%s is not the device it was any more; try again", node);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Ends a job that ran no mkfs (or could not start it): the Device's view follows, the caller hears. */
static void job_end(FormatJob *job, int r, const EngineError *e)
{
        if (r < 0)
                log_warning("Format of %s as %s failed: %s", job->node, format_type_name(job->type),
                        e && e->message ? e->message : strerror(-r));
        job_release_device(job);
        job->done(r, e, job->userdata);
        job_free(job);
}

static int job_spawn(FormatJob *job, EngineError *e)
{
        FormatRequest req = { .node = job->node, .label = job->label, .uuid = job->uuid };
        Manager *m = job->manager;
        struct passwd *pw = job->uid != 0 ? getpwuid(job->uid) : NULL;
        int pipe_fds[2], r;

        /* ext*: the caller owns the root directory of what they made (root's stays root's). */
        if (pw) {
                req.owner_set = true;
                req.owner_uid = job->uid;
                req.owner_gid = pw->pw_gid;
        }
        if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
                return engine_error_errno(e, negative_errno(), "Failed to start the mkfs tool");
        job->output_fd = pipe_fds[0];
        r = format_spawn(job->type, &req, job->devnum, pipe_fds[1], &job->pid, &job->pidfd);
        safe_close(pipe_fds[1]);
        if (r == -ENOENT)
                return engine_error(e, r, ENGINE_UNSUPPORTED_FILESYSTEM,
                        "%s is not installed: loopd cannot make %s filesystems here",
                        format_type_program(job->type), format_type_name(job->type));
        if (r < 0)
                return engine_error_errno(e, r, "Failed to start the mkfs tool");

        /* Before the SIGCHLD handler, which reaps any child: the exit status is read here first. */
        r = sd_event_add_io(m->event, &job->exit_source, job->pidfd, EPOLLIN, job_on_exit, job);
        if (r >= 0)
                r = sd_event_source_set_priority(job->exit_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r >= 0)
                r = sd_event_add_io(
                        m->event, &job->output_source, job->output_fd, EPOLLIN, job_on_output, job);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        m->event, &job->timer, CLOCK_MONOTONIC, FORMAT_TIMEOUT_USEC, 0, job_on_timeout, job);
        if (r < 0)
                return engine_error_errno(e, r, "Failed to watch the mkfs tool");
        log_debug("Started %s on %s (pid %d)", format_type_program(job->type), job->node, (int)job->pid);
        return 0;
}

/* What the worker says of its steps. */
typedef enum PrepareStep {
        PREPARE_PARTITIONS,
        PREPARE_ERASE,
        PREPARE_WIPE,
} PrepareStep;

typedef struct PrepareResult {
        PrepareStep failed; /* the step that failed, when the result is < 0 */
} PrepareResult;

/* In the worker (a copy of loopd): old signatures gone (and a whole device's partitions), the node zeroed
 * if asked: what the tool, a table or `empty` starts from. */
static int prepare_in_worker(void *arg, void *data)
{
        const FormatJob *job = arg;
        PrepareResult *result = data;
        int r;

        result->failed = PREPARE_PARTITIONS;
        if (job->partition == 0) {
                r = partition_remove_all(job->node_fd, job->number);
                if (r < 0 && r != -ENXIO)
                        return r;
        }
        result->failed = PREPARE_ERASE;
        if (job->erase) {
                r = format_zero_device(job->node_fd);
                if (r < 0)
                        return r;
        }
        result->failed = PREPARE_WIPE;
        /* libblkid reads every signature on the caller's device to wipe it: as the reader's children read,
         * with nothing to lose (the node's fd, open for writing, is all it writes through). */
        r = image_reader_confine();
        if (r < 0)
                return r;
        return format_wipe_signatures(job->node_fd);
}

static void job_on_prepared(int result, const void *data, void *userdata)
{
        FormatJob *job = userdata;
        const PrepareResult *p = data;
        EngineError e = {};
        int r = 0;

        job->worker = NULL; /* freed after this */
        job->node_fd = safe_close(job->node_fd);
        if (result == -ETIMEDOUT)
                r = engine_error(&e, result, ENGINE_TIMEOUT,
                        "preparing %s (removing partitions, erasing, wiping) did not finish in time",
                        job->node);
        else if (result < 0 && !p)
                r = engine_error(&e, -EIO, ENGINE_FAILED, "preparing %s failed", job->node);
        else if (result < 0 && p->failed == PREPARE_PARTITIONS)
                r = engine_error(&e, result, result == -EBUSY ? ENGINE_BUSY : ENGINE_FAILED,
                        "Failed to remove the partitions of %s: %s", job->node, strerror(-result));
        else if (result < 0 && p->failed == PREPARE_ERASE)
                r = engine_error_errno(&e, result, "Failed to erase the device");
        else if (result < 0)
                r = engine_error_errno(&e, result, "Failed to wipe the old signatures");
        if (r < 0) {
                job_end(job, r, &e);
                return;
        }

        switch (format_type_kind(job->type)) {
        case FORMAT_EMPTY:
                job_end(job, 0, &e);
                return;
        case FORMAT_TABLE:
                /* Not Busy for the table's own checks: the device is this job's until it returns. The table
                 * write brings the kernel's partitions in line itself. */
                registry_unmark_formatting(job->manager->registry, job->number);
                job->marked = false;
                job->resync = false;
                r = engine_format_table(
                        job->manager, job->number, job->partition, format_type_name(job->type), &e);
                job_end(job, r, &e);
                return;
        case FORMAT_FILESYSTEM:
        default:
                r = job_spawn(job, &e);
                if (r < 0)
                        job_end(job, r, &e);
                return;
        }
}

static FormatJob *job_new(Manager *m, const FormatType *t, uid_t uid, const char *node, unsigned number,
        unsigned partition, dev_t devnum, const FormatOptions *opts, FormatDone done, void *userdata)
{
        FormatJob *job = calloc(1, sizeof(FormatJob));

        if (!job)
                return NULL;
        *job = (FormatJob){ .manager = m,
                .type = t,
                .number = number,
                .partition = partition,
                .devnum = devnum,
                .uid = uid,
                .erase = opts->erase,
                .node_fd = -EBADF,
                .pidfd = -EBADF,
                .output_fd = -EBADF,
                .done = done,
                .userdata = userdata };
        job->node = strdup(node);
        job->label = opts->label ? strdup(opts->label) : NULL;
        job->uuid = opts->uuid ? strdup(opts->uuid) : NULL;
        if (!job->node || (opts->label && !job->label) || (opts->uuid && !job->uuid))
                return job_free(job);
        return job;
}

int engine_format(Manager *m, uid_t uid, const char *node, unsigned number, unsigned partition, dev_t devnum,
        const FormatOptions *opts, FormatDone done, void *userdata, FormatJob **ret_job, EngineError *e)
{
        const FormatType *t = format_type_find(opts->type);
        _cleanup_(loop_info_freep) LoopInfo *info = NULL;
        FormatJob *job;
        int r;

        if (!t)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT, "type: '%.32s' is not one of %s",
                        strempty(opts->type), format_type_list());
        r = check_options(t, opts, e);
        if (r < 0)
                return r;
        if (format_type_kind(t) == FORMAT_TABLE && partition != 0)
                return engine_error(e, -EINVAL, ENGINE_INVALID_ARGUMENT,
                        "node: a partition table goes on a whole device (/dev/loop%u), not on %s", number,
                        node);
        r = engine_check_not_formatting(m, number, e);
        if (r >= 0)
                r = engine_check_unmounted(m, number, partition, e);
        if (r >= 0)
                r = engine_check_writable(m, number, e);
        if (r < 0)
                return r;
        if (loop_get_info(number, &info) < 0)
                return engine_error(e, -ENXIO, ENGINE_NOT_FOUND, "loop%u is not attached", number);
        r = check_not_extended(m, number, partition, info->diskseq, node, e);
        if (r < 0)
                return r;
        /* A table without erase: libfdisk's writes are a few sectors, done here and now. */
        if (format_type_kind(t) == FORMAT_TABLE && !opts->erase)
                return engine_format_table(m, number, partition, format_type_name(t), e);

        job = job_new(m, t, uid, node, number, partition, devnum, opts, done, userdata);
        if (!job)
                return -ENOMEM;
        job->diskseq = info->diskseq;
        /* Busy from here to the end of the mkfs. */
        r = registry_mark_formatting(m->registry, number);
        if (r < 0) {
                job_free(job);
                return r == -EBUSY ? engine_check_not_formatting(m, number, e) : r;
        }
        job->marked = true;
        r = open_node(node, devnum, &job->node_fd, e);
        if (r < 0) {
                job_free(job);
                return r;
        }
        /* Removing partitions, erasing and wiping may take minutes on a big image: in a child, with only
         * the node's fd. */
        r = worker_start(m->event, job->node_fd, prepare_in_worker, job, sizeof(PrepareResult),
                PREPARE_TIMEOUT_USEC, job_on_prepared, job, &job->worker);
        if (r < 0) {
                job_free(job);
                return engine_error_errno(e, r, "Failed to start preparing the device");
        }
        job->resync = partition == 0;
        *ret_job = job;
        return 1;
}
