/* SPDX-License-Identifier: MIT */
/*
 * The RAM section as the engine registers it with savevm: the glue between the savevm
 * progressive-section callbacks and lib/ram_section.c, plus what the engine needs to run
 * passes (a pass ends inside iterate; the engine then syncs and decides to go on or stop).
 */
#include <errno.h>

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/savevm.h>

#include <cpr/vmstate.h>

#include "internal/error.h"
#include "internal/mig_ram.h"
#include "internal/ram_identity.h"

struct cpr_mig_ram {
    cpr_ctx *ctx;
    cpr_section *section;
    cpr_section *identity; /* the optional full section "ram-identity" */
    cpr_ram_save *save;
    cpr_ram_load *load;
    int stopped;  /* guest stopped: a finished pass is the last */
    int pass_end; /* the live pass ran out; the engine syncs before the next iterate */
    uint64_t part_bytes;
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
    int ret = cpr_ram_save_iterate(r->save, s, r->part_bytes, r->stopped, errp);
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
    return ret < 0 ? ret : 0;
}

static int ram_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    if (phase == CPR_LIVE_START) {
        cpr_ram_load_free(r->load);
        cpr_ram_load_new(r->ctx, &r->load);
        return cpr_ram_load_setup(r->load, s, errp);
    }
    if (!r->load)
        return cpr_error_set(errp, -EBADMSG, "ram section: a part before its start record");
    return cpr_ram_load_pages(r->load, s, errp);
}

static int ram_load_done(uint32_t version, void *opaque, cpr_error **errp)
{
    struct cpr_mig_ram *r = opaque;
    cpr_ram_load_free(r->load);
    r->load = NULL;
    return 0;
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
    g_free(r);
}

void cpr_mig_ram_prepare(struct cpr_mig_ram *r, cpr_mode mode, int ignore_shared)
{
    cpr_ram_save_free(r->save);
    cpr_ram_save_new(r->ctx, mode, ignore_shared, &r->save);
    r->stopped = 0;
    r->pass_end = 0;
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
    return cpr_ram_save_sync(r->save, errp);
}

void cpr_mig_ram_stats(const struct cpr_mig_ram *r, struct cpr_ram_stats *out)
{
    if (r->save)
        cpr_ram_save_stats(r->save, out);
    else
        *out = (struct cpr_ram_stats){ 0 };
}
