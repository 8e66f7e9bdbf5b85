/* loop-detach.c: the loop suite's stale partitions, detach (busy, held open, mounted, locked by udev),
 * autoclear and partition scanning. */
#include "test-loop.h"

/* Waits up to 5 s until loopN is unbound (a detach by another tool while someone held the device only set
 * autoclear). */
static bool wait_unbound(unsigned number)
{
        g_autofree char *bound = g_strdup_printf("/sys/block/loop%u/loop", number);

        for (unsigned i = 0; i < 500 && g_file_test(bound, G_FILE_TEST_EXISTS); i++)
                g_usleep(10 * 1000);
        return !g_file_test(bound, G_FILE_TEST_EXISTS);
}

/* Leaves a stale partition 2 on a free loop device, as an earlier failed run would: bound with losetup, a
 * partition added with BLKPG (partx), unbound without partition scanning so the kernel keeps it. Returns the
 * device number. */
static unsigned make_stale_device(Fixture *f)
{
        g_autofree char *img = fixture_path(f, "stale.img");
        g_autofree char *out = NULL;
        unsigned number;

        image_create(img, 64 * MIB);
        /* p2 at 40-48 MiB: it overlaps the p2 of the image attached next. */
        image_sfdisk(img, "label: dos\nstart=2048, size=8MiB, type=L\nstart=40MiB, size=8MiB, type=L\n", 0);
        out = test_sh("set -e; dev=$(losetup --show --find '%s'); partx --add --nr 2 \"$dev\"; "
                      "losetup --detach \"$dev\"; echo \"$dev\"",
                img);
        g_assert_cmpint(loop_parse_name(g_strstrip(out), &number), ==, 0);

        /* With udevd probing it, losetup --detach may only have set autoclear: wait until it is free. */
        (void)wait_unbound(number);
        return number;
}

void test_stale_partition_cleaned(Fixture *f, gconstpointer data)
{
        gboolean scan = GPOINTER_TO_INT(data);

        REQUIRE_PRIVILEGES(f);

        /* Other processes attach devices too: the free device we made stale may be taken before we get it.
         * Try a few times; the test proves nothing unless loop_attach() got the stale one. */
        for (unsigned attempt = 0; attempt < 5; attempt++) {
                g_autofree char *img = g_strdup_printf("%s/fresh%u.img", f->dir, attempt);
                g_autofree char *stale_node = NULL, *stale_sys = NULL, *dev = NULL;
                g_autoptr(JsonNode) table = NULL;
                static const unsigned numbers[] = { 1, 2 };
                unsigned stale;
                LoopInfo *info;

                image_create(img, 96 * MIB);
                image_sfdisk(img, "label: gpt\nsize=32MiB, type=L\ntype=L\n", 0);
                table = oracle_sfdisk_json(img, 0);

                stale = make_stale_device(f);
                stale_node = g_strdup_printf("/dev/loop%up2", stale);
                stale_sys = g_strdup_printf("/sys/block/loop%u/loop%up2", stale, stale);
                if (!g_file_test(stale_sys, G_FILE_TEST_EXISTS)) {
                        g_test_message(
                                "loop%u kept no stale partition; the kernel drops them itself", stale);
                        isolated_skip(f, "cannot produce a stale partition on this kernel");
                        return;
                }
                g_assert_true(g_file_test(stale_node, G_FILE_TEST_EXISTS));

                info = attach_ok(img, (LoopConfig){ .partition_scan = scan });
                if (info->number != stale) {
                        g_test_message("got loop%u, not the stale loop%u; retrying", info->number, stale);
                        detach_ok(f, info);
                        /* Clean what we left (it is ours), unless someone bound the device since. */
                        (void)test_sh_status(NULL,
                                "losetup '/dev/loop%u' >/dev/null 2>&1 || partx --delete '/dev/loop%u'",
                                stale, stale);
                        continue;
                }
                if (scan)
                        assert_partitions_match_sfdisk(info, table, 512, numbers, 2);
                else {
                        /* Without partition scanning the device must carry nothing at all. */
                        g_autoptr(GPtrArray) nodes = NULL;
                        g_autofree KernelPartition *parts = NULL;
                        size_t n = 99;

                        dev = device_path(info);
                        nodes = oracle_partition_nodes(dev);
                        g_assert_cmpuint(nodes->len, ==, 0);
                        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
                        g_assert_cmpuint(n, ==, 0);
                }
                detach_ok(f, info);
                return;
        }
        isolated_incomplete(f, "never got the stale device back from LOOP_CTL_GET_FREE (busy machine)");
}

