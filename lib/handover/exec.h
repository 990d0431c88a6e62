/* SPDX-License-Identifier: MIT */
/*
 * Private: cpr-exec in two halves, so that what does not depend on the stopped guest happens
 * while it still runs. cpr_exec_prepare() (guest running): the state memfd, still empty, and
 * the rollback guardian, started and ready. cpr_exec_prepared() (guest stopped): the cpr
 * state collected into the memfd, close-on-exec cleared, the exec. cpr_exec() is both in turn.
 */
#ifndef CPR_HANDOVER_EXEC_H
#define CPR_HANDOVER_EXEC_H

#include <cpr/exec.h>

typedef struct cpr_exec_prep cpr_exec_prep;

int cpr_exec_prepare(cpr_ctx *ctx, const char *const *argv, cpr_exec_prep **out, cpr_error **errp);
/* cpr_exec_prepare() of a cpr-exec-command string (parsed as cpr_exec_command() does). */
int cpr_exec_command_prepare(cpr_ctx *ctx, const char *command, cpr_exec_prep **out, cpr_error **errp);
/* Returns only when it failed (the exec included), having freed p, every fd flag restored and
 * the guardian dismissed: the guest may resume. If the preserved fds changed since the
 * guardian started, a new guardian takes them first (slower, as safe). */
int cpr_exec_prepared(cpr_ctx *ctx, cpr_exec_prep *p, cpr_error **errp);
/* Drops a prepared cpr-exec that will not exec (the save failed): dismisses the guardian. */
void cpr_exec_prep_free(cpr_exec_prep *p);

#endif
