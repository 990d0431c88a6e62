/* SPDX-License-Identifier: MIT */
/*
 * Buffered streams over fds and memory. Writers stage output in one buffer plus a list of
 * segments (buffer runs and zero-copy caller memory) that go out with writev(2); readers keep
 * one buffer that grows only as data arrives, so a lying length cannot make us allocate.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel/child.h"
#include "channel/file_save.h"
#include "channel/scm.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "format/stream.h"

#define WRITE_BUF_SIZE (2u << 20)
#define FLUSH_THRESHOLD (1u << 20)
#define READ_BUF_SIZE (1u << 20)
/* Referenced memory is checksummed (volatile memory copied and checksummed) in slices of this
 * size, each right before it is written: small enough that writev(2) finds it in L2. */
#define WRITE_SLICE (256u << 10)
#define BATCH_IOV 64
/* A memory sink's copies from this size on go past the cache: nothing reads them back soon. */
#define STREAM_COPY_MIN (64u << 10)

static const uint64_t default_limits[4] = {
    [CPR_STREAM_LIMIT_RECORD] = 256ull << 20,
    [CPR_STREAM_LIMIT_STRING] = 1ull << 20,
    [CPR_STREAM_LIMIT_ALLOC] = 64ull << 20,
};

static cpr_stream *stream_alloc(enum cpr_stream_kind kind, int fd, unsigned int flags)
{
    cpr_stream *s = g_new0(cpr_stream, 1);
    s->kind = kind;
    s->fd = fd;
    s->flags = flags;
    s->cancel_fd = -1;
    s->restore_fl = -1;
    struct stat st;
    s->file_pos = -1;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        s->is_socket = S_ISSOCK(st.st_mode);
        s->is_pipe = S_ISFIFO(st.st_mode);
        if (S_ISREG(st.st_mode) && kind == CPR_SINK_FD)
            s->file_pos = lseek(fd, 0, SEEK_CUR);
    }
    memcpy(s->limit, default_limits, sizeof(s->limit));
    return s;
}

/* Both fd constructors: argument checks, then a stream with a buffer of `cap` bytes. */
static int fd_stream_new(const char *fn, enum cpr_stream_kind kind, size_t cap, int fd, unsigned int flags,
                         cpr_stream **out, cpr_error **errp)
{
    if (!out)
        return cpr_error_set(errp, -EINVAL, "%s: out is NULL", fn);
    if (flags & ~CPR_STREAM_OWN_FD)
        return cpr_error_set(errp, -EINVAL, "%s: unknown flags 0x%x", fn, flags);
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return cpr_error_set(errp, -EBADF, "%s: fd %d is not open", fn, fd);
    cpr_stream *s = stream_alloc(kind, fd, flags);
    s->cap = cap;
    s->buf = g_malloc(cap);
    if (kind == CPR_SINK_FD)
        s->segs = g_array_new(FALSE, FALSE, sizeof(struct cpr_seg));
    else
        s->rbuf = s->buf;
    *out = s;
    return 0;
}

CPR_API int cpr_stream_new_fd_writer(int fd, unsigned int flags, cpr_stream **out, cpr_error **errp)
{
    return fd_stream_new("cpr_stream_new_fd_writer", CPR_SINK_FD, WRITE_BUF_SIZE, fd, flags, out, errp);
}

CPR_API int cpr_stream_new_fd_reader(int fd, unsigned int flags, cpr_stream **out, cpr_error **errp)
{
    return fd_stream_new("cpr_stream_new_fd_reader", CPR_SRC_FD, READ_BUF_SIZE, fd, flags, out, errp);
}

CPR_API int cpr_stream_new_mem_sink(size_t capacity_hint, cpr_stream **out, cpr_error **errp)
{
    if (!out)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_new_mem_sink: out is NULL");
    cpr_stream *s = stream_alloc(CPR_SINK_MEM, -1, 0);
    s->cap = capacity_hint ? capacity_hint : 64 * 1024;
    s->buf = g_try_malloc(s->cap);
    if (!s->buf) {
        g_free(s);
        return cpr_error_set(errp, -ENOMEM, "cpr_stream_new_mem_sink: cannot allocate %zu bytes", capacity_hint);
    }
    *out = s;
    return 0;
}

CPR_API int cpr_stream_new_mem_sink_buf(void *buf, size_t capacity, cpr_stream **out, cpr_error **errp)
{
    if (!out || (!buf && capacity))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_new_mem_sink_buf: %s is NULL", out ? "buf" : "out");
    cpr_stream *s = stream_alloc(CPR_SINK_MEMBUF, -1, 0);
    s->buf = buf;
    s->cap = capacity;
    *out = s;
    return 0;
}

