/* loopctl.h: what loopctl's commands share: the parsed command line, the bus connection and calls to
 * org.loopd1, the paths users type, and output that is written only when complete. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "macro.h"
#include "table.h"

/* getopt values of the options that belong to one command; each also names a bit of Context.given. */
enum {
        ARG_READ_ONLY = 0x100,
        ARG_OFFSET,
        ARG_SIZE,
        ARG_SECTOR_SIZE,
        ARG_NO_PARTSCAN,
        ARG_AUTOCLEAR,
        ARG_UNMOUNT,
        ARG_OPTIONS,
        ARG_FSTYPE,
        ARG_WRITABLE,
        ARG_SHOW,
        ARG_SHARED,
        ARG_START,
        ARG_TYPE,
        ARG_NAME,
        ARG_BOOTABLE,
        ARG_LABEL,
        ARG_UUID,
        ARG_ERASE,
        ARG_TABLE,
        ARG_FS,
        _ARG_COMMAND_MAX,
        /* common options */
        ARG_JSON,
        ARG_QUIET,
        ARG_NO_ASK_PASSWORD,
        ARG_VERSION,
};

#define OPT(arg) (1u << ((arg)-ARG_READ_ONLY))

typedef struct Context {
        /* the command line */
        const char *arg; /* the command's (first) argument, NULL when it takes none */
        const char *arg2; /* its second argument (format's TYPE), NULL when it takes one or none */
        bool auth; /* the command may need polkit to say yes */
        bool json;
        bool quiet; /* --quiet: no word of what was done */
        bool ask_password;
        unsigned given; /* OPT() bits of the options seen */
        uint64_t offset;
        uint64_t size_limit; /* --size: attach's size limit, create's image size, partition add's size */
        uint64_t start;
        uint32_t sector_size;
        const char *mount_options;
        const char *fstype;
        const char *label;
        const char *uuid;
        const char *part_type;
        const char *part_name;
        const char *table; /* create's --table, "gpt" or "dos" */
        const char *fs; /* create's --fs */

        /* at run time */
        sd_bus *bus;
        bool agent_tried;
        pid_t agent;
} Context;

/* Whether to say what a command did ("Detached /dev/loop3."): on a terminal, not with --json or --quiet. */
bool context_tell(const Context *c);
/* Stops the polkit agent, closes the bus. */
void context_done(Context *c);
bool context_given(const Context *c, int arg);
/* Connects on first use, so that what can fail locally (a missing image) fails before the bus is touched.
 * Like everything below that returns int, logs its failures and returns < 0. */
int context_bus(Context *c);
int context_new_call(Context *c, sd_bus_message **ret, const char *member);
/* The same once connected (context_bus()), for a caller that says itself what failed: does not log. */
int context_message(Context *c, sd_bus_message **ret, const char *member);
/* Attach and MountImage pass a file descriptor: the connection must be able to. */
int context_can_pass_fds(Context *c, const char *what);
/* Sends m and waits. For a command that polkit may have to ask about, a text agent runs first when a
 * password can be typed here, and the timeout leaves time to type it. Does not log: the caller knows
 * what failed. */
int context_call(Context *c, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply);
/* The same for a call whose work grows with the image (Format runs mkfs, and may zero it all first). */
int context_call_slow(Context *c, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply);
/* context_call() of a call that needs no password, with work(userdata) done while the daemon answers. */
int context_call_meanwhile(Context *c, sd_bus_message *m, void (*work)(void *userdata), void *userdata,
        sd_bus_error *error, sd_bus_message **ret_reply);

int log_build_error(int r, const char *member);
int log_reply_error(int r, const char *member);

/* A node or mount point as the daemon wants it: absolute, symlinks resolved, "loop3p1" in /dev. */
int resolve_node(const char *what, const char *arg, char **ret);
/* Unmount's NODE|MOUNTPOINT: a node as resolve_node() has it; a mount point made absolute, its directory
 * resolved (symlinks too), the mount point itself never stat()ed. */
int resolve_unmount_target(const char *arg, char **ret);
/* Opens IMAGE as the calling user; only regular files. hint follows a permission error. */
int open_image(const char *what, const char *path, bool writable, const char *hint, int *ret_fd);

/* Output is built in memory and written only when complete: a script never reads half a document. */
typedef struct Output {
        char *buf;
        size_t size;
        FILE *f;
} Output;

int output_open(Output *o);
void output_done(Output *o);
int output_emit(Output *o);
int output_table_new(Table **ret, size_t n, const char *const *headers);

/* verbs-device.c's helpers that verbs-modify.c shares. */
/* DEVICE|IMAGE: a loop device by name, or the one device IMAGE (c->arg) is attached to. */
int resolve_device(Context *c, const char *what, char **ret);
/* ListPartitions(device); logs as "cannot list the partitions of DEVICE<suffix>: why". */
int list_partitions(Context *c, const char *device, const char *suffix, sd_bus_message **ret_reply);
/* The same call once connected (context_bus()); does not log. */
int call_list_partitions(Context *c, const char *device, sd_bus_error *error, sd_bus_message **ret_reply);
/* ListPartitions' reply as attach prints it: "Attached IMAGE as DEVICE." (not when image is NULL) and a
 * table, or the JSON object {"device", "partitions"}. Does not log. */
int output_attached(const Context *c, FILE *f, const char *image, const char *device, sd_bus_message *parts);
/* The one partition node of ListPartitions' reply: its table row (header and row) or its JSON object P.
 * -ENOENT when the reply does not list it. Does not log. */
int output_partition(const Context *c, FILE *f, const char *node, sd_bus_message *parts);

/* The commands (verbs-device.c, verbs-mount.c, verbs-modify.c). Each returns 0 or a logged error < 0. */
int verb_attach(Context *c);
int verb_detach(Context *c);
int verb_close(Context *c);
int verb_list(Context *c);
int verb_partitions(Context *c);
int verb_mount(Context *c);
int verb_unmount(Context *c);
int verb_open(Context *c);
int verb_monitor(Context *c);
int verb_format(Context *c);
int verb_partition_add(Context *c);
int verb_partition_delete(Context *c);
int verb_create(Context *c);
/* create's command line, checked before anything runs: a usage error (logged) is < 0. */
int verb_create_check(const Context *c);
