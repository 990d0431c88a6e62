/* SPDX-License-Identifier: MIT */
/* Descriptions (builder API) and the encoder/decoder of described section bodies. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "format/stream.h"
#include "format/vmstate.h"

#define U64 G_GUINT64_FORMAT

enum field_kind { FK_SCALAR, FK_BYTES, FK_VBYTES, FK_STRING, FK_STRUCT, FK_CUSTOM };

struct cpr_field {
    char *name;
    cpr_type type;
    enum field_kind kind;
    size_t offset, size;
    size_t elem;        /* bytes per element: 1..8 for integers, the struct size for structs */
    size_t count;       /* fixed element count, or capacity when count_field >= 0 */
    int count_field;    /* index of the field holding the count/length, -1 for none */
    uint32_t since;     /* 0: always present */
    int has_equal;
    uint64_t equal;
    cpr_desc *sub;
    cpr_field_put_fn put;
    cpr_field_get_fn get;
    void *opaque;
};

struct cpr_subsection {
    cpr_desc *desc;
    cpr_needed_fn needed;
    unsigned int flags;
};

struct cpr_desc {
    gint ref;
    int sealed;
    char *name;
    uint32_t version, min_version;
    size_t size;
    GPtrArray *fields;      /* struct cpr_field * */
    GArray *subsections;    /* struct cpr_subsection */
    cpr_hook_fn pre_save, post_save, pre_load;
    cpr_post_load_fn post_load;
};

static const struct {
    const char *name;
    size_t size;
    int is_signed;
} type_info[] = {
    [CPR_TYPE_U8] = { "u8", 1, 0 },   [CPR_TYPE_U16] = { "u16", 2, 0 }, [CPR_TYPE_U32] = { "u32", 4, 0 },
    [CPR_TYPE_U64] = { "u64", 8, 0 }, [CPR_TYPE_I8] = { "i8", 1, 1 },   [CPR_TYPE_I16] = { "i16", 2, 1 },
    [CPR_TYPE_I32] = { "i32", 4, 1 }, [CPR_TYPE_I64] = { "i64", 8, 1 }, [CPR_TYPE_BOOL] = { "bool", 1, 0 },
    [CPR_TYPE_BYTES] = { "bytes", 1, 0 }, [CPR_TYPE_STRING] = { "string", 0, 0 },
};

static int is_int_type(cpr_type t)
{
    return t >= CPR_TYPE_U8 && t <= CPR_TYPE_BOOL;
}

const char *cpr_type_schema_name(cpr_type t)
{
    return t >= CPR_TYPE_U8 && t <= CPR_TYPE_STRING ? type_info[t].name : "unknown";
}

/* ---- builder ---- */

static void field_free(gpointer p)
{
    struct cpr_field *f = p;
    g_free(f->name);
    cpr_desc_unref(f->sub);
    g_free(f);
}

CPR_API int cpr_desc_new(const char *name, uint32_t version, uint32_t min_version, size_t struct_size,
                         cpr_desc **out, cpr_error **errp)
{
    if (!out || !name || !*name)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_new: %s", out ? "empty name" : "out is NULL");
    if (min_version < 1 || min_version > version)
        return cpr_error_set(errp, -EINVAL, "description '%s': versions must satisfy 1 <= min_version (%u) <= version (%u)",
                             name, min_version, version);
    if (!struct_size)
        return cpr_error_set(errp, -EINVAL, "description '%s': struct size 0", name);
    cpr_desc *d = g_new0(cpr_desc, 1);
    d->ref = 1;
    d->name = g_strdup(name);
    d->version = version;
    d->min_version = min_version;
    d->size = struct_size;
    d->fields = g_ptr_array_new_with_free_func(field_free);
    d->subsections = g_array_new(FALSE, FALSE, sizeof(struct cpr_subsection));
    *out = d;
    return 0;
}

CPR_API cpr_desc *cpr_desc_ref(cpr_desc *d)
{
    if (d)
        g_atomic_int_inc(&d->ref);
    return d;
}

CPR_API void cpr_desc_unref(cpr_desc *d)
{
    if (!d || !g_atomic_int_dec_and_test(&d->ref))
        return;
    for (guint i = 0; i < d->subsections->len; i++)
        cpr_desc_unref(g_array_index(d->subsections, struct cpr_subsection, i).desc);
    g_array_free(d->subsections, TRUE);
    g_ptr_array_free(d->fields, TRUE);
    g_free(d->name);
    g_free(d);
}

CPR_API const char *cpr_desc_name(const cpr_desc *d)
{
    return d ? d->name : NULL;
}

uint32_t cpr_desc_version(const cpr_desc *d)
{
    return d->version;
}

uint32_t cpr_desc_min_version(const cpr_desc *d)
{
    return d->min_version;
}

