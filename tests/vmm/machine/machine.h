/* SPDX-License-Identifier: MIT */
/*
 * The machine core of the reference VMM (tests/vmm): a guest that runs on KVM or, where KVM is
 * absent or refused, on a software backend (one thread per vCPU running the same workload in C).
 *
 * The machine owns no RAM: the caller maps guest RAM (a memfd or a file that libcpr manages)
 * and hands (host pointer, size) over. Everything the guest needs to go on after a switchover
 * lives either in that RAM or in the plain state structs below, so another process can map the
 * same memfd at another address, create a machine with VMM_MACHINE_INCOMING, set the state and
 * resume: that is cpr-transfer.
 *
 * Guest RAM layout (guest physical address == offset in the caller's RAM):
 *   page 0            the mailbox (struct vmm_mailbox): a header written by the host at boot,
 *                     then one slot per vCPU with the guest's counters and cursors.
 *   pages 1..N-1      data pages, split into one contiguous share per vCPU. Each holds 512
 *                     64-bit words: word[w] = hdr + min(w, 512 - R) * VMM_PAGE_STRIDE,
 *                     hdr = pfn << 32 | gen, R = the mailbox's repeat_words (0 before version 3):
 *                     the last R words are one value, so a page compresses as the host asked.
 * The guest's code, GDT, TSS (with its I/O bitmap) and page tables live in a second, private
 * memory slot above RAM that every machine regenerates identically; the guest never writes it.
 *
 * Generations: at boot every data page gets generation 1. The guest then rewrites its share in
 * order; the k-th rewrite of a vCPU writes page (first + k % npages) with generation
 * k / npages + 2, so the generation each page must hold follows from the slot's cursors alone
 * (rw_idx, rw_gen). A page that is zeroed, stale (an old generation), moved or altered in any word
 * fails verification and counts as a corruption.
 *
 * Errors: functions return 0 or a non-negative count on success and a negative errno on failure,
 * with a cpr_error (include/cpr/error.h) naming the vCPU, ioctl or field at fault.
 * Thread safety: a machine is driven from one thread at a time (the VMM's main loop); its vCPU
 * threads are internal. The KVM backend installs a no-op handler for SIGRTMIN + 3 (process-wide)
 * and unblocks that signal in its vCPU threads: it kicks them out of KVM_RUN. Stats readers
 * (vmm_machine_get_stats, the heartbeat sampler) may run in any thread at any time.
 */
#ifndef CPR_VMM_MACHINE_H
#define CPR_VMM_MACHINE_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include <cpr/common.h>
#include <cpr/error.h>

#include "guest_abi.h" /* ports (VMM_PORT_*) and mailbox offsets shared with the guest */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits, ports and the mailbox layout shared with the guest ---- */

#define VMM_PAGE_SIZE 4096u
#define VMM_MAX_VCPUS 16u
/* Default guest rewrite rate, pages per second over all vCPUs. */
#define VMM_DEFAULT_RATE_PPS 1000u
/* Added per word in a data page (a golden-ratio constant, so neighbouring words differ). */
#define VMM_PAGE_STRIDE 0x9E3779B97F4A7C15ull

#define VMM_MAILBOX_MAGIC 0x584f424c49414d56ull /* "VMAILBOX" */
/*
 * Mailbox versions: the layout of page 0 and the guest code that goes with it (guest.S). A guest
 * keeps the version it booted with for its whole life, across every switchover: a machine loads
 * every version listed here and boots the one its config asks for (vmm_machine_config's
 * mailbox_version, from the VMM's machine type), so that an older VMM can take the guest back.
 *   1  release 1.0: header, per-vCPU slots; hdr.clock is reserved (0), no pause record
 *   2  release 1.1: + hdr.clock and the guest's own pause record (gap[])
 *   3  release 1.2: + hdr.repeat_words, how compressible the data pages are
 */
