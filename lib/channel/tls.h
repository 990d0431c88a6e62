/* SPDX-License-Identifier: MIT */
/*
 * Private: TLS on a connected socket (lib/channel/tls.c, GnuTLS) and the credentials registry
 * of a context (lib/channel/tls_creds.c).
 *
 * The main channel starts a session with cpr_tls_channel_wrap() right after it connects or
 * accepts; every other connection of a migration (the multifd channels) does the same with
 * the job's parameters, so that "tls-creds" covers every channel:
 *
 *     struct cpr_tls_session *tls = NULL;
 *     if (job->params.tls_creds)
 *         ret = cpr_tls_channel_wrap(job->ctx, job->params.tls_creds, hostname,
 *                                    outgoing ? CPR_TLS_ENDPOINT_CLIENT : CPR_TLS_ENDPOINT_SERVER,
 *                                    fd, stream, &tls, errp);
 *     ... the stream's reads and writes now go through TLS ...
 *     cpr_stream_close(stream, errp);   (flushes through the session)
 *     cpr_tls_session_free(tls);        (after the stream: the session outlives its I/O)
 *
 * A session is used by one thread at a time (the stream's). Without GnuTLS every function that
 * would start a session fails with -ENOTSUP and the message CPR_TLS_MISSING.
 */
#ifndef CPR_CHANNEL_TLS_H
#define CPR_CHANNEL_TLS_H

#include <sys/types.h>
#include <sys/uio.h>

#include <cpr/stream.h>
#include <cpr/tls.h>

#define CPR_TLS_MISSING "libcpr was built without TLS (GnuTLS)"

struct cpr_tls_session;

/* ---- credentials (tls_creds.c) ---- */

/* A counted reference to the credentials registered as `id`; -ENOENT with an error naming
 * the id when there are none, -ENOTSUP without GnuTLS. Release with cpr_tls_creds_unref(). */
int cpr_tls_creds_lookup(cpr_ctx *ctx, const char *id, cpr_tls_creds **out, cpr_error **errp);
cpr_tls_creds *cpr_tls_creds_ref(cpr_tls_creds *creds);
void cpr_tls_creds_unref(cpr_tls_creds *creds);
cpr_tls_endpoint cpr_tls_creds_endpoint(const cpr_tls_creds *creds);
int cpr_tls_creds_verify_peer(const cpr_tls_creds *creds);
/* The GnuTLS certificate credentials (gnutls_certificate_credentials_t), as void *. */
void *cpr_tls_creds_gnutls(const cpr_tls_creds *creds);
#ifdef CPR_HAVE_GNUTLS
/* The GnuTLS entry points the credentials loaded (channel/gnutls_lib.h), for their sessions. */
struct cpr_gnutls;
const struct cpr_gnutls *cpr_tls_creds_lib(const cpr_tls_creds *creds);
#endif

/* ---- sessions (tls.c) ---- */

/*
 * Runs the TLS handshake on the connected socket `fd` (borrowed: closing it stays the
 * caller's) as `role`, with `creds` (their endpoint must be `role`). A client that verifies
 * its peer needs `hostname`: the name (or IP address) the server's certificate must carry.
 * Blocks until the handshake ends; a shutdown(2) of fd (a job's cancel) ends it too.
 * Errors name what failed: the peer's certificate (untrusted CA, wrong name, expired, none),
 * an alert from the peer that refused ours, a peer that does not speak TLS.
 */
int cpr_tls_session_start(cpr_tls_creds *creds, int fd, cpr_tls_endpoint role, const char *hostname,
                          struct cpr_tls_session **out, cpr_error **errp);
/* read(2) and writev(2) through the session: bytes, 0 at the peer's end, -1 with errno. */
ssize_t cpr_tls_session_read(struct cpr_tls_session *t, void *buf, size_t len);
ssize_t cpr_tls_session_writev(struct cpr_tls_session *t, const struct iovec *iov, int cnt);
/* The last failure in words (for messages); "" when none. */
const char *cpr_tls_session_last_error(const struct cpr_tls_session *t);
/* Ends this side's half (close_notify), as shutdown(SHUT_WR) would. 0 or -1 with errno. */
int cpr_tls_session_bye(struct cpr_tls_session *t);
/* Frees the session (not the fd). NULL is a no-op. */
void cpr_tls_session_free(struct cpr_tls_session *t);
/* The distinguished name of the peer's certificate as GnuTLS writes it (RFC 4514), newly
 * allocated (g_free); NULL when the peer sent none. After a handshake. */
char *cpr_tls_session_peer_dn(struct cpr_tls_session *t);
/* Makes the fd stream `s` read and write through `t` (which must outlive the stream's I/O). */
void cpr_tls_session_attach(struct cpr_tls_session *t, cpr_stream *s);

/*
 * The one call for a migration channel: looks up the credentials `creds_id` on ctx, starts a
 * session on fd as `role` and attaches it to the stream `s` (NULL: none). On success *out
 * owns the session. Errors: -ENOENT (no such credentials), -EINVAL (credentials for the
 * other endpoint, no hostname), -ENOTSUP (built without GnuTLS), or the handshake's.
 */
int cpr_tls_channel_wrap(cpr_ctx *ctx, const char *creds_id, const char *hostname, cpr_tls_endpoint role,
                         int fd, cpr_stream *s, struct cpr_tls_session **out, cpr_error **errp);

/* ---- authorization objects (tls_authz.c) ---- */

/* The identity of authorization object `id` on ctx, newly allocated, in *out. Errors: -ENOENT
 * (no such object, the message says how to add one). Thread-safe. */
int cpr_tls_authz_identity(cpr_ctx *ctx, const char *id, char **out, cpr_error **errp);
/* After a server's handshake: 0 when the peer's certificate names exactly authorization object
 * `id`'s identity; else -EACCES naming the peer's name and the one authorized (or -ENOENT: no
 * such object). The session is left as it was: the caller tells the peer. */
int cpr_tls_authz_check(cpr_ctx *ctx, const char *id, struct cpr_tls_session *t, cpr_error **errp);

#endif
