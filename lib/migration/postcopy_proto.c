/* SPDX-License-Identifier: MIT */
/* Postcopy's return-path messages and the source's page server (postcopy.h). */
#include <errno.h>
#include <poll.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <glib.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/iov.h"
#include "migration/postcopy.h"

static void put32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}

void cpr_pc_msg_encode(const struct cpr_pc_msg *m, uint8_t out[CPR_PC_MSG_BYTES])
{
    memset(out, 0, CPR_PC_MSG_BYTES);
    put32(out, m->kind);
    put32(out + 4, m->block);
    put32(out + 8, (uint32_t)m->page);
    put32(out + 12, (uint32_t)(m->page >> 32));
    put32(out + 16, m->count);
    put32(out + 20, m->flags);
    put32(out + 24, m->crc);
}

static const char *kind_name(uint32_t kind)
{
    return kind == CPR_PC_REQUEST ? "request" : kind == CPR_PC_PAGES ? "pages" :
           kind == CPR_PC_RESUME ? "resume" : "done";
}

int cpr_pc_msg_decode(const uint8_t in[CPR_PC_MSG_BYTES], unsigned nblocks,
                      const uint64_t *block_pages, struct cpr_pc_msg *m, cpr_error **errp)
{
    m->kind = get32(in);
    m->block = get32(in + 4);
    m->page = get32(in + 8) | (uint64_t)get32(in + 12) << 32;
    m->count = get32(in + 16);
    m->flags = get32(in + 20);
    m->crc = get32(in + 24);
    if (m->kind != CPR_PC_REQUEST && m->kind != CPR_PC_PAGES && m->kind != CPR_PC_DONE &&
        m->kind != CPR_PC_RESUME)
        return cpr_error_set(errp, -EPROTO, "postcopy return path: unknown message kind 0x%08x",
                             m->kind);
    uint32_t allowed = m->kind == CPR_PC_PAGES ? CPR_PC_ZERO :
                       m->kind == CPR_PC_REQUEST ? CPR_PC_URGENT : 0;
    if (get32(in + 28) || (m->flags & ~allowed))
        return cpr_error_set(errp, -EPROTO, "postcopy return path: %s message with flags 0x%x "
                             "or reserved bits set", kind_name(m->kind), m->flags);
    if (m->kind == CPR_PC_DONE || m->kind == CPR_PC_RESUME)
        return 0;
    if (m->block >= nblocks)
        return cpr_error_set(errp, -EPROTO, "postcopy return path: %s for block %u, of %u",
                             kind_name(m->kind), m->block, nblocks);
    uint64_t pages = block_pages[m->block];
    if (m->count == 0 || m->count > CPR_PC_MAX_PAGES || m->page >= pages || m->count > pages - m->page)
        return cpr_error_set(errp, -EPROTO, "postcopy return path: %s for pages %" PRIu64 "+%u "
                             "outside block %u (%" PRIu64 " pages)", kind_name(m->kind), m->page,
                             m->count, m->block, pages);
    return 0;
}

/* The shape of a block table: its pages per block, as CRC32C of u64 LE. */
static uint32_t table_crc(unsigned nblocks, const uint64_t *block_pages, uint64_t *total)
{
    uint32_t crc = 0;
    *total = 0;
    for (unsigned i = 0; i < nblocks; i++) {
        uint64_t le = GUINT64_TO_LE(block_pages[i]);
        crc = cpr_crc32c(crc, &le, sizeof(le));
        *total += block_pages[i];
    }
    return crc;
}

void cpr_pc_resume_encode(unsigned nblocks, const uint64_t *block_pages,
                          uint8_t out[CPR_PC_MSG_BYTES])
{
    struct cpr_pc_msg m = { .kind = CPR_PC_RESUME, .block = nblocks };
    m.crc = table_crc(nblocks, block_pages, &m.page);
    cpr_pc_msg_encode(&m, out);
}

