/* SPDX-License-Identifier: MIT */
/* Blockers per mode, only-migratable, the migration gate and notifier order. */
#include <errno.h>

#include "core/error.h"
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

START_TEST(test_blocker_blocks_only_its_modes)
{
    cpr_blocker *b;
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "local disk d0", &b, NULL), 0);
    ck_assert_uint_eq(cpr_blocker_count(ctx, CPR_MODE_NORMAL), 1);
    ck_assert_uint_eq(cpr_blocker_count(ctx, CPR_MODE_CPR_REBOOT), 0);
    ck_assert_int_eq(cpr_blockers_check(ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_cpr_fails(cpr_blockers_check(ctx, CPR_MODE_NORMAL, errp_), -EPERM, "local disk d0");
    ck_assert_str_eq(cpr_blocker_reason(b), "local disk d0");
    ck_assert_uint_eq(cpr_blocker_modes(b), CPR_MODE_BIT(CPR_MODE_NORMAL));
    cpr_blocker_del(ctx, b);
    ck_assert_int_eq(cpr_blockers_check(ctx, CPR_MODE_NORMAL, NULL), 0);
}
END_TEST

START_TEST(test_check_lists_every_reason_in_one_error)
{
    cpr_blocker *a, *b, *c;
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_ALL, "vfio device 01:00.0", &a, NULL), 0);
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODE_BIT(CPR_MODE_CPR_EXEC), "exec-only", &b, NULL), 0);
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_ALL, "host pci bridge", &c, NULL), 0);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_blockers_check(ctx, CPR_MODE_CPR_TRANSFER, &err), -EPERM);
    ck_assert_str_eq(cpr_error_message(err),
                     "migration in mode cpr-transfer is blocked: vfio device 01:00.0; host pci bridge");
    cpr_error_free(err);
    ck_assert_uint_eq(cpr_blocker_count(ctx, CPR_MODE_CPR_EXEC), 3);
}
END_TEST

static int collect(const char *reason, uint32_t modes, void *opaque)
{
    GString *s = opaque;
    g_string_append_printf(s, "[%s:%x]", reason, modes);
    return 0;
}

START_TEST(test_foreach_lists_blockers_per_mode)
{
    cpr_blocker *a, *b;
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "disk", &a, NULL), 0);
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODE_BIT(CPR_MODE_CPR_REBOOT), "tpm", &b, NULL), 0);
    GString *s = g_string_new(NULL);
    ck_assert_int_eq(cpr_blocker_foreach(ctx, CPR_MODE_CPR_REBOOT, collect, s), 0);
    ck_assert_str_eq(s->str, "[tpm:2]");
    g_string_truncate(s, 0);
    ck_assert_int_eq(cpr_blocker_foreach(ctx, CPR_MODE_NORMAL, collect, s), 0);
    ck_assert_str_eq(s->str, "[disk:1]");
    g_string_free(s, TRUE);
}
END_TEST

START_TEST(test_add_refuses_bad_arguments)
{
    cpr_blocker *b = NULL;
    ck_assert_cpr_fails(cpr_blocker_add(ctx, CPR_MODES_ALL, "", &b, errp_), -EINVAL, "reason");
    ck_assert_cpr_fails(cpr_blocker_add(ctx, 0, "x", &b, errp_), -EINVAL, "empty mode set");
    ck_assert_ptr_null(b);
    ck_assert_uint_eq(cpr_blocker_count(ctx, CPR_MODE_NORMAL), 0);
}
END_TEST

START_TEST(test_add_fails_when_only_migratable)
{
    cpr_blocker *b = NULL;
    ck_assert_int_eq(cpr_ctx_set_only_migratable(ctx, 1, NULL), 0);
    ck_assert_int_eq(cpr_ctx_get_only_migratable(ctx), 1);
    ck_assert_cpr_fails(cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "disk", &b, errp_), -EACCES,
                        "only-migratable");
    ck_assert_ptr_null(b);
}
END_TEST

START_TEST(test_add_fails_during_migration_in_a_blocked_mode)
{
    cpr_blocker *b = NULL;
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    ck_assert_cpr_fails(cpr_blocker_add(ctx, CPR_MODES_ALL, "hotplugged", &b, errp_), -EBUSY,
                        "mode cpr-transfer is under way");
    /* A blocker for another mode does not interfere with this migration. */
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "disk", &b, NULL), 0);
    cpr_gate_leave(ctx, 1);
    cpr_blocker *c;
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_ALL, "hotplugged", &c, NULL), 0);
}
END_TEST

