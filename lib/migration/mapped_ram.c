/* SPDX-License-Identifier: MIT */
/*
 * mapped-ram: RAM blocks at fixed offsets of a file stream, written and read in place by
 * several threads, with a checksum per chunk (lib/migration/mapped_ram.h, docs/format.md
 * section 7). The writer's threads checksum each page they write; a page written again in a
 * later pass gets its new checksum, and the one the index keeps is that of its last write.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "core/bytes.h"
#include "core/crc32c.h"
#include "channel/scm.h"
#include "core/error.h"
#include "core/steps.h"
#include "format/record.h"
#include "format/region.h"
#include "format/stream.h"
#include "migration/mapped_ram.h"
#include "migration/ram_entries.h"

#define PAGE CPR_RAM_DIRTY_PAGE_SIZE
/* Pages one loader step reads and checks: a whole number of chunks of at most 1 MiB. */
#define LOAD_STEP_PAGES 256u

static const uint8_t zero_page[PAGE] __attribute__((aligned(PAGE)));

static int bit_get(const uint8_t *map, uint64_t i)
{
    return (map[i / 8] >> (i % 8)) & 1;
}

/* The name of the file behind fd, for messages ("fd N" when /proc does not say). */
static char *fd_name(int fd)
{
    char link[64], buf[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, sizeof(buf) - 1);
    if (n <= 0)
        return g_strdup_printf("fd %d", fd);
    buf[n] = '\0';
    return g_strdup(buf);
}

/* A second open of fd's file with O_DIRECT (flags: O_RDONLY or O_WRONLY). */
static int open_direct(int fd, int flags, cpr_error **errp)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    int d = open(link, flags | O_DIRECT | O_CLOEXEC);
    if (d >= 0)
        return d;
    int e = errno;
    g_autofree char *name = fd_name(fd);
    if (e == EINVAL)
        return cpr_error_set(errp, -EINVAL, "direct-io: the file system of '%s' refuses O_DIRECT (%s): "
                             "set direct-io off, or save to a file system that supports it", name, strerror(e));
    return cpr_error_set_errno(errp, -e, "direct-io: opening '%s' with O_DIRECT", name);
}

/* Reads len bytes; *got receives how many the file had (fewer at its end). */
static int pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

/* ================================================================ writer ==== */

struct mr_blk {
    cpr_ram_block *block;
    const uint8_t *host;
    uint64_t size, pages;
    const struct cpr_region *region;
    uint64_t *present;  /* bit per page, set by the workers (atomically: words are shared) */
    uint32_t *crcs;     /* per page: chunks are one page (CPR_MR_CHUNK_SIZE) */
};

struct cpr_mr_save {
    int fd;        /* the stream's (or the O_DIRECT one, owned) */
    int own_fd;
    struct mr_blk *blks;
    unsigned int nblks;
    GThreadPool *pool;
    GMutex lock;
    GCond idle;
    uint64_t inflight; /* queued runs not yet written */
    uint64_t inflight_bytes; /* their pages' bytes: bounded by MR_INFLIGHT_MAX */
    int stopping;      /* freed before its index was written (failure, cancel): skip the rest */
    uint8_t **bounce;  /* MR_BOUNCE-byte buffers not in use, one per thread, nbounce of them */
    unsigned int nbounce;
    int ret;           /* a worker's first error, and its message */
    cpr_error *err;
    uint64_t bytes;    /* atomic */
    uint32_t zero_crc;
};

struct mr_run {
    unsigned int blk;
    uint64_t first;
    uint32_t n;
    int zero;
};

static int write_pages(cpr_mr_save *m, struct mr_blk *b, uint64_t p, uint64_t n, const uint8_t *src,
                       cpr_error **errp)
{
    uint64_t off = b->region->pages_offset + p * PAGE;
    int ret = cpr_io_pwrite_all(m->fd, src, (size_t)(n * PAGE), off);
    if (ret < 0) {
        g_autofree char *file = fd_name(m->fd);
        return cpr_error_set_errno(errp, ret, "mapped-ram: writing RAM block '%s' pages %" PRIu64 "+%" PRIu64
                                   " to '%s' at offset %" PRIu64, cpr_ram_block_name(b->block), p, n, file, off);
    }
    __atomic_fetch_add(&m->bytes, n * PAGE, __ATOMIC_RELAXED);
    return 0;
}

/*
 * Guest pages reach the file through a page-aligned buffer per thread, copied with their
 * checksum (cpr_crc32c_copy): the checksum reads every byte anyway, and pwrite(2) then reads
 * the buffer from cache rather than guest RAM. On a shadow-paged host (a kvm-pvm guest) the
 * kernel's first read of each user page is a fault of its own, 1.9 ms a MiB against 0.3
 * through a buffer (docs/benchmarks.md); elsewhere the copy takes the place of the
 * checksum's read instead of adding one. O_DIRECT needs the alignment too.
 */
#define MR_BOUNCE (1u << 20)

