/* SPDX-License-Identifier: MIT */
/* Private: how the cpr channel and cpr-exec install fds that arrived from the old process. */
#ifndef CPR_INTERNAL_FD_H
#define CPR_INTERNAL_FD_H

#include <cpr/fd.h>

/*
 * Checks a name from the VMM or from a peer: 1..CPR_FD_NAME_MAX bytes (-EINVAL or
 * -ENAMETOOLONG naming `what`). Shared with the RAM block table, whose names follow the same rule.
 */
int cpr_name_check(const char *name, size_t len, const char *what, cpr_error **errp);

/*
 * Records a received fd under (name, id), owned by the registry until claimed (see cpr/fd.h).
 * -EEXIST when the key is taken; fd is then still the caller's to close.
 */
int cpr_fd_install_received(cpr_ctx *ctx, const char *name, int id, int fd, cpr_error **errp);



/* 1 when (name, id) has an entry, without claiming it. */
int cpr_fd_exists(cpr_ctx *ctx, const char *name, int id);
#endif
