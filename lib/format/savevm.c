/* SPDX-License-Identifier: MIT */
/* The section registry on a context, the save passes and the strict loader. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/ctx.h"
#include "core/error.h"
#include "core/sized.h"
#include "core/trace.h"
#include "format/meta.h"
#include "format/record.h"
#include "format/region.h"
#include "format/schema_prefetch.h"
#include "format/savevm.h"
#include "format/stream.h"
#include "format/vmstate.h"

#define U64 G_GUINT64_FORMAT

/* After the stop a section may send in parts at most twice what it had left (its first part
 * and the pending it then reported) plus this slack for framing, and at most this many parts;
 * past either it is a runaway and the save fails. */
#define CPR_STOPPED_SLACK_BYTES (1u << 20)
#define CPR_STOPPED_MAX_PARTS (1u << 20)

struct cpr_section {
    char *name;
    uint32_t instance;
    unsigned int flags;
    uint32_t version, min_version;
    cpr_desc *desc; /* described sections */
    void *obj;
    int live;       /* progressive sections */
    cpr_live_ops ops;
    void *opaque;
    /* save state */
    int active, done;
    uint32_t section_id;
    uint64_t pending;
    /* after the stop (cpr_savevm_iterate_stopped) */
    int stop_more;           /* still asked for parts */
    uint64_t stop_calls, stop_bytes, stop_budget;
    /* load state */
    int loaded, ended;
    uint32_t load_version;
};

struct identity_hook {
    char *key;
    cpr_identity_fn fn;
    void *opaque;
};

struct savevm_state {
    GPtrArray *sections; /* struct cpr_section *, registration order */
    GArray *identity;    /* struct identity_hook */
    char *machine;
    char *producer;
    GPtrArray *flags;        /* config keys set to true in the next save's config record */
    json_object *load_cfg;   /* the config record of the stream being loaded */
    cpr_warning_fn warn;
    void *warn_opaque;
    int busy;
};

static void section_free(gpointer p)
{
    struct cpr_section *sec = p;
    g_free(sec->name);
    cpr_desc_unref(sec->desc);
    g_free(sec);
}

static void state_free(void *p)
{
    struct savevm_state *st = p;
    g_ptr_array_free(st->sections, TRUE);
    for (guint i = 0; i < st->identity->len; i++)
        g_free(g_array_index(st->identity, struct identity_hook, i).key);
    g_array_free(st->identity, TRUE);
    g_free(st->machine);
    g_free(st->producer);
    g_ptr_array_free(st->flags, TRUE);
    json_object_put(st->load_cfg);
    g_free(st);
}

static struct savevm_state *state_of(cpr_ctx *ctx)
{
    struct savevm_state *st = cpr_ctx_slot_get(ctx, CPR_SLOT_SAVEVM);
    if (!st) {
        st = g_new0(struct savevm_state, 1);
        st->sections = g_ptr_array_new_with_free_func(section_free);
        st->identity = g_array_new(FALSE, FALSE, sizeof(struct identity_hook));
        st->flags = g_ptr_array_new_with_free_func(g_free);
        cpr_ctx_slot_set(ctx, CPR_SLOT_SAVEVM, st, state_free);
    }
    return st;
}

static struct cpr_section *find(struct savevm_state *st, const char *name, uint32_t instance)
{
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (sec->instance == instance && strcmp(sec->name, name) == 0)
            return sec;
    }
    return NULL;
}

static void warn(struct savevm_state *st, const char *fmt, ...) CPR_PRINTF(2, 3);
static void warn(struct savevm_state *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (st->warn)
        st->warn(msg, st->warn_opaque);
    else
        fprintf(stderr, "libcpr: warning: %s\n", msg);
}

/* Checks common to both registrations; returns the state or NULL with *ret set. */
static struct savevm_state *register_check(cpr_ctx *ctx, const char *name, uint32_t instance, unsigned int flags,
                                           int *ret, cpr_error **errp)
{
    if (!ctx || !name || !*name) {
        *ret = cpr_error_set(errp, -EINVAL, "cpr_savevm_register: %s", ctx ? "empty section name" : "ctx is NULL");
        return NULL;
    }
    if (flags & ~CPR_SECTION_OPTIONAL) {
        *ret = cpr_error_set(errp, -EINVAL, "section '%s': unknown flags 0x%x", name, flags);
        return NULL;
    }
    struct savevm_state *st = state_of(ctx);
    if (st->busy) {
        *ret = cpr_error_set(errp, -EPERM, "section '%s': cannot register while a save or load runs", name);
        return NULL;
    }
    if (find(st, name, instance)) {
        *ret = cpr_error_set(errp, -EEXIST, "section '%s' instance %u is already registered", name, instance);
        return NULL;
    }
    return st;
}

