/* loopd-bench.c: the measuring half of bench/run: one subcommand per kind of cycle, samples to files. */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
        const char *name;
        int (*run)(int argc, char *argv[]);
        const char *usage;
} commands[] = {
        { "api-loopd", cmd_api_loopd, "IMAGE N SAMPLES [shared]" },
        { "api-raw", cmd_api_raw, "IMAGE N SAMPLES [udev]" },
        { "cli", cmd_cli, "loopctl|losetup|udisksctl LOOPCTL IMAGE N SAMPLES" },
        { "mount", cmd_mount, "loopctl|mount|udisksctl LOOPCTL NODE DIR N SAMPLES" },
        { "attach-many", cmd_attach_many, "IMAGE COUNT DEVICES SAMPLES" },
        { "attach-distinct", cmd_attach_distinct, "DIR COUNT DEVICES SAMPLES" },
        { "detach-many", cmd_detach_many, "DEVICES SAMPLES" },
        { "list-devices", cmd_list_devices, "N SAMPLES" },
        { "time", cmd_time, "N SAMPLES CMD..." },
        { "read", cmd_read, "FILE N SAMPLES [BLOCKDEV...]" },
        { "first-file", cmd_first_file, "LOOPCTL IMAGE FILE N SAMPLES [QEMU_IMG RAW_COPY]" },
        { "switch", cmd_switch, "any-cpu|one-cpu N SAMPLES" },
        { "stats", cmd_stats, "COLUMN FILE..." },
        { "remove-loops", cmd_remove_loops, "MAX" },
};

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: loopd-bench COMMAND ARGS...\n"
                "Samples are appended to SAMPLES, one cycle a line: \"total first second\" in microseconds.\n"
                "Run bench/run rather than this: it sets up the bus, the daemons and the image.\n\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  loopd-bench %s %s\n", commands[i].name, commands[i].usage);
}

int main(int argc, char *argv[])
{
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (streq(argv[1], "-h") || streq(argv[1], "--help")) {
                usage(stdout);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name))
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "loopd-bench: unknown command %s\n", argv[1]);
        usage(stderr);
        return 2;
}
