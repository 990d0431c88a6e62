/* SPDX-License-Identifier: MIT */
/* The golden vector of docs/format.md section 5 (tests/unit/golden_vector.py prints it): the
 * writer produces exactly these bytes, the reader accepts them, and the loader loads them into a
 * description and a progressive section. */
#include <errno.h>

#include "stream_util.h"
#include "testutil.h"

static const uint8_t golden[] = {
    0x89, 0x43, 0x50, 0x52, 0x0d, 0x0a, 0x1a, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x1e, 0x21, 0xb8, 0xcc,
    0x25, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x33, 0x2b, 0xc0, 0x30,
    0x7b, 0x22, 0x70, 0x72, 0x6f, 0x64, 0x75, 0x63, 0x65, 0x72, 0x22, 0x3a, 0x22, 0x67, 0x6f, 0x6c,
    0x64, 0x65, 0x6e, 0x22, 0x2c, 0x22, 0x6d, 0x6f, 0x64, 0x65, 0x22, 0x3a, 0x22, 0x6e, 0x6f, 0x72,
    0x6d, 0x61, 0x6c, 0x22, 0x7d, 0xa3, 0xbc, 0x4f, 0x1e, 0xdd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x02, 0x00, 0x00, 0x00, 0x9a, 0xbd, 0x13, 0x5a, 0x7b, 0x22, 0x73, 0x63, 0x68, 0x65, 0x6d,
    0x61, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x73, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x22, 0x3a,
    0x5b, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x64, 0x65, 0x76, 0x22, 0x2c, 0x22,
    0x6b, 0x69, 0x6e, 0x64, 0x22, 0x3a, 0x22, 0x66, 0x75, 0x6c, 0x6c, 0x22, 0x2c, 0x22, 0x76, 0x65,
    0x72, 0x73, 0x69, 0x6f, 0x6e, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x6d, 0x69, 0x6e, 0x5f, 0x76, 0x65,
    0x72, 0x73, 0x69, 0x6f, 0x6e, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x66, 0x69, 0x65, 0x6c, 0x64, 0x73,
    0x22, 0x3a, 0x5b, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x72, 0x65, 0x67, 0x22,
    0x2c, 0x22, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x75, 0x33, 0x32, 0x22, 0x2c, 0x22, 0x73,
    0x69, 0x7a, 0x65, 0x22, 0x3a, 0x34, 0x2c, 0x22, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0x22, 0x3a, 0x31,
    0x7d, 0x5d, 0x2c, 0x22, 0x73, 0x75, 0x62, 0x73, 0x65, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x73, 0x22,
    0x3a, 0x5b, 0x5d, 0x7d, 0x2c, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x72, 0x61,
    0x6d, 0x22, 0x2c, 0x22, 0x6b, 0x69, 0x6e, 0x64, 0x22, 0x3a, 0x22, 0x70, 0x72, 0x6f, 0x67, 0x72,
    0x65, 0x73, 0x73, 0x69, 0x76, 0x65, 0x22, 0x2c, 0x22, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e,
    0x22, 0x3a, 0x31, 0x2c, 0x22, 0x6d, 0x69, 0x6e, 0x5f, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e,
    0x22, 0x3a, 0x31, 0x7d, 0x5d, 0x7d, 0x8b, 0x4c, 0x5a, 0x4d, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x02, 0x0b, 0x4f, 0x55, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x64, 0x65, 0x76, 0x44, 0x33, 0x22,
    0x11, 0x00, 0xca, 0x0e, 0xc9, 0xb2, 0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00,
    0x00, 0x00, 0x9b, 0x0a, 0xfa, 0x55, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x72, 0x61, 0x6d, 0xa9, 0x97, 0xe0, 0x77, 0x05, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00, 0x11, 0xa3, 0xd5, 0x89, 0x01, 0x00, 0x00,
    0x00, 0xaa, 0x07, 0x84, 0xca, 0xb4, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x13, 0x00,
    0x00, 0x00, 0x99, 0xdd, 0xe1, 0x65, 0x01, 0x00, 0x00, 0x00, 0x7f, 0xe1, 0x22, 0x95, 0x18, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x42, 0x9b, 0x88, 0xc6, 0x06, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xbe, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x3f, 0xb1, 0xd2,
};

static const char golden_schema[] =
    "{\"schema\":1,\"sections\":["
    "{\"name\":\"dev\",\"kind\":\"full\",\"version\":1,\"min_version\":1,"
    "\"fields\":[{\"name\":\"reg\",\"type\":\"u32\",\"size\":4,\"count\":1}],\"subsections\":[]},"
    "{\"name\":\"ram\",\"kind\":\"progressive\",\"version\":1,\"min_version\":1}]}";

