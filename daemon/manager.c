/* manager.c: the engine's context: event loop, configuration, the device registry and the watcher; and the
 * release of an autoclear device whose FUSE servers outlived its last unmount. */
#include "manager.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include "image-reader.h"
#include "log.h"
#include "loop.h"
#include "mount.h"
#include "partition.h"
#include "process-util.h"
#include "registry.h"
#include "watcher.h"

int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return -ENOMEM;
        m->max_devices_per_user = 32;
        m->partition_timeout_usec = 30ULL * 1000000ULL;
        m->io_timeout_usec = 10ULL * 1000000ULL;
        m->state_dir = strdup("/run/loopd");
        m->media_dir = strdup("/run/media");
        if (!m->state_dir || !m->media_dir)
                return -ENOMEM;

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

void manager_stop(Manager *m)
{
        m->watcher = watcher_free(m->watcher);
}

/* An unmount's FUSE servers that outlived unmount_filesystem()'s wait: a driver still writing back to a
 * slow image, or one whose read of a hung image waits. They hold the device, so an autoclear device's
 * release after its last unmount was Busy; it is tried again once the last of them has exited. */
typedef struct ServerWait {
        Manager *manager;
        unsigned number;
        uint64_t diskseq;
        MountServers servers; /* the one watched is the last */
        sd_event_source *exit_source;
        struct ServerWait *next;
} ServerWait;

static void server_wait_free(ServerWait *w)
{
        sd_event_source_disable_unref(w->exit_source);
        mount_servers_close(&w->servers);
        free(w);
}

static void server_wait_unlink(ServerWait *w)
{
        for (ServerWait **p = &w->manager->server_waits; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        return;
                }
}

static int server_wait_on_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ServerWait *w = userdata;
        Manager *m = w->manager;
        unsigned number = w->number;
        uint64_t diskseq = w->diskseq;
        size_t n = w->servers.n;

        /* The others may have gone meanwhile: the next one still running is watched, if any (the source
         * moves to it before the pidfds of those that exited are closed). */
        while (n > 0 && pidfd_wait_until(w->servers.pidfds[n - 1], 0))
                n--;
        if (n > 0) {
                int r = sd_event_source_set_io_fd(s, w->servers.pidfds[n - 1]);

                if (r < 0) {
                        log_warning_errno(r,
                                "Failed to watch the FUSE servers of loop%u, it stays attached: %m", number);
                        server_wait_unlink(w);
                        server_wait_free(w);
                        return 0;
                }
                while (w->servers.n > n)
                        safe_close(w->servers.pidfds[--w->servers.n]);
                return 0;
        }

        server_wait_unlink(w);
        server_wait_free(w);
        /* Only the device the unmount was of (its number may be another's by now), and not while a Format or
         * a mount of it is under way: those decide for themselves, as a Detach would be Busy then. */
        if (!registry_find_device(m->registry, number, diskseq) ||
                registry_is_formatting(m->registry, number) || mount_in_progress_on_device(number))
                return 0;
        log_info("The FUSE servers of loop%u's last unmount have exited", number);
        (void)registry_release_if_autoclear(m->registry, number);
        if (m->watcher)
                watcher_update_device(m->watcher, number);
        return 0;
}

static ServerWait *server_wait_find(Manager *m, unsigned number, uint64_t diskseq)
{
        for (ServerWait *w = m->server_waits; w; w = w->next)
                if (w->number == number && w->diskseq == diskseq)
                        return w;
        return NULL;
}

void manager_release_after_servers(Manager *m, unsigned number, uint64_t diskseq, MountServers *servers)
{
        ServerWait *w = server_wait_find(m, number, diskseq);
        int r;

        /* One wait a device: an unmount of it while an earlier one's servers still run adds its own to it
         * (the earlier ones among them again, as long as there is room; one left out only means a retry
         * that finds the device Busy). */
        if (w) {
                int *fds = w->servers.pidfds;
                size_t watched = w->servers.n - 1;
                int fd;

                while (servers->n > 0 && w->servers.n < ELEMENTSOF(w->servers.pidfds))
                        fds[w->servers.n++] = servers->pidfds[--servers->n];
                /* The watched one stays the last. */
                fd = fds[watched];
                fds[watched] = fds[w->servers.n - 1];
                fds[w->servers.n - 1] = fd;
                mount_servers_close(servers);
                return;
        }

        w = calloc(1, sizeof(ServerWait));
        if (!w) {
                log_warning("Out of memory: loop%u stays attached after its last unmount", number);
                mount_servers_close(servers);
                return;
        }
        *w = (ServerWait){ .manager = m, .number = number, .diskseq = diskseq, .servers = *servers };
        servers->n = 0;
        r = sd_event_add_io(m->event, &w->exit_source, w->servers.pidfds[w->servers.n - 1], EPOLLIN,
                server_wait_on_exit, w);
        if (r < 0) {
                log_warning_errno(
                        r, "Failed to watch the FUSE servers of loop%u, it stays attached: %m", number);
                server_wait_free(w);
                return;
        }
        w->next = m->server_waits;
        m->server_waits = w;
}

