/* SPDX-License-Identifier: MIT */
/*
 * The heartbeat monitor: how the guest-visible pause of a switchover is measured on the host's
 * clock. The old VMM saves, with the guest stopped, each vCPU's last heartbeat and the time it
 * first saw it; the new VMM, once it resumed the guest, waits for each heartbeat to move and
 * takes the largest gap since the old VMM's sighting (tests/vmm/machine's sampler does both).
 *
 * Section "hbmon" keeps versions for real:
 *   version 1: nvcpus and the heartbeats;
 *   version 2: + the times they were seen (without them the pause cannot be measured, and a
 *              VMM that loads a version-1 stream reports none);
 *   subsection "hbmon/history", present once a pause was measured: the last pause and how
 *              many switchovers this guest went through.
 */
#include <string.h>

#include "devices.h"
#include "fault.h"
#include "pause.h"

struct dev_hbmon {
    vmm *v;
    /* version 1 */
    uint32_t nvcpus;
    uint64_t heartbeat[VMM_MAX_VCPUS];
    /* version 2 */
    uint64_t changed_ns[VMM_MAX_VCPUS];
    /* subsection history */
    uint64_t last_pause_ns;
    uint32_t switchovers;
};

static int hbmon_pre_save(void *opaque, cpr_error **errp)
{
    vmm_fault(VMM_FAULT_SAVE_DEVICE);
    dev_hbmon *d = opaque;
    vmm *v = d->v;
    vmm_hb_handoff h;
    vmm_pause_stopped(v, &h);
    vmm_trace("hbmon saved: vCPU 0 heartbeat %llu last changed at %.3f ms", (unsigned long long)h.heartbeat[0],
              (double)h.changed_ns[0] / 1e6);
    d->nvcpus = h.nvcpus;
    memcpy(d->heartbeat, h.heartbeat, sizeof(d->heartbeat));
    memcpy(d->changed_ns, h.changed_ns, sizeof(d->changed_ns));
    g_mutex_lock(&v->lock);
    d->last_pause_ns = v->pause_history.last_pause_ns;
    d->switchovers = v->pause_history.switchovers;
    g_mutex_unlock(&v->lock);
    return 0;
}

/* Fault points for the reliability tests: hbmon sits between the vCPUs' and the serial
 * console's sections, so here is "in the middle of device state". */
static int hbmon_pre_load(void *opaque, cpr_error **errp)
{
    vmm_fault(VMM_FAULT_DEVICE_LOAD);
    return 0;
}

static int hbmon_post_load(void *opaque, uint32_t version, cpr_error **errp)
{
    vmm_fault(VMM_FAULT_LOADED);
    dev_hbmon *d = opaque;
    vmm *v = d->v;
    /* The history goes on with this guest; last-pause-ms reports only what this VMM measures
     * of the switchover that brought the guest here. */
    g_mutex_lock(&v->lock);
    v->pause_history.last_pause_ns = d->last_pause_ns;
    v->pause_history.switchovers = d->switchovers;
    g_mutex_unlock(&v->lock);
    if (version < 2 || d->nvcpus > VMM_MAX_VCPUS)
        return 0; /* no times: nothing to measure from */
    vmm_hb_handoff h = {.version = 1, .nvcpus = d->nvcpus};
    memcpy(h.heartbeat, d->heartbeat, sizeof(h.heartbeat));
    memcpy(h.changed_ns, d->changed_ns, sizeof(h.changed_ns));
    vmm_trace("hbmon loaded (version %u): %u earlier switchover(s), the last paused the guest %.3f ms", version,
              d->switchovers, (double)d->last_pause_ns / 1e6);
    vmm_pause_incoming(v, &h);
    return 0;
}

static int history_needed(const void *obj)
{
    return ((const dev_hbmon *)obj)->switchovers > 0;
}

/*
 * Builds the description as a VMM of `version` has it: version 1 is what an older cpr-vmm
 * wrote (-x-hbmon-version 1 plays that VMM in the tests); version 2 adds changed_ns and the
 * "hbmon/history" subsection.
 */
static int hbmon_desc(uint32_t version, cpr_desc **out, cpr_error **cerr)
{
    cpr_desc *d = NULL, *hist = NULL;
    int r = cpr_desc_new("hbmon", version, 1, sizeof(dev_hbmon), &d, cerr);
    if (r == 0)
        r = cpr_desc_add(d, "nvcpus", CPR_TYPE_U32, CPR_MEMBER(dev_hbmon, nvcpus), cerr);
    if (r == 0)
        r = cpr_desc_add(d, "heartbeat", CPR_TYPE_U64, CPR_MEMBER(dev_hbmon, heartbeat), cerr);
    if (r == 0)
        r = cpr_desc_set_hooks(d, hbmon_pre_save, NULL, hbmon_pre_load, hbmon_post_load, cerr);
    if (r < 0 || version < 2)
        goto out;
    r = cpr_desc_add(d, "changed_ns", CPR_TYPE_U64, CPR_MEMBER(dev_hbmon, changed_ns), cerr);
    if (r == 0)
        r = cpr_desc_field_since(d, "changed_ns", 2, cerr);
    if (r == 0)
        r = cpr_desc_new("hbmon/history", 1, 1, sizeof(dev_hbmon), &hist, cerr);
    if (r == 0)
        r = cpr_desc_add(hist, "last_pause_ns", CPR_TYPE_U64, CPR_MEMBER(dev_hbmon, last_pause_ns), cerr);
    if (r == 0)
        r = cpr_desc_add(hist, "switchovers", CPR_TYPE_U32, CPR_MEMBER(dev_hbmon, switchovers), cerr);
    if (r == 0)
        r = cpr_desc_add_subsection(d, hist, history_needed, 0, cerr);
out:
    cpr_desc_unref(hist);
    if (r < 0) {
        cpr_desc_unref(d);
        return r;
    }
    *out = d;
    return 0;
}

int dev_hbmon_init(vmm *v, char **err)
{
    dev_hbmon *d = g_new0(dev_hbmon, 1);
    d->v = v;
    v->devs->hbmon = d;
    cpr_error *cerr = NULL;
    cpr_desc *desc = NULL;
    int r = hbmon_desc(v->cfg->hbmon_version, &desc, &cerr);
    if (r == 0)
        r = cpr_savevm_register(v->ctx, NULL, 0, desc, d, 0, NULL, &cerr);
    cpr_desc_unref(desc);
    return r < 0 ? vmm_fail_cpr(err, "hbmon", cerr) : 0;
}

void dev_hbmon_fini(vmm *v)
{
    g_free(v->devs->hbmon);
    v->devs->hbmon = NULL;
}
