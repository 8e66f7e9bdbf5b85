/* mount-options.c: the mount option allow-list, and the options loopd itself adds for a user's mount. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mount.h"

#define BAD_MAX_CHARS 64
#define ITEM_MAX_BYTES 256

typedef enum ValueKind {
        VALUE_NONE, /* a flag: "noatime" */
        VALUE_OCTAL, /* umask=0022: 1-4 octal digits */
        VALUE_DECIMAL, /* codepage=437: 1-10 decimal digits */
        VALUE_CHARSET, /* iocharset=utf8: [A-Za-z0-9_-], names a kernel NLS module */
        VALUE_CHOICE, /* shortname=mixed: one of choices */
        VALUE_SUBVOL, /* subvol=@home: a path inside the filesystem */
        VALUE_COMPRESS, /* compress=zstd:3 */
} ValueKind;

typedef struct OptionSpec {
        const char *name;
        ValueKind kind;
        /* Options of one group contradict each other (exec/noexec); NULL: the option is its own group. */
        const char *group;
        const char *const *choices;
} OptionSpec;

/* Which of the generic options a FUSE helper really honours: what it silently drops is refused rather
 * than promised. */
enum {
        GENERIC_LIBFUSE = 1 << 0, /* libfuse's own mount flags: fuseiso, fusefat, fuse2fs, squashfuse */
        GENERIC_EXFAT = 1 << 1, /* mount.exfat-fuse keeps only ro/rw/noatime */
        GENERIC_NTFS3G = 1 << 2, /* ntfs-3g's own option parser */
        GENERIC_ALL_FUSE = GENERIC_LIBFUSE | GENERIC_EXFAT | GENERIC_NTFS3G,
};

typedef struct GenericOption {
        OptionSpec spec;
        unsigned fuse; /* GENERIC_* helpers that honour it */
} GenericOption;

static const GenericOption generic_options[] = {
        { { "ro", VALUE_NONE, "rw" }, GENERIC_ALL_FUSE },
        { { "rw", VALUE_NONE, "rw" }, GENERIC_ALL_FUSE },
        /* What loopd adds anyway; a client that spells them out is not wrong. */
        { { "nosuid", VALUE_NONE }, GENERIC_ALL_FUSE },
        { { "nodev", VALUE_NONE }, GENERIC_ALL_FUSE },
        { { "noexec", VALUE_NONE, "exec" }, GENERIC_LIBFUSE | GENERIC_NTFS3G },
        { { "exec", VALUE_NONE, "exec" }, GENERIC_LIBFUSE | GENERIC_NTFS3G },
        { { "noatime", VALUE_NONE }, GENERIC_ALL_FUSE },
        { { "relatime", VALUE_NONE }, GENERIC_NTFS3G },
        { { "nodiratime", VALUE_NONE }, 0 },
        { { "lazytime", VALUE_NONE }, 0 },
        { { "sync", VALUE_NONE }, GENERIC_LIBFUSE | GENERIC_NTFS3G },
        { { "dirsync", VALUE_NONE }, GENERIC_LIBFUSE | GENERIC_NTFS3G },
        { { "nosymfollow", VALUE_NONE }, 0 },
};

static const char *const shortname_choices[] = { "lower", "win95", "winnt", "mixed", NULL };

