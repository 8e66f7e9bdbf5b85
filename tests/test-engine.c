/* test-engine.c: the engine's operations (attach, detach, mount, unmount, open an image) driven directly,
 * without a bus or polkit, against the real kernel: what the D-Bus face calls once it has parsed and
 * authorized a call. Expected values come from the kernel (sysfs, the mount table), never from loopd. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "test-engine.h"

static void recorded_free(gpointer p)
{
        Recorded *r = p;

        g_free(r->node);
        g_free(r->mount_point);
        g_free(r);
}

static void record_change(const Change *change, void *userdata)
{
        Fixture *f = userdata;
        Recorded *r = g_new0(Recorded, 1);

        r->kind = change->kind;
        r->number = change->number;
        r->partition = change->partition;
        r->node = g_strdup(change->node);
        r->mount_point = g_strdup(change->mount_point);
        g_ptr_array_add(f->changes, r);
}

void fixture_setup(Fixture *f, gconstpointer data)
{
        const unsigned *max_devices = data;

        f->changes = g_ptr_array_new_with_free_func(recorded_free);
        if (!scratch_setup(&f->scratch))
                return;
        g_assert_cmpint(manager_new(&f->manager), ==, 0);
        g_free(f->manager->state_dir);
        g_free(f->manager->media_dir);
        f->manager->state_dir = g_build_filename(f->scratch.dir, "state", NULL);
        f->manager->media_dir = g_build_filename(f->scratch.dir, "media", NULL);
        g_assert_cmpint(mkdir(f->manager->state_dir, 0755), ==, 0);
        g_assert_cmpint(mkdir(f->manager->media_dir, 0755), ==, 0);
        if (max_devices)
                f->manager->max_devices_per_user = *max_devices;
        f->manager->on_change = record_change;
        f->manager->on_change_userdata = f;
        g_assert_cmpint(manager_start(f->manager), ==, 0);
        /* What the watcher found at start (other loop devices of this machine) is not the tests' business.
         */
        g_ptr_array_set_size(f->changes, 0);
}

void fixture_teardown(Fixture *f, gconstpointer data)
{
        /* Whatever a failed test left is noted and taken down before the manager lets go of the devices'
         * locks (an autoclear device would go with them, and its leak unseen). */
        scratch_clean(&f->scratch);
        manager_free(f->manager);
        scratch_teardown(&f->scratch);
        g_ptr_array_unref(f->changes);
}

void image_open(Image *img, const char *path, int flags)
{
        img->fd = open(path, flags | O_CLOEXEC);
        g_assert_cmpint(img->fd, >=, 0);
        g_assert_cmpint(fstat(img->fd, &img->st), ==, 0);
        img->probe_result = image_probe(img->fd, 0, 0, &img->probe);
}

static char *gpt_two_ext4(Fixture *f, const char *name)
{
        char *path = g_build_filename(f->scratch.dir, name, NULL);

        image_create(path, 64 * MiB);
        image_sfdisk(path, "label: gpt\nstart=2048, size=30MiB, type=linux\ntype=linux\n", 0);
        g_free(image_mkfs_at(path, 1 * MiB, 30 * MiB, "ext4", "ENGONE"));
        g_free(image_mkfs_at(path, 31 * MiB, 32 * MiB, "ext4", "ENGTWO"));
        return path;
}

bool bound_to(unsigned number, const char *path)
{
        g_autofree char *backing = test_read_sysfs("/sys/block/loop%u/loop/backing_file", number);
        return backing && g_str_equal(backing, path);
}

/* One column of the first mount findmnt finds by option ("--mountpoint", "--source") and value, as it reads
 * the kernel's table (NULL: none). */
static char *findmnt_column(const char *column, const char *option, const char *value)
{
        g_autofree char *quoted = g_shell_quote(value);
        g_autofree char *out = NULL;

        if (test_sh_status(&out, "findmnt -n --first-only -o %s %s %s", column, option, quoted) != 0)
                return NULL;
        return g_strdup(g_strstrip(out));
}

static char *mount_source(const char *target)
{
        return findmnt_column("SOURCE", "--mountpoint", target);
}

/* The mount point of node (NULL: not mounted). */
char *mount_target(const char *node)
{
        return findmnt_column("TARGET", "--source", node);
}

