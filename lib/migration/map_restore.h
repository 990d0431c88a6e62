/* SPDX-License-Identifier: MIT */
/*
 * Private: instant restore of a mapped-ram file by mapping it, memory-restore-mode=mapped
 * (Firecracker's File memory backend; cpr/lazy_restore.h says what a VMM sees). At the ram
 * section's index the loader hands the blocks to this module instead of reading their pages:
 * each block's memory becomes a private (copy-on-write) mapping of its region of the file, at
 * the block's own address, once every chunk's CRC32C is verified (read with pread from the page
 * cache the mapping will show, where clones of the same file share it), so the guest never
 * sees a byte that was not checked; a check that fails or is cancelled maps nothing. Pages the file does not hold read as
 * zero.
 */
#ifndef CPR_MIGRATION_MAP_RESTORE_H
#define CPR_MIGRATION_MAP_RESTORE_H

#include <glib.h>

#include <cpr/ctx.h>
#include <cpr/stream.h>

/*
 * At the ram section's first mapped-ram index entry of a file stream `s`: reads the index
 * (cpr_mr_open_index), maps every block of `sent` (name -> cpr_ram_block *) from its region
 * and verifies it with `channels` threads, then leaves s after the record. Errors, naming the
 * block and the file: -ESPIPE (not a file), -EINVAL (a block re-attached from a preserved fd,
 * of another size, or whose page size or region offset does not fit the system page), -EBADMSG
 * (a region missing or cut short, a chunk's checksum: "chunk K ... checksum mismatch"), -EBUSY
 * (a block mapped by an earlier restore, the file written during the check), -ECANCELED (the
 * job's cancel, seen through s's cancel fd, within about a MiB of checking), mmap's errno. On
 * an error no block stays mapped by this restore.
 */
int cpr_map_restore_begin(cpr_ctx *ctx, cpr_stream *s, GHashTable *sent, unsigned int channels,
                          cpr_error **errp);

/* The load failed before its commit (the guest never ran on it): the blocks this restore
 * mapped, and only those (not an earlier, committed restore's), get their own memory back, as
 * it was (private memory zeroed), so a later load may fill it. */
void cpr_map_restore_abort(cpr_ctx *ctx);

/* The load committed (the guest runs on the files from now on): no abort undoes its mappings,
 * and the blocks' memfds give their old pages back (cpr_ram_block_map_commit()). */
void cpr_map_restore_commit(cpr_ctx *ctx);

#endif
