/* SPDX-License-Identifier: MIT */
/* Lazy restore of a mapped-ram file: migration/lazy_restore.h and cpr/lazy_restore.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/blocker.h>
#include <cpr/lazy_restore.h>
#include <cpr/ram.h>

#include "core/ctx.h"
#include "core/params.h"
#include "core/sized.h"
#include "core/slot.h"
#include "format/stream.h"
#include "migration/fault_server.h"
#include "migration/lazy_restore.h"
#include "migration/mapped_ram.h"

typedef struct lazy_block {
    size_t mr;          /* index in the file reader */
    uint64_t page_size; /* the RAM block's, the fault server's unit */
} lazy_block;

/* One restore: the page source's state and the server that calls it. */
typedef struct lazy_run {
    cpr_mr_file *file;
    GArray *blocks;     /* lazy_block, in fault server order */
    cpr_fault_server *fs;
} lazy_run;

typedef struct lazy_state {
    GMutex lock;        /* guards every field */
    cpr_ctx *ctx;
    lazy_run *run;
    cpr_blocker *blocker;
    cpr_lazy_restore_fn fn;
    void *fn_opaque;
    int active;
    int abandoned; /* the incoming job failed before the guest ran: the restore ended there */
} lazy_state;

static void *state_new(void)
{
    lazy_state *ls = g_new0(lazy_state, 1);
    g_mutex_init(&ls->lock);
    return ls;
}

/* Stops serving; seal: after a commit, pages that never came become inaccessible. */
/* Ends the running restore, if any; returns 1 when there was one. */
static int stop(lazy_state *ls, int seal)
{
    g_mutex_lock(&ls->lock);
    lazy_run *run = ls->run;
    cpr_blocker *b = ls->blocker;
    ls->run = NULL;
    ls->blocker = NULL;
    g_mutex_unlock(&ls->lock);
    if (run) {
        if (seal)
            cpr_fault_server_free(run->fs); /* joins its threads, the source's only callers */
        else
            cpr_fault_server_drop(run->fs);
        cpr_mr_close(run->file);
        g_array_free(run->blocks, TRUE);
        g_free(run);
    }
    if (b)
        cpr_blocker_del(ls->ctx, b);
    return run != NULL;
}

static void state_free(void *opaque)
{
    lazy_state *ls = opaque;
    stop(ls, 1);
    g_mutex_clear(&ls->lock);
    g_free(ls);
}

static lazy_state *state_of(cpr_ctx *ctx)
{
    return cpr_ctx_slot_get_or_create(ctx, CPR_SLOT_LAZY, state_new, state_free);
}

/* ---- the page source: the file's region, verified chunk by chunk -------------------------- */

/* Reads bytes [off, off + len) of block b's region, which start and end on chunk boundaries
 * (or the region's end), verifies each chunk, and zeroes the pages the file does not have. */