CPR_API int cpr_savevm_register(cpr_ctx *ctx, const char *name, uint32_t instance_id, cpr_desc *desc, void *obj,
                                unsigned int flags, cpr_section **out, cpr_error **errp)
{
    int ret = 0;
    if (!desc || !obj)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_register: %s is NULL", desc ? "obj" : "desc");
    if (!name)
        name = cpr_desc_name(desc);
    struct savevm_state *st = register_check(ctx, name, instance_id, flags, &ret, errp);
    if (!st)
        return ret;
    /* The schema has one entry per section name, so a name means one description. */
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *o = st->sections->pdata[i];
        if (strcmp(o->name, name) == 0 && o->desc != desc)
            return cpr_error_set(errp, -EINVAL, "section '%s' is already registered with another description", name);
    }
    struct cpr_section *sec = g_new0(struct cpr_section, 1);
    sec->name = g_strdup(name);
    sec->instance = instance_id;
    sec->flags = flags;
    cpr_desc_seal(desc);
    sec->desc = cpr_desc_ref(desc);
    sec->obj = obj;
    sec->version = cpr_desc_version(desc);
    sec->min_version = cpr_desc_min_version(desc);
    g_ptr_array_add(st->sections, sec);
    if (out)
        *out = sec;
    return 0;
}

CPR_API int cpr_savevm_register_live(cpr_ctx *ctx, const char *name, uint32_t instance_id, uint32_t version,
                                     uint32_t min_version, const cpr_live_ops *ops, void *opaque, unsigned int flags,
                                     cpr_section **out, cpr_error **errp)
{
    int ret = 0;
    cpr_live_ops known = { 0 };
    /* The first version's members run through load_done (which itself may be NULL). */
    if ((ret = cpr_sized_read(&known, sizeof(known), ops, offsetof(cpr_live_ops, load_done), "cpr_live_ops", errp)) < 0) {
        cpr_error_prefix(errp, "section '%s'", name ? name : "");
        return ret;
    }
    struct savevm_state *st = register_check(ctx, name, instance_id, flags, &ret, errp);
    if (!st)
        return ret;
    if (min_version < 1 || min_version > version)
        return cpr_error_set(errp, -EINVAL, "section '%s': versions must satisfy 1 <= min_version (%u) <= version (%u)",
                             name, min_version, version);
    struct cpr_section *sec = g_new0(struct cpr_section, 1);
    sec->ops = known;
    if (!sec->ops.setup || !sec->ops.iterate || !sec->ops.complete || !sec->ops.load) {
        g_free(sec);
        return cpr_error_set(errp, -EINVAL, "section '%s': setup, iterate, complete and load are required", name);
    }
    sec->name = g_strdup(name);
    sec->instance = instance_id;
    sec->flags = flags;
    sec->live = 1;
    sec->opaque = opaque;
    sec->version = version;
    sec->min_version = min_version;
    g_ptr_array_add(st->sections, sec);
    if (out)
        *out = sec;
    return 0;
}

CPR_API void cpr_savevm_unregister(cpr_ctx *ctx, cpr_section *section)
{
    if (!ctx || !section)
        return;
    struct savevm_state *st = state_of(ctx);
    g_ptr_array_remove(st->sections, section);
}

CPR_API cpr_section *cpr_savevm_find(cpr_ctx *ctx, const char *name, uint32_t instance_id)
{
    if (!ctx || !name)
        return NULL;
    return find(state_of(ctx), name, instance_id);
}

CPR_API int cpr_savevm_set_machine(cpr_ctx *ctx, const char *identity, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_set_machine: ctx is NULL");
    struct savevm_state *st = state_of(ctx);
    g_free(st->machine);
    st->machine = g_strdup(identity);
    return 0;
}

CPR_API int cpr_savevm_set_producer(cpr_ctx *ctx, const char *producer, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_set_producer: ctx is NULL");
    struct savevm_state *st = state_of(ctx);
    g_free(st->producer);
    st->producer = g_strdup(producer);
    return 0;
}