static const OptionSpec no_options[] = { {} };
static const OptionSpec vfat_options[] = {
        { "shortname", VALUE_CHOICE, NULL, shortname_choices },
        { "utf8", VALUE_NONE },
        { "iocharset", VALUE_CHARSET },
        { "codepage", VALUE_DECIMAL },
        { "flush", VALUE_NONE },
        { "umask", VALUE_OCTAL },
        { "dmask", VALUE_OCTAL },
        { "fmask", VALUE_OCTAL },
        {},
};
static const OptionSpec masks_charset_options[] = {
        { "iocharset", VALUE_CHARSET },
        { "umask", VALUE_OCTAL },
        { "dmask", VALUE_OCTAL },
        { "fmask", VALUE_OCTAL },
        {},
};
static const OptionSpec iso9660_options[] = {
        { "norock", VALUE_NONE },
        { "nojoliet", VALUE_NONE },
        { "utf8", VALUE_NONE },
        { "iocharset", VALUE_CHARSET },
        {},
};
static const OptionSpec udf_options[] = {
        { "utf8", VALUE_NONE },
        { "iocharset", VALUE_CHARSET },
        { "umask", VALUE_OCTAL },
        {},
};
static const OptionSpec btrfs_options[] = {
        { "subvol", VALUE_SUBVOL, "subvol" },
        { "subvolid", VALUE_DECIMAL, "subvol" },
        { "compress", VALUE_COMPRESS },
        {},
};
static const OptionSpec umask_options[] = { { "umask", VALUE_OCTAL }, {} };
static const OptionSpec masks_options[] = {
        { "umask", VALUE_OCTAL },
        { "dmask", VALUE_OCTAL },
        { "fmask", VALUE_OCTAL },
        {},
};

typedef struct FuseRules {
        unsigned generic; /* GENERIC_* */
        const OptionSpec *extra;
        bool uid_gid; /* takes uid=, gid= (fuseiso and fusefat through libfuse's high-level API) */
        bool umask; /* takes umask=, so it gets the default */
        bool fsname; /* takes fsname= (ntfs-3g sets it itself and refuses it) */
        bool read_only; /* the helper has no safe write support */
        const char *no_replay; /* added to read-only mounts */
} FuseRules;

typedef struct FsRules {
        const char *fstype;
        const OptionSpec *extra; /* the kernel driver's extras */
        bool foreign_ownership; /* no POSIX owners on disk: uid=, gid= */
        bool default_umask; /* umask=0022 unless the caller gave one */
        bool read_only_fs; /* there is no writing this filesystem */
        bool errors_remount_ro;
        const char *no_replay; /* added to read-only mounts: do not replay the journal */
        FuseRules fuse;
} FsRules;

static const FsRules fs_rules[] = {
        { "ext2", no_options, .errors_remount_ro = true,
                .fuse = { GENERIC_LIBFUSE, no_options, .fsname = true } },
        { "ext3", no_options, .errors_remount_ro = true, .no_replay = "noload",
                .fuse = { GENERIC_LIBFUSE, no_options, .fsname = true, .no_replay = "norecovery" } },
        { "ext4", no_options, .errors_remount_ro = true, .no_replay = "noload",
                .fuse = { GENERIC_LIBFUSE, no_options, .fsname = true, .no_replay = "norecovery" } },
        { "xfs", no_options, .no_replay = "norecovery" },
        { "btrfs", btrfs_options, .no_replay = "rescue=nologreplay" },
        { "squashfs", no_options, .read_only_fs = true,
                .fuse = { GENERIC_LIBFUSE, no_options, .fsname = true } },
        { "erofs", no_options, .read_only_fs = true },
        { "vfat", vfat_options, .foreign_ownership = true, .default_umask = true,
                .fuse = { GENERIC_LIBFUSE, umask_options, .uid_gid = true, .umask = true, .fsname = true,
                        .read_only = true } },
        { "exfat", masks_charset_options, .foreign_ownership = true, .default_umask = true,
                .fuse = { GENERIC_EXFAT, masks_options, .uid_gid = true, .umask = true, .fsname = true } },
        { "ntfs", masks_charset_options, .foreign_ownership = true, .default_umask = true,
                .fuse = { GENERIC_NTFS3G, masks_options, .uid_gid = true, .umask = true } },
        { "iso9660", iso9660_options, .foreign_ownership = true, .read_only_fs = true,
                .fuse = { GENERIC_LIBFUSE, no_options, .uid_gid = true, .fsname = true } },
        { "udf", udf_options, .foreign_ownership = true },
};

static const FsRules *fs_rules_find(const char *fstype)
{
        for (size_t i = 0; i < ELEMENTSOF(fs_rules); i++)
                if (streq(fs_rules[i].fstype, fstype))
                        return &fs_rules[i];
        return NULL;
}

