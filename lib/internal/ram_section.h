/* SPDX-License-Identifier: MIT */
/*
 * Private: the "ram" progressive section that carries guest RAM blocks in normal migration
 * (and in cpr-reboot without x-ignore-shared). Its payload layout is in docs/migration.md.
 *
 * Save: setup (block table, first pass = every page), then iterate in bounded parts while the
 * guest runs, a sync between passes driven by the blocks' dirty bitmaps, and after the stop
 * parts until nothing is left, then complete. Load: the block table, then pages into the
 * destination's blocks of the same names.
 */
#ifndef CPR_INTERNAL_RAM_SECTION_H
#define CPR_INTERNAL_RAM_SECTION_H

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/stream.h>

#define CPR_RAM_SECTION_NAME "ram"
#define CPR_RAM_SECTION_VERSION 1

/* Entry kinds inside the section's records. */
enum {
    CPR_RAM_ENT_BLOCK = 1, /* u16 name length, name: later entries refer to this block */
    CPR_RAM_ENT_ZERO = 2,  /* u64 first page, u32 count: pages that read as zero */
    CPR_RAM_ENT_DATA = 3,  /* u64 first page, u32 count, count * 4096 bytes */
};

typedef struct cpr_ram_save cpr_ram_save;
typedef struct cpr_ram_load cpr_ram_load;

/* Statistics of a save, for query-migrate. */
struct cpr_ram_stats {
    uint64_t total;          /* bytes of the blocks that are sent */
    uint64_t zero_pages;
    uint64_t data_pages;
    uint64_t passes;         /* dirty-bitmap syncs, the first pass included */
    uint64_t last_pass_dirty; /* pages dirty at the last sync */
    uint64_t remaining;      /* bytes still to send, as of the last sync and since */
};

/*
 * Starts a save on ctx: decides which blocks go (not shared ones kept in place by
 * x-ignore-shared or by a cpr mode), writes the block table into the open record of s, and
 * makes every page of the sent blocks dirty for the first pass. `sync` (may be NULL) is called
 * before each later pass so that the VMM merges its dirty log.
 */
int cpr_ram_save_new(cpr_ctx *ctx, cpr_mode mode, int ignore_shared, cpr_ram_save **out);
/* Refuses (-EINVAL naming the block) a block that a save in this mode would leave out of the
 * stream but that cannot outlive the process: cpr_ram_save_new() would choose the same blocks. */
int cpr_ram_save_check(cpr_ctx *ctx, cpr_mode mode, int ignore_shared, cpr_error **errp);
int cpr_ram_save_setup(cpr_ram_save *rs, cpr_stream *s, cpr_error **errp);

/*
 * Writes up to about `budget` bytes of the current pass into the open record of s.
 * `stable`: the guest is stopped, so pages go out without a copy (cpr_stream_put_ref).
 * Returns 1 when the current pass is exhausted, 0 when budget ran out first, or an error.
 */
int cpr_ram_save_iterate(cpr_ram_save *rs, cpr_stream *s, uint64_t budget, int stable,
                         cpr_error **errp);

/* Starts a new pass: ORs what was dirtied since the last one into it. Returns its pages. */
int64_t cpr_ram_save_sync(cpr_ram_save *rs, cpr_error **errp);

/* Number of blocks whose pages this save sends (0: the section has nothing to do). */
unsigned int cpr_ram_save_sent_blocks(const cpr_ram_save *rs);
/* The blocks this save leaves in place (cpr_ram_block *), as a new array to free. */
GPtrArray *cpr_ram_save_kept(const cpr_ram_save *rs);

/* Bytes left in the current pass (the pending estimate between syncs). */
uint64_t cpr_ram_save_pending(const cpr_ram_save *rs);

void cpr_ram_save_stats(const cpr_ram_save *rs, struct cpr_ram_stats *out);
void cpr_ram_save_free(cpr_ram_save *rs);

/* Load side: a loader bound to ctx's blocks. setup reads the block table from the current
 * record; pages reads entries until the record's payload is used up. */
int cpr_ram_load_new(cpr_ctx *ctx, cpr_ram_load **out);
int cpr_ram_load_setup(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp);
int cpr_ram_load_pages(cpr_ram_load *rl, cpr_stream *s, cpr_error **errp);
void cpr_ram_load_free(cpr_ram_load *rl);

#endif