/* The change of kind reported since the list was last emptied: for number (devices), number and partition
 * (partitions), or node and mount point (mounts). */
const Recorded *find_change(Fixture *f, ChangeKind kind, unsigned number, unsigned partition,
        const char *node, const char *mount_point)
{
        for (guint i = 0; i < f->changes->len; i++) {
                const Recorded *r = f->changes->pdata[i];

                if (r->kind != kind)
                        continue;
                if ((kind == CHANGE_MOUNTED || kind == CHANGE_UNMOUNTED)
                                ? g_strcmp0(r->node, node) == 0 &&
                                        g_strcmp0(r->mount_point, mount_point) == 0
                                : r->number == number && r->partition == partition)
                        return r;
        }
        return NULL;
}

/* Attaches path (opened read-write, partitions scanned) for uid as the face would, after its worker read the
 * image; NULL when the engine refused (the test has failed then). */
LoopInfo *attach_as(Fixture *f, const char *path, uid_t uid)
{
        AttachRequest req = { .partition_scan = true };
        LoopInfo *info = NULL;
        EngineError e = {};
        Image img;

        image_open(&img, path, O_RDWR);
        g_assert_cmpint(engine_attach(f->manager, img.fd, &req, &img.st, uid, img.probe_result, &img.probe,
                                &info, &e),
                ==, 0);
        close(img.fd);
        return info;
}

/* attach_as() for uid 0, and partition 1's node and its stat. */
static LoopInfo *attach_with_p1(Fixture *f, const char *path, char **ret_node, struct stat *ret_st)
{
        LoopInfo *info = attach_as(f, path, 0);

        if (!info)
                return NULL;
        *ret_node = g_strdup_printf("/dev/loop%up1", info->number);
        g_assert_cmpint(stat(*ret_node, ret_st), ==, 0);
        return info;
}

/* Attach binds the image with its partitions and records the owner; detach unbinds it and forgets him. */
static void test_attach_detach(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autoptr(GPtrArray) nodes = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};

        info = attach_as(f, path, 1234);
        if (!info)
                return;
        g_autofree char *device = g_strdup_printf("/dev/loop%u", info->number);
        g_assert_true(bound_to(info->number, path));
        nodes = oracle_partition_nodes(device);
        g_assert_cmpuint(nodes->len, ==, 2);
        ManagedDevice *d = registry_find_device(f->manager->registry, info->number, info->diskseq);
        g_assert_nonnull(d);
        if (d)
                g_assert_cmpuint(d->owner, ==, 1234);
        g_assert_cmpuint(registry_count_devices_of(f->manager->registry, 1234), ==, 1);

        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        g_assert_false(bound_to(info->number, path));
        g_assert_null(registry_find_device(f->manager->registry, info->number, info->diskseq));
        g_autoptr(GPtrArray) after = oracle_partition_nodes(device);
        g_assert_cmpuint(after->len, ==, 0);
        loop_info_free(info);
}

/* The engine says why, in the contract's terms: a qcow2 image, an ambiguous sector size, the limit. */
static void test_attach_refusals(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *raw = g_build_filename(f->scratch.dir, "a.img", NULL);
        g_autofree char *qcow = g_build_filename(f->scratch.dir, "vm.qcow2", NULL);
        g_autofree char *quoted = g_shell_quote(qcow);
        LoopInfo *info = NULL, *second = NULL;
        EngineError e = {};
        Image img, img2, q;

        g_free(test_sh("qemu-img create -q -f qcow2 %s 16M", quoted));
        image_open(&q, qcow, O_RDONLY);
        AttachRequest ro = { .read_only = true, .partition_scan = true };
        g_assert_cmpint(
                engine_attach(f->manager, q.fd, &ro, &q.st, 1234, q.probe_result, &q.probe, &info, &e), <,
                0);
        g_assert_cmpint(e.kind, ==, ENGINE_UNSUPPORTED_FORMAT);
        g_assert_nonnull(strstr(e.message, "qcow2"));
        g_assert_null(info);
        close(q.fd);

        /* max_devices_per_user is 1 in this test (the fixture's data). */
        image_create(raw, 8 * MiB);
        image_open(&img, raw, O_RDWR);
        image_open(&img2, raw, O_RDONLY);
        AttachRequest req = { .partition_scan = true };
        g_assert_cmpint(engine_attach(f->manager, img.fd, &req, &img.st, 1234, img.probe_result, &img.probe,
                                &info, &e),
                ==, 0);
        memset(&e, 0, sizeof(e));
        g_assert_cmpint(engine_attach(f->manager, img2.fd, &ro, &img2.st, 1234, img2.probe_result,
                                &img2.probe, &second, &e),
                <, 0);
        g_assert_cmpint(e.kind, ==, ENGINE_LIMIT_EXCEEDED);
        g_assert_null(second);
        /* Root has no limit. */
        g_assert_cmpint(engine_attach(f->manager, img2.fd, &ro, &img2.st, 0, img2.probe_result, &img2.probe,
                                &second, &e),
                ==, 0);
        close(img.fd);
        close(img2.fd);
        if (info)
                g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        if (second)
                g_assert_cmpint(engine_detach(f->manager, second, false, &e), ==, 0);
        loop_info_free(info);
        loop_info_free(second);
}

