/* worker-sessions.c: a reader's child parked after it read an image answers the questions that follow about
 * the device bound to it, and what it reads ahead for that device is taken only for that device, as far as
 * it came whole. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image-reader-internal.h"
#include "image-reader.h"
#include "images.h"
#include "test-worker.h"
#include "worker.h"

/* An Attach's session: the child that read the image is parked, answers the bound device's plan and first
 * probe without a fork, and goes after the probe; one that nobody asks goes when its time is up. */
/* A reader (timeout_usec) and the session an Attach starts: the image on fd read, as Attach does (asked
 * ahead or not); its child stays parked beside the one the reader has forked next. The reader's pid in
 * *ret_pid. */
static ImageReader *start_session(sd_event *event, uint64_t timeout_usec, int fd, bool ahead, pid_t *ret_pid)
{
        ImageReader *reader = NULL;
        Answer answer = {};
        Worker *w = NULL;

        g_assert_cmpint(image_reader_new(timeout_usec, &reader), ==, 0);
        *ret_pid = child_named("loopd-reader");
        g_assert_cmpint(*ret_pid, >, 0);
        g_assert_true(children_become(*ret_pid, 1)); /* the one waiting */
        g_assert_cmpint(worker_start_probe(event, reader, fd, 0, 0, 0, ahead, 10 * G_USEC_PER_SEC, on_answer,
                                &answer, &w),
                ==, 0);
        while (!answer.done)
                g_assert_cmpint(sd_event_run(event, UINT64_MAX), >=, 0);
        g_assert_cmpint(answer.result, ==, 0);
        g_assert_true(children_become(*ret_pid, 2));
        return reader;
}

/* The image an Attach's session reads in these tests: 16 MiB, a GPT with partition 1 ("alpha", 4 MiB from
 * sector 2048) holding ext4 "photos"; opened read-only. */
static int session_image_open(const char *path)
{
        int fd;

        image_create(path, 16 << 20);
        image_sfdisk(path, "label: gpt\nstart=2048,size=8192,name=alpha\n", 512);
        g_free(image_mkfs_at(path, 2048 * 512, 8192 * 512, "ext4", "photos"));
        fd = open(path, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

/* The first probe of the device bound to that image, as the watcher asks it: disk_fd what the device reads
 * when asked, part its one partition. */
static LoopProbeArea session_area(int disk_fd, int image_fd, const KernelPartition *part)
{
        return (LoopProbeArea){ .loop_number = 99991,
                .devnum = 2,
                .disk_fd = disk_fd,
                .size = 16 << 20,
                .sector_size = 512,
                .image_fd = image_fd,
                .parts = (KernelPartition *)part,
                .n_parts = 1 };
}

void test_reader_session_serves_an_attach(void)
{
        g_autofree char *disk = g_build_filename(tmpdir, "session.img", NULL);
        PartitionSpec *specs = NULL;
        PartitionInfo *list = NULL;
        size_t n_specs = 0, n = 0;
        ImageReader *reader = NULL;
        sd_event *event = NULL;
        pid_t pid;
        int fd = session_image_open(disk);

        /* The image read, as Attach does: its child is parked, and the reader has forked the next. */
        g_assert_cmpint(sd_event_new(&event), >=, 0);
        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, false, &pid);

        /* The plan, then the first probe, from the same image: no child is forked for them. */
        g_assert_cmpint(
                image_reader_plan_partitions(reader, fd, 512, 16 << 20, fd, 0, &specs, &n_specs), ==, 0);
        g_assert_cmpuint(n_specs, ==, 1);
        g_assert_cmpuint(specs[0].start, ==, 2048 * 512);
        g_assert_cmpuint(children_of(pid), ==, 2);
        const KernelPartition part = { .number = 1, .start = 2048 * 512, .size = 8192 * 512, .devnum = 1 };
        LoopProbeArea a = session_area(fd, fd, &part);
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpstr(list[0].part_name, ==, "alpha");
        g_assert_cmpstr(list[0].label, ==, "photos");
        /* The probe ended the session: the parked child is gone, the waiting one stays. */
        g_assert_true(children_become(pid, 1));
        partition_info_array_free(list, n);
        free(specs);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        /* Parked and never asked: it goes by itself once the reader's timeout has passed. */
        reader = start_session(event, 300 * 1000, fd, false, &pid);
        g_assert_true(children_become(pid, 1));
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        /* A call that ends without the probe (a failed Attach) ends its session: the child goes at once, not
         * after the reader's timeout (10 s). */
        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, false, &pid);
        image_reader_end_session(reader, fd);
        g_assert_true(children_become(pid, 1));
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
        sd_event_unref(event);
        close(fd);
}

