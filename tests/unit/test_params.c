/* SPDX-License-Identifier: MIT */
/* Modes by QAPI name and migration parameters/capabilities by QMP name. */
#include <errno.h>

#include "core/gate.h"
#include "testutil.h"

static cpr_ctx *ctx;

static void setup(void)
{
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
}

static void teardown(void)
{
    cpr_ctx_free(ctx);
}

START_TEST(test_mode_names_round_trip)
{
    const char *names[] = { "normal", "cpr-reboot", "cpr-transfer", "cpr-exec" };
    for (int m = 0; m < CPR_MODE_COUNT; m++) {
        cpr_mode out;
        ck_assert_str_eq(cpr_mode_name((cpr_mode)m), names[m]);
        ck_assert_int_eq(cpr_mode_from_name(names[m], &out, NULL), 0);
        ck_assert_int_eq(out, m);
    }
    ck_assert_ptr_null(cpr_mode_name((cpr_mode)CPR_MODE_COUNT));
    cpr_mode out = CPR_MODE_CPR_EXEC;
    ck_assert_cpr_fails(cpr_mode_from_name("cpr-rebot", &out, errp_), -EINVAL, "unknown migration mode 'cpr-rebot'");
    ck_assert_int_eq(out, CPR_MODE_CPR_EXEC); /* untouched on failure */
}
END_TEST

static char *get(const char *name)
{
    char *v = NULL;
    ck_assert_int_eq(cpr_param_get(ctx, name, &v, NULL), 0);
    return v;
}

START_TEST(test_defaults)
{
    char *v;
    ck_assert_str_eq(v = get("mode"), "normal");
    cpr_free(v);
    ck_assert_str_eq(v = get("downtime-limit"), "300");
    cpr_free(v);
    ck_assert_str_eq(v = get("max-bandwidth"), "0");
    cpr_free(v);
    ck_assert_str_eq(v = get("cpr-exec-command"), "");
    cpr_free(v);
    ck_assert_str_eq(v = get("cpr-transfer-connect-timeout"), "10000");
    cpr_free(v);
    ck_assert_str_eq(v = get("cpr-transfer-accept-timeout"), "0");
    cpr_free(v);
    ck_assert_int_eq(cpr_cap_get(ctx, "x-ignore-shared", NULL), 0);
    ck_assert_int_eq(cpr_get_mode(ctx), CPR_MODE_NORMAL);
}
END_TEST

START_TEST(test_set_and_get)
{
    char *v;
    ck_assert_int_eq(cpr_param_set(ctx, "mode", "cpr-reboot", NULL), 0);
    ck_assert_int_eq(cpr_get_mode(ctx), CPR_MODE_CPR_REBOOT);
    ck_assert_int_eq(cpr_set_mode(ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    ck_assert_str_eq(v = get("mode"), "cpr-transfer");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_set(ctx, "downtime-limit", "50", NULL), 0);
    ck_assert_str_eq(v = get("downtime-limit"), "50");
    cpr_free(v);
    ck_assert_int_eq(cpr_param_set(ctx, "cpr-exec-command", "/usr/bin/vmm -incoming defer", NULL), 0);
    ck_assert_str_eq(v = get("cpr-exec-command"), "/usr/bin/vmm -incoming defer");
    cpr_free(v);
    ck_assert_int_eq(cpr_cap_set(ctx, "x-ignore-shared", 1, NULL), 0);
    ck_assert_int_eq(cpr_cap_get(ctx, "x-ignore-shared", NULL), 1);
}
END_TEST

START_TEST(test_refusals_keep_the_old_value)
{
    char *v;
    ck_assert_cpr_fails(cpr_param_set(ctx, "mode", "reboot", errp_), -EINVAL, "invalid value 'reboot' for parameter 'mode'");
    ck_assert_cpr_fails(cpr_param_set(ctx, "downtime-limit", "-5", errp_), -EINVAL, "'downtime-limit'");
    ck_assert_cpr_fails(cpr_param_set(ctx, "downtime-limit", "12ms", errp_), -EINVAL, "'12ms'");
    ck_assert_cpr_fails(cpr_param_set(ctx, "max-bandwith", "1", errp_), -ENOENT, "unknown migration parameter 'max-bandwith'");
    ck_assert_cpr_fails(cpr_param_get(ctx, "nope", &v, errp_), -ENOENT, "'nope'");
    ck_assert_cpr_fails(cpr_cap_set(ctx, "x-ignore-shard", 1, errp_), -ENOENT, "unknown migration capability 'x-ignore-shard'");
    ck_assert_cpr_fails(cpr_cap_get(ctx, "postcopy-rma", errp_), -ENOENT, "'postcopy-rma'");
    ck_assert_cpr_fails(cpr_set_mode(ctx, (cpr_mode)9, errp_), -EINVAL, "unknown mode 9");
    ck_assert_cpr_fails(cpr_param_set(ctx, "cpr-transfer-connect-timeout", "86400001", errp_), -EINVAL,
                        "'cpr-transfer-connect-timeout' (expected milliseconds, 0 to 86400000");
    ck_assert_cpr_fails(cpr_param_set(ctx, "cpr-transfer-accept-timeout", "-1", errp_), -EINVAL,
                        "'cpr-transfer-accept-timeout'");
    ck_assert_str_eq(v = get("mode"), "normal");
    cpr_free(v);
    ck_assert_str_eq(v = get("downtime-limit"), "300");
    cpr_free(v);
}
END_TEST

START_TEST(test_params_frozen_during_migration)
{
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_NORMAL, NULL), 0);
    ck_assert_cpr_fails(cpr_param_set(ctx, "mode", "cpr-exec", errp_), -EBUSY, "while a migration is under way");
    ck_assert_cpr_fails(cpr_cap_set(ctx, "x-ignore-shared", 1, errp_), -EBUSY, "under way");
    cpr_gate_leave(ctx, 1);
    ck_assert_int_eq(cpr_param_set(ctx, "mode", "cpr-exec", NULL), 0);
}
END_TEST

