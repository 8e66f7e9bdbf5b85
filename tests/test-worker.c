/* test-worker.c: an image read in a worker, through the image reader and forked, gives image_probe()'s
 * answer; a device's contents probed in a reader's child give probe_loop_read()'s; the child is confined
 * before it reads anything; a reader that is gone leaves loopd forking its own workers until it forks the
 * reader again; the runner runs bounded. The sessions: worker-sessions.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image-reader-internal.h"
#include "image-reader.h"
#include "image.h"
#include "images.h"
#include "partition-info-assert.h"
#include "process-util.h"
#include "runner.h"
#include "sandbox-filter.h"
#include "test-worker.h"
#include "worker.h"

void on_answer(int result, const void *data, void *userdata)
{
        Answer *a = userdata;

        a->done = TRUE;
        a->result = result;
        if (data)
                memcpy(&a->probe, data, sizeof(a->probe));
}

/* Reads path through worker_start_probe() (reader may be NULL) and runs the loop until it answers. */
static Answer read_image(ImageReader *reader, const char *path, uint64_t offset)
{
        sd_event *event = NULL;
        Worker *w = NULL;
        Answer a = {};
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(sd_event_new(&event), >=, 0);
        g_assert_cmpint(worker_start_probe(event, reader, fd, offset, 0, 0, false, 10 * G_USEC_PER_SEC,
                                on_answer, &a, &w),
                ==, 0);
        while (!a.done)
                g_assert_cmpint(sd_event_run(event, UINT64_MAX), >=, 0);
        sd_event_unref(event);
        close(fd);
        return a;
}

static void assert_as_image_probe(const Answer *a, const char *path, uint64_t offset)
{
        ImageProbe want = {};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        int r;

        g_assert_cmpint(fd, >=, 0);
        r = image_probe(fd, offset, 0, &want);
        close(fd);
        g_assert_true(a->done);
        g_assert_cmpint(a->result, ==, r);
        g_assert_cmpuint(a->probe.sector_size, ==, want.sector_size);
        g_assert_cmpstr(a->probe.format, ==, want.format);
        g_assert_cmpint(a->probe.verdict, ==, want.verdict);
}

/* The images: a GPT one with 4096-byte sectors (the answer is not the default) and a qcow2 (a format). */
char *tmpdir;
static char *gpt4k, *qcow2;

static void make_images(void)
{
        tmpdir = test_tmpdir_new();
        gpt4k = g_build_filename(tmpdir, "gpt4k.img", NULL);
        image_create(gpt4k, 16 << 20);
        image_sfdisk(gpt4k, "label: gpt\n,\n", 4096);
        qcow2 = g_build_filename(tmpdir, "disk.qcow2", NULL);
        g_free(test_sh("qemu-img create -q -f qcow2 '%s' 64M", qcow2));
}

/* The child of this process whose comm is name (the helpers name themselves soon after they start): its
 * pid, 0 when none shows within 2 s. */
pid_t child_named(const char *name)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d/children", getpid(), getpid());

        for (int tries = 0; tries < 200; tries++) {
                g_autofree char *children = NULL;
                g_auto(GStrv) pids = NULL;

                g_assert_true(g_file_get_contents(path, &children, NULL, NULL));
                pids = g_strsplit(g_strstrip(children), " ", -1);
                for (char **p = pids; *p && **p; p++) {
                        g_autofree char *comm_path = g_strdup_printf("/proc/%s/comm", *p);
                        g_autofree char *comm = NULL;
                        if (g_file_get_contents(comm_path, &comm, NULL, NULL) &&
                                g_str_equal(g_strstrip(comm), name))
                                return (pid_t)atoi(*p);
                }
                g_usleep(10000);
        }
        return 0;
}

/* A new reader, and its pid. */
static ImageReader *reader_start(pid_t *ret_pid)
{
        ImageReader *reader = NULL;

        g_assert_cmpint(image_reader_new(IMAGE_READER_TIMEOUT_USEC, &reader), ==, 0);
        *ret_pid = child_named("loopd-reader");
        g_assert_cmpint(*ret_pid, >, 0);
        return reader;
}

