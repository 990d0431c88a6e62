/* SPDX-License-Identifier: MIT */
/* Private: the main channel of a migration job (lib/migration/main_channel.c). */
#ifndef CPR_MIGRATION_MAIN_CHANNEL_H
#define CPR_MIGRATION_MAIN_CHANNEL_H

#include <cpr/transport.h>
#include <cpr/stream.h>

#include "migration/main_tls.h"

/* The byte a destination sends back on a socket once the stream loaded (docs/migration.md). */
#define CPR_MAIN_ACK 0x06
/* The byte a 1.2 destination sends instead when it fails before it commits (1.0/1.1 send none). */
#define CPR_MAIN_NAK 0x15
/* After the NAK, a 1.2 destination says why: a u16 LE length (1..this) and that many bytes of
 * UTF-8 text (docs/migration.md). */
#define CPR_MAIN_NAK_REASON_MAX 1024
/* cpr-transfer with the commit signal: how long the source waits for the acknowledgement once
 * the signal is set before it completes on the signal alone. */
#define CPR_COMMIT_ACK_GRACE_US (1000 * 1000)
/* How long a failing destination reads what the source still sends before it closes. */
#define CPR_MAIN_DRAIN_US (1000 * 1000)

/* How a cancel reaches the channel, whoever owns it (the migration job): an fd that polls
 * readable once a cancel is requested, and the registration of sockets that a cancel shuts
 * down so that a blocked transfer returns. */
struct cpr_chan_cancel {
    int fd;
    void (*watch)(void *opaque, int fd);
    void (*unwatch)(void *opaque, int fd);
    void *opaque;
};

struct cpr_main_chan {
    struct cpr_chan_cancel cancel;
    struct cpr_chan_tls tls_cfg;
    cpr_stream *s;     /* writer (outgoing) or reader (incoming, once accepted) */
    cpr_listener *l;   /* incoming, until accepted */
    int fd;            /* the stream's fd, a view: the stream owns or borrows it */
    int is_socket;     /* the acknowledgement is used on sockets only */
    int is_file;       /* a regular file: no process reads it now */
    struct cpr_tls_session *tls; /* TLS on the socket (tls-creds), freed after the stream */
    int keep_listener; /* incoming: accept leaves l open, for the multifd channels */
    int peer_unadmitted; /* incoming: tls-authz refused the peer (told no more than that) */
    /* Outgoing cpr-transfer: the commit signal the destination sets at its commit (a view,
     * kept across connect and close; -1: none), and whether the acknowledgement's wait learnt
     * of the commit from it alone (the destination died after its commit). */
    int commit_signal;
    int committed_by_signal;
    /* Outgoing: the stream asks the destination to acknowledge passes and its offer (the
     * acknowledgement of pass 0) has not been read yet: the final read skips it. */
    int offer_due;
};

/* An unopened channel that cancel reaches through `cancel` (copied). */
void cpr_main_chan_init(struct cpr_main_chan *c, const struct cpr_chan_cancel *cancel);
/* Runs the channel in TLS from its next connect (as the client) or accept (as the server):
 * the handshake follows the connection, and a failed one fails the connect or accept. */
void cpr_main_chan_use_tls(struct cpr_main_chan *c, cpr_ctx *ctx, const char *creds, const char *hostname);
/* Outgoing: connects or opens the address as a stream writer. Sockets are watched by cancel. */
int cpr_main_chan_connect(struct cpr_main_chan *c, const cpr_addr *a, cpr_error **errp);
/* Incoming: listens (unix, tcp); file, fd and exec open at accept. */
int cpr_main_chan_listen(struct cpr_main_chan *c, const cpr_addr *a, cpr_error **errp);
/* Incoming: waits for the source (a cancel interrupts) and opens the stream reader. */
int cpr_main_chan_accept(struct cpr_main_chan *c, cpr_error **errp);
/* Flushes (writer), closes, reaps an exec: command; returns the first error. The channel can
 * be opened again afterwards. */
int cpr_main_chan_close(struct cpr_main_chan *c, cpr_error **errp);
/* The acknowledgement: the source ends its half and waits for it, the destination sends it.
 * wait_ack fails to resume on a NAK, a clean end of stream or a reset of a UNIX socket; on
 * anything else (a network reset) it also sets *no_resume: the destination may have committed
 * and run the guest, so the source must not. Whatever main says, a commit signal that is set
 * means the destination committed: 0, as for the acknowledgement. */
int cpr_main_chan_wait_ack(struct cpr_main_chan *c, int *no_resume, cpr_error **errp);
int cpr_main_chan_send_ack(struct cpr_main_chan *c, cpr_error **errp);
/* wait_ack without ending this side's half: postcopy goes on to serve pages on the socket. */
int cpr_main_chan_read_ack(struct cpr_main_chan *c, int *no_resume, cpr_error **errp);
/* Pass acknowledgements (docs/migration.md, "Passes acknowledged"): once a pass's last entry
 * is applied (multifd: its sync entry, with the descriptor's flag bit 0; a single stream: its
 * pass-end entry), the destination sends CPR_MAIN_PASS_ACK and the pass (u32 LE). A single
 * stream's destination first offers them, answering the config's request with pass 0. */
#define CPR_MAIN_PASS_ACK 0x11
int cpr_main_chan_send_pass_ack(struct cpr_main_chan *c, uint32_t pass, cpr_error **errp);
/* The source reads it: 0 with *pass; a NAK (with its reason), the end, or another byte fail.
 * Before the final records every failure here lets the source resume: the destination cannot
 * commit without them. */
int cpr_main_chan_read_pass_ack(struct cpr_main_chan *c, uint32_t *pass, cpr_error **errp);
/* Reads acknowledgements until *next reaches end, each one the pass *next names, then the
 * next (*next counts up as they come); who names the stream in the error on another pass. */
int cpr_main_chan_take_pass_acks(struct cpr_main_chan *c, const char *who, uint32_t *next, uint32_t end,
                                 cpr_error **errp);
/* As read_pass_ack without waiting: 1 with *pass when one came, 0 when none has (it looks for
 * at most CPR_MAIN_LOOK_US), <0 as read_pass_ack. */
#define CPR_MAIN_LOOK_US 2000
int cpr_main_chan_poll_pass_ack(struct cpr_main_chan *c, uint32_t *pass, cpr_error **errp);
/* A destination that fails before it commits, on a socket: NAK and the reason (NULL: none;
 * cut to CPR_MAIN_NAK_REASON_MAX bytes; a peer tls-authz refused is told only that), end its half, read to the source's end for at most
 * CPR_MAIN_DRAIN_US, so that the close does not reset. */
void cpr_main_chan_refuse(struct cpr_main_chan *c, const char *reason);

#endif