static void server_waits_free(Manager *m)
{
        while (m->server_waits) {
                ServerWait *w = m->server_waits;

                m->server_waits = w->next;
                server_wait_free(w);
        }
}

Manager *manager_free(Manager *m)
{
        if (!m)
                return NULL;
        manager_stop(m);
        server_waits_free(m);
        registry_free(m->registry);
        image_reader_free(m->image_reader);
        sd_event_unref(m->event);
        free(m->state_dir);
        free(m->media_dir);
        free(m->qsd_path);
        free(m);
        return NULL;
}

/* Adds the FUSE servers that hold loopN (rdev) or one of its partitions open to *servers. */
static void manager_servers_holding(unsigned number, dev_t rdev, MountServers *servers)
{
        _cleanup_free_ KernelPartition *parts = NULL;
        size_t n_parts = 0;

        mount_fuse_servers_holding(rdev, servers);
        if (partition_list_kernel(number, &parts, &n_parts) >= 0)
                for (size_t i = 0; i < n_parts; i++)
                        mount_fuse_servers_holding(parts[i].devnum, servers);
}

/* At start, once the watcher has read the mount table: a device that goes with its last mount, mounted once
 * (loopd set the kernel's flag) and with nothing mounted now, was left by a loopd that stopped while its
 * release waited for the FUSE servers of that last unmount (manager_release_after_servers() keeps them in
 * memory only). It goes now, or once the servers that still hold it (or one of its partitions) have
 * exited. */
static void manager_release_unmounted(Manager *m)
{
        ManagedDevice *next;

        for (ManagedDevice *d = m->registry->devices; d; d = next) {
                MountServers servers = { 0 };
                unsigned number = d->number;
                uint64_t diskseq = d->diskseq;
                struct stat st;

                next = d->next; /* d goes if it is released */
                if (!d->autoclear_armed || d->lock_fd < 0 || watcher_knows_mount_of(m->watcher, number) ||
                        fstat(d->lock_fd, &st) < 0)
                        continue;
                /* Its servers first: while one holds it, a release would wait for them (seconds) in vain. */
                manager_servers_holding(number, st.st_rdev, &servers);
                if (servers.n > 0) {
                        log_info("A FUSE server still holds loop%u: it goes once the server has exited",
                                number);
                        manager_release_after_servers(m, number, diskseq, &servers);
                } else if (registry_release_if_autoclear(m->registry, number) > 0)
                        watcher_update_device(m->watcher, number);
        }
}

/* The watcher's, before it releases an autoclear device of loopd's whose last mount went (root's umount(8),
 * which does not wait for a FUSE driver to exit as Unmount does): while FUSE servers of that mount still
 * hold the device, a release would wait for them in vain; the device goes once they have exited. */
static bool manager_release_held(const LoopInfo *info, void *userdata)
{
        Manager *m = userdata;
        MountServers servers = { 0 };
        ManagedDevice *d = registry_find_number(m->registry, info->number);

        /* Only loopd's device (the record's incarnation); already waited for after an Unmount of it. */
        if (!d || d->diskseq != info->diskseq)
                return false;
        if (server_wait_find(m, d->number, d->diskseq))
                return true;
        manager_servers_holding(d->number, info->devnum, &servers);
        if (servers.n == 0)
                return false;
        log_info(
                "A FUSE server still holds loop%u after its last unmount: it goes once the server has exited",
                d->number);
        manager_release_after_servers(m, d->number, d->diskseq, &servers);
        return true;
}

int manager_start(Manager *m)
{
        int r;

        r = registry_new(m->event, m->state_dir, m->io_timeout_usec, &m->registry);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the device registry: %m");
        /* The records first: the watcher's first look at the devices takes their owners from them. */
        registry_load(m->registry);

        WatcherConfig config = {
                .event = m->event,
                .registry = m->registry,
                .image_reader = m->image_reader,
                .state_dir = m->state_dir,
                .media_dir = m->media_dir,
                .on_change = m->on_change,
                .on_change_userdata = m->on_change_userdata,
                .release_held = manager_release_held,
                .release_held_userdata = m,
        };
        r = watcher_new(&config, &m->watcher);
        if (r < 0)
                return log_error_errno(r, "Failed to watch block devices: %m");
        manager_release_unmounted(m);
        return 0;
}

bool manager_is_idle(Manager *m)
{
        if (watcher_busy(m->watcher))
                return false;
        for (ManagedDevice *d = m->registry ? m->registry->devices : NULL; d; d = d->next) {
                _cleanup_(loop_info_freep) LoopInfo *info = NULL;
                if (loop_get_info(d->number, &info) >= 0 && info->diskseq == d->diskseq)
                        return false;
        }
        return true;
}

void manager_remove_mount_point(Manager *m, const char *path)
{
        /* Only directories loopd made (mount_point_remove() refuses anything outside the media dir): never
         * a mount point someone else chose. */
        (void)mount_point_remove(m->media_dir, path);
}