CPR_API int cpr_savevm_set_warning_handler(cpr_ctx *ctx, cpr_warning_fn fn, void *opaque, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_set_warning_handler: ctx is NULL");
    struct savevm_state *st = state_of(ctx);
    st->warn = fn;
    st->warn_opaque = opaque;
    return 0;
}

int cpr_savevm_set_identity(cpr_ctx *ctx, const char *key, cpr_identity_fn fn, void *opaque, cpr_error **errp)
{
    if (!ctx || !key || !*key)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_set_identity: bad argument");
    struct savevm_state *st = state_of(ctx);
    for (guint i = 0; i < st->identity->len; i++) {
        struct identity_hook *h = &g_array_index(st->identity, struct identity_hook, i);
        if (strcmp(h->key, key) == 0) {
            if (fn) {
                h->fn = fn;
                h->opaque = opaque;
            } else {
                g_free(h->key);
                g_array_remove_index(st->identity, i);
            }
            return 0;
        }
    }
    if (fn) {
        struct identity_hook h = { g_strdup(key), fn, opaque };
        g_array_append_val(st->identity, h);
    }
    return 0;
}

/* ---- save ---- */

/* The identity value of hook h as JSON, or NULL when it has none / it is not valid JSON. */
static json_object *identity_value(cpr_ctx *ctx, const struct identity_hook *h)
{
    g_autofree char *text = h->fn(ctx, h->opaque);
    return text ? json_tokener_parse(text) : NULL;
}

static char *config_json(cpr_ctx *ctx, struct savevm_state *st, cpr_mode mode, const GPtrArray *flags)
{
    json_object *o = json_object_new_object();
    g_autofree char *producer = st->producer ? g_strdup(st->producer)
                                             : g_strdup_printf("libcpr %d.%d.%d", CPR_VERSION_MAJOR, CPR_VERSION_MINOR,
                                                               CPR_VERSION_PATCH);
    json_object_object_add(o, "producer", json_object_new_string(producer));
    const char *mname = cpr_mode_name(mode);
    json_object_object_add(o, "mode", json_object_new_string(mname ? mname : "normal"));
    if (st->machine)
        json_object_object_add(o, "machine", json_object_new_string(st->machine));
    if (st->identity->len) {
        json_object *id = json_object_new_object();
        for (guint i = 0; i < st->identity->len; i++) {
            const struct identity_hook *h = &g_array_index(st->identity, struct identity_hook, i);
            json_object *v = identity_value(ctx, h);
            if (v)
                json_object_object_add(id, h->key, v);
        }
        json_object_object_add(o, "identity", id);
    }
    for (guint i = 0; i < flags->len; i++)
        json_object_object_add(o, flags->pdata[i], json_object_new_boolean(1));
    char *text = g_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return text;
}

static char *schema_json(struct savevm_state *st)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "schema", json_object_new_int(1));
    json_object *arr = json_object_new_array();
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (!g_hash_table_add(seen, sec->name))
            continue;
        json_object *e;
        if (sec->live) {
            e = json_object_new_object();
            json_object_object_add(e, "name", json_object_new_string(sec->name));
            json_object_object_add(e, "version", json_object_new_uint64(sec->version));
            json_object_object_add(e, "min_version", json_object_new_uint64(sec->min_version));
        } else {
            e = cpr_desc_schema(sec->desc);
            json_object_object_add(e, "name", json_object_new_string(sec->name));
        }
        json_object_object_add(e, "kind", json_object_new_string(sec->live ? "progressive" : "full"));
        json_object_array_add(arr, e);
    }
    json_object_object_add(o, "sections", arr);
    char *text = g_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return text;
}

/* The outcome of a section's callback `what` that returned ret with its own error herr. */
static int section_hook(cpr_error **errp, const struct cpr_section *sec, const char *what, int ret, cpr_error **herr)
{
    return cpr_error_from_hook(errp, ret, herr, "section '%s' instance %u: %s", sec->name, sec->instance, what);
}

/* Ends a record begun for one write callback (its outcome in ret); aborts it on failure. */
static int finish_record(cpr_stream *s, int ret, cpr_error **errp)
{
    if (ret < 0) {
        cpr_rec_abort(s);
        return ret;
    }
    return cpr_rec_end(s, errp);
}

static unsigned int rec_flags(const struct cpr_section *sec)
{
    return sec->flags & CPR_SECTION_OPTIONAL ? CPR_REC_FLAG_OPTIONAL : 0;
}

