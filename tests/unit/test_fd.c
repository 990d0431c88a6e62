/* SPDX-License-Identifier: MIT */
/* The named fd registry: save, find, delete, resave, open, walk, ownership of received fds. */
#include <errno.h>
#include <fcntl.h>

#include "handover/fd.h"
#include "fd_fixture.h"
#include "testutil.h"

PROC_CTX_FIXTURE()

static int open_null(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    return fd;
}

START_TEST(test_save_then_find_returns_the_fd)
{
    int fd = open_null();
    ck_assert_int_eq(cpr_fd_save(ctx, "tap", 3, fd, NULL), 0);
    ck_assert_int_eq(cpr_fd_find(ctx, "tap", 3), fd);
    ck_assert_int_eq(cpr_fd_find(ctx, "tap", 4), -ENOENT);
    ck_assert_int_eq(cpr_fd_find(ctx, "tun", 3), -ENOENT);
    ck_assert_uint_eq(cpr_fd_count(ctx), 1);
    /* Saving the same fd again is harmless. */
    ck_assert_int_eq(cpr_fd_save(ctx, "tap", 3, fd, NULL), 0);
    ck_assert_uint_eq(cpr_fd_count(ctx), 1);
    ck_assert_int_eq(cpr_fd_delete(ctx, "tap", 3), 0);
    ck_assert_int_eq(cpr_fd_delete(ctx, "tap", 3), -ENOENT);
    /* The registry did not own it: still open. */
    ck_assert_int_ge(fcntl(fd, F_GETFD), 0);
    close(fd);
}
END_TEST

START_TEST(test_save_refuses_a_different_fd_under_a_taken_key)
{
    int a = open_null(), b = open_null();
    ck_assert_int_eq(cpr_fd_save(ctx, "vhost", 0, a, NULL), 0);
    g_autofree char *needle = g_strdup_printf("fd 'vhost' id 0 is already saved as fd %d, cannot save fd %d",
                                              a, b);
    ck_assert_cpr_fails(cpr_fd_save(ctx, "vhost", 0, b, errp_), -EEXIST, needle);
    ck_assert_int_eq(cpr_fd_find(ctx, "vhost", 0), a);
    /* resave is how a device replaces its fd. */
    ck_assert_int_eq(cpr_fd_resave(ctx, "vhost", 0, b, NULL), 0);
    ck_assert_int_eq(cpr_fd_find(ctx, "vhost", 0), b);
    ck_assert_uint_eq(cpr_fd_count(ctx), 1);
    close(a);
    close(b);
}
END_TEST

START_TEST(test_save_refuses_bad_names_and_fds)
{
    char name[CPR_FD_NAME_MAX + 2];
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    ck_assert_cpr_fails(cpr_fd_save(ctx, name, 0, 0, errp_), -ENAMETOOLONG, "longer than 255");
    name[CPR_FD_NAME_MAX] = '\0';
    int fd = open_null();
    ck_assert_int_eq(cpr_fd_save(ctx, name, 0, fd, NULL), 0);
    ck_assert_cpr_fails(cpr_fd_save(ctx, "", 0, fd, errp_), -EINVAL, "name is empty");
    ck_assert_cpr_fails(cpr_fd_save(ctx, "x", 0, -1, errp_), -EINVAL, "invalid fd -1");
    ck_assert_cpr_fails(cpr_fd_save(ctx, NULL, 0, fd, errp_), -EINVAL, "NULL");
    cpr_fd_delete(ctx, name, 0);
    close(fd);
}
END_TEST

typedef struct walk {
    GString *s;
    int stop_after;
} walk;

static int walk_fn(const char *name, int id, int fd, void *opaque)
{
    walk *w = opaque;
    g_string_append_printf(w->s, "[%s:%d]", name, id);
    return --w->stop_after == 0 ? 42 : 0;
}

START_TEST(test_foreach_walks_in_save_order_and_stops)
{
    int fd = open_null();
    ck_assert_int_eq(cpr_fd_save(ctx, "b", 1, fd, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "a", 2, fd, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "c", 0, fd, NULL), 0);
    walk w = { g_string_new(NULL), -1 };
    ck_assert_int_eq(cpr_fd_foreach(ctx, walk_fn, &w), 0);
    ck_assert_str_eq(w.s->str, "[b:1][a:2][c:0]");
    g_string_truncate(w.s, 0);
    w.stop_after = 2;
    ck_assert_int_eq(cpr_fd_foreach(ctx, walk_fn, &w), 42);
    ck_assert_str_eq(w.s->str, "[b:1][a:2]");
    g_string_free(w.s, TRUE);
    cpr_fd_delete(ctx, "a", 2);
    cpr_fd_delete(ctx, "b", 1);
    cpr_fd_delete(ctx, "c", 0);
    close(fd);
}
END_TEST

