/* SPDX-License-Identifier: MIT */
/* Private: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the record checksum. */
#ifndef CPR_CORE_CRC32C_H
#define CPR_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends `crc` (0 for a fresh checksum) over len bytes: the standard CRC32C with initial
 * value and final xor 0xFFFFFFFF, chainable like zlib's crc32():
 * cpr_crc32c(cpr_crc32c(0, a, n), b, m) == cpr_crc32c(0, a||b, n+m).
 * cpr_crc32c(0, "123456789", 9) == 0xE3069283. Uses the SSE4.2 crc32 instruction with three
 * interleaved streams when the CPU has it, a slicing-by-8 table otherwise. Thread safe.
 */
uint32_t cpr_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable table implementation, exposed so tests can compare it with the fast one. */
uint32_t cpr_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/*
 * Copies len bytes from src to dst and extends `crc` over them, in one pass. The checksum is
 * that of the bytes dst received, even if src changes meanwhile (memory a running guest
 * writes): each byte is read from src once. src and dst must not overlap.
 */
uint32_t cpr_crc32c_copy(uint32_t crc, void *dst, const void *src, size_t len);

/*
 * cpr_crc32c_copy for a large copy that is not read again soon (a memory sink): dst is
 * written with non-temporal stores, past the cache, at about memcpy's speed. Same checksum,
 * same guarantee.
 */
uint32_t cpr_crc32c_copy_stream(uint32_t crc, void *dst, const void *src, size_t len);

/* 1 when cpr_crc32c() uses the hardware instruction. */
int cpr_crc32c_hw_available(void);

#endif
