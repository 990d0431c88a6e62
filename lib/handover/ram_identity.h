/* SPDX-License-Identifier: MIT */
/* Private: the identity of RAM blocks left in place, saved and checked (lib/handover/ram_identity.c). */
#ifndef CPR_HANDOVER_RAM_IDENTITY_H
#define CPR_HANDOVER_RAM_IDENTITY_H

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/stream.h>

/* The optional full section that carries them (docs/format.md, section 6). */
#define CPR_RAM_IDENTITY_SECTION "ram-identity"
#define CPR_RAM_IDENTITY_VERSION 1
/* Pages sampled per file-backed block: each costs a lseek and a 4 KiB CRC32C on both sides, in
 * the pause. Memfds (cpr-transfer, cpr-exec) are not sampled. */
#define CPR_RAM_IDENTITY_SAMPLES 8

/*
 * Writes the identity of each block of `kept` (cpr_ram_block *: blocks whose memory the
 * stream leaves in place): its backing object (memfd or file: st_dev, st_ino; a device node:
 * st_rdev) and, for files and devices, the CRC32C of sampled pages. The guest must be stopped.
 */
int cpr_ram_identity_put(cpr_stream *s, const GPtrArray *kept, cpr_error **errp);

/*
 * Reads what cpr_ram_identity_put() wrote and checks each block against the block of that
 * name on ctx: same backing object, same sampled contents. Refuses otherwise, naming the
 * block and what differs (-ESTALE), or -EBADMSG for a malformed body.
 */
int cpr_ram_identity_check(cpr_stream *s, cpr_ctx *ctx, cpr_error **errp);

#endif
