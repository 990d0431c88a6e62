/* SPDX-License-Identifier: MIT */
/* The check fixture of the one-process migration suites: a scratch directory, a check that the
 * test left as many fds open as it found, and VMs (mig_vm.h) that run from the start. */
#ifndef CPR_MIG_FIXTURE_H
#define CPR_MIG_FIXTURE_H

#include <check.h>

#include "mig_vm.h"
#include "proc_util.h"

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

/* A VM of `bytes` of RAM, filled, its guest running, its log empty: RAM in a memfd, or in the
 * file ram_path. */
static inline struct mig_vm *mig_running_vm(uint64_t bytes, const char *ram_path)
{
    struct mig_vm *vm = mig_vm_new(bytes, ram_path, 0);
    ck_assert_ptr_nonnull(vm);
    mig_vm_fill(vm);
    mig_vm_start(vm);
    mig_vm_log_clear(vm);
    return vm;
}

/* Paths in the test's directory: a file, and a URI with a scheme ("file", "unix"). */
static inline char *path(const char *name)
{
    return g_strdup_printf("%s/%s", dir, name);
}

static inline char *uri(const char *scheme, const char *name)
{
    return g_strdup_printf("%s:%s/%s", scheme, dir, name);
}

/* main and cpr channels on UNIX sockets in the test directory, as cpr-transfer wants them. */
static inline cpr_channels *transfer_channels(void)
{
    g_autofree char *json = g_strdup_printf(
        "[{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"%s/main.sock\"}},"
        " {\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":\"%s/cpr.sock\"}}]",
        dir, dir);
    cpr_channels *ch;
    ck_assert_int_eq(cpr_channels_parse_json(json, &ch, NULL), 0);
    return ch;
}

static inline cpr_migration_info query(cpr_ctx *ctx)
{
    cpr_migration_info i = { .size = sizeof(i) };
    ck_assert_int_eq(cpr_migrate_query(ctx, &i, NULL), 0);
    return i;
}

/* Waits up to 5 s until the job's status is `status`: 1 when it is, 0 when not. */
static inline int wait_status(cpr_ctx *ctx, int status)
{
    for (int i = 0; i < 5000; i++) {
        if (query(ctx).status == status)
            return 1;
        g_usleep(1000);
    }
    return 0;
}

#endif
