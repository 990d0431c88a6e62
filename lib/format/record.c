/* SPDX-License-Identifier: MIT */
/* Record framing (docs/format.md): stream header, records with checksummed headers and
 * payloads, section headers, the end record, and the structural rules a reader enforces. */
#include <errno.h>
#include <string.h>

#include "core/bytes.h"
#include "core/crc32c.h"
#include "core/error.h"
#include "format/record.h"
#include "format/region.h"
#include "format/stream.h"

#define U64 G_GUINT64_FORMAT

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
/* Fuzzing builds only: let mutated records through the checksums to reach the parsers. */
static const int fuzzing = 1;
#else
static const int fuzzing = 0;
#endif

static inline void put_le16(uint8_t *p, uint16_t v)
{
    v = GUINT16_TO_LE(v);
    memcpy(p, &v, 2);
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, 4);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, 8);
}
static inline uint16_t get_le16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return GUINT16_FROM_LE(v);
}
static inline uint32_t get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}
static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_LE(v);
}

const char *cpr_rec_type_name(unsigned int type)
{
    switch (type) {
    case CPR_REC_CONFIG: return "config";
    case CPR_REC_SCHEMA: return "schema";
    case CPR_REC_FULL: return "full";
    case CPR_REC_START: return "start";
    case CPR_REC_PART: return "part";
    case CPR_REC_END: return "end";
    case CPR_REC_EOS: return "end-of-stream";
    case CPR_REC_REGION: return "region";
    default: return "unknown";
    }
}

/* ---- writing ---- */

