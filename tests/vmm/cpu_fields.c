/* SPDX-License-Identifier: MIT */
/* Field tables of the vCPU and VM state structs (cpu_fields.h). */
#include <stddef.h>

#include "cpu_fields.h"

typedef struct fld {
    const char *name;
    cpr_type type;
    size_t offset, size;
} fld;

#define N(t) (sizeof(t) / sizeof((t)[0]))
#define F(T, name, type, member) { name, type, CPR_MEMBER(T, member) }
/* A member of a named group of struct T (the anonymous structs of kvm_vcpu_events). */
#define G(T, grp, m, type) \
    { #m, type, offsetof(T, grp.m) - offsetof(T, grp), sizeof(((T *)0)->grp.m) }

static int add_table(cpr_desc *d, const fld *t, size_t n, size_t base, uint32_t since, cpr_error **errp)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = cpr_desc_add(d, t[i].name, t[i].type, base + t[i].offset, t[i].size, errp);
        if (r == 0 && since > 1)
            r = cpr_desc_field_since(d, t[i].name, since, errp);
    }
    return r;
}

static int new_struct(const char *name, size_t size, const fld *t, size_t n, cpr_desc **out, cpr_error **errp)
{
    int r = cpr_desc_new(name, 1, 1, size, out, errp);
    if (r == 0 && (r = add_table(*out, t, n, 0, 1, errp)) < 0) {
        cpr_desc_unref(*out);
        *out = NULL;
    }
    return r;
}

/* Adds field `name`, one struct (count == NULL) or a variable array of them; drops sub. */
static int add_struct(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset, size_t size, const char *count,
                      uint32_t since, cpr_error **errp)
{
    int r = count ? cpr_desc_add_struct_varray(d, name, sub, offset, size, count, errp)
                  : cpr_desc_add_struct(d, name, sub, offset, size, errp);
    if (r == 0 && since > 1)
        r = cpr_desc_field_since(d, name, since, errp);
    cpr_desc_unref(sub);
    return r;
}

/* ---- vCPU ---- */

#define V(name, type, member) F(vmm_vcpu_state, name, type, member)
#define R(reg) V(#reg, CPR_TYPE_U64, regs.reg)
#define S(reg) V(#reg, CPR_TYPE_U64, sregs.reg)

static const fld vcpu_head[] = {
    V("backend", CPR_TYPE_U32, backend), V("cpu", CPR_TYPE_U32, cpu), V("valid", CPR_TYPE_U32, valid),
    V("tsc", CPR_TYPE_U64, tsc),
    R(rax), R(rbx), R(rcx), R(rdx), R(rsi), R(rdi), R(rsp), R(rbp), R(r8), R(r9), R(r10), R(r11), R(r12),
    R(r13), R(r14), R(r15), R(rip), R(rflags),
};

static const char *const segments[] = { "cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt" };
static const size_t segment_offsets[] = {
    offsetof(struct kvm_sregs, cs), offsetof(struct kvm_sregs, ds), offsetof(struct kvm_sregs, es),
    offsetof(struct kvm_sregs, fs), offsetof(struct kvm_sregs, gs), offsetof(struct kvm_sregs, ss),
    offsetof(struct kvm_sregs, tr), offsetof(struct kvm_sregs, ldt),
};

#define SEG(m, type) F(struct kvm_segment, #m, type, m)
static const fld segment[] = {
    SEG(selector, CPR_TYPE_U16), SEG(base, CPR_TYPE_U64), SEG(limit, CPR_TYPE_U32), SEG(type, CPR_TYPE_U8),
    SEG(present, CPR_TYPE_U8), SEG(dpl, CPR_TYPE_U8), SEG(db, CPR_TYPE_U8), SEG(s, CPR_TYPE_U8),
    SEG(l, CPR_TYPE_U8), SEG(g, CPR_TYPE_U8), SEG(avl, CPR_TYPE_U8), SEG(unusable, CPR_TYPE_U8),
};

static const fld dtable[] = {
    F(struct kvm_dtable, "base", CPR_TYPE_U64, base), F(struct kvm_dtable, "limit", CPR_TYPE_U16, limit),
};

static const fld vcpu_control[] = {
    S(cr0), S(cr2), S(cr3), S(cr4), S(cr8), S(efer), S(apic_base),
    V("interrupt_bitmap", CPR_TYPE_U64, sregs.interrupt_bitmap),
    V("fpu", CPR_TYPE_BYTES, fpu), V("xsave", CPR_TYPE_BYTES, xsave),
    V("nr_xcrs", CPR_TYPE_U32, xcrs.nr_xcrs),
};

