/* SPDX-License-Identifier: MIT */
/* The section registry, progressive sections interleaved, and strict loading: unknown and
 * optional sections, identity checks, and no post_load on any damaged stream. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "format/record.h"
#include "format/savevm.h"
#include "format/stream.h"
#include "testutil.h"

struct regs {
    uint32_t pc;
    uint64_t acc;
};

static int post_loads;
static int regs_post_load(void *obj, uint32_t version, cpr_error **errp)
{
    post_loads++;
    return 0;
}

static cpr_desc *regs_desc(void)
{
    cpr_desc *d;
    ck_assert_int_eq(cpr_desc_new("cpu", 1, 1, sizeof(struct regs), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "pc", CPR_TYPE_U32, CPR_MEMBER(struct regs, pc), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "acc", CPR_TYPE_U64, CPR_MEMBER(struct regs, acc), NULL), 0);
    ck_assert_int_eq(cpr_desc_set_hooks(d, NULL, NULL, NULL, regs_post_load, NULL), 0);
    return d;
}

/* A progressive section that sends `total` numbered chunks, `per_part` per iterate call,
 * and on load checks that they arrive in order. */
struct live {
    const char *tag;
    int total, per_part, sent;
    int got, started, ended, done_calls, cleanups;
    GString *log; /* shared: records the interleaving */
};

static int live_setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct live *l = opaque;
    l->sent = 0;
    return cpr_stream_put_u32(s, (uint32_t)l->total, errp);
}

static int live_iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    struct live *l = opaque;
    for (int i = 0; i < l->per_part && l->sent < l->total; i++) {
        int ret = cpr_stream_put_u32(s, (uint32_t)l->sent++, errp);
        if (ret < 0)
            return ret;
    }
    *pending = (uint64_t)(l->total - l->sent) * 4;
    return l->sent == l->total;
}

static int live_complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    return cpr_stream_put_u32(s, 0xE0Du, errp);
}

static int live_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct live *l = opaque;
    uint32_t v;
    int ret;
    if (l->log)
        g_string_append_printf(l->log, "%s%d ", l->tag, phase);
    if (phase == CPR_LIVE_START) {
        l->started++;
        return cpr_stream_get_u32(s, &v, errp);
    }
    if (phase == CPR_LIVE_END) {
        l->ended++;
        if ((ret = cpr_stream_get_u32(s, &v, errp)) < 0)
            return ret;
        return v == 0xE0D ? 0 : -EBADMSG;
    }
    while (cpr_stream_remaining(s)) {
        if ((ret = cpr_stream_get_u32(s, &v, errp)) < 0)
            return ret;
        if (v != (uint32_t)l->got++)
            return cpr_error_set(errp, -EBADMSG, "chunk %u out of order", v);
    }
    return 0;
}

static int live_done(uint32_t version, void *opaque, cpr_error **errp)
{
    ((struct live *)opaque)->done_calls++;
    return 0;
}

static void live_cleanup(void *opaque)
{
    ((struct live *)opaque)->cleanups++;
}

static const cpr_live_ops live_ops = {
    .size = sizeof(cpr_live_ops),
    .setup = live_setup,
    .iterate = live_iterate,
    .complete = live_complete,
    .load = live_load,
    .load_done = live_done,
    .cleanup = live_cleanup,
};

struct machine {
    cpr_ctx *ctx;
    struct regs cpu0, cpu1;
    struct live ram, vram;
};

