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
#include <x86intrin.h>

#include <cpr/error.h>
#include "machine_int.h"

#define LATE_POLL_NS 200000ull
/* Armed polling ends when the guest moves again, or after this long (a source whose guest now
 * runs elsewhere on other RAM never sees it move). */
#define ARMED_MAX_NS 5000000000ull

enum {
    ARM_IDLE,   /* poll every IDLE_INTERVAL_US */
    ARM_RESUME, /* handoff_set .. every vCPU moved: pin the first change after the resume */
};
/* Between switchovers the sampler only keeps an eye on the guest: polling every 10 us on a
 * 2-core host steals the CPU the vCPUs need (it stretched pauses from 0.4 to several ms). */
#define IDLE_INTERVAL_US 1000u

struct vmm_hb_sampler {
    struct vmm_mailbox *mb;
    uint64_t ram_size;
    uint32_t nvcpus;           /* 0 until the mailbox is in RAM */
    uint32_t interval_us;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;       /* wakes the poller (armed, quit) and wait_pause (all moved) */
    int quit;
    int armed;                 /* ARM_*: poll every interval_us */
    uint64_t armed_ns;         /* when it was armed */
    /* under lock */
    uint64_t last_hb[VMM_MAX_VCPUS];
    uint64_t changed_ns[VMM_MAX_VCPUS]; /* first poll that saw last_hb */
    uint64_t before_ns[VMM_MAX_VCPUS];  /* the poll before it, which still saw the old value */
    int seen[VMM_MAX_VCPUS];   /* last_hb holds a real sighting (gaps may be measured) */
    int moved[VMM_MAX_VCPUS];  /* changed since the reset / handoff */
    uint64_t max_gap_ns;
    uint64_t last_poll_ns;
    uint64_t last_poll_clk;    /* the guest's time source read as that poll began, before its
                                  heartbeat loads (0: unknown) */
    uint64_t late_polls;
    /* The guest's own measure of the pause being armed for: its pause record (struct
     * vmm_guest_gap) read when each vCPU first moved, and whether its clock checked out as the
     * one this host reads (the record ended between that poll and the one before). */
    uint64_t guest_gap_ns[VMM_MAX_VCPUS];
    int guest_ok[VMM_MAX_VCPUS];
    /* ...and when that record ended, on CLOCK_MONOTONIC (for traces: where the pause lies
     * against the two processes' steps). */
    uint64_t guest_end_ns[VMM_MAX_VCPUS];
    /* Stall recording (vmm_hb_sampler_stalls_record): each poll takes and zeroes every running
     * vCPU's pause record, the guest's worst gap since the poll before; samples in ns. */
    int stalls_on;
    int stalls_req;            /* STALLS_*: asked by stalls_record, applied under the lock */
    uint32_t *stall_ns;
    size_t nstalls, stall_cap;
    uint64_t stall_worst_ns, stall_dropped;
};

/* stalls_record() only asks (atomically): it runs on the migration's thread while this sampler
 * may be blocked under its lock on a guest page that has not arrived yet (postcopy). */
enum { STALLS_NO_CHANGE, STALLS_START, STALLS_STOP };

/* At 1 kHz, a quarter of an hour per vCPU (4 MiB); later samples are counted as dropped. */
#define STALL_MAX_SAMPLES (1u << 20)

/* How far a pause record's end may lie outside the two polls around it (reading order). */
#define CLOCK_SLACK_NS 20000ull

/* This host's reading of the guest's time source, or 0 when it is not one this host reads. */
static uint64_t guest_clock_now(const vmm_hb_sampler *s)
{
    switch (__atomic_load_n(&s->mb->hdr.clock, __ATOMIC_RELAXED)) {
    case VMM_CLOCK_TSC: {
        _mm_lfence(); /* not earlier than the loads before it */
        uint64_t t = __rdtsc();
        _mm_lfence(); /* nor later than the loads after it */
        return t;
    }
    case VMM_CLOCK_MONOTONIC:
        return vmm_now_ns();
    default:
        return 0;
    }
}

/* Under s->lock, when vCPU i first moved after a handoff_set (`seen_ns` after the last change
 * the handoff or a poll saw): keeps the guest's own record. */
