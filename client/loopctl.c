/* loopctl.c: the loopd command-line client: parses the command line and runs the command. */
#include <getopt.h>

#include "config.h"
#include "desktop.h"
#include "format.h"
#include "log.h"
#include "loopctl.h"

static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        { "json", no_argument, NULL, ARG_JSON },
        { "quiet", no_argument, NULL, ARG_QUIET },
        { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
        { "read-only", no_argument, NULL, ARG_READ_ONLY },
        { "offset", required_argument, NULL, ARG_OFFSET },
        { "size", required_argument, NULL, ARG_SIZE },
        { "sector-size", required_argument, NULL, ARG_SECTOR_SIZE },
        { "no-partscan", no_argument, NULL, ARG_NO_PARTSCAN },
        { "autoclear", no_argument, NULL, ARG_AUTOCLEAR },
        { "unmount", no_argument, NULL, ARG_UNMOUNT },
        { "options", required_argument, NULL, ARG_OPTIONS },
        { "fstype", required_argument, NULL, ARG_FSTYPE },
        { "writable", no_argument, NULL, ARG_WRITABLE },
        { "show", no_argument, NULL, ARG_SHOW },
        { "shared", no_argument, NULL, ARG_SHARED },
        { "start", required_argument, NULL, ARG_START },
        { "type", required_argument, NULL, ARG_TYPE },
        { "name", required_argument, NULL, ARG_NAME },
        { "bootable", no_argument, NULL, ARG_BOOTABLE },
        { "label", required_argument, NULL, ARG_LABEL },
        { "uuid", required_argument, NULL, ARG_UUID },
        { "erase", no_argument, NULL, ARG_ERASE },
        { "table", required_argument, NULL, ARG_TABLE },
        { "fs", required_argument, NULL, ARG_FS },
        {},
};

typedef struct Verb {
        const char *name; /* a sub-command's with its parent's: "partition add" */
        const char *arg; /* name of its (first) argument in messages, NULL when it takes none */
        unsigned options; /* OPT() bits it accepts */
        bool auth; /* may need polkit to say yes */
        bool desktop; /* run by the desktop entry: without a terminal, a failure is also a notification */
        int (*run)(Context *c);
        const char *arg2; /* name of its second argument, NULL when it takes one or none */
        int (*check)(const Context *c); /* its own usage errors, beyond the options it takes */
        const struct Verb *sub; /* a command of sub-commands ("partition"): them, NULL-name ended */
        const char *help; /* "loopctl <name> --help": its usage line(s), what it does, its options */
} Verb;

#define HELP_SIZES \
        "\nSizes are bytes, or take a suffix: K, M, G, T (KiB, ...: powers of 1024; KB, ...: of 1000).\n"

static const char help_attach[] =
        "attach [OPTIONS] IMAGE\n"
        "\n"
        "Attach IMAGE to a free loop device and list its partitions.\n"
        "\n"
        "Options:\n"
        "  --read-only               Attach it read-only (needed when IMAGE is not writable)\n"
        "  --offset N                Start N bytes into IMAGE\n"
        "  --size N                  Use at most N bytes of it\n"
        "  --sector-size N           Logical sector size: 512, 1024, 2048 or 4096 (0: detect)\n"
        "  --no-partscan             Do not scan for partitions\n"
        "  --autoclear               Detach it after its last user closes it\n"
        "  --shared                  Attach it read-write even if another device writes to it\n" HELP_SIZES;
static const char help_detach[] = "detach [--unmount] DEVICE|IMAGE\n"
                                  "\n"
                                  "Detach a loop device, or the one IMAGE is attached to.\n"
                                  "\n"
                                  "Options:\n"
                                  "  --unmount                 Unmount its filesystems first\n";
static const char help_list[] =
        "list\n"
        "\n"
        "List the loop devices: size, size limit (- for none), offset, sector size, read-only, autoclear,\n"
        "owner (- when loopd did not attach it) and backing file.\n";
static const char help_partitions[] = "partitions DEVICE\n"
                                      "\n"
                                      "List the partitions and filesystems of a loop device.\n";
