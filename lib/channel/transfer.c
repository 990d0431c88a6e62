/* SPDX-License-Identifier: MIT */
/* The cpr channel of cpr-transfer: listen, accept, send and receive the cpr state. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cpr/transfer.h>

#include "channel/scm.h"
#include "channel/transfer.h"
#include "core/ctx.h"
#include "core/error.h"
#include "core/sized.h"
#include "handover/commit_signal.h"
#include "handover/cpr_state.h"

/*
 * On the wire: a 24-byte preamble, "CPRCHAN1" u32 nfds u32 flags u64 state_len (little-endian),
 * then state_len bytes of encoded cpr state; the fds ride on the first bytes. The new VMM
 * answers with 'K' (ready) or 'E' and its error message, then hangs up.
 */
static const char chan_magic[8] = { 'C', 'P', 'R', 'C', 'H', 'A', 'N', '1' };
#define PREAMBLE_LEN 24
#define REPLY_OK 'K'
#define REPLY_ERROR 'E'

CPR_API void cpr_transfer_opts_init(cpr_transfer_opts *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
    opts->timeout_ms = -1;
    opts->cancel_fd = -1;
    opts->peer_uid = -1;
}

/* Copies the caller's options over the defaults, refusing what this version cannot honour;
 * *w (when not NULL) is the wait the options ask for, starting now. */
static int opts_get(const cpr_transfer_opts *in, cpr_transfer_opts *o, cpr_io_wait *w, cpr_error **errp)
{
    cpr_transfer_opts_init(o);
    int ret;
    if (in && (ret = cpr_sized_read(o, sizeof(*o), in, sizeof(*o), "cpr_transfer_opts", errp)) < 0)
        return ret;
    if (o->flags || o->reserved0 || o->reserved1)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_opts: unknown flags or reserved fields set");
    if (!o->max_fds)
        o->max_fds = CPR_STATE_MAX_ENTRIES_DEFAULT;
    if (!o->max_state_bytes)
        o->max_state_bytes = CPR_STATE_MAX_BYTES_DEFAULT;
    if (w)
        *w = cpr_io_wait_make(o->timeout_ms, o->cancel_fd);
    return 0;
}

static int make_addr(const char *what, const char *path, struct sockaddr_un *sa, cpr_error **errp)
{
    if (!path || !*path)
        return cpr_error_set(errp, -EINVAL, "%s: socket path is empty", what);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return cpr_error_set(errp, -ENAMETOOLONG, "%s: socket path %s is longer than %zu bytes",
                             what, path, sizeof(sa->sun_path) - 1);
    strcpy(sa->sun_path, path);
    return 0;
}

/* Connects to the UNIX socket at path; what names the channel in every message. */
int cpr_unix_connect(const char *what, const char *path, const cpr_transfer_opts *opts, cpr_error **errp)
{
    cpr_transfer_opts o;
    struct sockaddr_un sa;
    cpr_io_wait w;
    int ret = opts_get(opts, &o, &w, errp);
    if (!ret)
        ret = make_addr(what, path, &sa, errp);
    if (ret < 0)
        return ret;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "%s %s: socket", what, path);
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            ret = cpr_error_set_errno(errp, -errno, "%s: cannot connect to %s", what, path);
            break;
        }
        /* The listener's backlog is full: a UNIX socket has no way to wait for room. */
        char *step = g_strdup_printf("%s %s: connect", what, path);
        ret = cpr_io_wait_over(&w, 10, step, errp);
        g_free(step);
        if (ret < 0)
            break;
    }
    if (ret < 0) {
        close(fd);
        return ret;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* Whether a connect failure means the peer has not listened yet: no socket file, or a stale
 * one that a listener will replace (cpr_unix_listen). */
static int not_listening_yet(int err)
{
    return err == -ENOENT || err == -ECONNREFUSED;
}

int cpr_unix_connect_wait(const char *what, const char *path, const cpr_transfer_opts *opts,
                          uint64_t wait_ms, cpr_error **errp)
{
    int64_t deadline = g_get_monotonic_time() + (int64_t)wait_ms * 1000;
    int cancel_fd = opts ? opts->cancel_fd : -1;
    for (;;) {
        cpr_error *err = NULL;
        int fd = cpr_unix_connect(what, path, opts, &err);
        int64_t left = deadline - g_get_monotonic_time();
        if (fd >= 0 || !not_listening_yet(fd) || left <= 0) {
            cpr_error_propagate(errp, err);
            return fd;
        }
        cpr_error_free(err);
        /* No notification exists for a socket file appearing: poll it, 10 ms at a time. */
        struct pollfd p = { .fd = cancel_fd, .events = POLLIN };
        if (poll(&p, cancel_fd >= 0, (int)MIN((left + 999) / 1000, 10)) > 0)
            return cpr_error_set(errp, -ECANCELED, "%s %s: cancelled while waiting for a listener",
                                 what, path);
    }
}

CPR_API int cpr_transfer_connect(const char *path, const cpr_transfer_opts *opts, cpr_error **errp)
{
    return cpr_unix_connect("cpr channel", path, opts, errp);
}

int cpr_transfer_send_state(int sock, const cpr_state *st, const GArray *fds, const cpr_io_wait *w,
                            cpr_error **errp)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    g_byte_array_set_size(buf, PREAMBLE_LEN);
    int ret = cpr_state_encode(st, buf, errp);
    if (ret < 0)
        return ret;
    uint32_t nfds = GUINT32_TO_LE(fds->len), flags = 0;
    uint64_t state_len = GUINT64_TO_LE(buf->len - PREAMBLE_LEN);
    memcpy(buf->data, chan_magic, 8);
    memcpy(buf->data + 8, &nfds, 4);
    memcpy(buf->data + 12, &flags, 4);
    memcpy(buf->data + 16, &state_len, 8);
    return cpr_scm_send(sock, buf->data, buf->len, (const int *)(void *)fds->data, fds->len, w, errp);
}

