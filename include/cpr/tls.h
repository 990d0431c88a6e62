/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials for migration channels. Since: 1.2 (every function here).
 *
 * A normal-mode migration over a tcp or unix socket is encrypted and authenticated with TLS
 * when the migration parameter "tls-creds" names credentials registered on the context with
 * cpr_tls_creds_add() (QEMU's tls-creds-x509 object and parameter). The source is the TLS
 * client and checks the destination's certificate against its CA and against "tls-hostname"
 * (or the tcp address's host); the destination is the TLS server and, with verify-peer,
 * requires a client certificate from its CA. docs/migration.md ("TLS") says what is encrypted
 * and how a failed handshake leaves the guest.
 *
 * The credentials come from a directory in QEMU's layout: ca-cert.pem (always), and for a
 * server endpoint server-cert.pem and server-key.pem, for a client endpoint client-cert.pem
 * and client-key.pem (optional: needed only by a server that verifies its peers).
 *
 * TLS is optional at build time (GnuTLS). A libcpr built without it fails
 * cpr_tls_creds_new_x509() and setting "tls-creds" with -ENOTSUP and the message
 * "libcpr was built without TLS (GnuTLS)"; cpr_tls_available() says which build this is.
 */
#ifndef CPR_TLS_H
#define CPR_TLS_H

#include <cpr/common.h>
#include <cpr/ctx.h>
#include <cpr/error.h>


CPR_BEGIN_DECLS

/* Credentials: an opaque object, owned by whoever created it until cpr_tls_creds_add(). */
typedef struct cpr_tls_creds cpr_tls_creds;

/* Which side of a connection the credentials are for (QEMU's endpoint=client|server). */
typedef enum cpr_tls_endpoint {
    CPR_TLS_ENDPOINT_CLIENT = 0, /* the source of a migration */
    CPR_TLS_ENDPOINT_SERVER = 1, /* the destination */
} cpr_tls_endpoint;

/* cpr_tls_creds_new_x509() flags. */
#define CPR_TLS_VERIFY_PEER 1u /* client: check the server's certificate (QEMU's default);
                                * server: require a client certificate from the CA */

/* 1 when this libcpr was built with TLS (GnuTLS), else 0. Thread-safe. */
CPR_API int cpr_tls_available(void);

/*
 * Loads x509 credentials from `dir` (layout above) for `endpoint`. The files are read now:
 * a missing or unreadable file, or a key that does not match its certificate, fails here with
 * an error naming the file. flags: 0 or CPR_TLS_VERIFY_PEER. On success *out owns new
 * credentials (free with cpr_tls_creds_free() unless given to cpr_tls_creds_add()).
 * Errors: -EINVAL (bad argument), -ENOENT/-EACCES (a file), -EBADMSG (a file GnuTLS cannot
 * parse), -ENOTSUP (built without TLS). Thread-safe (touches no shared state).
 */
CPR_API int cpr_tls_creds_new_x509(const char *dir, cpr_tls_endpoint endpoint, unsigned int flags,
                                   cpr_tls_creds **out, cpr_error **errp);

/* Frees credentials that were not given to a context. NULL is a no-op. */
CPR_API void cpr_tls_creds_free(cpr_tls_creds *creds);

/*
 * Registers `creds` on `ctx` under `id` (what the "tls-creds" parameter names). On success the
 * context owns them (freed by cpr_tls_creds_del() or cpr_ctx_free(); a migration that uses
 * them keeps them alive until it ends). On failure the caller still owns them.
 * Errors: -EINVAL (NULL or empty id), -EEXIST (the id is taken). Thread-safe.
 */
CPR_API int cpr_tls_creds_add(cpr_ctx *ctx, const char *id, cpr_tls_creds *creds, cpr_error **errp);

/* Removes and frees the credentials registered as `id`. Errors: -ENOENT. Thread-safe. */
CPR_API int cpr_tls_creds_del(cpr_ctx *ctx, const char *id, cpr_error **errp);

/*
 * Registers an authorization object on `ctx` under `id` (QEMU's authz-simple): a destination
 * whose "tls-authz" parameter names it admits, on every channel of a migration, only a source
 * whose certificate's distinguished name is exactly `identity`, as GnuTLS writes it (e.g.
 * "O=example,CN=source.example.com"); any other is refused after its handshake, naming its
 * name. `identity` is copied. Errors: -EINVAL (NULL or empty id or identity), -EEXIST (the id
 * is taken). Thread-safe. (Since 1.2.)
 */
CPR_API int cpr_tls_authz_add(cpr_ctx *ctx, const char *id, const char *identity, cpr_error **errp);

/* Removes the authorization object registered as `id`. Errors: -ENOENT. Thread-safe. (Since 1.2.) */
CPR_API int cpr_tls_authz_del(cpr_ctx *ctx, const char *id, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_TLS_H */
