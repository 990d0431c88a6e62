/* SPDX-License-Identifier: MIT */
/*
 * What a migration leaves on disk and in place: RAM left out of the stream must be the RAM
 * that was saved (refused at save when it cannot outlive the process, refused at load when it
 * changed), file saves that replace the old snapshot only once the new one is durable, and
 * cancel reaching channels that are not sockets (pipes, exec: commands).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mig_vm.h"
#include "proc_util.h"
#include "testutil.h"

#define RAM (8u << 20)

static char *dir;
static int fds_before;

static void setup(void)
{
    dir = proc_tmpdir();
    fds_before = proc_fd_count();
}

static void teardown(void)
{
    ck_assert_int_eq(proc_fd_count(), fds_before);
    proc_rmtree(dir);
    g_free(dir);
}

static char *path(const char *name)
{
    return g_strdup_printf("%s/%s", dir, name);
}

static char *uri(const char *scheme, const char *name)
{
    return g_strdup_printf("%s:%s/%s", scheme, dir, name);
}

static struct mig_vm *running_vm_on(const char *ram_path)
{
    struct mig_vm *vm = mig_vm_new(RAM, ram_path, 0);
    ck_assert_ptr_nonnull(vm);
    mig_vm_fill(vm);
    mig_vm_start(vm);
    return vm;
}

static cpr_migration_info query(cpr_ctx *ctx)
{
    cpr_migration_info i = { .size = sizeof(i) };
    ck_assert_int_eq(cpr_migrate_query(ctx, &i, NULL), 0);
    return i;
}

/* The names in the test directory, sorted, space-separated: what a save left behind. */
static char *dir_listing(void)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    ck_assert_ptr_nonnull(d);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(d)))
        g_ptr_array_add(names, g_strdup(n));
    g_dir_close(d);
    g_ptr_array_sort(names, (GCompareFunc)g_strcmp0);
    g_ptr_array_add(names, NULL);
    char *out = g_strjoinv(" ", (char **)names->pdata);
    g_ptr_array_free(names, TRUE);
    return out;
}

static void reboot_mode(cpr_ctx *ctx)
{
    ck_assert_int_eq(cpr_set_mode(ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    ck_assert_int_eq(cpr_cap_set(ctx, "x-ignore-shared", 1, NULL), 0);
}

/* ---- RAM left in place ---- */

START_TEST(test_cpr_reboot_refuses_to_leave_memfd_ram_behind)
{
    struct mig_vm *src = running_vm_on(NULL); /* RAM in a memfd: gone when the VMM quits */
    reboot_mode(src->ctx);
    g_autofree char *u = uri("file", "vm.state");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EINVAL, "'" MIG_VM_RAM_NAME "'");
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_FAILED);
    ck_assert(mig_vm_running(src));
    g_autofree char *left = dir_listing();
    ck_assert_str_eq(left, ""); /* refused before the channel opened: no state file */
    /* Without x-ignore-shared the memfd's pages go into the stream: allowed. */
    ck_assert_int_eq(cpr_cap_set(src->ctx, "x-ignore-shared", 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_COMPLETED);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_cpr_reboot_refuses_a_deleted_ram_file)
{
    g_autofree char *ram = path("ram");
    struct mig_vm *src = running_vm_on(ram);
    ck_assert_int_eq(unlink(ram), 0);
    reboot_mode(src->ctx);
    g_autofree char *u = uri("file", "vm.state");
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EINVAL, "deleted file");
    ck_assert(mig_vm_running(src));
    mig_vm_free(src);
}
END_TEST

static Suite *files_suite(void)
{
    Suite *s = suite_create("migrate_files");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cpr_reboot_refuses_to_leave_memfd_ram_behind);
    tcase_add_test(tc, test_cpr_reboot_refuses_a_deleted_ram_file);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(files_suite)
