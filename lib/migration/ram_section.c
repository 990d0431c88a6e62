/* SPDX-License-Identifier: MIT */
/* The "ram" progressive section: guest RAM pages by dirty bitmap, zero pages without data;
 * below, the same section as the migration engine registers and drives it. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/mode.h>
#include <cpr/ram.h>
#include <cpr/savevm.h>
#include <cpr/vmstate.h>

#include "core/error.h"
#include "format/stream.h"
#include "handover/ram.h"
#include "handover/ram_identity.h"
#include "core/params.h"
#include "format/savevm.h"
#include "migration/main_channel.h"
#include "migration/lazy_restore.h"
#include "migration/map_restore.h"
#include "migration/mapped_ram.h"
#include "migration/multifd.h"
#include "migration/ram_section.h"

#define PAGE CPR_RAM_DIRTY_PAGE_SIZE
/* Pages per entry: bounds one entry to 1 MiB of data and keeps runs cheap to find. */
#define RUN_MAX 256u

struct ram_blk {
    cpr_ram_block *block;
    uint32_t idx;   /* in the block table */
    uint64_t pages;
    uint64_t words;
    uint64_t *bmap; /* pages of the current pass still to send */
    uint64_t *tmp;  /* scratch for fetch-and-clear */
};

struct cpr_ram_save {
    cpr_ctx *ctx;
    cpr_mode mode;
    int ignore_shared;
    GArray *blks;       /* struct ram_blk, sent blocks only */
    GPtrArray *table;   /* cpr_ram_block *, every block, with sent flag in `sent` */
    GArray *sent;       /* uint8_t per table entry */
    size_t cur;         /* block of the cursor */
    uint64_t cursor;    /* next page to look at in that block */
    uint64_t pass_left; /* pages of the current pass not yet sent */
    int postcopy;       /* the pass's pages go as DISCARD entries (postcopy) */
    struct cpr_ram_stats st;
    struct cpr_multifd_send *mfd; /* data pages go there, when set */
    cpr_mr_save *mapped; /* mapped-ram: pages go to the file's regions, not records */
    int ack_passes;          /* a pass that runs out ends with a pass-end entry */
    uint32_t acks_requested; /* pass-end entries written */
};

/* Blocks kept in place are not sent: shared memory under x-ignore-shared, and every shared
 * block in the cpr modes that hand the memory itself to the new process. */
static int stays(cpr_mode mode, int ignore_shared, const cpr_ram_block *b)
{
    if (!cpr_ram_block_shared(b))
        return 0;
    return ignore_shared || mode == CPR_MODE_CPR_TRANSFER || mode == CPR_MODE_CPR_EXEC;
}

static int block_stays(const cpr_ram_save *rs, const cpr_ram_block *b)
{
    return stays(rs->mode, rs->ignore_shared, b);
}

/*
 * A block left out of the stream must still hold the guest's memory when the loader maps it.
 * cpr-transfer and cpr-exec hand the fd itself over; every other mode relies on a name in a
 * file system that outlives this process. A memfd or an unlinked file has none (st_nlink 0):
 * it ends with the process, and the loader would map fresh zeroed memory of the same name.
 */
struct outlive_check {
    cpr_mode mode;
    int ignore_shared;
    cpr_error **errp;
};

static int check_outlives(cpr_ram_block *b, void *opaque)
{
    const struct outlive_check *c = opaque;
    if (!stays(c->mode, c->ignore_shared, b) || c->mode == CPR_MODE_CPR_TRANSFER || c->mode == CPR_MODE_CPR_EXEC)
        return 0;
    struct stat st;
    if (fstat(cpr_ram_block_fd(b), &st) < 0)
        return cpr_error_set_errno(c->errp, -errno, "RAM block '%s': fstat of its fd", cpr_ram_block_name(b));
    if (st.st_nlink > 0)
        return 0;
    const char *mode = cpr_mode_name(c->mode);
    return cpr_error_set(c->errp, -EINVAL, "RAM block '%s' would be left out of the %s stream (x-ignore-shared), "
                         "but it is a memfd or a deleted file, which ends with this process: back it with a "
                         "file that stays (share=on), or turn x-ignore-shared off",
                         cpr_ram_block_name(b), mode ? mode : "normal");
}

int cpr_ram_save_check(cpr_ctx *ctx, cpr_mode mode, int ignore_shared, cpr_error **errp)
{
    struct outlive_check c = { mode, ignore_shared, errp };
    return cpr_ram_block_foreach(ctx, check_outlives, &c);
}

static int collect_block(cpr_ram_block *b, void *opaque)
{
    cpr_ram_save *rs = opaque;
    uint8_t sent = !block_stays(rs, b);
    g_ptr_array_add(rs->table, b);
    g_array_append_val(rs->sent, sent);
    if (sent) {
        struct ram_blk blk = { .block = b, .idx = rs->table->len - 1, .pages = cpr_ram_dirty_pages(b) };
        blk.words = (blk.pages + 63) / 64;
        blk.bmap = g_new0(uint64_t, blk.words);
        blk.tmp = g_new0(uint64_t, blk.words);
        g_array_append_val(rs->blks, blk);
        rs->st.total += cpr_ram_block_size(b);
    }
    return 0;
}

