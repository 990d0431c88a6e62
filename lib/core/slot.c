/* SPDX-License-Identifier: MIT */
#include <glib.h>

#include "core/slot.h"

void *cpr_ctx_slot_get_or_create(cpr_ctx *ctx, cpr_ctx_slot slot, void *(*create)(void),
                                 void (*free_fn)(void *))
{
    void *state = g_atomic_pointer_get(&ctx->slot[slot]);
    if (state)
        return state;
    state = create();
    ctx->slot_free[slot] = free_fn; /* every racer stores the same function */
    if (!g_atomic_pointer_compare_and_exchange(&ctx->slot[slot], NULL, state)) {
        free_fn(state);
        state = g_atomic_pointer_get(&ctx->slot[slot]);
    }
    return state;
}
