/* SPDX-License-Identifier: MIT */
/* RAM blocks: memfd-, file- or anonymous-backed mappings, re-attachable from preserved fds. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/blocker.h>

#include "channel/scm.h"
#include "core/ctx.h"
#include "core/error.h"
#include "core/slot.h"
#include "handover/fd.h"
#include "handover/ram.h"
#include "handover/teardown.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* MFD_HUGE_* and MAP_HUGE_* share one encoding: log2(page size) << 26. */
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

struct cpr_ram_block {
    cpr_ctx *ctx;
    char *name;
    uint64_t size;
    uint64_t page_size;
    void *host;
    int fd; /* -1 for private memory, and while mapped from a file (atomic: read by any thread) */
    int reattached;
    int memfd; /* the fd is the library's own memfd (not the VMM's file, nor a preserved fd) */
    /* memory-restore-mode mapped (cpr_ram_block_map_file): the file the memory is a private
     * mapping of, the block's own memory (its fd, or -1) kept until the block is freed, and
     * the blocker of the modes that would hand that fd over as if it held the guest's RAM. */
    char *mapped_file;
    int map_committed; /* the restore that mapped it committed: no abort undoes it any more */
    int own_fd;
    cpr_blocker *map_blocker;
    uint64_t dirty_pages;
    uint64_t *dirty; /* (dirty_pages + 63) / 64 words, updated atomically */
};

/* A block received in the cpr state, waiting for the VMM to create it. */
typedef struct pending_block {
    uint64_t size;
    uint64_t page_size;
    int fd;
} pending_block;

typedef struct ram_table {
    GMutex lock;
    GPtrArray *blocks;   /* cpr_ram_block *, creation order */
    GHashTable *pending; /* name -> pending_block * */
} ram_table;

static void pending_free(void *p)
{
    pending_block *pb = p;
    if (pb->fd >= 0) /* -1 once a block re-attached it */
        close(pb->fd);
    g_free(pb);
}

static void block_release(cpr_ram_block *b)
{
    /* With a teardown helper holding the address space, the exec or exit that follows unmaps
     * the block in the helper; an munmap here would pay that cost inside the guest's pause. */
    if (b->host && !cpr_teardown_held(b->ctx))
        munmap(b->host, b->size);
    if (b->fd >= 0)
        close(b->fd);
    if (b->mapped_file) {
        if (b->own_fd >= 0)
            close(b->own_fd);
        cpr_blocker_del(b->ctx, b->map_blocker);
        g_free(b->mapped_file);
    }
    g_free(b->dirty);
    g_free(b->name);
    g_free(b);
}

static void table_free(void *p)
{
    ram_table *t = p;
    for (guint i = 0; i < t->blocks->len; i++)
        block_release(t->blocks->pdata[i]);
    g_ptr_array_free(t->blocks, TRUE);
    g_hash_table_destroy(t->pending);
    g_mutex_clear(&t->lock);
    g_free(t);
}

static void *table_new(void)
{
    ram_table *t = g_new0(ram_table, 1);
    g_mutex_init(&t->lock);
    t->blocks = g_ptr_array_new();
    t->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, pending_free);
    return t;
}

static ram_table *table_get(cpr_ctx *ctx)
{
    return cpr_ctx_slot_get_or_create(ctx, CPR_SLOT_RAM, table_new, table_free);
}

static cpr_ram_block *find_locked(ram_table *t, const char *name)
{
    for (guint i = 0; i < t->blocks->len; i++) {
        cpr_ram_block *b = t->blocks->pdata[i];
        if (!strcmp(b->name, name))
            return b;
    }
    return NULL;
}

