/* SPDX-License-Identifier: MIT */
/*
 * Deferred teardown: take the cost of unmapping guest RAM off the guest's pause.
 *
 * When a process that has touched its guest RAM execs (cpr-exec) or exits (cpr-reboot, then a
 * restart), the kernel unmaps every page of it before exec returns or the exit completes: on
 * these machines about 80 ms per GiB of 4 KiB pages, and KVM frees its shadow page tables with
 * them. The guest is stopped meanwhile, so that time is guest-visible pause that grows with RAM.
 *
 * cpr_teardown_defer() starts a helper process that shares the address space (clone with
 * CLONE_VM, not a thread of this process) and holds it while this process execs or exits. The
 * exec or exit then only drops a reference and returns at once; the helper sees it through a
 * close-on-exec pipe, exits, and the unmapping happens in the helper, on another CPU, while the
 * new image restores and runs the guest. The helper is reparented to init (or the nearest
 * subreaper), so neither this process nor its new image is left with a child to reap.
 *
 * What the helper keeps: the address space, and its own copy of the fds that were open when it
 * started, minus every fd whose closing another process could observe. It closes sockets,
 * pipes, FIFOs, terminals and other devices, files and directories at once (a peer sees the
 * hang-up when this process closes its copy, a file lock is released as usual), and keeps only
 * anonymous-inode fds (a KVM VM and its vCPUs, eventfds, timerfds), whose last close frees
 * kernel objects nobody else can reach: freeing them in the helper is the point.
 *
 * cpr_exec() calls this itself; a VMM calls it before exit() when the next process picks the
 * same RAM up (cpr-reboot to shared memory, then a restart): as early as it knows it will quit,
 * so that starting the helper is not on the way to the next process either.
 */
#ifndef CPR_TEARDOWN_H
#define CPR_TEARDOWN_H

#include <stdint.h>

#include <cpr/common.h>

CPR_BEGIN_DECLS

/*
 * Starts the helper and returns once it holds the address space; ctx records it (flags must be
 * 0). From then on, freeing a RAM block or the context leaves guest RAM mapped, for the exec or
 * exit to unmap in the helper; freeing the context does not release the helper.
 * Call it from the thread that will exec or exit, once guest RAM is mapped; it costs nothing
 * while it waits, so it may come before the guest stops (cpr-exec calls it at the migration's
 * start since 1.2). The helper shares the address space, so what is mapped later is held too;
 * but fds opened after the call are not in its table: their last close (a KVM vCPU created
 * later, say) happens in the exec or exit as usual. If the process neither execs nor exits, call
 * cpr_teardown_cancel(): the helper then exits without unmapping anything.
 * A second call while a helper is held returns 0 and does nothing. Since: 1.1.
 * Errors: -EINVAL (NULL ctx, unknown flags), or the errno of pipe2/clone/mmap when no helper
 * could be started (-EAGAIN, -ENOMEM, -EINVAL), or -ENOSYS under valgrind and in ThreadSanitizer
 * builds, which cannot run such a helper; the process is then unchanged and a following exec or exit tears
 * down the usual way.
 * Thread safety: other threads may run, but must not exec, fork or close fds they did not
 * open meanwhile; not to be called concurrently with itself or cpr_teardown_cancel().
 */
CPR_API int cpr_teardown_defer(cpr_ctx *ctx, uint32_t flags, cpr_error **errp);

/*
 * Releases a helper that cpr_teardown_defer() started, when the exec failed or the process
 * decided not to exit; waits until the helper has gone (a few microseconds). Does nothing
 * when no helper is held. Thread safety: as cpr_teardown_defer(). Since: 1.1.
 */
CPR_API void cpr_teardown_cancel(cpr_ctx *ctx);

CPR_END_DECLS

#endif /* CPR_TEARDOWN_H */
