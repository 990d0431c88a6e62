/* SPDX-License-Identifier: MIT */
/* multifd: the channel set and its threads on both sides (see multifd.h for the protocol). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <glib.h>

#include "channel/scm.h"
#include "channel/tls.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "core/iov.h"
#include "format/stream.h"
#include "migration/main_tls.h"
#include "migration/multifd.h"

/* How often a waiting thread looks at the cancel fd besides being woken. */
#define POLL_CANCEL_US (100 * 1000)

/* ---- a connection: an fd, read and written only through these two (a TLS session can take
 * the fd's place without the rest knowing) ---- */

struct mfd_conn {
    int fd;
    struct cpr_tls_session *tls; /* with tls-creds: every byte goes through it */
};

static ssize_t conn_send(struct mfd_conn *c, struct iovec *iov, int n)
{
    if (c->tls)
        return cpr_tls_session_writev(c->tls, iov, n);
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
    return sendmsg(c->fd, &msg, MSG_NOSIGNAL);
}

/* The failed read or write `what` (errno set), with TLS's own reason when it has one. */
static int conn_error(const struct mfd_conn *c, cpr_error **errp, const char *what)
{
    int code = -errno;
    const char *why = c->tls ? cpr_tls_session_last_error(c->tls) : NULL;
    if (why && *why)
        return cpr_error_set(errp, code, "%s: %s (TLS: %s)", what, g_strerror(-code), why);
    return cpr_error_set_errno(errp, code, "%s", what);
}

static int conn_writev(struct mfd_conn *c, struct iovec *iov, int n, cpr_error **errp)
{
    while (n > 0) {
        ssize_t w = conn_send(c, iov, MIN(n, IOV_MAX));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return conn_error(c, errp, "write");
        cpr_iov_consume(&iov, &n, (size_t)w);
    }
    return 0;
}

