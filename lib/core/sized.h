/* SPDX-License-Identifier: MIT */
/* Private: the one check of a size-first struct a caller passes in (docs/abi.md, "How structs
 * grow"). */
#ifndef CPR_CORE_SIZED_H
#define CPR_CORE_SIZED_H

#include <stddef.h>

#include <cpr/error.h>

/*
 * Reads the caller's struct `in`, whose first member is its uint32_t size, into the library's
 * `out` of `known` bytes: copies the first min(size, known) bytes and leaves the rest of out as
 * the caller of this function set it (zero, or the defaults that mean "the behaviour before
 * this member existed"); out's size becomes known. Refuses with -EINVAL, naming `what` (the
 * struct's type name): in NULL, a size below `min_size` (the struct's first version), and a
 * non-zero byte past `known` (a member of a newer header this library cannot honour), by its
 * offset. out is unspecified after a refusal.
 */
int cpr_sized_read(void *out, size_t known, const void *in, size_t min_size, const char *what, cpr_error **errp);

/*
 * Fills the caller's size-first struct `out` from the library's `full` of `known` bytes: the
 * members after the size, as many as the caller's size holds (an older caller's struct is
 * shorter); out's size is kept. Refuses with -EINVAL, naming `what`, an out whose size is
 * below `min_size` (its first version; at least the size member), without writing to it.
 */
int cpr_sized_write(void *out, const void *full, size_t known, size_t min_size, const char *what,
                    cpr_error **errp);

#endif
