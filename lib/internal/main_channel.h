/* SPDX-License-Identifier: MIT */
/* Private: the main channel of a migration job (lib/migrate_channel.c). */
#ifndef CPR_INTERNAL_MAIN_CHANNEL_H
#define CPR_INTERNAL_MAIN_CHANNEL_H

#include <cpr/transport.h>

#include "internal/migrate.h"

/* The byte a destination sends back on a socket once the stream loaded (docs/migration.md). */
#define CPR_MAIN_ACK 0x06

struct cpr_main_chan {
    cpr_stream *s;     /* writer (outgoing) or reader (incoming, once accepted) */
    cpr_listener *l;   /* incoming, until accepted */
    int fd;            /* the stream's fd, a view: the stream owns or borrows it */
    int is_socket;     /* the acknowledgement is used on sockets only */
};

void cpr_main_chan_init(struct cpr_main_chan *c);
/* Outgoing: connects or opens the address as a stream writer. Sockets are watched by cancel. */
int cpr_main_chan_connect(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp);
/* Incoming: listens (unix, tcp); file, fd and exec open at accept. */
int cpr_main_chan_listen(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp);
/* Incoming: waits for the source (a cancel interrupts) and opens the stream reader. */
int cpr_main_chan_accept(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp);
/* Flushes (writer), closes, reaps an exec: command; returns the first error. */
int cpr_main_chan_close(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp);
/* The acknowledgement: the source waits for it, the destination sends it. */
int cpr_main_chan_wait_ack(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp);
int cpr_main_chan_send_ack(struct cpr_main_chan *c, cpr_error **errp);

#endif