static void take_guest_gap(vmm_hb_sampler *s, uint32_t i, uint64_t clk, uint64_t seen_at,
                           uint64_t seen_ns)
{
    uint64_t tpm = __atomic_load_n(&s->mb->hdr.ticks_per_ms, __ATOMIC_RELAXED);
    /* While stalls are recorded the pause is consumed here, so that it is not also a stall. */
    uint64_t gap = s->stalls_on ? __atomic_exchange_n(&s->mb->gap[i].max_gap, 0, __ATOMIC_RELAXED)
                                : __atomic_load_n(&s->mb->gap[i].max_gap, __ATOMIC_RELAXED);
    uint64_t end = __atomic_load_n(&s->mb->gap[i].gap_end, __ATOMIC_RELAXED);
    uint64_t slack = tpm * CLOCK_SLACK_NS / 1000000;
    s->guest_gap_ns[i] = tpm ? (uint64_t)((double)gap * 1e6 / (double)tpm) : 0;
    s->guest_end_ns[i] = tpm && end <= clk ? seen_at - (uint64_t)((double)(clk - end) * 1e6 / (double)tpm) : 0;
    /* The record must have ended between this poll and the one before (the guest's clock is
     * this host's), and not be longer than the host-seen bound (a clock that jumped, as across a
     * host reboot, is not). */
    s->guest_ok[i] = tpm && clk && s->last_poll_clk && gap && end <= clk + slack &&
                     end + slack >= s->last_poll_clk &&
                     s->guest_gap_ns[i] <= seen_ns + CLOCK_SLACK_NS;
}