static int conn_read(struct mfd_conn *c, void *buf, size_t len, cpr_error **errp)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = c->tls ? cpr_tls_session_read(c->tls, p, len) : read(c->fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return conn_error(c, errp, "read");
        if (r == 0)
            return cpr_error_set(errp, -ECONNRESET, "the peer closed the connection");
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Ends a channel: its socket shut down first when its thread may be blocked on it, the
 * thread joined, the socket unregistered from cancel and closed. */
static void conn_stop(const struct cpr_chan_cancel *cancel, struct mfd_conn *c, GThread *thread, int shut)
{
    if (shut && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    if (thread)
        g_thread_join(thread);
    cpr_tls_session_free(c->tls); /* after the thread, before the fd it borrows */
    c->tls = NULL;
    if (c->fd >= 0) {
        cancel->unwatch(cancel->opaque, c->fd);
        close(c->fd);
    }
}

/* The end of a set's locking and its first error. */
static void set_clear(GMutex *lock, GCond *cond, cpr_error *err)
{
    if (err)
        cpr_error_free(err);
    g_mutex_clear(lock);
    g_cond_clear(cond);
}

static int cancelled(const struct cpr_chan_cancel *cancel, cpr_error **errp)
{
    struct pollfd p = { .fd = cancel->fd, .events = POLLIN };
    if (cancel->fd >= 0 && poll(&p, 1, 0) > 0)
        return cpr_error_set(errp, -ECANCELED, "multifd: migration cancelled");
    return 0;
}

/* The first failure of any thread, kept for the loader or saver to report. */
static void keep_error(cpr_error **kept, cpr_error *err)
{
    if (!*kept)
        *kept = err;
    else
        cpr_error_free(err);
}

static int report_kept(const cpr_error *kept, cpr_error **errp)
{
    return cpr_error_set(errp, cpr_error_code(kept), "%s", cpr_error_message(kept));
}

/* ================================ source ================================ */

struct send_pkt {
    uint32_t nruns, pages, epoch;
    int stable;
    uint64_t seq;
    struct cpr_mfd_run runs[CPR_MFD_MAX_RUNS];
    const uint8_t *src[CPR_MFD_MAX_RUNS]; /* each run's first page in guest RAM */
};

struct send_chan {
    struct cpr_multifd_send *m;
    uint32_t idx;
    struct mfd_conn conn;
    GThread *thread;
    struct send_pkt pkt; /* the slot: the thread's while busy */
    int busy;
    int quit;   /* send the end packet once idle, then exit */
    int exited;
    uint64_t seq; /* packets handed to this channel */
    uint8_t *raw; /* the copy of a running guest's pages */
    uint8_t *zbuf;
    size_t zcap;
    cpr_zstd *z;
};

struct cpr_multifd_send {
    struct cpr_chan_cancel cancel;
    uint32_t n;
    struct send_chan *ch;
    GMutex lock;
    GCond cond;
    int failed;
    cpr_error *err;
    uint64_t bytes;
    struct send_pkt cur; /* being filled by the saver */
    uint32_t epoch;
    uint32_t next;
    int unsynced;
    int finished;
    struct cpr_main_chan *acks; /* the destination acknowledges passes here; NULL: not asked */
    uint32_t acked;             /* passes acknowledged (epoch: passes synced) */
    uint8_t uuid[CPR_MFD_UUID_SIZE];
    struct cpr_chan_tls tls; /* tls.creds NULL: plain */
    const cpr_addr *addr;    /* borrowed for the TLS name check, until the threads are joined */
};

static void send_fail(struct cpr_multifd_send *m, struct send_chan *c, cpr_error *err)
{
    cpr_error_prefix(&err, "multifd channel %u", c->idx);
    g_mutex_lock(&m->lock);
    m->failed = 1;
    keep_error(&m->err, err);
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
}

/* Header and run table into hdr and runs, checksum over them and `payload` pieces. */
static uint32_t seal(struct cpr_mfd_header *h, uint8_t *hdr, uint8_t *runs, const struct send_pkt *p)
{
    cpr_mfd_header_encode(h, hdr);
    cpr_mfd_runs_encode(p->runs, p->nruns, runs);
    return cpr_crc32c(cpr_mfd_crc_header(hdr), runs, (size_t)p->nruns * CPR_MFD_RUN_SIZE);
}

static int send_data(struct send_chan *c, const struct send_pkt *p, uint64_t *wire, cpr_error **errp)
{
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_DATA, .channel = c->idx, .seq = p->seq,
                                .epoch = p->epoch, .nruns = p->nruns, .pages = p->pages,
                                .payload_len = p->pages * CPR_MFD_PAGE };
    uint8_t hdr[CPR_MFD_HEADER_SIZE], runs[CPR_MFD_MAX_RUNS * CPR_MFD_RUN_SIZE];
    struct iovec iov[2 + CPR_MFD_MAX_RUNS];
    int niov = 2;
    const uint8_t *payload = NULL;
    uint32_t crc;
    if (c->z) {
        /* Compressed from a copy of the pages: zstd reads its input more than once. */
        for (uint32_t i = 0, off = 0; i < p->nruns; off += p->runs[i].count * CPR_MFD_PAGE, i++)
            memcpy(c->raw + off, p->src[i], (size_t)p->runs[i].count * CPR_MFD_PAGE);
        ssize_t zn = cpr_zstd_compress(c->z, c->zbuf, c->zcap, c->raw, h.payload_len, errp);
        if (zn < 0)
            return (int)zn;
        payload = c->raw;
        if ((size_t)zn < h.payload_len) { /* what does not shrink goes as it is */
            h.flags |= CPR_MFD_FLAG_ZSTD;
            h.payload_len = (uint32_t)zn;
            payload = c->zbuf;
        }
        crc = cpr_crc32c(seal(&h, hdr, runs, p), payload, h.payload_len);
    } else if (!p->stable) {
        /* A running guest's pages: copied and checksummed in one pass, the copy written, so
         * the checksum is always that of the bytes sent (as the stream's volatile pieces). */
        crc = seal(&h, hdr, runs, p);
        for (uint32_t i = 0, off = 0; i < p->nruns; off += p->runs[i].count * CPR_MFD_PAGE, i++)
            crc = cpr_crc32c_copy(crc, c->raw + off, p->src[i], (size_t)p->runs[i].count * CPR_MFD_PAGE);
        payload = c->raw;
    } else {
        /* The guest is stopped: checksum and write straight from its RAM. */
        crc = seal(&h, hdr, runs, p);
        for (uint32_t i = 0; i < p->nruns; i++) {
            size_t len = (size_t)p->runs[i].count * CPR_MFD_PAGE;
            crc = cpr_crc32c(crc, p->src[i], len);
            iov[niov++] = (struct iovec){ (void *)p->src[i], len };
        }
    }
    if (payload)
        iov[niov++] = (struct iovec){ (void *)payload, h.payload_len };
    h.crc = crc;
    cpr_mfd_header_encode(&h, hdr);
    iov[0] = (struct iovec){ hdr, sizeof(hdr) };
    iov[1] = (struct iovec){ runs, (size_t)p->nruns * CPR_MFD_RUN_SIZE };
    *wire = sizeof(hdr) + iov[1].iov_len + h.payload_len;
    return conn_writev(&c->conn, iov, niov, errp);
}

static int send_end(struct send_chan *c, uint64_t seq, cpr_error **errp)
{
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_END, .channel = c->idx, .seq = seq,
                                .epoch = c->m->epoch };
    uint8_t hdr[CPR_MFD_HEADER_SIZE];
    cpr_mfd_header_encode(&h, hdr);
    h.crc = cpr_mfd_crc_header(hdr);
    cpr_mfd_header_encode(&h, hdr);
    struct iovec iov = { hdr, sizeof(hdr) };
    return conn_writev(&c->conn, &iov, 1, errp);
}

