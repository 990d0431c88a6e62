/* SPDX-License-Identifier: MIT */
/* Private: blockers, notifiers and the migration gate that consults both. */
#ifndef CPR_INTERNAL_BLOCKER_H
#define CPR_INTERNAL_BLOCKER_H

#include <cpr/blocker.h>
#include <cpr/notify.h>

void cpr_blockers_free_all(cpr_ctx *ctx);
void cpr_notifiers_free_all(cpr_ctx *ctx);

/* Appends every reason blocking `mode` to `out`, "; "-separated. Caller holds ctx->lock. */
struct _GString;
size_t cpr_blockers_collect_locked(cpr_ctx *ctx, cpr_mode mode, struct _GString *out);

/* Sends `event` to notifiers of `mode` (lib/notify.c). For SETUP it stops at the first veto
 * and returns its code; otherwise returns 0. */
int cpr_notifiers_call(cpr_ctx *ctx, cpr_mode mode, cpr_event event, cpr_error **errp);

/*
 * The migration gate. cpr_gate_enter() starts a migration in `mode`: -EBUSY when one is
 * already under way, -EPERM listing the blockers of the mode, or the veto of a SETUP notifier
 * (after which every notifier has been sent FAILED). On success the context is "migrating"
 * until cpr_gate_leave(), which sends DONE (ok) or FAILED.
 */
int cpr_gate_enter(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp);
void cpr_gate_leave(cpr_ctx *ctx, int ok);

#endif