int cpr_transfer_send_signalled(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts, int commit_signal,
                                cpr_error **errp)
{
    if (!ctx || sock < 0)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_send: ctx is NULL or sock is invalid");
    cpr_transfer_opts o;
    cpr_io_wait w;
    int ret = opts_get(opts, &o, &w, errp);
    if (ret < 0)
        return ret;
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(cpr_state) st = NULL;
    ret = cpr_state_collect(ctx, CPR_MODE_CPR_TRANSFER, 0, &st, fds, errp);
    if (ret < 0)
        return ret;
    if (commit_signal >= 0) { /* one more fd, named by the config record, not by an entry */
        st->commit_slot = (int32_t)fds->len;
        g_array_append_val(fds, commit_signal);
    }
    ret = cpr_transfer_send_state(sock, st, fds, &w, errp);
    if (ret < 0)
        return ret;
    if (shutdown(sock, SHUT_WR) < 0)
        return cpr_error_set_errno(errp, -errno, "cpr channel: shutdown after sending the cpr state");
    return 0;
}

CPR_API int cpr_transfer_send(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts, cpr_error **errp)
{
    return cpr_transfer_send_signalled(ctx, sock, opts, -1, errp);
}

CPR_API int cpr_transfer_wait_hangup(int sock, const cpr_transfer_opts *opts, cpr_error **errp)
{
    cpr_transfer_opts o;
    cpr_io_wait w;
    int ret = opts_get(opts, &o, &w, errp);
    if (ret < 0)
        return ret;
    char reply[1024];
    size_t got = 0;
    for (;;) {
        ret = cpr_io_wait_fd(&w, sock, POLLIN, "cpr channel: waiting for the new process to hang up", errp);
        if (ret < 0)
            return ret;
        ssize_t n = recv(sock, reply + got, sizeof(reply) - 1 - got, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0 && errno != ECONNRESET)
            return cpr_error_set_errno(errp, -errno, "cpr channel: waiting for the hang-up");
        if (n <= 0)
            break; /* hung up (a reset is a hang-up with our data unread) */
        got += (size_t)n;
        if (got == sizeof(reply) - 1)
            break;
    }
    reply[got] = '\0';
    if (got >= 1 && reply[0] == REPLY_OK)
        return 0;
    if (got >= 1 && reply[0] == REPLY_ERROR)
        return cpr_error_set(errp, -EPROTO, "cpr channel: the new process refused the cpr state: %s",
                             reply + 1);
    return cpr_error_set(errp, -ECONNRESET, "cpr channel: the new process hung up without "
                         "confirming the cpr state (it failed or exited)");
}

CPR_API int cpr_transfer_outgoing(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                  cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_outgoing: ctx is NULL");
    int sock = cpr_transfer_connect(path, opts, errp);
    if (sock < 0)
        return sock;
    int ret = cpr_transfer_send(ctx, sock, opts, errp);
    if (!ret)
        ret = cpr_transfer_wait_hangup(sock, opts, errp);
    close(sock);
    return ret;
}

/*
 * Listens on a new UNIX socket at path; what names the channel in messages. With private, the
 * socket's mode is 0600 (the cpr channel); else it is what the umask gives (the main channel,
 * whose peers cpr_listener_new() may restrict by uid instead).
 *
 * The path appears only once the socket listens: it is bound under a temporary name beside it
 * and renamed into place, so a peer that waits for the file to exist never meets ECONNREFUSED
 * in the window between bind and listen. A stale socket at path is replaced.
 */
