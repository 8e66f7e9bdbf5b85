/* loopd-fusermount.c: what a FUSE driver that loopd runs in its sandbox finds in place of
 * fusermount. libfuse 2 (fuseiso, fusefat, fuse2fs, exfat-fuse, ntfs-3g here), when it may not mount(2)
 * itself, runs fusermount with a socket in $_FUSE_COMMFD and expects the /dev/fuse fd of a mount fusermount
 * made. loopd made the mount already and handed the driver its fd as fd 3: this sends that fd, and does
 * nothing else. "-u" (unmount) is loopd's to do: nothing here either. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOOPD_FUSE_FD 3

int main(int argc, char *argv[])
{
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } control = {};
        char byte = 0;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr msg = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof(control.buf),
        };
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        const char *commfd = getenv("_FUSE_COMMFD");
        int fd = LOOPD_FUSE_FD;
        char *end;
        long sock;

        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], "-u") == 0)
                        return 0;
        if (!commfd)
                return 1;
        sock = strtol(commfd, &end, 10);
        if (*commfd == '\0' || *end != '\0' || sock < 0 || sock > 65535)
                return 1;
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        return sendmsg((int)sock, &msg, 0) == 1 ? 0 : 1;
}