static int read_chunks(lazy_run *run, size_t mr, uint64_t off, uint64_t len, uint8_t *dst,
                       cpr_error **errp)
{
    const struct cpr_mr_block_info *b = cpr_mr_block(run->file, mr);
    uint64_t got = 0;
    while (got < len) {
        ssize_t n = pread(cpr_mr_fd(run->file), dst + got, (size_t)(len - got),
                          (off_t)(b->pages_offset + off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return cpr_error_set_errno(errp, -errno, "mapped-ram block '%s': reading chunk %" PRIu64,
                                       b->name, (off + got) / b->chunk_size);
        if (n == 0)
            return cpr_error_set(errp, -EBADMSG, "mapped-ram block '%s' chunk %" PRIu64 " (file "
                                 "offset %" PRIu64 "): beyond the end of the file (cut after the "
                                 "restore started?)", b->name, (off + got) / b->chunk_size,
                                 b->pages_offset + off + got);
        got += (uint64_t)n;
    }
    for (uint64_t c = off / b->chunk_size; c * b->chunk_size < off + len; c++) {
        int ret = cpr_mr_verify_chunk_mem(run->file, mr, c, dst + (c * b->chunk_size - off), errp);
        if (ret < 0)
            return ret;
    }
    for (uint64_t p = off / b->page_size; p * b->page_size < off + len; p++)
        if (!cpr_mr_page_present(b, p))
            memset(dst + (p * b->page_size - off), 0, b->page_size);
    return 0;
}

static int lazy_fetch(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                      cpr_error **errp)
{
    lazy_run *run = opaque;
    const lazy_block *lb = &g_array_index(run->blocks, lazy_block, block);
    const struct cpr_mr_block_info *b = cpr_mr_block(run->file, lb->mr);
    uint64_t off = page * lb->page_size, len = count * lb->page_size;
    /* Whole chunks only: a chunk is verified as a whole before any of its bytes is served. */
    uint64_t c0 = off / b->chunk_size * b->chunk_size;
    uint64_t c1 = MIN((off + len + b->chunk_size - 1) / b->chunk_size * b->chunk_size, b->pages_len);
    if (c0 == off && c1 == off + len)
        return read_chunks(run, lb->mr, off, len, dst, errp);
    uint8_t *tmp = g_malloc((size_t)(c1 - c0));
    int ret = read_chunks(run, lb->mr, c0, c1 - c0, tmp, errp);
    if (ret == 0)
        memcpy(dst, tmp + (off - c0), (size_t)len);
    g_free(tmp);
    return ret;
}

static void on_event(void *opaque, int code, const char *message)
{
    lazy_state *ls = opaque;
    g_mutex_lock(&ls->lock);
    cpr_lazy_restore_fn fn = ls->fn;
    void *fn_opaque = ls->fn_opaque;
    cpr_blocker *b = code == 0 ? ls->blocker : NULL;
    if (b)
        ls->blocker = NULL;
    cpr_ctx *ctx = ls->ctx;
    g_mutex_unlock(&ls->lock);
    if (b)
        cpr_blocker_del(ctx, b); /* every page is here: migrating out is safe again */
    if (fn)
        fn(fn_opaque, code, message);
}

/* ---- begin / abort ------------------------------------------------------------------------ */

/* 1 when s reads a regular file: the pages are read from it by offset. */
static int reads_a_file(cpr_stream *s)
{
    struct stat st;
    return s->kind == CPR_SRC_FD && fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Drops what fresh RAM already holds (a VMM that read its mailbox page before the load, say):
 * the load replaces all of it anyway, and a page present would never fault, so the guest
 * would run on it instead of the file's. Done after the registration: a touch in between
 * faults and waits for the file's page. */
static int discard(cpr_ram_block *rb, cpr_error **errp)
{
    uint64_t size = cpr_ram_block_size(rb);
    int fd = cpr_ram_block_fd(rb);
    if (fd >= 0 && cpr_ram_block_shared(rb) &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size) < 0)
        return cpr_error_set_errno(errp, -errno, "ondemand restore: RAM block '%s': dropping the "
                                   "pages it held before the load", cpr_ram_block_name(rb));
    if (madvise(cpr_ram_block_host(rb), size, MADV_DONTNEED) < 0)
        return cpr_error_set_errno(errp, -errno, "ondemand restore: RAM block '%s': dropping the "
                                   "pages it held before the load", cpr_ram_block_name(rb));
    return 0;
}

/* Registers the block the stream sends under `name` with the fault server. */
static int add_block(lazy_run *run, size_t mr, cpr_ram_block *rb, cpr_error **errp)
{
    const struct cpr_mr_block_info *b = cpr_mr_block(run->file, mr);
    if (b->size != cpr_ram_block_size(rb))
        return cpr_error_set(errp, -EINVAL, "ondemand restore: RAM block '%s' is %" PRIu64
                             " bytes in the file but %" PRIu64 " here", b->name, b->size,
                             cpr_ram_block_size(rb));
    if (cpr_ram_block_reattached(rb))
        return cpr_error_set(errp, -EINVAL, "ondemand restore: RAM block '%s' already holds "
                             "the guest's pages (ondemand fills fresh memory only)", b->name);
    lazy_block lb = { .mr = mr, .page_size = cpr_ram_block_page_size(rb) };
    if (lb.page_size % b->chunk_size && b->chunk_size % lb.page_size)
        return cpr_error_set(errp, -EINVAL, "ondemand restore: RAM block '%s': pages of %" PRIu64
                             " bytes and chunks of %u do not nest", b->name, lb.page_size,
                             b->chunk_size);
    g_array_append_val(run->blocks, lb);
    int ret = cpr_fault_server_add_block(run->fs, b->name, cpr_ram_block_host(rb),
                                         cpr_ram_block_size(rb), lb.page_size, errp);
    return ret < 0 ? ret : discard(rb, errp);
}

static int begin(lazy_state *ls, cpr_stream *s, GHashTable *sent, cpr_error **errp)
{
    if (!reads_a_file(s))
        return cpr_error_set(errp, -ESPIPE, "memory-restore-mode ondemand needs a file: stream "
                             "(it reads pages from the file as the guest touches them)");
    lazy_run *run = g_new0(lazy_run, 1);
    run->blocks = g_array_new(FALSE, TRUE, sizeof(lazy_block));
    g_mutex_lock(&ls->lock);
    ls->run = run; /* stop() frees what exists of it on failure */
    g_mutex_unlock(&ls->lock);
    int ret = cpr_mr_open_index(s, &run->file, errp);
    if (ret < 0)
        return ret;
    cpr_page_source src = { .fetch = lazy_fetch, .opaque = run };
    if ((ret = cpr_fault_server_new(&src, 0, 0, on_event, ls, &run->fs, errp)) < 0)
        return ret;
    size_t n = cpr_mr_block_count(run->file);
    for (size_t i = 0; i < n; i++) {
        const struct cpr_mr_block_info *b = cpr_mr_block(run->file, i);
        cpr_ram_block *rb = g_hash_table_lookup(sent, b->name);
        if (!rb)
            return cpr_error_set(errp, -EBADMSG, "mapped-ram region for block '%s', which the "
                                 "block table does not send", b->name);
        if ((ret = add_block(run, i, rb, errp)) < 0)
            return ret;
    }
    if (n != g_hash_table_size(sent))
        return cpr_error_set(errp, -EBADMSG, "ondemand restore: the stream sends %u RAM blocks "
                             "but the file has regions for %zu", g_hash_table_size(sent), n);
    cpr_blocker *blocker;
    if ((ret = cpr_blocker_add(ls->ctx, CPR_MODES_ALL, "lazy restore in progress: guest RAM is "
                               "still being read from the file", &blocker, errp)) < 0)
        return ret;
    g_mutex_lock(&ls->lock);
    ls->blocker = blocker;
    ls->active = 1;
    ls->abandoned = 0;
    g_mutex_unlock(&ls->lock);
    return cpr_fault_server_start(run->fs, errp);
}

int cpr_lazy_restore_begin(cpr_ctx *ctx, cpr_stream *s, GHashTable *sent, cpr_error **errp)
{
    lazy_state *ls = state_of(ctx);
    g_mutex_lock(&ls->lock);
    int busy = ls->run != NULL;
    ls->ctx = ctx;
    g_mutex_unlock(&ls->lock);
    if (busy)
        return cpr_error_set(errp, -EBUSY, "ondemand restore: a lazy restore runs already on "
                             "this context");
    /* begin() reads the rest of the record: the index, its checksum verified with it. */
    int ret = begin(ls, s, sent, errp);
    if (ret < 0)
        stop(ls, 0);
    return ret;
}

void cpr_lazy_restore_abort(cpr_ctx *ctx)
{
    lazy_state *ls = cpr_ctx_slot_get(ctx, CPR_SLOT_LAZY);
    if (!ls || !stop(ls, 0))
        return;
    /* Said, not left "active" with no pages: a VMM waiting for the end would wait forever. */
    g_mutex_lock(&ls->lock);
    ls->abandoned = 1;
    g_mutex_unlock(&ls->lock);
    on_event(ls, -ECANCELED, "lazy restore abandoned: the incoming migration failed before the guest ran");
}

/* ---- public ------------------------------------------------------------------------------- */

CPR_API void cpr_lazy_restore_info_init(cpr_lazy_restore_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof(*info));
    info->size = sizeof(*info);
}

CPR_API int cpr_lazy_restore_query(cpr_ctx *ctx, cpr_lazy_restore_info *info, cpr_error **errp)
{
    if (!ctx || !info)
        return cpr_error_set(errp, -EINVAL, "cpr_lazy_restore_query: %s is NULL", ctx ? "info" : "ctx");
    cpr_lazy_restore_info full;
    cpr_lazy_restore_info_init(&full);
    lazy_state *ls = state_of(ctx);
    g_mutex_lock(&ls->lock);
    full.active = ls->active;
    if (ls->abandoned) {
        full.error = -ECANCELED;
        cpr_error_set(errp, -ECANCELED, "lazy restore abandoned: the incoming migration failed before the guest ran");
    }
    if (ls->run && ls->run->fs) {
        cpr_fault_status st;
        cpr_fault_server_status(ls->run->fs, &st, errp);
        full.error = st.error;
        full.pages_total = st.pages_total;
        full.pages_resident = st.pages_placed;
        full.fault_pages = st.fault_pages;
        full.serve_start_us = st.start_us;
        full.complete_us = st.done_us;
    }
    g_mutex_unlock(&ls->lock);
    return cpr_sized_write(info, &full, sizeof(full), sizeof(info->size),
                           "cpr_lazy_restore_query: cpr_lazy_restore_info", errp);
}

CPR_API int cpr_lazy_restore_set_event_cb(cpr_ctx *ctx, cpr_lazy_restore_fn fn, void *opaque)
{
    if (!ctx)
        return -EINVAL;
    lazy_state *ls = state_of(ctx);
    g_mutex_lock(&ls->lock);
    ls->fn = fn;
    ls->fn_opaque = opaque;
    g_mutex_unlock(&ls->lock);
    return 0;
}