int cpr_pc_resume_check(const uint8_t in[CPR_PC_MSG_BYTES], unsigned nblocks,
                        const uint64_t *block_pages, cpr_error **errp)
{
    struct cpr_pc_msg m;
    int ret = cpr_pc_msg_decode(in, nblocks, block_pages, &m, errp);
    if (ret < 0)
        return ret;
    if (m.kind != CPR_PC_RESUME)
        return cpr_error_set(errp, -EPROTO, "postcopy recovery: the new connection began with a "
                             "%s message, not resume", kind_name(m.kind));
    uint64_t total;
    uint32_t crc = table_crc(nblocks, block_pages, &total);
    if (m.block != nblocks || m.page != total || m.crc != crc)
        return cpr_error_set(errp, -EPROTO, "postcopy recovery: the new connection's source has "
                             "%u RAM blocks of %" PRIu64 " pages (table CRC32C 0x%08x), this "
                             "destination %u of %" PRIu64 " (0x%08x): not this migration's source",
                             m.block, m.page, m.crc, nblocks, total, crc);
    return 0;
}

int cpr_pc_link_error(int code)
{
    return code < 0 && code != -EPROTO && code != -EBADMSG && code != -EINVAL;
}

int cpr_pc_read_full(int fd, void *buf, size_t len, const char *what, cpr_error **errp)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (uint8_t *)buf + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return cpr_error_set(errp, -ECONNRESET, "postcopy: the other side closed the main "
                                 "channel while %s", what);
        return cpr_error_set_errno(errp, -errno, "postcopy: main channel, %s", what);
    }
    return 0;
}

static int write_all(int fd, struct iovec *iov, int n, cpr_error **errp)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return cpr_error_set_errno(errp, w < 0 ? -errno : -EIO, "postcopy: sending pages");
        cpr_iov_consume(&iov, &n, (size_t)w);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t len)
{
    static const uint8_t zero[256];
    for (size_t o = 0; o < len; o += sizeof(zero))
        if (memcmp(p + o, zero, MIN(sizeof(zero), len - o)))
            return 0;
    return 1;
}

/* Answers the first `count` pages of request `req` as one PAGES piece. */
static int serve_piece(struct cpr_pc_server *sv, const struct cpr_pc_msg *req, uint32_t count,
                       cpr_error **errp)
{
    const uint8_t *data = sv->blocks[req->block].host + req->page * CPR_PC_PAGE;
    size_t len = (size_t)count * CPR_PC_PAGE;
    struct cpr_pc_msg rep = { .kind = CPR_PC_PAGES, .block = req->block, .page = req->page,
                              .count = count };
    if (all_zero(data, len))
        rep.flags = CPR_PC_ZERO;
    else
        rep.crc = cpr_crc32c(0, data, len);
    uint8_t hdr[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(&rep, hdr);
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };
    int ret = write_all(sv->wfd, iov, rep.flags ? 1 : 2, errp);
    if (ret == 0)
        __atomic_add_fetch(&sv->pages, count, __ATOMIC_RELAXED);
    return ret;
}

/* Under max-postcopy-bandwidth: sleeps until the pages sent since start (when `base` had been
 * sent before: a connection of a recovery) are due. */
static void throttle(const struct cpr_pc_server *sv, int64_t start_us, uint64_t base)
{
    if (!sv->max_bandwidth)
        return;
    uint64_t bytes = (__atomic_load_n(&sv->pages, __ATOMIC_RELAXED) - base) * CPR_PC_PAGE;
    int64_t due_us = start_us + (int64_t)(bytes * G_USEC_PER_SEC / sv->max_bandwidth);
    int64_t ahead_us = due_us - g_get_monotonic_time();
    if (ahead_us > 0)
        g_usleep((gulong)MIN(ahead_us, G_USEC_PER_SEC));
}

/* The requests read and not yet answered: a ring per priority. */
struct pc_req {
    struct cpr_pc_msg m; /* what is left to answer */
    int begun;
};

struct pc_ring {
    struct pc_req q[CPR_PC_MAX_QUEUED];
    unsigned head, len;
};

