/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the stream loader: any bytes go to cpr_savevm_load() on a context
 * with described sections of every field kind, subsections, an optional section and a
 * progressive section. The loader must fail cleanly (no crash, no leak, no huge allocation)
 * on everything but valid streams.
 *
 * Built with clang -fsanitize=fuzzer when CPR_FUZZ=ON; replayed over the seed corpus by
 * driver.c under ctest with any compiler. The machine and its seed: fuzz_machine.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cpr/cpr.h>

#include "fuzz.h"
#include "fuzz_machine.h"

static void quiet(const char *msg, void *opaque)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_machine m;
    fuzz_machine_init(&m);
    cpr_savevm_set_warning_handler(m.ctx, quiet, NULL, NULL);
    cpr_stream *s;
    if (cpr_stream_new_mem_source(data, size, &s, NULL) == 0) {
        /* Small limits: every length the loader meets must respect them. */
        cpr_stream_set_limit(s, CPR_STREAM_LIMIT_RECORD, 1u << 20, NULL);
        cpr_stream_set_limit(s, CPR_STREAM_LIMIT_STRING, 4096, NULL);
        cpr_stream_set_limit(s, CPR_STREAM_LIMIT_ALLOC, 1u << 20, NULL);
        cpr_error *err = NULL;
        if (cpr_savevm_load(m.ctx, s, &err) < 0 && (!err || !cpr_error_message(err)[0]))
            abort(); /* a failure must say why */
        cpr_error_free(err);
        cpr_stream_free(s);
    }
    fuzz_machine_free(&m);
    return 0;
}