#define VMM_MAILBOX_VERSION 3u     /* the newest */
#define VMM_MAILBOX_VERSION_MIN 1u /* the oldest a machine still loads and boots */
/* The guest's time source (header `clock`): the TSC, or CLOCK_MONOTONIC ns (software). */
#define VMM_CLOCK_TSC 1u
#define VMM_CLOCK_MONOTONIC 2u

/* Per-vCPU slot: 128 bytes at mailbox offset 256 + 128 * cpu. Offsets are ABI with guest.S. */
struct vmm_guest_cpu {
    uint64_t heartbeat;      /* 0: +1 per loop iteration (and per page filled at boot) */
    uint64_t pages_filled;   /* 8: pages given generation 1 at boot */
    uint64_t pages_verified; /* 16: page verifications done */
    uint64_t corruptions;    /* 24: verifications that failed */
    uint64_t first_pfn;      /* 32: first data page of this vCPU (host-written at boot) */
    uint64_t npages;         /* 40: number of data pages of this vCPU (host-written) */
    uint64_t fill_idx;       /* 48: boot fill cursor; == npages when the fill is done */
    uint64_t rw_idx;         /* 56: next page (index in the share) to rewrite */
    uint64_t rw_gen;         /* 64: generation the current rewrite pass writes (starts at 2) */
    uint64_t vf_idx;         /* 72: next page (index in the share) to verify */
    uint64_t last_time;      /* 80: time source reading of the previous iteration */
    uint64_t credit;         /* 88: rewrite credit, in time units x pages/s */
    uint64_t last_report;    /* 96: time of the last OUT report */
    uint64_t bad_pfn;        /* 104: last page found corrupt, plus one (0: none) */
    uint64_t rewrites;       /* 112: pages rewritten since boot */
    uint64_t rate_pps;       /* 120: this vCPU's rewrite rate, pages per second (host-written) */
};

struct vmm_mailbox_header {
    uint64_t magic;          /* VMM_MAILBOX_MAGIC */
    uint64_t version;        /* VMM_MAILBOX_VERSION */
    uint64_t nvcpus;
    uint64_t ticks_per_ms;   /* time source rate: the TSC in kHz on KVM, 1e6 (ns) in software */
    uint64_t ram_pages;      /* pages of RAM, mailbox included */
    uint64_t clock;          /* VMM_CLOCK_*: what ticks_per_ms counts (version 2; 0 in 1) */
    uint64_t repeat_words;   /* version 3 (0 before): the last this many words of each data page
                              * are one value (0..512, from the config's compress_pct) */
    uint64_t reserved[25];
};

/*
 * The guest's own measure of a pause: each loop iteration reads its time source, and when the
 * time since the previous iteration is the largest since the host last zeroed this record, keeps
 * it (written before the heartbeat moves, so a host that sees the move sees the record). The host
 * zeroes it right before a resume: the first iteration after the resume then records the pause.
 */
struct vmm_guest_gap {
    uint64_t max_gap;        /* 0: the largest gap between two iterations, in clock ticks */
    uint64_t gap_end;        /* 8: the clock reading that ended it */
};

struct vmm_mailbox {
    struct vmm_mailbox_header hdr;           /* 256 bytes */
    struct vmm_guest_cpu cpu[VMM_MAX_VCPUS]; /* 2048 bytes */
    struct vmm_guest_gap gap[VMM_MAX_VCPUS]; /* 256 bytes, at MB_GAP0 (version 2) */
};

/* ---- configuration ---- */

#define VMM_ACCEL_AUTO 0u /* KVM when /dev/kvm works, else software */
#define VMM_ACCEL_KVM  1u /* KVM or fail */
#define VMM_ACCEL_SOFT 2u /* software backend */

/*
 * The RAM already holds a guest (cpr-transfer, cpr-exec, cpr-reboot, or loaded by migration):
 * do not boot. vCPUs are created and warmed up (KVM) and wait for vmm_machine_set_*_state()
 * and vmm_machine_resume().
 */
#define VMM_MACHINE_INCOMING 0x1u

