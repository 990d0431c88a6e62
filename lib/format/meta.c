/* SPDX-License-Identifier: MIT */
/* The config and schema records: parsing and every rule of docs/format.md 2.4 and 4. */
#include <errno.h>
#include <string.h>

#include <cpr/mode.h>

#include "core/error.h"
#include "format/meta.h"

#define U64 G_GUINT64_FORMAT
#define REC_FMT "record #%" U64 " (%s) at offset %" U64
#define REC_ARGS(r) (guint64)(r)->index, cpr_rec_type_name((r)->type), (guint64)(r)->offset

struct cpr_schema {
    json_object *root;
    GHashTable *by_name; /* section name -> its entry (borrowed from root) */
};

/* The whole payload as one JSON object: strict RFC 8259, UTF-8, nothing after it but space.
 * `where` names the record in errors. */
static json_object *parse(const uint8_t *p, uint64_t len, const char *where, cpr_error **errp)
{
    if (len > INT_MAX) {
        cpr_error_set(errp, -EBADMSG, "%s: JSON text of %" U64 " bytes is too long", where, (guint64)len);
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(CPR_JSON_MAX_DEPTH);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, (const char *)p, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (o && end < len && p[end] && strchr(" \t\r\n", p[end]))
        end++;
    if (!o || e != json_tokener_success || end != len) {
        cpr_error_set(errp, -EBADMSG, "%s: payload is not one JSON text (%s at byte %zu)", where,
                      o && e == json_tokener_success ? "bytes after it" : json_tokener_error_desc(e), end);
        json_object_put(o);
        return NULL;
    }
    if (!json_object_is_type(o, json_type_object)) {
        cpr_error_set(errp, -EBADMSG, "%s: payload is not a JSON object", where);
        json_object_put(o);
        return NULL;
    }
    return o;
}

static char *rec_where(const struct cpr_rec *r)
{
    return g_strdup_printf(REC_FMT, REC_ARGS(r));
}

int cpr_json_uint(json_object *o, const char *key, uint64_t max, uint64_t *v)
{
    json_object *x;
    if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_int) ||
        json_object_get_int64(x) < 0 || json_object_get_uint64(x) > max)
        return -1;
    *v = json_object_get_uint64(x);
    return 0;
}

/* The string value of key, or NULL when absent or not a string. */
static const char *str_of(json_object *o, const char *key)
{
    json_object *x;
    return json_object_object_get_ex(o, key, &x) && json_object_is_type(x, json_type_string) ? json_object_get_string(x)
                                                                                             : NULL;
}

/* A name: a string of 1..limit bytes without NUL. */
static int is_name(json_object *o, const char *key, uint64_t limit)
{
    json_object *x;
    if (!json_object_object_get_ex(o, key, &x) || !json_object_is_type(x, json_type_string))
        return 0;
    size_t len = (size_t)json_object_get_string_len(x);
    return len >= 1 && len <= limit && strlen(json_object_get_string(x)) == len;
}

/* A key that, when present, has the JSON type t. */
static int absent_or(json_object *o, const char *key, json_type t)
{
    json_object *x;
    return !json_object_object_get_ex(o, key, &x) || json_object_is_type(x, t);
}

int cpr_meta_config_json(const void *json, size_t len, const char *where, json_object **out, cpr_error **errp)
{
    json_object *o = parse(json, len, where, errp);
    if (!o)
        return -EBADMSG;
    const char *why = NULL;
    const char *mode = str_of(o, "mode");
    cpr_mode m;
    if (!str_of(o, "producer"))
        why = "key 'producer' is missing or not a string";
    else if (!mode)
        why = "key 'mode' is missing or not a string";
    else if (cpr_mode_from_name(mode, &m, NULL) < 0)
        why = "key 'mode' is not normal, cpr-reboot, cpr-transfer or cpr-exec";
    else if (!absent_or(o, "machine", json_type_string))
        why = "key 'machine' is not a string";
    else if (!absent_or(o, "identity", json_type_object))
        why = "key 'identity' is not an object";
    if (why) {
        json_object_put(o);
        return cpr_error_set(errp, -EBADMSG, "%s: %s", where, why);
    }
    if (out)
        *out = o;
    else
        json_object_put(o);
    return 0;
}

