/* SPDX-License-Identifier: MIT */
/*
 * The engine's contract with progressive sections (docs/savevm.md, "Progressive sections"):
 * after the stop, a section is asked for parts only while it makes progress, then complete()
 * writes what is left; one that keeps sending fails the save naming it, and a migration's
 * guest runs again; while the guest runs, rounds that send nothing are paced, not a busy loop.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

enum behaviour {
    STALL,   /* iterate() sends a little, returns 0, pending never moves (the 4096) */
    RUNAWAY, /* iterate() sends 64 KiB a call, returns 0, pending drops by one byte a call */
    LATE,    /* sends nothing, pending 4096, until `late_ms` of running has passed */
};

#define RUNAWAY_PENDING (1u << 20)

struct sec {
    enum behaviour how;
    int running;           /* the guest, as the VM hooks see it */
    uint64_t pending;
    uint64_t calls_running, calls_stopped, completes, loaded_end;
    int64_t first_us, last_us; /* of the calls while the guest ran */
    int64_t late_ms;
};

static int setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct sec *x = opaque;
    /* A runaway starts with more than it can send off while the guest runs, one byte a call:
     * with 4096 a fast host counted it down to 0 before the stop, and nothing ran away. */
    x->pending = x->how == RUNAWAY ? RUNAWAY_PENDING : 4096;
    return 0;
}

static int iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    struct sec *x = opaque;
    static const uint8_t part[64 << 10];
    if (x->running) {
        int64_t now = g_get_monotonic_time();
        if (!x->calls_running++)
            x->first_us = now;
        x->last_us = now;
    } else {
        x->calls_stopped++;
    }
    switch (x->how) {
    case STALL:
        *pending = x->pending;
        return cpr_stream_put_bytes(s, part, 8, errp);
    case RUNAWAY:
        *pending = x->pending ? --x->pending : 0;
        return cpr_stream_put_bytes(s, part, sizeof(part), errp);
    case LATE:
        if (x->running && (g_get_monotonic_time() - x->first_us) / 1000 >= x->late_ms)
            x->pending = 0;
        *pending = x->pending;
        return x->pending ? 0 : 1;
    }
    return 0;
}

static int complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct sec *x = opaque;
    x->completes++;
    return cpr_stream_put_u32(s, 0xE0D, errp);
}

static int load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct sec *x = opaque;
    x->loaded_end += phase == CPR_LIVE_END;
    while (cpr_stream_remaining(s)) {
        uint8_t b;
        int ret = cpr_stream_get_u8(s, &b, errp);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static cpr_ctx *ctx_with(struct sec *x)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    cpr_live_ops ops = CPR_LIVE_OPS_INIT;
    ops.setup = setup;
    ops.iterate = iterate;
    ops.complete = complete;
    ops.load = load;
    ck_assert_int_eq(cpr_savevm_register_live(ctx, "blk", 2, 1, 1, &ops, x, 0, NULL, NULL), 0);
    return ctx;
}

/* The section: iterate() returns 0 with 4096 pending for ever. The one-shot save asks
 * it again only while it makes progress, then complete() writes the rest, and it loads. */
START_TEST(stalled_section_goes_to_complete)
{
    struct sec x = { .how = STALL };
    cpr_ctx *ctx = ctx_with(&x);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &s, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, s, NULL), 0);
    ck_assert_uint_le(x.calls_stopped, 2);
    ck_assert_uint_eq(x.completes, 1);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(s, &data, &len, NULL), 0);
    ck_assert_uint_lt(len, 4096);
    cpr_stream *in;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &in, NULL), 0);
    ck_assert_int_eq(cpr_savevm_load(ctx, in, NULL), 0);
    ck_assert_uint_eq(x.loaded_end, 1);
    cpr_stream_free(in);
    cpr_stream_free(s);
    cpr_ctx_free(ctx);
}
END_TEST

/* One that keeps sending after the stop fails the one-shot save, named, within its bound:
 * twice what it had left at the stop plus 1 MiB (about 50 parts of 64 KiB here). */
START_TEST(runaway_section_fails_the_save_named)
{
    struct sec x = { .how = RUNAWAY };
    cpr_ctx *ctx = ctx_with(&x);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &s, NULL), 0);
    ck_assert_cpr_fails(cpr_savevm_save(ctx, s, errp_), -EOVERFLOW,
                        "section 'blk' instance 2 did not finish after the guest stopped");
    ck_assert_uint_le(x.calls_stopped, 2 + (2 * (RUNAWAY_PENDING + (64 << 10)) + (1 << 20)) / (64 << 10));
    ck_assert_uint_eq(x.completes, 0);
    cpr_stream_free(s);
    cpr_ctx_free(ctx);
}
END_TEST

static int vm_is_running(cpr_ctx *ctx, void *opaque) { return ((struct sec *)opaque)->running; }
static int vm_stop(cpr_ctx *ctx, void *opaque) { ((struct sec *)opaque)->running = 0; return 0; }
static int vm_start(cpr_ctx *ctx, void *opaque) { ((struct sec *)opaque)->running = 1; return 0; }

static int migrate_to_file(cpr_ctx *ctx, struct sec *x, cpr_error **errp)
{
    cpr_vm_ops ops = CPR_VM_OPS_INIT;
    ops.is_running = vm_is_running;
    ops.stop = vm_stop;
    ops.start = vm_start;
    ck_assert_int_eq(cpr_migrate_set_vm_ops(ctx, &ops, x, NULL), 0);
    g_autofree char *path = g_strdup_printf("%s/cpr-progressive-%d", g_get_tmp_dir(), (int)getpid());
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    x->running = 1;
    int ret = cpr_migrate_uri(ctx, uri, 0, errp);
    unlink(path);
    return ret;
}

/* In a migration the runaway fails the job, named, and the guest runs again. */
START_TEST(runaway_section_fails_the_migration_and_the_guest_resumes)
{
    struct sec x = { .how = RUNAWAY };
    cpr_ctx *ctx = ctx_with(&x);
    ck_assert_cpr_fails(migrate_to_file(ctx, &x, errp_), -EOVERFLOW, "section 'blk' instance 2 did not finish");
    ck_assert_int_eq(x.running, 1);
    ck_assert_uint_eq(x.completes, 0);
    cpr_ctx_free(ctx);
}
END_TEST

/* While the guest runs, a section with nothing to send yet is asked at most once per idle
 * pause (10 ms), not in a busy loop: calls <= elapsed / 10 ms + 1. */
START_TEST(idle_rounds_are_paced_while_the_guest_runs)
{
    struct sec x = { .how = LATE, .late_ms = 300 };
    cpr_ctx *ctx = ctx_with(&x);
    ck_assert_int_eq(migrate_to_file(ctx, &x, NULL), 0);
    int64_t elapsed_ms = (x.last_us - x.first_us) / 1000;
    ck_assert_int_ge(elapsed_ms, 300);
    ck_assert_msg(x.calls_running <= (uint64_t)elapsed_ms / 10 + 1, "%" G_GUINT64_FORMAT " calls in %" G_GINT64_FORMAT " ms",
                  x.calls_running, elapsed_ms);
    ck_assert_uint_eq(x.completes, 1);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *progressive_suite(void)
{
    Suite *s = suite_create("progressive");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stalled_section_goes_to_complete);
    tcase_add_test(tc, runaway_section_fails_the_save_named);
    tcase_add_test(tc, runaway_section_fails_the_migration_and_the_guest_resumes);
    tcase_add_test(tc, idle_rounds_are_paced_while_the_guest_runs);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(progressive_suite)
