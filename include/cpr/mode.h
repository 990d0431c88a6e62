/* SPDX-License-Identifier: MIT */
/*
 * Migration modes, with QEMU's QAPI names (MigMode):
 *
 *   normal        live migration or snapshot: RAM is copied (precopy with dirty tracking)
 *   cpr-reboot    save to a file, quit, reboot the host, restart with -incoming and load;
 *                 RAM stays in shared persistent memory when x-ignore-shared is set
 *   cpr-transfer  a new process on the same host receives RAM memfds and device fds over a
 *                 second "cpr" channel (UNIX socket, SCM_RIGHTS) before creating devices
 *   cpr-exec      like cpr-transfer, but the old process execs the new binary itself
 *
 * Values are stable: new modes get new numbers, existing numbers never change meaning.
 */
#ifndef CPR_MODE_H
#define CPR_MODE_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

typedef enum cpr_mode {
    CPR_MODE_NORMAL = 0,
    CPR_MODE_CPR_REBOOT = 1,
    CPR_MODE_CPR_TRANSFER = 2,
    CPR_MODE_CPR_EXEC = 3,
} cpr_mode;

/* Number of modes this header knows; a later release may know more. */
#define CPR_MODE_COUNT 4

/* A set of modes, as a bitmask of CPR_MODE_BIT(mode). */
#define CPR_MODE_BIT(m) (1u << (unsigned int)(m))
/* Shorthand: every mode, including modes added by later releases. */
#define CPR_MODES_ALL 0xffffffffu
/* Shorthand: normal migration only (e.g. local storage, which cpr-reboot does not need to copy). */
#define CPR_MODES_NORMAL_ONLY CPR_MODE_BIT(CPR_MODE_NORMAL)

/*
 * Returns the QAPI name of a mode ("normal", "cpr-reboot", ...), a static string,
 * or NULL when mode is out of range. Thread safety: any thread.
 */
CPR_API const char *cpr_mode_name(cpr_mode mode);

/*
 * Parses a QAPI mode name. On success writes *out and returns 0; otherwise -EINVAL with an
 * error that names the string and lists the valid modes. Thread safety: any thread.
 */
CPR_API int cpr_mode_from_name(const char *name, cpr_mode *out, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_MODE_H */
