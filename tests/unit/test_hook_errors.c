/* SPDX-License-Identifier: MIT */
/*
 * A VMM's callbacks fail with their own errors, and every failure reaches the caller with a
 * message that names the section, instance and hook: descriptions' hooks, custom fields,
 * progressive sections, notifiers and cpr_vm_ops. Only public headers, and the suite links
 * libcpr.so.1 (tests/unit/CMakeLists.txt), as a VMM would.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h" /* check, glib and <cpr/cpr.h>: nothing of lib/ */

/* Which callback fails, and whether it says why. */
enum hook {
    H_NONE,
    H_PRE_SAVE, H_POST_SAVE, H_PUT, H_SETUP, H_ITERATE, H_COMPLETE, /* save side */
    H_PRE_LOAD, H_GET, H_POST_LOAD, H_LOAD, H_LOAD_DONE,            /* load side */
};

static const char *const hook_name[] = {
    [H_PRE_SAVE] = "pre_save", [H_POST_SAVE] = "post_save", [H_PUT] = "put", [H_SETUP] = "setup",
    [H_ITERATE] = "iterate", [H_COMPLETE] = "complete", [H_PRE_LOAD] = "pre_load", [H_GET] = "get",
    [H_POST_LOAD] = "post_load", [H_LOAD] = "load", [H_LOAD_DONE] = "load_done",
};

struct disk {
    uint32_t blocks;
    uint32_t custom;
};

static enum hook failing;
static int with_message;

/* The failing hook: -EIO, with the message a VMM would give when with_message is set. */
static int outcome(enum hook h, cpr_error **errp)
{
    if (h != failing)
        return 0;
    if (with_message)
        return cpr_error_set(errp, -EIO, "disk d0: flush failed: EIO");
    return -EIO;
}

static int pre_save(void *obj, cpr_error **errp) { return outcome(H_PRE_SAVE, errp); }
static int post_save(void *obj, cpr_error **errp) { return outcome(H_POST_SAVE, errp); }
static int pre_load(void *obj, cpr_error **errp) { return outcome(H_PRE_LOAD, errp); }
static int post_load(void *obj, uint32_t version, cpr_error **errp) { return outcome(H_POST_LOAD, errp); }

static int put(cpr_stream *s, const void *field, void *opaque, cpr_error **errp)
{
    int ret = outcome(H_PUT, errp);
    return ret < 0 ? ret : cpr_stream_put_u32(s, *(const uint32_t *)field, errp);
}

static int get(cpr_stream *s, void *field, uint64_t len, void *opaque, cpr_error **errp)
{
    int ret = outcome(H_GET, errp);
    return ret < 0 ? ret : cpr_stream_get_u32(s, field, errp);
}

static int setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    int ret = outcome(H_SETUP, errp);
    return ret < 0 ? ret : cpr_stream_put_u8(s, 1, errp);
}

static int iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    *pending = 0;
    int ret = outcome(H_ITERATE, errp);
    return ret < 0 ? ret : 1;
}

static int complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    int ret = outcome(H_COMPLETE, errp);
    return ret < 0 ? ret : cpr_stream_put_u8(s, 2, errp);
}

static int load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    uint8_t v;
    int ret = outcome(H_LOAD, errp);
    return ret < 0 ? ret : cpr_stream_get_u8(s, &v, errp);
}

static int load_done(uint32_t version, void *opaque, cpr_error **errp) { return outcome(H_LOAD_DONE, errp); }

static struct disk disk_obj;

/* A context with a described "disk" (instance 0, hooks and a custom field) and a progressive
 * "dlog" (instance 3). */
static cpr_ctx *make_ctx(void)
{
    cpr_ctx *ctx;
    cpr_desc *d;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_desc_new("disk", 1, 1, sizeof(struct disk), &d, NULL), 0);
    ck_assert_int_eq(cpr_desc_add(d, "blocks", CPR_TYPE_U32, CPR_MEMBER(struct disk, blocks), NULL), 0);
    ck_assert_int_eq(cpr_desc_add_custom(d, "custom", CPR_MEMBER(struct disk, custom), put, get, NULL, NULL), 0);
    ck_assert_int_eq(cpr_desc_set_hooks(d, pre_save, post_save, pre_load, post_load, NULL), 0);
    ck_assert_int_eq(cpr_savevm_register(ctx, NULL, 0, d, &disk_obj, 0, NULL, NULL), 0);
    cpr_desc_unref(d);
    cpr_live_ops ops = CPR_LIVE_OPS_INIT;
    ops.setup = setup;
    ops.iterate = iterate;
    ops.complete = complete;
    ops.load = load;
    ops.load_done = load_done;
    ck_assert_int_eq(cpr_savevm_register_live(ctx, "dlog", 3, 1, 1, &ops, NULL, 0, NULL, NULL), 0);
    return ctx;
}