static int send_hello(struct cpr_multifd_send *m, struct send_chan *c, cpr_error **errp)
{
    struct cpr_mfd_hello h = { .channel = c->idx, .count = m->n };
    memcpy(h.uuid, m->uuid, sizeof(h.uuid));
    uint8_t buf[CPR_MFD_HELLO_SIZE];
    cpr_mfd_hello_encode(&h, buf);
    struct iovec iov = { buf, sizeof(buf) };
    return conn_writev(&c->conn, &iov, 1, errp);
}

/* With TLS, on the channel's own thread: the destination answers the handshake only once
 * main's setup record has reached it, which the saver sends after opening the channels. */
static void send_tls_start(struct cpr_multifd_send *m, struct send_chan *c)
{
    cpr_error *err = NULL;
    int ret = cpr_chan_tls_wrap(&m->tls, CPR_TLS_ENDPOINT_CLIENT, m->addr, c->conn.fd, NULL, &c->conn.tls, &err);
    if (ret == 0)
        ret = send_hello(m, c, &err);
    if (ret < 0)
        send_fail(m, c, err);
}

static gpointer send_thread(gpointer opaque)
{
    struct send_chan *c = opaque;
    struct cpr_multifd_send *m = c->m;
    if (m->tls.creds && c->conn.fd >= 0)
        send_tls_start(m, c);
    g_mutex_lock(&m->lock);
    for (;;) {
        while (!c->busy && !c->quit && !m->failed)
            g_cond_wait(&m->cond, &m->lock);
        if (m->failed)
            break;
        cpr_error *err = NULL;
        uint64_t wire = 0;
        if (!c->busy) { /* quit, with nothing left */
            uint64_t seq = ++c->seq;
            g_mutex_unlock(&m->lock);
            int ret = send_end(c, seq, &err);
            g_mutex_lock(&m->lock);
            if (ret < 0) {
                g_mutex_unlock(&m->lock);
                send_fail(m, c, err);
                g_mutex_lock(&m->lock);
            }
            break;
        }
        g_mutex_unlock(&m->lock);
        int ret = send_data(c, &c->pkt, &wire, &err);
        if (ret < 0) {
            send_fail(m, c, err);
            g_mutex_lock(&m->lock);
            break;
        }
        g_mutex_lock(&m->lock);
        m->bytes += wire;
        c->busy = 0;
        g_cond_broadcast(&m->cond);
    }
    c->exited = 1;
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
    return NULL;
}

/* Waits on the set's condition for a while; -ECANCELED once a cancel is pending. Locked. */
static int send_wait(struct cpr_multifd_send *m, cpr_error **errp)
{
    g_cond_wait_until(&m->cond, &m->lock, g_get_monotonic_time() + POLL_CANCEL_US);
    return cancelled(&m->cancel, errp);
}

/* Hands the packet being filled to an idle channel, waiting for one. */
static int dispatch(struct cpr_multifd_send *m, cpr_error **errp)
{
    if (m->cur.nruns == 0)
        return 0;
    int ret = 0;
    g_mutex_lock(&m->lock);
    for (;;) {
        if (m->failed) {
            ret = report_kept(m->err, errp);
            break;
        }
        struct send_chan *idle = NULL;
        for (uint32_t i = 0; i < m->n && !idle; i++) {
            struct send_chan *c = &m->ch[(m->next + i) % m->n];
            if (!c->busy)
                idle = c;
        }
        if (idle) {
            idle->pkt = m->cur;
            idle->pkt.seq = ++idle->seq;
            idle->busy = 1;
            m->next = (idle->idx + 1) % m->n;
            g_cond_broadcast(&m->cond);
            break;
        }
        if ((ret = send_wait(m, errp)) < 0)
            break;
    }
    g_mutex_unlock(&m->lock);
    m->cur.nruns = m->cur.pages = 0;
    return ret;
}

