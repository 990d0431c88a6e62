/* SPDX-License-Identifier: MIT */
/*
 * The cpr channel of cpr-transfer: how the old VMM hands its named fds (cpr/fd.h) and shared
 * RAM blocks (cpr/ram.h) to a new VMM on the same host, over a UNIX socket with SCM_RIGHTS.
 *
 * The handshake (QEMU 10.0's cpr-transfer mode, docs/devel/migration/CPR.rst in QEMU):
 *   new VMM                                    old VMM (guest keeps running)
 *   cpr_transfer_incoming(): listen (0600),
 *     accept, check the peer's uid  <------    cpr_transfer_connect()
 *     receive and check the cpr state <-----   cpr_transfer_send(): state + fds, half-close
 *   create RAM blocks (re-attached, prefaulted)
 *   and devices from the preserved fds;
 *   listen on the main channel;
 *   cpr_transfer_finish(): confirm, hang up -> cpr_transfer_wait_hangup() returns 0
 *                                              connect the main channel, stop the guest, ...
 * The new VMM confirms with one byte before it hangs up, so a new VMM that failed or died
 * (which also hangs up) is not mistaken for one that is ready: the old VMM then gets an error
 * and resumes its guest. When the new VMM refuses the state it sends its error message, which
 * the old VMM reports. Nothing is lost before the confirmation: the old VMM still owns every fd.
 *
 * Thread safety: these calls block (up to the timeout) and may run on any thread; the context
 * must not be modified by another thread meanwhile. Cancel from any thread by making
 * opts.cancel_fd readable (e.g. an eventfd).
 */
#ifndef CPR_TRANSFER_H
#define CPR_TRANSFER_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

/* Options of the cpr channel. Initialise with cpr_transfer_opts_init(), then set fields. */
typedef struct cpr_transfer_opts {
    uint32_t size;            /* sizeof(cpr_transfer_opts), set by cpr_transfer_opts_init(); a
                               * larger struct from a newer header is accepted when its extra
                               * bytes are zero */
    uint32_t flags;           /* must be 0 */
    int64_t timeout_ms;       /* per call; < 0 waits forever (the default) */
    int32_t cancel_fd;        /* readable fd aborts the call with -ECANCELED; -1 (default): none */
    int32_t reserved0;        /* must be 0 */
    int64_t peer_uid;         /* incoming: the uid allowed to connect; -1 (default): our euid */
    uint32_t max_fds;         /* incoming: most fds accepted; 0 (default): 65536 */
    uint32_t reserved1;       /* must be 0 */
    uint64_t max_state_bytes; /* incoming: largest encoded state accepted; 0 (default): 64 MiB */
} cpr_transfer_opts;

/* The defaults above as an initialiser for C (since 1.2); cpr_transfer_opts_init() anywhere. */
#define CPR_TRANSFER_OPTS_INIT { .size = sizeof(cpr_transfer_opts), .timeout_ms = -1, .cancel_fd = -1, .peer_uid = -1 }

/* Fills opts with the defaults above. */
CPR_API void cpr_transfer_opts_init(cpr_transfer_opts *opts);

/* ---- Outgoing (old VMM) ---- */

/*
 * Connects to the new VMM's cpr socket at path. Returns the connected socket (O_CLOEXEC),
 * owned by the caller. opts may be NULL. Errors: the errno of connect(2) naming path
 * (-ENOENT, -ECONNREFUSED, -EACCES), -ETIMEDOUT, -ECANCELED.
 */
CPR_API int cpr_transfer_connect(const char *path, const cpr_transfer_opts *opts, cpr_error **errp);

/*
 * Sends the cpr state of ctx (every named fd, every shared RAM block and the mode
 * cpr-transfer) on a connected socket, then shuts down its write side. The fds stay ours.
 * Errors: -EINVAL (bad arguments), the errno of fstat on a saved fd that is not open (naming
 * it), a socket error, -ETIMEDOUT, -ECANCELED.
 */
CPR_API int cpr_transfer_send(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts, cpr_error **errp);

/*
 * Waits until the new VMM hangs up the cpr channel after confirming (0). Errors: -EPROTO when
 * the new VMM refused the state (its message follows ours); -ECONNRESET when it hung up
 * without confirming (it failed or died); -ETIMEDOUT; -ECANCELED. The socket stays open.
 */
CPR_API int cpr_transfer_wait_hangup(int sock, const cpr_transfer_opts *opts, cpr_error **errp);

/*
 * The whole outgoing side: connect to path, send, wait for the hang-up, close. 0 means the new
 * VMM holds the state and listens on the main channel; on error the guest may simply resume.
 */
CPR_API int cpr_transfer_outgoing(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                  cpr_error **errp);

/* ---- Incoming (new VMM) ---- */

/*
 * Creates a listening UNIX socket at path with mode 0600 (set before bind, so there is no
 * window with a wider mode). The path appears only once the socket listens (it is bound under
 * a temporary name beside it and renamed into place), so a peer may wait for the file and then
 * connect. A stale socket at path is replaced; any other file is an error (-EEXIST). Returns
 * the listening fd (O_CLOEXEC), owned by the caller.
 */
CPR_API int cpr_transfer_listen(const char *path, cpr_error **errp);

/*
 * Accepts one connection and checks the peer's credentials (SO_PEERCRED): its uid must be
 * opts->peer_uid (default: our effective uid). Returns the connected socket. Errors: -EPERM
 * naming the peer's pid and uid and the uid expected (the connection is closed; the listening
 * socket stays usable); -ETIMEDOUT; -ECANCELED; the errno of accept(2).
 */
CPR_API int cpr_transfer_accept(int listen_fd, const cpr_transfer_opts *opts, cpr_error **errp);

/*
 * Receives the cpr state on a connected socket and checks every fd against the table (file
 * type; for a RAM block a regular file at least as large as the block with the same page
 * size). When all pass, installs the fds in ctx's named fd registry (owned by it until
 * claimed, see cpr/fd.h), the RAM blocks in its RAM table (re-attached by
 * cpr_ram_block_new*()) and sets the mode parameter to cpr-transfer. Fds that arrive without
 * a table entry are closed. On failure every received fd is closed, ctx is unchanged, and the
 * error is also sent to the old VMM; the socket stays open (close it). With 2,048 fds or more,
 * a short-lived second thread shares the per-fd type check (one fstat each).
 * Errors: -EPROTO (bad or inconsistent state, wrong fd type or size, too many fds),
 * -EBADMSG (corrupt state), -ENAMETOOLONG, -E2BIG (over the limits), -EEXIST (a name already
 * registered here), -ECONNRESET (the old VMM went away), -ETIMEDOUT, -ECANCELED.
 */
CPR_API int cpr_transfer_receive(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts,
                                 cpr_error **errp);

/*
 * The incoming side up to the point where devices are created: listen at path, accept one
 * peer, remove the socket file, receive. Returns the connected cpr socket: keep it open while
 * the VMM creates its devices and starts listening on the main channel, then call
 * cpr_transfer_finish(). On failure nothing stays open and the socket file is removed.
 */
CPR_API int cpr_transfer_incoming(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                  cpr_error **errp);

/*
 * Confirms to the old VMM that this VMM is ready (devices created, main channel listening)
 * and hangs up, which lets the old VMM stop its guest and send device state. Always closes
 * sock. Errors: the errno of writing the confirmation (the old VMM is gone: it will not
 * switch over).
 */
CPR_API int cpr_transfer_finish(int sock, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_TRANSFER_H */
