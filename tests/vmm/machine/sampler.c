/* SPDX-License-Identifier: MIT */
/*
 * The heartbeat sampler: a thread that polls each vCPU's heartbeat in the shared mailbox and
 * keeps the largest gap between changes. The heartbeat lives in RAM, so the old and the new
 * process of a switchover can both watch it, and CLOCK_MONOTONIC is the same clock for both:
 * the handoff carries the old side's last sightings to the new side.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "internal/error.h"
#include "machine_int.h"

#define LATE_POLL_NS 200000ull

struct vmm_hb_sampler {
    const struct vmm_mailbox *mb;
    uint32_t nvcpus;
    uint32_t interval_us;
    pthread_t thread;
    pthread_mutex_t lock;
    int quit;
    /* under lock */
    uint64_t last_hb[VMM_MAX_VCPUS];
    uint64_t changed_ns[VMM_MAX_VCPUS];
    int seen[VMM_MAX_VCPUS];   /* last_hb holds a real sighting (gaps may be measured) */
    int moved[VMM_MAX_VCPUS];  /* changed since the reset / handoff */
    uint64_t max_gap_ns;
    uint64_t last_poll_ns;
    uint64_t late_polls;
};

/* One poll. Under s->lock. */
static void poll_locked(vmm_hb_sampler *s)
{
    uint64_t now = vmm_now_ns();
    if (s->last_poll_ns && now - s->last_poll_ns > LATE_POLL_NS)
        s->late_polls++;
    s->last_poll_ns = now;
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        uint64_t hb = __atomic_load_n(&s->mb->cpu[i].heartbeat, __ATOMIC_RELAXED);
        if (s->seen[i] && hb == s->last_hb[i])
            continue;
        if (s->seen[i]) {
            uint64_t gap = now - s->changed_ns[i];
            if (gap > s->max_gap_ns)
                s->max_gap_ns = gap;
            s->moved[i] = 1;
        }
        s->seen[i] = 1;
        s->last_hb[i] = hb;
        s->changed_ns[i] = now;
    }
}

static void *sampler_thread(void *arg)
{
    vmm_hb_sampler *s = arg;
    struct timespec ts = { 0, (long)s->interval_us * 1000 };
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* sleep 10 us, not the default 50 us slack */
    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (s->quit) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        poll_locked(s);
        pthread_mutex_unlock(&s->lock);
        nanosleep(&ts, NULL);
    }
}

int vmm_hb_sampler_new(vmm_hb_sampler **out, const void *ram, uint64_t ram_size,
                       uint32_t interval_us, cpr_error **errp)
{
    vmm_guest_stats st = { .size = sizeof(st) };
    if (vmm_guest_read_stats(ram, ram_size, &st) < 0)
        return cpr_error_set(errp, -EINVAL, "heartbeat sampler: no guest mailbox in RAM at %p", ram);
    vmm_hb_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return cpr_error_set(errp, -ENOMEM, "heartbeat sampler: out of memory");
    s->mb = ram;
    s->nvcpus = st.nvcpus;
    s->interval_us = interval_us ? interval_us : 10;
    pthread_mutex_init(&s->lock, NULL);
    int rc = pthread_create(&s->thread, NULL, sampler_thread, s);
    if (rc) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return cpr_error_set_errno(errp, -rc, "heartbeat sampler: cannot start its thread");
    }
    *out = s;
    return 0;
}

void vmm_hb_sampler_free(vmm_hb_sampler *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->quit = 1;
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void vmm_hb_sampler_reset(vmm_hb_sampler *s)
{
    pthread_mutex_lock(&s->lock);
    s->max_gap_ns = 0;
    memset(s->moved, 0, sizeof(s->moved));
    pthread_mutex_unlock(&s->lock);
}

uint64_t vmm_hb_sampler_max_gap_ns(vmm_hb_sampler *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t gap = s->max_gap_ns;
    pthread_mutex_unlock(&s->lock);
    return gap;
}

int vmm_hb_sampler_wait_pause(vmm_hb_sampler *s, uint32_t timeout_ms, uint64_t *gap_ns)
{
    uint64_t deadline = vmm_now_ns() + (uint64_t)timeout_ms * 1000000;
    struct timespec ts = { 0, 50000 };
    for (;;) {
        pthread_mutex_lock(&s->lock);
        uint32_t moved = 0;
        for (uint32_t i = 0; i < s->nvcpus; i++)
            moved += (uint32_t)s->moved[i];
        uint64_t gap = s->max_gap_ns;
        pthread_mutex_unlock(&s->lock);
        if (moved == s->nvcpus) {
            *gap_ns = gap;
            return 0;
        }
        if (vmm_now_ns() > deadline)
            return -ETIMEDOUT;
        nanosleep(&ts, NULL);
    }
}

void vmm_hb_sampler_handoff_get(vmm_hb_sampler *s, vmm_hb_handoff *h)
{
    pthread_mutex_lock(&s->lock);
    poll_locked(s);
    memset(h, 0, sizeof(*h));
    h->version = 1;
    h->nvcpus = s->nvcpus;
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        h->heartbeat[i] = s->last_hb[i];
        h->changed_ns[i] = s->changed_ns[i];
    }
    pthread_mutex_unlock(&s->lock);
}

void vmm_hb_sampler_handoff_set(vmm_hb_sampler *s, const vmm_hb_handoff *h)
{
    pthread_mutex_lock(&s->lock);
    s->max_gap_ns = 0;
    memset(s->moved, 0, sizeof(s->moved));
    for (uint32_t i = 0; i < s->nvcpus && i < h->nvcpus && h->version == 1; i++) {
        s->last_hb[i] = h->heartbeat[i];
        s->changed_ns[i] = h->changed_ns[i];
        s->seen[i] = 1;
    }
    pthread_mutex_unlock(&s->lock);
}

uint64_t vmm_hb_sampler_late_polls(vmm_hb_sampler *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t n = s->late_polls;
    pthread_mutex_unlock(&s->lock);
    return n;
}
