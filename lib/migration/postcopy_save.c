/* SPDX-License-Identifier: MIT */
/*
 * Postcopy, the source's side after the switch (postcopy.h): the guest is stopped here and its
 * device state went to the destination; this side serves the pages the destination asks for
 * until it has all of them. From the destination's acknowledgement on, the guest is the
 * destination's: this side never runs it again, whatever happens, and keeps every page until
 * the destination said DONE.
 */
#include <errno.h>

#include <glib.h>

#include <cpr/ram.h>

#include "core/error.h"
#include "migration/main_channel.h"
#include "migration/postcopy.h"
#include "migration/ram_section.h"

static void stats_update(cpr_job *job, const struct cpr_pc_server *sv)
{
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->postcopy_requests = __atomic_load_n(&sv->requests, __ATOMIC_RELAXED);
    cpr_job_stats_unlock(job);
}

int cpr_postcopy_serve(cpr_job *job, struct cpr_mig_ram *ram, struct cpr_main_chan *mc,
                       cpr_error **errp)
{
    /* Before the acknowledgement the destination has not committed: a NAK or its end lets
     * this side resume, as in precopy (every page is still here). */
    int ret = cpr_main_chan_read_ack(mc, &job->no_resume, errp);
    if (ret < 0)
        return ret;
    job->no_resume = 1; /* the destination runs the guest from now on */
    /* Even once this job ended (failed): the guest ran there, this copy is stale. */
    cpr_job_hand_over(job, "the guest switched to postcopy and ran at the destination: "
                           "this side's copy is stale");
    GArray *blocks = g_array_new(FALSE, TRUE, sizeof(struct cpr_pc_block));
    GArray *pages = g_array_new(FALSE, TRUE, sizeof(uint64_t));
    cpr_ram_block *b;
    for (unsigned i = 0; (b = cpr_mig_ram_sent_block(ram, i)); i++) {
        struct cpr_pc_block pb = { cpr_ram_block_host(b), cpr_ram_block_size(b) / CPR_PC_PAGE };
        g_array_append_val(blocks, pb);
        g_array_append_val(pages, pb.pages);
    }
    struct cpr_pc_server sv = {
        .rfd = mc->fd, .wfd = mc->fd, .nblocks = blocks->len,
        .blocks = (const struct cpr_pc_block *)(void *)blocks->data,
        .block_pages = (uint64_t *)(void *)pages->data,
        .max_bandwidth = job->params.max_postcopy_bandwidth,
    };
    ret = cpr_pc_serve(&sv, errp);
    stats_update(job, &sv);
    g_array_free(blocks, TRUE);
    g_array_free(pages, TRUE);
    if (ret < 0)
        cpr_error_prefix(errp, "postcopy, after the switch: the guest runs at the destination, "
                         "so it stays paused here (this side still holds every page it did not "
                         "send, until it exits)");
    return ret;
}
