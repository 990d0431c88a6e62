/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials (cpr/tls.h): x509 files loaded into GnuTLS, counted so that a migration keeps
 * the ones it uses while a monitor deletes them, and a registry by id on the context (the
 * names the "tls-creds" parameter takes).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "channel/gnutls_lib.h"
#include "channel/tls.h"
#include "core/error.h"
#include "core/ctx.h"

struct cpr_tls_creds {
    gint refs;
    cpr_tls_endpoint endpoint;
    int verify_peer;
#ifdef CPR_HAVE_GNUTLS
    struct cpr_gnutls *g;
    gnutls_certificate_credentials_t cred;
#endif
};

CPR_API int cpr_tls_available(void)
{
#ifdef CPR_HAVE_GNUTLS
    return 1;
#else
    return 0;
#endif
}

cpr_tls_creds *cpr_tls_creds_ref(cpr_tls_creds *creds)
{
    g_atomic_int_inc(&creds->refs);
    return creds;
}

void cpr_tls_creds_unref(cpr_tls_creds *creds)
{
    if (!creds || !g_atomic_int_dec_and_test(&creds->refs))
        return;
#ifdef CPR_HAVE_GNUTLS
    if (creds->cred)
        creds->g->certificate_free_credentials(creds->cred);
    cpr_gnutls_close(creds->g);
#endif
    g_free(creds);
}

CPR_API void cpr_tls_creds_free(cpr_tls_creds *creds)
{
    cpr_tls_creds_unref(creds);
}

cpr_tls_endpoint cpr_tls_creds_endpoint(const cpr_tls_creds *creds)
{
    return creds->endpoint;
}

int cpr_tls_creds_verify_peer(const cpr_tls_creds *creds)
{
    return creds->verify_peer;
}

#ifdef CPR_HAVE_GNUTLS
void *cpr_tls_creds_gnutls(const cpr_tls_creds *creds)
{
    return creds->cred;
}

const struct cpr_gnutls *cpr_tls_creds_lib(const cpr_tls_creds *creds)
{
    return creds->g;
}

/* dir/name when it exists and is readable, else NULL with the reason. */
static char *creds_file(const char *dir, const char *name, int required, int *err, cpr_error **errp)
{
    char *path = g_build_filename(dir, name, NULL);
    if (access(path, R_OK) == 0)
        return path;
    int e = errno;
    *err = 0;
    if (required || e != ENOENT)
        *err = cpr_error_set_errno(errp, -e, "TLS credentials in %s: cannot read %s", dir, name);
    g_free(path);
    return NULL;
}

