/* SPDX-License-Identifier: MIT */
/* Postcopy's return-path messages and the source's page server (postcopy.h). */
#include <errno.h>
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
    return kind == CPR_PC_REQUEST ? "request" : kind == CPR_PC_PAGES ? "pages" : "done";
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
    if (m->kind != CPR_PC_REQUEST && m->kind != CPR_PC_PAGES && m->kind != CPR_PC_DONE)
        return cpr_error_set(errp, -EPROTO, "postcopy return path: unknown message kind 0x%08x",
                             m->kind);
    if (get32(in + 28) || (m->flags & ~CPR_PC_ZERO) || (m->flags && m->kind != CPR_PC_PAGES))
        return cpr_error_set(errp, -EPROTO, "postcopy return path: %s message with flags 0x%x "
                             "or reserved bits set", kind_name(m->kind), m->flags);
    if (m->kind == CPR_PC_DONE)
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

static int serve_one(struct cpr_pc_server *sv, const struct cpr_pc_msg *req, cpr_error **errp)
{
    const uint8_t *data = sv->blocks[req->block].host + req->page * CPR_PC_PAGE;
    size_t len = (size_t)req->count * CPR_PC_PAGE;
    struct cpr_pc_msg rep = { .kind = CPR_PC_PAGES, .block = req->block, .page = req->page,
                              .count = req->count };
    if (all_zero(data, len))
        rep.flags = CPR_PC_ZERO;
    else
        rep.crc = cpr_crc32c(0, data, len);
    uint8_t hdr[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(&rep, hdr);
    struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };
    int ret = write_all(sv->wfd, iov, rep.flags ? 1 : 2, errp);
    if (ret == 0) {
        __atomic_add_fetch(&sv->requests, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&sv->pages, req->count, __ATOMIC_RELAXED);
    }
    return ret;
}

/* Under max-postcopy-bandwidth: sleeps until the pages sent so far are due. */
static void throttle(const struct cpr_pc_server *sv, int64_t start_us)
{
    if (!sv->max_bandwidth)
        return;
    uint64_t bytes = __atomic_load_n(&sv->pages, __ATOMIC_RELAXED) * CPR_PC_PAGE;
    int64_t due_us = start_us + (int64_t)(bytes * G_USEC_PER_SEC / sv->max_bandwidth);
    int64_t ahead_us = due_us - g_get_monotonic_time();
    if (ahead_us > 0)
        g_usleep((gulong)MIN(ahead_us, G_USEC_PER_SEC));
}

int cpr_pc_serve(struct cpr_pc_server *sv, cpr_error **errp)
{
    int64_t start_us = g_get_monotonic_time();
    for (;;) {
        uint8_t buf[CPR_PC_MSG_BYTES];
        struct cpr_pc_msg m;
        int ret = cpr_pc_read_full(sv->rfd, buf, sizeof(buf), "waiting for page requests", errp);
        if (ret == 0)
            ret = cpr_pc_msg_decode(buf, sv->nblocks, sv->block_pages, &m, errp);
        if (ret == 0 && m.kind == CPR_PC_PAGES)
            ret = cpr_error_set(errp, -EPROTO, "postcopy return path: the destination sent pages");
        if (ret < 0)
            return ret;
        if (m.kind == CPR_PC_DONE)
            return 0;
        if ((ret = serve_one(sv, &m, errp)) < 0)
            return ret;
        throttle(sv, start_us);
    }
}
