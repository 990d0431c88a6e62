/* SPDX-License-Identifier: MIT */
/*
 * Size-first structs (docs/abi.md, "How structs grow"): each has an _INIT macro and an
 * _init() function, and every function that reads one applies the same rule: an older
 * caller's missing members read as zero, a newer caller's unknown bytes must be zero (else
 * -EINVAL naming the struct and the offset), and a size below the first version is refused.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/sized.h"
#include "testutil.h"

static int noop_live(cpr_stream *s, void *opaque, cpr_error **errp) { return 0; }
static int noop_iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp) { return 1; }
static int noop_load(cpr_stream *s, uint32_t v, int phase, void *opaque, cpr_error **errp) { return 0; }

/* The macro and the function give the same bytes. */
START_TEST(init_macros_match_functions)
{
#define SAME_INIT(type, macro, fn)                                                                \
    do {                                                                                          \
        type a_ = macro, b_;                                                                      \
        memset(&b_, 0xff, sizeof(b_));                                                            \
        fn(&b_);                                                                                  \
        ck_assert_uint_eq(a_.size, sizeof(type));                                                 \
        ck_assert_int_eq(memcmp(&a_, &b_, sizeof(a_)), 0);                                        \
    } while (0)
    SAME_INIT(cpr_vm_ops, CPR_VM_OPS_INIT, cpr_vm_ops_init);
    SAME_INIT(cpr_live_ops, CPR_LIVE_OPS_INIT, cpr_live_ops_init);
    SAME_INIT(cpr_migration_info, CPR_MIGRATION_INFO_INIT, cpr_migration_info_init);
    SAME_INIT(cpr_transfer_opts, CPR_TRANSFER_OPTS_INIT, cpr_transfer_opts_init);
}
END_TEST

struct wide { uint32_t size; uint32_t a; uint64_t b; uint64_t newer; };

/* The helper itself: short, exact, longer-but-zero, longer-and-set, too short. */
START_TEST(sized_read_rule)
{
    struct wide in = { sizeof(in), 7, 9, 0 }, out;
    size_t known = offsetof(struct wide, newer);
    memset(&out, 0xee, sizeof(out));
    ck_assert_int_eq(cpr_sized_read(&out, known, &in, 8, "struct wide", NULL), 0);
    ck_assert_uint_eq(out.size, known);
    ck_assert_uint_eq(out.a, 7);
    ck_assert_uint_eq(out.b, 9);
    in.newer = 1;
    ck_assert_cpr_fails(cpr_sized_read(&out, known, &in, 8, "struct wide", errp_), -EINVAL,
                        "struct wide: byte 16 is set");
    /* An older caller: what its size leaves out keeps the library's default. */
    in.size = 8;
    memset(&out, 0, sizeof(out));
    out.b = 42;
    ck_assert_int_eq(cpr_sized_read(&out, known, &in, 8, "struct wide", NULL), 0);
    ck_assert_uint_eq(out.a, 7);
    ck_assert_uint_eq(out.b, 42);
    in.size = 4;
    ck_assert_cpr_fails(cpr_sized_read(&out, known, &in, 8, "struct wide", errp_), -EINVAL,
                        "struct wide: size 4 is smaller");
    ck_assert_cpr_fails(cpr_sized_read(&out, known, NULL, 8, "struct wide", errp_), -EINVAL, "struct wide is NULL");
}
END_TEST

/* A newer caller's struct: sizeof + 8 bytes, the extra ones zero (accepted) or set (refused). */
#define NEWER(type, var, init)                                                                   \
    union { type t; uint8_t bytes[sizeof(type) + 8]; } var;                                      \
    memset(&var, 0, sizeof(var));                                                               \
    init(&var.t);                                                                               \
    var.t.size = sizeof(type) + 8

/* The three readers agree: cpr_vm_ops, cpr_live_ops and cpr_transfer_opts. */
/* Output structs: an older caller's shorter struct is filled only as far as its size; a size
 * below the size member itself (garbage, or never initialised) is refused, not underflowed
 * into a copy past the struct. */
START_TEST(writers_fill_as_far_as_the_callers_size)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    for (uint32_t bad = 0; bad < sizeof(uint32_t); bad++) {
        cpr_migration_info mi = { .size = bad };
        ck_assert_cpr_fails(cpr_migrate_query(ctx, &mi, errp_), -EINVAL, "cpr_migration_info");
        cpr_lazy_restore_info li = { .size = bad };
        ck_assert_cpr_fails(cpr_lazy_restore_query(ctx, &li, errp_), -EINVAL, "cpr_lazy_restore_info");
    }
    /* An older caller's struct of 8 bytes: the status is filled, nothing past it is written. */
    union {
        cpr_migration_info info;
        uint8_t bytes[sizeof(cpr_migration_info)];
    } u;
    memset(&u, 0xa5, sizeof(u));
    u.info.size = 8;
    ck_assert_int_eq(cpr_migrate_query(ctx, &u.info, NULL), 0);
    ck_assert_uint_eq(u.info.size, 8);
    for (size_t i = 8; i < sizeof(u); i++)
        ck_assert_uint_eq(u.bytes[i], 0xa5);
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(readers_share_the_rule)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    NEWER(cpr_vm_ops, vm, cpr_vm_ops_init);
    ck_assert_int_eq(cpr_migrate_set_vm_ops(ctx, &vm.t, NULL, NULL), 0);
    vm.bytes[sizeof(cpr_vm_ops) + 3] = 1;
    ck_assert_cpr_fails(cpr_migrate_set_vm_ops(ctx, &vm.t, NULL, errp_), -EINVAL, "cpr_vm_ops: byte");

    NEWER(cpr_live_ops, live, cpr_live_ops_init);
    live.t.setup = noop_live;
    live.t.complete = noop_live;
    live.t.iterate = noop_iterate;
    live.t.load = noop_load;
    ck_assert_int_eq(cpr_savevm_register_live(ctx, "a", 0, 1, 1, &live.t, NULL, 0, NULL, NULL), 0);
    live.bytes[sizeof(cpr_live_ops) + 3] = 1;
    ck_assert_cpr_fails(cpr_savevm_register_live(ctx, "b", 0, 1, 1, &live.t, NULL, 0, NULL, errp_), -EINVAL,
                        "section 'b': cpr_live_ops: byte");

    NEWER(cpr_transfer_opts, opts, cpr_transfer_opts_init);
    opts.t.timeout_ms = 0;
    opts.bytes[sizeof(cpr_transfer_opts) + 3] = 1;
    ck_assert_cpr_fails(cpr_transfer_connect("/nonexistent/cpr.sock", &opts.t, errp_), -EINVAL,
                        "cpr_transfer_opts: byte");
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *sized_suite(void)
{
    Suite *s = suite_create("sized");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, init_macros_match_functions);
    tcase_add_test(tc, sized_read_rule);
    tcase_add_test(tc, readers_share_the_rule);
    tcase_add_test(tc, writers_fill_as_far_as_the_callers_size);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(sized_suite)
