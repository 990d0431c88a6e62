/* SPDX-License-Identifier: MIT */
/*
 * cpr-exec: the old VMM execs the new binary itself, and the named fds (cpr/fd.h) and shared
 * RAM blocks (cpr/ram.h) survive the exec in place. The cpr state goes into a memfd whose fd
 * number travels in the environment variable CPR_EXEC_STATE_ENV; just before exec the library
 * clears close-on-exec on that memfd and on every preserved fd, and restores the flags if the
 * exec fails, so the old VMM can resume its guest with nothing changed.
 *
 * In the new image, call cpr_exec_state_adopt() at start-up, before creating RAM blocks or
 * devices: it reads the state, checks each fd, installs them in the context (as
 * cpr_transfer_receive() does), sets the mode to cpr-exec, closes the memfd and removes the
 * variable from the environment.
 *
 * Thread safety: cpr_exec() replaces the whole process; other threads must not open or close
 * fds meanwhile. cpr_exec_state_adopt() calls unsetenv(): call it before starting threads.
 */
#ifndef CPR_EXEC_H
#define CPR_EXEC_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

/* The environment variable that carries the cpr state's fd number across exec. */
#define CPR_EXEC_STATE_ENV "CPR_EXEC_STATE_FD"

/*
 * Saves the cpr state of ctx and execs argv[0] (searched in PATH) with argv and the current
 * environment plus CPR_EXEC_STATE_ENV. Returns only on failure, with every fd flag restored
 * and the state memfd closed: the errno of execvp naming the command (-ENOENT, -EACCES, ...),
 * -EINVAL for an empty argv, or an error collecting the state (a saved fd that is not open).
 * Since 1.2 it first makes every check the new image's adoption makes (each fd open and of
 * the type it was saved with: -EBADF, -EPROTO; at most 65,536 entries: -E2BIG), and leaves a
 * rollback guardian behind the exec that execs this executable back, with argv[1..] and the
 * same state, if the new image fails before it commits (docs/cpr-channel.md, "Rollback"):
 * argv[0] must therefore be a version of the same VMM, taking the same arguments. Failing to
 * set the guardian up (no /proc, no pidfd) is an error too, before the exec.
 */
CPR_API int cpr_exec(cpr_ctx *ctx, const char *const *argv, cpr_error **errp);

/*
 * As cpr_exec(), with a command line split into words as a shell would (quotes honoured, no
 * expansion), as the cpr-exec-command parameter holds it. -EINVAL for an unparsable command.
 */
CPR_API int cpr_exec_command(cpr_ctx *ctx, const char *command, cpr_error **errp);

/*
 * In a new image: adopts the cpr state left by cpr_exec(). It does not speak the rollback
 * protocol: the old image's guardian sees the state read and stands down (no rollback);
 * cpr_incoming_cpr_load() adopts with it. Returns 1 when a state was adopted,
 * 0 when the process was not started by cpr-exec (no variable). On failure every fd the state
 * lists (when it can be decoded) is closed, the variable is removed, and the context is
 * unchanged. As cpr_transfer_receive(), it checks 2,048 fds or more on two threads, the second
 * joined before it returns.
 * Errors: -EINVAL (a malformed variable), -EBADMSG (corrupt state), -EPROTO (an fd of the
 * wrong type or size, or not open), -EEXIST (a name already registered).
 */
CPR_API int cpr_exec_state_adopt(cpr_ctx *ctx, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_EXEC_H */
