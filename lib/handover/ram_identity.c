/* SPDX-License-Identifier: MIT */
/*
 * Proof that RAM the stream did not carry is the RAM that was saved. The saver records, for
 * each block it leaves in place, which object backs it and the checksum of a few sampled
 * pages, with the guest stopped; the loader compares both with the block it has. A restarted
 * VMM that mapped fresh memory (a memfd gone with the old process), another file, or a file
 * zeroed or rewritten since the save is refused instead of running its guest on that memory.
 * Layout: docs/format.md, section 6.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "handover/ram_identity.h"

#define PAGE CPR_RAM_DIRTY_PAGE_SIZE

enum backing {
    BACKING_FILE = 1,     /* a file with a name: same inode */
    BACKING_UNNAMED = 2,  /* a memfd or unlinked file, handed over by fd: same device and inode */
    BACKING_DEVICE = 3,   /* a device node (DAX): same device number */
};

enum { SAMPLE_HOLE = 0, SAMPLE_DATA = 1 };

struct identity {
    uint8_t backing;
    uint64_t dev, ino;
};

static const char *const backing_names[] = { "?", "a named file", "a memfd or deleted file", "a device node" };

static int block_identity(const cpr_ram_block *b, struct identity *id, cpr_error **errp)
{
    struct stat st;
    if (fstat(cpr_ram_block_fd(b), &st) < 0)
        return cpr_error_set_errno(errp, -errno, "RAM block '%s': fstat", cpr_ram_block_name(b));
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
        *id = (struct identity){ BACKING_DEVICE, st.st_rdev, 0 };
    else
        *id = (struct identity){ st.st_nlink ? BACKING_FILE : BACKING_UNNAMED, st.st_dev, st.st_ino };
    return 0;
}

/* Whether page p of b is a hole of its fd: memory never written, which reads as zero and must
 * not be touched (reading a hole of shared memory would allocate it). */
static int page_is_hole(const cpr_ram_block *b, uint64_t p)
{
    off_t off = (off_t)(p * PAGE);
    off_t data = lseek(cpr_ram_block_fd(b), off, SEEK_DATA);
    return (data < 0 && errno == ENXIO) || data > off;
}

/* The CRC32C of page p as the guest sees it: a hole counts as zeros, without being read. */
static uint32_t page_crc(const cpr_ram_block *b, uint64_t p, int hole)
{
    static const uint8_t zero[PAGE];
    const uint8_t *host = cpr_ram_block_host(b);
    uint64_t len = MIN((uint64_t)PAGE, cpr_ram_block_size(b) - p * PAGE);
    return cpr_crc32c(0, hole ? zero : host + p * PAGE, (size_t)len);
}

/* The page sampled in the i-th of CPR_RAM_IDENTITY_SAMPLES equal stretches of the block: its
 * first page with data (what a swapped or zeroed file would differ in), else its first page. */
static uint64_t sample_page(const cpr_ram_block *b, unsigned int i, int *hole)
{
    uint64_t pages = cpr_ram_dirty_pages(b);
    uint64_t first = pages * i / CPR_RAM_IDENTITY_SAMPLES;
    /* Never empty: a hole is recorded only where data starts past the stretch's first page. */
    uint64_t end = MAX(pages * (i + 1) / CPR_RAM_IDENTITY_SAMPLES, first + 1);
    off_t data = lseek(cpr_ram_block_fd(b), (off_t)(first * PAGE), SEEK_DATA);
    if (data < 0 && errno != ENXIO) {
        *hole = 0; /* a backing that cannot tell: read the page */
        return first;
    }
    if (data >= 0 && (uint64_t)data / PAGE < end) {
        *hole = 0;
        return (uint64_t)data / PAGE;
    }
    *hole = 1;
    return first;
}

static int put_block(cpr_stream *s, const cpr_ram_block *b, cpr_error **errp)
{
    struct identity id;
    int ret = block_identity(b, &id, errp);
    const char *name = cpr_ram_block_name(b);
    uint64_t pages = cpr_ram_dirty_pages(b);
    /* A memfd handed over by fd is the very object the loader maps (same device and inode
     * while the saver holds it): its pages need no sampling, which keeps cpr-transfer's and
     * cpr-exec's pause at one fstat per block. */
    uint8_t n = id.backing == BACKING_UNNAMED ? 0 : (uint8_t)MIN((uint64_t)CPR_RAM_IDENTITY_SAMPLES, pages);
    if (ret < 0 || (ret = cpr_stream_put_u16(s, (uint16_t)strlen(name), errp)) < 0 ||
        (ret = cpr_stream_put_bytes(s, name, strlen(name), errp)) < 0 ||
        (ret = cpr_stream_put_u64(s, cpr_ram_block_size(b), errp)) < 0 ||
        (ret = cpr_stream_put_u8(s, id.backing, errp)) < 0 || (ret = cpr_stream_put_u64(s, id.dev, errp)) < 0 ||
        (ret = cpr_stream_put_u64(s, id.ino, errp)) < 0 || (ret = cpr_stream_put_u8(s, n, errp)) < 0)
        return ret;
    for (unsigned int i = 0; i < n; i++) {
        int hole;
        uint64_t p = sample_page(b, i * CPR_RAM_IDENTITY_SAMPLES / n, &hole);
        if ((ret = cpr_stream_put_u64(s, p, errp)) < 0 ||
            (ret = cpr_stream_put_u8(s, hole ? SAMPLE_HOLE : SAMPLE_DATA, errp)) < 0 ||
            (ret = cpr_stream_put_u32(s, hole ? 0 : page_crc(b, p, 0), errp)) < 0)
            return ret;
    }
    return 0;
}

