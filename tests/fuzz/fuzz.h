/* SPDX-License-Identifier: MIT */
/* What each harness offers the standalone replay driver. */
#ifndef CPR_FUZZ_H
#define CPR_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Writes a valid input (a seed) into *data (release with cpr_free()). Weak: harnesses whose
 * seeds are written by hand (channel, qmp) leave it out. */
__attribute__((weak)) int fuzz_load_make_seed(void **data, size_t *len);

#endif
