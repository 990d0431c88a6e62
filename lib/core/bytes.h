/* SPDX-License-Identifier: MIT */
/* Private: little-endian integers of any width up to 8 bytes, as the format stores them. */
#ifndef CPR_CORE_BYTES_H
#define CPR_CORE_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* The n-byte (n <= 8) little-endian unsigned integer at p. */
static inline uint64_t cpr_le_get(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Stores v as an n-byte (n <= 8) little-endian unsigned integer at p; returns n. */
static inline size_t cpr_le_put(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return n;
}

#endif
