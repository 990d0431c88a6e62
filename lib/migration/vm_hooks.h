/* SPDX-License-Identifier: MIT */
/* Private: calling the VMM's cpr_vm_ops hooks, each in its old form or its errp form (1.2). */
#ifndef CPR_MIGRATION_VM_HOOKS_H
#define CPR_MIGRATION_VM_HOOKS_H

#include <cpr/migrate.h>

enum cpr_vm_hook {
    CPR_VM_STOP,
    CPR_VM_START,
    CPR_VM_FLUSH,
    CPR_VM_DIRTY_LOG_START,
    CPR_VM_DIRTY_LOG_SYNC,
    CPR_VM_DIRTY_LOG_STOP,
};

/* Whether the VMM set hook `which` in either form. */
int cpr_vm_hook_present(const cpr_vm_ops *ops, enum cpr_vm_hook which);

/*
 * Calls hook `which` (its errp form when set); 0 when the VMM set neither form. A failure
 * returns the hook's negative errno with an error "the VMM's <hook> hook failed: <the hook's
 * message, or its errno's description>".
 */
int cpr_vm_hook_call(const cpr_vm_ops *ops, cpr_ctx *ctx, void *opaque, enum cpr_vm_hook which, cpr_error **errp);

#endif
