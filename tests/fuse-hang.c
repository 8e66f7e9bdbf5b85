/* fuse-hang.c: a FUSE file system with one regular file, disk.img, that never answers a read: the robust
 * suite's hung disk image. Lookups, getattr, open, flush and release are answered at once, so opening and
 * stat()ing the file work; a READ request is simply never replied to, so whoever reads waits until this
 * process dies (then the kernel fails the read with ENOTCONN). No worker thread is held by an unanswered
 * read, and the session loop is multi-threaded, so other requests are always served.
 *
 * By default disk.img is 64 MiB and no read is answered. With FUSE_HANG_SOURCE=PATH in the environment it
 * is that file's copy: reads are answered with its bytes, except those that touch the bytes from
 * FUSE_HANG_FROM to FUSE_HANG_TO (byte offsets, the end excluded), which are never answered: an image that
 * stops answering only where, say, a filesystem's journal lies. It may then be opened for writing, and
 * writes go to that file. After SIGUSR1 no read or write is answered any more: an image whose filesystem
 * hangs while it is mounted. With FUSE_HANG_FREEZE=getattr, SIGUSR1 stops only the answers to GETATTR and
 * LOOKUP (reads and writes go on): a file whose attributes nobody can read any more, stat() of it (once the
 * kernel's cached attributes expired, after a second) waits for good. With FUSE_HANG_FREEZE=statfs it
 * stops only the answers to STATFS: statfs() of the filesystem waits, and so does binding a loop device to
 * the file (the kernel asks for the discard granularity).
 *
 * Usage: fuse-hang [-f] [-o allow_other] MOUNTPOINT   (stays in the foreground; stop it with SIGKILL) */
#define FUSE_USE_VERSION 31

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define HANG_NAME "disk.img"
#define HANG_INO 2
#define HANG_SIZE (64 * 1024 * 1024)

/* FUSE_HANG_SOURCE, open (-1: none), its size, and the bytes whose reads hang. */
static int source_fd = -1;
static off_t file_size = HANG_SIZE;
static uint64_t hang_from, hang_to = UINT64_MAX;
/* Set by SIGUSR1: from then on every read and write hangs, or with freeze_getattr every GETATTR and
 * LOOKUP, or with freeze_statfs every STATFS. */
static volatile sig_atomic_t hang_all;
static bool freeze_getattr, freeze_statfs;

/* Reads and writes are answered after SIGUSR1 only when something else hangs instead. */
static bool io_frozen(void)
{
        return hang_all && !freeze_getattr && !freeze_statfs;
}

static void on_usr1(int sig)
{
        (void)sig;
        hang_all = 1;
}

static int hang_stat(fuse_ino_t ino, struct stat *st)
{
        memset(st, 0, sizeof(*st));
        st->st_ino = ino;
        st->st_uid = 0;
        st->st_gid = 0;
        if (ino == FUSE_ROOT_ID) {
                st->st_mode = S_IFDIR | 0755;
                st->st_nlink = 2;
                return 0;
        }
        if (ino == HANG_INO) {
                st->st_mode = S_IFREG | (source_fd >= 0 ? 0666 : 0644);
                st->st_nlink = 1;
                st->st_size = file_size;
                st->st_blocks = file_size / 512;
                st->st_blksize = 4096;
                return 0;
        }
        return -ENOENT;
}

static void hang_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        struct fuse_entry_param e = { .ino = HANG_INO, .attr_timeout = 1.0, .entry_timeout = 1.0 };

        if (hang_all && freeze_getattr)
                return; /* a lookup's answer carries the attributes too */
        if (parent != FUSE_ROOT_ID || strcmp(name, HANG_NAME) != 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        (void)hang_stat(HANG_INO, &e.attr);
        fuse_reply_entry(req, &e);
}

static void hang_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        struct stat st;
        int r = hang_stat(ino, &st);

        (void)fi;
        if (hang_all && freeze_getattr)
                return;
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_attr(req, &st, 1.0);
}

static void hang_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        if (ino != HANG_INO)
                fuse_reply_err(req, EISDIR);
        else if ((fi->flags & O_ACCMODE) != O_RDONLY && source_fd < 0)
                fuse_reply_err(req, EACCES);
        else
                fuse_reply_open(req, fi);
}