static void machine_init(struct machine *m, GString *log)
{
    memset(m, 0, sizeof(*m));
    ck_assert_int_eq(cpr_ctx_new(&m->ctx, 0, NULL), 0);
    cpr_desc *d = regs_desc();
    ck_assert_int_eq(cpr_savevm_register(m->ctx, NULL, 0, d, &m->cpu0, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(m->ctx, NULL, 1, d, &m->cpu1, 0, NULL, NULL), 0);
    cpr_desc_unref(d);
    m->ram = (struct live){ .tag = "R", .total = 10, .per_part = 3, .log = log };
    m->vram = (struct live){ .tag = "V", .total = 4, .per_part = 1, .log = log };
    ck_assert_int_eq(cpr_savevm_register_live(m->ctx, "ram", 0, 1, 1, &live_ops, &m->ram, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register_live(m->ctx, "vram", 0, 1, 1, &live_ops, &m->vram, 0, NULL, NULL), 0);
}

/* Saves a machine into memory; returns the bytes (g_free). */
static uint8_t *save_machine(size_t *len)
{
    struct machine m;
    machine_init(&m, NULL);
    m.cpu0 = (struct regs){ 0x1000, 1 };
    m.cpu1 = (struct regs){ 0x2000, 2 };
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(m.ctx, w, NULL), 0);
    ck_assert_int_eq(m.ram.cleanups, 1);
    void *data;
    ck_assert_int_eq(cpr_stream_mem_steal(w, &data, len, NULL), 0);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
    return data;
}

static int load_machine(struct machine *m, const void *data, size_t len, cpr_error **errp)
{
    cpr_stream *r;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    int ret = cpr_savevm_load(m->ctx, r, errp);
    cpr_stream_free(r);
    return ret;
}

/* Saves ctx into a new memory sink; *data stays valid until the returned stream is freed. */
static cpr_stream *save_ctx(cpr_ctx *ctx, const void **data, size_t *len)
{
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, w, NULL), 0);
    ck_assert_int_eq(cpr_stream_mem_data(w, data, len, NULL), 0);
    return w;
}

START_TEST(test_progressive_sections_interleave_and_instances_load)
{
    size_t len;
    g_autofree uint8_t *data = save_machine(&len);
    g_autoptr(GString) log = g_string_new("");
    struct machine m;
    machine_init(&m, log);
    post_loads = 0;
    ck_assert_int_eq(load_machine(&m, data, len, NULL), 0);
    ck_assert_str_eq(log->str, "R0 V0 R1 V1 R1 V1 R1 V1 R1 V1 R2 V2 ");
    ck_assert_int_eq(m.ram.got, 10);
    ck_assert_int_eq(m.vram.got, 4);
    ck_assert_int_eq(m.ram.done_calls, 1);
    ck_assert_uint_eq(m.cpu0.pc, 0x1000);
    ck_assert_uint_eq(m.cpu1.acc, 2);
    ck_assert_int_eq(post_loads, 2);
    cpr_ctx_free(m.ctx);
}
END_TEST

START_TEST(test_iterate_asks_done_sections_again)
{
    struct machine m;
    machine_init(&m, NULL);
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_begin(m.ctx, w, CPR_MODE_NORMAL, NULL), 0);
    int ret;
    while ((ret = cpr_savevm_iterate(m.ctx, w, NULL)) == 0)
        ck_assert_uint_gt(cpr_savevm_pending(m.ctx, NULL), 0);
    ck_assert_int_eq(ret, 1);
    ck_assert_uint_eq(cpr_savevm_pending(m.ctx, NULL), 0);
    uint64_t before = cpr_stream_offset(w);
    /* Nothing new: no record at all. */
    ck_assert_int_eq(cpr_savevm_iterate(m.ctx, w, NULL), 1);
    ck_assert_uint_eq(cpr_stream_offset(w), before);
    /* The guest dirtied more RAM: the done section sends it on the next call. */
    m.ram.total += 2;
    ck_assert_int_eq(cpr_savevm_iterate(m.ctx, w, NULL), 1);
    ck_assert_uint_gt(cpr_stream_offset(w), before);
    ck_assert_int_eq(cpr_savevm_complete(m.ctx, w, NULL), 0);
    cpr_savevm_finish(m.ctx);
    ck_assert_int_eq(m.ram.cleanups, 1);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    struct machine n;
    machine_init(&n, NULL);
    ck_assert_int_eq(load_machine(&n, data, len, NULL), 0);
    ck_assert_int_eq(n.ram.got, 12);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
    cpr_ctx_free(n.ctx);
}
END_TEST

