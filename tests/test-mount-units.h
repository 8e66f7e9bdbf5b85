/* test-mount-units.h: the mount-units suite's tests of drivers and names (mount-units-names.c), which
 * test-mount-units.c registers. */
#pragma once

#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "images.h"
#include "mount.h"

/* mount-units-names.c */
void test_driver_unknown_fstype_has_none(void);
void test_driver_fuse_helpers_are_absolute(void);
void test_driver_pick_prefers_kernel(void);
void test_name_plain_label_unchanged(void);
void test_name_label_with_slash(void);
void test_name_dotdot_path(void);
void test_name_dot_and_dotdot(void);
void test_name_leading_dots(void);
void test_name_whitespace(void);
void test_name_empty_and_null(void);
void test_name_control_chars(void);
void test_name_format_string(void);
void test_name_invalid_utf8(void);
void test_name_unicode_kept(void);
void test_name_bidi_and_invisible_replaced(void);
void test_name_long_label_300_bytes(void);
void test_name_cut_does_not_leave_trailing_space(void);
