/* manager.c: the engine's context: event loop, configuration, the device registry and the watcher. */
#include "manager.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "image-reader.h"
#include "log.h"
#include "loop.h"
#include "mount.h"
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

Manager *manager_free(Manager *m)
{
        if (!m)
                return NULL;
        manager_stop(m);
        registry_free(m->registry);
        image_reader_free(m->image_reader);
        sd_event_unref(m->event);
        free(m->state_dir);
        free(m->media_dir);
        free(m->qsd_path);
        free(m);
        return NULL;
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
        };
        r = watcher_new(&config, &m->watcher);
        if (r < 0)
                return log_error_errno(r, "Failed to watch block devices: %m");
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