static int count_names(const char *name, void *opaque)
{
    GString *s = opaque;
    g_string_append_printf(s, "%s;", name);
    return 0;
}

START_TEST(test_foreach_lists_names)
{
    GString *s = g_string_new(NULL);
    ck_assert_int_eq(cpr_param_foreach(count_names, s), 0);
    ck_assert_str_eq(s->str, "mode;downtime-limit;max-bandwidth;max-postcopy-bandwidth;"
                             "cpr-exec-command;cpr-transfer-connect-timeout;cpr-transfer-accept-timeout;"
                             "tls-creds;tls-hostname;tls-authz;"
                             "multifd-channels;multifd-compression;multifd-zstd-level;direct-io;memory-restore-mode;");
    g_string_truncate(s, 0);
    ck_assert_int_eq(cpr_cap_foreach(count_names, s), 0);
    ck_assert_str_eq(s->str, "x-ignore-shared;pause-before-switchover;multifd;mapped-ram;postcopy-ram;");
    g_string_free(s, TRUE);
}
END_TEST

static void param_is(const char *name, const char *want)
{
    char *v;
    ck_assert_int_eq(cpr_param_get(ctx, name, &v, NULL), 0);
    ck_assert_str_eq(v, want);
    g_free(v);
}

/* multifd's settings: QEMU's defaults, its ranges, compression by name. */
START_TEST(test_multifd_params)
{
    ck_assert_int_eq(cpr_cap_get(ctx, "multifd", NULL), 0);
    param_is("multifd-channels", "2");
    param_is("multifd-zstd-level", "1");
    param_is("multifd-compression", "none");
    ck_assert_int_eq(cpr_cap_set(ctx, "multifd", 1, NULL), 0);
    ck_assert_int_eq(cpr_cap_get(ctx, "multifd", NULL), 1);
    ck_assert_int_eq(cpr_param_set(ctx, "multifd-channels", "255", NULL), 0);
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-channels", "0", errp_), -EINVAL, "1 to 255");
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-channels", "256", errp_), -EINVAL, "1 to 255");
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-zstd-level", "21", errp_), -EINVAL, "1 to 20");
    ck_assert_cpr_fails(cpr_param_set(ctx, "multifd-compression", "zlib", errp_), -EINVAL, "none or zstd");
    ck_assert_int_eq(cpr_param_set(ctx, "multifd-compression", "zstd", NULL), 0);
    param_is("multifd-compression", "zstd");
    param_is("multifd-channels", "255");
}
END_TEST

START_TEST(test_ctx_new_refuses_unknown_flags)
{
    cpr_ctx *c = NULL;
    ck_assert_cpr_fails(cpr_ctx_new(&c, 0x10, errp_), -EINVAL, "unknown flags 0x10");
    ck_assert_ptr_null(c);
    ck_assert_uint_eq(cpr_version(), CPR_VERSION_NUMBER);
}
END_TEST

static Suite *params_suite(void)
{
    Suite *s = suite_create("params");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mode_names_round_trip);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_set_and_get);
    tcase_add_test(tc, test_refusals_keep_the_old_value);
    tcase_add_test(tc, test_params_frozen_during_migration);
    tcase_add_test(tc, test_foreach_lists_names);
    tcase_add_test(tc, test_multifd_params);
    tcase_add_test(tc, test_ctx_new_refuses_unknown_flags);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(params_suite)