static const char help_mount[] =
        "mount [OPTIONS] NODE\n"
        "\n"
        "Mount a loop device or partition under /run/media/USER.\n"
        "\n"
        "Options:\n"
        "  --read-only               Mount it read-only\n"
        "  --options OPTS            Mount options, comma-separated (noexec, noatime, ...)\n"
        "  --fstype TYPE             The filesystem type, when it cannot be detected\n";
static const char help_unmount[] = "unmount NODE|MOUNTPOINT\n"
                                   "\n"
                                   "Unmount a filesystem loopd mounted.\n";
static const char help_open[] =
        "open [OPTIONS] IMAGE\n"
        "\n"
        "Attach IMAGE and mount every filesystem on it, read-only unless --writable.\n"
        "\n"
        "Options:\n"
        "  --writable                Attach and mount it writable (says so when a driver cannot write)\n"
        "  --sector-size N           Logical sector size: 512, 1024, 2048 or 4096 (0: detect)\n"
        "  --show                    Show the first filesystem in the file manager\n";
static const char help_close[] =
        "close DEVICE|IMAGE\n"
        "\n"
        "Unmount everything on a loop device, or the one IMAGE is attached to, and detach it.\n";
static const char help_monitor[] =
        "monitor\n"
        "\n"
        "Print loopd's events (attached, detached, mounted, unmounted) until interrupted.\n";
static const char help_format[] =
        "format [OPTIONS] NODE TYPE\n"
        "\n"
        "Make a filesystem (ext2, ext3, ext4, xfs, btrfs, vfat, exfat, ntfs, swap), a partition table\n"
        "(gpt, dos) or nothing (empty) on a loop device or partition.\n"
        "\n"
        "Options:\n"
        "  --label L                 The filesystem's label\n"
        "  --uuid U                  The filesystem's UUID\n"
        "  --erase                   Zero the whole device first\n";
static const char help_partition_add[] =
        "partition add [OPTIONS] DEVICE|IMAGE\n"
        "\n"
        "Add a partition to a loop device's partition table.\n"
        "\n"
        "Options:\n"
        "  --start N                 Where it starts (default: the first free space)\n"
        "  --size N                  How large it is (default: all of that free space)\n"
        "  --type T                  linux (the default), esp, swap, fat, ntfs, a GPT type GUID or a\n"
        "                            DOS type such as 0x83\n"
        "  --name S                  Its name (GPT)\n"
        "  --bootable                Mark it bootable\n" HELP_SIZES;
static const char help_partition_delete[] = "partition delete NODE\n"
                                            "\n"
                                            "Delete a partition of a loop device.\n";
static const char help_partition[] = "partition add [OPTIONS] DEVICE|IMAGE\n"
                                     "       loopctl partition delete NODE\n"
                                     "\n"
                                     "Add or delete a partition; see 'loopctl partition add --help'.\n";
static const char help_create[] =
        "create --size N [OPTIONS] IMAGE\n"
        "\n"
        "Make a new sparse image, attach it, and partition and format it; it stays attached (detach or\n"
        "close it).\n"
        "\n"
        "Options:\n"
        "  --size N                  Its size (needed)\n"
        "  --table gpt|dos           Write a partition table, with one partition for --fs\n"
        "  --fs TYPE                 Make a filesystem: ext2, ext3, ext4, xfs, btrfs, vfat, exfat,\n"
        "                            ntfs or swap\n"
        "  --label L                 The filesystem's label\n"
        "  --sector-size N           Logical sector size: 512, 1024, 2048 or 4096\n" HELP_SIZES;

static const Verb partition_verbs[] = {
        { "partition add", "DEVICE|IMAGE",
                OPT(ARG_START) | OPT(ARG_SIZE) | OPT(ARG_TYPE) | OPT(ARG_NAME) | OPT(ARG_BOOTABLE), true,
                false, verb_partition_add, .help = help_partition_add },
        { "partition delete", "NODE", 0, true, false, verb_partition_delete, .help = help_partition_delete },
        {},
};

