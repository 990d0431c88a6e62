/* SPDX-License-Identifier: MIT */
/* The `region` record of mapped-ram streams: read it and skip its bytes; the stream's list of
 * regions (the writer is cpr_rec_write_region, beside the other record writers). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <glib.h>

#include "core/bytes.h"
#include "core/error.h"
#include "format/region.h"
#include "format/stream.h"

static void region_free(gpointer p)
{
    struct cpr_region *r = p;
    g_free(r->name);
    g_free(r);
}

struct cpr_region *cpr_region_add(cpr_stream *s, const char *name)
{
    if (!s->regions)
        s->regions = g_ptr_array_new_with_free_func(region_free);
    struct cpr_region *r = g_new0(struct cpr_region, 1);
    r->name = g_strdup(name);
    g_ptr_array_add(s->regions, r);
    return r;
}

uint64_t cpr_region_pages_len(uint64_t block_size, uint32_t page_size)
{
    return (block_size + page_size - 1) / page_size * page_size;
}

int cpr_region_parse(cpr_stream *s, const uint8_t *p, uint64_t len, uint64_t record_offset, const char *where,
                     cpr_error **errp)
{
    if (len < CPR_REGION_FIXED)
        return cpr_error_set(errp, -EBADMSG, "%s: region record of %" PRIu64 " bytes, shorter than %d", where, len,
                             CPR_REGION_FIXED);
    uint32_t version = (uint32_t)cpr_le_get(p, 4), page = (uint32_t)cpr_le_get(p + 4, 4);
    uint32_t chunk = (uint32_t)cpr_le_get(p + 8, 4);
    uint64_t size = cpr_le_get(p + 12, 8), pad = cpr_le_get(p + 20, 8), plen = cpr_le_get(p + 28, 8);
    size_t n = (size_t)cpr_le_get(p + 36, 2);
    if (version != CPR_REGION_VERSION)
        return cpr_error_set(errp, -EPROTONOSUPPORT, "%s: region version %u is not supported (this library reads %d)",
                             where, version, CPR_REGION_VERSION);
    if (n == 0 || len != CPR_REGION_FIXED + n || memchr(p + CPR_REGION_FIXED, 0, n))
        return cpr_error_set(errp, -EBADMSG, "%s: region record: bad block name (length %zu, payload %" PRIu64 ")",
                             where, n, len);
    g_autofree char *name = g_strndup((const char *)p + CPR_REGION_FIXED, n);
    /* A reader holds a chunk to check it: bounded by a page, or 1 MiB where pages are smaller. */
    if (page < 512 || (page & (page - 1)) || chunk < page || chunk % page || chunk > MAX(page, 1u << 20) ||
        pad >= page || size == 0 ||
        size > UINT64_MAX / 2 || plen != cpr_region_pages_len(size, page))
        return cpr_error_set(errp, -EBADMSG, "%s: region of block '%s': inconsistent geometry (page %u, chunk %u, "
                             "size %" PRIu64 ", pad %" PRIu64 ", pages length %" PRIu64 ")",
                             where, name, page, chunk, size, pad, plen);
    if (cpr_region_find(s, name))
        return cpr_error_set(errp, -EBADMSG, "%s: a second region for block '%s'", where, name);
    /* RAM travels in regions from here on: large records are one-offs (the index). */
    cpr_stream_stage_large_records(s);
    struct cpr_region *r = cpr_region_add(s, name);
    r->block_size = size;
    r->page_size = page;
    r->chunk_size = chunk;
    r->pages_len = plen;
    r->record_offset = record_offset;
    r->pages_offset = pad; /* until cpr_region_skip() finds it in the file */
    s->region_skip = 1;
    return 0;
}

int cpr_region_skip(cpr_stream *s, cpr_error **errp)
{
    struct cpr_region *r = g_ptr_array_index(s->regions, s->regions->len - 1);
    s->region_skip = 0;
    uint64_t have = 0;
    int ret = cpr_stream_skip_in(s, r->pages_offset, &have, errp);
    if (ret == 0) {
        int64_t at = cpr_stream_file_offset(s);
        r->pages_offset = at >= 0 ? (uint64_t)at : cpr_stream_offset(s);
        ret = cpr_stream_skip_in(s, r->pages_len, &have, errp);
    } else {
        have = 0;
    }
    if (ret == -ENODATA)
        return cpr_error_set(errp, -EBADMSG, "stream truncated: the region of RAM block '%s' ends in chunk %" PRIu64
                             " (%" PRIu64 " of its %" PRIu64 " bytes are in the file)",
                             r->name, have / r->chunk_size, have, r->pages_len);
    return ret;
}

const GPtrArray *cpr_region_list(const cpr_stream *s)
{
    return s->regions;
}

const struct cpr_region *cpr_region_find(const cpr_stream *s, const char *name)
{
    for (guint i = 0; s->regions && i < s->regions->len; i++) {
        const struct cpr_region *r = g_ptr_array_index(s->regions, i);
        if (!strcmp(r->name, name))
            return r;
    }
    return NULL;
}
