/* SPDX-License-Identifier: MIT */
/*
 * Private: cpr-transfer's commit signal (docs/migration.md, "The commit signal"). An eventfd the
 * old process makes and sends with the cpr state; the new process adds 1 to it at its commit,
 * then starts its guest, and only then sends the acknowledgement byte on main. The old process
 * reads the signal only when main ends without that byte: set, the new process committed (and
 * then died), so the old one must not resume. The signal itself wakes nobody.
 */
#ifndef CPR_HANDOVER_COMMIT_SIGNAL_H
#define CPR_HANDOVER_COMMIT_SIGNAL_H

#include <cpr/error.h>

/* Old process: a new, unset signal (close-on-exec, non-blocking), or a negative errno. */
int cpr_commit_signal_new(cpr_error **errp);
/* New process: 0 when fd is an eventfd, 1 when this process cannot tell (its /proc is not
 * readable: the signal is then not used), else -EPROTO naming what fd is. */
int cpr_commit_signal_check(int fd, cpr_error **errp);
/* New process, at its commit: sets the signal. 0, or a negative errno. */
int cpr_commit_signal_set(int fd, cpr_error **errp);
/* Old process: 1 when the new process set the signal, else 0. Reads nothing away. */
int cpr_commit_signal_is_set(int fd);

#endif
