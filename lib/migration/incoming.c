/* SPDX-License-Identifier: MIT */
/*
 * The incoming side: the early cpr state (cpr channel or cpr-exec), then the main channel:
 * listen, hang up the cpr channel, accept, load the whole stream, prepare, commit (acknowledge),
 * run.
 */
#include <errno.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/exec.h>
#include <cpr/fd.h>
#include <cpr/params.h>
#include <cpr/ram.h>
#include <cpr/stream.h>
#include <cpr/transfer.h>

#include "core/error.h"
#include "core/trace.h"
#include "format/savevm.h"
#include "format/schema_prefetch.h"
#include "handover/commit_signal.h"
#include "handover/exec_guard.h"
#include "migration/lazy_restore.h"
#include "migration/map_restore.h"
#include "migration/main_channel.h"
#include "migration/main_tls.h"
#include "migration/migrate.h"
#include "migration/multifd.h"
#include "migration/postcopy.h"
#include "migration/ram_section.h"

CPR_API int cpr_incoming_cpr_load(cpr_ctx *ctx, const cpr_channels *channels, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_incoming_cpr_load: ctx is NULL");
    int ret = cpr_mig_cpr_in_check(ctx, errp);
    if (ret < 0)
        return ret;
    const cpr_addr *cpr = channels ? cpr_channels_get(channels, CPR_CHANNEL_CPR) : NULL;
    if (cpr && cpr_addr_transport(cpr) != CPR_TRANSPORT_UNIX) {
        g_autofree char *uri = cpr_addr_to_uri(cpr);
        return cpr_error_set(errp, -EINVAL, "the cpr channel must be a UNIX socket, not %s", uri);
    }

    ret = cpr_exec_state_adopt_guarded(ctx, 1, errp);
    if (ret < 0)
        return ret;
    if (ret == 1) {
        cpr_trace_step(ctx, "cpr-state-adopted");
        /* The state file is whole (the old image wrote it before the exec): its schema is
         * checked beside the VMM's machine and device creation, not in the load. */
        const cpr_addr *main = channels ? cpr_channels_get(channels, CPR_CHANNEL_MAIN) : NULL;
        if (main && cpr_addr_transport(main) == CPR_TRANSPORT_FILE)
            cpr_schema_prefetch_start(ctx, cpr_addr_path(main), cpr_addr_offset(main));
        cpr_mig_set_inmigrate(ctx);
        return CPR_MODE_CPR_EXEC;
    }
    if (!cpr)
        return (int)cpr_get_mode(ctx);

    int commit_signal = -1;
    int sock = cpr_migrate_in_cpr_channel(ctx, cpr_addr_path(cpr), &commit_signal, errp);
    if (sock < 0)
        return sock;
    cpr_trace_step(ctx, "cpr-state-received");
    /* Kept open: the old process waits for the hang-up, given once main listens. */
    cpr_mig_keep_cpr_socket(ctx, sock, commit_signal);
    cpr_mig_set_inmigrate(ctx);
    return CPR_MODE_CPR_TRANSFER;
}

struct in_state {
    struct cpr_main_chan mc;
    struct cpr_multifd_recv *mfd; /* multifd on a socket: the channels, accepted on main's listener */
    struct cpr_postcopy_in *pc; /* the stream ended in postcopy */
    int commit_signal; /* cpr-transfer from 1.2 on: the old process's commit signal, or -1 */
    int ack_deferred;  /* committed by the signal: the acknowledgement follows the start */
};

/* Stops and joins the multifd channels' threads: nothing writes guest RAM after this. */
static void drop_multifd(cpr_job *job, struct in_state *in)
{
    if (!in->mfd)
        return;
    cpr_mig_ram_set_multifd(cpr_job_ram(job), NULL, NULL);
    cpr_multifd_recv_free(in->mfd);
    in->mfd = NULL;
}

static void in_cleanup(cpr_job *job)
{
    struct in_state *in = job->priv;
    if (!in)
        return;
    drop_multifd(job, in);
    cpr_postcopy_in_free(in->pc);
    cpr_main_chan_close(&in->mc, NULL);
    if (in->commit_signal >= 0)
        close(in->commit_signal);
    g_free(in);
    job->priv = NULL;
}

/* multifd: main's listener stays open for the channels the ram section's setup announces. */
static void multifd_listen(cpr_job *job, struct in_state *in)
{
    if (!job->params.multifd || cpr_listener_fd(in->mc.l) < 0)
        return;
    in->mc.keep_listener = 1;
    struct cpr_chan_cancel cancel = cpr_job_chan_cancel(job);
    cpr_multifd_recv_new(&cancel, in->mc.l, &in->mc.tls_cfg, &in->mfd);
    cpr_multifd_recv_ack_to(in->mfd, &in->mc);
    cpr_mig_ram_set_multifd(cpr_job_ram(job), NULL, in->mfd);
}

