/* SPDX-License-Identifier: MIT */
/* Transports: file, fd, unix, tcp and exec streams from a parsed cpr_addr, and listeners. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cpr/transport.h>

#include "channel/file_save.h"
#include "channel/transfer.h"
#include "core/error.h"
#include "format/stream.h"

extern char **environ;

struct cpr_listener {
    cpr_transport transport;
    unsigned int flags;
    int fd;          /* listening socket, -1 for file/fd/exec */
    int port;
    char *path;      /* unix socket path we created, or file path */
    uint64_t offset; /* file */
    int source_fd;   /* fd: */
    char *command;   /* exec: */
};

/* Both ends of a migration connection turn Nagle off: its small messages (acknowledgements,
 * requests, a TLS record's tail) must leave at once, not wait for the peer's delayed ACK. */
static void tcp_nodelay(int s)
{
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int unix_sockaddr(const char *path, struct sockaddr_un *sa, cpr_error **errp)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (!path || strlen(path) >= sizeof(sa->sun_path))
        return cpr_error_set(errp, -ENAMETOOLONG, "unix socket path '%s' is longer than %zu bytes", path ? path : "",
                             sizeof(sa->sun_path) - 1);
    strcpy(sa->sun_path, path);
    return 0;
}

static int tcp_resolve(const cpr_addr *addr, int passive, struct addrinfo **res, cpr_error **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
    char port[16];
    snprintf(port, sizeof(port), "%d", cpr_addr_port(addr));
    const char *host = cpr_addr_host(addr);
    int rc = getaddrinfo(host && *host ? host : NULL, port, &hints, res);
    if (rc != 0)
        return cpr_error_set(errp, -EHOSTUNREACH, "tcp:%s:%s: %s", host ? host : "", port, gai_strerror(rc));
    return 0;
}

CPR_API int cpr_transport_connect(const cpr_addr *addr, int *fd, cpr_error **errp)
{
    if (!addr || !fd)
        return cpr_error_set(errp, -EINVAL, "cpr_transport_connect: NULL argument");
    cpr_transport t = cpr_addr_transport(addr);
    if (t == CPR_TRANSPORT_UNIX) {
        struct sockaddr_un sa;
        int ret = unix_sockaddr(cpr_addr_path(addr), &sa, errp);
        if (ret < 0)
            return ret;
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return cpr_error_set_errno(errp, -errno, "socket for unix:%s", sa.sun_path);
        while (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            if (errno == EINTR)
                continue;
            int code = -errno;
            close(s);
            return cpr_error_set_errno(errp, code, "cannot connect to unix:%s", sa.sun_path);
        }
        *fd = s;
        return 0;
    }
    if (t == CPR_TRANSPORT_TCP) {
        struct addrinfo *res;
        int ret = tcp_resolve(addr, 0, &res, errp), code = -ECONNREFUSED;
        if (ret < 0)
            return ret;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
            if (s < 0) {
                code = -errno;
                continue;
            }
            if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
                freeaddrinfo(res);
                tcp_nodelay(s);
                *fd = s;
                return 0;
            }
            code = -errno;
            close(s);
        }
        freeaddrinfo(res);
        return cpr_error_set_errno(errp, code, "cannot connect to tcp:%s:%d", cpr_addr_host(addr), cpr_addr_port(addr));
    }
    return cpr_error_set(errp, -EINVAL, "cpr_transport_connect: only unix and tcp addresses connect");
}

/* Starts `/bin/sh -c command` with its stdin (to_child) or stdout (!to_child) on a pipe;
 * returns our end of the pipe and the pid. */
static int spawn_command(const char *command, int to_child, int *our_end, int *pid_out, cpr_error **errp)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return cpr_error_set_errno(errp, -errno, "pipe for command '%s'", command);
    int child_end = to_child ? p[0] : p[1], ours = to_child ? p[1] : p[0];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, child_end, to_child ? 0 : 1);
    char *argv[] = { "sh", "-c", (char *)command, NULL };
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(child_end);
    if (rc != 0) {
        close(ours);
        return cpr_error_set_errno(errp, -rc, "cannot start command '%s'", command);
    }
    *our_end = ours;
    *pid_out = (int)pid;
    return 0;
}

static int open_file(const char *path, uint64_t offset, int write, int *fd_out, cpr_error **errp)
{
    int fd = open(path, write ? O_WRONLY | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "cannot open file:%s", path);
    /* Outgoing: keep what precedes the offset, drop any stale tail, write from the offset. */
    struct stat st;
    if (write && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ftruncate(fd, (off_t)offset) < 0) {
        int code = -errno;
        close(fd);
        return cpr_error_set_errno(errp, code, "cannot truncate file:%s at offset %" G_GUINT64_FORMAT, path,
                                   (guint64)offset);
    }
    if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        int code = -errno;
        close(fd);
        return cpr_error_set_errno(errp, code, "cannot seek file:%s to offset %" G_GUINT64_FORMAT, path, (guint64)offset);
    }
    *fd_out = fd;
    return 0;
}

