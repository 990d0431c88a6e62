/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for a multifd channel as the destination reads it (docs/format.md,
 * "Multifd channels"): a 40-byte hello, then packets until an end packet, each header checked, its
 * body checked and applied to a small guest memory of three blocks (one not sent, one with a
 * short last page). Whatever is refused must say why; nothing may write outside the blocks.
 */
#include <stdlib.h>
#include <string.h>

#include <cpr/cpr.h>

#include "core/compress.h"
#include "migration/multifd_wire.h"
#include "fuzz.h"

#define PAGE CPR_MFD_PAGE

static void must_explain(int ret, cpr_error *err)
{
    if (ret < 0 && (!err || !cpr_error_message(err)[0]))
        abort();
    cpr_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t a[16 * PAGE], c[4 * PAGE];
    static uint8_t scratch[CPR_MFD_MAX_PAGES * PAGE];
    const struct cpr_mfd_block blocks[3] = {
        { a, sizeof(a), "a", NULL }, { NULL, 8 * PAGE, "kept", NULL }, { c, sizeof(c) - 1000, "short", NULL },
    };
    struct cpr_mfd_hello hello;
    cpr_error *err = NULL;
    if (size < CPR_MFD_HELLO_SIZE)
        return 0;
    int ret = cpr_mfd_hello_decode(data, &hello, &err);
    must_explain(ret, err);
    if (ret < 0)
        return 0;
    cpr_zstd *z = NULL;
    size_t pos = CPR_MFD_HELLO_SIZE;
    for (uint64_t seq = 1; size - pos >= CPR_MFD_HEADER_SIZE; seq++) {
        struct cpr_mfd_header h;
        const uint8_t *hdr = data + pos;
        err = NULL;
        ret = cpr_mfd_header_decode(hdr, hello.channel, seq, &h, &err);
        if (ret == 0 && cpr_mfd_body_len(&h) > size - pos - CPR_MFD_HEADER_SIZE)
            break; /* a channel that ends early: the thread's read fails, no parse */
        if (ret == 0)
            ret = cpr_mfd_packet_apply(&h, hdr, hdr + CPR_MFD_HEADER_SIZE, blocks, 3, scratch, &z, &err);
        must_explain(ret, err);
        if (ret < 0 || h.kind == CPR_MFD_KIND_END)
            break;
        pos += CPR_MFD_HEADER_SIZE + cpr_mfd_body_len(&h);
    }
    cpr_zstd_free(z);
    return 0;
}

/* A seed: hello of channel 1 of 2; a packet of two runs (zstd when built with it); an end. */
int fuzz_load_make_seed(void **out, size_t *len)
{
    uint8_t *buf = calloc(1, CPR_MFD_HELLO_SIZE + 2 * CPR_MFD_HEADER_SIZE + 2 * CPR_MFD_RUN_SIZE +
                             cpr_mfd_max_payload());
    struct cpr_mfd_hello hello = { .uuid = { 7 }, .channel = 1, .count = 2 };
    cpr_mfd_hello_encode(&hello, buf);
    size_t pos = CPR_MFD_HELLO_SIZE;
    uint8_t pages[3 * PAGE];
    for (size_t i = 0; i < sizeof(pages); i++)
        pages[i] = (uint8_t)(i % 13);
    struct cpr_mfd_run runs[2] = { { .block = 0, .count = 2, .first = 3 }, { .block = 2, .count = 1, .first = 3 } };
    struct cpr_mfd_header h = { .kind = CPR_MFD_KIND_DATA, .channel = 1, .seq = 1, .nruns = 2, .pages = 3,
                                .payload_len = sizeof(pages) };
    cpr_zstd *z = NULL;
    uint8_t frame[4 * PAGE];
    const void *payload = pages;
    if (cpr_zstd_new(19, &z, NULL) == 0) {
        ssize_t n = cpr_zstd_compress(z, frame, sizeof(frame), pages, sizeof(pages), NULL);
        if (n > 0) {
            h.flags = CPR_MFD_FLAG_ZSTD;
            h.payload_len = (uint32_t)n;
            payload = frame;
        }
        cpr_zstd_free(z);
    }
    pos += cpr_mfd_packet_encode(&h, runs, payload, buf + pos);
    struct cpr_mfd_header end = { .kind = CPR_MFD_KIND_END, .channel = 1, .seq = 2 };
    pos += cpr_mfd_packet_encode(&end, NULL, NULL, buf + pos);
    *out = buf;
    *len = pos;
    return 0;
}
