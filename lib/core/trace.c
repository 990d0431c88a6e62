/* SPDX-License-Identifier: MIT */
/*
 * The pause breakdown (cpr/trace.h): a ring of timestamped steps on the context, under its
 * own lock so that the engine's thread, the VMM's vCPU threads and its monitor may all mark.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <json-c/json.h>

#include <cpr/trace.h>

#include "core/error.h"
#include "core/sized.h"
#include "core/slot.h"
#include "core/trace.h"

#define CAPACITY_MAX 65536u

typedef struct trace_entry {
    uint64_t t_ns;
    uint32_t pid;
    char name[CPR_TRACE_NAME_MAX + 1];
} trace_entry;

typedef struct trace_ring {
    GMutex lock;
    trace_entry *e;
    uint32_t capacity;
    uint32_t count;   /* kept, <= capacity */
    uint32_t head;    /* index of the oldest kept */
    uint64_t dropped; /* overwritten since the last reset */
} trace_ring;

static void *ring_new(void)
{
    trace_ring *r = g_new0(trace_ring, 1);
    g_mutex_init(&r->lock);
    r->capacity = CPR_TRACE_DEFAULT_CAPACITY;
    r->e = g_new0(trace_entry, r->capacity);
    return r;
}

static void ring_free(void *p)
{
    trace_ring *r = p;
    g_mutex_clear(&r->lock);
    g_free(r->e);
    g_free(r);
}

static trace_ring *ring(cpr_ctx *ctx)
{
    return cpr_ctx_slot_get_or_create(ctx, CPR_SLOT_TRACE, ring_new, ring_free);
}

CPR_API void cpr_trace_step_init(cpr_trace_step *step)
{
    if (step) {
        memset(step, 0, sizeof(*step));
        step->size = sizeof(*step);
    }
}

CPR_API uint64_t cpr_trace_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cpr_trace_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CPR_TRACE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!g_ascii_isalnum(c) && !strchr("._:-", c))
            return 0;
    }
    return 1;
}

int cpr_trace_add(cpr_ctx *ctx, const char *name, uint64_t t_ns, uint32_t pid)
{
    if (!ctx || !cpr_trace_name_ok(name))
        return -EINVAL;
    trace_ring *r = ring(ctx);
    g_mutex_lock(&r->lock);
    uint32_t at = (r->head + r->count) % r->capacity;
    if (r->count == r->capacity) {
        r->head = (r->head + 1) % r->capacity;
        r->dropped++;
    } else {
        r->count++;
    }
    trace_entry *e = &r->e[at];
    e->t_ns = t_ns;
    e->pid = pid;
    g_strlcpy(e->name, name, sizeof(e->name));
    g_mutex_unlock(&r->lock);
    return 0;
}

CPR_API int cpr_trace_mark_at(cpr_ctx *ctx, const char *name, uint64_t t_ns)
{
    return cpr_trace_add(ctx, name, t_ns, (uint32_t)getpid());
}

CPR_API int cpr_trace_mark(cpr_ctx *ctx, const char *name)
{
    return cpr_trace_mark_at(ctx, name, cpr_trace_now());
}

CPR_API int cpr_trace_count(cpr_ctx *ctx, uint64_t *dropped)
{
    if (!ctx)
        return -EINVAL;
    trace_ring *r = ring(ctx);
    g_mutex_lock(&r->lock);
    int n = (int)r->count;
    if (dropped)
        *dropped = r->dropped;
    g_mutex_unlock(&r->lock);
    return n;
}

/* Calls fn on each kept step, oldest first, under the lock. */
static void ring_foreach(trace_ring *r, void (*fn)(const trace_entry *e, void *opaque), void *opaque)
{
    for (uint32_t i = 0; i < r->count; i++)
        fn(&r->e[(r->head + i) % r->capacity], opaque);
}

