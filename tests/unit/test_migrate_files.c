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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mig_fixture.h"
#include "testutil.h"

#define RAM (8u << 20)

static struct mig_vm *running_vm_on(const char *ram_path)
{
    return mig_running_vm(RAM, ram_path);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
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
    g_ptr_array_sort(names, name_cmp);
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

/* Saves a VM whose RAM is the file `ram` in cpr-reboot with x-ignore-shared (RAM left in the
 * file, not in the stream), and quits it. Returns the file: uri of the state. */
static char *save_and_quit(const char *ram)
{
    struct mig_vm *src = running_vm_on(ram);
    reboot_mode(src->ctx);
    char *u = uri("file", "vm.state");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    mig_vm_free(src);
    return u;
}

/* A new VMM on the file `ram` loading the state at u: 0, or the load's error. */
static int restart(const char *ram, const char *u, cpr_error **errp)
{
    struct mig_vm *dst = mig_vm_new(RAM, ram, 0);
    ck_assert_ptr_nonnull(dst);
    reboot_mode(dst->ctx);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    int ret = cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, errp);
    if (ret == 0)
        ck_assert_uint_eq(mig_vm_corrupt_pages(dst), 0);
    else
        ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_INMIGRATE);
    mig_vm_free(dst);
    return ret;
}

START_TEST(test_cpr_reboot_restart_on_the_same_file_loads)
{
    g_autofree char *ram = path("ram");
    g_autofree char *u = save_and_quit(ram);
    ck_assert_int_eq(restart(ram, u, NULL), 0);
}
END_TEST

START_TEST(test_cpr_reboot_refuses_a_ram_file_zeroed_since_the_save)
{
    g_autofree char *ram = path("ram");
    g_autofree char *u = save_and_quit(ram);
    /* Same file, same inode: only its contents tell. */
    ck_assert_int_eq(truncate(ram, 0), 0);
    ck_assert_int_eq(truncate(ram, RAM), 0);
    ck_assert_cpr_fails(restart(ram, u, errp_), -ESTALE, "RAM block '" MIG_VM_RAM_NAME "'");
}
END_TEST

START_TEST(test_cpr_reboot_refuses_a_ram_file_deleted_and_recreated)
{
    g_autofree char *ram = path("ram");
    g_autofree char *u = save_and_quit(ram);
    ck_assert_int_eq(unlink(ram), 0); /* the new VMM creates an empty file of that name */
    ck_assert_cpr_fails(restart(ram, u, errp_), -ESTALE, "RAM block '" MIG_VM_RAM_NAME "'");
}
END_TEST

START_TEST(test_cpr_reboot_refuses_a_ram_file_replaced_by_another)
{
    g_autofree char *ram = path("ram");
    g_autofree char *u = save_and_quit(ram);
    /* Another VM's RAM, renamed over the file: a different inode with other contents. */
    g_autofree char *other = path("other");
    struct mig_vm *vm = running_vm_on(other);
    mig_vm_free(vm);
    ck_assert_int_eq(rename(other, ram), 0);
    ck_assert_cpr_fails(restart(ram, u, errp_), -ESTALE, "replaced");
}
END_TEST

/* ---- state files ---- */

static ino_t inode_of(const char *p)
{
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return st.st_ino;
}

static char *file_digest(const char *p)
{
    gchar *data;
    gsize len;
    ck_assert(g_file_get_contents(p, &data, &len, NULL));
    char *d = g_compute_checksum_for_data(G_CHECKSUM_MD5, (const guchar *)data, len);
    g_free(data);
    return d;
}

/* The test directory holds the snapshot `snap` and nothing else (no temporary file), and the
 * snapshot at u loads into a new VM (paused) with the given RAM digest and heartbeat. */
static void assert_snapshot_loads(const char *u, const char *ram_digest, uint64_t heartbeat)
{
    g_autofree char *left = dir_listing();
    ck_assert_str_eq(left, "snap");
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, NULL), 0);
    g_autofree char *got = mig_vm_ram_digest(dst);
    ck_assert_str_eq(got, ram_digest);
    ck_assert_uint_eq(dst->dev.heartbeat, heartbeat);
    mig_vm_free(dst);
}

START_TEST(test_a_failed_save_leaves_the_previous_snapshot_whole)
{
    struct mig_vm *src = running_vm_on(NULL);
    g_autofree char *u = uri("file", "snap");
    g_autofree char *p = path("snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    g_autofree char *ram = mig_vm_ram_digest(src);
    uint64_t heartbeat = src->dev.heartbeat;
    g_autofree char *before = file_digest(p);
    mig_vm_start(src);
    /* The second save writes RAM, then fails at the switchover (the VMM's flush). */
    src->fail_flush = -EIO;
    ck_assert_cpr_fails(cpr_migrate_uri(src->ctx, u, 0, errp_), -EIO, "flush");
    ck_assert(mig_vm_running(src));
    g_autofree char *after = file_digest(p);
    ck_assert_str_eq(after, before);
    assert_snapshot_loads(u, ram, heartbeat);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_a_completed_save_replaces_the_file_by_rename)
{
    struct mig_vm *src = running_vm_on(NULL);
    g_autofree char *p = path("snap");
    ck_assert(g_file_set_contents(p, "old snapshot", -1, NULL));
    ck_assert_int_eq(chmod(p, 0640), 0);
    ino_t old = inode_of(p);
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_COMPLETED);
    /* A new inode: written beside the old file and renamed over it, not rewritten in place. */
    ck_assert_uint_ne(inode_of(p), old);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    g_autofree char *ram = mig_vm_ram_digest(src);
    assert_snapshot_loads(u, ram, src->dev.heartbeat);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_a_save_at_an_offset_keeps_what_precedes_it)
{
    struct mig_vm *src = running_vm_on(NULL);
    g_autofree char *p = path("snap");
    ck_assert(g_file_set_contents(p, "HEADER", -1, NULL));
    g_autofree char *u = g_strdup_printf("file:%s,offset=4096", p);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    gchar *data;
    gsize len;
    ck_assert(g_file_get_contents(p, &data, &len, NULL));
    ck_assert_uint_eq(len, 4096 + query(src->ctx).transferred);
    ck_assert_int_eq(memcmp(data, "HEADER\0\0", 8), 0);
    g_free(data);
    g_autofree char *ram = mig_vm_ram_digest(src);
    assert_snapshot_loads(u, ram, src->dev.heartbeat);
    mig_vm_free(src);
}
END_TEST

