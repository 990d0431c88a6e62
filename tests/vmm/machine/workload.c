/* SPDX-License-Identifier: MIT */
/*
 * The guest's page format and mailbox, seen from the host: mailbox setup, statistics, host-side
 * verification, and the software twin of guest.S's loop (the software backend runs it).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>

#include "machine_int.h"

_Static_assert(sizeof(struct vmm_guest_cpu) == MB_SLOT_SIZE, "slot size is ABI with guest.S");
_Static_assert(sizeof(struct vmm_mailbox_header) == MB_SLOT0, "header size is ABI with guest.S");
_Static_assert(sizeof(struct vmm_mailbox) <= VMM_PAGE_SIZE, "the mailbox is one page");
_Static_assert(offsetof(struct vmm_mailbox_header, ticks_per_ms) == MB_TICKS_PER_MS, "abi");
_Static_assert(offsetof(struct vmm_mailbox_header, repeat_words) == MB_REPEAT_WORDS, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, heartbeat) == SLOT_HEARTBEAT, "abi");
_Static_assert(offsetof(struct vmm_mailbox, gap) == MB_GAP0, "abi");
_Static_assert(sizeof(struct vmm_guest_gap) == MB_SLOT_SIZE / 8, "abi: gap address = slot >> 3");
_Static_assert(offsetof(struct vmm_guest_gap, max_gap) == GAP_MAX, "abi");
_Static_assert(offsetof(struct vmm_guest_gap, gap_end) == GAP_END, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, pages_filled) == SLOT_FILLED, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, pages_verified) == SLOT_VERIFIED, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, corruptions) == SLOT_CORRUPT, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, first_pfn) == SLOT_FIRST_PFN, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, npages) == SLOT_NPAGES, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, fill_idx) == SLOT_FILL_IDX, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, rw_idx) == SLOT_RW_IDX, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, rw_gen) == SLOT_RW_GEN, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, vf_idx) == SLOT_VF_IDX, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, last_time) == SLOT_LAST_TIME, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, credit) == SLOT_CREDIT, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, last_report) == SLOT_LAST_REPORT, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, bad_pfn) == SLOT_BAD_PFN, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, rewrites) == SLOT_REWRITES, "abi");
_Static_assert(offsetof(struct vmm_guest_cpu, rate_pps) == SLOT_RATE, "abi");
_Static_assert(VMM_PAGE_STRIDE == VMM_PAGE_STRIDE_ASM, "abi");
_Static_assert(sizeof(((vmm_vcpu_state *)0)->xsave) == sizeof(struct kvm_xsave), "KVM_GET_XSAVE size");
/* States cross processes and versions: a layout change must bump its version (and this). */
_Static_assert(sizeof(vmm_vcpu_state) == 8152 && VMM_VCPU_STATE_VERSION == 1, "vCPU state layout");
_Static_assert(sizeof(vmm_vm_state) == 80 && VMM_VM_STATE_VERSION == 1, "VM state layout");
_Static_assert(sizeof(vmm_hb_handoff) == 264, "heartbeat handoff layout (version 1)");

/* The guest and the host share these words; relaxed atomics keep the compiler honest. */
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

struct vmm_mailbox *vmm_mailbox(void *ram)
{
    return ram;
}

static const struct vmm_mailbox *mailbox_const(const void *ram)
{
    return ram;
}

static uint64_t *page_words(void *ram, uint64_t pfn)
{
    return (uint64_t *)((uint8_t *)ram + pfn * VMM_PAGE_SIZE);
}

/* The page format of the guest in `ram`, from its mailbox: version 3 mixes each word (guest.S's
 * MIX) and makes the last `repeat` words one value (guest.S's NEXT_WORD); older ones do neither. */
struct page_format {
    int mixed;
    uint64_t repeat;
};

static struct page_format page_format(const void *ram)
{
    const struct vmm_mailbox *mb = mailbox_const(ram);
    int v3 = LD(mb->hdr.version) >= 3;
    return (struct page_format){ .mixed = v3, .repeat = v3 ? LD(mb->hdr.repeat_words) : 0 };
}

/* The word stored for running value v. */
static uint64_t word_of(struct page_format f, uint64_t v)
{
    if (!f.mixed)
        return v;
    v ^= v >> 33;
    v *= VMM_MIX_K1;
    v ^= v >> 29;
    v *= VMM_MIX_K2;
    return v ^ v >> 32;
}

/* The running value of word i + 1 from word i's: the stride only while more than `repeat` words
 * (of 512) are left. */