CPR_API int cpr_stream_new_mem_source(const void *data, size_t len, cpr_stream **out, cpr_error **errp)
{
    if (!out || (!data && len))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_new_mem_source: %s is NULL", out ? "data" : "out");
    cpr_stream *s = stream_alloc(CPR_SRC_MEM, -1, 0);
    s->rbuf = data;
    s->rlen = len;
    s->eof = 1;
    *out = s;
    return 0;
}

CPR_API int cpr_stream_mem_data(cpr_stream *s, const void **data, size_t *len, cpr_error **errp)
{
    if (!s || !data || !len)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_mem_data: NULL argument");
    if (s->kind != CPR_SINK_MEM && s->kind != CPR_SINK_MEMBUF)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_mem_data: not a memory sink");
    *data = s->buf;
    *len = s->committed;
    return 0;
}

CPR_API int cpr_stream_mem_steal(cpr_stream *s, void **data, size_t *len, cpr_error **errp)
{
    if (!s || !data || !len)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_mem_steal: NULL argument");
    if (s->kind != CPR_SINK_MEM)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_mem_steal: not a library-allocated memory sink");
    if (s->in_record)
        return cpr_error_set(errp, -EBUSY, "cpr_stream_mem_steal: a record is still open");
    *data = s->buf;
    *len = s->committed;
    s->buf = NULL;
    s->cap = s->len = s->committed = 0;
    return 0;
}

void cpr_stream_abandon(cpr_stream *s)
{
    if (!s)
        return;
    s->abandoned = 1;
    cpr_file_save_discard(s->file_save);
    s->file_save = NULL;
}

void cpr_stream_set_cancel_fd(cpr_stream *s, int cancel_fd)
{
    s->cancel_fd = cancel_fd;
    if (!s->is_pipe || s->fd < 0)
        return;
    /* A blocking write into a pipe nobody reads never returns: wait in poll() instead. */
    int fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK) || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return;
    if (!(s->flags & CPR_STREAM_OWN_FD))
        s->restore_fl = fl;
}

void cpr_stream_set_io(cpr_stream *s, const struct cpr_stream_io *io, void *opaque)
{
    s->io = io;
    s->io_opaque = opaque;
}

/* Waits until fd is ready for `events`, or fails with -ECANCELED once the cancel fd is readable. */
static int wait_ready(cpr_stream *s, short events, cpr_error **errp)
{
    struct pollfd p[2] = { { .fd = s->fd, .events = events }, { .fd = s->cancel_fd, .events = POLLIN } };
    for (;;) {
        int n = poll(p, s->cancel_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno != EINTR)
            return cpr_error_set_errno(errp, -errno, "stream: poll on fd %d", s->fd);
        if (n > 0 && (p[1].revents & POLLIN))
            return cpr_error_set(errp, -ECANCELED, "stream: cancelled while waiting for fd %d", s->fd);
        if (n > 0 && p[0].revents)
            return 0;
    }
}

/* The command's end once its stream is done with it; what it means for the job (a writer's). */
static int reap_status(cpr_stream *s, pid_t pid, cpr_error **errp)
{
    int writer = cpr_stream_is_writer(s), status = 0;
    /* A writer's command must finish the stream it took; a job's reader has what it needs and
     * owes the command nothing more. Streams outside a job (cpr_stream_close()'s callers, no
     * cancel fd) keep waiting as they always did. */
    int bound = writer || s->cancel_fd < 0 ? -1 : CPR_CHILD_GRACE_MS;
    int r = s->abandoned ? 0 : cpr_child_wait(pid, bound, s->cancel_fd, &status);
    if (r == 1) {
        if (!writer)
            return 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            return cpr_error_set(errp, -EIO, "command '%s' exited with status %d", s->command, WEXITSTATUS(status));
        if (WIFSIGNALED(status))
            return cpr_error_set(errp, -EIO, "command '%s' was killed by signal %d", s->command, WTERMSIG(status));
        return 0;
    }
    if (r < 0 && r != -ECANCELED)
        return cpr_error_set_errno(errp, r, "waiting for command '%s'", s->command);
    int st = cpr_child_stop(pid);
    if (st < 0)
        return cpr_error_set_errno(errp, st, "stopping command '%s'", s->command);
    if (r == -ECANCELED && writer)
        return cpr_error_set(errp, -ECANCELED, "command '%s' stopped: migration cancelled", s->command);
    return 0;
}