/* ---- cancel on channels that are not sockets ---- */

/* The pid a command wrote to `name` in the test directory (waits for it, up to 10 s). */
static pid_t command_pid(const char *name)
{
    g_autofree char *p = path(name);
    for (int i = 0; i < 10000; i++) {
        g_autofree char *text = NULL;
        if (g_file_get_contents(p, &text, NULL, NULL) && strchr(text, '\n'))
            return (pid_t)atoi(text);
        g_usleep(1000);
    }
    ck_abort_msg("the command never wrote %s", p);
    return 0;
}

/* The command was reaped: no process, not even a zombie, has its pid. */
static void assert_reaped(pid_t pid)
{
    ck_assert_int_eq(kill(pid, 0), -1);
    ck_assert_int_eq(errno, ESRCH);
}

/* Migrates to an exec: command that takes nothing (the pipe fills and the writer blocks),
 * cancels, and checks that the job ends cancelled with the guest running and the command gone. */
static void cancel_a_stalled_exec(const char *stall)
{
    struct mig_vm *src = running_vm_on(NULL);
    g_autofree char *u = g_strdup_printf("exec:echo $$ > %s/pid; %s", dir, stall);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    pid_t pid = command_pid("pid");
    /* 8 MiB of RAM cannot fit the pipe: the engine is (or soon will be) stuck in a write. */
    g_usleep(100 * 1000);
    ck_assert_int_eq(cpr_migrate_cancel(src->ctx, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_wait(src->ctx, errp_), -ECANCELED, "cancel");
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_CANCELLED);
    ck_assert(mig_vm_running(src));
    assert_reaped(pid);
    mig_vm_free(src);
}

START_TEST(test_cancel_ends_an_exec_command_that_stopped_reading)
{
    cancel_a_stalled_exec("exec sleep 1000");
}
END_TEST

START_TEST(test_cancel_ends_a_stopped_exec_command)
{
    /* SIGSTOPped: only SIGKILL (or SIGCONT) gets it to act. */
    cancel_a_stalled_exec("kill -STOP $$; exec cat > /dev/null");
}
END_TEST

START_TEST(test_cancel_ends_a_migration_into_a_pipe_nobody_reads)
{
    struct mig_vm *src = running_vm_on(NULL);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    g_autofree char *u = g_strdup_printf("fd:%d", p[1]);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, CPR_MIGRATE_DETACH, NULL), 0);
    g_usleep(100 * 1000); /* the pipe holds 64 KiB: the engine is (or soon will be) stuck */
    ck_assert_int_eq(cpr_migrate_cancel(src->ctx, NULL), 0);
    ck_assert_cpr_fails(cpr_migrate_wait(src->ctx, errp_), -ECANCELED, "cancel");
    ck_assert(mig_vm_running(src));
    /* The fd stays the caller's, with the flags it had. */
    ck_assert_int_eq(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
    close(p[0]);
    close(p[1]);
    mig_vm_free(src);
}
END_TEST

START_TEST(test_an_incoming_exec_command_that_never_exits_does_not_hold_the_load)
{
    struct mig_vm *src = running_vm_on(NULL);
    g_autofree char *u = uri("file", "snap");
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);

    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    g_autofree char *in = g_strdup_printf("exec:echo $$ > %s/pid; cat %s/snap; exec sleep 1000", dir, dir);
    /* Returns once loaded and running: the command is stopped, not waited for. */
    ck_assert_int_eq(cpr_incoming_start_uri(dst->ctx, in, 0, NULL), 0);
    ck_assert_int_eq(cpr_migrate_runstate(dst->ctx), CPR_RUNSTATE_RUNNING);
    assert_reaped(command_pid("pid"));
    mig_vm_free(dst);
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
    tcase_add_test(tc, test_cpr_reboot_restart_on_the_same_file_loads);
    tcase_add_test(tc, test_cpr_reboot_refuses_a_ram_file_zeroed_since_the_save);
    tcase_add_test(tc, test_cpr_reboot_refuses_a_ram_file_deleted_and_recreated);
    tcase_add_test(tc, test_cpr_reboot_refuses_a_ram_file_replaced_by_another);
    tcase_add_test(tc, test_a_failed_save_leaves_the_previous_snapshot_whole);
    tcase_add_test(tc, test_a_completed_save_replaces_the_file_by_rename);
    tcase_add_test(tc, test_a_save_at_an_offset_keeps_what_precedes_it);
    tcase_add_test(tc, test_cancel_ends_an_exec_command_that_stopped_reading);
    tcase_add_test(tc, test_cancel_ends_a_stopped_exec_command);
    tcase_add_test(tc, test_cancel_ends_a_migration_into_a_pipe_nobody_reads);
    tcase_add_test(tc, test_an_incoming_exec_command_that_never_exits_does_not_hold_the_load);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(files_suite)
