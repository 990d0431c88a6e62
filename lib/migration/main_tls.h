/* SPDX-License-Identifier: MIT */
/* Private: TLS on the main channel (lib/migration/main_tls.c); docs/migration.md, "TLS". */
#ifndef CPR_MIGRATION_MAIN_TLS_H
#define CPR_MIGRATION_MAIN_TLS_H

#include <sys/types.h>

#include "migration/main_channel.h"

/*
 * Before a job starts, with "tls-creds" set: refuses a mode other than normal and a main
 * channel other than tcp or unix (saying why), and credentials that do not exist or are for
 * the other endpoint. 0 when tls-creds is unset.
 */
int cpr_main_tls_check(const cpr_job *job, const cpr_channels *channels, cpr_error **errp);
/* The handshake on a connected (outgoing) or accepted main channel; the stream then runs
 * through the session (c->tls). `a` gives an outgoing tcp channel's host for the name check. */
int cpr_main_tls_start(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp);
/* The acknowledgement's bytes, through the session when there is one: as recv(2)/send(2). */
ssize_t cpr_main_chan_recv(struct cpr_main_chan *c, void *buf, size_t len);
ssize_t cpr_main_chan_send(struct cpr_main_chan *c, const void *buf, size_t len, int flags);
/* Ends this side's half: close_notify on a session, then shutdown(SHUT_WR). */
void cpr_main_chan_end_half(struct cpr_main_chan *c);

#endif