int cpr_stream_reap_child(cpr_stream *s, cpr_error **errp)
{
    if (s->restore_fl >= 0 && s->fd >= 0)
        fcntl(s->fd, F_SETFL, s->restore_fl);
    s->restore_fl = -1;
    if ((s->flags & CPR_STREAM_OWN_FD) && s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (!s->child)
        return 0;
    pid_t pid = (pid_t)s->child;
    s->child = 0;
    return reap_status(s, pid, errp);
}

CPR_API void cpr_stream_free(cpr_stream *s)
{
    if (!s)
        return;
    cpr_stream_reap_child(s, NULL);
    cpr_file_save_discard(s->file_save); /* never closed: the save did not complete */
    g_free(s->command);
    if (s->kind != CPR_SINK_MEMBUF)
        g_free(s->buf);
    if (s->staged)
        munmap(s->staged, s->staged_len);
    if (s->segs)
        g_array_free(s->segs, TRUE);
    free(s->bounce);
    if (s->open_ids)
        g_hash_table_destroy(s->open_ids);
    if (s->used_ids)
        g_hash_table_destroy(s->used_ids);
    if (s->used_names)
        g_hash_table_destroy(s->used_names);
    g_free(s->cur_name);
    if (s->regions)
        g_ptr_array_free(s->regions, TRUE);
    g_free(s);
}

CPR_API int cpr_stream_set_limit(cpr_stream *s, cpr_stream_limit limit, uint64_t value, cpr_error **errp)
{
    if (!s)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_set_limit: stream is NULL");
    if (limit < CPR_STREAM_LIMIT_RECORD || limit > CPR_STREAM_LIMIT_ALLOC)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_set_limit: unknown limit %d", (int)limit);
    if (value == 0)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_set_limit: limit %d must be at least 1", (int)limit);
    s->limit[limit] = value;
    return 0;
}

CPR_API uint64_t cpr_stream_get_limit(const cpr_stream *s, cpr_stream_limit limit)
{
    if (!s || limit < CPR_STREAM_LIMIT_RECORD || limit > CPR_STREAM_LIMIT_ALLOC)
        return 0;
    return s->limit[limit];
}

CPR_API uint64_t cpr_stream_offset(const cpr_stream *s)
{
    if (!s)
        return 0;
    return cpr_stream_is_writer(s) ? s->offset : s->offset + s->rpos;
}

/* ---- writer ---- */

static int writer_error(cpr_stream *s, int code, cpr_error **errp, const char *what)
{
    if (!s->error)
        s->error = code;
    return cpr_error_set(errp, code, "%s", what);
}

/* Makes room for `more` bytes in buf. Memory sinks grow (or report ENOSPC). */
static int reserve(cpr_stream *s, size_t more, cpr_error **errp)
{
    if (s->error)
        return cpr_error_set(errp, s->error, "stream: an earlier write failed");
    if (more > SIZE_MAX / 2 - s->len)
        return writer_error(s, -ENOMEM, errp, "stream: write buffer would exceed the address space");
    if (s->len + more <= s->cap)
        return 0;
    if (s->kind == CPR_SINK_MEMBUF)
        return writer_error(s, -ENOSPC, errp, "stream: memory sink is full");
    if (s->kind == CPR_SINK_FD && !s->in_record) {
        int ret = cpr_stream_maybe_flush(s, 1, errp);
        if (ret < 0)
            return ret;
        if (more <= s->cap)
            return 0;
    }
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + more)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    uint8_t *nbuf = g_try_realloc(s->buf, cap);
    if (!nbuf)
        return writer_error(s, -ENOMEM, errp, "stream: cannot grow the write buffer");
    s->buf = nbuf;
    s->cap = cap;
    return 0;
}

int cpr_stream_append(cpr_stream *s, const void *data, size_t len, cpr_error **errp)
{
    int ret = reserve(s, len, errp);
    if (ret < 0)
        return ret;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->offset += len;
    return 0;
}

/* writev that never raises SIGPIPE: sockets say so per call, pipes get it blocked and any
 * SIGPIPE this write caused consumed before it is unblocked. */
