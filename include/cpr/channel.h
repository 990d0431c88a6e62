/* SPDX-License-Identifier: MIT */
/*
 * Migration addresses and channel lists, in QEMU's spellings.
 *
 * URIs:     file:PATH[,offset=N]   unix:PATH   tcp:HOST:PORT   fd:N   exec:COMMAND
 * Channels: a QMP MigrationChannel list, as JSON:
 *   [ {"channel-type": "main",
 *      "addr": {"transport": "socket", "type": "unix", "path": "/tmp/main.sock"}},
 *     {"channel-type": "cpr",
 *      "addr": {"transport": "socket", "type": "unix", "path": "/tmp/cpr.sock"}} ]
 * addr forms: {"transport":"socket","type":"unix","path":P}
 *             {"transport":"socket","type":"inet","host":H,"port":"N"}
 *             {"transport":"socket","type":"fd","str":"N"}
 *             {"transport":"file","filename":P[,"offset":N]}
 *             {"transport":"exec","args":["cmd","arg",...]}
 * A single channel object (not in a list) is accepted too, as `-incoming` takes it.
 *
 * Thread safety: parsing functions may run on any thread; an address or list is not
 * shared between threads while one of them modifies it.
 */
#ifndef CPR_CHANNEL_H
#define CPR_CHANNEL_H

#include <cpr/common.h>
#include <cpr/mode.h>

CPR_BEGIN_DECLS

typedef enum cpr_transport {
    CPR_TRANSPORT_FILE = 1,
    CPR_TRANSPORT_UNIX = 2,
    CPR_TRANSPORT_TCP = 3,
    CPR_TRANSPORT_FD = 4,
    CPR_TRANSPORT_EXEC = 5,
} cpr_transport;

typedef enum cpr_channel_type {
    CPR_CHANNEL_MAIN = 0,
    CPR_CHANNEL_CPR = 1,
} cpr_channel_type;

/* One parsed address. Opaque; read it with the accessors below. */
typedef struct cpr_addr cpr_addr;
/* A list of channels: at most one of each cpr_channel_type. */
typedef struct cpr_channels cpr_channels;

/*
 * Parses a QEMU-style URI. On success *out owns a new address (free with cpr_addr_free()).
 * Errors: -EINVAL with a message naming the URI and what is wrong with it.
 */
CPR_API int cpr_addr_parse_uri(const char *uri, cpr_addr **out, cpr_error **errp);
CPR_API void cpr_addr_free(cpr_addr *addr);

CPR_API cpr_transport cpr_addr_transport(const cpr_addr *addr);
/* Path of a file or unix address; NULL for other transports. Owned by addr. */
CPR_API const char *cpr_addr_path(const cpr_addr *addr);
/* Host of a tcp address; NULL otherwise. Owned by addr. */
CPR_API const char *cpr_addr_host(const cpr_addr *addr);
/* Port of a tcp address (0..65535); -1 otherwise. */
CPR_API int cpr_addr_port(const cpr_addr *addr);
/* The fd number of an fd: address; -1 otherwise. */
CPR_API int cpr_addr_fd(const cpr_addr *addr);
/* Byte offset of a file address (0 when not given). */
CPR_API uint64_t cpr_addr_offset(const cpr_addr *addr);
/* Command of an exec address, as one shell string; NULL otherwise. Owned by addr. */
CPR_API const char *cpr_addr_command(const cpr_addr *addr);
/* The address as a URI (what cpr_addr_parse_uri() accepts); release with cpr_free(). */
CPR_API char *cpr_addr_to_uri(const cpr_addr *addr);

/*
 * Parses a JSON channel list (or a single channel object). Each channel type may appear at
 * most once; a list must contain a main channel unless it is a lone cpr channel given to
 * -incoming. Errors: -EINVAL naming the channel index and the field at fault.
 */
CPR_API int cpr_channels_parse_json(const char *json, cpr_channels **out, cpr_error **errp);

/* Makes a list holding one main channel from a URI. */
CPR_API int cpr_channels_from_uri(const char *uri, cpr_channels **out, cpr_error **errp);

/* Makes an empty list; add channels with cpr_channels_add(). */
CPR_API int cpr_channels_new(cpr_channels **out, cpr_error **errp);

/*
 * Adds a channel; on success the list takes ownership of addr. -EEXIST when a channel of that
 * type is already present (addr stays the caller's).
 */
CPR_API int cpr_channels_add(cpr_channels *list, cpr_channel_type type, cpr_addr *addr,
                             cpr_error **errp);

/*
 * Moves every channel of src into dst (as `-incoming` given twice builds one list).
 * -EEXIST, with nothing moved, when both have a channel of the same type. src is left empty.
 */
CPR_API int cpr_channels_merge(cpr_channels *dst, cpr_channels *src, cpr_error **errp);

/* The channel of that type, or NULL. Owned by the list. */
CPR_API const cpr_addr *cpr_channels_get(const cpr_channels *list, cpr_channel_type type);
CPR_API void cpr_channels_free(cpr_channels *list);

/*
 * Checks that the channels suit the mode for an outgoing migration, as QEMU does:
 *  - normal:       a main channel;
 *  - cpr-reboot:   a main channel that is a file;
 *  - cpr-transfer: a cpr channel that is a UNIX socket, and a main channel that is not a file
 *                  and, for tcp, whose port is not 0; since the source gives the guest up only
 *                  on the destination's acknowledgement, which travels back on main (since 1.2),
 *                  neither exec: nor an fd: that is not a socket (a pipe: the fd is checked
 *                  with fstat(2) now);
 *  - cpr-exec:     a non-empty exec_command (the cpr-exec-command parameter) and a main
 *                  channel that is a file, since the old process is gone before the new one
 *                  reads it.
 * A cpr channel in any mode other than cpr-transfer is an error.
 * Errors: -EINVAL naming the mode and the channel at fault.
 */
CPR_API int cpr_channels_check_mode(const cpr_channels *list, cpr_mode mode,
                                    const char *exec_command, cpr_error **errp);

/*
 * The mode an incoming side implies from how it was started: cpr-transfer when the list has
 * a cpr channel, otherwise `fallback` (the mode parameter). NULL list: fallback.
 */
CPR_API cpr_mode cpr_channels_incoming_mode(const cpr_channels *list, cpr_mode fallback);

CPR_END_DECLS

#endif /* CPR_CHANNEL_H */
