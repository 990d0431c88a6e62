/* SPDX-License-Identifier: MIT */
/*
 * The pause breakdown's trace (cpr/trace.h): order, names, capacity and what overflow drops,
 * the size-first step, the JSON, concurrent marks, and the old image's steps across cpr-exec.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/trace.h"
#include "testutil.h"

static cpr_ctx *new_ctx(void)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    return ctx;
}

static cpr_trace_step step_at(cpr_ctx *ctx, size_t i)
{
    cpr_trace_step s;
    cpr_trace_step_init(&s);
    ck_assert_int_eq(cpr_trace_get(ctx, i, &s, NULL), 0);
    return s;
}

/* Steps come back in the order of the calls, with this process's id and the clock's time. */
START_TEST(order_and_fields)
{
    cpr_ctx *ctx = new_ctx();
    ck_assert_int_eq(cpr_trace_count(ctx, NULL), 0);
    uint64_t before = cpr_trace_now();
    ck_assert_int_eq(cpr_trace_mark(ctx, "first"), 0);
    ck_assert_int_eq(cpr_trace_mark(ctx, "second.step"), 0);
    ck_assert_int_eq(cpr_trace_mark_at(ctx, "early:main", 12345), 0);
    uint64_t after = cpr_trace_now();
    uint64_t dropped = 99;
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), 3);
    ck_assert_uint_eq(dropped, 0);
    const char *names[] = { "first", "second.step", "early:main" };
    for (size_t i = 0; i < 3; i++) {
        cpr_trace_step s = step_at(ctx, i);
        ck_assert_str_eq(s.name, names[i]);
        ck_assert_uint_eq(s.pid, (uint32_t)getpid());
        if (i < 2) {
            ck_assert_uint_ge(s.t_ns, before);
            ck_assert_uint_le(s.t_ns, after);
        }
    }
    ck_assert_uint_le(step_at(ctx, 0).t_ns, step_at(ctx, 1).t_ns);
    ck_assert_uint_eq(step_at(ctx, 2).t_ns, 12345);
    cpr_trace_step s;
    cpr_trace_step_init(&s);
    ck_assert_cpr_fails(cpr_trace_get(ctx, 3, &s, errp_), -ERANGE, "step 3 asked, the trace holds 3");

    char *json = NULL;
    ck_assert_int_eq(cpr_trace_json(ctx, &json, NULL), 0);
    json_object *o = json_tokener_parse(json);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(json_object_get_string(json_object_object_get(o, "clock")), "monotonic");
    json_object *steps = json_object_object_get(o, "steps");
    ck_assert_int_eq((int)json_object_array_length(steps), 3);
    for (size_t i = 0; i < 3; i++) {
        json_object *e = json_object_array_get_idx(steps, i);
        ck_assert_str_eq(json_object_get_string(json_object_object_get(e, "step")), names[i]);
        ck_assert_int_eq(json_object_get_int64(json_object_object_get(e, "pid")), getpid());
    }
    ck_assert_int_eq(json_object_get_int64(json_object_object_get(json_object_array_get_idx(steps, 2), "t-ns")), 12345);
    json_object_put(o);
    cpr_free(json);
    cpr_ctx_free(ctx);
}
END_TEST

/* A bad name records nothing; NULL arguments fail with -EINVAL. */
START_TEST(bad_input)
{
    cpr_ctx *ctx = new_ctx();
    char longest[CPR_TRACE_NAME_MAX + 2];
    memset(longest, 'x', sizeof(longest));
    longest[CPR_TRACE_NAME_MAX] = '\0';
    ck_assert_int_eq(cpr_trace_mark(ctx, longest), 0);
    longest[CPR_TRACE_NAME_MAX] = 'x';
    longest[CPR_TRACE_NAME_MAX + 1] = '\0';
    ck_assert_int_eq(cpr_trace_mark(ctx, longest), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(ctx, ""), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(ctx, NULL), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(ctx, "a b"), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(ctx, "a,b"), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(ctx, "a@b"), -EINVAL);
    ck_assert_int_eq(cpr_trace_mark(NULL, "a"), -EINVAL);
    ck_assert_int_eq(cpr_trace_count(ctx, NULL), 1);
    ck_assert_int_eq(cpr_trace_count(NULL, NULL), -EINVAL);
    ck_assert_cpr_fails(cpr_trace_get(ctx, 0, NULL, errp_), -EINVAL, "out is NULL");
    ck_assert_cpr_fails(cpr_trace_json(NULL, NULL, errp_), -EINVAL, "ctx is NULL");
    ck_assert_cpr_fails(cpr_trace_reset(ctx, 65537, errp_), -EINVAL, "capacity 65537");
    cpr_ctx_free(ctx);
}
END_TEST