int cpr_ram_save_new(cpr_ctx *ctx, cpr_mode mode, int ignore_shared, cpr_ram_save **out)
{
    cpr_ram_save *rs = g_new0(cpr_ram_save, 1);
    rs->ctx = ctx;
    rs->mode = mode;
    rs->ignore_shared = ignore_shared;
    rs->blks = g_array_new(FALSE, TRUE, sizeof(struct ram_blk));
    rs->table = g_ptr_array_new();
    rs->sent = g_array_new(FALSE, TRUE, 1);
    cpr_ram_block_foreach(ctx, collect_block, rs);
    *out = rs;
    return 0;
}

void cpr_ram_save_free(cpr_ram_save *rs)
{
    if (!rs)
        return;
    for (guint i = 0; i < rs->blks->len; i++) {
        struct ram_blk *b = &g_array_index(rs->blks, struct ram_blk, i);
        g_free(b->bmap);
        g_free(b->tmp);
    }
    cpr_mr_save_free(rs->mapped);
    g_array_free(rs->blks, TRUE);
    g_ptr_array_free(rs->table, TRUE);
    g_array_free(rs->sent, TRUE);
    g_free(rs);
}

static int put_name(cpr_stream *s, const char *name, cpr_error **errp)
{
    size_t len = strlen(name);
    int ret = cpr_stream_put_u16(s, (uint16_t)len, errp);
    return ret < 0 ? ret : cpr_stream_put_bytes(s, name, len, errp);
}

int cpr_ram_save_setup(cpr_ram_save *rs, cpr_stream *s, cpr_error **errp)
{
    int ret = cpr_stream_put_u32(s, rs->table->len, errp);
    for (guint i = 0; ret == 0 && i < rs->table->len; i++) {
        cpr_ram_block *b = g_ptr_array_index(rs->table, i);
        if ((ret = put_name(s, cpr_ram_block_name(b), errp)) == 0 &&
            (ret = cpr_stream_put_u64(s, cpr_ram_block_size(b), errp)) == 0)
            ret = cpr_stream_put_u8(s, g_array_index(rs->sent, uint8_t, i), errp);
    }
    /* After the table, so that a loader without multifd refuses the stream here. */
    if (ret == 0 && rs->mfd)
        ret = cpr_multifd_send_put_setup(rs->mfd, s, errp);
    if (ret < 0)
        return ret;
    /* First pass: every page. What the guest dirties from now on is in the blocks' bitmaps,
     * cleared here so that the second pass holds only pages written after this point. */
    for (guint i = 0; i < rs->blks->len; i++) {
        struct ram_blk *b = &g_array_index(rs->blks, struct ram_blk, i);
        cpr_ram_dirty_fetch_clear(b->block, b->tmp, b->words, NULL);
        memset(b->bmap, 0xff, b->words * sizeof(uint64_t));
        if (b->pages % 64)
            b->bmap[b->words - 1] = (UINT64_C(1) << (b->pages % 64)) - 1;
        rs->pass_left += b->pages;
    }
    rs->cur = 0;
    rs->cursor = 0;
    rs->st.passes = 1;
    rs->st.last_pass_dirty = rs->pass_left;
    rs->st.remaining = rs->pass_left * PAGE;
    return 0;
}

int64_t cpr_ram_save_sync(cpr_ram_save *rs, cpr_error **errp)
{
    uint64_t added = 0;
    /* A page of this pass is in the file before the next pass may write it again. */
    int ret = rs->mapped ? cpr_mr_save_barrier(rs->mapped, errp) : 0;
    if (ret < 0)
        return ret;
    for (guint i = 0; i < rs->blks->len; i++) {
        struct ram_blk *b = &g_array_index(rs->blks, struct ram_blk, i);
        int64_t n = cpr_ram_dirty_fetch_clear(b->block, b->tmp, b->words, errp);
        if (n < 0)
            return n;
        if (n == 0)
            continue;
        for (uint64_t w = 0; w < b->words; w++) {
            uint64_t fresh = b->tmp[w] & ~b->bmap[w];
            added += (uint64_t)__builtin_popcountll(fresh);
            b->bmap[w] |= b->tmp[w];
        }
    }
    rs->pass_left += added;
    rs->cur = 0;
    rs->cursor = 0;
    rs->st.passes++;
    rs->st.last_pass_dirty = added;
    rs->st.remaining = rs->pass_left * PAGE;
    return (int64_t)rs->pass_left;
}

unsigned int cpr_ram_save_sent_blocks(const cpr_ram_save *rs)
{
    return rs->blks->len;
}

GPtrArray *cpr_ram_save_kept(const cpr_ram_save *rs)
{
    GPtrArray *kept = g_ptr_array_new();
    for (guint i = 0; i < rs->table->len; i++)
        if (!g_array_index(rs->sent, uint8_t, i))
            g_ptr_array_add(kept, g_ptr_array_index(rs->table, i));
    return kept;
}

uint64_t cpr_ram_save_pending(const cpr_ram_save *rs)
{
    return rs->pass_left * PAGE;
}

void cpr_ram_save_stats(const cpr_ram_save *rs, struct cpr_ram_stats *out)
{
    *out = rs->st;
    out->remaining = rs->pass_left * PAGE;
}

static int page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < PAGE / sizeof(uint64_t); i += 4)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
            return 0;
    return 1;
}

static int bit_test(const uint64_t *map, uint64_t i)
{
    return (map[i / 64] >> (i % 64)) & 1;
}