int cpr_rec_write_stream_header(cpr_stream *s, cpr_error **errp)
{
    if (!s || !cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_rec_write_stream_header: not a writer");
    uint8_t h[CPR_STREAM_HEADER_SIZE] = { 0 };
    memcpy(h, CPR_FORMAT_MAGIC, CPR_FORMAT_MAGIC_LEN);
    put_le16(h + 8, CPR_FORMAT_MAJOR);
    put_le16(h + 10, s->minor ? s->minor : CPR_FORMAT_MINOR);
    put_le32(h + 12, cpr_crc32c(0, h, 12));
    return cpr_stream_append(s, h, sizeof(h), errp);
}

int cpr_rec_begin(cpr_stream *s, unsigned int type, unsigned int flags, cpr_error **errp)
{
    if (!s || !cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_rec_begin: not a writer");
    if (s->in_record)
        return cpr_error_set(errp, -EBUSY, "cpr_rec_begin: a %s record is still open",
                             cpr_rec_type_name(s->buf[s->rec_hdr + 8]));
    if (type > 0xff || flags > 0xff)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_begin: type 0x%x or flags 0x%x out of range", type, flags);
    uint8_t h[CPR_RECORD_HEADER_SIZE] = { 0 };
    h[8] = (uint8_t)type;
    h[9] = (uint8_t)flags;
    int ret = cpr_stream_append(s, h, sizeof(h), errp);
    if (ret < 0)
        return ret;
    s->rec_hdr = s->len - sizeof(h);
    s->rec_len = 0;
    s->rec_crc = 0;
    s->rec_seg_mark = s->segs ? s->segs->len : 0;
    s->rec_run_mark = s->run_start;
    s->rec_refs_mark = s->has_refs;
    s->rec_deferred = 0;
    s->in_record = 1;
    return 0;
}

int cpr_rec_begin_section(cpr_stream *s, unsigned int type, const char *name, uint32_t instance,
                          uint32_t version, uint32_t *section_id, cpr_error **errp)
{
    if (type != CPR_REC_FULL && type != CPR_REC_START)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_begin_section: type 0x%x is not full or start", type);
    size_t nlen = name ? strlen(name) : 0;
    if (!nlen || nlen > UINT32_MAX)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_begin_section: empty section name");
    int ret = cpr_rec_begin(s, type, 0, errp);
    if (ret < 0)
        return ret;
    uint32_t id = s->next_section_id;
    uint8_t h[16];
    put_le32(h, id);
    put_le32(h + 4, instance);
    put_le32(h + 8, version);
    put_le32(h + 12, (uint32_t)nlen);
    if ((ret = cpr_stream_put_bytes(s, h, sizeof(h), errp)) < 0 ||
        (ret = cpr_stream_put_bytes(s, name, nlen, errp)) < 0) {
        cpr_rec_abort(s);
        return ret;
    }
    s->next_section_id++;
    if (section_id)
        *section_id = id;
    return 0;
}

void cpr_rec_set_flags(cpr_stream *s, unsigned int flags)
{
    if (s && s->in_record)
        s->buf[s->rec_hdr + 9] |= (uint8_t)flags;
}

int cpr_rec_begin_part(cpr_stream *s, unsigned int type, uint32_t section_id, cpr_error **errp)
{
    if (type != CPR_REC_PART && type != CPR_REC_END)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_begin_part: type 0x%x is not part or end", type);
    int ret = cpr_rec_begin(s, type, 0, errp);
    if (ret < 0)
        return ret;
    ret = cpr_stream_put_u32(s, section_id, errp);
    if (ret < 0)
        cpr_rec_abort(s);
    return ret;
}

int cpr_rec_end(cpr_stream *s, cpr_error **errp)
{
    if (!s || !cpr_stream_is_writer(s) || !s->in_record)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_end: no record is open");
    if (s->error) {
        cpr_rec_abort(s);
        return cpr_error_set(errp, s->error, "stream: an earlier write failed");
    }
    uint8_t *h = s->buf + s->rec_hdr;
    put_le64(h, s->rec_len);
    put_le32(h + 12, cpr_crc32c(0, h, 12));
    unsigned int type = h[8];
    uint8_t trailer[CPR_RECORD_TRAILER_SIZE];
    put_le32(trailer, s->rec_crc);
    int ret;
    if (s->rec_deferred) {
        /* The flush that follows computes the checksum and stores it here: appended while
         * the record is still open, so that no flush comes between. */
        s->defer_trailer = s->len;
        ret = cpr_stream_append(s, trailer, sizeof(trailer), errp);
        s->in_record = 0;
    } else {
        s->in_record = 0;
        ret = cpr_stream_append(s, trailer, sizeof(trailer), errp);
    }
    if (ret < 0)
        return ret;
    if (type == CPR_REC_FULL || type == CPR_REC_START)
        s->sec_count++;
    if (type != CPR_REC_EOS)
        s->rec_count++;
    return cpr_stream_maybe_flush(s, 0, errp);
}

void cpr_rec_abort(cpr_stream *s)
{
    if (!s || !s->in_record)
        return;
    s->offset -= CPR_RECORD_HEADER_SIZE + s->rec_len;
    s->len = s->rec_hdr;
    if (s->segs)
        g_array_set_size(s->segs, s->rec_seg_mark);
    s->run_start = s->rec_run_mark;
    s->has_refs = s->rec_refs_mark;
    s->rec_deferred = 0;
    s->in_record = 0;
    /* An abort is not a write failure: a sink that ran out of room may still take a smaller
     * record, and memory sinks report ENOSPC again if not. */
    if (s->error == -ENOSPC || s->error == -EMSGSIZE)
        s->error = 0;
}

int cpr_rec_write(cpr_stream *s, unsigned int type, const void *data, size_t len, cpr_error **errp)
{
    int ret = cpr_rec_begin(s, type, 0, errp);
    if (ret < 0)
        return ret;
    ret = cpr_stream_put_bytes(s, data, len, errp);
    if (ret < 0) {
        cpr_rec_abort(s);
        return ret;
    }
    return cpr_rec_end(s, errp);
}

int cpr_rec_write_section(cpr_stream *s, unsigned int type, const char *name, uint32_t instance, uint32_t version,
                          unsigned int flags, cpr_rec_body_fn body, void *arg, uint32_t *section_id,
                          cpr_error **errp)
{
    int ret = cpr_rec_begin_section(s, type, name, instance, version, section_id, errp);
    if (ret < 0)
        return ret;
    cpr_rec_set_flags(s, flags);
    if ((ret = body(s, arg, errp)) < 0) {
        cpr_rec_abort(s);
        return ret;
    }
    return cpr_rec_end(s, errp);
}

int cpr_rec_write_eos(cpr_stream *s, cpr_error **errp)
{
    if (!s || !cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_rec_write_eos: not a writer");
    uint8_t p[CPR_EOS_PAYLOAD_SIZE];
    put_le64(p, s->rec_count);
    put_le64(p + 8, s->sec_count);
    put_le64(p + 16, s->offset);
    int ret = cpr_rec_write(s, CPR_REC_EOS, p, sizeof(p), errp);
    if (ret < 0)
        return ret;
    return cpr_stream_flush(s, errp);
}

/* ---- reading ---- */

int cpr_rec_read_stream_header(cpr_stream *s, unsigned int *minor, cpr_error **errp)
{
    if (!s || cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_rec_read_stream_header: not a reader");
    int ret = cpr_stream_need(s, CPR_STREAM_HEADER_SIZE, errp);
    if (ret == -ENODATA)
        return cpr_error_set(errp, -EBADMSG, "stream truncated: header needs %d bytes, stream has %zu",
                             CPR_STREAM_HEADER_SIZE, cpr_stream_avail(s));
    if (ret < 0)
        return ret;
    const uint8_t *h = s->rbuf + s->rpos;
    if (memcmp(h, CPR_FORMAT_MAGIC, CPR_FORMAT_MAGIC_LEN) != 0)
        return cpr_error_set(errp, -EBADMSG, "not a libcpr stream: bad magic at offset %" U64,
                             (guint64)cpr_stream_offset(s));
    uint32_t hcrc = get_le32(h + 12), hcalc = cpr_crc32c(0, h, 12);
    if (hcrc != hcalc)
        return cpr_error_set(errp, -EBADMSG, "stream header: checksum mismatch (stored 0x%08x, computed 0x%08x)",
                             hcrc, hcalc);
    unsigned int major = get_le16(h + 8), min = get_le16(h + 10);
    if (major != CPR_FORMAT_MAJOR)
        return cpr_error_set(errp, -EPROTONOSUPPORT,
                             "stream format version %u.%u is not supported (this library reads %u.x)",
                             major, min, CPR_FORMAT_MAJOR);
    cpr_stream_consume(s, CPR_STREAM_HEADER_SIZE);
    if (!s->open_ids) {
        s->open_ids = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
        s->used_ids = g_hash_table_new(g_direct_hash, g_direct_equal);
        s->used_names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    }
    if (minor)
        *minor = min;
    return 0;
}

#define REC_FMT "record #%" U64 " (%s) at offset %" U64
#define REC_ARGS(r) (guint64)(r)->index, cpr_rec_type_name((r)->type), (guint64)(r)->offset

static int parse_section_header(cpr_stream *s, struct cpr_rec *r, cpr_error **errp)
{
    if (r->type == CPR_REC_PART || r->type == CPR_REC_END) {
        if (r->len < 4)
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": payload of %" U64 " bytes has no section id",
                                 REC_ARGS(r), (guint64)r->len);
        r->section_id = get_le32(r->payload);
        const char *name = g_hash_table_lookup(s->open_ids, GUINT_TO_POINTER(r->section_id));
        if (!name)
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": section id %u is not an open progressive section",
                                 REC_ARGS(r), r->section_id);
        g_free(s->cur_name);
        s->cur_name = g_strdup(name);
        if (r->type == CPR_REC_END)
            g_hash_table_remove(s->open_ids, GUINT_TO_POINTER(r->section_id));
        r->name = s->cur_name;
        s->view = r->payload + 4;
        s->view_len = r->len - 4;
        return 0;
    }
    if (r->len < 16)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": payload of %" U64 " bytes is shorter than a section header",
                             REC_ARGS(r), (guint64)r->len);
    r->section_id = get_le32(r->payload);
    r->instance = get_le32(r->payload + 4);
    r->version = get_le32(r->payload + 8);
    uint32_t nlen = get_le32(r->payload + 12);
    if (nlen == 0 || nlen > s->limit[CPR_STREAM_LIMIT_STRING])
        return cpr_error_set(errp, nlen ? -EMSGSIZE : -EBADMSG,
                             REC_FMT ": section name length %u is outside 1..%" U64, REC_ARGS(r), nlen,
                             (guint64)s->limit[CPR_STREAM_LIMIT_STRING]);
    if (nlen > r->len - 16)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section name of %u bytes overruns the payload",
                             REC_ARGS(r), nlen);
    if (memchr(r->payload + 16, 0, nlen))
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section name contains a NUL byte", REC_ARGS(r));
    g_free(s->cur_name);
    s->cur_name = g_strndup((const char *)r->payload + 16, nlen);
    r->name = s->cur_name;
    if (g_hash_table_contains(s->used_ids, GUINT_TO_POINTER(r->section_id)))
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section '%s' reuses section id %u", REC_ARGS(r),
                             r->name, r->section_id);
    g_hash_table_add(s->used_ids, GUINT_TO_POINTER(r->section_id));
    /* A section is (name, instance): once per stream, skipped (OPTIONAL) or not. */
    char *key = g_strdup_printf("%u/%s", r->instance, r->name);
    if (!g_hash_table_add(s->used_names, key))
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section '%s' instance %u appears twice", REC_ARGS(r), r->name,
                             r->instance);
    if (r->type == CPR_REC_START)
        g_hash_table_insert(s->open_ids, GUINT_TO_POINTER(r->section_id), g_strdup(r->name));
    s->sec_count++;
    s->view = r->payload + 16 + nlen;
    s->view_len = r->len - 16 - nlen;
    return 0;
}

