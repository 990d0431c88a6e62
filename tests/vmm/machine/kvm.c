/* SPDX-License-Identifier: MIT */
/*
 * The KVM backend (x86-64). Two memory slots: the caller's RAM at guest physical 0, and a private
 * "system" slot above it holding what every machine regenerates identically: GDT, one TSS per
 * vCPU with an I/O bitmap (a CPL-3 OUT is checked against it on kvm_pvm), the guest code and an
 * identity map with 2 MiB pages (1 GiB pages are not offered here). vCPUs start directly at CPL 3
 * in long mode, so no guest instruction ever runs in KVM's ring-0 emulator.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <x86intrin.h>

#include <cpr/error.h>
#include "machine_int.h"

extern const uint8_t vmm_guest_code_start[], vmm_guest_code_end[];
extern const uint8_t vmm_guest_entry_boot[], vmm_guest_entry_warmup[];
extern const uint8_t vmm_guest1_code_start[], vmm_guest1_code_end[];
extern const uint8_t vmm_guest1_entry_boot[], vmm_guest1_entry_warmup[];
extern const uint8_t vmm_guest2_code_start[], vmm_guest2_code_end[];
extern const uint8_t vmm_guest2_entry_boot[], vmm_guest2_entry_warmup[];

/* The guest code of each mailbox version (guest.S, guest_v1.S, guest_v2.S), index version - 1. */
static const struct guest_code {
    const uint8_t *start, *end, *boot, *warmup;
} guest_codes[] = {
    {vmm_guest1_code_start, vmm_guest1_code_end, vmm_guest1_entry_boot, vmm_guest1_entry_warmup},
    {vmm_guest2_code_start, vmm_guest2_code_end, vmm_guest2_entry_boot, vmm_guest2_entry_warmup},
    {vmm_guest_code_start, vmm_guest_code_end, vmm_guest_entry_boot, vmm_guest_entry_warmup},
};
_Static_assert(sizeof(guest_codes) / sizeof(guest_codes[0]) == VMM_MAILBOX_VERSION &&
               VMM_MAILBOX_VERSION_MIN == 1, "one guest code per mailbox version");

static const struct guest_code *guest_code_of(uint32_t version)
{
    return &guest_codes[(version ? version : VMM_MAILBOX_VERSION) - 1];
}

/* System slot layout (offsets from its base). */
#define SYS_GDT   0x0000
#define SYS_TSS   0x1000 /* VMM_MAX_VCPUS x TSS_STRIDE */
#define SYS_CODE  0x2000
#define SYS_PML4  0x3000
#define SYS_PDPT  0x4000
#define SYS_PD    0x5000 /* one page per GiB mapped */
#define TSS_STRIDE 256
#define TSS_IOMAP 104    /* the I/O bitmap right after the 104-byte TSS */
#define IOMAP_BYTES 32   /* ports 0..255 allowed, then the 0xff terminator */
#define TSS_LIMIT (TSS_IOMAP + IOMAP_BYTES) /* last byte: the terminator */

#define SEL_UCODE 0x1b   /* GDT entry 3, RPL 3 */
#define SEL_UDATA 0x23   /* GDT entry 4, RPL 3 */
#define SEL_TSS0  0x28   /* GDT entries 5.., 16 bytes each */

#define MSR_IA32_TSC 0x10

/* The signal that kicks a vCPU thread out of KVM_RUN; its handler does nothing. */
#define KICK_SIGNAL (SIGRTMIN + 3)

struct kvm {
    int kvm_fd, vm_fd;
    size_t run_size;
    uint8_t *sys;          /* system slot memory (private) */
    uint64_t sys_base, sys_size;
    struct kvm_cpuid2 *cpuid;
    uint32_t msr_list[VMM_MAX_MSRS];
    uint32_t nmsrs;
    int has_xsave, has_xcrs;
    /* KVM_CAP_SYNC_REGS: REGS, SREGS and EVENTS travel in kvm_run at each exit and entry,
     * which saves six ~10 us vCPU ioctls per switchover here. 0 when not offered. */
    uint32_t sync_mask;
    uint64_t *dirty_buf;
    size_t dirty_words;
};

struct kvm_vcpu {
    int fd;
    struct kvm_run *run;
    /* run->s.regs holds the vCPU's registers: stored by KVM at the last exit, or written by
     * set_vcpu_state for the next entry. Cleared when registers are set by ioctl. */
    int sync_fresh;
};

static struct kvm_vcpu *vcpu_be(vmm_machine *m, uint32_t i)
{
    return m->vcpus[i].be;
}