void cpr_desc_seal(cpr_desc *d)
{
    d->sealed = 1;
}

static int find_field(const cpr_desc *d, const char *name)
{
    for (guint i = 0; i < d->fields->len; i++)
        if (strcmp(((struct cpr_field *)d->fields->pdata[i])->name, name) == 0)
            return (int)i;
    return -1;
}

/* Common checks of every add; returns a new field (not yet appended) or NULL with *errp. */
static struct cpr_field *field_prepare(cpr_desc *d, const char *name, size_t offset, size_t size, int *ret,
                                       cpr_error **errp)
{
    if (!d || !name || !*name) {
        *ret = cpr_error_set(errp, -EINVAL, "cpr_desc_add: %s", d ? "empty field name" : "description is NULL");
        return NULL;
    }
    if (d->sealed) {
        *ret = cpr_error_set(errp, -EPERM, "description '%s' is sealed (registered or nested): cannot add field '%s'",
                             d->name, name);
        return NULL;
    }
    if (find_field(d, name) >= 0) {
        *ret = cpr_error_set(errp, -EEXIST, "description '%s' already has a field '%s'", d->name, name);
        return NULL;
    }
    if (size == 0 || offset > d->size || size > d->size - offset) {
        *ret = cpr_error_set(errp, -EINVAL, "description '%s' field '%s': member [%zu, +%zu) outside the %zu-byte struct",
                             d->name, name, offset, size, d->size);
        return NULL;
    }
    struct cpr_field *f = g_new0(struct cpr_field, 1);
    f->name = g_strdup(name);
    f->offset = offset;
    f->size = size;
    f->count = 1;
    f->count_field = -1;
    return f;
}

static int field_append(cpr_desc *d, struct cpr_field *f)
{
    g_ptr_array_add(d->fields, f);
    return 0;
}

static int field_reject(struct cpr_field *f, int code, cpr_error **errp, const cpr_desc *d, const char *why)
{
    int ret = cpr_error_set(errp, code, "description '%s' field '%s': %s", d->name, f->name, why);
    field_free(f);
    return ret;
}

/* An integer or bool member: as many elements as fit its size exactly. Frees f on error. */
static int set_int_elements(const cpr_desc *d, struct cpr_field *f, cpr_type type, cpr_error **errp)
{
    f->type = type;
    f->kind = FK_SCALAR;
    f->elem = type_info[type].size;
    if (f->size % f->elem)
        return field_reject(f, -EINVAL, errp, d, "member size is not a multiple of the type's size");
    f->count = f->size / f->elem;
    return 0;
}

static int resolve_count_field(cpr_desc *d, struct cpr_field *f, const char *count_field, cpr_error **errp)
{
    int idx = count_field ? find_field(d, count_field) : -1;
    if (idx < 0) {
        int ret = cpr_error_set(errp, -ENOENT, "description '%s' field '%s': count field '%s' is not an earlier field",
                                d->name, f->name, count_field ? count_field : "(null)");
        field_free(f);
        return ret;
    }
    struct cpr_field *c = d->fields->pdata[idx];
    if (c->kind != FK_SCALAR || c->count != 1 || c->type == CPR_TYPE_BOOL)
        return field_reject(f, -EINVAL, errp, d, "its count field is not an integer scalar");
    f->count_field = idx;
    return 0;
}

/* Fixed fields (count_field NULL) and variable arrays of integers, bools and bytes. */
static int add_typed(cpr_desc *d, const char *name, cpr_type type, size_t offset, size_t size,
                     const char *count_field, cpr_error **errp)
{
    int ret = 0;
    struct cpr_field *f = field_prepare(d, name, offset, size, &ret, errp);
    if (!f)
        return ret;
    if (is_int_type(type)) {
        if ((ret = set_int_elements(d, f, type, errp)) < 0)
            return ret;
    } else if (type == CPR_TYPE_BYTES) {
        f->type = type;
        f->kind = count_field ? FK_VBYTES : FK_BYTES;
        f->elem = 1;
        if (count_field)
            f->count = size;
    } else if (type == CPR_TYPE_STRING && !count_field) {
        f->type = type;
        f->kind = FK_STRING;
        if (size != sizeof(char *))
            return field_reject(f, -EINVAL, errp, d, "a string member must be a char *");
    } else {
        return field_reject(f, -EINVAL, errp, d,
                            count_field ? "variable arrays hold integers, bools or bytes" : "unknown type");
    }
    if (count_field && (ret = resolve_count_field(d, f, count_field, errp)) < 0)
        return ret;
    return field_append(d, f);
}

CPR_API int cpr_desc_add(cpr_desc *d, const char *name, cpr_type type, size_t offset, size_t size, cpr_error **errp)
{
    return add_typed(d, name, type, offset, size, NULL, errp);
}

