/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include <glib.h>

#include "core/ctx.h"
#include "core/error.h"
#include "core/notify.h"

struct cpr_notifier {
    uint32_t modes;
    cpr_notifier_fn fn;
    void *opaque;
    int saw_setup; /* DONE goes only to notifiers that were sent SETUP */
};

CPR_API const char *cpr_event_name(cpr_event event)
{
    switch (event) {
    case CPR_EVENT_SETUP: return "setup";
    case CPR_EVENT_DONE: return "done";
    case CPR_EVENT_FAILED: return "failed";
    }
    return NULL;
}

/* The context's notifiers, in registration order. Caller holds ctx->lock. */
static GPtrArray *notifiers(cpr_ctx *ctx)
{
    return cpr_ctx_shared_list_locked(ctx, CPR_SHARED_NOTIFIERS, g_free);
}

CPR_API int cpr_notifier_add(cpr_ctx *ctx, uint32_t modes, cpr_notifier_fn fn, void *opaque,
                             cpr_notifier **out, cpr_error **errp)
{
    if (!ctx || !fn || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_notifier_add: %s is NULL",
                             !ctx ? "ctx" : !fn ? "fn" : "out");
    if (!modes)
        return cpr_error_set(errp, -EINVAL, "cpr_notifier_add: empty mode set");
    struct cpr_notifier *n = g_new0(struct cpr_notifier, 1);
    n->modes = modes;
    n->fn = fn;
    n->opaque = opaque;
    g_mutex_lock(&ctx->lock);
    g_ptr_array_add(notifiers(ctx), n);
    g_mutex_unlock(&ctx->lock);
    *out = n;
    return 0;
}

CPR_API void cpr_notifier_del(cpr_ctx *ctx, cpr_notifier *notifier)
{
    if (!ctx || !notifier)
        return;
    g_mutex_lock(&ctx->lock);
    g_ptr_array_remove(notifiers(ctx), notifier); /* frees it, when it is there */
    g_mutex_unlock(&ctx->lock);
}


int cpr_notifiers_call(cpr_ctx *ctx, cpr_mode mode, cpr_event event, cpr_error **errp)
{
    /* Notifiers run without the lock held (they may query the context), so the list is
     * copied first; add/del from inside a notifier is documented as not allowed. */
    g_mutex_lock(&ctx->lock);
    GPtrArray *list = g_ptr_array_copy(notifiers(ctx), NULL, NULL);
    g_mutex_unlock(&ctx->lock);
    g_ptr_array_set_free_func(list, NULL); /* a copy of the pointers: the context owns them */

    int ret = 0;
    for (guint i = 0; i < list->len; i++) {
        struct cpr_notifier *n = g_ptr_array_index(list, i);
        if (!(n->modes & CPR_MODE_BIT(mode)))
            continue;
        if (event == CPR_EVENT_SETUP) {
            cpr_error *veto = NULL;
            int r = n->fn(ctx, event, mode, &veto, n->opaque);
            if (r != 0 || veto) {
                /* A veto is a veto whether it came as a code, a message or both. */
                ret = cpr_error_from_hook(errp, r < 0 ? r : -ECANCELED, &veto,
                                          "a migration notifier vetoed mode %s", cpr_mode_name(mode));
                break;
            }
            n->saw_setup = 1;
        } else {
            if (event == CPR_EVENT_FAILED || n->saw_setup)
                n->fn(ctx, event, mode, NULL, n->opaque);
            n->saw_setup = 0;
        }
    }
    g_ptr_array_free(list, TRUE);
    return ret;
}
