/* SPDX-License-Identifier: MIT */
/* The rules docs/format.md settles (its "Settled questions"), each on a stream built record by
 * record: what every reader refuses, and what the writer leaves out. */
#include <errno.h>

#include <glib.h>
#include <glib/gstdio.h>

#include <cpr/trace.h>

#include "format/schema_prefetch.h"
#include "stream_util.h"
#include "testutil.h"

#define CONFIG "{\"producer\":\"test\",\"mode\":\"normal\"}"
/* A schema with "dev" (one u32 `reg`, subsection "dev/irq" with one u32 `level`), versions 1..2. */
#define DEV_SCHEMA(kind)                                                                                      \
    "{\"schema\":1,\"sections\":[{\"name\":\"dev\",\"kind\":\"" kind "\",\"version\":2,\"min_version\":1,"   \
    "\"fields\":[{\"name\":\"reg\",\"type\":\"u32\",\"size\":4,\"count\":1}],\"subsections\":[{\"name\":"     \
    "\"dev/irq\",\"version\":1,\"min_version\":1,\"required\":false,\"fields\":[{\"name\":\"level\","         \
    "\"type\":\"u32\",\"size\":4,\"count\":1}],\"subsections\":[]}]}]}"

/* A valid schema in which "dev" is progressive: a full record of it disagrees. */
#define DEV_PROGRESSIVE \
    "{\"schema\":1,\"sections\":[{\"name\":\"dev\",\"kind\":\"progressive\",\"version\":1,\"min_version\":1}]}"

struct dev {
    uint32_t reg, level;
};

/* A full record of "dev" in `version` with `flags`: reg, then `subs` (len bytes) as its list. */
static void put_dev(cpr_stream *w, uint32_t version, unsigned int flags, const void *subs, size_t len)
{
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_FULL, "dev", 0, version, NULL, NULL), 0);
    cpr_rec_set_flags(w, flags);
    ck_assert_int_eq(cpr_stream_put_u32(w, 7, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_bytes(w, subs, len, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
}

/* A context with "dev" registered in version 2 (loads 1..2) and subsection "dev/irq". */
static cpr_ctx *dev_ctx(struct dev *obj)
{
    cpr_ctx *ctx;
    cpr_desc *d, *irq;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("dev", 2, 1, sizeof(*obj), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "reg", CPR_TYPE_U32, CPR_MEMBER(struct dev, reg), NULL), 0);
    ck_assert_int_eq(cpr_desc_new("dev/irq", 1, 1, sizeof(*obj), &irq, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(irq, "level", CPR_TYPE_U32, CPR_MEMBER(struct dev, level), NULL), 0);
    ck_assert_int_eq(cpr_desc_add_subsection(d, irq, NULL, 0, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(ctx, NULL, 0, d, obj, 0, NULL, NULL), 0);
    cpr_desc_unref(irq);
    cpr_desc_unref(d);
    return ctx;
}

/* Ends w's stream and loads it into ctx (NULL: a context with "dev" only). */
static int finish_and_load(cpr_stream *w, cpr_ctx *ctx, cpr_error **errp)
{
    struct dev obj = { 0, 0 };
    cpr_ctx *own = ctx ? NULL : dev_ctx(&obj);
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
    const void *data;
    size_t len;
    cpr_stream *r;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    int ret = cpr_savevm_load(ctx ? ctx : own, r, errp);
    cpr_stream_free(r);
    cpr_stream_free(w);
    cpr_ctx_free(own);
    return ret;
}

static const uint8_t no_subs[] = { 0 };

START_TEST(test_a_valid_stream_loads)
{
    cpr_stream *w = mem_stream_start(CONFIG, DEV_SCHEMA("full"));
    put_dev(w, 1, 0, no_subs, 1);
    cpr_error *err = NULL;
    int ret = finish_and_load(w, NULL, &err);
    ck_assert_msg(ret == 0, "%s", err ? cpr_error_message(err) : "");
}
END_TEST

/* Point 13: a (name, instance) comes once, even as two OPTIONAL records nobody loads. */
START_TEST(test_a_section_twice_is_refused_even_when_skipped)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    cpr_savevm_set_warning_handler(ctx, NULL, NULL, NULL);
    cpr_stream *w = mem_stream_start(CONFIG, NULL);
    put_dev(w, 1, CPR_REC_FLAG_OPTIONAL, no_subs, 1);
    put_dev(w, 1, CPR_REC_FLAG_OPTIONAL, no_subs, 1);
    ck_assert_cpr_fails(finish_and_load(w, ctx, errp_), -EBADMSG, "section 'dev' instance 0 appears twice");
    cpr_ctx_free(ctx);
}
END_TEST

/* Point 13: OPTIONAL only on full and start records; SKIPPABLE never on a known type. */
START_TEST(test_flags_outside_their_records_are_refused)
{
    cpr_stream *w = mem_stream_start(CONFIG, NULL);
    uint32_t id;
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_START, "ram", 0, 1, &id, NULL), 0);
    cpr_rec_set_flags(w, CPR_REC_FLAG_OPTIONAL); /* skipped by the loader, which has no "ram" */
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_END, id, NULL), 0);
    cpr_rec_set_flags(w, CPR_REC_FLAG_OPTIONAL);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "(end) at offset 110: flags 0x02 are not allowed");

    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin(w, CPR_REC_CONFIG, CPR_REC_FLAG_SKIPPABLE, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_bytes(w, CONFIG, strlen(CONFIG), NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "(config) at offset 16: flags 0x01 are not allowed");
}
END_TEST