static int write_run(cpr_mr_save *m, const struct mr_run *r, uint8_t *buf, cpr_error **errp)
{
    struct mr_blk *b = &m->blks[r->blk];
    uint64_t end = r->first + r->n;
    if (r->zero) {
        /* Pages not in the file read as zero already; an older copy there is overwritten. */
        for (uint64_t p = r->first; p < end; p++) {
            b->crcs[p] = m->zero_crc;
            uint64_t w = __atomic_load_n(&b->present[p / 64], __ATOMIC_RELAXED);
            int ret = (w >> (p % 64)) & 1 ? write_pages(m, b, p, 1, zero_page, errp) : 0;
            if (ret < 0)
                return ret;
        }
        return 0;
    }
    /* The pages go through the thread's buffer, each copied with its checksum: the file gets
     * exactly the bytes the checksum covers, even while the guest writes the page. A short
     * last page is zero-padded, as the region is. */
    int ret = 0;
    for (uint64_t p = r->first; ret == 0 && p < end;) {
        uint64_t k = MIN(end - p, (uint64_t)(MR_BOUNCE / PAGE));
        for (uint64_t i = 0; i < k; i++) {
            uint8_t *dst = buf + i * PAGE;
            size_t len = (size_t)MIN((uint64_t)PAGE, b->size - (p + i) * PAGE);
            memset(dst + len, 0, PAGE - len);
            uint32_t crc = cpr_crc32c_copy(0, dst, b->host + (p + i) * PAGE, len);
            b->crcs[p + i] = cpr_crc32c(crc, dst + len, PAGE - len);
            __atomic_fetch_or(&b->present[(p + i) / 64], UINT64_C(1) << ((p + i) % 64), __ATOMIC_RELAXED);
        }
        ret = write_pages(m, b, p, k, buf, errp);
        p += k;
    }
    return ret;
}

/* Bytes of runs queued but not written at most: the producer waits beyond it, so a cancel or
 * a failure waits for this much to reach the disk, not for a whole pass, and max-bandwidth,
 * which counts written bytes, holds the producer back too. */
#define MR_INFLIGHT_MAX (32u << 20)

static void worker(gpointer data, gpointer user)
{
    struct mr_run *r = data;
    cpr_mr_save *m = user;
    cpr_error *err = NULL;
    g_mutex_lock(&m->lock);
    int skip = m->ret < 0 || m->stopping;
    uint8_t *buf = m->bounce[--m->nbounce]; /* the pool runs at most one worker per buffer */
    g_mutex_unlock(&m->lock);
    int ret = skip ? 0 : write_run(m, r, buf, &err);
    g_mutex_lock(&m->lock);
    m->bounce[m->nbounce++] = buf;
    if (ret < 0 && m->ret == 0) {
        m->ret = ret;
        m->err = err;
        err = NULL;
    }
    m->inflight--;
    m->inflight_bytes -= (uint64_t)r->n * PAGE;
    g_cond_broadcast(&m->idle); /* the barrier waits for none, the producer for room */
    g_mutex_unlock(&m->lock);
    cpr_error_free(err);
    g_free(r);
}

int cpr_mr_save_new(cpr_stream *s, GPtrArray *blocks, unsigned int channels, int direct_io, cpr_mr_save **out,
                    cpr_error **errp)
{
    int sfd = s->fd;
    struct stat st;
    if (s->kind != CPR_SINK_FD || fstat(sfd, &st) < 0 || !S_ISREG(st.st_mode))
        return cpr_error_set(errp, -ESPIPE, "mapped-ram needs a seekable file: the migration stream is not a "
                             "regular file (use file:PATH, or turn the mapped-ram capability off)");
    cpr_mr_save *m = g_new0(cpr_mr_save, 1);
    g_mutex_init(&m->lock);
    g_cond_init(&m->idle);
    m->fd = sfd;
    m->own_fd = -1;
    m->zero_crc = cpr_crc32c(0, zero_page, PAGE);
    m->nblks = blocks->len;
    m->blks = g_new0(struct mr_blk, m->nblks ? m->nblks : 1);
    int ret = 0;
    if (direct_io && (ret = open_direct(sfd, O_WRONLY, errp)) >= 0) {
        m->fd = m->own_fd = ret;
        ret = 0;
    }
    for (unsigned int i = 0; ret == 0 && i < m->nblks; i++) {
        struct mr_blk *b = &m->blks[i];
        b->block = g_ptr_array_index(blocks, i);
        b->host = cpr_ram_block_host(b->block);
        b->size = cpr_ram_block_size(b->block);
        b->pages = (b->size + PAGE - 1) / PAGE;
        b->present = g_new0(uint64_t, (b->pages + 63) / 64);
        b->crcs = g_new(uint32_t, b->pages);
        for (uint64_t p = 0; p < b->pages; p++)
            b->crcs[p] = m->zero_crc;
        ret = cpr_rec_write_region(s, cpr_ram_block_name(b->block), b->size, PAGE, CPR_MR_CHUNK_SIZE, &b->region, errp);
    }
    channels = CLAMP(channels, 1u, 255u);
    m->bounce = g_new0(uint8_t *, channels);
    for (; ret == 0 && m->nbounce < channels; m->nbounce++)
        if (posix_memalign((void **)&m->bounce[m->nbounce], PAGE, MR_BOUNCE) != 0)
            ret = cpr_error_set(errp, -ENOMEM, "mapped-ram: no memory for %u write buffers", channels);
    if (ret == 0) {
        GError *gerr = NULL;
        m->pool = g_thread_pool_new(worker, m, (gint)channels, TRUE, &gerr);
        if (!m->pool) {
            ret = cpr_error_set(errp, -EAGAIN, "mapped-ram: starting %u threads: %s", channels, gerr->message);
            g_error_free(gerr);
        }
    }
    if (ret < 0) {
        cpr_mr_save_free(m);
        return ret;
    }
    *out = m;
    return 0;
}