static void bit_clear(uint64_t *map, uint64_t i)
{
    map[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

/*
 * How many pages from `page` on (at most max) lie in a hole of the block's memfd or file:
 * memory never written, which reads as zero. Knowing it from lseek(SEEK_DATA) avoids touching
 * those pages, which on shared memory would allocate them. 0 when the page holds data or the
 * backing cannot tell (private memory, hugetlbfs).
 */
static uint64_t hole_pages(const cpr_ram_block *b, uint64_t page, uint64_t max)
{
    int fd = cpr_ram_block_fd(b);
    if (fd < 0)
        return 0;
    off_t off = (off_t)(page * PAGE);
    off_t data = lseek(fd, off, SEEK_DATA);
    if (data < 0 && errno == ENXIO)
        data = (off_t)cpr_ram_block_size(b); /* no data after off: a hole to the end */
    if (data <= off)
        return 0;
    return MIN(max, (uint64_t)(data - off) / PAGE);
}

/* The next dirty page at or after `from` in b, or b->pages. */
static uint64_t next_dirty(const struct ram_blk *b, uint64_t from)
{
    uint64_t w = from / 64;
    if (w >= b->words)
        return b->pages;
    uint64_t word = b->bmap[w] & (~UINT64_C(0) << (from % 64));
    while (!word) {
        if (++w >= b->words)
            return b->pages;
        word = b->bmap[w];
    }
    uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(word);
    return page < b->pages ? page : b->pages;
}

void cpr_ram_save_set_multifd(cpr_ram_save *rs, struct cpr_multifd_send *mfd)
{
    rs->mfd = mfd;
}

/* The pass ran out: with multifd, the sync entry that makes the destination wait for it; a
 * single stream the destination acknowledges: the pass-end entry. */
static int pass_done(cpr_ram_save *rs, cpr_stream *s, cpr_error **errp)
{
    int ret;
    if (rs->ack_passes) {
        ret = cpr_stream_put_u8(s, CPR_RAM_ENT_PASS_END, errp);
        return ret < 0 ? ret : cpr_stream_put_u32(s, ++rs->acks_requested, errp);
    }
    if (!rs->mfd || !cpr_multifd_send_unsynced(rs->mfd))
        return 0;
    ret = cpr_stream_put_u8(s, CPR_RAM_ENT_MULTIFD_SYNC, errp);
    return ret < 0 ? ret : cpr_multifd_send_sync(rs->mfd, s, errp);
}

int cpr_ram_save_iterate(cpr_ram_save *rs, cpr_stream *s, uint64_t budget, int stable,
                         cpr_error **errp)
{
    uint64_t start = cpr_stream_offset(s);
    uint64_t queued = 0; /* bytes handed to multifd channels or to the file's regions (mapped-ram) */
    size_t selected = (size_t)-1; /* each record names its block again: records stand alone */
    int ret = 0;
    while (rs->pass_left > 0 && cpr_stream_offset(s) - start + queued < budget) {
        if (rs->cur >= rs->blks->len) {
            /* The bitmap says pages remain but the walk found none: recount, never spin. */
            rs->pass_left = 0;
            break;
        }
        struct ram_blk *b = &g_array_index(rs->blks, struct ram_blk, rs->cur);
        uint64_t p = next_dirty(b, rs->cursor);
        if (p >= b->pages) {
            rs->cur++;
            rs->cursor = 0;
            continue;
        }
        const uint8_t *host = cpr_ram_block_host(b->block);
        /* The first pass meets most never-written memory: find it without reading it. */
        uint64_t holes = rs->st.passes == 1 && !rs->postcopy ? hole_pages(b->block, p, RUN_MAX) : 0;
        int zero = !rs->postcopy && (holes > 0 || page_is_zero(host + p * PAGE));
        uint32_t n = 0;
        while (n < RUN_MAX && p + n < b->pages && bit_test(b->bmap, p + n) &&
               (n == 0 || rs->postcopy || n < holes ||
                (!holes && page_is_zero(host + (p + n) * PAGE) == zero))) {
            bit_clear(b->bmap, p + n);
            n++;
        }
        rs->pass_left -= n;
        rs->cursor = p + n;
        if (rs->mapped) {
            if ((ret = cpr_mr_save_pages(rs->mapped, (unsigned int)rs->cur, p, n, zero, errp)) < 0)
                return ret;
            queued += zero ? 0 : (uint64_t)n * PAGE;
            *(zero ? &rs->st.zero_pages : &rs->st.data_pages) += n;
            continue;
        }
        if (!zero && rs->mfd) {
            if ((ret = cpr_multifd_send_pages(rs->mfd, b->idx, host, p, n, stable, errp)) < 0)
                return ret;
            queued += (uint64_t)n * PAGE;
            rs->st.data_pages += n;
            continue;
        }
        if (selected != rs->cur) {
            if ((ret = cpr_stream_put_u8(s, CPR_RAM_ENT_BLOCK, errp)) < 0 ||
                (ret = put_name(s, cpr_ram_block_name(b->block), errp)) < 0)
                return ret;
            selected = rs->cur;
        }
        uint8_t kind = rs->postcopy ? CPR_RAM_ENT_DISCARD : zero ? CPR_RAM_ENT_ZERO : CPR_RAM_ENT_DATA;
        if ((ret = cpr_stream_put_u8(s, kind, errp)) < 0 ||
            (ret = cpr_stream_put_u64(s, p, errp)) < 0 ||
            (ret = cpr_stream_put_u32(s, n, errp)) < 0)
            return ret;
        if (rs->postcopy)
            continue; /* served on request after the switch (lib/migration/postcopy_save.c) */
        if (zero) {
            rs->st.zero_pages += n;
            continue;
        }
        /* A running guest may change a page between checksum and write: such pages are
         * copied and checksummed in one pass right before their write. */
        ret = stable ? cpr_stream_put_ref(s, host + p * PAGE, (size_t)n * PAGE, errp)
                     : cpr_stream_put_volatile(s, host + p * PAGE, (size_t)n * PAGE, errp);
        if (ret < 0)
            return ret;
        rs->st.data_pages += n;
    }
    rs->st.remaining = rs->pass_left * PAGE;
    if (rs->pass_left == 0 && (ret = pass_done(rs, s, errp)) < 0)
        return ret;
    return rs->pass_left == 0;
}

/* ---- load ---- */

struct cpr_ram_load {
    cpr_ctx *ctx;
    unsigned int channels; /* mapped-ram: threads that read the regions */
    int direct_io;
    GHashTable *sent; /* name -> cpr_ram_block *, blocks whose pages the stream carries */
    GArray *byidx;    /* struct cpr_mfd_block per table entry (host NULL: not sent), for multifd */
    GPtrArray *order; /* the same blocks in block table order */
    GHashTable *discarded; /* cpr_ram_block * -> uint64_t bitmap (postcopy) */
    int allow_postcopy;
    int postcopy; /* the POSTCOPY entry came */
    int have_table;
    struct cpr_multifd_recv *mfd; /* the multifd channels, when this side accepts them */
    GHashTable *indexed; /* mapped-ram copy load: cpr_ram_block * whose index entry came */
    int restore_mode;    /* CPR_RESTORE_*: other than copy, only a mapped-ram index may bring pages */
    struct cpr_main_chan *ack_to; /* a socket's main channel: passes can be acknowledged there */
    int acking;                   /* the source asked and this side offered */
    uint32_t acked;               /* the last pass acknowledged */
};

int cpr_ram_load_new(cpr_ctx *ctx, cpr_ram_load **out)
{
    cpr_ram_load *rl = g_new0(cpr_ram_load, 1);
    rl->ctx = ctx;
    struct cpr_params p;
    cpr_params_snapshot(ctx, &p);
    rl->channels = (unsigned int)p.multifd_channels;
    rl->direct_io = p.direct_io;
    rl->restore_mode = p.memory_restore_mode;
    cpr_params_clear(&p);
    rl->sent = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    rl->byidx = g_array_new(FALSE, TRUE, sizeof(struct cpr_mfd_block));
    rl->order = g_ptr_array_new();
    rl->discarded = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
    *out = rl;
    return 0;
}

void cpr_ram_load_free(cpr_ram_load *rl)
{
    if (!rl)
        return;
    g_hash_table_destroy(rl->sent);
    g_array_free(rl->byidx, TRUE);
    g_ptr_array_free(rl->order, TRUE);
    g_hash_table_destroy(rl->discarded);
    if (rl->indexed)
        g_hash_table_destroy(rl->indexed);
    g_free(rl);
}

/* A mapped-ram stream loaded by copy: every block the table sends had its index entry, or its
 * memory would stay as this side's fresh RAM held it, and the guest run on that. */
static int mapped_complete(const cpr_ram_load *rl, cpr_error **errp)
{
    if (!rl || !rl->indexed)
        return 0; /* not a mapped-ram copy load */
    GHashTableIter it;
    gpointer name, block;
    g_hash_table_iter_init(&it, rl->sent);
    while (g_hash_table_iter_next(&it, &name, &block))
        if (!g_hash_table_contains(rl->indexed, block))
            return cpr_error_set(errp, -EBADMSG, "mapped-ram: RAM block '%s' is sent but has no index entry",
                                 (const char *)name);
    return 0;
}

static int get_name(cpr_stream *s, char *buf, cpr_error **errp)
{
    uint16_t len;
    int ret = cpr_stream_get_u16(s, &len, errp);
    if (ret < 0)
        return ret;
    if (len == 0 || len > CPR_RAM_NAME_MAX)
        return cpr_error_set(errp, -EBADMSG, "ram section: block name length %u out of range", len);
    ret = cpr_stream_get_bytes(s, buf, len, errp);
    buf[ret < 0 ? 0 : len] = '\0';
    return ret;
}

/* The source sends data pages over multifd channels: accept them now. */
static int multifd_setup(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp)
{
    if (!rl->mfd)
        return cpr_error_set(errp, -EPROTO, "ram section: the source sends RAM over multifd channels, but "
                             "the multifd capability is off here (or the main channel is not a socket): "
                             "turn it on on the destination too");
    return cpr_multifd_recv_setup(rl->mfd, s, (const struct cpr_mfd_block *)(void *)rl->byidx->data,
                                  rl->byidx->len, errp);
}

int cpr_ram_load_setup(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp)
{
    uint32_t n;
    int ret = cpr_stream_get_u32(s, &n, errp);
    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        char name[CPR_RAM_NAME_MAX + 1];
        uint64_t size;
        uint8_t sent;
        if ((ret = get_name(s, name, errp)) < 0 || (ret = cpr_stream_get_u64(s, &size, errp)) < 0 ||
            (ret = cpr_stream_get_u8(s, &sent, errp)) < 0)
            break;
        cpr_ram_block *b = cpr_ram_block_find(rl->ctx, name);
        if (!b)
            return cpr_error_set(errp, -ENOENT, "ram section: the stream has RAM block '%s', "
                                 "which this process did not create", name);
        if (cpr_ram_block_size(b) != size)
            return cpr_error_set(errp, -EINVAL, "ram section: RAM block '%s' is %" PRIu64
                                 " bytes in the stream but %" PRIu64 " here",
                                 name, size, cpr_ram_block_size(b));
        if (sent > 1)
            return cpr_error_set(errp, -EBADMSG, "ram section: bad flag %u for block '%s'", sent, name);
        if (sent) {
            g_hash_table_insert(rl->sent, g_strdup(name), b);
            g_ptr_array_add(rl->order, b);
        }
        struct cpr_mfd_block mb = { sent ? cpr_ram_block_host(b) : NULL, size, cpr_ram_block_name(b), b };
        g_array_append_val(rl->byidx, mb);
    }
    if (ret == 0 && cpr_stream_remaining(s) > 0)
        ret = multifd_setup(rl, s, errp);
    if (ret == 0)
        rl->have_table = 1;
    /* A source that reads acknowledgements asks in the config; the offer is pass 0's. */
    if (ret == 0 && rl->ack_to && cpr_savevm_config_flag(rl->ctx, CPR_CONFIG_ACK_PASSES)) {
        ret = cpr_main_chan_send_pass_ack(rl->ack_to, 0, errp);
        rl->acking = ret == 0;
    }
    return ret;
}

/* A pass-end entry: everything before it is in place; say so on main. */
static int pass_end_entry(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp)
{
    uint32_t pass;
    int ret = cpr_stream_get_u32(s, &pass, errp);
    if (ret < 0)
        return ret;
    if (!rl->acking)
        return cpr_error_set(errp, -EBADMSG, "ram section: a pass-end entry, but this destination did not "
                             "offer to acknowledge passes");
    if (pass != rl->acked + 1)
        return cpr_error_set(errp, -EBADMSG, "ram section: the end of pass %u where pass %u was due", pass,
                             rl->acked + 1);
    rl->acked = pass;
    return cpr_main_chan_send_pass_ack(rl->ack_to, pass, errp);
}

void cpr_ram_load_set_multifd(cpr_ram_load *rl, struct cpr_multifd_recv *mfd)
{
    rl->mfd = mfd;
}

/* Postcopy: the pages go missing only once the fault server guards them (postcopy_in.c). */
static void mark_discarded(cpr_ram_load *rl, cpr_ram_block *b, uint64_t first, uint32_t n)
{
    uint64_t *map = g_hash_table_lookup(rl->discarded, b);
    if (!map) {
        map = g_new0(uint64_t, (cpr_ram_dirty_pages(b) + 63) / 64);
        g_hash_table_insert(rl->discarded, b, map);
    }
    for (uint64_t p = first; p < first + n; p++)
        map[p / 64] |= UINT64_C(1) << (p % 64);
}

int cpr_ram_load_pages(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp)
{
    if (!rl->have_table)
        return cpr_error_set(errp, -EBADMSG, "ram section: pages before the block table");
    cpr_ram_block *cur = NULL;
    while (cpr_stream_remaining(s) > 0) {
        uint8_t kind;
        int ret = cpr_stream_get_u8(s, &kind, errp);
        if (ret < 0)
            return ret;
        if (kind == CPR_RAM_ENT_BLOCK) {
            char name[CPR_RAM_NAME_MAX + 1];
            if ((ret = get_name(s, name, errp)) < 0)
                return ret;
            cur = g_hash_table_lookup(rl->sent, name);
            if (!cur)
                return cpr_error_set(errp, -EBADMSG, "ram section: pages for block '%s', "
                                     "which the block table does not send", name);
            continue;
        }
        if (rl->restore_mode != CPR_RESTORE_COPY &&
            (kind == CPR_RAM_ENT_ZERO || kind == CPR_RAM_ENT_DATA || kind == CPR_RAM_ENT_MULTIFD_SYNC))
            /* Refused before the guest runs, not loaded by copy behind the VMM's back. */
            return cpr_error_set(errp, -EINVAL, "memory-restore-mode %s needs a mapped-ram file: this "
                                 "stream carries its pages inline (load it with memory-restore-mode copy)",
                                 rl->restore_mode == CPR_RESTORE_MAPPED ? "mapped" : "ondemand");
        if (kind == CPR_RAM_ENT_PASS_END) {
            if ((ret = pass_end_entry(rl, s, errp)) < 0)
                return ret;
            continue;
        }
        if (kind == CPR_RAM_ENT_MULTIFD_SYNC) {
            if (!rl->mfd)
                return cpr_error_set(errp, -EBADMSG, "ram section: a multifd sync entry without multifd");
            if ((ret = cpr_multifd_recv_sync(rl->mfd, s, errp)) < 0)
                return ret;
            continue;
        }
        if (kind == CPR_RAM_ENT_MAPPED && rl->restore_mode == CPR_RESTORE_ONDEMAND)
            /* ondemand: pages come in when touched; the rest of the record is the index. */
            return cpr_lazy_restore_begin(rl->ctx, s, rl->sent, errp);
        if (kind == CPR_RAM_ENT_MAPPED && rl->restore_mode == CPR_RESTORE_MAPPED)
            /* mapped: the regions become the blocks' memory, verified; the rest is the index. */
            return cpr_map_restore_begin(rl->ctx, s, rl->sent, rl->channels, errp);
        if (kind == CPR_RAM_ENT_MAPPED) {
            cpr_ram_block *b = NULL;
            if ((ret = cpr_mr_load_entry(s, rl->sent, rl->channels, rl->direct_io, &b, errp)) < 0)
                return ret;
            if (!rl->indexed)
                rl->indexed = g_hash_table_new(NULL, NULL);
            if (!g_hash_table_add(rl->indexed, b))
                return cpr_error_set(errp, -EBADMSG, "mapped-ram: a second index entry for RAM block '%s'",
                                     cpr_ram_block_name(b));
            continue;
        }
        if ((kind == CPR_RAM_ENT_DISCARD || kind == CPR_RAM_ENT_POSTCOPY) && !rl->allow_postcopy)
            return cpr_error_set(errp, -EPROTO, "ram section: the source switched to postcopy, "
                                 "but capability postcopy-ram is off on this destination");
        if (kind == CPR_RAM_ENT_POSTCOPY) {
            rl->postcopy = 1;
            continue;
        }
        if (kind != CPR_RAM_ENT_ZERO && kind != CPR_RAM_ENT_DATA && kind != CPR_RAM_ENT_DISCARD)
            return cpr_error_set(errp, -EBADMSG, "ram section: unknown entry kind %u", kind);
        uint64_t first;
        uint32_t n;
        if ((ret = cpr_stream_get_u64(s, &first, errp)) < 0 || (ret = cpr_stream_get_u32(s, &n, errp)) < 0)
            return ret;
        if (!cur)
            return cpr_error_set(errp, -EBADMSG, "ram section: pages before a block is named");
        uint64_t pages = cpr_ram_dirty_pages(cur);
        if (n == 0 || n > RUN_MAX || first >= pages || n > pages - first)
            return cpr_error_set(errp, -EBADMSG, "ram section: pages %" PRIu64 "+%u outside block '%s' "
                                 "(%" PRIu64 " pages)", first, n, cpr_ram_block_name(cur), pages);
        /* The last page of a block whose size is not a multiple of 4 KiB is short. */
        uint64_t off = first * PAGE;
        uint64_t len = MIN((uint64_t)n * PAGE, cpr_ram_block_size(cur) - off);
        uint8_t *dst = (uint8_t *)cpr_ram_block_host(cur) + off;
        if (kind == CPR_RAM_ENT_DISCARD) {
            mark_discarded(rl, cur, first, n);
            continue;
        }
        if (kind == CPR_RAM_ENT_ZERO) {
            /* Holes read as zero already; elsewhere reading before writing keeps pages that
             * are zero from being dirtied. */
            if (hole_pages(cur, first, n) == n)
                continue;
            for (uint64_t o = 0; o < len; o += PAGE) {
                size_t l = (size_t)MIN((uint64_t)PAGE, len - o);
                if (l < PAGE || !page_is_zero(dst + o))
                    memset(dst + o, 0, l);
            }
            continue;
        }
        const void *src;
        if ((ret = cpr_stream_get_ptr(s, &src, (size_t)n * PAGE, errp)) < 0)
            return ret;
        if ((ret = cpr_ram_block_write(cur, off, src, (size_t)len)) < 0)
            return cpr_error_set_errno(errp, ret, "ram section: writing pages %" PRIu64 "+%u of block '%s'", first,
                                       n, cpr_ram_block_name(cur));
    }
    return 0;
}

/*
 * The RAM section as the engine registers it with savevm: the glue between the savevm
 * progressive-section callbacks and the pass above, plus what the engine needs to run
 * passes (a pass ends inside iterate; the engine then syncs and decides to go on or stop).
 */

struct cpr_mig_ram {
    cpr_ctx *ctx;
    cpr_section *section;
    cpr_section *identity; /* the optional full section "ram-identity" */
    cpr_ram_save *save;
    cpr_ram_load *load;
    int stopped;  /* guest stopped: a finished pass is the last */
    int pass_end; /* the live pass ran out; the engine syncs before the next iterate */
    uint64_t part_bytes;
    struct cpr_multifd_recv *mfd_in; /* the destination's multifd channels, when on */
    int mfd_out;                     /* this save's data pages go to multifd channels */
    struct cpr_main_chan *ack_to;    /* the destination's main channel, a socket */
    int allow_postcopy;
    cpr_ram_load *postcopy_load; /* a load that ended in postcopy, kept for its bitmaps */
    void *kept;
    void (*kept_free)(void *);
};

int cpr_mig_ram_active(const struct cpr_mig_ram *r)
{
    return r->save && cpr_ram_save_sent_blocks(r->save) > 0;
}

int cpr_mig_ram_kept(const struct cpr_mig_ram *r)
{
    return r->save && cpr_ram_block_count(r->ctx) > cpr_ram_save_sent_blocks(r->save);
}

static int ram_is_active(void *opaque)
{
    return cpr_mig_ram_active(opaque);
}

static int ram_setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    return cpr_ram_save_setup(r->save, s, errp);
}

