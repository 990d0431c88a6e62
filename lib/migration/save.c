/* SPDX-License-Identifier: MIT */
/*
 * The outgoing main channel, shared by every mode: open, savevm begin, precopy passes while
 * the guest runs (normal mode), switchover, the rest, end record, and the destination's
 * acknowledgement on sockets.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/stream.h>

#include "channel/file_save.h"
#include "core/error.h"
#include "core/trace.h"
#include "format/record.h"
#include "format/savevm.h"
#include "format/stream.h"
#include "migration/main_channel.h"
#include "migration/migrate.h"
#include "migration/multifd.h"
#include "migration/postcopy.h"
#include "migration/ram_entries.h"
#include "migration/ram_section.h"
#include "migration/vm_hooks.h"

/* A guest that dirties memory faster than the link carries it never converges: after this many
 * passes the engine switches over anyway, with whatever downtime that costs. */
#define CPR_PRECOPY_MAX_PASSES 64
/* Once RAM's pass has run out, the next sync waits for the VMM's own progressive sections to
 * come within the downtime limit too, but no longer than this, so passes keep counting. */
#define CPR_PASS_WAIT_US (1000 * 1000)
/* With no RAM to send (every block stays in place: the cpr modes, x-ignore-shared), nothing
 * counts passes: the other sections get this long to fit the downtime limit. */
#define CPR_PRECOPY_NO_RAM_MAX_US (CPR_PRECOPY_MAX_PASSES * CPR_PASS_WAIT_US)
/* A round of iterate() calls that sent nothing (every section waits for more to send) is
 * followed by this pause, so that sections with nothing to send yet are not asked in a busy
 * loop while the guest runs. */
#define CPR_IDLE_ROUND_MS 10
/* The shortest stretch of a pass whose bandwidth the engine trusts (QEMU's window too). */
#define CPR_BANDWIDTH_WINDOW_US (100 * 1000)
/* postcopy-ram: what may stand between migrate-start-postcopy and the device state on the wire
 * (docs/migration.md, "The postcopy switch"): RAM parts of CPR_PC_PART_BYTES, and in the socket
 * at most CPR_PC_QUEUE_MS of the link's bandwidth, never less than CPR_PC_QUEUE_MIN (enough to
 * keep a fast link with a short round trip busy). */
#define CPR_PC_PART_BYTES (256u << 10)
#define CPR_PC_QUEUE_MS 5
#define CPR_PC_QUEUE_MIN (1u << 20)

struct save_run {
    cpr_job *job;
    struct cpr_mig_ram *ram;
    cpr_stream *s;
    int64_t throttle_start_us; /* bandwidth limit window */
    uint64_t throttle_start_bytes;
    int64_t pass_start_us;
    uint64_t pass_start_bytes;
    uint64_t bandwidth; /* bytes/s of the last pass */
    int dirty_logging;
    struct cpr_multifd_send *mfd; /* RAM's data pages, when multifd is on */
    int postcopy; /* switched to postcopy: the dirty pages go on request (postcopy_save.c) */
    struct cpr_main_chan *mc;
    /* A single stream's pass acknowledgements: 0 not asked, ASKED until the destination's
     * offer is read, then ON; the pass whose acknowledgement comes next (they count from 1). */
    enum { ACKS_OFF, ACKS_ASKED, ACKS_ON } acks;
    uint32_t ack_next;
    int queue_bound; /* postcopy-ram on a socket: queue_wait() bounds the bytes queued */
};

/* Bytes sent so far: the main channel's, the multifd channels', and pages written outside
 * the stream's records (mapped-ram). */
static uint64_t sent_bytes(const struct save_run *r)
{
    /* mapped-ram: the regions count as the pages written into them, not as their size. */
    return cpr_stream_offset(r->s) - cpr_stream_skipped_out(r->s) + cpr_multifd_send_bytes(r->mfd) +
           cpr_mig_ram_mapped_bytes(r->ram);
}

/*
 * With multifd the destination acts on main's records while the channels wait for it: the
 * setup record lets it accept them, a pass's sync entry lets its channels apply the next pass.
 * Each round's records go out at once, so no channel waits on bytes sitting in main's buffer.
 */