/* Full: each new step overwrites the oldest, and the dropped count says how many went. */
START_TEST(capacity_and_overflow)
{
    cpr_ctx *ctx = new_ctx();
    ck_assert_int_eq(cpr_trace_mark(ctx, "gone-by-reset"), 0);
    ck_assert_int_eq(cpr_trace_reset(ctx, 4, NULL), 0);
    ck_assert_int_eq(cpr_trace_count(ctx, NULL), 0);
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%d", i);
        ck_assert_int_eq(cpr_trace_mark(ctx, name), 0);
    }
    uint64_t dropped = 0;
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), 4);
    ck_assert_uint_eq(dropped, 6);
    for (size_t i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%zu", i + 6);
        ck_assert_str_eq(step_at(ctx, i).name, name);
    }
    char *json = NULL;
    ck_assert_int_eq(cpr_trace_json(ctx, &json, NULL), 0);
    ck_assert_ptr_nonnull(strstr(json, "\"capacity\":4,\"dropped\":6"));
    cpr_free(json);
    /* 0: the default capacity, and the dropped count starts again. */
    ck_assert_int_eq(cpr_trace_reset(ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), 0);
    ck_assert_uint_eq(dropped, 0);
    for (int i = 0; i < CPR_TRACE_DEFAULT_CAPACITY; i++)
        ck_assert_int_eq(cpr_trace_mark(ctx, "fill"), 0);
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), CPR_TRACE_DEFAULT_CAPACITY);
    ck_assert_uint_eq(dropped, 0);
    ck_assert_int_eq(cpr_trace_mark(ctx, "one-more"), 0);
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), CPR_TRACE_DEFAULT_CAPACITY);
    ck_assert_uint_eq(dropped, 1);
    ck_assert_str_eq(step_at(ctx, CPR_TRACE_DEFAULT_CAPACITY - 1).name, "one-more");
    cpr_ctx_free(ctx);
}
END_TEST

/* Size-first: an older, shorter step gets only what fits; too short for pid is refused. */
START_TEST(size_first_step)
{
    cpr_ctx *ctx = new_ctx();
    ck_assert_int_eq(cpr_trace_mark(ctx, "named"), 0);
    cpr_trace_step s;
    memset(&s, 0x5a, sizeof(s));
    s.size = offsetof(cpr_trace_step, t_ns);
    ck_assert_int_eq(cpr_trace_get(ctx, 0, &s, NULL), 0);
    ck_assert_uint_eq(s.pid, (uint32_t)getpid());
    ck_assert_uint_eq(s.t_ns, 0x5a5a5a5a5a5a5a5aull); /* past its size: left alone */
    s.size = offsetof(cpr_trace_step, pid);
    ck_assert_cpr_fails(cpr_trace_get(ctx, 0, &s, errp_), -EINVAL, "cpr_trace_step size 4 is too small");
    cpr_ctx_free(ctx);
}
END_TEST

#define THREADS 4
#define PER_THREAD 300

struct marker {
    cpr_ctx *ctx;
    int id;
};

static gpointer mark_many(gpointer p)
{
    struct marker *m = p;
    for (int i = 0; i < PER_THREAD; i++) {
        char name[32];
        snprintf(name, sizeof(name), "t%d-%d", m->id, i);
        ck_assert_int_eq(cpr_trace_mark(m->ctx, name), 0);
    }
    return NULL;
}

static gpointer read_many(gpointer p)
{
    struct marker *m = p;
    for (int i = 0; i < PER_THREAD; i++) {
        char *json = NULL;
        ck_assert_int_eq(cpr_trace_json(m->ctx, &json, NULL), 0);
        cpr_free(json);
    }
    return NULL;
}

