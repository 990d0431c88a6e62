/* SPDX-License-Identifier: MIT */
/* Helpers for the suites that run real processes: fd counting and the cpr_peer helper. */
#ifndef CPR_PROC_UTIL_H
#define CPR_PROC_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

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

#define PROC_NR_HUGE "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
#define PROC_FREE_HUGE "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

static inline long proc_read_long(const char *path)
{
    long v = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

static inline int proc_write_long(const char *path, long v)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%ld", v);
    return fclose(f);
}

/*
 * Makes at least `want` free 2 MiB huge pages available, raising /proc/sys/vm/nr_hugepages
 * when it can. Returns the number of free ones (below want: the caller skips) and stores in
 * *added how many it added, for proc_hugepages_restore(). Suites running in parallel each
 * take back only what they added.
 */
static inline long proc_hugepages_reserve(long want, long *added)
{
    *added = 0;
    long free_pages = proc_read_long(PROC_FREE_HUGE);
    if (free_pages < want) {
        long nr = proc_read_long(PROC_NR_HUGE);
        if (proc_write_long(PROC_NR_HUGE, nr + want - free_pages) == 0)
            *added = proc_read_long(PROC_NR_HUGE) - nr;
        free_pages = proc_read_long(PROC_FREE_HUGE);
    }
    return free_pages;
}

static inline void proc_hugepages_restore(long added)
{
    if (added > 0)
        proc_write_long(PROC_NR_HUGE, proc_read_long(PROC_NR_HUGE) - added);
}

#endif