static void assert_names(const cpr_error *err, int code, enum hook h)
{
    ck_assert_ptr_nonnull(err);
    const char *msg = cpr_error_message(err);
    ck_assert_int_eq(cpr_error_code(err), code);
    int live = h == H_SETUP || h == H_ITERATE || h == H_COMPLETE || h == H_LOAD || h == H_LOAD_DONE;
    const char *section = live ? "section 'dlog' instance 3" : "section 'disk' instance 0";
    ck_assert_msg(strstr(msg, section), "'%s' does not name %s", msg, section);
    g_autofree char *hook = g_strdup_printf(": %s: ", hook_name[h]);
    ck_assert_msg(strstr(msg, hook), "'%s' does not name the hook %s", msg, hook_name[h]);
    const char *why = with_message ? "disk d0: flush failed: EIO" : strerror(EIO);
    ck_assert_msg(strstr(msg, why), "'%s' lacks '%s'", msg, why);
}

/* Saves with every hook fine, into a memory stream the load cases read back. */
static cpr_stream *good_stream(cpr_ctx *ctx)
{
    cpr_stream *s;
    failing = H_NONE;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &s, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, s, NULL), 0);
    return s;
}

/* Each save-side hook fails a one-shot save, with or without a message: never *errp NULL. */
START_TEST(save_hooks)
{
    with_message = _i & 1;
    failing = (enum hook)(H_PRE_SAVE + _i / 2);
    cpr_ctx *ctx = make_ctx();
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &s, NULL), 0);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_savevm_save(ctx, s, &err), -EIO);
    assert_names(err, -EIO, failing);
    cpr_error_free(err);
    /* With errp NULL the failure is still returned. */
    cpr_stream_free(s);
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &s, NULL), 0);
    ck_assert_int_eq(cpr_savevm_save(ctx, s, NULL), -EIO);
    cpr_stream_free(s);
    cpr_ctx_free(ctx);
}
END_TEST

START_TEST(load_hooks)
{
    with_message = _i & 1;
    cpr_ctx *ctx = make_ctx();
    cpr_stream *out = good_stream(ctx);
    size_t len;
    const void *data;
    ck_assert_int_eq(cpr_stream_mem_data(out, &data, &len, NULL), 0);
    cpr_stream *in;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &in, NULL), 0);
    failing = (enum hook)(H_PRE_LOAD + _i / 2);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_savevm_load(ctx, in, &err), -EIO);
    assert_names(err, -EIO, failing);
    cpr_error_free(err);
    cpr_stream_free(in);
    cpr_stream_free(out);
    cpr_ctx_free(ctx);
}
END_TEST

static char *tmp_path(const char *stem)
{
    return g_strdup_printf("%s/cpr-hookerr-%s-%d", g_get_tmp_dir(), stem, (int)getpid());
}

/* The "done means": the caller of cpr_migrate_uri() reads the hook's own text, with
 * the section named. */
START_TEST(migrate_pre_save_message)
{
    with_message = 1;
    failing = H_PRE_SAVE;
    cpr_ctx *ctx = make_ctx();
    g_autofree char *path = tmp_path("pre_save");
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_migrate_uri(ctx, uri, 0, &err), -EIO);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(cpr_error_message(err), "section 'disk' instance 0: pre_save: disk d0: flush failed: EIO"),
                  "%s", cpr_error_message(err));
    cpr_error_free(err);
    char *desc = cpr_migrate_error_desc(ctx);
    ck_assert_ptr_nonnull(desc);
    ck_assert_ptr_nonnull(strstr(desc, "disk d0: flush failed: EIO"));
    cpr_free(desc);
    unlink(path);
    cpr_ctx_free(ctx);
}
END_TEST

static int veto(cpr_ctx *ctx, cpr_event event, cpr_mode mode, cpr_error **errp, void *opaque)
{
    if (event != CPR_EVENT_SETUP)
        return 0;
    if (opaque)
        return cpr_error_set(errp, -EBUSY, "vfio 0000:01:00.0: DMA still mapped");
    return -EBUSY;
}

/* A veto carries the notifier's reason; one without a message still says why. */
START_TEST(notifier_veto)
{
    with_message = _i;
    failing = H_NONE;
    cpr_ctx *ctx = make_ctx();
    cpr_notifier *n;
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODES_ALL, veto, with_message ? ctx : NULL, &n, NULL), 0);
    g_autofree char *path = tmp_path("veto");
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_migrate_uri(ctx, uri, 0, &err), -EBUSY);
    ck_assert_ptr_nonnull(err);
    const char *msg = cpr_error_message(err);
    ck_assert_msg(strstr(msg, "a migration notifier vetoed mode normal"), "%s", msg);
    ck_assert_msg(strstr(msg, with_message ? "vfio 0000:01:00.0: DMA still mapped" : strerror(EBUSY)), "%s", msg);
    cpr_error_free(err);
    unlink(path);
    cpr_ctx_free(ctx);
}
END_TEST

