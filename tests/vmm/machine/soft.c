/* SPDX-License-Identifier: MIT */
/*
 * The software backend: one thread per vCPU runs guest.S's loop in C (vmm_guest_step) over the
 * same RAM and mailbox. A software vCPU has no state outside RAM, and its time source is
 * CLOCK_MONOTONIC in ns. Dirty logging marks the pages it writes in its own bitmap.
 */
#include <errno.h>
#include <stdlib.h>

#include <cpr/error.h>
#include "machine_int.h"

struct soft {
    uint64_t *dirty;  /* one bit per page; words swapped out atomically by dirty_sync */
    size_t nwords;
    uint64_t *active; /* dirty while logging is on, else NULL (atomic) */
};

static int soft_init(vmm_machine *m, cpr_error **errp)
{
    struct soft *s = calloc(1, sizeof(*s));
    if (!s)
        return cpr_error_set(errp, -ENOMEM, "software backend: out of memory");
    s->nwords = (m->cfg.ram_size / VMM_PAGE_SIZE + 63) / 64;
    s->dirty = calloc(s->nwords, sizeof(uint64_t));
    if (!s->dirty) {
        free(s);
        return cpr_error_set(errp, -ENOMEM, "software backend: no memory for the dirty bitmap");
    }
    m->be = s;
    m->ticks_per_ms = 1000000;
    m->clock = VMM_CLOCK_MONOTONIC;
    return 0;
}

static void soft_fini(vmm_machine *m)
{
    struct soft *s = m->be;
    if (s)
        free(s->dirty);
    free(s);
    m->be = NULL;
}

static int soft_vcpu_run(struct vmm_vcpu *v)
{
    vmm_machine *m = v->m;
    struct soft *s = m->be;
    struct vmm_guest_cpu *c = &vmm_mailbox(m->cfg.ram)->cpu[v->index];
    while (!vmm_stop_requested(m))
        vmm_guest_step(m->cfg.ram, c, m->ticks_per_ms, vmm_now_ns(), &s->active);
    return 0;
}

static void soft_vcpu_nop(struct vmm_vcpu *v)
{
}

static int soft_boot(vmm_machine *m, cpr_error **errp)
{
    return 0;
}

static int soft_get_vcpu(vmm_machine *m, uint32_t cpu, vmm_vcpu_state *st, cpr_error **errp)
{
    *st = (vmm_vcpu_state){ .version = VMM_VCPU_STATE_VERSION, .size = sizeof(*st),
                            .backend = VMM_ACCEL_SOFT, .cpu = cpu };
    return 0;
}

static int soft_set_vcpu(vmm_machine *m, uint32_t cpu, const vmm_vcpu_state *st, cpr_error **errp)
{
    return 0;
}

static int soft_get_vm(vmm_machine *m, vmm_vm_state *st, cpr_error **errp)
{
    return 0;
}

static int soft_set_vm(vmm_machine *m, const vmm_vm_state *st, cpr_error **errp)
{
    return 0;
}

static int soft_dirty_log(vmm_machine *m, int on, cpr_error **errp)
{
    struct soft *s = m->be;
    if (on)
        for (size_t i = 0; i < s->nwords; i++)
            __atomic_store_n(&s->dirty[i], 0, __ATOMIC_RELAXED);
    /* An exchange, a full barrier: pages the host copies after this see every unlogged write. */
    (void)__atomic_exchange_n(&s->active, on ? s->dirty : NULL, __ATOMIC_SEQ_CST);
    return 0;
}

static int soft_dirty_sync(vmm_machine *m, uint64_t *bitmap, size_t nwords, cpr_error **errp)
{
    struct soft *s = m->be;
    int added = 0;
    for (size_t i = 0; i < s->nwords; i++) {
        uint64_t w = __atomic_exchange_n(&s->dirty[i], 0, __ATOMIC_RELAXED);
        added += vmm_bitmap_merge(&bitmap[i], &w, 1);
    }
    return added;
}

const struct vmm_backend_ops vmm_soft_ops = {
    .id = VMM_ACCEL_SOFT,
    .name = "soft",
    .init = soft_init,
    .fini = soft_fini,
    .vcpu_run = soft_vcpu_run,
    .vcpu_kick = soft_vcpu_nop,
    .vcpu_unkick = soft_vcpu_nop,
    .boot = soft_boot,
    .get_vcpu = soft_get_vcpu,
    .set_vcpu = soft_set_vcpu,
    .get_vm = soft_get_vm,
    .set_vm = soft_set_vm,
    .dirty_log = soft_dirty_log,
    .dirty_sync = soft_dirty_sync,
};
