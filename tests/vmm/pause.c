/* SPDX-License-Identifier: MIT */
/*
 * The guest-visible pause of a switchover, measured by the guest itself: each vCPU's loop keeps
 * its largest gap between two iterations on its own clock (the TSC), and the machine core's
 * sampler reads it once the heartbeat moved after the resume:
 *   old VMM   arm right before the stop; right after it, take the handoff (each vCPU's last
 *             heartbeat and when it was seen), which travels in section hbmon;
 *   resuming  the new VMM (or the old one, when the migration failed) sets that handoff right
 *             before it resumes the guest (that zeroes the guest's records), then waits for every
 *             heartbeat to move: the guest's largest gap is the pause, query-guest's
 *             last-pause-ms. Where the guest's clock does not check out as the host's, the
 *             sampler's own host-seen bound stands in (last-pause-by says which);
 *             last-pause-seen-ms is that bound in any case.
 */
#include "pause.h"

int vmm_pause_init(vmm *v, char **err)
{
    cpr_error *cerr = NULL;
    v->last_pause_ms = -1;
    v->last_pause_seen_ms = -1;
    v->last_pause_by = "host";
    /* The sampler starts watching once the guest's mailbox is in RAM (after boot, or once an
     * incoming migration brought it). */
    /* Armed polls every 200 us, not 10: the guest measures the pause itself, and finer polling
     * only takes CPU from the vCPUs and the restore on a small host. */
    if (vmm_hb_sampler_new(&v->sampler, v->ram, v->ram_size, 200, &cerr) < 0)
        return vmm_fail_cpr(err, "heartbeat sampler", cerr);
    return 0;
}

void vmm_pause_fini(vmm *v)
{
    if (v->pause_thread)
        g_thread_join(v->pause_thread);
    v->pause_thread = NULL;
    vmm_hb_sampler_free(v->sampler);
    v->sampler = NULL;
}

void vmm_pause_arm(vmm *v)
{
    if (v->sampler)
        vmm_hb_sampler_reset(v->sampler);
}

void vmm_pause_stopped(vmm *v, vmm_hb_handoff *out)
{
    memset(out, 0, sizeof(*out));
    if (!v->sampler)
        return;
    vmm_hb_sampler_handoff_get(v->sampler, out);
    g_mutex_lock(&v->lock);
    v->own_handoff = *out;
    v->have_own_handoff = 1;
    g_mutex_unlock(&v->lock);
}

void vmm_pause_incoming(vmm *v, const vmm_hb_handoff *h)
{
    /* Only noted: setting it writes the guest's pause records in RAM, and until the commit the
     * RAM may still be the source's to resume on (or a later restart's to load). */
    g_mutex_lock(&v->lock);
    v->in_handoff = *h;
    v->have_in_handoff = 1;
    g_mutex_unlock(&v->lock);
}

void vmm_pause_before_resume(vmm *v)
{
    g_mutex_lock(&v->lock);
    /* The guest came from a source: the pause counts from the source's stop. Otherwise the
     * migration failed and the guest resumes here: the pause counts from our own stop. */
    int in = v->have_in_handoff;
    int own = !in && !v->pause_armed && v->have_own_handoff;
    vmm_hb_handoff h = in ? v->in_handoff : v->own_handoff;
    v->have_in_handoff = 0;
    v->have_own_handoff = 0;
    if (in || own)
        v->pause_armed = 1;
    g_mutex_unlock(&v->lock);
    if ((in || own) && v->sampler)
        vmm_hb_sampler_handoff_set(v->sampler, &h);
}

void vmm_pause_completed(vmm *v)
{
    g_mutex_lock(&v->lock);
    v->have_own_handoff = 0;
    g_mutex_unlock(&v->lock);
}

/* Waits for every vCPU's heartbeat to move and records the largest gap. */
static gpointer measure_thread(gpointer p)
{
    vmm *v = p;
    uint64_t gap = 0, guest = 0, seen = 0;
    if (vmm_hb_sampler_wait_pause(v->sampler, 10000, &gap) == 0) {
        int by_guest = vmm_hb_sampler_last_pause(v->sampler, &guest, &seen) == 1;
        g_mutex_lock(&v->lock);
        v->last_pause_ms = (double)gap / 1e6;
        v->last_pause_seen_ms = (double)seen / 1e6;
        v->last_pause_by = by_guest ? "guest" : "host";
        v->pause_history.last_pause_ns = gap;
        v->pause_history.switchovers++;
        g_mutex_unlock(&v->lock);
        vmm_trace("guest pause measured: %.3f ms by the %s (the guest's clock %.3f ms, host-seen "
                  "%.3f ms, late polls %llu)", (double)gap / 1e6, by_guest ? "guest" : "host",
                  (double)guest / 1e6, (double)seen / 1e6,
                  (unsigned long long)vmm_hb_sampler_late_polls(v->sampler));
        uint64_t from, to;
        if (vmm_hb_sampler_last_window(v->sampler, &from, &to) == 0)
            vmm_trace("guest pause: its last iteration before at %.3f ms, its first after at %.3f ms",
                      (double)from / 1e6, (double)to / 1e6);
    }
    return NULL;
}

void vmm_pause_resumed(vmm *v)
{
    g_mutex_lock(&v->lock);
    int armed = v->pause_armed;
    v->pause_armed = 0;
    g_mutex_unlock(&v->lock);
    if (!armed || !v->sampler)
        return;
    if (v->pause_thread)
        g_thread_join(v->pause_thread);
    v->pause_thread = g_thread_new("pause-measure", measure_thread, v);
}

void vmm_pause_stalls_record(vmm *v, int on)
{
    if (!v->sampler)
        return;
    vmm_hb_sampler_stalls_record(v->sampler, on);
    if (on)
        __atomic_store_n(&v->stalls_recorded, 1, __ATOMIC_RELAXED);
}

int vmm_pause_stalls_get(vmm *v, vmm_stall_stats *out)
{
    if (!v->sampler || !__atomic_load_n(&v->stalls_recorded, __ATOMIC_RELAXED))
        return -1;
    return vmm_hb_sampler_stalls(v->sampler, out) < 0 ? -1 : 0;
}