static int ram_iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    if (r->pass_end) {
        /* Between passes: nothing until the engine has synced. */
        *pending = 0;
        return 0;
    }
    /* Stopped, with multifd, the last pass goes out in one call: its parts would put almost
     * nothing on main, which savevm's stopped loop would take for no progress, leaving pages
     * for complete(), after the channels ended. */
    uint64_t budget = r->stopped && r->mfd_out ? UINT64_MAX : r->part_bytes;
    int ret = cpr_ram_save_iterate(r->save, s, budget, r->stopped, errp);
    if (ret < 0)
        return ret;
    *pending = cpr_ram_save_pending(r->save);
    if (ret == 1 && !r->stopped) {
        /* savevm never iterates a section that said "done" again: while the guest runs, a
         * finished pass only means "sync, then more". */
        r->pass_end = 1;
        return 0;
    }
    return ret;
}

static int ram_complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    /* The engine drains every pass before completing; whatever is left still goes here. */
    int ret;
    while ((ret = cpr_ram_save_iterate(r->save, s, UINT64_MAX, 1, errp)) == 0) {
    }
    if (ret >= 0 && r->save->mapped)
        ret = cpr_mr_save_index(r->save->mapped, s, errp);
    if (ret >= 0 && r->save->postcopy)
        ret = cpr_stream_put_u8(s, CPR_RAM_ENT_POSTCOPY, errp);
    return ret < 0 ? ret : 0;
}