int cpr_ram_identity_put(cpr_stream *s, const GPtrArray *kept, cpr_error **errp)
{
    int ret = cpr_stream_put_u32(s, kept ? kept->len : 0, errp);
    for (guint i = 0; ret == 0 && kept && i < kept->len; i++)
        ret = put_block(s, g_ptr_array_index(kept, i), errp);
    return ret;
}

/* ---- load ---- */

static int stale(cpr_error **errp, const char *name, const char *what)
{
    return cpr_error_set(errp, -ESTALE, "RAM block '%s' was left in place by the saver, but %s: its memory "
                         "is not the memory that was saved (refusing to run the guest on it)", name, what);
}

static int check_samples(cpr_stream *s, const cpr_ram_block *b, uint8_t n, cpr_error **errp)
{
    const char *name = cpr_ram_block_name(b);
    uint64_t pages = cpr_ram_dirty_pages(b);
    for (unsigned int i = 0; i < n; i++) {
        uint64_t p;
        uint8_t kind;
        uint32_t crc;
        int ret;
        if ((ret = cpr_stream_get_u64(s, &p, errp)) < 0 || (ret = cpr_stream_get_u8(s, &kind, errp)) < 0 ||
            (ret = cpr_stream_get_u32(s, &crc, errp)) < 0)
            return ret;
        if (p >= pages || kind > SAMPLE_DATA)
            return cpr_error_set(errp, -EBADMSG, "ram-identity: bad sample (page %" PRIu64 ", kind %u) for RAM "
                                 "block '%s' of %" PRIu64 " pages", p, kind, name, pages);
        uint32_t saved = kind == SAMPLE_HOLE ? page_crc(b, p, 1) : crc;
        if (page_crc(b, p, page_is_hole(b, p)) != saved) {
            g_autofree char *what = g_strdup_printf("its page %" PRIu64 " differs from the saved page", p);
            return stale(errp, name, what);
        }
    }
    return 0;
}

static int check_block(cpr_stream *s, cpr_ctx *ctx, cpr_error **errp)
{
    char name[CPR_RAM_NAME_MAX + 1];
    uint16_t len;
    uint64_t size;
    struct identity saved;
    uint8_t n;
    int ret = cpr_stream_get_u16(s, &len, errp);
    if (ret == 0 && (len == 0 || len > CPR_RAM_NAME_MAX))
        return cpr_error_set(errp, -EBADMSG, "ram-identity: block name length %u out of range", len);
    if (ret < 0 || (ret = cpr_stream_get_bytes(s, name, len, errp)) < 0)
        return ret;
    name[len] = '\0';
    if ((ret = cpr_stream_get_u64(s, &size, errp)) < 0 || (ret = cpr_stream_get_u8(s, &saved.backing, errp)) < 0 ||
        (ret = cpr_stream_get_u64(s, &saved.dev, errp)) < 0 || (ret = cpr_stream_get_u64(s, &saved.ino, errp)) < 0 ||
        (ret = cpr_stream_get_u8(s, &n, errp)) < 0)
        return ret;
    if (saved.backing < BACKING_FILE || saved.backing > BACKING_DEVICE)
        return cpr_error_set(errp, -EBADMSG, "ram-identity: unknown backing %u for RAM block '%s'", saved.backing, name);
    cpr_ram_block *b = cpr_ram_block_find(ctx, name);
    if (!b)
        return stale(errp, name, "this process has no block of that name");
    if (cpr_ram_block_size(b) != size)
        return stale(errp, name, "its size differs");
    if (!cpr_ram_block_shared(b))
        return stale(errp, name, "it is private memory here");
    struct identity mine;
    if ((ret = block_identity(b, &mine, errp)) < 0)
        return ret;
    if (mine.backing != saved.backing) {
        g_autofree char *what = g_strdup_printf("it was %s and is %s here", backing_names[saved.backing],
                                                backing_names[mine.backing]);
        return stale(errp, name, what);
    }
    /* A named file's device number may change across a reboot (btrfs, device mapper): its
     * inode and contents tell. A memfd handed over by fd is the very same object. */
    int same = saved.backing == BACKING_FILE ? mine.ino == saved.ino : mine.dev == saved.dev && mine.ino == saved.ino;
    if (!same)
        return stale(errp, name, saved.backing == BACKING_DEVICE ? "it is another device"
                                                                  : "its backing file was replaced or recreated");
    return check_samples(s, b, n, errp);
}

int cpr_ram_identity_check(cpr_stream *s, cpr_ctx *ctx, cpr_error **errp)
{
    uint32_t n;
    int ret = cpr_stream_get_u32(s, &n, errp);
    for (uint32_t i = 0; ret == 0 && i < n; i++)
        ret = check_block(s, ctx, errp);
    return ret;
}