uint64_t cpr_ram_fd_page_size(int fd)
{
    struct statfs sfs;
    if (fstatfs(fd, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC)
        return (uint64_t)sfs.f_bsize;
    return (uint64_t)sysconf(_SC_PAGESIZE);
}

int cpr_ram_block_write(const cpr_ram_block *b, uint64_t off, const void *src, size_t len)
{
    int fd = cpr_ram_block_fd(b);
    if (fd < 0 || !cpr_ram_block_shared(b) || cpr_ram_block_page_size(b) != (uint64_t)sysconf(_SC_PAGESIZE)) {
        memcpy((uint8_t *)cpr_ram_block_host(b) + off, src, len);
        return 0;
    }
    return cpr_io_pwrite_all(fd, src, len, off);
}

/* Accepts the system page size, or a huge page size this kernel offers; returns the MFD_HUGE* bits. */
static int check_page_size(const char *name, uint64_t page_size, unsigned int *mfd_flags,
                           cpr_error **errp)
{
    uint64_t sys = (uint64_t)sysconf(_SC_PAGESIZE);
    *mfd_flags = 0;
    if (page_size == sys)
        return 0;
    if (page_size < sys || (page_size & (page_size - 1)))
        return cpr_error_set(errp, -EINVAL, "ram block '%s': page size %" G_GUINT64_FORMAT
                             " is neither %" G_GUINT64_FORMAT " nor a huge page size",
                             name, page_size, sys);
    g_autofree char *dir = g_strdup_printf("/sys/kernel/mm/hugepages/hugepages-%" G_GUINT64_FORMAT "kB",
                                           page_size / 1024);
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR))
        return cpr_error_set(errp, -EINVAL, "ram block '%s': this host has no %" G_GUINT64_FORMAT
                             " KiB huge pages (%s is missing)", name, page_size / 1024, dir);
    *mfd_flags = MFD_HUGETLB | ((unsigned int)__builtin_ctzll(page_size) << MAP_HUGE_SHIFT);
    return 0;
}

static int map_error(const char *name, uint64_t page_size, int err, cpr_error **errp)
{
    if (err == ENOMEM && page_size != (uint64_t)sysconf(_SC_PAGESIZE))
        return cpr_error_set(errp, -ENOMEM, "ram block '%s': cannot map %" G_GUINT64_FORMAT
                             "-byte huge pages: not enough free (see /proc/sys/vm/nr_hugepages)",
                             name, page_size);
    return cpr_error_set_errno(errp, -err, "ram block '%s': mmap failed", name);
}

static cpr_ram_block *block_alloc(cpr_ctx *ctx, const char *name, uint64_t size, uint64_t page_size)
{
    cpr_ram_block *b = g_new0(cpr_ram_block, 1);
    b->ctx = ctx;
    b->name = g_strdup(name);
    b->size = size;
    b->page_size = page_size;
    b->fd = -1;
    b->own_fd = -1;
    b->dirty_pages = (size + CPR_RAM_DIRTY_PAGE_SIZE - 1) / CPR_RAM_DIRTY_PAGE_SIZE;
    b->dirty = g_new0(uint64_t, (b->dirty_pages + 63) / 64);
    return b;
}

static int map_shared(cpr_ram_block *b, int fd, uint32_t flags, cpr_error **errp)
{
    int mflags = MAP_SHARED | ((flags & CPR_RAM_PREFAULT) ? MAP_POPULATE : 0);
    void *p = mmap(NULL, b->size, PROT_READ | PROT_WRITE, mflags, fd, 0);
    if (p == MAP_FAILED)
        return map_error(b->name, b->page_size, errno, errp);
    b->host = p;
    b->fd = fd;
    return 0;
}

/* Re-attaches a received block under the table lock; 1 when there was none to re-attach. */
static int reattach_locked(ram_table *t, cpr_ram_block *b, uint32_t flags, cpr_error **errp)
{
    pending_block *pb = g_hash_table_lookup(t->pending, b->name);
    if (!pb)
        return 1;
    if (flags & CPR_RAM_PRIVATE)
        return cpr_error_set(errp, -EINVAL, "ram block '%s' was preserved by the old process but "
                             "is requested as private memory", b->name);
    if (pb->size != b->size)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': size %" G_GUINT64_FORMAT
                             " in the cpr state, %" G_GUINT64_FORMAT " requested",
                             b->name, pb->size, b->size);
    if (pb->page_size != b->page_size)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': page size %" G_GUINT64_FORMAT
                             " in the cpr state, %" G_GUINT64_FORMAT " requested",
                             b->name, pb->page_size, b->page_size);
    int ret = map_shared(b, pb->fd, flags, errp);
    if (ret < 0) {
        b->fd = -1;
        return ret;
    }
    pb->fd = -1; /* the block owns it now */
    g_hash_table_remove(t->pending, b->name);
    b->reattached = 1;
    return 0;
}

