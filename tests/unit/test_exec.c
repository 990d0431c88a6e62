/* SPDX-License-Identifier: MIT */
/* cpr-exec: fds and RAM preserved across a real exec, flags restored when exec fails. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "handover/cpr_state.h"
#include "fd_fixture.h"
#include "testutil.h"

static cpr_ctx *ctx;
static int fds_before;

static void setup(void)
{
    unsetenv(CPR_EXEC_STATE_ENV);
    proc_fixture_setup(&ctx, &fds_before);
}

static void teardown(void)
{
    proc_fixture_teardown(ctx, fds_before);
}

START_TEST(test_exec_preserves_fds_and_ram_in_new_image)
{
    int report[2];
    ck_assert_int_eq(pipe2(report, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        cpr_ram_block *b;
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (cpr_fd_save(ctx, "report", 0, report[1], NULL) < 0 || cpr_fd_save(ctx, "dev", 1, null, NULL) < 0 ||
            cpr_ram_block_new(ctx, "ram", 8 << 20, 4096, 0, &b, NULL) < 0)
            _exit(98);
        memcpy(cpr_ram_block_host(b), &(uint64_t){ 0x1234abcdull }, 8);
        const char *argv[] = { CPR_PEER_PATH, "exec-adopt", "8388608", NULL };
        cpr_exec(ctx, argv, NULL);
        _exit(99);
    }
    close(report[1]);
    GString *got = g_string_new(NULL);
    char buf[512];
    ssize_t n;
    while ((n = read(report[0], buf, sizeof(buf))) > 0)
        g_string_append_len(got, buf, n);
    close(report[0]);
    ck_assert_int_eq(proc_wait(pid), 0);
    ck_assert_str_eq(got->str, "adopted 1 mode cpr-exec env unset\n"
                               "statefd closed\n"
                               "fd report 0 type 010000 cloexec 1\n"
                               "fd dev 1 type 020000 cloexec 1\n"
                               "ram reattached 1 value 1234abcd\n");
    g_string_free(got, TRUE);
}
END_TEST

static int cloexec(int fd)
{
    return (fcntl(fd, F_GETFD) & FD_CLOEXEC) ? 1 : 0;
}

START_TEST(test_exec_failure_restores_cloexec_flags)
{
    int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int b = open("/dev/null", O_RDONLY); /* a VMM may have an fd without close-on-exec */
    ck_assert_int_eq(cpr_fd_save(ctx, "a", 0, a, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "b", 0, b, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "a-again", 0, a, NULL), 0);
    cpr_ram_block *r;
    ck_assert_int_eq(cpr_ram_block_new(ctx, "ram", 1 << 20, 4096, 0, &r, NULL), 0);
    int before = proc_fd_count();
    const char *argv[] = { "/nonexistent/cpr-vmm", "-incoming", "defer", NULL };
    ck_assert_cpr_fails(cpr_exec(ctx, argv, errp_), -ENOENT, "cannot execute /nonexistent/cpr-vmm");
    ck_assert_int_eq(cloexec(a), 1);
    ck_assert_int_eq(cloexec(b), 0);
    ck_assert_int_eq(cloexec(cpr_ram_block_fd(r)), 1);
    ck_assert_int_eq(proc_fd_count(), before); /* the state memfd is gone */
    ck_assert_ptr_null(getenv(CPR_EXEC_STATE_ENV));
    ck_assert_cpr_fails(cpr_exec_command(ctx, "'unterminated", errp_), -EINVAL, "cannot parse");
    ck_assert_cpr_fails(cpr_exec_command(ctx, "/nonexistent/vmm -m 1G", errp_), -ENOENT, "/nonexistent/vmm");
    const char *empty[] = { NULL };
    ck_assert_cpr_fails(cpr_exec(ctx, empty, errp_), -EINVAL, "no command");
    cpr_fd_delete(ctx, "a", 0);
    cpr_fd_delete(ctx, "a-again", 0);
    cpr_fd_delete(ctx, "b", 0);
    close(a);
    close(b);
}
END_TEST

START_TEST(test_adopt_without_variable_does_nothing)
{
    ck_assert_int_eq(cpr_exec_state_adopt(ctx, NULL), 0);
    ck_assert_uint_eq(cpr_fd_count(ctx), 0);
}
END_TEST

START_TEST(test_adopt_refuses_malformed_variable)
{
    setenv(CPR_EXEC_STATE_ENV, "12abc", 1);
    ck_assert_cpr_fails(cpr_exec_state_adopt(ctx, errp_), -EINVAL, "'12abc' is not an fd number");
    ck_assert_ptr_null(getenv(CPR_EXEC_STATE_ENV));
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    g_autofree char *v = g_strdup_printf("%d", fd);
    setenv(CPR_EXEC_STATE_ENV, v, 1);
    ck_assert_cpr_fails(cpr_exec_state_adopt(ctx, errp_), -EPROTO, "is not a cpr state memfd");
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
}
END_TEST