/* Mount for a user: under the media dir, named after the label; Detach is refused (Busy, naming the mount
 * point) until the unmount option or an unmount; unmount removes the mount point. */
static void test_mount_unmount(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autofree char *mount_point = NULL, *source = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};

        g_autofree char *node = NULL;
        struct stat st;
        info = attach_with_p1(f, path, &node, &st);
        if (!info)
                return;

        g_assert_cmpint(
                engine_mount_node(f->manager, 0, node, st.st_rdev, NULL, NULL, false, &mount_point, &e), ==,
                0);
        g_assert_nonnull(mount_point);
        if (!mount_point)
                goto out;
        g_assert_true(g_str_has_prefix(mount_point, f->manager->media_dir));
        g_assert_true(g_str_has_suffix(mount_point, "/ENGONE"));
        source = mount_source(mount_point);
        g_assert_cmpstr(source, ==, node);

        /* Mounted twice: AlreadyMounted. */
        g_autofree char *again = NULL;
        g_assert_cmpint(
                engine_mount_node(f->manager, 0, node, st.st_rdev, NULL, NULL, false, &again, &e), <, 0);
        g_assert_cmpint(e.kind, ==, ENGINE_ALREADY_MOUNTED);

        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, -EBUSY);
        g_assert_cmpint(e.kind, ==, ENGINE_BUSY);
        g_assert_nonnull(strstr(e.message, mount_point));
        g_assert_true(bound_to(info->number, path));

        g_assert_cmpint(engine_unmount(f->manager, info->number, mount_point, &e), ==, 0);
        g_autofree char *gone = mount_source(mount_point);
        g_assert_null(gone);
        g_assert_false(g_file_test(mount_point, G_FILE_TEST_EXISTS));
        /* Not attached with autoclear: the device stays after its last unmount. */
        g_assert_true(bound_to(info->number, path));
out:
        g_assert_cmpint(engine_detach(f->manager, info, true, &e), ==, 0);
        g_assert_false(bound_to(info->number, path));
        loop_info_free(info);
}

/* Mounts source (fstype, flags, data) on a new directory name in the scratch dir; NULL after failing the
 * test. */
static char *mount_in_scratch(Fixture *f, const char *source, const char *fstype, unsigned long flags,
        const char *data, const char *name)
{
        g_autofree char *target = g_build_filename(f->scratch.dir, name, NULL);

        g_assert_cmpint(mkdir(target, 0755), ==, 0);
        if (mount(source, target, fstype, flags, data) < 0) {
                g_test_fail_printf("mount %s %s on %s: %s", fstype, source, target, g_strerror(errno));
                return NULL;
        }
        return g_steal_pointer(&target);
}

/* Detach is refused while target is mounted: Busy, naming it, and the device stays bound. */
static void assert_detach_busy(Fixture *f, const LoopInfo *info, const char *path, const char *target)
{
        EngineError e = {};

        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, -EBUSY);
        g_assert_cmpint(e.kind, ==, ENGINE_BUSY);
        g_assert_nonnull(strstr(e.message, target));
        g_assert_true(bound_to(info->number, path));
}

