/* SPDX-License-Identifier: MIT */
/*
 * A small in-process "VM" for the migration tests: a guest thread that keeps a heartbeat and
 * rewrites pages of a RAM block (memfd or file) with a self-checking pattern, marking them
 * dirty as it goes; a device section with the heartbeat; VM hooks; and a log of status
 * changes and notifier events in the order they happened.
 */
#ifndef CPR_MIG_VM_H
#define CPR_MIG_VM_H

#include <stdint.h>

#include <glib.h>

#include <cpr/cpr.h>

#define MIG_VM_RAM_NAME "pc.ram"

struct vm_dev {
    uint64_t heartbeat;
    uint32_t magic;
    uint32_t pad;
};

struct mig_vm {
    cpr_ctx *ctx;
    cpr_ram_block *ram;
    uint8_t *host;
    uint64_t pages;
    uint64_t dirty_span;  /* the guest writes pages [0, dirty_span): the rest stays zero */
    uint64_t rate;        /* pages written per tick (under lock: mig_vm_set_rate()) */
    GThread *thread;
    GMutex lock;
    GCond cond;
    int want_run, is_paused, quit;
    uint64_t next_page;
    struct vm_dev dev;
    int post_loads, stops, starts, flushes;
    int fail_flush;       /* flush hook returns this when negative */
    int die_in_post_load; /* post_load kills the process (a destination that dies before run) */
    int fail_prepare;     /* prepare hook (1.2) returns this when negative */
    void (*on_prepare)(struct mig_vm *vm); /* called by the prepare hook when set */
    int fail_start;       /* start hook returns this when negative */
    int die_in_start;     /* start hook kills the process (a destination that dies after its commit) */
    GString *log;         /* "status:setup status:active notify:setup ..." */
    GMutex log_lock;
    cpr_section *dev_sec;
    cpr_notifier *notifier;
};

/* Flags for mig_vm_new(). */
#define MIG_VM_RUN 0x1u       /* start the guest running */
#define MIG_VM_NO_RAM 0x2u    /* create no RAM block (the test creates it, e.g. after cpr state) */

/*
 * Makes a VM on a new context with `ram_bytes` of RAM: a memfd, or the file ram_path when not
 * NULL (share=on, for cpr-reboot). Returns NULL on failure (printing why).
 */
struct mig_vm *mig_vm_new(uint64_t ram_bytes, const char *ram_path, unsigned int flags);
/* Creates the RAM block now (after cpr state arrived it re-attaches the preserved memfd). */
int mig_vm_add_ram(struct mig_vm *vm, uint64_t ram_bytes, const char *ram_path);
void mig_vm_free(struct mig_vm *vm);

/* Fills every page in the dirty span once, so RAM holds data from the start. */
void mig_vm_fill(struct mig_vm *vm);
/* Number of pages whose contents do not match their pattern (0 when intact). */
uint64_t mig_vm_corrupt_pages(const struct mig_vm *vm);
/* MD5 of all of RAM, as a hex string to g_free(). */
char *mig_vm_ram_digest(const struct mig_vm *vm);
/* The log so far, as a new string to g_free(). */
char *mig_vm_log(struct mig_vm *vm);
void mig_vm_log_clear(struct mig_vm *vm);
/* Whether the guest thread is executing (the hooks' view). */
int mig_vm_running(struct mig_vm *vm);
/* Sets how many pages the guest writes per tick (it may be running). */
void mig_vm_set_rate(struct mig_vm *vm, uint64_t pages_per_tick);
/* Starts the guest as the VMM's `cont` would (the start hook). */
void mig_vm_start(struct mig_vm *vm);

/* Waits (up to 10 s) until a UNIX socket at `path` listens: the file exists from bind() on,
 * but a connect before listen() is refused. Returns 1 when it does. */
int mig_wait_listening(const char *path);

#endif