/* Point 1: the schema record is record #1 or absent. */
START_TEST(test_the_schema_comes_right_after_the_config)
{
    cpr_stream *w = mem_stream_start(CONFIG, NULL);
    ck_assert_int_eq(cpr_rec_begin(w, 0x55, CPR_REC_FLAG_SKIPPABLE, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_SCHEMA, DEV_SCHEMA("full"), strlen(DEV_SCHEMA("full")), NULL), 0);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "must directly follow the config record");
}
END_TEST

/* Point 11: a subsection name is 1.. bytes without NUL; "dev/irq\0x" is not "dev/irq". */
START_TEST(test_subsection_names_with_nul_are_refused)
{
    static const uint8_t nul_name[] = {
        0x01, 0x09, 0x00, 0x00, 0x00, 'd', 'e', 'v', '/', 'i', 'r', 'q', 0x00, 'x', /* name */
        0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,     /* v1, length 5 */
        0x01, 0x00, 0x00, 0x00, 0x00,                                               /* level, list end */
        0x00,
    };
    cpr_stream *w = mem_stream_start(CONFIG, NULL);
    put_dev(w, 1, 0, nul_name, sizeof(nul_name));
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "subsection name contains a NUL byte");
    static const uint8_t empty_name[] = { 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                                          0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };
    w = mem_stream_start(CONFIG, NULL);
    put_dev(w, 1, 0, empty_name, sizeof(empty_name));
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "subsection name is empty");
}
END_TEST

/* Point 12: the config record's keys. */
START_TEST(test_config_keys_are_checked)
{
    static const struct { const char *cfg, *why; } bad[] = {
        { "{\"producer\":\"x\"}", "key 'mode' is missing" },
        { "{\"mode\":\"normal\"}", "key 'producer' is missing" },
        { "{\"producer\":\"x\",\"mode\":\"warp\"}", "key 'mode' is not normal" },
        { "{\"producer\":\"x\",\"mode\":\"normal\",\"machine\":5}", "key 'machine' is not a string" },
        { "{\"producer\":\"x\",\"mode\":\"normal\",\"identity\":[]}", "key 'identity' is not an object" },
        { "{\"producer\":\"x\",\"mode\":\"normal\"} {}", "not one JSON text" },
        { "[]", "not a JSON object" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        cpr_stream *w = mem_stream_start(bad[i].cfg, NULL);
        ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, bad[i].why);
    }
}
END_TEST

