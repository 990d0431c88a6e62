/* SPDX-License-Identifier: MIT */
/*
 * libcpr errors: one idiom across the API.
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
 */
#ifndef CPR_ERROR_H
#define CPR_ERROR_H

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

CPR_END_DECLS

#endif /* CPR_ERROR_H */