static int put_live_setup(cpr_stream *s, void *arg, cpr_error **errp)
{
    struct cpr_section *sec = arg;
    cpr_error *herr = NULL;
    return section_hook(errp, sec, "setup", sec->ops.setup(s, sec->opaque, &herr), &herr);
}

static int put_described(cpr_stream *s, void *arg, cpr_error **errp)
{
    struct cpr_section *sec = arg;
    g_autofree char *where = g_strdup_printf("section '%s' instance %u", sec->name, sec->instance);
    return cpr_vmstate_save(s, sec->desc, sec->obj, where, errp);
}

int cpr_savevm_begin(cpr_ctx *ctx, cpr_stream *s, cpr_mode mode, cpr_error **errp)
{
    if (!ctx || !s)
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_begin: NULL argument");
    struct savevm_state *st = state_of(ctx);
    /* The flags are this begin's, whatever it does. */
    g_autoptr(GPtrArray) flags = st->flags;
    st->flags = g_ptr_array_new_with_free_func(g_free);
    if (st->busy)
        return cpr_error_set(errp, -EBUSY, "a save or load of this context is already running");
    st->busy = 1;
    g_autofree char *config = config_json(ctx, st, mode, flags);
    g_autofree char *schema = schema_json(st);
    int ret = cpr_rec_write_stream_header(s, errp);
    if (ret >= 0)
        ret = cpr_rec_write(s, CPR_REC_CONFIG, config, strlen(config), errp);
    if (ret >= 0)
        ret = cpr_rec_write(s, CPR_REC_SCHEMA, schema, strlen(schema), errp);
    for (guint i = 0; ret >= 0 && i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        sec->active = sec->done = 0;
        sec->pending = 0;
        if (!sec->live || (sec->ops.is_active && !sec->ops.is_active(sec->opaque)))
            continue;
        sec->active = 1; /* cleanup() runs even when setup() fails */
        /* Until its first iterate() says, the section's own estimate (or nothing). */
        sec->pending = sec->ops.pending ? sec->ops.pending(sec->opaque) : 0;
        ret = cpr_rec_write_section(s, CPR_REC_START, sec->name, sec->instance, sec->version, rec_flags(sec),
                                    put_live_setup, sec, &sec->section_id, errp);
    }
    return ret < 0 ? ret : 0;
}

/* One iterate() of sec in a part record (none when it wrote nothing): returns 1 done, 0 more,
 * <0 failed; *bytes receives the size of the part's body. */
static int iterate_one(cpr_stream *s, struct cpr_section *sec, uint64_t *bytes, cpr_error **errp)
{
    int ret = cpr_rec_begin_part(s, CPR_REC_PART, sec->section_id, errp);
    if (ret < 0)
        return ret;
    uint64_t left = 0;
    cpr_error *herr = NULL;
    int r = section_hook(errp, sec, "iterate", sec->ops.iterate(s, &left, sec->opaque, &herr), &herr);
    *bytes = r >= 0 ? s->rec_len - 4 : 0; /* the part's body follows its section id */
    if (r >= 0 && !*bytes)
        cpr_rec_abort(s); /* nothing to send: no empty part record */
    else if ((ret = finish_record(s, r, errp)) < 0)
        return ret;
    sec->pending = left;
    sec->done = r > 0;
    return r;
}

int cpr_savevm_iterate(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp)
{
    struct savevm_state *st = state_of(ctx);
    int all_done = 1;
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        /* Done sections are asked again: after a dirty-log sync they may have more. */
        if (!sec->active)
            continue;
        uint64_t bytes;
        int r = iterate_one(s, sec, &bytes, errp);
        if (r < 0)
            return r;
        all_done &= r > 0;
    }
    return all_done;
}

/* One part of sec after the stop; clears sec->stop_more when it is done or made no progress,
 * fails when it runs away. */
