/* SPDX-License-Identifier: MIT */
/* Private: the cpr channel's framing, for callers that build a cpr state themselves (tests). */
#ifndef CPR_CHANNEL_TRANSFER_H
#define CPR_CHANNEL_TRANSFER_H

#include <glib.h>

#include <cpr/transfer.h>

#include "channel/scm.h"
#include "handover/cpr_state.h"

/* Sends st with fds (slot i = fds[i]) on sock, framed as the cpr channel frames it. */
int cpr_transfer_send_state(int sock, const cpr_state *st, const GArray *fds, const cpr_io_wait *w,
                            cpr_error **errp);

/* cpr_transfer_send, with commit_signal (>= 0: an eventfd, handover/commit_signal.h) sent
 * beside the state's fds and named by its config record. The public call sends none. */
int cpr_transfer_send_signalled(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts, int commit_signal,
                                cpr_error **errp);
/* cpr_transfer_incoming that also takes the commit signal the old process sent: *commit_signal
 * is then the caller's own copy of it (checked to be an eventfd), else -1 (an old process of
 * 1.0 or 1.1 sends none). The public call takes none: the fd is closed like any unnamed one. */
int cpr_transfer_incoming_signalled(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                    int *commit_signal, cpr_error **errp);

/* cpr_transfer_connect and cpr_transfer_listen with the channel's name for messages ("cpr
 * channel", or the main channel's "unix socket"); the main channel's unix: listener is
 * cpr_unix_listen too, so both publish their path only once they listen. */
int cpr_unix_connect(const char *what, const char *path, const cpr_transfer_opts *opts, cpr_error **errp);
/* cpr_unix_connect that, while nothing listens at path (no file, or a stale socket), retries
 * for up to wait_ms (0: one attempt), polling opts' cancel_fd; then fails as the last attempt
 * did (-ENOENT or -ECONNREFUSED). */
int cpr_unix_connect_wait(const char *what, const char *path, const cpr_transfer_opts *opts,
                          uint64_t wait_ms, cpr_error **errp);
int cpr_unix_listen(const char *what, const char *path, int private, cpr_error **errp);

#endif
