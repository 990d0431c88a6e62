/* SPDX-License-Identifier: MIT */
/*
 * The outgoing cpr modes around the main-channel save: cpr-transfer sends the cpr state on
 * the cpr channel and waits for the new process's hang-up first; cpr-exec saves, then execs.
 */
#include <errno.h>
#include <unistd.h>

#include <cpr/exec.h>
#include <cpr/fd.h>
#include <cpr/ram.h>
#include <cpr/transfer.h>

#include "internal/error.h"
#include "internal/migrate.h"

static void count_cpr_fds(cpr_job *job)
{
    uint64_t n = cpr_fd_count(job->ctx) + cpr_ram_block_count(job->ctx);
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->cpr_fds = n;
    cpr_job_stats_unlock(job);
}

int cpr_migrate_out_transfer(cpr_job *job, cpr_error **errp)
{
    const cpr_addr *cpr = cpr_channels_get(job->channels, CPR_CHANNEL_CPR);
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.cancel_fd = cpr_job_cancel_fd(job);
    int sock = cpr_transfer_connect(cpr_addr_path(cpr), &o, errp);
    if (sock < 0)
        return sock;
    cpr_job_watch_fd(job, sock);
    int ret = cpr_job_set_status(job, CPR_MIGRATION_ACTIVE, errp);
    /* The guest runs on while the new process takes the fds and maps the RAM. */
    if (ret == 0)
        ret = cpr_transfer_send(job->ctx, sock, &o, errp);
    if (ret == 0)
        count_cpr_fds(job);
    if (ret == 0)
        ret = cpr_transfer_wait_hangup(sock, &o, errp);
    cpr_job_unwatch_fd(job, sock);
    close(sock);
    if (ret < 0) {
        cpr_error_prefix(errp, "cpr channel");
        return ret;
    }
    /* RAM stays in place; the VMM's own progressive sections go while the guest runs (with
     * none, the guest stops at once). */
    return cpr_migrate_save_main(job, CPR_SAVE_LIVE_UNLESS_RAM, errp);
}

int cpr_migrate_out_exec(cpr_job *job, cpr_error **errp)
{
    int ret = cpr_migrate_save_main(job, CPR_SAVE_LIVE_UNLESS_RAM, errp);
    if (ret < 0)
        return ret;
    count_cpr_fds(job);
    /* Returns only when exec failed, with every fd flag restored: the guest then resumes. */
    ret = cpr_exec_command(job->ctx, job->params.cpr_exec_command, errp);
    cpr_error_prefix(errp, "cpr-exec");
    return ret < 0 ? ret : -EIO;
}
