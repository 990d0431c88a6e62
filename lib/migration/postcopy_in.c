/* SPDX-License-Identifier: MIT */
/*
 * Postcopy, the destination's side (postcopy.h): the fault server places the pages the
 * source still holds, fetched over the main channel's return path by the client
 * (postcopy_client.c): a fault's request is urgent, so the source answers it before the
 * filler's in-order runs; nothing is placed before its checksum checked out.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/transport.h>

#include "core/error.h"
#include "core/trace.h"
#include "migration/fault_server.h"
#include "migration/postcopy.h"
#include "migration/ram_section.h"

/* How often the job refreshes the statistics while pages come in. */
#define STATS_PERIOD_US (100 * 1000)
/* How long a new connection has to say RESUME after it was accepted. */
#define RESUME_HELLO_MS 5000

struct cpr_postcopy_in {
    cpr_fault_server *fs;
    GPtrArray *blocks;     /* cpr_ram_block *, borrowed from the RAM section */
    uint64_t *block_pages;
    uint64_t resident;     /* pages that came in precopy */
    struct cpr_pc_client *client;
    GArray *fds;           /* int: connections taken after link cuts, closed at free */
};

/* The fault server's page source: the filler's runs go in the background... */
static int fetch(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                 cpr_error **errp)
{
    struct cpr_postcopy_in *pc = opaque;
    return cpr_pc_client_fetch(pc->client, 0, block, page, count, dst, errp);
}

/* ...a vCPU's fault is urgent: the source answers it before them. */
static int fetch_fault(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                       cpr_error **errp)
{
    struct cpr_postcopy_in *pc = opaque;
    return cpr_pc_client_fetch(pc->client, 1, block, page, count, dst, errp);
}

void cpr_postcopy_in_free(struct cpr_postcopy_in *pc)
{
    if (!pc)
        return;
    cpr_pc_client_give_up(pc->client); /* a fetch paused on a link cut returns */
    cpr_fault_server_free(pc->fs); /* its threads stop first: then nobody fetches */
    cpr_pc_client_free(pc->client);
    for (guint i = 0; i < pc->fds->len; i++)
        close(g_array_index(pc->fds, int, i));
    g_array_free(pc->fds, TRUE);
    g_free(pc->block_pages);
    g_free(pc);
}

static void pc_free(void *p)
{
    cpr_postcopy_in_free(p);
}

/* Discarded pages go (the source sends them again); a shared block's page cache too. */
static int discard(cpr_ram_block *b, const uint64_t *map, uint64_t pages, cpr_error **errp)
{
    uint8_t *host = cpr_ram_block_host(b);
    int advice = cpr_ram_block_shared(b) ? MADV_REMOVE : MADV_DONTNEED;
    for (uint64_t p = 0; map && p < pages;) {
        if (!(map[p / 64] >> (p % 64) & 1)) {
            p++;
            continue;
        }
        uint64_t hi = p + 1;
        while (hi < pages && (map[hi / 64] >> (hi % 64) & 1))
            hi++;
        if (madvise(host + p * CPR_PC_PAGE, (hi - p) * CPR_PC_PAGE, advice) < 0)
            return cpr_error_set_errno(errp, -errno, "postcopy: RAM block '%s': discarding pages "
                                       "%" PRIu64 "-%" PRIu64, cpr_ram_block_name(b), p, hi - 1);
        p = hi;
    }
    return 0;
}

/* Pages present now and not discarded came in precopy: the fault server leaves them. Pages
 * never written (holes) are fetched too: they read as zero at the source, and come as such. */
static int mark_resident(struct cpr_postcopy_in *pc, unsigned bi, const uint64_t *map,
                         cpr_error **errp)
{
    cpr_ram_block *b = g_ptr_array_index(pc->blocks, bi);
    uint64_t pages = pc->block_pages[bi];
    unsigned char *vec = g_malloc(pages);
    int ret = 0;
    if (mincore(cpr_ram_block_host(b), pages * CPR_PC_PAGE, vec) < 0)
        ret = cpr_error_set_errno(errp, -errno, "postcopy: RAM block '%s': mincore",
                                  cpr_ram_block_name(b));
    for (uint64_t p = 0; ret == 0 && p < pages;) {
        int keep = (vec[p] & 1) && !(map && (map[p / 64] >> (p % 64) & 1));
        uint64_t hi = p + 1;
        while (hi < pages && ((vec[hi] & 1) && !(map && (map[hi / 64] >> (hi % 64) & 1))) == keep)
            hi++;
        if (keep) {
            ret = cpr_fault_server_mark_placed(pc->fs, bi, p, hi - p, errp);
            pc->resident += hi - p;
        }
        p = hi;
    }
    g_free(vec);
    return ret;
}