static int stopped_part(cpr_stream *s, struct cpr_section *sec, cpr_error **errp)
{
    uint64_t before = sec->pending, bytes;
    int r = iterate_one(s, sec, &bytes, errp);
    if (r < 0)
        return r;
    sec->stop_calls++;
    sec->stop_bytes += bytes;
    if (sec->stop_calls == 1) {
        uint64_t left = bytes + sec->pending;
        sec->stop_budget = (left > UINT64_MAX / 4 ? UINT64_MAX / 2 : 2 * left) + CPR_STOPPED_SLACK_BYTES;
    }
    /* Progress is a part sent and, after the first, less left than before. */
    int progress = bytes && (sec->stop_calls == 1 || sec->pending < before);
    sec->stop_more = !r && progress;
    if (sec->stop_more && (sec->stop_bytes > sec->stop_budget || sec->stop_calls >= CPR_STOPPED_MAX_PARTS))
        return cpr_error_set(errp, -EOVERFLOW,
                             "section '%s' instance %u did not finish after the guest stopped: %" U64
                             " parts and %" U64 " bytes sent, more than twice what it had left at the stop (its"
                             " iterate() keeps returning 0; %" U64 " bytes still pending)",
                             sec->name, sec->instance, (guint64)sec->stop_calls, (guint64)sec->stop_bytes,
                             (guint64)sec->pending);
    return 0;
}

int cpr_savevm_iterate_stopped(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp)
{
    struct savevm_state *st = state_of(ctx);
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        sec->stop_more = sec->active;
        sec->stop_calls = sec->stop_bytes = 0;
    }
    for (int more = 1; more;) {
        more = 0;
        for (guint i = 0; i < st->sections->len; i++) {
            struct cpr_section *sec = st->sections->pdata[i];
            if (!sec->stop_more)
                continue;
            int ret = stopped_part(s, sec, errp);
            if (ret < 0)
                return ret;
            more |= sec->stop_more;
        }
    }
    return 0;
}

uint64_t cpr_savevm_pending(cpr_ctx *ctx, const cpr_section *skip)
{
    struct savevm_state *st = state_of(ctx);
    uint64_t sum = 0;
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (sec->active && sec != skip)
            sum += sec->pending;
    }
    return sum;
}

int cpr_savevm_complete(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp)
{
    struct savevm_state *st = state_of(ctx);
    int ret = 0;
    for (guint i = 0; ret >= 0 && i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (!sec->active)
            continue;
        if ((ret = cpr_rec_begin_part(s, CPR_REC_END, sec->section_id, errp)) < 0)
            break;
        cpr_error *herr = NULL;
        ret = finish_record(s, section_hook(errp, sec, "complete", sec->ops.complete(s, sec->opaque, &herr), &herr), errp);
    }
    for (guint i = 0; ret >= 0 && i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (!sec->live)
            ret = cpr_rec_write_section(s, CPR_REC_FULL, sec->name, sec->instance, sec->version, rec_flags(sec),
                                        put_described, sec, NULL, errp);
    }
    if (ret >= 0)
        ret = cpr_rec_write_eos(s, errp);
    return ret < 0 ? ret : 0;
}

void cpr_savevm_finish(cpr_ctx *ctx)
{
    struct savevm_state *st = state_of(ctx);
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        if (sec->active && sec->ops.cleanup)
            sec->ops.cleanup(sec->opaque);
        sec->active = 0;
    }
    st->busy = 0;
}

void cpr_savevm_set_config_flag(cpr_ctx *ctx, const char *key)
{
    g_ptr_array_add(state_of(ctx)->flags, g_strdup(key));
}

/* ---- load ---- */

