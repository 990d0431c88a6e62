/* SPDX-License-Identifier: MIT */
/*
 * Numbers shared by the guest (guest.S) and the host (machine.h, the backends): I/O ports,
 * mailbox offsets and the system slot layout. Plain #defines so the assembler can read them;
 * workload.c checks them against the C structs with static assertions.
 */
#ifndef CPR_VMM_GUEST_ABI_H
#define CPR_VMM_GUEST_ABI_H

/* I/O ports the guest writes from CPL 3 (32-bit OUT). */
#define VMM_PORT_HEARTBEAT 0xe0 /* low 32 bits of the vCPU's heartbeat, every ~5 ms */
#define VMM_PORT_CORRUPT   0xe4 /* low 32 bits of the vCPU's corruption count, right after */
#define VMM_PORT_WARMUP    0xe8 /* the warm-up stub of an incoming machine */

/* Reports are at most this far apart, in milliseconds of the guest's time source. */
#define VMM_REPORT_MS 5
/* A longer gap between two iterations (a pause) earns no more rewrite credit than this. */
#define VMM_CREDIT_CAP_MS 10

/* Mailbox: header fields (absolute guest addresses: the mailbox is guest page 0). */
#define MB_TICKS_PER_MS 24
#define MB_REPEAT_WORDS 48 /* version 3: words at the end of a data page that repeat (0..512) */
#define MB_SLOT0 256
#define MB_SLOT_SIZE 128
/* The guest's own pause record (struct vmm_guest_gap), 16 bytes per vCPU after the slots: the
 * record of the vCPU whose slot is at S is at ((S - MB_SLOT0) >> 3) + MB_GAP0. */
#define MB_GAP0 2304
#define GAP_MAX 0
#define GAP_END 8

/* Offsets in a vCPU slot (struct vmm_guest_cpu). */
#define SLOT_HEARTBEAT   0
#define SLOT_FILLED      8
#define SLOT_VERIFIED    16
#define SLOT_CORRUPT     24
#define SLOT_FIRST_PFN   32
#define SLOT_NPAGES      40
#define SLOT_FILL_IDX    48
#define SLOT_RW_IDX      56
#define SLOT_RW_GEN      64
#define SLOT_VF_IDX      72
#define SLOT_LAST_TIME   80
#define SLOT_CREDIT      88
#define SLOT_LAST_REPORT 96
#define SLOT_BAD_PFN     104
#define SLOT_REWRITES    112
#define SLOT_RATE        120

#define VMM_PAGE_STRIDE_ASM 0x9E3779B97F4A7C15
/* Version 3's word mixer (guest.S MIX, workload.c mix_word): odd, below 2^31 (imul's immediate
 * is sign-extended). */
#define VMM_MIX_K1 0x5bd1e995
#define VMM_MIX_K2 0x4cf5ad43

#endif /* CPR_VMM_GUEST_ABI_H */
