/* SPDX-License-Identifier: MIT */
/*
 * The command behind an exec: channel: waits that a cancel cuts short and that can be bounded,
 * and a stop that always ends with the command reaped, so that neither a cancel nor a VMM's
 * teardown waits for a command that stopped reading or never exits.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <glib.h>

#include "channel/child.h"

/* A child's exit has no fd to poll (short of pidfds, which a VMM's own SIGCHLD handling may
 * not expect): check it this often, waiting on the cancel fd in between. */
#define CHILD_POLL_MS 5

int cpr_child_wait(pid_t pid, int timeout_ms, int cancel_fd, int *status)
{
    int64_t deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -errno;
        int wait_ms = CHILD_POLL_MS;
        if (deadline >= 0) {
            int64_t left = deadline - g_get_monotonic_time();
            if (left <= 0)
                return 0;
            wait_ms = (int)MIN((int64_t)CHILD_POLL_MS, (left + 999) / 1000);
        }
        struct pollfd p = { .fd = cancel_fd, .events = POLLIN };
        if (poll(&p, 1, wait_ms) > 0 && (p.revents & POLLIN))
            return -ECANCELED;
    }
}

int cpr_child_stop(pid_t pid)
{
    int status = 0;
    kill(pid, SIGTERM);
    kill(pid, SIGCONT);
    int r = cpr_child_wait(pid, CPR_CHILD_GRACE_MS, -1, &status);
    if (r == 1)
        return status;
    if (r < 0)
        return r;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return status;
}
