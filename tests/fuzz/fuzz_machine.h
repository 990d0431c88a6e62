/* SPDX-License-Identifier: MIT */
/* The machine the stream harnesses load into and write seeds from (fuzz_machine.c): described
 * sections with every field kind, a subsection, a version-gated field, a custom field and a
 * progressive section. */
#ifndef CPR_FUZZ_MACHINE_H
#define CPR_FUZZ_MACHINE_H

#include <cpr/cpr.h>

struct inner {
    uint16_t a;
    int64_t b;
};

struct dev {
    uint8_t u8;
    int32_t i32;
    uint8_t flag;
    uint32_t n;
    uint16_t arr[8];
    uint8_t blen;
    uint8_t buf[16];
    char *name;
    struct inner in[2];
    uint32_t ni;
    struct inner vin[3];
    uint32_t magic;
    uint32_t sub;
};

struct fuzz_machine {
    cpr_ctx *ctx;
    struct dev dev;
    uint64_t ram_bytes;
};

void fuzz_machine_init(struct fuzz_machine *m);
void fuzz_machine_free(struct fuzz_machine *m);

#endif
