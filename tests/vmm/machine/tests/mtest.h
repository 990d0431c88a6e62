/* SPDX-License-Identifier: MIT */
/* Helpers shared by the machine tests and their child process. */
#ifndef CPR_VMM_MTEST_H
#define CPR_VMM_MTEST_H

#include <stdint.h>

#include "machine.h"

/* Guest RAM as the VMM has it: a memfd (not close-on-exec, so a child can inherit it) mapped
 * shared and prefaulted. Returns the mapping and the fd; aborts the test on failure. */
void *mtest_ram_new(uint64_t size, int *fd);
/* Maps an existing RAM memfd again (at a new address) and prefaults it. */
void *mtest_ram_map(int fd, uint64_t size);

/* Polls the mailbox until `done(st)` holds or `timeout_ms` passes; returns the last stats read
 * and whether the condition held. */
typedef int (*mtest_cond)(const vmm_guest_stats *st, const void *arg);
int mtest_wait(const void *ram, uint64_t size, mtest_cond done, const void *arg,
               uint32_t timeout_ms, vmm_guest_stats *st);

/* Waits until the guest filled all its pages and then verified each at least once more. */
int mtest_wait_full_verify(const void *ram, uint64_t size, uint32_t timeout_ms, vmm_guest_stats *st);

/* The vmm_machine_child program: $VMM_MACHINE_CHILD, else beside the running program. */
const char *mtest_child_path(void);

/* The heartbeat sampler's poll interval in us: $VMM_SAMPLER_US, default 10. */
uint32_t mtest_sampler_us(void);

/* Everything one process hands the next in a switchover, in one message. */
struct mtest_handoff {
    vmm_hb_handoff hb;
    uint64_t stop_begin_ns;   /* when the old process started to stop the guest */
    uint64_t stopped_ns;      /* ... when every vCPU was parked */
    uint64_t captured_ns;     /* ... when the state was captured */
    vmm_vm_state vm;
    vmm_vcpu_state vcpu[];    /* vm.nvcpus entries */
};

/* What the child reports back. */
struct mtest_result {
    int32_t rc;
    char msg[200];
    uint64_t pause_ns;        /* guest-visible pause from the heartbeats */
    uint64_t host_ns;         /* stop began (old) .. resume returned (new) */
    uint64_t restore_ns;      /* set_*_state in the new process */
    uint64_t stop_ns;         /* old side: stop */
    uint64_t capture_ns;      /* old side: get_*_state */
    uint64_t transfer_ns;     /* captured (old) .. restore starts (new): the message */
    uint64_t hb_before;       /* heartbeat when the old process stopped */
    uint64_t late_polls;      /* the new side's sampler polls that came late (noise) */
    vmm_guest_stats after;    /* after a full verification pass in the new process */
    char backend[16];
};

/*
 * Old side of a switchover: resets the sampler, stops `m` and captures the sampler handoff, the
 * VM and every vCPU into one malloc'd message of *len bytes (the caller frees it).
 */
struct mtest_handoff *mtest_capture(vmm_machine *m, vmm_hb_sampler *s, size_t *len,
                                    cpr_error **errp);

/*
 * New side (`ram`: its mapping of guest RAM): applies `h` (sampler handoff, VM and vCPU
 * state), resumes `m`, then waits for the heartbeat to move (r->pause_ns) and for a full
 * verification pass (r->after). Fills every
 * field of *r; on failure r->rc and r->msg say what failed.
 */
int mtest_restore(vmm_machine *m, vmm_hb_sampler *s, const void *ram,
                  const struct mtest_handoff *h, struct mtest_result *r);

#endif