int cpr_unix_listen(const char *what, const char *path, int private, cpr_error **errp)
{
    struct sockaddr_un sa;
    int ret = make_addr(what, path, &sa, errp);
    if (ret < 0)
        return ret;
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISSOCK(sb.st_mode))
        return cpr_error_set(errp, -EEXIST, "%s: %s exists and is not a socket", what, path);
    /* The temporary name, when it fits; else bind in place (the old window, nothing worse). */
    struct sockaddr_un tmp = sa;
    int n = snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%ld~", path, (long)getpid());
    int renamed = n > 0 && (size_t)n < sizeof(tmp.sun_path);
    const struct sockaddr_un *at = renamed ? &tmp : &sa;
    unlink(at->sun_path); /* a stale socket (checked above) or our own leftover */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "%s %s: socket", what, path);
    /* A socket inode's mode before bind becomes the file's mode: no window where others may connect. */
    if (private && fchmod(fd, 0600) < 0)
        ret = cpr_error_set_errno(errp, -errno, "%s %s: fchmod", what, path);
    else if (bind(fd, (const struct sockaddr *)at, sizeof(*at)) < 0)
        ret = cpr_error_set_errno(errp, -errno, "%s: cannot bind %s", what, at->sun_path);
    else if (listen(fd, 8) < 0)
        ret = cpr_error_set_errno(errp, -errno, "%s: cannot listen on %s", what, path);
    else if (renamed && rename(tmp.sun_path, path) < 0)
        ret = cpr_error_set_errno(errp, -errno, "%s: cannot rename %s to %s", what, tmp.sun_path, path);
    if (ret < 0) {
        if (renamed)
            unlink(tmp.sun_path);
        close(fd);
        return ret;
    }
    return fd;
}

CPR_API int cpr_transfer_listen(const char *path, cpr_error **errp)
{
    return cpr_unix_listen("cpr channel", path, 1, errp);
}