void test_detach_busy_and_stale(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *p1 = NULL;
        g_autofree KernelPartition *parts = NULL;
        size_t n = 0;
        LoopInfo *info;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "busy.img");
        image_create(img, 64 * MIB);
        image_sfdisk(img, "label: gpt\nsize=16MiB, type=L\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });

        /* A recycled number (another diskseq) is never touched. */
        g_assert_cmpint(loop_detach(info->number, info->diskseq + 1000), ==, -ESTALE);
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_clear_pointer(&parts, g_free);

        /* A partition held open exclusively (as a mount does): EBUSY, and nothing is touched, not even the
         * other partition, nor the autoclear flag. */
        p1 = g_strdup_printf("/dev/loop%up1", info->number);
        fd = open(p1, O_RDONLY | O_CLOEXEC | O_EXCL);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, -EBUSY);
        {
                g_autoptr(JsonObject) row = NULL;
                JsonObject *lo = losetup_of(info, &row);
                g_assert_false(json_u64(lo, "autoclear"));
        }
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_clear_pointer(&parts, g_free);
        close(fd);

        /* Held open, not exclusively: that partition stays, the other one goes, the device stays bound. */
        fd = open(p1, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, -EBUSY);
        g_assert_cmpint(partition_list_kernel(info->number, &parts, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(parts[0].number, ==, 1);
        close(fd);

        detach_ok(f, info);
}

void test_detach_mounted(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL, *mnt = NULL;
        g_autoptr(JsonObject) row = NULL;
        LoopInfo *info;
        int r;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "mounted.img");
        mnt = fixture_path(f, "mnt");
        image_create(img, 32 * MIB);
        g_free(image_mkfs_at(img, 0, 32 * MIB, "ext4", "mounted"));
        g_assert_cmpint(mkdir(mnt, 0700), ==, 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);
        g_free(test_sh("mount -t ext4 -o ro,nosuid,nodev,noload '%s' '%s'", dev, mnt));

        /* Mounted: EBUSY, the device stays bound, and its autoclear flag untouched (no half-detach). */
        r = loop_detach(info->number, info->diskseq);
        g_free(test_sh("umount '%s'", mnt));
        g_assert_cmpint(r, ==, -EBUSY);
        g_assert_false(json_u64(losetup_of(info, &row), "autoclear"));

        detach_ok(f, info);
}

void test_detach_waits_for_udev_lock(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        int pipefd[2], status;
        gint64 t0, elapsed;
        LoopInfo *info;
        char c;
        pid_t pid;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "locked.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        dev = device_path(info);

        /* A udevd worker probing the device: LOCK_SH on an open fd for a while (here 1 s). Detaching
         * meanwhile would only set autoclear; loop_detach() waits for the lock and then really unbinds. */
        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                int fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_SH) < 0)
                        _exit(1);
                (void)!write(pipefd[1], "x", 1);
                usleep(1000 * 1000);
                _exit(0);
        }
        close(pipefd[1]);
        g_assert_cmpint(read(pipefd[0], &c, 1), ==, 1);
        close(pipefd[0]);

        t0 = g_get_monotonic_time();
        g_assert_cmpint(loop_detach(info->number, info->diskseq), ==, 0);
        elapsed = g_get_monotonic_time() - t0;
        g_test_message("loop_detach waited %" G_GINT64_FORMAT " us for the lock", elapsed);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_detached(f, info->number, info->diskseq);
        loop_info_free(info);
}

void test_detach_blkpg_without_scan(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL, *bogus = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "blkpg.img");
        image_create(img, 64 * MIB);
        image_sfdisk(img, "label: dos\n,16MiB,L\n,,L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = false });
        dev = device_path(info);

        /* Partitions added behind the kernel's back (no partscan flag, so LOOP_CLR_FD would not drop them),
         * and a node devtmpfs never made: detach must leave neither. */
        g_free(test_sh("partx --add '%s'", dev));
        nodes = oracle_partition_nodes(dev);
        g_assert_cmpuint(nodes->len, ==, 2);
        bogus = g_strdup_printf("%sp9", dev);
        g_free(test_sh("mknod '%s' b 259 1048575", bogus));

        /* Look before asserting anything, so that a failure never leaves our bogus node behind. */
        {
                unsigned number = info->number;
                uint64_t diskseq = info->diskseq;
                int r = loop_detach(number, diskseq);
                gboolean left = g_file_test(bogus, G_FILE_TEST_EXISTS);

                if (left)
                        (void)unlink(bogus);
                g_assert_cmpint(r, ==, 0);
                g_assert_false(left);
                loop_info_free(info);
                assert_detached(f, number, diskseq);
        }
}

