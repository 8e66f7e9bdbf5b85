/* test-engine.h: what the engine suite's files share: its fixture (a Manager with a recorder of changes),
 * its helpers and oracles, and the tests of engine-table.c (test-engine.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "changes.h"
#include "engine.h"
#include "harness.h"
#include "manager.h"
#include "partition.h"
#include "registry.h"
#include "watcher.h"

#define MiB (UINT64_C(1024) * 1024)

/* One change the engine or the watcher reported to the Manager's on_change, copied. */
typedef struct Recorded {
        ChangeKind kind;
        unsigned number;
        unsigned partition;
        char *node;
        char *mount_point;
} Recorded;

typedef struct Fixture {
        Scratch scratch;
        Manager *manager;
        GPtrArray *changes; /* Recorded, oldest first */
} Fixture;

void fixture_setup(Fixture *f, gconstpointer data);
void fixture_teardown(Fixture *f, gconstpointer data);
#define TEST(path, func, data) g_test_add(path, Fixture, data, fixture_setup, func, fixture_teardown)
#define REQUIRE(f) SCRATCH_REQUIRE(&(f)->scratch)

/* Opens path as a caller would (fd, fstat) and reads it as the face's worker does. */
typedef struct Image {
        int fd;
        struct stat st;
        ImageProbe probe;
        int probe_result;
} Image;
void image_open(Image *img, const char *path, int flags);

/* Is loopN bound to path (sysfs)? */
bool bound_to(unsigned number, const char *path);
/* The mount point of node (NULL: not mounted), as findmnt reads the kernel's table. */
char *mount_target(const char *node);
/* The change of kind reported since the list was last emptied: for number (devices), number and partition
 * (partitions), or node and mount point (mounts). */
const Recorded *find_change(Fixture *f, ChangeKind kind, unsigned number, unsigned partition,
        const char *node, const char *mount_point);
/* Attaches path (opened read-write, partitions scanned) for uid as the face would; NULL when the engine
 * refused (the test has failed then). */
LoopInfo *attach_as(Fixture *f, const char *path, uid_t uid);

/* engine-table.c */
void engine_table_add_tests(void);
