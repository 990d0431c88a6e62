/* SPDX-License-Identifier: MIT */
/* cpr-dump, run as a separate program on streams it has never seen: prints fields by name
 * from the schema record; --check names the first problem and exits non-zero. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <json-c/json.h>

#include "stream_util.h"
#include "testutil.h"

struct nic {
    uint8_t mac[6];
    uint16_t mtu;
    int32_t credit;
    uint32_t nq;
    uint32_t queues[8];
    char *model;
};

static const char *dump_path(void)
{
    return getenv("CPR_DUMP");
}

static int live_setup(cpr_stream *s, void *o, cpr_error **e) { return cpr_stream_put_u32(s, 1, e); }
static int live_iter(cpr_stream *s, uint64_t *p, void *o, cpr_error **e)
{
    *p = 0;
    return cpr_stream_put_bytes(s, "pages", 5, e) < 0 ? -EIO : 1;
}
static int live_complete(cpr_stream *s, void *o, cpr_error **e) { return 0; }
static int live_load(cpr_stream *s, uint32_t v, int ph, void *o, cpr_error **e) { return 0; }

/* Writes a stream with a described and a progressive section to a new temp file. */
static char *write_stream(void)
{
    static struct nic n = { { 0x52, 0x54, 0, 0x12, 0x34, 0x56 }, 1500, -3, 2, { 11, 22 }, NULL };
    n.model = "virtio";
    cpr_ctx *ctx;
    cpr_desc *d;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("nic", 1, 1, sizeof(n), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "mac", CPR_TYPE_BYTES, CPR_MEMBER(struct nic, mac), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "mtu", CPR_TYPE_U16, CPR_MEMBER(struct nic, mtu), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "credit", CPR_TYPE_I32, CPR_MEMBER(struct nic, credit), NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "nq", CPR_TYPE_U32, CPR_MEMBER(struct nic, nq), NULL), 0);
    ck_assert_int_eq(cpr_desc_add_varray(d, "queues", CPR_TYPE_U32, CPR_MEMBER(struct nic, queues), "nq", NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "model", CPR_TYPE_STRING, CPR_MEMBER(struct nic, model), NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(ctx, "net0", 3, d, &n, 0, NULL, NULL), 0);
    cpr_desc_unref(d);
    static const cpr_live_ops ops = { .size = sizeof(cpr_live_ops), .setup = live_setup, .iterate = live_iter,
                                      .complete = live_complete, .load = live_load };
    ck_assert_int_eq(cpr_savevm_register_live(ctx, "ram", 0, 1, 1, &ops, NULL, 0, NULL, NULL), 0);
    char *path = g_strdup("/tmp/cpr-dump-XXXXXX");
    int fd = g_mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cpr_savevm_save_to_fd(ctx, fd, NULL), 0);
    close(fd);
    cpr_ctx_free(ctx);
    return path;
}

