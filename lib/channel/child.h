/* SPDX-License-Identifier: MIT */
/* Private: waiting for and stopping the command of an exec: channel (lib/channel/child.c). */
#ifndef CPR_CHANNEL_CHILD_H
#define CPR_CHANNEL_CHILD_H

#include <sys/types.h>

/* How long a command gets after SIGTERM before SIGKILL, and how long a reader's command gets
 * to exit on its own once the stream was read (docs/migration.md, "Cancel"). */
#define CPR_CHILD_GRACE_MS 1000

/*
 * Waits for pid to exit, forever (timeout_ms < 0) or up to timeout_ms; a readable cancel_fd
 * (-1: none) ends the wait early. Returns 1 with *status once it exited (reaped), 0 on timeout,
 * -ECANCELED on cancel, or waitpid's negative errno.
 */
int cpr_child_wait(pid_t pid, int timeout_ms, int cancel_fd, int *status);

/*
 * Ends pid and reaps it: SIGTERM (with SIGCONT, so that a stopped command acts on it), then
 * SIGKILL if it has not exited CPR_CHILD_GRACE_MS later. Returns its wait status, or a
 * negative errno when it could not be reaped.
 */
int cpr_child_stop(pid_t pid);

#endif