static int multifd_flush(struct save_run *r, cpr_error **errp)
{
    return r->mfd ? cpr_stream_flush(r->s, errp) : 0;
}

/* multifd on a socket main channel with RAM to send: its channels, connected to the same
 * address. A file: is mapped-ram's business, not this. */
static int multifd_open(struct save_run *r, struct cpr_main_chan *mc, cpr_error **errp)
{
    cpr_job *job = r->job;
    if (!job->params.multifd || mc->is_file || !cpr_mig_ram_active(r->ram))
        return 0;
    struct cpr_chan_cancel cancel = cpr_job_chan_cancel(job);
    int ret = cpr_multifd_send_open(&cancel, cpr_channels_get(job->channels, CPR_CHANNEL_MAIN), &job->params,
                                    &mc->tls_cfg, &r->mfd, errp);
    if (ret == 0)
        cpr_multifd_send_want_acks(r->mfd, mc);
    cpr_mig_ram_set_multifd(r->ram, r->mfd, NULL);
    return ret;
}

/*
 * A single stream on a socket has the same backlog as multifd (docs/migration.md, "Passes
 * acknowledged"), and a return path: ask the destination, in the config, to acknowledge
 * passes. A 1.0/1.1 destination ignores the key and never offers; postcopy is left out, its
 * return path carrying page requests from the switch on.
 */
static void acks_ask(struct save_run *r, struct cpr_main_chan *mc, enum cpr_save_live live)
{
    cpr_job *job = r->job;
    if (!mc->is_socket || r->mfd || live != CPR_SAVE_LIVE || job->mode != CPR_MODE_NORMAL ||
        job->params.postcopy_ram || !cpr_mig_ram_active(r->ram))
        return;
    cpr_savevm_set_config_flag(job->ctx, CPR_CONFIG_ACK_PASSES);
    r->acks = ACKS_ASKED;
    mc->offer_due = 1;
}

/* Each round while asked: the destination's offer, once it is there, turns the entries on. */
static int acks_look(struct save_run *r, cpr_error **errp)
{
    uint32_t pass;
    int ret = r->acks == ACKS_ASKED ? cpr_main_chan_poll_pass_ack(r->mc, &pass, errp) : 0;
    if (ret <= 0)
        return ret;
    if (pass != 0)
        return cpr_error_set(errp, -EPROTO, "main channel: the destination acknowledged pass %u before it "
                             "offered to", pass);
    r->acks = ACKS_ON;
    r->ack_next = 1;
    r->mc->offer_due = 0;
    cpr_mig_ram_ack_passes(r->ram, 1);
    cpr_trace_step(r->job->ctx, "pass-acks-on");
    return 0;
}

/* Waits until the destination applied every pass that ended so far. */
static int acks_take(struct save_run *r, cpr_error **errp)
{
    uint32_t due = cpr_mig_ram_acks_requested(r->ram);
    if (r->acks != ACKS_ON || r->ack_next > due)
        return 0;
    int ret = cpr_stream_flush(r->s, errp);
    return ret < 0 ? ret : cpr_main_chan_take_pass_acks(r->mc, "main channel", &r->ack_next, due + 1, errp);
}

/* What the progressive sections other than RAM (the VMM's own: a disk, say) have left. */
static uint64_t others_pending(const struct save_run *r)
{
    return cpr_savevm_pending(r->job->ctx, cpr_mig_ram_section(r->ram));
}

/* Copies what the stream and the sections counted into the query statistics. */
static void stats_update(struct save_run *r)
{
    struct cpr_ram_stats rs;
    cpr_mig_ram_stats(r->ram, &rs);
    uint64_t sent = sent_bytes(r);
    uint64_t others = others_pending(r);
    cpr_migration_info *i = cpr_job_stats_lock(r->job);
    i->transferred = sent;
    if (r->job->vm_stopped)
        i->downtime_bytes = sent - i->precopy_bytes;
    else
        i->precopy_bytes = sent;
    i->remaining = rs.remaining; /* RAM's, as QEMU's query shows it */
    i->total = rs.total;
    i->duplicate = rs.zero_pages;
    i->normal = rs.data_pages;
    i->normal_bytes = rs.data_pages * CPR_RAM_DIRTY_PAGE_SIZE;
    i->page_size = CPR_RAM_DIRTY_PAGE_SIZE;
    i->dirty_sync_count = rs.passes;
    i->bandwidth = r->bandwidth;
    if (r->bandwidth)
        i->expected_downtime_ms = (int64_t)((rs.remaining + others) * 1000 / r->bandwidth);
    cpr_job_stats_unlock(r->job);
}