static const Verb verbs[] = {
        { "attach", "IMAGE",
                OPT(ARG_READ_ONLY) | OPT(ARG_OFFSET) | OPT(ARG_SIZE) | OPT(ARG_SECTOR_SIZE) |
                        OPT(ARG_NO_PARTSCAN) | OPT(ARG_AUTOCLEAR) | OPT(ARG_SHARED),
                true, false, verb_attach, .help = help_attach },
        { "detach", "DEVICE|IMAGE", OPT(ARG_UNMOUNT), true, false, verb_detach, .help = help_detach },
        { "list", NULL, 0, false, false, verb_list, .help = help_list },
        { "partitions", "DEVICE", 0, false, false, verb_partitions, .help = help_partitions },
        { "mount", "NODE", OPT(ARG_READ_ONLY) | OPT(ARG_OPTIONS) | OPT(ARG_FSTYPE), true, false, verb_mount,
                .help = help_mount },
        { "unmount", "NODE|MOUNTPOINT", 0, true, false, verb_unmount, .help = help_unmount },
        { "open", "IMAGE", OPT(ARG_WRITABLE) | OPT(ARG_SECTOR_SIZE) | OPT(ARG_SHOW), true, true, verb_open,
                .help = help_open },
        { "close", "DEVICE|IMAGE", 0, true, false, verb_close, .help = help_close },
        { "monitor", NULL, 0, false, false, verb_monitor, .help = help_monitor },
        { "format", "NODE", OPT(ARG_LABEL) | OPT(ARG_UUID) | OPT(ARG_ERASE), true, false, verb_format,
                .arg2 = "TYPE", .help = help_format },
        { "partition", NULL, 0, true, false, NULL, .sub = partition_verbs, .help = help_partition },
        { "create", "IMAGE",
                OPT(ARG_SIZE) | OPT(ARG_TABLE) | OPT(ARG_FS) | OPT(ARG_LABEL) | OPT(ARG_SECTOR_SIZE), true,
                false, verb_create, .check = verb_create_check, .help = help_create },
        {},
};

static void help(void)
{
        printf("Usage: loopctl [OPTIONS] COMMAND ...\n"
               "\n"
               "Attach disk images to loop devices and mount them, through loopd.\n"
               "\n"
               "Commands:\n"
               "  attach [--read-only] [--offset N] [--size N] [--sector-size N]\n"
               "         [--no-partscan] [--autoclear] [--shared] IMAGE\n"
               "                            Attach IMAGE to a free loop device\n"
               "  detach [--unmount] DEVICE|IMAGE\n"
               "                            Detach a loop device (--unmount: unmount it first)\n"
               "  list                      List the loop devices\n"
               "  partitions DEVICE         List the partitions and filesystems of a device\n"
               "  mount [--read-only] [--options OPTS] [--fstype TYPE] NODE\n"
               "                            Mount a loop device or partition\n"
               "  unmount NODE|MOUNTPOINT   Unmount it again\n"
               "  open [--writable] [--sector-size N] [--show] IMAGE\n"
               "                            Attach IMAGE and mount everything on it\n"
               "  close DEVICE|IMAGE        Unmount everything and detach\n"
               "  monitor                   Print loopd's events until interrupted\n"
               "  format [--label L] [--uuid U] [--erase] NODE TYPE\n"
               "                            Make a filesystem (ext2, ext3, ext4, xfs, btrfs, vfat,\n"
               "                            exfat, ntfs, swap), a partition table (gpt, dos) or\n"
               "                            nothing (empty) on a device or partition\n"
               "  partition add [--start N] [--size N] [--type T] [--name S] [--bootable]\n"
               "                DEVICE|IMAGE\n"
               "                            Add a partition (type: linux, esp, swap, fat, ntfs,\n"
               "                            a GPT type GUID or a DOS type such as 0x83)\n"
               "  partition delete NODE     Delete a partition\n"
               "  create --size N [--table gpt|dos] [--fs TYPE] [--label L] [--sector-size N]\n"
               "         IMAGE              Make a new sparse image, attach it and partition and\n"
               "                            format it; it stays attached (detach or close it)\n"
               "\n"
               "Options:\n"
               "  --json                    Print JSON for scripts (errors too, on stderr)\n"
               "  -q --quiet                Do not say what was done (detach, close, unmount)\n"
               "  --no-ask-password         Do not ask for a password for authorization\n"
               "  -h --help                 Show this help\n"
               "  --version                 Show the version\n"
               "\n"
               "Sizes are bytes, or take a suffix: K, M, G, T (KiB, MiB, ...: powers of 1024;\n"
               "KB, MB, ...: powers of 1000). Options may come before or after the command.\n"
               "'loopctl COMMAND --help' shows a command's options.\n");
}