static int ram_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    if (phase == CPR_LIVE_START) {
        cpr_ram_load_free(r->load);
        cpr_ram_load_new(r->ctx, &r->load);
        cpr_ram_load_set_multifd(r->load, r->mfd_in);
        r->load->ack_to = r->ack_to;
        r->load->allow_postcopy = r->allow_postcopy;
        cpr_mig_ram_postcopy_clear(r);
        return cpr_ram_load_setup(r->load, s, errp);
    }
    if (!r->load)
        return cpr_error_set(errp, -EBADMSG, "ram section: a part before its start record");
    return cpr_ram_load_pages(r->load, s, errp);
}

static int ram_load_done(uint32_t version, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    /* Every page is in place at the last sync entry; the end packets say nothing was lost after. */
    int ret = r->mfd_in ? cpr_multifd_recv_finish(r->mfd_in, errp) : 0;
    if (ret == 0)
        ret = mapped_complete(r->load, errp);
    if (r->load && r->load->postcopy)
        r->postcopy_load = r->load; /* its bitmaps, for the fault server */
    else
        cpr_ram_load_free(r->load);
    r->load = NULL;
    return ret;
}

static void ram_cleanup(void *opaque)
{
    struct cpr_mig_ram *r = opaque;
    cpr_ram_save_free(r->save);
    r->save = NULL;
}

