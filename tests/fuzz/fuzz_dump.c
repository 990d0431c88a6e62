/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for cpr-dump's walker (tools/dump.c): any bytes, as a stream whose schema
 * record is as untrusted as the rest. It must render or refuse, never crash or loop; a
 * refusal must say why. fuzz_load_make_seed() writes a stream with a schema covering every
 * field kind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include <cpr/cpr.h>

#include "dump.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cpr_stream *s;
    if (cpr_stream_new_mem_source(data, size, &s, NULL) < 0)
        return 0;
    cpr_stream_set_limit(s, CPR_STREAM_LIMIT_RECORD, 1u << 20, NULL);
    cpr_stream_set_limit(s, CPR_STREAM_LIMIT_STRING, 4096, NULL);
    json_object *root = NULL;
    char *problem = cpr_dump_stream(s, &root);
    if (!root || (problem && !problem[0]))
        abort();
    /* Rendering must work on whatever was decoded. */
    if (!json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN))
        abort();
    g_free(problem);
    json_object_put(root);
    cpr_stream_free(s);
    return 0;
}

struct in {
    uint16_t a;
    int8_t b;
};

struct dev {
    uint8_t flag;
    int64_t i64;
    uint32_t n;
    uint16_t arr[4];
    uint8_t blen;
    uint8_t buf[8];
    char *name;
    struct in ins[2];
    uint8_t nin;
    struct in vin[3];
    uint32_t custom;
    uint32_t sub;
};

static int put_custom(cpr_stream *s, const void *f, void *o, cpr_error **e)
{
    return cpr_stream_put_u32(s, *(const uint32_t *)f, e);
}

static int get_custom(cpr_stream *s, void *f, uint64_t len, void *o, cpr_error **e)
{
    return cpr_stream_get_u32(s, f, e);
}

static int always(const void *o)
{
    return 1;
}

int fuzz_load_make_seed(void **data, size_t *len)
{
    static struct dev v = { 1, -5, 3, { 1, 2, 3 }, 2, "hi", NULL, { { 1, -1 }, { 2, -2 } }, 1, { { 9, 9 } }, 7, 8 };
    v.name = "seed";
    cpr_ctx *ctx;
    cpr_desc *d, *in, *sub;
    cpr_ctx_new(&ctx, 0, NULL);
    cpr_desc_new("in", 1, 1, sizeof(struct in), &in, NULL);
    cpr_desc_add(in, "a", CPR_TYPE_U16, CPR_MEMBER(struct in, a), NULL);
    cpr_desc_add(in, "b", CPR_TYPE_I8, CPR_MEMBER(struct in, b), NULL);
    cpr_desc_new("dev", 2, 1, sizeof(struct dev), &d, NULL);
    cpr_desc_add(d, "flag", CPR_TYPE_BOOL, CPR_MEMBER(struct dev, flag), NULL);
    cpr_desc_add(d, "i64", CPR_TYPE_I64, CPR_MEMBER(struct dev, i64), NULL);
    cpr_desc_add(d, "n", CPR_TYPE_U32, CPR_MEMBER(struct dev, n), NULL);
    cpr_desc_add_varray(d, "arr", CPR_TYPE_U16, CPR_MEMBER(struct dev, arr), "n", NULL);
    cpr_desc_add(d, "blen", CPR_TYPE_U8, CPR_MEMBER(struct dev, blen), NULL);
    cpr_desc_add_varray(d, "buf", CPR_TYPE_BYTES, CPR_MEMBER(struct dev, buf), "blen", NULL);
    cpr_desc_add(d, "name", CPR_TYPE_STRING, CPR_MEMBER(struct dev, name), NULL);
    cpr_desc_field_since(d, "name", 2, NULL);
    cpr_desc_add_struct(d, "ins", in, CPR_MEMBER(struct dev, ins), NULL);
    cpr_desc_add(d, "nin", CPR_TYPE_U8, CPR_MEMBER(struct dev, nin), NULL);
    cpr_desc_add_struct_varray(d, "vin", in, CPR_MEMBER(struct dev, vin), "nin", NULL);
    cpr_desc_add_custom(d, "custom", CPR_MEMBER(struct dev, custom), put_custom, get_custom, NULL, NULL);
    cpr_desc_new("dev/sub", 1, 1, sizeof(struct dev), &sub, NULL);
    cpr_desc_add(sub, "sub", CPR_TYPE_U32, CPR_MEMBER(struct dev, sub), NULL);
    cpr_desc_add_subsection(d, sub, always, 0, NULL);
    cpr_savevm_register(ctx, NULL, 0, d, &v, 0, NULL, NULL);
    cpr_desc_unref(sub);
    cpr_desc_unref(in);
    cpr_desc_unref(d);
    cpr_stream *w;
    int ret = cpr_stream_new_mem_sink(0, &w, NULL);
    if (ret == 0)
        ret = cpr_savevm_save(ctx, w, NULL);
    if (ret == 0)
        ret = cpr_stream_mem_steal(w, data, len, NULL);
    cpr_stream_free(w);
    cpr_ctx_free(ctx);
    return ret;
}