/* "loopctl COMMAND --help": that command's usage and options, and the options every command takes. */
static void verb_help(const Verb *verb)
{
        printf("Usage: loopctl %s"
               "\n"
               "Common options:\n"
               "  --json                    Print JSON for scripts (errors too, on stderr)\n"
               "  -q --quiet                Do not say what was done\n"
               "  --no-ask-password         Do not ask for a password for authorization\n"
               "  -h --help                 Show this help\n",
                verb->help);
}

static const char *option_name(int val)
{
        for (const struct option *o = long_options; o->name; o++)
                if (o->val == val)
                        return o->name;
        return "?";
}

static int parse_size_arg(int opt, const char *value, uint64_t *ret)
{
        int r = parse_size(value, ret);

        if (r == -ERANGE)
                return log_error(r, "invalid --%s '%s': too large", option_name(opt), value);
        if (r < 0)
                return log_error(r,
                        "invalid --%s '%s': expected bytes, or a number with K, M, G, T, KiB, MB, ...",
                        option_name(opt), value);
        return 0;
}

/* The options that take a string. */
static int parse_string_arg(Context *c, int opt, const char *value)
{
        /* A partition may be named "" (no name), a filesystem labelled "" (no label); any other empty value
         * would pass for "the default" at the daemon. */
        if (isempty(value) && opt != ARG_NAME && opt != ARG_LABEL)
                return log_error(-EINVAL, "invalid --%s '': expected a value", option_name(opt));

        switch (opt) {
        case ARG_TYPE:
                c->part_type = value;
                break;
        case ARG_NAME:
                c->part_name = value;
                break;
        case ARG_LABEL:
                c->label = value;
                break;
        case ARG_UUID:
                c->uuid = value;
                break;
        case ARG_TABLE:
                c->table = value;
                break;
        default:
                c->fs = value;
                break;
        }
        return 0;
}

/* The verb called word in table (a sub-command's: "<parent> <word>"); NULL when none is. */
static const Verb *find_verb(const Verb *table, const char *parent, const char *word)
{
        for (const Verb *v = table; v->name; v++) {
                const char *name = v->name;

                if (parent) {
                        size_t n = strlen(parent);

                        if (strncmp(name, parent, n) != 0 || name[n] != ' ')
                                continue;
                        name += n + 1;
                }
                if (streq(name, word))
                        return v;
        }
        return NULL;
}

/* "'partition' needs a command: add or delete", or "unknown command 'partition frob'; expected ...". */
static int log_sub_verbs(const Verb *parent, const char *word)
{
        char list[128] = "";
        size_t len = 0;

        for (const Verb *v = parent->sub; v->name && len < sizeof(list); v++)
                len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
                        len > 0 ? (v[1].name ? ", " : " or ") : "", v->name + strlen(parent->name) + 1);
        if (word)
                return log_error(-EINVAL, "unknown command '%s %s'; expected %s", parent->name, word, list);
        return log_error(-EINVAL, "'%s' needs a command: %s", parent->name, list);
}

/* Reports an option getopt refused. GNU getopt leaves the offending word at argv[optind - 1] for long
 * options, and the letter in optopt for short ones. */
static int unknown_option(char **argv, int opt_index, int opt)
{
        const char *word = argv[opt_index - 1];
        size_t len = strcspn(word, "=");

        if (optopt > 0 && optopt < 0x100 && !startswith(word, "--"))
                return log_error(-EINVAL, "unknown option '-%c'; see 'loopctl --help'", optopt);
        if (opt == ':')
                return log_error(-EINVAL, "option '%s' needs a value", word);
        const struct option *match = NULL;
        unsigned n_prefixed = 0;

        /* getopt accepts unambiguous abbreviations; an exact name wins over them. */
        for (const struct option *o = long_options; o->name && len > 2; o++) {
                if (strncmp(o->name, word + 2, len - 2) != 0)
                        continue;
                if (strlen(o->name) == len - 2) {
                        match = o;
                        n_prefixed = 1;
                        break;
                }
                match = o;
                n_prefixed++;
        }
        if (n_prefixed > 1)
                return log_error(-EINVAL, "ambiguous option '%.*s'; see 'loopctl --help'", (int)len, word);
        if (match && match->has_arg == no_argument && word[len] == '=')
                return log_error(-EINVAL, "option '--%s' takes no value", match->name);
        return log_error(-EINVAL, "unknown option '%.*s'; see 'loopctl --help'", (int)len, word);
}

