/* worker.c: blocking reads of a caller's file in a child process with a deadline.
 *
 * A process, not a thread: a read of a file on a FUSE filesystem whose server took the request and never
 * answers cannot be interrupted, not even by SIGKILL. A thread stuck there would keep loopd from ever
 * exiting; a child stuck there is merely left behind (loopd, a subreaper, reaps it once the server answers
 * or goes away) and holds nothing of loopd's but the caller's file. */
#include "worker.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "image-reader.h"
#include "image.h"
#include "process-util.h"

/* What the child writes: the function's result, then its data (aligned for any type: the function and the
 * callback read it in place). */
typedef struct WorkerHeader {
        int32_t result;
        _Alignas(max_align_t) unsigned char data[];
} WorkerHeader;

/* The image reader's children answer in the same layout. */
static_assert(offsetof(ImageReaderAnswer, probe) == offsetof(WorkerHeader, data), "answer layouts differ");
static_assert(sizeof(ImageReaderAnswer) == sizeof(WorkerHeader) + sizeof(ImageProbe), "answer sizes differ");

/* What worker_start_probe() reads: kept for a retry in a forked worker. */
typedef struct ProbeArgs {
        int fd;
        uint64_t offset;
        uint64_t size;
} ProbeArgs;

struct Worker {
        ImageReader *reader; /* worker_start_probe()'s, where its child is parked after the answer */
        pid_t pid;
        int pidfd; /* -EBADF where the kernel (or valgrind) has no pidfd_open() */
        int pipe_fd; /* or the image reader's answer socket */
        bool hello; /* the reader's child has not said hello (sent its pidfd) yet */
        bool ahead; /* the reader's child was asked ahead (image_reader_submit()) */
        ProbeArgs probe;
        sd_event_source *io;
        sd_event_source *timer;
        size_t size;
        WorkerCallback callback;
        void *userdata;
};

static void worker_free(Worker *w)
{
        if (!w)
                return;
        sd_event_source_disable_unref(w->io);
        sd_event_source_disable_unref(w->timer);
        safe_close(w->pipe_fd);
        safe_close(w->pidfd);
        free(w);
}

static void worker_kill(Worker *w)
{
        /* By pidfd: the child may be gone and reaped already, and its pid somebody else's. Without pidfds,
         * by pid: the SIGCHLD handler reaps the child only once it exited, and its pipe then says so first.
         */
        if (w->pidfd >= 0)
                (void)pidfd_signal(w->pidfd, SIGKILL);
        else if (w->pid > 0)
                (void)kill(w->pid, SIGKILL);
}

Worker *worker_cancel(Worker *w)
{
        if (w) {
                worker_kill(w);
                worker_free(w);
        }
        return NULL;
}

static void worker_finish(Worker *w, int result, const void *data)
{
        WorkerCallback callback = w->callback;
        void *userdata = w->userdata;

        callback(result, data, userdata);
        worker_free(w);
}

static int worker_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static _Noreturn void child_run(
        pid_t parent, int keep_fd, int out, WorkerFunction function, void *arg, size_t size);

/* Forks the child that runs function(arg) and answers on w->pipe_fd. */
static int worker_fork(Worker *w, int keep_fd, WorkerFunction function, void *arg)
{
        pid_t parent = getpid(), pid;
        int fds[2], r;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return negative_errno();
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                safe_close(fds[0]);
                safe_close(fds[1]);
                return r;
        }
        if (pid == 0)
                child_run(parent, keep_fd, fds[1], function, arg, w->size);

        safe_close(fds[1]);
        w->pipe_fd = fds[0];
        /* Before the event loop runs again, so before the SIGCHLD handler can have reaped it. */
        w->pid = pid;
        w->pidfd = pidfd_open_pid(pid);
        if (w->pidfd < 0)
                w->pidfd = -EBADF;
        return 0;
}

static int probe_in_child(void *arg, void *data)
{
        const ProbeArgs *a = arg;
        int r;

        /* It reads a caller's bytes: as a child of the reader would, with nothing to lose. */
        r = image_reader_confine();
        if (r < 0)
                return r;
        return image_probe(a->fd, a->offset, a->size, data);
}

/* The reader's child died before it said hello, so before it read anything: the reader was killed (its
 * waiting child goes with it) after the request was queued. Read the image in a worker forked here. */
static int worker_retry_forked(Worker *w, sd_event *event)
{
        int r;

        w->io = sd_event_source_disable_unref(w->io);
        w->pipe_fd = safe_close(w->pipe_fd);
        w->hello = false;
        r = worker_fork(w, w->probe.fd, probe_in_child, &w->probe);
        if (r < 0)
                return r;
        return sd_event_add_io(event, &w->io, w->pipe_fd, EPOLLIN, worker_on_io, w);
}