/* ---- the identity of blocks left in place: a full section, written with the guest stopped ---- */

static int identity_put(cpr_stream *s, const void *field, void *opaque, cpr_error **errp)
{
    cpr_ram_save *const *save = field;
    g_autoptr(GPtrArray) kept = *save ? cpr_ram_save_kept(*save) : NULL;
    return cpr_ram_identity_put(s, kept, errp);
}

static int identity_get(cpr_stream *s, void *field, uint64_t len, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    return cpr_ram_identity_check(s, r->ctx, errp);
}

/*
 * Optional (docs/format.md 2.3 rule 6), so that libcpr 1.0 and 1.1 loaders, which lack it,
 * skip it and still load the stream; the "ram" section itself is unchanged.
 */
static int identity_register(struct cpr_mig_ram *r, cpr_error **errp)
{
    cpr_desc *d;
    int ret = cpr_desc_new(CPR_RAM_IDENTITY_SECTION, CPR_RAM_IDENTITY_VERSION, 1, sizeof(*r), &d, errp);
    if (ret < 0)
        return ret;
    ret = cpr_desc_add_custom(d, "blocks", CPR_MEMBER(struct cpr_mig_ram, save), identity_put, identity_get, r,
                              errp);
    if (ret == 0)
        ret = cpr_savevm_register(r->ctx, NULL, 0, d, r, CPR_SECTION_OPTIONAL, &r->identity, errp);
    cpr_desc_unref(d);
    return ret;
}