static int take_error(cpr_mr_save *m, cpr_error **errp)
{
    /* Called with the lock held: the first worker error, once (later calls repeat its code). */
    int ret = m->ret;
    if (ret < 0) {
        if (m->err) {
            cpr_error_propagate(errp, m->err);
            m->err = NULL;
        } else {
            cpr_error_set(errp, ret, "mapped-ram: an earlier write failed");
        }
    }
    return ret;
}

int cpr_mr_save_pages(cpr_mr_save *m, unsigned int blk, uint64_t first, uint32_t n, int zero, cpr_error **errp)
{
    /* Filled before the unlock that the worker's first lock pairs with: the pool's own queue
     * orders it too, but only this edge is one that TSan (tests/run-tsan) sees. */
    struct mr_run *r = g_new(struct mr_run, 1);
    *r = (struct mr_run){ blk, first, n, zero };
    uint64_t bytes = (uint64_t)n * PAGE;
    g_mutex_lock(&m->lock);
    while (m->inflight_bytes && m->inflight_bytes + bytes > MR_INFLIGHT_MAX && m->ret == 0)
        g_cond_wait(&m->idle, &m->lock);
    int ret = take_error(m, errp);
    if (ret == 0) {
        m->inflight++;
        m->inflight_bytes += bytes;
    }
    g_mutex_unlock(&m->lock);
    if (ret < 0) {
        g_free(r);
        return ret;
    }
    g_thread_pool_push(m->pool, r, NULL);
    return 0;
}

int cpr_mr_save_barrier(cpr_mr_save *m, cpr_error **errp)
{
    g_mutex_lock(&m->lock);
    while (m->inflight)
        g_cond_wait(&m->idle, &m->lock);
    int ret = take_error(m, errp);
    g_mutex_unlock(&m->lock);
    return ret;
}

int cpr_mr_save_writeback(cpr_mr_save *m, cpr_error **errp)
{
    int ret = cpr_mr_save_barrier(m, errp);
    if (ret == 0 && fdatasync(m->fd) < 0) {
        g_autofree char *name = fd_name(m->fd);
        ret = cpr_error_set_errno(errp, -errno, "mapped-ram: fdatasync of '%s'", name);
    }
    return ret;
}

uint64_t cpr_mr_save_bytes(const cpr_mr_save *m)
{
    return m ? __atomic_load_n(&m->bytes, __ATOMIC_RELAXED) : 0;
}

int cpr_mr_save_index(cpr_mr_save *m, cpr_stream *s, cpr_error **errp)
{
    int ret = cpr_mr_save_barrier(m, errp);
    for (unsigned int i = 0; ret == 0 && i < m->nblks; i++) {
        struct mr_blk *b = &m->blks[i];
        const char *name = cpr_ram_block_name(b->block);
        size_t maplen = (size_t)((b->pages + 7) / 8);
        g_autofree uint8_t *map = g_malloc0(maplen ? maplen : 1);
        for (uint64_t w = 0; w < (b->pages + 63) / 64; w++) {
            uint8_t le[8];
            cpr_le_put(le, b->present[w], 8);
            memcpy(map + w * 8, le, MIN(8u, maplen - w * 8));
        }
        g_autofree uint8_t *crcs = g_malloc(b->pages * 4);
        for (uint64_t p = 0; p < b->pages; p++)
            cpr_le_put(crcs + p * 4, b->crcs[p], 4);
        if ((ret = cpr_stream_put_u8(s, CPR_RAM_ENT_MAPPED, errp)) < 0 ||
            (ret = cpr_stream_put_u16(s, (uint16_t)strlen(name), errp)) < 0 ||
            (ret = cpr_stream_put_bytes(s, name, strlen(name), errp)) < 0 ||
            (ret = cpr_stream_put_u64(s, b->pages, errp)) < 0 ||
            (ret = cpr_stream_put_bytes(s, map, maplen, errp)) < 0 ||
            (ret = cpr_stream_put_u64(s, b->pages, errp)) < 0 ||
            (ret = cpr_stream_put_bytes(s, crcs, b->pages * 4, errp)) < 0)
            break;
    }
    return ret;
}