static int check_eos(cpr_stream *s, struct cpr_rec *r, cpr_error **errp)
{
    if (r->len != CPR_EOS_PAYLOAD_SIZE)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": payload is %" U64 " bytes, not %d", REC_ARGS(r),
                             (guint64)r->len, CPR_EOS_PAYLOAD_SIZE);
    uint64_t nrec = get_le64(r->payload), nsec = get_le64(r->payload + 8), off = get_le64(r->payload + 16);
    if (nrec != s->rec_count || nsec != s->sec_count || off != r->offset)
        return cpr_error_set(errp, -EBADMSG,
                             REC_FMT ": stream claims %" U64 " records, %" U64 " sections, end at %" U64
                             "; read %" U64 " records, %" U64 " sections, end at %" U64,
                             REC_ARGS(r), (guint64)nrec, (guint64)nsec, (guint64)off, (guint64)s->rec_count,
                             (guint64)s->sec_count, (guint64)r->offset);
    GHashTableIter it;
    gpointer id, name;
    g_hash_table_iter_init(&it, s->open_ids);
    if (g_hash_table_iter_next(&it, &id, &name))
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": progressive section '%s' (id %u) was never ended",
                             REC_ARGS(r), (const char *)name, GPOINTER_TO_UINT(id));
    s->done = 1;
    return 0;
}

