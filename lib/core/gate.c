/* SPDX-License-Identifier: MIT */
/* The migration gate: one migration at a time, blockers checked and notifiers told. */
#include <errno.h>

#include <glib.h>

#include "core/blocker.h"
#include "core/ctx.h"
#include "core/error.h"
#include "core/gate.h"
#include "core/notify.h"

int cpr_gate_enter(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp)
{
    GString *reasons = g_string_new(NULL);
    g_mutex_lock(&ctx->lock);
    if (ctx->migration_active) {
        cpr_mode active = ctx->migration_mode;
        g_mutex_unlock(&ctx->lock);
        g_string_free(reasons, TRUE);
        return cpr_error_set(errp, -EBUSY, "a migration in mode %s is already under way",
                             cpr_mode_name(active));
    }
    /* Blockers are checked under the same lock that cpr_blocker_add() takes, so none can
     * slip in between the check and the start. */
    if (cpr_blockers_collect_locked(ctx, mode, reasons)) {
        g_mutex_unlock(&ctx->lock);
        int ret = cpr_error_set(errp, -EPERM, "migration in mode %s is blocked: %s",
                                cpr_mode_name(mode), reasons->str);
        g_string_free(reasons, TRUE);
        /* Refused before it started: no notifier hears of it, as in QEMU. */
        return ret;
    }
    ctx->migration_active = 1;
    ctx->migration_mode = mode;
    g_mutex_unlock(&ctx->lock);
    g_string_free(reasons, TRUE);

    int ret = cpr_notifiers_call(ctx, mode, CPR_EVENT_SETUP, errp);
    if (ret < 0)
        cpr_gate_leave(ctx, 0);
    return ret;
}

void cpr_gate_leave(cpr_ctx *ctx, int ok)
{
    g_mutex_lock(&ctx->lock);
    cpr_mode mode = ctx->migration_mode;
    g_mutex_unlock(&ctx->lock);
    cpr_notifiers_call(ctx, mode, ok ? CPR_EVENT_DONE : CPR_EVENT_FAILED, NULL);
    g_mutex_lock(&ctx->lock);
    ctx->migration_active = 0;
    g_mutex_unlock(&ctx->lock);
}