/* A node of a partition the device had, left behind after it was unbound behind loopd's back (a node
 * devtmpfs did not make, as loopd's own mknod() can leave): the next attach of that number removes it
 * without reading all of /dev (loop_remove_known_stale_partition_nodes()). */
void test_attach_removes_known_stale_node(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *other = NULL;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "known.img");
        image_create(img, 64 * MIB);
        image_sfdisk(img, "label: gpt\nsize=16MiB, type=L\ntype=L\n", 0);
        other = fixture_path(f, "plain.img");
        image_create(other, 16 * MIB);

        /* Other processes attach devices too: loop_attach() may not get the same number back. */
        for (unsigned attempt = 0; attempt < 5; attempt++) {
                g_autofree char *dev = NULL, *node = NULL;
                LoopInfo *info, *again;
                unsigned number;
                gboolean left;

                /* loopd's first look at the number, and partitions 1 and 2 listed. */
                info = attach_ok(img, (LoopConfig){ .partition_scan = true });
                number = info->number;
                dev = device_path(info);
                node = g_strdup_printf("%sp2", dev);
                loop_info_free(info);

                /* Unbound by someone else (the kernel drops the partitions, devtmpfs its nodes), then a node
                 * for partition 2 that devtmpfs did not make, with a device number nothing has. */
                g_free(test_sh("losetup --detach '%s'", dev));
                g_assert_true(wait_unbound(number));
                (void)unlink(node);
                g_free(test_sh("mknod '%s' b 259 1048574", node));

                again = attach_ok(other, (LoopConfig){ .partition_scan = false });
                left = g_file_test(node, G_FILE_TEST_EXISTS);
                if (left)
                        (void)unlink(node);
                if (again->number != number) {
                        g_test_message("got loop%u, not loop%u; retrying", again->number, number);
                        detach_ok(f, again);
                        continue;
                }
                g_assert_false(left);
                detach_ok(f, again);
                return;
        }
        isolated_incomplete(f, "never got the same device back from LOOP_CTL_GET_FREE (busy machine)");
}

void test_detach_held_open(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        LoopInfo *info;
        unsigned number;
        uint64_t diskseq;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "held.img");
        image_create(img, 16 * MIB);
        info = attach_ok(img, (LoopConfig){ .partition_scan = true });
        number = info->number;
        diskseq = info->diskseq;
        dev = device_path(info);

        /* Someone holds the whole device open: the kernel turns LOOP_CLR_FD into autoclear; loop_detach()
         * says EBUSY, and the device goes away once the holder closes it. */
        fd = open(dev, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_detach(number, diskseq), ==, -EBUSY);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 1);
        close(fd);
        g_clear_pointer(&ours, g_ptr_array_unref);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);
        loop_info_free(info);
        assert_detached(f, number, diskseq);
}

void test_autoclear(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) ours = NULL;
        g_autoptr(JsonObject) row = NULL;
        LoopInfo *info;
        int fd;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "autoclear.img");
        image_create(img, 16 * MIB);
        info = attach_ok(img, (LoopConfig){ 0 });
        dev = device_path(info);

        /* Still there after loop_attach() let go of it. */
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 1);
        g_assert_false(json_u64(losetup_of(info, &row), "autoclear"));

        /* Held (like a mount holds it), then marked: it goes away with the last close. */
        fd = open(dev, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(
                loop_set_autoclear(info->number, info->diskseq + 1000, true, ASK_TIMEOUT_USEC), ==, -ESTALE);
        g_assert_cmpint(loop_set_autoclear(info->number, info->diskseq, true, ASK_TIMEOUT_USEC), ==, 0);
        {
                g_autoptr(JsonObject) row2 = NULL;
                g_assert_true(json_u64(losetup_of(info, &row2), "autoclear"));
        }
        close(fd);
        g_clear_pointer(&ours, g_ptr_array_unref);
        ours = oracle_loops_backed_by(f->dir);
        g_assert_cmpuint(ours->len, ==, 0);
        assert_detached(f, info->number, info->diskseq);
        loop_info_free(info);
}