int cpr_savevm_config_flag(cpr_ctx *ctx, const char *key)
{
    json_object *v = NULL;
    struct savevm_state *st = state_of(ctx);
    return st->load_cfg && json_object_object_get_ex(st->load_cfg, key, &v) &&
           json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/* Checks the config record against this side's identity and keeps it for
 * cpr_savevm_config_flag() until the load ends. */
static int check_identity(cpr_ctx *ctx, struct savevm_state *st, const struct cpr_rec *r, cpr_error **errp)
{
    json_object *cfg = NULL;
    int ret = cpr_meta_config(r, &cfg, errp);
    if (ret < 0)
        return ret;
    json_object_put(st->load_cfg);
    st->load_cfg = json_object_get(cfg);
    if (st->machine) {
        json_object *m = NULL;
        const char *theirs = json_object_object_get_ex(cfg, "machine", &m) && json_object_is_type(m, json_type_string)
                                 ? json_object_get_string(m) : NULL;
        if (!theirs || strcmp(theirs, st->machine) != 0) {
            ret = cpr_error_set(errp, -EINVAL, "machine identity mismatch: stream has '%s', this machine is '%s'",
                                theirs ? theirs : "(none)", st->machine);
            goto out;
        }
    }
    json_object *ids = NULL;
    json_object_object_get_ex(cfg, "identity", &ids);
    for (guint i = 0; i < st->identity->len; i++) {
        const struct identity_hook *h = &g_array_index(st->identity, struct identity_hook, i);
        json_object *mine = identity_value(ctx, h);
        if (!mine)
            continue;
        json_object *theirs = NULL;
        if (ids && json_object_is_type(ids, json_type_object))
            json_object_object_get_ex(ids, h->key, &theirs);
        if (!theirs || !json_object_equal(mine, theirs)) {
            ret = cpr_error_set(errp, -EINVAL, "identity '%s' mismatch: stream has %s, this machine has %s", h->key,
                                theirs ? json_object_to_json_string_ext(theirs, JSON_C_TO_STRING_PLAIN) : "nothing",
                                json_object_to_json_string_ext(mine, JSON_C_TO_STRING_PLAIN));
            json_object_put(mine);
            goto out;
        }
        json_object_put(mine);
    }
out:
    json_object_put(cfg);
    return ret;
}

static int check_version(struct cpr_section *sec, const struct cpr_rec *r, cpr_error **errp)
{
    if (r->version > sec->version || r->version < sec->min_version)
        return cpr_error_set(errp, -EPROTONOSUPPORT,
                             "section '%s' instance %u was saved in version %u; this program loads versions %u..%u",
                             sec->name, sec->instance, r->version, sec->min_version, sec->version);
    return 0;
}

struct load_state {
    cpr_ctx *ctx;
    struct savevm_state *st;
    cpr_stream *s;
    GArray *post_loads;          /* struct cpr_post_load */
    GHashTable *by_id;           /* section id -> struct cpr_section * (progressive) */
    GHashTable *skipped;         /* section ids of skipped optional progressive sections */
    GPtrArray *started;          /* progressive sections started in this stream */
    cpr_schema *schema;          /* the stream's schema record, when it has one */
};

/* A progressive section's load() of one record. */
static int live_load(struct load_state *ls, struct cpr_section *sec, const struct cpr_rec *r, int phase,
                     uint32_t version, cpr_error **errp)
{
    cpr_error *herr = NULL;
    return cpr_error_from_hook(errp, sec->ops.load(ls->s, version, phase, sec->opaque, &herr), &herr,
                               "section '%s' instance %u, record #%" U64 " at offset %" U64 ": load", sec->name,
                               sec->instance, (guint64)r->index, (guint64)r->offset);
}

static int load_section(struct load_state *ls, const struct cpr_rec *r, cpr_error **errp)
{
    if (r->type == CPR_REC_PART || r->type == CPR_REC_END) {
        if (g_hash_table_contains(ls->skipped, GUINT_TO_POINTER(r->section_id)))
            return 0;
        struct cpr_section *sec = g_hash_table_lookup(ls->by_id, GUINT_TO_POINTER(r->section_id));
        sec->ended = r->type == CPR_REC_END;
        return live_load(ls, sec, r, r->type == CPR_REC_PART ? CPR_LIVE_PART : CPR_LIVE_END, sec->load_version, errp);
    }
    struct cpr_section *sec = find(ls->st, r->name, r->instance);
    if (!sec) {
        if (r->flags & CPR_REC_FLAG_OPTIONAL) {
            warn(ls->st, "skipping optional section '%s' instance %u (record #%" G_GUINT64_FORMAT " at offset %" G_GUINT64_FORMAT "): not registered here",
                 r->name, r->instance, (guint64)r->index, (guint64)r->offset);
            if (r->type == CPR_REC_START)
                g_hash_table_add(ls->skipped, GUINT_TO_POINTER(r->section_id));
            return 0;
        }
        return cpr_error_set(errp, -ENOENT, "unknown section '%s' instance %u (record #%" U64 " at offset %" U64 ")",
                             r->name, r->instance, (guint64)r->index, (guint64)r->offset);
    }
    if (sec->live != (r->type == CPR_REC_START))
        return cpr_error_set(errp, -EBADMSG, "section '%s' instance %u is %s here but the stream saved it %s", sec->name,
                             sec->instance, sec->live ? "progressive" : "described",
                             sec->live ? "in one piece" : "progressively");
    if (sec->loaded)
        return cpr_error_set(errp, -EBADMSG, "section '%s' instance %u appears twice (record #%" U64 " at offset %" U64 ")",
                             sec->name, sec->instance, (guint64)r->index, (guint64)r->offset);
    int ret = check_version(sec, r, errp);
    if (ret < 0)
        return ret;
    sec->loaded = 1;
    sec->load_version = r->version;
    if (!sec->live) {
        g_autofree char *where = g_strdup_printf("section '%s' instance %u", sec->name, sec->instance);
        return cpr_vmstate_load(ls->s, sec->desc, sec->obj, r->version, where, ls->post_loads, errp);
    }
    g_hash_table_insert(ls->by_id, GUINT_TO_POINTER(r->section_id), sec);
    g_ptr_array_add(ls->started, sec);
    return live_load(ls, sec, r, CPR_LIVE_START, r->version, errp);
}

/* After the end record: progressive sections first (RAM before the devices that use it). */
static int run_post_loads(struct load_state *ls, cpr_error **errp)
{
    for (guint i = 0; i < ls->started->len; i++) {
        struct cpr_section *sec = ls->started->pdata[i];
        if (!sec->ops.load_done)
            continue;
        cpr_error *herr = NULL;
        int ret = section_hook(errp, sec, "load_done", sec->ops.load_done(sec->load_version, sec->opaque, &herr), &herr);
        if (ret < 0)
            return ret;
    }
    for (guint i = 0; i < ls->post_loads->len; i++) {
        struct cpr_post_load *pl = &g_array_index(ls->post_loads, struct cpr_post_load, i);
        cpr_error *herr = NULL;
        int ret = cpr_error_from_hook(errp, pl->fn(pl->obj, pl->version, &herr), &herr, "%s: post_load", pl->where);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int cpr_savevm_load_stream(cpr_ctx *ctx, cpr_stream *s, char **config_json, cpr_error **errp)
{
    if (!ctx || !s || cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_load: needs a context and a stream reader");
    struct savevm_state *st = state_of(ctx);
    if (st->busy)
        return cpr_error_set(errp, -EBUSY, "a save or load of this context is already running");
    st->busy = 1;
    for (guint i = 0; i < st->sections->len; i++) {
        struct cpr_section *sec = st->sections->pdata[i];
        sec->loaded = sec->ended = 0;
    }
    struct load_state ls = {
        .ctx = ctx, .st = st, .s = s,
        .post_loads = g_array_new(FALSE, FALSE, sizeof(struct cpr_post_load)),
        .by_id = g_hash_table_new(g_direct_hash, g_direct_equal),
        .skipped = g_hash_table_new(g_direct_hash, g_direct_equal),
        .started = g_ptr_array_new(),
    };
    g_autofree char *config = NULL;
    struct cpr_rec r;
    int ret = cpr_rec_read_stream_header(s, NULL, errp);
    while (ret >= 0 && (ret = cpr_rec_next(s, &r, errp)) > 0) {
        switch (r.type) {
        case CPR_REC_CONFIG:
            ret = check_identity(ctx, st, &r, errp);
            config = g_strndup((const char *)r.payload, r.len);
            break;
        case CPR_REC_SCHEMA:
            /* The loader decodes by its own descriptions; the schema must still be valid and
             * agree with the records (docs/format.md 4, 2.8), as for any reader. */
            /* cpr-exec: checked already, beside the VMM's set-up, if these very bytes were read
             * ahead (format/schema_prefetch.h). */
            ls.schema = cpr_schema_prefetch_take(ctx, r.payload, r.len, s->limit[CPR_STREAM_LIMIT_STRING]);
            if (!ls.schema)
                ret = cpr_meta_schema(&r, s->limit[CPR_STREAM_LIMIT_STRING], &ls.schema, errp);
            cpr_trace_step(ctx, "schema-checked");
            break;
        case CPR_REC_REGION:
            break; /* mapped-ram: the stream keeps it for the ram section's index */
        default:
            ret = cpr_schema_check_record(ls.schema, &r, errp);
            if (ret >= 0)
                ret = load_section(&ls, &r, errp);
            break;
        }
    }
    if (ret == 0)
        ret = run_post_loads(&ls, errp);
    cpr_post_loads_truncate(ls.post_loads, 0);
    g_array_free(ls.post_loads, TRUE);
    g_hash_table_destroy(ls.by_id);
    g_hash_table_destroy(ls.skipped);
    g_ptr_array_free(ls.started, TRUE);
    cpr_schema_free(ls.schema);
    json_object_put(st->load_cfg);
    st->load_cfg = NULL;
    st->busy = 0;
    if (ret < 0)
        return ret;
    if (config_json)
        *config_json = g_steal_pointer(&config);
    return 0;
}
