/* SPDX-License-Identifier: MIT */
/* Size-first structs: the _init() functions and the one rule for what callers pass in. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <cpr/migrate.h>
#include <cpr/savevm.h>

#include "core/sized.h"

int cpr_sized_read(void *out, size_t known, const void *in, size_t min_size, const char *what, cpr_error **errp)
{
    if (!in)
        return cpr_error_set(errp, -EINVAL, "%s is NULL", what);
    uint32_t size;
    memcpy(&size, in, sizeof(size));
    if (size < min_size)
        return cpr_error_set(errp, -EINVAL, "%s: size %u is smaller than its first version's %zu bytes", what, size,
                             min_size);
    /* A newer caller's members this library does not know must be unused (zero), or the caller
     * would believe a feature works that this library cannot give. */
    for (size_t off = known; off < size; off++)
        if (((const uint8_t *)in)[off])
            return cpr_error_set(errp, -EINVAL,
                                 "%s: byte %zu is set, but this library knows only its first %zu bytes "
                                 "(a member of a newer libcpr)", what, off, known);
    memcpy(out, in, size < known ? size : known);
    uint32_t k = (uint32_t)known;
    memcpy(out, &k, sizeof(k));
    return 0;
}

int cpr_sized_write(void *out, const void *full, size_t known, size_t min_size, const char *what,
                    cpr_error **errp)
{
    uint32_t size;
    memcpy(&size, out, sizeof(size));
    if (min_size < sizeof(size))
        min_size = sizeof(size);
    if (size < min_size)
        return cpr_error_set(errp, -EINVAL, "%s: size %u is smaller than its first version's %zu bytes "
                             "(set it with its _init function)", what, size, min_size);
    size_t n = size < known ? size : known;
    memcpy((char *)out + sizeof(size), (const char *)full + sizeof(size), n - sizeof(size));
    return 0;
}

CPR_API void cpr_vm_ops_init(cpr_vm_ops *ops)
{
    if (!ops)
        return;
    memset(ops, 0, sizeof(*ops));
    ops->size = sizeof(*ops);
}

CPR_API void cpr_live_ops_init(cpr_live_ops *ops)
{
    if (!ops)
        return;
    memset(ops, 0, sizeof(*ops));
    ops->size = sizeof(*ops);
}

CPR_API void cpr_migration_info_init(cpr_migration_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof(*info));
    info->size = sizeof(*info);
}
