/* SPDX-License-Identifier: MIT */
/*
 * The main channel of a migration job: the fd the stream runs over, from a parsed address.
 * UNIX sockets reuse the cpr channel's connect/listen/accept (mode 0600, peer uid checked);
 * tcp, file, fd: and exec: are here. Every blocking wait also watches the job's cancel fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cpr/transfer.h>

#include "internal/error.h"
#include "internal/transfer.h"
#include "internal/main_channel.h"
#include "internal/scm.h"

extern char **environ;

void cpr_main_chan_init(struct cpr_main_chan *c)
{
    c->fd = -1;
    c->listen_fd = -1;
    c->is_socket = 0;
    c->child = -1;
}

static int is_socket(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

static void transfer_opts(cpr_job *job, cpr_transfer_opts *o)
{
    cpr_transfer_opts_init(o);
    o->cancel_fd = cpr_job_cancel_fd(job);
}

/* tcp: resolves host:port and connects (out) or binds and listens (in). */
static int tcp_open(const cpr_addr *a, int listening, cpr_error **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    if (listening)
        hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof(port), "%d", cpr_addr_port(a));
    const char *host = cpr_addr_host(a);
    struct addrinfo *res;
    int gai = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (gai)
        return cpr_error_set(errp, -EHOSTUNREACH, "tcp:%s:%s: %s", host, port, gai_strerror(gai));
    int ret = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            ret = -errno;
            continue;
        }
        int one = 1;
        int ok;
        if (listening) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            ok = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1) == 0;
        } else {
            ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        }
        if (ok) {
            freeaddrinfo(res);
            return fd;
        }
        ret = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    return cpr_error_set_errno(errp, ret, "tcp:%s:%s: cannot %s", host, port, listening ? "listen" : "connect");
}

/* exec: runs the command through /bin/sh with its stdin (out) or stdout (in) on a pipe. */
static int exec_open(struct cpr_main_chan *c, const char *command, int outgoing, cpr_error **errp)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return cpr_error_set_errno(errp, -errno, "exec:%s: pipe", command);
    int child_end = outgoing ? p[0] : p[1];
    int our_end = outgoing ? p[1] : p[0];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child_end, outgoing ? 0 : 1);
    char *argv[] = { "/bin/sh", "-c", (char *)command, NULL };
    pid_t pid;
    int r = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(child_end);
    if (r) {
        close(our_end);
        return cpr_error_set_errno(errp, -r, "exec:%s: cannot start /bin/sh", command);
    }
    c->child = pid;
    c->fd = our_end;
    return 0;
}

static int file_open(struct cpr_main_chan *c, const cpr_addr *a, int outgoing, cpr_error **errp)
{
    const char *path = cpr_addr_path(a);
    uint64_t off = cpr_addr_offset(a);
    int fd = open(path, outgoing ? O_WRONLY | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "file:%s: cannot open for %s", path,
                                   outgoing ? "writing" : "reading");
    struct stat st;
    /* Bytes of an earlier, longer stream must not trail the new one. */
    if (outgoing && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ftruncate(fd, (off_t)off) < 0) {
        int e = -errno;
        close(fd);
        return cpr_error_set_errno(errp, e, "file:%s: cannot truncate", path);
    }
    if (off && lseek(fd, (off_t)off, SEEK_SET) < 0) {
        int e = -errno;
        close(fd);
        return cpr_error_set_errno(errp, e, "file:%s: cannot seek to offset %llu", path,
                                   (unsigned long long)off);
    }
    c->fd = fd;
    return 0;
}

static int fd_dup(struct cpr_main_chan *c, const cpr_addr *a, cpr_error **errp)
{
    /* The fd stays the caller's: the job works on its own copy and closes that. */
    int fd = fcntl(cpr_addr_fd(a), F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "fd:%d", cpr_addr_fd(a));
    c->fd = fd;
    return 0;
}

/* Opens the address: outgoing connects or opens for writing; incoming listens on sockets and
 * opens the rest for reading. */
