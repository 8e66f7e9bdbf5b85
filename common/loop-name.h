/* loop-name.h: loop device names: "loopN", "/dev/loopN", "loopNpM" parsed strictly, /dev nodes formatted. */
#pragma once

#include <stdbool.h>

/* Room for "/dev/loopNpM" with any unsigned N and M (the kernel's longest is "/dev/loop1048575p65535"). */
#define LOOP_NODE_MAX sizeof("/dev/loop4294967295p4294967295")

/* Parses "loopN" or "/dev/loopN" (nothing else: no partitions, no "..", no other directories): digits only,
 * no leading zeros, N < 2^20 (minors have 20 bits). -EINVAL otherwise; *ret_number written on success. */
int loop_parse_name(const char *s, unsigned *ret_number);

/* Parses "[/dev/]loopN" or "[/dev/]loopNpM" as strictly (M from 1 to 65535, no leading zeros);
 * *ret_partition is 0 for the whole device. Either output may be NULL. */
int loop_parse_node(const char *s, unsigned *ret_number, unsigned *ret_partition);

/* "/dev/loopN" (partition 0) or "/dev/loopNpM" into buf. Returns buf. */
char *loop_node_format(char buf[static LOOP_NODE_MAX], unsigned number, unsigned partition);

/* The same, allocated (free()); NULL when out of memory. */
char *loop_node_new(unsigned number, unsigned partition);
