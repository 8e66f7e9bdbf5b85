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
        _ARG_COMMAND_MAX,
        /* common options */
        ARG_JSON,
        ARG_NO_ASK_PASSWORD,
        ARG_VERSION,
};

#define OPT(arg) (1u << ((arg)-ARG_READ_ONLY))

typedef struct Context {
        /* the command line */
        const char *arg; /* the command's one argument, NULL when it takes none */
        bool auth; /* the command may need polkit to say yes */
        bool json;
        bool ask_password;
        unsigned given; /* OPT() bits of the options seen */
        uint64_t offset;
        uint64_t size_limit;
        uint32_t sector_size;
        const char *mount_options;
        const char *fstype;

        /* at run time */
        sd_bus *bus;
        bool agent_tried;
        pid_t agent;
} Context;

/* Stops the polkit agent, closes the bus. */
void context_done(Context *c);
bool context_given(const Context *c, int arg);
/* Connects on first use, so that what can fail locally (a missing image) fails before the bus is touched.
 * Like everything below that returns int, logs its failures and returns < 0. */
int context_bus(Context *c);
int context_new_call(Context *c, sd_bus_message **ret, const char *member);
/* Attach and MountImage pass a file descriptor: the connection must be able to. */
int context_can_pass_fds(Context *c, const char *what);
/* Sends m and waits. For a command that polkit may have to ask about, a text agent runs first when a
 * password can be typed here, and the timeout leaves time to type it. Does not log: the caller knows
 * what failed. */
int context_call(Context *c, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply);

int log_build_error(int r, const char *member);
int log_reply_error(int r, const char *member);

/* A node or mount point as the daemon wants it: absolute, symlinks resolved, "loop3p1" in /dev. */
int resolve_node(const char *what, const char *arg, char **ret);
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

/* The commands (verbs-device.c, verbs-mount.c). Each returns 0 or a logged error < 0. */
int verb_attach(Context *c);
int verb_detach(Context *c);
int verb_close(Context *c);
int verb_list(Context *c);
int verb_partitions(Context *c);
int verb_mount(Context *c);
int verb_unmount(Context *c);
int verb_open(Context *c);
int verb_monitor(Context *c);