static const fld xcr[] = {
    F(struct kvm_xcr, "xcr", CPR_TYPE_U32, xcr), F(struct kvm_xcr, "value", CPR_TYPE_U64, value),
};

#define EV(grp, m) G(struct kvm_vcpu_events, grp, m, CPR_TYPE_U8)
#define EVGROUP(grp) #grp, sizeof(((struct kvm_vcpu_events *)0)->grp), offsetof(struct kvm_vcpu_events, grp)
static const fld ev_exception[] = {
    EV(exception, injected), EV(exception, nr), EV(exception, has_error_code), EV(exception, pending),
    G(struct kvm_vcpu_events, exception, error_code, CPR_TYPE_U32),
};
static const fld ev_interrupt[] = { EV(interrupt, injected), EV(interrupt, nr), EV(interrupt, soft), EV(interrupt, shadow) };
static const fld ev_nmi[] = { EV(nmi, injected), EV(nmi, pending), EV(nmi, masked) };
static const fld ev_smi[] = { EV(smi, smm), EV(smi, pending), EV(smi, smm_inside_nmi), EV(smi, latched_init) };
static const fld ev_rest[] = {
    F(struct kvm_vcpu_events, "sipi_vector", CPR_TYPE_U32, sipi_vector),
    F(struct kvm_vcpu_events, "flags", CPR_TYPE_U32, flags),
    F(struct kvm_vcpu_events, "triple_fault_pending", CPR_TYPE_U8, triple_fault.pending),
    F(struct kvm_vcpu_events, "exception_has_payload", CPR_TYPE_U8, exception_has_payload),
    F(struct kvm_vcpu_events, "exception_payload", CPR_TYPE_U64, exception_payload),
};

static const fld debugregs[] = {
    F(struct kvm_debugregs, "db", CPR_TYPE_U64, db), F(struct kvm_debugregs, "dr6", CPR_TYPE_U64, dr6),
    F(struct kvm_debugregs, "dr7", CPR_TYPE_U64, dr7), F(struct kvm_debugregs, "flags", CPR_TYPE_U64, flags),
};

static const fld vcpu_tail[] = {
    V("mp_state", CPR_TYPE_U32, mp_state.mp_state), V("nmsrs", CPR_TYPE_U32, nmsrs),
};

static const fld msr[] = {
    F(struct vmm_msr, "index", CPR_TYPE_U32, index), F(struct vmm_msr, "data", CPR_TYPE_U64, data),
};

/* Pending events: a struct of the exception, interrupt, NMI and SMI groups and the rest. */
static int events_desc(cpr_desc **out, cpr_error **errp)
{
    static const struct {
        const char *name;
        size_t size, offset;
        const fld *t;
        size_t n;
    } groups[] = {
        { EVGROUP(exception), ev_exception, N(ev_exception) }, { EVGROUP(interrupt), ev_interrupt, N(ev_interrupt) },
        { EVGROUP(nmi), ev_nmi, N(ev_nmi) }, { EVGROUP(smi), ev_smi, N(ev_smi) },
    };
    cpr_desc *d = NULL, *sub = NULL;
    int r = cpr_desc_new("events", 1, 1, sizeof(struct kvm_vcpu_events), &d, errp);
    for (size_t i = 0; r == 0 && i < N(groups); i++)
        if ((r = new_struct(groups[i].name, groups[i].size, groups[i].t, groups[i].n, &sub, errp)) == 0)
            r = add_struct(d, groups[i].name, sub, groups[i].offset, groups[i].size, NULL, 1, errp);
    if (r == 0)
        r = add_table(d, ev_rest, N(ev_rest), 0, 1, errp);
    if (r < 0) {
        cpr_desc_unref(d);
        return r;
    }
    *out = d;
    return 0;
}

