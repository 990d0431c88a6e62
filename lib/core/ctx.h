/* SPDX-License-Identifier: MIT */
/*
 * Private layout of cpr_ctx. Each module keeps its own state in a slot, created on first use.
 * The mutex-guarded part embeds the parameters and the blocker and notifier lists: ctx.c
 * creates and frees them, while params.c, blocker.c and notify.c work on these fields under
 * ctx->lock. That is core's one include circle, kept on purpose.
 * Include seam: core/ctx core/params core/blocker core/notify
 */
#ifndef CPR_CORE_CTX_H
#define CPR_CORE_CTX_H

#include <glib.h>

#include <cpr/ctx.h>
#include <cpr/mode.h>

#include "core/params.h"

/* One slot per module that keeps state on the context; freed in reverse order. */
typedef enum cpr_ctx_slot {
    CPR_SLOT_TEARDOWN, /* first, so freed last: RAM blocks freed before it ask for it */
    CPR_SLOT_SAVEVM,
    CPR_SLOT_FDS,
    CPR_SLOT_RAM,
    CPR_SLOT_MIGRATION,
    CPR_SLOT_EXEC, /* cpr-exec rollback: the new image's commit socket */
    CPR_SLOT_LAZY, /* lazy restore: freed first, while the RAM it fills is still mapped */
    CPR_SLOT_COUNT
} cpr_ctx_slot;

struct cpr_ctx {
    /* Guards blockers, notifiers, params and the migration gate: the only state that threads
     * other than the owner may touch. */
    GMutex lock;
    int only_migratable;
    GPtrArray *blockers;  /* struct cpr_blocker *, registration order */
    GPtrArray *notifiers; /* struct cpr_notifier *, registration order */
    struct cpr_params params;

    /* The migration gate (lib/core/gate.c): set while a migration runs. */
    int migration_active;
    cpr_mode migration_mode;

    void *slot[CPR_SLOT_COUNT];
    void (*slot_free[CPR_SLOT_COUNT])(void *state);
};

/* Returns the module's state, or NULL when it has none yet. Owner thread only. */
void *cpr_ctx_slot_get(cpr_ctx *ctx, cpr_ctx_slot slot);
/* Installs the module's state and how to free it with the context. Owner thread only. */
void cpr_ctx_slot_set(cpr_ctx *ctx, cpr_ctx_slot slot, void *state, void (*free_fn)(void *));

#endif