static int create_memory(cpr_ram_block *b, const char *path, unsigned int mfd_flags, uint32_t flags,
                         cpr_error **errp)
{
    if (flags & CPR_RAM_PRIVATE) {
        int mflags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                     ((flags & CPR_RAM_PREFAULT) ? MAP_POPULATE : 0);
        if (mfd_flags)
            mflags |= MAP_HUGETLB | (int)(mfd_flags & ~MFD_HUGETLB);
        void *p = mmap(NULL, b->size, PROT_READ | PROT_WRITE, mflags, -1, 0);
        if (p == MAP_FAILED)
            return map_error(b->name, b->page_size, errno, errp);
        b->host = p;
        return 0;
    }
    int fd;
    if (path) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return cpr_error_set_errno(errp, -errno, "ram block '%s': cannot open %s", b->name, path);
    } else {
        /* memfd names are limited to 249 bytes; the name is for /proc only. */
        g_autofree char *mname = g_strdup_printf("cpr:%.200s", b->name);
        fd = memfd_create(mname, MFD_CLOEXEC | mfd_flags);
        if (fd < 0)
            return cpr_error_set_errno(errp, -errno, "ram block '%s': memfd_create failed", b->name);
        b->memfd = 1;
    }
    struct stat st;
    int ret = 0;
    if (fstat(fd, &st) < 0)
        ret = cpr_error_set_errno(errp, -errno, "ram block '%s': fstat failed", b->name);
    else if ((uint64_t)st.st_size < b->size && ftruncate(fd, (off_t)b->size) < 0)
        ret = cpr_error_set_errno(errp, -errno, "ram block '%s': cannot size %s to %" G_GUINT64_FORMAT
                                  " bytes", b->name, path ? path : "memfd", b->size);
    if (!ret)
        ret = map_shared(b, fd, flags, errp);
    if (ret < 0) {
        close(fd);
        b->fd = -1;
    }
    return ret;
}

static int block_new(cpr_ctx *ctx, const char *name, const char *path, uint64_t size,
                     uint64_t page_size, uint32_t flags, cpr_ram_block **out, cpr_error **errp)
{
    if (!ctx || !name || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_ram_block_new: ctx, name or out is NULL");
    int ret = cpr_name_check(name, strlen(name), "ram block", errp);
    if (ret < 0)
        return ret;
    if (flags & ~(CPR_RAM_PRIVATE | CPR_RAM_PREFAULT | CPR_RAM_REATTACH_ONLY))
        return cpr_error_set(errp, -EINVAL, "ram block '%s': unknown flags 0x%x", name, flags);
    unsigned int mfd_flags = 0;
    if (!path && (ret = check_page_size(name, page_size, &mfd_flags, errp)) < 0)
        return ret;
    if (!size || size % page_size)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': size %" G_GUINT64_FORMAT
                             " is not a non-zero multiple of the page size %" G_GUINT64_FORMAT,
                             name, size, page_size);

    ram_table *t = table_get(ctx);
    cpr_ram_block *b = block_alloc(ctx, name, size, page_size);
    g_mutex_lock(&t->lock);
    if (find_locked(t, name)) {
        ret = cpr_error_set(errp, -EEXIST, "ram block '%s' already exists", name);
    } else {
        ret = reattach_locked(t, b, flags, errp);
        if (ret == 1 && (flags & CPR_RAM_REATTACH_ONLY))
            ret = cpr_error_set(errp, -ENOENT, "ram block '%s' is not in the cpr state", name);
        else if (ret == 1)
            ret = create_memory(b, path, mfd_flags, flags, errp);
        if (!ret)
            g_ptr_array_add(t->blocks, b);
    }
    g_mutex_unlock(&t->lock);
    if (ret < 0) {
        block_release(b);
        return ret;
    }
    *out = b;
    return 0;
}

CPR_API int cpr_ram_block_new(cpr_ctx *ctx, const char *name, uint64_t size, uint64_t page_size,
                              uint32_t flags, cpr_ram_block **out, cpr_error **errp)
{
    return block_new(ctx, name, NULL, size, page_size, flags, out, errp);
}

CPR_API int cpr_ram_block_new_file(cpr_ctx *ctx, const char *name, const char *path,
                                   uint64_t size, uint32_t flags, cpr_ram_block **out,
                                   cpr_error **errp)
{
    if (!path)
        return cpr_error_set(errp, -EINVAL, "cpr_ram_block_new_file: path is NULL");
    if (flags & CPR_RAM_PRIVATE)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': a file-backed block cannot be private",
                             name ? name : "(null)");
    /* The page size is the file system's: ask the directory the file lives in. */
    g_autofree char *dir = g_path_get_dirname(path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return cpr_error_set_errno(errp, -errno, "ram block '%s': cannot open directory %s",
                                   name ? name : "(null)", dir);
    uint64_t page_size = cpr_ram_fd_page_size(dfd);
    close(dfd);
    return block_new(ctx, name, path, size, page_size, flags, out, errp);
}

