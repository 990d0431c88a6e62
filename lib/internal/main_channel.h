/* SPDX-License-Identifier: MIT */
/* Private: the main channel of a migration job (lib/migrate_channel.c). */
#ifndef CPR_INTERNAL_MAIN_CHANNEL_H
#define CPR_INTERNAL_MAIN_CHANNEL_H

#include <sys/types.h>

#include "internal/migrate.h"

/* The byte a destination sends back on a socket once the stream loaded (docs/migration.md). */
#define CPR_MAIN_ACK 0x06

struct cpr_main_chan {
    int fd;        /* the stream's fd, -1 until open (incoming sockets: until accepted) */
    int listen_fd; /* incoming unix/tcp: the listening socket until accept */
    int is_socket; /* the acknowledgement is used on sockets only */
    pid_t child;   /* exec: the command, reaped on close */
};

void cpr_main_chan_init(struct cpr_main_chan *c);
/* Outgoing: connects or opens the address for writing. Sockets are watched by cancel. */
int cpr_main_chan_connect(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp);
/* Incoming: listens (unix, tcp) or opens for reading (file, fd, exec). */
int cpr_main_chan_listen(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp);
/* Incoming: accepts the source on a listening channel (cancel aborts it); no-op otherwise. */
int cpr_main_chan_accept(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp);
void cpr_main_chan_close(cpr_job *job, struct cpr_main_chan *c);
/* The acknowledgement: the source waits for it, the destination sends it. */
int cpr_main_chan_wait_ack(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp);
int cpr_main_chan_send_ack(struct cpr_main_chan *c, cpr_error **errp);

#endif