/* Sleeps as long as max-bandwidth requires; a cancel cuts the sleep short. */
static void throttle(struct save_run *r)
{
    uint64_t limit = r->job->params.max_bandwidth;
    if (!limit)
        return;
    uint64_t sent = sent_bytes(r) - r->throttle_start_bytes;
    int64_t due_us = (int64_t)(sent * G_USEC_PER_SEC / limit);
    int64_t ahead_us = due_us - (g_get_monotonic_time() - r->throttle_start_us);
    if (ahead_us <= 1000)
        return;
    struct pollfd p = { .fd = cpr_job_cancel_fd(r->job), .events = POLLIN };
    poll(&p, 1, (int)MIN(ahead_us / 1000, 1000));
}

/* The bytes the link carries in CPR_PC_QUEUE_MS, at what it carried since the pass began (or
 * the last pass's rate while this one is too short to tell). */
static uint64_t queue_cap(const struct save_run *r)
{
    int64_t dt = g_get_monotonic_time() - r->pass_start_us;
    uint64_t bw = r->bandwidth;
    if (dt >= CPR_BANDWIDTH_WINDOW_US)
        bw = (sent_bytes(r) - r->pass_start_bytes) * G_USEC_PER_SEC / (uint64_t)dt;
    return MAX(CPR_PC_QUEUE_MIN, bw * CPR_PC_QUEUE_MS / 1000);
}

/*
 * postcopy-ram: before the next round, waits until the socket holds no more than queue_cap()
 * bytes the destination has not acknowledged (SIOCOUTQ), or until migrate-start-postcopy. A
 * full socket buffer (tens of MiB on a fast link) would otherwise stand between the switch and
 * the device state, the guest stopped all the while. Any socket that does not say (a TLS
 * session's is the same socket; a non-TCP one may refuse): no bound.
 */
static int queue_wait(struct save_run *r, cpr_error **errp)
{
    if (!r->queue_bound)
        return 0;
    int ret = cpr_stream_flush(r->s, errp);
    uint64_t cap = queue_cap(r);
    while (ret == 0 && !cpr_job_postcopy_requested(r->job)) {
        int queued;
        if (ioctl(r->mc->fd, SIOCOUTQ, &queued) < 0 || queued < 0 || (uint64_t)queued <= cap)
            break;
        struct pollfd p = { .fd = cpr_job_cancel_fd(r->job), .events = POLLIN };
        poll(&p, 1, 1);
        ret = cpr_job_check_cancel(r->job, errp);
    }
    return ret;
}

/* After a round that sent nothing: wait CPR_IDLE_ROUND_MS, less when a cancel comes. */
static void idle_wait(struct save_run *r)
{
    struct pollfd p = { .fd = cpr_job_cancel_fd(r->job), .events = POLLIN };
    poll(&p, 1, CPR_IDLE_ROUND_MS);
}

/* Bytes the link carries within the downtime limit, at this pass's bandwidth once the pass has
 * lasted CPR_BANDWIDTH_WINDOW_US (a shorter sample is noise: a first part can leave in
 * microseconds), else at the last pass's (none before the first: nothing fits yet). */
static uint64_t downtime_budget(const struct save_run *r, int64_t now)
{
    int64_t dt = now - r->pass_start_us;
    uint64_t bw = r->bandwidth;
    if (dt >= CPR_BANDWIDTH_WINDOW_US)
        bw = (sent_bytes(r) - r->pass_start_bytes) * G_USEC_PER_SEC / (uint64_t)dt;
    return bw * r->job->params.downtime_limit_ms / 1000;
}

/* Whether the other sections' `others` bytes fit the downtime limit now, or they have had
 * max_wait_us of this pass to get there: when RAM's pass has run out, whether to end it (sync);
 * with no RAM to send, whether to switch over. */