CPR_API void cpr_ram_block_free(cpr_ram_block *b)
{
    if (!b)
        return;
    ram_table *t = table_get(b->ctx);
    g_mutex_lock(&t->lock);
    g_ptr_array_remove(t->blocks, b);
    g_mutex_unlock(&t->lock);
    block_release(b);
}

CPR_API cpr_ram_block *cpr_ram_block_find(cpr_ctx *ctx, const char *name)
{
    if (!ctx || !name)
        return NULL;
    ram_table *t = table_get(ctx);
    g_mutex_lock(&t->lock);
    cpr_ram_block *b = find_locked(t, name);
    g_mutex_unlock(&t->lock);
    return b;
}

CPR_API size_t cpr_ram_block_count(cpr_ctx *ctx)
{
    if (!ctx)
        return 0;
    ram_table *t = table_get(ctx);
    g_mutex_lock(&t->lock);
    size_t n = t->blocks->len;
    g_mutex_unlock(&t->lock);
    return n;
}

CPR_API int cpr_ram_block_foreach(cpr_ctx *ctx, cpr_ram_block_fn fn, void *opaque)
{
    if (!ctx || !fn)
        return -EINVAL;
    ram_table *t = table_get(ctx);
    /* Walk a copy so that fn may call accessors and find without deadlocking. */
    g_mutex_lock(&t->lock);
    g_autoptr(GPtrArray) copy = g_ptr_array_copy(t->blocks, NULL, NULL);
    g_mutex_unlock(&t->lock);
    int ret = 0;
    for (guint i = 0; i < copy->len && !ret; i++)
        ret = fn(copy->pdata[i], opaque);
    return ret;
}

int cpr_ram_incoming_add(cpr_ctx *ctx, const char *name, uint64_t size, uint64_t page_size,
                         int fd, cpr_error **errp)
{
    ram_table *t = table_get(ctx);
    int ret = 0;
    g_mutex_lock(&t->lock);
    if (find_locked(t, name) || g_hash_table_contains(t->pending, name)) {
        ret = cpr_error_set(errp, -EEXIST, "cpr state: ram block '%s' is listed twice or already exists",
                            name);
    } else {
        pending_block *pb = g_new0(pending_block, 1);
        pb->size = size;
        pb->page_size = page_size;
        pb->fd = fd;
        g_hash_table_insert(t->pending, g_strdup(name), pb);
    }
    g_mutex_unlock(&t->lock);
    return ret;
}

int cpr_ram_name_taken(cpr_ctx *ctx, const char *name)
{
    ram_table *t = table_get(ctx);
    g_mutex_lock(&t->lock);
    int taken = find_locked(t, name) || g_hash_table_contains(t->pending, name);
    g_mutex_unlock(&t->lock);
    return taken;
}

int cpr_ram_incoming_close(cpr_ctx *ctx)
{
    ram_table *t = table_get(ctx);
    g_mutex_lock(&t->lock);
    int n = (int)g_hash_table_size(t->pending);
    g_hash_table_remove_all(t->pending);
    g_mutex_unlock(&t->lock);
    return n;
}

CPR_API int cpr_ram_close_unattached(cpr_ctx *ctx)
{
    return ctx ? cpr_ram_incoming_close(ctx) : 0;
}

CPR_API const char *cpr_ram_block_name(const cpr_ram_block *b)
{
    return b ? b->name : NULL;
}

CPR_API void *cpr_ram_block_host(const cpr_ram_block *b)
{
    return b ? b->host : NULL;
}

CPR_API uint64_t cpr_ram_block_size(const cpr_ram_block *b)
{
    return b ? b->size : 0;
}

CPR_API uint64_t cpr_ram_block_page_size(const cpr_ram_block *b)
{
    return b ? b->page_size : 0;
}

CPR_API int cpr_ram_block_fd(const cpr_ram_block *b)
{
    return b ? __atomic_load_n(&b->fd, __ATOMIC_ACQUIRE) : -1;
}

CPR_API int cpr_ram_block_shared(const cpr_ram_block *b)
{
    return cpr_ram_block_fd(b) >= 0;
}

CPR_API int cpr_ram_block_reattached(const cpr_ram_block *b)
{
    return b ? b->reattached : 0;
}

