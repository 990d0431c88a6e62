/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's destination client (postcopy.h): the fault thread and the filler each send their
 * request at once, so that the source sees a fault while background runs are still queued
 * and answers it first. Answers come on the one socket in the source's order, in pieces: one
 * waiter at a time reads them (the reader) and puts each piece into the buffer of the request
 * it belongs to, whoever waits for it. A waiter leaves only when its pages are all in, or the
 * channel failed and no reader is writing into any buffer.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>

#include <glib.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "migration/postcopy.h"

struct pc_wait {
    unsigned block;
    uint64_t page, count, got; /* pages [page, page + got) are in dst */
    uint8_t *dst;
};

struct cpr_pc_client {
    int fd;
    unsigned nblocks;
    const uint64_t *block_pages;
    GMutex send_lock; /* one request on the wire at a time */
    GMutex lock;      /* guards what follows */
    GCond cond;
    GPtrArray *waiting; /* struct pc_wait * */
    int reading;        /* a waiter is reading an answer */
    cpr_error *broken;  /* the channel's first failure */
    uint64_t requests;  /* atomic */
};

struct cpr_pc_client *cpr_pc_client_new(int fd, unsigned nblocks, const uint64_t *block_pages)
{
    struct cpr_pc_client *cl = g_new0(struct cpr_pc_client, 1);
    cl->fd = fd;
    cl->nblocks = nblocks;
    cl->block_pages = block_pages;
    g_mutex_init(&cl->send_lock);
    g_mutex_init(&cl->lock);
    g_cond_init(&cl->cond);
    cl->waiting = g_ptr_array_new();
    return cl;
}

void cpr_pc_client_free(struct cpr_pc_client *cl)
{
    if (!cl)
        return;
    g_ptr_array_free(cl->waiting, TRUE);
    cpr_error_free(cl->broken);
    g_mutex_clear(&cl->send_lock);
    g_mutex_clear(&cl->lock);
    g_cond_clear(&cl->cond);
    g_free(cl);
}

uint64_t cpr_pc_client_requests(struct cpr_pc_client *cl)
{
    return __atomic_load_n(&cl->requests, __ATOMIC_RELAXED);
}