static void test_reader_answers_as_image_probe(void)
{
        Answer a;
        pid_t pid;
        ImageReader *reader = reader_start(&pid);

        a = read_image(reader, gpt4k, 0);
        assert_as_image_probe(&a, gpt4k, 0);
        g_assert_cmpuint(a.probe.sector_size, ==, 4096);
        a = read_image(reader, qcow2, 0);
        assert_as_image_probe(&a, qcow2, 0);
        g_assert_cmpstr(a.probe.format, ==, "qcow2");
        /* At an offset: the GPT is no longer at the start. */
        a = read_image(reader, gpt4k, 4096);
        assert_as_image_probe(&a, gpt4k, 4096);
        /* One after the other: the reader keeps a child waiting for each. */
        for (int i = 0; i < 20; i++) {
                a = read_image(reader, gpt4k, 0);
                g_assert_cmpint(a.result, ==, 0);
                g_assert_cmpuint(a.probe.sector_size, ==, 4096);
        }
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

static void test_forked_worker_answers_as_image_probe(void)
{
        Answer a = read_image(NULL, gpt4k, 0);

        assert_as_image_probe(&a, gpt4k, 0);
        a = read_image(NULL, qcow2, 0);
        assert_as_image_probe(&a, qcow2, 0);
}

static void test_reader_gone_is_forked_again(void)
{
        Answer a;
        pid_t pid, again;
        ImageReader *reader = reader_start(&pid);

        g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
        /* Its waiting child goes with it (PR_SET_PDEATHSIG); the reads that find it gone are forked instead,
         * and answer; the first that finds its socket closed forks a reader again, which answers the next.
         */
        for (int i = 0; i < 4; i++) {
                a = read_image(reader, gpt4k, 0);
                assert_as_image_probe(&a, gpt4k, 0);
        }
        again = child_named("loopd-reader");
        g_assert_cmpint(again, >, 0);
        g_assert_cmpint(again, !=, pid);

        /* Gone again within READER_RESTART_MS: forked reads, not a reader a request. */
        g_assert_cmpint(kill(again, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(again, NULL, 0), ==, again);
        for (int i = 0; i < 3; i++) {
                a = read_image(reader, gpt4k, 0);
                assert_as_image_probe(&a, gpt4k, 0);
        }
        g_assert_cmpint(child_named("loopd-reader"), ==, 0);
        g_assert_cmpint(image_reader_submit(reader, 0, 0, 0, 0, false, &(int){ -1 }), ==, -EPIPE);
        image_reader_free(reader);
}

/* The first child of pid that /proc lists. */
static pid_t child_of(pid_t pid)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d/children", pid, pid);

        for (int tries = 0; tries < 200; tries++) {
                g_autofree char *children = NULL;
                if (g_file_get_contents(path, &children, NULL, NULL) && atoi(children) > 0)
                        return (pid_t)atoi(children);
                g_usleep(10000);
        }
        return 0;
}

/* The soft limit named name in /proc/PID/limits ("unlimited" or a number). */
static char *proc_limit(pid_t pid, const char *name)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/limits", pid), *text = NULL;
        g_auto(GStrv) lines = NULL;

        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, name)) {
                        g_auto(GStrv) words = g_strsplit_set(*l + strlen(name), " ", -1);
                        for (char **w = words; *w; w++)
                                if (**w)
                                        return g_strdup(*w);
                }
        g_assert_not_reached();
}

/* The child a reader keeps waiting has let go of everything before it takes a request: what it will read
 * is a caller's, and libblkid's parsers run on it. */
static void test_reader_child_is_confined(void)
{
        pid_t pid, child;
        ImageReader *reader = reader_start(&pid);
        g_autofree char *nnp = NULL, *seccomp = NULL, *uid = NULL, *gid = NULL, *capeff = NULL,
                        *capprm = NULL, *groups = NULL, *data = NULL, *fsize = NULL, *nproc = NULL;

        child = child_of(pid);
        g_assert_cmpint(child, >, 0);
        /* Root, the reader carries the sandboxes' filter itself, on any of its parent's (the test's); each
         * child adds the reader's own rules. */
        g_autofree char *own_filters = test_proc_status(getpid(), "Seccomp_filters");
        g_autofree char *reader_filters = test_proc_status(pid, "Seccomp_filters");
        g_autofree char *want_filters = NULL;
        g_assert_nonnull(own_filters);
        g_assert_nonnull(reader_filters);
        if (geteuid() == 0)
                g_assert_cmpint(atoi(reader_filters), ==, atoi(own_filters) + 1);
        want_filters = g_strdup_printf("%d", atoi(reader_filters) + 1);
        /* Seccomp is the last step: once the child's own filter shows, it is as it will read. */
        for (int tries = 0; tries < 200; tries++) {
                g_free(seccomp);
                seccomp = test_proc_status(child, "Seccomp_filters");
                if (seccomp && g_str_equal(seccomp, want_filters))
                        break;
                g_usleep(10000);
        }
        g_assert_cmpstr(seccomp, ==, want_filters);
        g_free(seccomp);
        seccomp = test_proc_status(child, "Seccomp");
        g_assert_cmpstr(seccomp, ==, "2");
        nnp = test_proc_status(child, "NoNewPrivs");
        g_assert_cmpstr(nnp, ==, "1");
        capeff = test_proc_status(child, "CapEff");
        capprm = test_proc_status(child, "CapPrm");
        g_assert_cmpstr(capeff, ==, "0000000000000000");
        g_assert_cmpstr(capprm, ==, "0000000000000000");
        if (geteuid() == 0) {
                /* 0x7a720000: real, effective, saved and filesystem ids; no supplementary group. */
                uid = test_proc_status(child, "Uid");
                gid = test_proc_status(child, "Gid");
                groups = test_proc_status(child, "Groups");
                g_assert_cmpstr(uid, ==, "2054291456\t2054291456\t2054291456\t2054291456");
                g_assert_cmpstr(gid, ==, "2054291456\t2054291456\t2054291456\t2054291456");
                g_assert_cmpstr(groups, ==, "");
        }
        data = proc_limit(child, "Max data size");
        fsize = proc_limit(child, "Max file size");
        nproc = proc_limit(child, "Max processes");
        g_assert_cmpstr(data, !=, "unlimited");
        g_assert_cmpstr(fsize, ==, "0");
        g_assert_cmpstr(nproc, ==, "0");
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

/* Confines the calling process as a child forked without a reader is (the whole filter), or, stacked, as
 * the reader's children are: the sandboxes' filter loaded first, as the reader loads it on itself, then
 * the reader's own rules. */
static int confine_as_child(bool stacked)
{
        const struct sock_fprog *base;
        ReaderLimits limits = {};
        int r;

        if (!stacked)
                return image_reader_confine();
        r = sandbox_filter_get(SANDBOX_FILTER_PROGRAM, &base);
        if (r < 0)
                return r;
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, base) < 0)
                return -errno;
        r = reader_limits_for_child(true, &limits);
        return r < 0 ? r : reader_child_confine(&limits, getppid());
}

