/* SPDX-License-Identifier: MIT */
/*
 * vCPU and VM state as sections: "cpu" (one instance per vCPU) and "vm". The machine core
 * captures each as a plain struct (machine/machine.h); captured in pre_save (the guest is
 * stopped by then), restored in post_load, where the machine checks it fits.
 *
 * Versions of both sections:
 *   version 1 (releases 1.0, 1.1): one bytes field "state", the whole struct as it is in memory;
 *   version 2 (1.2): every register by name (cpu_fields.c), MSRs as an array of {index, data},
 *              the local APIC as subsection "cpu/lapic" (only when the vCPU has one); the vm
 *              section checks backend, vCPU count and RAM size with `equal`. "state" stays,
 *              empty, with its length "state_len" before it: a version-1 stream has no
 *              state_len, so the length pre_load set (the whole struct) applies and "state"
 *              loads version 1's bytes; a version-2 stream says 0.
 * The machine type says which version is written (machtype.c); a guest that came in version 1
 * is written in version 1 again unless -machine says otherwise (dev_cpu_prepare_save()).
 */
#include <stdio.h>
#include <string.h>

#include "cpu_fields.h"
#include "devices.h"

typedef struct cpu_slot {
    vmm *v;
    uint32_t index;
    uint32_t state_len; /* version 2: 0; version 1: sizeof(st), set by pre_load */
    vmm_vcpu_state st;
    cpr_section *section;
} cpu_slot;

struct dev_cpu {
    vmm *v;
    uint32_t state_len;
    vmm_vm_state vm;
    cpr_section *vm_section;
    cpu_slot *cpus;
    uint32_t ncpus;
    uint32_t version;        /* the sections are registered in this version */
    uint32_t loaded_version; /* the "vm" section last loaded was in this version, else 0 */
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
    c->state_len = 0;
    if (vmm_machine_get_vcpu_state(c->v->machine, c->index, &c->st, &cerr) < 0)
        return set_cerr(errp, cerr);
    return 0;
}

/* Fields a version-2 stream does not carry read as zero; a version-1 one fills all of st. */
static int cpu_pre_load(void *opaque, cpr_error **errp)
{
    cpu_slot *c = opaque;
    memset(&c->st, 0, sizeof(c->st));
    c->state_len = sizeof(c->st);
    return 0;
}

static int cpu_post_load(void *opaque, uint32_t version, cpr_error **errp)
{
    cpu_slot *c = opaque;
    cpr_error *cerr = NULL;
    vmm_trace("cpu post_load (version %u)", version);
    if (version >= 2) {
        c->st.version = VMM_VCPU_STATE_VERSION;
        c->st.size = sizeof(c->st);
    }
    if (vmm_machine_set_vcpu_state(c->v->machine, c->index, &c->st, &cerr) < 0)
        return set_cerr(errp, cerr);
    vmm_trace("cpu post_load done");
    return 0;
}

static int vm_pre_save(void *opaque, cpr_error **errp)
{
    dev_cpu *d = opaque;
    cpr_error *cerr = NULL;
    d->state_len = 0;
    if (vmm_machine_get_vm_state(d->v->machine, &d->vm, &cerr) < 0)
        return set_cerr(errp, cerr);
    return 0;
}

static int vm_pre_load(void *opaque, cpr_error **errp)
{
    dev_cpu *d = opaque;
    memset(&d->vm, 0, sizeof(d->vm));
    d->state_len = sizeof(d->vm);
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
    vmm_trace("vm post_load (version %u)", version);
    d->loaded_version = version;
    if (version >= 2) {
        d->vm.version = VMM_VM_STATE_VERSION;
        d->vm.size = sizeof(d->vm);
    }
    if (vmm_machine_set_vm_state(d->v->machine, &d->vm, &cerr) < 0) {
        guest_type_hint(d->v);
        return set_cerr(errp, cerr);
    }
    vmm_trace("vm post_load done");
    return 0;
}

/* Where a section's state struct and its version-1 length live in the registered object. */
typedef struct state_layout {
    const char *name;
    size_t obj_size, len_offset, state_offset, state_size;
    cpr_hook_fn pre_save, pre_load;
    cpr_post_load_fn post_load;
} state_layout;

static const state_layout vm_layout = {
    "vm", sizeof(dev_cpu), offsetof(dev_cpu, state_len), CPR_MEMBER(dev_cpu, vm), vm_pre_save, vm_pre_load,
    vm_post_load,
};
static const state_layout cpu_layout = {
    "cpu", sizeof(cpu_slot), offsetof(cpu_slot, state_len), CPR_MEMBER(cpu_slot, st), cpu_pre_save, cpu_pre_load,
    cpu_post_load,
};