static int run_dump(const char *arg1, const char *path, char **out, char **err)
{
    const char *argv[] = { dump_path(), arg1, path, NULL };
    if (!arg1) {
        argv[1] = path;
        argv[2] = NULL;
    }
    int status;
    GError *gerr = NULL;
    ck_assert_msg(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, out, err, &status, &gerr), "spawn: %s",
                  gerr ? gerr->message : "");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_dump_prints_fields_by_name_from_the_schema)
{
    if (!dump_path())
        return; /* cpr-dump not built (CPR_BUILD_TOOLS=OFF): nothing to run */
    g_autofree char *path = write_stream();
    g_autofree char *out = NULL, *err = NULL;
    ck_assert_int_eq(run_dump(NULL, path, &out, &err), 0);
    json_object *root = json_tokener_parse(out);
    ck_assert_ptr_nonnull(root);
    json_object *recs = json_object_object_get(root, "records");
    int found_nic = 0, found_part = 0;
    for (size_t i = 0; i < json_object_array_length(recs); i++) {
        json_object *r = json_object_array_get_idx(recs, i);
        const char *type = json_object_get_string(json_object_object_get(r, "type"));
        ck_assert_uint_eq(json_object_get_uint64(json_object_object_get(r, "index")), i);
        ck_assert_ptr_nonnull(json_object_object_get(r, "offset"));
        if (strcmp(type, "full") == 0) {
            json_object *f = json_object_object_get(r, "fields");
            ck_assert_str_eq(json_object_get_string(json_object_object_get(r, "section")), "net0");
            ck_assert_int_eq(json_object_get_int(json_object_object_get(r, "instance")), 3);
            ck_assert_str_eq(json_object_get_string(json_object_object_get(f, "mac")), "525400123456");
            ck_assert_int_eq(json_object_get_int(json_object_object_get(f, "mtu")), 1500);
            ck_assert_int_eq(json_object_get_int(json_object_object_get(f, "credit")), -3);
            json_object *q = json_object_object_get(f, "queues");
            ck_assert_uint_eq(json_object_array_length(q), 2);
            ck_assert_int_eq(json_object_get_int(json_object_array_get_idx(q, 1)), 22);
            ck_assert_str_eq(json_object_get_string(json_object_object_get(f, "model")), "virtio");
            found_nic = 1;
        }
        if (strcmp(type, "part") == 0) {
            ck_assert_str_eq(json_object_get_string(json_object_object_get(r, "section")), "ram");
            ck_assert_int_eq(json_object_get_int(json_object_object_get(r, "body_length")), 5);
            found_part = 1;
        }
    }
    ck_assert(found_nic && found_part);
    json_object *end = json_object_object_get(root, "end");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(end, "sections")), 2);
    json_object_put(root);
    unlink(path);
}
END_TEST

