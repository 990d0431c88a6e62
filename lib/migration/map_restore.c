/* SPDX-License-Identifier: MIT */
/* Instant restore by mapping a mapped-ram file: migration/map_restore.h, cpr/lazy_restore.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/ram.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/steps.h"
#include "format/stream.h"
#include "handover/ram.h"
#include "migration/map_restore.h"
#include "migration/mapped_ram.h"

/* Bytes one verifier step covers: whole chunks, about 1 MiB. */
#define STEP_BYTES (1u << 20)

/* One block's verification, shared by the threads that take its steps in turn. */
struct verify {
    const cpr_mr_file *f;
    size_t blk;
    const struct cpr_mr_block_info *b;
    GMutex junk_lock;
    GArray *junk;            /* uint64_t: pages to zero once mapped (guarded by junk_lock) */
    int seek_fd;             /* a private open of the file for SEEK_DATA (its offset is ours) */
    uint32_t zero_crc;       /* CRC32C of a whole chunk of zeros */
    const uint8_t *zeros;    /* chunk_size zero bytes */
    uint64_t step_chunks;
    struct cpr_steps steps;
};

/* The file holds no data in [from, data): a hole, which reads as zero without being read. */
struct hole_cache {
    uint64_t from, data;
};

static int in_hole(const struct verify *v, struct hole_cache *h, uint64_t off, uint64_t len)
{
    if (off < h->from || off >= h->data) {
        off_t d = lseek(v->seek_fd, (off_t)off, SEEK_DATA);
        h->from = off;
        h->data = d >= 0 ? (uint64_t)d : errno == ENXIO ? UINT64_MAX : off; /* unknown: data */
    }
    return off + len <= h->data;
}