static int check_order(cpr_stream *s, struct cpr_rec *r, cpr_error **errp)
{
    if (r->index == 0 && r->type != CPR_REC_CONFIG)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": a stream must start with a config record", REC_ARGS(r));
    switch (r->type) {
    case CPR_REC_CONFIG:
        if (r->index != 0)
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": a second config record", REC_ARGS(r));
        return 0;
    case CPR_REC_SCHEMA:
        if (r->index != 1)
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": a schema record must directly follow the config record",
                                 REC_ARGS(r));
        return 0;
    default:
        return 0;
    }
}

static int known_type(unsigned int type)
{
    return strcmp(cpr_rec_type_name(type), "unknown") != 0;
}

/* Flags of a record of a type this reader knows: SKIPPABLE never, OPTIONAL on full and start. */
static int check_flags(const struct cpr_rec *r, cpr_error **errp)
{
    unsigned int allowed = r->type == CPR_REC_FULL || r->type == CPR_REC_START ? CPR_REC_FLAG_OPTIONAL : 0;
    if (r->flags & ~allowed)
        return cpr_error_set(errp, -EBADMSG,
                             REC_FMT ": flags 0x%02x are not allowed here (OPTIONAL only on full and start records,"
                             " SKIPPABLE only on record types this reader does not know)", REC_ARGS(r), r->flags);
    return 0;
}

