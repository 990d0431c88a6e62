/* SPDX-License-Identifier: MIT */
/*
 * The main channel of a migration over the transports (cpr/transport.h), plus what the
 * engine adds: sockets registered with the owner's cancel so that it can shut them down, waits
 * that a cancel interrupts, and the acknowledgement byte on sockets (docs/migration.md). It
 * knows nothing of the job: its owner hands it a struct cpr_chan_cancel.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/transport.h>

#include "channel/file_save.h"
#include "channel/scm.h"
#include "channel/tls.h"
#include "core/bytes.h"
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
    ret = cpr_main_tls_start(&c->tls_cfg, CPR_TLS_ENDPOINT_SERVER, NULL, c->fd, c->s, &c->tls, errp);
    /* A session with a failure: the handshake passed, tls-authz did not admit the peer. */
    c->peer_unadmitted = ret < 0 && c->tls;
    return ret;
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

/* Reads exactly len bytes by deadline_us (< 0: none); < 0 on an error, the end, or the
 * deadline. */
static int read_exactly(struct cpr_main_chan *c, void *buf, size_t len, int64_t deadline_us)
{
    for (size_t got = 0; got < len;) {
        if (deadline_us >= 0 && g_get_monotonic_time() >= deadline_us)
            return -1;
        if (deadline_us >= 0)
            cpr_io_bound_socket(c->fd, MAX(deadline_us - g_get_monotonic_time(), 1));
        ssize_t n = cpr_main_tls_recv(c->tls, c->fd, (uint8_t *)buf + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* The reason that follows a 1.2 destination's NAK, made printable; NULL when none came within
 * CPR_MAIN_DRAIN_US (a peer that sends only the byte, or goes quiet). */
static char *read_nak_reason(struct cpr_main_chan *c)
{
    int64_t deadline = g_get_monotonic_time() + CPR_MAIN_DRAIN_US;
    uint8_t le[2];
    g_autofree char *raw = NULL;
    size_t len = 0;
    if (read_exactly(c, le, sizeof(le), deadline) == 0) {
        len = (size_t)cpr_le_get(le, sizeof(le));
        raw = len && len <= CPR_MAIN_NAK_REASON_MAX ? g_malloc(len) : NULL;
        if (raw && read_exactly(c, raw, len, deadline) < 0)
            g_clear_pointer(&raw, g_free);
    }
    cpr_io_bound_socket(c->fd, 0);
    if (!raw)
        return NULL;
    /* Text from the network goes into this side's messages and logs: no control characters
     * (C0, DEL, C1) and no invisible format characters such as bidirectional overrides. */
    g_autofree char *valid = g_utf8_make_valid(raw, (gssize)len);
    GString *text = g_string_sized_new(len);
    for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
        gunichar ch = g_utf8_get_char(p);
        GUnicodeType type = g_unichar_type(ch);
        if (type == G_UNICODE_CONTROL || type == G_UNICODE_FORMAT)
            g_string_append_c(text, ' ');
        else
            g_string_append_unichar(text, ch);
    }
    return g_string_free(text, FALSE);
}

int cpr_main_chan_send_pass_ack(struct cpr_main_chan *c, uint32_t pass, cpr_error **errp)
{
    uint8_t msg[5] = { CPR_MAIN_PASS_ACK };
    cpr_le_put(msg + 1, pass, 4);
    if (cpr_main_tls_send(c->tls, c->fd, msg, sizeof(msg), 0) != (ssize_t)sizeof(msg))
        return cpr_error_set_errno(errp, -errno ? -errno : -EIO, "main channel: acknowledging pass %u", pass);
    return 0;
}

/* A pass's acknowledgement whose first byte (n: what its read returned) was read into *b. */
static int pass_ack_rest(struct cpr_main_chan *c, ssize_t n, uint8_t b, uint32_t *pass, cpr_error **errp)
{
    uint8_t le[4];
    if (n == 1 && b == CPR_MAIN_NAK) {
        g_autofree char *why = read_nak_reason(c);
        return cpr_error_set(errp, -ECONNABORTED, "the destination failed (negative acknowledgement%s%s)",
                             why ? ": " : "", why ? why : "");
    }
    if (n == 1 && b == CPR_MAIN_PASS_ACK) {
        if (read_exactly(c, le, sizeof(le), -1) < 0)
            return cpr_error_set(errp, -ECONNRESET, "main channel: the destination's acknowledgement of a "
                                 "pass was cut short");
        *pass = (uint32_t)cpr_le_get(le, sizeof(le));
        return 0;
    }
    if (n == 1)
        return cpr_error_set(errp, -EPROTO, "main channel: the destination sent 0x%02x where a pass's "
                             "acknowledgement was due", b);
    if (n == 0)
        return cpr_error_set(errp, -ECONNRESET, "main channel: the destination closed it before it "
                             "acknowledged the pass");
    return cpr_error_set_errno(errp, n < 0 ? -errno : -EIO, "main channel: reading the destination's "
                               "acknowledgement of a pass");
}

int cpr_main_chan_read_pass_ack(struct cpr_main_chan *c, uint32_t *pass, cpr_error **errp)
{
    uint8_t b = 0;
    ssize_t n = cpr_main_tls_recv(c->tls, c->fd, &b, 1);
    return pass_ack_rest(c, n, b, pass, errp);
}

int cpr_main_chan_take_pass_acks(struct cpr_main_chan *c, const char *who, uint32_t *next, uint32_t end,
                                 cpr_error **errp)
{
    while (*next < end) {
        uint32_t pass;
        int ret = cpr_main_chan_read_pass_ack(c, &pass, errp);
        if (ret < 0)
            return ret;
        if (pass != *next)
            return cpr_error_set(errp, -EPROTO, "%s: the destination acknowledged pass %u where pass %u was "
                                 "due", who, pass, *next);
        (*next)++;
    }
    return 0;
}

int cpr_main_chan_poll_pass_ack(struct cpr_main_chan *c, uint32_t *pass, cpr_error **errp)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    if (poll(&p, 1, 0) <= 0)
        return 0;
    /* Readable under TLS may be a record with no data for us (a TLS 1.3 session ticket): the
     * short receive timeout keeps this a look, not a wait. */
    cpr_io_bound_socket(c->fd, CPR_MAIN_LOOK_US);
    uint8_t b = 0;
    ssize_t n = cpr_main_tls_recv(c->tls, c->fd, &b, 1);
    int looked_only = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    cpr_io_bound_socket(c->fd, 0);
    if (looked_only)
        return 0;
    int ret = pass_ack_rest(c, n, b, pass, errp);
    return ret < 0 ? ret : 1;
}

/* Waits for main to have something (0), or, with a commit signal, for the signal and then
 * CPR_COMMIT_ACK_GRACE_US without a byte on main (1): the destination committed and has not
 * acknowledged; its start hook may wait on this side's completion, so waiting on would hold
 * both sides paused. */
static int wait_ack_or_commit(struct cpr_main_chan *c, cpr_error **errp)
{
    if (c->commit_signal < 0) {
        cpr_io_wait w = cpr_io_wait_make(-1, -1);
        int ret = cpr_io_wait_fd(&w, c->fd, POLLIN, "main channel: waiting for the destination's acknowledgement",
                                 errp);
        return ret < 0 ? ret : 0;
    }
    struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = c->commit_signal, .events = POLLIN } };
    int64_t grace_end = -1;
    for (;;) {
        int timeout = grace_end < 0 ? -1 : (int)MAX((grace_end - g_get_monotonic_time() + 999) / 1000, 0);
        int n = poll(p, grace_end < 0 ? 2 : 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cpr_error_set_errno(errp, -errno, "main channel: waiting for the destination's acknowledgement");
        if (p[0].revents)
            return 0;
        if (grace_end >= 0 && n == 0)
            return 1;
        if (grace_end < 0 && p[1].revents)
            grace_end = g_get_monotonic_time() + CPR_COMMIT_ACK_GRACE_US;
    }
}

