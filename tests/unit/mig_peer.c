/* SPDX-License-Identifier: MIT */
/*
 * One side of a two-process migration test: a small VM (mig_vm.c) that migrates out (src) or
 * in (dst) and prints what happened as one line of key=value pairs on stdout.
 *
 *   mig_peer src key=value...   mode= main=URI cpr=PATH ram=PATH ramsize= ignore-shared=1
 *                               bw= rate= pre-switchover=1 exec=COMMAND announce=1
 *   mig_peer dst key=value...   mode= main=URI cpr=PATH ram=PATH ramsize= ignore-shared=1
 *                               exec-dst=1 die=after-cpr|post-load|in-start fail=prepare|start
 *                               autostart=1 (the library starts the guest: no CPR_INCOMING_PAUSED)
 *                               old-peer=1 (drops cpr-transfer's commit signal, as 1.0/1.1 do)
 *
 * src with pre-switchover=1 prints "pre-switchover" when it gets there and continues after
 * reading a line on stdin; with announce=1 it prints "active" once the job left setup. dst prints "cpr-loaded" after the early cpr state. Exit status 0
 * whatever the migration's outcome (the report says it); 2 for bad usage or setup.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/trace.h>

#include "migration/migrate.h"
#include "mig_vm.h"
#include "proc_util.h"

static GHashTable *opts;

static const char *opt(const char *key)
{
    return g_hash_table_lookup(opts, key);
}

static uint64_t opt_u64(const char *key, uint64_t dflt)
{
    const char *v = opt(key);
    return v ? g_ascii_strtoull(v, NULL, 10) : dflt;
}

static cpr_channels *channels(void)
{
    cpr_channels *ch = NULL;
    cpr_error *err = NULL;
    if (cpr_channels_from_uri(opt("main"), &ch, &err) < 0)
        goto fail;
    if (opt("cpr")) {
        g_autofree char *u = g_strdup_printf("unix:%s", opt("cpr"));
        cpr_addr *a;
        if (cpr_addr_parse_uri(u, &a, &err) < 0 || cpr_channels_add(ch, CPR_CHANNEL_CPR, a, &err) < 0)
            goto fail;
    }
    return ch;
fail:
    fprintf(stdout, "result=-1 error=%s\n", cpr_error_message(err));
    exit(2);
}

static void set_params(struct mig_vm *vm)
{
    cpr_error *err = NULL;
    if ((opt("mode") && cpr_param_set(vm->ctx, "mode", opt("mode"), &err) < 0) ||
        (opt("bw") && cpr_param_set(vm->ctx, "max-bandwidth", opt("bw"), &err) < 0) ||
        (opt("exec") && cpr_param_set(vm->ctx, "cpr-exec-command", opt("exec"), &err) < 0) ||
        (opt("ignore-shared") && cpr_cap_set(vm->ctx, "x-ignore-shared", 1, &err) < 0) ||
        (opt("pre-switchover") && cpr_cap_set(vm->ctx, "pause-before-switchover", 1, &err) < 0)) {
        printf("result=-1 error=%s\n", cpr_error_message(err));
        exit(2);
    }
}

static uint64_t ino_of(cpr_ram_block *b)
{
    struct stat st;
    return b && fstat(cpr_ram_block_fd(b), &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Whether the guest's heartbeat moves: the VM really runs. */
static int alive(struct mig_vm *vm)
{
    uint64_t a = __atomic_load_n(&vm->dev.heartbeat, __ATOMIC_RELAXED);
    for (int i = 0; i < 200; i++) {
        g_usleep(1000);
        if (__atomic_load_n(&vm->dev.heartbeat, __ATOMIC_RELAXED) != a)
            return 1;
    }
    return 0;
}

/* The trace's step names, oldest first, comma-separated. */
static char *trace_names(cpr_ctx *ctx)
{
    GString *out = g_string_new("");
    int n = cpr_trace_count(ctx, NULL);
    for (int i = 0; i < n; i++) {
        cpr_trace_step st;
        cpr_trace_step_init(&st);
        if (cpr_trace_get(ctx, (size_t)i, &st, NULL) == 0)
            g_string_append_printf(out, "%s%s", out->len ? "," : "", st.name);
    }
    return g_string_free(out, FALSE);
}

static void report(struct mig_vm *vm, int ret, const char *extra)
{
    cpr_migration_info i = { .size = sizeof(i) };
    cpr_migrate_query(vm->ctx, &i, NULL);
    g_autofree char *digest = vm->ram ? mig_vm_ram_digest(vm) : g_strdup("-");
    g_autofree char *log = mig_vm_log(vm);
    g_autofree char *err = cpr_migrate_error_desc(vm->ctx);
    g_autofree char *trace = trace_names(vm->ctx);
    g_strdelimit(log, " ", ',');
    if (err)
        g_strdelimit(err, " =", '_');
    printf("result=%d total_ms=%lld downtime_ms=%lld setup_ms=%lld status=%s runstate=%s transferred=%llu normal=%llu duplicate=%llu passes=%llu "
           "cpr_fds=%llu digest=%s heartbeat=%llu corrupt=%llu post_loads=%d ino=%llu "
           "reattached=%d %s trace=%s log=%s error=%s\n",
           ret, (long long)i.total_time_ms, (long long)i.downtime_ms, (long long)i.setup_time_ms,
           cpr_migration_status_name(i.status), cpr_runstate_name(i.runstate),
           (unsigned long long)i.transferred, (unsigned long long)i.normal,
           (unsigned long long)i.duplicate, (unsigned long long)i.dirty_sync_count,
           (unsigned long long)i.cpr_fds, digest,
           (unsigned long long)__atomic_load_n(&vm->dev.heartbeat, __ATOMIC_RELAXED),
           (unsigned long long)(vm->ram ? mig_vm_corrupt_pages(vm) : 0), vm->post_loads,
           (unsigned long long)ino_of(vm->ram), vm->ram ? cpr_ram_block_reattached(vm->ram) : 0,
           extra, trace[0] ? trace : "-", log, err ? err : "-");
    fflush(stdout);
}

