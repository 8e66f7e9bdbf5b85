/* runner.h: system calls the kernel may hold for as long as someone else pleases (mount(2) and umount2() of
 * a device whose image stopped answering, LOOP_CONFIGURE of a file whose filesystem does not answer), run
 * in a child that loopd waits for with a deadline; and the process that forks those children ahead of
 * need. Never logs.
 *
 * mount(2) reads the device in the kernel and umount2() writes it back: for a device whose image is a FUSE
 * file that stops answering, the caller waits there uninterruptibly, for good. So each runs in a child, and
 * loopd waits for its result until a deadline. Past it loopd answers the caller and lets the child be: it
 * finishes when the kernel lets it, and takes back (undo) what it did once nobody hears of it. Forked from
 * loopd, that child cost a mount or an unmount about 1.8 ms on a 2-CPU VM (a copy of loopd's page tables,
 * copy-on-write faults in both processes). So loopd forks one small process as it starts, while it holds
 * little memory: the runner (loopd-runner). It keeps one child forked and waiting, root and unconfined like
 * loopd (a mount needs both), holding nothing but the request socket; the child that takes a request tells
 * the runner, which forks the next one while the first runs it. A run then costs loopd a sendmsg() and the
 * answer. What a child may run is fixed when the runner starts (a table of ops): a request names one of
 * them and carries only arguments, as bytes, and the fds the op works on. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Runner Runner;

/* What a child runs for a request: op, with the request's bytes and the fds that came with it (the child's
 * copies), returns 0 or -errno; undo (NULL: nothing to take back) takes back what a successful op did, once
 * nobody waits for its answer any more. */
typedef struct RunnerOps {
        int (*op)(const void *request, size_t size, const int *fds, size_t n_fds);
        void (*undo)(const void *request, size_t size, const int *fds, size_t n_fds);
} RunnerOps;

/* The most bytes and fds a request may have. */
#define RUNNER_REQUEST_MAX (16u * 1024)
#define RUNNER_FDS_MAX 2u

/* Forks the runner, whose children run the ops of table (n_ops of them; the table and the ops must be
 * loopd's statics: the runner gets them as it forks). Call early, while loopd is small, and before the
 * signal mask changes. */
int runner_new(const RunnerOps *const *table, size_t n_ops, Runner **ret);
/* Closes loopd's end: the waiting child and the runner exit (so do both when loopd dies). A child still
 * running a request finishes it, and undoes it, as nobody hears. Returns NULL. */
Runner *runner_free(Runner *runner);
DEFINE_TRIVIAL_CLEANUP_FUNC(Runner *, runner_free);

/* ops->op(request, size, fds, n_fds) in the runner's waiting child (ops must be in its table), waited for
 * until deadline_ms (now_ms()): 0 or op's -errno (-EIO for op's -EPIPE); -ETIMEDOUT past the deadline;
 * -EIO when the child died without a result; -EPIPE when the request was not run: there is no runner
 * (runner NULL, or gone, also with the request in its queue), and the caller may run it some other way
 * (runner_run_forked()); -E2BIG for no request, one larger than RUNNER_REQUEST_MAX or more than
 * RUNNER_FDS_MAX fds; -EBADF for a negative fd; -EINVAL for ops not in the table (or a request its child
 * could not make sense of). A request still queued at the deadline is never run. Past the deadline a child
 * that started goes on and undoes a success, and *ret_pending (unless NULL) is an fd that reads the end of
 * the stream once that child has exited: while it does not, the kernel still holds the child, and running
 * the same again would wait for it. */
int runner_run(Runner *runner, const RunnerOps *ops, const void *request, size_t size, const int *fds,
        size_t n_fds, int64_t deadline_ms, int *ret_pending);
/* Has the child behind *ret_pending of runner_run() exited (the end of the stream; what it still sent is
 * read and dropped)? */
bool runner_pending_done(int pending_fd);
/* As runner_run(), in a child forked from the calling process for it, which keeps none of its fds but 0-2,
 * fds and the answer socket: for when there is no runner. The calling process reaps the child, through its
 * SIGCHLD handling when it was left behind. */
int runner_run_forked(const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds,
        int64_t deadline_ms, int *ret_pending);

/* The process's own runner (loopd's): runner_start() forks it with the table of every op the process runs,
 * runner_stop() lets it go. runner_call() runs a request in one of its children, else (none started, or it
 * is gone: then it is let go) in a child forked for it; as runner_run() otherwise. */
int runner_start(const RunnerOps *const *table, size_t n_ops);
void runner_stop(void);
int runner_call(const RunnerOps *ops, const void *request, size_t size, const int *fds, size_t n_fds,
        int64_t deadline_ms, int *ret_pending);
