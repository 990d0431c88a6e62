/* SPDX-License-Identifier: MIT */
/*
 * Migration notifiers: a VMM component that must act around a migration (release a lock,
 * quiesce a device, unmap a DMA window) registers a callback for a set of modes.
 *
 * Order, as QEMU guarantees it, for each notifier whose modes include the migration's:
 *   SETUP then DONE, SETUP then FAILED, or FAILED alone.
 * Notifiers run in registration order. Only SETUP may veto: a non-zero return (with an
 * error set through errp) stops the migration; notifiers after it do not see SETUP, and
 * then every notifier of the mode sees FAILED. Return values of DONE and FAILED are ignored.
 *
 * Thread safety: add and del may be called from any thread but not from inside a notifier.
 * Notifiers run on the thread that runs the migration.
 */
#ifndef CPR_NOTIFY_H
#define CPR_NOTIFY_H

#include <cpr/common.h>
#include <cpr/mode.h>

CPR_BEGIN_DECLS

typedef enum cpr_event {
    CPR_EVENT_SETUP = 0,
    CPR_EVENT_DONE = 1,
    CPR_EVENT_FAILED = 2,
} cpr_event;

/* Returns the event's name ("setup", "done", "failed") or NULL. */
CPR_API const char *cpr_event_name(cpr_event event);

typedef struct cpr_notifier cpr_notifier;

/*
 * A notifier. `errp` is non-NULL only for SETUP: a vetoing notifier returns a negative errno
 * and may say why with cpr_error_set() (cpr/error.h); the migration then fails with
 * "a migration notifier vetoed mode M: <its message>" (the errno's description when it set
 * none). Setting an error while returning 0 vetoes too (-ECANCELED).
 */
typedef int (*cpr_notifier_fn)(cpr_ctx *ctx, cpr_event event, cpr_mode mode,
                               cpr_error **errp, void *opaque);

/*
 * Registers fn for the modes in `modes`. On success *out is a handle for cpr_notifier_del().
 * Errors: -EINVAL for a NULL fn or an empty mode set.
 */
CPR_API int cpr_notifier_add(cpr_ctx *ctx, uint32_t modes, cpr_notifier_fn fn, void *opaque,
                             cpr_notifier **out, cpr_error **errp);

/* Removes a notifier. NULL is accepted. */
CPR_API void cpr_notifier_del(cpr_ctx *ctx, cpr_notifier *notifier);

CPR_END_DECLS

#endif /* CPR_NOTIFY_H */