static uint64_t next_value(struct page_format f, uint64_t v, unsigned i)
{
    return VMM_PAGE_SIZE / 8 - i > f.repeat ? v + VMM_PAGE_STRIDE : v;
}

void vmm_guest_write_page(void *ram, uint64_t pfn, uint64_t gen)
{
    uint64_t *w = page_words(ram, pfn);
    uint64_t v = pfn << 32 | gen;
    struct page_format f = page_format(ram);
    for (unsigned i = 0; i < VMM_PAGE_SIZE / 8; v = next_value(f, v, i), i++)
        w[i] = word_of(f, v);
}

static int page_ok(const void *ram, uint64_t pfn, uint64_t gen)
{
    const uint64_t *w = page_words((void *)ram, pfn);
    uint64_t v = pfn << 32 | gen;
    struct page_format f = page_format(ram);
    for (unsigned i = 0; i < VMM_PAGE_SIZE / 8; v = next_value(f, v, i), i++)
        if (w[i] != word_of(f, v))
            return 0;
    return 1;
}

/* The generation page `idx` of a share must hold, given the slot's rewrite cursors. */
static uint64_t expected_gen(uint64_t idx, uint64_t rw_idx, uint64_t rw_gen)
{
    return idx < rw_idx ? rw_gen : rw_gen - 1;
}

void vmm_mailbox_set_rate(void *ram, uint32_t nvcpus, uint64_t rate_pps)
{
    struct vmm_mailbox *mb = vmm_mailbox(ram);
    for (uint32_t i = 0; i < nvcpus; i++)
        ST(mb->cpu[i].rate_pps, rate_pps / nvcpus + (i == 0 ? rate_pps % nvcpus : 0));
}

void vmm_mailbox_init(void *ram, uint64_t ram_size, uint32_t nvcpus, uint64_t rate_pps,
                      uint64_t ticks_per_ms, uint64_t clock, uint32_t version, uint32_t compress_pct)
{
    struct vmm_mailbox *mb = vmm_mailbox(ram);
    uint64_t pages = ram_size / VMM_PAGE_SIZE;
    uint64_t data = pages - 1, first = 1;

    /* Samplers may be watching this page already: word stores, and the magic last. */
    uint64_t *w = ram;
    for (unsigned i = 0; i < VMM_PAGE_SIZE / 8; i++)
        ST(w[i], 0);
    ST(mb->hdr.version, version);
    ST(mb->hdr.nvcpus, nvcpus);
    ST(mb->hdr.ticks_per_ms, ticks_per_ms);
    if (version >= 2)
        ST(mb->hdr.clock, clock); /* reserved, 0, in version 1 */
    if (version >= 3)
        ST(mb->hdr.repeat_words, VMM_PAGE_SIZE / 8 * (uint64_t)compress_pct / 100);
    ST(mb->hdr.ram_pages, pages);
    for (uint32_t i = 0; i < nvcpus; i++) {
        struct vmm_guest_cpu *c = &mb->cpu[i];
        uint64_t n = data / nvcpus + (i < data % nvcpus ? 1 : 0);
        ST(c->first_pfn, first);
        ST(c->npages, n);
        ST(c->rw_gen, 2);
        first += n;
    }
    vmm_mailbox_set_rate(ram, nvcpus, rate_pps);
    __atomic_store_n(&mb->hdr.magic, VMM_MAILBOX_MAGIC, __ATOMIC_RELEASE);
}

static void mark_dirty(uint64_t *dirty, uint64_t pfn)
{
    uint64_t bit = 1ull << (pfn % 64);
    if (dirty && !(LD(dirty[pfn / 64]) & bit))
        __atomic_fetch_or(&dirty[pfn / 64], bit, __ATOMIC_RELAXED);
}

/*
 * Marks a data page the guest has just written. The bitmap pointer is read after the write by a
 * locked read-modify-write (a full barrier), and logging starts with an exchange (another one):
 * so either this sees logging on, or the host's copy of the page, made after it turned logging
 * on, sees the write. Reading the pointer before the write left a window where a page copied by
 * the first pass was then written unlogged (a precopy test caught it).
 */
static void mark_written(uint64_t **dirty, uint64_t pfn)
{
    if (dirty)
        mark_dirty(__atomic_fetch_add(dirty, 0, __ATOMIC_SEQ_CST), pfn);
}