static void kick_handler(int sig)
{
}

static void install_kick_handler(void)
{
    struct sigaction sa = { .sa_handler = kick_handler };
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIGNAL, &sa, NULL); /* no SA_RESTART: KVM_RUN must return EINTR */
}

static int set_ram_slot(vmm_machine *m, uint32_t flags)
{
    struct kvm *k = m->be;
    struct kvm_userspace_memory_region r = {
        .slot = 0, .flags = flags, .guest_phys_addr = 0, .memory_size = m->cfg.ram_size,
        .userspace_addr = (uintptr_t)m->cfg.ram,
    };
    return ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

static void put_seg_desc(uint64_t *gdt, unsigned idx, uint8_t access, uint8_t flags)
{
    /* base 0, limit 0xfffff; access byte with the accessed bit set so the CPU never writes it */
    gdt[idx] = 0xffffull | (uint64_t)(access | 1) << 40 | 0xfull << 48 | (uint64_t)flags << 52;
}

/* Builds the system slot: GDT, TSSs, code, identity map over RAM and the slot itself. */
static void build_system(vmm_machine *m)
{
    struct kvm *k = m->be;
    uint8_t *s = k->sys;
    uint64_t *gdt = (uint64_t *)(s + SYS_GDT);

    put_seg_desc(gdt, 1, 0x9a, 0xa); /* kernel code, L */
    put_seg_desc(gdt, 2, 0x92, 0xc); /* kernel data */
    put_seg_desc(gdt, 3, 0xfa, 0xa); /* user code DPL 3, L */
    put_seg_desc(gdt, 4, 0xf2, 0xc); /* user data DPL 3 */
    for (uint32_t i = 0; i < VMM_MAX_VCPUS; i++) {
        uint64_t base = k->sys_base + SYS_TSS + i * TSS_STRIDE;
        uint8_t *tss = s + SYS_TSS + i * TSS_STRIDE;
        unsigned idx = SEL_TSS0 / 8 + 2 * i;
        gdt[idx] = (TSS_LIMIT & 0xffff) | (base & 0xffffff) << 16 | 0x8bull << 40 |
                   (uint64_t)(TSS_LIMIT >> 16) << 48 | ((base >> 24) & 0xff) << 56;
        gdt[idx + 1] = base >> 32;
        *(uint16_t *)(tss + 102) = TSS_IOMAP;
        memset(tss + TSS_IOMAP, 0, IOMAP_BYTES);
        tss[TSS_IOMAP + IOMAP_BYTES] = 0xff;
    }
    const struct guest_code *g = guest_code_of(m->cfg.mailbox_version);
    memcpy(s + SYS_CODE, g->start, (size_t)(g->end - g->start));

    /* P | RW | US | A (| D | PS): accessed/dirty preset so the walker never writes the tables. */
    uint64_t *pml4 = (uint64_t *)(s + SYS_PML4), *pdpt = (uint64_t *)(s + SYS_PDPT);
    uint64_t end = k->sys_base + k->sys_size;
    pml4[0] = (k->sys_base + SYS_PDPT) | 0x27;
    for (uint64_t gib = 0; gib * (1ull << 30) < end; gib++) {
        uint64_t *pd = (uint64_t *)(s + SYS_PD + gib * 4096);
        pdpt[gib] = (k->sys_base + SYS_PD + gib * 4096) | 0x27;
        for (uint64_t j = 0; j < 512; j++)
            pd[j] = ((gib << 30) + (j << 21)) | 0xe7;
    }
}

static int get_cpuid(struct kvm *k, cpr_error **errp)
{
    for (uint32_t n = 128; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
        if (!c)
            return cpr_error_set(errp, -ENOMEM, "KVM: out of memory for CPUID");
        c->nent = n;
        if (ioctl(k->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            k->cpuid = c;
            return 0;
        }
        int e = errno;
        free(c);
        if (e != E2BIG)
            return cpr_error_set_errno(errp, -e, "KVM_GET_SUPPORTED_CPUID");
    }
    return cpr_error_set(errp, -E2BIG, "KVM_GET_SUPPORTED_CPUID: too many entries");
}

static int get_msr_list(struct kvm *k, cpr_error **errp)
{
    struct { struct kvm_msr_list l; uint32_t idx[512]; } buf = { .l.nmsrs = 512 };
    if (ioctl(k->kvm_fd, KVM_GET_MSR_INDEX_LIST, &buf) < 0)
        return cpr_error_set_errno(errp, -errno, "KVM_GET_MSR_INDEX_LIST");
    int has_tsc = 0;
    for (uint32_t i = 0; i < buf.l.nmsrs && k->nmsrs < VMM_MAX_MSRS - 1; i++) {
        k->msr_list[k->nmsrs++] = buf.idx[i];
        has_tsc |= buf.idx[i] == MSR_IA32_TSC;
    }
    if (!has_tsc)
        k->msr_list[k->nmsrs++] = MSR_IA32_TSC;
    return 0;
}

static uint64_t calibrate_tsc_khz(void)
{
    uint64_t t0 = vmm_now_ns(), c0 = __rdtsc();
    while (vmm_now_ns() - t0 < 20000000)
        ;
    uint64_t t1 = vmm_now_ns(), c1 = __rdtsc();
    return (c1 - c0) * 1000000 / (t1 - t0);
}

static int create_vcpu(vmm_machine *m, uint32_t i, cpr_error **errp)
{
    struct kvm *k = m->be;
    struct kvm_vcpu *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return cpr_error_set(errp, -ENOMEM, "vCPU %u: out of memory", i);
    kv->fd = -1;
    m->vcpus[i].be = kv;
    kv->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
    if (kv->fd < 0)
        return cpr_error_set_errno(errp, -errno, "vCPU %u: KVM_CREATE_VCPU", i);
    kv->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, kv->fd, 0);
    if (kv->run == MAP_FAILED) {
        kv->run = NULL;
        return cpr_error_set_errno(errp, -errno, "vCPU %u: mmap of kvm_run", i);
    }
    /* Each vCPU gets its own APIC ID in leaves 1 and 0xb. */
    for (uint32_t e = 0; e < k->cpuid->nent; e++) {
        struct kvm_cpuid_entry2 *ent = &k->cpuid->entries[e];
        if (ent->function == 1)
            ent->ebx = (ent->ebx & 0x00ffffff) | i << 24;
        if (ent->function == 0xb || ent->function == 0x1f)
            ent->edx = i;
    }
    if (ioctl(kv->fd, KVM_SET_CPUID2, k->cpuid) < 0)
        return cpr_error_set_errno(errp, -errno, "vCPU %u: KVM_SET_CPUID2", i);
    if (i == 0) {
        int khz = ioctl(kv->fd, KVM_GET_TSC_KHZ, 0);
        m->ticks_per_ms = khz > 0 ? (uint64_t)khz : calibrate_tsc_khz();
        m->clock = VMM_CLOCK_TSC;
    }
    return 0;
}

static void kvm_fini(vmm_machine *m)
{
    struct kvm *k = m->be;
    if (!k)
        return;
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++) {
        struct kvm_vcpu *kv = vcpu_be(m, i);
        if (!kv)
            continue;
        if (kv->run)
            munmap(kv->run, k->run_size);
        if (kv->fd >= 0)
            close(kv->fd);
        free(kv);
        m->vcpus[i].be = NULL;
    }
    if (k->sys)
        munmap(k->sys, k->sys_size);
    if (k->vm_fd >= 0)
        close(k->vm_fd);
    if (k->kvm_fd >= 0)
        close(k->kvm_fd);
    free(k->cpuid);
    free(k->dirty_buf);
    free(k);
    m->be = NULL;
}

