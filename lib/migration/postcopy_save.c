/* SPDX-License-Identifier: MIT */
/*
 * Postcopy, the source's side after the switch (postcopy.h): the guest is stopped here and its
 * device state went to the destination; this side serves the pages the destination asks for
 * until it has all of them. From the destination's acknowledgement on, the guest is the
 * destination's: this side never runs it again, whatever happens, and keeps every page until
 * the destination said DONE.
 *
 * A link cut (the return path's end or an error on it; a dead destination looks the same)
 * pauses instead (postcopy-paused): the pages stay, the guest stays stopped, and
 * cpr_migrate_resume() gives the address of the same destination's cpr_migrate_recover()
 * listener to carry on from (docs/migration.md, "Postcopy recovery").
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/transport.h>

#include "core/error.h"
#include "core/trace.h"
#include "migration/main_channel.h"
#include "migration/postcopy.h"
#include "migration/ram_section.h"

/* migrate-pause: the connection served ends as if the link were cut (cpr_job_set_cut). */
static void cut(void *opaque)
{
    const struct cpr_pc_server *sv = opaque;
    shutdown(sv->rfd, SHUT_RDWR);
}

static void stats_update(cpr_job *job, const struct cpr_pc_server *sv)
{
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->postcopy_requests = __atomic_load_n(&sv->requests, __ATOMIC_RELAXED);
    cpr_job_stats_unlock(job);
}

/* Connects to a recovering destination and says which migration this is: the new socket. */
static int reconnect(const cpr_addr *a, const struct cpr_pc_server *sv, int *out, cpr_error **errp)
{
    int fd;
    int ret = cpr_transport_connect(a, &fd, errp);
    if (ret < 0) {
        cpr_error_prefix(errp, "postcopy recovery");
        return ret;
    }
    uint8_t hello[CPR_PC_MSG_BYTES];
    cpr_pc_resume_encode(sv->nblocks, sv->block_pages, hello);
    if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello)) {
        ret = cpr_error_set_errno(errp, -errno, "postcopy recovery: sending resume");
        close(fd);
        return ret;
    }
    *out = fd;
    return 0;
}

/* The link failed with *errp: postcopy-paused until a connection to the same destination is
 * made again (0: serve on *fd, the one before closed) or the operator gives up (the last
 * failure, the cut's or a reconnection's, in *errp). */
static int pause_until_resumed(cpr_job *job, struct cpr_pc_server *sv, int *fd, cpr_error **errp)
{
    shutdown(sv->rfd, SHUT_RDWR); /* this connection is over, whatever the peer still does */
    cpr_error *why = NULL;
    cpr_error_propagate(&why, errp && *errp ? *errp : NULL);
    if (errp)
        *errp = NULL;
    int code = why ? cpr_error_code(why) : -ECONNRESET;
    for (;;) {
        void *a = NULL;
        if (cpr_job_postcopy_pause(job, why, &a) < 0)
            break;
        cpr_error *err = NULL;
        int nfd = -1;
        int ret = reconnect(a, sv, &nfd, &err);
        cpr_addr_free(a);
        if (ret == 0) {
            /* Replaced before postcopy-active, while no migrate-pause can cut it. */
            if (*fd >= 0)
                close(*fd);
            *fd = sv->rfd = sv->wfd = nfd;
            if ((ret = cpr_job_postcopy_resumed(job, &err)) == 0) {
                cpr_error_free(why);
                return 0;
            }
            shutdown(nfd, SHUT_RDWR); /* given up or paused meanwhile: the peer hears it */
        }
        cpr_error_free(why);
        why = err;
    }
    if (why)
        code = cpr_error_code(why); /* the last failure: the cut, or the last reconnection's */
    cpr_error_propagate(errp, why);
    return code;
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
    cpr_trace_step(job->ctx, "postcopy-acked");
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
    int fd = -1; /* a connection of a recovery, owned here */
    cpr_job_set_cut(job, cut, &sv);
    ret = cpr_pc_serve(&sv, errp);
    while (ret < 0 && cpr_pc_link_error(ret)) {
        stats_update(job, &sv);
        if ((ret = pause_until_resumed(job, &sv, &fd, errp)) < 0)
            break;
        ret = cpr_pc_serve(&sv, errp);
    }
    cpr_job_set_cut(job, NULL, NULL);
    if (fd >= 0)
        close(fd);
    stats_update(job, &sv);
    g_array_free(blocks, TRUE);
    g_array_free(pages, TRUE);
    if (ret < 0)
        cpr_error_prefix(errp, "postcopy, after the switch: the guest runs at the destination, "
                         "so it stays paused here (this side still holds every page it did not "
                         "send, until it exits)");
    return ret;
}
