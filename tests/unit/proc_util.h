/* SPDX-License-Identifier: MIT */
/* Helpers for the suites that run real processes: fd counting and the cpr_peer helper. */
#ifndef CPR_PROC_UTIL_H
#define CPR_PROC_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <glib.h>

#include <cpr/cpr.h>

/* Number of open fds in this process (the directory stream's own fd not counted). */
static inline int proc_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n - 1;
}

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

/* A fresh directory for sockets and files; remove it with proc_rmtree(). */
static inline char *proc_tmpdir(void)
{
    char *dir = g_strdup("/tmp/cpr-test-XXXXXX");
    return g_mkdtemp(dir);
}

static inline void proc_rmtree(const char *dir)
{
    char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    int rc = system(cmd);
    (void)rc;
    g_free(cmd);
}

/* Waits for pid and returns its exit status, or 128 + signal. */
static inline int proc_wait(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#endif

/*
 * Makes at least `want` free 2 MiB huge pages available, raising /proc/sys/vm/nr_hugepages
 * when it can. Returns the number of free ones (0: none, the caller skips) and stores the
 * previous setting in *old for proc_hugepages_restore() (-1 when nothing was changed).
 */
static inline long proc_hugepages_reserve(long want, long *old)
{
    *old = -1;
    const char *nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    const char *fr = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
    long total = 0, free_pages = 0;
    FILE *f = fopen(nr, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &total) != 1)
        total = 0;
    fclose(f);
    if ((f = fopen(fr, "r"))) {
        if (fscanf(f, "%ld", &free_pages) != 1)
            free_pages = 0;
        fclose(f);
    }
    if (free_pages < want && (f = fopen(nr, "w"))) {
        fprintf(f, "%ld", total + want - free_pages);
        if (fclose(f) == 0)
            *old = total;
        if ((f = fopen(fr, "r"))) {
            if (fscanf(f, "%ld", &free_pages) != 1)
                free_pages = 0;
            fclose(f);
        }
    }
    return free_pages;
}

static inline void proc_hugepages_restore(long old)
{
    FILE *f;
    if (old >= 0 && (f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "w"))) {
        fprintf(f, "%ld", old);
        fclose(f);
    }
}
