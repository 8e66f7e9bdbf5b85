/* partition-info-assert.h: two lists of PartitionInfo (probe.h), entry by entry, for the suites that compare
 * one way of probing with another. */
#pragma once

#include <glib.h>

#include "probe.h"

static inline void assert_partition_infos_equal(
        const PartitionInfo *a, size_t n_a, const PartitionInfo *b, size_t n_b)
{
        g_assert_cmpuint(n_a, ==, n_b);
        for (size_t i = 0; i < n_a; i++) {
                g_assert_cmpstr(a[i].node, ==, b[i].node);
                g_assert_cmpuint(a[i].number, ==, b[i].number);
                g_assert_cmpuint(a[i].devnum, ==, b[i].devnum);
                g_assert_cmpuint(a[i].offset, ==, b[i].offset);
                g_assert_cmpuint(a[i].size, ==, b[i].size);
                g_assert_cmpstr(a[i].part_type, ==, b[i].part_type);
                g_assert_cmpstr(a[i].part_name, ==, b[i].part_name);
                g_assert_cmpstr(a[i].fstype, ==, b[i].fstype);
                g_assert_cmpstr(a[i].label, ==, b[i].label);
                g_assert_cmpstr(a[i].uuid, ==, b[i].uuid);
                g_assert_cmpstr(a[i].mount_point, ==, b[i].mount_point);
        }
}
