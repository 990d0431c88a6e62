/* SPDX-License-Identifier: MIT */
/* Private error helpers. The constructors (cpr_error_set, _prefix, _propagate) are public:
 * cpr/error.h. */
#ifndef CPR_CORE_ERROR_H
#define CPR_CORE_ERROR_H

#include <cpr/error.h>

/*
 * The one shape of a VMM callback's failure. ret is what the callback returned, *hook_err what
 * it stored through the errp the library gave it (NULL when nothing); the helper takes it
 * (*hook_err is NULL after the call). Passed by address so that a call written
 * `cpr_error_from_hook(errp, fn(..., &herr), &herr, ...)` reads herr after fn ran. When
 * ret < 0: stores in *errp the callback's own message, or, when it left none, the description
 * of errno -ret, either prefixed with the printf-style WHERE ("section 'disk' instance 0:
 * pre_save: ..."), with code ret; returns ret. When ret >= 0 the callback succeeded: its error,
 * if any, is freed (an error set on success means nothing) and ret returned.
 */
int cpr_error_from_hook(cpr_error **errp, int ret, cpr_error **hook_err, const char *fmt, ...) CPR_PRINTF(4, 5);

#endif
