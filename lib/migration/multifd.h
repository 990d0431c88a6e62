/* SPDX-License-Identifier: MIT */
/*
 * Private: multifd, RAM pages over extra connections (docs/migration.md, "multifd").
 *
 * The source opens multifd-channels connections to the main channel's unix: or tcp: address,
 * one thread each; the "ram" section hands them its data pages (zero pages stay entries on
 * main) and ends each pass with a sync entry on main naming, per channel, the last packet of
 * the pass. The destination accepts the connections on the main channel's listener once the
 * ram section's setup names the migration, applies packets from one thread per channel, and
 * at each sync entry waits until every channel applied its packets of the pass; a channel
 * thread holds a packet of a later pass until the loader passed that sync, so that a page
 * sent twice lands in the order of its passes. Wire format: lib/migration/multifd_wire.h.
 */
#ifndef CPR_MIGRATION_MULTIFD_H
#define CPR_MIGRATION_MULTIFD_H

#include <stdint.h>

#include <cpr/channel.h>
#include <cpr/stream.h>
#include <cpr/transport.h>

#include "core/params.h"
#include "migration/main_channel.h"
#include "migration/main_tls.h"
#include "migration/multifd_wire.h"

/* How long a destination waits for the channels the ram section's setup announced. */
#define CPR_MFD_ACCEPT_TIMEOUT_MS (30 * 1000)

/* ---- source ---- */

struct cpr_multifd_send;

/* Opens p->multifd_channels connections to addr (unix or tcp), each with its hello, and
 * starts their threads; compression as p says (-ENOTSUP without zstd, saying so). `cancel`
 * (copied): the job's cancel fd, and the registration of sockets a cancel shuts down. `tls`
 * (copied; NULL or no creds: plain): each channel's thread runs the TLS handshake as client,
 * then its hello, through the session. addr is borrowed until cpr_multifd_send_free(). */
int cpr_multifd_send_open(const struct cpr_chan_cancel *cancel, const cpr_addr *addr, const struct cpr_params *p,
                          const struct cpr_chan_tls *tls, struct cpr_multifd_send **out, cpr_error **errp);
/* Asks the destination to acknowledge each pass on main's return path (read from mc,
 * borrowed until the set is freed): a pass ends where the destination applied it, not where
 * its pages entered socket buffers, so the switchover decision counts the backlog. Before
 * cpr_multifd_send_put_setup(). */
void cpr_multifd_send_want_acks(struct cpr_multifd_send *m, struct cpr_main_chan *mc);
/* Waits for the acknowledgement of every sync entry written so far (main flushed first); 0
 * at once without cpr_multifd_send_want_acks(). A NAK, the end or a wrong pass fail it. */
int cpr_multifd_send_take_acks(struct cpr_multifd_send *m, cpr_error **errp);
/* The ram section setup's multifd descriptor, written after the block table. */
int cpr_multifd_send_put_setup(struct cpr_multifd_send *m, cpr_stream *s, cpr_error **errp);
/*
 * Queues n pages of block `block` (table index) from first on; host is the block's memory.
 * `stable`: the guest is stopped, so the pages go out from guest RAM without a copy.
 * Blocks while every channel is busy; fails once a channel failed, or on cancel.
 */
int cpr_multifd_send_pages(struct cpr_multifd_send *m, uint32_t block, const uint8_t *host, uint64_t first,
                           uint32_t n, int stable, cpr_error **errp);
/* 1 when pages were queued since the last sync entry. */
int cpr_multifd_send_unsynced(const struct cpr_multifd_send *m);
/* Ends the pass: hands out the partial packet and writes the sync entry's body into s. */
int cpr_multifd_send_sync(struct cpr_multifd_send *m, cpr_stream *s, cpr_error **errp);
/* After the last sync: waits until every packet left, sends each channel's end packet,
 * stops the threads. Any channel's failure is returned here. */
int cpr_multifd_send_finish(struct cpr_multifd_send *m, cpr_error **errp);
/* Bytes the channels wrote so far (headers included). */
uint64_t cpr_multifd_send_bytes(struct cpr_multifd_send *m);
/* Stops the threads (shutting the sockets down when they did not finish), closes. NULL ok. */
void cpr_multifd_send_free(struct cpr_multifd_send *m);

/* ---- destination ---- */

struct cpr_multifd_recv;

/* A receiver that will accept channels on l (borrowed: it must outlive the receiver);
 * `cancel` as for cpr_multifd_send_open; `tls` (copied; NULL or no creds: plain): each
 * connection must pass the TLS handshake as server before its hello is read. */
int cpr_multifd_recv_new(const struct cpr_chan_cancel *cancel, cpr_listener *l, const struct cpr_chan_tls *tls,
                         struct cpr_multifd_recv **out);
/* Where this side acknowledges passes when the source asks (mc, borrowed until the
 * receiver is freed); without it a source that asks is refused. Before the setup. */
void cpr_multifd_recv_ack_to(struct cpr_multifd_recv *m, struct cpr_main_chan *mc);
/* Reads the setup descriptor from s, accepts its channels (refusing, by closing, connections
 * of another migration or version) and starts their threads on these blocks (copied). */
int cpr_multifd_recv_setup(struct cpr_multifd_recv *m, cpr_stream *s, const struct cpr_mfd_block *blocks,
                           uint32_t nblocks, cpr_error **errp);
/* Reads a sync entry's body from s and waits until every channel applied its packets; then
 * acknowledges the pass when the source asked. */
int cpr_multifd_recv_sync(struct cpr_multifd_recv *m, cpr_stream *s, cpr_error **errp);
/* After the stream: waits for every channel's end packet. */
int cpr_multifd_recv_finish(struct cpr_multifd_recv *m, cpr_error **errp);
/* Connections refused so far (another migration's, a bad hello). */
uint32_t cpr_multifd_recv_refused(struct cpr_multifd_recv *m);
void cpr_multifd_recv_free(struct cpr_multifd_recv *m);

#endif