START_TEST(test_writer_produces_the_golden_vector)
{
    cpr_stream *w = mem_stream_start("{\"producer\":\"golden\",\"mode\":\"normal\"}", golden_schema);
    uint32_t id;
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_FULL, "dev", 0, 1, NULL, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u32(w, 0x11223344, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u8(w, 0, NULL), 0); /* dev's (empty) subsection list */
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_START, "ram", 0, 1, &id, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u8(w, 0xAA, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_END, id, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_uint_eq(len, sizeof(golden));
    for (size_t i = 0; i < len; i++)
        ck_assert_msg(((const uint8_t *)data)[i] == golden[i], "byte 0x%zx differs", i);
    cpr_stream_free(w);
}
END_TEST

START_TEST(test_reader_decodes_the_golden_vector)
{
    cpr_stream *s;
    struct cpr_rec r;
    ck_assert_int_eq(cpr_stream_new_mem_source(golden, sizeof(golden), &s, NULL), 0);
    unsigned int minor = 99;
    ck_assert_int_eq(cpr_rec_read_stream_header(s, &minor, NULL), 0);
    ck_assert_uint_eq(minor, 0);
    static const struct { unsigned int type; uint64_t offset; const char *name; } want[] = {
        { CPR_REC_CONFIG, 0x10, NULL }, { CPR_REC_SCHEMA, 0x49, NULL }, { CPR_REC_FULL, 0x13a, "dev" },
        { CPR_REC_START, 0x166, "ram" }, { CPR_REC_PART, 0x18d, "ram" }, { CPR_REC_END, 0x1a6, "ram" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
        ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
        ck_assert_uint_eq(r.index, i);
        ck_assert_uint_eq(r.type, want[i].type);
        ck_assert_uint_eq(r.offset, want[i].offset);
        if (want[i].name)
            ck_assert_str_eq(r.name, want[i].name);
    }
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 0);
    ck_assert_uint_eq(cpr_stream_offset(s), sizeof(golden));
    cpr_stream_free(s);
}
END_TEST

/* The golden vector's progressive section "ram": keeps the bytes of its part. */
struct golden_ram {
    uint8_t part[4];
    size_t len;
};

static int ram_setup(cpr_stream *s, void *o, cpr_error **e) { return 0; }
static int ram_iterate(cpr_stream *s, uint64_t *p, void *o, cpr_error **e) { return 1; }
static int ram_complete(cpr_stream *s, void *o, cpr_error **e) { return 0; }
static int ram_load(cpr_stream *s, uint32_t version, int phase, void *o, cpr_error **e)
{
    struct golden_ram *r = o;
    uint64_t n = cpr_stream_remaining(s);
    if (phase != CPR_LIVE_PART)
        return n ? -EBADMSG : 0;
    if (n > sizeof(r->part) - r->len)
        return -EBADMSG;
    const void *p;
    int ret = cpr_stream_get_ptr(s, &p, n, e);
    if (ret == 0) {
        memcpy(r->part + r->len, p, n);
        r->len += n;
    }
    return ret;
}

/* The golden `dev` is a described section and the schema agrees with the records: the strict
 * loader loads the vector into a description with one u32 and a progressive "ram". */
START_TEST(test_loader_loads_the_golden_vector)
{
    cpr_ctx *ctx;
    cpr_desc *d;
    uint32_t reg = 0;
    struct golden_ram ram = { { 0 }, 0 };
    static const cpr_live_ops ops = { .size = sizeof(cpr_live_ops), .setup = ram_setup, .iterate = ram_iterate,
                                      .complete = ram_complete, .load = ram_load };
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("dev", 1, 1, sizeof(reg), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "reg", CPR_TYPE_U32, 0, sizeof(reg), NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(ctx, NULL, 0, d, &reg, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register_live(ctx, "ram", 0, 1, 1, &ops, &ram, 0, NULL, NULL), 0);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_source(golden, sizeof(golden), &s, NULL), 0);
    cpr_error *err = NULL;
    int ret = cpr_savevm_load(ctx, s, &err);
    ck_assert_msg(ret == 0, "%s", err ? cpr_error_message(err) : "");
    ck_assert_uint_eq(reg, 0x11223344);
    ck_assert_uint_eq(ram.len, 1);
    ck_assert_uint_eq(ram.part[0], 0xaa);
    cpr_stream_free(s);
    cpr_desc_unref(d);
    cpr_ctx_free(ctx);
}
END_TEST

struct uart {
    uint8_t lcr;
    uint32_t n;
    uint16_t regs[4];
    char *name;
    uint32_t level;
};

static int always(const void *obj)
{
    return 1;
}

START_TEST(test_described_body_matches_the_documented_example)
{
    static const uint8_t body[] = {
        0x03, 0x02, 0x00, 0x00, 0x00, 0x11, 0x11, 0x22, 0x22, 0x05, 0x00, 0x00, 0x00, 0x74, 0x74, 0x79, 0x53,
        0x30, 0x01, 0x08, 0x00, 0x00, 0x00, 0x75, 0x61, 0x72, 0x74, 0x2f, 0x69, 0x72, 0x71, 0x01, 0x00, 0x00,
        0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    static const char schema[] =
        "{\"schema\":1,\"sections\":[{\"name\":\"uart\",\"version\":2,\"min_version\":1,\"fields\":[{\"name\""
        ":\"lcr\",\"type\":\"u8\",\"size\":1,\"count\":1},{\"name\":\"n\",\"type\":\"u32\",\"size\":4,\"count"
        "\":1},{\"name\":\"regs\",\"type\":\"u16\",\"size\":2,\"count\":4,\"count_field\":\"n\"},{\"name\":\""
        "name\",\"type\":\"string\",\"size\":0,\"count\":1,\"since\":2}],\"subsections\":[{\"name\":\"uart\\/"
        "irq\",\"version\":1,\"min_version\":1,\"fields\":[{\"name\":\"level\",\"type\":\"u32\",\"size\":4,\""
        "count\":1}],\"subsections\":[],\"required\":false}],\"kind\":\"full\"}]}";
    cpr_ctx *ctx;
    cpr_desc *d, *sub;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("uart", 2, 1, sizeof(struct uart), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "lcr", CPR_TYPE_U8, CPR_MEMBER(struct uart, lcr), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "n", CPR_TYPE_U32, CPR_MEMBER(struct uart, n), NULL), 0);
    ck_assert_int_eq(cpr_desc_add_varray(d, "regs", CPR_TYPE_U16, CPR_MEMBER(struct uart, regs), "n", NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "name", CPR_TYPE_STRING, CPR_MEMBER(struct uart, name), NULL), 0);
    ck_assert_int_eq(cpr_desc_field_since(d, "name", 2, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("uart/irq", 1, 1, sizeof(struct uart), &sub, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(sub, "level", CPR_TYPE_U32, CPR_MEMBER(struct uart, level), NULL), 0);
    ck_assert_int_eq(cpr_desc_add_subsection(d, sub, always, 0, NULL), 0);
    struct uart u = { 0x03, 2, { 0x1111, 0x2222 }, "ttyS0", 1 };
    ck_assert_int_eq(cpr_savevm_register(ctx, NULL, 0, d, &u, 0, NULL, NULL), 0);
    cpr_stream *w, *r;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, w, NULL), 0);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(r, NULL, NULL), 0);
    struct cpr_rec rec;
    int found = 0;
    while (cpr_rec_next(r, &rec, NULL) > 0) {
        if (rec.type == CPR_REC_SCHEMA) /* format.md section 4 shows it with white space */
            ck_assert_msg(rec.len == strlen(schema) && memcmp(rec.payload, schema, rec.len) == 0, "%.*s",
                          (int)rec.len, (const char *)rec.payload);
        if (rec.type != CPR_REC_FULL)
            continue;
        const void *p;
        ck_assert_uint_eq(cpr_stream_remaining(r), sizeof(body));
        ck_assert_int_eq(cpr_stream_get_ptr(r, &p, sizeof(body), NULL), 0);
        ck_assert_int_eq(memcmp(p, body, sizeof(body)), 0);
        found = 1;
    }
    ck_assert(found);
    cpr_stream_free(r);
    cpr_stream_free(w);
    cpr_desc_unref(sub);
    cpr_desc_unref(d);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *format_suite(void)
{
    Suite *s = suite_create("format");
    TCase *tc = tcase_create("golden");
    tcase_add_test(tc, test_writer_produces_the_golden_vector);
    tcase_add_test(tc, test_reader_decodes_the_golden_vector);
    tcase_add_test(tc, test_loader_loads_the_golden_vector);
    tcase_add_test(tc, test_described_body_matches_the_documented_example);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(format_suite)
