/* polkit-agent.c: runs pkttyagent while loopctl waits for a call that may ask for a password. */
#include "polkit-agent.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"

#define AGENT_NOTIFY_FD 3
/* pkttyagent needs one round trip to polkitd to register. If it takes longer than this something is
 * wrong with polkit, and the call goes ahead without a prompt. */
#define AGENT_READY_TIMEOUT_MS (30 * 1000)

/* Closes every fd from 'from' upwards, in a child that is about to exec. */
static void close_fds_from(int from)
{
#ifdef SYS_close_range
        if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
                return;
#endif
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = from; fd < (max > 0 ? max : 65536); fd++)
                (void)close((int)fd);
}

static _Noreturn void agent_exec(int notify_fd, pid_t parent)
{
        sigset_t none;

        /* The agent must not outlive loopctl, even when loopctl is killed. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);

        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);

        /* The agent prompts on the terminal it opens itself. Keep anything else it says off a redirected
         * stdout (--json > file), and its complaints (no polkit on the bus, say) off stderr: loopctl's
         * errors are one line, and the daemon's answer says what went wrong. */
        if (!isatty(STDOUT_FILENO)) {
                int tty = open("/dev/tty", O_WRONLY | O_NOCTTY | O_CLOEXEC);
                if (tty >= 0) {
                        (void)dup2(tty, STDOUT_FILENO);
                        (void)close(tty);
                }
        }
        int null = open("/dev/null", O_WRONLY | O_NOCTTY | O_CLOEXEC);
        if (null >= 0) {
                (void)dup2(null, STDERR_FILENO);
                (void)close(null);
        }

        if (notify_fd == AGENT_NOTIFY_FD) {
                if (fcntl(notify_fd, F_SETFD, 0) < 0)
                        _exit(EXIT_FAILURE);
        } else if (dup2(notify_fd, AGENT_NOTIFY_FD) < 0)
                _exit(EXIT_FAILURE);
        close_fds_from(AGENT_NOTIFY_FD + 1);

        execlp("pkttyagent", "pkttyagent", "--notify-fd", "3", "--fallback", (char *)NULL);
        _exit(EXIT_FAILURE);
}

static void wait_ready(int fd)
{
        struct timespec start, now;

        (void)clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                long elapsed;
                int n;

                (void)clock_gettime(CLOCK_MONOTONIC, &now);
                elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
                if (elapsed >= AGENT_READY_TIMEOUT_MS)
                        return;

                n = poll(&p, 1, (int)(AGENT_READY_TIMEOUT_MS - elapsed));
                if (n < 0 && errno == EINTR)
                        continue;
                /* Closed (registered, or the agent died: either way there is nothing to wait for), or a
                 * byte written, or poll failed. */
                return;
        }
}

pid_t polkit_agent_open(void)
{
        _cleanup_close_ int read_fd = -1, write_fd = -1;
        pid_t parent = getpid(), pid;
        int fds[2];

        if (pipe2(fds, O_CLOEXEC) < 0)
                return 0;
        read_fd = fds[0];
        write_fd = fds[1];

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                return 0;
        if (pid == 0)
                agent_exec(write_fd, parent);

        write_fd = safe_close(write_fd);
        wait_ready(read_fd);
        return pid;
}

pid_t polkit_agent_close(pid_t pid)
{
        if (pid <= 0)
                return 0;

        (void)kill(pid, SIGTERM);
        (void)kill(pid, SIGCONT);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        return 0;
}
