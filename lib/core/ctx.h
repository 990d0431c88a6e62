/* SPDX-License-Identifier: MIT */
/*
 * Private layout of cpr_ctx. Each module keeps its own state on the context, made on first use
 * and freed with it: the owner thread's state in a slot, the state any thread may touch (the
 * parameters, the blocker and notifier lists) in a shared part guarded by ctx->lock. The
 * context knows none of these modules: each brings its own make and free functions.
 */
#ifndef CPR_CORE_CTX_H
#define CPR_CORE_CTX_H

#include <glib.h>

#include <cpr/ctx.h>
#include <cpr/mode.h>

/* One slot per module that keeps state on the context; freed in reverse order. */
typedef enum cpr_ctx_slot {
    CPR_SLOT_TEARDOWN, /* first, so freed last: RAM blocks freed before it ask for it */
    CPR_SLOT_SAVEVM,
    CPR_SLOT_FDS,
    CPR_SLOT_RAM,
    CPR_SLOT_EXEC, /* cpr-exec rollback: the new image's commit socket */
    CPR_SLOT_TRACE, /* the pause breakdown's steps (trace.c) */
    CPR_SLOT_SCHEMA_PREFETCH, /* after TRACE, so joined before it: its thread marks a step */
    CPR_SLOT_LAZY, /* lazy restore: freed while the RAM it fills is still mapped */
    /* Last, so freed first: freeing it stops and joins a job still running, whose thread
     * uses every slot above (trace steps, lazy restore, cpr-exec's commit). */
    CPR_SLOT_MIGRATION,
    CPR_SLOT_COUNT
} cpr_ctx_slot;

/* State that threads other than the owner may touch, under ctx->lock. */
typedef enum cpr_ctx_shared {
    CPR_SHARED_PARAMS,    /* struct cpr_params (lib/core/params.c) */
    CPR_SHARED_BLOCKERS,  /* GPtrArray of struct cpr_blocker *, registration order */
    CPR_SHARED_NOTIFIERS, /* GPtrArray of struct cpr_notifier *, registration order */
    CPR_SHARED_TLS,       /* GHashTable id -> cpr_tls_creds * (lib/channel/tls_creds.c) */
    CPR_SHARED_TLS_AUTHZ, /* GHashTable id -> identity (char *) (lib/channel/tls_authz.c) */
    CPR_SHARED_COUNT
} cpr_ctx_shared;

struct cpr_ctx {
    /* Guards the shared parts, only_migratable and the migration gate: the only state that
     * threads other than the owner may touch. */
    GMutex lock;
    int only_migratable;
    void *shared[CPR_SHARED_COUNT];
    void (*shared_free[CPR_SHARED_COUNT])(void *state);

    /* The migration gate (lib/core/gate.c): set while a migration runs. */
    int migration_active;
    cpr_mode migration_mode;

    void *slot[CPR_SLOT_COUNT];
    void (*slot_free[CPR_SLOT_COUNT])(void *state);
};

/* The module's shared part, made with make() on first use and freed with free_fn() with the
 * context (after every slot). The caller holds ctx->lock. */
void *cpr_ctx_shared_locked(cpr_ctx *ctx, cpr_ctx_shared which, void *(*make)(void),
                            void (*free_fn)(void *));

/* A shared part that is a list (GPtrArray) whose elements elem_free frees: when the list is
 * freed with the context, and when g_ptr_array_remove() takes one out. Caller holds ctx->lock. */
GPtrArray *cpr_ctx_shared_list_locked(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify elem_free);

/* A shared part that is a table by id (keys copied) whose values value_free frees: when the
 * table is freed with the context, and when an entry is removed. Caller holds ctx->lock. */
GHashTable *cpr_ctx_shared_table_locked(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free);
/* Takes ctx->lock and adds id -> value to that table: 0, or -EEXIST when id is taken (value
 * then stays the caller's). Any thread. */
int cpr_ctx_shared_table_add(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free, const char *id,
                             void *value);
/* Takes ctx->lock and removes (frees) id's entry: 0, or -ENOENT when there is none. Any thread. */
int cpr_ctx_shared_table_del(cpr_ctx *ctx, cpr_ctx_shared which, GDestroyNotify value_free, const char *id);

/* Returns the module's state, or NULL when it has none yet. Owner thread only. */
void *cpr_ctx_slot_get(cpr_ctx *ctx, cpr_ctx_slot slot);
/* Installs the module's state and how to free it with the context. Owner thread only. */
void cpr_ctx_slot_set(cpr_ctx *ctx, cpr_ctx_slot slot, void *state, void (*free_fn)(void *));

#endif