void cpr_mr_save_free(cpr_mr_save *m)
{
    if (!m)
        return;
    g_mutex_lock(&m->lock);
    m->stopping = 1; /* a save that ends here has no index: what is still queued is moot */
    g_mutex_unlock(&m->lock);
    if (m->pool)
        g_thread_pool_free(m->pool, FALSE, TRUE);
    for (unsigned int i = 0; i < m->nblks; i++) {
        g_free(m->blks[i].present);
        g_free(m->blks[i].crcs);
    }
    g_free(m->blks);
    for (unsigned int i = 0; i < m->nbounce; i++)
        free(m->bounce[i]);
    g_free(m->bounce);
    if (m->own_fd >= 0)
        close(m->own_fd);
    cpr_error_free(m->err);
    g_mutex_clear(&m->lock);
    g_cond_clear(&m->idle);
    g_free(m);
}

/* ================================================================ index ===== */

/* One index entry as the ram section's end record holds it (after the kind byte). */
struct mr_index {
    char name[CPR_RAM_NAME_MAX + 1];
    uint64_t pages, chunks;
    const uint8_t *bitmap; /* (pages + 7) / 8 bytes, in the record's view */
    const uint8_t *crcs;   /* chunks * 4 bytes, little-endian */
};

static int index_read(cpr_stream *s, struct mr_index *ix, cpr_error **errp)
{
    uint16_t len;
    int ret = cpr_stream_get_u16(s, &len, errp);
    if (ret == 0 && (len == 0 || len > CPR_RAM_NAME_MAX))
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index: block name length %u out of range", len);
    if (ret == 0 && (ret = cpr_stream_get_bytes(s, ix->name, len, errp)) == 0)
        ix->name[len] = '\0';
    if (ret == 0)
        ret = cpr_stream_get_u64(s, &ix->pages, errp);
    if (ret == 0 && ix->pages > cpr_stream_remaining(s) * 8)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index of block '%s': %" PRIu64 " pages, more than the "
                             "record holds", ix->name, ix->pages);
    const void *p;
    if (ret == 0 && (ret = cpr_stream_get_ptr(s, &p, (size_t)((ix->pages + 7) / 8), errp)) == 0)
        ix->bitmap = p;
    if (ret == 0)
        ret = cpr_stream_get_u64(s, &ix->chunks, errp);
    if (ret == 0 && ix->chunks > cpr_stream_remaining(s) / 4)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index of block '%s': %" PRIu64 " chunks, more than the "
                             "record holds", ix->name, ix->chunks);
    if (ret == 0 && (ret = cpr_stream_get_ptr(s, &p, (size_t)(ix->chunks * 4), errp)) == 0)
        ix->crcs = p;
    return ret;
}

/* The index must fit the region: the same pages, one checksum per chunk. */
static int index_check(const struct mr_index *ix, const struct cpr_region *r, cpr_error **errp)
{
    if (!r)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index of block '%s': the stream has no region for it",
                             ix->name);
    uint64_t pages = r->pages_len / r->page_size;
    uint64_t chunks = (r->pages_len + r->chunk_size - 1) / r->chunk_size;
    if (ix->pages != pages || ix->chunks != chunks)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index of block '%s': %" PRIu64 " pages and %" PRIu64
                             " chunks, but its region has %" PRIu64 " and %" PRIu64,
                             ix->name, ix->pages, ix->chunks, pages, chunks);
    return 0;
}

static int chunk_mismatch(cpr_error **errp, const char *name, uint64_t chunk, uint64_t off, uint64_t len,
                          uint32_t stored, uint32_t computed)
{
    return cpr_error_set(errp, -EBADMSG, "mapped-ram: RAM block '%s' chunk %" PRIu64 " (file offset %" PRIu64
                         ", %" PRIu64 " bytes): checksum mismatch (stored 0x%08x, computed 0x%08x)",
                         name, chunk, off, len, stored, computed);
}

/* ================================================================ loader ==== */

struct mr_load {
    int fd;
    cpr_ram_block *block;
    uint8_t *host;
    int place_fd;    /* the block's memory fd, written with pwrite; -1: read into host */
    uint64_t size;
    const struct cpr_region *r;
    const struct mr_index *ix;
    uint64_t step;   /* pages per step: whole chunks */
    struct cpr_steps steps;
};

