/* SPDX-License-Identifier: MIT */
/* SCM_RIGHTS in batches, with deadlines and cancellation. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "channel/scm.h"
#include "core/error.h"

cpr_io_wait cpr_io_wait_make(int64_t timeout_ms, int cancel_fd)
{
    cpr_io_wait w = { .deadline_us = -1, .cancel_fd = cancel_fd };
    if (timeout_ms >= 0)
        w.deadline_us = g_get_monotonic_time() + timeout_ms * 1000;
    return w;
}

int cpr_io_wait_fd(const cpr_io_wait *w, int fd, short events, const char *what, cpr_error **errp)
{
    struct pollfd p[2] = { { .fd = fd, .events = events },
                           { .fd = w ? w->cancel_fd : -1, .events = POLLIN } };
    for (;;) {
        int timeout = -1;
        if (w && w->deadline_us >= 0) {
            int64_t left = w->deadline_us - g_get_monotonic_time();
            if (left <= 0)
                return cpr_error_set(errp, -ETIMEDOUT, "%s: timed out", what);
            timeout = (int)MIN((left + 999) / 1000, G_MAXINT);
        }
        int n = poll(p, p[1].fd >= 0 ? 2 : 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cpr_error_set_errno(errp, -errno, "%s: poll failed", what);
        if (p[1].fd >= 0 && p[1].revents)
            return cpr_error_set(errp, -ECANCELED, "%s: cancelled", what);
        if (p[0].revents)
            return p[0].revents;
    }
}

int cpr_io_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        buf = (const uint8_t *)buf + n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

void cpr_io_bound_socket(int fd, int64_t left_us)
{
    struct timeval tv = { 0, 0 };
    if (left_us > 0)
        tv = (struct timeval){ .tv_sec = left_us / G_USEC_PER_SEC, .tv_usec = left_us % G_USEC_PER_SEC };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int cpr_io_wait_over(const cpr_io_wait *w, int sleep_ms, const char *what, cpr_error **errp)
{
    struct pollfd p = { .fd = w ? w->cancel_fd : -1, .events = POLLIN };
    int n;
    do
        n = poll(&p, p.fd >= 0, sleep_ms);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        return cpr_error_set(errp, -ECANCELED, "%s: cancelled", what);
    if (w && w->deadline_us >= 0 && g_get_monotonic_time() >= w->deadline_us)
        return cpr_error_set(errp, -ETIMEDOUT, "%s: timed out", what);
    return 0;
}

int cpr_scm_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds,
                 const cpr_io_wait *w, cpr_error **errp)
{
    size_t batches = (nfds + CPR_SCM_MAX_FD - 1) / CPR_SCM_MAX_FD;
    if (len < batches)
        return cpr_error_set(errp, -EINVAL, "cannot send %zu fds with only %zu bytes", nfds, len);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * CPR_SCM_MAX_FD)];
    } control;
    const char *p = buf;
    size_t off = 0, fd_off = 0;
    while (off < len) {
        size_t n_fds = MIN(nfds - fd_off, (size_t)CPR_SCM_MAX_FD);
        /* Each batch rides on one byte, except the last, which takes every byte left. */
        size_t chunk = (n_fds && fd_off + n_fds < nfds) ? 1 : len - off;
        struct iovec iov = { .iov_base = (void *)(p + off), .iov_len = chunk };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (n_fds) {
            memset(&control, 0, sizeof(control));
            msg.msg_control = control.buf;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
            memcpy(CMSG_DATA(c), fds + fd_off, sizeof(int) * n_fds);
        }
        ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ret = cpr_io_wait_fd(w, sock, POLLOUT, "cpr channel: send", errp);
            if (ret < 0)
                return ret;
            continue;
        }
        if (sent < 0)
            return cpr_error_set_errno(errp, -errno, "cpr channel: sendmsg at byte %zu (fd %zu of %zu)",
                                       off, fd_off, nfds);
        /* Any bytes sent means the batch went with them; a short write continues without fds. */
        fd_off += n_fds;
        off += (size_t)sent;
    }
    return 0;
}

void cpr_scm_close_fds(GArray *fds)
{
    for (guint i = 0; i < fds->len; i++)
        close(g_array_index(fds, int, i));
    g_array_set_size(fds, 0);
}

/* Takes the fds out of every SCM_RIGHTS message; returns -EPROTO when there were too many. */
static int take_fds(struct msghdr *msg, GArray *fds, size_t max_fds, cpr_error **errp)
{
    int ret = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, data + i * sizeof(int), sizeof(int));
            /* Keep even the excess ones in the array, so the caller closes them all. */
            g_array_append_val(fds, fd);
        }
    }
    if (fds->len > max_fds)
        ret = cpr_error_set(errp, -EPROTO, "cpr channel: peer sent %u fds or more, the limit is %zu",
                            fds->len, max_fds);
    return ret;
}

int cpr_scm_recv(int sock, void *buf, size_t len, GArray *fds, size_t max_fds,
                 const cpr_io_wait *w, cpr_error **errp)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * CPR_SCM_MAX_FD)];
    } control;
    char *p = buf;
    size_t off = 0;
    int ret = 0;
    while (off < len && !ret) {
        struct iovec iov = { .iov_base = p + off, .iov_len = len - off };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
        ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ret = cpr_io_wait_fd(w, sock, POLLIN, "cpr channel: receive", errp);
            ret = ret < 0 ? ret : 0;
            continue;
        }
        if (got < 0) {
            ret = cpr_error_set_errno(errp, -errno, "cpr channel: recvmsg at byte %zu", off);
            break;
        }
        ret = take_fds(&msg, fds, max_fds, errp);
        if (!ret && (msg.msg_flags & MSG_CTRUNC))
            ret = cpr_error_set(errp, -EPROTO, "cpr channel: fds truncated at byte %zu after %u fds "
                                "(MSG_CTRUNC: too many in one message, or RLIMIT_NOFILE reached)",
                                off, fds->len);
        if (!ret && got == 0)
            ret = cpr_error_set(errp, -ECONNRESET, "cpr channel: peer closed at byte %zu of %zu",
                                off, len);
        off += (size_t)got;
    }
    if (ret < 0)
        cpr_scm_close_fds(fds);
    return ret;
}