/* Asked ahead, the child that read the image plans the device to be and probes it while Attach binds it:
 * what it sent is taken for the device it was read for, and only for that one. */
void test_reader_session_reads_ahead(void)
{
        g_autofree char *disk = g_build_filename(tmpdir, "ahead.img", NULL);
        g_autofree char *blank = g_build_filename(tmpdir, "ahead-blank.img", NULL);
        const KernelPartition planned = {
                .number = 1, .start = 2048 * 512, .size = 8192 * 512, .devnum = 1
        };
        const KernelPartition other = { .number = 1, .start = 12288 * 512, .size = 2048 * 512, .devnum = 1 };
        PartitionSpec *specs = NULL;
        PartitionInfo *list = NULL;
        size_t n_specs = 0, n = 0;
        ImageReader *reader = NULL;
        sd_event *event = NULL;
        pid_t pid;
        int fd = session_image_open(disk), blank_fd;

        /* What the "device" reads when a question goes to it: nothing at all. */
        image_create(blank, 16 << 20);
        blank_fd = open(blank, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(blank_fd, >=, 0);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        /* The plan of a device of the image's size: the image's, though the device given has no table. */
        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, true, &pid);
        g_assert_cmpint(
                image_reader_plan_partitions(reader, blank_fd, 512, 16 << 20, fd, 0, &specs, &n_specs), ==,
                0);
        g_assert_cmpuint(n_specs, ==, 1);
        g_assert_cmpuint(specs[0].number, ==, 1);
        g_assert_cmpuint(specs[0].start, ==, 2048 * 512);
        g_assert_cmpuint(specs[0].length, ==, 8192 * 512);
        free(specs);
        specs = NULL;
        /* Then the first probe of that device, with the planned partition: sent ahead too. */
        LoopProbeArea a = session_area(blank_fd, fd, &planned);
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].number, ==, 1);
        g_assert_cmpuint(list[0].devnum, ==, 1);
        g_assert_cmpuint(list[0].offset, ==, 2048 * 512);
        g_assert_cmpstr(list[0].part_name, ==, "alpha");
        g_assert_cmpstr(list[0].fstype, ==, "ext4");
        g_assert_cmpstr(list[0].label, ==, "photos");
        g_assert_true(children_become(pid, 1));
        partition_info_array_free(list, n);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        /* A device of another size (the file changed as it was bound), of another sector size, or at
         * another offset of the same file: the plan is asked of the device. */
        const struct {
                uint32_t sector_size;
                uint64_t size, offset;
        } others[] = { { 512, 8 << 20, 0 }, { 4096, 16 << 20, 0 }, { 512, 16 << 20, 1 << 20 } };
        for (size_t i = 0; i < G_N_ELEMENTS(others); i++) {
                reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, true, &pid);
                g_assert_cmpint(image_reader_plan_partitions(reader, blank_fd, others[i].sector_size,
                                        others[i].size, fd, others[i].offset, &specs, &n_specs),
                        ==, 0);
                g_assert_cmpuint(n_specs, ==, 0);
                image_reader_end_session(reader, fd);
                g_assert_true(children_become(pid, 1));
                image_reader_free(reader);
                g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
        }

        /* Partitions other than the plan's (the kernel refused one, somebody changed them): the list is
         * read for the device's partitions, not taken from what was sent ahead. */
        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, true, &pid);
        g_assert_cmpint(
                image_reader_plan_partitions(reader, blank_fd, 512, 16 << 20, fd, 0, &specs, &n_specs), ==,
                0);
        g_assert_cmpuint(n_specs, ==, 1);
        free(specs);
        specs = NULL;
        a.parts = (KernelPartition *)&other;
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].offset, ==, 12288 * 512);
        g_assert_cmpstr(list[0].fstype, ==, "");
        partition_info_array_free(list, n);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        /* The first probe without the plan read (a kernel that parsed the table as the device was bound):
         * the plan is read on the way, and the list taken when the kernel's partitions are the plan's. */
        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, true, &pid);
        a.parts = (KernelPartition *)&planned;
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpstr(list[0].label, ==, "photos");
        g_assert_true(children_become(pid, 1));
        partition_info_array_free(list, n);
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        sd_event_unref(event);
        close(blank_fd);
        close(fd);
}

/* In the FUSE server, before its exec: gone with the test process, also if that died before this ran. */
static void die_with_parent(gpointer userdata)
{
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != (pid_t)GPOINTER_TO_INT(userdata))
                _exit(EXIT_FAILURE);
}

/* tests/fuse-hang serving a copy of source whose bytes from hang_from to hang_to are never answered, at
 * <tmpdir>/NAME/disk.img. Root only (allow_other, so that the reader's children may read it too); in a mount
 * namespace of the test's own (see test_reader_session_child_dies_ahead()). */