static int running = 1;
static int vm_is_running(cpr_ctx *ctx, void *opaque) { return running; }
static int vm_stop(cpr_ctx *ctx, void *opaque) { running = 0; return 0; }
static int vm_start(cpr_ctx *ctx, void *opaque) { running = 1; return 0; }
static int vm_flush_plain(cpr_ctx *ctx, void *opaque) { return -ENOSPC; }
static int vm_flush_errp(cpr_ctx *ctx, void *opaque, cpr_error **errp)
{
    return cpr_error_set(errp, -ENOSPC, "disk d0: journal full");
}

/* cpr_vm_ops: the errp form's message reaches the caller; the first form, and the old layout
 * (size up to the first four hooks), still work and say why. */
START_TEST(vm_ops_hooks)
{
    failing = H_NONE;
    cpr_ctx *ctx = make_ctx();
    cpr_vm_ops ops;
    cpr_vm_ops_init(&ops);
    ck_assert_uint_eq(ops.size, sizeof(ops));
    ops.is_running = vm_is_running;
    ops.stop = vm_stop;
    ops.start = vm_start;
    if (_i == 0)
        ops.flush_errp = vm_flush_errp;
    else
        ops.flush = vm_flush_plain;
    if (_i == 2)
        ops.size = (uint32_t)(offsetof(cpr_vm_ops, flush) + sizeof(ops.flush)); /* a 1.0 caller */
    ck_assert_int_eq(cpr_migrate_set_vm_ops(ctx, &ops, NULL, NULL), 0);
    g_autofree char *path = tmp_path("vmops");
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    cpr_error *err = NULL;
    running = 1;
    ck_assert_int_eq(cpr_migrate_uri(ctx, uri, 0, &err), -ENOSPC);
    ck_assert_ptr_nonnull(err);
    const char *msg = cpr_error_message(err);
    ck_assert_msg(strstr(msg, "the VMM's flush hook failed: "), "%s", msg);
    ck_assert_msg(strstr(msg, _i == 0 ? "disk d0: journal full" : strerror(ENOSPC)), "%s", msg);
    ck_assert_int_eq(running, 1); /* the guest runs again */
    cpr_error_free(err);
    unlink(path);
    cpr_ctx_free(ctx);
}
END_TEST

/* The constructors, as a VMM uses them. */
START_TEST(constructors)
{
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_error_set(NULL, -EIO, "dropped"), -EIO);
    ck_assert_int_eq(cpr_error_set(&err, 0, "code %d is not an error", 0), -EINVAL);
    ck_assert_int_eq(cpr_error_code(err), -EINVAL);
    ck_assert_str_eq(cpr_error_message(err), "code 0 is not an error");
    /* The first error wins. */
    ck_assert_int_eq(cpr_error_set(&err, -EIO, "second"), -EIO);
    ck_assert_str_eq(cpr_error_message(err), "code 0 is not an error");
    cpr_error_prefix(&err, "disk %s", "d0");
    ck_assert_str_eq(cpr_error_message(err), "disk d0: code 0 is not an error");
    cpr_error_prefix(NULL, "nothing");
    cpr_error *dst = NULL;
    ck_assert_int_eq(cpr_error_propagate(&dst, err), -EINVAL);
    ck_assert_ptr_eq(dst, err);
    ck_assert_int_eq(cpr_error_propagate(&dst, NULL), 0);
    cpr_error *other = NULL;
    cpr_error_set_errno(&other, -ENOENT, "open %s", "/x");
    g_autofree char *want = g_strdup_printf("open /x: %s", strerror(ENOENT));
    ck_assert_str_eq(cpr_error_message(other), want);
    ck_assert_int_eq(cpr_error_propagate(&dst, other), -ENOENT); /* freed: dst is taken */
    ck_assert_int_eq(cpr_error_propagate(NULL, NULL), 0);
    cpr_error_free(dst);
}
END_TEST

static Suite *hook_errors_suite(void)
{
    Suite *s = suite_create("hook_errors");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, save_hooks, 0, 2 * (H_COMPLETE - H_PRE_SAVE + 1));
    tcase_add_loop_test(tc, load_hooks, 0, 2 * (H_LOAD_DONE - H_PRE_LOAD + 1));
    tcase_add_test(tc, migrate_pre_save_message);
    tcase_add_loop_test(tc, notifier_veto, 0, 2);
    tcase_add_loop_test(tc, vm_ops_hooks, 0, 3);
    tcase_add_test(tc, constructors);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(hook_errors_suite)
