/* runner.h: system calls the kernel may hold for as long as someone else pleases (mount(2) and umount2() of
 * a device whose image stopped answering), run in a child that loopd waits for with a deadline; and the
 * process that forks those children ahead of need. Never logs.
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
 * answer. What a child runs is fixed when the runner starts (op, undo): a request carries only arguments,
 * as bytes. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Runner Runner;

/* Run in the child with the request's bytes: op returns 0 or -errno; undo takes back what a successful op
 * did, once nobody waits for its answer any more. */
typedef int (*RunnerOp)(const void *request, size_t size);
typedef void (*RunnerUndo)(const void *request, size_t size);

/* The most bytes a request may have. */
#define RUNNER_REQUEST_MAX (16u * 1024)

/* Forks the runner. Call early, while loopd is small, and before the signal mask changes. */
int runner_new(RunnerOp op, RunnerUndo undo, Runner **ret);
/* Closes loopd's end: the waiting child and the runner exit (so do both when loopd dies). A child still
 * running a request finishes it, and undoes it, as nobody hears. Returns NULL. */
Runner *runner_free(Runner *runner);
DEFINE_TRIVIAL_CLEANUP_FUNC(Runner *, runner_free);

/* The runner's op(request, size) in its waiting child, waited for until deadline_ms (now_ms()): 0 or op's
 * -errno (-EIO for op's -EPIPE); -ETIMEDOUT past the deadline; -EIO when the child died without a result;
 * -EPIPE when the request was not run: there is no runner (runner NULL, or gone, also with the request in
 * its queue), and the caller may run it some other way (runner_run_forked()); -E2BIG for no request or one
 * larger than RUNNER_REQUEST_MAX. A request still queued at the deadline is never run. Past the deadline
 * a child that started goes on and undoes a success, and
 * *ret_pending (unless NULL) is an fd that reads the end of the stream once that child has exited: while
 * it does not, the kernel still holds the child, and running the same again would wait for it. */
int runner_run(Runner *runner, const void *request, size_t size, int64_t deadline_ms, int *ret_pending);
/* As runner_run(), in a child forked from the calling process for it, which keeps none of its fds but 0-2
 * and the answer socket: for when there is no runner. The calling process reaps the child, through its
 * SIGCHLD handling when it was left behind. */
int runner_run_forked(RunnerOp op, RunnerUndo undo, const void *request, size_t size, int64_t deadline_ms,
        int *ret_pending);
