/* SPDX-License-Identifier: MIT */
/*
 * Private: the `region` record (type 0x20, docs/format.md section 7): a stretch of a file
 * stream, right after the record, that holds one RAM block's pages at fixed offsets instead
 * of records (mapped-ram). The record only describes it; its bytes belong to no record and
 * are checked by the chunk checksums of the `ram` section's index (lib/migration/mapped_ram.c).
 */
#ifndef CPR_FORMAT_REGION_H
#define CPR_FORMAT_REGION_H

#include <stdint.h>

#include <glib.h>

#include <cpr/stream.h>

#define CPR_REC_REGION 0x20
#define CPR_REGION_VERSION 1
/* The fixed part of the payload: version, page size, chunk size, block size, pad, pages
 * length, name length; the name follows. */
#define CPR_REGION_FIXED 38

struct cpr_region {
    char *name;            /* the RAM block's name */
    uint64_t block_size;   /* bytes of the block */
    uint32_t page_size;    /* 4096 */
    uint32_t chunk_size;   /* bytes per checksum chunk, a multiple of page_size */
    uint64_t pages_len;    /* ceil(block_size / page_size) * page_size */
    uint64_t pages_offset; /* file offset of page 0 (page aligned) */
    uint64_t record_offset; /* stream offset of the region record */
};

/* Adds a region named `name` to the stream's list (owned by the stream), the rest zeroed. */
struct cpr_region *cpr_region_add(cpr_stream *s, const char *name);
/* Bytes of the pages of a block of `block_size` bytes: whole pages. */
uint64_t cpr_region_pages_len(uint64_t block_size, uint32_t page_size);
/*
 * Reader: parses a region record's payload (called by cpr_rec_next), adds the region to the
 * list and makes the next cpr_rec_next skip its bytes. `where` names the record in errors.
 */
int cpr_region_parse(cpr_stream *s, const uint8_t *payload, uint64_t len, uint64_t record_offset,
                     const char *where, cpr_error **errp);
/* Reader: skips the bytes of the region last parsed (called by cpr_rec_next before the next
 * record); a stream that ends inside it is refused naming the block and the chunk. */
int cpr_region_skip(cpr_stream *s, cpr_error **errp);
/* The regions of the stream so far (struct cpr_region *), or NULL when none. */
const GPtrArray *cpr_region_list(const cpr_stream *s);
/* The region of block `name`, or NULL. */
const struct cpr_region *cpr_region_find(const cpr_stream *s, const char *name);

#endif
