/* image-reader-session.c: the reader's children parked between the questions about one image
 * (image-reader.h: sessions), and what a child sends ahead for the device that image is being bound to. */
#include "image-reader-internal.h"
#include "image-reader.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "process-util.h"

void reader_parked_end(Parked *p)
{
        if (p->pidfd >= 0)
                (void)pidfd_signal(p->pidfd, SIGKILL);
        p->pidfd = safe_close(p->pidfd);
        p->fd = safe_close(p->fd);
        p->image_fd = safe_close(p->image_fd);
        p->plan = mfree(p->plan);
        p->n_plan = 0;
}

/* Ends the parked children whose time is up (all of them with every). */
static void parked_expire(ImageReader *reader, bool every)
{
        int64_t now = now_ms();
        size_t kept = 0;

        for (size_t i = 0; i < reader->n_parked; i++) {
                if (every || reader->parked[i].until_ms <= now)
                        reader_parked_end(&reader->parked[i]);
                else
                        reader->parked[kept++] = reader->parked[i];
        }
        reader->n_parked = kept;
}

void reader_sessions_end(ImageReader *reader)
{
        parked_expire(reader, true);
}

void image_reader_park(ImageReader *reader, int fd, int pidfd, int image_fd, bool ahead, uint64_t offset)
{
        Parked p = { .fd = fd,
                .pidfd = pidfd,
                .image_fd = -EBADF,
                .ahead = ahead ? AHEAD_PLAN : AHEAD_NONE,
                .offset = offset };
        struct stat st;

        if (reader && image_fd >= 0)
                p.image_fd = fcntl(image_fd, F_DUPFD_CLOEXEC, 3);
        if (!reader || fd < 0 || pidfd < 0 || p.image_fd < 0 || fd_stat_cached(p.image_fd, &st) < 0) {
                reader_parked_end(&p);
                return;
        }
        parked_expire(reader, false);
        if (reader->n_parked == PARKED_MAX) {
                reader_parked_end(&reader->parked[0]);
                memmove(reader->parked, reader->parked + 1, --reader->n_parked * sizeof(Parked));
        }
        p.dev = st.st_dev;
        p.ino = st.st_ino;
        p.until_ms = now_ms() + (int64_t)(reader->timeout_usec / 1000);
        reader->parked[reader->n_parked++] = p;
}

/* The parked child that read image_fd's file, left parked: NULL when there is none. */
static Parked *parked_find(ImageReader *reader, int image_fd)
{
        struct stat st;

        if (!reader || image_fd < 0 || reader->n_parked == 0)
                return NULL;
        parked_expire(reader, false);
        if (fd_stat_cached(image_fd, &st) < 0)
                return NULL;
        for (size_t i = 0; i < reader->n_parked; i++)
                if (reader->parked[i].dev == st.st_dev && reader->parked[i].ino == st.st_ino)
                        return &reader->parked[i];
        return NULL;
}

int reader_session_unpark(ImageReader *reader, int image_fd, Parked *ret)
{
        Parked *p = parked_find(reader, image_fd);
        size_t i;

        if (!p)
                return 0;
        i = (size_t)(p - reader->parked);
        *ret = *p;
        ret->image_fd = safe_close(ret->image_fd);
        memmove(reader->parked + i, reader->parked + i + 1, (--reader->n_parked - i) * sizeof(Parked));
        return 1;
}

void image_reader_end_session(ImageReader *reader, int image_fd)
{
        Parked p;

        if (reader_session_unpark(reader, image_fd, &p) > 0)
                reader_parked_end(&p);
        if (reader)
                parked_expire(reader, false);
}

/* What an error reading what a child sent ahead comes to: the same error for loopd's own (its deadline
 * passed, it is out of memory) and for an answer whose contents break the rules (-EBADMSG), as a question
 * would have got; -ENOMSG, ask again, for anything else the child said or did (its own error, such as an
 * image opened O_DIRECT that takes no unaligned read; a message cut short; its death, with the
 * reader's). */