typedef struct vmm_machine_config {
    uint32_t size;       /* sizeof(vmm_machine_config) */
    uint32_t accel;      /* VMM_ACCEL_* */
    uint32_t nvcpus;     /* 1..VMM_MAX_VCPUS */
    uint32_t flags;      /* VMM_MACHINE_* */
    void *ram;           /* host mapping of guest RAM (MAP_SHARED), page aligned; not owned */
    uint64_t ram_size;   /* multiple of 2 MiB, at least 2 MiB */
    uint64_t rate_pps;   /* guest rewrite rate over all vCPUs, pages/s; 0 = no rewrites */
    uint64_t vcpu_cpus;  /* host CPUs the vCPU threads run on (bit n = CPU n); 0 = wherever */
    /* The mailbox version (VMM_MAILBOX_VERSION_MIN..VMM_MAILBOX_VERSION) a boot writes, and
     * the one an INCOMING machine requires of its guest; 0: boot the newest, load any. */
    uint32_t mailbox_version;
    /* Called on a vCPU thread by the first vCPU that enters the guest after each resume (the
     * pause breakdown's "vcpus-in"), without the machine's lock; NULL: none. */
    void (*on_run)(void *opaque);
    void *run_opaque;
    /* How compressible a boot makes the data pages, 0..100: that share of each page's words
     * repeat one value (0: none, the pattern of mailbox versions 1 and 2). Needs mailbox
     * version 3; a guest coming in keeps the setting in its mailbox. */
    uint32_t compress_pct;
} vmm_machine_config;

/* A host CPU mask as the config spells it (bit n = CPU n) into a cpu_set_t. */
void vmm_cpu_mask_to_set(uint64_t mask, cpu_set_t *set);

/* Fills *cfg with defaults: AUTO, 1 vCPU, no flags, VMM_DEFAULT_RATE_PPS; ram left NULL/0. */
void vmm_machine_config_init(vmm_machine_config *cfg);

typedef struct vmm_machine vmm_machine;

/*
 * Creates a machine over cfg->ram: on KVM a VM with a RAM slot and a system slot, the vCPUs with
 * the supported CPUID, and one thread per vCPU, all stopped. Nothing runs until
 * vmm_machine_boot() (fresh) or vmm_machine_resume() (INCOMING, after the state was set).
 * With VMM_ACCEL_AUTO a KVM failure falls back to software (the reason is in
 * vmm_machine_backend_note()). Errors: -EINVAL for a bad config, KVM's errno otherwise.
 * The caller keeps the RAM mapped until vmm_machine_free().
 */
int vmm_machine_new(vmm_machine **out, const vmm_machine_config *cfg, cpr_error **errp);

/* Stops the vCPUs, joins their threads, closes the VM. RAM stays as it is. NULL is accepted. */
void vmm_machine_free(vmm_machine *m);

/* VMM_ACCEL_KVM or VMM_ACCEL_SOFT; the name "kvm" or "soft"; why KVM was not used (or ""). */
uint32_t vmm_machine_backend(const vmm_machine *m);
const char *vmm_machine_backend_name(const vmm_machine *m);
const char *vmm_machine_backend_note(const vmm_machine *m);
uint32_t vmm_machine_nvcpus(const vmm_machine *m);

/*
 * Fresh boot: writes the mailbox (wiping any previous guest), sets the boot registers and
 * starts the vCPUs. Errors: -EBUSY on an INCOMING machine or when already booted.
 */
int vmm_machine_boot(vmm_machine *m, cpr_error **errp);

/*
 * Stops every vCPU and returns when all are parked with their last exit completed (KVM_RUN
 * re-entered with immediate_exit = 1), so the state read next is consistent. Idempotent.
 * Fails with -EIO when a vCPU died (triple fault, unexpected exit): the message says which.
 */
int vmm_machine_stop(vmm_machine *m, cpr_error **errp);

