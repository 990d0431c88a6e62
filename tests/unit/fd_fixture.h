/* SPDX-License-Identifier: MIT */
/* The check fixture of the suites that pass fds around. */
#ifndef CPR_FD_FIXTURE_H
#define CPR_FD_FIXTURE_H

#include <check.h>

#include <cpr/cpr.h>

#include "proc_util.h"

/*
 * The fixture of the suites that pass fds around: a context, and a check that the test left
 * as many fds open as it found (failing tests included: checked fixtures run in the test's
 * process). Call from the suite's setup and teardown.
 */
static inline void proc_fixture_setup(cpr_ctx **ctx, int *fds_before)
{
    *fds_before = proc_fd_count();
    ck_assert_int_eq(cpr_ctx_new(ctx, 0, NULL), 0);
}

static inline void proc_fixture_teardown(cpr_ctx *ctx, int fds_before)
{
    cpr_ctx_free(ctx);
    int after = proc_fd_count();
    ck_assert_msg(after == fds_before, "fd leak: %d open before, %d after", fds_before, after);
}

/* Defines `ctx`, `fds_before`, setup() and teardown() on the fixture above. */
#define PROC_CTX_FIXTURE()                                                                   \
    static cpr_ctx *ctx;                                                                     \
    static int fds_before;                                                                   \
    static void setup(void) { proc_fixture_setup(&ctx, &fds_before); }                      \
    static void teardown(void) { proc_fixture_teardown(ctx, fds_before); }

#endif