static int is_zero(const uint8_t *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Pages [p, q) are present in the file or not: a run of one kind, capped at the block's end. */
static uint64_t run_end(const struct mr_load *l, uint64_t p, uint64_t p1, int *present)
{
    *present = bit_get(l->ix->bitmap, p);
    uint64_t q = p + 1;
    while (q < p1 && bit_get(l->ix->bitmap, q) == *present)
        q++;
    return q;
}

/* Reads the present pages of [p0, p1) into buf (guest RAM or a bounce buffer holding page p0
 * at its start); absent pages in buf are zeroed, bytes past the block too. */
static int read_step(struct mr_load *l, uint64_t p0, uint64_t p1, uint8_t *buf, cpr_error **errp)
{
    const struct cpr_region *r = l->r;
    for (uint64_t p = p0, q; p < p1; p = q) {
        int present;
        q = run_end(l, p, p1, &present);
        uint64_t off = p * PAGE, len = MIN(q * PAGE, l->size) - off;
        uint8_t *dst = buf + (off - p0 * PAGE);
        if (present) {
            size_t got;
            int ret = pread_all(l->fd, dst, (size_t)len, r->pages_offset + off, &got);
            if (ret < 0)
                return cpr_error_set_errno(errp, ret, "mapped-ram: reading RAM block '%s' at file offset %" PRIu64,
                                           r->name, r->pages_offset + off);
            if (got < len)
                return cpr_error_set(errp, -EBADMSG, "mapped-ram: RAM block '%s' chunk %" PRIu64 " lies beyond the "
                                     "end of the file (file offset %" PRIu64 ")", r->name,
                                     (off + got) / r->chunk_size, r->pages_offset + off + got);
        } else if (buf != l->host) {
            memset(dst, 0, (size_t)len);
        } else {
            /* Fresh memory reads as zero already: only what is not gets written. */
            for (uint64_t o = 0; o < len; o += PAGE) {
                size_t l2 = (size_t)MIN((uint64_t)PAGE, len - o);
                if (!is_zero(dst + o, l2))
                    memset(dst + o, 0, l2);
            }
        }
    }
    if (buf != l->host && p1 * PAGE > l->size)
        memset(buf + (l->size - p0 * PAGE), 0, (size_t)(p1 * PAGE - l->size));
    return 0;
}

/* Checks the chunks of pages [p0, p1), whose bytes buf holds from page p0 on. */
static int check_step(const struct mr_load *l, uint64_t p0, uint64_t p1, const uint8_t *buf, cpr_error **errp)
{
    const struct cpr_region *r = l->r;
    uint64_t c0 = p0 * PAGE / r->chunk_size, c1 = (p1 * PAGE + r->chunk_size - 1) / r->chunk_size;
    for (uint64_t c = c0; c < c1; c++) {
        uint64_t off = c * r->chunk_size, len = MIN((uint64_t)r->chunk_size, r->pages_len - off);
        uint64_t in_buf = buf != l->host ? len : off < l->size ? MIN(len, l->size - off) : 0;
        uint32_t crc = cpr_crc32c(0, buf + (off - p0 * PAGE), (size_t)in_buf);
        for (uint64_t pad = len - in_buf; pad;) {
            size_t k = (size_t)MIN(pad, (uint64_t)PAGE);
            crc = cpr_crc32c(crc, zero_page, k);
            pad -= k;
        }
        uint32_t stored = (uint32_t)cpr_le_get(l->ix->crcs + c * 4, 4);
        if (crc != stored)
            return chunk_mismatch(errp, r->name, c, r->pages_offset + off, len, stored, crc);
    }
    return 0;
}

/* Places the checked pages [p0, p1) from buf into the block's fd: present runs written,
 * absent ones punched out (they read as zero), or written as zeros where punching is not. */
static int place_step(struct mr_load *l, uint64_t p0, uint64_t p1, const uint8_t *buf, cpr_error **errp)
{
    for (uint64_t p = p0, q; p < p1; p = q) {
        int present;
        q = run_end(l, p, p1, &present);
        uint64_t off = p * PAGE, len = MIN(q * PAGE, l->size) - off;
        if (!present && fallocate(l->place_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                                  (off_t)len) == 0)
            continue;
        int ret = cpr_io_pwrite_all(l->place_fd, buf + (off - p0 * PAGE), (size_t)len, off);
        if (ret < 0)
            return cpr_error_set_errno(errp, ret, "mapped-ram: placing RAM block '%s' pages %" PRIu64 "+%" PRIu64
                                       " into its memory", l->r->name, p, q - p);
    }
    return 0;
}

/*
 * One step of whole chunks. With the block's fd, the pages are read into a bounce buffer,
 * checked there and only then written into guest memory: a chunk that fails its checksum
 * never reaches the guest, and the loader touches guest memory once, from the kernel (read
 * into the mapping and then checksummed from it, every page was touched twice, and on a host
 * that backs memory lazily each first touch of a fresh page is the dominant cost). Without
 * an fd (private memory, or huge pages, which pwrite cannot fill) the pages are read in place.
 */
static int load_step(struct mr_load *l, uint64_t step, uint8_t *bounce, cpr_error **errp)
{
    uint64_t pages = l->r->pages_len / PAGE;
    uint64_t p0 = step * l->step, p1 = MIN(p0 + l->step, pages);
    uint8_t *buf = bounce ? bounce : l->host + p0 * PAGE;
    int ret = read_step(l, p0, p1, buf, errp);
    if (ret == 0)
        ret = check_step(l, p0, p1, buf, errp);
    if (ret == 0 && bounce)
        ret = place_step(l, p0, p1, bounce, errp);
    return ret;
}

static gpointer load_thread(gpointer p)
{
    struct mr_load *l = p;
    void *bounce = NULL;
    if (l->place_fd >= 0 && posix_memalign(&bounce, PAGE, (size_t)(l->step * PAGE)) != 0)
        bounce = NULL; /* read in place instead */
    for (int64_t step; (step = cpr_steps_take(&l->steps)) >= 0;) {
        cpr_error *err = NULL;
        int ret = load_step(l, (uint64_t)step, bounce, &err);
        if (ret < 0) {
            cpr_steps_fail(&l->steps, ret, err);
            break;
        }
    }
    free(bounce);
    return NULL;
}

int cpr_mr_load_entry(cpr_stream *s, GHashTable *sent, unsigned int channels, int direct_io, cpr_ram_block **loaded,
                      cpr_error **errp)
{
    struct mr_index ix;
    int ret = index_read(s, &ix, errp);
    if (ret < 0)
        return ret;
    cpr_ram_block *b = g_hash_table_lookup(sent, ix.name);
    if (!b)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram index for block '%s', which the block table does not send",
                             ix.name);
    *loaded = b;
    const struct cpr_region *r = cpr_region_find(s, ix.name);
    if ((ret = index_check(&ix, r, errp)) < 0)
        return ret;
    if (r->block_size != cpr_ram_block_size(b) || r->page_size != PAGE)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram region of block '%s': %" PRIu64 " bytes in pages of %u, "
                             "but the block is %" PRIu64 " bytes in pages of %u",
                             ix.name, r->block_size, r->page_size, cpr_ram_block_size(b), PAGE);
    struct stat st;
    if (s->kind != CPR_SRC_FD || fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return cpr_error_set(errp, -ESPIPE, "mapped-ram: the stream of block '%s' is not a file: a mapped-ram "
                             "stream loads only from file: (or fd: of a regular file)", ix.name);
    struct mr_load l = {
        .fd = s->fd, .block = b, .host = cpr_ram_block_host(b), .size = cpr_ram_block_size(b), .r = r, .ix = &ix,
        .place_fd = cpr_ram_block_page_size(b) == PAGE ? cpr_ram_block_fd(b) : -1,
    };
    int dfd = -1;
    if (direct_io && (dfd = open_direct(s->fd, O_RDONLY, errp)) < 0)
        return dfd;
    if (dfd >= 0)
        l.fd = dfd;
    uint64_t chunk_pages = r->chunk_size / PAGE;
    l.step = MAX(chunk_pages, LOAD_STEP_PAGES / chunk_pages * chunk_pages);
    cpr_steps_init(&l.steps, (r->pages_len / PAGE + l.step - 1) / l.step);
    cpr_steps_run(channels, "cpr-mr-load", load_thread, &l); /* this thread is channel 0 */
    if (dfd >= 0)
        close(dfd);
    return cpr_steps_finish(&l.steps, errp);
}