CPR_API int cpr_desc_add_varray(cpr_desc *d, const char *name, cpr_type type, size_t offset, size_t size,
                                const char *count_field, cpr_error **errp)
{
    if (!count_field)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_varray: field '%s' needs a count field", name ? name : "");
    return add_typed(d, name, type, offset, size, count_field, errp);
}

static int add_struct(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset, size_t size,
                      const char *count_field, cpr_error **errp)
{
    int ret = 0;
    if (!sub)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_struct: sub-description is NULL");
    if (sub == d)
        return cpr_error_set(errp, -EINVAL, "description '%s' cannot nest itself", d->name);
    struct cpr_field *f = field_prepare(d, name, offset, size, &ret, errp);
    if (!f)
        return ret;
    f->kind = FK_STRUCT;
    f->elem = sub->size;
    if (size % sub->size)
        return field_reject(f, -EINVAL, errp, d, "member size is not a multiple of the nested struct's size");
    f->count = size / sub->size;
    if (count_field && (ret = resolve_count_field(d, f, count_field, errp)) < 0)
        return ret;
    cpr_desc_seal(sub);
    f->sub = cpr_desc_ref(sub);
    return field_append(d, f);
}

CPR_API int cpr_desc_add_struct(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset, size_t size,
                                cpr_error **errp)
{
    return add_struct(d, name, sub, offset, size, NULL, errp);
}

CPR_API int cpr_desc_add_struct_varray(cpr_desc *d, const char *name, cpr_desc *sub, size_t offset, size_t size,
                                       const char *count_field, cpr_error **errp)
{
    if (!count_field)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_struct_varray: count_field is NULL");
    return add_struct(d, name, sub, offset, size, count_field, errp);
}

CPR_API int cpr_desc_add_custom(cpr_desc *d, const char *name, size_t offset, size_t size, cpr_field_put_fn put,
                                cpr_field_get_fn get, void *opaque, cpr_error **errp)
{
    int ret = 0;
    if (!put || !get)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_custom: field '%s' needs both put and get", name ? name : "");
    struct cpr_field *f = field_prepare(d, name, offset, size, &ret, errp);
    if (!f)
        return ret;
    f->kind = FK_CUSTOM;
    f->put = put;
    f->get = get;
    f->opaque = opaque;
    return field_append(d, f);
}

static struct cpr_field *modifiable_field(cpr_desc *d, const char *name, int *ret, cpr_error **errp)
{
    if (!d || !name) {
        *ret = cpr_error_set(errp, -EINVAL, "description or field name is NULL");
        return NULL;
    }
    if (d->sealed) {
        *ret = cpr_error_set(errp, -EPERM, "description '%s' is sealed: cannot change field '%s'", d->name, name);
        return NULL;
    }
    int idx = find_field(d, name);
    if (idx < 0) {
        *ret = cpr_error_set(errp, -ENOENT, "description '%s' has no field '%s'", d->name, name);
        return NULL;
    }
    return d->fields->pdata[idx];
}

CPR_API int cpr_desc_field_since(cpr_desc *d, const char *name, uint32_t version, cpr_error **errp)
{
    int ret = 0;
    struct cpr_field *f = modifiable_field(d, name, &ret, errp);
    if (!f)
        return ret;
    if (version < 1 || version > d->version)
        return cpr_error_set(errp, -EINVAL, "description '%s' field '%s': since version %u is outside 1..%u", d->name,
                             name, version, d->version);
    f->since = version;
    return 0;
}

CPR_API int cpr_desc_field_equal(cpr_desc *d, const char *name, uint64_t value, cpr_error **errp)
{
    int ret = 0;
    struct cpr_field *f = modifiable_field(d, name, &ret, errp);
    if (!f)
        return ret;
    if (f->kind != FK_SCALAR || f->count != 1 || f->count_field >= 0)
        return cpr_error_set(errp, -EINVAL, "description '%s' field '%s': only integer scalars can be checked", d->name,
                             name);
    f->has_equal = 1;
    f->equal = value;
    return 0;
}

CPR_API int cpr_desc_set_hooks(cpr_desc *d, cpr_hook_fn pre_save, cpr_hook_fn post_save, cpr_hook_fn pre_load,
                               cpr_post_load_fn post_load, cpr_error **errp)
{
    if (!d)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_set_hooks: description is NULL");
    if (d->sealed)
        return cpr_error_set(errp, -EPERM, "description '%s' is sealed: cannot set hooks", d->name);
    d->pre_save = pre_save;
    d->post_save = post_save;
    d->pre_load = pre_load;
    d->post_load = post_load;
    return 0;
}

