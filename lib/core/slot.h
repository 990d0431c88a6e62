/* SPDX-License-Identifier: MIT */
/* Private: creating a module's context slot safely from any thread. */
#ifndef CPR_CORE_SLOT_H
#define CPR_CORE_SLOT_H

#include "core/ctx.h"

/*
 * Returns the module's state in `slot`, creating it with create() on first use. Safe when two
 * threads make the first call at once (the loser's copy is freed with free_fn), for modules
 * whose calls may come from any thread (the fd registry, the RAM table).
 */
void *cpr_ctx_slot_get_or_create(cpr_ctx *ctx, cpr_ctx_slot slot, void *(*create)(void),
                                 void (*free_fn)(void *));

#endif