int cpr_mig_ram_register(cpr_ctx *ctx, struct cpr_mig_ram **slot, cpr_error **errp)
{
    if (*slot)
        return 0;
    static const cpr_live_ops ops = {
        .size = sizeof(cpr_live_ops),
        .is_active = ram_is_active,
        .setup = ram_setup,
        .iterate = ram_iterate,
        .complete = ram_complete,
        .load = ram_load,
        .load_done = ram_load_done,
        .cleanup = ram_cleanup,
    };
    struct cpr_mig_ram *r = g_new0(struct cpr_mig_ram, 1);
    r->ctx = ctx;
    int ret = cpr_savevm_register_live(ctx, CPR_RAM_SECTION_NAME, 0, CPR_RAM_SECTION_VERSION,
                                       CPR_RAM_SECTION_VERSION, &ops, r, 0, &r->section, errp);
    if (ret == 0 && (ret = identity_register(r, errp)) < 0)
        cpr_savevm_unregister(ctx, r->section);
    if (ret < 0) {
        cpr_error_prefix(errp, "registering the RAM section");
        g_free(r);
        return ret;
    }
    *slot = r;
    return 0;
}

void cpr_mig_ram_free(struct cpr_mig_ram *r)
{
    if (!r)
        return;
    /* The section goes with the context's savevm state; only ours is freed here. */
    cpr_ram_save_free(r->save);
    cpr_ram_load_free(r->load);
    cpr_ram_load_free(r->postcopy_load);
    if (r->kept)
        r->kept_free(r->kept);
    g_free(r);
}

