/* SPDX-License-Identifier: MIT */
/* Private: TLS on the main channel (lib/migration/main_tls.c); docs/migration.md, "TLS". */
#ifndef CPR_MIGRATION_MAIN_TLS_H
#define CPR_MIGRATION_MAIN_TLS_H

#include <sys/types.h>

#include <cpr/channel.h>

#include "migration/migrate.h"

struct cpr_tls_session;

/* cpr_main_tls_check(), which the job calls before it starts, is declared in migrate.h. */
/* The handshake on a connected (outgoing) or accepted main channel, socket fd, stream s; the
 * stream then runs through the session (*tls). `a` gives an outgoing tcp channel's host for
 * the name check. */
int cpr_main_tls_start(cpr_job *job, const cpr_addr *a, int fd, cpr_stream *s, struct cpr_tls_session **tls,
                       cpr_error **errp);
/* The acknowledgement's bytes on fd, through the session when there is one (tls not NULL):
 * as read(2)/send(2). */
ssize_t cpr_main_tls_recv(struct cpr_tls_session *tls, int fd, void *buf, size_t len);
ssize_t cpr_main_tls_send(struct cpr_tls_session *tls, int fd, const void *buf, size_t len, int flags);
/* Ends this side's half: close_notify on a session, then shutdown(SHUT_WR). */
void cpr_main_tls_end_half(struct cpr_tls_session *tls, int fd);

#endif