START_TEST(test_dump_check_names_the_first_problem)
{
    if (!dump_path())
        return;
    g_autofree char *path = write_stream();
    g_autofree char *out = NULL, *err = NULL;
    ck_assert_int_eq(run_dump("--check", path, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "OK"));
    g_free(out);
    g_free(err);
    /* Flip one byte in the last record's payload (the end record's counts). */
    gchar *data;
    gsize len;
    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    data[len - 8] ^= 1;
    ck_assert(g_file_set_contents(path, data, (gssize)len, NULL));
    ck_assert_int_eq(run_dump("--check", path, &out, &err), 1);
    ck_assert_msg(strstr(err, "(end-of-stream) at offset") && strstr(err, "payload checksum mismatch"), "%s", err);
    g_free(out);
    g_free(err);
    /* Truncated: a clear error, and the JSON dump still prints what came before. */
    ck_assert(g_file_set_contents(path, data, (gssize)len - 30, NULL));
    ck_assert_int_eq(run_dump("--check", path, &out, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    g_free(out);
    g_free(err);
    ck_assert_int_eq(run_dump(NULL, path, &out, &err), 1);
    json_object *root = json_tokener_parse(out);
    ck_assert_ptr_nonnull(root);
    ck_assert_ptr_nonnull(strstr(json_object_get_string(json_object_object_get(root, "error")), "truncated"));
    ck_assert_int_gt(json_object_array_length(json_object_object_get(root, "records")), 2);
    json_object_put(root);
    g_free(data);
    unlink(path);
}
END_TEST

#define REG_FIELD "{\"name\":\"reg\",\"type\":\"u32\",\"size\":4,\"count\":1}"

/* A stream file: config, a schema whose "dev" (version 1) has the fields and subsections
 * `fields` and `subs` (JSON array elements), and a full "dev" whose body is u32 0x11223344
 * (reg, when the fields start with it) then `rest` (len bytes). */
static char *write_dev_stream(const char *fields, const char *subs, const void *rest, size_t len)
{
    static const char cfg[] = "{\"producer\":\"test\",\"mode\":\"normal\"}";
    g_autofree char *schema = g_strdup_printf(
        "{\"schema\":1,\"sections\":[{\"name\":\"dev\",\"kind\":\"full\",\"version\":1,\"min_version\":1,"
        "\"fields\":[%s],\"subsections\":[%s]}]}", fields, subs);
    cpr_stream *w = mem_stream_start(cfg, schema);
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_FULL, "dev", 0, 1, NULL, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u32(w, 0x11223344, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_bytes(w, rest, len, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    return mem_stream_to_file(w, "cpr-dump-");
}

/* --check decodes by the schema (docs/format.md 3.2, 2.8): a subsection the schema does not
 * have, or the absence of one it requires, makes the stream invalid for the tool too. */
START_TEST(test_dump_check_holds_subsections_to_the_schema)
{
    if (!dump_path())
        return;
    static const uint8_t none[] = { 0x00 };
    static const uint8_t irq[] = {
        0x01, 0x03, 0x00, 0x00, 0x00, 'i', 'r', 'q', 0x01, 0x00, 0x00, 0x00, /* "irq" version 1 */
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    static const char irq_entry[] = "{\"name\":\"irq\",\"version\":1,\"min_version\":1,\"required\":%s,"
                                    "\"fields\":[{\"name\":\"level\",\"type\":\"u32\",\"size\":4,\"count\":1}],"
                                    "\"subsections\":[]}";
    g_autofree char *optional = g_strdup_printf(irq_entry, "false");
    g_autofree char *required = g_strdup_printf(irq_entry, "true");
    static const struct { const uint8_t *list; size_t len; const char *err; } cases[] = {
        { irq, sizeof(irq), NULL },
        { none, sizeof(none), NULL },
        { irq, sizeof(irq), "subsection 'irq' (version 1) is not in the schema" },
        { none, sizeof(none), "missing subsection 'irq' (required by the schema)" },
    };
    const char *subs[] = { optional, optional, "", required };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = write_dev_stream(REG_FIELD, subs[i], cases[i].list, cases[i].len);
        g_autofree char *out = NULL, *err = NULL;
        int status = run_dump("--check", path, &out, &err);
        if (!cases[i].err)
            ck_assert_msg(status == 0, "case %zu: %s", i, err);
        else
            ck_assert_msg(status == 1 && strstr(err, cases[i].err), "case %zu: %s", i, err);
        unlink(path);
    }
}
END_TEST

/* --check holds counts to their capacity, as the loader does (docs/format.md 3.2). */
START_TEST(test_dump_check_holds_counts_to_their_capacity)
{
    if (!dump_path())
        return;
    /* After reg: n = 3 counts `more`, whose capacity is 2; its 3 bytes and the list end follow. */
    static const uint8_t body[] = { 0x03, 0xaa, 0xbb, 0xcc, 0x00 };
    g_autofree char *path = write_dev_stream(
        REG_FIELD ",{\"name\":\"n\",\"type\":\"u8\",\"size\":1,\"count\":1},"
                  "{\"name\":\"more\",\"type\":\"u8\",\"size\":1,\"count\":2,\"count_field\":\"n\"}",
        "", body, sizeof(body));
    g_autofree char *out = NULL, *err = NULL;
    ck_assert_int_eq(run_dump("--check", path, &out, &err), 1);
    ck_assert_msg(strstr(err, "field 'more': count 3 exceeds its capacity 2"), "%s", err);
    unlink(path);
}
END_TEST

static Suite *dump_suite(void)
{
    Suite *s = suite_create("dump");
    TCase *tc = tcase_create("tool");
    tcase_add_test(tc, test_dump_prints_fields_by_name_from_the_schema);
    tcase_add_test(tc, test_dump_check_names_the_first_problem);
    tcase_add_test(tc, test_dump_check_holds_subsections_to_the_schema);
    tcase_add_test(tc, test_dump_check_holds_counts_to_their_capacity);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(dump_suite)