/* What a confined child tries, one exit status each: 0 when every attempt was refused. */
static int try_to_get_out(const char *dir, bool stacked)
{
        g_autofree char *file = g_build_filename(dir, "written", NULL);
        g_autofree char *sub = g_build_filename(dir, "made", NULL);
        char target[64];
        ssize_t k;

        if (confine_as_child(stacked) < 0)
                return 10;
        if (kill(getppid(), 0) == 0 || errno != EPERM)
                return 11; /* no signal to anyone, not even a probe */
        if (open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) >= 0)
                return 12;
        if (open("/dev/null", O_RDWR | O_CLOEXEC) >= 0)
                return 13; /* nothing opened for writing */
        if (mkdir(sub, 0700) == 0 || mknodat(AT_FDCWD, sub, S_IFIFO | 0600, 0) == 0)
                return 14;
        if (flock(0, LOCK_EX | LOCK_NB) == 0)
                return 15;
        if (ioctl(0, 0x4c01 /* LOOP_CLR_FD */) == 0 || errno != EPERM)
                return 16;
        if (fork() >= 0)
                return 17;
        if (socket(AF_UNIX, SOCK_STREAM, 0) >= 0)
                return 18;
        /* Its stdout and stderr are /dev/null, not the test's (or loopd's journal). */
        k = readlink("/proc/self/fd/2", target, sizeof(target) - 1);
        if (k < 0 || (target[k] = 0, strcmp(target, "/dev/null") != 0))
                return 19;
        return 0;
}

/* A process confined as the reader's children are can signal nobody, write, make or lock nothing, detach
 * no loop device, start no process and open no socket. */
static void test_confined_child_can_do_nothing(void)
{
        g_autofree char *written = g_build_filename(tmpdir, "written", NULL);

        /* Stacked (the reader's children) only where the reader can load a filter on itself: as root. */
        for (int stacked = 0; stacked < (geteuid() == 0 ? 2 : 1); stacked++) {
                int status;
                pid_t pid = fork();

                g_assert_cmpint(pid, >=, 0);
                if (pid == 0)
                        _exit(try_to_get_out(tmpdir, stacked));
                g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
                g_assert_true(WIFEXITED(status));
                g_assert_cmpint(WEXITSTATUS(status), ==, 0);
                g_assert_false(g_file_test(written, G_FILE_TEST_EXISTS));
        }
}

/* A GPT disk (a regular file stands in for the device: the child reads only the fds it gets) with a named
 * ext4 partition and a named empty one, and a whole-disk ext4. */
static void assert_reader_probes_as_here(
        const char *path, const KernelPartition *parts, size_t n_parts, const char *name, const char *label)
{
        PartitionInfo *here = NULL, *there = NULL;
        size_t n_here = 0, n_there = 0;
        pid_t pid;
        ImageReader *reader = reader_start(&pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        LoopProbeArea a = {
                .loop_number = 99990,
                .devnum = makedev(7, 99990),
                .disk_fd = fd,
                .size = (uint64_t)st.st_size,
                .sector_size = 512,
                .image_fd = -EBADF,
                .parts = (KernelPartition *)parts,
                .n_parts = n_parts,
        };
        g_assert_cmpint(probe_loop_read(&a, &here, &n_here), ==, 0);
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &there, &n_there), ==, 0);
        g_assert_cmpuint(n_there, >, 0);
        assert_partition_infos_equal(there, n_there, here, n_here);
        g_assert_cmpstr(there[0].part_name, ==, name);
        g_assert_cmpstr(there[0].label, ==, label);
        g_assert_cmpstr(there[0].fstype, ==, "ext4");
        /* The same child answers the image too, read first. */
        partition_info_array_free(there, n_there);
        a.image_fd = fd;
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &there, &n_there), ==, 0);
        g_assert_cmpuint(n_there, ==, n_here);
        for (size_t i = 0; i < n_here; i++)
                g_assert_cmpstr(there[i].label, ==, here[i].label);
        /* Without a reader: a child forked for the probe answers the same. */
        partition_info_array_free(there, n_there);
        g_assert_cmpint(image_reader_probe_loop(NULL, &a, &there, &n_there), ==, 0);
        g_assert_cmpuint(n_there, ==, n_here);
        for (size_t i = 0; i < n_here; i++) {
                g_assert_cmpstr(there[i].part_name, ==, here[i].part_name);
                g_assert_cmpstr(there[i].label, ==, here[i].label);
        }
        partition_info_array_free(here, n_here);
        partition_info_array_free(there, n_there);
        close(fd);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