static int others_fit(const struct save_run *r, uint64_t others, int64_t max_wait_us)
{
    int64_t now = g_get_monotonic_time();
    return others <= downtime_budget(r, now) || now - r->pass_start_us >= max_wait_us;
}

/* The end of a live pass: measure it, start the next, and say whether to switch over now:
 * when what RAM and every other progressive section have left fits in the downtime limit. */
static int pass_end(struct save_run *r, int *converged, cpr_error **errp)
{
    /* multifd: the pass is carried once the destination applied it, not once its pages sat
     * in socket buffers (tens of MiB on a fast link): what is still buffered would otherwise
     * be drained while the guest is stopped. A single stream the same, when acknowledged. */
    int ret = cpr_multifd_send_take_acks(r->mfd, errp);
    if (ret == 0)
        ret = acks_take(r, errp);
    if (ret == 0) /* for the next pass, when the offer came during this one */
        ret = acks_look(r, errp);
    if (ret < 0)
        return ret;
    int64_t now = g_get_monotonic_time();
    uint64_t bytes = sent_bytes(r) - r->pass_start_bytes;
    int64_t dt = MAX(now - r->pass_start_us, 1);
    r->bandwidth = bytes * G_USEC_PER_SEC / (uint64_t)dt;
    uint64_t threshold = r->bandwidth * r->job->params.downtime_limit_ms / 1000;
    ret = cpr_job_vm_hook(r->job, CPR_VM_DIRTY_LOG_SYNC, errp);
    if (ret < 0)
        return ret;
    int64_t pages = cpr_mig_ram_sync(r->ram, 0, errp);
    if (pages < 0)
        return (int)pages;
    uint64_t pending = (uint64_t)pages * CPR_RAM_DIRTY_PAGE_SIZE + others_pending(r);
    struct cpr_ram_stats rs;
    cpr_mig_ram_stats(r->ram, &rs);
    cpr_migration_info *i = cpr_job_stats_lock(r->job);
    i->dirty_pages_rate = (uint64_t)pages * G_USEC_PER_SEC / (uint64_t)dt;
    cpr_job_stats_unlock(r->job);
    *converged = pending <= threshold || rs.passes >= CPR_PRECOPY_MAX_PASSES;
    r->pass_start_us = now;
    r->pass_start_bytes = sent_bytes(r);
    return 0;
}

static int precopy(struct save_run *r, cpr_error **errp)
{
    /* Dirty logging only when RAM pages are sent: it costs the guest (write protection). */
    int ram = cpr_mig_ram_active(r->ram), ret;
    if (ram) {
        ret = cpr_job_vm_hook(r->job, CPR_VM_DIRTY_LOG_START, errp);
        if (ret < 0)
            return ret;
        r->dirty_logging = 1;
    }
    /* Under a bandwidth limit, parts of about 50 ms of it, so that throttling is smooth and a
     * cancel is not stuck behind a large part. */
    uint64_t limit = r->job->params.max_bandwidth;
    if (limit)
        cpr_mig_ram_set_part_bytes(r->ram, CLAMP(limit / 20, 64u << 10, CPR_MIG_RAM_PART_BYTES));
    r->queue_bound = r->mc->is_socket && r->job->params.postcopy_ram;
    if (r->queue_bound)
        cpr_mig_ram_set_part_bytes(r->ram, MIN(CPR_PC_PART_BYTES, limit ? CLAMP(limit / 20, 64u << 10,
                                                                                 CPR_PC_PART_BYTES)
                                                                       : CPR_PC_PART_BYTES));
    r->pass_start_us = r->throttle_start_us = g_get_monotonic_time();
    r->pass_start_bytes = r->throttle_start_bytes = sent_bytes(r);
    for (;;) {
        if ((ret = cpr_job_check_cancel(r->job, errp)) < 0)
            return ret;
        uint64_t round_start = sent_bytes(r);
        if ((ret = acks_look(r, errp)) < 0)
            return ret;
        if ((ret = queue_wait(r, errp)) < 0)
            return ret;
        if (cpr_job_postcopy_requested(r->job))
            break;
        ret = cpr_savevm_iterate(r->job->ctx, r->s, errp);
        if (ret < 0)
            return ret;
        int flushed = multifd_flush(r, errp);
        if (flushed < 0)
            return flushed;
        stats_update(r);
        throttle(r);
        int converged = ret == 1; /* every section done: nothing to chase */
        uint64_t others = others_pending(r);
        if (!converged && !ram)
            converged = others_fit(r, others, CPR_PRECOPY_NO_RAM_MAX_US);
        if (!converged && ram && cpr_mig_ram_pass_ended(r->ram) && others_fit(r, others, CPR_PASS_WAIT_US)) {
            if ((ret = pass_end(r, &converged, errp)) < 0)
                return ret;
            stats_update(r);
            round_start = UINT64_MAX; /* the sync may have given RAM more to send: no pause */
        }
        if (converged)
            return 0;
        if (cpr_job_postcopy_requested(r->job))
            break;
        if (sent_bytes(r) == round_start)
            idle_wait(r);
    }
    cpr_trace_step(r->job->ctx, "precopy-left");
    return 0;
}

