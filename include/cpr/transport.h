/* SPDX-License-Identifier: MIT */
/*
 * Transports: streams and connections from a parsed address (cpr/channel.h).
 *
 *   transport  outgoing (cpr_transport_open_output)        incoming (listener, then accept)
 *   file       open PATH for writing, cut at offset, write   open PATH, read from offset
 *              from there
 *   fd         write to fd N (borrowed: the caller closes)   read from fd N (borrowed)
 *   unix       connect to PATH                               bind + listen on PATH, accept
 *   tcp        connect to HOST:PORT                          bind + listen on HOST:PORT, accept
 *   exec       run /bin/sh -c COMMAND, write to its stdin    run it, read its stdout
 *
 * A listener exists so that the incoming side can listen now and accept later (QEMU's
 * `-incoming defer`, and the cpr channel that must be listening before the old VMM connects).
 * For file, fd and exec there is nothing to listen on: accept opens or starts it.
 *
 * Writers to sockets never raise SIGPIPE (MSG_NOSIGNAL); writers to pipes block SIGPIPE
 * around their writes and report EPIPE instead. Every fd is close-on-exec.
 * Thread safety: a listener or stream is used by one thread at a time.
 */
#ifndef CPR_TRANSPORT_H
#define CPR_TRANSPORT_H

#include <cpr/channel.h>
#include <cpr/common.h>
#include <cpr/stream.h>

CPR_BEGIN_DECLS

typedef struct cpr_listener cpr_listener;

/*
 * Opens the outgoing side of addr as a stream writer (*out, free with cpr_stream_close() or
 * cpr_stream_free()). Errors: the system's negative errno naming the path, host or command
 * (-ECONNREFUSED, -ENOENT, ...).
 */
CPR_API int cpr_transport_open_output(const cpr_addr *addr, cpr_stream **out, cpr_error **errp);

/*
 * Connects to a unix or tcp address and returns the connected socket in *fd (the caller owns
 * it; O_CLOEXEC). For channels that carry more than a stream (SCM_RIGHTS on the cpr channel).
 * Errors: -EINVAL for other transports, else the connect error naming the address.
 */
CPR_API int cpr_transport_connect(const cpr_addr *addr, int *fd, cpr_error **errp);

/* Listener flags. */
#define CPR_LISTEN_SAME_UID 0x1u /* accept refuses (closes) a unix peer of another uid */

/*
 * Starts listening on addr (unix: PATH appears only once the socket listens, so a peer may
 * wait for the file and then connect; an existing socket file at PATH is replaced, any other
 * file is -EEXIST; tcp: port 0 picks a free port, see cpr_listener_port()). *out owns the
 * listener.
 * Errors: bind/listen errors naming the address; -EINVAL for bad flags.
 */
CPR_API int cpr_listener_new(const cpr_addr *addr, unsigned int flags, cpr_listener **out, cpr_error **errp);

/*
 * Waits for the peer (unix, tcp) or opens the source (file, fd, exec) and returns it as a
 * stream reader. timeout_ms < 0 waits forever; on timeout -ETIMEDOUT.
 * Errors: -EPERM for a peer of another uid with CPR_LISTEN_SAME_UID, accept/open errors.
 */
CPR_API int cpr_listener_accept(cpr_listener *l, int timeout_ms, cpr_stream **out, cpr_error **errp);

/* As cpr_listener_accept() for unix and tcp, returning the connected socket (caller owns it). */
CPR_API int cpr_listener_accept_fd(cpr_listener *l, int timeout_ms, int *fd, cpr_error **errp);

/* The listening socket, for the caller's poll loop; -1 for file, fd and exec. Owned by l. */
CPR_API int cpr_listener_fd(const cpr_listener *l);

/* The bound tcp port (useful after port 0); -1 for other transports. */
CPR_API int cpr_listener_port(const cpr_listener *l);

/* Stops listening, closes the socket and removes the unix socket file it created. NULL ok. */
CPR_API void cpr_listener_free(cpr_listener *l);

/*
 * Finishes a stream: flushes a writer, closes its fd (when it owns it), waits for an exec
 * command, and frees the stream in every case. Returns the first error: a write error, or a
 * command that exited non-zero ("command 'gzip > f' exited with status 1"). NULL is accepted.
 */
CPR_API int cpr_stream_close(cpr_stream *s, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_TRANSPORT_H */
