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
    int loaded_version;
};

static int hbmon_pre_save(void *opaque, cpr_error **errp)
{
    dev_hbmon *d = opaque;
    vmm *v = d->v;
    vmm_hb_handoff h = {0};
    vmm_hb_sampler *s = vmm_sampler(v);
    if (s)
        vmm_hb_sampler_handoff_get(s, &h);
    d->nvcpus = h.nvcpus;
    memcpy(d->heartbeat, h.heartbeat, sizeof(d->heartbeat));
    memcpy(d->changed_ns, h.changed_ns, sizeof(d->changed_ns));
    g_mutex_lock(&v->lock);
    d->last_pause_ns = v->pause_history.last_pause_ns;
    d->switchovers = v->pause_history.switchovers;
    g_mutex_unlock(&v->lock);
    return 0;
}

static int hbmon_post_load(void *opaque, int version, cpr_error **errp)
{
    dev_hbmon *d = opaque;
    vmm *v = d->v;
    g_mutex_lock(&v->lock);
    v->pause_history.last_pause_ns = d->last_pause_ns;
    v->pause_history.switchovers = d->switchovers;
    if (d->switchovers)
        v->last_pause_ms = (double)d->last_pause_ns / 1e6;
    g_mutex_unlock(&v->lock);
    if (version < 2 || d->nvcpus > VMM_MAX_VCPUS)
        return 0; /* no times: nothing to measure from */
    vmm_hb_handoff h = {.version = 1, .nvcpus = d->nvcpus};
    memcpy(h.heartbeat, d->heartbeat, sizeof(h.heartbeat));
    memcpy(h.changed_ns, d->changed_ns, sizeof(h.changed_ns));
    vmm_hb_sampler *s = vmm_sampler(v);
    if (s) {
        vmm_hb_sampler_handoff_set(s, &h);
        v->pause_handoff = 1;
    }
    return 0;
}

static int history_needed(void *opaque)
{
    return ((dev_hbmon *)opaque)->switchovers > 0;
}

static const cpr_vmstate_field history_fields[] = {
    CPR_VMSTATE_UINT64(dev_hbmon, last_pause_ns, 1),
    CPR_VMSTATE_UINT32(dev_hbmon, switchovers, 1),
    CPR_VMSTATE_END,
};

static const cpr_vmstate_desc history_desc = {
    .size = sizeof(cpr_vmstate_desc),
    .name = "hbmon/history",
    .version = 1,
    .min_version = 1,
    .needed = history_needed,
    .fields = history_fields,
};

static const cpr_vmstate_desc *const hbmon_subsections[] = {&history_desc, NULL};

static const cpr_vmstate_field hbmon_fields[] = {
    CPR_VMSTATE_UINT32(dev_hbmon, nvcpus, 1),
    CPR_VMSTATE_UINT64_ARRAY(dev_hbmon, heartbeat, VMM_MAX_VCPUS, 1),
    CPR_VMSTATE_UINT64_ARRAY(dev_hbmon, changed_ns, VMM_MAX_VCPUS, 2),
    CPR_VMSTATE_END,
};

static const cpr_vmstate_desc hbmon_desc = {
    .size = sizeof(cpr_vmstate_desc),
    .name = "hbmon",
    .version = 2,
    .min_version = 1,
    .pre_save = hbmon_pre_save,
    .post_load = hbmon_post_load,
    .fields = hbmon_fields,
    .subsections = hbmon_subsections,
};

int dev_hbmon_init(vmm *v, char **err)
{
    dev_hbmon *d = g_new0(dev_hbmon, 1);
    d->v = v;
    v->devs->hbmon = d;
    cpr_error *cerr = NULL;
    if (cpr_vmstate_register(v->ctx, &hbmon_desc, 0, d, &cerr) < 0) {
        *err = g_strdup_printf("hbmon: %s", cpr_error_message(cerr));
        cpr_error_free(cerr);
        return -1;
    }
    return 0;
}

void dev_hbmon_fini(vmm *v)
{
    g_free(v->devs->hbmon);
    v->devs->hbmon = NULL;
}
