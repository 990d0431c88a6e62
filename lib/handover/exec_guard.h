/* SPDX-License-Identifier: MIT */
/*
 * Private: cpr-exec rollback (docs/cpr-channel.md, "Rollback"). The old image leaves a
 * guardian process behind the exec, holding its own executable, the preserved fds and the
 * state memfd; the new image tells it over the commit socket whether it adopted ('A'), committed
 * ('C': the guardian exits) or gave up ('R'); a new image that dies or gives up before
 * committing is replaced by the previous image, exec'd back with the same state.
 */
#ifndef CPR_HANDOVER_EXEC_GUARD_H
#define CPR_HANDOVER_EXEC_GUARD_H

#include <stddef.h>

#include <cpr/ctx.h>
#include <cpr/error.h>

/* The new image's end of the commit socket. Not part of the cpr state: a libcpr before 1.2
 * ignores it, and the state stays in the format every release reads. */
#define CPR_EXEC_COMMIT_ENV "CPR_EXEC_COMMIT_FD"

#define CPR_EXEC_GUARD_ADOPTING 'A'
#define CPR_EXEC_GUARD_COMMIT 'C'
#define CPR_EXEC_GUARD_ROLLBACK 'R'
/* From the old image, right before execve: its state is complete. Only after it may a closed
 * socket mean a new image that failed; before, the old image itself died (crash, kill) with
 * the guest never given up and its state empty or partial: the guardian stands down. */
#define CPR_EXEC_GUARD_EXECUTING 'X'

typedef struct cpr_exec_guard cpr_exec_guard;

/*
 * Old image, before the exec: starts the guardian, which keeps every fd without close-on-exec
 * and the nkeep fds of keep (those the exec is to keep but that have close-on-exec still: the
 * guardian may start while the guest runs, before the flags are cleared; state_fd must be one
 * of them or have close-on-exec cleared). argv is the cpr-exec command; the
 * rollback runs this process's executable with argv[1..] and envp. state_fd must be a file
 * description whose reads inotify reports (see state_memfd in exec.c). On success *out holds
 * the guardian's handle and cpr_exec_guard_fd() the commit socket end to pass on (close-on-exec
 * still set: clear it for the exec); under valgrind *out is NULL (no guardian) and the fd -1.
 */
int cpr_exec_guard_start(const char *const *argv, char *const *envp, int state_fd,
                         const int *keep, size_t nkeep, cpr_exec_guard **out, cpr_error **errp);
int cpr_exec_guard_fd(const cpr_exec_guard *g);
/* Waits until the guardian has started (reaps the intermediate, which the exec must not
 * inherit): call last before the exec, so that the wait overlaps the rest of the preparation.
 * -EAGAIN when it could not start. */
int cpr_exec_guard_ready(cpr_exec_guard *g, cpr_error **errp);
/* Right before the exec, the state complete: from now on the guardian may roll back. */
void cpr_exec_guard_executing(cpr_exec_guard *g);
/* The exec failed: the guardian is told to exit and the handle is freed. */
void cpr_exec_guard_cancel(cpr_exec_guard *g);

/*
 * New image. cpr_exec_guard_adopting(): takes the commit socket from the environment (removes
 * the variable, sets close-on-exec), says 'A', and keeps it on ctx; call before reading the
 * state. Returns 1 when armed, 0 when there is no guardian (variable absent, or nobody reads
 * the socket any more).
 * cpr_exec_guard_drop(): an adopter without the protocol (cpr_exec_state_adopt): closes the
 * socket, after the state was read, so the guardian stands down.
 * cpr_exec_commit(): the commit point; the guardian exits. cpr_exec_abandon(): the load failed;
 * the guardian ends this image and rolls back. Both are no-ops without a guardian.
 */
/* cpr_exec_state_adopt(), speaking the protocol when guarded (exec.c). */
int cpr_exec_state_adopt_guarded(cpr_ctx *ctx, int guarded, cpr_error **errp);
int cpr_exec_guard_adopting(cpr_ctx *ctx);
void cpr_exec_guard_drop(void);
void cpr_exec_commit(cpr_ctx *ctx);
void cpr_exec_abandon(cpr_ctx *ctx);

#endif