/* After the stop: the last dirty pages and every progressive section's remainder, in parts. */
static int drain(struct save_run *r, cpr_error **errp)
{
    int ret;
    if (r->dirty_logging && (ret = cpr_job_vm_hook(r->job, CPR_VM_DIRTY_LOG_SYNC, errp)) < 0)
        return ret;
    int64_t pages = cpr_mig_ram_sync(r->ram, 1, errp);
    if (pages < 0)
        return (int)pages;
    cpr_trace_step(r->job->ctx, "dirty-synced");
    cpr_mig_ram_set_part_bytes(r->ram, CPR_MIG_RAM_PART_BYTES);
    ret = cpr_savevm_iterate_stopped(r->job->ctx, r->s, errp);
    if (ret == 0)
        cpr_trace_step(r->job->ctx, "ram-drained");
    /* Before the point of no return: a multifd channel that failed fails the save here, and
     * so does a destination that failed to apply a pass (the acknowledgements, every one read
     * so that main holds nothing but the final one). */
    if (ret == 0 && r->mfd)
        ret = cpr_stream_flush(r->s, errp);
    if (ret == 0 && r->mfd)
        ret = cpr_multifd_send_take_acks(r->mfd, errp);
    if (ret == 0 && r->mfd)
        ret = cpr_multifd_send_finish(r->mfd, errp);
    stats_update(r);
    return ret;
}

static int finish_stream(struct save_run *r, struct cpr_main_chan *mc, cpr_error **errp)
{
    /* From the final records on, a cancel could leave the destination with a complete
     * stream while this side resumes: it is no longer honoured. */
    int ret = cpr_job_point_of_no_return(r->job, errp);
    if (ret == 0)
        ret = cpr_savevm_complete(r->job->ctx, r->s, errp);
    if (ret == 0)
        ret = cpr_stream_flush(r->s, errp);
    stats_update(r);
    if (ret < 0)
        return ret;
    cpr_trace_step(r->job->ctx, "state-written");
    /* A file: is synced and renamed into place by the channel's close (every mode). */
    if (mc->is_socket && r->postcopy)
        return cpr_postcopy_serve(r->job, r->ram, mc, errp);
    if (!mc->is_socket)
        return 0;
    ret = cpr_main_chan_wait_ack(mc, &r->job->no_resume, errp);
    if (ret == 0 && mc->committed_by_signal)
        cpr_trace_step(r->job->ctx, "commit-signal-read");
    return ret;
}