CPR_API int cpr_transfer_accept(int listen_fd, const cpr_transfer_opts *opts, cpr_error **errp)
{
    cpr_transfer_opts o;
    cpr_io_wait w;
    int ret = opts_get(opts, &o, &w, errp);
    if (ret < 0)
        return ret;
    int fd;
    for (;;) {
        ret = cpr_io_wait_fd(&w, listen_fd, POLLIN, "cpr channel: waiting for the old process", errp);
        if (ret < 0)
            return ret;
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            break;
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return cpr_error_set_errno(errp, -errno, "cpr channel: accept");
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct ucred cred;
    socklen_t len = sizeof(cred);
    uid_t want = o.peer_uid < 0 ? geteuid() : (uid_t)o.peer_uid;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        ret = cpr_error_set_errno(errp, -errno, "cpr channel: cannot read the peer's credentials");
    else if (cred.uid != want)
        ret = cpr_error_set(errp, -EPERM, "cpr channel: refused peer pid %d uid %u: only uid %u may connect",
                            (int)cred.pid, (unsigned)cred.uid, (unsigned)want);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    return fd;
}

/* Tells the old VMM why we refuse; best effort, it may be gone. */
static void send_refusal(int sock, cpr_error **errp)
{
    if (!errp || !*errp)
        return;
    g_autofree char *msg = g_strdup_printf("%c%s", REPLY_ERROR, cpr_error_message(*errp));
    ssize_t n = send(sock, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
}

/* The commit signal the state names, when the caller takes one: checked, and a copy of its
 * own in *commit_signal (the install closes the original with the fds no entry names). */
static int take_commit_signal(const cpr_state *st, const GArray *fds, int *commit_signal, cpr_error **errp)
{
    if (!commit_signal || st->commit_slot < 0)
        return 0;
    int fd = g_array_index(fds, int, st->commit_slot);
    int ret = cpr_commit_signal_check(fd, errp);
    if (ret != 0) /* not an eventfd: refused; cannot tell: commit by the acknowledgement, as 1.1 */
        return ret < 0 ? ret : 0;
    *commit_signal = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (*commit_signal < 0)
        return cpr_error_set_errno(errp, -errno, "cpr channel: cannot keep the commit signal");
    return 0;
}

static int receive(cpr_ctx *ctx, int sock, const cpr_transfer_opts *o, const cpr_io_wait *w,
                   int *commit_signal, cpr_error **errp)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    uint8_t pre[PREAMBLE_LEN];
    int ret = cpr_scm_recv(sock, pre, sizeof(pre), fds, o->max_fds, w, errp);
    if (ret < 0)
        return ret;
    uint32_t nfds, flags;
    uint64_t state_len;
    memcpy(&nfds, pre + 8, 4);
    memcpy(&flags, pre + 12, 4);
    memcpy(&state_len, pre + 16, 8);
    nfds = GUINT32_FROM_LE(nfds);
    state_len = GUINT64_FROM_LE(state_len);
    if (memcmp(pre, chan_magic, sizeof(chan_magic)) || GUINT32_FROM_LE(flags))
        ret = cpr_error_set(errp, -EPROTO, "cpr channel: the peer does not speak the cpr channel protocol");
    else if (nfds > o->max_fds)
        ret = cpr_error_set(errp, -E2BIG, "cpr channel: the peer announces %u fds, the limit is %u",
                            nfds, o->max_fds);
    else if (state_len > o->max_state_bytes)
        ret = cpr_error_set(errp, -E2BIG, "cpr channel: the peer announces %" G_GUINT64_FORMAT
                            " bytes of cpr state, the limit is %" G_GUINT64_FORMAT,
                            state_len, o->max_state_bytes);
    if (ret < 0) {
        cpr_scm_close_fds(fds);
        return ret;
    }
    g_autofree uint8_t *buf = g_malloc(state_len ? state_len : 1);
    ret = cpr_scm_recv(sock, buf, state_len, fds, nfds, w, errp);
    if (ret < 0)
        return ret;
    if (fds->len != nfds) {
        ret = cpr_error_set(errp, -EPROTO, "cpr channel: the peer announced %u fds, %u arrived",
                            nfds, fds->len);
        cpr_scm_close_fds(fds);
        return ret;
    }
    /* The fds' types are looked up while the state is decoded (they are checked against it). */
    cpr_fd_scan *scan = cpr_fd_scan_start((const int *)(void *)fds->data, fds->len);
    g_autoptr(cpr_state) st = NULL;
    ret = cpr_state_decode(buf, state_len, o->max_fds, fds->len, 0, &st, errp);
    if (!ret && st->mode != CPR_MODE_CPR_TRANSFER)
        ret = cpr_error_set(errp, -EPROTO, "cpr channel: the cpr state is for mode %s, not cpr-transfer",
                            cpr_mode_name(st->mode));
    if (!ret)
        ret = take_commit_signal(st, fds, commit_signal, errp);
    if (ret < 0) {
        g_free(cpr_fd_scan_finish(scan)); /* before the fds it reads are closed */
        cpr_scm_close_fds(fds);
        return ret;
    }
    ret = cpr_state_install(ctx, st, fds, scan, errp);
    if (ret < 0 && commit_signal && *commit_signal >= 0) {
        close(*commit_signal);
        *commit_signal = -1;
    }
    return ret;
}

static int receive_signalled(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts, int *commit_signal,
                             cpr_error **errp)
{
    if (commit_signal)
        *commit_signal = -1;
    if (!ctx || sock < 0)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_receive: ctx is NULL or sock is invalid");
    cpr_transfer_opts o;
    cpr_io_wait w;
    int ret = opts_get(opts, &o, &w, errp);
    if (ret < 0)
        return ret;
    cpr_error *err = NULL;
    ret = receive(ctx, sock, &o, &w, commit_signal, &err);
    if (ret < 0)
        send_refusal(sock, &err);
    cpr_error_propagate(errp, err);
    return ret;
}

CPR_API int cpr_transfer_receive(cpr_ctx *ctx, int sock, const cpr_transfer_opts *opts,
                                 cpr_error **errp)
{
    return receive_signalled(ctx, sock, opts, NULL, errp);
}

CPR_API int cpr_transfer_incoming(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                  cpr_error **errp)
{
    return cpr_transfer_incoming_signalled(ctx, path, opts, NULL, errp);
}

int cpr_transfer_incoming_signalled(cpr_ctx *ctx, const char *path, const cpr_transfer_opts *opts,
                                    int *commit_signal, cpr_error **errp)
{
    if (commit_signal)
        *commit_signal = -1;
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_incoming: ctx is NULL");
    int lfd = cpr_transfer_listen(path, errp);
    if (lfd < 0)
        return lfd;
    int sock = cpr_transfer_accept(lfd, opts, errp);
    /* One peer only: the socket file goes as soon as it has connected (or on failure). */
    unlink(path);
    close(lfd);
    if (sock < 0)
        return sock;
    int ret = receive_signalled(ctx, sock, opts, commit_signal, errp);
    if (ret < 0) {
        close(sock);
        return ret;
    }
    return sock;
}

CPR_API int cpr_transfer_finish(int sock, cpr_error **errp)
{
    if (sock < 0)
        return cpr_error_set(errp, -EINVAL, "cpr_transfer_finish: invalid socket");
    char ok = REPLY_OK;
    int ret = 0;
    if (send(sock, &ok, 1, MSG_NOSIGNAL) != 1)
        ret = cpr_error_set_errno(errp, -errno, "cpr channel: cannot confirm to the old process");
    close(sock);
    return ret;
}
