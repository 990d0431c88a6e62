/* SPDX-License-Identifier: MIT */
/*
 * TLS authorization objects (cpr/tls.h, QEMU's authz-simple): id -> the one distinguished name
 * a destination admits (parameter "tls-authz"), a registry shared on the context, and the
 * check of a server session's peer against it.
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "channel/tls.h"
#include "core/ctx.h"
#include "core/error.h"

/* Caller holds ctx->lock. */
static GHashTable *registry_locked(cpr_ctx *ctx)
{
    return cpr_ctx_shared_table_locked(ctx, CPR_SHARED_TLS_AUTHZ, g_free);
}

CPR_API int cpr_tls_authz_add(cpr_ctx *ctx, const char *id, const char *identity, cpr_error **errp)
{
    if (!ctx || !id || !*id || !identity || !*identity)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_authz_add: %s is NULL or empty",
                             !ctx ? "ctx" : !id || !*id ? "id" : "identity");
    char *copy = g_strdup(identity);
    if (cpr_ctx_shared_table_add(ctx, CPR_SHARED_TLS_AUTHZ, g_free, id, copy) < 0) {
        g_free(copy);
        return cpr_error_set(errp, -EEXIST, "an authorization object with id '%s' already exists", id);
    }
    return 0;
}

CPR_API int cpr_tls_authz_del(cpr_ctx *ctx, const char *id, cpr_error **errp)
{
    if (!ctx || !id)
        return cpr_error_set(errp, -EINVAL, "cpr_tls_authz_del: %s is NULL", ctx ? "id" : "ctx");
    if (cpr_ctx_shared_table_del(ctx, CPR_SHARED_TLS_AUTHZ, g_free, id) < 0)
        return cpr_error_set(errp, -ENOENT, "no authorization object with id '%s'", id);
    return 0;
}

int cpr_tls_authz_identity(cpr_ctx *ctx, const char *id, char **out, cpr_error **errp)
{
    g_mutex_lock(&ctx->lock);
    char *identity = g_strdup(g_hash_table_lookup(registry_locked(ctx), id));
    g_mutex_unlock(&ctx->lock);
    if (!identity)
        return cpr_error_set(errp, -ENOENT, "tls-authz: no authorization object with id '%s' (add it first: "
                             "-object authz-simple,id=%s,identity=NAME)", id, id);
    *out = identity;
    return 0;
}

int cpr_tls_authz_check(cpr_ctx *ctx, const char *id, struct cpr_tls_session *t, cpr_error **errp)
{
    g_autofree char *identity = NULL;
    int ret = cpr_tls_authz_identity(ctx, id, &identity, errp);
    if (ret < 0)
        return ret;
    g_autofree char *dn = cpr_tls_session_peer_dn(t);
    if (dn && strcmp(dn, identity) == 0)
        return 0;
    if (!dn)
        return cpr_error_set(errp, -EACCES, "tls-authz '%s': the client sent no certificate, and only '%s' is "
                             "authorized", id, identity);
    return cpr_error_set(errp, -EACCES, "tls-authz '%s': the client's certificate '%s' is not authorized (only "
                         "'%s' is)", id, dn, identity);
}
