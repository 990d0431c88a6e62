/* SPDX-License-Identifier: MIT */
/*
 * Lazy (instant) restore: the guest starts before its RAM is read. Since: 1.2.
 *
 * Set the migration parameter `memory-restore-mode` (Cloud Hypervisor's memory_restore_mode)
 * on the incoming side before cpr_incoming_start():
 *   copy      (default) the load reads every page into guest RAM before the guest runs;
 *   ondemand  for a mapped-ram file (capability mapped-ram on the saving side): the load reads
 *             the device state only; guest RAM is registered with userfaultfd and each page is
 *             read from the file when first touched, while a library thread reads the rest in
 *             order. Every chunk's CRC32C is verified before any byte of it reaches guest RAM.
 *   mapped    (Firecracker's File memory backend) for a mapped-ram file whose regions lie on
 *             page boundaries, into blocks of the system page size: once every chunk's CRC32C
 *             is verified (multifd-channels threads read the file's page cache, the pages the
 *             mapping will show), each block's memory is replaced, at the same address, by a
 *             private (MAP_PRIVATE, copy-on-write) mapping of its region of the file:
 *             restores of the same file share those pages, and only the pages the guest
 *             writes cost memory of their own. Pages absent from the file's bitmap read as
 *             zero. The guest never writes the file. The file is verified at that check only,
 *             never again: it must stay read-only while mapped (below). A cancel
 *             (cpr_migrate_cancel()) during the check stops it within about a MiB of reading
 *             (-ECANCELED), nothing mapped. What the mapping changes for the VMM:
 *             the block has no fd and is not shared any more (cpr_ram_block_fd() is -1; a
 *             memfd the library created is emptied once the load commits, a file the VMM named
 *             (cpr_ram_block_new_file()) keeps its contents; either stays open until the block
 *             is freed); the kernel drops the madvise(2) advice the VMM gave the range
 *             (MADV_HUGEPAGE, MADV_DONTDUMP, MADV_MERGEABLE, ...), which the library does not
 *             know: give it again in the prepare hook (cpr_vm_ops.prepare, cpr/migrate.h),
 *             which runs after the mapping and before the guest does (after cpr_savevm_load():
 *             once it returns); and a blocker naming the
 *             block and the file refuses cpr-transfer and cpr-exec, which would hand that fd
 *             over as the guest's RAM, until the block is freed. Normal migration, snapshots
 *             and cpr-reboot read RAM through the pointer and still work (x-ignore-shared does
 *             not skip the block). The file must not change while the guest runs on it: a page
 *             the guest has not written yet still reads the file, so a later write to it
 *             reaches the guest unverified, and a truncation makes the pages past the new end
 *             fault with SIGBUS (a KVM vCPU: EFAULT); a change while the chunks are verified is
 *             refused (-EBUSY). Keep it read-only (permissions, a read-only mount).
 *             Refused before anything runs (the incoming job fails; nothing is mapped yet, and a
 *             failure after the mapping, before the commit, gives the blocks their own memory
 *             back: a memfd or file as it was, private memory zeroed): a file that is not
 *             mapped-ram, a region not on a page boundary, a page size other than the
 *             system's, a block re-attached from a preserved fd, a block an earlier mapped
 *             restore mapped (-EBUSY naming the block and its file: a block is mapped once;
 *             free and re-create it to restore into it again), a region cut short, a chunk
 *             whose checksum fails (-EBADMSG naming the block and the chunk), a file mmap(2)
 *             refuses (its errno, naming the file). A failure never touches another
 *             restore's mapped blocks.
 *             cpr_lazy_restore_query() and the event callback do not report a mapped restore:
 *             it is complete when the load returns.
 * For ondemand the blocks must be new memory, as a restarted VMM has (a new memfd or an
 * anonymous mapping); pages it holds already (the VMM read or wrote them before the load) are
 * dropped once the block is registered, since the load replaces them. A block re-attached from
 * a preserved fd is refused.
 *
 * What can fail with ondemand, and when:
 *  - before the guest runs (a file that is not mapped-ram, a region missing or cut short, no
 *    userfaultfd on this host: "userfaultfd unavailable ...", needing root or read-write
 *    /dev/userfaultfd, or vm.unprivileged_userfaultfd=1): the incoming job fails as any load
 *    does, the guest never runs, the run state stays inmigrate;
 *  - after the guest started (a read error, a checksum mismatch, a file truncated meanwhile):
 *    the pages of that run never appear. A vCPU (or any thread, or the kernel on its behalf)
 *    touching one stays blocked in the fault: the guest never runs on a zero or a wrong page.
 *    The VMM hears it through the event callback and sees it in cpr_lazy_restore_query(),
 *    with a message naming the RAM block, the pages and the chunk. Its choices: stop the
 *    guest and exit; the pages that never arrived are made inaccessible when the context is
 *    freed, so a blocked thread then faults (SIGSEGV, EFAULT for a kernel access) rather than
 *    read a zero page.
 * Until every page is resident every outgoing migration is blocked (a blocker names the lazy
 * restore), since another process could map RAM that is not there yet.
 *
 * Thread safety: the query and the callback setter may be called from any thread.
 */
#ifndef CPR_LAZY_RESTORE_H
#define CPR_LAZY_RESTORE_H

#include <stdint.h>

#include <cpr/common.h>
#include <cpr/error.h>

CPR_BEGIN_DECLS

/* Progress of the context's lazy restore. Size-first: set size (cpr_lazy_restore_info_init). */
typedef struct cpr_lazy_restore_info {
    uint32_t size;
    int32_t active;           /* 1 once a lazy restore started on this context (stays 1) */
    int32_t error;            /* 0, or the negative errno of the first failure; -ECANCELED when the
                               * incoming job failed before the guest ran (the restore ended there) */
    int32_t reserved;
    uint64_t pages_total;     /* pages of all blocks, in each block's page size */
    uint64_t pages_resident;  /* placed so far */
    uint64_t fault_pages;     /* of which placed because something touched them */
    int64_t serve_start_us;   /* CLOCK_MONOTONIC, microseconds: pages began to be served */
    int64_t complete_us;      /* the last page arrived; 0 before */
} cpr_lazy_restore_info;

/* Sets info->size to sizeof(cpr_lazy_restore_info), the rest to 0. NULL is ignored. */
CPR_API void cpr_lazy_restore_info_init(cpr_lazy_restore_info *info);

/*
 * Fills *info (what fits in info->size). With a failure (info->error != 0) and errp, *errp
 * receives its message. Returns 0; -EINVAL for a NULL argument or a size of 0.
 */
CPR_API int cpr_lazy_restore_query(cpr_ctx *ctx, cpr_lazy_restore_info *info, cpr_error **errp);

/*
 * Called once when every page is resident (code 0) and once on the first failure (code < 0,
 * message naming block and pages; -ECANCELED when the incoming job failed before the guest
 * ran), on a library thread; it must not free the context. message is valid during the call
 * only. fn NULL removes it; a call already under way may still finish after that. Returns 0,
 * -EINVAL for a NULL ctx.
 */
typedef void (*cpr_lazy_restore_fn)(void *opaque, int code, const char *message);
CPR_API int cpr_lazy_restore_set_event_cb(cpr_ctx *ctx, cpr_lazy_restore_fn fn, void *opaque);

CPR_END_DECLS

#endif