/* Returns 1 to run the command, 0 when done (help, version), < 0 on a usage error (already logged). */
static int parse_args(Context *c, int argc, char **argv, const Verb **ret_verb)
{
        const Verb *verb = NULL;
        const char *positional[4] = {};
        size_t n_positional = 0;
        bool show_help = false, show_version = false;
        size_t first = 1, n_args, n_wanted; /* positional[first] is the command's first argument */
        uint64_t v;
        int opt, r;

        /* '-': words that are not options come back in order as 1, so that options may stand before and
         * after the command (and POSIXLY_CORRECT cannot change that); ':': a missing value is ':'. */
        opterr = 0;
        while ((opt = getopt_long(argc, argv, "-:hq", long_options, NULL)) != -1) {
                switch (opt) {
                case 1:
                        if (n_positional >= ELEMENTSOF(positional))
                                return log_error(-EINVAL, "too many arguments: '%s'", optarg);
                        positional[n_positional++] = optarg;
                        break;
                case 'h':
                        show_help = true;
                        break;
                case ARG_VERSION:
                        show_version = true;
                        break;
                case ARG_JSON:
                        c->json = true;
                        break;
                case 'q':
                case ARG_QUIET:
                        c->quiet = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        c->ask_password = false;
                        break;
                case ARG_OFFSET:
                        r = parse_size_arg(opt, optarg, &c->offset);
                        if (r < 0)
                                return r;
                        break;
                case ARG_SIZE:
                        r = parse_size_arg(opt, optarg, &c->size_limit);
                        if (r < 0)
                                return r;
                        break;
                case ARG_SECTOR_SIZE:
                        r = parse_size_arg(opt, optarg, &v);
                        if (r < 0)
                                return r;
                        if (v != 0 && v != 512 && v != 1024 && v != 2048 && v != 4096)
                                return log_error(-EINVAL,
                                        "invalid --sector-size '%s': expected 512, 1024, 2048 or 4096 (0 to detect)",
                                        optarg);
                        c->sector_size = (uint32_t)v;
                        break;
                case ARG_OPTIONS:
                        c->mount_options = optarg;
                        break;
                case ARG_FSTYPE:
                        if (isempty(optarg))
                                return log_error(-EINVAL, "invalid --fstype '': expected a filesystem type");
                        c->fstype = optarg;
                        break;
                case ARG_START:
                        r = parse_size_arg(opt, optarg, &c->start);
                        if (r < 0)
                                return r;
                        break;
                case ARG_TYPE:
                case ARG_NAME:
                case ARG_LABEL:
                case ARG_UUID:
                case ARG_TABLE:
                case ARG_FS:
                        r = parse_string_arg(c, opt, optarg);
                        if (r < 0)
                                return r;
                        break;
                case ':':
                case '?':
                        return unknown_option(argv, optind, opt);
                default:
                        break;
                }
                if (opt >= ARG_READ_ONLY && opt < _ARG_COMMAND_MAX)
                        c->given |= OPT(opt);
        }
        /* After "--", everything is an argument. */
        for (; optind < argc; optind++) {
                if (n_positional >= ELEMENTSOF(positional))
                        return log_error(-EINVAL, "too many arguments: '%s'", argv[optind]);
                positional[n_positional++] = argv[optind];
        }

        if (show_help) {
                /* "loopctl partition add --help", "loopctl mount --help": that command's; else all. */
                verb = n_positional > 0 ? find_verb(verbs, NULL, positional[0]) : NULL;
                if (verb && verb->sub && n_positional > 1 && find_verb(verb->sub, verb->name, positional[1]))
                        verb = find_verb(verb->sub, verb->name, positional[1]);
                if (verb)
                        verb_help(verb);
                else
                        help();
                return 0;
        }
        if (show_version) {
                printf("loopctl %s\n", PACKAGE_VERSION);
                return 0;
        }

        if (n_positional == 0)
                return log_error(-EINVAL, "missing command; see 'loopctl --help'");
        verb = find_verb(verbs, NULL, positional[0]);
        if (!verb)
                return log_error(-EINVAL, "unknown command '%s'; see 'loopctl --help'", positional[0]);
        if (verb->sub) {
                const Verb *parent = verb;

                if (n_positional < 2 || isempty(positional[1]))
                        return log_sub_verbs(parent, NULL);
                verb = find_verb(parent->sub, parent->name, positional[1]);
                if (!verb)
                        return log_sub_verbs(parent, positional[1]);
                first++;
        }

        for (int a = ARG_READ_ONLY; a < _ARG_COMMAND_MAX; a++)
                if (context_given(c, a) && !(verb->options & OPT(a)))
                        return log_error(
                                -EINVAL, "option '--%s' does not apply to '%s'", option_name(a), verb->name);

        n_args = n_positional - first;
        n_wanted = !!verb->arg + !!verb->arg2;
        if (verb->arg && n_args < 1)
                return log_error(-EINVAL, "'%s' needs %s", verb->name, verb->arg);
        if (verb->arg2 && n_args < 2)
                return log_error(-EINVAL, "'%s' needs %s after %s", verb->name, verb->arg2, verb->arg);
        if (n_args > n_wanted)
                return log_error(-EINVAL, "too many arguments for '%s': '%s'", verb->name,
                        positional[first + n_wanted]);
        if (verb->arg && isempty(positional[first]))
                return log_error(-EINVAL, "'%s' needs %s, not an empty string", verb->name, verb->arg);
        if (verb->arg2 && isempty(positional[first + 1]))
                return log_error(-EINVAL, "'%s' needs %s, not an empty string", verb->name, verb->arg2);
        c->arg = verb->arg ? positional[first] : NULL;
        c->arg2 = verb->arg2 ? positional[first + 1] : NULL;
        if (verb->check) {
                r = verb->check(c);
                if (r < 0)
                        return r;
        }
        c->auth = verb->auth;
        *ret_verb = verb;
        return 1;
}