/* A printable, bounded copy of an offending item for an error message (D-Bus wants valid UTF-8, a
 * terminal no escape sequences). */
static char *bad_item_escape(const char *item, size_t len)
{
        size_t n = MIN(len, (size_t)BAD_MAX_CHARS);
        char *s = malloc(n * 4 + 4), *p = s;

        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = item[i];

                if (c >= 0x20 && c < 0x7f)
                        *p++ = c;
                else
                        p += sprintf(p, "\\x%02x", c);
        }
        if (len > n)
                p = stpcpy(p, "...");
        *p = '\0';
        return s;
}

static bool string_in(const char *s, size_t len, const char *const *choices)
{
        for (; *choices; choices++)
                if (strlen(*choices) == len && strncmp(*choices, s, len) == 0)
                        return true;
        return false;
}

static bool span_all(const char *s, size_t len, const char *accept)
{
        return strspn(s, accept) >= len;
}

static bool value_valid(const OptionSpec *spec, const char *v, size_t len)
{
        static const char *const compress_algorithms[] = { "zlib", "lzo", "zstd", "no", NULL };

        switch (spec->kind) {
        case VALUE_NONE:
                return false;
        case VALUE_OCTAL:
                return len >= 1 && len <= 4 && span_all(v, len, "01234567");
        case VALUE_DECIMAL:
                return len >= 1 && len <= 10 && span_all(v, len, "0123456789");
        case VALUE_CHARSET:
                return len >= 1 && len <= 32 &&
                        span_all(v, len, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
        case VALUE_CHOICE:
                return string_in(v, len, spec->choices);
        case VALUE_SUBVOL:
                /* Resolved by btrfs inside the filesystem; control characters, quotes and backslashes
                 * were already refused for every item. */
                return len >= 1;
        case VALUE_COMPRESS: {
                const char *colon = memchr(v, ':', len);
                size_t alg = colon ? (size_t)(colon - v) : len;

                if (!string_in(v, alg, compress_algorithms))
                        return false;
                return !colon ||
                        (len - alg - 1 >= 1 && len - alg - 1 <= 2 &&
                                span_all(colon + 1, len - alg - 1, "0123456789"));
        }
        }
        return false;
}

static const OptionSpec *spec_find(const OptionSpec *specs, const char *key, size_t len)
{
        for (; specs->name; specs++)
                if (strlen(specs->name) == len && strncmp(specs->name, key, len) == 0)
                        return specs;
        return NULL;
}

static const OptionSpec *option_lookup(const FsRules *rules, bool fuse, const char *key, size_t len)
{
        for (size_t i = 0; i < ELEMENTSOF(generic_options); i++) {
                const GenericOption *g = &generic_options[i];

                if (strlen(g->spec.name) == len && strncmp(g->spec.name, key, len) == 0)
                        return !fuse || (g->fuse & rules->fuse.generic) ? &g->spec : NULL;
        }
        return spec_find(fuse ? rules->fuse.extra : rules->extra, key, len);
}

typedef struct Accepted {
        const OptionSpec *spec;
        const char *item; /* points into the caller's copy */
} Accepted;

static const char *spec_group(const OptionSpec *spec)
{
        return spec->group ?: spec->name;
}

static bool node_valid_for_fsname(const char *node)
{
        if (!node || node[0] != '/')
                return false;
        for (const char *p = node; *p; p++)
                if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr(",=\\\"'", *p))
                        return false;
        return true;
}

/* The options being written: a comma-separated list, and the first error appending met (later appends then
 * do nothing), so that a sequence of appends needs one check at its end. */
typedef struct OptionsOut {
        char *buf;
        size_t len;
        int error;
} OptionsOut;

