/* state.c: the devices loopd set up, one small key=value file each in state_dir/devices/, and the mount
 * points it made, one per line in state_dir/mounts. */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "loop-name.h"
#include "strv.h"

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

int state_write_file(const char *dir, const char *name, const char *contents)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        _cleanup_close_ int dirfd = -1;
        FILE *f;
        int fd, r = 0;

        if (asprintf(&path, "%s/%s", dir, name) < 0 || asprintf(&tmp, "%s/.%s.tmp", dir, name) < 0)
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
        if (fputs(contents, f) == EOF || fflush(f) != 0 || fsync(fileno(f)) < 0)
                r = negative_errno();
        if (fclose(f) != 0 && r == 0)
                r = negative_errno();
        if (r == 0 && rename(tmp, path) < 0)
                r = negative_errno();
        if (r < 0) {
                (void)unlink(tmp);
                return r;
        }
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd >= 0)
                (void)fsync(dirfd);
        return 0;
}

/* ---- the boot ---- */

#define BOOT_ID_FILE "/proc/sys/kernel/random/boot_id"
#define BOOT_ID_LEN 36 /* a UUID, as the kernel writes it */

/* The first line of path, which must be a boot id. */
static int read_boot_id(const char *path, char ret[static BOOT_ID_LEN + 1])
{
        _cleanup_close_ int fd = -EBADF;
        char buf[BOOT_ID_LEN + 2];
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        n = read(fd, buf, sizeof(buf));
        if (n < 0)
                return negative_errno();
        if (n < BOOT_ID_LEN || (n > BOOT_ID_LEN && buf[BOOT_ID_LEN] != '\n'))
                return -EBADMSG;
        memcpy(ret, buf, BOOT_ID_LEN);
        ret[BOOT_ID_LEN] = '\0';
        return 0;
}

int state_boot_is_current(const char *state_dir)
{
        _cleanup_free_ char *path = NULL;
        char noted[BOOT_ID_LEN + 1], current[BOOT_ID_LEN + 1];
        int r;

        if (asprintf(&path, "%s/boot-id", state_dir) < 0)
                return -ENOMEM;
        r = read_boot_id(path, noted);
        if (r < 0)
                return r;
        r = read_boot_id(BOOT_ID_FILE, current);
        if (r < 0)
                return r;
        return streq(noted, current);
}

int state_note_boot(const char *state_dir)
{
        char current[BOOT_ID_LEN + 2];
        int r;

        r = read_boot_id(BOOT_ID_FILE, current);
        if (r < 0)
                return r;
        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        strcat(current, "\n");
        return state_write_file(state_dir, "boot-id", current);
}

int state_lock_open(const char *state_dir, int *ret_fd)
{
        _cleanup_free_ char *path = NULL;
        int fd;

        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        if (asprintf(&path, "%s/lock", state_dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return negative_errno();
        *ret_fd = fd;
        return 0;
}

/* The pid of the lock's holder, for the next one's message only. */
static void lock_note_holder(int fd)
{
        char text[16];
        int n = snprintf(text, sizeof(text), "%d\n", (int)getpid());

        if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)n, 0) != n)
                return; /* the lock is held all the same: the next one's message misses the pid */
}

int state_lock_try(int fd, pid_t *ret_holder)
{
        char text[16];
        ssize_t n;

        *ret_holder = 0;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                lock_note_holder(fd);
                return 0;
        }
        if (errno != EWOULDBLOCK)
                return negative_errno();
        n = pread(fd, text, sizeof(text) - 1, 0);
        if (n > 0) {
                text[n] = '\0';
                *ret_holder = (pid_t)strtol(text, NULL, 10);
        }
        return -EWOULDBLOCK;
}

/* A record in the state dir's key=value format. */
static char *format_record(const ManagedDevice *d)
{
        char *contents;

        if (asprintf(&contents,
                    "DISKSEQ=%" PRIu64 "\nOWNER=%u\nBACKING_DEV=%u:%u\nBACKING_INODE=%" PRIu64
                    "\nOFFSET=%" PRIu64 "\nAUTOCLEAR=%d\n",
                    d->diskseq, (unsigned)d->owner, major(d->backing_dev), minor(d->backing_dev),
                    d->backing_inode, d->offset, d->autoclear) < 0)
                return NULL;
        return contents;
}

int state_save_device(const char *state_dir, const ManagedDevice *d)
{
        _cleanup_free_ char *dir = NULL, *name = NULL, *contents = NULL;
        int r;

        r = state_devices_dir(state_dir, &dir);
        if (r < 0)
                return r;
        if (asprintf(&name, "loop%u", d->number) < 0 || !(contents = format_record(d)))
                return -ENOMEM;
        return state_write_file(dir, name, contents);
}

