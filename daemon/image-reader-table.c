/* image-reader-table.c: a bound device's partition table changed in a confined child: the request, the
 * child's change, and loopd's check of the answer. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "format.h"
#include "image-reader-internal.h"
#include "probe.h"
#include "process-util.h"

int reader_child_table(const Request *req, int sock, int devfd)
{
        const TableRequest *t = &req->table;
        _cleanup_free_ char *why = NULL;
        TableAnswer answer = {};
        TablePartition p = {};
        size_t len = 0;

        /* libfdisk writes the table through loopN's page cache, which writes back whole blocks (4 KiB on
         * most devices): the block of GPT's first backup entries also holds the last sectors of a partition
         * that reaches the last usable one, and had the cache kept them from before a write through the
         * partition's node, the table's write would put them back as they were. Its fsync() writes back
         * loopN's dirty pages anyway. */
        probe_drop_cached(devfd);
        switch (t->op) {
        case TABLE_CREATE:
                answer.result = partition_table_create_sized(devfd, req->sector_size, t->label);
                break;
        case TABLE_ADD: {
                const PartitionRequest add = {
                        .offset = t->offset,
                        .size = t->size,
                        .type = t->type,
                        .name = t->name,
                        .bootable = t->bootable,
                };
                answer.result = partition_table_add(devfd, req->sector_size, &add, &p, &why);
                break;
        }
        case TABLE_DELETE:
                answer.result = partition_table_delete(devfd, req->sector_size, t->number, NULL);
                break;
        case TABLE_DELETE_CHECK:
                answer.result = partition_table_delete_check(devfd, req->sector_size, t->number, NULL);
                break;
        default:
                answer.result = -EINVAL;
        }
        (void)close(devfd);
        answer.result = MIN(answer.result, 0);
        answer.number = p.number;
        answer.offset = p.offset;
        answer.size = p.size;
        if (why) {
                /* Cut at a character's start: what is sent stays UTF-8. */
                while (why[len]) {
                        size_t k = MAX(utf8_sequence_length(why + len), (size_t)1);
                        if (len + k >= sizeof(answer.why))
                                break;
                        len += k;
                }
                memcpy(answer.why, why, len);
        }
        return socket_send(sock, &answer, offsetof(TableAnswer, why) + len + 1, NULL, 0, 0);
}

int reader_table_answer_read(int fd, uint32_t sector_size, uint64_t size, int64_t deadline_ms,
        TablePartition *ret, char **ret_why)
{
        TableAnswer a;
        ssize_t k;
        int r;

        do {
                r = fd_wait_until(fd, POLLIN, deadline_ms);
                if (r < 0)
                        return r;
                k = socket_receive(fd, &a, sizeof(a), NULL, 0, MSG_DONTWAIT);
        } while (k == -EAGAIN);
        if (k <= (ssize_t)offsetof(TableAnswer, why))
                return k < 0 && k != -EMSGSIZE ? (int)k : -EIO;
        if (a.why[k - offsetof(TableAnswer, why) - 1] != 0 ||
                strlen(a.why) != (size_t)k - offsetof(TableAnswer, why) - 1 || a.result > 0 ||
                a.result < -4095)
                return -EBADMSG;
        if (a.result < 0) {
                if (ret_why && a.why[0]) {
                        /* The child's words reach the caller: none of its bytes may be a control. */
                        *ret_why = display_escape(a.why);
                        if (!*ret_why)
                                return -ENOMEM;
                }
                return a.result;
        }
        if (!ret)
                return 0;
        if (a.number < 1 || a.number > REQUEST_PARTS_MAX || a.size == 0 || a.offset >= size ||
                a.size > size - a.offset || a.offset % sector_size != 0 || a.size % sector_size != 0)
                return -EBADMSG;
        *ret = (TablePartition){ .number = a.number, .offset = a.offset, .size = a.size };
        return 0;
}

/* Asks a child for t's change of fd (sector_size: 0 for the device's) and reads its answer. */
static int table_ask(ImageReader *reader, int fd, uint32_t sector_size, const TableRequest *t,
        TablePartition *ret, char **ret_why)
{
        _cleanup_free_ Request *req = NULL;
        uint64_t size;
        uint32_t ss;
        Asked asked;
        int r;

        if (ret_why)
                *ret_why = NULL;
        if (fd < 0 ||
                (sector_size != 0 &&
                        (sector_size < 512 || sector_size > 4096 || (sector_size & (sector_size - 1)) != 0)))
                return -EINVAL;
        /* What the new partition is checked against: fd as loopd sees it. */
        r = partition_table_geometry(fd, sector_size, &ss, &size);
        if (r < 0)
                return r;
        req = calloc(1, sizeof(Request));
        if (!req)
                return -ENOMEM;
        req->kind = REQUEST_TABLE;
        req->sector_size = sector_size;
        req->table = *t;
        r = reader_ask(reader, -EBADF, req, offsetof(Request, parts), &fd, 1, &asked);
        if (r >= 0)
                r = reader_table_answer_read(asked.fd, ss, size, asked.deadline_ms, ret, ret_why);
        reader_asked_done(reader, &asked, r >= 0, false);
        return r;
}

/* Copies s into a TableRequest's field of size bytes: -E2BIG when it does not fit. */
static int copy_field(char *field, size_t size, const char *s)
{
        size_t len = strlen(strempty(s));

        if (len >= size)
                return -E2BIG;
        memcpy(field, strempty(s), len + 1);
        return 0;
}

int image_reader_table_create(ImageReader *reader, int fd, uint32_t sector_size, const char *label)
{
        TableRequest t = { .op = TABLE_CREATE };
        PartitionTableKind kind;

        if (partition_table_kind_from_string(label, &kind) < 0 ||
                copy_field(t.label, sizeof(t.label), label) < 0)
                return -EINVAL;
        return table_ask(reader, fd, sector_size, &t, NULL, NULL);
}

int image_reader_table_add(ImageReader *reader, int fd, uint32_t sector_size, const PartitionRequest *req,
        TablePartition *ret, char **ret_why)
{
        TableRequest t = { .op = TABLE_ADD };

        if (ret_why)
                *ret_why = NULL;
        if (!req)
                return -EINVAL;
        /* The face checked both (partition_type_check(), partition_name_check()): none this long is valid.
         */
        if (copy_field(t.type, sizeof(t.type), req->type) < 0 ||
                (t.type[0] && partition_type_check(t.type) < 0))
                return -EINVAL;
        if (copy_field(t.name, sizeof(t.name), req->name) < 0 || partition_name_check(t.name) < 0)
                return -EINVAL;
        t.offset = req->offset;
        t.size = req->size;
        t.bootable = req->bootable;
        return table_ask(reader, fd, sector_size, &t, ret, ret_why);
}

int image_reader_table_delete(
        ImageReader *reader, int fd, uint32_t sector_size, unsigned number, bool check_only)
{
        const TableRequest t = { .op = check_only ? TABLE_DELETE_CHECK : TABLE_DELETE, .number = number };

        return table_ask(reader, fd, sector_size, &t, NULL, NULL);
}