/* The section's frame: version 1's "state" field (empty from version 2 on) and the hooks. */
static int state_desc(const state_layout *l, uint32_t version, cpr_desc **out, cpr_error **cerr)
{
    cpr_desc *d = NULL;
    int r = cpr_desc_new(l->name, version, 1, l->obj_size, &d, cerr);
    if (r == 0 && version == 1) {
        r = cpr_desc_add(d, "state", CPR_TYPE_BYTES, l->state_offset, l->state_size, cerr);
    } else if (r == 0) {
        r = cpr_desc_add(d, "state_len", CPR_TYPE_U32, l->len_offset, sizeof(uint32_t), cerr);
        if (r == 0)
            r = cpr_desc_field_since(d, "state_len", 2, cerr);
        if (r == 0)
            r = cpr_desc_add_varray(d, "state", CPR_TYPE_BYTES, l->state_offset, l->state_size, "state_len", cerr);
    }
    if (r == 0)
        r = cpr_desc_set_hooks(d, l->pre_save, NULL, l->pre_load, l->post_load, cerr);
    if (r < 0) {
        cpr_desc_unref(d);
        return r;
    }
    *out = d;
    return 0;
}

static int lapic_needed(const void *obj)
{
    return (((const cpu_slot *)obj)->st.valid & VMM_VCPU_HAS_LAPIC) != 0;
}

static int cpu_desc(uint32_t version, cpr_desc **out, cpr_error **cerr)
{
    cpr_desc *lapic = NULL;
    int r = state_desc(&cpu_layout, version, out, cerr);
    if (r < 0 || version < 2)
        return r;
    r = vmm_cpu_fields_add(*out, offsetof(cpu_slot, st), 2, cerr);
    if (r == 0)
        r = vmm_cpu_lapic_desc("cpu/lapic", sizeof(cpu_slot), offsetof(cpu_slot, st), &lapic, cerr);
    if (r == 0)
        r = cpr_desc_add_subsection(*out, lapic, lapic_needed, 0, cerr);
    cpr_desc_unref(lapic);
    if (r < 0) {
        cpr_desc_unref(*out);
        *out = NULL;
    }
    return r;
}

static int vm_desc(dev_cpu *d, uint32_t version, cpr_desc **out, cpr_error **cerr)
{
    int r = state_desc(&vm_layout, version, out, cerr);
    if (r < 0 || version < 2)
        return r;
    vmm_machine *m = d->v->machine;
    const vmm_vm_state want = { .backend = vmm_machine_backend(m), .nvcpus = d->ncpus, .ram_size = d->v->ram_size };
    if ((r = vmm_vm_fields_add(*out, offsetof(dev_cpu, vm), 2, &want, cerr)) < 0) {
        cpr_desc_unref(*out);
        *out = NULL;
    }
    return r;
}

static void unregister_all(dev_cpu *d)
{
    cpr_savevm_unregister(d->v->ctx, d->vm_section);
    d->vm_section = NULL;
    for (uint32_t i = 0; i < d->ncpus; i++) {
        cpr_savevm_unregister(d->v->ctx, d->cpus[i].section);
        d->cpus[i].section = NULL;
    }
}

/* Registers "vm" and one "cpu" per vCPU, written in `version`. */
static int register_all(dev_cpu *d, uint32_t version, cpr_error **cerr)
{
    cpr_desc *vd = NULL, *cd = NULL;
    /* The VM first: its load checks that both sides agree on backend, vCPUs and RAM size. */
    int r = vm_desc(d, version, &vd, cerr);
    if (r == 0)
        r = cpr_savevm_register(d->v->ctx, NULL, 0, vd, d, 0, &d->vm_section, cerr);
    if (r == 0)
        r = cpu_desc(version, &cd, cerr);
    for (uint32_t i = 0; r == 0 && i < d->ncpus; i++)
        r = cpr_savevm_register(d->v->ctx, NULL, i, cd, &d->cpus[i], 0, &d->cpus[i].section, cerr);
    cpr_desc_unref(vd);
    cpr_desc_unref(cd);
    if (r < 0)
        unregister_all(d);
    else
        d->version = version;
    return r;
}

int dev_cpu_init(vmm *v, char **err)
{
    dev_cpu *d = g_new0(dev_cpu, 1);
    d->v = v;
    d->ncpus = vmm_machine_nvcpus(v->machine);
    d->cpus = g_new0(cpu_slot, d->ncpus);
    for (uint32_t i = 0; i < d->ncpus; i++) {
        d->cpus[i].v = v;
        d->cpus[i].index = i;
    }
    v->devs->cpu = d;
    cpr_error *cerr = NULL;
    int r = register_all(d, v->cfg->machine_type->cpu_version, &cerr);
    return r < 0 ? vmm_fail_cpr(err, "cpu", cerr) : 0;
}

uint32_t dev_cpu_guest_version(const vmm *v)
{
    const dev_cpu *d = v->devs ? v->devs->cpu : NULL;
    /* A guest keeps its type: one that came in the old form (from release 1.0 or 1.1) goes on
     * in it, so that it can go back there. */
    if (d && !v->cfg->machine_type_given && d->loaded_version)
        return d->loaded_version;
    return v->cfg->machine_type->cpu_version;
}

int dev_cpu_prepare_save(vmm *v, cpr_error **errp)
{
    dev_cpu *d = v->devs->cpu;
    uint32_t want = dev_cpu_guest_version(v);
    if (want == d->version)
        return 0;
    vmm_trace("sections vm and cpu: written in version %u from now on", want);
    unregister_all(d);
    return register_all(d, want, errp);
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