int state_remove_record(const char *state_dir, unsigned number)
{
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/devices/loop%u", state_dir, number) < 0)
                return -ENOMEM;
        if (unlink(path) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

int state_remove_device(const char *state_dir, unsigned number)
{
        (void)state_mark_udev(state_dir, number, false);
        return state_remove_record(state_dir, number);
}

int state_mark_udev(const char *state_dir, unsigned number, bool mark)
{
        _cleanup_free_ char *dir = NULL, *path = NULL;
        int fd;

        if (asprintf(&dir, "%s/udev", state_dir) < 0 || asprintf(&path, "%s/loop%u", dir, number) < 0)
                return -ENOMEM;
        if (!mark)
                return unlink(path) < 0 && errno != ENOENT ? negative_errno() : 0;
        /* Readable by all: udevd runs as root, but the rule is no secret. The directory is made at start
         * (state_prune_udev_marks()); only if someone removed it since is it made here. */
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno == ENOENT) {
                if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                        return negative_errno();
                if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        return negative_errno();
                fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        }
        if (fd < 0)
                return negative_errno();
        close(fd);
        return 0;
}

bool state_udev_marked(const char *state_dir, unsigned number)
{
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/udev/loop%u", state_dir, number) < 0)
                return true; /* not a no */
        return access(path, F_OK) == 0 || errno != ENOENT;
}

void state_prune_udev_marks(const char *state_dir)
{
        _cleanup_free_ char *dir = NULL;
        DIR *d;

        if (asprintf(&dir, "%s/udev", state_dir) < 0)
                return;
        /* Made now rather than with the first mark: the state dir's layout does not change under use. */
        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return;
        d = opendir(dir);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                _cleanup_free_ char *record = NULL;
                unsigned number;

                if (loop_parse_name(de->d_name, &number) < 0)
                        continue;
                if (asprintf(&record, "%s/devices/loop%u", state_dir, number) < 0)
                        break;
                if (access(record, F_OK) < 0 && errno == ENOENT)
                        (void)unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
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

                if (loop_parse_name(de->d_name, &number) < 0)
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

int state_save_mounts(const char *state_dir, char *const *targets)
{
        _cleanup_free_ char *contents = NULL;
        size_t size = 0;
        FILE *f;

        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        f = open_memstream(&contents, &size);
        if (!f)
                return -ENOMEM;
        for (char *const *t = targets; t && *t; t++)
                if (!strchr(*t, '\n'))
                        fprintf(f, "%s\n", *t);
        if (fclose(f) != 0)
                return -ENOMEM;
        return state_write_file(state_dir, "mounts", contents ? contents : "");
}

int state_load_mounts(const char *state_dir, char ***ret)
{
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_strv_free_ char **list = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0;
        ssize_t n;
        int r;

        if (asprintf(&path, "%s/mounts", state_dir) < 0)
                return -ENOMEM;
        list = calloc(1, sizeof(char *));
        if (!list)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f && errno != ENOENT)
                return negative_errno();
        while (f && (n = getline(&line, &size, f)) > 0) {
                if (line[n - 1] == '\n')
                        line[n - 1] = '\0';
                if (line[0] != '/')
                        continue;
                r = strv_consume(&list, strdup(line));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(list);
        return 0;
}

/* ---- attaches in progress ---- */

int state_save_pending(const char *state_dir, const ManagedDevice *d, char **ret_path)
{
        _cleanup_free_ char *dir = NULL, *name = NULL, *path = NULL, *contents = NULL;
        int r;

        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        if (asprintf(&dir, "%s/pending", state_dir) < 0)
                return -ENOMEM;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        /* The record format, with no device yet (diskseq 0). */
        if (asprintf(&name, "attach-%u-%u-%" PRIu64 "-%" PRIu64, major(d->backing_dev),
                    minor(d->backing_dev), d->backing_inode, d->offset) < 0 ||
                asprintf(&path, "%s/%s", dir, name) < 0 || !(contents = format_record(d)))
                return -ENOMEM;
        r = state_write_file(dir, name, contents);
        if (r < 0)
                return r;
        *ret_path = TAKE_PTR(path);
        return 0;
}

char *state_remove_pending(char *path)
{
        if (path)
                (void)unlink(path);
        free(path);
        return NULL;
}

int state_load_pending(const char *state_dir, ManagedDevice **ret_list)
{
        _cleanup_free_ char *dir = NULL;
        ManagedDevice *list = NULL;
        DIR *d;

        if (asprintf(&dir, "%s/pending", state_dir) < 0)
                return -ENOMEM;
        /* Made here, at start, so that the first attach changes nothing in the state dir but its notes. */
        if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
                return negative_errno();
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        d = opendir(dir);
        if (!d) {
                *ret_list = NULL;
                return errno == ENOENT ? 0 : negative_errno();
        }

        for (struct dirent *de; (de = readdir(d));) {
                ManagedDevice dev = { 0 };
                FILE *f;
                int fd, r;

                if (strncmp(de->d_name, "attach-", 7) != 0)
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                (void)unlinkat(dirfd(d), de->d_name, 0);
                if (fd < 0)
                        continue;
                f = fdopen(fd, "r");
                if (!f) {
                        close(fd);
                        continue;
                }
                r = state_parse_device(f, &dev);
                fclose(f);
                if (r < 0)
                        continue;

                ManagedDevice *copy = malloc(sizeof(ManagedDevice));
                if (!copy)
                        continue;
                *copy = dev;
                copy->next = list;
                list = copy;
        }
        closedir(d);
        *ret_list = list;
        return 0;
}