/* Unmounts target (if not NULL), then Detach must succeed; frees info. */
static void unmount_and_detach(Fixture *f, LoopInfo *info, const char *path, const char *target)
{
        EngineError e = {};

        if (target)
                g_assert_cmpint(umount(target), ==, 0);
        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        g_assert_false(bound_to(info->number, path));
        loop_info_free(info);
}

/* A mount the watcher cannot name as a loop device's (mount(2) given a symlink to the partition, as a tool
 * that does not resolve it would), made and read by the watcher before Detach: Detach still sees that the
 * partition is claimed, reads the mount table, and is refused naming the mount point. */
static void test_detach_mounted_under_other_name(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autofree char *node = NULL, *link = g_build_filename(f->scratch.dir, "part-link", NULL),
                        *target = NULL;
        LoopInfo *info;
        struct stat st;

        info = attach_with_p1(f, path, &node, &st);
        if (!info)
                return;
        g_assert_cmpint(symlink(node, link), ==, 0);
        target = mount_in_scratch(f, link, "ext4", MS_NOSUID | MS_NODEV | MS_RDONLY, NULL, "by-link");
        if (target) {
                /* The watcher has read the change and cannot name the mount: only the claim shows it. */
                watcher_update_mounts(f->manager->watcher);
                g_assert_false(watcher_may_have_mounts(f->manager->watcher, info->number));
                assert_detach_busy(f, info, path, target);
        }
        unmount_and_detach(f, info, path, target);
}

/* Mounts that claim nothing (a tmpfs whose source is /dev/loopN: the mount table counts it as the device's,
 * as it would a FUSE mount): Detach is Busy naming it, both before the watcher has read the change and
 * after. */
static void test_detach_unclaimed_mount_is_busy(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autofree char *node = NULL, *target = NULL;
        char disk[LOOP_NODE_MAX];
        LoopInfo *info;
        struct stat st;

        info = attach_with_p1(f, path, &node, &st);
        if (!info)
                return;
        target = mount_in_scratch(f, loop_node_format(disk, info->number, 0), "tmpfs", MS_NOSUID | MS_NODEV,
                "size=64k", "tmpfs");
        if (target) {
                g_assert_false(loop_is_claimed(info->number));
                /* The change not read yet. */
                assert_detach_busy(f, info, path, target);
                /* Read: the watcher knows the mount. */
                watcher_update_mounts(f->manager->watcher);
                g_assert_true(watcher_may_have_mounts(f->manager->watcher, info->number));
                assert_detach_busy(f, info, path, target);
        }
        unmount_and_detach(f, info, path, target);
}

/* A node someone made for a partition that never existed (mknod /dev/loopNp9) after loopd's look at /dev for
 * that number: Detach removes it, told of it by the watcher's inotify on /dev, not by reading all of /dev.
 */
static void test_detach_removes_node_made_since(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autofree char *node = NULL, *bogus = NULL, *far = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};
        struct stat st;
        bool left, left_far;

        info = attach_with_p1(f, path, &node, &st);
        if (!info)
                return;
        /* The names made in /dev are followed, and loopN was looked at: Detach will not read all of /dev. */
        g_assert_true(partition_nodes_catch_up());
        g_assert_cmpint(partition_nodes_highest(info->number), ==, 2);
        /* One within the table's reach, one past it (that number is then looked at in full). */
        bogus = g_strdup_printf("/dev/loop%up9", info->number);
        far = g_strdup_printf("/dev/loop%up300", info->number);
        g_assert_cmpint(mknod(bogus, S_IFBLK | 0600, makedev(259, 1048575)), ==, 0);
        g_assert_cmpint(mknod(far, S_IFBLK | 0600, makedev(259, 1048574)), ==, 0);

        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        /* Looked at before asserting anything, so that a failure never leaves the nodes behind. */
        left = g_file_test(bogus, G_FILE_TEST_EXISTS);
        left_far = g_file_test(far, G_FILE_TEST_EXISTS);
        if (left)
                (void)unlink(bogus);
        if (left_far)
                (void)unlink(far);
        g_assert_false(left);
        g_assert_false(left_far);
        g_assert_false(bound_to(info->number, path));
        loop_info_free(info);
}