/* From loop64 on, loop_attach() tries the number loop_detach() freed last before LOOP_CTL_GET_FREE (which
 * walks every loop device up to the first free one): it gets that number back although lower ones are free;
 * where another tool bound the number meanwhile, it leaves that binding alone and takes another. The high
 * number is a device the test makes (LOOP_CTL_ADD) and removes again. */
void test_attach_reuses_freed_number(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *other = NULL, *out = NULL, *backing = NULL, *sys = NULL, *node = NULL;
        char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        LoopInfo *again = NULL, *elsewhere = NULL;
        unsigned high = 64;
        int ctl, watch, r;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "hint.img");
        other = fixture_path(f, "other.img");
        image_create(img, 4 * MIB);
        image_create(other, 4 * MIB);

        /* A number no device has yet, 64 or higher. */
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        g_assert_cmpint(ctl, >=, 0);
        for (; high < 4096; high++) {
                g_autofree char *dir = g_strdup_printf("/sys/block/loop%u", high);
                if (!g_file_test(dir, G_FILE_TEST_EXISTS) && ioctl(ctl, LOOP_CTL_ADD, high) == (int)high)
                        break;
        }
        g_assert_cmpuint(high, <, 4096);

        /* Bound by losetup, unbound by loop_detach(): GET_FREE would name a lower number. */
        out = test_sh("losetup /dev/loop%u '%s' && echo bound", high, img);
        g_assert_cmpstr(g_strstrip(out), ==, "bound");
        r = loop_detach(high, 0);
        if (r == -EBUSY) {
                isolated_incomplete(f, "someone held the device loop_detach() was to free");
                goto out;
        }
        g_assert_cmpint(r, ==, 0);
        again = attach_ok(img, (LoopConfig){ 0 });
        g_assert_cmpuint(again->number, ==, high);

        /* Freed by loop_detach() again, then bound by someone else before the next attach. */
        detach_ok(f, g_steal_pointer(&again));
        g_clear_pointer(&out, g_free);
        out = test_sh("losetup /dev/loop%u '%s' && echo bound", high, other);
        g_assert_cmpstr(g_strstrip(out), ==, "bound");
        /* Not even opened (sysfs said it is bound): an open would wait for whatever holds the device. */
        node = g_strdup_printf("/dev/loop%u", high);
        watch = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        g_assert_cmpint(watch, >=, 0);
        g_assert_cmpint(inotify_add_watch(watch, node, IN_OPEN), >=, 0);
        elsewhere = attach_ok(img, (LoopConfig){ 0 });
        g_assert_cmpuint(elsewhere->number, !=, high);
        g_assert_cmpint(read(watch, events, sizeof(events)), <, 0);
        g_assert_cmpint(errno, ==, EAGAIN);
        close(watch);
        sys = g_strdup_printf("/sys/block/loop%u/loop/backing_file", high);
        g_assert_true(g_file_get_contents(sys, &backing, NULL, NULL));
        g_assert_cmpstr(g_strstrip(backing), ==, other);
        detach_ok(f, g_steal_pointer(&elsewhere));

out:
        loop_info_free(again);
        (void)test_sh_status(NULL, "losetup --detach /dev/loop%u 2>/dev/null", high);
        g_assert_true(wait_unbound(high));
        g_assert_cmpint(ioctl(ctl, LOOP_CTL_REMOVE, high), ==, 0);
        close(ctl);
}

void test_no_partition_scan(Fixture *f, gconstpointer data)
{
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GPtrArray) nodes = NULL;
        g_autoptr(JsonObject) row = NULL;
        LoopInfo *info;

        REQUIRE_PRIVILEGES(f);
        img = fixture_path(f, "noscan.img");
        image_create(img, 32 * MIB);
        image_sfdisk(img, "label: gpt\ntype=L\n", 0);
        info = attach_ok(img, (LoopConfig){ .partition_scan = false });
        dev = device_path(info);
        nodes = oracle_partition_nodes(dev);
        g_assert_cmpuint(nodes->len, ==, 0);
        g_assert_false(info->partscan);
        g_assert_false(json_u64(losetup_of(info, &row), "partscan"));
        detach_ok(f, info);
}
