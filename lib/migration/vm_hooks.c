/* SPDX-License-Identifier: MIT */
/* The VMM's cpr_vm_ops hooks that can fail, in their first form or with errp (1.2), behind one
 * call that gives every failure the same shape. */
#include <stddef.h>
#include <string.h>

#include "core/error.h"
#include "migration/vm_hooks.h"

typedef int (*hook_fn)(cpr_ctx *ctx, void *opaque);
typedef int (*hook_errp_fn)(cpr_ctx *ctx, void *opaque, cpr_error **errp);

static const struct {
    const char *name;
    size_t plain, with_errp; /* offsets of both forms in cpr_vm_ops */
} hooks[] = {
    [CPR_VM_STOP] = { "stop", offsetof(cpr_vm_ops, stop), offsetof(cpr_vm_ops, stop_errp) },
    [CPR_VM_START] = { "start", offsetof(cpr_vm_ops, start), offsetof(cpr_vm_ops, start_errp) },
    [CPR_VM_FLUSH] = { "flush", offsetof(cpr_vm_ops, flush), offsetof(cpr_vm_ops, flush_errp) },
    [CPR_VM_DIRTY_LOG_START] = { "dirty_log_start", offsetof(cpr_vm_ops, dirty_log_start),
                                 offsetof(cpr_vm_ops, dirty_log_start_errp) },
    [CPR_VM_DIRTY_LOG_SYNC] = { "dirty_log_sync", offsetof(cpr_vm_ops, dirty_log_sync),
                                offsetof(cpr_vm_ops, dirty_log_sync_errp) },
    [CPR_VM_DIRTY_LOG_STOP] = { "dirty_log_stop", offsetof(cpr_vm_ops, dirty_log_stop),
                                offsetof(cpr_vm_ops, dirty_log_stop_errp) },
};

/* Function pointers are read with memcpy: the table holds offsets, not typed members. */
static hook_fn plain_of(const cpr_vm_ops *ops, enum cpr_vm_hook which)
{
    hook_fn fn;
    memcpy(&fn, (const char *)ops + hooks[which].plain, sizeof(fn));
    return fn;
}

static hook_errp_fn errp_of(const cpr_vm_ops *ops, enum cpr_vm_hook which)
{
    hook_errp_fn fn;
    memcpy(&fn, (const char *)ops + hooks[which].with_errp, sizeof(fn));
    return fn;
}

int cpr_vm_hook_present(const cpr_vm_ops *ops, enum cpr_vm_hook which)
{
    return plain_of(ops, which) || errp_of(ops, which);
}

int cpr_vm_hook_call(const cpr_vm_ops *ops, cpr_ctx *ctx, void *opaque, enum cpr_vm_hook which, cpr_error **errp)
{
    hook_errp_fn with_errp = errp_of(ops, which);
    hook_fn plain = plain_of(ops, which);
    cpr_error *herr = NULL;
    int ret = with_errp ? with_errp(ctx, opaque, &herr) : plain ? plain(ctx, opaque) : 0;
    return cpr_error_from_hook(errp, ret, &herr, "the VMM's %s hook failed", hooks[which].name);
}