int cpr_multifd_send_pages(struct cpr_multifd_send *m, uint32_t block, const uint8_t *host, uint64_t first,
                           uint32_t n, int stable, cpr_error **errp)
{
    int ret;
    if (m->finished)
        return cpr_error_set(errp, -EPROTO, "multifd: pages of block %u after the channels ended", block);
    m->unsynced = 1;
    while (n > 0) {
        struct send_pkt *p = &m->cur;
        if (p->nruns == CPR_MFD_MAX_RUNS || p->pages == CPR_MFD_MAX_PAGES || (p->nruns && p->stable != stable))
            if ((ret = dispatch(m, errp)) < 0)
                return ret;
        if (p->nruns == 0) {
            p->stable = stable;
            p->epoch = m->epoch;
        }
        uint32_t k = MIN(n, CPR_MFD_MAX_PAGES - p->pages);
        struct cpr_mfd_run *last = p->nruns ? &p->runs[p->nruns - 1] : NULL;
        if (last && last->block == block && last->first + last->count == first) {
            last->count += k;
        } else {
            p->runs[p->nruns] = (struct cpr_mfd_run){ .block = block, .count = k, .first = first };
            p->src[p->nruns++] = host + first * CPR_MFD_PAGE;
        }
        p->pages += k;
        first += k;
        n -= k;
    }
    return 0;
}

int cpr_multifd_send_unsynced(const struct cpr_multifd_send *m)
{
    return m->unsynced;
}

void cpr_multifd_send_want_acks(struct cpr_multifd_send *m, struct cpr_main_chan *mc)
{
    m->acks = mc;
}

int cpr_multifd_send_take_acks(struct cpr_multifd_send *m, cpr_error **errp)
{
    return m && m->acks ? cpr_main_chan_take_pass_acks(m->acks, "multifd", &m->acked, m->epoch, errp) : 0;
}

int cpr_multifd_send_put_setup(struct cpr_multifd_send *m, cpr_stream *s, cpr_error **errp)
{
    int ret = cpr_stream_put_u32(s, CPR_MFD_VERSION, errp);
    if (ret == 0)
        ret = cpr_stream_put_bytes(s, m->uuid, sizeof(m->uuid), errp);
    if (ret == 0)
        ret = cpr_stream_put_u32(s, m->n, errp);
    if (ret == 0)
        ret = cpr_stream_put_u32(s, m->acks ? CPR_MFD_SETUP_PASS_ACK : 0, errp);
    return ret;
}

int cpr_multifd_send_sync(struct cpr_multifd_send *m, cpr_stream *s, cpr_error **errp)
{
    int ret = dispatch(m, errp);
    if (ret == 0)
        ret = cpr_stream_put_u32(s, m->epoch, errp);
    if (ret == 0)
        ret = cpr_stream_put_u32(s, m->n, errp);
    /* seq is the saver's alone (dispatch), so no lock to read it. */
    for (uint32_t i = 0; ret == 0 && i < m->n; i++)
        ret = cpr_stream_put_u64(s, m->ch[i].seq, errp);
    m->epoch++;
    m->unsynced = 0;
    return ret;
}

int cpr_multifd_send_finish(struct cpr_multifd_send *m, cpr_error **errp)
{
    int ret = dispatch(m, errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < m->n; i++)
        m->ch[i].quit = 1;
    g_cond_broadcast(&m->cond);
    for (uint32_t i = 0; ret == 0 && i < m->n; i++)
        while (ret == 0 && !m->ch[i].exited)
            ret = send_wait(m, errp);
    if (ret == 0 && m->failed)
        ret = report_kept(m->err, errp);
    if (ret == 0)
        m->finished = 1;
    g_mutex_unlock(&m->lock);
    return ret;
}

uint64_t cpr_multifd_send_bytes(struct cpr_multifd_send *m)
{
    if (!m)
        return 0;
    g_mutex_lock(&m->lock);
    uint64_t b = m->bytes;
    g_mutex_unlock(&m->lock);
    return b;
}

/* A channel's buffers and compressor. */
static int send_chan_init(struct send_chan *c, const struct cpr_params *p, cpr_error **errp)
{
    int ret;
    c->raw = g_malloc((size_t)CPR_MFD_MAX_PAGES * CPR_MFD_PAGE);
    if (p->multifd_compression == CPR_MULTIFD_COMPRESS_ZSTD) {
        if ((ret = cpr_zstd_new((int)p->multifd_zstd_level, &c->z, errp)) < 0)
            return ret;
        c->zcap = cpr_zstd_bound((size_t)CPR_MFD_MAX_PAGES * CPR_MFD_PAGE);
        c->zbuf = g_malloc(c->zcap);
    }
    return 0;
}

