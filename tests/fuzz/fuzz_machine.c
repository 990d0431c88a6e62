/* SPDX-License-Identifier: MIT */
/* The machine of fuzz_machine.h, and the seed writer the replay driver calls. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "fuzz_machine.h"

static int needed(const void *obj)
{
    return 1;
}

static int custom_put(cpr_stream *s, const void *field, void *opaque, cpr_error **errp)
{
    return cpr_stream_put_u32(s, *(const uint32_t *)field, errp);
}

static int custom_get(cpr_stream *s, void *field, uint64_t len, void *opaque, cpr_error **errp)
{
    return cpr_stream_get_u32(s, field, errp);
}

static int live_setup(cpr_stream *s, void *o, cpr_error **e)
{
    return cpr_stream_put_u64(s, 4096, e);
}

static int live_iterate(cpr_stream *s, uint64_t *pending, void *o, cpr_error **e)
{
    static const uint8_t page[64] = { 1, 2, 3 };
    *pending = 0;
    int ret = cpr_stream_put_u64(s, 0, e);
    if (ret >= 0)
        ret = cpr_stream_put_bytes(s, page, sizeof(page), e);
    return ret < 0 ? ret : 1;
}

static int live_complete(cpr_stream *s, void *o, cpr_error **e)
{
    return 0;
}

/* Consumes (offset, 64-byte page) pairs, as a RAM section would. */
static int live_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **e)
{
    struct fuzz_machine *m = opaque;
    uint64_t v;
    const void *page;
    if (phase == 0)
        return cpr_stream_get_u64(s, &v, e);
    while (cpr_stream_remaining(s)) {
        int ret = cpr_stream_get_u64(s, &v, e);
        if (ret >= 0)
            ret = cpr_stream_get_ptr(s, &page, 64, e);
        if (ret < 0)
            return ret;
        m->ram_bytes += 64;
    }
    return 0;
}

void fuzz_machine_init(struct fuzz_machine *m)
{
    memset(m, 0, sizeof(*m));
    cpr_ctx_new(&m->ctx, 0, NULL);
    cpr_desc *in, *d, *sub;
    cpr_desc_new("inner", 1, 1, sizeof(struct inner), &in, NULL);
    cpr_desc_add(in, "a", CPR_TYPE_U16, CPR_MEMBER(struct inner, a), NULL);
    cpr_desc_add(in, "b", CPR_TYPE_I64, CPR_MEMBER(struct inner, b), NULL);
    cpr_desc_new("dev", 2, 1, sizeof(struct dev), &d, NULL);
    cpr_desc_add(d, "u8", CPR_TYPE_U8, CPR_MEMBER(struct dev, u8), NULL);
    cpr_desc_add(d, "i32", CPR_TYPE_I32, CPR_MEMBER(struct dev, i32), NULL);
    cpr_desc_add(d, "flag", CPR_TYPE_BOOL, CPR_MEMBER(struct dev, flag), NULL);
    cpr_desc_add(d, "n", CPR_TYPE_U32, CPR_MEMBER(struct dev, n), NULL);
    cpr_desc_add_varray(d, "arr", CPR_TYPE_U16, CPR_MEMBER(struct dev, arr), "n", NULL);
    cpr_desc_add(d, "blen", CPR_TYPE_U8, CPR_MEMBER(struct dev, blen), NULL);
    cpr_desc_add_varray(d, "buf", CPR_TYPE_BYTES, CPR_MEMBER(struct dev, buf), "blen", NULL);
    cpr_desc_add(d, "name", CPR_TYPE_STRING, CPR_MEMBER(struct dev, name), NULL);
    cpr_desc_field_since(d, "name", 2, NULL);
    cpr_desc_add_struct(d, "in", in, CPR_MEMBER(struct dev, in), NULL);
    cpr_desc_add(d, "ni", CPR_TYPE_U32, CPR_MEMBER(struct dev, ni), NULL);
    cpr_desc_add_struct_varray(d, "vin", in, CPR_MEMBER(struct dev, vin), "ni", NULL);
    cpr_desc_add_custom(d, "magic", CPR_MEMBER(struct dev, magic), custom_put, custom_get, NULL, NULL);
    cpr_desc_new("dev/sub", 1, 1, sizeof(struct dev), &sub, NULL);
    cpr_desc_add(sub, "sub", CPR_TYPE_U32, CPR_MEMBER(struct dev, sub), NULL);
    cpr_desc_add_subsection(d, sub, needed, 0, NULL);
    cpr_savevm_register(m->ctx, NULL, 0, d, &m->dev, 0, NULL, NULL);
    cpr_desc_unref(sub);
    cpr_desc_unref(d);
    cpr_desc_unref(in);
    static const cpr_live_ops ops = { .size = sizeof(cpr_live_ops), .setup = live_setup, .iterate = live_iterate,
                                      .complete = live_complete, .load = live_load };
    cpr_savevm_register_live(m->ctx, "ram", 0, 1, 1, &ops, m, 0, NULL, NULL);
    cpr_savevm_set_machine(m->ctx, "fuzz", NULL);
}

void fuzz_machine_free(struct fuzz_machine *m)
{
    free(m->dev.name);
    cpr_ctx_free(m->ctx);
}

int fuzz_load_make_seed(void **data, size_t *len)
{
    struct fuzz_machine m;
    fuzz_machine_init(&m);
    m.dev = (struct dev){ .u8 = 1, .i32 = -9, .flag = 1, .n = 3, .arr = { 1, 2, 3 }, .blen = 4, .buf = "abcd",
                          .in = { { 1, -1 }, { 2, -2 } }, .ni = 1, .vin = { { 5, 5 } }, .magic = 0x600d, .sub = 7 };
    m.dev.name = strdup("fuzz-dev");
    cpr_stream *w;
    int ret = cpr_stream_new_mem_sink(0, &w, NULL);
    if (ret == 0)
        ret = cpr_savevm_save(m.ctx, w, NULL);
    if (ret == 0)
        ret = cpr_stream_mem_steal(w, data, len, NULL);
    cpr_stream_free(w);
    fuzz_machine_free(&m);
    return ret;
}