static int kvm_init_vm(vmm_machine *m, struct kvm *k, cpr_error **errp)
{
    k->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (k->kvm_fd < 0)
        return cpr_error_set_errno(errp, -errno, "/dev/kvm");
    if (ioctl(k->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        return cpr_error_set(errp, -ENOTSUP, "/dev/kvm: unexpected API version");
    int sz = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        return cpr_error_set_errno(errp, -errno, "KVM_GET_VCPU_MMAP_SIZE");
    k->run_size = (size_t)sz;
    k->has_xsave = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
    k->has_xcrs = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    int sync = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    if (sync > 0 && (sync & KVM_SYNC_X86_VALID_FIELDS) == KVM_SYNC_X86_VALID_FIELDS)
        k->sync_mask = KVM_SYNC_X86_VALID_FIELDS;
    int rc = get_cpuid(k, errp);
    if (rc == 0)
        rc = get_msr_list(k, errp);
    if (rc < 0)
        return rc;
    k->vm_fd = ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
    if (k->vm_fd < 0)
        return cpr_error_set_errno(errp, -errno, "KVM_CREATE_VM");
    /* The system slot sits on the first GiB boundary at or above the end of RAM. */
    k->sys_base = (m->cfg.ram_size + (1ull << 30) - 1) & ~((1ull << 30) - 1);
    uint64_t gibs = k->sys_base / (1ull << 30) + 1;
    k->sys_size = (SYS_PD + gibs * 4096 + (2u << 20) - 1) & ~(uint64_t)((2u << 20) - 1);
    k->sys = mmap(NULL, k->sys_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (k->sys == MAP_FAILED) {
        k->sys = NULL;
        return cpr_error_set_errno(errp, -errno, "KVM: system slot of %llu bytes",
                                   (unsigned long long)k->sys_size);
    }
    build_system(m);
    rc = set_ram_slot(m, 0);
    if (rc < 0)
        return cpr_error_set_errno(errp, rc, "KVM_SET_USER_MEMORY_REGION: RAM of %llu bytes at %p",
                                   (unsigned long long)m->cfg.ram_size, m->cfg.ram);
    struct kvm_userspace_memory_region r = {
        .slot = 1, .guest_phys_addr = k->sys_base, .memory_size = k->sys_size,
        .userspace_addr = (uintptr_t)k->sys,
    };
    if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return cpr_error_set_errno(errp, -errno, "KVM_SET_USER_MEMORY_REGION: system slot at 0x%llx",
                                   (unsigned long long)k->sys_base);
    return 0;
}

static int kvm_init(vmm_machine *m, cpr_error **errp)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct kvm *k = calloc(1, sizeof(*k));
    if (!k)
        return cpr_error_set(errp, -ENOMEM, "KVM: out of memory");
    k->kvm_fd = k->vm_fd = -1;
    m->be = k;
    pthread_once(&once, install_kick_handler);
    int rc = kvm_init_vm(m, k, errp);
    for (uint32_t i = 0; rc == 0 && i < m->cfg.nvcpus; i++)
        rc = create_vcpu(m, i, errp);
    if (rc < 0)
        kvm_fini(m);
    return rc;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t dpl, int code)
{
    *s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
                               .present = 1, .dpl = dpl, .db = !code, .s = 1, .l = (uint8_t)code,
                               .g = 1 };
}

/* Long mode, paging, CPL 3, this vCPU's TSS: the state of vCPU i about to run the guest code
 * `entry` bytes into it. */
static int set_boot_regs(vmm_machine *m, uint32_t i, uint64_t entry, uint64_t rdi)
{
    struct kvm *k = m->be;
    struct kvm_vcpu *kv = vcpu_be(m, i);
    struct kvm_sregs sr;
    kv->run->kvm_dirty_regs = 0;
    kv->sync_fresh = 0;
    if (ioctl(kv->fd, KVM_GET_SREGS, &sr) < 0)
        return -errno;
    seg(&sr.cs, SEL_UCODE, 0xb, 3, 1);
    seg(&sr.ss, SEL_UDATA, 0x3, 3, 0);
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss;
    sr.tr = (struct kvm_segment){ .base = k->sys_base + SYS_TSS + i * TSS_STRIDE,
                                  .limit = TSS_LIMIT, .selector = (uint16_t)(SEL_TSS0 + 16 * i),
                                  .type = 0xb, .present = 1 };
    sr.ldt = (struct kvm_segment){ .type = 0x2, .present = 1, .unusable = 1 };
    sr.gdt.base = k->sys_base + SYS_GDT;
    sr.gdt.limit = SEL_TSS0 + 16 * VMM_MAX_VCPUS - 1;
    sr.idt.base = 0;
    sr.idt.limit = 0; /* any exception is a triple fault: KVM_EXIT_SHUTDOWN, reported */
    sr.cr0 = 0x80050033; /* PG WP NE ET MP PE */
    sr.cr3 = k->sys_base + SYS_PML4;
    sr.cr4 = 0x620;      /* OSXMMEXCPT OSFXSR PAE */
    sr.efer = 0x500;     /* LMA LME */
    if (ioctl(kv->fd, KVM_SET_SREGS, &sr) < 0)
        return -errno;
    struct kvm_regs r = { .rip = k->sys_base + SYS_CODE + entry,
                          .rdi = rdi, .rflags = 0x2 };
    return ioctl(kv->fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

static int kvm_boot(vmm_machine *m, cpr_error **errp)
{
    const struct guest_code *g = guest_code_of(m->cfg.mailbox_version);
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++) {
        int rc = set_boot_regs(m, i, (uint64_t)(g->boot - g->start), MB_SLOT0 + (uint64_t)i * MB_SLOT_SIZE);
        if (rc < 0)
            return cpr_error_set_errno(errp, rc, "vCPU %u: setting the boot registers", i);
    }
    return 0;
}

/* The guest code of mailbox `version` into the system slot (the vCPUs are parked): a guest
 * restored from another release runs on in the code its registers point into. */
static void kvm_guest_code(vmm_machine *m, uint32_t version)
{
    struct kvm *k = m->be;
    const struct guest_code *g = guest_code_of(version);
    memset(k->sys + SYS_CODE, 0, SYS_PML4 - SYS_CODE);
    memcpy(k->sys + SYS_CODE, g->start, (size_t)(g->end - g->start));
}

static int vcpu_fail(struct vmm_vcpu *v, const char *fmt, ...) CPR_PRINTF(2, 3);
static int vcpu_fail(struct vmm_vcpu *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->err, sizeof(v->err), fmt, ap);
    va_end(ap);
    return -EIO;
}

/* Handles one exit; 0 to go on, <0 when the vCPU cannot go on. */
static int handle_exit(struct vmm_vcpu *v, struct kvm_vcpu *kv)
{
    struct kvm_run *run = kv->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        if (run->io.direction == KVM_EXIT_IO_OUT &&
            (run->io.port == VMM_PORT_HEARTBEAT || run->io.port == VMM_PORT_CORRUPT ||
             run->io.port == VMM_PORT_WARMUP)) {
            uint32_t val;
            memcpy(&val, (uint8_t *)run + run->io.data_offset, sizeof(val));
            if (run->io.port == VMM_PORT_HEARTBEAT)
                __atomic_fetch_add(&v->io_reports, 1, __ATOMIC_RELAXED);
            else if (run->io.port == VMM_PORT_CORRUPT)
                __atomic_store_n(&v->io_corruptions, val, __ATOMIC_RELAXED);
            return 0;
        }
        return vcpu_fail(v, "unexpected I/O to port 0x%x (direction %u)", run->io.port,
                         run->io.direction);
    case KVM_EXIT_INTR:
        return 0;
    case KVM_EXIT_SHUTDOWN: {
        struct kvm_regs r = { 0 };
        ioctl(kv->fd, KVM_GET_REGS, &r);
        return vcpu_fail(v, "triple fault (KVM_EXIT_SHUTDOWN) at rip 0x%llx rsp 0x%llx",
                         (unsigned long long)r.rip, (unsigned long long)r.rsp);
    }
    case KVM_EXIT_FAIL_ENTRY:
        return vcpu_fail(v, "entry failed, hardware reason 0x%llx",
                         (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
    case KVM_EXIT_INTERNAL_ERROR:
        return vcpu_fail(v, "KVM internal error, suberror %u", run->internal.suberror);
    default:
        return vcpu_fail(v, "unexpected exit reason %u", run->exit_reason);
    }
}

static int kvm_vcpu_run(struct vmm_vcpu *v)
{
    struct kvm_vcpu *kv = v->be;
    for (;;) {
        int r = ioctl(kv->fd, KVM_RUN, 0);
        kv->sync_fresh = 1; /* KVM stores the synced registers on every return */
        if (r < 0) {
            if (errno != EINTR && errno != EAGAIN)
                return vcpu_fail(v, "KVM_RUN failed: %s%s", strerror(errno),
                                 errno == EINVAL ? " (registers restored through kvm_run refused?)" : "");
            /* With immediate_exit set, this return also completed any pending I/O exit. */
            if (vmm_stop_requested(v->m))
                return 0;
            continue;
        }
        int rc = handle_exit(v, kv);
        if (rc < 0)
            return rc;
    }
}

/*
 * Every vCPU thread takes kicks and has KVM store its registers in kvm_run at each exit. An
 * incoming vCPU also runs the warm-up stub once at CPL 3 -- the first KVM_RUN is slow, and this
 * one happens before the pause -- and completes the exit, so the state that arrives replaces a
 * CPL-3 state (kvm_pvm must not see the privilege level change through SET_SREGS).
 */
static int kvm_vcpu_prologue(struct vmm_vcpu *v)
{
    vmm_machine *m = v->m;
    struct kvm_vcpu *kv = v->be;
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL); /* the VMM may block signals in its threads */
    kv->run->kvm_valid_regs = ((struct kvm *)m->be)->sync_mask;
    if (!(m->cfg.flags & VMM_MACHINE_INCOMING))
        return 0;
    const struct guest_code *g = guest_code_of(m->cfg.mailbox_version); /* build_system's */
    int rc = set_boot_regs(m, v->index, (uint64_t)(g->warmup - g->start), 0);
    if (rc < 0)
        return vcpu_fail(v, "warm-up: setting registers failed: %s", strerror(-rc));
    if (ioctl(kv->fd, KVM_RUN, 0) < 0)
        return vcpu_fail(v, "warm-up: KVM_RUN failed: %s", strerror(errno));
    if (kv->run->exit_reason != KVM_EXIT_IO || kv->run->io.port != VMM_PORT_WARMUP)
        return vcpu_fail(v, "warm-up: exit reason %u port 0x%x", kv->run->exit_reason,
                         kv->run->io.port);
    kv->run->immediate_exit = 1;
    if (ioctl(kv->fd, KVM_RUN, 0) == 0 || (errno != EINTR && errno != EAGAIN))
        return vcpu_fail(v, "warm-up: completing the exit failed: %s", strerror(errno));
    kv->sync_fresh = 1;
    return 0;
}

static void kvm_vcpu_kick(struct vmm_vcpu *v)
{
    struct kvm_vcpu *kv = v->be;
    __atomic_store_n(&kv->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_kill(v->thread, KICK_SIGNAL);
}

static void kvm_vcpu_unkick(struct vmm_vcpu *v)
{
    struct kvm_vcpu *kv = v->be;
    __atomic_store_n(&kv->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

/* ---- state ---- */

#define VCPU_IOCTL(kv, req, arg, what)                                                        \
    do {                                                                                      \
        if (ioctl((kv)->fd, (req), (arg)) < 0)                                                \
            return cpr_error_set_errno(errp, -errno, "vCPU %u: %s", cpu, what);               \
    } while (0)

struct msr_buf {
    struct kvm_msrs hdr;
    struct kvm_msr_entry e[VMM_MAX_MSRS];
};

/*
 * KVM_GET_MSRS / KVM_SET_MSRS stop at the first MSR they cannot handle and return how many they
 * did: go on past it. Returns how many were done in total; *skipped counts the refused ones.
 */
static int msrs_loop(int fd, unsigned long req, struct kvm_msr_entry *e, uint32_t n,
                     struct kvm_msr_entry *done, uint32_t *skipped)
{
    struct msr_buf b;
    uint32_t pos = 0, ndone = 0;
    *skipped = 0;
    while (pos < n) {
        b.hdr = (struct kvm_msrs){ .nmsrs = n - pos };
        memcpy(b.e, e + pos, (n - pos) * sizeof(b.e[0]));
        int r = ioctl(fd, req, &b);
        if (r < 0)
            return -errno;
        memcpy(done + ndone, b.e, (size_t)r * sizeof(b.e[0]));
        ndone += (uint32_t)r;
        pos += (uint32_t)r;
        if (pos < n) {
            pos++;
            (*skipped)++;
        }
    }
    return (int)ndone;
}

static int kvm_get_vcpu(vmm_machine *m, uint32_t cpu, vmm_vcpu_state *st, cpr_error **errp)
{
    struct kvm *k = m->be;
    struct kvm_vcpu *kv = vcpu_be(m, cpu);
    memset(st, 0, sizeof(*st));
    st->version = VMM_VCPU_STATE_VERSION;
    st->size = sizeof(*st);
    st->backend = VMM_ACCEL_KVM;
    st->cpu = cpu;

    if (k->sync_mask && kv->sync_fresh) {
        st->regs = kv->run->s.regs.regs;
        st->sregs = kv->run->s.regs.sregs;
        st->events = kv->run->s.regs.events;
    } else {
        VCPU_IOCTL(kv, KVM_GET_REGS, &st->regs, "KVM_GET_REGS");
        VCPU_IOCTL(kv, KVM_GET_SREGS, &st->sregs, "KVM_GET_SREGS");
        VCPU_IOCTL(kv, KVM_GET_VCPU_EVENTS, &st->events, "KVM_GET_VCPU_EVENTS");
    }
    st->valid |= VMM_VCPU_HAS_REGS | VMM_VCPU_HAS_SREGS | VMM_VCPU_HAS_EVENTS;
    if (k->has_xsave) {
        VCPU_IOCTL(kv, KVM_GET_XSAVE, st->xsave, "KVM_GET_XSAVE");
        st->valid |= VMM_VCPU_HAS_XSAVE;
    } else {
        VCPU_IOCTL(kv, KVM_GET_FPU, &st->fpu, "KVM_GET_FPU");
        st->valid |= VMM_VCPU_HAS_FPU;
    }
    if (k->has_xcrs) {
        VCPU_IOCTL(kv, KVM_GET_XCRS, &st->xcrs, "KVM_GET_XCRS");
        st->valid |= VMM_VCPU_HAS_XCRS;
    }

    struct kvm_msr_entry want[VMM_MAX_MSRS], got[VMM_MAX_MSRS];
    for (uint32_t i = 0; i < k->nmsrs; i++)
        want[i] = (struct kvm_msr_entry){ .index = k->msr_list[i] };
    uint32_t skipped;
    int n = msrs_loop(kv->fd, KVM_GET_MSRS, want, k->nmsrs, got, &skipped);
    if (n < 0)
        return cpr_error_set_errno(errp, n, "vCPU %u: KVM_GET_MSRS", cpu);
    for (int i = 0; i < n; i++) {
        st->msrs[i] = (struct vmm_msr){ .index = got[i].index, .data = got[i].data };
        if (got[i].index == MSR_IA32_TSC)
            st->tsc = got[i].data;
    }
    st->nmsrs = (uint32_t)n;
    st->valid |= VMM_VCPU_HAS_MSRS;

    VCPU_IOCTL(kv, KVM_GET_DEBUGREGS, &st->debugregs, "KVM_GET_DEBUGREGS");
    VCPU_IOCTL(kv, KVM_GET_MP_STATE, &st->mp_state, "KVM_GET_MP_STATE");
    st->valid |= VMM_VCPU_HAS_DEBUGREGS | VMM_VCPU_HAS_MP_STATE;
    return 0;
}

/*
 * With SYNC_REGS, REGS, SREGS and EVENTS go into kvm_run and KVM applies them at the next
 * KVM_RUN (the resume), after the ioctl-set parts below; KVM_RUN fails if it refuses them.
 */
static void set_synced(struct kvm *k, struct kvm_vcpu *kv, const vmm_vcpu_state *st)
{
    const uint32_t all = VMM_VCPU_HAS_REGS | VMM_VCPU_HAS_SREGS | VMM_VCPU_HAS_EVENTS;
    if (!k->sync_mask || (st->valid & all) != all)
        return;
    /* Special registers equal to the vCPU's own (the warmed-up vCPU of an incoming machine has
     * the guest's CR0/CR3/CR4/EFER and segments already) are not set again: setting them makes
     * KVM reset its MMU context, and without EPT the guest then refaults its working set. */
    uint32_t dirty = KVM_SYNC_X86_REGS | KVM_SYNC_X86_EVENTS;
    if (!kv->sync_fresh || memcmp(&kv->run->s.regs.sregs, &st->sregs, sizeof(st->sregs)) != 0) {
        kv->run->s.regs.sregs = st->sregs;
        dirty |= KVM_SYNC_X86_SREGS;
    }
    kv->run->s.regs.regs = st->regs;
    kv->run->s.regs.events = st->events;
    kv->run->s.regs.events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    kv->run->kvm_dirty_regs = dirty;
    kv->sync_fresh = 1;
}

static int kvm_set_vcpu(vmm_machine *m, uint32_t cpu, const vmm_vcpu_state *st, cpr_error **errp)
{
    struct kvm *k = m->be;
    struct kvm_vcpu *kv = vcpu_be(m, cpu);
    vmm_vcpu_state *s = (vmm_vcpu_state *)st; /* the ioctls take non-const pointers */
    const uint32_t synced = VMM_VCPU_HAS_REGS | VMM_VCPU_HAS_SREGS | VMM_VCPU_HAS_EVENTS;
    uint32_t by_ioctl = st->valid;

    if (k->sync_mask && (st->valid & synced) == synced) {
        by_ioctl &= ~synced;
        if (kv->run->kvm_dirty_regs)
            kv->sync_fresh = 0; /* a state set before and not run yet: s.regs is not the vCPU's */
    } else {
        kv->run->kvm_dirty_regs = 0;
        kv->sync_fresh = 0;
    }
    if (by_ioctl & VMM_VCPU_HAS_REGS)
        VCPU_IOCTL(kv, KVM_SET_REGS, &s->regs, "KVM_SET_REGS");
    if (st->valid & VMM_VCPU_HAS_XSAVE)
        VCPU_IOCTL(kv, KVM_SET_XSAVE, s->xsave, "KVM_SET_XSAVE");
    if (st->valid & VMM_VCPU_HAS_FPU)
        VCPU_IOCTL(kv, KVM_SET_FPU, &s->fpu, "KVM_SET_FPU");
    if (st->valid & VMM_VCPU_HAS_XCRS)
        VCPU_IOCTL(kv, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS");
    if (by_ioctl & VMM_VCPU_HAS_SREGS)
        VCPU_IOCTL(kv, KVM_SET_SREGS, &s->sregs, "KVM_SET_SREGS");
    if (st->valid & VMM_VCPU_HAS_MSRS) {
        if (st->nmsrs > VMM_MAX_MSRS)
            return cpr_error_set(errp, -EINVAL, "vCPU %u state: %u MSRs, at most %u", cpu,
                                 st->nmsrs, VMM_MAX_MSRS);
        struct kvm_msr_entry e[VMM_MAX_MSRS], done[VMM_MAX_MSRS];
        for (uint32_t i = 0; i < st->nmsrs; i++)
            e[i] = (struct kvm_msr_entry){ .index = st->msrs[i].index, .data = st->msrs[i].data };
        int n = msrs_loop(kv->fd, KVM_SET_MSRS, e, st->nmsrs, done, &m->msrs_skipped);
        if (n < 0)
            return cpr_error_set_errno(errp, n, "vCPU %u: KVM_SET_MSRS", cpu);
    }
    if (st->valid & VMM_VCPU_HAS_MP_STATE)
        VCPU_IOCTL(kv, KVM_SET_MP_STATE, &s->mp_state, "KVM_SET_MP_STATE");
    if (by_ioctl & VMM_VCPU_HAS_EVENTS) {
        struct kvm_vcpu_events ev = st->events;
        ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
        VCPU_IOCTL(kv, KVM_SET_VCPU_EVENTS, &ev, "KVM_SET_VCPU_EVENTS");
    }
    if (st->valid & VMM_VCPU_HAS_DEBUGREGS)
        VCPU_IOCTL(kv, KVM_SET_DEBUGREGS, &s->debugregs, "KVM_SET_DEBUGREGS");
    if (by_ioctl != st->valid)
        set_synced(k, kv, st);
    return 0;
}

static int kvm_get_vm(vmm_machine *m, vmm_vm_state *st, cpr_error **errp)
{
    struct kvm *k = m->be;
    if (ioctl(k->vm_fd, KVM_GET_CLOCK, &st->clock) < 0)
        return cpr_error_set_errno(errp, -errno, "KVM_GET_CLOCK");
    st->valid |= VMM_VM_HAS_CLOCK;
    return 0;
}

static int kvm_set_vm(vmm_machine *m, const vmm_vm_state *st, cpr_error **errp)
{
    struct kvm *k = m->be;
    if (st->valid & VMM_VM_HAS_CLOCK) {
        struct kvm_clock_data c = { .clock = st->clock.clock };
        if (ioctl(k->vm_fd, KVM_SET_CLOCK, &c) < 0)
            return cpr_error_set_errno(errp, -errno, "KVM_SET_CLOCK");
    }
    return 0;
}

/* ---- dirty logging ---- */

static int kvm_dirty_log(vmm_machine *m, int on, cpr_error **errp)
{
    struct kvm *k = m->be;
    if (on && !k->dirty_buf) {
        k->dirty_words = (m->cfg.ram_size / VMM_PAGE_SIZE + 63) / 64;
        k->dirty_buf = calloc(k->dirty_words, sizeof(uint64_t));
        if (!k->dirty_buf)
            return cpr_error_set(errp, -ENOMEM, "dirty log: out of memory");
    }
    int rc = set_ram_slot(m, on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
    if (rc < 0)
        return cpr_error_set_errno(errp, rc, "KVM_SET_USER_MEMORY_REGION: dirty logging %s",
                                   on ? "on" : "off");
    return 0;
}

static int kvm_dirty_sync(vmm_machine *m, uint64_t *bitmap, size_t nwords, cpr_error **errp)
{
    struct kvm *k = m->be;
    struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = k->dirty_buf };
    if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        return cpr_error_set_errno(errp, -errno, "KVM_GET_DIRTY_LOG");
    return vmm_bitmap_merge(bitmap, k->dirty_buf, k->dirty_words);
}

const struct vmm_backend_ops vmm_kvm_ops = {
    .id = VMM_ACCEL_KVM,
    .name = "kvm",
    .init = kvm_init,
    .fini = kvm_fini,
    .vcpu_prologue = kvm_vcpu_prologue,
    .vcpu_run = kvm_vcpu_run,
    .vcpu_kick = kvm_vcpu_kick,
    .vcpu_unkick = kvm_vcpu_unkick,
    .boot = kvm_boot,
    .guest_code = kvm_guest_code,
    .get_vcpu = kvm_get_vcpu,
    .set_vcpu = kvm_set_vcpu,
    .get_vm = kvm_get_vm,
    .set_vm = kvm_set_vm,
    .dirty_log = kvm_dirty_log,
    .dirty_sync = kvm_dirty_sync,
};
