/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's destination client (postcopy.h): the fault thread and the filler each send their
 * request at once, so that the source sees a fault while background runs are still queued
 * and answers it first. Answers come on the one socket in the source's order, in pieces: one
 * waiter at a time reads them (the reader) and puts each piece into the buffer of the request
 * it belongs to, whoever waits for it. A waiter leaves only when its pages are all in, or the
 * channel failed and no reader is writing into any buffer.
 *
 * A link cut pauses instead (postcopy recovery): the socket is shut down, the waiters keep
 * their buffers and wait; on a new connection each sends again what it still misses. A piece
 * read from a connection that was given up meanwhile is dropped, so that the counts of what
 * arrived only ever describe what the current connection's requests will not bring again.
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
    int sent;                  /* the rest was requested on connection `gen` */
    unsigned gen;
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
    cpr_error *broken;  /* the channel's first failure: for good */
    cpr_error *paused;  /* the link's failure, until a new connection comes */
    unsigned gen;       /* connections so far, less one */
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
    cpr_error_free(cl->paused);
    g_mutex_clear(&cl->send_lock);
    g_mutex_clear(&cl->lock);
    g_cond_clear(&cl->cond);
    g_free(cl);
}

uint64_t cpr_pc_client_requests(struct cpr_pc_client *cl)
{
    return __atomic_load_n(&cl->requests, __ATOMIC_RELAXED);
}