static ssize_t quiet_writev(cpr_stream *s, struct iovec *iov, int cnt)
{
    if (s->is_socket) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
        return sendmsg(s->fd, &msg, MSG_NOSIGNAL);
    }
    if (!s->is_pipe)
        return writev(s->fd, iov, cnt);
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    ssize_t n = writev(s->fd, iov, cnt);
    int saved = errno;
    if (n < 0 && errno == EPIPE && !was_pending) {
        struct timespec zero = { 0, 0 };
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

static int write_all_iov(cpr_stream *s, struct iovec *iov, int cnt, cpr_error **errp)
{
    while (cnt > 0) {
        int batch = cnt > IOV_MAX ? IOV_MAX : cnt;
        ssize_t n = s->io ? s->io->writev(s->io_opaque, iov, batch) : quiet_writev(s, iov, batch);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int code;
            if (s->io && errno != EAGAIN)
                code = cpr_error_set(errp, -errno, "stream: write to fd %d failed: %s", s->fd,
                                     s->io->last_error(s->io_opaque));
            else if (errno != EAGAIN)
                code = cpr_error_set_errno(errp, -errno, "stream: write to fd %d failed", s->fd);
            else if ((code = wait_ready(s, POLLOUT, errp)) == 0)
                continue;
            if (!s->error)
                s->error = code;
            return code;
        }
        s->written += (uint64_t)n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

/* Output gathered for one writev(2): a few segments, at most about a slice of bulk data. */
struct batch {
    struct iovec iov[BATCH_IOV];
    int cnt;
    size_t bytes;
};

static int batch_write(cpr_stream *s, struct batch *b, cpr_error **errp)
{
    int ret = b->cnt ? write_all_iov(s, b->iov, b->cnt, errp) : 0;
    b->cnt = 0;
    b->bytes = 0;
    return ret;
}

static int batch_add(cpr_stream *s, struct batch *b, const void *base, size_t len, cpr_error **errp)
{
    if (b->cnt == BATCH_IOV) {
        int ret = batch_write(s, b, errp);
        if (ret < 0)
            return ret;
    }
    b->iov[b->cnt].iov_base = (void *)base;
    b->iov[b->cnt++].iov_len = len;
    b->bytes += len;
    return 0;
}

/* Where in the file, modulo 64, the next byte added to the batch lands; 0 when unknown. */
static size_t dest_phase(const cpr_stream *s, const struct batch *b)
{
    return s->file_pos < 0 ? 0 : (size_t)(((uint64_t)s->file_pos + s->written + b->bytes) & 63);
}

/* Writes one segment; `crc` is extended over it when it belongs to the deferred checksum. */
static int write_seg(cpr_stream *s, struct batch *b, const struct cpr_seg *g, int in_crc, uint32_t *crc,
                     cpr_error **errp)
{
    int ret = 0;
    if (g->kind == CPR_SEG_BUF) {
        const uint8_t *base = s->buf + g->off;
        if (in_crc)
            *crc = cpr_crc32c(*crc, base, g->len);
        return batch_add(s, b, base, g->len, errp);
    }
    /* Unchanging memory goes out in place unless it is misaligned with its place in a file. */
    int copy = g->kind == CPR_SEG_VOL ||
               (s->file_pos >= 0 && (((uintptr_t)g->ext - dest_phase(s, b)) & 63) != 0);
    if (copy && !s->bounce && posix_memalign((void **)&s->bounce, 4096, WRITE_SLICE + 64) != 0) {
        s->bounce = NULL;
        if (g->kind == CPR_SEG_VOL)
            return writer_error(s, -ENOMEM, errp, "stream: cannot allocate the bounce buffer");
        copy = 0;
    }
    for (size_t done = 0; ret == 0 && done < g->len;) {
        size_t n = MIN(g->len - done, (size_t)WRITE_SLICE);
        const uint8_t *src = g->ext + done;
        if (copy) {
            /* The bounce is reused by the next slice: this one goes out now. */
            if ((ret = batch_write(s, b, errp)) < 0)
                break;
            uint8_t *dst = s->bounce + dest_phase(s, b);
            *crc = cpr_crc32c_copy(*crc, dst, src, n);
            if ((ret = batch_add(s, b, dst, n, errp)) == 0)
                ret = batch_write(s, b, errp);
        } else {
            *crc = cpr_crc32c(*crc, src, n);
            if ((ret = batch_add(s, b, src, n, errp)) == 0 && b->bytes >= WRITE_SLICE)
                ret = batch_write(s, b, errp);
        }
        done += n;
    }
    return ret;
}

int cpr_stream_maybe_flush(cpr_stream *s, int force, cpr_error **errp)
{
    if (s->kind != CPR_SINK_FD) {
        if (!s->in_record)
            s->committed = s->len;
        return 0;
    }
    if (s->error)
        return cpr_error_set(errp, s->error, "stream: an earlier write to fd %d failed", s->fd);
    if (s->in_record || (!force && !s->has_refs && s->len < FLUSH_THRESHOLD))
        return 0;
    /* Only the last record can have a deferred checksum: a record with references is written
     * when it ends. Its segments from defer_seg on, and the tail of buf up to its trailer, are
     * its payload. */
    int deferred = s->rec_deferred;
    uint32_t crc = s->rec_crc;
    struct batch b = { .cnt = 0 };
    int ret = 0;
    guint nseg = s->segs->len;
    for (guint i = 0; ret == 0 && i < nseg; i++)
        ret = write_seg(s, &b, &g_array_index(s->segs, struct cpr_seg, i), deferred && i >= s->defer_seg, &crc, errp);
    if (ret == 0 && s->len > s->run_start) {
        if (deferred) {
            crc = cpr_crc32c(crc, s->buf + s->run_start, s->defer_trailer - s->run_start);
            uint32_t le = GUINT32_TO_LE(crc);
            memcpy(s->buf + s->defer_trailer, &le, sizeof(le));
        }
        ret = batch_add(s, &b, s->buf + s->run_start, s->len - s->run_start, errp);
    }
    if (ret == 0)
        ret = batch_write(s, &b, errp);
    g_array_set_size(s->segs, 0);
    s->len = s->run_start = 0;
    s->has_refs = 0;
    s->rec_deferred = 0;
    return ret;
}

CPR_API int cpr_stream_flush(cpr_stream *s, cpr_error **errp)
{
    if (!s || !cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_flush: not a writer");
    if (s->in_record)
        return cpr_error_set(errp, -EBUSY, "cpr_stream_flush: a record is still open");
    return cpr_stream_maybe_flush(s, 1, errp);
}

static int payload_check(cpr_stream *s, size_t len, cpr_error **errp)
{
    if (!cpr_stream_is_writer(s) || !s->in_record)
        return cpr_error_set(errp, -EINVAL, "stream: put outside a record");
    if (s->rec_len + len > s->limit[CPR_STREAM_LIMIT_RECORD] || s->rec_len + len < s->rec_len)
        return cpr_error_set(errp, -EMSGSIZE,
                             "stream: record at offset %" G_GUINT64_FORMAT " would exceed the record limit of %" G_GUINT64_FORMAT " bytes",
                             (guint64)(s->offset - s->rec_len - 16), (guint64)s->limit[CPR_STREAM_LIMIT_RECORD]);
    return 0;
}

CPR_API int cpr_stream_put_bytes(cpr_stream *s, const void *data, size_t len, cpr_error **errp)
{
    if (!s || (!data && len))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_put_bytes: NULL argument");
    int ret = payload_check(s, len, errp);
    if (ret < 0 || len == 0)
        return ret;
    ret = reserve(s, len, errp);
    if (ret < 0)
        return ret;
    /* Copied and checksummed in one pass; a record whose checksum is deferred checksums
     * these bytes when it is written. */
    if (s->rec_deferred)
        memcpy(s->buf + s->len, data, len);
    else if (s->kind != CPR_SINK_FD && len >= STREAM_COPY_MIN)
        s->rec_crc = cpr_crc32c_copy_stream(s->rec_crc, s->buf + s->len, data, len);
    else
        s->rec_crc = cpr_crc32c_copy(s->rec_crc, s->buf + s->len, data, len);
    s->len += len;
    s->offset += len;
    s->rec_len += len;
    return 0;
}

/* Adds caller memory as a segment whose checksum is taken when the record is written. */
static int put_deferred(cpr_stream *s, const void *data, size_t len, enum cpr_seg_kind kind, cpr_error **errp)
{
    int ret = payload_check(s, len, errp);
    if (ret < 0)
        return ret;
    if (s->error)
        return cpr_error_set(errp, s->error, "stream: an earlier write failed");
    if (s->len > s->run_start) {
        struct cpr_seg run = { NULL, s->run_start, s->len - s->run_start, CPR_SEG_BUF };
        g_array_append_val(s->segs, run);
        s->run_start = s->len;
    }
    if (!s->rec_deferred) {
        /* rec_crc covers the payload so far; the rest is checksummed at the write. */
        s->rec_deferred = 1;
        s->defer_seg = s->segs->len;
    }
    struct cpr_seg ref = { data, 0, len, kind };
    g_array_append_val(s->segs, ref);
    s->has_refs = 1;
    s->offset += len;
    s->rec_len += len;
    return 0;
}

CPR_API int cpr_stream_put_ref(cpr_stream *s, const void *data, size_t len, cpr_error **errp)
{
    if (!s || (!data && len))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_put_ref: NULL argument");
    /* Small pieces, and memory sinks (where a copy is the write), go through the buffer. */
    if (s->kind != CPR_SINK_FD || len < 2048)
        return cpr_stream_put_bytes(s, data, len, errp);
    return put_deferred(s, data, len, CPR_SEG_REF, errp);
}

int cpr_stream_put_volatile(cpr_stream *s, const void *data, size_t len, cpr_error **errp)
{
    if (!s || (!data && len))
        return cpr_error_set(errp, -EINVAL, "cpr_stream_put_volatile: NULL argument");
    if (s->kind != CPR_SINK_FD || len < 2048)
        return cpr_stream_put_bytes(s, data, len, errp);
    return put_deferred(s, data, len, CPR_SEG_VOL, errp);
}

#define DEFINE_PUT(bits)                                                                  \
    CPR_API int cpr_stream_put_u##bits(cpr_stream *s, uint##bits##_t v, cpr_error **errp) \
    {                                                                                     \
        uint##bits##_t le = GUINT##bits##_TO_LE(v);                                       \
        return cpr_stream_put_bytes(s, &le, sizeof(le), errp);                            \
    }
#define GUINT8_TO_LE(v) (v)
#define GUINT8_FROM_LE(v) (v)
DEFINE_PUT(8)
DEFINE_PUT(16)
DEFINE_PUT(32)
DEFINE_PUT(64)

int cpr_stream_skip_out(cpr_stream *s, uint64_t len, uint64_t *file_off, cpr_error **errp)
{
    if (s->kind != CPR_SINK_FD || s->file_pos < 0)
        return cpr_error_set(errp, -ESPIPE, "stream: a region of fixed offsets needs a seekable file, "
                             "and this stream is not one (a socket, a pipe or memory)");
    if (s->in_record)
        return cpr_error_set(errp, -EBUSY, "stream: a region cannot start inside a record");
    int ret = cpr_stream_maybe_flush(s, 1, errp);
    if (ret < 0)
        return ret;
    off_t here = lseek(s->fd, 0, SEEK_CUR);
    if (here < 0 || lseek(s->fd, (off_t)len, SEEK_CUR) < 0)
        return cpr_error_set_errno(errp, -errno, "stream: seeking past a region of %" G_GUINT64_FORMAT " bytes",
                                   (guint64)len);
    *file_off = (uint64_t)here;
    s->offset += len;
    s->written += len;
    s->skipped += len;
    return 0;
}

uint64_t cpr_stream_skipped_out(const cpr_stream *s)
{
    return s->skipped;
}

int64_t cpr_stream_file_offset(const cpr_stream *s)
{
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return -1;
    if (cpr_stream_is_writer(s)) {
        if (s->kind != CPR_SINK_FD || s->len)
            return -1;
    } else if (s->kind != CPR_SRC_FD || s->rlen != s->rpos) {
        return -1;
    }
    return lseek(s->fd, 0, SEEK_CUR);
}

int cpr_stream_skip_in(cpr_stream *s, uint64_t len, uint64_t *have, cpr_error **errp)
{
    uint64_t done = MIN((uint64_t)cpr_stream_avail(s), len);
    s->rpos += done;
    if (have)
        *have = done;
    if (done == len)
        return 0;
    if (s->kind != CPR_SRC_FD || s->eof)
        return -ENODATA;
    s->offset += s->rpos;
    s->rpos = s->rlen = 0;
    s->view = NULL;
    struct stat st;
    if (fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t here = lseek(s->fd, 0, SEEK_CUR);
        if (here >= 0) {
            uint64_t left = len - done;
            uint64_t in_file = st.st_size > here ? (uint64_t)(st.st_size - here) : 0;
            if (in_file < left) {
                if (have)
                    *have = done + in_file;
                return -ENODATA;
            }
            if (lseek(s->fd, (off_t)left, SEEK_CUR) < 0)
                return cpr_error_set_errno(errp, -errno, "stream: seeking over a region");
            s->offset += left;
            if (have)
                *have = len;
            return 0;
        }
    }
    while (done < len) {
        size_t step = (size_t)MIN(len - done, (uint64_t)(1u << 20));
        int ret = cpr_stream_need(s, step, errp);
        if (ret == -ENODATA)
            step = cpr_stream_avail(s);
        else if (ret < 0)
            return ret;
        cpr_stream_consume(s, step);
        done += step;
        if (have)
            *have = done;
        if (ret == -ENODATA)
            return done == len ? 0 : -ENODATA;
    }
    return 0;
}

/* ---- reader ---- */

/* The read buffer takes over the `tail` unread bytes at `from` (none, in practice: the reader
 * never reads past the record it needs), growing if it must. */
static int buf_take_tail(cpr_stream *s, const uint8_t *from, size_t tail)
{
    if (tail > s->cap) {
        uint8_t *nbuf = g_try_realloc(s->buf, tail);
        if (!nbuf)
            return -ENOMEM;
        s->buf = nbuf;
        s->cap = tail;
    }
    memmove(s->buf, from, tail);
    return 0;
}

/* The staged record is behind the reader (or the stream ends): back to the read buffer, with
 * whatever of the mapping was not consumed. */
static int stage_drop(cpr_stream *s, cpr_error **errp)
{
    size_t tail = s->rlen - s->rpos;
    if (buf_take_tail(s, s->rbuf + s->rpos, tail) < 0)
        return cpr_error_set(errp, -ENOMEM, "stream: cannot grow the read buffer to %zu bytes", tail);
    munmap(s->staged, s->staged_len);
    s->staged = NULL;
    s->offset += s->rpos;
    s->rbuf = s->buf;
    s->rpos = 0;
    s->rlen = tail;
    s->view = NULL;
    return 0;
}

/* Bytes of the stream go through the read buffer into memfd mfd, n of them or up to the end
 * (*got says how many): 0, -ENODATA at the end, <0 on an error. */
static int stage_copy(cpr_stream *s, int mfd, size_t n, size_t *got, cpr_error **errp)
{
    int ret = 0;
    while (ret == 0 && *got < n) {
        size_t step = MIN(n - *got, (size_t)READ_BUF_SIZE);
        ret = cpr_stream_need(s, step, errp);
        if (ret == -ENODATA)
            step = cpr_stream_avail(s);
        else if (ret < 0)
            return ret;
        int w = cpr_io_pwrite_all(mfd, s->rbuf + s->rpos, step, *got);
        if (w < 0)
            return cpr_error_set_errno(errp, w, "stream: staging a record of %zu bytes in a memfd", n);
        cpr_stream_consume(s, step);
        *got += step;
    }
    return ret;
}

void cpr_stream_stage_large_records(cpr_stream *s)
{
    s->stage_large = 1;
}

int cpr_stream_need_record(cpr_stream *s, size_t n, size_t *have, cpr_error **errp)
{
    int mfd = -1;
    if (s->kind == CPR_SRC_FD && s->stage_large && !s->staged && n > s->cap) /* so not all buffered */
        mfd = memfd_create("cpr-record", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)n) < 0) { /* no memfd: the heap, as any read */
        if (mfd >= 0)
            close(mfd);
        int ret = cpr_stream_need(s, n, errp);
        *have = cpr_stream_avail(s);
        return ret;
    }
    uint64_t start = s->offset + s->rpos;
    size_t got = 0;
    int ret = stage_copy(s, mfd, n, &got, errp);
    void *map = MAP_FAILED;
    if (ret == 0) {
        /* Populated now: the record's checksum reads all of it next. */
        map = mmap(NULL, n, PROT_READ, MAP_SHARED | MAP_POPULATE, mfd, 0);
        if (map == MAP_FAILED)
            ret = cpr_error_set_errno(errp, -errno, "stream: mapping a staged record of %zu bytes", n);
    }
    close(mfd);
    *have = got;
    if (ret < 0)
        return ret;
    /* The reader never reads past what it needs: the buffer is empty, and the record's first
     * byte is at `start`. */
    s->offset = start;
    s->staged = map;
    s->staged_len = n;
    s->rbuf = map;
    s->rpos = 0;
    s->rlen = n;
    s->view = NULL;
    return 0;
}

int cpr_stream_take_record(cpr_stream *s, struct cpr_taken_record *out)
{
    if (s->kind != CPR_SRC_FD || !s->rec_pending || s->rlen - s->rpos < s->rec_pending)
        return -ENOENT;
    /* Bytes read past the record (none: the reader reads exactly what a record needs) move. */
    size_t tail = s->rlen - s->rpos - s->rec_pending;
    size_t cap = MAX((size_t)READ_BUF_SIZE, tail);
    if (s->staged) {
        /* The mapping is the record's; the read buffer, free, takes what follows. */
        if (buf_take_tail(s, s->rbuf + s->rpos + s->rec_pending, tail) < 0)
            return -ENOMEM;
        *out = (struct cpr_taken_record){ .mem = s->staged, .map_len = s->staged_len };
        s->staged = NULL;
    } else {
        uint8_t *nbuf = g_try_malloc(cap);
        if (!nbuf)
            return -ENOMEM;
        memcpy(nbuf, s->buf + s->rpos + s->rec_pending, tail);
        *out = (struct cpr_taken_record){ .mem = s->buf };
        s->buf = nbuf;
        s->cap = cap;
    }
    s->offset += s->rpos + s->rec_pending;
    s->rbuf = s->buf;
    s->rpos = 0;
    s->rlen = tail;
    s->rec_pending = 0;
    return 0;
}

void cpr_taken_record_free(struct cpr_taken_record *t)
{
    if (t->map_len)
        munmap(t->mem, t->map_len);
    else
        g_free(t->mem);
    *t = (struct cpr_taken_record){ 0 };
}

int cpr_stream_need(cpr_stream *s, size_t n, cpr_error **errp)
{
    if (s->rlen - s->rpos >= n)
        return 0;
    if (s->staged) {
        int ret = stage_drop(s, errp);
        if (ret < 0)
            return ret;
        if (s->rlen - s->rpos >= n)
            return 0;
    }
    if (s->kind != CPR_SRC_FD || s->eof)
        return -ENODATA;
    /* Move the unread tail to the front; the view into the old record dies here. */
    if (s->rpos) {
        memmove(s->buf, s->buf + s->rpos, s->rlen - s->rpos);
        s->offset += s->rpos;
        s->rlen -= s->rpos;
        s->rpos = 0;
        s->view = NULL;
    }
    while (s->rlen < n) {
        if (s->rlen == s->cap) {
            /* Grow only once the data filled what we have: allocation follows arrival. */
            size_t cap = s->cap * 2 < n ? s->cap * 2 : n;
            uint8_t *nbuf = g_try_realloc(s->buf, cap);
            if (!nbuf)
                return cpr_error_set(errp, -ENOMEM, "stream: cannot grow the read buffer to %zu bytes", cap);
            s->buf = nbuf;
            s->rbuf = nbuf;
            s->cap = cap;
            s->view = NULL;
        }
        /* Exactly what is missing: the reader never consumes bytes past the record it needs,
         * so whatever follows the end record on the fd stays there for its owner. */
        size_t want = MIN(n, s->cap) - s->rlen;
        ssize_t r = s->io ? s->io->read(s->io_opaque, s->buf + s->rlen, want) : read(s->fd, s->buf + s->rlen, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (s->io && errno != EAGAIN)
                return cpr_error_set(errp, -errno, "stream: read from fd %d at offset %" G_GUINT64_FORMAT " failed: %s",
                                     s->fd, (guint64)(s->offset + s->rlen), s->io->last_error(s->io_opaque));
            if (errno == EAGAIN) {
                int ret = wait_ready(s, POLLIN, errp);
                if (ret < 0)
                    return ret;
                continue;
            }
            return cpr_error_set_errno(errp, -errno, "stream: read from fd %d at offset %" G_GUINT64_FORMAT " failed",
                                       s->fd, (guint64)(s->offset + s->rlen));
        }
        if (r == 0) {
            s->eof = 1;
            return -ENODATA;
        }
        s->rlen += r;
    }
    return 0;
}

void cpr_stream_consume(cpr_stream *s, size_t n)
{
    s->rpos += n;
}

static int view_take(cpr_stream *s, size_t len, const void **p, cpr_error **errp)
{
    if (!s || !s->view)
        return cpr_error_set(errp, -EINVAL, "stream: get outside a record");
    if (s->view_len - s->view_pos < len)
        return cpr_error_set(errp, -EBADMSG,
                             "record at offset %" G_GUINT64_FORMAT ": payload ends after %" G_GUINT64_FORMAT
                             " bytes, %zu more wanted at payload offset %" G_GUINT64_FORMAT,
                             (guint64)s->view_offset, (guint64)s->view_len, len, (guint64)s->view_pos);
    *p = s->view + s->view_pos;
    s->view_pos += len;
    return 0;
}

CPR_API int cpr_stream_get_bytes(cpr_stream *s, void *dst, size_t len, cpr_error **errp)
{
    const void *p = NULL;
    if (!dst && len)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_get_bytes: dst is NULL");
    int ret = view_take(s, len, &p, errp);
    if (ret < 0)
        return ret;
    if (len)
        memcpy(dst, p, len);
    return 0;
}

CPR_API int cpr_stream_get_ptr(cpr_stream *s, const void **ptr, size_t len, cpr_error **errp)
{
    const void *p = NULL;
    if (!ptr)
        return cpr_error_set(errp, -EINVAL, "cpr_stream_get_ptr: ptr is NULL");
    int ret = view_take(s, len, &p, errp);
    if (ret < 0)
        return ret;
    *ptr = p;
    return 0;
}

#define DEFINE_GET(bits)                                                                    \
    CPR_API int cpr_stream_get_u##bits(cpr_stream *s, uint##bits##_t *v, cpr_error **errp) \
    {                                                                                       \
        uint##bits##_t le;                                                                  \
        if (!v)                                                                             \
            return cpr_error_set(errp, -EINVAL, "cpr_stream_get_u" #bits ": v is NULL");    \
        int ret = cpr_stream_get_bytes(s, &le, sizeof(le), errp);                           \
        if (ret < 0)                                                                        \
            return ret;                                                                     \
        *v = GUINT##bits##_FROM_LE(le);                                                     \
        return 0;                                                                           \
    }
DEFINE_GET(8)
DEFINE_GET(16)
DEFINE_GET(32)
DEFINE_GET(64)

CPR_API uint64_t cpr_stream_remaining(const cpr_stream *s)
{
    return s && s->view ? s->view_len - s->view_pos : 0;
}