/* The point of it all: the request stays unanswered for as long as this process lives (with a source,
 * only one that touches the hung bytes). */
static void hang_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        char *buf;
        ssize_t n;

        (void)ino;
        (void)fi;
        if (source_fd < 0 || io_frozen() || ((uint64_t)off < hang_to && (uint64_t)off + size > hang_from))
                return;
        buf = malloc(size ? size : 1);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        n = pread(source_fd, buf, size, off);
        if (n < 0)
                fuse_reply_err(req, errno);
        else
                fuse_reply_buf(req, buf, (size_t)n);
        free(buf);
}

/* With a source the file may be opened for writing (a loop device bound writable mounts its filesystem
 * read-write, and ext4 then reads its journal): writes go to the source, until SIGUSR1. */
static void hang_write(
        fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
        ssize_t n;

        (void)ino;
        (void)fi;
        if (source_fd < 0 || io_frozen())
                return;
        n = pwrite(source_fd, buf, size, off);
        if (n < 0)
                fuse_reply_err(req, errno);
        else
                fuse_reply_write(req, (size_t)n);
}

static void hang_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        (void)ino;
        (void)fi;
        fuse_reply_err(req, 0);
}

static void hang_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        (void)ino;
        (void)fi;
        fuse_reply_err(req, 0);
}

/* The filesystem's statistics (a loop device's binding asks for them, for its discard granularity). */
static void hang_statfs(fuse_req_t req, fuse_ino_t ino)
{
        struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255 };

        (void)ino;
        if (hang_all && freeze_statfs)
                return;
        fuse_reply_statfs(req, &sv);
}

/* With freeze_getattr, reads must not need the attributes: with auto_inval_data (libfuse's default) the
 * kernel asks for them before a read once they expired, and the reads would hang too. */
static void hang_init(void *userdata, struct fuse_conn_info *conn)
{
        (void)userdata;
        if (freeze_getattr)
                conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

static const struct fuse_lowlevel_ops hang_ops = {
        .init = hang_init,
        .statfs = hang_statfs,
        .lookup = hang_lookup,
        .getattr = hang_getattr,
        .open = hang_open,
        .read = hang_read,
        .write = hang_write,
        .flush = hang_flush,
        .release = hang_release,
};

int main(int argc, char **argv)
{
        struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
        struct fuse_cmdline_opts opts;
        struct fuse_session *se;
        int r = 1;

        const char *source = getenv("FUSE_HANG_SOURCE"), *freeze = getenv("FUSE_HANG_FREEZE");

        if (fuse_parse_cmdline(&args, &opts) != 0)
                return 1;
        freeze_getattr = freeze && strcmp(freeze, "getattr") == 0;
        freeze_statfs = freeze && strcmp(freeze, "statfs") == 0;
        if (source) {
                struct stat st;

                source_fd = open(source, O_RDWR | O_CLOEXEC);
                if (source_fd < 0 || fstat(source_fd, &st) < 0) {
                        perror(source);
                        goto out;
                }
                file_size = st.st_size;
                hang_from = strtoull(getenv("FUSE_HANG_FROM") ?: "0", NULL, 0);
                hang_to = strtoull(getenv("FUSE_HANG_TO") ?: "0", NULL, 0);
        }
        if (opts.show_help || opts.show_version || !opts.mountpoint) {
                fprintf(stderr, "usage: %s [-f] [-o allow_other] MOUNTPOINT\n", argv[0]);
                goto out;
        }
        se = fuse_session_new(&args, &hang_ops, sizeof(hang_ops), NULL);
        if (!se)
                goto out;
        if (signal(SIGUSR1, on_usr1) != SIG_ERR && fuse_set_signal_handlers(se) == 0) {
                if (fuse_session_mount(se, opts.mountpoint) == 0) {
                        /* Always in the foreground: the test kills it by pid. */
                        r = fuse_session_loop_mt(se, 0) == 0 ? 0 : 1;
                        fuse_session_unmount(se);
                }
                fuse_remove_signal_handlers(se);
        }
        fuse_session_destroy(se);
out:
        free(opts.mountpoint);
        fuse_opt_free_args(&args);
        return r;
}