static int guard_blocks(cpr_job *job, struct cpr_postcopy_in *pc, struct cpr_mig_ram *ram,
                        cpr_error **errp)
{
    int ret = 0;
    for (unsigned i = 0; ret == 0 && i < pc->blocks->len; i++) {
        cpr_ram_block *b = g_ptr_array_index(pc->blocks, i);
        uint64_t size = cpr_ram_block_size(b);
        pc->block_pages[i] = size / CPR_PC_PAGE;
        if (size % CPR_PC_PAGE)
            return cpr_error_set(errp, -EINVAL, "postcopy: RAM block '%s' is %" PRIu64 " bytes, "
                                 "not whole pages", cpr_ram_block_name(b), size);
        ret = cpr_fault_server_add_block(pc->fs, cpr_ram_block_name(b), cpr_ram_block_host(b),
                                         size, CPR_PC_PAGE, errp);
    }
    if (ret == 0)
        cpr_trace_step(job->ctx, "uffd-blocks-added");
    /* Registered first: from here a touch of a discarded page waits for the source. Every
     * block's discards before any mincore(): the residency read must not see them. */
    for (unsigned i = 0; ret == 0 && i < pc->blocks->len; i++)
        ret = discard(g_ptr_array_index(pc->blocks, i), cpr_mig_ram_postcopy_discarded(ram, i),
                      pc->block_pages[i], errp);
    if (ret == 0)
        cpr_trace_step(job->ctx, "pages-discarded");
    for (unsigned i = 0; ret == 0 && i < pc->blocks->len; i++)
        ret = mark_resident(pc, i, cpr_mig_ram_postcopy_discarded(ram, i), errp);
    return ret;
}

int cpr_postcopy_in_prepare(cpr_job *job, int fd, struct cpr_postcopy_in **out, cpr_error **errp)
{
    *out = NULL;
    struct cpr_mig_ram *ram = cpr_job_ram(job);
    if (!cpr_mig_ram_postcopy_pending(ram))
        return 0;
    struct cpr_postcopy_in *pc = g_new0(struct cpr_postcopy_in, 1);
    pc->blocks = cpr_mig_ram_postcopy_blocks(ram);
    pc->block_pages = g_new0(uint64_t, pc->blocks->len ? pc->blocks->len : 1);
    pc->client = cpr_pc_client_new(fd, pc->blocks->len, pc->block_pages);
    pc->fds = g_array_new(FALSE, FALSE, sizeof(int));
    cpr_page_source src = { .fetch = fetch, .fetch_fault = fetch_fault, .opaque = pc };
    int ret = cpr_fault_server_new(&src, 0, 0, NULL, NULL, &pc->fs, errp);
    if (ret == 0) {
        cpr_fault_server_set_label(pc->fs, "postcopy");
        ret = guard_blocks(job, pc, ram, errp);
    }
    if (ret == 0)
        cpr_trace_step(job->ctx, "uffd-registered");
    if (ret < 0) {
        cpr_error_prefix(errp, "postcopy cannot start here, so the source resumes");
        cpr_postcopy_in_free(pc);
        return ret;
    }
    *out = pc;
    return 0;
}

static void stats_update(cpr_job *job, struct cpr_postcopy_in *pc)
{
    cpr_fault_status st;
    cpr_fault_server_status(pc->fs, &st, NULL);
    cpr_migration_info *i = cpr_job_stats_lock(job);
    i->postcopy_requests = cpr_pc_client_requests(pc->client);
    i->postcopy_fault_pages = st.fault_pages;
    /* A fault's pages count as fetched before they are placed (and never are, if the fetch
     * failed): the difference can dip below zero for a moment, shown as 0, not 2^64 - n. */
    uint64_t not_pushed = st.fault_pages + pc->resident;
    i->postcopy_pushed_pages = st.pages_placed > not_pushed ? st.pages_placed - not_pushed : 0;
    i->postcopy_blocktime_us = st.blocked_us;
    i->postcopy_max_stall_us = st.max_stall_us;
    i->total = st.pages_total * CPR_PC_PAGE;
    i->remaining = (st.pages_total - st.pages_placed) * CPR_PC_PAGE;
    cpr_job_stats_unlock(job);
}

/* migrate-pause (cpr_job_set_cut): the client pauses as on a cut link. */
static void cut(void *opaque)
{
    struct cpr_postcopy_in *pc = opaque;
    cpr_pc_client_cut(pc->client);
}

