/* SPDX-License-Identifier: MIT */
/*
 * The one-shot save and load (cpr_savevm_save, cpr_savevm_load): the engine's passes with the
 * guest already stopped by the caller, guest RAM included when the VMM registered RAM blocks
 * (the same "ram" section a migration sends, so a snapshot holds the whole guest).
 */
#include <errno.h>

#include <cpr/ram.h>

#include "core/error.h"
#include "core/params.h"
#include "format/savevm.h"
#include "format/stream.h"
#include "migration/map_restore.h"
#include "migration/migrate.h"
#include "migration/ram_section.h"

/* The RAM section when the context has RAM blocks (registered on first use), else NULL. */
static int ram_section(cpr_ctx *ctx, struct cpr_mig_ram **out, cpr_error **errp)
{
    *out = NULL;
    if (!cpr_ram_block_count(ctx))
        return 0;
    return cpr_mig_ram_get(ctx, out, errp);
}

CPR_API int cpr_savevm_save(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp)
{
    if (!ctx || !s || !cpr_stream_is_writer(s))
        return cpr_error_set(errp, -EINVAL, "cpr_savevm_save: needs a context and a stream writer");
    struct cpr_params p;
    cpr_params_snapshot(ctx, &p);
    cpr_mode mode = p.mode;
    int ignore_shared = p.x_ignore_shared;
    cpr_params_clear(&p);
    struct cpr_mig_ram *ram;
    int ret = ram_section(ctx, &ram, errp);
    if (ret < 0)
        return ret;
    if (ram)
        cpr_mig_ram_prepare(ram, mode, ignore_shared);
    ret = cpr_savevm_begin(ctx, s, mode, errp);
    if (ret == -EBUSY)
        return ret;
    /* The caller stopped its guest: RAM goes in one last pass, as after a migration's stop. */
    if (ret >= 0 && ram) {
        int64_t pages = cpr_mig_ram_sync(ram, 1, errp);
        ret = pages < 0 ? (int)pages : 0;
    }
    if (ret >= 0)
        ret = cpr_savevm_iterate_stopped(ctx, s, errp);
    if (ret >= 0)
        ret = cpr_savevm_complete(ctx, s, errp);
    cpr_savevm_finish(ctx);
    return ret < 0 ? ret : 0;
}

/* Runs fn on a stream over fd (a writer or a reader); the fd stays open. */
static int on_fd(cpr_ctx *ctx, int fd, int writer, int (*fn)(cpr_ctx *, cpr_stream *, cpr_error **), cpr_error **errp)
{
    cpr_stream *s;
    int ret = writer ? cpr_stream_new_fd_writer(fd, 0, &s, errp) : cpr_stream_new_fd_reader(fd, 0, &s, errp);
    if (ret < 0)
        return ret;
    ret = fn(ctx, s, errp);
    cpr_stream_free(s);
    return ret;
}

CPR_API int cpr_savevm_save_to_fd(cpr_ctx *ctx, int fd, cpr_error **errp)
{
    return on_fd(ctx, fd, 1, cpr_savevm_save, errp);
}

CPR_API int cpr_savevm_load(cpr_ctx *ctx, cpr_stream *s, cpr_error **errp)
{
    struct cpr_mig_ram *ram;
    int ret = ctx ? ram_section(ctx, &ram, errp) : 0;
    if (ret < 0)
        return ret;
    ret = cpr_savevm_load_stream(ctx, s, NULL, errp);
    /* The caller's guest is stopped: a load that returns is its commit, a failure its abort. */
    if (ret == 0)
        cpr_map_restore_commit(ctx);
    else
        cpr_map_restore_abort(ctx);
    return ret;
}

CPR_API int cpr_savevm_load_from_fd(cpr_ctx *ctx, int fd, cpr_error **errp)
{
    return on_fd(ctx, fd, 0, cpr_savevm_load, errp);
}
