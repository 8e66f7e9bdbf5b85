/* loop-name.c: loop device names: "loopN", "/dev/loopN", "loopNpM" parsed strictly, /dev nodes formatted. */
#include "loop-name.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOP_NUMBER_MAX 1048575u /* minors have 20 bits */
#define LOOP_PARTITION_MAX 65535u

/* Reads a decimal number at *p that starts with a digit from first to '9', has no leading zero and is at
 * most max; advances *p past it. Never strtoul(): it would take signs and spaces. */
static int parse_number(const char **p, char first, unsigned max, unsigned *ret)
{
        const char *s = *p;
        unsigned long v = 0;

        if (*s < first || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
                return -EINVAL;
        for (; *s >= '0' && *s <= '9'; s++) {
                v = v * 10 + (unsigned)(*s - '0');
                if (v > max)
                        return -EINVAL;
        }
        *p = s;
        *ret = (unsigned)v;
        return 0;
}

int loop_parse_node(const char *s, unsigned *ret_number, unsigned *ret_partition)
{
        unsigned number, partition = 0;

        if (!s)
                return -EINVAL;
        if (strncmp(s, "/dev/", 5) == 0)
                s += 5;
        if (strncmp(s, "loop", 4) != 0)
                return -EINVAL;
        s += 4;
        if (parse_number(&s, '0', LOOP_NUMBER_MAX, &number) < 0)
                return -EINVAL;
        if (*s == 'p') {
                s++;
                if (parse_number(&s, '1', LOOP_PARTITION_MAX, &partition) < 0)
                        return -EINVAL;
        }
        if (*s != '\0')
                return -EINVAL;
        if (ret_number)
                *ret_number = number;
        if (ret_partition)
                *ret_partition = partition;
        return 0;
}

int loop_parse_name(const char *s, unsigned *ret_number)
{
        unsigned number, partition;

        if (loop_parse_node(s, &number, &partition) < 0 || partition != 0)
                return -EINVAL;
        if (ret_number)
                *ret_number = number;
        return 0;
}

char *loop_node_format(char buf[static LOOP_NODE_MAX], unsigned number, unsigned partition)
{
        if (partition == 0)
                snprintf(buf, LOOP_NODE_MAX, "/dev/loop%u", number);
        else
                snprintf(buf, LOOP_NODE_MAX, "/dev/loop%up%u", number, partition);
        return buf;
}

char *loop_node_new(unsigned number, unsigned partition)
{
        char buf[LOOP_NODE_MAX];

        return strdup(loop_node_format(buf, number, partition));
}
