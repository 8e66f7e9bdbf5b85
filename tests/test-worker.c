/* test-worker.c: an image read in a worker, through the image reader and forked, gives image_probe()'s
 * answer; a reader that is gone leaves loopd forking its own workers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image-reader.h"
#include "image.h"
#include "images.h"
#include "worker.h"

typedef struct Answer {
        gboolean done;
        int result;
        ImageProbe probe;
} Answer;

static void on_answer(int result, const void *data, void *userdata)
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
        g_assert_cmpint(
                worker_start_probe(event, reader, fd, offset, 0, 10 * G_USEC_PER_SEC, on_answer, &a, &w), ==,
                0);
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
static char *tmpdir;
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

/* The reader's pid: the child of this process that names itself loopd-reader (soon after it starts; each
 * test reaps the reader it started). */
static pid_t reader_pid(void)
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
                                g_str_equal(g_strstrip(comm), "loopd-reader"))
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

        g_assert_cmpint(image_reader_new(&reader), ==, 0);
        *ret_pid = reader_pid();
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

static void test_reader_gone_falls_back_to_fork(void)
{
        Answer a;
        pid_t pid;
        ImageReader *reader = reader_start(&pid);

        g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
        g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
        /* Its waiting child goes with it (PR_SET_PDEATHSIG); the read is forked instead, and answers. */
        for (int i = 0; i < 3; i++) {
                a = read_image(reader, gpt4k, 0);
                assert_as_image_probe(&a, gpt4k, 0);
        }
        g_assert_cmpint(image_reader_submit(reader, 0, 0, 0, &(int){ -1 }), ==, -EPIPE);
        image_reader_free(reader);
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
        g_test_add_func("/worker/reader/gone-falls-back-to-fork", test_reader_gone_falls_back_to_fork);
        g_test_add_func("/worker/reader/exits-when-freed", test_reader_exits_when_freed);

        r = g_test_run();
        test_tmpdir_remove(tmpdir);
        return r;
}