static void test_reader_probes_a_device_as_loopd_would(void)
{
        g_autofree char *disk = g_build_filename(tmpdir, "named.img", NULL);
        g_autofree char *whole = g_build_filename(tmpdir, "whole.img", NULL);
        const KernelPartition parts[] = {
                { .number = 1, .start = 2048 * 512, .size = 8192 * 512, .devnum = makedev(259, 1) },
                { .number = 2, .start = 10240 * 512, .size = 8192 * 512, .devnum = makedev(259, 2) },
        };

        image_create(disk, 16 << 20);
        image_sfdisk(
                disk, "label: gpt\nstart=2048,size=8192,name=alpha\nstart=10240,size=8192,name=beta\n", 512);
        g_free(image_mkfs_at(disk, 2048 * 512, 8192 * 512, "ext4", "photos"));
        assert_reader_probes_as_here(disk, parts, G_N_ELEMENTS(parts), "alpha", "photos");

        image_create(whole, 8 << 20);
        g_free(image_mkfs_at(whole, 0, 8 << 20, "ext4", "whole"));
        assert_reader_probes_as_here(whole, NULL, 0, "", "whole");
}

/* The partitions BLKPG gets, planned in the reader's child and in a forked one, are partition_plan()'s. */
static void test_reader_plans_as_loopd_would(void)
{
        g_autofree char *disk = g_build_filename(tmpdir, "plan.img", NULL);
        PartitionSpec *here = NULL, *there = NULL;
        size_t n_here = 0, n_there = 0;
        pid_t pid;
        ImageReader *reader = reader_start(&pid);
        int fd;

        image_create(disk, 16 << 20);
        image_sfdisk(disk, "label: dos\nstart=2048,size=8192\nstart=10240,size=8192,type=c\n", 512);
        fd = open(disk, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(partition_plan(fd, 512, 16 << 20, &here, &n_here), ==, 0);
        g_assert_cmpuint(n_here, ==, 2);
        g_assert_cmpuint(here[1].number, ==, 2);
        g_assert_cmpuint(here[1].start, ==, 10240 * 512);
        g_assert_cmpuint(here[1].length, ==, 8192 * 512);
        for (int forked = 0; forked < 2; forked++) {
                g_assert_cmpint(image_reader_plan_partitions(forked ? NULL : reader, fd, 512, 16 << 20,
                                        -EBADF, 0, &there, &n_there),
                        ==, 0);
                g_assert_cmpuint(n_there, ==, n_here);
                for (size_t i = 0; i < n_here; i++) {
                        g_assert_cmpuint(there[i].number, ==, here[i].number);
                        g_assert_cmpuint(there[i].start, ==, here[i].start);
                        g_assert_cmpuint(there[i].length, ==, here[i].length);
                }
                free(there);
                there = NULL;
        }
        /* An empty device (a file that shrank below the offset) has no table: to libblkid a size of 0
         * would be the whole file. Nor does one past what libblkid's signed offsets reach. */
        g_assert_cmpint(partition_plan_at(fd, 16 << 20, 512, 0, &there, &n_there), ==, 0);
        g_assert_cmpuint(n_there, ==, 0);
        g_assert_cmpint(partition_plan_at(fd, 0, 512, 0, &there, &n_there), ==, 0);
        g_assert_cmpuint(n_there, ==, 0);
        g_assert_cmpint(partition_plan_at(fd, UINT64_C(1) << 63, 512, 512, &there, &n_there), ==, -EINVAL);
        /* A device smaller than the table says: the plan is cut to it, and what the child answers is
         * checked against that size. */
        g_assert_cmpint(
                image_reader_plan_partitions(reader, fd, 512, 8 << 20, -EBADF, 0, &there, &n_there), ==, 0);
        for (size_t i = 0; i < n_there; i++)
                g_assert_cmpuint(there[i].start + there[i].length, <=, 8 << 20);
        free(there);
        free(here);
        close(fd);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

/* A table change runs in a confined child: the answers are partition-table.h's, a refusal's reason comes
 * through as it was given, and the child writes through no fd but a device's (a regular file it is handed
 * stays as it was: RLIMIT_FSIZE). */
static void test_reader_edits_tables_confined(void)
{
        g_autofree char *dos = g_build_filename(tmpdir, "table-dos.img", NULL);
        g_autofree char *blank = g_build_filename(tmpdir, "table-blank.img", NULL);
        g_autofree char *hostile = g_build_filename(tmpdir, "table-hostile.img", NULL);
        const PartitionRequest guid = { .type = "0fc63daf-8483-4772-8e79-3d7de47d7d47" };
        const PartitionRequest full = { .offset = 2048 * 512 };
        uint8_t header[92] = { 'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T' };
        uint32_t entries = 1u << 20, entry_size = 128;
        PartitionTableKind kind;
        pid_t pid;
        ImageReader *reader = reader_start(&pid);
        int fd, blank_fd, hostile_fd;

        image_create(dos, 16 << 20);
        image_sfdisk(dos, "label: dos\nstart=2048,size=8192\n", 512);
        fd = open(dos, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        image_create(blank, 8 << 20);
        blank_fd = open(blank, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(blank_fd, >=, 0);
        image_create(hostile, 8 << 20);
        memcpy(header + 80, &entries, 4); /* little-endian host, as the test machines are */
        memcpy(header + 84, &entry_size, 4);
        hostile_fd = open(hostile, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(hostile_fd, >=, 0);
        g_assert_cmpint(pwrite(hostile_fd, header, sizeof(header), 512), ==, (ssize_t)sizeof(header));

        for (int forked = 0; forked < 2; forked++) {
                ImageReader *r = forked ? NULL : reader;
                g_autofree char *here = NULL, *there = NULL;
                g_autofree char *sum_before = test_sh("sha256sum < '%s'", dos), *sum_after = NULL;
                TablePartition p = { .number = 99 };

                g_assert_cmpint(image_reader_table_delete(r, fd, 0, 1, true), ==, 0);
                g_assert_cmpint(image_reader_table_delete(r, fd, 0, 2, true), ==, -ENOENT);
                g_assert_cmpint(partition_table_add(fd, 0, &guid, NULL, &here), ==, -EINVAL);
                g_assert_cmpint(image_reader_table_add(r, fd, 0, &guid, &p, &there), ==, -EINVAL);
                g_assert_nonnull(there);
                g_assert_cmpstr(there, ==, here);
                g_assert_cmpuint(p.number, ==, 99);
                g_free(there);
                there = NULL;
                g_assert_cmpint(image_reader_table_add(r, fd, 0, &full, &p, &there), ==, -EINVAL);
                g_assert_nonnull(strstr(there, "offset: "));
                g_free(there);
                there = NULL;
                sum_after = test_sh("sha256sum < '%s'", dos);
                g_assert_cmpstr(sum_after, ==, sum_before);

                /* In this process the file takes a table; in the child it cannot be written. */
                g_assert_cmpint(image_reader_table_create(r, blank_fd, 0, "gpt"), ==, -EFBIG);
                g_assert_cmpint(partition_table_read(blank_fd, 0, &kind, NULL, NULL), ==, 0);
                g_assert_cmpint(kind, ==, PARTITION_TABLE_NONE);
                g_assert_cmpint(image_reader_table_delete(r, blank_fd, 0, 1, true), ==, -EMEDIUMTYPE);

                /* A header that asks libfdisk for a 128 MiB array is refused in the child too. */
                g_assert_cmpint(image_reader_table_delete(r, hostile_fd, 0, 1, true), ==, -EFBIG);
                g_assert_cmpint(image_reader_table_add(r, hostile_fd, 0, &full, NULL, &there), ==, -EFBIG);
                g_assert_nonnull(strstr(there, "GPT header"));
        }
        g_assert_cmpint(image_reader_table_create(reader, fd, 0, "bsd"), ==, -EINVAL);
        g_assert_cmpint(image_reader_table_create(reader, fd, 1000, "gpt"), ==, -EINVAL);
        g_assert_cmpint(partition_table_create(blank_fd, "gpt"), ==, 0);
        close(fd);
        close(blank_fd);
        close(hostile_fd);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

/* What a table change's child answers, as it sends it (why_len: the bytes of why sent, its NUL included
 * unless cut short), read back as loopd reads it on a 16 MiB device of 512-byte sectors. */
static int table_answer(const TableAnswer *a, size_t why_len, TablePartition *ret, char **ret_why)
{
        int pair[2], r;

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), ==, 0);
        g_assert_cmpint(send(pair[1], a, offsetof(TableAnswer, why) + why_len, 0), ==,
                (ssize_t)(offsetof(TableAnswer, why) + why_len));
        *ret_why = NULL;
        r = reader_table_answer_read(pair[0], 512, 16 << 20, now_ms() + 5000, ret, ret_why);
        close(pair[0]);
        close(pair[1]);
        return r;
}

/* A compromised child's answer to a table change is refused unless it is whole and what loopd allows: a
 * partition numbered 1 to 256 that lies on the device, on its sectors; a result that is an errno; a
 * reason that ends where the message does, and reaches the caller escaped. */
static void test_table_answer_is_checked(void)
{
        const TableAnswer ok = { .number = 2, .offset = 1 << 20, .size = 1 << 20 };
        TablePartition p = {};
        TableAnswer a;
        char *why = NULL;

        g_assert_cmpint(table_answer(&ok, 1, &p, &why), ==, 0);
        g_assert_cmpuint(p.number, ==, 2);
        g_assert_cmpuint(p.offset, ==, 1 << 20);
        g_assert_cmpuint(p.size, ==, 1 << 20);

        const struct {
                uint32_t number;
                uint64_t offset, size;
        } bad[] = {
                { 0, 1 << 20, 1 << 20 }, /* no such number */
                { 257, 1 << 20, 1 << 20 }, { 1, 16 << 20, 512 }, /* past the end */
                { 1, 15 << 20, 2 << 20 }, { 1, 1000, 1 << 20 }, /* not on a sector */
                { 1, 1 << 20, 1000 }, { 1, 1 << 20, 0 },
                { 1, 1 << 20, UINT64_MAX - 511 }, /* offset + size wraps */
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                a = (TableAnswer){ .number = bad[i].number, .offset = bad[i].offset, .size = bad[i].size };
                g_assert_cmpint(table_answer(&a, 1, &p, &why), ==, -EBADMSG);
        }

        a = (TableAnswer){ .result = 1 };
        g_assert_cmpint(table_answer(&a, 1, &p, &why), ==, -EBADMSG);
        a = (TableAnswer){ .result = -5000 };
        g_assert_cmpint(table_answer(&a, 1, &p, &why), ==, -EBADMSG);
        a = (TableAnswer){ .result = -EINVAL };
        memcpy(a.why, "offset: no", 10); /* no NUL: the message ends inside the reason */
        g_assert_cmpint(table_answer(&a, 10, &p, &why), ==, -EBADMSG);
        memcpy(a.why, "offset\0no", 10); /* a NUL inside it */
        a.why[10] = 0;
        g_assert_cmpint(table_answer(&a, 11, &p, &why), ==, -EBADMSG);
        g_assert_cmpint(table_answer(&a, 0, &p, &why), ==, -EIO); /* cut before the reason */

        /* A refusal's reason: control characters and bytes that are not UTF-8 escaped. */
        a = (TableAnswer){ .result = -ENOSPC };
        strcpy(a.why, "size: \033[31mred\n\xff");
        g_assert_cmpint(table_answer(&a, strlen(a.why) + 1, &p, &why), ==, -ENOSPC);
        g_assert_nonnull(why);
        g_assert_true(g_utf8_validate(why, -1, NULL));
        for (const char *c = why; *c; c++)
                g_assert_cmpint((unsigned char)*c, >=, 0x20);
        g_assert_nonnull(strstr(why, "size: "));
        free(why);
}

/* How many children pid has now. */
size_t children_of(pid_t pid)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d/children", pid, pid), *text = NULL;
        g_auto(GStrv) pids = NULL;

        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        pids = g_strsplit(g_strstrip(text), " ", -1);
        return pids[0] && *pids[0] ? g_strv_length(pids) : 0;
}

/* Waits until pid has n children; false if it does not within 2 s. */
gboolean children_become(pid_t pid, size_t n)
{
        for (int tries = 0; tries < 200; tries++) {
                if (children_of(pid) == n)
                        return TRUE;
                g_usleep(10000);
        }
        return FALSE;
}

static void touch(const char *dir, const char *name)
{
        g_autofree char *path = g_build_filename(dir, name, NULL);

        g_assert_true(g_file_set_contents(path, "", 0, NULL));
}

static gboolean exists_within(const char *dir, const char *name, guint ms)
{
        g_autofree char *path = g_build_filename(dir, name, NULL);

        for (guint waited = 0; waited < ms; waited += 10, g_usleep(10000))
                if (g_file_test(path, G_FILE_TEST_EXISTS))
                        return TRUE;
        return g_file_test(path, G_FILE_TEST_EXISTS);
}

/* The op and undo of the runner tests. The request is "WHAT DIR": WHAT a number of milliseconds to sleep
 * before the op leaves "done" in DIR and returns 0, a negative number to return at once, or "die" (the child
 * exits without a result). undo leaves "undone". */
static int test_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        g_autofree char *text = g_strndup(request, size);
        g_auto(GStrv) words = g_strsplit(text, " ", 2);
        int ms = atoi(words[0]);

        if (g_str_equal(words[0], "die"))
                _exit(EXIT_FAILURE);
        /* "fd DIR": write "done" through the fd that came with the request, the child's copy. */
        if (g_str_equal(words[0], "fd"))
                return n_fds == 1 && write(fds[0], "done", 4) == 4 ? 0 : -EBADF;
        if (ms < 0)
                return ms;
        g_usleep((gulong)ms * 1000);
        touch(words[1], "done");
        return 0;
}

static void test_undo(const void *request, size_t size, const int *fds, size_t n_fds)
{
        g_autofree char *text = g_strndup(request, size);
        g_auto(GStrv) words = g_strsplit(text, " ", 2);

        touch(words[1], "undone");
}

/* A second op: writes "second" through the second of its two fds (the table has more than one op, and
 * a request's fds come in their order). */
static int second_op(const void *request, size_t size, const int *fds, size_t n_fds)
{
        return n_fds == 2 && write(fds[1], "second", 6) == 6 ? 0 : -EBADF;
}

static const RunnerOps test_ops = { .op = test_op, .undo = test_undo };
static const RunnerOps second_ops = { .op = second_op, .undo = test_undo };
static const RunnerOps *const test_table[] = { &second_ops, &test_ops };
/* Not in the table. */
static const RunnerOps stray_ops = { .op = test_op, .undo = test_undo };

/* request (with fd unless negative) through runner (NULL: forked for it), deadline in ms from now. */
static int run_fd(Runner *runner, const char *request, int fd, int64_t ms, int *ret_pending)
{
        size_t n_fds = fd >= 0 ? 1 : 0;

        if (runner)
                return runner_run(
                        runner, &test_ops, request, strlen(request), &fd, n_fds, now_ms() + ms, ret_pending);
        return runner_run_forked(
                &test_ops, request, strlen(request), &fd, n_fds, now_ms() + ms, ret_pending);
}

static int run(Runner *runner, const char *request, int64_t ms, int *ret_pending)
{
        return run_fd(runner, request, -1, ms, ret_pending);
}

/* What kernel mounts and unmounts run in, through runner or forked (runner NULL): op's result in time; past
 * the deadline -ETIMEDOUT, and the child undoes what it finishes once nobody waits for it any more, then
 * exits (the pending fd reads the end); a child that dies answers -EIO. */
static void assert_runs_bounded(Runner *runner, const char *dir)
{
        g_autofree char *quick = g_strdup_printf("0 %s", dir), *slow = g_strdup_printf("300 %s", dir);
        g_autofree char *dies = g_strdup_printf("die %s", dir), *fails = g_strdup_printf("-13 %s", dir);
        g_autofree char *done = g_build_filename(dir, "done", NULL);
        g_autofree char *undone = g_build_filename(dir, "undone", NULL);
        int pending = -1;
        char c;

        g_assert_cmpint(run(runner, quick, 10000, &pending), ==, 0);
        g_assert_cmpint(pending, <, 0);
        g_assert_true(exists_within(dir, "done", 0));
        g_assert_cmpint(run(runner, fails, 10000, NULL), ==, -EACCES);
        g_assert_cmpint(run(runner, dies, 10000, NULL), ==, -EIO);
        g_assert_false(exists_within(dir, "undone", 200));
        g_assert_cmpint(runner ? runner_run(runner, &test_ops, quick, 0, NULL, 0, now_ms() + 10000, NULL)
                               : runner_run_forked(&test_ops, quick, 0, NULL, 0, now_ms() + 10000, NULL),
                ==, -E2BIG);

        /* An fd that comes with the request: the child writes through its copy. */
        {
                g_autofree char *path = g_build_filename(dir, "through-fd", NULL), *got = NULL;
                g_autofree char *request = g_strdup_printf("fd %s", dir);
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(run_fd(runner, request, fd, 10000, NULL), ==, 0);
                close(fd);
                g_assert_true(g_file_get_contents(path, &got, NULL, NULL));
                g_assert_cmpstr(got, ==, "done");
                g_assert_cmpint(g_remove(path), ==, 0);
        }

        g_assert_cmpint(g_remove(done), ==, 0);
        g_assert_cmpint(run(runner, slow, 50, &pending), ==, -ETIMEDOUT);
        g_assert_cmpint(pending, >=, 0);
        g_assert_true(exists_within(dir, "undone", 5000));
        g_assert_true(exists_within(dir, "done", 0));
        /* Its child exits once it has undone: the pending fd reads the end (its result dropped first). */
        g_assert_true(g_poll(&(GPollFD){ .fd = pending, .events = G_IO_HUP }, 1, 5000) == 1);
        while (read(pending, &c, 1) > 0)
                ;
        close(pending);
        g_assert_cmpint(g_remove(done), ==, 0);
        g_assert_cmpint(g_remove(undone), ==, 0);
}

static void test_forked_runs_bounded(void)
{
        g_autofree char *dir = g_build_filename(tmpdir, "forked", NULL);

        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        assert_runs_bounded(NULL, dir);
        /* The children left behind are this process's to reap (loopd's SIGCHLD handler does it there). */
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
}

/* The same through the runner's children; once the runner is gone, -EPIPE (the caller forks for itself). */
/* The runner's child that waits for the next request (it has one once the runner has forked it). */
static pid_t runner_waiting_child(pid_t runner)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d/children", runner, runner);
        g_autofree char *children = NULL;

        g_assert_true(children_become(runner, 1));
        g_assert_true(g_file_get_contents(path, &children, NULL, NULL));
        return (pid_t)atoi(children);
}

static gpointer kill_later(gpointer data)
{
        g_usleep(200 * 1000);
        g_assert_cmpint(kill(GPOINTER_TO_INT(data), SIGKILL), ==, 0);
        return NULL;
}

static void test_runner_runs_bounded(void)
{
        g_autofree char *dir = g_build_filename(tmpdir, "runner", NULL);
        g_autofree char *quick = g_strdup_printf("0 %s", dir);
        Runner *runner = NULL;
        pid_t pid, waiting;
        int pending = -1;
        char c;

        g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
        g_assert_cmpint(runner_new(test_table, ELEMENTSOF(test_table), &runner), ==, 0);
        pid = child_named("loopd-runner");
        g_assert_cmpint(pid, >, 0);
        /* The table's other op, with two fds in their order; an op the table does not have is refused. */
        {
                g_autofree char *path = g_build_filename(dir, "second", NULL), *got = NULL;
                int fds[2] = { open("/dev/null", O_WRONLY | O_CLOEXEC),
                        open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) };

                g_assert_cmpint(fds[0], >=, 0);
                g_assert_cmpint(fds[1], >=, 0);
                g_assert_cmpint(runner_run(runner, &second_ops, quick, strlen(quick), fds, 2,
                                        now_ms() + 10000, NULL),
                        ==, 0);
                g_assert_cmpint(runner_run(runner, &stray_ops, quick, strlen(quick), NULL, 0,
                                        now_ms() + 10000, NULL),
                        ==, -EINVAL);
                close(fds[0]);
                close(fds[1]);
                g_assert_true(g_file_get_contents(path, &got, NULL, NULL));
                g_assert_cmpstr(got, ==, "second");
                g_assert_cmpint(g_remove(path), ==, 0);
        }

        assert_runs_bounded(runner, dir);

        /* A request still in the queue at its deadline (the waiting child stopped) is never run. */
        waiting = runner_waiting_child(pid);
        g_assert_cmpint(kill(waiting, SIGSTOP), ==, 0);
        g_assert_cmpint(run(runner, quick, 100, &pending), ==, -ETIMEDOUT);
        g_assert_cmpint(kill(waiting, SIGCONT), ==, 0);
        g_assert_true(g_poll(&(GPollFD){ .fd = pending, .events = G_IO_HUP }, 1, 5000) == 1);
        while (read(pending, &c, 1) > 0)
                ;
        close(pending);
        g_assert_false(exists_within(dir, "done", 200));

        /* The runner dies with a request in its queue (its waiting child killed): the request was not run,
         * -EPIPE (loopd forks for it), and so is every later one. */
        waiting = runner_waiting_child(pid);
        g_assert_cmpint(kill(waiting, SIGSTOP), ==, 0);
        GThread *killer = g_thread_new("kill-later", kill_later, GINT_TO_POINTER(waiting));
        g_assert_cmpint(run(runner, quick, 10000, NULL), ==, -EPIPE);
        g_thread_join(killer);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
        g_assert_false(exists_within(dir, "done", 200));
        g_assert_cmpint(run(runner, quick, 10000, NULL), ==, -EPIPE);
        g_assert_cmpint(runner_run(NULL, &test_ops, quick, strlen(quick), NULL, 0, now_ms() + 10000, NULL),
                ==, -EPIPE);
        runner_free(runner);
}

