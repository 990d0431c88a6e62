/* SPDX-License-Identifier: MIT */
/*
 * A TLS session on a connected socket (GnuTLS), and the stream transport that runs a stream's
 * reads and writes through it. The socket stays blocking, as the plain path's: a job's cancel
 * shuts it down, which ends any wait here too.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include <glib.h>

#include "channel/gnutls_lib.h"
#include "channel/tls.h"
#include "core/error.h"
#include "format/stream.h"

#ifdef CPR_HAVE_GNUTLS

struct cpr_tls_session {
    gnutls_session_t s;
    const struct cpr_gnutls *g; /* the creds' GnuTLS entry points */
    cpr_tls_creds *creds; /* a reference: GnuTLS uses them for the session's life */
    int fd;
    int sys_errno;        /* errno of the last failed send or recv */
    size_t received;      /* bytes the peer sent, and the first of them (how a failed */
    unsigned char first;  /* handshake is worded: a dead peer, or one without TLS) */
    int eof;              /* the peer closed its end */
    char *last_error;
};

/* The transport: send and recv on the fd, remembering errno (GnuTLS reports only "pull/push
 * error") and never raising SIGPIPE. */
static ssize_t push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    struct cpr_tls_session *t = p;
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0)
        t->sys_errno = errno;
    return n;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    struct cpr_tls_session *t = p;
    ssize_t n = recv(t->fd, buf, len, 0);
    if (n < 0)
        t->sys_errno = errno;
    if (n > 0 && !t->received)
        t->first = *(unsigned char *)buf;
    if (n > 0)
        t->received += (size_t)n;
    t->eof |= n == 0;
    return n;
}

static int pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
    struct cpr_tls_session *t = p;
    struct pollfd pfd = { .fd = t->fd, .events = POLLIN };
    int n;
    while ((n = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms)) < 0 && errno == EINTR) {
    }
    return n;
}

static void set_last_error(struct cpr_tls_session *t, const char *fmt, ...) CPR_PRINTF(2, 3);
static void set_last_error(struct cpr_tls_session *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(t->last_error);
    t->last_error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

/* GNUTLS_E_AGAIN from a receive or send timeout the caller set on this blocking socket
 * (SO_RCVTIMEO): the wait must end. GnuTLS also says AGAIN without one; that is retried. */
static int timed_out(const struct cpr_tls_session *t, int r)
{
    return r == GNUTLS_E_AGAIN && (t->sys_errno == EAGAIN || t->sys_errno == EWOULDBLOCK);
}

/* Whether to call a GnuTLS function again after r: interrupted, or not fatal and no timeout. */
static int again(struct cpr_tls_session *t, int r)
{
    int retry = r == GNUTLS_E_INTERRUPTED || (r < 0 && !t->g->error_is_fatal(r) && !timed_out(t, r));
    if (retry)
        t->sys_errno = 0;
    return retry;
}

/* A failed record call as errno: the socket's own when the socket failed, else EPROTO. */
static int record_errno(struct cpr_tls_session *t, int r)
{
    if (timed_out(t, r)) {
        set_last_error(t, "timed out");
        return EAGAIN;
    }
    if ((r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR) && t->sys_errno) {
        set_last_error(t, "%s", strerror(t->sys_errno));
        return t->sys_errno;
    }
    set_last_error(t, "TLS: %s", t->g->strerror(r));
    return EPROTO;
}

/* What the peer's certificate failed, in GnuTLS's words ("The certificate is NOT trusted. The
 * certificate issuer is unknown. The name in the certificate does not match the expected."). */
static char *verify_detail(struct cpr_tls_session *t)
{
    unsigned int status = t->g->session_get_verify_cert_status(t->s);
    gnutls_datum_t out = { NULL, 0 };
    gnutls_certificate_type_t type = t->g->certificate_type_get(t->s);
    if (t->g->certificate_verification_status_print(status, type, &out, 0) < 0)
        return g_strdup_printf("verification status 0x%x", status);
    char *s = g_strdup((const char *)out.data);
    t->g->free_(out.data);
    return s;
}

static int handshake_error(struct cpr_tls_session *t, int r, const char *role, cpr_error **errp)
{
    const char *peer = strcmp(role, "client") == 0 ? "the server" : "the client";
    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        g_autofree char *detail = verify_detail(t);
        return cpr_error_set(errp, -EACCES, "TLS handshake (as %s): %s's certificate was refused: %s", role, peer,
                             detail);
    }
    if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
        return cpr_error_set(errp, -EACCES, "TLS handshake (as %s): %s refused it (alert: %s); does it trust "
                             "our certificate's CA?", role, peer, t->g->alert_get_name(t->g->alert_get(t->s)));
    if (r == GNUTLS_E_NO_CERTIFICATE_FOUND || r == GNUTLS_E_CERTIFICATE_REQUIRED)
        return cpr_error_set(errp, -EACCES, "TLS handshake (as %s): %s sent no certificate from a CA this "
                             "side trusts (its ca-cert.pem), and this side verifies its peer (verify-peer)", role, peer);
    if (timed_out(t, r))
        return cpr_error_set(errp, -ETIMEDOUT, "TLS handshake (as %s): %s did not go on with it in time", role,
                             peer);
    if (r == GNUTLS_E_PUSH_ERROR || r == GNUTLS_E_PULL_ERROR)
        return cpr_error_set_errno(errp, -(t->sys_errno ? t->sys_errno : EIO), "TLS handshake (as %s): the "
                                   "connection to %s failed", role, peer);
    /* A TLS peer's first record is a handshake (22); a plain one is anything else. */
    if (t->eof && (!t->received || t->first == 22))
        return cpr_error_set(errp, -ECONNRESET, "TLS handshake (as %s): %s closed the connection mid-handshake "
                             "(after %zu bytes from it): it died, or the link or its end went away", role, peer,
                             t->received);
    if (r == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || r == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
        r == GNUTLS_E_UNEXPECTED_PACKET || r == GNUTLS_E_PREMATURE_TERMINATION ||
        r == GNUTLS_E_RECORD_OVERFLOW)
        return cpr_error_set(errp, -EPROTO, "TLS handshake (as %s): %s did not answer in TLS (%s): does it use "
                             "TLS too (tls-creds)?", role, peer, t->g->strerror(r));
    return cpr_error_set(errp, -EPROTO, "TLS handshake (as %s) with %s failed: %s", role, peer, t->g->strerror(r));
}

