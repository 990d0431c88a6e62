/* SPDX-License-Identifier: MIT */
/* A stream file's schema record, checked on a helper thread ahead of the load (schema_prefetch.h). */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/stream.h>

#include "core/ctx.h"
#include "core/trace.h"
#include "format/record.h"
#include "format/schema_prefetch.h"
#include "format/stream.h"

struct prefetch {
    cpr_ctx *ctx;      /* for the trace step only */
    GThread *thread;
    char *path;
    uint64_t offset;
    /* Written by the helper, read after the join. */
    void *payload;     /* the schema record's bytes */
    size_t len;
    uint64_t limit;    /* the string limit it was checked under */
    cpr_schema *schema;
};

/* The schema follows the stream header and the config record (docs/format.md 2): anything
 * else first means there is none to read ahead. */
static void read_schema(struct prefetch *pf, cpr_stream *s)
{
    struct cpr_rec r = { 0 };
    pf->limit = s->limit[CPR_STREAM_LIMIT_STRING];
    if (cpr_rec_read_stream_header(s, NULL, NULL) < 0)
        return;
    while (cpr_rec_next(s, &r, NULL) > 0 && r.type == CPR_REC_CONFIG)
        ;
    if (r.type != CPR_REC_SCHEMA || cpr_meta_schema(&r, pf->limit, &pf->schema, NULL) < 0)
        return;
    pf->payload = g_memdup2(r.payload, r.len);
    pf->len = r.len;
}

static gpointer prefetch_thread(gpointer p)
{
    struct prefetch *pf = p;
    int fd = open(pf->path, O_RDONLY | O_CLOEXEC);
    cpr_stream *s = NULL;
    if (fd >= 0 && (pf->offset == 0 || lseek(fd, (off_t)pf->offset, SEEK_SET) == (off_t)pf->offset) &&
        cpr_stream_new_fd_reader(fd, CPR_STREAM_OWN_FD, &s, NULL) == 0) {
        fd = -1; /* the stream's */
        read_schema(pf, s);
    }
    cpr_stream_free(s);
    if (fd >= 0)
        close(fd);
    if (pf->schema)
        cpr_trace_step(pf->ctx, "schema-prefetched");
    return NULL;
}

static void prefetch_free(void *p)
{
    struct prefetch *pf = p;
    if (pf->thread)
        g_thread_join(pf->thread);
    cpr_schema_free(pf->schema);
    g_free(pf->payload);
    g_free(pf->path);
    g_free(pf);
}

void cpr_schema_prefetch_start(cpr_ctx *ctx, const char *path, uint64_t offset)
{
    if (!ctx || !path || cpr_ctx_slot_get(ctx, CPR_SLOT_SCHEMA_PREFETCH))
        return;
    struct prefetch *pf = g_new0(struct prefetch, 1);
    pf->ctx = ctx;
    pf->path = g_strdup(path);
    pf->offset = offset;
    pf->thread = g_thread_try_new("cpr-schema", prefetch_thread, pf, NULL);
    if (!pf->thread) {
        prefetch_free(pf);
        return;
    }
    cpr_ctx_slot_set(ctx, CPR_SLOT_SCHEMA_PREFETCH, pf, prefetch_free);
}

cpr_schema *cpr_schema_prefetch_take(cpr_ctx *ctx, const void *payload, size_t len, uint64_t string_limit)
{
    struct prefetch *pf = ctx ? cpr_ctx_slot_get(ctx, CPR_SLOT_SCHEMA_PREFETCH) : NULL;
    if (!pf)
        return NULL;
    cpr_ctx_slot_set(ctx, CPR_SLOT_SCHEMA_PREFETCH, NULL, NULL);
    g_thread_join(pf->thread);
    pf->thread = NULL;
    cpr_schema *sc = NULL;
    if (pf->schema && pf->len == len && pf->limit == string_limit && memcmp(pf->payload, payload, len) == 0) {
        sc = pf->schema;
        pf->schema = NULL;
    }
    prefetch_free(pf);
    return sc;
}
