/* SPDX-License-Identifier: MIT */
/*
 * Private: a stream file's schema record read and checked on a helper thread, ahead of its
 * load. cpr-exec's new image starts it as soon as it has adopted the cpr state, so the parse
 * (json-c: a few hundred KiB of fresh heap, ~1.5 ms on a host whose page faults are slow) runs
 * beside the VMM's machine and device creation instead of inside the load. The loader takes it
 * only for a schema record of the very same bytes, so what it checks is what it loads.
 */
#ifndef CPR_FORMAT_SCHEMA_PREFETCH_H
#define CPR_FORMAT_SCHEMA_PREFETCH_H

#include <stdint.h>

#include <cpr/ctx.h>

#include "format/meta.h"

/*
 * Starts reading the schema record of the stream in file `path` from byte `offset` on a
 * helper thread; kept on ctx until taken or the context is freed (which joins it). Best
 * effort: no thread, or a file that cannot be read, leaves the loader to do it all.
 */
void cpr_schema_prefetch_start(cpr_ctx *ctx, const char *path, uint64_t offset);

/*
 * Joins the helper and returns its checked schema when it read a schema record of exactly
 * `len` bytes `payload` under the same string limit (the caller owns it: cpr_schema_free);
 * NULL otherwise (nothing started, another record, a parse that failed: check it yourself).
 * Any prefetch is dropped either way.
 */
cpr_schema *cpr_schema_prefetch_take(cpr_ctx *ctx, const void *payload, size_t len, uint64_t string_limit);

#endif
