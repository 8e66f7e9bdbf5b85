/* harness-scratch.c: the scratch fixture of the kernel-level suites (engine, loop, mount-kernel): no bus, no
 * loopd, no polkit; a directory of the test's own and a teardown that fails the test for what it left. */
#include <glib.h>

#include "harness.h"

bool scratch_setup(Scratch *s)
{
        *s = (Scratch){};
        if (!test_require_privileges())
                return false;
        s->dir = test_tmpdir_new();
        s->ready = true;
        return true;
}

void scratch_clean(Scratch *s)
{
        if (!s->dir || s->left)
                return;
        s->left = g_ptr_array_new_with_free_func(g_free);
        /* Noted before anything is taken down: what a passing test must not leave. */
        g_autoptr(GPtrArray) loops = oracle_loops_backed_by(s->dir);
        g_autoptr(GPtrArray) mounts = oracle_mounts_below(s->dir);
        for (guint i = 0; i < loops->len; i++)
                g_ptr_array_add(s->left, g_strdup_printf("loop device %s", (char *)loops->pdata[i]));
        for (guint i = 0; i < mounts->len; i++)
                g_ptr_array_add(s->left, g_strdup_printf("mount on %s", (char *)mounts->pdata[i]));
        test_cleanup_loops_under(s->dir);
}

void scratch_teardown(Scratch *s)
{
        if (!s->dir)
                return;
        scratch_clean(s);
        test_tmpdir_remove(s->dir);
        for (guint i = 0; i < s->left->len; i++)
                g_test_message("the test left a %s", (char *)s->left->pdata[i]);
        g_assert_cmpuint(s->left->len, ==, 0);
        g_clear_pointer(&s->left, g_ptr_array_unref);
        g_clear_pointer(&s->dir, g_free);
        s->ready = false;
}
