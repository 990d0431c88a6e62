/* SPDX-License-Identifier: MIT */
/*
 * Private: the save and load passes the migration engine drives.
 *
 * Save, in order (the engine stops the guest between iterate and complete):
 *     cpr_savevm_begin(ctx, s, mode)        header, config, schema, start records (setup)
 *     cpr_savevm_iterate(ctx, s)            one part per unfinished progressive section,
 *                                           interleaved; repeat while the guest runs
 *     cpr_savevm_iterate_stopped(ctx, s)    after the stop: parts while they make progress
 *     cpr_savevm_complete(ctx, s)           end records (complete), full sections, end record
 *     cpr_savevm_finish(ctx)                cleanup callbacks; always, after begin, even on error
 * Load: cpr_savevm_load_stream() reads a whole stream and dispatches its records.
 */
#ifndef CPR_FORMAT_SAVEVM_H
#define CPR_FORMAT_SAVEVM_H

#include <cpr/mode.h>
#include <cpr/savevm.h>

int cpr_savevm_begin(cpr_ctx *ctx, cpr_stream *s, cpr_mode mode, cpr_error **errp);
/* Calls iterate() of every active progressive section once, a section that was done before
 * included (a dirty-log sync may have given it more); a call that writes nothing leaves no
 * record. Returns 1 when every section reported done in this call, 0 when some have more,
 * <0 on error. Each section's pending bytes are kept for cpr_savevm_pending(). */
int cpr_savevm_iterate(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp);
/*
 * After the stop, before cpr_savevm_complete(): asks every active section for parts while it
 * makes progress (each part sends bytes and, after the first, leaves less pending), bounded:
 * a section that stops making progress is left to complete() (which writes what is left, as
 * QEMU's complete-precopy); one that keeps sending past twice what it had left at the stop
 * (its first part plus the pending it then reported, plus 1 MiB), or past 2^20 parts, fails
 * the save with -EOVERFLOW naming it. Returns 0 or <0.
 */
int cpr_savevm_iterate_stopped(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp);
int cpr_savevm_complete(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp);
void cpr_savevm_finish(cpr_ctx *ctx);
/* Bytes the active progressive sections other than `skip` (may be NULL) have left, as their
 * last iterate() reported (before the first, their pending() estimate, or 0). */
uint64_t cpr_savevm_pending(cpr_ctx *ctx, const cpr_section *skip);

/* Writes `key: true` into the config record the next cpr_savevm_begin() writes (that call
 * forgets it, whatever it returns): a request a reader that does not know the key ignores
 * (docs/format.md 2.4). */
void cpr_savevm_set_config_flag(cpr_ctx *ctx, const char *key);
/* During a load, from the config record on (a section's load callback): 1 when the stream's
 * config has `key: true`, else 0. */
int cpr_savevm_config_flag(cpr_ctx *ctx, const char *key);

/*
 * Loads a whole stream. When config_json is not NULL it receives the stream's config record
 * (g_free) on success, so the engine can read the producer's mode.
 */
int cpr_savevm_load_stream(cpr_ctx *ctx, cpr_stream *s, char **config_json, cpr_error **errp);

/*
 * An identity contribution: fn returns a JSON text (g_free; NULL for none) that is written
 * under config "identity"/key and compared on load with what fn returns there. The RAM module
 * registers "ram" with its block layout. Replaces an earlier hook of the same key; fn NULL
 * removes it.
 */
typedef char *(*cpr_identity_fn)(cpr_ctx *ctx, void *opaque);
int cpr_savevm_set_identity(cpr_ctx *ctx, const char *key, cpr_identity_fn fn, void *opaque, cpr_error **errp);

#endif
