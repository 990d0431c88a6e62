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
 * Records a received fd under (name, id), owned by the registry until claimed (see cpr/fd.h);
 * type is its st_mode & S_IFMT, already checked by the caller. -EEXIST when the key is taken;
 * fd is then still the caller's to close.
 */
int cpr_fd_install_received(cpr_ctx *ctx, const char *name, int id, int fd, int type, cpr_error **errp);

/* cpr_fd_foreach with each entry's file type as recorded when it was saved (-1: unknown). */
typedef int (*cpr_fd_typed_fn)(const char *name, int id, int fd, int type, void *opaque);
int cpr_fd_foreach_typed(cpr_ctx *ctx, cpr_fd_typed_fn fn, void *opaque);

/* 1 when (name, id) has an entry, without claiming it. */
int cpr_fd_exists(cpr_ctx *ctx, const char *name, int id);
#endif
