/* SPDX-License-Identifier: MIT */
/*
 * Private: lazy (instant) restore of a mapped-ram file, memory-restore-mode=ondemand
 * (cpr/lazy_restore.h says what a VMM sees). At the ram section's index the loader hands the
 * blocks to this module instead of reading their pages: the blocks are registered with the
 * fault server (migration/fault_server.h) whose page source reads the file's regions with
 * pread(2) and verifies each chunk's CRC32C against the index before any byte of it reaches
 * guest RAM. The load then goes on (device state, post_load, prepare, commit) and the guest
 * starts while the pages arrive.
 * The ram loader calls this module, which reads the file with mapped_ram's reader, which takes
 * the section's name and entry kinds from ram_section.h: a circle of constants, not of state.
 * Include seam: migration/lazy_restore migration/mapped_ram migration/ram_section
 */
#ifndef CPR_MIGRATION_LAZY_RESTORE_H
#define CPR_MIGRATION_LAZY_RESTORE_H

#include <glib.h>

#include <cpr/ctx.h>
#include <cpr/stream.h>

/*
 * At the ram section's first mapped-ram index entry of a file stream `s`: reads the file's
 * index itself (cpr_mr_open_fd), registers every block of `sent` (name -> cpr_ram_block *)
 * with a new fault server and starts it, then drops the rest of the record (the index, which
 * the file reader has verified). Errors, naming the block or the file: -ESPIPE (not a file),
 * a block without a region or of another size, the fault server's (no userfaultfd), -EBUSY
 * when a lazy restore runs already.
 */
int cpr_lazy_restore_begin(cpr_ctx *ctx, cpr_stream *s, GHashTable *sent, cpr_error **errp);

/* The incoming job failed before its commit (the guest never ran here): stops serving and
 * unregisters the blocks, without sealing them, so a later load may fill them. No-op
 * without a lazy restore. */
void cpr_lazy_restore_abort(cpr_ctx *ctx);

#endif
