/* SPDX-License-Identifier: MIT */
/*
 * Private: bytes plus file descriptors over a UNIX stream socket (SCM_RIGHTS), with deadlines
 * and cancellation. Used by the cpr channel.
 */
#ifndef CPR_CHANNEL_SCM_H
#define CPR_CHANNEL_SCM_H

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <cpr/error.h>

/* The kernel's SCM_MAX_FD: the most fds one sendmsg may carry. */
#define CPR_SCM_MAX_FD 253

/* How long a blocking step may wait, and what cancels it. */
typedef struct cpr_io_wait {
    int64_t deadline_us; /* g_get_monotonic_time() value; < 0: no limit */
    int cancel_fd;       /* readable means cancelled; -1: none */
} cpr_io_wait;

/* A wait that ends timeout_ms from now (< 0: never). */
cpr_io_wait cpr_io_wait_make(int64_t timeout_ms, int cancel_fd);

/*
 * Waits until fd is ready for `events` (POLLIN/POLLOUT). Returns the revents, -ETIMEDOUT or
 * -ECANCELED with a message naming `what`. w may be NULL (wait forever).
 */
int cpr_io_wait_fd(const cpr_io_wait *w, int fd, short events, const char *what, cpr_error **errp);

/*
 * Bounds every blocking read and write on the socket fd to left_us (SO_RCVTIMEO and
 * SO_SNDTIMEO; <= 0: no bound). A TLS session on it returns on the bound too (tls.c does not
 * retry a timeout).
 */
void cpr_io_bound_socket(int fd, int64_t left_us);

/* pwrite(2) of all len bytes at off, retrying short writes and EINTR: 0, or -errno (-EIO for
 * a write of 0 bytes). Any thread. */
int cpr_io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/*
 * For loops that retry rather than wait on an fd: sleeps up to sleep_ms (0: only looks),
 * waking early when w is cancelled. Returns -ECANCELED or -ETIMEDOUT (the message naming
 * `what`) when w was cancelled or its deadline passed; else 0. w may be NULL (0 after the
 * sleep).
 */
int cpr_io_wait_over(const cpr_io_wait *w, int sleep_ms, const char *what, cpr_error **errp);

/*
 * Sends len bytes and nfds fds: the fds go in batches of at most CPR_SCM_MAX_FD, one batch
 * attached to each of the first bytes, the rest of the bytes after the last batch. len must be
 * at least the number of batches. Retries EINTR and short writes; never raises SIGPIPE.
 * The fds stay the caller's.
 */
int cpr_scm_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds,
                 const cpr_io_wait *w, cpr_error **errp);

/*
 * Receives exactly len bytes and appends every fd that arrives with them to fds (a GArray of
 * int), with MSG_CMSG_CLOEXEC. A batch may arrive split over several reads, or several in one.
 * Errors, after which every fd received so far (including those already in fds) is closed and
 * fds is emptied: more than max_fds fds in total (-EPROTO); truncated control data, MSG_CTRUNC
 * (-EPROTO); end of stream before len bytes (-ECONNRESET); a socket error; timeout; cancel.
 */
int cpr_scm_recv(int sock, void *buf, size_t len, GArray *fds, size_t max_fds,
                 const cpr_io_wait *w, cpr_error **errp);

/* Closes every fd in the array and empties it. */
void cpr_scm_close_fds(GArray *fds);

#endif
