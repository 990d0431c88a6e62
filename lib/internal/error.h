/* SPDX-License-Identifier: MIT */
/* Private error helpers: how lib/ builds the cpr_error objects that callers receive. */
#ifndef CPR_INTERNAL_ERROR_H
#define CPR_INTERNAL_ERROR_H

#include <cpr/error.h>

/*
 * Stores a new error in *errp (when errp is not NULL and *errp is NULL) and returns code, so
 * that a failure path reads `return cpr_error_set(errp, -EINVAL, "...", ...);`.
 * code must be a negative errno.
 */
int cpr_error_set(cpr_error **errp, int code, const char *fmt, ...) CPR_PRINTF(3, 4);

/* As cpr_error_set, with the message of errno `-code` appended after ": ". */
int cpr_error_set_errno(cpr_error **errp, int code, const char *fmt, ...) CPR_PRINTF(3, 4);

/* Prepends "PREFIX: " to the message of *errp, when there is one. */
void cpr_error_prefix(cpr_error **errp, const char *fmt, ...) CPR_PRINTF(2, 3);

/*
 * Moves src into *dst when dst is non-NULL and *dst is NULL; otherwise frees src.
 * Returns src's code (0 when src is NULL).
 */
int cpr_error_propagate(cpr_error **dst, cpr_error *src);

#endif