void cpr_mig_ram_prepare(struct cpr_mig_ram *r, cpr_mode mode, int ignore_shared)
{
    cpr_ram_save_free(r->save);
    cpr_ram_save_new(r->ctx, mode, ignore_shared, &r->save);
    r->stopped = 0;
    r->pass_end = 0;
    r->mfd_out = 0;
    r->part_bytes = CPR_MIG_RAM_PART_BYTES;
}

int cpr_mig_ram_check(struct cpr_mig_ram *r, cpr_mode mode, int ignore_shared, cpr_error **errp)
{
    return cpr_ram_save_check(r->ctx, mode, ignore_shared, errp);
}

void cpr_mig_ram_set_part_bytes(struct cpr_mig_ram *r, uint64_t bytes)
{
    r->part_bytes = bytes;
}

const cpr_section *cpr_mig_ram_section(const struct cpr_mig_ram *r)
{
    return r->section;
}

void cpr_mig_ram_set_multifd(struct cpr_mig_ram *r, struct cpr_multifd_send *out, struct cpr_multifd_recv *in)
{
    if (r->save)
        cpr_ram_save_set_multifd(r->save, out);
    r->mfd_out = out != NULL;
    r->mfd_in = in;
}

void cpr_mig_ram_set_ack_to(struct cpr_mig_ram *r, struct cpr_main_chan *mc)
{
    r->ack_to = mc;
}

void cpr_mig_ram_ack_passes(struct cpr_mig_ram *r, int on)
{
    if (r->save)
        r->save->ack_passes = on;
}

uint32_t cpr_mig_ram_acks_requested(const struct cpr_mig_ram *r)
{
    return r->save ? r->save->acks_requested : 0;
}

int cpr_mig_ram_pass_ended(const struct cpr_mig_ram *r)
{
    return r->pass_end;
}

int64_t cpr_mig_ram_sync(struct cpr_mig_ram *r, int stopped, cpr_error **errp)
{
    if (!r->save)
        return 0;
    r->stopped = stopped;
    r->pass_end = 0;
    /* mapped-ram: what earlier passes wrote reaches the disk while the guest still runs. */
    int ret = !stopped && r->save->mapped ? cpr_mr_save_writeback(r->save->mapped, errp) : 0;
    if (ret < 0)
        return ret;
    return cpr_ram_save_sync(r->save, errp);
}

int cpr_mig_ram_map(struct cpr_mig_ram *r, cpr_stream *s, unsigned int channels, int direct_io, cpr_error **errp)
{
    if (!cpr_mig_ram_active(r))
        return 0;
    GArray *blks = r->save->blks;
    g_autoptr(GPtrArray) blocks = g_ptr_array_new();
    for (guint i = 0; i < blks->len; i++)
        g_ptr_array_add(blocks, g_array_index(blks, struct ram_blk, i).block);
    return cpr_mr_save_new(s, blocks, channels, direct_io, &r->save->mapped, errp);
}

uint64_t cpr_mig_ram_mapped_bytes(const struct cpr_mig_ram *r)
{
    return r->save ? cpr_mr_save_bytes(r->save->mapped) : 0;
}

void cpr_mig_ram_stats(const struct cpr_mig_ram *r, struct cpr_ram_stats *out)
{
    if (r->save)
        cpr_ram_save_stats(r->save, out);
    else
        *out = (struct cpr_ram_stats){ 0 };
}

/* ---- postcopy ---- */

void cpr_mig_ram_set_postcopy(struct cpr_mig_ram *r)
{
    if (r->save)
        r->save->postcopy = 1;
}

cpr_ram_block *cpr_mig_ram_sent_block(const struct cpr_mig_ram *r, unsigned index)
{
    if (!r->save || index >= r->save->blks->len)
        return NULL;
    return g_array_index(r->save->blks, struct ram_blk, index).block;
}

void cpr_mig_ram_allow_postcopy(struct cpr_mig_ram *r, int allow)
{
    r->allow_postcopy = allow;
}

int cpr_mig_ram_postcopy_pending(const struct cpr_mig_ram *r)
{
    return r->postcopy_load != NULL;
}

GPtrArray *cpr_mig_ram_postcopy_blocks(const struct cpr_mig_ram *r)
{
    return r->postcopy_load ? r->postcopy_load->order : NULL;
}

const uint64_t *cpr_mig_ram_postcopy_discarded(const struct cpr_mig_ram *r, unsigned index)
{
    GPtrArray *order = cpr_mig_ram_postcopy_blocks(r);
    if (!order || index >= order->len)
        return NULL;
    return g_hash_table_lookup(r->postcopy_load->discarded, g_ptr_array_index(order, index));
}

void cpr_mig_ram_postcopy_clear(struct cpr_mig_ram *r)
{
    cpr_ram_load_free(r->postcopy_load);
    r->postcopy_load = NULL;
}

void cpr_mig_ram_keep(struct cpr_mig_ram *r, void *p, void (*free_fn)(void *))
{
    if (r->kept)
        r->kept_free(r->kept);
    r->kept = p;
    r->kept_free = free_fn;
}
