/* SPDX-License-Identifier: MIT */
/* Private: TLS on the main channel (lib/migration/main_tls.c); docs/migration.md, "TLS". */
#ifndef CPR_MIGRATION_MAIN_TLS_H
#define CPR_MIGRATION_MAIN_TLS_H

#include <sys/types.h>

#include <cpr/channel.h>
#include <cpr/ctx.h>
#include <cpr/mode.h>
#include <cpr/stream.h>
#include <cpr/tls.h>

/* TLS on the channel (docs/migration.md, "TLS"): the credentials' id on ctx (NULL: none),
 * the name the destination's certificate must carry (NULL: an outgoing tcp address's host) and,
 * on the destination, the authorization object the source's certificate must match (NULL:
 * any from the CA). Borrowed: the owner keeps them alive while the channel is open. */
struct cpr_chan_tls {
    cpr_ctx *ctx;
    const char *creds;
    const char *hostname;
    const char *authz;
};

struct cpr_tls_session;

/* Before a job starts, with credentials `creds` set (NULL: 0 at once): refuses a mode other
 * than normal and a main channel other than tcp or unix (saying why), and credentials that do
 * not exist on ctx or are for the other endpoint (the destination, `incoming`, is the server). */
int cpr_main_tls_check(cpr_ctx *ctx, const char *creds, int incoming, cpr_mode mode, const cpr_channels *channels,
                       cpr_error **errp);
/* Before an incoming job starts, with an authorization object `authz` set (NULL: 0 at once):
 * refuses it without credentials (nothing to check the source's certificate with) and when
 * no such object exists on ctx. */
int cpr_main_tls_authz_check(cpr_ctx *ctx, const char *creds, const char *authz, cpr_error **errp);
/* The handshake on any connected (client) or accepted (server) socket fd of a job, with the
 * job's TLS settings (main channel, multifd channels); `a` as below; s may be NULL. A server
 * with cfg->authz then checks the peer's certificate name (-EACCES); refused, *tls still holds
 * the session, not attached to s, for the refusal to go through; the caller frees it. */
int cpr_chan_tls_wrap(const struct cpr_chan_tls *cfg, cpr_tls_endpoint role, const cpr_addr *a, int fd,
                      cpr_stream *s, struct cpr_tls_session **tls, cpr_error **errp);
/* The handshake on a connected (client) or accepted (server) main channel, socket fd, stream
 * s, with the channel's TLS settings; the stream then runs through the session (*tls). `a`
 * gives an outgoing tcp channel's host for the name check when cfg has no hostname. */
int cpr_main_tls_start(const struct cpr_chan_tls *cfg, cpr_tls_endpoint role, const cpr_addr *a, int fd,
                       cpr_stream *s, struct cpr_tls_session **tls, cpr_error **errp);
/* The acknowledgement's bytes on fd, through the session when there is one (tls not NULL):
 * as read(2)/send(2). */
ssize_t cpr_main_tls_recv(struct cpr_tls_session *tls, int fd, void *buf, size_t len);
ssize_t cpr_main_tls_send(struct cpr_tls_session *tls, int fd, const void *buf, size_t len, int flags);
/* Ends this side's half: close_notify on a session, then shutdown(SHUT_WR). */
void cpr_main_tls_end_half(struct cpr_tls_session *tls, int fd);

#endif