START_TEST(test_open_opens_and_records_when_nothing_preserved)
{
    g_autofree char *dir = g_dir_make_tmp("cpr-fd-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "disk.img", NULL);
    int fd = cpr_fd_open(ctx, path, O_RDWR | O_CREAT, 0600, "disk", 0, NULL);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(cpr_fd_find(ctx, "disk", 0), fd);
    /* A second open finds the recorded fd instead of opening again. */
    ck_assert_int_eq(cpr_fd_open(ctx, path, O_RDWR, 0, "disk", 0, NULL), fd);
    g_autofree char *missing = g_build_filename(dir, "missing", NULL);
    ck_assert_cpr_fails(cpr_fd_open(ctx, missing, O_RDONLY, 0, "other", 0, errp_), -ENOENT, missing);
    ck_assert_int_eq(cpr_fd_find(ctx, "other", 0), -ENOENT);
    cpr_fd_delete(ctx, "disk", 0);
    close(fd);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_received_fds_are_owned_until_claimed)
{
    int a = open_null(), b = open_null(), c = open_null();
    ck_assert_int_eq(cpr_fd_install_received(ctx, "claimed", 0, a, S_IFCHR, NULL), 0);
    ck_assert_int_eq(cpr_fd_install_received(ctx, "unclaimed", 0, b, S_IFCHR, NULL), 0);
    ck_assert_int_eq(cpr_fd_install_received(ctx, "deleted", 0, c, S_IFCHR, NULL), 0);
    ck_assert_cpr_fails(cpr_fd_install_received(ctx, "claimed", 0, a, S_IFCHR, errp_), -EEXIST, "'claimed'");
    /* open() of a preserved fd returns it without touching the path. */
    ck_assert_int_eq(cpr_fd_open(ctx, "/nonexistent", O_RDONLY, 0, "claimed", 0, NULL), a);
    /* Deleting an unclaimed received fd closes it: nobody else has it. */
    ck_assert_int_eq(cpr_fd_delete(ctx, "deleted", 0), 0);
    ck_assert_int_eq(fcntl(c, F_GETFD), -1);
    ck_assert_int_eq(cpr_fd_close_unclaimed(ctx), 1);
    ck_assert_int_eq(fcntl(b, F_GETFD), -1);
    ck_assert_int_eq(cpr_fd_find(ctx, "unclaimed", 0), -ENOENT);
    /* The claimed one is ours, still registered for the next cpr. */
    ck_assert_int_eq(cpr_fd_find(ctx, "claimed", 0), a);
    ck_assert_int_ge(fcntl(a, F_GETFD), 0);
    cpr_fd_delete(ctx, "claimed", 0);
    close(a);
}
END_TEST

START_TEST(test_saving_a_received_fd_claims_it)
{
    int a = open_null();
    ck_assert_int_eq(cpr_fd_install_received(ctx, "x", 0, a, S_IFCHR, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "x", 0, a, NULL), 0);
    ck_assert_int_eq(cpr_fd_close_unclaimed(ctx), 0);
    ck_assert_int_ge(fcntl(a, F_GETFD), 0);
    cpr_fd_delete(ctx, "x", 0);
    close(a);
}
END_TEST

START_TEST(test_ctx_free_closes_unclaimed_received_fds)
{
    cpr_ctx *other;
    ck_assert_int_eq(cpr_ctx_new(&other, 0, NULL), 0);
    int a = open_null();
    ck_assert_int_eq(cpr_fd_install_received(other, "x", 0, a, S_IFCHR, NULL), 0);
    cpr_ctx_free(other);
    ck_assert_int_eq(fcntl(a, F_GETFD), -1);
}
END_TEST

static Suite *fd_suite(void)
{
    Suite *s = suite_create("fd");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_save_then_find_returns_the_fd);
    tcase_add_test(tc, test_save_refuses_a_different_fd_under_a_taken_key);
    tcase_add_test(tc, test_save_refuses_bad_names_and_fds);
    tcase_add_test(tc, test_foreach_walks_in_save_order_and_stops);
    tcase_add_test(tc, test_open_opens_and_records_when_nothing_preserved);
    tcase_add_test(tc, test_received_fds_are_owned_until_claimed);
    tcase_add_test(tc, test_saving_a_received_fd_claims_it);
    tcase_add_test(tc, test_ctx_free_closes_unclaimed_received_fds);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(fd_suite)
