/* SPDX-License-Identifier: MIT */
/*
 * Private: zstd compression of one buffer into one frame and back (multifd-compression).
 * libzstd is optional at build time: without it every call fails with "libcpr was built
 * without zstd". One cpr_zstd per thread: a context is not thread safe.
 */
#ifndef CPR_CORE_COMPRESS_H
#define CPR_CORE_COMPRESS_H

#include <stddef.h>
#include <sys/types.h>

#include <cpr/error.h>

typedef struct cpr_zstd cpr_zstd;

/* 1 when libcpr was built with libzstd. */
int cpr_zstd_available(void);

/* A compression and decompression context; level 1 to 20 (compress only). -ENOTSUP without
 * zstd, with the error that says so. */
int cpr_zstd_new(int level, cpr_zstd **out, cpr_error **errp);
void cpr_zstd_free(cpr_zstd *z);

/* The largest frame compressing len bytes can give (0 without zstd). */
size_t cpr_zstd_bound(size_t len);

/* src (len bytes) into one frame at dst (cap bytes). Returns the frame's size or an error. */
ssize_t cpr_zstd_compress(cpr_zstd *z, void *dst, size_t cap, const void *src, size_t len, cpr_error **errp);

/* One frame into exactly `want` bytes at dst: a frame that is corrupt, or holds more or fewer
 * bytes, is refused (-EBADMSG). */
int cpr_zstd_decompress(cpr_zstd *z, void *dst, size_t want, const void *src, size_t len, cpr_error **errp);

#endif
