/* SPDX-License-Identifier: MIT */
/* Deferred teardown: the helper that shares our memory, what it keeps, and when it goes. */
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "fd_fixture.h"
#include "testutil.h"

#define KCMP_VM 1

PROC_CTX_FIXTURE()

/* Processes other than `of` that share its address space (kcmp), at most max of them. */
static int find_holders(pid_t of, pid_t *out, int max)
{
    GDir *d = g_dir_open("/proc", 0, NULL);
    int n = 0;
    for (const char *e; d && (e = g_dir_read_name(d));) {
        char *end;
        long pid = strtol(e, &end, 10);
        if (*end || pid <= 0 || pid == of)
            continue;
        if (syscall(SYS_kcmp, (pid_t)of, (pid_t)pid, KCMP_VM, 0, 0) == 0 && n < max)
            out[n++] = (pid_t)pid;
    }
    if (d)
        g_dir_close(d);
    return n;
}

/* 1 once pid has exited (gone, or a zombie its new parent has not reaped yet). */
static int exited(pid_t pid)
{
    char path[64], *text = NULL;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 1;
    const char *state = strrchr(text, ')');
    int dead = state && (state[2] == 'Z' || state[2] == 'X');
    g_free(text);
    return dead;
}

static int wait_exited(pid_t pid, int ms)
{
    for (int i = 0; i < ms && !exited(pid); i++)
        g_usleep(1000);
    return exited(pid);
}

/* Counts pid's fds whose link starts with prefix. */
static int count_links(pid_t pid, const char *prefix)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    GDir *d = g_dir_open(dir, 0, NULL);
    int n = 0;
    for (const char *e; d && (e = g_dir_read_name(d));) {
        char *path = g_strdup_printf("%s/%s", dir, e);
        char *link = g_file_read_link(path, NULL);
        n += link && g_str_has_prefix(link, prefix);
        g_free(link);
        g_free(path);
    }
    if (d)
        g_dir_close(d);
    return n;
}

