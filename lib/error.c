/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include <glib.h>

#include "internal/error.h"

struct cpr_error {
    int code;
    char *message;
};

static int error_store(cpr_error **errp, int code, char *message)
{
    /* A code of 0 would read as success to callers that test `< 0`. */
    if (code >= 0)
        code = -EINVAL;
    if (!errp || *errp) {
        g_free(message);
        return code;
    }
    cpr_error *err = g_new(cpr_error, 1);
    err->code = code;
    err->message = message;
    *errp = err;
    return code;
}

int cpr_error_set(cpr_error **errp, int code, const char *fmt, ...)
{
    if (!errp || *errp)
        return code >= 0 ? -EINVAL : code;
    va_list ap;
    va_start(ap, fmt);
    char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return error_store(errp, code, message);
}

int cpr_error_set_errno(cpr_error **errp, int code, const char *fmt, ...)
{
    if (!errp || *errp)
        return code >= 0 ? -EINVAL : code;
    va_list ap;
    va_start(ap, fmt);
    char *head = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *message = g_strdup_printf("%s: %s", head, g_strerror(code < 0 ? -code : code));
    g_free(head);
    return error_store(errp, code, message);
}

void cpr_error_prefix(cpr_error **errp, const char *fmt, ...)
{
    if (!errp || !*errp)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *message = g_strdup_printf("%s: %s", prefix, (*errp)->message);
    g_free(prefix);
    g_free((*errp)->message);
    (*errp)->message = message;
}

int cpr_error_propagate(cpr_error **dst, cpr_error *src)
{
    if (!src)
        return 0;
    int code = src->code;
    if (dst && !*dst)
        *dst = src;
    else
        cpr_error_free(src);
    return code;
}

CPR_API int cpr_error_code(const cpr_error *err)
{
    return err ? err->code : -EINVAL;
}

CPR_API const char *cpr_error_message(const cpr_error *err)
{
    return err ? err->message : "";
}

CPR_API void cpr_error_free(cpr_error *err)
{
    if (!err)
        return;
    g_free(err->message);
    g_free(err);
}
