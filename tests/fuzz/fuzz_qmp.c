/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the reference VMM's QMP input (tests/vmm/qmp_parse.c): the bytes a
 * client sends, cut into reads at places the first byte chooses, go through the reader that
 * frames JSON values and the check that makes each a request. Nothing may crash or leak;
 * a request that passes must have a name.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "qmp_parse.h"

static void on_value(json_object *value, void *opaque)
{
    unsigned *count = opaque;
    qmp_request req;
    const char *desc = NULL;
    if (qmp_request_parse(value, &req, &desc) == 0) {
        if (!req.name)
            abort();
    } else if (!desc || !desc[0]) {
        abort();
    }
    (*count)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = 1 + data[0] % 64; /* read size: 1 (byte by byte) .. 64 */
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    qmp_reader *r = qmp_reader_new();
    unsigned count = 0;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        qmp_reader_feed(r, buf + off, n, on_value, &count);
    }
    qmp_reader_free(r);
    return 0;
}