typedef struct HungCopy {
        char *mountpoint, *file;
        GPid server;
} HungCopy;

static gboolean hung_copy_start(
        HungCopy *h, const char *name, const char *source, uint64_t hang_from, uint64_t hang_to)
{
        const char *exe = g_getenv("LOOPD_FUSE_HANG");
        g_autofree char *from = g_strdup_printf("%" PRIu64, hang_from),
                        *to = g_strdup_printf("%" PRIu64, hang_to);
        g_auto(GStrv) env = g_get_environ();
        g_autoptr(GError) error = NULL;
        struct stat src, st;

        g_assert_nonnull(exe);
        h->mountpoint = g_build_filename(tmpdir, name, NULL);
        h->file = g_build_filename(h->mountpoint, "disk.img", NULL);
        g_assert_cmpint(g_mkdir(h->mountpoint, 0755), ==, 0);
        env = g_environ_setenv(env, "FUSE_HANG_SOURCE", source, TRUE);
        env = g_environ_setenv(env, "FUSE_HANG_FROM", from, TRUE);
        env = g_environ_setenv(env, "FUSE_HANG_TO", to, TRUE);
        const char *argv[] = { exe, "-f", "-o", "allow_other", h->mountpoint, NULL };
        /* Not holding the test's output open, and gone with the test if it dies first. */
        if (!g_spawn_async(NULL, (char **)argv, env,
                    G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                    die_with_parent, GINT_TO_POINTER(getpid()), &h->server, &error))
                g_error("cannot start %s: %s", exe, error->message);
        g_assert_cmpint(stat(source, &src), ==, 0);
        /* Mounted once the file shows with the source's size (the directory is empty before). */
        for (int tries = 0; tries < 500; tries++, g_usleep(10000)) {
                int status;

                if (stat(h->file, &st) == 0 && st.st_size == src.st_size)
                        return TRUE;
                if (waitpid(h->server, &status, WNOHANG) == h->server) {
                        g_spawn_close_pid(h->server);
                        h->server = 0;
                        g_test_message(
                                "%s exited before it mounted %s (status %d)", exe, h->mountpoint, status);
                        return FALSE;
                }
        }
        return FALSE;
}

/* Kills the server: the only way to free whoever waits for an answer (the request read, the wait cannot be
 * interrupted); from then on every read of the file fails. */
static void hung_copy_kill(HungCopy *h)
{
        if (h->server <= 0)
                return;
        g_assert_cmpint(kill(h->server, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(h->server, NULL, 0), ==, h->server);
        g_spawn_close_pid(h->server);
        h->server = 0;
}

static void hung_copy_stop(HungCopy *h)
{
        hung_copy_kill(h);
        (void)umount2(h->mountpoint, MNT_DETACH);
        g_assert_cmpint(g_rmdir(h->mountpoint), ==, 0);
        g_clear_pointer(&h->mountpoint, g_free);
        g_clear_pointer(&h->file, g_free);
}

/* The child of the reader (pid) that holds path open; 0 if none does within 2 s. */
static pid_t child_holding(pid_t pid, const char *path)
{
        for (int tries = 0; tries < 200; tries++, g_usleep(10000)) {
                g_autofree char *list = g_strdup_printf("/proc/%d/task/%d/children", pid, pid), *text = NULL;
                g_auto(GStrv) pids = NULL;

                g_assert_true(g_file_get_contents(list, &text, NULL, NULL));
                pids = g_strsplit(g_strstrip(text), " ", -1);
                for (char **p = pids; *p && **p; p++) {
                        g_autofree char *fds = g_strdup_printf("/proc/%s/fd", *p);
                        g_autoptr(GDir) dir = g_dir_open(fds, 0, NULL);
                        const char *fd;

                        while (dir && (fd = g_dir_read_name(dir))) {
                                g_autofree char *link = g_build_filename(fds, fd, NULL);
                                g_autofree char *target = g_file_read_link(link, NULL);

                                if (g_strcmp0(target, path) == 0)
                                        return (pid_t)atoi(*p);
                        }
                }
        }
        return 0;
}

/* Waits until pid waits in a pread() of a byte from from to to (the FUSE server never answers it): false if
 * it does not within 10 s. libblkid reads with pread(). */
static gboolean blocked_in_read(pid_t pid, uint64_t from, uint64_t to)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/syscall", pid);

        for (int tries = 0; tries < 1000; tries++, g_usleep(10000)) {
                g_autofree char *text = NULL;
                g_auto(GStrv) words = NULL;

                /* "NR fd buf count pos ...", the arguments in hexadecimal. */
                if (!g_file_get_contents(path, &text, NULL, NULL))
                        return FALSE;
                words = g_strsplit(g_strstrip(text), " ", -1);
                if (g_strv_length(words) < 5 || g_ascii_strtoll(words[0], NULL, 10) != SYS_pread64)
                        continue;
                uint64_t pos = g_ascii_strtoull(words[4], NULL, 16);
                if (pos >= from && pos < to)
                        return TRUE;
        }
        return FALSE;
}

