/* worker.h: blocking reads of a caller's file in a child process with a deadline, so that an image on a
 * filesystem that stopped answering (a hung FUSE server, a dead network share) delays only the call that
 * handed it in, not loopd's event loop. Only what runs in the worker is protected: see the README's
 * security model for the reads that still run in loopd. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Worker Worker;
typedef struct ImageReader ImageReader;

/* Runs in the child: fills data (size bytes, plain values only: no pointers to the heap; pointers to
 * constant strings survive, the child being a copy of loopd) and returns 0 or -errno. */
typedef int (*WorkerFunction)(void *arg, void *data);
/* In loopd, once: result is the function's return value (data then holds what it wrote), -ETIMEDOUT when
 * the deadline passed first (the child is killed), or -EIO when the child died without an answer. The worker
 * is freed right after the callback returns. */
typedef void (*WorkerCallback)(int result, const void *data, void *userdata);

/* Forks a child that keeps only keep_fd of loopd's file descriptors (at the same number), runs
 * function(arg, data), closes keep_fd and sends the result back (the child has let go of keep_fd when
 * callback runs, even if it has not exited yet). */
int worker_start(sd_event *event, int keep_fd, WorkerFunction function, void *arg, size_t size,
        uint64_t timeout_usec, WorkerCallback callback, void *userdata, Worker **ret);
/* As worker_start() for what every Attach and MountImage runs: image_probe(keep_fd, offset, size), its data
 * an ImageProbe. Through the image reader (image-reader.h) where loopd has one: no fork of loopd on the
 * call's way; its child is parked for the rest of the call, and with ahead reads on for it (the device to be
 * bound with sector_size: image_reader_submit()). Else, once the reader is gone, or when its child died
 * before it read anything (the reader was killed), in a worker forked here. */
int worker_start_probe(sd_event *event, ImageReader *reader, int keep_fd, uint64_t offset, uint64_t size,
        uint32_t sector_size, bool ahead, uint64_t timeout_usec, WorkerCallback callback, void *userdata,
        Worker **ret);
/* Kills the child and frees the worker without calling back. NULL is fine; returns NULL. */
Worker *worker_cancel(Worker *w);