/* Documented thread safety: marks from several threads while another reads, none lost, each
 * thread's steps in its own order. */
START_TEST(concurrent_marks)
{
    cpr_ctx *ctx = new_ctx();
    ck_assert_int_eq(cpr_trace_reset(ctx, THREADS * PER_THREAD, NULL), 0);
    struct marker m[THREADS + 1];
    GThread *th[THREADS + 1];
    for (int t = 0; t <= THREADS; t++) {
        m[t] = (struct marker){ ctx, t };
        th[t] = g_thread_new("trace", t < THREADS ? mark_many : read_many, &m[t]);
    }
    for (int t = 0; t <= THREADS; t++)
        g_thread_join(th[t]);
    uint64_t dropped = 1;
    ck_assert_int_eq(cpr_trace_count(ctx, &dropped), THREADS * PER_THREAD);
    ck_assert_uint_eq(dropped, 0);
    int next[THREADS] = { 0 };
    for (size_t i = 0; i < THREADS * PER_THREAD; i++) {
        cpr_trace_step s = step_at(ctx, i);
        int t, n;
        ck_assert_int_eq(sscanf(s.name, "t%d-%d", &t, &n), 2);
        ck_assert_int_eq(n, next[t]++);
    }
    cpr_ctx_free(ctx);
}
END_TEST

/* cpr-exec: what the old image exports, the new one imports as its own (same pid). */
START_TEST(exec_round_trip)
{
    cpr_ctx *old = new_ctx(), *neu = new_ctx();
    ck_assert_int_eq(cpr_trace_mark_at(old, "stop-requested", 100), 0);
    ck_assert_int_eq(cpr_trace_mark_at(old, "exec", 200), 0);
    char *text = cpr_trace_export(old);
    ck_assert_str_eq(text, "stop-requested@100,exec@200");
    ck_assert_int_eq(cpr_trace_import(neu, text), 0);
    g_free(text);
    ck_assert_int_eq(cpr_trace_count(neu, NULL), 2);
    ck_assert_str_eq(step_at(neu, 1).name, "exec");
    ck_assert_uint_eq(step_at(neu, 1).t_ns, 200);
    ck_assert_int_eq(cpr_trace_import(neu, NULL), 0);
    ck_assert_int_eq(cpr_trace_import(neu, "broken"), -EINVAL);
    ck_assert_int_eq(cpr_trace_import(neu, "x@12z"), -EINVAL);
    ck_assert_int_eq(cpr_trace_count(neu, NULL), 2);
    cpr_ctx_free(old);
    cpr_ctx_free(neu);
}
END_TEST

/* A full ring of long names exports only its newest whole steps within one environment
 * string's limit, so that the exec cannot fail with E2BIG because of the trace. */
START_TEST(exec_export_is_bounded)
{
    cpr_ctx *ctx = new_ctx();
    ck_assert_int_eq(cpr_trace_reset(ctx, 4096, NULL), 0);
    char name[48];
    for (int i = 0; i < 4096; i++) {
        snprintf(name, sizeof(name), "a-rather-long-vmm-step-name-%06d", i);
        ck_assert_int_eq(cpr_trace_mark_at(ctx, name, 1000 + (uint64_t)i), 0);
    }
    char *text = cpr_trace_export(ctx);
    ck_assert_uint_le(strlen(text), 64 * 1024);
    ck_assert(g_str_has_suffix(text, "-004095@5095")); /* the newest kept */
    ck_assert(g_str_has_prefix(text, "a-rather-long-vmm-step-name-")); /* cut at a step boundary */
    cpr_ctx *neu = new_ctx();
    ck_assert_int_eq(cpr_trace_reset(neu, 4096, NULL), 0);
    ck_assert_int_eq(cpr_trace_import(neu, text), 0);
    ck_assert_int_gt(cpr_trace_count(neu, NULL), 1000);
    g_free(text);
    cpr_ctx_free(neu);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *trace_suite(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, order_and_fields);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, capacity_and_overflow);
    tcase_add_test(tc, size_first_step);
    tcase_add_test(tc, concurrent_marks);
    tcase_add_test(tc, exec_round_trip);
    tcase_add_test(tc, exec_export_is_bounded);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(trace_suite)
