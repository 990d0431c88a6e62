/* SPDX-License-Identifier: MIT */
/* Private: numbers from user-facing strings (parameters, URIs). */
#ifndef CPR_CORE_PARSE_H
#define CPR_CORE_PARSE_H

#include <stdint.h>

/* A whole decimal number within [0, max]: no sign, blanks or trailing text, no overflow.
 * Returns 0 and writes *out, or -EINVAL. */
int cpr_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
