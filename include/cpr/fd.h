/* SPDX-License-Identifier: MIT */
/*
 * Named file descriptors: a registry on the context mapping (name, id) to an fd, so that a
 * VMM's device fds survive cpr-transfer and cpr-exec. On the outgoing side the VMM saves the
 * fds its devices and backends hold; the library sends them with the cpr state. On the incoming
 * side the same (name, id) finds the preserved fd, and the device uses it instead of opening
 * its backend again (cpr_fd_open() does both in one call).
 *
 * Ownership: the registry never dups an fd.
 *  - An fd the VMM saves stays the VMM's: the registry only records its number. The VMM must
 *    delete the entry (cpr_fd_delete) before it closes the fd.
 *  - An fd that arrived from the old process (cpr_transfer_receive(), cpr_exec_state_adopt())
 *    is owned by the registry until the VMM claims it: the first cpr_fd_find() or cpr_fd_open()
 *    that returns it hands it to the VMM, and the entry then behaves as a saved one (it will be
 *    sent again on the next cpr). Received fds that nobody claimed are closed by
 *    cpr_fd_delete(), cpr_fd_close_unclaimed() and cpr_ctx_free(); they never leak.
 *
 * Names are 1..CPR_FD_NAME_MAX bytes, without NUL. Ids are any int (QEMU uses the device's
 * index, or 0).
 *
 * Thread safety: all calls are serialised on the context; any thread may call them. A
 * cpr_fd_foreach() callback may call cpr_fd_find() but must not save or delete entries.
 */
#ifndef CPR_FD_H
#define CPR_FD_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

/* Longest name accepted, in bytes. The cpr channel refuses longer names from a peer too. */
#define CPR_FD_NAME_MAX 255

/*
 * Records fd under (name, id). Saving the same fd again under the same key is a no-op.
 * Errors: -EINVAL (NULL ctx or name, empty name, fd < 0); -ENAMETOOLONG (name longer than
 * CPR_FD_NAME_MAX); -EEXIST when (name, id) already holds a different fd (the message names
 * the key and both fds; the registry is unchanged).
 *
 * The fd's file type is noted now (one fstat), so that sending the cpr state later costs no
 * system call per fd: saving promises that the number names this file until it is deleted or
 * resaved. A number reused for a file of another type without a resave is refused by the
 * receiving process, naming the entry. An fd that is not open is accepted here and reported
 * when the state is sent.
 */
CPR_API int cpr_fd_save(cpr_ctx *ctx, const char *name, int id, int fd, cpr_error **errp);

/*
 * Records fd under (name, id), replacing whatever the key held (use it when a device reopens
 * its backend). A replaced fd that the registry owned (received, unclaimed) is closed.
 * Errors as cpr_fd_save(), except that a taken key is not an error.
 */
CPR_API int cpr_fd_resave(cpr_ctx *ctx, const char *name, int id, int fd, cpr_error **errp);

/*
 * Returns the fd saved under (name, id), or -ENOENT when there is none (-EINVAL for bad
 * arguments). When the fd was received and not yet claimed, the caller now owns it.
 */
CPR_API int cpr_fd_find(cpr_ctx *ctx, const char *name, int id);

/*
 * Removes the entry (name, id). Closes the fd only when the registry owned it (received and
 * never claimed). Returns 0, or -ENOENT when there was no such entry.
 */
CPR_API int cpr_fd_delete(cpr_ctx *ctx, const char *name, int id);

/*
 * On the incoming side of a cpr mode: returns the preserved fd saved under (name, id) and
 * hands it to the caller. Otherwise opens path with flags (O_CLOEXEC is always added; mode is
 * used with O_CREAT), records the new fd under (name, id) and returns it; the caller owns it.
 * Errors: those of cpr_fd_save(), or the negative errno of open(2) with a message naming path.
 */
CPR_API int cpr_fd_open(cpr_ctx *ctx, const char *path, int flags, unsigned int mode,
                        const char *name, int id, cpr_error **errp);

/*
 * Closes every received fd that no cpr_fd_find()/cpr_fd_open() claimed, and removes those
 * entries. Call it once the new VMM has created its devices. Returns how many were closed.
 */
CPR_API int cpr_fd_close_unclaimed(cpr_ctx *ctx);

/* Called once per entry, in the order entries were saved; a non-zero return stops the walk. */
typedef int (*cpr_fd_fn)(const char *name, int id, int fd, void *opaque);

/*
 * Calls fn for every entry until fn returns non-zero, which is then returned; 0 after a full
 * walk. Walking does not claim received fds.
 */
CPR_API int cpr_fd_foreach(cpr_ctx *ctx, cpr_fd_fn fn, void *opaque);

/* Number of entries (0 for NULL). */
CPR_API size_t cpr_fd_count(cpr_ctx *ctx);

CPR_END_DECLS

#endif /* CPR_FD_H */