START_TEST(test_registry_finds_by_name_and_instance_and_refuses_duplicates)
{
    struct machine m;
    machine_init(&m, NULL);
    ck_assert_ptr_nonnull(cpr_savevm_find(m.ctx, "cpu", 1));
    ck_assert_ptr_null(cpr_savevm_find(m.ctx, "cpu", 2));
    cpr_desc *d = regs_desc();
    ck_assert_cpr_fails(cpr_savevm_register(m.ctx, NULL, 1, d, &m.cpu1, 0, NULL, errp_), -EEXIST,
                        "section 'cpu' instance 1 is already registered");
    ck_assert_cpr_fails(cpr_savevm_register(m.ctx, NULL, 5, d, &m.cpu1, 0, NULL, errp_), -EINVAL,
                        "another description");
    cpr_desc_unref(d);
    cpr_live_ops bad = live_ops;
    bad.load = NULL;
    ck_assert_cpr_fails(cpr_savevm_register_live(m.ctx, "x", 0, 1, 1, &bad, NULL, 0, NULL, errp_), -EINVAL, "required");
    /* A newer caller's ops with a member this library does not know. */
    struct {
        cpr_live_ops ops;
        void *future;
    } newer = { live_ops, (void *)1 };
    newer.ops.size = sizeof(newer);
    ck_assert_cpr_fails(cpr_savevm_register_live(m.ctx, "y", 0, 1, 1, &newer.ops, NULL, 0, NULL, errp_), -EINVAL,
                        "cpr_live_ops: byte");
    newer.future = NULL;
    ck_assert_int_eq(cpr_savevm_register_live(m.ctx, "y", 0, 1, 1, &newer.ops, NULL, 0, NULL, NULL), 0);
    cpr_savevm_unregister(m.ctx, cpr_savevm_find(m.ctx, "cpu", 1));
    ck_assert_ptr_null(cpr_savevm_find(m.ctx, "cpu", 1));
    cpr_ctx_free(m.ctx);
}
END_TEST

START_TEST(test_unknown_section_is_an_error_naming_it)
{
    size_t len;
    g_autofree uint8_t *data = save_machine(&len);
    struct machine m;
    machine_init(&m, NULL);
    cpr_savevm_unregister(m.ctx, cpr_savevm_find(m.ctx, "cpu", 1));
    post_loads = 0;
    ck_assert_cpr_fails(load_machine(&m, data, len, errp_), -ENOENT, "unknown section 'cpu' instance 1");
    ck_assert_int_eq(post_loads, 0);
    ck_assert_int_eq(m.ram.done_calls, 0);
    cpr_ctx_free(m.ctx);
}
END_TEST

static void collect_warning(const char *message, void *opaque)
{
    g_string_append_printf(opaque, "%s\n", message);
}

