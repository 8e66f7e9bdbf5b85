/* fuzz-mount-options.c: mount_options_build(), the caller's comma list checked against the allow-list and
 * turned into the options a mount really gets. Whatever the input, the result must be safe: nosuid and
 * nodev, nothing off the allow-list, no smuggled uid=/gid=/errors=, no contradiction.
 * Input: 1 byte filesystem, 1 byte flags (read-only, fuse), then the option string. */
#include <errno.h>
#include <string.h>

#include "fuzz-util.h"
#include "mount.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fstypes[] = { "ext2", "ext3", "ext4", "xfs", "btrfs", "squashfs", "erofs", "vfat",
        "exfat", "ntfs", "iso9660", "udf", "tmpfs", "fuse", "" };

/* The allow-list of mount.h, restated: every key a result may hold. */
static const char *const allowed_keys[] = { "nosuid", "nodev", "ro", "rw", "noexec", "exec", "noatime",
        "relatime", "nodiratime", "lazytime", "sync", "dirsync", "nosymfollow", "errors", "uid", "gid",
        "umask", "dmask", "fmask", "shortname", "utf8", "iocharset", "codepage", "flush", "norock",
        "nojoliet", "subvol", "subvolid", "compress", "noload", "norecovery", "rescue", "allow_other",
        "default_permissions", "fsname", NULL };

static bool in_list(const char *s, size_t len, const char *const *list)
{
        for (const char *const *l = list; *l; l++)
                if (strlen(*l) == len && strncmp(*l, s, len) == 0)
                        return true;
        return false;
}

static bool has_item(const char *options, const char *item)
{
        size_t n = strlen(item);

        for (const char *p = options; p;) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                if (len == n && strncmp(p, item, n) == 0)
                        return true;
                p = comma ? comma + 1 : NULL;
        }
        return false;
}

static void check_result(const char *fstype, const char *options, bool read_only, bool fuse, uid_t uid,
        gid_t gid, const char *node)
{
        char uid_item[32], gid_item[32];
        bool ext = strncmp(fstype, "ext", 3) == 0;

        snprintf(uid_item, sizeof(uid_item), "uid=%u", (unsigned)uid);
        snprintf(gid_item, sizeof(gid_item), "gid=%u", (unsigned)gid);
        fuzz_check(
                has_item(options, "nosuid") && has_item(options, "nodev"), "no nosuid,nodev: %s", options);
        fuzz_check(!has_item(options, "suid") && !has_item(options, "dev"), "suid or dev: %s", options);
        fuzz_check(!(has_item(options, "ro") && has_item(options, "rw")), "ro and rw: %s", options);
        fuzz_check(
                !(has_item(options, "exec") && has_item(options, "noexec")), "exec and noexec: %s", options);
        if (read_only)
                fuzz_check(
                        has_item(options, "ro") && !has_item(options, "rw"), "read-only but: %s", options);
        if (ext && !fuse)
                fuzz_check(has_item(options, "errors=remount-ro"), "ext without errors=remount-ro: %s",
                        options);

        for (const char *p = options; *p; p++)
                fuzz_check((unsigned char)*p >= 0x20 && *p != 0x7f && !strchr("\"'\\", *p),
                        "byte 0x%02x in %s", (unsigned char)*p, options);

        for (const char *p = options; p;) {
                const char *comma = strchr(p, ','), *eq;
                size_t len = comma ? (size_t)(comma - p) : strlen(p), key_len;

                fuzz_check(len > 0, "empty item in %s", options);
                eq = memchr(p, '=', len);
                key_len = eq ? (size_t)(eq - p) : len;
                fuzz_check(
                        in_list(p, key_len, allowed_keys), "item '%.*s' is off the allow-list", (int)len, p);
                if (key_len == 3 && strncmp(p, "uid", 3) == 0)
                        fuzz_check(len == strlen(uid_item) && strncmp(p, uid_item, len) == 0, "%.*s",
                                (int)len, p);
                if (key_len == 3 && strncmp(p, "gid", 3) == 0)
                        fuzz_check(len == strlen(gid_item) && strncmp(p, gid_item, len) == 0, "%.*s",
                                (int)len, p);
                if (key_len == 6 && strncmp(p, "errors", 6) == 0)
                        fuzz_check(
                                len == 17 && strncmp(p, "errors=remount-ro", 17) == 0, "%.*s", (int)len, p);
                if (key_len == 6 && strncmp(p, "rescue", 6) == 0)
                        fuzz_check(
                                len == 18 && strncmp(p, "rescue=nologreplay", 18) == 0, "%.*s", (int)len, p);
                if (key_len == 6 && strncmp(p, "fsname", 6) == 0)
                        fuzz_check(fuse && len == 7 + strlen(node) && strncmp(p + 7, node, len - 7) == 0,
                                "%.*s", (int)len, p);
                /* No item twice. */
                for (const char *q = comma ? comma + 1 : NULL; q;) {
                        const char *c2 = strchr(q, ',');
                        size_t l2 = c2 ? (size_t)(c2 - q) : strlen(q);
                        fuzz_check(!(l2 == len && strncmp(p, q, len) == 0), "'%.*s' twice in %s", (int)len,
                                p, options);
                        q = c2 ? c2 + 1 : NULL;
                }
                p = comma ? comma + 1 : NULL;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *fstype, *node = "/dev/loop7p1";
        char *user_options, *options = NULL, *bad = NULL;
        bool read_only, fuse;
        uid_t uid = 1000;
        gid_t gid = 1001;
        int r;

        if (size < 2)
                return 0;
        fstype = fstypes[data[0] % (sizeof(fstypes) / sizeof(fstypes[0]))];
        read_only = data[1] & 1;
        fuse = data[1] & 2;
        if (data[1] & 4)
                node = "/dev/loop7p1,allow_other"; /* a node that cannot be an fsname */
        user_options = fuzz_strndup(data + 2, size - 2);

        r = mount_options_build(
                fstype, data[1] & 8 ? NULL : user_options, read_only, fuse, uid, gid, node, &options, &bad);
        if (r == 0) {
                fuzz_check(options && !bad, "success with bad set");
                check_result(fstype, options, read_only, fuse, uid, gid, node);
                fuzz_check(strlen(options) <= strlen(user_options) + 256, "options grew: %s", options);
        } else if (r == -EINVAL) {
                fuzz_check(bad && !options, "-EINVAL without naming the bad item");
                /* At most 64 characters of the item, each at most 4 bytes (\xNN), and "..." if cut. */
                fuzz_check(strlen(bad) <= 64 * 4 + 8, "bad item of %zu bytes", strlen(bad));
                for (const char *p = bad; *p; p++)
                        fuzz_check(*p >= 0x20 && *p < 0x7f, "unprintable byte in the bad item");
        } else
                fuzz_check(r == -EPROTONOSUPPORT && !options, "mount_options_build() returned %d", r);

        free(options);
        free(bad);
        free(user_options);
        return 0;
}