static void append(OptionsOut *o, const char *fmt, ...) _printf_(2, 3);
static void append(OptionsOut *o, const char *fmt, ...)
{
        va_list ap;
        char *piece = NULL, *n;
        int r;

        if (o->error < 0)
                return;
        va_start(ap, fmt);
        r = vasprintf(&piece, fmt, ap);
        va_end(ap);
        if (r < 0) {
                o->error = -ENOMEM;
                return;
        }

        n = realloc(o->buf, o->len + (o->len > 0) + r + 1);
        if (!n) {
                free(piece);
                o->error = -ENOMEM;
                return;
        }
        if (o->len > 0)
                n[o->len++] = ',';
        memcpy(n + o->len, piece, r + 1);
        o->len += r;
        o->buf = n;
        free(piece);
}

static int fail_bad(char **ret_bad, const char *item, size_t len)
{
        if (ret_bad) {
                char *b = bad_item_escape(item, len);
                if (!b)
                        return -ENOMEM;
                *ret_bad = b;
        }
        return -EINVAL;
}

/* The caller's options, each checked against the allow-list of rules (FUSE or kernel). */
typedef struct UserOptions {
        char *copy; /* the caller's string, cut at its commas: the items point into it */
        Accepted *accepted;
        size_t n_accepted;
        bool want_ro, want_rw, have_umask;
        const char *rw_item;
} UserOptions;

static void user_options_done(UserOptions *u)
{
        free(u->copy);
        free(u->accepted);
}

/* One item of the caller's options: its spec on the allow-list, or NULL when it is refused. */
static const OptionSpec *item_check(const FsRules *rules, bool fuse, const char *item, size_t len)
{
        const OptionSpec *spec;
        const char *eq;

        if (len > ITEM_MAX_BYTES)
                return NULL;
        /* Control characters end lines in mtab-like files and logs; quotes and backslashes are escapes to
         * libmount's and libfuse's option parsers. */
        for (const char *p = item; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f || strchr("\"'\\", *p))
                        return NULL;

        eq = strchr(item, '=');
        spec = option_lookup(rules, fuse, item, eq ? (size_t)(eq - item) : len);
        if (!spec)
                return NULL;
        if (spec->kind == VALUE_NONE ? !!eq : !eq || !value_valid(spec, eq + 1, strlen(eq + 1)))
                return NULL;
        return spec;
}

/* Reads user_options into u: every item allowed, none contradicting another, repeats dropped. -EINVAL with
 * *ret_bad the first refused item. */
static int user_options_parse(
        const FsRules *rules, bool fuse, const char *user_options, UserOptions *u, char **ret_bad)
{
        size_t n_items = 1;

        u->copy = strdup(user_options);
        if (!u->copy)
                return -ENOMEM;
        for (const char *p = u->copy; *p; p++)
                n_items += *p == ',';
        u->accepted = calloc(n_items, sizeof(Accepted));
        if (!u->accepted)
                return -ENOMEM;

        for (char *item = u->copy, *next; item; item = next) {
                const OptionSpec *spec;
                bool duplicate = false;
                size_t len;

                next = strchr(item, ',');
                if (next)
                        *next++ = '\0';
                len = strlen(item);
                if (len == 0)
                        return fail_bad(ret_bad, "(empty option)", strlen("(empty option)"));
                spec = item_check(rules, fuse, item, len);
                if (!spec)
                        return fail_bad(ret_bad, item, len);

                /* A repeated item is dropped; two different members of one group contradict. */
                for (size_t i = 0; i < u->n_accepted; i++) {
                        if (!streq(spec_group(u->accepted[i].spec), spec_group(spec)))
                                continue;
                        if (!streq(u->accepted[i].item, item))
                                return fail_bad(ret_bad, item, len);
                        duplicate = true;
                }
                if (duplicate)
                        continue;
                u->accepted[u->n_accepted++] = (Accepted){ spec, item };

                if (streq(item, "ro"))
                        u->want_ro = true;
                else if (streq(item, "rw")) {
                        u->want_rw = true;
                        u->rw_item = item;
                } else if (streq(spec->name, "umask"))
                        u->have_umask = true;
        }
        return 0;
}

/* loopd's own options: always nosuid,nodev, and what the filesystem (or its FUSE helper) needs to be safe
 * for a user. */
