/* bench.h: what the parts of loopd-bench share: clock, sample files, spawning commands, loop device checks.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

/* Cycles run before the measured ones, so that caches, the bus connection and the kernel's free loop
 * devices are warm for every contender alike. */
#define BENCH_WARMUP 3

uint64_t now_usec(void);

/* On a machine shared with other test runs an attach can fail for reasons that are not the contender's
 * fault: their udevd stops while ours waits for it, or another process takes the free loop device between
 * LOOP_CTL_GET_FREE and LOOP_CONFIGURE (udisks does not retry that). Such a cycle is counted and left out,
 * and the report says how many there were; only losing more than half of them ends the batch. */
static inline bool too_many_failures(unsigned failures, int n)
{
        return failures > 5 && failures * 2 > (unsigned)n;
}

/* A sample file: one line per cycle, "total first second" in microseconds (first/second: attach and
 * detach, or mount and unmount). Opened for appending, so that repeated rounds add up. */
FILE *samples_open(const char *path);
void samples_write(FILE *f, uint64_t first_usec, uint64_t second_usec);

/* Runs argv (searched in $PATH), stdin from /dev/null, stderr inherited. With ret_out, stdout is captured
 * (NUL-terminated, at most 64 KiB); otherwise it goes to /dev/null. Returns the exit status (0-255), or
 * -errno when the command could not be run or was killed. */
int spawn_wait(char *const argv[], char **ret_out);

/* Runs argv like spawn_wait() and fails loudly (message on stderr) unless it exits 0. */
int spawn_checked(char *const argv[], char **ret_out);

/* Finds the first "/dev/loopN" (N digits, optionally followed by "pM" when partition) in text. */
int find_loop_name(const char *text, bool partition, char *buf, size_t size);

/* Parses "/dev/loopN" or "loopN". */
int loop_number_of(const char *dev, unsigned *ret);

/* How many of partitions 1..n of loopN exist now, both in sysfs and as block nodes in /dev. */
unsigned loop_partitions_present(unsigned number, unsigned n);

/* Is node (a /dev path) the source of a mount in this namespace right now? */
bool node_is_mounted(const char *node);

/* Is loopN bound to path (the kernel's backing_file)? */
bool loop_backed_by(unsigned number, const char *path);

/* Subcommands. */
int cmd_api_loopd(int argc, char *argv[]);
int cmd_attach_many(int argc, char *argv[]);
int cmd_attach_distinct(int argc, char *argv[]);
int cmd_detach_many(int argc, char *argv[]);
int cmd_list_devices(int argc, char *argv[]);
int cmd_api_raw(int argc, char *argv[]);
int cmd_remove_loops(int argc, char *argv[]);
int cmd_cli(int argc, char *argv[]);
int cmd_mount(int argc, char *argv[]);
int cmd_time(int argc, char *argv[]);
int cmd_stats(int argc, char *argv[]);
int cmd_switch(int argc, char *argv[]);
int cmd_read(int argc, char *argv[]);
int cmd_first_file(int argc, char *argv[]);
