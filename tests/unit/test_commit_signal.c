/* SPDX-License-Identifier: MIT */
/* cpr-transfer's commit signal: unset until set, read without consuming, only an eventfd. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "handover/commit_signal.h"
#include "testutil.h"

START_TEST(test_signal_is_unset_until_set_and_stays_set)
{
    int fd = cpr_commit_signal_new(NULL);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(cpr_commit_signal_check(fd, NULL), 0);
    ck_assert_int_eq(cpr_commit_signal_is_set(fd), 0);
    /* The other process's copy: the same eventfd, as SCM_RIGHTS gives it. */
    int peer = dup(fd);
    ck_assert_int_eq(cpr_commit_signal_set(peer, NULL), 0);
    close(peer);
    ck_assert_int_eq(cpr_commit_signal_is_set(fd), 1);
    ck_assert_int_eq(cpr_commit_signal_is_set(fd), 1); /* a look takes nothing away */
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    close(fd);
}
END_TEST

START_TEST(test_check_refuses_what_is_not_an_eventfd)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_cpr_fails(cpr_commit_signal_check(p[0], errp_), -EPROTO, "is not an eventfd but pipe:");
    close(p[0]);
    close(p[1]);
}
END_TEST

static Suite *commit_signal_suite(void)
{
    Suite *s = suite_create("commit_signal");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_signal_is_unset_until_set_and_stays_set);
    tcase_add_test(tc, test_check_refuses_what_is_not_an_eventfd);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(commit_signal_suite)