static int run_src(void)
{
    struct mig_vm *vm = mig_vm_new(opt_u64("ramsize", 8u << 20), opt("ram"), 0);
    if (!vm)
        return 2;
    mig_vm_set_rate(vm, opt_u64("rate", 4));
    mig_vm_fill(vm);
    mig_vm_start(vm);
    mig_vm_log_clear(vm);
    set_params(vm);
    cpr_channels *ch = channels();
    int fds_before = proc_fd_count();
    cpr_error *err = NULL;
    int ret;
    if (opt("announce")) {
        /* Says "active" once the job runs (connected): a test then knows it is under way. */
        ret = cpr_migrate_channels(vm->ctx, ch, CPR_MIGRATE_DETACH, &err);
        cpr_migration_info i = { .size = sizeof(i) };
        while (ret == 0 && cpr_migrate_query(vm->ctx, &i, NULL) == 0 && i.status == CPR_MIGRATION_SETUP)
            g_usleep(1000);
        printf("active\n");
        fflush(stdout);
        if (ret == 0)
            ret = cpr_migrate_wait(vm->ctx, &err);
    } else if (opt("pre-switchover")) {
        ret = cpr_migrate_channels(vm->ctx, ch, CPR_MIGRATE_DETACH, &err);
        cpr_migration_info i = { .size = sizeof(i) };
        while (ret == 0 && cpr_migrate_query(vm->ctx, &i, NULL) == 0 &&
               i.status != CPR_MIGRATION_PRE_SWITCHOVER && i.status != CPR_MIGRATION_FAILED)
            g_usleep(1000);
        if (i.status == CPR_MIGRATION_PRE_SWITCHOVER) {
            printf("pre-switchover\n");
            fflush(stdout);
            char line[16];
            if (!fgets(line, sizeof(line), stdin)) {
                /* stdin closed: continue anyway */
            }
            cpr_migrate_continue(vm->ctx, NULL);
        }
        if (ret == 0)
            ret = cpr_migrate_wait(vm->ctx, &err);
    } else {
        ret = cpr_migrate_channels(vm->ctx, ch, 0, &err);
    }
    cpr_error_free(err);
    cpr_channels_free(ch);
    g_autofree char *extra = g_strdup_printf("alive=%d fds_before=%d fds_after=%d", ret < 0 ? alive(vm) : 0,
                                             fds_before, proc_fd_count());
    report(vm, ret, extra);
    mig_vm_free(vm);
    return 0;
}

static int run_dst(void)
{
    struct mig_vm *vm = mig_vm_new(0, NULL, MIG_VM_NO_RAM);
    if (!vm)
        return 2;
    set_params(vm);
    cpr_channels *ch = opt("main") ? channels() : NULL;
    cpr_error *err = NULL;
    int mode = cpr_incoming_cpr_load(vm->ctx, opt("exec-dst") ? NULL : ch, &err);
    if (mode < 0) {
        printf("result=%d error=cpr-load:%s\n", mode, cpr_error_message(err));
        return 0;
    }
    if (opt("old-peer")) {
        /* A 1.0/1.1 destination closes the commit signal on arrival, as any unnamed fd. */
        int signal = -1;
        int sock = cpr_mig_take_cpr_socket(vm->ctx, &signal);
        if (signal >= 0)
            close(signal);
        cpr_mig_keep_cpr_socket(vm->ctx, sock, -1);
    }
    printf("cpr-loaded mode=%s\n", cpr_mode_name((cpr_mode)mode));
    fflush(stdout);
    if (g_strcmp0(opt("die"), "after-cpr") == 0)
        raise(SIGKILL);
    if (mig_vm_add_ram(vm, opt_u64("ramsize", 8u << 20), opt("ram")) < 0)
        return 2;
    vm->die_in_post_load = g_strcmp0(opt("die"), "post-load") == 0;
    vm->fail_prepare = g_strcmp0(opt("fail"), "prepare") == 0 ? -EIO : 0;
    vm->fail_start = g_strcmp0(opt("fail"), "start") == 0 ? -EIO : 0;
    vm->die_in_start = g_strcmp0(opt("die"), "in-start") == 0;
    int ret = cpr_incoming_start(vm->ctx, ch, opt("autostart") ? 0 : CPR_INCOMING_PAUSED, &err);
    cpr_error_free(err);
    cpr_channels_free(ch);
    if (ret == 0 && opt("autostart")) {
        report(vm, ret, "");
        printf("alive=%d runstate=%s\n", alive(vm), cpr_runstate_name(cpr_migrate_runstate(vm->ctx)));
        fflush(stdout);
    } else if (ret == 0) {
        report(vm, ret, "alive=0");
        mig_vm_start(vm);
        printf("alive=%d runstate=%s\n", alive(vm), cpr_runstate_name(cpr_migrate_runstate(vm->ctx)));
        fflush(stdout);
    } else {
        report(vm, ret, "alive=0");
    }
    mig_vm_free(vm);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    opts = g_hash_table_new(g_str_hash, g_str_equal);
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            return 2;
        *eq = '\0';
        g_hash_table_insert(opts, argv[i], eq + 1);
    }
    int rc = strcmp(argv[1], "src") == 0 ? run_src() : strcmp(argv[1], "dst") == 0 ? run_dst() : 2;
    g_hash_table_destroy(opts);
    return rc;
}
