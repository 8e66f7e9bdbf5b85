/* runner.h: the process that forks, ahead of need, the child each kernel mount and unmount runs in. Never
 * logs.
 *
 * mount(2) reads the device in the kernel and umount2() writes it back: for a device whose image stopped
 * answering the caller would wait there uninterruptibly, for good. So each runs in a child loopd waits for
 * with a deadline (process-util.h: run_bounded()). Forked from loopd, that child cost a mount or an unmount
 * about 1.8 ms on a 2-CPU VM (a copy of loopd's page tables, copy-on-write faults in both processes). So
 * loopd forks one small process as it starts, before it holds much memory: the runner (loopd-runner). It
 * keeps one child forked and waiting, root and unconfined like loopd (a mount needs both), holding nothing
 * but the request socket; the child that takes a request tells the runner, which forks the next one while
 * the first runs it. A run then costs loopd a sendmsg() and the answer.
 *
 * What a child runs is fixed when the runner starts (op, undo): a request only carries its arguments, as
 * bytes. Its result, the deadline and a late success that the child undoes are as run_bounded()'s. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Runner Runner;

/* Runs in a child of the runner: request and size are what runner_run() was given. op returns 0 or -errno;
 * undo takes back what a successful op did once nobody waits for its answer any more. */
typedef int (*RunnerOp)(const void *request, size_t size);
typedef void (*RunnerUndo)(const void *request, size_t size);

/* The most bytes a request may have. */
#define RUNNER_REQUEST_MAX (16u * 1024)

/* Forks the runner. Call early, while loopd is small, and before the signal mask changes. */
int runner_new(RunnerOp op, RunnerUndo undo, Runner **ret);
/* Closes loopd's end: the waiting child and the runner exit (so do both when loopd dies). A child still
 * running a request finishes it (and undoes it, as nobody hears). Returns NULL. */
Runner *runner_free(Runner *runner);
DEFINE_TRIVIAL_CLEANUP_FUNC(Runner *, runner_free);

/* op(request, size) in the waiting child; waits for its result until deadline_ms (now_ms()): 0 or op's
 * -errno, -ETIMEDOUT past the deadline (the child goes on, and undoes a late success), -EIO when the child
 * died without a result, -EPIPE when there is no runner (runner NULL, or gone: the caller runs it some other
 * way, run_bounded()). -E2BIG for a request larger than RUNNER_REQUEST_MAX. */
int runner_run(Runner *runner, const void *request, size_t size, int64_t deadline_ms);
