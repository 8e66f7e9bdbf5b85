/* cli.c: command-line cycles, each command a real process as a user or script would run it: attach with
 * partitions + detach (loopctl, losetup + partx, udisksctl), mount + unmount (loopctl, mount, udisksctl),
 * and timing any one command. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

#define MAX_ARGS 16

/* One contender: how it attaches IMAGE (printing the device somewhere in its output) and detaches it. */
typedef struct CliTool {
        const char *name;
        const char *attach[MAX_ARGS]; /* "@IMAGE" is replaced by the image */
        const char *attach2[MAX_ARGS]; /* a second step after attach, "@DEV" is the device; may be empty */
        const char *detach[MAX_ARGS]; /* "@DEV" is the device */
} CliTool;

static const CliTool cli_tools[] = {
        { .name = "loopctl",
                .attach = { "@LOOPCTL", "--json", "attach", "@IMAGE" },
                .detach = { "@LOOPCTL", "detach", "@DEV" } },
        { .name = "losetup",
                .attach = { "losetup", "-f", "--show", "-P", "@IMAGE" },
                .attach2 = { "partx", "-a", "@DEV" },
                .detach = { "losetup", "-d", "@DEV" } },
        { .name = "udisksctl",
                .attach = { "udisksctl", "loop-setup", "--no-user-interaction", "-f", "@IMAGE" },
                .detach = { "udisksctl", "loop-delete", "--no-user-interaction", "-b", "@DEV" } },
};

/* One contender for mounting NODE and unmounting it. */
typedef struct MountTool {
        const char *name;
        const char *mount[MAX_ARGS]; /* "@NODE", "@DIR" */
        const char *unmount[MAX_ARGS];
        bool makes_dir; /* makes and removes its mount point itself; else the bench does, timed */
} MountTool;

static const MountTool mount_tools[] = {
        { .name = "loopctl",
                .mount = { "@LOOPCTL", "--json", "mount", "@NODE" },
                .unmount = { "@LOOPCTL", "unmount", "@NODE" },
                .makes_dir = true },
        { .name = "mount",
                /* The options loopd and udisks use for a user's ext4. */
                .mount = { "mount", "-t", "ext4", "-o", "nosuid,nodev,errors=remount-ro", "@NODE", "@DIR" },
                .unmount = { "umount", "@DIR" } },
        { .name = "udisksctl",
                .mount = { "udisksctl", "mount", "--no-user-interaction", "-b", "@NODE" },
                .unmount = { "udisksctl", "unmount", "--no-user-interaction", "-b", "@NODE" },
                .makes_dir = true },
};

typedef struct Subst {
        const char *key, *value;
} Subst;

/* Copies a template argv, replacing "@KEY" words. */
static void expand(const char *const tmpl[], const Subst *subst, size_t n_subst, char *argv[])
{
        size_t i;

        for (i = 0; i < MAX_ARGS - 1 && tmpl[i]; i++) {
                argv[i] = (char *)tmpl[i];
                for (size_t j = 0; j < n_subst; j++)
                        if (streq(tmpl[i], subst[j].key))
                                argv[i] = (char *)subst[j].value;
        }
        argv[i] = NULL;
}

/* cli TOOL LOOPCTL IMAGE N SAMPLES: attach (partitions present) + detach, N times. Prints how many attaches
 * left partitions 1 and 2 in /dev when the tool returned ("partitions=K/N"). */
int cmd_cli(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        const CliTool *tool = NULL;
        unsigned with_parts = 0, failures = 0;
        int n;

        if (argc == 6)
                for (size_t i = 0; i < ELEMENTSOF(cli_tools); i++)
                        if (streq(argv[1], cli_tools[i].name))
                                tool = &cli_tools[i];
        if (!tool || (n = atoi(argv[4])) <= 0) {
                fprintf(stderr,
                        "usage: loopd-bench cli loopctl|losetup|udisksctl LOOPCTL IMAGE N SAMPLES\n");
                return 2;
        }
        if (!(out = samples_open(argv[5])))
                return 1;

        for (int i = -BENCH_WARMUP; i < n; i++) {
                _cleanup_free_ char *output = NULL;
                char dev[64], *cmd[MAX_ARGS];
                uint64_t t0, t1, t2, t3;
                unsigned number;

                Subst s[] = { { "@LOOPCTL", argv[2] }, { "@IMAGE", argv[3] }, { "@DEV", dev } };
                t0 = now_usec();
                expand(tool->attach, s, ELEMENTSOF(s), cmd);
                if (spawn_checked(cmd, &output) < 0) {
                        if (too_many_failures(++failures, n))
                                return 1;
                        continue; /* it said why; loopd and udisks roll a failed attach back */
                }
                if (find_loop_name(output, false, dev, sizeof(dev)) < 0 ||
                        loop_number_of(dev, &number) < 0) {
                        fprintf(stderr, "loopd-bench: %s printed no device: %s\n", tool->name, output);
                        return 1;
                }
                if (tool->attach2[0]) {
                        expand(tool->attach2, s, ELEMENTSOF(s), cmd);
                        if (spawn_checked(cmd, NULL) < 0) {
                                expand(tool->detach, s, ELEMENTSOF(s), cmd);
                                (void)spawn_wait(cmd, NULL);
                                if (too_many_failures(++failures, n))
                                        return 1;
                                continue;
                        }
                }
                t1 = now_usec();
                if (loop_partitions_present(number, 2) == 2 && i >= 0)
                        with_parts++;
                t2 = now_usec();
                expand(tool->detach, s, ELEMENTSOF(s), cmd);
                if (spawn_checked(cmd, NULL) < 0)
                        return 1;
                t3 = now_usec();
                if (i >= 0)
                        samples_write(out, t1 - t0, t3 - t2);
        }
        printf("partitions=%u/%d\n", with_parts, n);
        printf("failures=%u\n", failures);
        return 0;
}