/*
 * Connects a channel and sends its hello. A failure here is the channel's, kept for the first
 * dispatch, sync or finish to report: the main stream's setup still goes out, so that a
 * destination that refuses multifd (and closed its listener) can say why.
 */
static void send_chan_connect(struct cpr_multifd_send *m, struct send_chan *c, const cpr_addr *addr)
{
    cpr_error *err = NULL;
    int ret = cpr_transport_connect(addr, &c->conn.fd, &err);
    if (ret == 0) {
        m->cancel.watch(m->cancel.opaque, c->conn.fd);
        if (!m->tls.creds) /* with TLS the hello follows the handshake, on the channel's thread */
            ret = send_hello(m, c, &err);
    }
    if (ret < 0)
        send_fail(m, c, err);
}

int cpr_multifd_send_open(const struct cpr_chan_cancel *cancel, const cpr_addr *addr, const struct cpr_params *p,
                          const struct cpr_chan_tls *tls, struct cpr_multifd_send **out, cpr_error **errp)
{
    *out = NULL;
    cpr_transport t = cpr_addr_transport(addr);
    if (t != CPR_TRANSPORT_UNIX && t != CPR_TRANSPORT_TCP) {
        g_autofree char *uri = cpr_addr_to_uri(addr);
        return cpr_error_set(errp, -EINVAL, "multifd needs a unix: or tcp: main channel, not %s", uri);
    }
    struct cpr_multifd_send *m = g_new0(struct cpr_multifd_send, 1);
    m->cancel = *cancel;
    if (tls)
        m->tls = *tls;
    m->addr = addr;
    m->n = (uint32_t)p->multifd_channels;
    m->ch = g_new0(struct send_chan, m->n);
    g_mutex_init(&m->lock);
    g_cond_init(&m->cond);
    *out = m;
    if (getrandom(m->uuid, sizeof(m->uuid), 0) != (ssize_t)sizeof(m->uuid))
        return cpr_error_set_errno(errp, -errno, "multifd: drawing the migration's id");
    for (uint32_t i = 0; i < m->n; i++) {
        struct send_chan *c = &m->ch[i];
        c->m = m;
        c->idx = i;
        c->conn.fd = -1;
        c->exited = 1; /* until its thread runs */
    }
    for (uint32_t i = 0; i < m->n; i++) {
        struct send_chan *c = &m->ch[i];
        int ret = send_chan_init(c, p, errp);
        if (ret < 0) {
            cpr_error_prefix(errp, "multifd channel %u of %u", i, m->n);
            return ret;
        }
        send_chan_connect(m, c, addr);
    }
    for (uint32_t i = 0; i < m->n; i++) {
        m->ch[i].exited = 0;
        m->ch[i].thread = g_thread_new("cpr-multifd-out", send_thread, &m->ch[i]);
    }
    return 0;
}

void cpr_multifd_send_free(struct cpr_multifd_send *m)
{
    if (!m)
        return;
    g_mutex_lock(&m->lock);
    if (!m->finished)
        m->failed = 1; /* idle threads exit; busy ones fail on the shut socket */
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
    for (uint32_t i = 0; i < m->n; i++) {
        struct send_chan *c = &m->ch[i];
        conn_stop(&m->cancel, &c->conn, c->thread, !m->finished);
        g_free(c->raw);
        g_free(c->zbuf);
        cpr_zstd_free(c->z);
    }
    set_clear(&m->lock, &m->cond, m->err);
    g_free(m->ch);
    g_free(m);
}

/* ================================ destination ================================ */

struct recv_chan {
    struct cpr_multifd_recv *m;
    uint32_t idx;
    struct mfd_conn conn;
    GThread *thread;
    uint64_t applied; /* sequence number of the last packet applied */
    int ended;
    int failed;
    int exited;
    uint8_t *body;
    uint8_t *scratch;
    cpr_zstd *z;
};

struct cpr_multifd_recv {
    struct cpr_chan_cancel cancel;
    cpr_listener *l;
    struct cpr_chan_tls tls; /* tls.creds NULL: plain */
    uint32_t n;
    struct recv_chan *ch;
    struct cpr_mfd_block *blocks;
    uint32_t nblocks;
    GMutex lock;
    GCond cond;
    uint32_t epoch; /* sync entries the loader has passed */
    int quit;
    cpr_error *err;
    uint32_t refused;
    char *why_refused; /* the first refusal's reason, when there is one to tell (TLS) */
    struct cpr_main_chan *ack_to; /* where passes are acknowledged, when the source asks */
    int ack;                      /* the source asked (the descriptor's flag) */
};

