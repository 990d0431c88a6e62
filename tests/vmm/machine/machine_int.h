/* SPDX-License-Identifier: MIT */
/* Private to the machine core: the machine object, its vCPU threads and the backend interface. */
#ifndef CPR_VMM_MACHINE_INT_H
#define CPR_VMM_MACHINE_INT_H

#include <pthread.h>

#include "machine.h"

struct vmm_vcpu {
    vmm_machine *m;
    uint32_t index;
    pthread_t thread;
    int started;
    int parked;          /* under m->lock */
    int dead;            /* under m->lock; err says why */
    char err[256];
    uint64_t io_reports; /* atomic: heartbeat reports through the port */
    uint32_t io_corruptions; /* atomic: the last corruption count reported */
    void *be;            /* backend's per-vCPU data */
};

/* What a backend provides. Functions marked "stopped" run only while every vCPU is parked. */
struct vmm_backend_ops {
    uint32_t id;
    const char *name;
    /* Sets up m->be and the vCPUs' be (before the threads start). */
    int (*init)(vmm_machine *m, cpr_error **errp);
    void (*fini)(vmm_machine *m);
    /* In the vCPU thread, before it first parks (KVM: the warm-up of an incoming machine). */
    int (*vcpu_prologue)(struct vmm_vcpu *v);
    /* In the vCPU thread: runs until a stop is requested (0) or the vCPU dies (<0, v->err). */
    int (*vcpu_run)(struct vmm_vcpu *v);
    /* Under m->lock: make vcpu_run return soon / allow it to run again. */
    void (*vcpu_kick)(struct vmm_vcpu *v);
    void (*vcpu_unkick)(struct vmm_vcpu *v);
    /* Stopped: set the boot registers (the mailbox is written already). */
    int (*boot)(vmm_machine *m, cpr_error **errp);
    /* Stopped: the guest code of mailbox `version` is the one to run (KVM: into the system
     * slot; NULL when the guest reads its version itself, as the software workload does). */
    void (*guest_code)(vmm_machine *m, uint32_t version);
    int (*get_vcpu)(vmm_machine *m, uint32_t cpu, vmm_vcpu_state *st, cpr_error **errp);
    int (*set_vcpu)(vmm_machine *m, uint32_t cpu, const vmm_vcpu_state *st, cpr_error **errp);
    int (*get_vm)(vmm_machine *m, vmm_vm_state *st, cpr_error **errp);
    int (*set_vm)(vmm_machine *m, const vmm_vm_state *st, cpr_error **errp);
    int (*dirty_log)(vmm_machine *m, int on, cpr_error **errp);
    int (*dirty_sync)(vmm_machine *m, uint64_t *bitmap, size_t nwords, cpr_error **errp);
};

extern const struct vmm_backend_ops vmm_kvm_ops;
extern const struct vmm_backend_ops vmm_soft_ops;

struct vmm_machine {
    vmm_machine_config cfg;
    const struct vmm_backend_ops *ops;
    char note[256];
    uint64_t ticks_per_ms;  /* the guest's time source, set by the backend's init */
    uint64_t clock;         /* VMM_CLOCK_*: which time source, set by the backend's init */
    pthread_mutex_t lock;
    pthread_cond_t run_cond;
    pthread_cond_t parked_cond;
    int stop_req;           /* under lock, read atomically by vcpu_run */
    int quit;
    int booted;
    uint32_t guest_version; /* the mailbox version the guest runs (0 until a resume checked it) */
    int dirty_on;
    uint32_t nparked;
    uint64_t spin_until_ns; /* under lock: parked vCPUs spin (resume imminent) until then */
    int run_report;         /* under lock: a resume the first vCPU to run reports (on_run) */
    uint32_t nstarted;      /* vCPU threads running (all of them once vmm_machine_new succeeded) */
    uint32_t msrs_skipped;
    void *be;
    struct vmm_vcpu vcpus[VMM_MAX_VCPUS];
};

/* 1 when a stop was requested: vcpu_run polls it. */
static inline int vmm_stop_requested(vmm_machine *m)
{
    return __atomic_load_n(&m->stop_req, __ATOMIC_ACQUIRE);
}

/* ---- workload.c: the guest's page format and its software twin ---- */

struct vmm_mailbox *vmm_mailbox(void *ram);
/* Writes a fresh mailbox of `version` (VMM_MAILBOX_VERSION_MIN..VMM_MAILBOX_VERSION): header,
 * each vCPU's share of the data pages, rate, and (version 3) how compressible pages are. */
void vmm_mailbox_init(void *ram, uint64_t ram_size, uint32_t nvcpus, uint64_t rate_pps,
                      uint64_t ticks_per_ms, uint64_t clock, uint32_t version, uint32_t compress_pct);
void vmm_mailbox_set_rate(void *ram, uint32_t nvcpus, uint64_t rate_pps);
/* The mailbox version when `ram` holds a mailbox this machine can run (bounds the software
 * guest's writes) and, `want` not 0, of that version; else -EINVAL with the reason in `why`. */
int vmm_mailbox_check(const void *ram, uint64_t ram_size, uint32_t nvcpus, uint32_t want, char *why,
                      size_t len);
/*
 * One iteration of the guest loop of guest.S for vCPU slot `c`, at time `now` (ticks), as the
 * guest code of the mailbox's version runs it. `dirty`
 * (may be NULL) points to the dirty bitmap pointer, NULL while logging is off: pages written are
 * marked in the bitmap it holds at the time of the write (one bit per page, atomically).
 */
void vmm_guest_step(void *ram, struct vmm_guest_cpu *c, uint64_t ticks_per_ms, uint64_t now,
                    uint64_t **dirty);

/* ORs `src` into `dst` (nwords words) and returns how many bits were new. */
int vmm_bitmap_merge(uint64_t *dst, const uint64_t *src, size_t nwords);

#endif /* CPR_VMM_MACHINE_INT_H */
