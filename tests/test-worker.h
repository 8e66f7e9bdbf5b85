/* test-worker.h: what the worker suite's files share (test-worker.c registers the tests). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

#include "image.h"

/* The suite's scratch directory. */
extern char *tmpdir;

/* A probe's answer, as worker_start_probe() calls back with it (on_answer()). */
typedef struct Answer {
        gboolean done;
        int result;
        ImageProbe probe;
} Answer;

void on_answer(int result, const void *data, void *userdata);
/* The child of this process whose comm is name (the helpers name themselves soon after they start): its
 * pid, 0 when none shows within 2 s. */
pid_t child_named(const char *name);
/* How many children pid has now. */
size_t children_of(pid_t pid);
/* Waits until pid has n children; false if it does not within 2 s. */
gboolean children_become(pid_t pid, size_t n);

/* worker-sessions.c */
void test_reader_session_serves_an_attach(void);
void test_reader_session_reads_ahead(void);
void test_reader_session_child_dies_ahead(void);
