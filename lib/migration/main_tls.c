/* SPDX-License-Identifier: MIT */
/*
 * TLS on the main channel: which jobs may use it, the handshake right after the connection
 * (before the job is active, so a refusal leaves the source's guest running and the
 * destination without one), and the acknowledgement bytes through the session.
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "channel/tls.h"
#include "core/error.h"
#include "migration/main_tls.h"

int cpr_main_tls_check(cpr_ctx *ctx, const char *creds_id, int incoming, cpr_mode job_mode,
                       const cpr_channels *channels, cpr_error **errp)
{
    if (!creds_id)
        return 0;
    cpr_mode mode = channels && cpr_channels_get(channels, CPR_CHANNEL_CPR) ? CPR_MODE_CPR_TRANSFER : job_mode;
    if (mode != CPR_MODE_NORMAL)
        return cpr_error_set(errp, -EINVAL, "tls-creds is set, but TLS is for normal mode only, not %s: %s",
                             cpr_mode_name(mode),
                             mode == CPR_MODE_CPR_TRANSFER
                                 ? "its cpr channel passes fds by SCM_RIGHTS, which no TLS record can carry, "
                                   "and both processes share this host"
                                 : "its state goes to a file on this host, with no peer to handshake with");
    const cpr_addr *main = channels ? cpr_channels_get(channels, CPR_CHANNEL_MAIN) : NULL;
    cpr_transport t = main ? cpr_addr_transport(main) : CPR_TRANSPORT_FILE;
    if (t != CPR_TRANSPORT_TCP && t != CPR_TRANSPORT_UNIX) {
        g_autofree char *uri = main ? cpr_addr_to_uri(main) : g_strdup("(none)");
        return cpr_error_set(errp, -EINVAL, "tls-creds is set, but the main channel %s cannot carry TLS: only "
                             "tcp and unix sockets do (a file:, fd: or exec: channel has no peer to handshake "
                             "with)", uri);
    }
    cpr_tls_creds *creds = NULL;
    int ret = cpr_tls_creds_lookup(ctx, creds_id, &creds, errp);
    if (ret < 0)
        return ret;
    cpr_tls_endpoint want = incoming ? CPR_TLS_ENDPOINT_SERVER : CPR_TLS_ENDPOINT_CLIENT;
    int wrong = cpr_tls_creds_endpoint(creds) != want;
    cpr_tls_creds_unref(creds);
    if (wrong)
        return cpr_error_set(errp, -EINVAL, "tls-creds '%s' are for endpoint=%s, but the %s needs endpoint=%s",
                             creds_id, incoming ? "client" : "server",
                             incoming ? "destination" : "source", incoming ? "server" : "client");
    return 0;
}

int cpr_main_tls_authz_check(cpr_ctx *ctx, const char *creds, const char *authz, cpr_error **errp)
{
    if (!authz)
        return 0;
    if (!creds)
        return cpr_error_set(errp, -EINVAL, "tls-authz '%s' is set, but tls-creds is not: without TLS there is "
                             "no certificate to authorize", authz);
    g_autofree char *identity = NULL;
    return cpr_tls_authz_identity(ctx, authz, &identity, errp);
}

int cpr_chan_tls_wrap(const struct cpr_chan_tls *cfg, cpr_tls_endpoint role, const cpr_addr *a, int fd,
                      cpr_stream *s, struct cpr_tls_session **tls, cpr_error **errp)
{
    const char *host = cfg->hostname;
    if (!host && a && cpr_addr_transport(a) == CPR_TRANSPORT_TCP)
        host = cpr_addr_host(a);
    int authz = role == CPR_TLS_ENDPOINT_SERVER && cfg->authz;
    /* With tls-authz the stream runs through the session only once the peer is admitted. */
    int ret = cpr_tls_channel_wrap(cfg->ctx, cfg->creds, host, role, fd, authz ? NULL : s, tls, errp);
    if (ret < 0 || !authz)
        return ret;
    /* Refused, the session stays in *tls: the destination's NAK goes through it, so the source
     * reads a refusal and resumes (a byte in clear would leave it unsure, its guest paused). */
    ret = cpr_tls_authz_check(cfg->ctx, cfg->authz, *tls, errp);
    if (ret == 0 && s)
        cpr_tls_session_attach(*tls, s);
    return ret;
}

int cpr_main_tls_start(const struct cpr_chan_tls *cfg, cpr_tls_endpoint role, const cpr_addr *a, int fd,
                       cpr_stream *s, struct cpr_tls_session **tls, cpr_error **errp)
{
    int ret = cpr_chan_tls_wrap(cfg, role, a, fd, s, tls, errp);
    if (ret < 0)
        cpr_error_prefix(errp, "main channel");
    return ret;
}

ssize_t cpr_main_tls_recv(struct cpr_tls_session *tls, int fd, void *buf, size_t len)
{
    ssize_t n;
    do {
        n = tls ? cpr_tls_session_read(tls, buf, len) : read(fd, buf, len);
    } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t cpr_main_tls_send(struct cpr_tls_session *tls, int fd, const void *buf, size_t len, int flags)
{
    if (tls) {
        struct iovec iov = { (void *)buf, len };
        return cpr_tls_session_writev(tls, &iov, 1);
    }
    ssize_t n;
    while ((n = send(fd, buf, len, MSG_NOSIGNAL | flags)) < 0 && errno == EINTR) {
    }
    return n;
}

void cpr_main_tls_end_half(struct cpr_tls_session *tls, int fd)
{
    /* Best effort: a peer that is gone shows in the read that follows. */
    if (tls && cpr_tls_session_bye(tls) < 0) {
    }
    shutdown(fd, SHUT_WR);
}
