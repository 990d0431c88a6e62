/* SPDX-License-Identifier: MIT */
/* Private: the blocker list on the context (core/blocker.c), as the gate and ctx see it. */
#ifndef CPR_CORE_BLOCKER_H
#define CPR_CORE_BLOCKER_H

#include <stddef.h>

#include <cpr/blocker.h>


/* Appends every reason blocking `mode` to `out`, "; "-separated. Caller holds ctx->lock. */
struct _GString;
size_t cpr_blockers_collect_locked(cpr_ctx *ctx, cpr_mode mode, struct _GString *out);

#endif
