/* hostile-driver.c: a FUSE driver that tries to get out of loopd's sandbox before it serves. The
 * mount-kernel suite puts it in fusefat's place (mount_set_fuse_helper()). It tries what a driver that an
 * image took over would: write to root's files, read files outside its view, become root again, reach the
 * network, make a user namespace, join the keyring, set up io_uring. If any attempt succeeds it says which
 * on stderr and exits 1 without serving (the mount fails); if all fail it becomes the real fusefat with its
 * own arguments (the mount works).
 *
 * Usage: hostile-driver NODE TARGET [-o OPTIONS] [-f]
 *            fusefat's arguments, as loopd runs it. Run under the name hostile-node-writer (a copy), it
 *            tries only to make its read-only device node writable.
 *        hostile-driver --check-only NODE TARGET
 *            only reports: the exit status is the number of attempts that succeeded. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/keyctl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define FUSEFAT "/usr/bin/fusefat"

static int succeeded;

/* One attempt: ok says whether it worked (errno tells why not). */
static void attempt(const char *what, bool ok)
{
        if (ok) {
                fprintf(stderr, "hostile-driver: succeeded: %s\n", what);
                succeeded++;
        }
}

static bool open_works(const char *path, int flags)
{
        int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

        if (fd < 0)
                return false;
        close(fd);
        return true;
}

/* A TCP connection to address:port, given up after 2 s. */
static bool connect_works(const char *address, unsigned short port)
{
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
        struct timeval timeout = { .tv_sec = 2 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;

        if (fd < 0)
                return false;
        (void)inet_pton(AF_INET, address, &sa.sin_addr);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
        ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        return ok;
}

static bool socket_works(int family, int type)
{
        int fd = socket(family, type | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return false;
        close(fd);
        return true;
}

/* fork() in a new user namespace (glibc's clone3(), or clone() when that is refused). */
static bool clone_newuser_works(void)
{
        long pid = syscall(SYS_clone, (unsigned long)CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
        int status;

        if (pid == 0)
                _exit(0);
        if (pid < 0)
                return false;
        (void)waitpid((pid_t)pid, &status, 0);
        return true;
}

static bool io_uring_works(void)
{
        char params[120] = {}; /* struct io_uring_params: zeroes ask for nothing */
        long fd = syscall(SYS_io_uring_setup, 1, params);

        if (fd < 0)
                return false;
        close((int)fd);
        return true;
}

static void attempt_all(const char *node, const char *target)
{
        char copy[PATH_MAX], secret[PATH_MAX + 16];

        /* Root's files in its view: /etc is the sandbox's own, /usr the host's, both read-only to it. */
        attempt("open /etc/passwd for appending", open_works("/etc/passwd", O_WRONLY | O_APPEND));
        attempt("open /usr/bin/env for writing", open_works("/usr/bin/env", O_WRONLY));
        /* Its read-only device (a read-only mount) for writing. */
        attempt("open its device node for writing", open_works(node, O_WRONLY));

        /* The host's files: the test's root-only file next to the mountpoint, and what every host has. */
        snprintf(copy, sizeof(copy), "%s", target);
        snprintf(secret, sizeof(secret), "%s/secret-file", dirname(copy));
        attempt("open the secret file next to the mountpoint", open_works(secret, O_RDONLY));
        attempt("open /etc/shadow", open_works("/etc/shadow", O_RDONLY));
        attempt("open /root", open_works("/root", O_RDONLY | O_DIRECTORY));
        attempt("open /home", open_works("/home", O_RDONLY | O_DIRECTORY));

        /* Root again. */
        attempt("setuid(0)", setuid(0) == 0);
        attempt("setresuid(0, 0, 0)", setresuid(0, 0, 0) == 0);

        /* The network. */
        attempt("connect to 1.1.1.1:53", connect_works("1.1.1.1", 53));
        attempt("connect to 127.0.0.1:22", connect_works("127.0.0.1", 22));
        attempt("make an AF_INET socket", socket_works(AF_INET, SOCK_DGRAM));
        attempt("make an AF_NETLINK socket", socket_works(AF_NETLINK, SOCK_RAW));
        attempt("make an AF_PACKET socket", socket_works(AF_PACKET, SOCK_RAW));

        /* Root of a namespace of its own, the kernel's keyring, the kernel's large attack surfaces. */
        attempt("a child in a new user namespace", clone_newuser_works());
        attempt("unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER) == 0);
        attempt("keyctl(KEYCTL_JOIN_SESSION_KEYRING)",
                syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) >= 0);
        attempt("io_uring_setup", io_uring_works());
}

/* The driver owns its device node: may it make the node of a read-only mount writable? (Not on the host:
 * there it would change the host's node.) */
static void attempt_node_chmod(const char *node)
{
        attempt("make its device node writable and open it for writing",
                chmod(node, 0600) == 0 && open_works(node, O_WRONLY));
}

int main(int argc, char *argv[])
{
        if (argc == 4 && strcmp(argv[1], "--check-only") == 0) {
                attempt_all(argv[2], argv[3]);
                return succeeded;
        }
        if (argc < 3 || argv[1][0] == '-') {
                fprintf(stderr,
                        "usage: hostile-driver NODE TARGET [-o OPTIONS] | --check-only NODE TARGET\n");
                return 2;
        }

        /* Run as hostile-node-writer (a copy under that name): that attempt only. */
        if (strcmp(argv[0], "hostile-node-writer") == 0)
                attempt_node_chmod(argv[1]);
        else
                attempt_all(argv[1], argv[2]);
        if (succeeded > 0)
                return 1;
        /* Nothing got out: serve as fusefat would (its exe, its name). */
        argv[0] = (char *)"fusefat";
        execv(FUSEFAT, argv);
        fprintf(stderr, "hostile-driver: %s: %s\n", FUSEFAT, strerror(errno));
        return 1;
}
