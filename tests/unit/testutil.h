/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the check suites. */
#ifndef CPR_TESTUTIL_H
#define CPR_TESTUTIL_H

#include <check.h>
#include <glib.h>
#include <string.h>

#include <cpr/cpr.h>

/* Asserts that `call` failed with `code` and an error whose message contains `needle`. */
#define ck_assert_cpr_fails(call, code, needle)                                          \
    do {                                                                                 \
        cpr_error *err_ = NULL;                                                          \
        cpr_error **errp_ = &err_;                                                       \
        (void)errp_;                                                                     \
        int ret_ = (call);                                                               \
        ck_assert_int_eq(ret_, (code));                                                  \
        ck_assert_ptr_nonnull(err_);                                                     \
        ck_assert_int_eq(cpr_error_code(err_), (code));                                  \
        ck_assert_msg(strstr(cpr_error_message(err_), (needle)) != NULL,                 \
                      "message '%s' lacks '%s'", cpr_error_message(err_), (needle));     \
        cpr_error_free(err_);                                                            \
    } while (0)

/* Runs a suite built by `make_suite` and returns the process exit status. */
#define CPR_TEST_MAIN(make_suite)                                                        \
    int main(void)                                                                       \
    {                                                                                    \
        SRunner *sr = srunner_create(make_suite());                                      \
        srunner_run_all(sr, CK_NORMAL);                                                  \
        int failed = srunner_ntests_failed(sr);                                          \
        srunner_free(sr);                                                                \
        return failed ? 1 : 0;                                                           \
    }

#endif
