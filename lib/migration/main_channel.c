/* SPDX-License-Identifier: MIT */
/*
 * The main channel of a migration job over the transports (cpr/transport.h), plus what the
 * engine adds: sockets registered with the job so that cancel can shut them down, waits that
 * a cancel interrupts, and the acknowledgement byte on sockets (docs/migration.md).
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/transport.h>

#include "channel/file_save.h"
#include "channel/scm.h"
#include "core/error.h"
#include "format/stream.h"
#include "migration/main_channel.h"

void cpr_main_chan_init(struct cpr_main_chan *c)
{
    c->s = NULL;
    c->l = NULL;
    c->fd = -1;
    c->is_socket = 0;
    c->is_file = 0;
    c->keep_listener = 0;
}

/* The stream is open: note its fd and let cancel reach it when it is a socket. */
static void opened(cpr_job *job, struct cpr_main_chan *c)
{
    struct stat st;
    c->fd = c->s->fd;
    int known = fstat(c->fd, &st) == 0;
    c->is_socket = known && S_ISSOCK(st.st_mode);
    c->is_file = known && S_ISREG(st.st_mode);
    if (c->is_socket)
        cpr_job_watch_fd(job, c->fd);
    else /* pipes and exec: commands: cancel ends the stream's waits and stops the command */
        cpr_stream_set_cancel_fd(c->s, cpr_job_cancel_fd(job));
}

int cpr_main_chan_connect(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp)
{
    cpr_main_chan_init(c);
    int ret = cpr_transport_open_output_durable(a, &c->s, errp);
    if (ret < 0) {
        cpr_error_prefix(errp, "main channel");
        return ret;
    }
    opened(job, c);
    return 0;
}

int cpr_main_chan_listen(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp)
{
    cpr_main_chan_init(c);
    /* Like the cpr channel, a unix main channel takes only a peer of our own uid. */
    int ret = cpr_listener_new(a, CPR_LISTEN_SAME_UID, &c->l, errp);
    if (ret < 0)
        cpr_error_prefix(errp, "main channel");
    return ret < 0 ? ret : 0;
}

int cpr_main_chan_accept(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp)
{
    int lfd = cpr_listener_fd(c->l);
    if (lfd >= 0) {
        /* The listener's own wait knows no cancel: wait here, then take the ready peer. */
        cpr_io_wait w = cpr_io_wait_make(-1, cpr_job_cancel_fd(job));
        int ret = cpr_io_wait_fd(&w, lfd, POLLIN, "main channel: waiting for the source", errp);
        if (ret < 0)
            return ret;
    }
    int ret = cpr_listener_accept(c->l, lfd >= 0 ? 0 : -1, &c->s, errp);
    if (ret < 0) {
        cpr_error_prefix(errp, "main channel");
        return ret;
    }
    if (!c->keep_listener) {
        cpr_listener_free(c->l);
        c->l = NULL;
    }
    opened(job, c);
    return 0;
}

int cpr_main_chan_close(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp)
{
    if (c->is_socket)
        cpr_job_unwatch_fd(job, c->fd);
    /* Flushes what is left and reaps an exec: command, whose failure fails the job. */
    int ret = cpr_stream_close(c->s, errp);
    cpr_listener_free(c->l);
    cpr_main_chan_init(c);
    if (ret < 0)
        cpr_error_prefix(errp, "main channel");
    return ret;
}

/* A UNIX socket resets only when its peer closes with bytes unread. A destination that
 * committed had read the end record, and the source sends nothing after it: so a reset there
 * means the destination never committed. On a network a reset may come from anywhere. */
static int is_local(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

/* Past the final record a cancel cannot be honoured (docs/migration.md): no cancel fd here. */
int cpr_main_chan_wait_ack(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp)
{
    /* Our half is done: a destination that drains before it closes sees the end at once. */
    shutdown(c->fd, SHUT_WR);
    cpr_io_wait w = cpr_io_wait_make(-1, -1);
    int ret = cpr_io_wait_fd(&w, c->fd, POLLIN, "main channel: waiting for the destination's acknowledgement", errp);
    if (ret < 0)
        return ret;
    uint8_t b = 0;
    ssize_t n;
    while ((n = read(c->fd, &b, 1)) < 0 && errno == EINTR) {
    }
    if (n == 1 && b == CPR_MAIN_ACK)
        return 0;
    if (n == 1 && b == CPR_MAIN_NAK)
        return cpr_error_set(errp, -ECONNABORTED, "the destination failed before it committed "
                             "(negative acknowledgement): this side resumes");
    if (n == 0)
        return cpr_error_set(errp, -ECONNRESET, "the destination closed the main channel without "
                             "acknowledging the load: it failed or died, so this side resumes");
    if (n < 0 && errno == ECONNRESET && is_local(c->fd))
        return cpr_error_set(errp, -ECONNRESET, "the destination closed the main channel with part "
                             "of the stream unread: it never committed, so this side resumes");
    /* A reset on a network, or a byte nobody sends: the acknowledgement may have been sent
     * and lost, so the destination may run the guest. Running it here too could run it twice. */
    job->no_resume = 1;
    if (n < 0)
        return cpr_error_set_errno(errp, -errno, "main channel: reading the destination's "
                                   "acknowledgement failed: the destination may have committed "
                                   "and run the guest, so it was left paused here (resume it only "
                                   "once the destination is known not to run it)");
    return cpr_error_set(errp, -EPROTO, "main channel: the destination sent 0x%02x where its "
                         "acknowledgement was due: it may run the guest, so it was left paused here", b);
}

int cpr_main_chan_send_ack(struct cpr_main_chan *c, cpr_error **errp)
{
    uint8_t b = CPR_MAIN_ACK;
    ssize_t n;
    while ((n = send(c->fd, &b, 1, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (n != 1)
        return cpr_error_set_errno(errp, n < 0 ? -errno : -EIO, "main channel: sending the acknowledgement");
    return 0;
}

void cpr_main_chan_refuse(struct cpr_main_chan *c)
{
    if (!c->is_socket || c->fd < 0)
        return;
    uint8_t b = CPR_MAIN_NAK;
    /* Best effort: a source that is gone, or a cancel's shutdown, makes these fail. */
    if (send(c->fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
        /* nothing to do: the source sees the end of the stream instead */
    }
    shutdown(c->fd, SHUT_WR);
    /* Closing with unread bytes would reset the connection and could lose the NAK: read to
     * the source's end, for a bounded time (a 1.0/1.1 source never ends its half). */
    int64_t deadline = g_get_monotonic_time() + CPR_MAIN_DRAIN_US;
    char buf[4096];
    for (;;) {
        int64_t left = deadline - g_get_monotonic_time();
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        if (left <= 0 || poll(&p, 1, (int)((left + 999) / 1000)) <= 0)
            return;
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}
