/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include <glib.h>

#include "core/parse.h"

int cpr_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !g_ascii_isdigit(*s))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}