int cpr_migrate_save_main(cpr_job *job, enum cpr_save_live live, cpr_error **errp)
{
    struct save_run r = { .job = job, .ram = cpr_job_ram(job) };
    struct cpr_chan_cancel cancel = cpr_job_chan_cancel(job);
    struct cpr_main_chan mc;
    cpr_main_chan_init(&mc, &cancel);
    cpr_main_chan_use_tls(&mc, job->ctx, job->params.tls_creds, job->params.tls_hostname);
    mc.commit_signal = job->commit_signal;
    /* Before the channel opens: a refused block leaves no file and starts no command. */
    int ret = cpr_mig_ram_check(r.ram, job->mode, job->params.x_ignore_shared, errp);
    if (ret == 0)
        ret = cpr_main_chan_connect(&mc, cpr_channels_get(job->channels, CPR_CHANNEL_MAIN), errp);
    if (ret < 0)
        return ret;
    if (job->mode == CPR_MODE_CPR_EXEC)
        cpr_stream_file_no_sync(mc.s); /* read back on this host only: no fsync in the pause */
    r.s = mc.s;
    cpr_mig_ram_prepare(r.ram, job->mode, job->params.x_ignore_shared);
    /* The guest goes to a process that will share memory (or fds) with this one. */
    job->ram_shared = !mc.is_file && (job->mode == CPR_MODE_CPR_TRANSFER || cpr_mig_ram_kept(r.ram));
    if (job->params.mapped_ram)
        cpr_rec_announce_regions(r.s);
    int begun = 0;
    r.mc = &mc;
    ret = multifd_open(&r, &mc, errp);
    if (ret == 0)
        acks_ask(&r, &mc, live);
    if (ret == 0) {
        ret = cpr_savevm_begin(job->ctx, r.s, job->mode, errp);
        begun = ret != -EBUSY;
    }
    if (ret == 0 && job->params.mapped_ram) /* RAM to fixed offsets of the file */
        ret = cpr_mig_ram_map(r.ram, r.s, (unsigned int)job->params.multifd_channels, job->params.direct_io, errp);
    if (ret == 0)
        ret = multifd_flush(&r, errp);
    if (ret == 0)
        ret = cpr_job_set_status(job, CPR_MIGRATION_ACTIVE, errp);
    if (live == CPR_SAVE_LIVE_UNLESS_RAM && cpr_mig_ram_active(r.ram))
        live = CPR_SAVE_STOP_FIRST;
    if (ret == 0 && live != CPR_SAVE_STOP_FIRST)
        ret = precopy(&r, errp);
    /* The stopped guest's pages go unacknowledged: nothing is left to decide. */
    cpr_mig_ram_ack_passes(r.ram, 0);
    if (ret == 0)
        ret = acks_take(&r, errp);
    if (ret == 0)
        ret = cpr_job_switchover(job, errp);
    if (ret == 0 && mc.is_socket && live == CPR_SAVE_LIVE && cpr_job_postcopy_requested(job)) {
        r.postcopy = 1;
        cpr_mig_ram_set_postcopy(r.ram);
        ret = cpr_job_set_status(job, CPR_MIGRATION_POSTCOPY_ACTIVE, errp);
    }
    if (ret == 0)
        ret = drain(&r, errp);
    if (ret == 0)
        ret = finish_stream(&r, &mc, errp);
    if (r.dirty_logging)
        cpr_job_vm_hook(job, CPR_VM_DIRTY_LOG_STOP, NULL);
    stats_update(&r); /* before finish: the RAM section's counters go with its cleanup */
    if (begun)
        cpr_savevm_finish(job->ctx);
    cpr_multifd_send_free(r.mfd);
    if (ret < 0)
        cpr_stream_abandon(mc.s); /* nothing of a failed save replaces the old file */
    /* An exec: command that fails after taking the whole stream still fails the job. */
    int to_pipe = !mc.is_socket && !mc.is_file;
    int closed = cpr_main_chan_close(&mc, ret < 0 ? NULL : errp);
    cpr_trace_step(job->ctx, "main-closed");
    if (ret == 0 && closed < 0 && to_pipe) {
        /* No way back on a pipe: the reader may have loaded the whole stream and run it. */
        job->no_resume = 1;
        cpr_error_prefix(errp, "the whole stream was written, so the destination may run the guest: "
                               "it was left paused here");
    }
    return ret < 0 ? ret : closed;
}

static int run_normal(cpr_job *job, cpr_error **errp)
{
    return cpr_migrate_save_main(job, CPR_SAVE_LIVE, errp);
}

static int run_cpr_reboot(cpr_job *job, cpr_error **errp)
{
    return cpr_migrate_save_main(job, CPR_SAVE_STOP_FIRST, errp);
}

const cpr_job_driver cpr_driver_normal = { .name = "normal", .run = run_normal };
const cpr_job_driver cpr_driver_cpr_reboot = { .name = "cpr-reboot", .run = run_cpr_reboot };