static int load_x509(cpr_tls_creds *c, const char *dir, cpr_error **errp)
{
    int err = 0, r;
    g_autofree char *ca = creds_file(dir, "ca-cert.pem", 1, &err, errp);
    if (!ca)
        return err;
    r = c->g->certificate_set_x509_trust_file(c->cred, ca, GNUTLS_X509_FMT_PEM);
    if (r <= 0)
        return cpr_error_set(errp, -EBADMSG, "TLS credentials: %s: %s", ca,
                             r < 0 ? c->g->strerror(r) : "no certificate in it");
    int server = c->endpoint == CPR_TLS_ENDPOINT_SERVER;
    const char *cert_name = server ? "server-cert.pem" : "client-cert.pem";
    const char *key_name = server ? "server-key.pem" : "client-key.pem";
    /* A client's own certificate is optional: only a server that verifies peers asks for it. */
    g_autofree char *cert = creds_file(dir, cert_name, server, &err, errp);
    if (!cert)
        return err;
    g_autofree char *key = creds_file(dir, key_name, 1, &err, errp);
    if (!key)
        return err;
    r = c->g->certificate_set_x509_key_file(c->cred, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return cpr_error_set(errp, -EBADMSG, "TLS credentials: %s with %s: %s", cert, key, c->g->strerror(r));
    return 0;
}
#else
void *cpr_tls_creds_gnutls(const cpr_tls_creds *creds)
{
    (void)creds;
    return NULL;
}
#endif

CPR_API int cpr_tls_creds_new_x509(const char *dir, cpr_tls_endpoint endpoint, unsigned int flags,
                                   cpr_tls_creds **out, cpr_error **errp)
{
    if (!dir || !*dir || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_creds_new_x509: %s is NULL or empty", out ? "dir" : "out");
    if (endpoint != CPR_TLS_ENDPOINT_CLIENT && endpoint != CPR_TLS_ENDPOINT_SERVER)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_creds_new_x509: unknown endpoint %d", (int)endpoint);
    if (flags & ~CPR_TLS_VERIFY_PEER)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_creds_new_x509: unknown flags 0x%x", flags);
#ifdef CPR_HAVE_GNUTLS
    struct cpr_gnutls *g;
    int r = cpr_gnutls_open(&g, errp);
    if (r < 0)
        return r;
    cpr_tls_creds *c = g_new0(cpr_tls_creds, 1);
    c->refs = 1;
    c->endpoint = endpoint;
    c->verify_peer = !!(flags & CPR_TLS_VERIFY_PEER);
    c->g = g;
    r = g->certificate_allocate_credentials(&c->cred);
    if (r < 0) {
        c->cred = NULL;
        cpr_tls_creds_unref(c);
        return cpr_error_set(errp, -ENOMEM, "TLS credentials: %s", g->strerror(r));
    }
    r = load_x509(c, dir, errp);
    if (r < 0) {
        cpr_tls_creds_unref(c);
        return r;
    }
    *out = c;
    return 0;
#else
    return cpr_error_set(errp, -ENOTSUP, CPR_TLS_MISSING);
#endif
}

/* ---- the registry: id -> credentials, a shared part of the context (the job's thread looks
 * them up while the owner may add or delete), under ctx->lock ---- */

#define CREDS_FREE ((GDestroyNotify)cpr_tls_creds_unref)

/* Caller holds ctx->lock. */
static GHashTable *registry_locked(cpr_ctx *ctx)
{
    return cpr_ctx_shared_table_locked(ctx, CPR_SHARED_TLS, CREDS_FREE);
}

CPR_API int cpr_tls_creds_add(cpr_ctx *ctx, const char *id, cpr_tls_creds *creds, cpr_error **errp)
{
    if (!ctx || !creds || !id || !*id)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_creds_add: %s is NULL or empty",
                             !ctx ? "ctx" : !creds ? "creds" : "id");
    if (cpr_ctx_shared_table_add(ctx, CPR_SHARED_TLS, CREDS_FREE, id, creds) < 0)
        return cpr_error_set(errp, -EEXIST, "TLS credentials with id '%s' already exist", id);
    return 0;
}

CPR_API int cpr_tls_creds_del(cpr_ctx *ctx, const char *id, cpr_error **errp)
{
    if (!ctx || !id)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_creds_del: %s is NULL", ctx ? "id" : "ctx");
    if (cpr_ctx_shared_table_del(ctx, CPR_SHARED_TLS, CREDS_FREE, id) < 0)
        return cpr_error_set(errp, -ENOENT, "no TLS credentials with id '%s'", id);
    return 0;
}

int cpr_tls_creds_lookup(cpr_ctx *ctx, const char *id, cpr_tls_creds **out, cpr_error **errp)
{
    if (!cpr_tls_available())
        return cpr_error_set(errp, -ENOTSUP, CPR_TLS_MISSING);
    g_mutex_lock(&ctx->lock);
    cpr_tls_creds *c = g_hash_table_lookup(registry_locked(ctx), id);
    if (c)
        cpr_tls_creds_ref(c);
    g_mutex_unlock(&ctx->lock);
    if (!c)
        return cpr_error_set(errp, -ENOENT, "tls-creds: no TLS credentials with id '%s' (add them first: "
                             "-object tls-creds-x509,id=%s,...)", id, id);
    *out = c;
    return 0;
}