START_TEST(test_optional_sections_are_skipped_with_a_warning)
{
    struct machine m;
    machine_init(&m, NULL);
    struct regs extra = { 9, 9 };
    struct live opt = { .tag = "O", .total = 3, .per_part = 2 };
    cpr_desc *d;
    ck_assert_int_eq(cpr_desc_new("gpu", 1, 1, sizeof(struct regs), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "pc", CPR_TYPE_U32, CPR_MEMBER(struct regs, pc), NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(m.ctx, NULL, 0, d, &extra, CPR_SECTION_OPTIONAL, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register_live(m.ctx, "opt-live", 0, 1, 1, &live_ops, &opt, CPR_SECTION_OPTIONAL, NULL, NULL), 0);
    cpr_desc_unref(d);
    size_t len;
    const void *data;
    cpr_stream *w = save_ctx(m.ctx, &data, &len);

    struct machine n;
    machine_init(&n, NULL);
    g_autoptr(GString) warnings = g_string_new("");
    ck_assert_int_eq(cpr_savevm_set_warning_handler(n.ctx, collect_warning, warnings, NULL), 0);
    ck_assert_int_eq(load_machine(&n, data, len, NULL), 0);
    ck_assert_ptr_nonnull(strstr(warnings->str, "skipping optional section 'gpu' instance 0"));
    ck_assert_ptr_nonnull(strstr(warnings->str, "skipping optional section 'opt-live' instance 0"));
    ck_assert_int_eq(n.ram.got, 10);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
    cpr_ctx_free(n.ctx);
}
END_TEST

static char *ram_identity(cpr_ctx *ctx, void *opaque)
{
    return g_strdup(opaque);
}

START_TEST(test_machine_and_identity_mismatch_are_refused)
{
    struct machine m, n;
    machine_init(&m, NULL);
    ck_assert_int_eq(cpr_savevm_set_machine(m.ctx, "pc smp=2", NULL), 0);
    ck_assert_int_eq(cpr_savevm_set_identity(m.ctx, "ram", ram_identity, "[{\"name\":\"pc.ram\",\"size\":4096}]", NULL), 0);
    size_t len;
    const void *data;
    cpr_stream *w = save_ctx(m.ctx, &data, &len);

    machine_init(&n, NULL);
    ck_assert_int_eq(cpr_savevm_set_machine(n.ctx, "pc smp=4", NULL), 0);
    ck_assert_cpr_fails(load_machine(&n, data, len, errp_), -EINVAL,
                        "machine identity mismatch: stream has 'pc smp=2', this machine is 'pc smp=4'");
    ck_assert_int_eq(cpr_savevm_set_machine(n.ctx, "pc smp=2", NULL), 0);
    ck_assert_int_eq(cpr_savevm_set_identity(n.ctx, "ram", ram_identity, "[{\"size\":8192,\"name\":\"pc.ram\"}]", NULL), 0);
    ck_assert_cpr_fails(load_machine(&n, data, len, errp_), -EINVAL, "identity 'ram' mismatch");
    /* Same JSON value, other key order: equal. */
    ck_assert_int_eq(cpr_savevm_set_identity(n.ctx, "ram", ram_identity, "[{\"size\":4096,\"name\":\"pc.ram\"}]", NULL), 0);
    ck_assert_int_eq(load_machine(&n, data, len, NULL), 0);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
    cpr_ctx_free(n.ctx);
}
END_TEST

/* The config record of a stream ctx saves, as a string. */
static char *saved_config(cpr_ctx *ctx)
{
    size_t len;
    const void *data;
    cpr_stream *w = save_ctx(ctx, &data, &len), *r;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(r, NULL, NULL), 0);
    struct cpr_rec rec;
    ck_assert_int_eq(cpr_rec_next(r, &rec, NULL), 1);
    ck_assert_uint_eq(rec.type, CPR_REC_CONFIG);
    char *config = g_strndup((const char *)rec.payload, rec.len);
    cpr_stream_free(r);
    cpr_stream_free(w);
    return config;
}

START_TEST(test_producer_names_the_writer_and_null_restores_the_default)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_savevm_set_producer(ctx, "my-vmm 2.0 \"rc1\"", NULL), 0);
    g_autofree char *mine = saved_config(ctx);
    ck_assert_msg(strstr(mine, "\"producer\":\"my-vmm 2.0 \\\"rc1\\\"\""), "config: %s", mine);
    ck_assert_int_eq(cpr_savevm_set_producer(ctx, NULL, NULL), 0);
    g_autofree char *dflt = saved_config(ctx);
    ck_assert_msg(strstr(dflt, "\"producer\":\"libcpr "), "config: %s", dflt);
    ck_assert_cpr_fails(cpr_savevm_set_producer(NULL, "x", errp_), -EINVAL, "ctx is NULL");
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(test_an_identity_hook_set_to_null_is_no_longer_checked)
{
    struct machine m, n;
    machine_init(&m, NULL);
    ck_assert_int_eq(cpr_savevm_set_identity(m.ctx, "ram", ram_identity, "[1]", NULL), 0);
    size_t len;
    const void *data;
    cpr_stream *w = save_ctx(m.ctx, &data, &len);
    machine_init(&n, NULL);
    ck_assert_int_eq(cpr_savevm_set_identity(n.ctx, "ram", ram_identity, "[2]", NULL), 0);
    ck_assert_cpr_fails(load_machine(&n, data, len, errp_), -EINVAL, "identity 'ram' mismatch");
    ck_assert_int_eq(cpr_savevm_set_identity(n.ctx, "ram", NULL, NULL, NULL), 0);
    ck_assert_int_eq(load_machine(&n, data, len, NULL), 0);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
    cpr_ctx_free(n.ctx);
}
END_TEST