/* ================================================================ reader ==== */

struct cpr_mr_file {
    int fd;
    GArray *blocks; /* struct cpr_mr_block_info, names and arrays owned here */
    struct cpr_taken_record record; /* the index record, when the blocks' arrays point into it (no copies) */
};

static void info_clear(struct cpr_mr_block_info *b, int arrays)
{
    g_free((char *)b->name);
    if (arrays) {
        g_free((uint8_t *)b->bitmap);
        g_free((uint8_t *)b->crcs);
    }
}

void cpr_mr_close(cpr_mr_file *f)
{
    if (!f)
        return;
    for (guint i = 0; i < f->blocks->len; i++)
        info_clear(&g_array_index(f->blocks, struct cpr_mr_block_info, i), !f->record.mem);
    cpr_taken_record_free(&f->record);
    g_array_free(f->blocks, TRUE);
    if (f->fd >= 0)
        close(f->fd);
    g_free(f);
}

static int add_block(cpr_mr_file *f, cpr_stream *s, const struct mr_index *ix, cpr_error **errp)
{
    const struct cpr_region *r = cpr_region_find(s, ix->name);
    int ret = index_check(ix, r, errp);
    if (ret < 0)
        return ret;
    struct cpr_mr_block_info b = {
        .name = g_strdup(ix->name), .size = r->block_size, .page_size = r->page_size, .chunk_size = r->chunk_size,
        .pages = ix->pages, .chunks = ix->chunks, .pages_offset = r->pages_offset, .pages_len = r->pages_len,
    };
    /* A lazy restore does this before the guest runs (5 MiB and a million pages at 4 GiB):
     * the arrays stay in the record it took, and the pages are counted by words. */
    size_t maplen = (size_t)((ix->pages + 7) / 8);
    if (f->record.mem) {
        b.bitmap = ix->bitmap;
        b.crcs = ix->crcs;
    } else {
        b.bitmap = g_memdup2(ix->bitmap, (gsize)maplen);
        b.crcs = g_memdup2(ix->crcs, (gsize)(ix->chunks * 4));
    }
    size_t i = 0;
    for (; i + 8 <= maplen; i += 8) {
        uint64_t w;
        memcpy(&w, b.bitmap + i, 8);
        b.present += (uint64_t)__builtin_popcountll(w);
    }
    for (uint64_t p = i * 8; p < ix->pages; p++)
        b.present += (uint64_t)bit_get(b.bitmap, p);
    g_array_append_val(f->blocks, b);
    return 0;
}