/*
 * Checks, changing nothing, what vmm_machine_resume() checks: that there is something to run and
 * that it fits this machine (the errors below). A destination calls it before it commits, so
 * that the resume after the commit cannot fail on them.
 */
int vmm_machine_check_resume(vmm_machine *m, cpr_error **errp);

/*
 * Lets the vCPUs run again. -EINVAL when there is nothing to run (neither booted nor restored) or
 * the mailbox in RAM does not fit this machine (wrong RAM, vCPU count, a version this machine
 * does not know or, when the config names one, another version); -EIO when a vCPU died. On KVM
 * the guest code of the mailbox's version is put in place first (a restored guest runs on).
 * With KVM, registers restored by set_vcpu_state are applied by the first KVM_RUN: if KVM
 * refuses them, that vCPU dies and the next stop reports why.
 */
int vmm_machine_resume(vmm_machine *m, cpr_error **errp);

/*
 * After vmm_machine_resume(): waits, yielding the CPU, until a vCPU has taken the resume (it is
 * about to enter the guest), every vCPU died, or max_ns passed. Returns 1 when a vCPU took it.
 * A migration's start hook calls it so that what follows the start (the acknowledgement that
 * wakes the old VMM) does not take a core from the vCPU on its way back in.
 */
int vmm_machine_wait_entered(vmm_machine *m, uint64_t max_ns);

/* The guest's mailbox version (once booted or restored and checked by a resume), else 0.
 * Any thread. */
uint32_t vmm_machine_guest_version(const vmm_machine *m);

/* 1 when the vCPUs run, 0 when stopped. */
int vmm_machine_running(const vmm_machine *m);

/* Changes the rewrite rate (pages/s over all vCPUs), live: the guest reads it every iteration. */
void vmm_machine_set_rate(vmm_machine *m, uint64_t rate_pps);

/* ---- state, for sections: plain structs with a layout version ---- */

#define VMM_VCPU_STATE_VERSION 1u
#define VMM_VM_STATE_VERSION 1u
#define VMM_MAX_MSRS 96u

/* Which parts of a vmm_vcpu_state hold data (bits of vmm_vcpu_state.valid). */
#define VMM_VCPU_HAS_REGS      0x001u
#define VMM_VCPU_HAS_SREGS     0x002u
#define VMM_VCPU_HAS_XSAVE     0x004u /* else FPU */
#define VMM_VCPU_HAS_FPU       0x008u
#define VMM_VCPU_HAS_XCRS      0x010u
#define VMM_VCPU_HAS_MSRS      0x020u
#define VMM_VCPU_HAS_EVENTS    0x040u
#define VMM_VCPU_HAS_DEBUGREGS 0x080u
#define VMM_VCPU_HAS_MP_STATE  0x100u
#define VMM_VCPU_HAS_LAPIC     0x200u /* only with an in-kernel irqchip (not used yet) */

struct vmm_msr {
    uint32_t index;
    uint32_t reserved;
    uint64_t data;
};

/*
 * One vCPU's architectural state. The KVM structs are the kernel's UAPI (stable ABI). A
 * software vCPU has no state outside RAM: only the header fields are meaningful.
 * The struct has no pointers and no host addresses: it can be written to a stream as bytes
 * (little-endian x86-64) and loaded by another process.
 */
typedef struct vmm_vcpu_state {
    uint32_t version;        /* VMM_VCPU_STATE_VERSION */
    uint32_t size;           /* sizeof(vmm_vcpu_state) */
    uint32_t backend;        /* VMM_ACCEL_KVM or VMM_ACCEL_SOFT */
    uint32_t cpu;            /* vCPU index */
    uint32_t valid;          /* VMM_VCPU_HAS_* */
    uint32_t nmsrs;          /* entries used in msrs[] */
    uint64_t tsc;            /* IA32_TSC at capture (also among msrs) */
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    uint32_t xsave[1024];    /* struct kvm_xsave: the 4096-byte XSAVE area (KVM_GET_XSAVE) */
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events events;
    struct kvm_debugregs debugregs;
    struct kvm_mp_state mp_state;
    uint32_t reserved0;
    struct kvm_lapic_state lapic;
    struct vmm_msr msrs[VMM_MAX_MSRS];
} vmm_vcpu_state;