START_TEST(test_damaged_streams_fail_cleanly_and_never_run_post_load)
{
    size_t len;
    g_autofree uint8_t *data = save_machine(&len);
    g_autofree uint8_t *copy = g_memdup2(data, len);
    struct machine m;
    machine_init(&m, NULL);
    for (size_t i = 0; i < len; i++) {
        copy[i] ^= 0x10;
        post_loads = 0;
        m.ram.done_calls = 0;
        m.ram.got = m.vram.got = 0;
        cpr_error *err = NULL;
        int ret = load_machine(&m, copy, len, &err);
        ck_assert_msg(ret < 0, "flipped byte %zu was accepted", i);
        ck_assert_ptr_nonnull(err);
        cpr_error_free(err);
        ck_assert_int_eq(post_loads, 0);
        ck_assert_int_eq(m.ram.done_calls, 0);
        copy[i] ^= 0x10;
    }
    for (size_t cut = 0; cut < len; cut++) {
        post_loads = 0;
        m.ram.got = m.vram.got = 0;
        cpr_error *err = NULL;
        ck_assert_int_eq(load_machine(&m, data, cut, &err), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(cpr_error_message(err), "truncated"));
        cpr_error_free(err);
        ck_assert_int_eq(post_loads, 0);
        ck_assert_int_eq(m.ram.done_calls, 0);
    }
    m.ram.got = m.vram.got = 0;
    ck_assert_int_eq(load_machine(&m, data, len, NULL), 0);
    ck_assert_int_eq(post_loads, 2);
    cpr_ctx_free(m.ctx);
}
END_TEST

START_TEST(test_save_and_load_through_a_file_fd)
{
    struct machine m, n;
    machine_init(&m, NULL);
    m.cpu0.pc = 77;
    char path[] = "/tmp/cpr-savevm-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(cpr_savevm_save_to_fd(m.ctx, fd, NULL), 0);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    machine_init(&n, NULL);
    ck_assert_int_eq(cpr_savevm_load_from_fd(n.ctx, fd, NULL), 0);
    ck_assert_uint_eq(n.cpu0.pc, 77);
    ck_assert_int_eq(n.ram.got, 10);
    close(fd);
    cpr_ctx_free(m.ctx);
    cpr_ctx_free(n.ctx);
}
END_TEST

START_TEST(test_failed_save_reports_section_and_cleans_up)
{
    struct machine m;
    machine_init(&m, NULL);
    size_t full;
    g_free(save_machine(&full));
    /* Room for everything but the last records: the progressive sections ran by then. */
    g_autofree uint8_t *tiny = g_malloc(full - 40);
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink_buf(tiny, full - 40, &w, NULL), 0);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_savevm_save(m.ctx, w, &err), -ENOSPC);
    ck_assert_ptr_nonnull(err);
    cpr_error_free(err);
    ck_assert_int_eq(m.ram.cleanups, 1);
    /* The context is usable again. */
    cpr_stream_free(w);
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(m.ctx, w, NULL), 0);
    cpr_stream_free(w);
    cpr_ctx_free(m.ctx);
}
END_TEST

/* Patches the u64 at `at` and recomputes the frame checksums, as a hostile writer would. */
static void forge_u64(uint8_t *data, size_t len, size_t at, uint64_t v)
{
    uint64_t le = GUINT64_TO_LE(v);
    memcpy(data + at, &le, 8);
    (void)len;
}

static void reseal(uint8_t *data, size_t len)
{
    size_t off = CPR_STREAM_HEADER_SIZE;
    while (off + CPR_RECORD_HEADER_SIZE <= len) {
        uint32_t c = GUINT32_TO_LE(cpr_crc32c(0, data + off, 12));
        memcpy(data + off + 12, &c, 4);
        uint64_t plen;
        memcpy(&plen, data + off, 8);
        plen = GUINT64_FROM_LE(plen);
        if (plen > len || off + CPR_RECORD_HEADER_SIZE + plen + 4 > len)
            return;
        c = GUINT32_TO_LE(cpr_crc32c(0, data + off + 16, plen));
        memcpy(data + off + 16 + plen, &c, 4);
        off += CPR_RECORD_HEADER_SIZE + plen + 4;
    }
}