static void stall_add_locked(vmm_hb_sampler *s, uint64_t ns)
{
    if (ns > s->stall_worst_ns)
        s->stall_worst_ns = ns;
    if (s->nstalls == s->stall_cap) {
        size_t cap = s->stall_cap ? s->stall_cap * 2 : 4096;
        uint32_t *p = cap <= STALL_MAX_SAMPLES ? realloc(s->stall_ns, cap * sizeof(*p)) : NULL;
        if (!p) {
            s->stall_dropped++;
            return;
        }
        s->stall_ns = p;
        s->stall_cap = cap;
    }
    s->stall_ns[s->nstalls++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/*
 * Under s->lock: takes each vCPU's pause record, the guest's worst gap between two iterations
 * since the last take, and zeroes it (an exchange: a gap the guest stores after it lands in the
 * next sample). The guest compares and then stores, so a gap it compared against the record just
 * taken and found smaller is lost: never the worst, which that record already holds. A vCPU that
 * has not moved since a handoff_set still holds the pause in its record: left for take_guest_gap.
 * No sample when no iteration ended since the last take (the vCPU is stalled, or stopped).
 */
static void drain_stalls_locked(vmm_hb_sampler *s)
{
    uint64_t tpm = __atomic_load_n(&s->mb->hdr.ticks_per_ms, __ATOMIC_RELAXED);
    if (!tpm || __atomic_load_n(&s->mb->hdr.version, __ATOMIC_RELAXED) < 2)
        return; /* version 1 keeps no record */
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        if (s->armed == ARM_RESUME && !s->moved[i])
            continue;
        uint64_t t = __atomic_exchange_n(&s->mb->gap[i].max_gap, 0, __ATOMIC_RELAXED);
        if (t)
            stall_add_locked(s, (uint64_t)((double)t * 1e6 / (double)tpm));
    }
}

/* Under s->lock: applies what stalls_record() asked. */
static void stalls_apply_locked(vmm_hb_sampler *s)
{
    int req = __atomic_exchange_n(&s->stalls_req, STALLS_NO_CHANGE, __ATOMIC_ACQ_REL);
    if (req == STALLS_START && !s->stalls_on) {
        s->nstalls = 0;
        s->stall_worst_ns = 0;
        s->stall_dropped = 0;
        s->stalls_on = 1;
    } else if (req == STALLS_STOP && s->stalls_on) {
        if (s->nvcpus)
            drain_stalls_locked(s); /* up to now */
        s->stalls_on = 0;
    }
}

static int all_moved_locked(const vmm_hb_sampler *s)
{
    if (s->nvcpus == 0)
        return 0;
    for (uint32_t i = 0; i < s->nvcpus; i++)
        if (!s->moved[i])
            return 0;
    return 1;
}

/* The guest's vCPU count, once its mailbox is in RAM (on a migration target, RAM arrives late). */
static uint32_t mailbox_nvcpus(const vmm_hb_sampler *s)
{
    vmm_guest_stats st = { .size = sizeof(st) };
    return vmm_guest_read_stats(s->mb, s->ram_size, &st) == 0 ? st.nvcpus : 0;
}

/*
 * Reads a byte of each mailbox page, outside s->lock: on a postcopy destination a page that has
 * not arrived blocks its reader until the fault server places it, and the lock must not be held
 * meanwhile (query-guest, on the VMM's main loop, takes it). A placed page stays, so the locked
 * poll that follows reads present pages; what is left is a page discarded between the two,
 * which only happens before the guest runs there (docs/migration.md, "Postcopy").
 */
static void touch_mailbox(const vmm_hb_sampler *s)
{
    const uint8_t *p = (const uint8_t *)s->mb;
    for (size_t off = 0; off < sizeof(struct vmm_mailbox) && off < s->ram_size; off += VMM_PAGE_SIZE)
        (void)__atomic_load_n(p + off, __ATOMIC_RELAXED);
}

/* One poll. Under s->lock. */
static void poll_locked(vmm_hb_sampler *s)
{
    stalls_apply_locked(s);
    if (s->nvcpus == 0 && (s->nvcpus = mailbox_nvcpus(s)) == 0)
        return;
    uint64_t now = vmm_now_ns();
    uint64_t prev = s->last_poll_ns ? s->last_poll_ns : now;
    uint64_t clk = 0, seen_at = now;
    int bounds_read = 0;
    /* The lower bound for a record that ends after this poll: read before the heartbeats (read
     * after them, a preemption in between put it past an end that this poll did not see). */
    uint64_t start_clk = guest_clock_now(s);
    if (s->armed && s->last_poll_ns && now - s->last_poll_ns > LATE_POLL_NS)
        s->late_polls++;
    s->last_poll_ns = now;
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        uint64_t hb = __atomic_load_n(&s->mb->cpu[i].heartbeat, __ATOMIC_ACQUIRE);
        if (s->seen[i] && hb == s->last_hb[i])
            continue;
        if (s->seen[i]) {
            /* Bounds of this move read after the load that saw it: `now` came before, and a
             * preemption in between would put the move after it and refuse a good record. */
            if (!bounds_read) {
                clk = guest_clock_now(s);
                seen_at = vmm_now_ns();
                bounds_read = 1;
            }
            uint64_t gap = seen_at - s->changed_ns[i];
            if (gap > s->max_gap_ns)
                s->max_gap_ns = gap;
            if (s->armed == ARM_RESUME && !s->moved[i])
                take_guest_gap(s, i, clk, seen_at, gap);
            s->moved[i] = 1;
        }
        s->seen[i] = 1;
        s->last_hb[i] = hb;
        s->changed_ns[i] = now;
        s->before_ns[i] = prev;
    }
    s->last_poll_clk = start_clk;
    if (s->stalls_on)
        drain_stalls_locked(s);
    if (s->armed == ARM_RESUME && all_moved_locked(s)) {
        s->armed = ARM_IDLE;
        pthread_cond_broadcast(&s->cond);
    } else if (s->armed != ARM_IDLE && now - s->armed_ns > ARMED_MAX_NS) {
        s->armed = ARM_IDLE;
    }
}

