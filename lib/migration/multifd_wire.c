/* SPDX-License-Identifier: MIT */
/* The multifd channels' hello and packets (docs/format.md, "multifd channels"). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <glib.h>

#include "core/bytes.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "handover/ram.h"
#include "migration/multifd_wire.h"

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
/* Fuzzing builds only: let mutated packets through the checksums to reach the parsers. */
static const int fuzzing = 1;
#else
static const int fuzzing = 0;
#endif

void cpr_mfd_hello_encode(const struct cpr_mfd_hello *h, uint8_t out[CPR_MFD_HELLO_SIZE])
{
    memset(out, 0, CPR_MFD_HELLO_SIZE);
    cpr_le_put(out, CPR_MFD_HELLO_MAGIC, 4);
    cpr_le_put(out + 4, CPR_MFD_VERSION, 2);
    memcpy(out + 8, h->uuid, CPR_MFD_UUID_SIZE);
    cpr_le_put(out + 24, h->channel, 4);
    cpr_le_put(out + 28, h->count, 4);
    cpr_le_put(out + 36, cpr_crc32c(0, out, 36), 4);
}

int cpr_mfd_hello_decode(const uint8_t in[CPR_MFD_HELLO_SIZE], struct cpr_mfd_hello *h, cpr_error **errp)
{
    uint32_t magic = (uint32_t)cpr_le_get(in, 4);
    if (magic != CPR_MFD_HELLO_MAGIC)
        return cpr_error_set(errp, -EPROTO, "multifd hello: magic 0x%08x is not 0x%08x: not a multifd channel",
                             magic, CPR_MFD_HELLO_MAGIC);
    uint32_t version = (uint32_t)cpr_le_get(in + 4, 2);
    if (version != CPR_MFD_VERSION)
        return cpr_error_set(errp, -EPROTO, "multifd hello: version %u, this libcpr speaks %u",
                             version, CPR_MFD_VERSION);
    uint32_t crc = (uint32_t)cpr_le_get(in + 36, 4), want = cpr_crc32c(0, in, 36);
    if (crc != want && !fuzzing)
        return cpr_error_set(errp, -EBADMSG, "multifd hello: checksum 0x%08x, computed 0x%08x", crc, want);
    memcpy(h->uuid, in + 8, CPR_MFD_UUID_SIZE);
    h->channel = (uint32_t)cpr_le_get(in + 24, 4);
    h->count = (uint32_t)cpr_le_get(in + 28, 4);
    if (h->count == 0 || h->count > CPR_MFD_MAX_CHANNELS || h->channel >= h->count)
        return cpr_error_set(errp, -EPROTO, "multifd hello: channel %u of %u out of range", h->channel, h->count);
    if (cpr_le_get(in + 6, 2) || cpr_le_get(in + 32, 4))
        return cpr_error_set(errp, -EPROTO, "multifd hello: reserved fields are not zero");
    return 0;
}

void cpr_mfd_header_encode(const struct cpr_mfd_header *h, uint8_t out[CPR_MFD_HEADER_SIZE])
{
    memset(out, 0, CPR_MFD_HEADER_SIZE);
    cpr_le_put(out, CPR_MFD_PACKET_MAGIC, 4);
    cpr_le_put(out + 4, CPR_MFD_VERSION, 2);
    cpr_le_put(out + 6, h->kind, 2);
    cpr_le_put(out + 8, h->channel, 4);
    cpr_le_put(out + 12, h->flags, 4);
    cpr_le_put(out + 16, h->seq, 8);
    cpr_le_put(out + 24, h->epoch, 4);
    cpr_le_put(out + 28, h->nruns, 4);
    cpr_le_put(out + 32, h->pages, 4);
    cpr_le_put(out + 36, h->payload_len, 4);
    cpr_le_put(out + 44, h->crc, 4);
}

void cpr_mfd_runs_encode(const struct cpr_mfd_run *runs, uint32_t n, uint8_t *out)
{
    for (uint32_t i = 0; i < n; i++, out += CPR_MFD_RUN_SIZE) {
        cpr_le_put(out, runs[i].block, 4);
        cpr_le_put(out + 4, runs[i].count, 4);
        cpr_le_put(out + 8, runs[i].first, 8);
    }
}

