/* SPDX-License-Identifier: MIT */
/* Private: the migration notifiers on the context (core/notify.c). */
#ifndef CPR_CORE_NOTIFY_H
#define CPR_CORE_NOTIFY_H

#include <cpr/notify.h>


/* Sends `event` to notifiers of `mode`. For SETUP it stops at the first veto and returns its
 * code; otherwise returns 0. */
int cpr_notifiers_call(cpr_ctx *ctx, cpr_mode mode, cpr_event event, cpr_error **errp);

#endif