static void test_reader_exits_when_freed(void)
{
        pid_t pid;
        ImageReader *reader = reader_start(&pid);

        image_reader_free(reader);
        /* Its waiting child sees the end of the requests and exits, and then the reader. */
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        make_images();

        g_test_add_func("/worker/reader/answers-as-image-probe", test_reader_answers_as_image_probe);
        g_test_add_func("/worker/forked/answers-as-image-probe", test_forked_worker_answers_as_image_probe);
        g_test_add_func("/worker/reader/gone-forked-again", test_reader_gone_is_forked_again);
        g_test_add_func("/worker/reader/exits-when-freed", test_reader_exits_when_freed);
        g_test_add_func("/worker/reader/child-is-confined", test_reader_child_is_confined);
        g_test_add_func("/worker/reader/confined-child-can-do-nothing", test_confined_child_can_do_nothing);
        g_test_add_func("/worker/reader/plans-as-loopd-would", test_reader_plans_as_loopd_would);
        g_test_add_func("/worker/reader/session-serves-an-attach", test_reader_session_serves_an_attach);
        g_test_add_func("/worker/reader/session-reads-ahead", test_reader_session_reads_ahead);
        g_test_add_func("/worker/reader/session-child-dies-ahead", test_reader_session_child_dies_ahead);
        g_test_add_func("/worker/reader/edits-tables-confined", test_reader_edits_tables_confined);
        g_test_add_func("/worker/reader/table-answer-is-checked", test_table_answer_is_checked);
        g_test_add_func("/worker/forked/runs-bounded", test_forked_runs_bounded);
        g_test_add_func("/worker/runner/runs-bounded", test_runner_runs_bounded);
        g_test_add_func(
                "/worker/reader/probes-a-device-as-loopd-would", test_reader_probes_a_device_as_loopd_would);

        r = g_test_run();
        test_tmpdir_remove(tmpdir);
        return r;
}