/* On the caller's thread: listen on main, then hang up the cpr channel. */
static int in_prepare(cpr_job *job, cpr_error **errp)
{
    struct in_state *in = g_new0(struct in_state, 1);
    struct cpr_chan_cancel cancel = cpr_job_chan_cancel(job);
    cpr_main_chan_init(&in->mc, &cancel);
    in->commit_signal = -1;
    job->priv = in;
    int ret = cpr_main_tls_check(job->ctx, job->params.tls_creds, 1, job->mode, job->channels, errp);
    if (ret == 0)
        ret = cpr_main_tls_authz_check(job->ctx, job->params.tls_creds, job->params.tls_authz, errp);
    if (ret < 0)
        return ret;
    cpr_main_chan_use_tls(&in->mc, job->ctx, job->params.tls_creds, NULL);
    in->mc.tls_cfg.authz = job->params.tls_authz;
    ret = cpr_main_chan_listen(&in->mc, cpr_channels_get(job->channels, CPR_CHANNEL_MAIN), errp);
    if (ret < 0)
        return ret;
    cpr_trace_step(job->ctx, "main-listening");
    multifd_listen(job, in);

    int sock = cpr_mig_take_cpr_socket(job->ctx, &in->commit_signal);
    if (sock >= 0) {
        /* Devices exist by now (QEMU's order): preserved fds nobody claimed are not needed. */
        cpr_fd_close_unclaimed(job->ctx);
        cpr_ram_close_unattached(job->ctx);
        /* Main listens: tell the old process it may stop its guest and connect. */
        ret = cpr_transfer_finish(sock, errp);
        cpr_trace_step(job->ctx, "cpr-hangup-sent");
        if (ret < 0)
            cpr_error_prefix(errp, "cpr channel");
    }
    return ret;
}

static int send_ack(cpr_job *job, struct in_state *in, cpr_error **errp)
{
    int ret = cpr_main_chan_send_ack(&in->mc, errp);
    if (ret == 0)
        cpr_trace_step(job->ctx, "ack-sent");
    return ret;
}

/*
 * The destination's point of no return. Before it, everything that can fail has run (load,
 * post_load, the VMM's prepare) and a failure lets the source resume; after it the guest is
 * this side's. On a socket the commit is the acknowledgement: until the source has it, it may
 * still resume, so it is the last step before the guest is ours. From 1.2, cpr-transfer
 * commits by setting the old process's commit signal instead, which wakes nobody; the source
 * reads it only when main ends without the acknowledgement, which then comes after the start
 * (ack_after_start), off the guest's pause. Whoever else waits for the commit (a cpr-exec
 * guardian of the previous image) is told here too, next to it.
 */
static int commit(cpr_job *job, struct in_state *in, cpr_error **errp)
{
    /* A cancel that came during the load or prepare still wins; from here on none does. */
    int ret = cpr_job_point_of_no_return(job, errp);
    if (ret < 0)
        return ret;
    if (in->mc.is_socket && in->commit_signal >= 0)
        in->ack_deferred = cpr_commit_signal_set(in->commit_signal, NULL) == 0;
    if (in->mc.is_socket && !in->ack_deferred && (ret = send_ack(job, in, errp)) < 0) {
        cpr_error_prefix(errp, "the source went away before the switchover");
        return ret;
    }
    cpr_exec_commit(job->ctx); /* cpr-exec: past here the previous image is not exec'd back */
    job->committed = 1;
    cpr_trace_step(job->ctx, "committed");
    return 0;
}

/* After the start (or its failure): the source, which knows of the commit from the signal
 * only if main ends without this byte, completes now. A source gone by then changes nothing:
 * the guest is here. */
static void ack_after_start(cpr_job *job, struct in_state *in)
{
    if (in->ack_deferred && send_ack(job, in, NULL) < 0) {
        /* nothing to do: the source died after the commit, the guest runs here alone */
    }
}

