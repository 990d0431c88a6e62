/* SPDX-License-Identifier: MIT */
/*
 * The one-shot save holds the whole guest: with RAM blocks registered, cpr_savevm_save()
 * writes their pages (the "ram" section a migration sends) and cpr_savevm_load() puts them
 * back into the loading context's blocks of the same names.
 */
#include <errno.h>
#include <string.h>

#include "testutil.h"

#define RAM_BYTES (16u << 20)
#define PAGE 4096u

static cpr_ctx *ctx_with_ram(cpr_ram_block **b)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_ram_block_new(ctx, "pc.ram", RAM_BYTES, PAGE, 0, b, NULL), 0);
    return ctx;
}

/* Saves ctx into a new memory stream (the caller frees it) and points *data at its bytes. */
static cpr_stream *save(cpr_ctx *ctx, const void **data, size_t *len)
{
    cpr_stream *out;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &out, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, out, NULL), 0);
    ck_assert_int_eq(cpr_stream_mem_data(out, data, len, NULL), 0);
    return out;
}

static uint8_t pattern(uint64_t off)
{
    return (uint8_t)(off * 7 + off / PAGE + 1);
}

START_TEST(one_shot_save_holds_guest_ram)
{
    cpr_ram_block *b;
    cpr_ctx *src = ctx_with_ram(&b);
    uint8_t *host = cpr_ram_block_host(b);
    for (uint64_t i = 0; i < RAM_BYTES; i++)
        host[i] = pattern(i);
    memset(host + 5 * PAGE, 0, PAGE); /* a zero page travels too (without data) */
    const void *data;
    size_t len;
    cpr_stream *out = save(src, &data, &len);
    ck_assert_uint_ge(len, RAM_BYTES - PAGE);

    cpr_ram_block *db;
    cpr_ctx *dst = ctx_with_ram(&db);
    uint8_t *dhost = cpr_ram_block_host(db);
    memset(dhost + 5 * PAGE, 0xAA, PAGE);
    cpr_stream *in;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &in, NULL), 0);
    ck_assert_int_eq(cpr_savevm_load(dst, in, NULL), 0);
    ck_assert_int_eq(memcmp(host, dhost, RAM_BYTES), 0);
    cpr_stream_free(in);
    cpr_stream_free(out);
    cpr_ctx_free(src);
    cpr_ctx_free(dst);
}
END_TEST

/* A loader whose block has another size refuses the snapshot, naming the block. */
START_TEST(one_shot_load_refuses_another_ram_layout)
{
    cpr_ram_block *b;
    cpr_ctx *src = ctx_with_ram(&b);
    const void *data;
    size_t len;
    cpr_stream *out = save(src, &data, &len);
    cpr_ctx *dst;
    ck_assert_int_eq(cpr_ctx_new(&dst, 0, NULL), 0);
    ck_assert_int_eq(cpr_ram_block_new(dst, "pc.ram", RAM_BYTES / 2, PAGE, 0, &b, NULL), 0);
    cpr_stream *in;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &in, NULL), 0);
    cpr_error *err = NULL;
    ck_assert_int_lt(cpr_savevm_load(dst, in, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(cpr_error_message(err), "pc.ram"), "%s", cpr_error_message(err));
    cpr_error_free(err);
    cpr_stream_free(in);
    cpr_stream_free(out);
    cpr_ctx_free(src);
    cpr_ctx_free(dst);
}
END_TEST

static Suite *snapshot_ram_suite(void)
{
    Suite *s = suite_create("snapshot_ram");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_shot_save_holds_guest_ram);
    tcase_add_test(tc, one_shot_load_refuses_another_ram_layout);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(snapshot_ram_suite)
