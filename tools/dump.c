/* SPDX-License-Identifier: MIT */
/*
 * The walker behind cpr-dump: reads a stream through the checking reader and renders it as
 * JSON, decoding full sections by the stream's own schema record. Everything it reads is
 * untrusted, the schema included: depth, counts and every read are bounded by the body.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include <cpr/error.h>

#include "dump.h"
#include "core/bytes.h"
#include "format/meta.h"
#include "format/record.h"
#include "format/stream.h"

#define MAX_DEPTH 32
#define HEX_MAX 64 /* bytes of a buffer or custom field shown in hex */
#define STRING_MAX (1u << 20) /* longest string field of a valid stream (docs/format.md 2.7) */

/* A cursor over a section body; every read is bounds-checked. */
struct cur {
    const uint8_t *p;
    uint64_t len, pos;
    char err[256];
};

static int fail(struct cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct cur *c, const char *fmt, ...)
{
    if (c->err[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(c->err))
        snprintf(c->err + n, sizeof(c->err) - (size_t)n, " (body offset %llu)", (unsigned long long)c->pos);
    return -1;
}

static int take(struct cur *c, uint64_t n, const uint8_t **out, const char *name)
{
    if (c->len - c->pos < n)
        return fail(c, "field '%s': body ends", name);
    *out = c->p + c->pos;
    c->pos += n;
    return 0;
}


static json_object *hex(const uint8_t *p, uint64_t n)
{
    uint64_t shown = n > HEX_MAX ? HEX_MAX : n;
    char *s = malloc(shown * 2 + 4);
    for (uint64_t i = 0; i < shown; i++)
        sprintf(s + 2 * i, "%02x", p[i]);
    strcpy(s + 2 * shown, n > shown ? "..." : "");
    json_object *o = json_object_new_string(s);
    free(s);
    return o;
}

static const char *str_key(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                              : NULL;
}

static int uint_key(json_object *o, const char *key, uint64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    *out = json_object_get_uint64(v);
    return 0;
}

static int decode_desc(struct cur *c, json_object *desc, uint32_t version, int depth, json_object *out);

/* The value of an earlier integer field of this struct, for counts and lengths: at most cap
 * (the field's capacity); a negative one is over any capacity (docs/format.md 3.2). */
static int count_of(struct cur *c, json_object *out, const char *field, const char *name, uint64_t cap,
                    uint64_t *n)
{
    json_object *v;
    if (!field || !json_object_object_get_ex(out, field, &v) || !json_object_is_type(v, json_type_int))
        return fail(c, "field '%s': its count field is absent (missing, or absent in this version)", name);
    if (json_object_get_int64(v) < 0 || json_object_get_uint64(v) > cap)
        return fail(c, "field '%s': count %s exceeds its capacity %llu", name, json_object_get_string(v),
                    (unsigned long long)cap);
    *n = json_object_get_uint64(v);
    return 0;
}

static json_object *decode_scalar(struct cur *c, const char *type, uint64_t size, const char *name)
{
    const uint8_t *p = NULL;
    if (take(c, size, &p, name) < 0)
        return NULL;
    uint64_t v = cpr_le_get(p, size);
    if (strcmp(type, "bool") == 0) {
        if (v > 1) {
            fail(c, "field '%s': bool is neither 0 nor 1", name);
            return NULL;
        }
        return json_object_new_boolean(v != 0);
    }
    if (type[0] == 'i') {
        int shift = 64 - 8 * (int)size;
        return json_object_new_int64((int64_t)(v << shift) >> shift);
    }
    return json_object_new_uint64(v);
}

static int scalar_size(const char *type, uint64_t *size)
{
    static const struct { const char *n; uint64_t s; } t[] = {
        { "u8", 1 }, { "u16", 2 }, { "u32", 4 }, { "u64", 8 }, { "i8", 1 },
        { "i16", 2 }, { "i32", 4 }, { "i64", 8 }, { "bool", 1 },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(type, t[i].n) == 0) {
            *size = t[i].s;
            return 0;
        }
    return -1;
}

/* One element of a field. */
static json_object *decode_elem(struct cur *c, json_object *f, const char *type, uint32_t version, int depth,
                                const char *name)
{
    uint64_t size;
    if (scalar_size(type, &size) == 0)
        return decode_scalar(c, type, size, name);
    if (strcmp(type, "struct") == 0) {
        json_object *sub;
        if (!json_object_object_get_ex(f, "struct", &sub)) {
            fail(c, "field '%s': schema lacks its struct", name);
            return NULL;
        }
        json_object *o = json_object_new_object();
        if (decode_desc(c, sub, version, depth + 1, o) < 0) {
            json_object_put(o);
            return NULL;
        }
        return o;
    }
    fail(c, "field '%s': unknown type in schema", name);
    return NULL;
}

static int decode_field(struct cur *c, json_object *f, uint32_t version, int depth, json_object *out)
{
    const char *name = str_key(f, "name"), *type = str_key(f, "type");
    if (!name || !type)
        return fail(c, "schema field without name or type");
    uint64_t since = 0, size = 0, count = 1, n;
    uint_key(f, "since", &since);
    uint_key(f, "size", &size);
    uint_key(f, "count", &count);
    if (since && version < since)
        return 0; /* absent in this version */
    const uint8_t *p = NULL;
    if (strcmp(type, "bytes") == 0 || strcmp(type, "vbytes") == 0) {
        n = size;
        if (type[0] == 'v' && count_of(c, out, str_key(f, "length_field"), name, size, &n) < 0)
            return -1;
        if (take(c, n, &p, name) < 0)
            return -1;
        json_object_object_add(out, name, hex(p, n));
        return 0;
    }
    if (strcmp(type, "string") == 0) {
        if (take(c, 4, &p, name) < 0)
            return -1;
        uint32_t len = (uint32_t)cpr_le_get(p, 4);
        if (len == UINT32_MAX) {
            json_object_object_add(out, name, NULL);
            return 0;
        }
        if (len > STRING_MAX)
            return fail(c, "field '%s': string of %u bytes is over the format's limit", name, len);
        if (take(c, len, &p, name) < 0)
            return -1;
        if (memchr(p, 0, len))
            return fail(c, "field '%s': string contains a NUL byte", name);
        json_object_object_add(out, name, json_object_new_string_len((const char *)p, (int)len));
        return 0;
    }
    if (strcmp(type, "custom") == 0) {
        if (take(c, 8, &p, name) < 0)
            return -1;
        uint64_t len = cpr_le_get(p, 8);
        if (take(c, len, &p, name) < 0)
            return -1;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "length", json_object_new_uint64(len));
        json_object_object_add(o, "hex", hex(p, len));
        json_object_object_add(out, name, o);
        return 0;
    }
    const char *cf = str_key(f, "count_field");
    n = count;
    if (cf && count_of(c, out, cf, name, count, &n) < 0)
        return -1;
    /* Each element takes at least one byte: a count beyond the body is a lie, not a loop. */
    if (n > c->len - c->pos + 1)
        return fail(c, "field '%s': element count exceeds the body", name);
    if (!cf && count == 1) {
        json_object *v = decode_elem(c, f, type, version, depth, name);
        if (!v)
            return -1;
        json_object_object_add(out, name, v);
        return 0;
    }
    json_object *arr = json_object_new_array();
    json_object_object_add(out, name, arr);
    for (uint64_t i = 0; i < n; i++) {
        json_object *v = decode_elem(c, f, type, version, depth, name);
        if (!v)
            return -1;
        json_object_array_add(arr, v);
    }
    return 0;
}