int cpr_meta_config(const struct cpr_rec *r, json_object **out, cpr_error **errp)
{
    g_autofree char *where = rec_where(r);
    return cpr_meta_config_json(r->payload, r->len, where, out, errp);
}

/* ---- schema ---- */

struct walk {
    const struct cpr_rec *r;
    uint64_t limit;
    cpr_error **errp;
};

static int bad(struct walk *w, const char *where, const char *fmt, ...) CPR_PRINTF(3, 4);
static int bad(struct walk *w, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return cpr_error_set(w->errp, -EBADMSG, REC_FMT ": %s: %s", REC_ARGS(w->r), where, msg);
}

static int versions(struct walk *w, json_object *d, const char *where, uint64_t *version)
{
    uint64_t min;
    if (cpr_json_uint(d, "version", UINT32_MAX, version) < 0 || cpr_json_uint(d, "min_version", UINT32_MAX, &min) < 0 ||
        min < 1 || min > *version)
        return bad(w, where, "needs integers 1 <= min_version <= version <= 4294967295");
    return 0;
}

static const struct {
    const char *name;
    uint64_t size; /* of an element; 0: no fixed size */
    int integer;   /* may be a count, length or `equal` field */
} types[] = {
    { "u8", 1, 1 }, { "u16", 2, 1 }, { "u32", 4, 1 }, { "u64", 8, 1 }, { "i8", 1, 1 }, { "i16", 2, 1 },
    { "i32", 4, 1 }, { "i64", 8, 1 }, { "bool", 1, 0 }, { "bytes", 0, 0 }, { "vbytes", 0, 0 }, { "string", 0, 0 },
    { "struct", 0, 0 }, { "custom", 0, 0 },
};

static int type_index(const char *t)
{
    for (size_t i = 0; t && i < G_N_ELEMENTS(types); i++)
        if (strcmp(types[i].name, t) == 0)
            return (int)i;
    return -1;
}

static int check_desc(struct walk *w, json_object *d, const char *where);

/* count_field / length_field `key` of field f: names an earlier integer scalar of `fields`. */
static int check_count_ref(struct walk *w, json_object *fields, size_t idx, json_object *f, const char *key,
                           const char *where)
{
    const char *ref = str_of(f, key);
    if (!ref)
        return bad(w, where, "'%s' is not a string", key);
    for (size_t j = 0; j < idx; j++) {
        json_object *c = json_object_array_get_idx(fields, j);
        if (strcmp(str_of(c, "name"), ref) != 0)
            continue;
        uint64_t count;
        int t = type_index(str_of(c, "type"));
        if (!types[t].integer || cpr_json_uint(c, "count", 1, &count) < 0 || count != 1 ||
            json_object_object_get_ex(c, "count_field", NULL))
            return bad(w, where, "%s '%s' is not an integer scalar", key, ref);
        return 0;
    }
    return bad(w, where, "%s '%s' is not an earlier field", key, ref);
}