/* The mount point a tool mounted at: DIR for plain mount, else the "mount_point" of loopctl's JSON (the
 * bench's own names: nothing to unescape). NULL when the output has none. */
static char *mount_point_of(const MountTool *tool, const char *output, const char *dir)
{
        const char *key = "\"mount_point\": \"", *p, *end;

        if (!tool->makes_dir)
                return strdup(dir);
        p = output ? strstr(output, key) : NULL;
        if (!p)
                return NULL;
        p += strlen(key);
        end = strchr(p, '"');
        return end ? strndup(p, end - p) : NULL;
}

/* The first thing a user does with a mount: list its root. A FUSE driver answers it only once it has taken
 * the connection's INIT. */
static int list_root(const char *path)
{
        DIR *d = opendir(path);

        if (!d)
                return -errno;
        while (readdir(d))
                ;
        closedir(d);
        return 0;
}

/* mount [--list] TOOL LOOPCTL NODE DIR N SAMPLES: mount NODE + unmount it, N times (DIR: where plain mount
 * mounts). --list: the mount's time includes a listing of its root. */
int cmd_mount(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        const MountTool *tool = NULL;
        bool list = false;
        int n;

        if (argc > 1 && streq(argv[1], "--list")) {
                list = true;
                argc--;
                argv++;
        }
        if (argc == 7)
                for (size_t i = 0; i < ELEMENTSOF(mount_tools); i++)
                        if (streq(argv[1], mount_tools[i].name))
                                tool = &mount_tools[i];
        if (!tool || (n = atoi(argv[5])) <= 0) {
                fprintf(stderr,
                        "usage: loopd-bench mount [--list] loopctl|mount|udisksctl LOOPCTL NODE DIR N "
                        "SAMPLES\n");
                return 2;
        }
        if (!(out = samples_open(argv[6])))
                return 1;

        const char *node = argv[3], *dir = argv[4];
        Subst s[] = { { "@LOOPCTL", argv[2] }, { "@NODE", node }, { "@DIR", dir } };
        for (int i = -BENCH_WARMUP; i < n; i++) {
                char *cmd[MAX_ARGS];
                uint64_t t0, t1, t2, t3;

                t0 = now_usec();
                if (!tool->makes_dir && mkdir(dir, 0700) < 0) {
                        fprintf(stderr, "loopd-bench: cannot make %s: %m\n", dir);
                        return 1;
                }
                expand(tool->mount, s, ELEMENTSOF(s), cmd);
                _cleanup_free_ char *output = NULL, *mount_point = NULL;
                if (spawn_checked(cmd, list ? &output : NULL) < 0)
                        return 1;
                if (list) {
                        mount_point = mount_point_of(tool, output, dir);
                        if (!mount_point || list_root(mount_point) < 0) {
                                fprintf(stderr, "loopd-bench: cannot list what %s mounted\n", tool->name);
                                return 1;
                        }
                }
                t1 = now_usec();
                if (!node_is_mounted(node)) {
                        fprintf(stderr, "loopd-bench: %s mount returned but %s is not mounted\n", tool->name,
                                node);
                        return 1;
                }
                t2 = now_usec();
                expand(tool->unmount, s, ELEMENTSOF(s), cmd);
                if (spawn_checked(cmd, NULL) < 0)
                        return 1;
                if (!tool->makes_dir && rmdir(dir) < 0) {
                        fprintf(stderr, "loopd-bench: cannot remove %s: %m\n", dir);
                        return 1;
                }
                t3 = now_usec();
                if (node_is_mounted(node)) {
                        fprintf(stderr, "loopd-bench: %s unmount returned but %s is mounted\n", tool->name,
                                node);
                        return 1;
                }
                if (i >= 0)
                        samples_write(out, t1 - t0, t3 - t2);
        }
        return 0;
}

/* time N SAMPLES CMD...: runs CMD N times, output discarded. */
int cmd_time(int argc, char *argv[])
{
        _cleanup_fclose_ FILE *out = NULL;
        int n;

        if (argc < 4 || (n = atoi(argv[1])) <= 0) {
                fprintf(stderr, "usage: loopd-bench time N SAMPLES CMD...\n");
                return 2;
        }
        if (!(out = samples_open(argv[2])))
                return 1;
        for (int i = -BENCH_WARMUP; i < n; i++) {
                uint64_t t0 = now_usec();

                if (spawn_checked(argv + 3, NULL) < 0)
                        return 1;
                if (i >= 0)
                        samples_write(out, now_usec() - t0, 0);
        }
        return 0;
}