CPR_API int cpr_desc_add_subsection(cpr_desc *d, cpr_desc *sub, cpr_needed_fn needed, unsigned int flags,
                                    cpr_error **errp)
{
    if (!d || !sub || sub == d)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_subsection: bad description");
    if (flags & ~CPR_SUBSECTION_REQUIRED)
        return cpr_error_set(errp, -EINVAL, "cpr_desc_add_subsection: unknown flags 0x%x", flags);
    if (d->sealed)
        return cpr_error_set(errp, -EPERM, "description '%s' is sealed: cannot add subsection '%s'", d->name, sub->name);
    if (sub->size > d->size)
        return cpr_error_set(errp, -EINVAL, "subsection '%s' describes %zu bytes, more than '%s' (%zu)", sub->name,
                             sub->size, d->name, d->size);
    for (guint i = 0; i < d->subsections->len; i++)
        if (strcmp(g_array_index(d->subsections, struct cpr_subsection, i).desc->name, sub->name) == 0)
            return cpr_error_set(errp, -EEXIST, "description '%s' already has a subsection '%s'", d->name, sub->name);
    cpr_desc_seal(sub);
    struct cpr_subsection ss = { cpr_desc_ref(sub), needed, flags };
    g_array_append_val(d->subsections, ss);
    return 0;
}

/* ---- encoding ---- */