int cpr_rec_next(cpr_stream *s, struct cpr_rec *rec, cpr_error **errp)
{
    if (!s || !rec || cpr_stream_is_writer(s) || !s->open_ids)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_next: not a reader past its stream header");
    if (s->done)
        return 0;
    for (;;) {
        if (s->rec_pending) {
            cpr_stream_consume(s, s->rec_pending);
            s->rec_pending = 0;
        }
        int ret;
        if (s->region_skip && (ret = cpr_region_skip(s, errp)) < 0)
            return ret;
        s->view = NULL;
        s->view_len = s->view_pos = 0;
        struct cpr_rec r = { .index = s->rec_count, .offset = cpr_stream_offset(s) };
        ret = cpr_stream_need(s, CPR_RECORD_HEADER_SIZE, errp);
        if (ret == -ENODATA) {
            if (cpr_stream_avail(s) == 0)
                return cpr_error_set(errp, -EBADMSG,
                                     "stream truncated at offset %" U64 " after %" U64 " records: no end record",
                                     (guint64)r.offset, (guint64)s->rec_count);
            return cpr_error_set(errp, -EBADMSG,
                                 "stream truncated: record #%" U64 " at offset %" U64 " has %zu of %d header bytes",
                                 (guint64)r.index, (guint64)r.offset, cpr_stream_avail(s), CPR_RECORD_HEADER_SIZE);
        }
        if (ret < 0)
            return ret;
        const uint8_t *h = s->rbuf + s->rpos;
        uint32_t hcrc = get_le32(h + 12), hcalc = cpr_crc32c(0, h, 12);
        if (hcrc != hcalc && !fuzzing)
            return cpr_error_set(errp, -EBADMSG,
                                 "record #%" U64 " at offset %" U64 ": header checksum mismatch (stored 0x%08x, computed 0x%08x)",
                                 (guint64)r.index, (guint64)r.offset, hcrc, hcalc);
        r.len = get_le64(h);
        r.type = h[8];
        r.flags = h[9];
        if (get_le16(h + 10) != 0 || (r.flags & ~CPR_REC_FLAGS_KNOWN))
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": reserved header bits set (flags 0x%02x, reserved 0x%04x)",
                                 REC_ARGS(&r), r.flags, get_le16(h + 10));
        if (r.len > s->limit[CPR_STREAM_LIMIT_RECORD] ||
            r.len > SIZE_MAX - CPR_RECORD_HEADER_SIZE - CPR_RECORD_TRAILER_SIZE)
            return cpr_error_set(errp, -EMSGSIZE, REC_FMT ": payload of %" U64 " bytes exceeds the record limit of %" U64,
                                 REC_ARGS(&r), (guint64)r.len, (guint64)s->limit[CPR_STREAM_LIMIT_RECORD]);
        size_t total = CPR_RECORD_HEADER_SIZE + (size_t)r.len + CPR_RECORD_TRAILER_SIZE;
        size_t have = 0;
        ret = cpr_stream_need_record(s, total, &have, errp);
        if (ret == -ENODATA)
            return cpr_error_set(errp, -EBADMSG,
                                 "stream truncated: " REC_FMT " needs %zu bytes, stream ends after %zu",
                                 REC_ARGS(&r), total, have);
        if (ret < 0)
            return ret;
        h = s->rbuf + s->rpos;
        r.payload = h + CPR_RECORD_HEADER_SIZE;
        uint32_t pcrc = get_le32(r.payload + r.len), pcalc = cpr_crc32c(0, r.payload, r.len);
        if (pcrc != pcalc && !fuzzing)
            return cpr_error_set(errp, -EBADMSG,
                                 REC_FMT ": payload checksum mismatch (stored 0x%08x, computed 0x%08x)",
                                 REC_ARGS(&r), pcrc, pcalc);
        s->rec_pending = total;
        s->view_offset = r.offset;
        if ((ret = check_order(s, &r, errp)) < 0)
            return ret;
        if (known_type(r.type) && (ret = check_flags(&r, errp)) < 0)
            return ret;
        switch (r.type) {
        case CPR_REC_EOS:
            ret = check_eos(s, &r, errp);
            if (ret == 0) {
                cpr_stream_consume(s, s->rec_pending);
                s->rec_pending = 0;
            }
            return ret;
        case CPR_REC_FULL:
        case CPR_REC_START:
        case CPR_REC_PART:
        case CPR_REC_END:
            if ((ret = parse_section_header(s, &r, errp)) < 0)
                return ret;
            break;
        case CPR_REC_REGION: {
            g_autofree char *where = g_strdup_printf(REC_FMT, REC_ARGS(&r));
            if ((ret = cpr_region_parse(s, r.payload, r.len, r.offset, where, errp)) < 0)
                return ret;
            /* the payload is the caller's to look at too (cpr-dump) */
            s->view = r.payload;
            s->view_len = r.len;
            break;
        }
        case CPR_REC_CONFIG:
        case CPR_REC_SCHEMA:
            s->view = r.payload;
            s->view_len = r.len;
            break;
        default:
            if (!(r.flags & CPR_REC_FLAG_SKIPPABLE))
                return cpr_error_set(errp, -EPROTONOSUPPORT, REC_FMT ": unknown record type 0x%02x", REC_ARGS(&r),
                                     r.type);
            s->rec_count++;
            continue;
        }
        s->rec_count++;
        *rec = r;
        return 1;
    }
}