CPR_API int cpr_ram_block_prefault(cpr_ram_block *b, cpr_error **errp)
{
    if (!b)
        return cpr_error_set(errp, -EINVAL, "cpr_ram_block_prefault: block is NULL");
    if (madvise(b->host, b->size, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL)
        return cpr_error_set_errno(errp, -errno, "ram block '%s': prefault failed", b->name);
    /* Kernels before 5.14: touch each page with an atomic add of 0, which cannot lose a
     * concurrent write by the old process that still runs the guest. */
    for (uint64_t off = 0; off < b->size; off += b->page_size)
        __atomic_fetch_add((uint8_t *)b->host + off, 0, __ATOMIC_RELAXED);
    return 0;
}

CPR_API uint64_t cpr_ram_dirty_pages(const cpr_ram_block *b)
{
    return b ? b->dirty_pages : 0;
}

/* Sets bits [first, first + n) with one atomic OR per word. */
static void dirty_set_bits(cpr_ram_block *b, uint64_t first, uint64_t n)
{
    while (n) {
        uint64_t w = first / 64, bit = first % 64;
        uint64_t take = MIN(n, 64 - bit);
        uint64_t mask = (take == 64 ? ~0ull : ((1ull << take) - 1)) << bit;
        __atomic_fetch_or(&b->dirty[w], mask, __ATOMIC_RELAXED);
        first += take;
        n -= take;
    }
}

CPR_API int cpr_ram_dirty_set(cpr_ram_block *b, uint64_t offset, uint64_t len, cpr_error **errp)
{
    if (!b)
        return cpr_error_set(errp, -EINVAL, "cpr_ram_dirty_set: block is NULL");
    if (offset > b->size || len > b->size - offset)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': dirty range %" G_GUINT64_FORMAT "+%"
                             G_GUINT64_FORMAT " is outside its %" G_GUINT64_FORMAT " bytes",
                             b->name, offset, len, b->size);
    if (!len)
        return 0;
    uint64_t first = offset / CPR_RAM_DIRTY_PAGE_SIZE;
    uint64_t last = (offset + len - 1) / CPR_RAM_DIRTY_PAGE_SIZE;
    dirty_set_bits(b, first, last - first + 1);
    return 0;
}

CPR_API void cpr_ram_dirty_set_all(cpr_ram_block *b)
{
    if (b)
        dirty_set_bits(b, 0, b->dirty_pages);
}

CPR_API int cpr_ram_dirty_merge(cpr_ram_block *b, uint64_t first_page, const uint64_t *bitmap,
                                uint64_t npages, cpr_error **errp)
{
    if (!b || (!bitmap && npages))
        return cpr_error_set(errp, -EINVAL, "cpr_ram_dirty_merge: block or bitmap is NULL");
    if (first_page > b->dirty_pages || npages > b->dirty_pages - first_page)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': dirty pages %" G_GUINT64_FORMAT "+%"
                             G_GUINT64_FORMAT " are outside its %" G_GUINT64_FORMAT " pages",
                             b->name, first_page, npages, b->dirty_pages);
    for (uint64_t i = 0; i < npages; i += 64) {
        uint64_t word = bitmap[i / 64];
        uint64_t take = MIN(64, npages - i);
        if (take < 64)
            word &= (1ull << take) - 1;
        if (!word)
            continue;
        uint64_t dst = first_page + i;
        if (dst % 64 == 0) {
            __atomic_fetch_or(&b->dirty[dst / 64], word, __ATOMIC_RELAXED);
            continue;
        }
        /* Unaligned: the word straddles two destination words. */
        unsigned int sh = dst % 64;
        __atomic_fetch_or(&b->dirty[dst / 64], word << sh, __ATOMIC_RELAXED);
        uint64_t hi = word >> (64 - sh);
        if (hi)
            __atomic_fetch_or(&b->dirty[dst / 64 + 1], hi, __ATOMIC_RELAXED);
    }
    return 0;
}

CPR_API int64_t cpr_ram_dirty_fetch_clear(cpr_ram_block *b, uint64_t *out, uint64_t out_words,
                                          cpr_error **errp)
{
    if (!b || !out)
        return cpr_error_set(errp, -EINVAL, "cpr_ram_dirty_fetch_clear: block or out is NULL");
    uint64_t words = (b->dirty_pages + 63) / 64;
    if (out_words < words)
        return cpr_error_set(errp, -EINVAL, "ram block '%s': dirty bitmap needs %" G_GUINT64_FORMAT
                             " words, got %" G_GUINT64_FORMAT, b->name, words, out_words);
    int64_t count = 0;
    for (uint64_t w = 0; w < words; w++) {
        /* A plain load first: most words are clean, and an exchange dirties the cache line. */
        uint64_t v = __atomic_load_n(&b->dirty[w], __ATOMIC_RELAXED);
        if (v)
            v = __atomic_exchange_n(&b->dirty[w], 0, __ATOMIC_ACQ_REL);
        out[w] = v;
        count += __builtin_popcountll(v);
    }
    return count;
}

