/* SPDX-License-Identifier: MIT */
/*
 * vCPU and VM state as sections: "cpu" (one instance per vCPU) and "vm". The machine core
 * captures each as a plain struct with no pointers, which travels as one buffer field; the
 * machine checks the struct's own version and backend when it restores it, and refuses one it
 * does not know. Captured in pre_save (the guest is stopped by then), restored in post_load.
 */
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

static int cpu_post_load(void *opaque, int version, cpr_error **errp)
{
    cpu_slot *c = opaque;
    cpr_error *cerr = NULL;
    if (vmm_machine_set_vcpu_state(c->v->machine, c->index, &c->st, &cerr) < 0)
        return set_cerr(errp, cerr);
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

static int vm_post_load(void *opaque, int version, cpr_error **errp)
{
    dev_cpu *d = opaque;
    cpr_error *cerr = NULL;
    if (vmm_machine_set_vm_state(d->v->machine, &d->vm, &cerr) < 0)
        return set_cerr(errp, cerr);
    return 0;
}

static const cpr_vmstate_field cpu_fields[] = {
    CPR_VMSTATE_BUFFER(cpu_slot, st, 1),
    CPR_VMSTATE_END,
};

static const cpr_vmstate_desc cpu_desc = {
    .size = sizeof(cpr_vmstate_desc),
    .name = "cpu",
    .version = VMM_VCPU_STATE_VERSION,
    .min_version = 1,
    .pre_save = cpu_pre_save,
    .post_load = cpu_post_load,
    .fields = cpu_fields,
};

static const cpr_vmstate_field vm_fields[] = {
    CPR_VMSTATE_BUFFER(dev_cpu, vm, 1),
    CPR_VMSTATE_END,
};

static const cpr_vmstate_desc vm_desc = {
    .size = sizeof(cpr_vmstate_desc),
    .name = "vm",
    .version = VMM_VM_STATE_VERSION,
    .min_version = 1,
    .pre_save = vm_pre_save,
    .post_load = vm_post_load,
    .fields = vm_fields,
};

int dev_cpu_init(vmm *v, char **err)
{
    dev_cpu *d = g_new0(dev_cpu, 1);
    d->v = v;
    d->ncpus = vmm_machine_nvcpus(v->machine);
    d->cpus = g_new0(cpu_slot, d->ncpus);
    v->devs->cpu = d;
    cpr_error *cerr = NULL;
    /* The VM first: its load checks that both sides agree on backend, vCPUs and RAM size. */
    if (cpr_vmstate_register(v->ctx, &vm_desc, 0, d, &cerr) < 0)
        goto fail;
    for (uint32_t i = 0; i < d->ncpus; i++) {
        d->cpus[i].v = v;
        d->cpus[i].index = i;
        if (cpr_vmstate_register(v->ctx, &cpu_desc, i, &d->cpus[i], &cerr) < 0)
            goto fail;
    }
    return 0;
fail:
    *err = g_strdup_printf("cpu: %s", cpr_error_message(cerr));
    cpr_error_free(cerr);
    return -1;
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