/* The ram section's end record: every mapped-ram index entry in it (the first one's kind
 * byte already read when `first_read`). */
static int read_index(cpr_mr_file *f, cpr_stream *s, int first_read, cpr_error **errp)
{
    for (int first = first_read; first || cpr_stream_remaining(s) > 0; first = 0) {
        uint8_t kind = CPR_RAM_ENT_MAPPED;
        int ret = first ? 0 : cpr_stream_get_u8(s, &kind, errp);
        if (ret < 0)
            return ret;
        if (kind != CPR_RAM_ENT_MAPPED)
            return cpr_error_set(errp, -EBADMSG, "mapped-ram: the ram section's end record holds entry kind %u, "
                                 "not an index entry", kind);
        struct mr_index ix;
        if ((ret = index_read(s, &ix, errp)) < 0 || (ret = add_block(f, s, &ix, errp)) < 0)
            return ret;
    }
    return 1;
}

static cpr_mr_file *file_new(int fd, cpr_error **errp)
{
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) {
        cpr_error_set_errno(errp, -errno, "mapped-ram: duplicating fd %d", fd);
        return NULL;
    }
    cpr_mr_file *f = g_new0(cpr_mr_file, 1);
    f->fd = own;
    f->blocks = g_array_new(FALSE, TRUE, sizeof(struct cpr_mr_block_info));
    return f;
}

int cpr_mr_open_index(cpr_stream *s, cpr_mr_file **out, cpr_error **errp)
{
    struct stat st;
    if (s->kind != CPR_SRC_FD || fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return cpr_error_set(errp, -ESPIPE, "mapped-ram: the stream is not a file");
    cpr_mr_file *f = file_new(s->fd, errp);
    if (!f)
        return -EBADF;
    /* The record, its checksum verified, becomes the file's: the index is not copied. */
    cpr_stream_take_record(s, &f->record);
    int ret = read_index(f, s, 1, errp);
    if (ret < 0) {
        cpr_mr_close(f);
        return ret;
    }
    *out = f;
    return 0;
}

int cpr_mr_open_fd(int fd, uint64_t offset, cpr_mr_file **out, cpr_error **errp)
{
    cpr_mr_file *f = file_new(fd, errp);
    if (!f)
        return -EBADF;
    int own = f->fd;
    /* The stream reads its own open of the file: its offset must not move f->fd's. */
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", own);
    int rfd = open(link, O_RDONLY | O_CLOEXEC);
    cpr_stream *s = NULL;
    int ret = rfd < 0 ? cpr_error_set_errno(errp, -errno, "mapped-ram: reopening fd %d", fd) : 0;
    if (ret == 0 && lseek(rfd, (off_t)offset, SEEK_SET) < 0)
        ret = cpr_error_set_errno(errp, -errno, "mapped-ram: seeking to offset %" PRIu64, offset);
    if (ret == 0 && (ret = cpr_stream_new_fd_reader(rfd, CPR_STREAM_OWN_FD, &s, errp)) == 0)
        rfd = -1; /* the stream owns it */
    if (rfd >= 0)
        close(rfd);
    if (ret == 0)
        ret = cpr_rec_read_stream_header(s, NULL, errp);
    struct cpr_rec rec;
    while (ret == 0 && (ret = cpr_rec_next(s, &rec, errp)) > 0) {
        if (rec.type == CPR_REC_END && !strcmp(rec.name, CPR_RAM_SECTION_NAME))
            ret = read_index(f, s, 0, errp);
        else
            ret = 0;
        if (ret == 1)
            break;
    }
    if (ret == 0)
        ret = cpr_error_set(errp, -EPROTO, "not a mapped-ram stream: it has no ram section index");
    if (ret > 0 && !f->blocks->len)
        ret = cpr_error_set(errp, -EPROTO, "not a mapped-ram stream: it has no region");
    cpr_stream_free(s);
    if (ret < 0) {
        cpr_mr_close(f);
        return ret;
    }
    *out = f;
    return 0;
}

int cpr_mr_open(const char *path, uint64_t offset, cpr_mr_file **out, cpr_error **errp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "mapped-ram: opening '%s'", path);
    int ret = cpr_mr_open_fd(fd, offset, out, errp);
    close(fd);
    if (ret < 0)
        cpr_error_prefix(errp, "%s", path);
    return ret;
}

