/* SPDX-License-Identifier: MIT */
/* Private: the cpr channel's framing, for callers that build a cpr state themselves (tests). */
#ifndef CPR_INTERNAL_TRANSFER_H
#define CPR_INTERNAL_TRANSFER_H

#include <glib.h>

#include "internal/cpr_state.h"
#include "internal/scm.h"

/* Sends st with fds (slot i = fds[i]) on sock, framed as the cpr channel frames it. */
int cpr_transfer_send_state(int sock, const cpr_state *st, const GArray *fds, const cpr_io_wait *w,
                            cpr_error **errp);

#endif
