/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include <glib.h>

#include "core/blocker.h"
#include "core/ctx.h"
#include "core/error.h"

struct cpr_blocker {
    uint32_t modes;
    char *reason;
};

static void blocker_free(struct cpr_blocker *b)
{
    g_free(b->reason);
    g_free(b);
}

/* The context's blockers, in registration order. Caller holds ctx->lock. */
static GPtrArray *blockers(cpr_ctx *ctx)
{
    return cpr_ctx_shared_list_locked(ctx, CPR_SHARED_BLOCKERS, (GDestroyNotify)blocker_free);
}

static int blocks(const struct cpr_blocker *b, cpr_mode mode)
{
    return (b->modes & CPR_MODE_BIT(mode)) != 0;
}

CPR_API int cpr_blocker_add(cpr_ctx *ctx, uint32_t modes, const char *reason,
                            cpr_blocker **out, cpr_error **errp)
{
    if (!ctx || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_blocker_add: %s is NULL", ctx ? "out" : "ctx");
    if (!reason || !*reason)
        return cpr_error_set(errp, -EINVAL, "cpr_blocker_add: a blocker needs a reason a user can read");
    if (!modes)
        return cpr_error_set(errp, -EINVAL, "cpr_blocker_add: blocker '%s' has an empty mode set", reason);

    g_mutex_lock(&ctx->lock);
    if (ctx->only_migratable) {
        g_mutex_unlock(&ctx->lock);
        return cpr_error_set(errp, -EACCES,
                             "cannot add migration blocker '%s': the VM is only-migratable", reason);
    }
    if (ctx->migration_active && (modes & CPR_MODE_BIT(ctx->migration_mode))) {
        cpr_mode active = ctx->migration_mode;
        g_mutex_unlock(&ctx->lock);
        return cpr_error_set(errp, -EBUSY,
                             "cannot add migration blocker '%s': a migration in mode %s is under way",
                             reason, cpr_mode_name(active));
    }
    struct cpr_blocker *b = g_new(struct cpr_blocker, 1);
    b->modes = modes;
    b->reason = g_strdup(reason);
    g_ptr_array_add(blockers(ctx), b);
    g_mutex_unlock(&ctx->lock);
    *out = b;
    return 0;
}

CPR_API void cpr_blocker_del(cpr_ctx *ctx, cpr_blocker *blocker)
{
    if (!ctx || !blocker)
        return;
    g_mutex_lock(&ctx->lock);
    g_ptr_array_remove(blockers(ctx), blocker); /* frees it, when it is there */
    g_mutex_unlock(&ctx->lock);
}

CPR_API const char *cpr_blocker_reason(const cpr_blocker *blocker)
{
    return blocker ? blocker->reason : NULL;
}

CPR_API uint32_t cpr_blocker_modes(const cpr_blocker *blocker)
{
    return blocker ? blocker->modes : 0;
}

size_t cpr_blockers_collect_locked(cpr_ctx *ctx, cpr_mode mode, GString *out)
{
    size_t n = 0;
    for (guint i = 0; i < blockers(ctx)->len; i++) {
        const struct cpr_blocker *b = g_ptr_array_index(blockers(ctx), i);
        if (!blocks(b, mode))
            continue;
        g_string_append_printf(out, "%s%s", n ? "; " : "", b->reason);
        n++;
    }
    return n;
}

CPR_API int cpr_blockers_check(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_blockers_check: ctx is NULL");
    if (!cpr_mode_name(mode))
        return cpr_error_set(errp, -EINVAL, "cpr_blockers_check: unknown mode %d", (int)mode);
    GString *reasons = g_string_new(NULL);
    g_mutex_lock(&ctx->lock);
    size_t n = cpr_blockers_collect_locked(ctx, mode, reasons);
    g_mutex_unlock(&ctx->lock);
    int ret = 0;
    if (n)
        ret = cpr_error_set(errp, -EPERM, "migration in mode %s is blocked: %s",
                            cpr_mode_name(mode), reasons->str);
    g_string_free(reasons, TRUE);
    return ret;
}

CPR_API int cpr_blocker_foreach(cpr_ctx *ctx, cpr_mode mode, cpr_blocker_fn fn, void *opaque)
{
    if (!ctx || !fn)
        return -EINVAL;
    /* Copy under the lock, call outside it: a callback may block or query the context. */
    GPtrArray *snap = g_ptr_array_new_with_free_func((GDestroyNotify)blocker_free);
    g_mutex_lock(&ctx->lock);
    for (guint i = 0; i < blockers(ctx)->len; i++) {
        const struct cpr_blocker *b = g_ptr_array_index(blockers(ctx), i);
        if (!blocks(b, mode))
            continue;
        struct cpr_blocker *c = g_new(struct cpr_blocker, 1);
        c->modes = b->modes;
        c->reason = g_strdup(b->reason);
        g_ptr_array_add(snap, c);
    }
    g_mutex_unlock(&ctx->lock);
    int ret = 0;
    for (guint i = 0; i < snap->len && !ret; i++) {
        const struct cpr_blocker *b = g_ptr_array_index(snap, i);
        ret = fn(b->reason, b->modes, opaque);
    }
    g_ptr_array_free(snap, TRUE);
    return ret;
}

CPR_API size_t cpr_blocker_count(cpr_ctx *ctx, cpr_mode mode)
{
    if (!ctx)
        return 0;
    size_t n = 0;
    g_mutex_lock(&ctx->lock);
    for (guint i = 0; i < blockers(ctx)->len; i++)
        n += blocks(g_ptr_array_index(blockers(ctx), i), mode);
    g_mutex_unlock(&ctx->lock);
    return n;
}