CPR_API int cpr_trace_get(cpr_ctx *ctx, size_t index, cpr_trace_step *out, cpr_error **errp)
{
    if (!ctx || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_trace_get: %s is NULL", ctx ? "out" : "ctx");
    if (out->size < offsetof(cpr_trace_step, t_ns))
        return cpr_error_set(errp, -EINVAL, "cpr_trace_get: cpr_trace_step size %u is too small "
                             "(set it with cpr_trace_step_init)", out->size);
    trace_ring *r = ring(ctx);
    g_mutex_lock(&r->lock);
    if (index >= r->count) {
        uint32_t n = r->count;
        g_mutex_unlock(&r->lock);
        return cpr_error_set(errp, -ERANGE, "cpr_trace_get: step %zu asked, the trace holds %u",
                             index, n);
    }
    trace_entry e = r->e[(r->head + index) % r->capacity];
    g_mutex_unlock(&r->lock);
    cpr_trace_step s;
    memset(&s, 0, sizeof(s));
    s.pid = e.pid;
    s.t_ns = e.t_ns;
    memcpy(s.name, e.name, sizeof(s.name));
    return cpr_sized_write(out, &s, sizeof(s), offsetof(cpr_trace_step, t_ns), "cpr_trace_get: cpr_trace_step",
                           errp);
}

static void add_json(const trace_entry *e, void *opaque)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "step", json_object_new_string(e->name));
    json_object_object_add(o, "t-ns", json_object_new_int64((int64_t)e->t_ns));
    json_object_object_add(o, "pid", json_object_new_int64(e->pid));
    json_object_array_add(opaque, o);
}

CPR_API int cpr_trace_json(cpr_ctx *ctx, char **out, cpr_error **errp)
{
    if (!ctx || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_trace_json: %s is NULL", ctx ? "out" : "ctx");
    trace_ring *r = ring(ctx);
    json_object *o = json_object_new_object();
    json_object *steps = json_object_new_array();
    json_object_object_add(o, "clock", json_object_new_string("monotonic"));
    g_mutex_lock(&r->lock);
    json_object_object_add(o, "capacity", json_object_new_int64(r->capacity));
    json_object_object_add(o, "dropped", json_object_new_int64((int64_t)r->dropped));
    ring_foreach(r, add_json, steps);
    g_mutex_unlock(&r->lock);
    json_object_object_add(o, "steps", steps);
    *out = g_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return 0;
}

CPR_API int cpr_trace_reset(cpr_ctx *ctx, uint32_t capacity, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_trace_reset: ctx is NULL");
    if (capacity > CAPACITY_MAX)
        return cpr_error_set(errp, -EINVAL, "cpr_trace_reset: capacity %u is over the limit %u",
                             capacity, CAPACITY_MAX);
    if (!capacity)
        capacity = CPR_TRACE_DEFAULT_CAPACITY;
    trace_ring *r = ring(ctx);
    trace_entry *fresh = g_new0(trace_entry, capacity);
    g_mutex_lock(&r->lock);
    trace_entry *old = r->e;
    r->e = fresh;
    r->capacity = capacity;
    r->count = r->head = 0;
    r->dropped = 0;
    g_mutex_unlock(&r->lock);
    g_free(old);
    return 0;
}

/* ---- cpr-exec: the old image's steps across the exec (core/trace.h) ------------------------ */

static void add_env(const trace_entry *e, void *opaque)
{
    GString *s = opaque;
    g_string_append_printf(s, "%s%s@%" G_GUINT64_FORMAT, s->len ? "," : "", e->name, e->t_ns);
}

/* The export rides in one environment string, which Linux caps at 128 KiB (MAX_ARG_STRLEN):
 * past that the exec itself would fail (E2BIG). Half of it keeps the newest steps. */
#define EXPORT_MAX (64 * 1024)

char *cpr_trace_export(cpr_ctx *ctx)
{
    trace_ring *r = ring(ctx);
    GString *s = g_string_new(NULL);
    g_mutex_lock(&r->lock);
    ring_foreach(r, add_env, s);
    g_mutex_unlock(&r->lock);
    if (s->len > EXPORT_MAX) { /* drop the oldest whole steps */
        const char *cut = strchr(s->str + (s->len - EXPORT_MAX), ',');
        g_string_erase(s, 0, cut ? cut + 1 - s->str : (gssize)s->len);
    }
    return g_string_free(s, FALSE);
}

int cpr_trace_import(cpr_ctx *ctx, const char *text)
{
    if (!text || !*text)
        return 0;
    g_auto(GStrv) items = g_strsplit(text, ",", -1);
    uint32_t pid = (uint32_t)getpid(); /* exec keeps the pid */
    for (char **it = items; *it; it++) {
        char *at = strrchr(*it, '@');
        if (!at)
            return -EINVAL;
        *at = '\0';
        char *end;
        guint64 t = g_ascii_strtoull(at + 1, &end, 10);
        if (end == at + 1 || *end || cpr_trace_add(ctx, *it, t, pid) < 0)
            return -EINVAL;
    }
    return 0;
}
