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

/* Runs `exec_image OLD DIR cmd...`; returns the report once every descendant has exited. */
static char *story(const char *old, const char *const *cmd)
{
    g_autofree char *dir = g_dir_make_tmp("cpr-exec-guard-XXXXXX", NULL);
    ck_assert_ptr_nonnull(dir);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)EXEC_IMAGE_PATH);
    g_ptr_array_add(argv, (char *)old);
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

#define NEW(role) { EXEC_IMAGE_PATH, "new", role, NULL }

static const struct {
    const char *what;
    const char *cmd[5];
    const char *report; /* what the images wrote, in order */
} stories[] = {
    { "a binary failing at start-up is rolled back", { "/bin/sh", "-c", "exit 1", NULL },
      "old\nrolled back: same fds, same RAM\n" },
    { "an image dying after adopting is rolled back", NEW("adopt-die"),
      "old\nadopt-die\nrolled back: same fds, same RAM\n" },
    { "a failed load ends the new image and rolls back", NEW("abandon"),
      "old\nabandon\nrolled back: same fds, same RAM\n" },
    { "a commit dismisses the guardian", NEW("commit"), "old\ncommit\n" },
    /* An older libcpr reads the state without 'A': it may run the guest; no rollback. */
    { "an older adopter is not rolled back", NEW("old-adopter"), "old\n" },
    /* The exec itself failing: the old image resumes, the guardian exits without a rollback. */
    { "a failed exec dismisses the guardian", { "/nonexistent/vmm", NULL },
      "old\nexec failed: cpr-exec: cannot execute /nonexistent/vmm: No such file or directory\n" },
};

START_TEST(test_story)
{
    g_autofree char *got = story("old", stories[_i].cmd);
    ck_assert_msg(!strcmp(got, stories[_i].report), "%s: report '%s', expected '%s'", stories[_i].what,
                  got, stories[_i].report);
}
END_TEST

/* The guardian starts while the guest runs: an old image that dies before its exec never gave
 * the guest up, and its state is empty or partial; no rollback may start from it. */
START_TEST(test_old_dies_before_exec)
{
    static const char *const cmd[] = NEW("commit");
    g_autofree char *got = story("old-dies", cmd);
    ck_assert_msg(!strcmp(got, "old\n"), "report '%s', expected only 'old'", got);
}
END_TEST

static Suite *exec_guard_suite(void)
{
    Suite *s = suite_create("exec_guard");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_story, 0, G_N_ELEMENTS(stories));
    tcase_add_test(tc, test_old_dies_before_exec);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(exec_guard_suite)