static int chan_open(cpr_job *job, const cpr_addr *a, int outgoing, struct cpr_main_chan *c,
                     cpr_error **errp)
{
    cpr_main_chan_init(c);
    int ret = 0;
    cpr_transfer_opts o;
    switch (cpr_addr_transport(a)) {
    case CPR_TRANSPORT_UNIX:
        transfer_opts(job, &o);
        ret = outgoing ? cpr_unix_connect("unix socket", cpr_addr_path(a), &o, errp)
                       : cpr_unix_listen("unix socket", cpr_addr_path(a), errp);
        break;
    case CPR_TRANSPORT_TCP:
        ret = tcp_open(a, !outgoing, errp);
        break;
    case CPR_TRANSPORT_FILE:
        ret = file_open(c, a, outgoing, errp);
        break;
    case CPR_TRANSPORT_FD:
        ret = fd_dup(c, a, errp);
        break;
    case CPR_TRANSPORT_EXEC:
        ret = exec_open(c, cpr_addr_command(a), outgoing, errp);
        break;
    default:
        ret = cpr_error_set(errp, -EINVAL, "main channel: unknown transport %d", (int)cpr_addr_transport(a));
    }
    if (ret < 0) {
        cpr_error_prefix(errp, "main channel");
        return ret;
    }
    int sock = cpr_addr_transport(a) == CPR_TRANSPORT_UNIX || cpr_addr_transport(a) == CPR_TRANSPORT_TCP;
    if (sock && outgoing)
        c->fd = ret;
    else if (sock)
        c->listen_fd = ret;
    if (c->fd >= 0)
        c->is_socket = is_socket(c->fd);
    if (c->is_socket)
        cpr_job_watch_fd(job, c->fd);
    return 0;
}

int cpr_main_chan_connect(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp)
{
    return chan_open(job, a, 1, c, errp);
}

int cpr_main_chan_listen(cpr_job *job, const cpr_addr *a, struct cpr_main_chan *c, cpr_error **errp)
{
    return chan_open(job, a, 0, c, errp);
}

int cpr_main_chan_accept(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp)
{
    if (c->listen_fd < 0)
        return 0; /* files, fds and pipes are ready as opened */
    cpr_transfer_opts o;
    transfer_opts(job, &o);
    int fd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(c->listen_fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX) {
        fd = cpr_transfer_accept(c->listen_fd, &o, errp);
    } else {
        cpr_io_wait w = cpr_io_wait_make(-1, cpr_job_cancel_fd(job));
        fd = cpr_io_wait_fd(&w, c->listen_fd, POLLIN, "main channel: waiting for the source", errp);
        if (fd >= 0) {
            fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0)
                fd = cpr_error_set_errno(errp, -errno, "main channel: accept");
        }
    }
    if (fd < 0)
        return fd;
    close(c->listen_fd);
    c->listen_fd = -1;
    c->fd = fd;
    c->is_socket = 1;
    cpr_job_watch_fd(job, fd);
    return 0;
}

void cpr_main_chan_close(cpr_job *job, struct cpr_main_chan *c)
{
    if (c->fd >= 0) {
        cpr_job_unwatch_fd(job, c->fd);
        close(c->fd);
    }
    if (c->listen_fd >= 0)
        close(c->listen_fd);
    if (c->child > 0) {
        /* The pipe is closed: the command sees EOF (or EPIPE) and ends. */
        int status;
        while (waitpid(c->child, &status, 0) < 0 && errno == EINTR) {
        }
    }
    cpr_main_chan_init(c);
}

int cpr_main_chan_wait_ack(cpr_job *job, struct cpr_main_chan *c, cpr_error **errp)
{
    /* No cancel here: past the final record a cancel cannot be honoured (docs/migration.md). */
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
    if (n < 0)
        return cpr_error_set_errno(errp, -errno, "main channel: reading the destination's acknowledgement");
    return cpr_error_set(errp, -ECONNRESET, "the destination closed the main channel without "
                         "acknowledging the load: it failed or died, so this side resumes");
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