/* One packet: header, body, a packet of a later pass held until the loader gets there. */
static int recv_packet(struct recv_chan *c, uint64_t seq, struct cpr_mfd_header *h, cpr_error **errp)
{
    struct cpr_multifd_recv *m = c->m;
    uint8_t hdr[CPR_MFD_HEADER_SIZE];
    int ret = conn_read(&c->conn, hdr, sizeof(hdr), errp);
    if (ret == 0)
        ret = cpr_mfd_header_decode(hdr, c->idx, seq, h, errp);
    if (ret == 0)
        ret = conn_read(&c->conn, c->body, cpr_mfd_body_len(h), errp);
    if (ret < 0 || h->kind != CPR_MFD_KIND_DATA)
        return ret < 0 ? ret : cpr_mfd_packet_apply(h, hdr, c->body, m->blocks, m->nblocks, c->scratch, &c->z, errp);
    g_mutex_lock(&m->lock);
    while (m->epoch < h->epoch && !m->quit)
        g_cond_wait(&m->cond, &m->lock);
    uint32_t epoch = m->epoch;
    int quit = m->quit;
    g_mutex_unlock(&m->lock);
    if (quit)
        return cpr_error_set(errp, -ECANCELED, "stopped");
    if (h->epoch != epoch)
        return cpr_error_set(errp, -EBADMSG, "packet %" PRIu64 " belongs to pass %u, which the main "
                             "channel's sync entries already closed", seq, h->epoch);
    return cpr_mfd_packet_apply(h, hdr, c->body, m->blocks, m->nblocks, c->scratch, &c->z, errp);
}

static gpointer recv_thread(gpointer opaque)
{
    struct recv_chan *c = opaque;
    struct cpr_multifd_recv *m = c->m;
    cpr_error *err = NULL;
    int ret = 0;
    for (uint64_t seq = 1; ret == 0; seq++) {
        struct cpr_mfd_header h;
        ret = recv_packet(c, seq, &h, &err);
        g_mutex_lock(&m->lock);
        if (ret == 0) {
            c->applied = seq;
            c->ended = h.kind == CPR_MFD_KIND_END;
        }
        g_cond_broadcast(&m->cond);
        g_mutex_unlock(&m->lock);
        if (c->ended)
            break;
    }
    g_mutex_lock(&m->lock);
    if (ret < 0) {
        cpr_error_prefix(&err, "multifd channel %u", c->idx);
        c->failed = 1;
        keep_error(&m->err, err);
    }
    c->exited = 1;
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
    return NULL;
}

int cpr_multifd_recv_new(const struct cpr_chan_cancel *cancel, cpr_listener *l, const struct cpr_chan_tls *tls,
                         struct cpr_multifd_recv **out)
{
    struct cpr_multifd_recv *m = g_new0(struct cpr_multifd_recv, 1);
    m->cancel = *cancel;
    if (tls)
        m->tls = *tls;
    m->l = l;
    g_mutex_init(&m->lock);
    g_cond_init(&m->cond);
    *out = m;
    return 0;
}

/* Remembers the first refusal's reason, so that a wait that ends without the channels says why. */
static void note_refusal(struct cpr_multifd_recv *m, cpr_error *err)
{
    if (err && !m->why_refused)
        m->why_refused = g_strdup(cpr_error_message(err));
    cpr_error_free(err);
}

/* A source sends its hello right after connecting (and its TLS handshake): a connection that
 * has not within this long is a stranger, refused so that the real channels behind it get in. */
#define HELLO_TIMEOUT_US (5 * G_USEC_PER_SEC)

/* Bounds every blocking read and write on fd by HELLO_TIMEOUT_US or what is left of w, the
 * shorter (w NULL: no bound). */
static void bound_io(int fd, const cpr_io_wait *w)
{
    int64_t left = 0;
    if (w) {
        left = HELLO_TIMEOUT_US;
        if (w->deadline_us >= 0)
            left = CLAMP(w->deadline_us - g_get_monotonic_time(), 1, HELLO_TIMEOUT_US);
    }
    cpr_io_bound_socket(fd, left);
}

/* The TLS handshake (with tls-creds) and the hello of an accepted connection: -EPROTO when it
 * is not one of ours (the reason in errp). */