/* ---- whole streams of named blobs ---- */

void cpr_rec_blob_free(struct cpr_rec_blob *b)
{
    if (!b)
        return;
    g_free(b->name);
    if (!b->borrowed)
        g_free(b->data);
    g_free(b);
}

static int put_blob(cpr_stream *s, void *arg, cpr_error **errp)
{
    const struct cpr_rec_blob *b = arg;
    return b->body ? b->body(s, b->body_arg, errp) : cpr_stream_put_bytes(s, b->data, b->len, errp);
}

int cpr_rec_write_blobs(cpr_stream *s, const char *config_json, const struct cpr_rec_blob *blobs, size_t n,
                        cpr_error **errp)
{
    if (!config_json || (!blobs && n))
        return cpr_error_set(errp, -EINVAL, "cpr_rec_write_blobs: NULL argument");
    int ret = cpr_rec_write_stream_header(s, errp);
    if (ret >= 0)
        ret = cpr_rec_write(s, CPR_REC_CONFIG, config_json, strlen(config_json), errp);
    for (size_t i = 0; ret >= 0 && i < n; i++)
        ret = cpr_rec_write_section(s, CPR_REC_FULL, blobs[i].name, blobs[i].instance, blobs[i].version, 0, put_blob,
                                    (void *)&blobs[i], NULL, errp);
    if (ret >= 0)
        ret = cpr_rec_write_eos(s, errp);
    return ret < 0 ? ret : 0;
}