static void *sampler_thread(void *arg)
{
    vmm_hb_sampler *s = arg;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* sleep 10 us, not the default 50 us slack */
    pthread_setname_np(pthread_self(), "hb-sampler");
    pthread_mutex_lock(&s->lock);
    while (!s->quit) {
        pthread_mutex_unlock(&s->lock);
        touch_mailbox(s);
        pthread_mutex_lock(&s->lock);
        if (s->quit)
            break;
        poll_locked(s);
        uint64_t until = vmm_now_ns() + (uint64_t)(s->armed ? s->interval_us : IDLE_INTERVAL_US) * 1000;
        struct timespec ts = { (time_t)(until / 1000000000u), (long)(until % 1000000000u) };
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Under s->lock: forget the gaps; with ARM_RESUME, poll finely. */
static void arm_locked(vmm_hb_sampler *s, int mode)
{
    s->max_gap_ns = 0;
    memset(s->moved, 0, sizeof(s->moved));
    memset(s->guest_ok, 0, sizeof(s->guest_ok));
    s->armed = mode;
    s->armed_ns = vmm_now_ns();
    pthread_cond_broadcast(&s->cond);
}

int vmm_hb_sampler_new(vmm_hb_sampler **out, void *ram, uint64_t ram_size,
                       uint32_t interval_us, cpr_error **errp)
{
    if (!ram || ram_size < 2 * VMM_PAGE_SIZE)
        return cpr_error_set(errp, -EINVAL, "heartbeat sampler: no RAM (%p, %llu bytes)", ram,
                             (unsigned long long)ram_size);
    vmm_hb_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return cpr_error_set(errp, -ENOMEM, "heartbeat sampler: out of memory");
    s->mb = ram;
    s->ram_size = ram_size;
    s->nvcpus = mailbox_nvcpus(s);
    s->interval_us = interval_us ? interval_us : 10;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&s->thread, NULL, sampler_thread, s);
    if (rc) {
        pthread_cond_destroy(&s->cond);
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
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s->stall_ns);
    free(s);
}

void vmm_hb_sampler_reset(vmm_hb_sampler *s)
{
    touch_mailbox(s);
    pthread_mutex_lock(&s->lock);
    /* A poll now bounds the last change before a stop that follows from below. */
    /* No fine polling during the stop: a poller waking every 10 us next to the running vCPU made
     * kvm_pvm switch the vCPU out and in each time, and stops took milliseconds instead of
     * ~50 us. This poll, right before the stop, bounds the last change from below well enough. */
    poll_locked(s);
    arm_locked(s, ARM_IDLE);
    pthread_mutex_unlock(&s->lock);
}

/* Reads one counter of the sampler under its lock. */
static uint64_t read_locked(vmm_hb_sampler *s, const uint64_t *field)
{
    pthread_mutex_lock(&s->lock);
    uint64_t v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

uint64_t vmm_hb_sampler_max_gap_ns(vmm_hb_sampler *s)
{
    return read_locked(s, &s->max_gap_ns);
}

/* Under s->lock, every vCPU moved: the guest's own figure if its clock checked out on every
 * vCPU, else the host-seen upper bound. */
static uint64_t pause_locked(const vmm_hb_sampler *s, int *guest)
{
    uint64_t g = 0;
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        if (!s->guest_ok[i]) {
            if (guest)
                *guest = 0;
            return s->max_gap_ns;
        }
        if (s->guest_gap_ns[i] > g)
            g = s->guest_gap_ns[i];
    }
    if (guest)
        *guest = 1;
    return g;
}

int vmm_hb_sampler_last_pause(vmm_hb_sampler *s, uint64_t *guest_ns, uint64_t *seen_ns)
{
    pthread_mutex_lock(&s->lock);
    int guest = 0, moved = all_moved_locked(s);
    uint64_t g = moved ? pause_locked(s, &guest) : 0;
    if (guest_ns)
        *guest_ns = guest ? g : 0;
    if (seen_ns)
        *seen_ns = moved ? s->max_gap_ns : 0;
    pthread_mutex_unlock(&s->lock);
    return moved ? guest : -EAGAIN;
}

int vmm_hb_sampler_last_window(vmm_hb_sampler *s, uint64_t *start_ns, uint64_t *end_ns)
{
    pthread_mutex_lock(&s->lock);
    int guest = 0, moved = all_moved_locked(s);
    if (moved)
        pause_locked(s, &guest);
    uint32_t worst = 0;
    for (uint32_t i = 1; guest && i < s->nvcpus; i++)
        if (s->guest_gap_ns[i] > s->guest_gap_ns[worst])
            worst = i;
    uint64_t end = guest ? s->guest_end_ns[worst] : 0;
    *end_ns = end;
    *start_ns = end ? end - s->guest_gap_ns[worst] : 0;
    pthread_mutex_unlock(&s->lock);
    return end ? 0 : -EAGAIN;
}

int vmm_hb_sampler_wait_pause(vmm_hb_sampler *s, uint32_t timeout_ms, uint64_t *gap_ns)
{
    uint64_t deadline = vmm_now_ns() + (uint64_t)timeout_ms * 1000000;
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (!all_moved_locked(s) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    int moved = all_moved_locked(s);
    if (moved)
        *gap_ns = pause_locked(s, NULL);
    pthread_mutex_unlock(&s->lock);
    return moved ? 0 : -ETIMEDOUT;
}

void vmm_hb_sampler_handoff_get(vmm_hb_sampler *s, vmm_hb_handoff *h)
{
    touch_mailbox(s);
    pthread_mutex_lock(&s->lock);
    poll_locked(s);
    /* The guest is stopped: the next move of each vCPU ends the pause. Whoever resumes it arms
     * a sampler with handoff_set(); this one goes back to idle polling so as not to compete for
     * the CPU with the process that restores and resumes the guest. */
    memset(s->moved, 0, sizeof(s->moved));
    s->armed = ARM_IDLE;
    memset(h, 0, sizeof(*h));
    h->version = 1;
    h->nvcpus = s->nvcpus;
    /* The last change happened after before_ns and by changed_ns: hand the earlier bound over,
     * so the pause the next process measures is an upper bound (error: one poll interval). */
    for (uint32_t i = 0; i < s->nvcpus; i++) {
        h->heartbeat[i] = s->last_hb[i];
        h->changed_ns[i] = s->before_ns[i];
    }
    pthread_mutex_unlock(&s->lock);
}

void vmm_hb_sampler_handoff_set(vmm_hb_sampler *s, const vmm_hb_handoff *h)
{
    touch_mailbox(s);
    pthread_mutex_lock(&s->lock);
    arm_locked(s, ARM_RESUME);
    if (s->nvcpus == 0)
        s->nvcpus = mailbox_nvcpus(s);
    /* The guest is stopped: its first iteration after the resume records the pause (from
     * mailbox version 2 on: in version 1 those words are not the guest's). */
    int has_gap = __atomic_load_n(&s->mb->hdr.version, __ATOMIC_RELAXED) >= 2;
    for (uint32_t i = 0; has_gap && i < s->nvcpus; i++) {
        __atomic_store_n(&s->mb->gap[i].max_gap, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->mb->gap[i].gap_end, 0, __ATOMIC_RELAXED);
    }
    /* ...after now: the earliest a record may end (the first poll may come after the resume). */
    s->last_poll_clk = guest_clock_now(s);
    for (uint32_t i = 0; i < s->nvcpus && i < h->nvcpus && h->version == 1; i++) {
        s->last_hb[i] = h->heartbeat[i];
        s->changed_ns[i] = h->changed_ns[i];
        s->seen[i] = 1;
    }
    pthread_mutex_unlock(&s->lock);
}

uint64_t vmm_hb_sampler_late_polls(vmm_hb_sampler *s)
{
    return read_locked(s, &s->late_polls);
}

void vmm_hb_sampler_stalls_record(vmm_hb_sampler *s, int on)
{
    __atomic_store_n(&s->stalls_req, on ? STALLS_START : STALLS_STOP, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&s->cond); /* the next poll applies it */
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least pct% of the samples at or below it. */
static uint64_t percentile(const uint32_t *sorted, size_t n, unsigned pct)
{
    size_t rank = (n * pct + 99) / 100;
    return n ? sorted[rank ? rank - 1 : 0] : 0;
}

int vmm_hb_sampler_stalls(vmm_hb_sampler *s, vmm_stall_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    stalls_apply_locked(s);
    size_t n = s->nstalls;
    uint32_t *copy = n ? malloc(n * sizeof(*copy)) : NULL;
    if (copy)
        memcpy(copy, s->stall_ns, n * sizeof(*copy));
    out->recording = s->stalls_on;
    out->worst_ns = s->stall_worst_ns;
    out->dropped = s->stall_dropped;
    pthread_mutex_unlock(&s->lock);
    if (n && !copy)
        return -ENOMEM;
    if (n) /* qsort's base must not be NULL, even for no element */
        qsort(copy, n, sizeof(*copy), cmp_u32);
    out->samples = n;
    out->p50_ns = percentile(copy, n, 50);
    out->p99_ns = percentile(copy, n, 99);
    free(copy);
    return 0;
}