void vmm_guest_step(void *ram, struct vmm_guest_cpu *c, uint64_t ticks_per_ms, uint64_t now,
                    uint64_t **dirty)
{
    uint64_t npages = c->npages, delta = 0;
    struct vmm_mailbox *mb = vmm_mailbox(ram);
    int v1 = LD(mb->hdr.version) < 2;

    /* The mailbox is written in every step: each marks it, so the last one before a stop does. */
    if (dirty)
        mark_dirty(__atomic_load_n(dirty, __ATOMIC_ACQUIRE), 0);
    /* As guest.S's TICK: the clock and the pause record first, then the heartbeat moves (the
     * release keeps that order for a host that sees the move). Version 1 has neither. */
    if (!v1) {
        delta = c->last_time ? now - c->last_time : 0;
        c->last_time = now;
        struct vmm_guest_gap *g = &mb->gap[c - mb->cpu];
        if (delta > LD(g->max_gap)) {
            ST(g->max_gap, delta);
            ST(g->gap_end, now);
        }
    }
    if (c->fill_idx < npages) {
        uint64_t pfn = c->first_pfn + c->fill_idx;
        vmm_guest_write_page(ram, pfn, 1);
        mark_written(dirty, pfn);
        ST(c->fill_idx, c->fill_idx + 1);
        ST(c->pages_filled, c->pages_filled + 1);
        __atomic_store_n(&c->heartbeat, c->heartbeat + 1, __ATOMIC_RELEASE);
        return;
    }
    __atomic_store_n(&c->heartbeat, c->heartbeat + 1, __ATOMIC_RELEASE);
    if (v1) { /* version 1 reads its clock here, in the main loop only */
        delta = now - c->last_time;
        c->last_time = now;
    }

    uint64_t cap = VMM_CREDIT_CAP_MS * ticks_per_ms;

    if (delta > cap)
        delta = cap;
    uint64_t rate = LD(c->rate_pps), credit = c->credit + delta * rate;
    c->credit = credit > cap * rate ? cap * rate : credit; /* as guest.S: no banked bursts */
    if (npages == 0)
        return;
    uint64_t price = ticks_per_ms * 1000;
    while (c->credit >= price) {
        c->credit -= price;
        uint64_t pfn = c->first_pfn + c->rw_idx;
        vmm_guest_write_page(ram, pfn, c->rw_gen);
        mark_written(dirty, pfn);
        ST(c->rewrites, c->rewrites + 1);
        if (c->rw_idx + 1 < npages) {
            ST(c->rw_idx, c->rw_idx + 1);
        } else {
            ST(c->rw_idx, 0);
            ST(c->rw_gen, c->rw_gen + 1);
        }
    }

    uint64_t idx = c->vf_idx, pfn = c->first_pfn + idx;
    if (!page_ok(ram, pfn, expected_gen(idx, c->rw_idx, c->rw_gen))) {
        ST(c->corruptions, c->corruptions + 1);
        ST(c->bad_pfn, pfn + 1);
    }
    ST(c->pages_verified, c->pages_verified + 1);
    ST(c->vf_idx, idx + 1 < npages ? idx + 1 : 0);
}

static int mailbox_valid(const void *ram, uint64_t ram_size)
{
    const struct vmm_mailbox *mb = mailbox_const(ram);
    return ram && ram_size >= 2 * VMM_PAGE_SIZE &&
           __atomic_load_n(&mb->hdr.magic, __ATOMIC_ACQUIRE) == VMM_MAILBOX_MAGIC &&
           LD(mb->hdr.nvcpus) >= 1 && LD(mb->hdr.nvcpus) <= VMM_MAX_VCPUS &&
           LD(mb->hdr.ram_pages) == ram_size / VMM_PAGE_SIZE;
}