/* Wraps an fd (owned unless `borrowed`) in a stream; a child pid is adopted for reaping. */
static int wrap(int fd, int write, int borrowed, int child, const char *command, cpr_stream **out, cpr_error **errp)
{
    unsigned int flags = borrowed ? 0 : CPR_STREAM_OWN_FD;
    int ret = write ? cpr_stream_new_fd_writer(fd, flags, out, errp) : cpr_stream_new_fd_reader(fd, flags, out, errp);
    if (ret < 0) {
        if (!borrowed)
            close(fd);
        return ret;
    }
    (*out)->child = child;
    (*out)->command = g_strdup(command);
    return 0;
}

/* A file written under a temporary name, renamed over the target by cpr_stream_close(). */
static int open_durable(const cpr_addr *addr, cpr_stream **out, cpr_error **errp)
{
    struct cpr_file_save *fs;
    int fd, ret = cpr_file_save_begin(cpr_addr_path(addr), cpr_addr_offset(addr), &fs, &fd, errp);
    if (ret < 0)
        return ret;
    if (ret == 1) /* not a regular file: nothing to replace */
        return cpr_transport_open_output(addr, out, errp);
    if ((ret = wrap(fd, 1, 0, 0, NULL, out, errp)) < 0) {
        cpr_file_save_discard(fs);
        return ret;
    }
    (*out)->file_save = fs;
    return 0;
}

void cpr_stream_file_no_sync(cpr_stream *s)
{
    if (s && s->file_save)
        cpr_file_save_no_sync(s->file_save);
}

int cpr_transport_open_output_durable(const cpr_addr *addr, cpr_stream **out, cpr_error **errp)
{
    if (addr && out && cpr_addr_transport(addr) == CPR_TRANSPORT_FILE)
        return open_durable(addr, out, errp);
    return cpr_transport_open_output(addr, out, errp);
}

CPR_API int cpr_transport_open_output(const cpr_addr *addr, cpr_stream **out, cpr_error **errp)
{
    if (!addr || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_transport_open_output: NULL argument");
    int fd, pid, ret;
    switch (cpr_addr_transport(addr)) {
    case CPR_TRANSPORT_FILE:
        if ((ret = open_file(cpr_addr_path(addr), cpr_addr_offset(addr), 1, &fd, errp)) < 0)
            return ret;
        return wrap(fd, 1, 0, 0, NULL, out, errp);
    case CPR_TRANSPORT_FD:
        return wrap(cpr_addr_fd(addr), 1, 1, 0, NULL, out, errp);
    case CPR_TRANSPORT_UNIX:
    case CPR_TRANSPORT_TCP:
        if ((ret = cpr_transport_connect(addr, &fd, errp)) < 0)
            return ret;
        return wrap(fd, 1, 0, 0, NULL, out, errp);
    case CPR_TRANSPORT_EXEC:
        if ((ret = spawn_command(cpr_addr_command(addr), 1, &fd, &pid, errp)) < 0)
            return ret;
        return wrap(fd, 1, 0, pid, cpr_addr_command(addr), out, errp);
    }
    return cpr_error_set(errp, -EINVAL, "cpr_transport_open_output: unknown transport %d", (int)cpr_addr_transport(addr));
}

CPR_API int cpr_listener_new(const cpr_addr *addr, unsigned int flags, cpr_listener **out, cpr_error **errp)
{
    if (!addr || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_listener_new: NULL argument");
    if (flags & ~CPR_LISTEN_SAME_UID)
        return cpr_error_set(errp, -EINVAL, "cpr_listener_new: unknown flags 0x%x", flags);
    g_autofree cpr_listener *l = g_new0(cpr_listener, 1);
    l->transport = cpr_addr_transport(addr);
    l->flags = flags;
    l->fd = -1;
    l->port = -1;
    l->source_fd = -1;
    int s = -1;
    switch (l->transport) {
    case CPR_TRANSPORT_FILE:
        l->path = g_strdup(cpr_addr_path(addr));
        l->offset = cpr_addr_offset(addr);
        break;
    case CPR_TRANSPORT_FD:
        l->source_fd = cpr_addr_fd(addr);
        break;
    case CPR_TRANSPORT_EXEC:
        l->command = g_strdup(cpr_addr_command(addr));
        break;
    case CPR_TRANSPORT_UNIX:
        /* The path appears once it listens (cpr_unix_listen): a peer may wait for the file. */
        s = cpr_unix_listen("unix socket", cpr_addr_path(addr), 0, errp);
        if (s < 0)
            return s;
        l->path = g_strdup(cpr_addr_path(addr));
        break;
    case CPR_TRANSPORT_TCP: {
        struct addrinfo *res;
        int ret = tcp_resolve(addr, 1, &res, errp), code = -EADDRNOTAVAIL;
        if (ret < 0)
            return ret;
        for (struct addrinfo *ai = res; ai && s < 0; ai = ai->ai_next) {
            s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
            if (s < 0) {
                code = -errno;
                continue;
            }
            int one = 1;
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(s, ai->ai_addr, ai->ai_addrlen) < 0 || listen(s, 8) < 0) {
                code = -errno;
                close(s);
                s = -1;
            }
        }
        freeaddrinfo(res);
        if (s < 0)
            return cpr_error_set_errno(errp, code, "cannot listen on tcp:%s:%d", cpr_addr_host(addr), cpr_addr_port(addr));
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(s, (struct sockaddr *)&ss, &len) == 0)
            l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
        break;
    }
    default:
        return cpr_error_set(errp, -EINVAL, "cpr_listener_new: unknown transport %d", (int)l->transport);
    }
    l->fd = s;
    *out = g_steal_pointer(&l);
    return 0;
}