int cpr_rec_read_blobs(cpr_stream *s, char **config_json, GPtrArray **blobs, cpr_error **errp)
{
    if (!config_json || !blobs)
        return cpr_error_set(errp, -EINVAL, "cpr_rec_read_blobs: NULL argument");
    int ret = cpr_rec_read_stream_header(s, NULL, errp);
    if (ret < 0)
        return ret;
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)cpr_rec_blob_free);
    g_autofree char *config = NULL;
    struct cpr_rec r;
    while ((ret = cpr_rec_next(s, &r, errp)) > 0) {
        if (r.type == CPR_REC_CONFIG) {
            config = g_strndup((const char *)r.payload, r.len);
            continue;
        }
        if (r.type != CPR_REC_FULL)
            return cpr_error_set(errp, -EBADMSG, REC_FMT ": unexpected in a blob stream", REC_ARGS(&r));
        uint64_t len = cpr_stream_remaining(s);
        if (len > s->limit[CPR_STREAM_LIMIT_ALLOC])
            return cpr_error_set(errp, -EMSGSIZE, REC_FMT ": section '%s' of %" U64 " bytes exceeds the allocation limit",
                                 REC_ARGS(&r), r.name, (guint64)len);
        struct cpr_rec_blob *b = g_new0(struct cpr_rec_blob, 1);
        b->name = g_strdup(r.name);
        b->instance = r.instance;
        b->version = r.version;
        b->len = len;
        /* A memory source's records are read in place: the body stays where the caller has it. */
        b->borrowed = s->kind == CPR_SRC_MEM;
        b->data = b->borrowed ? (uint8_t *)(s->view + s->view_pos) : g_memdup2(s->view + s->view_pos, len);
        g_ptr_array_add(list, b);
    }
    if (ret < 0)
        return ret;
    *config_json = g_steal_pointer(&config);
    *blobs = g_steal_pointer(&list);
    return 0;
}

void cpr_rec_announce_regions(cpr_stream *s)
{
    s->minor = CPR_FORMAT_MINOR_REGIONS;
}

int cpr_rec_write_region(cpr_stream *s, const char *name, uint64_t block_size, uint32_t page_size,
                         uint32_t chunk_size, const struct cpr_region **out, cpr_error **errp)
{
    size_t n = strlen(name);
    uint64_t plen = cpr_region_pages_len(block_size, page_size);
    int64_t here = cpr_stream_file_offset(s);
    int ret = here < 0 ? cpr_stream_maybe_flush(s, 1, errp) : 0;
    if (ret < 0)
        return ret;
    if ((here = cpr_stream_file_offset(s)) < 0)
        return cpr_error_set(errp, -ESPIPE, "mapped-ram needs a seekable file: the migration stream is not a "
                             "regular file (a socket, a pipe or memory)");
    uint64_t end = (uint64_t)here + CPR_RECORD_HEADER_SIZE + CPR_REGION_FIXED + n + CPR_RECORD_TRAILER_SIZE;
    uint64_t pad = (page_size - end % page_size) % page_size;
    uint8_t *p = g_malloc(CPR_REGION_FIXED + n);
    cpr_le_put(p, CPR_REGION_VERSION, 4);
    cpr_le_put(p + 4, page_size, 4);
    cpr_le_put(p + 8, chunk_size, 4);
    cpr_le_put(p + 12, block_size, 8);
    cpr_le_put(p + 20, pad, 8);
    cpr_le_put(p + 28, plen, 8);
    cpr_le_put(p + 36, n, 2);
    memcpy(p + CPR_REGION_FIXED, name, n);
    uint64_t rec_off = cpr_stream_offset(s);
    ret = cpr_rec_write(s, CPR_REC_REGION, p, CPR_REGION_FIXED + n, errp);
    g_free(p);
    uint64_t at;
    if (ret == 0)
        ret = cpr_stream_skip_out(s, pad + plen, &at, errp);
    if (ret < 0)
        return ret;
    struct cpr_region *r = cpr_region_add(s, name);
    r->block_size = block_size;
    r->page_size = page_size;
    r->chunk_size = chunk_size;
    r->pages_len = plen;
    r->pages_offset = at + pad;
    r->record_offset = rec_off;
    *out = r;
    return 0;
}