#define VMM_VM_HAS_CLOCK 0x1u

/* Whole-VM state: checks that both sides agree on the machine, and the KVM clock. */
typedef struct vmm_vm_state {
    uint32_t version;        /* VMM_VM_STATE_VERSION */
    uint32_t size;           /* sizeof(vmm_vm_state) */
    uint32_t backend;        /* VMM_ACCEL_* */
    uint32_t nvcpus;
    uint64_t ram_size;
    uint32_t valid;          /* VMM_VM_HAS_* */
    uint32_t reserved0;
    struct kvm_clock_data clock;
} vmm_vm_state;

/*
 * Captures vCPU `cpu` into *st. The machine must be stopped (-EBUSY otherwise).
 * On KVM: REGS, SREGS and EVENTS come from kvm_run (KVM_CAP_SYNC_REGS), the rest by 5 ioctls of
 * ~10 us each here (about 47 us per vCPU).
 */
int vmm_machine_get_vcpu_state(vmm_machine *m, uint32_t cpu, vmm_vcpu_state *st, cpr_error **errp);

/*
 * Restores vCPU `cpu` from *st (stopped machine). Refuses (-EINVAL) a newer version, another
 * backend or size, another vCPU's state; MSRs KVM refuses are skipped and counted
 * (vmm_machine_msrs_skipped(); here MSR 0x4b564d06, KVM's async-PF ack, is refused).
 */
int vmm_machine_set_vcpu_state(vmm_machine *m, uint32_t cpu, const vmm_vcpu_state *st,
                               cpr_error **errp);

/* Captures / restores the VM-wide state (stopped machine). set refuses a different backend,
 * vCPU count or RAM size (-EINVAL, naming both values), and a guest in RAM whose mailbox this
 * machine cannot run (as vmm_machine_resume() checks it): the guest's RAM must be in place. */
int vmm_machine_get_vm_state(vmm_machine *m, vmm_vm_state *st, cpr_error **errp);
int vmm_machine_set_vm_state(vmm_machine *m, const vmm_vm_state *st, cpr_error **errp);

/* MSRs KVM refused on the last set_vcpu_state (diagnostics). */
uint32_t vmm_machine_msrs_skipped(const vmm_machine *m);

/* ---- dirty logging ---- */

/*
 * Starts / stops logging guest writes to RAM. Pages written from the host are not logged.
 * On KVM each first write to a page afterwards costs a write-protect fault (~28 us here).
 */
int vmm_machine_dirty_log_start(vmm_machine *m, cpr_error **errp);
int vmm_machine_dirty_log_stop(vmm_machine *m, cpr_error **errp);

/*
 * Fetches and clears the pages written since the last call (or since start) and ORs them into
 * `bitmap`: bit (pfn % 64) of word (pfn / 64), one bit per 4 KiB page of RAM. `nwords` must
 * cover ram_size / 4096 bits (-EINVAL otherwise). Returns the number of pages newly reported.
 * -ENOENT when logging is off. May run while the vCPUs run.
 */
int vmm_machine_dirty_log_sync(vmm_machine *m, uint64_t *bitmap, size_t nwords, cpr_error **errp);

/* ---- guest statistics ---- */

typedef struct vmm_guest_stats {
    uint32_t size;            /* sizeof(vmm_guest_stats), set by the caller */
    uint32_t nvcpus;
    uint64_t heartbeat;       /* sum over vCPUs */
    uint64_t pages_total;     /* data pages (RAM pages minus the mailbox) */
    uint64_t pages_filled;
    uint64_t pages_verified;
    uint64_t corruptions;
    uint64_t rewrites;
    uint64_t bad_pfn;         /* a page found corrupt, plus one; 0 when none */
    uint64_t io_reports;      /* heartbeat reports (OUT) seen by this machine (KVM only) */
    uint64_t io_corruptions;  /* sum of the corruption counts last reported through the port */
    uint64_t verify_passes;   /* full verification passes every vCPU has completed (the least);
                               * after a switchover, wait for two more to know all RAM was
                               * re-verified since */
} vmm_guest_stats;

