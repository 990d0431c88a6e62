/* SPDX-License-Identifier: MIT */
/*
 * The guest. Position-independent 64-bit code copied into the system slot; it runs entirely at
 * CPL 3 (kvm_pvm runs ring 3 natively and emulates ring 0), keeps all its state in its mailbox
 * slot (%rbx) so a switchover needs nothing but RAM and registers, and uses no stack.
 * The host assembles it into the library as data: these bytes never execute on the host.
 *
 * Assembled once per mailbox version (guest_abi.h, VMM_GUEST_ABI): a guest keeps running the code
 * it booted with across switchovers, and on KVM its registers point into that code, so a VMM
 * must be able to load the code of every earlier release's guest byte for byte. Version 3 (this
 * file as is) adds the repeated words (compressibility); version 2 (guest_v2.S, release 1.1)
 * adds the pause record (TICK); version 1 (guest_v1.S) is release 1.0's guest.
 */
#include "guest_abi.h"

#ifndef VMM_GUEST_ABI
#define VMM_GUEST_ABI 3
#define GUEST_SYM(name) vmm_guest_##name
#endif

    .section .rodata.vmm_guest, "a"
    .balign 64
    .globl GUEST_SYM(code_start), GUEST_SYM(code_end)
    .globl GUEST_SYM(entry_boot), GUEST_SYM(entry_warmup)
    .code64

/* Steps \reg to the next word of a page. Version 3: the last MB_REPEAT_WORDS words of a page are
 * one value, so a page compresses as much as the host asked. %ecx counts the words left (512 -
 * index): the stride is added after a word only while more than MB_REPEAT_WORDS are left. */
.macro NEXT_WORD reg
#if VMM_GUEST_ABI >= 3
    cmp MB_REPEAT_WORDS, %rcx
    jbe 95f
#endif
    add %r15, \reg
95:
.endm

/* Version 3: a page word is the running value \reg mixed (into %r14; clobbers rsi), so that
 * neither neighbouring words nor neighbouring pages share bytes a compressor could find: at
 * compressibility 0 a page is incompressible. Versions 1 and 2 store the running value. */
.macro MIX reg
    mov \reg, %r14
    mov %r14, %rsi
    shr $33, %rsi
    xor %rsi, %r14
    imul $VMM_MIX_K1, %r14, %r14
    mov %r14, %rsi
    shr $29, %rsi
    xor %rsi, %r14
    imul $VMM_MIX_K2, %r14, %r14
    mov %r14, %rsi
    shr $32, %rsi
    xor %rsi, %r14
.endm

/* Writes data page %rdi (pfn) with generation %rsi. Clobbers rax, rcx, rdi (version 3: and rsi,
 * r14). */
.macro WRITE_PAGE
    mov %rdi, %rax
    shl $32, %rax
    or %rsi, %rax
    shl $12, %rdi
    mov $512, %ecx
91:
#if VMM_GUEST_ABI >= 3
    MIX %rax
    mov %r14, (%rdi)
#else
    mov %rax, (%rdi)
#endif
    NEXT_WORD %rax
    add $8, %rdi
    dec %ecx
    jnz 91b
.endm

/* Checks data page %rdi (pfn) against generation %rsi: %eax = 0 when good. Clobbers rcx, rdx, rdi
 * (version 3: and rsi, r14). */
.macro VERIFY_PAGE
    mov %rdi, %rdx
    shl $32, %rdx
    or %rsi, %rdx
    shl $12, %rdi
    mov $512, %ecx
    xor %eax, %eax
92:
#if VMM_GUEST_ABI >= 3
    MIX %rdx
    cmp %r14, (%rdi)
#else
    cmp %rdx, (%rdi)
#endif
    jne 93f
    NEXT_WORD %rdx
    add $8, %rdi
    dec %ecx
    jnz 92b
    jmp 94f
93:
    mov $1, %eax
94:
.endm

/* One tick of the guest's clock, at the top of every iteration (fill and main loop):
 * %r8 = now (TSC), %r9 = ticks since the previous tick (0 for the first one), and the pause
 * record (struct vmm_guest_gap) keeps the largest such gap since the host zeroed it. Written
 * before the heartbeat moves, so a host that sees the move sees the record (x86 keeps the
 * order of stores). Clobbers rax, rcx, rdx. */
#if VMM_GUEST_ABI >= 2
.macro TICK
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r8
    xor %r9d, %r9d
    cmpq $0, SLOT_LAST_TIME(%rbx)
    je 81f
    mov %rax, %r9
    sub SLOT_LAST_TIME(%rbx), %r9
81:
    mov %r8, SLOT_LAST_TIME(%rbx)
    lea -MB_SLOT0(%rbx), %rcx
    shr $3, %rcx
    add $MB_GAP0, %rcx
    cmp GAP_MAX(%rcx), %r9
    jbe 82f
    mov %r9, GAP_MAX(%rcx)
    mov %r8, GAP_END(%rcx)