int cpr_postcopy_in_start(cpr_job *job, struct cpr_postcopy_in *pc, cpr_error **errp)
{
    cpr_job_set_cut(job, cut, pc);
    int ret = cpr_job_set_status(job, CPR_MIGRATION_POSTCOPY_ACTIVE, errp);
    if (ret == 0)
        ret = cpr_fault_server_start(pc->fs, errp);
    if (ret == 0)
        cpr_trace_step(job->ctx, "fault-server-started");
    stats_update(job, pc);
    return ret;
}

/* A source on a new connection: accepted on l, it says RESUME for this block table first. */
static int accept_source(cpr_job *job, struct cpr_postcopy_in *pc, cpr_listener *l, int *out,
                         cpr_error **errp)
{
    struct pollfd p[3] = { { .fd = cpr_listener_fd(l), .events = POLLIN },
                           { .fd = cpr_job_cancel_fd(job), .events = POLLIN },
                           { .fd = cpr_job_pause_fd(job), .events = POLLIN } };
    while (poll(p, 3, -1) < 0)
        if (errno != EINTR)
            return cpr_error_set_errno(errp, -errno, "postcopy recovery: waiting for the source");
    if (p[1].revents)
        return cpr_error_set(errp, -ECANCELED, "postcopy recovery: given up");
    if (p[2].revents)
        return cpr_error_set(errp, -ECONNABORTED, "postcopy recovery: migrate-pause");
    int fd;
    int ret = cpr_listener_accept_fd(l, 0, &fd, errp);
    if (ret < 0)
        return ret;
    uint8_t hello[CPR_PC_MSG_BYTES];
    struct pollfd h = { .fd = fd, .events = POLLIN };
    if (poll(&h, 1, RESUME_HELLO_MS) <= 0)
        ret = cpr_error_set(errp, -ETIMEDOUT, "postcopy recovery: the new connection sent no "
                            "resume message within %d ms", RESUME_HELLO_MS);
    if (ret == 0)
        ret = cpr_pc_read_full(fd, hello, sizeof(hello), "waiting for the source's resume", errp);
    if (ret == 0)
        ret = cpr_pc_resume_check(hello, pc->blocks->len, pc->block_pages, errp);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    *out = fd;
    return 0;
}

/* The link was cut: postcopy-paused until the source comes back on a listener that
 * cpr_migrate_recover() gave (then postcopy-active again), or the operator gives up (then the
 * fetches fail, and the guest is lost as when the source died). */
static void recover(cpr_job *job, struct cpr_postcopy_in *pc)
{
    cpr_error *why = NULL;
    cpr_pc_client_paused(pc->client, &why);
    for (;;) {
        void *l = NULL;
        if (cpr_job_postcopy_pause(job, why, &l) < 0)
            break;
        cpr_error_free(why);
        why = NULL;
        int fd = -1;
        int ret = accept_source(job, pc, l, &fd, &why);
        cpr_listener_free(l);
        if (ret == 0) {
            g_array_append_val(pc->fds, fd);
            /* The client first: a migrate-pause from postcopy-active on must find it running. */
            cpr_pc_client_resume(pc->client, fd);
            if (cpr_job_postcopy_resumed(job, &why) == 0)
                return;
            cpr_pc_client_cut(pc->client); /* given up or paused meanwhile */
        }
    }
    cpr_error_free(why);
    cpr_pc_client_give_up(pc->client);
}

int cpr_postcopy_in_run(cpr_job *job, struct cpr_postcopy_in *pc, cpr_error **errp)
{
    cpr_error *err = NULL;
    int ret;
    while ((ret = cpr_fault_server_wait(pc->fs, STATS_PERIOD_US, &err)) == -ETIMEDOUT) {
        cpr_error_free(err);
        err = NULL;
        stats_update(job, pc);
        if (cpr_pc_client_paused(pc->client, NULL))
            recover(job, pc);
    }
    cpr_job_set_cut(job, NULL, NULL); /* pc may be kept or freed from here */
    stats_update(job, pc);
    if (ret == 0) {
        /* Best effort: the guest is whole here; a source that missed it fails and stays
         * paused, as it must anyway. */
        (void)cpr_pc_client_done(pc->client);
        return 0;
    }
    cpr_fault_status st;
    cpr_fault_server_status(pc->fs, &st, NULL);
    cpr_error_propagate(errp, err);
    cpr_error_prefix(errp, "postcopy: the guest is lost: %" PRIu64 " of its %" PRIu64 " pages never "
                     "arrived from the source, which alone had them. vCPUs that touch one stay "
                     "blocked (the guest never runs on a missing page); only quitting ends it",
                     st.pages_total - st.pages_placed, st.pages_total);
    /* The fault server outlives the job, so that blocked vCPUs stay blocked. */
    cpr_mig_ram_keep(cpr_job_ram(job), pc, pc_free);
    return ret;
}