CPR_API int cpr_ram_dirty_test(const cpr_ram_block *b, uint64_t page)
{
    if (!b || page >= b->dirty_pages)
        return 0;
    return (__atomic_load_n(&b->dirty[page / 64], __ATOMIC_RELAXED) >> (page % 64)) & 1;
}

CPR_API uint64_t cpr_ram_dirty_count(const cpr_ram_block *b)
{
    if (!b)
        return 0;
    uint64_t n = 0;
    for (uint64_t w = 0; w < (b->dirty_pages + 63) / 64; w++)
        n += __builtin_popcountll(__atomic_load_n(&b->dirty[w], __ATOMIC_RELAXED));
    return n;
}

/* ---- memory-restore-mode mapped ---------------------------------------------------------- */

int cpr_ram_block_map_file(cpr_ram_block *b, int fd, uint64_t offset, const char *file, cpr_error **errp)
{
    if (b->mapped_file)
        return cpr_error_set(errp, -EBUSY, "ram block '%s' is mapped from '%s' already", b->name, b->mapped_file);
    g_autofree char *why = g_strdup_printf("RAM block '%s' is a private mapping of the file '%s' "
                                           "(memory-restore-mode mapped): the guest's RAM is in no memfd "
                                           "that could be handed over", b->name, file);
    cpr_blocker *blocker;
    int ret = cpr_blocker_add(b->ctx, CPR_MODE_BIT(CPR_MODE_CPR_TRANSFER) | CPR_MODE_BIT(CPR_MODE_CPR_EXEC), why,
                              &blocker, errp);
    if (ret < 0)
        return ret;
    /* MAP_FIXED over the block's own range: the VMM's pointer (and a KVM memory slot on it)
     * stays valid; the kernel drops the old pages' mappings. */
    void *p = mmap(b->host, b->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
                   (off_t)offset);
    if (p == MAP_FAILED) {
        ret = cpr_error_set_errno(errp, -errno, "memory-restore-mode mapped: RAM block '%s': mmap of '%s' at "
                                  "offset %" G_GUINT64_FORMAT " failed", b->name, file, offset);
        cpr_blocker_del(b->ctx, blocker);
        return ret;
    }
    b->own_fd = b->fd;
    b->map_blocker = blocker;
    b->mapped_file = g_strdup(file);
    b->map_committed = 0;
    __atomic_store_n(&b->fd, -1, __ATOMIC_RELEASE);
    /* The block's own memory is kept as it is: an abort before the commit maps it back. */
    return 0;
}

void cpr_ram_block_map_commit(cpr_ram_block *b)
{
    if (!b->mapped_file || b->map_committed)
        return;
    b->map_committed = 1;
    /* Its own pages are no longer the guest's: a memfd, the library's alone, gives their
     * memory back. A file the VMM named keeps its contents: it is the VMM's. */
    if (b->memfd && b->own_fd >= 0)
        (void)fallocate(b->own_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)b->size);
}

int cpr_ram_block_map_uncommitted(const cpr_ram_block *b)
{
    return b->mapped_file && !b->map_committed;
}

int cpr_ram_block_unmap_file(cpr_ram_block *b, cpr_error **errp)
{
    if (!b->mapped_file)
        return 0;
    int shared = b->own_fd >= 0;
    void *p = mmap(b->host, b->size, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_NORESERVE | (shared ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS),
                   shared ? b->own_fd : -1, 0);
    if (p == MAP_FAILED)
        return cpr_error_set_errno(errp, -errno, "ram block '%s': mapping its own memory back over '%s'",
                                   b->name, b->mapped_file);
    __atomic_store_n(&b->fd, b->own_fd, __ATOMIC_RELEASE);
    b->own_fd = -1;
    cpr_blocker_del(b->ctx, b->map_blocker);
    b->map_blocker = NULL;
    g_free(b->mapped_file);
    b->mapped_file = NULL;
    return 0;
}

const char *cpr_ram_block_mapped_file(const cpr_ram_block *b)
{
    return b->mapped_file;
}
