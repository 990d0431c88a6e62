/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for postcopy's return path (lib/migration/postcopy.h): the input is what
 * a destination sends the source after the switch. Each 32-byte message is decoded (a refusal
 * must say why; what decodes must encode and decode to the same message) and checked as a
 * recovery's RESUME (taken only when it is one, for this table), then the whole
 * input goes through the source's page server, over a pipe, against a small block table: it
 * must end with DONE, a named refusal or the end of the input, never read or write outside
 * a block.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "fuzz.h"
#include "migration/postcopy.h"

/* Larger than a pipe holds once the server answers are gone: the rest is cut. */
#define PC_FUZZ_MAX_INPUT 32768

static uint8_t ram0[8 * CPR_PC_PAGE], ram1[3 * CPR_PC_PAGE];

static void must_explain(int ret, cpr_error *err)
{
    if (ret < 0 && (!err || !cpr_error_message(err)[0]))
        abort();
    cpr_error_free(err);
}

static void decode_each(const uint8_t *data, size_t size, uint64_t *block_pages)
{
    for (size_t off = 0; off + CPR_PC_MSG_BYTES <= size; off += CPR_PC_MSG_BYTES) {
        struct cpr_pc_msg m, again;
        uint8_t buf[CPR_PC_MSG_BYTES];
        cpr_error *err = NULL;
        /* A recovery's first message: taken only for this table, refusals explained. */
        int resumed = cpr_pc_resume_check(data + off, 2, block_pages, &err);
        must_explain(resumed, err);
        err = NULL;
        int ret = cpr_pc_msg_decode(data + off, 2, block_pages, &m, &err);
        must_explain(ret, err);
        if (resumed == 0 && m.kind != CPR_PC_RESUME)
            abort();
        if (ret < 0)
            continue;
        cpr_pc_msg_encode(&m, buf);
        if (cpr_pc_msg_decode(buf, 2, block_pages, &again, NULL) < 0 ||
            again.kind != m.kind || again.block != m.block || again.page != m.page ||
            again.count != m.count || again.flags != m.flags || again.crc != m.crc)
            abort(); /* what the library writes it must read back */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > PC_FUZZ_MAX_INPUT)
        size = PC_FUZZ_MAX_INPUT;
    memset(ram0, 0xa5, sizeof(ram0)); /* one block with data, one of zero pages */
    uint64_t block_pages[2] = { 8, 3 };
    const struct cpr_pc_block blocks[2] = { { ram0, 8 }, { ram1, 3 } };
    decode_each(data, size, block_pages);

    int in[2];
    if (pipe(in) < 0)
        abort();
    fcntl(in[1], F_SETPIPE_SZ, PC_FUZZ_MAX_INPUT);
    if (write(in[1], data, size) != (ssize_t)size)
        abort();
    close(in[1]);
    int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct cpr_pc_server sv = { .rfd = in[0], .wfd = out, .nblocks = 2, .blocks = blocks,
                                .block_pages = block_pages };
    cpr_error *err = NULL;
    int ret = cpr_pc_serve(&sv, &err);
    must_explain(ret, err);
    if (sv.pages > sv.requests * CPR_PC_MAX_PAGES)
        abort();
    close(in[0]);
    close(out);
    return 0;
}