int cpr_mr_fd(const cpr_mr_file *f)
{
    return f->fd;
}

size_t cpr_mr_block_count(const cpr_mr_file *f)
{
    return f->blocks->len;
}

const struct cpr_mr_block_info *cpr_mr_block(const cpr_mr_file *f, size_t i)
{
    return i < f->blocks->len ? &g_array_index(f->blocks, struct cpr_mr_block_info, i) : NULL;
}

int cpr_mr_find_block(const cpr_mr_file *f, const char *name)
{
    for (guint i = 0; i < f->blocks->len; i++)
        if (!strcmp(g_array_index(f->blocks, struct cpr_mr_block_info, i).name, name))
            return (int)i;
    return -ENOENT;
}

int cpr_mr_page_present(const struct cpr_mr_block_info *b, uint64_t page)
{
    return page < b->pages && bit_get(b->bitmap, page);
}

uint32_t cpr_mr_chunk_crc(const struct cpr_mr_block_info *b, uint64_t chunk)
{
    return (uint32_t)cpr_le_get(b->crcs + chunk * 4, 4);
}

uint64_t cpr_mr_chunk_len(const struct cpr_mr_block_info *b, uint64_t chunk)
{
    uint64_t off = chunk * b->chunk_size;
    return off >= b->pages_len ? 0 : MIN((uint64_t)b->chunk_size, b->pages_len - off);
}

static const struct cpr_mr_block_info *chunk_arg(const cpr_mr_file *f, size_t block, uint64_t chunk,
                                                 cpr_error **errp)
{
    const struct cpr_mr_block_info *b = f ? cpr_mr_block(f, block) : NULL;
    if (!b)
        cpr_error_set(errp, -EINVAL, "mapped-ram: no block %zu in the file", block);
    else if (chunk >= b->chunks)
        cpr_error_set(errp, -EINVAL, "mapped-ram: RAM block '%s' has %" PRIu64 " chunks, not %" PRIu64, b->name,
                      b->chunks, chunk + 1);
    return b && chunk < b->chunks ? b : NULL;
}

char *cpr_mr_file_name(const cpr_mr_file *f)
{
    return fd_name(f->fd);
}

int cpr_mr_verify_chunk_mem(const cpr_mr_file *f, size_t block, uint64_t chunk, const void *data, cpr_error **errp)
{
    const struct cpr_mr_block_info *b = chunk_arg(f, block, chunk, errp);
    if (!b)
        return -EINVAL;
    uint64_t len = cpr_mr_chunk_len(b, chunk);
    uint32_t crc = cpr_crc32c(0, data, (size_t)len), stored = cpr_mr_chunk_crc(b, chunk);
    if (crc != stored)
        return chunk_mismatch(errp, b->name, chunk, b->pages_offset + chunk * b->chunk_size, len, stored, crc);
    return 0;
}

int cpr_mr_read_chunks(const cpr_mr_file *f, size_t block, uint64_t chunk, uint64_t n, void *buf, cpr_error **errp)
{
    const struct cpr_mr_block_info *b = chunk_arg(f, block, chunk, errp);
    if (!b || n == 0 || n > b->chunks - chunk)
        return b ? cpr_error_set(errp, -EINVAL, "mapped-ram: RAM block '%s': chunks %" PRIu64 "+%" PRIu64
                                 " out of range", b->name, chunk, n) : -EINVAL;
    uint64_t off = b->pages_offset + chunk * b->chunk_size;
    uint64_t len = (n - 1) * b->chunk_size + cpr_mr_chunk_len(b, chunk + n - 1);
    size_t got;
    int ret = pread_all(f->fd, buf, (size_t)len, off, &got);
    if (ret < 0)
        return cpr_error_set_errno(errp, ret, "mapped-ram: reading RAM block '%s' chunk %" PRIu64, b->name,
                                   chunk);
    if (got < len)
        return cpr_error_set(errp, -EBADMSG, "mapped-ram: RAM block '%s' chunk %" PRIu64 " (file offset %" PRIu64
                             ", %" PRIu64 " bytes) lies beyond the end of the file", b->name,
                             chunk + got / b->chunk_size, off + got / b->chunk_size * b->chunk_size,
                             cpr_mr_chunk_len(b, chunk + got / b->chunk_size));
    return 0;
}

int cpr_mr_verify_chunk(const cpr_mr_file *f, size_t block, uint64_t chunk, cpr_error **errp)
{
    const struct cpr_mr_block_info *b = chunk_arg(f, block, chunk, errp);
    if (!b)
        return -EINVAL;
    g_autofree uint8_t *buf = g_malloc((size_t)cpr_mr_chunk_len(b, chunk));
    int ret = cpr_mr_read_chunks(f, block, chunk, 1, buf, errp);
    return ret < 0 ? ret : cpr_mr_verify_chunk_mem(f, block, chunk, buf, errp);
}
