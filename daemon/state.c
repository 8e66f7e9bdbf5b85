/* state.c: the devices loopd set up, one small key=value file each in state_dir/devices/. */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int state_devices_dir(const char *state_dir, char **ret)
{
        char *dir;

        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        if (asprintf(&dir, "%s/devices", state_dir) < 0)
                return -ENOMEM;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                int r = negative_errno();
                free(dir);
                return r;
        }
        *ret = dir;
        return 0;
}

int state_save_device(const char *state_dir, const ManagedDevice *d)
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *tmp = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        int fd, r;

        r = state_devices_dir(state_dir, &dir);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/loop%u", dir, d->number) < 0 ||
                asprintf(&tmp, "%s/.loop%u.tmp", dir, d->number) < 0)
                return -ENOMEM;

        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return negative_errno();
        f = fdopen(fd, "w");
        if (!f) {
                r = negative_errno();
                close(fd);
                (void)unlink(tmp);
                return r;
        }

        fprintf(f,
                "DISKSEQ=%" PRIu64 "\nOWNER=%u\nBACKING_DEV=%u:%u\nBACKING_INODE=%" PRIu64
                "\nOFFSET=%" PRIu64 "\nAUTOCLEAR=%d\n",
                d->diskseq, (unsigned)d->owner, major(d->backing_dev), minor(d->backing_dev),
                d->backing_inode, d->offset, d->autoclear);
        if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
                r = negative_errno();
                (void)unlink(tmp);
                return r;
        }
        if (rename(tmp, path) < 0) {
                r = negative_errno();
                (void)unlink(tmp);
                return r;
        }
        return 0;
}

int state_remove_device(const char *state_dir, unsigned number)
{
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/devices/loop%u", state_dir, number) < 0)
                return -ENOMEM;
        if (unlink(path) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

static int state_parse_device(FILE *f, ManagedDevice *d)
{
        char line[256];
        unsigned seen = 0;

        while (fgets(line, sizeof(line), f)) {
                unsigned maj, min, owner;
                int autoclear;
                if (sscanf(line, "DISKSEQ=%" SCNu64, &d->diskseq) == 1)
                        seen |= 1;
                else if (sscanf(line, "OWNER=%u", &owner) == 1) {
                        d->owner = owner;
                        seen |= 2;
                } else if (sscanf(line, "BACKING_DEV=%u:%u", &maj, &min) == 2) {
                        d->backing_dev = makedev(maj, min);
                        seen |= 4;
                } else if (sscanf(line, "BACKING_INODE=%" SCNu64, &d->backing_inode) == 1)
                        seen |= 8;
                else if (sscanf(line, "OFFSET=%" SCNu64, &d->offset) == 1)
                        seen |= 16;
                else if (sscanf(line, "AUTOCLEAR=%d", &autoclear) == 1)
                        d->autoclear = autoclear != 0;
        }
        return seen == 31 ? 0 : -EBADMSG;
}

int state_load_devices(const char *state_dir, ManagedDevice **ret_list)
{
        _cleanup_free_ char *dir = NULL;
        ManagedDevice *list = NULL;
        DIR *d;
        int r;

        r = state_devices_dir(state_dir, &dir);
        if (r < 0)
                return r;
        d = opendir(dir);
        if (!d)
                return negative_errno();

        for (struct dirent *de; (de = readdir(d));) {
                ManagedDevice dev = { 0 };
                unsigned number;
                char tail;

                if (sscanf(de->d_name, "loop%u%c", &number, &tail) != 1)
                        continue;
                dev.number = number;

                int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        continue;
                FILE *f = fdopen(fd, "r");
                if (!f) {
                        close(fd);
                        continue;
                }
                r = state_parse_device(f, &dev);
                fclose(f);
                if (r < 0) {
                        (void)unlinkat(dirfd(d), de->d_name, 0);
                        continue;
                }

                ManagedDevice *copy = malloc(sizeof(ManagedDevice));
                if (!copy) {
                        closedir(d);
                        while (list) {
                                ManagedDevice *next = list->next;
                                free(list);
                                list = next;
                        }
                        return -ENOMEM;
                }
                *copy = dev;
                copy->next = list;
                list = copy;
        }
        closedir(d);
        *ret_list = list;
        return 0;
}