/* One field per segment register, each a struct of the segment's parts; then gdt and idt. */
static int add_segments(cpr_desc *d, size_t base, uint32_t since, cpr_error **errp)
{
    size_t sregs = base + offsetof(vmm_vcpu_state, sregs);
    cpr_desc *seg = NULL, *dt = NULL;
    int r = new_struct("segment", sizeof(struct kvm_segment), segment, N(segment), &seg, errp);
    for (size_t i = 0; r == 0 && i < N(segments); i++)
        r = add_struct(d, segments[i], cpr_desc_ref(seg), sregs + segment_offsets[i], sizeof(struct kvm_segment),
                       NULL, since, errp);
    if (r == 0)
        r = new_struct("dtable", sizeof(struct kvm_dtable), dtable, N(dtable), &dt, errp);
    if (r == 0)
        r = add_struct(d, "gdt", cpr_desc_ref(dt), sregs + offsetof(struct kvm_sregs, gdt), sizeof(struct kvm_dtable),
                       NULL, since, errp);
    if (r == 0)
        r = add_struct(d, "idt", cpr_desc_ref(dt), sregs + offsetof(struct kvm_sregs, idt), sizeof(struct kvm_dtable),
                       NULL, since, errp);
    cpr_desc_unref(seg);
    cpr_desc_unref(dt);
    return r;
}

int vmm_cpu_fields_add(cpr_desc *d, size_t base, uint32_t since, cpr_error **errp)
{
    cpr_desc *sub = NULL;
    int r = add_table(d, vcpu_head, N(vcpu_head), base, since, errp);
    if (r == 0)
        r = add_segments(d, base, since, errp);
    if (r == 0)
        r = add_table(d, vcpu_control, N(vcpu_control), base, since, errp);
    if (r == 0 && (r = new_struct("xcr", sizeof(struct kvm_xcr), xcr, N(xcr), &sub, errp)) == 0)
        r = add_struct(d, "xcrs", sub, base + offsetof(vmm_vcpu_state, xcrs.xcrs),
                       sizeof(((vmm_vcpu_state *)0)->xcrs.xcrs), "nr_xcrs", since, errp);
    if (r == 0 && (r = events_desc(&sub, errp)) == 0)
        r = add_struct(d, "events", sub, base + CPR_MEMBER(vmm_vcpu_state, events), NULL, since, errp);
    if (r == 0 && (r = new_struct("debugregs", sizeof(struct kvm_debugregs), debugregs, N(debugregs), &sub, errp)) == 0)
        r = add_struct(d, "debugregs", sub, base + CPR_MEMBER(vmm_vcpu_state, debugregs), NULL, since, errp);
    if (r == 0)
        r = add_table(d, vcpu_tail, N(vcpu_tail), base, since, errp);
    if (r == 0 && (r = new_struct("msr", sizeof(struct vmm_msr), msr, N(msr), &sub, errp)) == 0)
        r = add_struct(d, "msrs", sub, base + CPR_MEMBER(vmm_vcpu_state, msrs), "nmsrs", since, errp);
    return r;
}

int vmm_cpu_lapic_desc(const char *name, size_t obj_size, size_t base, cpr_desc **out, cpr_error **errp)
{
    const fld lapic = { "regs", CPR_TYPE_BYTES, base + offsetof(vmm_vcpu_state, lapic),
                        sizeof(((vmm_vcpu_state *)0)->lapic) };
    return new_struct(name, obj_size, &lapic, 1, out, errp);
}

/* ---- VM ---- */

static const fld vm_checks[] = {
    F(vmm_vm_state, "backend", CPR_TYPE_U32, backend), F(vmm_vm_state, "nvcpus", CPR_TYPE_U32, nvcpus),
    F(vmm_vm_state, "ram_size", CPR_TYPE_U64, ram_size), F(vmm_vm_state, "valid", CPR_TYPE_U32, valid),
};

static const fld clock[] = {
    F(struct kvm_clock_data, "clock", CPR_TYPE_U64, clock), F(struct kvm_clock_data, "flags", CPR_TYPE_U32, flags),
    F(struct kvm_clock_data, "realtime", CPR_TYPE_U64, realtime),
    F(struct kvm_clock_data, "host_tsc", CPR_TYPE_U64, host_tsc),
};

int vmm_vm_fields_add(cpr_desc *d, size_t base, uint32_t since, const vmm_vm_state *want, cpr_error **errp)
{
    cpr_desc *sub = NULL;
    int r = add_table(d, vm_checks, N(vm_checks), base, since, errp);
    if (r == 0)
        r = cpr_desc_field_equal(d, "backend", want->backend, errp);
    if (r == 0)
        r = cpr_desc_field_equal(d, "nvcpus", want->nvcpus, errp);
    if (r == 0)
        r = cpr_desc_field_equal(d, "ram_size", want->ram_size, errp);
    if (r == 0 && (r = new_struct("clock", sizeof(struct kvm_clock_data), clock, N(clock), &sub, errp)) == 0)
        r = add_struct(d, "clock", sub, base + CPR_MEMBER(vmm_vm_state, clock), NULL, since, errp);
    return r;
}