static int check_field(struct walk *w, json_object *fields, size_t idx, uint64_t version, const char *dwhere)
{
    json_object *f = json_object_array_get_idx(fields, idx);
    if (!json_object_is_type(f, json_type_object) || !is_name(f, "name", w->limit))
        return bad(w, dwhere, "field %zu is not an object with a name", idx);
    g_autofree char *where = g_strdup_printf("%s field '%s'", dwhere, str_of(f, "name"));
    for (size_t j = 0; j < idx; j++)
        if (strcmp(str_of(json_object_array_get_idx(fields, j), "name"), str_of(f, "name")) == 0)
            return bad(w, where, "appears twice");
    int t = type_index(str_of(f, "type"));
    uint64_t size, count, since, equal;
    if (t < 0)
        return bad(w, where, "unknown type");
    if (cpr_json_uint(f, "size", UINT64_MAX, &size) < 0 || cpr_json_uint(f, "count", UINT64_MAX, &count) < 0 ||
        count < 1)
        return bad(w, where, "needs integers size and count >= 1");
    const char *type = types[t].name;
    int is_struct = strcmp(type, "struct") == 0, is_vbytes = strcmp(type, "vbytes") == 0;
    int has_count = json_object_object_get_ex(f, "count_field", NULL);
    int has_length = json_object_object_get_ex(f, "length_field", NULL);
    int array_ok = types[t].size || is_struct; /* integers, bools, structs */
    if (types[t].size ? size != types[t].size : (strcmp(type, "bytes") == 0 || is_vbytes) ? size < 1 : size != 0)
        return bad(w, where, "size %" U64 " does not fit type %s", (guint64)size, type);
    if (!array_ok && count != 1)
        return bad(w, where, "a %s field has count 1", type);
    if ((has_count && !array_ok) || has_length != is_vbytes)
        return bad(w, where, "count_field is for arrays, length_field for vbytes (and it needs one)");
    if (has_count && check_count_ref(w, fields, idx, f, "count_field", where) < 0)
        return -EBADMSG;
    if (has_length && check_count_ref(w, fields, idx, f, "length_field", where) < 0)
        return -EBADMSG;
    if (json_object_object_get_ex(f, "since", NULL) &&
        (cpr_json_uint(f, "since", version, &since) < 0 || since < 1))
        return bad(w, where, "since is not an integer in 1..%" U64, (guint64)version);
    if (json_object_object_get_ex(f, "equal", NULL) &&
        (!(types[t].integer || strcmp(type, "bool") == 0) || count != 1 || has_count ||
         cpr_json_uint(f, "equal", UINT64_MAX, &equal) < 0))
        return bad(w, where, "equal is a non-negative integer, on an integer or bool scalar only");
    json_object *sub = NULL;
    if (json_object_object_get_ex(f, "struct", &sub) != is_struct)
        return bad(w, where, "a struct field, and only it, has a 'struct' description");
    return is_struct ? check_desc(w, sub, where) : 0;
}

/* A description: name, versions, fields, subsections (each a description with `required`). */
static int check_desc(struct walk *w, json_object *d, const char *where)
{
    json_object *fields, *subs;
    uint64_t version;
    if (!json_object_is_type(d, json_type_object) || !is_name(d, "name", w->limit))
        return bad(w, where, "description is not an object with a name");
    if (versions(w, d, where, &version) < 0)
        return -EBADMSG;
    if (!json_object_object_get_ex(d, "fields", &fields) || !json_object_is_type(fields, json_type_array) ||
        !json_object_object_get_ex(d, "subsections", &subs) || !json_object_is_type(subs, json_type_array))
        return bad(w, where, "description needs arrays 'fields' and 'subsections'");
    for (size_t i = 0; i < json_object_array_length(fields); i++)
        if (check_field(w, fields, i, version, where) < 0)
            return -EBADMSG;
    for (size_t i = 0; i < json_object_array_length(subs); i++) {
        json_object *s = json_object_array_get_idx(subs, i);
        if (!json_object_is_type(s, json_type_object) || !is_name(s, "name", w->limit))
            return bad(w, where, "subsection %zu is not an object with a name", i);
        g_autofree char *swhere = g_strdup_printf("%s subsection '%s'", where, str_of(s, "name"));
        json_object *req;
        if (!json_object_object_get_ex(s, "required", &req) || !json_object_is_type(req, json_type_boolean))
            return bad(w, swhere, "'required' is not true or false");
        for (size_t j = 0; j < i; j++)
            if (strcmp(str_of(json_object_array_get_idx(subs, j), "name"), str_of(s, "name")) == 0)
                return bad(w, swhere, "appears twice");
        if (check_desc(w, s, swhere) < 0)
            return -EBADMSG;
    }
    return 0;
}

