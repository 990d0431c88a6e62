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
#ifndef CPR_MIGRATION_RAM_SECTION_H
#define CPR_MIGRATION_RAM_SECTION_H

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/mode.h>
#include <cpr/savevm.h>
#include <cpr/stream.h>

#include "migration/ram_entries.h"

struct cpr_multifd_send;
struct cpr_multifd_recv;

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

/* Data pages go to these multifd channels from now on (setup writes their descriptor). */
void cpr_ram_save_set_multifd(cpr_ram_save *rs, struct cpr_multifd_send *mfd);

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
/* The multifd channels a setup that announces them accepts (NULL: such a stream is refused). */
void cpr_ram_load_set_multifd(cpr_ram_load *rl, struct cpr_multifd_recv *mfd);
void cpr_ram_load_free(cpr_ram_load *rl);

/* The engine's side: the section registered with savevm and driven pass by pass. */
/* Bytes of pages per part record: small enough for the loader's limits and for a cancel or
 * the bandwidth limit to act between parts, large enough to amortise the record framing. */
#define CPR_MIG_RAM_PART_BYTES (8u << 20)

struct cpr_mig_ram;

/* Registers the "ram" progressive section on ctx once (owner thread, not during a save or
 * load); *slot keeps it. Fails when the VMM registered a section of that name itself. */
int cpr_mig_ram_register(cpr_ctx *ctx, struct cpr_mig_ram **slot, cpr_error **errp);
void cpr_mig_ram_free(struct cpr_mig_ram *r);

/* Before a save: picks the blocks to send for this mode (see lib/migration/ram_section.c). */
void cpr_mig_ram_prepare(struct cpr_mig_ram *r, cpr_mode mode, int ignore_shared);
/* Before the channel opens: refuses, naming the block, a block the save would leave out that
 * could not outlive this process in that mode. */
int cpr_mig_ram_check(struct cpr_mig_ram *r, cpr_mode mode, int ignore_shared, cpr_error **errp);

/* Bytes of pages per part from now on (the engine shrinks it under a bandwidth limit). */
void cpr_mig_ram_set_part_bytes(struct cpr_mig_ram *r, uint64_t bytes);

/* 1 when this save sends RAM pages (after savevm begin): some block is not left in place. */
int cpr_mig_ram_active(const struct cpr_mig_ram *r);

/* 1 when this save leaves some block in place (not sent): its memory stays shared. */
int cpr_mig_ram_kept(const struct cpr_mig_ram *r);

/* multifd: the source's channels for this save (after prepare), the destination's for the next
 * load; NULL for none. The caller owns both and frees them after the save or load. */
void cpr_mig_ram_set_multifd(struct cpr_mig_ram *r, struct cpr_multifd_send *out, struct cpr_multifd_recv *in);

struct cpr_main_chan;
/* Destination: the main channel, a socket, where passes are acknowledged when the source asks
 * (NULL: not a socket). Borrowed for the job. */
void cpr_mig_ram_set_ack_to(struct cpr_mig_ram *r, struct cpr_main_chan *mc);
/* Source: from now on (on) or no more (off), a pass that runs out ends with a pass-end entry,
 * which the destination acknowledges; how many were written so far. */
void cpr_mig_ram_ack_passes(struct cpr_mig_ram *r, int on);
uint32_t cpr_mig_ram_acks_requested(const struct cpr_mig_ram *r);

/* 1 once the live pass has run out (the engine then syncs). */
int cpr_mig_ram_pass_ended(const struct cpr_mig_ram *r);

/* Starts the next pass from the dirty bitmaps; `stopped` when the guest no longer runs, so
 * that this pass is the last. Returns the pages in it. */
int64_t cpr_mig_ram_sync(struct cpr_mig_ram *r, int stopped, cpr_error **errp);

void cpr_mig_ram_stats(const struct cpr_mig_ram *r, struct cpr_ram_stats *out);

/*
 * mapped-ram (after savevm begin, between records of s, a regular file): the sent blocks get
 * regions of s, and from now on their pages go there with `channels` threads instead of into
 * records; the ram section's end record carries the index. No-op when no block is sent.
 */
int cpr_mig_ram_map(struct cpr_mig_ram *r, cpr_stream *s, unsigned int channels, int direct_io, cpr_error **errp);
/* Bytes this save wrote outside the stream's records (mapped-ram pages), for bandwidth. */
uint64_t cpr_mig_ram_mapped_bytes(const struct cpr_mig_ram *r);
/* ---- postcopy (lib/migration/postcopy*.c) ---- */

/* Outgoing, once the guest is stopped: the pages left dirty go as DISCARD entries, not data,
 * and the section ends with a POSTCOPY entry. */
void cpr_mig_ram_set_postcopy(struct cpr_mig_ram *r);
/* Outgoing, until the save ends: sent block `index` (block table order) or NULL. */
cpr_ram_block *cpr_mig_ram_sent_block(const struct cpr_mig_ram *r, unsigned index);

/* Incoming: whether DISCARD and POSTCOPY entries are accepted (postcopy-ram is on here). */
void cpr_mig_ram_allow_postcopy(struct cpr_mig_ram *r, int allow);
/* Incoming, after the load: the stream ended in postcopy. Then the sent blocks (in block table
 * order, cpr_ram_block *) and per block a bitmap of the pages discarded (4 KiB pages, bit set =
 * the source still has the page), both owned by r until cpr_mig_ram_postcopy_clear(). */
int cpr_mig_ram_postcopy_pending(const struct cpr_mig_ram *r);
GPtrArray *cpr_mig_ram_postcopy_blocks(const struct cpr_mig_ram *r);
const uint64_t *cpr_mig_ram_postcopy_discarded(const struct cpr_mig_ram *r, unsigned index);
void cpr_mig_ram_postcopy_clear(struct cpr_mig_ram *r);
/* Keeps p until the context goes (free_fn(p) then): a postcopy whose source was lost keeps
 * its fault server, so that the vCPUs on missing pages stay blocked rather than fault. */
void cpr_mig_ram_keep(struct cpr_mig_ram *r, void *p, void (*free_fn)(void *));

/* The "ram" section itself, so the engine can tell it from the VMM's progressive sections. */
const cpr_section *cpr_mig_ram_section(const struct cpr_mig_ram *r);

#endif
