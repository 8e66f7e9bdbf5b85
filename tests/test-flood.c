/* test-flood.c: placeholder, filled in by the work on issue #21. */
#include "harness.h"

int main(int argc, char **argv)
{
        harness_init(&argc, &argv);
        return g_test_run();
}
