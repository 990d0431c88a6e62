/* SPDX-License-Identifier: MIT */
/*
 * libcpr: shared definitions for every public header.
 *
 * Conventions that hold across the whole API (see docs/abi.md):
 *  - Functions return 0 (or a non-negative count) on success and a negative errno on failure.
 *  - Functions that can fail take a last argument `cpr_error **errp`. When it is not NULL and
 *    the call fails, *errp receives a new error object that names the thing at fault; the
 *    caller owns it and frees it with cpr_error_free(). *errp must be NULL on entry.
 *  - Out-parameters are written only on success.
 *  - Destructors (cpr_*_free) accept NULL.
 *  - Callbacks receive the user's `void *opaque` as their last argument.
 *  - Strings returned as `char *` are owned by the caller and released with cpr_free().
 */
#ifndef CPR_COMMON_H
#define CPR_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define CPR_VERSION_MAJOR 1
#define CPR_VERSION_MINOR 2
#define CPR_VERSION_PATCH 0
/* Encoded as 0xMMmmpp, so that versions compare as integers. */
#define CPR_VERSION_NUMBER ((CPR_VERSION_MAJOR << 16) | (CPR_VERSION_MINOR << 8) | CPR_VERSION_PATCH)

#if defined(__GNUC__) || defined(__clang__)
# define CPR_API __attribute__((visibility("default")))
# define CPR_DEPRECATED(msg) __attribute__((deprecated(msg)))
# define CPR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
# define CPR_API
# define CPR_DEPRECATED(msg)
# define CPR_PRINTF(f, a)
#endif

#ifdef __cplusplus
# define CPR_BEGIN_DECLS extern "C" {
# define CPR_END_DECLS }
#else
# define CPR_BEGIN_DECLS
# define CPR_END_DECLS
#endif

CPR_BEGIN_DECLS

/* The context every other object hangs off: see cpr/ctx.h. */
typedef struct cpr_ctx cpr_ctx;
/* An error with a code and a message: see cpr/error.h. */
typedef struct cpr_error cpr_error;

/*
 * Returns the version of the library that is running, encoded as CPR_VERSION_NUMBER is.
 * Compare it with CPR_VERSION_NUMBER to detect a header/library mismatch.
 * Thread safety: any thread, any time.
 */
CPR_API unsigned int cpr_version(void);

/*
 * Releases memory the library handed to the caller (strings returned as `char *`).
 * NULL is accepted. Thread safety: any thread.
 */
CPR_API void cpr_free(void *ptr);

CPR_END_DECLS

#endif /* CPR_COMMON_H */
