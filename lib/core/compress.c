/* SPDX-License-Identifier: MIT */
/* zstd, one frame per buffer; or, built without libzstd, the error that says so. */
#include <errno.h>

#include <glib.h>

#include "core/compress.h"
#include "core/error.h"

#ifdef CPR_HAVE_ZSTD
#include <zstd.h>

struct cpr_zstd {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
};

int cpr_zstd_available(void)
{
    return 1;
}

int cpr_zstd_new(int level, cpr_zstd **out, cpr_error **errp)
{
    cpr_zstd *z = g_new0(cpr_zstd, 1);
    z->c = ZSTD_createCCtx();
    z->d = ZSTD_createDCtx();
    if (!z->c || !z->d || ZSTD_isError(ZSTD_CCtx_setParameter(z->c, ZSTD_c_compressionLevel, level))) {
        cpr_zstd_free(z);
        return cpr_error_set(errp, -ENOMEM, "zstd: cannot create a context at level %d", level);
    }
    /* Each frame says its size, so the reader can refuse one that does not match. */
    ZSTD_CCtx_setParameter(z->c, ZSTD_c_contentSizeFlag, 1);
    *out = z;
    return 0;
}

void cpr_zstd_free(cpr_zstd *z)
{
    if (!z)
        return;
    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    g_free(z);
}

size_t cpr_zstd_bound(size_t len)
{
    return ZSTD_compressBound(len);
}

ssize_t cpr_zstd_compress(cpr_zstd *z, void *dst, size_t cap, const void *src, size_t len, cpr_error **errp)
{
    size_t n = ZSTD_compress2(z->c, dst, cap, src, len);
    if (ZSTD_isError(n))
        return cpr_error_set(errp, -EIO, "zstd: compressing %zu bytes: %s", len, ZSTD_getErrorName(n));
    return (ssize_t)n;
}

int cpr_zstd_decompress(cpr_zstd *z, void *dst, size_t want, const void *src, size_t len, cpr_error **errp)
{
    unsigned long long size = ZSTD_getFrameContentSize(src, len);
    if (size != want)
        return cpr_error_set(errp, -EBADMSG, "zstd: the frame holds %s bytes where %zu were due",
                             size == ZSTD_CONTENTSIZE_ERROR ? "an unreadable number of" :
                             size == ZSTD_CONTENTSIZE_UNKNOWN ? "an unknown number of" : "another number of", want);
    size_t n = ZSTD_decompressDCtx(z->d, dst, want, src, len);
    if (ZSTD_isError(n))
        return cpr_error_set(errp, -EBADMSG, "zstd: corrupt frame: %s", ZSTD_getErrorName(n));
    if (n != want)
        return cpr_error_set(errp, -EBADMSG, "zstd: the frame gave %zu bytes where %zu were due", n, want);
    return 0;
}

#else /* !CPR_HAVE_ZSTD */

int cpr_zstd_available(void)
{
    return 0;
}

int cpr_zstd_new(int level, cpr_zstd **out, cpr_error **errp)
{
    *out = NULL;
    return cpr_error_set(errp, -ENOTSUP, "libcpr was built without zstd");
}

void cpr_zstd_free(cpr_zstd *z)
{
}

size_t cpr_zstd_bound(size_t len)
{
    return 0;
}

ssize_t cpr_zstd_compress(cpr_zstd *z, void *dst, size_t cap, const void *src, size_t len, cpr_error **errp)
{
    return cpr_error_set(errp, -ENOTSUP, "libcpr was built without zstd");
}

int cpr_zstd_decompress(cpr_zstd *z, void *dst, size_t want, const void *src, size_t len, cpr_error **errp)
{
    return cpr_error_set(errp, -ENOTSUP, "libcpr was built without zstd");
}

#endif
