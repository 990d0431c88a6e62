/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "core/error.h"

#include <cpr/mode.h>

static const char *const mode_names[CPR_MODE_COUNT] = {
    [CPR_MODE_NORMAL] = "normal",
    [CPR_MODE_CPR_REBOOT] = "cpr-reboot",
    [CPR_MODE_CPR_TRANSFER] = "cpr-transfer",
    [CPR_MODE_CPR_EXEC] = "cpr-exec",
};

CPR_API const char *cpr_mode_name(cpr_mode mode)
{
    if ((unsigned int)mode >= CPR_MODE_COUNT)
        return NULL;
    return mode_names[mode];
}

CPR_API int cpr_mode_from_name(const char *name, cpr_mode *out, cpr_error **errp)
{
    if (!name || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_mode_from_name: %s is NULL", name ? "out" : "name");
    for (int m = 0; m < CPR_MODE_COUNT; m++) {
        if (strcmp(name, mode_names[m]) == 0) {
            *out = (cpr_mode)m;
            return 0;
        }
    }
    return cpr_error_set(errp, -EINVAL,
                         "unknown migration mode '%s' (expected normal, cpr-reboot, cpr-transfer or cpr-exec)",
                         name);
}