static json_object *find_by_name(json_object *arr, const char *name)
{
    if (!arr || !json_object_is_type(arr, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        const char *n = str_key(e, "name");
        if (n && strcmp(n, name) == 0)
            return e;
    }
    return NULL;
}

/* What is wrong with subsection `name` of version sv whose schema entry is sd (NULL: none),
 * given the subsections already decoded into out; NULL when nothing. */
static const char *subsection_problem(json_object *sd, json_object *out, const char *name, uint32_t sv)
{
    json_object *seen = NULL;
    uint64_t min = 0, max = 0;
    if (!sd)
        return "is not in the schema";
    if (json_object_object_get_ex(out, "subsections", &seen) && json_object_object_get_ex(seen, name, NULL))
        return "appears twice";
    cpr_json_uint(sd, "min_version", UINT32_MAX, &min);
    cpr_json_uint(sd, "version", UINT32_MAX, &max);
    return sv < min || sv > max ? "has a version outside the schema's range" : NULL;
}

/* At the end of a subsection list: every subsection the schema marks required came. */
static int check_required(struct cur *c, json_object *subs, json_object *out)
{
    json_object *seen = NULL, *req;
    json_object_object_get_ex(out, "subsections", &seen);
    for (size_t i = 0; subs && i < json_object_array_length(subs); i++) {
        json_object *sd = json_object_array_get_idx(subs, i);
        const char *name = str_key(sd, "name");
        if (json_object_object_get_ex(sd, "required", &req) && json_object_get_boolean(req) &&
            !json_object_object_get_ex(seen, name, NULL))
            return fail(c, "missing subsection '%s' (required by the schema)", name);
    }
    return 0;
}

static int decode_desc(struct cur *c, json_object *desc, uint32_t version, int depth, json_object *out)
{
    if (depth > MAX_DEPTH)
        return fail(c, "schema nests deeper than %d levels", MAX_DEPTH);
    json_object *fields = NULL, *subs = NULL;
    json_object_object_get_ex(desc, "fields", &fields);
    json_object_object_get_ex(desc, "subsections", &subs);
    if (fields && json_object_is_type(fields, json_type_array))
        for (size_t i = 0; i < json_object_array_length(fields); i++)
            if (decode_field(c, json_object_array_get_idx(fields, i), version, depth, out) < 0)
                return -1;
    const uint8_t *p = NULL;
    for (;;) {
        if (take(c, 1, &p, "(subsection list)") < 0)
            return -1;
        if (*p == 0)
            return check_required(c, subs, out);
        if (*p != 1)
            return fail(c, "bad subsection marker 0x%02x", *p);
        if (take(c, 4, &p, "(subsection)") < 0)
            return -1;
        uint64_t nlen = cpr_le_get(p, 4);
        if (take(c, nlen, &p, "(subsection)") < 0)
            return -1;
        if (nlen == 0 || memchr(p, 0, nlen))
            return fail(c, "subsection name %s", nlen ? "contains a NUL byte" : "is empty");
        char *name = strndup((const char *)p, nlen);
        const uint8_t *h = NULL;
        if (take(c, 12, &h, name) < 0) {
            free(name);
            return -1;
        }
        uint32_t sv = (uint32_t)cpr_le_get(h, 4);
        uint64_t blen = cpr_le_get(h + 4, 8);
        json_object *sd = find_by_name(subs, name);
        const char *why = subsection_problem(sd, out, name, sv);
        if (why) {
            int r = fail(c, "subsection '%s' (version %u) %s", name, sv, why);
            free(name);
            return r;
        }
        json_object *so = json_object_new_object();
        json_object_object_add(so, "version", json_object_new_uint64(sv));
        json_object_object_add(so, "length", json_object_new_uint64(blen));
        if (blen > c->len - c->pos) {
            json_object_put(so);
            int r = fail(c, "subsection '%s' overruns the body", name);
            free(name);
            return r;
        }
        struct cur sc = { c->p + c->pos, blen, 0, "" };
        json_object *fo = json_object_new_object();
        json_object_object_add(so, "fields", fo);
        if (decode_desc(&sc, sd, sv, depth + 1, fo) < 0 || sc.pos != blen) {
            if (!sc.err[0])
                snprintf(sc.err, sizeof(sc.err), "subsection '%s': bytes left over", name);
            snprintf(c->err, sizeof(c->err), "%s", sc.err);
            json_object_object_add(out, name, so);
            free(name);
            return -1;
        }
        c->pos += blen;
        if (!json_object_object_get_ex(out, "subsections", &(json_object *){ NULL }))
            json_object_object_add(out, "subsections", json_object_new_object());
        json_object *all;
        json_object_object_get_ex(out, "subsections", &all);
        json_object_object_add(all, name, so);
        free(name);
    }
}

struct dump {
    cpr_schema *schema; /* the stream's schema record, once read */
};

static json_object *record_json(const struct cpr_rec *r, cpr_stream *s, struct dump *d, char *problem, size_t plen)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "index", json_object_new_uint64(r->index));
    json_object_object_add(o, "offset", json_object_new_uint64(r->offset));
    json_object_object_add(o, "type", json_object_new_string(cpr_rec_type_name(r->type)));
    json_object_object_add(o, "length", json_object_new_uint64(r->len));
    if (r->flags)
        json_object_object_add(o, "flags", json_object_new_int(r->flags));
    cpr_error *err = NULL;
    if (r->type == CPR_REC_CONFIG || r->type == CPR_REC_SCHEMA) {
        json_object *v = NULL;
        int ret = r->type == CPR_REC_CONFIG ? cpr_meta_config(r, &v, &err)
                                            : cpr_meta_schema(r, s->limit[CPR_STREAM_LIMIT_STRING], &d->schema, &err);
        if (ret < 0)
            snprintf(problem, plen, "%s", cpr_error_message(err));
        else if (r->type == CPR_REC_SCHEMA)
            v = json_object_get(cpr_schema_root(d->schema));
        cpr_error_free(err);
        if (v)
            json_object_object_add(o, r->type == CPR_REC_CONFIG ? "config" : "schema", v);
        return o;
    }
    json_object_object_add(o, "section", json_object_new_string(r->name));
    json_object_object_add(o, "section_id", json_object_new_uint64(r->section_id));
    if (r->type == CPR_REC_FULL || r->type == CPR_REC_START) {
        json_object_object_add(o, "instance", json_object_new_uint64(r->instance));
        json_object_object_add(o, "version", json_object_new_uint64(r->version));
    }
    uint64_t blen = s->view_len - s->view_pos;
    json_object_object_add(o, "body_length", json_object_new_uint64(blen));
    if (cpr_schema_check_record(d->schema, r, &err) < 0) {
        snprintf(problem, plen, "%s", cpr_error_message(err));
        cpr_error_free(err);
        return o;
    }
    json_object *desc = r->type == CPR_REC_FULL ? cpr_schema_entry(d->schema, r->name) : NULL;
    if (desc) {
        struct cur c = { s->view + s->view_pos, blen, 0, "" };
        json_object *fields = json_object_new_object();
        json_object_object_add(o, "fields", fields);
        if (decode_desc(&c, desc, r->version, 0, fields) < 0 || c.pos != blen) {
            snprintf(problem, plen, "record #%llu (full) at offset %llu, section '%s': %s",
                     (unsigned long long)r->index, (unsigned long long)r->offset, r->name,
                     c.err[0] ? c.err : "body longer than its schema says");
        }
    }
    return o;
}