static int worker_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Worker *w = userdata;
        size_t total = sizeof(WorkerHeader) + w->size;
        _cleanup_free_ uint8_t *buf = NULL;
        ssize_t k;

        if (w->hello) {
                int r = image_reader_read_hello(fd, &w->pidfd);
                if (r == -EAGAIN)
                        return 0;
                if (r < 0) {
                        r = worker_retry_forked(w, sd_event_source_get_event(s));
                        if (r < 0) {
                                worker_kill(w);
                                worker_finish(w, -EIO, NULL);
                        }
                        return 0;
                }
                w->hello = false;
                return 0; /* the answer wakes the loop again */
        }
        buf = malloc(total);
        if (!buf) {
                worker_kill(w);
                worker_finish(w, -ENOMEM, NULL);
                return 0;
        }
        /* The child writes everything at once (less than PIPE_BUF) and exits: one read gets it all, or
         * nothing when it died first. */
        k = read(fd, buf, total);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (k != (ssize_t)total) {
                /* The child closed the pipe: it exited, and the SIGCHLD handler may have reaped it already,
                 * so its pid may be somebody else's by now. Only a pidfd still names it. */
                w->pid = 0;
                worker_kill(w);
                worker_finish(w, -EIO, NULL);
                return 0;
        }
        WorkerHeader *header = (WorkerHeader *)buf;
        /* The child's word, as any child's answer: an errno or nothing else. */
        if (header->result > 0 || header->result < -4095)
                header->result = -EIO;
        /* The reader's child waits for what comes next about this image (the bound device's table and
         * first probe), or, asked ahead, reads on for it, before the callback goes on to bind it. */
        /* Only a raw image's: a virtual disk's device reads its export, never this image. */
        if (w->reader && w->pid == 0 && header->result >= 0 && !((const ImageProbe *)header->data)->format) {
                /* Off the event loop first: the fd is the reader's from now on, and may be closed. */
                w->io = sd_event_source_disable_unref(w->io);
                image_reader_park(w->reader, TAKE_FD(w->pipe_fd), TAKE_FD(w->pidfd), w->probe.fd, w->ahead,
                        w->probe.offset);
        }
        worker_finish(w, header->result, header->data);
        return 0;
}

static int worker_on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        Worker *w = userdata;

        worker_kill(w);
        worker_finish(w, -ETIMEDOUT, NULL);
        return 0;
}

static _Noreturn void child_run(
        pid_t parent, int keep_fd, int out, WorkerFunction function, void *arg, size_t size)
{
        size_t total = sizeof(WorkerHeader) + size;
        WorkerHeader *header;

        /* Nothing of loopd's (the bus, device locks, other callers' images) may outlive loopd in a child
         * that is stuck: a child that cannot let go of them does not run. And it goes when loopd goes,
         * wherever it can (loopd may have gone before the prctl). */
        if (close_fds_except((const int[]){ keep_fd, out }, 2) < 0)
                _exit(EXIT_FAILURE);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);
        header = calloc(1, total);
        if (!header)
                _exit(EXIT_FAILURE);
        header->result = function(arg, header->data);
        /* Let go of keep_fd before the caller hears: a caller that opens the file again once it has the
         * result (Format's mkfs opens the device O_EXCL, as the worker's fd did) must not find it still
         * held by a child that has not exited yet. */
        (void)close(keep_fd);
        if (write(out, header, total) != (ssize_t)total)
                _exit(EXIT_FAILURE);
        _exit(EXIT_SUCCESS);
}

static Worker *worker_new(size_t size, WorkerCallback callback, void *userdata)
{
        Worker *w = calloc(1, sizeof(Worker));

        if (!w)
                return NULL;
        w->pidfd = w->pipe_fd = -EBADF;
        w->size = size;
        w->callback = callback;
        w->userdata = userdata;
        return w;
}

/* Waits for w's answer on w->pipe_fd, until the deadline. Frees w on failure. */
static int worker_watch(Worker *w, sd_event *event, uint64_t timeout_usec, Worker **ret)
{
        int r;

        r = sd_event_add_io(event, &w->io, w->pipe_fd, EPOLLIN, worker_on_io, w);
        if (r >= 0)
                r = sd_event_add_time_relative(
                        event, &w->timer, CLOCK_MONOTONIC, timeout_usec, 0, worker_on_timeout, w);
        if (r < 0) {
                worker_kill(w);
                worker_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

int worker_start(sd_event *event, int keep_fd, WorkerFunction function, void *arg, size_t size,
        uint64_t timeout_usec, WorkerCallback callback, void *userdata, Worker **ret)
{
        Worker *w;
        int r;

        if (sizeof(WorkerHeader) + size > PIPE_BUF)
                return -EINVAL;
        w = worker_new(size, callback, userdata);
        if (!w)
                return -ENOMEM;
        r = worker_fork(w, keep_fd, function, arg);
        if (r < 0) {
                worker_free(w);
                return r;
        }
        return worker_watch(w, event, timeout_usec, ret);
}

int worker_start_probe(sd_event *event, ImageReader *reader, int keep_fd, uint64_t offset, uint64_t size,
        uint32_t sector_size, bool ahead, uint64_t timeout_usec, WorkerCallback callback, void *userdata,
        Worker **ret)
{
        Worker *w;
        int r;

        w = worker_new(sizeof(ImageProbe), callback, userdata);
        if (!w)
                return -ENOMEM;
        w->probe = (ProbeArgs){ .fd = keep_fd, .offset = offset, .size = size };
        if (reader &&
                image_reader_submit(reader, keep_fd, offset, size, sector_size, ahead, &w->pipe_fd) >= 0) {
                w->hello = true;
                w->ahead = ahead;
                w->reader = reader;
        } else {
                r = worker_fork(w, keep_fd, probe_in_child, &w->probe);
                if (r < 0) {
                        worker_free(w);
                        return r;
                }
        }
        return worker_watch(w, event, timeout_usec, ret);
}
