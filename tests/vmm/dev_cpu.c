/* SPDX-License-Identifier: MIT */
/*
 * vCPU and VM state as sections: "cpu" (one instance per vCPU) and "vm". The machine core
 * captures each as a plain struct with no pointers, which travels as one buffer field; the
 * machine checks the struct's own version and backend when it restores it, and refuses one it
 * does not know. Captured in pre_save (the guest is stopped by then), restored in post_load.
 */
#include <stdio.h>
#include <string.h>

#include "devices.h"

typedef struct cpu_slot {
    vmm *v;
    uint32_t index;
    vmm_vcpu_state st;
} cpu_slot;

struct dev_cpu {
    vmm *v;
    vmm_vm_state vm;
    cpu_slot *cpus;
    uint32_t ncpus;
};

static int set_cerr(cpr_error **errp, cpr_error *cerr)
{
    int code = cpr_error_code(cerr);
    if (errp && !*errp)
        *errp = cerr;
    else
        cpr_error_free(cerr);
    return code;
}

static int cpu_pre_save(void *opaque, cpr_error **errp)
{
    cpu_slot *c = opaque;
    cpr_error *cerr = NULL;
    if (vmm_machine_get_vcpu_state(c->v->machine, c->index, &c->st, &cerr) < 0)
        return set_cerr(errp, cerr);
    return 0;
}

static int cpu_post_load(void *opaque, uint32_t version, cpr_error **errp)
{
    cpu_slot *c = opaque;
    cpr_error *cerr = NULL;
    vmm_trace("cpu post_load");
    if (vmm_machine_set_vcpu_state(c->v->machine, c->index, &c->st, &cerr) < 0)
        return set_cerr(errp, cerr);
    vmm_trace("cpu post_load done");
    return 0;
}

static int vm_pre_save(void *opaque, cpr_error **errp)
{
    dev_cpu *d = opaque;
    cpr_error *cerr = NULL;
    if (vmm_machine_get_vm_state(d->v->machine, &d->vm, &cerr) < 0)
        return set_cerr(errp, cerr);
    return 0;
}

/* When -machine TYPE refused the incoming guest: which type the guest is, and what to do. */
static void guest_type_hint(vmm *v)
{
    const struct vmm_mailbox *mb = v->ram;
    uint64_t version = __atomic_load_n(&mb->hdr.version, __ATOMIC_RELAXED);
    if (!v->cfg->machine_type_given || __atomic_load_n(&mb->hdr.magic, __ATOMIC_RELAXED) != VMM_MAILBOX_MAGIC ||
        version == v->cfg->machine_type->mailbox_version)
        return;
    const vmm_machine_type *t = vmm_machine_type_of_guest((uint32_t)version, NULL);
    fprintf(stderr, "cpr-vmm: -machine %s: the incoming guest is of machine type %s (a guest keeps the type it "
            "booted with): start this VMM with -machine %s, or without a type\n", v->cfg->machine_type->name,
            t ? t->name : "unknown here", t ? t->name : "TYPE");
}

static int vm_post_load(void *opaque, uint32_t version, cpr_error **errp)
{
    dev_cpu *d = opaque;
    cpr_error *cerr = NULL;
    vmm_trace("vm post_load");
    if (vmm_machine_set_vm_state(d->v->machine, &d->vm, &cerr) < 0) {
        guest_type_hint(d->v);
        return set_cerr(errp, cerr);
    }
    vmm_trace("vm post_load done");
    return 0;
}

/* A section whose one field is a whole state struct, as the machine core captures it. */
static int state_desc(const char *name, uint32_t version, size_t struct_size, size_t offset, size_t size,
                      cpr_hook_fn pre_save, cpr_post_load_fn post_load, cpr_desc **out, cpr_error **cerr)
{
    cpr_desc *d = NULL;
    int r = cpr_desc_new(name, version, 1, struct_size, &d, cerr);
    if (r == 0)
        r = cpr_desc_add(d, "state", CPR_TYPE_BYTES, offset, size, cerr);
    if (r == 0)
        r = cpr_desc_set_hooks(d, pre_save, NULL, NULL, post_load, cerr);
    if (r < 0) {
        cpr_desc_unref(d);
        return r;
    }
    *out = d;
    return 0;
}

int dev_cpu_init(vmm *v, char **err)
{
    dev_cpu *d = g_new0(dev_cpu, 1);
    d->v = v;
    d->ncpus = vmm_machine_nvcpus(v->machine);
    d->cpus = g_new0(cpu_slot, d->ncpus);
    v->devs->cpu = d;
    cpr_error *cerr = NULL;
    cpr_desc *vm_desc = NULL, *cpu_desc = NULL;
    /* The VM first: its load checks that both sides agree on backend, vCPUs and RAM size. */
    int r = state_desc("vm", VMM_VM_STATE_VERSION, sizeof(dev_cpu), CPR_MEMBER(dev_cpu, vm), vm_pre_save,
                       vm_post_load, &vm_desc, &cerr);
    if (r == 0)
        r = cpr_savevm_register(v->ctx, NULL, 0, vm_desc, d, 0, NULL, &cerr);
    if (r == 0)
        r = state_desc("cpu", VMM_VCPU_STATE_VERSION, sizeof(cpu_slot), CPR_MEMBER(cpu_slot, st), cpu_pre_save,
                       cpu_post_load, &cpu_desc, &cerr);
    for (uint32_t i = 0; r == 0 && i < d->ncpus; i++) {
        d->cpus[i].v = v;
        d->cpus[i].index = i;
        r = cpr_savevm_register(v->ctx, NULL, i, cpu_desc, &d->cpus[i], 0, NULL, &cerr);
    }
    cpr_desc_unref(vm_desc);
    cpr_desc_unref(cpu_desc);
    return r < 0 ? vmm_fail_cpr(err, "cpu", cerr) : 0;
}

void dev_cpu_fini(vmm *v)
{
    dev_cpu *d = v->devs->cpu;
    if (!d)
        return;
    g_free(d->cpus);
    g_free(d);
    v->devs->cpu = NULL;
}
