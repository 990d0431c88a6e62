/* SPDX-License-Identifier: MIT */
/* Private error helpers. The constructors (cpr_error_set, _prefix, _propagate) are public:
 * cpr/error.h. */
#ifndef CPR_INTERNAL_ERROR_H
#define CPR_INTERNAL_ERROR_H

#include <cpr/error.h>

/*
 * The one shape of a VMM callback's failure. ret is what the callback returned, err what it
 * stored through the errp the library gave it (NULL when nothing). When ret < 0: stores in
 * *errp the callback's own message, or, when it left none, the description of errno -ret,
 * either prefixed with the printf-style WHERE ("section 'disk' instance 0: pre_save: ..."),
 * with code ret; returns ret. When ret >= 0 the callback succeeded: err is freed (an error
 * set on success means nothing) and ret returned.
 */
int cpr_error_from_hook(cpr_error **errp, int ret, cpr_error *err, const char *fmt, ...) CPR_PRINTF(4, 5);

#endif
