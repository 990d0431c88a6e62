/* SPDX-License-Identifier: MIT */
/* cpr-transfer's commit signal: an eventfd shared by the old and the new process. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/error.h"
#include "handover/commit_signal.h"

int cpr_commit_signal_new(cpr_error **errp)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "cpr-transfer commit signal: eventfd");
    return fd;
}

int cpr_commit_signal_check(int fd, cpr_error **errp)
{
    /* An eventfd has no file type of its own (S_IFMT 0): its /proc link names it. */
    char path[64], target[64] = "";
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n > 0)
        target[n] = '\0';
    if (n <= 0)
        return 1; /* a /proc this process cannot read: it cannot tell */
    if (!strcmp(target, "anon_inode:[eventfd]"))
        return 0;
    return cpr_error_set(errp, -EPROTO, "cpr channel: the commit signal the old process sent (fd %d) "
                         "is not an eventfd but %s", fd, target);
}

int cpr_commit_signal_set(int fd, cpr_error **errp)
{
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof(one));
    if (n != (ssize_t)sizeof(one))
        return cpr_error_set_errno(errp, n < 0 ? -errno : -EIO, "cpr-transfer commit signal: write");
    return 0;
}

int cpr_commit_signal_is_set(int fd)
{
    /* Readable means a non-zero count: poll, so that a second look sees the same. */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n;
    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    return n == 1 && (p.revents & POLLIN);
}
