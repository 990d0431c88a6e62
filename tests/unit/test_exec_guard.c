/* SPDX-License-Identifier: MIT */
/*
 * cpr-exec rollback (issue 24), with real processes: an old image cpr-execs a new one that
 * fails at start-up, dies after adopting, gives up, commits, or adopts without the protocol
 * (an older libcpr); the report file the preserved fd writes to tells what happened. The test
 * is a child subreaper, so the guardian (re-parented to us) is reaped here: the test ends only
 * once every process of the story, the guardian included, has gone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include "testutil.h"

/* Runs `exec_image old DIR cmd...`; returns the report once every descendant has exited. */
static char *story(const char *const *cmd)
{
    g_autofree char *dir = g_dir_make_tmp("cpr-exec-guard-XXXXXX", NULL);
    ck_assert_ptr_nonnull(dir);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)EXEC_IMAGE_PATH);
    g_ptr_array_add(argv, (char *)"old");
    g_ptr_array_add(argv, dir);
    for (size_t i = 0; cmd[i]; i++)
        g_ptr_array_add(argv, (char *)cmd[i]);
    g_ptr_array_add(argv, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execv(EXEC_IMAGE_PATH, (char **)argv->pdata);
        _exit(127);
    }
    g_ptr_array_free(argv, TRUE);
    /* Every descendant: the old/new image, the guardian, a rolled-back image. */
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    ck_assert_int_eq(errno, ECHILD);
    g_autofree char *path = g_build_filename(dir, "report", NULL);
    char *got = NULL;
    ck_assert(g_file_get_contents(path, &got, NULL, NULL));
    unlink(path);
    rmdir(dir);
    return got;
}

#define NEW(role) (const char *const[]){ EXEC_IMAGE_PATH, "new", role, NULL }

START_TEST(test_binary_failing_at_start_up_is_rolled_back)
{
    g_autofree char *got = story((const char *const[]){ "/bin/sh", "-c", "exit 1", NULL });
    ck_assert_str_eq(got, "old\nrolled back: same fds, same RAM\n");
}
END_TEST

START_TEST(test_image_dying_after_adopting_is_rolled_back)
{
    g_autofree char *got = story(NEW("adopt-die"));
    ck_assert_str_eq(got, "old\nadopt-die\nrolled back: same fds, same RAM\n");
}
END_TEST

START_TEST(test_failed_load_ends_the_new_image_and_rolls_back)
{
    g_autofree char *got = story(NEW("abandon"));
    ck_assert_str_eq(got, "old\nabandon\nrolled back: same fds, same RAM\n");
}
END_TEST

START_TEST(test_commit_dismisses_the_guardian)
{
    g_autofree char *got = story(NEW("commit"));
    ck_assert_str_eq(got, "old\ncommit\n");
}
END_TEST

/* An older libcpr reads the state without 'A': it may run the guest; no rollback. */
START_TEST(test_older_adopter_is_not_rolled_back)
{
    g_autofree char *got = story(NEW("old-adopter"));
    ck_assert_str_eq(got, "old\n");
}
END_TEST

/* The exec itself failing: the old image resumes, and the guardian exits without a rollback. */
START_TEST(test_failed_exec_dismisses_the_guardian)
{
    g_autofree char *got = story((const char *const[]){ "/nonexistent/vmm", NULL });
    ck_assert_str_eq(got, "old\nexec failed: cpr-exec: cannot execute /nonexistent/vmm: No such file or directory\n");
}
END_TEST

static Suite *exec_guard_suite(void)
{
    Suite *s = suite_create("exec_guard");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_binary_failing_at_start_up_is_rolled_back);
    tcase_add_test(tc, test_image_dying_after_adopting_is_rolled_back);
    tcase_add_test(tc, test_failed_load_ends_the_new_image_and_rolls_back);
    tcase_add_test(tc, test_commit_dismisses_the_guardian);
    tcase_add_test(tc, test_older_adopter_is_not_rolled_back);
    tcase_add_test(tc, test_failed_exec_dismisses_the_guardian);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(exec_guard_suite)