static int ahead_error(int r, bool from_child)
{
        return !from_child && (r == -ETIMEDOUT || r == -EBADMSG || r == -ENOMEM) ? r : -ENOMSG;
}

/* Reads the plan p's child sent ahead (p->ahead is AHEAD_PLAN): 0, p->ahead AHEAD_LIST with the plan in p;
 * else ahead_error()'s. */
static int ahead_read_plan(Parked *p, int64_t deadline_ms)
{
        bool from_child;
        int r;

        r = reader_plan_answer_read(
                p->fd, deadline_ms, &p->plan, &p->n_plan, &p->sector_size, &p->size, &from_child);
        if (r < 0)
                return ahead_error(r, from_child);
        p->ahead = AHEAD_LIST;
        return 0;
}

/* The parked child of image_fd's file with what it sent ahead read up to its list, for a device that starts
 * at offset in the file, of sector_size and size bytes: 0 and *ret (still parked); -ENOMSG when there is
 * none, or its plan is for another device or failed (a child with messages unread is ended: a question then
 * goes to a new one); else the error reading the plan (the child is ended). */
static int ahead_find(ImageReader *reader, int image_fd, uint64_t offset, uint32_t sector_size,
        uint64_t size, Parked **ret)
{
        Parked *p = parked_find(reader, image_fd);
        int r;

        if (!p || p->ahead == AHEAD_NONE)
                return -ENOMSG;
        if (p->ahead == AHEAD_PLAN) {
                r = ahead_read_plan(p, reader_deadline(reader));
                if (r < 0) {
                        image_reader_end_session(reader, image_fd);
                        return r;
                }
        }
        if (p->offset != offset || p->sector_size != sector_size || p->size != size) {
                image_reader_end_session(reader, image_fd);
                return -ENOMSG;
        }
        *ret = p;
        return 0;
}

/* Whether area's partitions (by number, as the kernel lists them) are those of p's plan. */
static bool ahead_plan_is(const Parked *p, const LoopProbeArea *area)
{
        if (area->n_parts != p->n_plan)
                return false;
        for (size_t i = 0; i < area->n_parts; i++) {
                const KernelPartition *k = &area->parts[i];
                bool found = false;

                if (i > 0 && area->parts[i - 1].number >= k->number)
                        return false; /* the child sends the list by number */
                for (size_t j = 0; j < p->n_plan && !found; j++)
                        found = p->plan[j].number == k->number && p->plan[j].start == k->start &&
                                p->plan[j].length == k->size;
                if (!found)
                        return false;
        }
        return true;
}

int reader_ahead_list(ImageReader *reader, const LoopProbeArea *area, PartitionInfo **ret, size_t *ret_n)
{
        Parked *found, p;
        Asked asked;
        bool from_child;
        int r;

        r = ahead_find(reader, area->image_fd, area->image_offset, area->sector_size, area->size, &found);
        if (r < 0)
                return r;
        if (!ahead_plan_is(found, area)) {
                image_reader_end_session(reader, area->image_fd);
                return -ENOMSG;
        }
        /* Gone only if its time ran out while its plan was read: then asked again. */
        if (reader_session_unpark(reader, area->image_fd, &p) <= 0)
                return -ENOMSG;
        asked = (Asked){ .fd = TAKE_FD(p.fd), .pidfd = TAKE_FD(p.pidfd), .session_fd = -EBADF };
        reader_parked_end(&p);
        r = reader_loop_answer_read(asked.fd, area, reader_deadline(reader), ret, ret_n, &from_child);
        reader_asked_done(reader, &asked, r >= 0, false);
        return r >= 0 ? r : ahead_error(r, from_child);
}

int reader_ahead_plan(ImageReader *reader, int image_fd, uint64_t offset, uint32_t sector_size,
        uint64_t size, PartitionSpec **ret, size_t *ret_n)
{
        Parked *p;
        int r;

        r = ahead_find(reader, image_fd, offset, sector_size, size, &p);
        if (r < 0)
                return r;
        r = partition_specs_dup(p->plan, p->n_plan, ret);
        if (r < 0)
                return r;
        *ret_n = p->n_plan;
        return 0;
}
