/* SPDX-License-Identifier: MIT */
/* Private: the bookkeeping of a short writev(2) on an iovec array. */
#ifndef CPR_CORE_IOV_H
#define CPR_CORE_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Drops `done` written bytes from the front of (*iov, *n): whole entries first, then the front
 * of the one the write stopped in. The caller's array is changed in place. */
static inline void cpr_iov_consume(struct iovec **iov, int *n, size_t done)
{
    while (*n > 0 && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

#endif