/* Point 10 and 12: the schema is valid and agrees with the records, for the loader too. */
START_TEST(test_the_schema_must_agree_with_the_records)
{
    cpr_stream *w = mem_stream_start(CONFIG, DEV_SCHEMA("progressive"));
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "a progressive section has no fields");

    w = mem_stream_start(CONFIG, DEV_PROGRESSIVE);
    put_dev(w, 1, 0, no_subs, 1);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "section 'dev' is progressive in the stream's schema");

    /* The loader would take version 2 (it loads 1..2); the stream's own schema says 1..1. */
    static const char *v1 =
        "{\"schema\":1,\"sections\":[{\"name\":\"dev\",\"kind\":\"full\",\"version\":1,\"min_version\":1,"
        "\"fields\":[],\"subsections\":[]}]}";
    w = mem_stream_start(CONFIG, v1);
    put_dev(w, 2, 0, no_subs, 1);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "the stream's schema gives versions 1..1");

    static const char *other = "{\"schema\":1,\"sections\":[]}";
    w = mem_stream_start(CONFIG, other);
    put_dev(w, 1, 0, no_subs, 1);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "section 'dev' is not in the stream's schema");

    static const char *two = "{\"schema\":2,\"sections\":[]}";
    w = mem_stream_start(CONFIG, two);
    ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, "key 'schema': is not 1");
}
END_TEST