/* Leaves a cpr-exec state in a memfd listing `fd` as a regular file, as cpr_exec() would. */
static void plant_state(int fd, uint32_t type)
{
    g_autoptr(cpr_state) st = cpr_state_new(CPR_MODE_CPR_EXEC, 0);
    cpr_state_entry e = { .kind = CPR_STATE_FD, .name = "disk", .type = type, .slot = fd };
    cpr_state_add(st, &e, strlen(e.name));
    g_autoptr(GByteArray) buf = g_byte_array_new();
    ck_assert_int_eq(cpr_state_encode(st, buf, NULL), 0);
    int m = memfd_create("state", MFD_CLOEXEC);
    ck_assert_int_eq(write(m, buf->data, buf->len), (ssize_t)buf->len);
    g_autofree char *v = g_strdup_printf("%d", m);
    setenv(CPR_EXEC_STATE_ENV, v, 1);
}

START_TEST(test_adopt_refuses_fd_of_wrong_type_and_closes_it)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, 0), 0);
    plant_state(p[0], S_IFREG);
    ck_assert_cpr_fails(cpr_exec_state_adopt(ctx, errp_), -EPROTO, "expected a regular file");
    ck_assert_int_eq(fcntl(p[0], F_GETFD), -1);
    ck_assert_uint_eq(cpr_fd_count(ctx), 0);
    close(p[1]);
}
END_TEST

START_TEST(test_adopt_installs_fd_and_sets_cloexec)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, 0), 0);
    plant_state(p[0], S_IFIFO);
    ck_assert_int_eq(cpr_exec_state_adopt(ctx, NULL), 1);
    ck_assert_int_eq(cpr_get_mode(ctx), CPR_MODE_CPR_EXEC);
    ck_assert_int_eq(cloexec(p[0]), 1);
    ck_assert_int_eq(cpr_fd_find(ctx, "disk", 0), p[0]);
    cpr_fd_delete(ctx, "disk", 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

/*
 * Runs cpr_exec() in a child (so that an exec, were the check missing, replaces the child and
 * not the test) on the context as it is, exec'ing cpr_peer; the child exits 0 only when
 * cpr_exec() returned `code` with an error naming `needle`.
 */
static void exec_refused_before_exec(int code, const char *needle)
{
    pid_t pid = fork();
    if (pid == 0) {
        cpr_error *err = NULL;
        const char *argv[] = { CPR_PEER_PATH, "exec-adopt", "0", NULL };
        int ret = cpr_exec(ctx, argv, &err);
        /* Reached only when cpr_exec() refused: a missing check execs cpr_peer, which fails. */
        int ok = ret == code && err && strstr(cpr_error_message(err), needle);
        if (!ok)
            fprintf(stderr, "cpr_exec: %d '%s'\n", ret, err ? cpr_error_message(err) : "");
        _exit(ok ? 0 : 1);
    }
    ck_assert_int_eq(proc_wait(pid), 0);
}

/* Issue 25 item 3: a registered fd closed without cpr_fd_delete() fails before the exec. */
START_TEST(test_exec_refuses_closed_fd_before_exec)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(cpr_fd_save(ctx, "gone", 3, fd, NULL), 0);
    close(fd);
    g_autofree char *needle = g_strdup_printf("fd 'gone' id 3: fd %d is not usable", fd);
    exec_refused_before_exec(-EBADF, needle);
    cpr_fd_delete(ctx, "gone", 3);
}
END_TEST

/* ... and one whose number now holds another kind of file. */
START_TEST(test_exec_refuses_reused_fd_number_before_exec)
{
    int fd = memfd_create("disk", MFD_CLOEXEC);
    ck_assert_int_eq(cpr_fd_save(ctx, "disk", 0, fd, NULL), 0);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    ck_assert_int_eq(dup3(p[0], fd, O_CLOEXEC), fd); /* closed and reused behind the registry */
    g_autofree char *needle = g_strdup_printf("fd 'disk' id 0: expected a regular file, fd %d is a pipe", fd);
    exec_refused_before_exec(-EPROTO, needle);
    cpr_fd_delete(ctx, "disk", 0);
    close(fd);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ... and more entries than the new image's loader accepts. */
START_TEST(test_exec_refuses_more_entries_than_the_loader_takes)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int id = 0; id <= (int)CPR_STATE_MAX_ENTRIES_DEFAULT; id++)
        ck_assert_int_eq(cpr_fd_save(ctx, "many", id, fd, NULL), 0);
    exec_refused_before_exec(-E2BIG, "section cpr-fds lists 65537 entries, the limit is 65536");
    close(fd); /* the entries go with the context, which never owns a saved fd */
}
END_TEST

static Suite *exec_suite(void)
{
    Suite *s = suite_create("exec");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_exec_preserves_fds_and_ram_in_new_image);
    tcase_add_test(tc, test_exec_failure_restores_cloexec_flags);
    tcase_add_test(tc, test_adopt_without_variable_does_nothing);
    tcase_add_test(tc, test_adopt_refuses_malformed_variable);
    tcase_add_test(tc, test_adopt_refuses_fd_of_wrong_type_and_closes_it);
    tcase_add_test(tc, test_adopt_installs_fd_and_sets_cloexec);
    tcase_add_test(tc, test_exec_refuses_closed_fd_before_exec);
    tcase_add_test(tc, test_exec_refuses_reused_fd_number_before_exec);
    tcase_add_test(tc, test_exec_refuses_more_entries_than_the_loader_takes);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(exec_suite)