/* Opening an image mounts every filesystem on it; the device goes with its last unmount. */
static void test_open_image(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        MountedNode *mounts = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};
        size_t n = 0;
        Image img;

        image_open(&img, path, O_RDONLY);
        AttachRequest req = { .read_only = true, .partition_scan = true, .autoclear = true };
        g_assert_cmpint(engine_open_image(f->manager, img.fd, &req, &img.st, 0, img.probe_result, &img.probe,
                                &info, &mounts, &n, &e),
                ==, 0);
        close(img.fd);
        if (!info)
                return;
        g_assert_cmpuint(n, ==, 2);
        for (size_t i = 0; i < n; i++) {
                g_autofree char *source = mount_source(mounts[i].mount_point);
                g_assert_cmpstr(source, ==, mounts[i].node);
        }
        unsigned number = info->number;
        for (size_t i = 0; i < n; i++)
                g_assert_cmpint(engine_unmount(f->manager, number, mounts[i].mount_point, &e), ==, 0);
        g_assert_false(bound_to(number, path));
        g_assert_null(registry_find_device(f->manager->registry, number, info->diskseq));
        mounted_nodes_free(mounts, n);
        loop_info_free(info);
}

/* An image with nothing to mount is detached again: NothingToMount, nothing left. */
static void test_open_nothing_to_mount(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = g_build_filename(f->scratch.dir, "empty.img", NULL);
        MountedNode *mounts = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};
        size_t n = 0;
        Image img;

        image_create(path, 8 * MiB);
        image_open(&img, path, O_RDONLY);
        AttachRequest req = { .read_only = true, .partition_scan = true, .autoclear = true };
        g_assert_cmpint(engine_open_image(f->manager, img.fd, &req, &img.st, 0, img.probe_result, &img.probe,
                                &info, &mounts, &n, &e),
                <, 0);
        close(img.fd);
        g_assert_cmpint(e.kind, ==, ENGINE_NOTHING_TO_MOUNT);
        g_assert_null(info);
        g_autoptr(GPtrArray) left = oracle_loops_backed_by(f->scratch.dir);
        g_assert_cmpuint(left->len, ==, 0);
}

/* Attach and detach bring the watcher's table up to date and report what changed before they return: the
 * device with its backing file, owner and partitions (fstype and label as mkfs wrote them, as blkid reads
 * the kernel's nodes), then its removal. No event loop runs in this test: whatever was reported, was
 * reported before the call returned. */
static void test_attach_detach_changes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        static const char *const labels[] = { "ENGONE", "ENGTWO" };
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        LoopInfo *info = NULL;
        EngineError e = {};

        g_ptr_array_set_size(f->changes, 0);
        info = attach_as(f, path, 1234);
        if (!info)
                return;
        unsigned number = info->number;
        uint64_t diskseq = info->diskseq;
        g_assert_true(bound_to(number, path));

        const LoopInfo *seen = watcher_device(f->manager->watcher, number);
        g_assert_nonnull(seen);
        if (seen)
                g_assert_cmpstr(seen->backing_file, ==, path);
        g_assert_nonnull(find_change(f, CHANGE_DEVICE_ADDED, number, 0, NULL, NULL));
        for (unsigned p = 1; p <= 2; p++)
                g_assert_nonnull(find_change(f, CHANGE_PARTITION_ADDED, number, p, NULL, NULL));
        ManagedDevice *d = registry_find_device(f->manager->registry, number, diskseq);
        g_assert_nonnull(d);
        if (d)
                g_assert_cmpuint(d->owner, ==, 1234);

        size_t n = 0;
        const PartitionInfo *parts = watcher_device_partitions(f->manager->watcher, number, &n);
        g_assert_nonnull(parts);
        g_assert_cmpuint(n, ==, 2);
        for (size_t i = 0; parts && i < n && i < 2; i++) {
                g_autofree char *node = g_strdup_printf("/dev/loop%up%zu", number, i + 1);
                g_autoptr(GHashTable) blkid = oracle_blkid(node, 0);

                g_assert_cmpuint(parts[i].number, ==, i + 1);
                g_assert_cmpstr(parts[i].node, ==, node);
                g_assert_cmpstr(parts[i].fstype, ==, "ext4");
                g_assert_cmpstr(parts[i].label, ==, labels[i]);
                g_assert_cmpstr(parts[i].fstype, ==, g_hash_table_lookup(blkid, "TYPE"));
                g_assert_cmpstr(parts[i].label, ==, g_hash_table_lookup(blkid, "LABEL"));
                g_assert_cmpstr(parts[i].uuid, ==, g_hash_table_lookup(blkid, "UUID"));
        }

        g_ptr_array_set_size(f->changes, 0);
        g_assert_cmpint(engine_detach(f->manager, info, false, &e), ==, 0);
        g_assert_false(bound_to(number, path));
        g_assert_nonnull(find_change(f, CHANGE_DEVICE_REMOVED, number, 0, NULL, NULL));
        g_assert_null(watcher_device(f->manager->watcher, number));
        g_assert_null(registry_find_device(f->manager->registry, number, diskseq));
        loop_info_free(info);
}