static int send_msg(struct cpr_pc_client *cl, const struct cpr_pc_msg *m)
{
    uint8_t buf[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(m, buf);
    g_mutex_lock(&cl->send_lock);
    size_t done = 0;
    int ret = 0;
    while (done < sizeof(buf) && ret == 0) {
        ssize_t n = send(cl->fd, buf + done, sizeof(buf) - done, MSG_NOSIGNAL);
        if (n > 0)
            done += (size_t)n;
        else if (n < 0 && errno != EINTR)
            ret = -errno;
    }
    g_mutex_unlock(&cl->send_lock);
    return ret;
}

int cpr_pc_client_done(struct cpr_pc_client *cl)
{
    return send_msg(cl, &(struct cpr_pc_msg){ .kind = CPR_PC_DONE });
}

/* Under the lock: the waiter the next piece `rep` belongs to (it continues that request). */
static struct pc_wait *owner(struct cpr_pc_client *cl, const struct cpr_pc_msg *rep)
{
    for (guint i = 0; i < cl->waiting->len; i++) {
        struct pc_wait *w = g_ptr_array_index(cl->waiting, i);
        if (w->block == rep->block && rep->page == w->page + w->got &&
            rep->count <= w->count - w->got)
            return w;
    }
    return NULL;
}

/* The reader, without the lock: reads one piece into its owner's buffer. */
static int read_piece(struct cpr_pc_client *cl, cpr_error **errp)
{
    uint8_t buf[CPR_PC_MSG_BYTES];
    struct cpr_pc_msg rep;
    int ret = cpr_pc_read_full(cl->fd, buf, sizeof(buf), "waiting for pages", errp);
    if (ret == 0)
        ret = cpr_pc_msg_decode(buf, cl->nblocks, cl->block_pages, &rep, errp);
    if (ret < 0)
        return ret;
    if (rep.kind != CPR_PC_PAGES)
        return cpr_error_set(errp, -EPROTO, "postcopy: the source sent a %s message instead of "
                             "pages", rep.kind == CPR_PC_DONE ? "done" : "request");
    /* The owner stays (it waits while this side reads); only its progress is under the lock. */
    g_mutex_lock(&cl->lock);
    struct pc_wait *w = owner(cl, &rep);
    uint8_t *dst = w ? w->dst + (rep.page - w->page) * CPR_PC_PAGE : NULL;
    g_mutex_unlock(&cl->lock);
    if (!w)
        return cpr_error_set(errp, -EPROTO, "postcopy: the source sent block %u pages %" PRIu64
                             "+%u, which no request awaits", rep.block, rep.page, rep.count);
    size_t len = (size_t)rep.count * CPR_PC_PAGE;
    if (rep.flags & CPR_PC_ZERO) {
        memset(dst, 0, len);
    } else {
        if ((ret = cpr_pc_read_full(cl->fd, dst, len, "reading pages", errp)) < 0)
            return ret;
        uint32_t crc = cpr_crc32c(0, dst, len);
        if (crc != rep.crc)
            return cpr_error_set(errp, -EBADMSG, "postcopy: pages %" PRIu64 "+%u of block %u "
                                 "arrived with CRC32C 0x%08x, the source sent 0x%08x", rep.page,
                                 rep.count, rep.block, crc, rep.crc);
    }
    g_mutex_lock(&cl->lock);
    w->got += rep.count;
    g_mutex_unlock(&cl->lock);
    return 0;
}

/* Under the lock: records the channel's first failure (takes err) and wakes every waiter. */
static void set_broken(struct cpr_pc_client *cl, cpr_error *err)
{
    if (!cl->broken)
        cl->broken = err;
    else
        cpr_error_free(err);
    g_cond_broadcast(&cl->cond);
}

int cpr_pc_client_fetch(struct cpr_pc_client *cl, int urgent, unsigned block, uint64_t page,
                        uint64_t count, void *dst, cpr_error **errp)
{
    if (count == 0 || count > CPR_PC_MAX_PAGES)
        return cpr_error_set(errp, -EINVAL, "postcopy: a run of %" PRIu64 " pages", count);
    struct pc_wait w = { .block = block, .page = page, .count = count, .dst = dst };
    struct cpr_pc_msg req = { .kind = CPR_PC_REQUEST, .block = block, .page = page,
                              .count = (uint32_t)count, .flags = urgent ? CPR_PC_URGENT : 0 };
    g_mutex_lock(&cl->lock);
    g_ptr_array_add(cl->waiting, &w);
    int broken = cl->broken != NULL;
    g_mutex_unlock(&cl->lock);
    /* Registered before it is sent: the answer may come before this thread looks. */
    int sent = broken ? 0 : send_msg(cl, &req);
    g_mutex_lock(&cl->lock);
    if (sent < 0) {
        cpr_error *err = NULL;
        cpr_error_set_errno(&err, sent, "postcopy: requesting pages from the source");
        set_broken(cl, err);
    } else if (!cl->broken) {
        __atomic_add_fetch(&cl->requests, 1, __ATOMIC_RELAXED);
    }
    while (w.got < w.count && !(cl->broken && !cl->reading)) {
        if (cl->reading || cl->broken) {
            g_cond_wait(&cl->cond, &cl->lock);
            continue;
        }
        cl->reading = 1;
        g_mutex_unlock(&cl->lock);
        cpr_error *err = NULL;
        int ret = read_piece(cl, &err);
        g_mutex_lock(&cl->lock);
        cl->reading = 0;
        if (ret < 0)
            set_broken(cl, err);
        g_cond_broadcast(&cl->cond); /* a piece for another, or the reader's turn is free */
    }
    g_ptr_array_remove_fast(cl->waiting, &w);
    int ret = 0;
    if (w.got < w.count)
        ret = cpr_error_set(errp, cpr_error_code(cl->broken), "%s",
                            cpr_error_message(cl->broken));
    g_mutex_unlock(&cl->lock);
    return ret;
}
