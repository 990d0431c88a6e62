/* SPDX-License-Identifier: MIT */
/*
 * The outgoing cpr modes around the main-channel save: cpr-transfer sends the cpr state on
 * the cpr channel and waits for the new process's hang-up first; cpr-exec saves, then execs.
 * And the incoming cpr channel's wait for the old process. The two cpr-transfer waits are
 * parameters (cpr-transfer-connect-timeout, cpr-transfer-accept-timeout): either process may
 * start first.
 */
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include <cpr/exec.h>
#include <cpr/fd.h>
#include <cpr/ram.h>
#include <cpr/transfer.h>

#include "channel/transfer.h"
#include "core/error.h"
#include "core/trace.h"
#include "handover/commit_signal.h"
#include "handover/exec.h"
#include "migration/migrate.h"

static void count_cpr_fds(cpr_job *job)
{
    uint64_t n = cpr_fd_count(job->ctx) + cpr_ram_block_count(job->ctx);
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->cpr_fds = n;
    cpr_job_stats_unlock(job);
}

static int run_cpr_transfer(cpr_job *job, cpr_error **errp)
{
    const cpr_addr *cpr = cpr_channels_get(job->channels, CPR_CHANNEL_CPR);
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.cancel_fd = cpr_job_cancel_fd(job);
    /* The new process may still be starting: wait for its listener (the guest runs on). */
    int sock = cpr_unix_connect_wait("cpr channel", cpr_addr_path(cpr), &o,
                                     job->params.cpr_connect_timeout_ms, errp);
    if (sock < 0) {
        if (sock == -ENOENT || sock == -ECONNREFUSED)
            cpr_error_prefix(errp, "the new process did not listen on the cpr channel within %"
                             PRIu64 " ms (parameter cpr-transfer-connect-timeout)",
                             job->params.cpr_connect_timeout_ms);
        return sock;
    }
    cpr_job_watch_fd(job, sock);
    cpr_trace_step(job->ctx, "cpr-connected");
    int ret = cpr_job_set_status(job, CPR_MIGRATION_ACTIVE, errp);
    /* The commit signal goes with the state; without an eventfd, the 1.1 protocol (no signal:
     * the new process acknowledges before it starts) is just slower. */
    if (ret == 0)
        job->commit_signal = cpr_commit_signal_new(NULL);
    /* The guest runs on while the new process takes the fds and maps the RAM. */
    if (ret == 0)
        ret = cpr_transfer_send_signalled(job->ctx, sock, &o, job->commit_signal, errp);
    if (ret == 0)
        count_cpr_fds(job);
    cpr_trace_step(job->ctx, "cpr-state-sent");
    if (ret == 0)
        ret = cpr_transfer_wait_hangup(sock, &o, errp);
    cpr_trace_step(job->ctx, "cpr-hangup-seen");
    cpr_job_unwatch_fd(job, sock);
    close(sock);
    if (ret < 0) {
        cpr_error_prefix(errp, "cpr channel");
    } else {
        /* RAM stays in place; the VMM's own progressive sections go while the guest runs (with
         * none, the guest stops at once). */
        ret = cpr_migrate_save_main(job, CPR_SAVE_LIVE_UNLESS_RAM, errp);
    }
    if (job->commit_signal >= 0)
        close(job->commit_signal);
    job->commit_signal = -1;
    return ret;
}

static int run_cpr_exec(cpr_job *job, cpr_error **errp)
{
    /* The state memfd and the rollback guardian (a fork: milliseconds) while the guest runs. */
    cpr_exec_prep *prep;
    int ret = cpr_exec_command_prepare(job->ctx, job->params.cpr_exec_command, &prep, errp);
    if (ret == 0 && (ret = cpr_migrate_save_main(job, CPR_SAVE_LIVE_UNLESS_RAM, errp)) < 0)
        cpr_exec_prep_free(prep);
    if (ret < 0)
        return ret;
    count_cpr_fds(job);
    /* Returns only when exec failed, with every fd flag restored: the guest then resumes. */
    ret = cpr_exec_prepared(job->ctx, prep, errp);
    cpr_error_prefix(errp, "cpr-exec");
    return ret < 0 ? ret : -EIO;
}

const cpr_job_driver cpr_driver_cpr_transfer = { .name = "cpr-transfer", .run = run_cpr_transfer };
const cpr_job_driver cpr_driver_cpr_exec = { .name = "cpr-exec", .run = run_cpr_exec };

int cpr_migrate_in_cpr_channel(cpr_ctx *ctx, const char *path, int *commit_signal, cpr_error **errp)
{
    struct cpr_params p;
    cpr_params_snapshot(ctx, &p);
    uint64_t wait_ms = p.cpr_accept_timeout_ms;
    cpr_params_clear(&p);
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.timeout_ms = cpr_params_wait_ms(wait_ms);
    int sock = cpr_transfer_incoming_signalled(ctx, path, &o, commit_signal, errp);
    if (sock == -ETIMEDOUT)
        cpr_error_prefix(errp, "no old process connected to the cpr channel %s within %" PRIu64
                         " ms (parameter cpr-transfer-accept-timeout)", path, wait_ms);
    return sock;
}
