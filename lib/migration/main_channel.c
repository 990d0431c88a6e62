/* SPDX-License-Identifier: MIT */
/*
 * The main channel of a migration over the transports (cpr/transport.h), plus what the
 * engine adds: sockets registered with the owner's cancel so that it can shut them down, waits
 * that a cancel interrupts, and the acknowledgement byte on sockets (docs/migration.md). It
 * knows nothing of the job: its owner hands it a struct cpr_chan_cancel.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/transport.h>

#include "channel/file_save.h"
#include "channel/scm.h"
#include "channel/tls.h"
#include "core/error.h"
#include "format/stream.h"
#include "handover/commit_signal.h"
#include "migration/main_channel.h"
#include "migration/main_tls.h"

void cpr_main_chan_init(struct cpr_main_chan *c, const struct cpr_chan_cancel *cancel)
{
    c->cancel = *cancel;
    c->tls_cfg = (struct cpr_chan_tls){ 0 };
    c->s = NULL;
    c->l = NULL;
    c->fd = -1;
    c->is_socket = 0;
    c->is_file = 0;
    c->tls = NULL;
    c->keep_listener = 0;
    c->commit_signal = -1;
    c->committed_by_signal = 0;
}

/* The stream is open: note its fd and let cancel reach it when it is a socket. */
static void opened(struct cpr_main_chan *c)
{
    struct stat st;
    c->fd = c->s->fd;
    int known = fstat(c->fd, &st) == 0;
    c->is_socket = known && S_ISSOCK(st.st_mode);
    c->is_file = known && S_ISREG(st.st_mode);
    if (c->is_socket)
        c->cancel.watch(c->cancel.opaque, c->fd);
    else /* pipes and exec: commands: cancel ends the stream's waits and stops the command */
        cpr_stream_set_cancel_fd(c->s, c->cancel.fd);
}

/* Back to unopened, keeping the cancel, TLS and the commit signal. */
static void reset(struct cpr_main_chan *c)
{
    struct cpr_chan_cancel cancel = c->cancel;
    struct cpr_chan_tls tls_cfg = c->tls_cfg;
    int commit_signal = c->commit_signal;
    cpr_main_chan_init(c, &cancel);
    c->tls_cfg = tls_cfg;
    c->commit_signal = commit_signal;
}

void cpr_main_chan_use_tls(struct cpr_main_chan *c, cpr_ctx *ctx, const char *creds, const char *hostname)
{
    c->tls_cfg = (struct cpr_chan_tls){ .ctx = ctx, .creds = creds, .hostname = hostname };
}

int cpr_main_chan_connect(struct cpr_main_chan *c, const cpr_addr *a, cpr_error **errp)
{
    reset(c);
    int ret = cpr_transport_open_output_durable(a, &c->s, errp);
    if (ret < 0) {
        cpr_error_prefix(errp, "main channel");
        return ret;
    }
    opened(c);
    if (c->tls_cfg.creds && (ret = cpr_main_tls_start(&c->tls_cfg, CPR_TLS_ENDPOINT_CLIENT, a, c->fd, c->s,
                                                      &c->tls, errp)) < 0) {
        cpr_main_chan_close(c, NULL);
        return ret;
    }
    return 0;
}

int cpr_main_chan_listen(struct cpr_main_chan *c, const cpr_addr *a, cpr_error **errp)
{
    reset(c);
    /* Like the cpr channel, a unix main channel takes only a peer of our own uid. */
    int ret = cpr_listener_new(a, CPR_LISTEN_SAME_UID, &c->l, errp);
    if (ret < 0)
        cpr_error_prefix(errp, "main channel");
    return ret < 0 ? ret : 0;
}

int cpr_main_chan_accept(struct cpr_main_chan *c, cpr_error **errp)
{
    int lfd = cpr_listener_fd(c->l);
    if (lfd >= 0) {
        /* The listener's own wait knows no cancel: wait here, then take the ready peer. */
        cpr_io_wait w = cpr_io_wait_make(-1, c->cancel.fd);
        int ret = cpr_io_wait_fd(&w, lfd, POLLIN, "main channel: waiting for the source", errp);
        if (ret < 0)
            return ret;
    }
    int ret = cpr_listener_accept(c->l, lfd >= 0 ? 0 : -1, &c->s, errp);
    if (ret < 0) {
        cpr_error_prefix(errp, "main channel");
        return ret;
    }
    if (!c->keep_listener) {
        cpr_listener_free(c->l);
        c->l = NULL;
    }
    opened(c);
    if (!c->tls_cfg.creds)
        return 0;
    return cpr_main_tls_start(&c->tls_cfg, CPR_TLS_ENDPOINT_SERVER, NULL, c->fd, c->s, &c->tls, errp);
}