static int take_hello(struct cpr_multifd_recv *m, const uint8_t *uuid, struct mfd_conn *c, uint32_t *idx,
                      cpr_error **errp)
{
    uint8_t buf[CPR_MFD_HELLO_SIZE];
    struct cpr_mfd_hello h;
    int ret = m->tls.creds ? cpr_chan_tls_wrap(&m->tls, CPR_TLS_ENDPOINT_SERVER, NULL, c->fd, NULL, &c->tls, errp) : 0;
    if (ret == 0)
        ret = conn_read(c, buf, sizeof(buf), errp);
    if (ret == 0)
        ret = cpr_mfd_hello_decode(buf, &h, errp);
    if (ret < 0)
        return ret;
    if (memcmp(h.uuid, uuid, CPR_MFD_UUID_SIZE))
        return cpr_error_set(errp, -EPROTO, "a connection of another migration");
    if (h.count != m->n)
        return cpr_error_set(errp, -EPROTO, "a hello for %u channels, this migration has %u", h.count, m->n);
    if (m->ch[h.channel].conn.fd >= 0)
        return cpr_error_set(errp, -EPROTO, "channel %u connected twice", h.channel);
    *idx = h.channel;
    return 0;
}

/* Takes the next connection and its hello; 1 when it is one of ours (in *c, *idx), 0 when it
 * was refused and closed, or an error (timeout, cancel). A peer that sends part of a hello and
 * stalls holds nothing: the wait's deadline bounds each read, and a cancel shuts the socket
 * down (watched until the hello is in). */
static int accept_one(struct cpr_multifd_recv *m, const cpr_io_wait *w, const uint8_t *uuid, struct mfd_conn *c,
                      uint32_t *idx, cpr_error **errp)
{
    int ret = cpr_io_wait_fd(w, cpr_listener_fd(m->l), POLLIN, "multifd: waiting for the channels", errp);
    if (ret < 0)
        return ret;
    *c = (struct mfd_conn){ .fd = -1 };
    if (cpr_listener_accept_fd(m->l, 0, &c->fd, NULL) < 0)
        return 0;
    cpr_error *why = NULL;
    bound_io(c->fd, w);
    m->cancel.watch(m->cancel.opaque, c->fd);
    ret = take_hello(m, uuid, c, idx, &why);
    m->cancel.unwatch(m->cancel.opaque, c->fd);
    bound_io(c->fd, NULL); /* the channel's packets may come far apart */
    if (ret == 0) {
        cpr_error_free(why);
        return 1;
    }
    cpr_tls_session_free(c->tls);
    close(c->fd);
    *c = (struct mfd_conn){ .fd = -1 };
    /* A cancel or the deadline: the job ends (errp says which); a stranger: refused, next. */
    ret = cpr_io_wait_over(w, 0, "multifd: waiting for a channel's hello", errp);
    if (ret < 0) {
        cpr_error_free(why);
        return ret;
    }
    note_refusal(m, why);
    m->refused++;
    return 0;
}

void cpr_multifd_recv_ack_to(struct cpr_multifd_recv *m, struct cpr_main_chan *mc)
{
    m->ack_to = mc;
}