uint32_t cpr_mfd_crc_header(const uint8_t hdr[CPR_MFD_HEADER_SIZE])
{
    return cpr_crc32c(0, hdr, 44);
}

size_t cpr_mfd_packet_encode(struct cpr_mfd_header *h, const struct cpr_mfd_run *runs, const void *payload,
                             uint8_t *out)
{
    uint8_t *body = out + CPR_MFD_HEADER_SIZE;
    cpr_mfd_runs_encode(runs, h->nruns, body);
    if (h->payload_len)
        memcpy(body + (size_t)h->nruns * CPR_MFD_RUN_SIZE, payload, h->payload_len);
    h->crc = 0;
    cpr_mfd_header_encode(h, out);
    h->crc = cpr_crc32c(cpr_mfd_crc_header(out), body, cpr_mfd_body_len(h));
    cpr_mfd_header_encode(h, out);
    return CPR_MFD_HEADER_SIZE + cpr_mfd_body_len(h);
}

size_t cpr_mfd_max_payload(void)
{
    size_t raw = (size_t)CPR_MFD_MAX_PAGES * CPR_MFD_PAGE;
    /* zstd's worst case for 512 KiB is a few KiB over; allow a page's slack, no more. */
    return raw + CPR_MFD_PAGE;
}

size_t cpr_mfd_body_len(const struct cpr_mfd_header *h)
{
    return (size_t)h->nruns * CPR_MFD_RUN_SIZE + h->payload_len;
}

int cpr_mfd_header_decode(const uint8_t in[CPR_MFD_HEADER_SIZE], uint32_t channel, uint64_t seq,
                          struct cpr_mfd_header *h, cpr_error **errp)
{
    uint32_t magic = (uint32_t)cpr_le_get(in, 4);
    if (magic != CPR_MFD_PACKET_MAGIC)
        return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": magic 0x%08x is not 0x%08x",
                             channel, seq, magic, CPR_MFD_PACKET_MAGIC);
    uint32_t version = (uint32_t)cpr_le_get(in + 4, 2);
    if (version != CPR_MFD_VERSION)
        return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": version %u, expected %u",
                             channel, seq, version, CPR_MFD_VERSION);
    h->kind = (uint16_t)cpr_le_get(in + 6, 2);
    h->channel = (uint32_t)cpr_le_get(in + 8, 4);
    h->flags = (uint32_t)cpr_le_get(in + 12, 4);
    h->seq = cpr_le_get(in + 16, 8);
    h->epoch = (uint32_t)cpr_le_get(in + 24, 4);
    h->nruns = (uint32_t)cpr_le_get(in + 28, 4);
    h->pages = (uint32_t)cpr_le_get(in + 32, 4);
    h->payload_len = (uint32_t)cpr_le_get(in + 36, 4);
    h->crc = (uint32_t)cpr_le_get(in + 44, 4);
    const char *bad = NULL;
    if (h->channel != channel)
        bad = "names another channel";
    else if (h->seq != seq)
        bad = "is out of sequence";
    else if (cpr_le_get(in + 40, 4))
        bad = "has a reserved field set";
    else if (h->kind == CPR_MFD_KIND_END && (h->nruns || h->pages || h->payload_len || h->flags))
        bad = "is an end packet that carries data";
    else if (h->kind != CPR_MFD_KIND_END && h->kind != CPR_MFD_KIND_DATA)
        bad = "has an unknown kind";
    else if (h->kind == CPR_MFD_KIND_DATA &&
             (h->nruns == 0 || h->nruns > CPR_MFD_MAX_RUNS || h->pages == 0 || h->pages > CPR_MFD_MAX_PAGES))
        bad = "has a run or page count out of range";
    else if (h->flags & ~CPR_MFD_FLAG_ZSTD)
        bad = "has unknown flags";
    else if (h->kind == CPR_MFD_KIND_DATA && !(h->flags & CPR_MFD_FLAG_ZSTD) &&
             h->payload_len != h->pages * CPR_MFD_PAGE)
        bad = "has a payload length that is not its pages'";
    else if (h->payload_len > cpr_mfd_max_payload())
        bad = "has a payload length beyond the limit";
    if (bad)
        return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 " (header: channel %u, "
                             "sequence %" PRIu64 ", kind %u, %u runs, %u pages, %u payload bytes) %s",
                             channel, seq, h->channel, h->seq, h->kind, h->nruns, h->pages, h->payload_len, bad);
    return 0;
}