int cpr_tls_session_start(cpr_tls_creds *creds, int fd, cpr_tls_endpoint role, const char *hostname,
                          struct cpr_tls_session **out, cpr_error **errp)
{
    int client = role == CPR_TLS_ENDPOINT_CLIENT;
    const char *rname = client ? "client" : "server";
    if (cpr_tls_creds_endpoint(creds) != role)
        return cpr_error_set(errp, -EINVAL, "TLS credentials are for the %s endpoint, but this side is the %s "
                             "(the source is the client, the destination the server)", client ? "server" : "client",
                             rname);
    int verify = cpr_tls_creds_verify_peer(creds);
    if (client && verify && (!hostname || !*hostname))
        return cpr_error_set(errp, -EINVAL, "TLS: no hostname to check the server's certificate against: set "
                             "tls-hostname (a unix socket has no host of its own)");
    struct cpr_tls_session *t = g_new0(struct cpr_tls_session, 1);
    t->fd = fd;
    t->creds = cpr_tls_creds_ref(creds);
    t->g = cpr_tls_creds_lib(creds);
    int r = t->g->init(&t->s, client ? GNUTLS_CLIENT : GNUTLS_SERVER);
    if (r < 0) {
        t->s = NULL;
        cpr_tls_session_free(t);
        return cpr_error_set(errp, -ENOMEM, "TLS: %s", t->g->strerror(r));
    }
    if ((r = t->g->set_default_priority(t->s)) == 0)
        r = t->g->credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cpr_tls_creds_gnutls(creds));
    if (r == 0 && client && hostname && *hostname && !g_hostname_is_ip_address(hostname))
        r = t->g->server_name_set(t->s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
    if (r < 0) {
        cpr_tls_session_free(t);
        return cpr_error_set(errp, -EPROTO, "TLS: setting up the session: %s", t->g->strerror(r));
    }
    if (verify) {
        /* The handshake fails on a certificate that does not verify (for a client, also one
         * not issued to hostname); a verifying server requires one. */
        if (!client)
            t->g->certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        t->g->session_set_verify_cert(t->s, client ? hostname : NULL, 0);
    }
    t->g->transport_set_ptr(t->s, t);
    t->g->transport_set_push_function(t->s, push);
    t->g->transport_set_pull_function(t->s, pull);
    t->g->transport_set_pull_timeout_function(t->s, pull_timeout);
    t->g->handshake_set_timeout(t->s, GNUTLS_INDEFINITE_TIMEOUT);
    do {
        r = t->g->handshake(t->s);
    } while (again(t, r));
    if (r < 0) {
        int ret = handshake_error(t, r, rname, errp);
        cpr_tls_session_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

ssize_t cpr_tls_session_read(struct cpr_tls_session *t, void *buf, size_t len)
{
    for (;;) {
        ssize_t r = t->g->record_recv(t->s, buf, len);
        if (r >= 0)
            return r;
        if (again(t, (int)r))
            continue;
        /* A peer that closed without close_notify: its end; what it meant to send is checked
         * by the stream's own end record. */
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        errno = record_errno(t, (int)r);
        return -1;
    }
}

ssize_t cpr_tls_session_writev(struct cpr_tls_session *t, const struct iovec *iov, int cnt)
{
    /* Corked, the pieces of one writev (record headers, pages) fill whole TLS records. */
    size_t total = 0;
    t->g->record_cork(t->s);
    for (int i = 0; i < cnt; i++) {
        ssize_t r = t->g->record_send(t->s, iov[i].iov_base, iov[i].iov_len);
        if (r < 0) {
            errno = record_errno(t, (int)r);
            return -1;
        }
        total += iov[i].iov_len;
    }
    int r;
    while ((r = t->g->record_uncork(t->s, GNUTLS_RECORD_WAIT)) < 0 && again(t, r)) {
    }
    if (r < 0) {
        errno = record_errno(t, r);
        return -1;
    }
    return (ssize_t)total;
}

const char *cpr_tls_session_last_error(const struct cpr_tls_session *t)
{
    return t && t->last_error ? t->last_error : "";
}

int cpr_tls_session_bye(struct cpr_tls_session *t)
{
    int r;
    while ((r = t->g->bye(t->s, GNUTLS_SHUT_WR)) < 0 && again(t, r)) {
    }
    if (r < 0) {
        errno = record_errno(t, r);
        return -1;
    }
    return 0;
}

void cpr_tls_session_free(struct cpr_tls_session *t)
{
    if (!t)
        return;
    if (t->s)
        t->g->deinit(t->s);
    cpr_tls_creds_unref(t->creds);
    g_free(t->last_error);
    g_free(t);
}

char *cpr_tls_session_peer_dn(struct cpr_tls_session *t)
{
    unsigned int n = 0;
    const gnutls_datum_t *certs = t->g->certificate_get_peers(t->s, &n);
    gnutls_x509_crt_t crt;
    if (!certs || !n || t->g->x509_crt_init(&crt) < 0)
        return NULL;
    char *dn = NULL;
    gnutls_datum_t out = { NULL, 0 };
    if (t->g->x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 && t->g->x509_crt_get_dn2(crt, &out) == 0)
        dn = g_strndup((const char *)out.data, out.size);
    t->g->free_(out.data);
    t->g->x509_crt_deinit(crt);
    return dn;
}

#else /* !CPR_HAVE_GNUTLS: no session can start, so the others are never reached */

struct cpr_tls_session {
    int unused;
};

int cpr_tls_session_start(cpr_tls_creds *creds, int fd, cpr_tls_endpoint role, const char *hostname,
                          struct cpr_tls_session **out, cpr_error **errp)
{
    (void)creds, (void)fd, (void)role, (void)hostname, (void)out;
    return cpr_error_set(errp, -ENOTSUP, CPR_TLS_MISSING);
}

ssize_t cpr_tls_session_read(struct cpr_tls_session *t, void *buf, size_t len)
{
    (void)t, (void)buf, (void)len;
    errno = ENOTSUP;
    return -1;
}

ssize_t cpr_tls_session_writev(struct cpr_tls_session *t, const struct iovec *iov, int cnt)
{
    (void)t, (void)iov, (void)cnt;
    errno = ENOTSUP;
    return -1;
}

const char *cpr_tls_session_last_error(const struct cpr_tls_session *t)
{
    (void)t;
    return CPR_TLS_MISSING;
}

int cpr_tls_session_bye(struct cpr_tls_session *t)
{
    (void)t;
    errno = ENOTSUP;
    return -1;
}

char *cpr_tls_session_peer_dn(struct cpr_tls_session *t)
{
    (void)t;
    return NULL;
}

void cpr_tls_session_free(struct cpr_tls_session *t)
{
    g_free(t);
}

#endif

/* ---- the stream transport ---- */

static ssize_t io_writev(void *opaque, const struct iovec *iov, int cnt)
{
    return cpr_tls_session_writev(opaque, iov, cnt);
}

static ssize_t io_read(void *opaque, void *buf, size_t len)
{
    return cpr_tls_session_read(opaque, buf, len);
}

static const char *io_last_error(void *opaque)
{
    return cpr_tls_session_last_error(opaque);
}

static const struct cpr_stream_io tls_io = { io_writev, io_read, io_last_error };

void cpr_tls_session_attach(struct cpr_tls_session *t, cpr_stream *s)
{
    cpr_stream_set_io(s, &tls_io, t);
}

int cpr_tls_channel_wrap(cpr_ctx *ctx, const char *creds_id, const char *hostname, cpr_tls_endpoint role,
                         int fd, cpr_stream *s, struct cpr_tls_session **out, cpr_error **errp)
{
    cpr_tls_creds *creds = NULL;
    int ret = cpr_tls_creds_lookup(ctx, creds_id, &creds, errp);
    if (ret < 0)
        return ret;
    struct cpr_tls_session *t = NULL;
    ret = cpr_tls_session_start(creds, fd, role, hostname, &t, errp);
    cpr_tls_creds_unref(creds);
    if (ret < 0)
        return ret;
    if (s)
        cpr_tls_session_attach(t, s);
    *out = t;
    return 0;
}