/*
 * Reads the counters from the mailbox in `ram` (no exit, no lock: any thread, any time, in any
 * process that maps the RAM). -EINVAL when the mailbox is not initialised.
 */
int vmm_guest_read_stats(const void *ram, uint64_t ram_size, vmm_guest_stats *st);

/* As vmm_guest_read_stats on the machine's RAM, plus what the guest reported through its port
 * (io_reports, io_corruptions; zero on the software backend, which has no port). */
int vmm_machine_get_stats(const vmm_machine *m, vmm_guest_stats *st);

/*
 * Host-side check of every data page against the generation the mailbox cursors imply; only
 * meaningful while the guest is stopped. The page at each rewrite cursor is skipped (the guest
 * may have stopped in the middle of rewriting it). Returns the number of bad pages; *first_bad (if not
 * NULL) gets the first bad pfn or UINT64_MAX.
 */
int64_t vmm_guest_verify_ram(const void *ram, uint64_t ram_size, uint64_t *first_bad);

/* Writes data page `pfn` with generation `gen` as the guest would (tests: stale pages). */
void vmm_guest_write_page(void *ram, uint64_t pfn, uint64_t gen);

/* ---- heartbeat sampler: the guest-visible pause on the host clock ---- */

typedef struct vmm_hb_sampler vmm_hb_sampler;

/*
 * What one process hands to the next so the pause can be measured across processes: for each
 * vCPU the heartbeat value last seen and a CLOCK_MONOTONIC time (ns) before which it had not
 * changed yet (the poll before the one that first saw it), so the pause measured from it is an
 * upper bound, off by at most a poll interval.
 */
typedef struct vmm_hb_handoff {
    uint32_t version;         /* 1 */
    uint32_t nvcpus;
    uint64_t heartbeat[VMM_MAX_VCPUS];
    uint64_t changed_ns[VMM_MAX_VCPUS];
} vmm_hb_handoff;

/*
 * Starts a thread that polls every vCPU's heartbeat in `ram` and keeps, per vCPU, the time of the
 * last change and the largest gap between changes since the last vmm_hb_sampler_reset() /
 * _handoff_set(). It polls every `interval_us` (0: 10 us) from a handoff_set until every vCPU's
 * heartbeat moved again (at most 5 s), and every 1 ms otherwise, so it does not steal the vCPUs'
 * CPU between switchovers (nor during a stop, which it slowed from ~50 us to milliseconds).
 * A pause is measured as: reset() right before the stop, handoff_get() right after it; then the
 * side that resumes the guest -- the next process, or this one if the migration failed -- calls
 * handoff_set() with that handoff right before its resume, and wait_pause() returns the pause
 * once every vCPU moved again. The guest's mailbox may arrive in
 * RAM later (a migration target): the sampler starts watching once it is there. The RAM must
 * stay mapped until _free(). Errors: -EINVAL without RAM, -ENOMEM, a thread error.
 */
int vmm_hb_sampler_new(vmm_hb_sampler **out, void *ram, uint64_t ram_size,
                       uint32_t interval_us, cpr_error **errp);
void vmm_hb_sampler_free(vmm_hb_sampler *s);

/* Polls once and forgets the gaps seen so far: call right before stopping the guest (that poll
 * bounds the last heartbeat change before the stop from below). */
void vmm_hb_sampler_reset(vmm_hb_sampler *s);

/* Largest gap (ns) between two heartbeat changes of any vCPU since the reset. */
uint64_t vmm_hb_sampler_max_gap_ns(vmm_hb_sampler *s);