int cpr_multifd_recv_setup(struct cpr_multifd_recv *m, cpr_stream *s, const struct cpr_mfd_block *blocks,
                           uint32_t nblocks, cpr_error **errp)
{
    uint32_t version, n, flags;
    uint8_t uuid[CPR_MFD_UUID_SIZE];
    int ret = cpr_stream_get_u32(s, &version, errp);
    if (ret == 0)
        ret = cpr_stream_get_bytes(s, uuid, sizeof(uuid), errp);
    if (ret == 0)
        ret = cpr_stream_get_u32(s, &n, errp);
    if (ret == 0)
        ret = cpr_stream_get_u32(s, &flags, errp);
    if (ret < 0)
        return ret;
    if (version != CPR_MFD_VERSION || (flags & ~CPR_MFD_SETUP_PASS_ACK))
        return cpr_error_set(errp, -EPROTO, "multifd: the source speaks version %u (flags 0x%x), this libcpr %u",
                             version, flags, CPR_MFD_VERSION);
    m->ack = !!(flags & CPR_MFD_SETUP_PASS_ACK);
    if (m->ack && !m->ack_to)
        return cpr_error_set(errp, -EPROTO, "multifd: the source asks for acknowledgements of its passes and "
                             "this side has no return path to send them on");
    if (n == 0 || n > CPR_MFD_MAX_CHANNELS)
        return cpr_error_set(errp, -EBADMSG, "multifd: %u channels out of range", n);
    if (m->ch)
        return cpr_error_set(errp, -EBADMSG, "multifd: a second setup in one stream");
    m->n = n;
    m->ch = g_new0(struct recv_chan, n);
    m->blocks = g_memdup2(blocks, sizeof(*blocks) * nblocks);
    m->nblocks = nblocks;
    for (uint32_t i = 0; i < n; i++)
        m->ch[i] = (struct recv_chan){ .m = m, .idx = i, .conn.fd = -1, .exited = 1 };
    cpr_io_wait w = cpr_io_wait_make(CPR_MFD_ACCEPT_TIMEOUT_MS, m->cancel.fd);
    for (uint32_t got = 0; got < n;) {
        struct mfd_conn conn;
        uint32_t idx = 0;
        ret = accept_one(m, &w, uuid, &conn, &idx, errp);
        if (ret < 0) {
            cpr_error_prefix(errp, "multifd: %u of %u channels connected (%u connections refused%s%s)", got, n,
                             m->refused, m->why_refused ? ", the first: " : "",
                             m->why_refused ? m->why_refused : "");
            return ret;
        }
        if (ret == 1) {
            m->ch[idx].conn = conn;
            m->cancel.watch(m->cancel.opaque, conn.fd);
            got++;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        struct recv_chan *c = &m->ch[i];
        c->body = g_malloc(CPR_MFD_MAX_RUNS * CPR_MFD_RUN_SIZE + cpr_mfd_max_payload());
        c->scratch = g_malloc((size_t)CPR_MFD_MAX_PAGES * CPR_MFD_PAGE);
        c->exited = 0;
        c->thread = g_thread_new("cpr-multifd-in", recv_thread, c);
    }
    return 0;
}

/* Waits, locked, until pred holds for every channel; a failed channel fails it. */
static int recv_wait_all(struct cpr_multifd_recv *m, const uint64_t *seqs, const char *what, cpr_error **errp)
{
    for (uint32_t i = 0; i < m->n; i++) {
        struct recv_chan *c = &m->ch[i];
        while (seqs ? c->applied < seqs[i] : !c->ended) {
            if (c->failed)
                return report_kept(m->err, errp);
            if (c->exited)
                return cpr_error_set(errp, -EPROTO, "multifd channel %u ended before %s", i, what);
            g_cond_wait_until(&m->cond, &m->lock, g_get_monotonic_time() + POLL_CANCEL_US);
            int ret = cancelled(&m->cancel, errp);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

int cpr_multifd_recv_sync(struct cpr_multifd_recv *m, cpr_stream *s, cpr_error **errp)
{
    uint32_t epoch, n;
    int ret = cpr_stream_get_u32(s, &epoch, errp);
    if (ret == 0)
        ret = cpr_stream_get_u32(s, &n, errp);
    if (ret < 0)
        return ret;
    if (!m->ch || n != m->n || epoch != m->epoch)
        return cpr_error_set(errp, -EBADMSG, "multifd: sync entry for pass %u over %u channels where pass %u "
                             "over %u was due", epoch, n, m->epoch, m->n);
    g_autofree uint64_t *seqs = g_new(uint64_t, n);
    for (uint32_t i = 0; ret == 0 && i < n; i++)
        ret = cpr_stream_get_u64(s, &seqs[i], errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&m->lock);
    ret = recv_wait_all(m, seqs, "the pass's sync", errp);
    if (ret == 0) {
        m->epoch++;
        g_cond_broadcast(&m->cond);
    }
    g_mutex_unlock(&m->lock);
    /* Every page of the pass is in place: the source may now count it as carried. */
    if (ret == 0 && m->ack)
        ret = cpr_main_chan_send_pass_ack(m->ack_to, epoch, errp);
    return ret;
}

int cpr_multifd_recv_finish(struct cpr_multifd_recv *m, cpr_error **errp)
{
    if (!m->ch)
        return 0;
    g_mutex_lock(&m->lock);
    int ret = recv_wait_all(m, NULL, "its end packet", errp);
    g_mutex_unlock(&m->lock);
    return ret;
}

uint32_t cpr_multifd_recv_refused(struct cpr_multifd_recv *m)
{
    return m->refused;
}

void cpr_multifd_recv_free(struct cpr_multifd_recv *m)
{
    if (!m)
        return;
    g_mutex_lock(&m->lock);
    m->quit = 1;
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
    for (uint32_t i = 0; i < m->n; i++) {
        struct recv_chan *c = &m->ch[i];
        conn_stop(&m->cancel, &c->conn, c->thread, 1);
        g_free(c->body);
        g_free(c->scratch);
        cpr_zstd_free(c->z);
    }
    set_clear(&m->lock, &m->cond, m->err);
    g_free(m->ch);
    g_free(m->blocks);
    g_free(m->why_refused);
    g_free(m);
}