START_TEST(test_gate_refuses_blocked_mode_and_second_migration)
{
    cpr_blocker *b;
    ck_assert_int_eq(cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "disk d0", &b, NULL), 0);
    ck_assert_cpr_fails(cpr_gate_enter(ctx, CPR_MODE_NORMAL, errp_), -EPERM, "disk d0");
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_cpr_fails(cpr_gate_enter(ctx, CPR_MODE_CPR_REBOOT, errp_), -EBUSY, "already under way");
    cpr_gate_leave(ctx, 1);
}
END_TEST

struct trace {
    GString *log;
    int veto;
};

static int record(cpr_ctx *c, cpr_event ev, cpr_mode mode, cpr_error **errp, void *opaque)
{
    struct trace *t = opaque;
    g_string_append_printf(t->log, "%s:%s ", cpr_event_name(ev), cpr_mode_name(mode));
    ck_assert((ev == CPR_EVENT_SETUP) == (errp != NULL));
    if (ev == CPR_EVENT_SETUP && t->veto) {
        cpr_error_set(errp, -EAGAIN, "device busy");
        return -EAGAIN;
    }
    return 0;
}

START_TEST(test_notifiers_see_setup_then_done)
{
    struct trace t = { g_string_new(NULL), 0 };
    struct trace other = { g_string_new(NULL), 0 };
    cpr_notifier *n, *o;
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODE_BIT(CPR_MODE_CPR_REBOOT), record, &t, &n, NULL), 0);
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODES_NORMAL_ONLY, record, &other, &o, NULL), 0);
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    cpr_gate_leave(ctx, 1);
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    cpr_gate_leave(ctx, 0);
    ck_assert_str_eq(t.log->str, "setup:cpr-reboot done:cpr-reboot setup:cpr-reboot failed:cpr-reboot ");
    ck_assert_str_eq(other.log->str, "");
    cpr_notifier_del(ctx, n);
    cpr_notifier_del(ctx, o);
    g_string_free(t.log, TRUE);
    g_string_free(other.log, TRUE);
}
END_TEST

START_TEST(test_setup_veto_fails_the_migration_and_later_notifiers_see_failed_alone)
{
    struct trace first = { g_string_new(NULL), 0 }, vetoer = { g_string_new(NULL), 1 },
                 last = { g_string_new(NULL), 0 };
    cpr_notifier *a, *b, *c;
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODES_ALL, record, &first, &a, NULL), 0);
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODES_ALL, record, &vetoer, &b, NULL), 0);
    ck_assert_int_eq(cpr_notifier_add(ctx, CPR_MODES_ALL, record, &last, &c, NULL), 0);
    ck_assert_cpr_fails(cpr_gate_enter(ctx, CPR_MODE_NORMAL, errp_), -EAGAIN, "device busy");
    ck_assert_str_eq(first.log->str, "setup:normal failed:normal ");
    ck_assert_str_eq(vetoer.log->str, "setup:normal failed:normal ");
    ck_assert_str_eq(last.log->str, "failed:normal ");
    /* The gate is open again after a veto. */
    vetoer.veto = 0;
    ck_assert_int_eq(cpr_gate_enter(ctx, CPR_MODE_NORMAL, NULL), 0);
    cpr_gate_leave(ctx, 1);
    g_string_free(first.log, TRUE);
    g_string_free(vetoer.log, TRUE);
    g_string_free(last.log, TRUE);
}
END_TEST

START_TEST(test_notifier_add_refuses_bad_arguments)
{
    cpr_notifier *n = NULL;
    ck_assert_cpr_fails(cpr_notifier_add(ctx, CPR_MODES_ALL, NULL, NULL, &n, errp_), -EINVAL, "fn is NULL");
    ck_assert_cpr_fails(cpr_notifier_add(ctx, 0, record, NULL, &n, errp_), -EINVAL, "empty mode set");
    ck_assert_ptr_null(n);
}
END_TEST

static Suite *blocker_suite(void)
{
    Suite *s = suite_create("blocker");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_blocker_blocks_only_its_modes);
    tcase_add_test(tc, test_check_lists_every_reason_in_one_error);
    tcase_add_test(tc, test_foreach_lists_blockers_per_mode);
    tcase_add_test(tc, test_add_refuses_bad_arguments);
    tcase_add_test(tc, test_add_fails_when_only_migratable);
    tcase_add_test(tc, test_add_fails_during_migration_in_a_blocked_mode);
    tcase_add_test(tc, test_gate_refuses_blocked_mode_and_second_migration);
    tcase_add_test(tc, test_notifiers_see_setup_then_done);
    tcase_add_test(tc, test_setup_veto_fails_the_migration_and_later_notifiers_see_failed_alone);
    tcase_add_test(tc, test_notifier_add_refuses_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(blocker_suite)
