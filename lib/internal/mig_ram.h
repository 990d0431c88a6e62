/* SPDX-License-Identifier: MIT */
/* Private: the engine's RAM section (lib/migrate_ram.c) over lib/ram_section.c. */
#ifndef CPR_INTERNAL_MIG_RAM_H
#define CPR_INTERNAL_MIG_RAM_H

#include <cpr/mode.h>
#include <cpr/savevm.h>

#include "internal/ram_section.h"

/* Bytes of pages per part record: small enough for the loader's limits and for a cancel or
 * the bandwidth limit to act between parts, large enough to amortise the record framing. */
#define CPR_MIG_RAM_PART_BYTES (8u << 20)

struct cpr_mig_ram;

/* Registers the "ram" progressive section on ctx once (owner thread, not during a save or
 * load); *slot keeps it. Fails when the VMM registered a section of that name itself. */
int cpr_mig_ram_register(cpr_ctx *ctx, struct cpr_mig_ram **slot, cpr_error **errp);
void cpr_mig_ram_free(struct cpr_mig_ram *r);

/* Before a save: picks the blocks to send for this mode (see lib/ram_section.c). */
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

/* 1 once the live pass has run out (the engine then syncs). */
int cpr_mig_ram_pass_ended(const struct cpr_mig_ram *r);

/* Starts the next pass from the dirty bitmaps; `stopped` when the guest no longer runs, so
 * that this pass is the last. Returns the pages in it. */
int64_t cpr_mig_ram_sync(struct cpr_mig_ram *r, int stopped, cpr_error **errp);

void cpr_mig_ram_stats(const struct cpr_mig_ram *r, struct cpr_ram_stats *out);

/* The "ram" section itself, so the engine can tell it from the VMM's progressive sections. */
const cpr_section *cpr_mig_ram_section(const struct cpr_mig_ram *r);

#endif