static int check_entry(struct walk *w, json_object *e, size_t i, GHashTable *by_name)
{
    if (!json_object_is_type(e, json_type_object) || !is_name(e, "name", w->limit))
        return bad(w, "sections", "entry %zu is not an object with a name", i);
    const char *name = str_of(e, "name"), *kind = str_of(e, "kind");
    g_autofree char *where = g_strdup_printf("section '%s'", name);
    if (g_hash_table_contains(by_name, name))
        return bad(w, where, "has two entries");
    g_hash_table_insert(by_name, (gpointer)name, e);
    uint64_t version;
    if (kind && strcmp(kind, "full") == 0)
        return check_desc(w, e, where);
    if (!kind || strcmp(kind, "progressive") != 0)
        return bad(w, where, "kind is neither \"full\" nor \"progressive\"");
    if (json_object_object_get_ex(e, "fields", NULL) || json_object_object_get_ex(e, "subsections", NULL))
        return bad(w, where, "a progressive section has no fields or subsections");
    return versions(w, e, where, &version);
}

void cpr_schema_free(cpr_schema *sc)
{
    if (!sc)
        return;
    g_hash_table_destroy(sc->by_name);
    json_object_put(sc->root);
    g_free(sc);
}

int cpr_meta_schema(const struct cpr_rec *r, uint64_t string_limit, cpr_schema **out, cpr_error **errp)
{
    g_autofree char *where = rec_where(r);
    json_object *o = parse(r->payload, r->len, where, errp);
    if (!o)
        return -EBADMSG;
    cpr_schema *sc = g_new0(cpr_schema, 1);
    sc->root = o;
    sc->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    struct walk w = { r, string_limit, errp };
    json_object *secs;
    uint64_t v;
    int ret = 0;
    if (cpr_json_uint(o, "schema", UINT64_MAX, &v) < 0 || v != 1)
        ret = bad(&w, "key 'schema'", "is not 1 (the only schema version of format 1.x)");
    else if (!json_object_object_get_ex(o, "sections", &secs) || !json_object_is_type(secs, json_type_array))
        ret = bad(&w, "key 'sections'", "is not an array");
    for (size_t i = 0; ret == 0 && i < json_object_array_length(secs); i++)
        ret = check_entry(&w, json_object_array_get_idx(secs, i), i, sc->by_name);
    if (ret < 0) {
        cpr_schema_free(sc);
        return ret;
    }
    *out = sc;
    return 0;
}

json_object *cpr_schema_root(const cpr_schema *sc)
{
    return sc->root;
}

json_object *cpr_schema_entry(const cpr_schema *sc, const char *name)
{
    return sc && name ? g_hash_table_lookup(sc->by_name, name) : NULL;
}

int cpr_schema_check_record(const cpr_schema *sc, const struct cpr_rec *r, cpr_error **errp)
{
    if (!sc || (r->type != CPR_REC_FULL && r->type != CPR_REC_START))
        return 0;
    json_object *e = cpr_schema_entry(sc, r->name);
    if (!e)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section '%s' is not in the stream's schema", REC_ARGS(r),
                             r->name);
    const char *want = r->type == CPR_REC_FULL ? "full" : "progressive";
    if (strcmp(str_of(e, "kind"), want) != 0)
        return cpr_error_set(errp, -EBADMSG, REC_FMT ": section '%s' is %s in the stream's schema", REC_ARGS(r),
                             r->name, str_of(e, "kind"));
    uint64_t max = 0, min = 0;
    cpr_json_uint(e, "version", UINT32_MAX, &max);
    cpr_json_uint(e, "min_version", UINT32_MAX, &min);
    if (r->version < min || r->version > max)
        return cpr_error_set(errp, -EBADMSG,
                             REC_FMT ": section '%s' has version %u; the stream's schema gives versions %" U64
                             "..%" U64,
                             REC_ARGS(r), r->name, r->version, (guint64)min, (guint64)max);
    return 0;
}
