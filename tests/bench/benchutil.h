/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the bench_*.c programs. */
#ifndef CPR_BENCHUTIL_H
#define CPR_BENCHUTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Monotonic time in seconds. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* qsort(3) comparator for doubles, ascending. */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "N", "NK", "NM" or "NG" (N may have a fraction; k, m, g as well) as a number of bytes. */
static inline uint64_t bench_parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'K': case 'k': return (uint64_t)(v * 1024);
    case 'M': case 'm': return (uint64_t)(v * 1024 * 1024);
    case 'G': case 'g': return (uint64_t)(v * 1024 * 1024 * 1024);
    default: return (uint64_t)v;
    }
}

#endif