int cpr_main_chan_read_ack(struct cpr_main_chan *c, int *no_resume, cpr_error **errp)
{
    int ret = wait_ack_or_commit(c, errp);
    if (ret < 0)
        return ret;
    if (ret == 1) {
        c->committed_by_signal = 1;
        return 0;
    }
    uint8_t b = 0;
    ssize_t n = cpr_main_tls_recv(c->tls, c->fd, &b, 1);
    if (n == 1 && b == CPR_MAIN_PASS_ACK && c->offer_due) {
        /* The offer to acknowledge passes came after this side's last look for it. */
        uint32_t pass;
        c->offer_due = 0;
        if ((ret = pass_ack_rest(c, n, b, &pass, errp)) < 0)
            return ret;
        if (pass != 0) {
            *no_resume = 1; /* as any byte nobody sends: whether it committed is unknown */
            return cpr_error_set(errp, -EPROTO, "main channel: the destination acknowledged pass %u, which "
                                 "was never asked for: it may have committed, so the guest was left "
                                 "paused here", pass);
        }
        return cpr_main_chan_read_ack(c, no_resume, errp);
    }
    if (n == 1 && b == CPR_MAIN_ACK)
        return 0;
    /* A destination that sets the signal acknowledges only after it started the guest: main
     * ending before that is a destination that died after its commit. Read only now, after
     * main's end, so no commit can come after the look. */
    if (c->commit_signal >= 0 && cpr_commit_signal_is_set(c->commit_signal)) {
        c->committed_by_signal = 1;
        return 0;
    }
    if (n == 1 && b == CPR_MAIN_NAK) {
        g_autofree char *why = read_nak_reason(c);
        return cpr_error_set(errp, -ECONNABORTED, "the destination failed before it committed "
                             "(negative acknowledgement%s%s): this side resumes", why ? ": " : "", why ? why : "");
    }
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

void cpr_main_chan_refuse(struct cpr_main_chan *c, const char *reason)
{
    if (!c->is_socket || c->fd < 0)
        return;
    /* The byte and its reason in one send (one TLS record): the source reads them together. */
    if (c->peer_unadmitted) /* naming what this side admits would tell a stranger */
        reason = "this destination refused the source's TLS certificate (tls-authz; its log says why)";
    uint8_t msg[3 + CPR_MAIN_NAK_REASON_MAX] = { CPR_MAIN_NAK };
    size_t len = reason ? strlen(reason) : 0;
    if (len > CPR_MAIN_NAK_REASON_MAX) {
        len = CPR_MAIN_NAK_REASON_MAX;
        while (len && ((uint8_t)reason[len] & 0xc0) == 0x80) /* not inside a UTF-8 character */
            len--;
    }
    cpr_le_put(msg + 1, len, 2);
    if (len)
        memcpy(msg + 3, reason, len);
    size_t total = len ? 3 + len : 1;
    /* Best effort: a source that is gone, or a cancel's shutdown, makes these fail. With TLS
     * and no session (the handshake failed) nothing is sent: the source reads through its
     * session, where bytes in clear are a protocol error, and so a reason to stay paused; it
     * resumes on the end of the stream instead. */
    if (c->tls_cfg.creds && !c->tls) {
        /* nothing to send */
    } else if (cpr_main_tls_send(c->tls, c->fd, msg, total, MSG_DONTWAIT) != (ssize_t)total) {
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