char *cpr_dump_stream(cpr_stream *s, json_object **out)
{
    struct dump d = { 0 };
    cpr_error *err = NULL;
    json_object *root = json_object_new_object();
    json_object *records = json_object_new_array();
    char problem[512] = "";
    unsigned int minor = 0;
    int ret = cpr_rec_read_stream_header(s, &minor, &err);
    if (ret >= 0) {
        json_object *h = json_object_new_object();
        json_object_object_add(h, "format", json_object_new_string("libcpr"));
        json_object_object_add(h, "major", json_object_new_int(CPR_FORMAT_MAJOR));
        json_object_object_add(h, "minor", json_object_new_int((int)minor));
        json_object_object_add(h, "offset", json_object_new_int(0));
        json_object_object_add(h, "length", json_object_new_int(CPR_STREAM_HEADER_SIZE));
        json_object_object_add(root, "header", h);
    }
    json_object_object_add(root, "records", records);
    struct cpr_rec r;
    while (ret >= 0 && !problem[0] && (ret = cpr_rec_next(s, &r, &err)) > 0)
        json_object_array_add(records, record_json(&r, s, &d, problem, sizeof(problem)));
    if (ret == 0 && !problem[0]) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "offset", json_object_new_uint64(cpr_stream_offset(s) - CPR_RECORD_HEADER_SIZE -
                                                                       CPR_EOS_PAYLOAD_SIZE - CPR_RECORD_TRAILER_SIZE));
        json_object_object_add(e, "records", json_object_new_uint64(s->rec_count));
        json_object_object_add(e, "sections", json_object_new_uint64(s->sec_count));
        json_object_object_add(e, "stream_bytes", json_object_new_uint64(cpr_stream_offset(s)));
        json_object_object_add(root, "end", e);
    }
    char *msg = ret < 0 ? g_strdup(cpr_error_message(err)) : problem[0] ? g_strdup(problem) : NULL;
    if (msg)
        json_object_object_add(root, "error", json_object_new_string(msg));
    cpr_schema_free(d.schema);
    cpr_error_free(err);
    *out = root;
    return msg;
}
