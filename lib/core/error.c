/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include <glib.h>

#include "core/error.h"

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

CPR_API int cpr_error_setv(cpr_error **errp, int code, const char *fmt, va_list ap)
{
    if (!errp || *errp)
        return code >= 0 ? -EINVAL : code;
    return error_store(errp, code, g_strdup_vprintf(fmt, ap));
}

CPR_API int cpr_error_set(cpr_error **errp, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int ret = cpr_error_setv(errp, code, fmt, ap);
    va_end(ap);
    return ret;
}

CPR_API int cpr_error_set_errno(cpr_error **errp, int code, const char *fmt, ...)
{
    if (!errp || *errp)
        return code >= 0 ? -EINVAL : code;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *head = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return error_store(errp, code, g_strdup_printf("%s: %s", head, g_strerror(code < 0 ? -code : code)));
}

static void prefix_v(cpr_error *err, const char *fmt, va_list ap)
{
    g_autofree char *prefix = g_strdup_vprintf(fmt, ap);
    char *message = g_strdup_printf("%s: %s", prefix, err->message);
    g_free(err->message);
    err->message = message;
}

CPR_API void cpr_error_prefix(cpr_error **errp, const char *fmt, ...)
{
    if (!errp || !*errp)
        return;
    va_list ap;
    va_start(ap, fmt);
    prefix_v(*errp, fmt, ap);
    va_end(ap);
}

CPR_API int cpr_error_propagate(cpr_error **dst, cpr_error *src)
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

int cpr_error_from_hook(cpr_error **errp, int ret, cpr_error **hook_err, const char *fmt, ...)
{
    cpr_error *err = *hook_err;
    *hook_err = NULL;
    if (ret >= 0 || !errp || *errp) {
        cpr_error_free(err);
        return ret;
    }
    if (!err)
        error_store(&err, ret, g_strdup(g_strerror(-ret)));
    err->code = ret; /* what the callback returned is what the caller gets */
    va_list ap;
    va_start(ap, fmt);
    prefix_v(err, fmt, ap);
    va_end(ap);
    *errp = err;
    return ret;
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