82:
.endm
#else
/* Version 1 has no pause record and reads its clock only in the main loop, after the heartbeat
 * moved. */
.macro TICK
.endm
#endif

GUEST_SYM(code_start):

/* An incoming machine runs this once per vCPU before the state arrives, to pay the first
 * KVM_RUN at CPL 3 outside the pause without touching RAM. */
GUEST_SYM(entry_warmup):
    out %al, $VMM_PORT_WARMUP
    jmp GUEST_SYM(entry_warmup)

/* %rdi = this vCPU's mailbox slot. */
GUEST_SYM(entry_boot):
    mov %rdi, %rbx
    movabs $VMM_PAGE_STRIDE_ASM, %r15

fill:
    TICK
    mov SLOT_FILL_IDX(%rbx), %rax
    cmp SLOT_NPAGES(%rbx), %rax
    jae main_loop
    mov SLOT_FIRST_PFN(%rbx), %rdi
    add %rax, %rdi
    mov $1, %esi
    WRITE_PAGE
    incq SLOT_FILL_IDX(%rbx)
    incq SLOT_FILLED(%rbx)
    incq SLOT_HEARTBEAT(%rbx)
    jmp fill

main_loop:
    TICK                                /* r8 = now, r9 = ticks since the last iteration */
    incq SLOT_HEARTBEAT(%rbx)
#if VMM_GUEST_ABI < 2
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, %r8                       /* r8 = now */
    mov %rax, %r9
    sub SLOT_LAST_TIME(%rbx), %r9       /* r9 = ticks since the last iteration */
    mov %r8, SLOT_LAST_TIME(%rbx)
#endif
    mov MB_TICKS_PER_MS, %r10           /* r10 = ticks per ms */
    imul $VMM_CREDIT_CAP_MS, %r10, %r11
    cmp %r11, %r9
    jbe 1f
    mov %r11, %r9                       /* a pause (or a new TSC) earns no burst */
1:
    mov SLOT_RATE(%rbx), %rax
    imul %rax, %r11                     /* r11 = the most credit one may hold: cap x rate */
    imul %r9, %rax
    add SLOT_CREDIT(%rbx), %rax
    cmp %r11, %rax
    jbe 6f
    mov %r11, %rax                      /* no banked bursts, and a new rate applies at once */
6:
    mov %rax, SLOT_CREDIT(%rbx)
    imul $1000, %r10, %r12              /* r12 = ticks per second: the price of one page */
    cmpq $0, SLOT_NPAGES(%rbx)
    je report

rewrite:
    mov SLOT_CREDIT(%rbx), %rax
    cmp %r12, %rax
    jb verify
    sub %r12, %rax
    mov %rax, SLOT_CREDIT(%rbx)
    mov SLOT_FIRST_PFN(%rbx), %rdi
    add SLOT_RW_IDX(%rbx), %rdi
    mov SLOT_RW_GEN(%rbx), %rsi
    WRITE_PAGE
    incq SLOT_REWRITES(%rbx)
    mov SLOT_RW_IDX(%rbx), %rax
    inc %rax
    cmp SLOT_NPAGES(%rbx), %rax
    jb 2f
    xor %eax, %eax
    incq SLOT_RW_GEN(%rbx)
2:
    mov %rax, SLOT_RW_IDX(%rbx)
    jmp rewrite

verify:
    mov SLOT_VF_IDX(%rbx), %rax
    mov SLOT_RW_GEN(%rbx), %rsi
    cmp SLOT_RW_IDX(%rbx), %rax
    jb 3f                               /* rewritten in this pass already */
    dec %rsi
3:
    mov SLOT_FIRST_PFN(%rbx), %rdi
    add %rax, %rdi
    mov %rdi, %r13                      /* r13 = pfn */
    VERIFY_PAGE
    incq SLOT_VERIFIED(%rbx)
    test %eax, %eax
    jz 4f
    incq SLOT_CORRUPT(%rbx)
    inc %r13
    mov %r13, SLOT_BAD_PFN(%rbx)
4:
    mov SLOT_VF_IDX(%rbx), %rax
    inc %rax
    cmp SLOT_NPAGES(%rbx), %rax
    jb 5f
    xor %eax, %eax
5:
    mov %rax, SLOT_VF_IDX(%rbx)

report:
    mov %r8, %rax
    sub SLOT_LAST_REPORT(%rbx), %rax
    imul $VMM_REPORT_MS, %r10, %rcx
    cmp %rcx, %rax
    jb main_loop
    mov %r8, SLOT_LAST_REPORT(%rbx)
    mov SLOT_HEARTBEAT(%rbx), %rax
    out %eax, $VMM_PORT_HEARTBEAT
    mov SLOT_CORRUPT(%rbx), %rax
    out %eax, $VMM_PORT_CORRUPT
    jmp main_loop

GUEST_SYM(code_end):

    .section .note.GNU-stack, "", @progbits
