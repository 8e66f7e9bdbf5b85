/* watcher-catchup.c: what lets ListDevices answer from the watcher's table instead of reading every loop
 * device's sysfs attributes again (15 µs an attribute on a small VM: 100 ms with a thousand devices): the
 * kernel's uevents and the closes of /dev/loop* nodes since the last look, read when a client asks and never
 * in the event loop. Only the devices they name are read again; when either queue overflowed (or could not
 * be opened), everything is. */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "partition.h"
#include "watcher-internal.h"

void watcher_close_catchup(Watcher *w)
{
        partition_nodes_unfollow(w);
        w->uevent_fd = safe_close(w->uevent_fd);
        w->close_fd = safe_close(w->close_fd);
        w->nodes_fd = safe_close(w->nodes_fd);
        w->catchup_lost = true;
}

/* Reads an inotify queue to its end, handing each event to each(userdata, event); false when some were lost
 * (an overflow, a failed read). */
static bool drain_inotify(
        int fd, void (*each)(void *userdata, const struct inotify_event *e), void *userdata)
{
        _Alignas(struct inotify_event) char buf[16384];
        bool complete = true;

        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return complete && errno == EAGAIN;
                }
                for (char *p = buf; p < buf + k;) {
                        const struct inotify_event *e = (const struct inotify_event *)p;

                        if (e->mask & IN_Q_OVERFLOW)
                                complete = false;
                        else
                                each(userdata, e);
                        p += sizeof(struct inotify_event) + e->len;
                }
        }
}

static void note_made(void *userdata, const struct inotify_event *e)
{
        unsigned number, partition;

        if (e->len > 0 && loop_parse_node(e->name, &number, &partition) >= 0 && partition > 0)
                partition_nodes_created(number, partition);
}

/* partition.c's follower of the names made in /dev: tells it of each /dev/loopNpM made since the last call,
 * or to forget what it knows when some were lost. */
static void follow_nodes(void *userdata)
{
        Watcher *w = userdata;

        if (!drain_inotify(w->nodes_fd, note_made, NULL))
                partition_nodes_forget();
}

/* The kernel's own uevents (not udevd's: those come after udevd processed them, and a device bound a moment
 * ago must be listed), and the closes of nodes in /dev: every change of a loop device that sends no uevent
 * (LOOP_SET_STATUS's autoclear, BLKROSET, LOOP_SET_BLOCK_SIZE) is made through an open node, and is seen
 * once it is closed. Neither fd is in the event loop: the queues are read by watcher_catch_up(). */
int watcher_open_catchup(Watcher *w)
{
        struct sockaddr_nl address = { .nl_family = AF_NETLINK, .nl_groups = 1 /* the kernel's */ };
        int size = 1024 * 1024;

        w->uevent_fd = w->close_fd = w->nodes_fd = -EBADF;
        w->catchup_lost = true; /* the first look reads everything */
        w->uevent_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
        if (w->uevent_fd < 0)
                goto fail;
        /* Room for the uevents of a few hundred attaches between two looks; more is an overflow, noticed. */
        (void)setsockopt(w->uevent_fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
        if (bind(w->uevent_fd, (struct sockaddr *)&address, sizeof(address)) < 0)
                goto fail;
        w->close_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->close_fd < 0)
                goto fail;
        if (inotify_add_watch(
                    w->close_fd, "/dev", IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_CREATE | IN_DELETE) < 0)
                goto fail;
        /* Without it Detach reads all of /dev for stale nodes: slower, not wrong. */
        w->nodes_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->nodes_fd >= 0 && inotify_add_watch(w->nodes_fd, "/dev", IN_CREATE | IN_MOVED_TO) >= 0)
                partition_nodes_follow(follow_nodes, w);
        else
                w->nodes_fd = safe_close(w->nodes_fd);
        return 0;

fail:;
        int r = negative_errno();
        watcher_close_catchup(w);
        return r;
}

/* The loop numbers the queues named since the last look, and whether some names were lost. */
typedef struct Named {
        unsigned *numbers;
        size_t n, allocated;
        bool lost;
} Named;

/* Notes loopN of a name "loopN" or "loopNpM" (a node in /dev, or DEVNAME= of a uevent). */
static void note_name(Named *named, const char *name)
{
        unsigned number, partition;

        if (loop_parse_node(name, &number, &partition) < 0)
                return;
        for (size_t i = 0; i < named->n; i++)
                if (named->numbers[i] == number)
                        return;
        if (named->n == named->allocated) {
                size_t na = named->allocated ? named->allocated * 2 : 16;
                unsigned *a = reallocarray(named->numbers, na, sizeof(unsigned));

                if (!a) {
                        named->lost = true;
                        return;
                }
                named->numbers = a;
                named->allocated = na;
        }
        named->numbers[named->n++] = number;
}

/* Reads the kernel's uevents queued so far and notes the loop devices they name. */
static void drain_uevents(Watcher *w, Named *named)
{
        char buf[8192 + 1];

        for (;;) {
                ssize_t k = recv(w->uevent_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                named->lost = true; /* ENOBUFS: events were dropped */
                        return;
                }
                buf[k] = '\0';
                /* "action@devpath\0KEY=value\0...": the loop devices' and their partitions' DEVNAME. */
                for (char *p = buf + strlen(buf) + 1; p < buf + k; p += strlen(p) + 1)
                        if (strncmp(p, "DEVNAME=", 8) == 0)
                                note_name(named, p + 8);
        }
}

static void note_closed(void *userdata, const struct inotify_event *e)
{
        if (e->len > 0)
                note_name(userdata, e->name); /* loop_parse_node() takes only loopN and loopNpM */
}

int watcher_catch_up(Watcher *w, unsigned **ret, size_t *ret_n)
{
        _cleanup_free_ unsigned *numbers = NULL;
        Named named = { .lost = w->catchup_lost };

        if (w->uevent_fd < 0 || w->close_fd < 0)
                return -EBADF;
        /* Both queues emptied even when the answer is "read everything": what was in them is covered. The
         * closes (and creations, removals) of /dev nodes name the devices changed without a uevent. */
        drain_uevents(w, &named);
        if (!drain_inotify(w->close_fd, note_closed, &named))
                named.lost = true;
        numbers = named.numbers;
        w->catchup_lost = false;
        if (named.lost)
                return -ENOBUFS;
        *ret = TAKE_PTR(numbers);
        *ret_n = named.n;
        return 0;
}