static uint64_t load_member(const uint8_t *p, size_t size)
{
    switch (size) {
    case 1: return *p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

static void store_member(uint8_t *p, size_t size, uint64_t v)
{
    switch (size) {
    case 1: *p = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    default: memcpy(p, &v, 8); break;
    }
}

static uint64_t field_count(const cpr_desc *d, const struct cpr_field *f, const uint8_t *obj)
{
    if (f->count_field < 0)
        return f->count;
    const struct cpr_field *c = d->fields->pdata[f->count_field];
    uint64_t n = load_member(obj + c->offset, c->elem);
    /* A negative signed count reads as huge and fails the capacity check. */
    if (type_info[c->type].is_signed && c->elem < 8 && (n >> (c->elem * 8 - 1)))
        n = UINT64_MAX;
    return n;
}

static int save_body(cpr_stream *s, const cpr_desc *d, uint8_t *obj, uint32_t version, const char *where,
                     cpr_error **errp);

/* Appends a u64 placeholder and returns its offset in the scratch buffer. */
static size_t put_len_placeholder(cpr_stream *s, cpr_error **errp, int *ret)
{
    size_t at = s->len;
    *ret = cpr_stream_put_u64(s, 0, errp);
    return at;
}

static void patch_len(cpr_stream *s, size_t at)
{
    uint64_t len = GUINT64_TO_LE((uint64_t)(s->len - at - 8));
    memcpy(s->buf + at, &len, 8);
}

static int save_field(cpr_stream *s, const cpr_desc *d, const struct cpr_field *f, uint8_t *obj, uint32_t version,
                      const char *where, cpr_error **errp)
{
    uint8_t *m = obj + f->offset;
    uint64_t n = field_count(d, f, obj);
    int ret = 0;
    if (n > f->count && f->kind != FK_BYTES)
        return cpr_error_set(errp, -EINVAL, "%s field '%s': count %" U64 " exceeds its capacity %zu", where, f->name,
                             (guint64)n, f->count);
    switch (f->kind) {
    case FK_SCALAR:
        if (f->elem == 1)
            return cpr_stream_put_bytes(s, m, n, errp);
        for (uint64_t i = 0; i < n && ret >= 0; i++) {
            uint64_t v = GUINT64_TO_LE(load_member(m + i * f->elem, f->elem));
            ret = cpr_stream_put_bytes(s, &v, f->elem, errp);
        }
        return ret;
    case FK_BYTES:
        return cpr_stream_put_bytes(s, m, f->size, errp);
    case FK_VBYTES:
        return cpr_stream_put_bytes(s, m, n, errp);
    case FK_STRING: {
        const char *str;
        memcpy(&str, m, sizeof(str));
        if (!str)
            return cpr_stream_put_u32(s, UINT32_MAX, errp);
        size_t len = strlen(str);
        if (len >= UINT32_MAX)
            return cpr_error_set(errp, -EMSGSIZE, "%s field '%s': string too long", where, f->name);
        if ((ret = cpr_stream_put_u32(s, (uint32_t)len, errp)) < 0)
            return ret;
        return cpr_stream_put_bytes(s, str, len, errp);
    }
    case FK_STRUCT:
        for (uint64_t i = 0; i < n && ret >= 0; i++) {
            g_autofree char *sub_where = g_strdup_printf("%s field '%s'[%" U64 "]", where, f->name, (guint64)i);
            ret = save_body(s, f->sub, m + i * f->elem, version, sub_where, errp);
        }
        return ret;
    case FK_CUSTOM: {
        size_t at = put_len_placeholder(s, errp, &ret);
        if (ret < 0)
            return ret;
        cpr_error *herr = NULL;
        ret = cpr_error_from_hook(errp, f->put(s, m, f->opaque, &herr), &herr, "%s field '%s': put", where, f->name);
        if (ret < 0)
            return ret;
        patch_len(s, at);
        return 0;
    }
    }
    return 0;
}

static int save_subsections(cpr_stream *s, const cpr_desc *d, uint8_t *obj, const char *where, cpr_error **errp)
{
    int ret = 0;
    for (guint i = 0; i < d->subsections->len && ret >= 0; i++) {
        const struct cpr_subsection *ss = &g_array_index(d->subsections, struct cpr_subsection, i);
        if (ss->needed && !ss->needed(obj))
            continue;
        size_t nlen = strlen(ss->desc->name);
        if ((ret = cpr_stream_put_u8(s, 1, errp)) < 0 || (ret = cpr_stream_put_u32(s, (uint32_t)nlen, errp)) < 0 ||
            (ret = cpr_stream_put_bytes(s, ss->desc->name, nlen, errp)) < 0 ||
            (ret = cpr_stream_put_u32(s, ss->desc->version, errp)) < 0)
            return ret;
        size_t at = put_len_placeholder(s, errp, &ret);
        if (ret < 0)
            return ret;
        g_autofree char *sub_where = g_strdup_printf("%s subsection '%s'", where, ss->desc->name);
        if ((ret = save_body(s, ss->desc, obj, ss->desc->version, sub_where, errp)) < 0)
            return ret;
        patch_len(s, at);
    }
    if (ret < 0)
        return ret;
    return cpr_stream_put_u8(s, 0, errp);
}

/* Whether field f is in a body of `version` (docs/format.md 3.2, "Versions"). */
static int field_present(const struct cpr_field *f, uint32_t version)
{
    return !f->since || version >= f->since;
}

static int save_body(cpr_stream *s, const cpr_desc *d, uint8_t *obj, uint32_t version, const char *where,
                     cpr_error **errp)
{
    int ret = 0;
    cpr_error *herr = NULL;
    if (d->pre_save && (ret = cpr_error_from_hook(errp, d->pre_save(obj, &herr), &herr, "%s: pre_save", where)) < 0)
        return ret;
    /* A nested struct is written in the version of its section or subsection, so the fields
     * it gained later are left out, as the reader leaves them out. */
    for (guint i = 0; i < d->fields->len && ret >= 0; i++) {
        const struct cpr_field *f = d->fields->pdata[i];
        if (!field_present(f, version))
            continue;
        if (f->count_field >= 0 && !field_present(d->fields->pdata[f->count_field], version))
            ret = cpr_error_set(errp, -EINVAL, "%s field '%s': its count field '%s' is absent in version %u",
                                where, f->name, ((struct cpr_field *)d->fields->pdata[f->count_field])->name,
                                version);
        else
            ret = save_field(s, d, f, obj, version, where, errp);
    }
    if (ret >= 0)
        ret = save_subsections(s, d, obj, where, errp);
    if (d->post_save) {
        /* Runs after a failed save too (it undoes pre_save), but the first failure is reported. */
        herr = NULL;
        int pret = d->post_save(obj, &herr);
        if (ret >= 0)
            ret = cpr_error_from_hook(errp, pret, &herr, "%s: post_save", where);
        else
            cpr_error_free(herr);
    }
    return ret;
}

int cpr_vmstate_save(cpr_stream *s, const cpr_desc *d, void *obj, const char *where, cpr_error **errp)
{
    /* Lengths of subsections and custom fields are patched in after their bodies, so the body
     * is built in a scratch record and then copied into the real one (device state is small). */
    cpr_stream *scratch;
    int ret = cpr_stream_new_mem_sink(4096, &scratch, errp);
    if (ret < 0)
        return ret;
    scratch->limit[CPR_STREAM_LIMIT_RECORD] = s->limit[CPR_STREAM_LIMIT_RECORD];
    scratch->in_record = 1;
    ret = save_body(scratch, d, obj, d->version, where, errp);
    if (ret >= 0 && (ret = cpr_stream_put_bytes(s, scratch->buf, scratch->len, errp)) < 0)
        cpr_error_prefix(errp, "%s", where);
    cpr_stream_free(scratch);
    return ret;
}

/* ---- decoding ---- */

struct load_ctx {
    cpr_stream *s;
    GArray *post_loads;
    cpr_error **errp;
};

static int load_body(struct load_ctx *lc, const cpr_desc *d, uint8_t *obj, uint32_t version, const char *where);

static int take(struct load_ctx *lc, const void **p, uint64_t len, const char *where, const char *field)
{
    cpr_stream *s = lc->s;
    if (s->view_len - s->view_pos < len)
        return cpr_error_set(lc->errp, -EBADMSG,
                             "%s field '%s': needs %" U64 " bytes at payload offset %" U64 ", %" U64 " remain (record at offset %" U64 ")",
                             where, field, (guint64)len, (guint64)s->view_pos, (guint64)(s->view_len - s->view_pos),
                             (guint64)s->view_offset);
    *p = s->view + s->view_pos;
    s->view_pos += len;
    return 0;
}


static int load_scalars(struct load_ctx *lc, const struct cpr_field *f, uint8_t *m, uint64_t n, const char *where)
{
    const uint8_t *p = NULL;
    int ret = take(lc, (const void **)&p, n * f->elem, where, f->name);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < n; i++, p += f->elem) {
        uint64_t v = cpr_le_get(p, f->elem);
        if (f->type == CPR_TYPE_BOOL && v > 1)
            return cpr_error_set(lc->errp, -EBADMSG, "%s field '%s': bool value %" U64 " is neither 0 nor 1", where,
                                 f->name, (guint64)v);
        if (f->has_equal) {
            uint64_t want = f->equal;
            if (f->elem < 8)
                want &= (1ull << (8 * f->elem)) - 1;
            if (v != want)
                return cpr_error_set(lc->errp, -EINVAL, "%s field '%s': stream has %" U64 ", this program requires %" U64,
                                     where, f->name, (guint64)v, (guint64)want);
        }
    }
    if (G_BYTE_ORDER == G_LITTLE_ENDIAN) {
        memcpy(m, p - n * f->elem, n * f->elem);
    } else {
        p -= n * f->elem;
        for (uint64_t i = 0; i < n; i++)
            store_member(m + i * f->elem, f->elem, cpr_le_get(p + i * f->elem, f->elem));
    }
    return 0;
}

static int load_string(struct load_ctx *lc, const struct cpr_field *f, uint8_t *m, const char *where)
{
    const uint8_t *p = NULL;
    int ret = take(lc, (const void **)&p, 4, where, f->name);
    if (ret < 0)
        return ret;
    uint32_t len = (uint32_t)cpr_le_get(p, 4);
    char *str = NULL;
    if (len != UINT32_MAX) {
        if (len > lc->s->limit[CPR_STREAM_LIMIT_STRING] || len >= lc->s->limit[CPR_STREAM_LIMIT_ALLOC])
            return cpr_error_set(lc->errp, -EMSGSIZE, "%s field '%s': string of %u bytes exceeds the string limit %" U64,
                                 where, f->name, len, (guint64)lc->s->limit[CPR_STREAM_LIMIT_STRING]);
        if ((ret = take(lc, (const void **)&p, len, where, f->name)) < 0)
            return ret;
        if (memchr(p, 0, len))
            return cpr_error_set(lc->errp, -EBADMSG, "%s field '%s': string contains a NUL byte", where, f->name);
        str = malloc((size_t)len + 1);
        if (!str)
            return cpr_error_set(lc->errp, -ENOMEM, "%s field '%s': cannot allocate %u bytes", where, f->name, len + 1);
        memcpy(str, p, len);
        str[len] = 0;
    }
    char *old;
    memcpy(&old, m, sizeof(old));
    free(old);
    memcpy(m, &str, sizeof(str));
    return 0;
}

/* Runs fn with the stream's view narrowed to the next len bytes; fails unless it reads them all. */
static int load_bounded(struct load_ctx *lc, uint64_t len, const char *where, const char *what,
                        int (*fn)(struct load_ctx *lc, void *arg), void *arg)
{
    cpr_stream *s = lc->s;
    if (s->view_len - s->view_pos < len)
        return cpr_error_set(lc->errp, -EBADMSG, "%s %s: length %" U64 " overruns the record (%" U64 " bytes remain)",
                             where, what, (guint64)len, (guint64)(s->view_len - s->view_pos));
    uint64_t saved = s->view_len, end = s->view_pos + len;
    s->view_len = end;
    int ret = fn(lc, arg);
    if (ret >= 0 && s->view_pos != end)
        ret = cpr_error_set(lc->errp, -EBADMSG, "%s %s: %" U64 " of %" U64 " bytes left unread", where, what,
                            (guint64)(end - s->view_pos), (guint64)len);
    s->view_len = saved;
    return ret;
}

struct custom_arg {
    const struct cpr_field *f;
    uint8_t *m;
    uint64_t len;
    const char *where;
};

static int custom_get(struct load_ctx *lc, void *arg)
{
    struct custom_arg *a = arg;
    cpr_error *herr = NULL;
    return cpr_error_from_hook(lc->errp, a->f->get(lc->s, a->m, a->len, a->f->opaque, &herr), &herr, "%s field '%s': get",
                               a->where, a->f->name);
}

static int load_field(struct load_ctx *lc, const cpr_desc *d, const struct cpr_field *f, uint8_t *obj, uint32_t version,
                      const char *where)
{
    uint8_t *m = obj + f->offset;
    uint64_t n = field_count(d, f, obj);
    const void *p = NULL;
    int ret = 0;
    if (n > f->count && f->kind != FK_BYTES)
        return cpr_error_set(lc->errp, -EBADMSG, "%s field '%s': count %" U64 " exceeds its capacity %zu", where,
                             f->name, (guint64)n, f->count);
    switch (f->kind) {
    case FK_SCALAR:
        return load_scalars(lc, f, m, n, where);
    case FK_BYTES:
        n = f->size;
        /* fall through */
    case FK_VBYTES:
        if ((ret = take(lc, &p, n, where, f->name)) < 0)
            return ret;
        memcpy(m, p, n);
        return 0;
    case FK_STRING:
        return load_string(lc, f, m, where);
    case FK_STRUCT:
        for (uint64_t i = 0; i < n && ret >= 0; i++) {
            g_autofree char *sub_where = g_strdup_printf("%s field '%s'[%" U64 "]", where, f->name, (guint64)i);
            ret = load_body(lc, f->sub, m + i * f->elem, version, sub_where);
        }
        return ret;
    case FK_CUSTOM: {
        if ((ret = take(lc, &p, 8, where, f->name)) < 0)
            return ret;
        struct custom_arg a = { f, m, cpr_le_get(p, 8), where };
        return load_bounded(lc, a.len, where, f->name, custom_get, &a);
    }
    }
    return 0;
}

struct sub_arg {
    const cpr_desc *desc;
    uint8_t *obj;
    uint32_t version;
    const char *where;
};

static int sub_load(struct load_ctx *lc, void *arg)
{
    struct sub_arg *a = arg;
    return load_body(lc, a->desc, a->obj, a->version, a->where);
}

static int load_subsections(struct load_ctx *lc, const cpr_desc *d, uint8_t *obj, const char *where)
{
    guint nsub = d->subsections->len;
    g_autofree uint8_t *seen = g_new0(uint8_t, nsub + 1);
    const uint8_t *p = NULL;
    int ret;
    for (;;) {
        if ((ret = take(lc, (const void **)&p, 1, where, "(subsection list)")) < 0)
            return ret;
        if (*p == 0)
            break;
        if (*p != 1)
            return cpr_error_set(lc->errp, -EBADMSG, "%s: bad subsection marker 0x%02x", where, *p);
        if ((ret = take(lc, (const void **)&p, 4, where, "(subsection name)")) < 0)
            return ret;
        uint32_t nlen = (uint32_t)cpr_le_get(p, 4);
        if (nlen > lc->s->limit[CPR_STREAM_LIMIT_STRING])
            return cpr_error_set(lc->errp, -EMSGSIZE, "%s: subsection name of %u bytes exceeds the string limit", where,
                                 nlen);
        if ((ret = take(lc, (const void **)&p, nlen, where, "(subsection name)")) < 0)
            return ret;
        /* A NUL would cut the name short and let "a\0b" pass for subsection "a". */
        if (nlen == 0 || memchr(p, 0, nlen))
            return cpr_error_set(lc->errp, -EBADMSG, "%s: subsection name %s", where,
                                 nlen ? "contains a NUL byte" : "is empty");
        g_autofree char *name = g_strndup((const char *)p, nlen);
        if ((ret = take(lc, (const void **)&p, 12, where, "(subsection header)")) < 0)
            return ret;
        uint32_t version = (uint32_t)cpr_le_get(p, 4);
        uint64_t blen = cpr_le_get(p + 4, 8);
        guint i;
        for (i = 0; i < nsub; i++)
            if (strcmp(g_array_index(d->subsections, struct cpr_subsection, i).desc->name, name) == 0)
                break;
        if (i == nsub)
            return cpr_error_set(lc->errp, -EBADMSG, "%s: unexpected subsection '%s'", where, name);
        if (seen[i])
            return cpr_error_set(lc->errp, -EBADMSG, "%s: subsection '%s' appears twice", where, name);
        seen[i] = 1;
        const cpr_desc *sd = g_array_index(d->subsections, struct cpr_subsection, i).desc;
        if (version > sd->version || version < sd->min_version)
            return cpr_error_set(lc->errp, -EPROTONOSUPPORT,
                                 "%s: subsection '%s' was saved in version %u; this program loads versions %u..%u", where,
                                 name, version, sd->min_version, sd->version);
        g_autofree char *sub_where = g_strdup_printf("%s subsection '%s'", where, name);
        struct sub_arg a = { sd, obj, version, sub_where };
        if ((ret = load_bounded(lc, blen, sub_where, "body", sub_load, &a)) < 0)
            return ret;
    }
    for (guint i = 0; i < nsub; i++) {
        const struct cpr_subsection *ss = &g_array_index(d->subsections, struct cpr_subsection, i);
        if (!seen[i] && (ss->flags & CPR_SUBSECTION_REQUIRED))
            return cpr_error_set(lc->errp, -EBADMSG, "%s: missing subsection '%s'", where, ss->desc->name);
    }
    return 0;
}

static int load_body(struct load_ctx *lc, const cpr_desc *d, uint8_t *obj, uint32_t version, const char *where)
{
    int ret = 0;
    cpr_error *herr = NULL;
    if (d->pre_load && (ret = cpr_error_from_hook(lc->errp, d->pre_load(obj, &herr), &herr, "%s: pre_load", where)) < 0)
        return ret;
    for (guint i = 0; i < d->fields->len && ret >= 0; i++) {
        const struct cpr_field *f = d->fields->pdata[i];
        if (!field_present(f, version))
            continue;
        ret = load_field(lc, d, f, obj, version, where);
    }
    if (ret >= 0)
        ret = load_subsections(lc, d, obj, where);
    if (ret >= 0 && d->post_load) {
        struct cpr_post_load pl = { d->post_load, obj, version, g_strdup(where) };
        g_array_append_val(lc->post_loads, pl);
    }
    return ret;
}

int cpr_vmstate_load(cpr_stream *s, const cpr_desc *d, void *obj, uint32_t version, const char *where,
                     GArray *post_loads, cpr_error **errp)
{
    struct load_ctx lc = { s, post_loads, errp };
    guint mark = post_loads->len;
    int ret = load_body(&lc, d, obj, version, where);
    if (ret >= 0 && s->view_pos != s->view_len)
        ret = cpr_error_set(errp, -EBADMSG, "%s: %" U64 " bytes left over after the last field (record at offset %" U64 ")",
                            where, (guint64)(s->view_len - s->view_pos), (guint64)s->view_offset);
    if (ret < 0)
        cpr_post_loads_truncate(post_loads, mark);
    return ret;
}

void cpr_post_loads_truncate(GArray *post_loads, guint len)
{
    for (guint i = len; i < post_loads->len; i++)
        g_free(g_array_index(post_loads, struct cpr_post_load, i).where);
    g_array_set_size(post_loads, MIN(len, post_loads->len));
}

/* ---- schema ---- */

static json_object *field_schema(const cpr_desc *d, const struct cpr_field *f)
{
    json_object *o = json_object_new_object();
    const char *type;
    size_t size = 0, count = f->count;
    switch (f->kind) {
    case FK_SCALAR: type = cpr_type_schema_name(f->type); size = f->elem; break;
    case FK_BYTES: type = "bytes"; size = f->size; count = 1; break;
    case FK_VBYTES: type = "vbytes"; size = f->count; count = 1; break;
    case FK_STRING: type = "string"; break;
    case FK_STRUCT: type = "struct"; break;
    default: type = "custom"; break;
    }
    json_object_object_add(o, "name", json_object_new_string(f->name));
    json_object_object_add(o, "type", json_object_new_string(type));
    json_object_object_add(o, "size", json_object_new_uint64(size));
    json_object_object_add(o, "count", json_object_new_uint64(count));
    if (f->count_field >= 0) {
        const char *cname = ((struct cpr_field *)d->fields->pdata[f->count_field])->name;
        json_object_object_add(o, f->kind == FK_VBYTES ? "length_field" : "count_field", json_object_new_string(cname));
    }
    if (f->since)
        json_object_object_add(o, "since", json_object_new_uint64(f->since));
    if (f->has_equal)
        json_object_object_add(o, "equal", json_object_new_uint64(f->equal));
    if (f->sub)
        json_object_object_add(o, "struct", cpr_desc_schema(f->sub));
    return o;
}

json_object *cpr_desc_schema(const cpr_desc *d)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(d->name));
    json_object_object_add(o, "version", json_object_new_uint64(d->version));
    json_object_object_add(o, "min_version", json_object_new_uint64(d->min_version));
    json_object *fields = json_object_new_array();
    for (guint i = 0; i < d->fields->len; i++)
        json_object_array_add(fields, field_schema(d, d->fields->pdata[i]));
    json_object_object_add(o, "fields", fields);
    json_object *subs = json_object_new_array();
    for (guint i = 0; i < d->subsections->len; i++) {
        const struct cpr_subsection *ss = &g_array_index(d->subsections, struct cpr_subsection, i);
        json_object *so = cpr_desc_schema(ss->desc);
        json_object_object_add(so, "required", json_object_new_boolean(!!(ss->flags & CPR_SUBSECTION_REQUIRED)));
        json_object_array_add(subs, so);
    }
    json_object_object_add(o, "subsections", subs);
    return o;
}
