/* SPDX-License-Identifier: MIT */
/*
 * The fixture of the in-process migration suites (test_migrate.c, test_migrate_files.c): a
 * fresh test directory per test, the fd count checked at the end, paths and URIs in that
 * directory, a running VM (mig_vm.h) and the query.
 */
#ifndef CPR_MIG_FIXTURE_H
#define CPR_MIG_FIXTURE_H

#include "mig_vm.h"
#include "proc_util.h"
#include "testutil.h"

#define RAM (8u << 20)

static char *dir;
static int fds_before;

static inline void setup(void)
{
    dir = proc_tmpdir();
    fds_before = proc_fd_count();
}

static inline void teardown(void)
{
    ck_assert_int_eq(proc_fd_count(), fds_before);
    proc_rmtree(dir);
    g_free(dir);
}

static inline char *path(const char *name)
{
    return g_strdup_printf("%s/%s", dir, name);
}

static inline char *uri(const char *scheme, const char *name)
{
    return g_strdup_printf("%s:%s/%s", scheme, dir, name);
}

/* A VM with RAM filled and its guest running: RAM in a memfd, or in the file ram_path. */
static inline struct mig_vm *running_vm_on(const char *ram_path)
{
    struct mig_vm *vm = mig_vm_new(RAM, ram_path, 0);
    ck_assert_ptr_nonnull(vm);
    mig_vm_fill(vm);
    mig_vm_start(vm);
    mig_vm_log_clear(vm);
    return vm;
}

static inline cpr_migration_info query(cpr_ctx *ctx)
{
    cpr_migration_info i = { .size = sizeof(i) };
    ck_assert_int_eq(cpr_migrate_query(ctx, &i, NULL), 0);
    return i;
}

#endif