int cpr_main_chan_close(struct cpr_main_chan *c, cpr_error **errp)
{
    if (c->is_socket)
        c->cancel.unwatch(c->cancel.opaque, c->fd);
    /* Flushes what is left and reaps an exec: command, whose failure is returned. */
    int ret = cpr_stream_close(c->s, errp);
    cpr_tls_session_free(c->tls);
    cpr_listener_free(c->l);
    reset(c);
    if (ret < 0)
        cpr_error_prefix(errp, "main channel");
    return ret;
}

/* A UNIX socket resets only when its peer closes with bytes unread. A destination that
 * committed had read the end record, and the source sends nothing after it: so a reset there
 * means the destination never committed. On a network a reset may come from anywhere. */
static int is_local(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

/* Past the final record a cancel cannot be honoured (docs/migration.md): no cancel fd here. */
int cpr_main_chan_wait_ack(struct cpr_main_chan *c, int *no_resume, cpr_error **errp)
{
    /* Our half is done: a destination that drains before it closes sees the end at once. */
    cpr_main_tls_end_half(c->tls, c->fd);
    return cpr_main_chan_read_ack(c, no_resume, errp);
}

int cpr_main_chan_read_ack(struct cpr_main_chan *c, int *no_resume, cpr_error **errp)
{
    cpr_io_wait w = cpr_io_wait_make(-1, -1);
    int ret = cpr_io_wait_fd(&w, c->fd, POLLIN, "main channel: waiting for the destination's acknowledgement", errp);
    if (ret < 0)
        return ret;
    uint8_t b = 0;
    ssize_t n = cpr_main_tls_recv(c->tls, c->fd, &b, 1);
    if (n == 1 && b == CPR_MAIN_ACK)
        return 0;
    /* A destination that sets the signal acknowledges only after it started the guest: main
     * ending before that is a destination that died after its commit. Read only now, after
     * main's end, so no commit can come after the look. */
    if (c->commit_signal >= 0 && cpr_commit_signal_is_set(c->commit_signal)) {
        c->committed_by_signal = 1;
        return 0;
    }
    if (n == 1 && b == CPR_MAIN_NAK)
        return cpr_error_set(errp, -ECONNABORTED, "the destination failed before it committed "
                             "(negative acknowledgement): this side resumes");
    if (n == 0)
        return cpr_error_set(errp, -ECONNRESET, "the destination closed the main channel without "
                             "acknowledging the load: it failed or died, so this side resumes");
    if (n < 0 && errno == ECONNRESET && is_local(c->fd))
        return cpr_error_set(errp, -ECONNRESET, "the destination closed the main channel with part "
                             "of the stream unread: it never committed, so this side resumes");
    /* A reset on a network, or a byte nobody sends: the acknowledgement may have been sent
     * and lost, so the destination may run the guest. Running it here too could run it twice. */
    *no_resume = 1;
    if (n < 0)
        return cpr_error_set_errno(errp, -errno, "main channel: reading the destination's "
                                   "acknowledgement failed: the destination may have committed "
                                   "and run the guest, so it was left paused here (resume it only "
                                   "once the destination is known not to run it)");
    return cpr_error_set(errp, -EPROTO, "main channel: the destination sent 0x%02x where its "
                         "acknowledgement was due: it may run the guest, so it was left paused here", b);
}

int cpr_main_chan_send_ack(struct cpr_main_chan *c, cpr_error **errp)
{
    uint8_t b = CPR_MAIN_ACK;
    ssize_t n = cpr_main_tls_send(c->tls, c->fd, &b, 1, 0);
    if (n != 1)
        return cpr_error_set_errno(errp, n < 0 ? -errno : -EIO, "main channel: sending the acknowledgement");
    return 0;
}

void cpr_main_chan_refuse(struct cpr_main_chan *c)
{
    if (!c->is_socket || c->fd < 0)
        return;
    uint8_t b = CPR_MAIN_NAK;
    /* Best effort: a source that is gone, or a cancel's shutdown, makes these fail. */
    if (cpr_main_tls_send(c->tls, c->fd, &b, 1, MSG_DONTWAIT) != 1) {
        /* nothing to do: the source sees the end of the stream instead */
    }
    cpr_main_tls_end_half(c->tls, c->fd);
    /* Closing with unread bytes would reset the connection and could lose the NAK: read to
     * the source's end, for a bounded time (a 1.0/1.1 source never ends its half). */
    int64_t deadline = g_get_monotonic_time() + CPR_MAIN_DRAIN_US;
    char buf[4096];
    for (;;) {
        int64_t left = deadline - g_get_monotonic_time();
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)((left + 999) / 1000)) <= 0)
            return;
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}
