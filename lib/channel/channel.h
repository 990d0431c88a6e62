/* SPDX-License-Identifier: MIT */
/* Private layout of parsed addresses, for the transports in lib/. */
#ifndef CPR_CHANNEL_CHANNEL_H
#define CPR_CHANNEL_CHANNEL_H

#include <cpr/channel.h>

struct cpr_addr {
    cpr_transport transport;
    char *path;    /* file, unix */
    char *host;    /* tcp */
    int port;      /* tcp, else -1 */
    int fd;        /* fd, else -1 */
    uint64_t offset; /* file */
    char **argv;   /* exec: NULL-terminated words */
    char *command; /* exec: the words joined, as given */
};

#endif