/* What a child sent ahead before it died is taken as far as it is whole; what it did not send is asked of
 * a fresh child, not an error of the Attach. The image's copy hangs where the partition's filesystem lies:
 * the child answers the probe and sends the plan, then waits in the read of the partition's first probe
 * until it is killed and its read fails. The test runs in a process and a mount namespace of its own: the
 * FUSE mount goes with it, however it ends. */
void test_reader_session_child_dies_ahead(void)
{
        g_autofree char *disk = g_build_filename(tmpdir, "ahead-dies.img", NULL);
        g_autofree char *blank = g_build_filename(tmpdir, "ahead-dies-blank.img", NULL);
        const uint64_t start = 12288 * 512, length = 8192 * 512;
        const KernelPartition planned = { .number = 1, .start = start, .size = length, .devnum = 1 };
        PartitionSpec *specs = NULL;
        PartitionInfo *list = NULL;
        size_t n_specs = 0, n = 0;
        ImageReader *reader = NULL;
        sd_event *event = NULL;
        HungCopy hung = {};
        pid_t pid, child;
        int disk_fd, blank_fd, fd;

        if (!g_test_subprocess()) {
                const char *why = geteuid() != 0               ? "a FUSE file all users may read needs root"
                        : access("/dev/fuse", R_OK | W_OK) < 0 ? "/dev/fuse is not accessible"
                        : !g_getenv("LOOPD_FUSE_HANG")         ? "LOOPD_FUSE_HANG is not set"
                                                               : NULL;
                if (why && g_strcmp0(g_getenv("CI"), "true") == 0) {
                        g_test_message("cannot run under CI=true: %s", why);
                        g_test_fail();
                } else if (why)
                        g_test_skip(why);
                else {
                        g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
                        g_test_trap_assert_passed();
                }
                return;
        }
        g_assert_cmpint(unshare(CLONE_NEWNS), ==, 0);
        g_assert_cmpint(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), ==, 0);
        image_create(blank, 16 << 20);
        blank_fd = open(blank, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(blank_fd, >=, 0);
        image_create(disk, 16 << 20);
        image_sfdisk(disk, "label: gpt\nstart=12288,size=8192,name=alpha\n", 512);
        g_free(image_mkfs_at(disk, start, length, "ext4", "photos"));
        disk_fd = open(disk, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(disk_fd, >=, 0);
        g_assert_true(hung_copy_start(&hung, "ahead-dies", disk, start, start + length));
        fd = open(hung.file, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(sd_event_new(&event), >=, 0);

        reader = start_session(event, IMAGE_READER_TIMEOUT_USEC, fd, true, &pid);
        child = child_holding(pid, hung.file);
        g_assert_cmpint(child, >, 0);
        g_assert_true(blocked_in_read(child, start, start + length));
        /* The plan came whole before the child began to wait: it is taken (the "device" given, blank, has
         * no table). */
        g_assert_cmpint(
                image_reader_plan_partitions(reader, blank_fd, 512, 16 << 20, fd, 0, &specs, &n_specs), ==,
                0);
        g_assert_cmpuint(n_specs, ==, 1);
        g_assert_cmpuint(specs[0].start, ==, start);
        free(specs);
        /* The first probe's list never comes: the child dies in its read (killed, it goes once the server
         * does), and a fresh child reads the device. It tries the image first (image_fd, the copy, dead
         * now), then the device itself (disk_fd, here the image's own file), as probe_loop_read() does when
         * the image cannot be read. */
        g_assert_cmpint(kill(child, SIGKILL), ==, 0);
        hung_copy_kill(&hung);
        LoopProbeArea a = session_area(disk_fd, fd, &planned);
        g_assert_cmpint(image_reader_probe_loop(reader, &a, &list, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(list[0].offset, ==, start);
        g_assert_cmpstr(list[0].part_name, ==, "alpha");
        g_assert_cmpstr(list[0].fstype, ==, "ext4");
        g_assert_cmpstr(list[0].label, ==, "photos");
        partition_info_array_free(list, n);
        g_assert_true(children_become(pid, 1));
        image_reader_free(reader);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);

        sd_event_unref(event);
        close(fd);
        close(blank_fd);
        close(disk_fd);
        hung_copy_stop(&hung);
}
