/* SPDX-License-Identifier: MIT */
/*
 * libcpr errors: one idiom across the API, for the library and for the VMM's callbacks.
 *
 * A failing call returns a negative errno and, when the caller passed a non-NULL
 * `cpr_error **errp` (with *errp == NULL), stores a new error object there. The message names
 * the thing at fault: the section, field, byte offset, fd, path, mode or parameter.
 *
 *     cpr_error *err = NULL;
 *     if (cpr_mode_from_name("cpr-rebot", &mode, &err) < 0) {
 *         fprintf(stderr, "%s\n", cpr_error_message(err));
 *         cpr_error_free(err);
 *     }
 *
 * Every callback the library calls with a `cpr_error **errp` (section hooks, custom fields,
 * progressive sections, notifiers, the errp variants of cpr_vm_ops) may fail with its own
 * message through the constructors below (since 1.2):
 *
 *     static int disk_pre_save(void *obj, cpr_error **errp)
 *     {
 *         struct disk *d = obj;
 *         if (fsync(d->fd) < 0)
 *             return cpr_error_set_errno(errp, -errno, "disk %s: flush failed", d->id);
 *         return 0;
 *     }
 *
 * The library then prefixes what it knows (section, instance, hook) and hands it to whoever
 * started the save or migration: "section 'disk' instance 0: pre_save: disk d0: flush failed:
 * Input/output error". A callback that fails without setting an error gets one made from its
 * return value, so a failure never reaches the caller without a message.
 *
 * Ownership: an error belongs to whoever holds the pointer; a callback's error belongs to the
 * library once the callback returns. Thread safety: an error object is not shared; any thread
 * may create, read or free the errors it owns.
 */
#ifndef CPR_ERROR_H
#define CPR_ERROR_H

#include <stdarg.h>

#include <cpr/common.h>

CPR_BEGIN_DECLS

/*
 * The error's code: a negative errno (-EINVAL for bad arguments or input, -EBADMSG for a
 * corrupt stream, -EPERM for a blocked migration, ...). Never 0 for a real error.
 * Returns -EINVAL when err is NULL. Thread safety: any thread, on an error it owns.
 */
CPR_API int cpr_error_code(const cpr_error *err);

/*
 * The human-readable message. The string belongs to err and lives as long as it does.
 * Returns "" when err is NULL. Thread safety: any thread, on an error it owns.
 */
CPR_API const char *cpr_error_message(const cpr_error *err);

/* Frees an error object. NULL is accepted. */
CPR_API void cpr_error_free(cpr_error *err);

/* ---- constructors (1.2) ------------------------------------------------------------------ */

/*
 * Creates an error with `code` and the printf-style message and stores it in *errp, so that a
 * failure path reads `return cpr_error_set(errp, -EIO, "disk %s: flush failed", id);`.
 * Returns code: a negative errno; a code >= 0 is stored and returned as -EINVAL, so that the
 * result always reads as a failure. When errp is NULL nothing is stored (the caller did not
 * ask); when *errp already holds an error, that first error is kept and the new one dropped.
 * The message is copied; the caller owns the stored error (cpr_error_free()).
 * Thread safety: any thread, on an errp it owns.
 */
CPR_API int cpr_error_set(cpr_error **errp, int code, const char *fmt, ...) CPR_PRINTF(3, 4);

/* As cpr_error_set(), with the format's arguments as a va_list (for wrappers). */
CPR_API int cpr_error_setv(cpr_error **errp, int code, const char *fmt, va_list ap) CPR_PRINTF(3, 0);

/*
 * As cpr_error_set(), with the description of errno `-code` appended after ": "
 * ("disk d0: flush failed: Input/output error").
 */
CPR_API int cpr_error_set_errno(cpr_error **errp, int code, const char *fmt, ...) CPR_PRINTF(3, 4);

/*
 * Prepends the printf-style PREFIX and ": " to the message of *errp, to add context while an
 * error travels up ("disk d0: " + "flush failed"). Does nothing when errp or *errp is NULL;
 * the code does not change. Thread safety: any thread, on an errp it owns.
 */
CPR_API void cpr_error_prefix(cpr_error **errp, const char *fmt, ...) CPR_PRINTF(2, 3);

/*
 * Hands an error received from a call up to the caller's errp: moves src into *dst when dst
 * is not NULL and *dst is NULL; otherwise frees src (the first error is kept). After the call
 * src belongs to dst or is gone. Returns src's code, or 0 when src is NULL, so that a failure
 * path reads `return cpr_error_propagate(errp, local);`. Thread safety: any thread, on errors
 * it owns.
 */
CPR_API int cpr_error_propagate(cpr_error **dst, cpr_error *src);

CPR_END_DECLS

#endif /* CPR_ERROR_H */