CPR_API int cpr_listener_accept_fd(cpr_listener *l, int timeout_ms, int *fd, cpr_error **errp)
{
    if (!l || !fd)
        return cpr_error_set(errp, -EINVAL, "cpr_listener_accept_fd: NULL argument");
    if (l->fd < 0)
        return cpr_error_set(errp, -EINVAL, "cpr_listener_accept_fd: only unix and tcp listeners accept connections");
    for (;;) {
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        int rc = poll(&p, 1, timeout_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0)
            return cpr_error_set(errp, -ETIMEDOUT, "no connection on %s%s within %d ms",
                                 l->path ? "unix:" : "tcp port ", l->path ? l->path : "", timeout_ms);
        int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            return cpr_error_set_errno(errp, -errno, "accept on %s", l->path ? l->path : "tcp listener");
        }
        if (l->transport == CPR_TRANSPORT_TCP)
            tcp_nodelay(c);
        if ((l->flags & CPR_LISTEN_SAME_UID) && l->transport == CPR_TRANSPORT_UNIX) {
            struct ucred cred;
            socklen_t clen = sizeof(cred);
            if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 || cred.uid != geteuid()) {
                close(c);
                return cpr_error_set(errp, -EPERM, "unix:%s: refused a peer of uid %d (this process runs as uid %d)",
                                     l->path, (int)cred.uid, (int)geteuid());
            }
        }
        *fd = c;
        return 0;
    }
}

CPR_API int cpr_listener_accept(cpr_listener *l, int timeout_ms, cpr_stream **out, cpr_error **errp)
{
    if (!l || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_listener_accept: NULL argument");
    int fd, pid, ret;
    switch (l->transport) {
    case CPR_TRANSPORT_FILE:
        if ((ret = open_file(l->path, l->offset, 0, &fd, errp)) < 0)
            return ret;
        return wrap(fd, 0, 0, 0, NULL, out, errp);
    case CPR_TRANSPORT_FD:
        return wrap(l->source_fd, 0, 1, 0, NULL, out, errp);
    case CPR_TRANSPORT_EXEC:
        if ((ret = spawn_command(l->command, 0, &fd, &pid, errp)) < 0)
            return ret;
        return wrap(fd, 0, 0, pid, l->command, out, errp);
    default:
        if ((ret = cpr_listener_accept_fd(l, timeout_ms, &fd, errp)) < 0)
            return ret;
        return wrap(fd, 0, 0, 0, NULL, out, errp);
    }
}

CPR_API int cpr_listener_fd(const cpr_listener *l)
{
    return l ? l->fd : -1;
}

CPR_API int cpr_listener_port(const cpr_listener *l)
{
    return l ? l->port : -1;
}

CPR_API void cpr_listener_free(cpr_listener *l)
{
    if (!l)
        return;
    if (l->fd >= 0) {
        close(l->fd);
        if (l->transport == CPR_TRANSPORT_UNIX && l->path)
            unlink(l->path);
    }
    g_free(l->path);
    g_free(l->command);
    g_free(l);
}

CPR_API int cpr_stream_close(cpr_stream *s, cpr_error **errp)
{
    if (!s)
        return 0;
    int ret = 0;
    if (cpr_stream_is_writer(s) && !s->in_record && !s->abandoned)
        ret = cpr_stream_flush(s, errp);
    /* A durable file replaces the old one only when every byte made it (else the stream's
     * free removes the temporary file). */
    struct cpr_file_save *fs = s->file_save;
    s->file_save = NULL;
    if (fs && ret == 0 && s->in_record)
        ret = cpr_error_set(errp, -EBADMSG, "stream closed inside a record: the state file is not replaced");
    if (fs && ret == 0)
        ret = cpr_file_save_commit(fs, s->fd, errp);
    else
        cpr_file_save_discard(fs);
    int r2 = cpr_stream_reap_child(s, ret < 0 ? NULL : errp);
    cpr_stream_free(s);
    return ret < 0 ? ret : r2;
}