static int is_zero(const uint8_t *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Chunk c holds no page of the file's bitmap and lies in a hole of the file: it reads as zero
 * without being read. */
static int hole_chunk(const struct verify *v, struct hole_cache *h, uint64_t c)
{
    const struct cpr_mr_block_info *b = v->b;
    uint64_t off = c * b->chunk_size, len = cpr_mr_chunk_len(b, c);
    for (uint64_t p = off / b->page_size; p < (off + len) / b->page_size; p++)
        if (cpr_mr_page_present(b, p))
            return 0;
    return in_hole(v, h, b->pages_offset + off, len);
}

/*
 * Chunk c, whose bytes in the file `data` holds: pages the bitmap does not have must read as
 * zero, so bytes another writer left there are zeroed in data and noted, to be zeroed in the
 * private mapping (which copies those pages out of the file) once it exists; then data, what
 * the guest will read, against the chunk's checksum.
 */
static int check_chunk(struct verify *v, uint64_t c, uint8_t *data, cpr_error **errp)
{
    const struct cpr_mr_block_info *b = v->b;
    uint64_t off = c * b->chunk_size, len = cpr_mr_chunk_len(b, c);
    for (uint64_t p = off / b->page_size; p < (off + len) / b->page_size; p++) {
        uint8_t *in_data = data + (p * b->page_size - off);
        if (!cpr_mr_page_present(b, p) && !is_zero(in_data, b->page_size)) {
            memset(in_data, 0, b->page_size);
            g_mutex_lock(&v->junk_lock);
            g_array_append_val(v->junk, p);
            g_mutex_unlock(&v->junk_lock);
        }
    }
    return cpr_mr_verify_chunk_mem(v->f, v->blk, c, data, errp);
}

/*
 * Chunks [c0, c1), one step. They are read with pread into buf, not through the mapping: the
 * page cache pages are the same ones the mapping shows, but populating the guest's page tables
 * here would put a cost on the time to running that the guest's first touches otherwise spread
 * out (as they do after a copy restore). Holes are not read.
 */
static int verify_step(struct verify *v, struct hole_cache *h, uint8_t *buf, uint64_t c0, uint64_t c1,
                       cpr_error **errp)
{
    const struct cpr_mr_block_info *b = v->b;
    int ret = 0;
    for (uint64_t c = c0, d; c < c1 && ret == 0; c = d) {
        d = c + 1;
        if (hole_chunk(v, h, c)) {
            uint64_t len = cpr_mr_chunk_len(b, c);
            uint32_t zero = len == b->chunk_size ? v->zero_crc : cpr_crc32c(0, v->zeros, (size_t)len);
            if (cpr_mr_chunk_crc(b, c) != zero) /* the guest would read zeros: a mismatch */
                ret = cpr_mr_verify_chunk_mem(v->f, v->blk, c, v->zeros, errp);
            continue;
        }
        while (d < c1 && !hole_chunk(v, h, d))
            d++;
        ret = cpr_mr_read_chunks(v->f, v->blk, c, d - c, buf, errp);
        for (uint64_t e = c; e < d && ret == 0; e++)
            ret = check_chunk(v, e, buf + (e - c) * b->chunk_size, errp);
    }
    return ret;
}

static gpointer verify_thread(gpointer opaque)
{
    struct verify *v = opaque;
    struct hole_cache h = { 0, 0 };
    uint8_t *buf = g_malloc(v->step_chunks * v->b->chunk_size);
    for (int64_t step; (step = cpr_steps_take(&v->steps)) >= 0;) {
        uint64_t c0 = (uint64_t)step * v->step_chunks, c1 = MIN(c0 + v->step_chunks, v->b->chunks);
        cpr_error *err = NULL;
        int ret = verify_step(v, &h, buf, c0, c1, &err);
        if (ret < 0) {
            cpr_steps_fail(&v->steps, ret, err);
            break;
        }
    }
    g_free(buf);
    return NULL;
}

/* How the checks run: threads, the file (for messages), the job's cancel (-1: none). */
struct verify_opts {
    unsigned int channels;
    const char *file;
    int cancel_fd;
};

/* Every chunk of block i, checked by o->channels threads before anything is mapped; the pages
 * to zero once it is go to junk. A cancel stops it within a step. */
static int verify_block(const cpr_mr_file *f, size_t i, int seek_fd, const struct verify_opts *o, GArray *junk,
                        cpr_error **errp)
{
    const struct cpr_mr_block_info *b = cpr_mr_block(f, i);
    g_autofree uint8_t *zeros = g_malloc0(b->chunk_size);
    g_autofree char *what = g_strdup_printf("RAM block '%s' of '%s' was checked (memory-restore-mode mapped): "
                                            "nothing was mapped", b->name, o->file);
    struct verify v = {
        .f = f, .blk = i, .b = b, .junk = junk, .seek_fd = seek_fd, .zeros = zeros,
        .zero_crc = cpr_crc32c(0, zeros, b->chunk_size),
        .step_chunks = MAX(1u, STEP_BYTES / b->chunk_size),
    };
    g_mutex_init(&v.junk_lock);
    cpr_steps_init(&v.steps, (b->chunks + v.step_chunks - 1) / v.step_chunks);
    cpr_steps_watch_cancel(&v.steps, o->cancel_fd, what);
    cpr_steps_run((unsigned int)MIN((uint64_t)o->channels, v.steps.steps), "cpr-map-verify", verify_thread, &v);
    g_mutex_clear(&v.junk_lock);
    return cpr_steps_finish(&v.steps, errp);
}

/* Block i, checked, becomes its region of the file; the junk pages read zero. */
static int map_block(const cpr_mr_file *f, size_t i, cpr_ram_block *rb, const char *file, GArray *junk,
                     cpr_error **errp)
{
    const struct cpr_mr_block_info *b = cpr_mr_block(f, i);
    int ret = cpr_ram_block_map_file(rb, cpr_mr_fd(f), b->pages_offset, file, errp);
    uint8_t *host = cpr_ram_block_host(rb);
    for (guint k = 0; ret == 0 && k < junk->len; k++)
        memset(host + g_array_index(junk, uint64_t, k) * b->page_size, 0, b->page_size);
    return ret;
}

/* The checks that refuse a block before anything is mapped. */
static int check_block(const struct cpr_mr_block_info *b, cpr_ram_block *rb, const char *file, uint64_t file_size,
                       cpr_error **errp)
{
    uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE);
    if (cpr_ram_block_mapped_file(rb))
        /* Re-mapping it would leave an abort nothing to give back but the earlier file. */
        return cpr_error_set(errp, -EBUSY, "mapped restore: RAM block '%s' is mapped from '%s' by an earlier "
                             "restore already (memory-restore-mode mapped restores a block once: free it and "
                             "create it again, or load with memory-restore-mode copy)", b->name,
                             cpr_ram_block_mapped_file(rb));
    if (cpr_ram_block_reattached(rb))
        return cpr_error_set(errp, -EINVAL, "mapped restore: RAM block '%s' was re-attached from a preserved "
                             "fd and holds the guest's pages already (mapped replaces fresh memory only)", b->name);
    if (b->size != cpr_ram_block_size(rb))
        return cpr_error_set(errp, -EINVAL, "mapped restore: RAM block '%s' is %" PRIu64 " bytes in '%s' but %"
                             PRIu64 " here", b->name, b->size, file, cpr_ram_block_size(rb));
    if (b->page_size != sys || cpr_ram_block_page_size(rb) != sys)
        return cpr_error_set(errp, -EINVAL, "mapped restore: RAM block '%s': pages of %" PRIu64 " bytes here and "
                             "%u in '%s', but a file maps in pages of %" PRIu64 " (load it with "
                             "memory-restore-mode copy)", b->name, cpr_ram_block_page_size(rb), b->page_size, file,
                             sys);
    if (b->pages_offset % sys)
        return cpr_error_set(errp, -EINVAL, "mapped restore: RAM block '%s': its region starts at offset %" PRIu64
                             " of '%s', not on a page boundary, so it cannot be mapped (load it with "
                             "memory-restore-mode copy)", b->name, b->pages_offset, file);
    if (b->pages_offset + b->pages_len > file_size)
        return cpr_error_set(errp, -EBADMSG, "mapped restore: RAM block '%s': '%s' is cut short (%" PRIu64
                             " bytes, the region ends at %" PRIu64 ")", b->name, file, file_size,
                             b->pages_offset + b->pages_len);
    return 0;
}