START_TEST(test_huge_claimed_section_allocates_nothing_and_fails_cleanly)
{
    size_t len;
    g_autofree uint8_t *data = save_machine(&len);
    struct machine m;
    machine_init(&m, NULL);
    /* Record #1 (the schema) starts after the config record; claim 2^63 payload bytes. */
    uint64_t cfg_len;
    memcpy(&cfg_len, data + CPR_STREAM_HEADER_SIZE, 8);
    size_t rec1 = CPR_STREAM_HEADER_SIZE + CPR_RECORD_HEADER_SIZE + GUINT64_FROM_LE(cfg_len) + 4;
    g_autofree uint8_t *copy = g_memdup2(data, len);
    forge_u64(copy, len, rec1, 1ull << 63);
    reseal(copy, len);
    post_loads = 0;
    ck_assert_cpr_fails(load_machine(&m, copy, len, errp_), -EMSGSIZE,
                        "payload of 9223372036854775808 bytes exceeds the record limit");
    ck_assert_int_eq(post_loads, 0);
    cpr_ctx_free(m.ctx);
}
END_TEST

struct named {
    char *s;
};

START_TEST(test_huge_string_length_is_refused_before_allocation)
{
    cpr_ctx *a, *b;
    cpr_desc *d;
    struct named src = { "x" }, dst = { NULL };
    ck_assert_int_eq(cpr_ctx_new(&a, 0, NULL), 0);
    ck_assert_int_eq(cpr_ctx_new(&b, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("named", 1, 1, sizeof(struct named), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "s", CPR_TYPE_STRING, CPR_MEMBER(struct named, s), NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(a, NULL, 0, d, &src, 0, NULL, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(b, NULL, 0, d, &dst, 0, NULL, NULL), 0);
    cpr_stream *w, *r;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(a, w, NULL), 0);
    void *raw;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_steal(w, &raw, &len, NULL), 0);
    uint8_t *data = raw;
    /* The body is the string (u32 1, "x") then the empty subsection list, right before the
     * full record's trailer, which sits before the 44-byte end record. */
    size_t body_end = len - 44 - 4;
    uint32_t huge = GUINT32_TO_LE(0xFFFFFFF0u);
    memcpy(data + body_end - 6, &huge, 4);
    reseal(data, len);
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &r, NULL), 0);
    ck_assert_cpr_fails(cpr_savevm_load(b, r, errp_), -EMSGSIZE, "field 's': string of 4294967280 bytes");
    ck_assert_ptr_null(dst.s);
    cpr_stream_free(r);
    cpr_stream_free(w);
    cpr_free(raw);
    cpr_desc_unref(d);
    cpr_ctx_free(a);
    cpr_ctx_free(b);
}
END_TEST

static Suite *savevm_suite(void)
{
    Suite *s = suite_create("savevm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_progressive_sections_interleave_and_instances_load);
    tcase_add_test(tc, test_iterate_asks_done_sections_again);
    tcase_add_test(tc, test_registry_finds_by_name_and_instance_and_refuses_duplicates);
    tcase_add_test(tc, test_unknown_section_is_an_error_naming_it);
    tcase_add_test(tc, test_optional_sections_are_skipped_with_a_warning);
    tcase_add_test(tc, test_machine_and_identity_mismatch_are_refused);
    tcase_add_test(tc, test_producer_names_the_writer_and_null_restores_the_default);
    tcase_add_test(tc, test_an_identity_hook_set_to_null_is_no_longer_checked);
    tcase_add_test(tc, test_damaged_streams_fail_cleanly_and_never_run_post_load);
    tcase_add_test(tc, test_save_and_load_through_a_file_fd);
    tcase_add_test(tc, test_failed_save_reports_section_and_cleans_up);
    tcase_add_test(tc, test_huge_claimed_section_allocates_nothing_and_fails_cleanly);
    tcase_add_test(tc, test_huge_string_length_is_refused_before_allocation);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(savevm_suite)
