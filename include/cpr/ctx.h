/* SPDX-License-Identifier: MIT */
/*
 * The libcpr context: every registry (blockers, notifiers, sections, fds, RAM blocks) and every
 * migration parameter hangs off one cpr_ctx. The library keeps no global state, so a process
 * may hold several contexts (one per VM it runs, or one per test).
 *
 * Thread safety: a context is owned by one thread (the VMM's main loop), except where a
 * function's comment says otherwise; blocker, notifier and query calls may come from any thread.
 */
#ifndef CPR_CTX_H
#define CPR_CTX_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

/*
 * Creates a context. `flags` must be 0 (reserved for later use).
 * On success *out owns a new context; free it with cpr_ctx_free().
 * Errors: -EINVAL for unknown flags or a NULL out, -ENOMEM.
 */
CPR_API int cpr_ctx_new(cpr_ctx **out, unsigned int flags, cpr_error **errp);

/*
 * Frees the context and everything registered on it (blockers, notifiers, ...).
 * No migration may be in progress. NULL is accepted.
 */
CPR_API void cpr_ctx_free(cpr_ctx *ctx);

/*
 * Makes the VM "only migratable" (QEMU's -only-migratable): from now on cpr_blocker_add()
 * fails with -EACCES for every mode, and a migration blocker cannot be added at all.
 * Blockers registered before the call stay. Thread safety: any thread.
 */
CPR_API int cpr_ctx_set_only_migratable(cpr_ctx *ctx, int on, cpr_error **errp);

/* Returns 1 when the context is only-migratable, 0 otherwise (0 for NULL). */
CPR_API int cpr_ctx_get_only_migratable(const cpr_ctx *ctx);

CPR_END_DECLS

#endif /* CPR_CTX_H */
