/* SPDX-License-Identifier: MIT */
/*
 * Private: the migration gate (core/gate.c), which consults blockers and notifiers.
 * cpr_gate_enter() starts a migration in `mode`: -EBUSY when one is already under way, -EPERM
 * listing the blockers of the mode, or the veto of a SETUP notifier (after which every
 * notifier has been sent FAILED). On success the context is "migrating" until
 * cpr_gate_leave(), which sends DONE (ok) or FAILED.
 */
#ifndef CPR_CORE_GATE_H
#define CPR_CORE_GATE_H

#include <cpr/error.h>
#include <cpr/mode.h>

int cpr_gate_enter(cpr_ctx *ctx, cpr_mode mode, cpr_error **errp);
void cpr_gate_leave(cpr_ctx *ctx, int ok);

#endif