/* The runs of a checked packet, each inside a sent block, adding up to its pages. */
static int runs_check(const struct cpr_mfd_header *h, const uint8_t *body, const struct cpr_mfd_block *blocks,
                      uint32_t nblocks, cpr_error **errp)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < h->nruns; i++) {
        const uint8_t *r = body + (size_t)i * CPR_MFD_RUN_SIZE;
        uint32_t b = (uint32_t)cpr_le_get(r, 4), n = (uint32_t)cpr_le_get(r + 4, 4);
        uint64_t first = cpr_le_get(r + 8, 8);
        if (b >= nblocks || !blocks[b].host)
            return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": run %u is for block %u, "
                                 "which the block table does not send", h->channel, h->seq, i, b);
        uint64_t pages = (blocks[b].size + CPR_MFD_PAGE - 1) / CPR_MFD_PAGE;
        if (n == 0 || first >= pages || n > pages - first)
            return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": pages %" PRIu64 "+%u "
                                 "outside block '%s' (%" PRIu64 " pages)", h->channel, h->seq, first, n,
                                 blocks[b].name, pages);
        total += n;
    }
    if (total != h->pages)
        return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": runs add up to %" PRIu64
                             " pages, the header says %u", h->channel, h->seq, total, h->pages);
    return 0;
}

int cpr_mfd_packet_apply(const struct cpr_mfd_header *h, const uint8_t hdr[CPR_MFD_HEADER_SIZE],
                         const uint8_t *body, const struct cpr_mfd_block *blocks, uint32_t nblocks,
                         uint8_t *scratch, cpr_zstd **z, cpr_error **errp)
{
    uint32_t crc = cpr_crc32c(cpr_mfd_crc_header(hdr), body, cpr_mfd_body_len(h));
    if (crc != h->crc && !fuzzing)
        return cpr_error_set(errp, -EBADMSG, "multifd channel %u, packet %" PRIu64 ": checksum 0x%08x, "
                             "computed 0x%08x: the packet was damaged", h->channel, h->seq, h->crc, crc);
    if (h->kind != CPR_MFD_KIND_DATA)
        return 0;
    int ret = runs_check(h, body, blocks, nblocks, errp);
    if (ret < 0)
        return ret;
    const uint8_t *src = body + (size_t)h->nruns * CPR_MFD_RUN_SIZE;
    if (h->flags & CPR_MFD_FLAG_ZSTD) {
        if (!*z && (ret = cpr_zstd_new(1, z, errp)) < 0)
            return ret;
        if ((ret = cpr_zstd_decompress(*z, scratch, (size_t)h->pages * CPR_MFD_PAGE, src, h->payload_len,
                                       errp)) < 0) {
            cpr_error_prefix(errp, "multifd channel %u, packet %" PRIu64, h->channel, h->seq);
            return ret;
        }
        src = scratch;
    }
    for (uint32_t i = 0; i < h->nruns; i++) {
        const uint8_t *r = body + (size_t)i * CPR_MFD_RUN_SIZE;
        const struct cpr_mfd_block *b = &blocks[cpr_le_get(r, 4)];
        uint64_t n = cpr_le_get(r + 4, 4), off = cpr_le_get(r + 8, 8) * CPR_MFD_PAGE;
        /* The last page of a block whose size is not a multiple of 4 KiB is short. */
        size_t len = (size_t)MIN(n * CPR_MFD_PAGE, b->size - off);
        if (!b->block)
            memcpy(b->host + off, src, len);
        else if ((ret = cpr_ram_block_write(b->block, off, src, len)) < 0)
            return cpr_error_set_errno(errp, ret, "multifd channel %u, packet %" PRIu64 ": writing into block '%s'",
                                       h->channel, h->seq, b->name);
        src += n * CPR_MFD_PAGE;
    }
    return 0;
}