/* Starts a helper, or says why the test cannot run here (valgrind runs no CLONE_VM process). */
static int defer_or_skip(cpr_ctx *c)
{
    cpr_error *err = NULL;
    int r = cpr_teardown_defer(c, 0, &err);
    if (r < 0) {
        fprintf(stderr, "SKIP: no deferred-teardown helper here: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        return 0;
    }
    return 1;
}

START_TEST(test_defer_refuses_null_ctx_and_unknown_flags)
{
    ck_assert_cpr_fails(cpr_teardown_defer(NULL, 0, errp_), -EINVAL, "ctx is NULL");
    ck_assert_cpr_fails(cpr_teardown_defer(ctx, 4, errp_), -EINVAL, "unknown flags 0x4");
    cpr_teardown_cancel(NULL);
    cpr_teardown_cancel(ctx); /* none held: nothing happens */
}
END_TEST

START_TEST(test_helper_shares_memory_and_keeps_no_observable_fd)
{
    int sv[2], ev = eventfd(0, EFD_CLOEXEC);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_ge(ev, 0);
    if (!defer_or_skip(ctx)) {
        close(sv[0]), close(sv[1]), close(ev);
        return;
    }
    pid_t holder[4];
    ck_assert_int_eq(find_holders(getpid(), holder, 4), 1);
    ck_assert(!exited(holder[0]));
    /* Its own two pipe ends, no socket; the eventfd (an anonymous inode) kept. */
    ck_assert_int_eq(count_links(holder[0], "socket:"), 0);
    ck_assert_int_eq(count_links(holder[0], "pipe:"), 2);
    ck_assert_int_eq(count_links(holder[0], "anon_inode:[eventfd]"), 1);
    /* Our close alone hangs the socket up: the helper holds no copy of it. */
    close(sv[0]);
    char c;
    ck_assert_int_eq(read(sv[1], &c, 1), 0);
    close(sv[1]);
    close(ev);

    ck_assert_int_eq(cpr_teardown_defer(ctx, 0, NULL), 0); /* held already: still one */
    ck_assert_int_eq(find_holders(getpid(), holder + 1, 3), 1);
    ck_assert_int_eq(holder[1], holder[0]);

    cpr_teardown_cancel(ctx);
    ck_assert(wait_exited(holder[0], 5000));
    ck_assert_int_eq(find_holders(getpid(), holder, 4), 0);
}
END_TEST

START_TEST(test_ram_block_freed_while_held_stays_mapped)
{
    cpr_ram_block *b;
    ck_assert_int_eq(cpr_ram_block_new(ctx, "ram", 4 << 20, 4096, 0, &b, NULL), 0);
    volatile uint64_t *host = cpr_ram_block_host(b);
    host[1000] = 0x5eed;
    if (!defer_or_skip(ctx))
        return;
    cpr_ram_block_free(b);
    /* Left for the exec or exit to unmap in the helper: still readable here. */
    ck_assert_uint_eq(host[1000], 0x5eed);
    cpr_teardown_cancel(ctx);
    munmap((void *)host, 4 << 20);
}
END_TEST

/* A child that starts a helper, reports its pid on fd `report`, then execs or exits. */
static pid_t child_with_helper(int report, int do_exec)
{
    pid_t pid = fork();
    if (pid)
        return pid;
    cpr_ctx *c;
    cpr_ram_block *b;
    if (cpr_ctx_new(&c, 0, NULL) < 0 || cpr_ram_block_new(c, "ram", 64 << 20, 4096, 0, &b, NULL) < 0)
        _exit(98);
    memset(cpr_ram_block_host(b), 1, 64 << 20);
    pid_t holder = 0;
    if (cpr_teardown_defer(c, 0, NULL) < 0 || find_holders(getpid(), &holder, 1) != 1)
        _exit(97); /* no helper here: the parent skips */
    if (write(report, &holder, sizeof(holder)) != sizeof(holder))
        _exit(96);
    if (do_exec) {
        /* A new image that adopts the state and commits: one that did not (/bin/true) would
         * have the cpr-exec guardian exec this test back, suite and all, again and again. */
        const char *argv[] = { EXEC_IMAGE_PATH, "new", "commit", NULL };
        cpr_exec(c, argv, NULL);
        _exit(95);
    }
    _exit(0);
}

static void check_exec_or_exit_releases_helper(int do_exec)
{
    int report[2];
    ck_assert_int_eq(pipe2(report, O_CLOEXEC), 0);
    pid_t pid = child_with_helper(report[1], do_exec);
    close(report[1]);
    pid_t holder = 0;
    ssize_t n = read(report[0], &holder, sizeof(holder));
    close(report[0]);
    int status = proc_wait(pid);
    if (status == 97) {
        fprintf(stderr, "SKIP: no deferred-teardown helper here\n");
        return;
    }
    ck_assert_int_eq(status, 0);
    ck_assert_int_eq(n, sizeof(holder));
    /* The exec or exit dropped the child's hold on the memory: the helper unmaps and goes. */
    ck_assert_msg(wait_exited(holder, 10000), "helper %d still runs", (int)holder);
}

START_TEST(test_exec_releases_helper)
{
    check_exec_or_exit_releases_helper(1);
}
END_TEST

START_TEST(test_exit_releases_helper)
{
    check_exec_or_exit_releases_helper(0);
}
END_TEST

START_TEST(test_failed_exec_leaves_no_helper)
{
    pid_t pid = fork();
    if (pid == 0) {
        cpr_ctx *c;
        if (cpr_ctx_new(&c, 0, NULL) < 0)
            _exit(98);
        const char *argv[] = { "/nonexistent/cpr-vmm", NULL };
        int r = cpr_exec(c, argv, NULL);
        pid_t h;
        _exit(r == -ENOENT && find_holders(getpid(), &h, 1) == 0 ? 0 : 1);
    }
    ck_assert_int_eq(proc_wait(pid), 0);
}
END_TEST

static Suite *teardown_suite(void)
{
    Suite *s = suite_create("teardown");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defer_refuses_null_ctx_and_unknown_flags);
    tcase_add_test(tc, test_helper_shares_memory_and_keeps_no_observable_fd);
    tcase_add_test(tc, test_ram_block_freed_while_held_stays_mapped);
    tcase_add_test(tc, test_exec_releases_helper);
    tcase_add_test(tc, test_exit_releases_helper);
    tcase_add_test(tc, test_failed_exec_leaves_no_helper);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(teardown_suite)