/* Mount and unmount report Mounted / Unmounted for the node and its mount point before they return, and the
 * watcher's mount table says what findmnt says. */
static void test_mount_unmount_changes(Fixture *f, gconstpointer data)
{
        REQUIRE(f);
        g_autofree char *path = gpt_two_ext4(f, "disk.img");
        g_autofree char *mount_point = NULL;
        LoopInfo *info = NULL;
        EngineError e = {};

        g_autofree char *node = NULL;
        struct stat st;
        info = attach_with_p1(f, path, &node, &st);
        if (!info)
                return;
        g_assert_null(watcher_mount_point(f->manager->watcher, node));

        g_ptr_array_set_size(f->changes, 0);
        g_assert_cmpint(
                engine_mount_node(f->manager, 0, node, st.st_rdev, NULL, NULL, false, &mount_point, &e), ==,
                0);
        g_assert_nonnull(mount_point);
        if (!mount_point)
                goto out;
        g_autofree char *target = mount_target(node);
        g_assert_cmpstr(target, ==, mount_point);
        g_assert_nonnull(find_change(f, CHANGE_MOUNTED, 0, 0, node, mount_point));
        g_assert_cmpstr(watcher_mount_point(f->manager->watcher, node), ==, target);

        g_ptr_array_set_size(f->changes, 0);
        g_assert_cmpint(engine_unmount(f->manager, info->number, mount_point, &e), ==, 0);
        g_autofree char *gone = mount_target(node);
        g_assert_null(gone);
        g_assert_nonnull(find_change(f, CHANGE_UNMOUNTED, 0, 0, node, mount_point));
        g_assert_null(watcher_mount_point(f->manager->watcher, node));
out:
        g_assert_cmpint(engine_detach(f->manager, info, true, &e), ==, 0);
        g_assert_false(bound_to(info->number, path));
        loop_info_free(info);
}

int main(int argc, char **argv)
{
        static const unsigned one_device = 1;

        g_test_init(&argc, &argv, NULL);
        g_test_set_nonfatal_assertions();

        TEST("/loopd/engine/attach-detach", test_attach_detach, NULL);
        TEST("/loopd/engine/attach-refusals-say-why", test_attach_refusals, &one_device);
        TEST("/loopd/engine/mount-unmount-and-busy-detach", test_mount_unmount, NULL);
        TEST("/loopd/engine/detach-mounted-under-another-name-is-busy", test_detach_mounted_under_other_name,
                NULL);
        TEST("/loopd/engine/detach-with-an-unclaimed-mount-is-busy", test_detach_unclaimed_mount_is_busy,
                NULL);
        TEST("/loopd/engine/detach-removes-a-node-made-since", test_detach_removes_node_made_since, NULL);
        TEST("/loopd/engine/open-image-mounts-everything", test_open_image, NULL);
        TEST("/loopd/engine/open-image-nothing-to-mount", test_open_nothing_to_mount, NULL);
        TEST("/loopd/engine/attach-detach-report-changes-before-returning", test_attach_detach_changes,
                NULL);
        TEST("/loopd/engine/mount-unmount-report-changes-before-returning", test_mount_unmount_changes,
                NULL);
        engine_table_add_tests();
        return g_test_run();
}