/* Point 9 and 6: what a schema's fields and subsections may say. */
START_TEST(test_schema_fields_are_checked)
{
    static const struct { const char *fields, *subs, *why; } bad[] = {
        { "{\"name\":\"a\",\"type\":\"u32\",\"size\":4,\"count\":1,\"equal\":-1}", "", "equal is a non-negative" },
        { "{\"name\":\"a\",\"type\":\"string\",\"size\":0,\"count\":1,\"equal\":1}", "", "equal is a non-negative" },
        { "{\"name\":\"a\",\"type\":\"u32\",\"size\":4,\"count\":1,\"equal\":\"1\"}", "", "equal is a non-negative" },
        { "{\"name\":\"a\",\"type\":\"u32\",\"size\":2,\"count\":1}", "", "size 2 does not fit type u32" },
        { "{\"name\":\"a\",\"type\":\"u16\",\"size\":2,\"count\":4,\"count_field\":\"n\"}", "",
          "count_field 'n' is not an earlier field" },
        { "{\"name\":\"a\",\"type\":\"u8\",\"size\":1,\"count\":1,\"since\":3}", "", "since is not an integer in 1..2" },
        { "{\"name\":\"a\",\"type\":\"u8\",\"size\":1,\"count\":1},{\"name\":\"a\",\"type\":\"u8\",\"size\":1,"
          "\"count\":1}", "", "field 'a': appears twice" },
        { "", "{\"name\":\"s\",\"version\":1,\"min_version\":1,\"required\":false,\"fields\":[],\"subsections\":[]},"
              "{\"name\":\"s\",\"version\":1,\"min_version\":1,\"required\":true,\"fields\":[],\"subsections\":[]}",
          "subsection 's': appears twice" },
        { "", "{\"name\":\"s\",\"version\":1,\"min_version\":1,\"fields\":[],\"subsections\":[]}",
          "'required' is not true or false" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *schema = g_strdup_printf(
            "{\"schema\":1,\"sections\":[{\"name\":\"dev\",\"kind\":\"full\",\"version\":2,\"min_version\":1,"
            "\"fields\":[%s],\"subsections\":[%s]}]}", bad[i].fields, bad[i].subs);
        cpr_stream *w = mem_stream_start(CONFIG, schema);
        ck_assert_cpr_fails(finish_and_load(w, NULL, errp_), -EBADMSG, bad[i].why);
    }
}
END_TEST

struct outer {
    struct {
        uint32_t a, b, n, arr[2];
    } in;
};

/* A section "out" in version 1 holding a struct "in" of version 2 whose field b is since 2 and,
 * when arr_since_n, an array counted by a field n that is also since 2. */
static cpr_ctx *nested_ctx(struct outer *o, int with_array)
{
    cpr_ctx *ctx;
    cpr_desc *in, *out;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("in", 2, 1, sizeof(o->in), &in, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(in, "a", CPR_TYPE_U32, CPR_MEMBER(struct outer, in.a), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(in, "b", CPR_TYPE_U32, CPR_MEMBER(struct outer, in.b), NULL), 0);
    ck_assert_int_eq(cpr_desc_field_since(in, "b", 2, NULL), 0);
    if (with_array) {
        ck_assert_int_eq(cpr_desc_add(in, "n", CPR_TYPE_U32, CPR_MEMBER(struct outer, in.n), NULL), 0);
        ck_assert_int_eq(cpr_desc_field_since(in, "n", 2, NULL), 0);
        ck_assert_int_eq(cpr_desc_add_varray(in, "arr", CPR_TYPE_U32, CPR_MEMBER(struct outer, in.arr), "n", NULL), 0);
    }
    ck_assert_int_eq(cpr_desc_new("out", 1, 1, sizeof(*o), &out, NULL), 0);
    ck_assert_int_eq(cpr_desc_add_struct(out, "in", in, CPR_MEMBER(struct outer, in), NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(ctx, NULL, 0, out, o, 0, NULL, NULL), 0);
    cpr_desc_unref(in);
    cpr_desc_unref(out);
    return ctx;
}

/* Point 7: a nested struct's `since` is read against its section's version, by the writer too:
 * the section is written in version 1, so b (since 2) is not in the stream. */
START_TEST(test_nested_since_follows_the_section_version)
{
    struct outer saved = { { 5, 6, 0, { 0, 0 } } }, loaded = { { 0, 99, 0, { 0, 0 } } };
    cpr_ctx *src = nested_ctx(&saved, 0), *dst = nested_ctx(&loaded, 0);
    cpr_stream *w, *r;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(src, w, NULL), 0);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    cpr_error *err = NULL;
    int ret = cpr_savevm_load(dst, r, &err);
    ck_assert_msg(ret == 0, "%s", err ? cpr_error_message(err) : "");
    ck_assert_uint_eq(loaded.in.a, 5);
    ck_assert_uint_eq(loaded.in.b, 99); /* absent in version 1: the loader keeps its value */
    cpr_stream_free(r);
    cpr_stream_free(w);
    cpr_ctx_free(src);
    cpr_ctx_free(dst);
}
END_TEST

/* Point 8: the writer never writes a field whose count field is absent by version. */
START_TEST(test_writer_refuses_a_count_field_absent_by_version)
{
    struct outer saved = { { 5, 6, 1, { 7, 0 } } };
    cpr_ctx *src = nested_ctx(&saved, 1);
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_cpr_fails(cpr_savevm_save(src, w, errp_), -EINVAL, "its count field 'n' is absent in version 1");
    cpr_stream_free(w);
    cpr_ctx_free(src);
}
END_TEST

static int has_step(cpr_ctx *ctx, const char *name)
{
    int n = cpr_trace_count(ctx, NULL);
    cpr_trace_step st;
    for (int i = 0; i < n; i++) {
        cpr_trace_step_init(&st);
        if (cpr_trace_get(ctx, (size_t)i, &st, NULL) == 0 && strcmp(st.name, name) == 0)
            return 1;
    }
    return 0;
}

/* cpr-exec reads the schema ahead (format/schema_prefetch.h): a schema checked from the file
 * stands in for the loaded one only when its bytes are the loaded ones. Here the file's schema
 * is valid and the loaded stream's says "dev" is progressive: the load must still refuse it
 * (it loads, wrongly, if the prefetched schema were taken whatever the bytes). */
START_TEST(test_a_prefetched_schema_is_only_taken_for_the_same_bytes)
{
    cpr_stream *f = mem_stream_start(CONFIG, DEV_SCHEMA("full"));
    put_dev(f, 1, 0, no_subs, 1);
    g_autofree char *path = mem_stream_to_file(f, "cpr-prefetch-");
    struct dev obj = { 0, 0 };
    cpr_ctx *ctx = dev_ctx(&obj);
    cpr_schema_prefetch_start(ctx, path, 0);
    cpr_stream *w = mem_stream_start(CONFIG, DEV_PROGRESSIVE);
    put_dev(w, 1, 0, no_subs, 1);
    ck_assert_cpr_fails(finish_and_load(w, ctx, errp_), -EBADMSG, "section 'dev' is progressive in the stream's schema");
    ck_assert(has_step(ctx, "schema-prefetched")); /* it was read ahead, and not taken */
    cpr_ctx_free(ctx);
    g_unlink(path);
}
END_TEST

/* The same bytes: the load takes the schema read ahead, and the records are still checked
 * against it (a record the schema does not allow is refused). */
START_TEST(test_a_prefetched_schema_still_checks_the_records)
{
    cpr_stream *f = mem_stream_start(CONFIG, DEV_PROGRESSIVE);
    put_dev(f, 1, 0, no_subs, 1);
    g_autofree char *path = mem_stream_to_file(f, "cpr-prefetch-");
    struct dev obj = { 0, 0 };
    cpr_ctx *ctx = dev_ctx(&obj);
    cpr_schema_prefetch_start(ctx, path, 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cpr_stream *r;
    ck_assert_int_eq(cpr_stream_new_fd_reader(fd, CPR_STREAM_OWN_FD, &r, NULL), 0);
    ck_assert_cpr_fails(cpr_savevm_load(ctx, r, errp_), -EBADMSG, "section 'dev' is progressive in the stream's schema");
    cpr_stream_free(r);
    ck_assert(has_step(ctx, "schema-prefetched"));
    ck_assert(has_step(ctx, "schema-checked"));
    /* Taken once: a second load of the same file checks its schema itself, and loads. */
    cpr_ctx_free(ctx);
    g_unlink(path);

    f = mem_stream_start(CONFIG, DEV_SCHEMA("full"));
    put_dev(f, 2, 0, no_subs, 1);
    g_autofree char *good = mem_stream_to_file(f, "cpr-prefetch-");
    ctx = dev_ctx(&obj);
    cpr_schema_prefetch_start(ctx, good, 0);
    fd = open(good, O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(cpr_stream_new_fd_reader(fd, CPR_STREAM_OWN_FD, &r, NULL), 0);
    cpr_error *err = NULL;
    int ret = cpr_savevm_load(ctx, r, &err);
    ck_assert_msg(ret == 0, "%s", err ? cpr_error_message(err) : "");
    ck_assert_uint_eq(obj.reg, 7);
    cpr_stream_free(r);
    cpr_ctx_free(ctx);
    g_unlink(good);
}
END_TEST

static Suite *format_rules_suite(void)
{
    Suite *s = suite_create("format_rules");
    TCase *tc = tcase_create("settled");
    tcase_add_test(tc, test_a_valid_stream_loads);
    tcase_add_test(tc, test_a_section_twice_is_refused_even_when_skipped);
    tcase_add_test(tc, test_flags_outside_their_records_are_refused);
    tcase_add_test(tc, test_the_schema_comes_right_after_the_config);
    tcase_add_test(tc, test_subsection_names_with_nul_are_refused);
    tcase_add_test(tc, test_config_keys_are_checked);
    tcase_add_test(tc, test_the_schema_must_agree_with_the_records);
    tcase_add_test(tc, test_schema_fields_are_checked);
    tcase_add_test(tc, test_nested_since_follows_the_section_version);
    tcase_add_test(tc, test_writer_refuses_a_count_field_absent_by_version);
    tcase_add_test(tc, test_a_prefetched_schema_is_only_taken_for_the_same_bytes);
    tcase_add_test(tc, test_a_prefetched_schema_still_checks_the_records);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(format_rules_suite)