/* Every block checked, then mapped: a check that fails or is cancelled leaves every block's
 * memory as it was. */
static int begin(const cpr_mr_file *f, GHashTable *sent, const struct verify_opts *o, cpr_error **errp)
{
    const char *file = o->file;
    size_t n = cpr_mr_block_count(f);
    struct stat st;
    if (fstat(cpr_mr_fd(f), &st) < 0)
        return cpr_error_set_errno(errp, -errno, "mapped restore: fstat of '%s'", file);
    if (n != g_hash_table_size(sent))
        return cpr_error_set(errp, -EBADMSG, "mapped restore: the stream sends %u RAM blocks but '%s' has "
                             "regions for %zu", g_hash_table_size(sent), file, n);
    for (size_t i = 0; i < n; i++) {
        const struct cpr_mr_block_info *b = cpr_mr_block(f, i);
        cpr_ram_block *rb = g_hash_table_lookup(sent, b->name);
        if (!rb)
            return cpr_error_set(errp, -EBADMSG, "mapped-ram region for block '%s', which the block table "
                                 "does not send", b->name);
        int ret = check_block(b, rb, file, (uint64_t)st.st_size, errp);
        if (ret < 0)
            return ret;
    }
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", cpr_mr_fd(f));
    int seek_fd = open(link, O_RDONLY | O_CLOEXEC);
    if (seek_fd < 0)
        return cpr_error_set_errno(errp, -errno, "mapped restore: reopening '%s'", file);
    GPtrArray *junk = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        g_ptr_array_add(junk, g_array_new(FALSE, FALSE, sizeof(uint64_t)));
        ret = verify_block(f, i, seek_fd, o, junk->pdata[i], errp);
    }
    close(seek_fd);
    /* A write while the chunks were checked could have reached pages checked before it. */
    struct stat after;
    if (ret == 0 && fstat(cpr_mr_fd(f), &after) == 0 &&
        (after.st_size != st.st_size || after.st_mtim.tv_sec != st.st_mtim.tv_sec ||
         after.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
        ret = cpr_error_set(errp, -EBUSY, "mapped restore: '%s' was written while its chunks were verified: "
                            "a mapped file must not change while it is restored or its guest runs", file);
    for (size_t i = 0; i < n && ret == 0; i++)
        ret = map_block(f, i, g_hash_table_lookup(sent, cpr_mr_block(f, i)->name), file, junk->pdata[i], errp);
    g_ptr_array_unref(junk);
    return ret;
}

int cpr_map_restore_begin(cpr_ctx *ctx, cpr_stream *s, GHashTable *sent, unsigned int channels,
                          cpr_error **errp)
{
    cpr_mr_file *f;
    /* Reads the rest of the record: the index, its checksum verified with it. */
    int ret = cpr_mr_open_index(s, &f, errp);
    if (ret == -ESPIPE)
        cpr_error_prefix(errp, "memory-restore-mode mapped needs a file: stream (it maps the file's RAM regions)");
    if (ret < 0)
        return ret;
    g_autofree char *file = cpr_mr_file_name(f);
    struct verify_opts o = { .channels = channels, .file = file, .cancel_fd = s->cancel_fd };
    ret = begin(f, sent, &o, errp);
    cpr_mr_close(f); /* the mappings keep the file */
    if (ret < 0)
        cpr_map_restore_abort(ctx);
    return ret;
}

static int unmap_one(cpr_ram_block *b, void *opaque)
{
    cpr_error *err = NULL;
    /* Only this restore's: a block an earlier, committed restore mapped is the guest's RAM. */
    if (cpr_ram_block_map_uncommitted(b) && cpr_ram_block_unmap_file(b, &err) < 0) {
        /* Left mapped, blocker and all: still the file's bytes, never a wrong page. */
        fprintf(stderr, "libcpr: warning: %s\n", cpr_error_message(err));
        cpr_error_free(err);
    }
    return 0;
}

void cpr_map_restore_abort(cpr_ctx *ctx)
{
    cpr_ram_block_foreach(ctx, unmap_one, NULL);
}

static int commit_one(cpr_ram_block *b, void *opaque)
{
    cpr_ram_block_map_commit(b);
    return 0;
}

void cpr_map_restore_commit(cpr_ctx *ctx)
{
    cpr_ram_block_foreach(ctx, commit_one, NULL);
}
