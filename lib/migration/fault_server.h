/* SPDX-License-Identifier: MIT */
/*
 * Private: the userfaultfd fault server, which fills guest RAM on demand while the guest
 * runs. Lazy (instant) restore uses it with a page source that reads a mapped-ram file;
 * postcopy will use it with a source that asks the migration source for pages.
 *
 * The VMM's RAM blocks (host ranges whose pages are all missing: fresh anonymous memory or
 * an empty memfd) are registered with userfaultfd in MISSING mode. Two threads then place
 * pages with UFFDIO_COPY, each page exactly once:
 *   - the fault thread reads fault events and fetches the run of pages around each fault
 *     (fault_run bytes, aligned) from the source;
 *   - the filler walks the pages not yet placed in order, fill_run bytes at a time.
 * One bitmap per block says which pages a thread has claimed (it fetches them) and one which
 * are placed; a page is claimed once, so no page is fetched or placed twice. A fault on a page
 * the filler has claimed waits for the filler's UFFDIO_COPY, which wakes it.
 *
 * The source verifies what it returns (chunk checksums): nothing reaches guest RAM before it
 * is verified. When a fetch fails, the pages of that run stay missing and claimed: a thread
 * touching one stays blocked in the fault, so it never reads a zero or a wrong page; the
 * first error (naming the block and the pages) is kept for cpr_fault_server_status() and
 * given to the event callback. The filler goes on with the other pages.
 *
 * Once every page is placed, the ranges are unregistered (later faults, after a discard by a
 * balloon say, are ordinary again) and the event callback hears code 0 with the time.
 *
 * cpr_fault_server_free() stops both threads. Pages still missing then are made inaccessible
 * (PROT_NONE) before the userfaultfd is closed, which wakes the threads blocked on them: they
 * fault again and get SIGSEGV (a kernel access, EFAULT), never a zero page.
 *
 * Thread safety: new/add_block/start/free from one thread (the owner). status and wait from
 * any thread while the server exists. The source's fetch is called from both server threads
 * concurrently (on different pages) and must be thread-safe; the event callback runs on a
 * server thread and must not free the server.
 */
#ifndef CPR_MIGRATION_FAULT_SERVER_H
#define CPR_MIGRATION_FAULT_SERVER_H

#include <stdint.h>

#include <cpr/error.h>

/* Where pages come from. */
typedef struct cpr_page_source {
    /*
     * Fills dst with `count` pages of the block numbered `block` (in add_block order),
     * starting at page `page` (in units of that block's page size), after verifying them.
     * Returns 0, or a negative errno with *errp naming what failed (the server prefixes the
     * block's name and the pages).
     */
    int (*fetch)(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                 cpr_error **errp);
    void *opaque;
    /* Optional, as fetch, for the fault thread's runs (a thread waits for them): a source
     * that can serve them ahead of the filler's (postcopy) sets it; NULL: fetch. */
    int (*fetch_fault)(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                       cpr_error **errp);
} cpr_page_source;

/* Heard once per event, on a server thread: code 0 = every page resident; < 0 = the first
 * failure (message names the block and pages). It returns before status/wait show the
 * event. */
typedef void (*cpr_fault_event_fn)(void *opaque, int code, const char *message);

typedef struct cpr_fault_server cpr_fault_server;

typedef struct cpr_fault_status {
    uint64_t pages_total;  /* in all blocks, in each block's page size */
    uint64_t pages_placed;
    uint64_t faults;       /* fault events that fetched a run */
    uint64_t fault_pages;  /* pages placed by the fault thread (the rest by the filler) */
    int64_t start_us;      /* g_get_monotonic_time() at cpr_fault_server_start() */
    int64_t done_us;       /* when the last page was placed; 0 before */
    int error;             /* 0, or the first failure's code */
    /* Blocktime: each fault event's stall, from the fault thread's read of it to the copy
     * that placed its page (then woke it); stalls still going, or on a failed run, are not
     * counted. At least 1 us each. */
    uint64_t blocked_us;   /* the sum over ended stalls */
    uint64_t max_stall_us; /* the longest */
    uint64_t stalls;       /* how many ended */
} cpr_fault_status;

/* Default runs: 64 KiB around a fault (latency), 256 KiB per filler step (throughput). */
#define CPR_FAULT_RUN_DEFAULT (64u * 1024)
#define CPR_FILL_RUN_DEFAULT (256u * 1024)

/*
 * Opens a userfaultfd (/dev/userfaultfd, else the userfaultfd(2) system call) with faults
 * from kernel accesses too (a VMM's read(2) into guest RAM). fault_run and fill_run are in
 * bytes (0: the defaults), rounded to whole pages per block. Errors: -ENOSYS/-EPERM/... with
 * a message naming both ways tried and what a host needs (root, or vm.unprivileged_userfaultfd).
 */
int cpr_fault_server_new(const cpr_page_source *source, uint64_t fault_run, uint64_t fill_run,
                         cpr_fault_event_fn event, void *event_opaque, cpr_fault_server **out,
                         cpr_error **errp);

/* 1 when this host lets this process use userfaultfd (what cpr_fault_server_new needs). */
int cpr_fault_server_available(cpr_error **errp);

/*
 * Registers [host, host + size) as block number cpr_fault_server_block_count() - 1; every
 * page in it must be missing (never touched) and stays so until placed. size and host are
 * multiples of page_size. Before start only. Errors naming the block: -EINVAL, the errno of
 * UFFDIO_REGISTER (memory the kernel cannot serve: a private file mapping, say).
 */
int cpr_fault_server_add_block(cpr_fault_server *fs, const char *name, void *host, uint64_t size,
                               uint64_t page_size, cpr_error **errp);

/*
 * Before start: pages [page, page + count) of block `block` are resident already (written by
 * some other way, e.g. postcopy's precopy phase) and must never be fetched; they count as
 * placed. A page marked so must be present, or a fault on it is woken without end. When every
 * page is marked, start completes at once. -EINVAL outside the block, -EBUSY after start.
 */
int cpr_fault_server_mark_placed(cpr_fault_server *fs, unsigned block, uint64_t page,
                                 uint64_t count, cpr_error **errp);

/* Names the user in messages ("lazy restore" by default); label is not copied. Before start. */
void cpr_fault_server_set_label(cpr_fault_server *fs, const char *label);

/* Starts the fault thread and the filler. Errors: thread creation, -EINVAL when no block. */
int cpr_fault_server_start(cpr_fault_server *fs, cpr_error **errp);

/* A snapshot of the progress (any thread). The first error's message, when errp is given. */
void cpr_fault_server_status(cpr_fault_server *fs, cpr_fault_status *st, cpr_error **errp);

/*
 * Waits until every page is placed (0), a fetch failed (its code, *errp its message), or
 * timeout_us passed (-ETIMEDOUT; < 0 waits without bound).
 */
int cpr_fault_server_wait(cpr_fault_server *fs, int64_t timeout_us, cpr_error **errp);

/* Stops the threads and closes the userfaultfd; after a start, pages never placed become
 * PROT_NONE (above); before it, the ranges are only unregistered. NULL is accepted. */
void cpr_fault_server_free(cpr_fault_server *fs);

/* As free, but pages never placed are only unregistered (they then read as the memory has
 * them: zero): for a restore abandoned before its guest ran, whose memory a later load may
 * fill. */
void cpr_fault_server_drop(cpr_fault_server *fs);

#endif