/*
 * Waits until every vCPU's heartbeat changed since the last handoff_get/handoff_set (the guest
 * runs again) or `timeout_ms` passed (-ETIMEDOUT), then returns 0 with *gap_ns = the pause: after
 * a handoff_set, the guest's own measure (the largest of the vCPUs' pause records, struct
 * vmm_guest_gap) when every vCPU's clock checked out as this host's; otherwise, and without a
 * handoff_set, the largest gap between heartbeat changes the sampler saw (an upper bound).
 */
int vmm_hb_sampler_wait_pause(vmm_hb_sampler *s, uint32_t timeout_ms, uint64_t *gap_ns);

/*
 * Old process, right after the guest stopped: fills *h with the last heartbeat changes seen (the
 * sampler polls once more first) and disarms. Before resuming (new process, or the old one when
 * the migration failed): vmm_hb_sampler_handoff_set() resets and arms the sampler and makes the
 * first change it sees count from the times in *h.
 */
void vmm_hb_sampler_handoff_get(vmm_hb_sampler *s, vmm_hb_handoff *h);
/* Also zeroes the guest's pause records: call it with the guest stopped, its RAM in place. */
void vmm_hb_sampler_handoff_set(vmm_hb_sampler *s, const vmm_hb_handoff *h);

/*
 * The last pause, once every vCPU moved after a handoff_set: *guest_ns the guest's own measure
 * (0 when its clock did not check out), *seen_ns the sampler's host-seen upper bound. Returns 1
 * when the guest's measure is the pause, 0 when the host-seen one is, -EAGAIN before the moves.
 */
int vmm_hb_sampler_last_pause(vmm_hb_sampler *s, uint64_t *guest_ns, uint64_t *seen_ns);

/* Where the guest's own measure of the last pause lies on CLOCK_MONOTONIC (its longest vCPU
 * gap: *start_ns its last iteration before, *end_ns its first after), for traces; -EAGAIN when
 * the guest's measure is not the pause. */
int vmm_hb_sampler_last_window(vmm_hb_sampler *s, uint64_t *start_ns, uint64_t *end_ns);

/* Number of armed polls that came more than 200 us after the previous one (the sampler itself
 * was descheduled): a gap measured across one is an upper bound. */
uint64_t vmm_hb_sampler_late_polls(vmm_hb_sampler *s);

/*
 * Stalls: how long the guest went between two iterations of its loop, on its own clock, while
 * recording is on (the destination of a postcopy migration, while pages are fetched). Each poll
 * (every 1 ms between switchovers) takes every vCPU's pause record (struct vmm_guest_gap), the
 * guest's worst gap since the previous poll, and zeroes it: a sample is the worst gap the guest
 * saw in one poll window, and a window in which no iteration ended (a longer stall) gives none,
 * so a 30 ms stall is one 30 ms sample. The pause of a switchover (the record a handoff_set
 * arms for) is not a stall. `on` starts a fresh recording (no-op when on already); off takes
 * the records once more and keeps the samples. Mailbox version 1 keeps no record: no samples.
 * _stalls_record() never blocks (any thread, even one the guest's page faults wait for): the
 * sampler applies it at its next poll, or _stalls() does before it reads.
 */
typedef struct vmm_stall_stats {
    uint64_t samples;  /* poll windows in which the guest recorded a gap */
    uint64_t worst_ns; /* the longest gap */
    uint64_t p50_ns;   /* nearest-rank percentiles of the samples (saturated at ~4.3 s) */
    uint64_t p99_ns;
    uint64_t dropped;  /* samples beyond the sampler's store (2^20), counted in worst only */
    int recording;
} vmm_stall_stats;
void vmm_hb_sampler_stalls_record(vmm_hb_sampler *s, int on);
/* 0, or -ENOMEM. */
int vmm_hb_sampler_stalls(vmm_hb_sampler *s, vmm_stall_stats *out);

/* CLOCK_MONOTONIC in ns. */
uint64_t vmm_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* CPR_VMM_MACHINE_H */