int vmm_mailbox_check(const void *ram, uint64_t ram_size, uint32_t nvcpus, uint32_t want, char *why,
                      size_t len)
{
    const struct vmm_mailbox *mb = mailbox_const(ram);
    uint64_t pages = ram_size / VMM_PAGE_SIZE, version = LD(mb->hdr.version);
    if (LD(mb->hdr.magic) != VMM_MAILBOX_MAGIC) {
        snprintf(why, len, "no guest mailbox in page 0 (magic 0x%llx version %llu)",
                 (unsigned long long)LD(mb->hdr.magic), (unsigned long long)version);
        return -EINVAL;
    }
    if (version < VMM_MAILBOX_VERSION_MIN || version > VMM_MAILBOX_VERSION) {
        snprintf(why, len, "guest mailbox version %llu is unknown here (this VMM runs versions %u to %u)",
                 (unsigned long long)version, VMM_MAILBOX_VERSION_MIN, VMM_MAILBOX_VERSION);
        return -EINVAL;
    }
    if (want && version != want) {
        snprintf(why, len, "the guest runs mailbox version %llu, this machine was configured for "
                 "version %u", (unsigned long long)version, want);
        return -EINVAL;
    }
    if (page_format(ram).repeat > VMM_PAGE_SIZE / 8) {
        snprintf(why, len, "guest mailbox: %llu repeated words in a page of %u",
                 (unsigned long long)page_format(ram).repeat, VMM_PAGE_SIZE / 8);
        return -EINVAL;
    }
    if (LD(mb->hdr.nvcpus) != nvcpus || LD(mb->hdr.ram_pages) != pages || !LD(mb->hdr.ticks_per_ms)) {
        snprintf(why, len, "guest mailbox is for %llu vCPUs and %llu pages, machine has %u and %llu",
                 (unsigned long long)LD(mb->hdr.nvcpus), (unsigned long long)LD(mb->hdr.ram_pages),
                 nvcpus, (unsigned long long)pages);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < nvcpus; i++) {
        const struct vmm_guest_cpu *c = &mb->cpu[i];
        uint64_t first = LD(c->first_pfn), n = LD(c->npages);
        if (first < 1 || first > pages || n > pages - first || LD(c->fill_idx) > n ||
            LD(c->rw_idx) >= (n ? n : 1) || LD(c->vf_idx) >= (n ? n : 1) || LD(c->rw_gen) < 2) {
            snprintf(why, len, "guest mailbox slot %u is inconsistent (pages %llu+%llu, cursors "
                     "%llu/%llu/%llu, generation %llu)", i, (unsigned long long)first,
                     (unsigned long long)n, (unsigned long long)LD(c->fill_idx),
                     (unsigned long long)LD(c->rw_idx), (unsigned long long)LD(c->vf_idx),
                     (unsigned long long)LD(c->rw_gen));
            return -EINVAL;
        }
    }
    return (int)version;
}

int vmm_guest_read_stats(const void *ram, uint64_t ram_size, vmm_guest_stats *st)
{
    if (!st || st->size < sizeof(*st) || !mailbox_valid(ram, ram_size))
        return -EINVAL;
    const struct vmm_mailbox *mb = mailbox_const(ram);
    uint32_t n = (uint32_t)LD(mb->hdr.nvcpus);
    vmm_guest_stats s = { .size = sizeof(s), .nvcpus = n };
    s.pages_total = ram_size / VMM_PAGE_SIZE - 1;
    for (uint32_t i = 0; i < n; i++) {
        const struct vmm_guest_cpu *c = &mb->cpu[i];
        s.heartbeat += LD(c->heartbeat);
        s.pages_filled += LD(c->pages_filled);
        s.pages_verified += LD(c->pages_verified);
        s.corruptions += LD(c->corruptions);
        s.rewrites += LD(c->rewrites);
        if (LD(c->bad_pfn))
            s.bad_pfn = LD(c->bad_pfn);
        /* Verification sweeps each share cyclically from index 0 after the fill. */
        uint64_t share = LD(c->npages), passes = share ? LD(c->pages_verified) / share : UINT64_MAX;
        if (i == 0 || passes < s.verify_passes)
            s.verify_passes = passes;
    }
    *st = s;
    return 0;
}

int64_t vmm_guest_verify_ram(const void *ram, uint64_t ram_size, uint64_t *first_bad)
{
    if (!mailbox_valid(ram, ram_size))
        return -EINVAL;
    const struct vmm_mailbox *mb = mailbox_const(ram);
    int64_t bad = 0;
    uint64_t first = UINT64_MAX;
    for (uint32_t i = 0; i < LD(mb->hdr.nvcpus); i++) {
        const struct vmm_guest_cpu *c = &mb->cpu[i];
        uint64_t rw_idx = LD(c->rw_idx), rw_gen = LD(c->rw_gen);
        /* Only pages the boot fill reached are defined; the page at rw_idx may be mid-rewrite. */
        for (uint64_t idx = 0; idx < LD(c->fill_idx); idx++) {
            if (idx == rw_idx)
                continue;
            if (!page_ok(ram, c->first_pfn + idx, expected_gen(idx, rw_idx, rw_gen))) {
                if (first == UINT64_MAX)
                    first = c->first_pfn + idx;
                bad++;
            }
        }
    }
    if (first_bad)
        *first_bad = first;
    return bad;
}