static int send_msg(struct cpr_pc_client *cl, int fd, const struct cpr_pc_msg *m)
{
    uint8_t buf[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(m, buf);
    g_mutex_lock(&cl->send_lock);
    size_t done = 0;
    int ret = 0;
    while (done < sizeof(buf) && ret == 0) {
        ssize_t n = send(fd, buf + done, sizeof(buf) - done, MSG_NOSIGNAL);
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
    g_mutex_lock(&cl->lock);
    int fd = cl->fd;
    g_mutex_unlock(&cl->lock);
    return send_msg(cl, fd, &(struct cpr_pc_msg){ .kind = CPR_PC_DONE });
}

/* Under the lock: the waiter the next piece `rep` belongs to (it continues that request). Two
 * requests that go on from the same page (the fault server never makes them, since it claims
 * each page once; a test's threads may) are told apart by what they still miss: a piece that
 * is all of one's rest is that one's (an urgent answer comes whole). */
static struct pc_wait *owner(struct cpr_pc_client *cl, const struct cpr_pc_msg *rep)
{
    struct pc_wait *first = NULL;
    for (guint i = 0; i < cl->waiting->len; i++) {
        struct pc_wait *w = g_ptr_array_index(cl->waiting, i);
        if (w->block != rep->block || rep->page != w->page + w->got ||
            rep->count > w->count - w->got)
            continue;
        if (rep->count == w->count - w->got)
            return w;
        if (!first)
            first = w;
    }
    return first;
}

/* The reader, without the lock: reads one piece from connection `gen` (on fd) into its
 * owner's buffer. *link: the failure is the link's. */
static int read_piece(struct cpr_pc_client *cl, int fd, unsigned gen, int *link, cpr_error **errp)
{
    uint8_t buf[CPR_PC_MSG_BYTES];
    struct cpr_pc_msg rep;
    *link = 1;
    int ret = cpr_pc_read_full(fd, buf, sizeof(buf), "waiting for pages", errp);
    if (ret < 0)
        return ret;
    *link = 0;
    if ((ret = cpr_pc_msg_decode(buf, cl->nblocks, cl->block_pages, &rep, errp)) < 0)
        return ret;
    if (rep.kind != CPR_PC_PAGES)
        return cpr_error_set(errp, -EPROTO, "postcopy: the source sent a %s message instead of "
                             "pages", rep.kind == CPR_PC_DONE ? "done" :
                             rep.kind == CPR_PC_RESUME ? "resume" : "request");
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
        *link = 1;
        if ((ret = cpr_pc_read_full(fd, dst, len, "reading pages", errp)) < 0)
            return ret;
        *link = 0;
        uint32_t crc = cpr_crc32c(0, dst, len);
        if (crc != rep.crc)
            return cpr_error_set(errp, -EBADMSG, "postcopy: pages %" PRIu64 "+%u of block %u "
                                 "arrived with CRC32C 0x%08x, the source sent 0x%08x", rep.page,
                                 rep.count, rep.block, crc, rep.crc);
    }
    g_mutex_lock(&cl->lock);
    /* A piece of a connection given up meanwhile: its waiter asks again on the next one. */
    int stale = cl->paused || cl->gen != gen;
    if (!stale)
        w->got += rep.count;
    g_mutex_unlock(&cl->lock);
    *link = 1;
    return stale ? cpr_error_set(errp, -ECONNRESET, "postcopy: a piece of a connection given up") : 0;
}

/* Under the lock: records the channel's first failure for good (takes err), wakes every waiter. */
static void set_broken(struct cpr_pc_client *cl, cpr_error *err)
{
    if (!cl->broken)
        cl->broken = err;
    else
        cpr_error_free(err);
    g_cond_broadcast(&cl->cond);
}

/* Under the lock: connection `gen` failed on the link (takes err): pause, once per connection,
 * and shut it down so that a reader or sender still on it returns. */
static void link_lost(struct cpr_pc_client *cl, unsigned gen, cpr_error *err)
{
    if (gen == cl->gen && !cl->paused && !cl->broken) {
        cl->paused = err;
        shutdown(cl->fd, SHUT_RDWR);
    } else {
        cpr_error_free(err);
    }
    g_cond_broadcast(&cl->cond);
}

int cpr_pc_client_paused(struct cpr_pc_client *cl, cpr_error **why)
{
    g_mutex_lock(&cl->lock);
    int paused = cl->paused != NULL && !cl->broken;
    if (paused && why)
        cpr_error_set(why, cpr_error_code(cl->paused), "%s", cpr_error_message(cl->paused));
    g_mutex_unlock(&cl->lock);
    return paused;
}

void cpr_pc_client_cut(struct cpr_pc_client *cl)
{
    cpr_error *err = NULL;
    cpr_error_set(&err, -ECONNABORTED, "postcopy: the return path was broken on request");
    g_mutex_lock(&cl->lock);
    link_lost(cl, cl->gen, err);
    g_mutex_unlock(&cl->lock);
}

int cpr_pc_client_resume(struct cpr_pc_client *cl, int fd)
{
    g_mutex_lock(&cl->lock);
    int ok = cl->paused && !cl->broken;
    if (ok) {
        cpr_error_free(cl->paused);
        cl->paused = NULL;
        cl->fd = fd;
        cl->gen++;
        g_cond_broadcast(&cl->cond);
    }
    g_mutex_unlock(&cl->lock);
    return ok ? 0 : -EINVAL;
}

void cpr_pc_client_give_up(struct cpr_pc_client *cl)
{
    g_mutex_lock(&cl->lock);
    cpr_error *err = cl->paused;
    cl->paused = NULL;
    if (!err)
        cpr_error_set(&err, -ECONNABORTED, "postcopy: the return path was given up");
    set_broken(cl, err);
    g_mutex_unlock(&cl->lock);
}

/* Under the lock (dropped meanwhile): requests what w still misses on the current connection. */
static void request_rest(struct cpr_pc_client *cl, struct pc_wait *w, int urgent)
{
    unsigned gen = cl->gen;
    int fd = cl->fd;
    w->sent = 1;
    w->gen = gen;
    struct cpr_pc_msg req = { .kind = CPR_PC_REQUEST, .block = w->block, .page = w->page + w->got,
                              .count = (uint32_t)(w->count - w->got),
                              .flags = urgent ? CPR_PC_URGENT : 0 };
    g_mutex_unlock(&cl->lock);
    int sent = send_msg(cl, fd, &req);
    g_mutex_lock(&cl->lock);
    if (sent < 0) {
        cpr_error *err = NULL;
        cpr_error_set_errno(&err, sent, "postcopy: requesting pages from the source");
        link_lost(cl, gen, err);
    } else {
        __atomic_add_fetch(&cl->requests, 1, __ATOMIC_RELAXED);
    }
}

int cpr_pc_client_fetch(struct cpr_pc_client *cl, int urgent, unsigned block, uint64_t page,
                        uint64_t count, void *dst, cpr_error **errp)
{
    if (count == 0 || count > CPR_PC_MAX_PAGES)
        return cpr_error_set(errp, -EINVAL, "postcopy: a run of %" PRIu64 " pages", count);
    struct pc_wait w = { .block = block, .page = page, .count = count, .dst = dst };
    g_mutex_lock(&cl->lock);
    /* Registered before it is sent: the answer may come before this thread looks. */
    g_ptr_array_add(cl->waiting, &w);
    /* Leaves only when no reader may still write into dst. */
    while (w.got < w.count && !(cl->broken && !cl->reading)) {
        if (cl->broken || cl->paused) {
            g_cond_wait(&cl->cond, &cl->lock);
        } else if (!w.sent || w.gen != cl->gen) {
            request_rest(cl, &w, urgent);
        } else if (cl->reading) {
            g_cond_wait(&cl->cond, &cl->lock);
        } else {
            cl->reading = 1;
            unsigned gen = cl->gen;
            int fd = cl->fd;
            g_mutex_unlock(&cl->lock);
            cpr_error *err = NULL;
            int link = 0;
            int ret = read_piece(cl, fd, gen, &link, &err);
            g_mutex_lock(&cl->lock);
            cl->reading = 0;
            if (ret < 0 && link)
                link_lost(cl, gen, err);
            else if (ret < 0)
                set_broken(cl, err);
            g_cond_broadcast(&cl->cond); /* a piece for another, or the reader's turn is free */
        }
    }
    g_ptr_array_remove_fast(cl->waiting, &w);
    int ret = 0;
    if (w.got < w.count)
        ret = cpr_error_set(errp, cpr_error_code(cl->broken), "%s",
                            cpr_error_message(cl->broken));
    g_mutex_unlock(&cl->lock);
    return ret;
}