/* Started from the desktop entry, loopctl has no terminal and nobody reads its stderr: the error line goes
 * to the session as a notification too, "Cannot open disk.img" over it. Not with --json: a program reads
 * that output. */
static void notify_failure(const Context *c, const Verb *verb)
{
        _cleanup_free_ char *name = NULL, *summary = NULL;
        const char *line = log_last_line(), *slash;

        if (!verb->desktop || c->json || !line || !desktop_unattended())
                return;
        slash = strrchr(c->arg, '/');
        name = display_escape(slash && slash[1] ? slash + 1 : c->arg);
        if (!name || asprintf(&summary, "Cannot %s %s", verb->name, name) < 0) {
                summary = NULL; /* asprintf() leaves it undefined */
                return;
        }
        desktop_notify_error(summary, line);
}

int main(int argc, char **argv)
{
        _cleanup_(context_done) Context c = { .ask_password = true };
        const Verb *verb = NULL;
        int r;

        /* --json anywhere before "--" makes every error JSON, a usage error about an earlier word too. */
        for (int i = 1; i < argc && !streq(argv[i], "--"); i++)
                if (streq(argv[i], "--json"))
                        log_set_json(true);
        log_set_usage(true);
        r = parse_args(&c, argc, argv, &verb);
        log_set_usage(false);
        if (r < 0)
                return 2;
        /* From here on what getopt made of the words decides: "--js" is --json, and a "--json" that was an
         * option's value (a label) is not. */
        log_set_json(c.json);
        if (r > 0)
                r = verb->run(&c);

        /* A full disk or a closed pipe must not pass for success. */
        int e = fflush(stdout) != 0 ? negative_errno() : ferror(stdout) ? -EIO : 0;
        if (e < 0 && r >= 0)
                r = log_error_errno(e, "cannot write output");
        if (r < 0 && verb)
                notify_failure(&c, verb);
        log_forget();
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
