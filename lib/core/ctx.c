/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include <glib.h>

#include "core/ctx.h"
#include "core/error.h"

CPR_API unsigned int cpr_version(void)
{
    return CPR_VERSION_NUMBER;
}

CPR_API void cpr_free(void *ptr)
{
    g_free(ptr);
}

CPR_API int cpr_ctx_new(cpr_ctx **out, unsigned int flags, cpr_error **errp)
{
    if (!out)
        return cpr_error_set(errp, -EINVAL, "cpr_ctx_new: out is NULL");
    if (flags)
        return cpr_error_set(errp, -EINVAL, "cpr_ctx_new: unknown flags 0x%x", flags);
    cpr_ctx *ctx = g_new0(cpr_ctx, 1);
    g_mutex_init(&ctx->lock);
    *out = ctx;
    return 0;
}

CPR_API void cpr_ctx_free(cpr_ctx *ctx)
{
    if (!ctx)
        return;
    for (int i = CPR_SLOT_COUNT - 1; i >= 0; i--) {
        if (ctx->slot[i] && ctx->slot_free[i])
            ctx->slot_free[i](ctx->slot[i]);
        ctx->slot[i] = NULL; /* a later slot's free that asks for this one gets none, not freed memory */
    }
    for (int i = CPR_SHARED_COUNT - 1; i >= 0; i--) {
        if (ctx->shared[i])
            ctx->shared_free[i](ctx->shared[i]);
    }
    g_mutex_clear(&ctx->lock);
    g_free(ctx);
}

CPR_API int cpr_ctx_set_only_migratable(cpr_ctx *ctx, int on, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_ctx_set_only_migratable: ctx is NULL");
    g_mutex_lock(&ctx->lock);
    ctx->only_migratable = !!on;
    g_mutex_unlock(&ctx->lock);
    return 0;
}

CPR_API int cpr_ctx_get_only_migratable(const cpr_ctx *ctx)
{
    return ctx ? ctx->only_migratable : 0;
}

void *cpr_ctx_shared_locked(cpr_ctx *ctx, cpr_ctx_shared which, void *(*make)(void),
                            void (*free_fn)(void *))
{
    if (!ctx->shared[which]) {
        ctx->shared[which] = make();
        ctx->shared_free[which] = free_fn;
    }
    return ctx->shared[which];
}

static void list_free(void *list)
{
    g_ptr_array_free(list, TRUE);
}

GPtrArray *cpr_ctx_shared_list_locked(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify elem_free)
{
    if (!ctx->shared[which]) {
        ctx->shared[which] = g_ptr_array_new_with_free_func(elem_free);
        ctx->shared_free[which] = list_free;
    }
    return ctx->shared[which];
}

static void table_free(void *table)
{
    g_hash_table_destroy(table);
}

GHashTable *cpr_ctx_shared_table_locked(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free)
{
    if (!ctx->shared[which]) {
        ctx->shared[which] = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, value_free);
        ctx->shared_free[which] = table_free;
    }
    return ctx->shared[which];
}

int cpr_ctx_shared_table_add(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free, const char *id,
                             void *value)
{
    g_mutex_lock(&ctx->lock);
    GHashTable *t = cpr_ctx_shared_table_locked(ctx, which, value_free);
    int taken = g_hash_table_contains(t, id);
    if (!taken)
        g_hash_table_insert(t, g_strdup(id), value);
    g_mutex_unlock(&ctx->lock);
    return taken ? -EEXIST : 0;
}

int cpr_ctx_shared_table_del(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free, const char *id)
{
    g_mutex_lock(&ctx->lock);
    int found = g_hash_table_remove(cpr_ctx_shared_table_locked(ctx, which, value_free), id);
    g_mutex_unlock(&ctx->lock);
    return found ? 0 : -ENOENT;
}

void *cpr_ctx_slot_get(cpr_ctx *ctx, cpr_ctx_slot slot)
{
    return ctx->slot[slot];
}

void cpr_ctx_slot_set(cpr_ctx *ctx, cpr_ctx_slot slot, void *state, void (*free_fn)(void *))
{
    ctx->slot[slot] = state;
    ctx->slot_free[slot] = free_fn;
}