static void append_own_options(OptionsOut *o, const FsRules *rules, bool fuse, bool read_only,
        bool have_umask, uid_t uid, gid_t gid, const char *node)
{
        const char *no_replay = fuse ? rules->fuse.no_replay : rules->no_replay;

        append(o, "nosuid,nodev");
        if (read_only) {
                append(o, "ro");
                if (no_replay)
                        append(o, "%s", no_replay);
        }
        if (!fuse && rules->errors_remount_ro)
                append(o, "errors=remount-ro");
        if (fuse ? rules->fuse.uid_gid : rules->foreign_ownership)
                append(o, "uid=%u,gid=%u", (unsigned)uid, (unsigned)gid);
        if ((fuse ? rules->fuse.umask : rules->default_umask) && !have_umask)
                append(o, "umask=0022");
        if (fuse) {
                append(o, "allow_other,default_permissions");
                if (rules->fuse.fsname)
                        append(o, "fsname=%s", node);
        }
}

int mount_options_build(const char *fstype, const char *user_options, bool read_only, bool fuse, uid_t uid,
        gid_t gid, const char *node, char **ret_options, char **ret_bad)
{
        _cleanup_(user_options_done) UserOptions u = {};
        _cleanup_free_ char *out_buf = NULL;
        OptionsOut out = {};
        const FsRules *rules;
        int r;

        if (!fstype || !ret_options)
                return -EINVAL;
        rules = fs_rules_find(fstype);
        if (!rules || (fuse && rules->fuse.generic == 0))
                return -EPROTONOSUPPORT;
        if (fuse && rules->fuse.fsname && !node_valid_for_fsname(node))
                return fail_bad(ret_bad, "fsname", strlen("fsname"));

        if (!isempty(user_options)) {
                r = user_options_parse(rules, fuse, user_options, &u, ret_bad);
                if (r < 0)
                        return r;
        }

        if (u.want_ro || rules->read_only_fs || (fuse && rules->fuse.read_only))
                read_only = true;
        if (read_only && u.want_rw)
                return fail_bad(ret_bad, u.rw_item, strlen(u.rw_item));

        /* loopd's own options first; the caller's cannot contradict them (none of them is on the
         * allow-list), so their order does not matter for safety. */
        append_own_options(&out, rules, fuse, read_only, u.have_umask, uid, gid, node);
        for (size_t i = 0; i < u.n_accepted; i++) {
                const char *item = u.accepted[i].item;

                if (streq(item, "ro") || streq(item, "rw") || streq(item, "nosuid") || streq(item, "nodev"))
                        continue;
                append(&out, "%s", item);
        }
        out_buf = out.buf;
        if (out.error < 0)
                return out.error;

        *ret_options = TAKE_PTR(out_buf);
        return 0;
}

/* ---- userspace options ---- */

/* GVfs reads x-gvfs-name= with g_uri_unescape_segment() up to the next ','. */
static bool uri_unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '.' || c == '_' || c == '~';
}

int mount_userspace_options(const char *fstype, const char *name, char **ret)
{
        _cleanup_free_ char *safe = NULL, *text = NULL;
        bool optical = fstype && (streq(fstype, "iso9660") || streq(fstype, "udf"));
        const char *icon = optical ? "media-optical" : "drive-removable-media";
        size_t len = 0;
        FILE *f;

        if (!ret)
                return -EINVAL;
        /* A label is whatever the image's author wrote: valid UTF-8 without control or invisible
         * characters first, then nothing that could end the option or the utab line. */
        if (name && mount_name_sanitize(name, &safe) == -ENOMEM)
                return -ENOMEM;

        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        fputs("uhelper=loopd", f);
        if (safe) {
                fputs(",x-gvfs-name=", f);
                for (const unsigned char *p = (const unsigned char *)safe; *p; p++)
                        if (uri_unreserved(*p))
                                fputc(*p, f);
                        else
                                fprintf(f, "%%%02X", *p);
        }
        fprintf(f, ",x-gvfs-icon=%s,x-gvfs-symbolic-icon=%s-symbolic", icon, icon);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(text);
        return 0;
}