struct pc_inbox {
    struct pc_ring urgent, background;
    uint8_t buf[CPR_PC_MSG_BYTES]; /* a message read in part */
    size_t have;
    int done;                      /* DONE read: nothing more comes */
};

static unsigned queued(const struct pc_inbox *in)
{
    return in->urgent.len + in->background.len;
}

static struct pc_req *ring_head(struct pc_ring *r)
{
    return &r->q[r->head];
}

static void ring_pop(struct pc_ring *r)
{
    r->head = (r->head + 1) % CPR_PC_MAX_QUEUED;
    r->len--;
}

static void ring_push(struct pc_ring *r, const struct cpr_pc_msg *m)
{
    r->q[(r->head + r->len++) % CPR_PC_MAX_QUEUED] = (struct pc_req){ .m = *m };
}

static int inbox_take(struct cpr_pc_server *sv, struct pc_inbox *in, cpr_error **errp)
{
    struct cpr_pc_msg m;
    in->have = 0;
    int ret = cpr_pc_msg_decode(in->buf, sv->nblocks, sv->block_pages, &m, errp);
    if (ret < 0)
        return ret;
    if (m.kind == CPR_PC_PAGES || m.kind == CPR_PC_RESUME)
        return cpr_error_set(errp, -EPROTO, "postcopy return path: the destination sent a %s "
                             "message", kind_name(m.kind));
    if (m.kind == CPR_PC_DONE)
        in->done = 1;
    else
        ring_push(m.flags & CPR_PC_URGENT ? &in->urgent : &in->background, &m);
    return 0;
}

/* Reads the requests that arrived, without waiting unless `wait` and nothing is queued: then
 * until one message is in. Stops at DONE and when the rings are full. */
static int inbox_fill(struct cpr_pc_server *sv, struct pc_inbox *in, cpr_error **errp)
{
    while (!in->done && queued(in) < CPR_PC_MAX_QUEUED) {
        if (queued(in)) {
            struct pollfd pfd = { .fd = sv->rfd, .events = POLLIN };
            int n = poll(&pfd, 1, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0)
                return 0;
        }
        ssize_t n = read(sv->rfd, in->buf + in->have, sizeof(in->buf) - in->have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return cpr_error_set(errp, -ECONNRESET, "postcopy: the other side closed the main "
                                 "channel while waiting for page requests");
        if (n < 0)
            return cpr_error_set_errno(errp, -errno, "postcopy: main channel, waiting for page "
                                       "requests");
        in->have += (size_t)n;
        int ret = in->have == sizeof(in->buf) ? inbox_take(sv, in, errp) : 0;
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Answers the most pressing request: an urgent one whole, else a piece of the first other. */
static int serve_next(struct cpr_pc_server *sv, struct pc_inbox *in, cpr_error **errp)
{
    struct pc_ring *r = in->urgent.len ? &in->urgent : &in->background;
    struct pc_req *q = ring_head(r);
    struct cpr_pc_msg *req = &q->m;
    uint32_t count = r == &in->urgent ? req->count : MIN(req->count, CPR_PC_CHUNK_PAGES);
    if (!q->begun)
        __atomic_add_fetch(&sv->requests, 1, __ATOMIC_RELAXED);
    q->begun = 1;
    int ret = serve_piece(sv, req, count, errp);
    req->page += count;
    req->count -= count;
    if (!req->count)
        ring_pop(r);
    return ret;
}

int cpr_pc_serve(struct cpr_pc_server *sv, cpr_error **errp)
{
    int64_t start_us = g_get_monotonic_time();
    uint64_t base = __atomic_load_n(&sv->pages, __ATOMIC_RELAXED);
    struct pc_inbox *in = g_new0(struct pc_inbox, 1);
    int ret;
    while ((ret = inbox_fill(sv, in, errp)) == 0 && queued(in)) {
        if ((ret = serve_next(sv, in, errp)) < 0)
            break;
        throttle(sv, start_us, base);
    }
    g_free(in);
    return ret;
}
