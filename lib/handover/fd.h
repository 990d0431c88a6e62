/* SPDX-License-Identifier: MIT */
/* Private: the fd registry as the cpr state uses it: file types, and installing the fds that
 * arrived from the old process. */
#ifndef CPR_HANDOVER_FD_H
#define CPR_HANDOVER_FD_H

#include <glib.h>

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

/*
 * An fd's file type (st_mode & S_IFMT), or -errno. cpr_fd_save() takes it when the VMM saves
 * the fd, so that sending the cpr state costs no system call per fd (saving promises that the
 * number keeps naming this file until it is deleted or resaved); when it failed then, the send
 * looks again and reports the fd.
 */
int cpr_fd_type(int fd);

/*
 * cpr_fd_type() of each of n fds, begun before it is needed: from 2,048 fds on, a second
 * thread starts on them at once. fd must stay valid, and its fds open, until
 * cpr_fd_scan_finish(), which waits for the scan (the calling thread helps), frees it and
 * returns the types (g_free).
 */
typedef struct cpr_fd_scan cpr_fd_scan;
cpr_fd_scan *cpr_fd_scan_start(const int *fd, guint n);
int *cpr_fd_scan_finish(cpr_fd_scan *scan);

/* cpr_fd_foreach with each entry's file type as recorded when it was saved (< 0: unknown). */
typedef int (*cpr_fd_typed_fn)(const char *name, int id, int fd, int type, void *opaque);
int cpr_fd_foreach_typed(cpr_ctx *ctx, cpr_fd_typed_fn fn, void *opaque);

/* 1 when (name, id) has an entry, without claiming it. */
int cpr_fd_exists(cpr_ctx *ctx, const char *name, int id);
#endif