/* Everything before the commit: a failure here is the source's to recover from. */
static int load_and_prepare(cpr_job *job, struct in_state *in, cpr_error **errp)
{
    int ret = cpr_main_chan_accept(&in->mc, errp);
    if (ret < 0)
        return ret;
    cpr_trace_step(job->ctx, "main-accepted");
    if ((ret = cpr_job_set_status(job, CPR_MIGRATION_ACTIVE, errp)) < 0)
        return ret;
    /* post_load and load_done run only once the whole stream checked out (savevm). */
    cpr_mig_ram_allow_postcopy(cpr_job_ram(job), job->params.postcopy_ram);
    cpr_mig_ram_set_ack_to(cpr_job_ram(job), in->mc.is_socket ? &in->mc : NULL);
    ret = cpr_savevm_load_stream(job->ctx, in->mc.s, NULL, errp);
    cpr_mig_ram_set_ack_to(cpr_job_ram(job), NULL); /* in->mc goes with the job */
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->transferred = cpr_stream_offset(in->mc.s);
    cpr_job_stats_unlock(job);
    if (ret == 0)
        cpr_trace_step(job->ctx, "state-loaded");
    if (ret == 0 && (ret = cpr_job_vm_prepare(job, errp)) == 0)
        cpr_trace_step(job->ctx, "prepared");
    if (ret == 0)
        ret = cpr_postcopy_in_prepare(job, in->mc.fd, &in->pc, errp);
    return ret;
}

/*
 * Postcopy's pages, its pause on a cut link and its recovery run on a thread of their own from
 * before the VMM's start hook: a hook (or anything it waits for) that touches a page still
 * missing waits for that page, and if the link is cut meanwhile, only this thread can report
 * postcopy-paused and take the source back (migrate-recover). Run on the job's thread, after
 * the hook, they deadlocked with such a hook.
 */
struct pc_runner {
    cpr_job *job;
    struct cpr_postcopy_in *pc;
    GThread *th;
    int ret;
    cpr_error *err;
};

static gpointer pc_runner_thread(gpointer p)
{
    struct pc_runner *r = p;
    r->ret = cpr_postcopy_in_run(r->job, r->pc, &r->err);
    return NULL;
}

/* On the job's thread: accept, load, prepare, commit (acknowledge), start. */
static int in_run(cpr_job *job, cpr_error **errp)
{
    struct in_state *in = job->priv;
    int ret = load_and_prepare(job, in, errp);
    if (ret == 0)
        ret = commit(job, in, errp);
    if (ret < 0) {
        cpr_lazy_restore_abort(job->ctx); /* the guest never ran: its RAM is the next load's */
        cpr_map_restore_abort(job->ctx);
        /* Tell the source, which then resumes, rather than let it guess from a reset. */
        cpr_main_chan_refuse(&in->mc, errp && *errp ? cpr_error_message(*errp) : NULL);
        /* Then hang up now, not when the job is freed: a source still sending (its TLS
         * handshake ended before ours refused its certificate) would block on a full socket. */
        cpr_main_chan_close(&in->mc, NULL);
        /* Before "failed" is out: a VMM may unmap its RAM on it, so no channel may still
         * apply a packet in flight. */
        drop_multifd(job, in);
        return ret;
    }
    cpr_job_set_runstate(job, -1);
    /* Postcopy: the fault server guards the missing pages before the guest may touch them. */
    struct pc_runner pr = { .job = job, .pc = in->pc };
    if (in->pc && (ret = cpr_postcopy_in_start(job, in->pc, errp)) < 0)
        return ret;
    if (in->pc)
        pr.th = g_thread_try_new("cpr-postcopy-in", pc_runner_thread, &pr, NULL);
    if (!(job->flags & CPR_INCOMING_PAUSED) && (ret = cpr_job_vm_start(job, errp)) < 0)
        cpr_error_prefix(errp, "after the commit (the guest is here, paused; the source no longer runs it)");
    cpr_trace_step(job->ctx, "started");
    ack_after_start(job, in);
    /* Past the commit no abort comes: a mapped restore's memfds give their pages back, after
     * the start, outside the guest's pause. */
    cpr_map_restore_commit(job->ctx);
    if (in->pc) {
        /* Even when the start failed: the source alone holds the missing pages, so they are
         * fetched all the same, over main (still open), and a later `cont` finds them. */
        if (pr.th)
            g_thread_join(pr.th);
        else
            pc_runner_thread(&pr); /* no thread: after the start, as before */
        if (pr.ret < 0)
            in->pc = NULL; /* kept with the context: the guest is lost, its vCPUs stay blocked */
        if (pr.ret < 0 && ret == 0) {
            ret = pr.ret;
            cpr_error_propagate(errp, pr.err);
        } else {
            cpr_error_free(pr.err); /* the start's failure is the one to tell */
        }
    }
    /* Closed after the start: unmapping the stream's buffer and tearing the socket down
     * (~40 us here) are not part of the guest's pause. */
    cpr_main_chan_close(&in->mc, NULL);
    return ret < 0 ? ret : 0;
}

const cpr_job_driver cpr_driver_incoming = {
    .name = "incoming", .prepare = in_prepare, .run = in_run, .cleanup = in_cleanup,
};
