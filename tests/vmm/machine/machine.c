/* SPDX-License-Identifier: MIT */
/*
 * The machine object: configuration, backend choice, the vCPU threads and their stop/resume
 * protocol. Backends (kvm.c, soft.c) only say how to run, kick and read one vCPU.
 *
 * A vCPU thread parks (under m->lock) whenever a stop is requested; vmm_machine_stop() returns
 * once all of them have parked, so the state read afterwards is the state they will resume from.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cpr/error.h>
#include "machine_int.h"

/* How long vCPU threads spin for the resume once a state was set (see vcpu_thread). */
#define SPIN_BEFORE_RESUME_NS 2000000ull
/* How long a stop spins for the vCPUs to park before it sleeps (see stop_locked). */
#define SPIN_FOR_PARK_NS 2000000ull

void vmm_machine_config_init(vmm_machine_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->size = sizeof(*cfg);
    cfg->accel = VMM_ACCEL_AUTO;
    cfg->nvcpus = 1;
    cfg->rate_pps = VMM_DEFAULT_RATE_PPS;
}

/*
 * One round of a spin-wait. The thread waited for may be queued on this very core: wake-ups
 * between threads and processes are placed on the waker's core, so on two cores the incoming
 * thread, the new vCPU and the old VMM's migration thread often share one. Yielding each round
 * lets it run at once instead of after our time slice (profiled: 1-2 ms lost per switchover);
 * with nothing else runnable the yield returns in about a microsecond.
 */
static void spin_round(void)
{
    __builtin_ia32_pause();
    sched_yield();
}

uint64_t vmm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *vcpu_thread(void *arg)
{
    struct vmm_vcpu *v = arg;
    vmm_machine *m = v->m;
    char name[16];
    snprintf(name, sizeof(name), "vcpu%u", v->index);
    pthread_setname_np(pthread_self(), name); /* shows in top -H, gdb and /proc */
    int rc = m->ops->vcpu_prologue ? m->ops->vcpu_prologue(v) : 0;

    pthread_mutex_lock(&m->lock);
    if (rc < 0)
        v->dead = 1;
    for (;;) {
        while ((m->stop_req || v->dead) && !m->quit) {
            if (!v->parked) {
                v->parked = 1;
                __atomic_store_n(&m->nparked, m->nparked + 1, __ATOMIC_RELEASE);
                pthread_cond_broadcast(&m->parked_cond);
            }
            if (!v->dead && vmm_now_ns() < m->spin_until_ns) {
                /* A resume is imminent (the state was just set): spin rather than sleep, so
                 * the vCPU does not wait for a futex wake-up and a core at the resume. */
                uint64_t until = m->spin_until_ns;
                pthread_mutex_unlock(&m->lock);
                while (vmm_stop_requested(m) && vmm_now_ns() < until)
                    spin_round();
                pthread_mutex_lock(&m->lock);
                continue;
            }
            pthread_cond_wait(&m->run_cond, &m->lock);
        }
        if (m->quit)
            break;
        if (v->parked) {
            v->parked = 0;
            __atomic_store_n(&m->nparked, m->nparked - 1, __ATOMIC_RELEASE);
        }
        m->ops->vcpu_unkick(v);
        int report = m->run_report;
        m->run_report = 0;
        pthread_mutex_unlock(&m->lock);
        if (report && m->cfg.on_run)
            m->cfg.on_run(m->cfg.run_opaque);
        rc = m->ops->vcpu_run(v);
        pthread_mutex_lock(&m->lock);
        if (rc < 0)
            v->dead = 1;
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* Under m->lock: the first dead vCPU's message as an error. */
static int dead_vcpu_error(vmm_machine *m, cpr_error **errp)
{
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++)
        if (m->vcpus[i].dead)
            return cpr_error_set(errp, -EIO, "vCPU %u stopped working: %s", i, m->vcpus[i].err);
    return 0;
}

/* Asks every vCPU to park and waits until all have. Under m->lock. */
static void stop_locked(vmm_machine *m)
{
    if (!m->stop_req) {
        __atomic_store_n(&m->stop_req, 1, __ATOMIC_RELEASE);
        for (uint32_t i = 0; i < m->cfg.nvcpus; i++)
            if (m->vcpus[i].started)
                m->ops->vcpu_kick(&m->vcpus[i]);
    }
    /* A kicked vCPU parks within a few hundred microseconds: wait for that spinning, without
     * the lock, rather than be woken by it (a cross-CPU wake-up costs ~0.1 ms here). */
    uint64_t until = vmm_now_ns() + SPIN_FOR_PARK_NS;
    while (m->nparked < m->nstarted && vmm_now_ns() < until) {
        uint32_t want = m->nstarted;
        pthread_mutex_unlock(&m->lock);
        while (__atomic_load_n(&m->nparked, __ATOMIC_ACQUIRE) < want && vmm_now_ns() < until)
            spin_round();
        pthread_mutex_lock(&m->lock);
    }
    while (m->nparked < m->nstarted)
        pthread_cond_wait(&m->parked_cond, &m->lock);
}

static int check_config(const vmm_machine_config *cfg, cpr_error **errp)
{
    if (!cfg || cfg->size < sizeof(*cfg))
        return cpr_error_set(errp, -EINVAL, "machine config: missing or too small (size %u)",
                             cfg ? cfg->size : 0);
    if (cfg->accel > VMM_ACCEL_SOFT)
        return cpr_error_set(errp, -EINVAL, "machine config: unknown accel %u", cfg->accel);
    if (cfg->nvcpus < 1 || cfg->nvcpus > VMM_MAX_VCPUS)
        return cpr_error_set(errp, -EINVAL, "machine config: %u vCPUs, expected 1..%u",
                             cfg->nvcpus, VMM_MAX_VCPUS);
    if (!cfg->ram || ((uintptr_t)cfg->ram % VMM_PAGE_SIZE) != 0)
        return cpr_error_set(errp, -EINVAL, "machine config: RAM pointer %p not page aligned",
                             cfg->ram);
    if (cfg->ram_size < (2u << 20) || cfg->ram_size % (2u << 20) != 0 ||
        cfg->ram_size > (256ull << 30))
        return cpr_error_set(errp, -EINVAL,
                             "machine config: RAM size %llu is not a multiple of 2 MiB in 2 MiB..256 GiB",
                             (unsigned long long)cfg->ram_size);
    if (cfg->flags & ~VMM_MACHINE_INCOMING)
        return cpr_error_set(errp, -EINVAL, "machine config: unknown flags 0x%x", cfg->flags);
    if (cfg->mailbox_version &&
        (cfg->mailbox_version < VMM_MAILBOX_VERSION_MIN || cfg->mailbox_version > VMM_MAILBOX_VERSION))
        return cpr_error_set(errp, -EINVAL, "machine config: mailbox version %u, expected %u..%u",
                             cfg->mailbox_version, VMM_MAILBOX_VERSION_MIN, VMM_MAILBOX_VERSION);
    if (cfg->compress_pct > 100)
        return cpr_error_set(errp, -EINVAL, "machine config: compressibility %u%%, expected 0..100",
                             cfg->compress_pct);
    if (cfg->compress_pct && cfg->mailbox_version && cfg->mailbox_version < 3)
        return cpr_error_set(errp, -EINVAL, "machine config: compressibility %u%% needs mailbox version 3, "
                             "this machine boots version %u", cfg->compress_pct, cfg->mailbox_version);
    return 0;
}

void vmm_cpu_mask_to_set(uint64_t mask, cpu_set_t *set)
{
    CPU_ZERO(set);
    for (int c = 0; c < 64; c++)
        if (mask >> c & 1)
            CPU_SET(c, set);
}

/* The vCPU threads' attributes: pinned to cfg.vcpu_cpus from their first instruction on. */
static int vcpu_thread_attr(vmm_machine *m, pthread_attr_t *attr, cpr_error **errp)
{
    pthread_attr_init(attr);
    if (!m->cfg.vcpu_cpus)
        return 0;
    cpu_set_t set;
    vmm_cpu_mask_to_set(m->cfg.vcpu_cpus, &set);
    int rc = pthread_attr_setaffinity_np(attr, sizeof(set), &set);
    if (rc) {
        pthread_attr_destroy(attr);
        return cpr_error_set_errno(errp, -rc, "vCPU affinity 0x%llx", (unsigned long long)m->cfg.vcpu_cpus);
    }
    return 0;
}

static int start_threads(vmm_machine *m, cpr_error **errp)
{
    pthread_attr_t attr;
    int rc = vcpu_thread_attr(m, &attr, errp);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++) {
        struct vmm_vcpu *v = &m->vcpus[i];
        rc = pthread_create(&v->thread, &attr, vcpu_thread, v);
        if (rc) {
            pthread_attr_destroy(&attr);
            if (rc == EINVAL && m->cfg.vcpu_cpus)
                return cpr_error_set_errno(errp, -rc, "vCPU %u: cannot start its thread on host CPUs 0x%llx "
                                           "(none of them online or allowed?)", i,
                                           (unsigned long long)m->cfg.vcpu_cpus);
            return cpr_error_set_errno(errp, -rc, "vCPU %u: cannot start its thread", i);
        }
        v->started = 1;
        pthread_mutex_lock(&m->lock);
        m->nstarted++;
        pthread_mutex_unlock(&m->lock);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&m->lock);
    stop_locked(m); /* waits for every prologue (warm-up) */
    rc = dead_vcpu_error(m, errp);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static vmm_machine *machine_alloc(const vmm_machine_config *cfg)
{
    vmm_machine *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    memcpy(&m->cfg, cfg, sizeof(m->cfg));
    m->cfg.size = sizeof(m->cfg);
    m->stop_req = 1; /* created stopped */
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->run_cond, NULL);
    pthread_cond_init(&m->parked_cond, NULL);
    for (uint32_t i = 0; i < cfg->nvcpus; i++) {
        m->vcpus[i].m = m;
        m->vcpus[i].index = i;
    }
    return m;
}

int vmm_machine_new(vmm_machine **out, const vmm_machine_config *cfg, cpr_error **errp)
{
    int rc = check_config(cfg, errp);
    if (rc < 0)
        return rc;
    vmm_machine *m = machine_alloc(cfg);
    if (!m)
        return cpr_error_set(errp, -ENOMEM, "machine: out of memory");

    cpr_error *kvm_err = NULL;
    m->ops = &vmm_kvm_ops;
    if (cfg->accel == VMM_ACCEL_SOFT || (rc = m->ops->init(m, &kvm_err)) < 0) {
        if (cfg->accel == VMM_ACCEL_KVM) {
            vmm_machine_free(m);
            return cpr_error_propagate(errp, kvm_err);
        }
        if (kvm_err)
            snprintf(m->note, sizeof(m->note), "KVM unusable: %s", cpr_error_message(kvm_err));
        else
            snprintf(m->note, sizeof(m->note), "software backend requested");
        cpr_error_free(kvm_err);
        m->ops = &vmm_soft_ops;
        rc = m->ops->init(m, errp);
        if (rc < 0) {
            m->ops = NULL;
            vmm_machine_free(m);
            return rc;
        }
    }
    rc = start_threads(m, errp);
    if (rc < 0) {
        vmm_machine_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void vmm_machine_free(vmm_machine *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    if (m->ops)
        stop_locked(m);
    m->quit = 1;
    pthread_cond_broadcast(&m->run_cond);
    pthread_mutex_unlock(&m->lock);
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++)
        if (m->vcpus[i].started)
            pthread_join(m->vcpus[i].thread, NULL);
    if (m->ops)
        m->ops->fini(m);
    pthread_cond_destroy(&m->parked_cond);
    pthread_cond_destroy(&m->run_cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

uint32_t vmm_machine_backend(const vmm_machine *m)
{
    return m->ops->id;
}

const char *vmm_machine_backend_name(const vmm_machine *m)
{
    return m->ops->name;
}

const char *vmm_machine_backend_note(const vmm_machine *m)
{
    return m->note;
}

uint32_t vmm_machine_nvcpus(const vmm_machine *m)
{
    return m->cfg.nvcpus;
}

int vmm_machine_boot(vmm_machine *m, cpr_error **errp)
{
    if (m->cfg.flags & VMM_MACHINE_INCOMING)
        return cpr_error_set(errp, -EBUSY, "machine: an incoming machine is not booted, it resumes");
    if (m->booted)
        return cpr_error_set(errp, -EBUSY, "machine: already booted");
    vmm_mailbox_init(m->cfg.ram, m->cfg.ram_size, m->cfg.nvcpus, m->cfg.rate_pps, m->ticks_per_ms,
                     m->clock, m->cfg.mailbox_version ? m->cfg.mailbox_version : VMM_MAILBOX_VERSION,
                     m->cfg.compress_pct);
    int rc = m->ops->boot(m, errp);
    if (rc < 0)
        return rc;
    m->booted = 1;
    return vmm_machine_resume(m, errp);
}

int vmm_machine_stop(vmm_machine *m, cpr_error **errp)
{
    pthread_mutex_lock(&m->lock);
    stop_locked(m);
    int rc = dead_vcpu_error(m, errp);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* The checks of a resume, under m->lock. */
static int check_resume_locked(vmm_machine *m, cpr_error **errp)
{
    char why[200];
    if (!m->booted)
        return cpr_error_set(errp, -EINVAL, "machine: nothing to resume: boot it or restore a state");
    int version = vmm_mailbox_check(m->cfg.ram, m->cfg.ram_size, m->cfg.nvcpus, m->cfg.mailbox_version,
                                    why, sizeof(why));
    if (version < 0)
        return cpr_error_set(errp, -EINVAL, "machine: cannot resume: %s", why);
    /* The guest runs on with the code it booted with (a restored guest's registers point into
     * it); the vCPUs are parked, so the code can change under them. */
    if ((uint32_t)version != m->guest_version && m->ops->guest_code)
        m->ops->guest_code(m, (uint32_t)version);
    __atomic_store_n(&m->guest_version, (uint32_t)version, __ATOMIC_RELEASE);
    return dead_vcpu_error(m, errp);
}

int vmm_machine_check_resume(vmm_machine *m, cpr_error **errp)
{
    pthread_mutex_lock(&m->lock);
    int rc = check_resume_locked(m, errp);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int vmm_machine_resume(vmm_machine *m, cpr_error **errp)
{
    pthread_mutex_lock(&m->lock);
    int rc = check_resume_locked(m, errp);
    if (rc == 0) {
        __atomic_store_n(&m->stop_req, 0, __ATOMIC_RELEASE);
        m->run_report = 1;
        pthread_cond_broadcast(&m->run_cond);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int vmm_machine_wait_entered(vmm_machine *m, uint64_t max_ns)
{
    uint64_t until = vmm_now_ns() + max_ns;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        int taken = !m->run_report, ndead = 0;
        for (uint32_t i = 0; i < m->cfg.nvcpus; i++)
            ndead += m->vcpus[i].dead;
        pthread_mutex_unlock(&m->lock);
        if (taken || ndead == (int)m->cfg.nvcpus || vmm_now_ns() >= until)
            return taken;
        spin_round(); /* a vCPU queued on this core runs now */
    }
}

uint32_t vmm_machine_guest_version(const vmm_machine *m)
{
    return __atomic_load_n(&m->guest_version, __ATOMIC_ACQUIRE); /* stats readers: any thread */
}

int vmm_machine_running(const vmm_machine *m)
{
    return !__atomic_load_n(&m->stop_req, __ATOMIC_ACQUIRE);
}

void vmm_machine_set_rate(vmm_machine *m, uint64_t rate_pps)
{
    m->cfg.rate_pps = rate_pps;
    vmm_mailbox_set_rate(m->cfg.ram, m->cfg.nvcpus, rate_pps);
}

/* State calls need parked vCPUs and a vCPU index in range. */
static int check_stopped(vmm_machine *m, uint32_t cpu, const char *what, cpr_error **errp)
{
    if (cpu >= m->cfg.nvcpus)
        return cpr_error_set(errp, -EINVAL, "%s: no vCPU %u (machine has %u)", what, cpu,
                             m->cfg.nvcpus);
    pthread_mutex_lock(&m->lock);
    int stopped = m->stop_req && m->nparked == m->cfg.nvcpus;
    pthread_mutex_unlock(&m->lock);
    if (!stopped)
        return cpr_error_set(errp, -EBUSY, "%s: the machine is running; stop it first", what);
    return 0;
}

int vmm_machine_get_vcpu_state(vmm_machine *m, uint32_t cpu, vmm_vcpu_state *st, cpr_error **errp)
{
    int rc = check_stopped(m, cpu, "get vCPU state", errp);
    return rc < 0 ? rc : m->ops->get_vcpu(m, cpu, st, errp);
}

int vmm_machine_set_vcpu_state(vmm_machine *m, uint32_t cpu, const vmm_vcpu_state *st,
                               cpr_error **errp)
{
    int rc = check_stopped(m, cpu, "set vCPU state", errp);
    if (rc < 0)
        return rc;
    if (st->version > VMM_VCPU_STATE_VERSION || st->size != sizeof(*st))
        return cpr_error_set(errp, -EINVAL,
                             "vCPU %u state: version %u size %u, this machine reads version %u size %zu",
                             cpu, st->version, st->size, VMM_VCPU_STATE_VERSION, sizeof(*st));
    if (st->backend != m->ops->id)
        return cpr_error_set(errp, -EINVAL, "vCPU %u state: saved by backend %u, this machine is %s",
                             cpu, st->backend, m->ops->name);
    if (st->cpu != cpu)
        return cpr_error_set(errp, -EINVAL, "vCPU %u state: it is the state of vCPU %u", cpu, st->cpu);
    rc = m->ops->set_vcpu(m, cpu, st, errp);
    if (rc == 0) {
        m->booted = 1;
        pthread_mutex_lock(&m->lock);
        m->spin_until_ns = vmm_now_ns() + SPIN_BEFORE_RESUME_NS;
        pthread_cond_broadcast(&m->run_cond);
        pthread_mutex_unlock(&m->lock);
    }
    return rc;
}

int vmm_machine_get_vm_state(vmm_machine *m, vmm_vm_state *st, cpr_error **errp)
{
    int rc = check_stopped(m, 0, "get VM state", errp);
    if (rc < 0)
        return rc;
    vmm_vm_state s = {
        .version = VMM_VM_STATE_VERSION, .size = sizeof(s), .backend = m->ops->id,
        .nvcpus = m->cfg.nvcpus, .ram_size = m->cfg.ram_size,
    };
    rc = m->ops->get_vm(m, &s, errp);
    if (rc == 0)
        *st = s;
    return rc;
}

int vmm_machine_set_vm_state(vmm_machine *m, const vmm_vm_state *st, cpr_error **errp)
{
    int rc = check_stopped(m, 0, "set VM state", errp);
    if (rc < 0)
        return rc;
    if (st->version > VMM_VM_STATE_VERSION || st->size != sizeof(*st))
        return cpr_error_set(errp, -EINVAL, "VM state: version %u size %u, this machine reads version %u size %zu",
                             st->version, st->size, VMM_VM_STATE_VERSION, sizeof(*st));
    if (st->backend != m->ops->id)
        return cpr_error_set(errp, -EINVAL, "VM state: saved by backend %u, this machine is %s",
                             st->backend, m->ops->name);
    if (st->nvcpus != m->cfg.nvcpus)
        return cpr_error_set(errp, -EINVAL, "VM state: saved with %u vCPUs, this machine has %u",
                             st->nvcpus, m->cfg.nvcpus);
    if (st->ram_size != m->cfg.ram_size)
        return cpr_error_set(errp, -EINVAL, "VM state: saved with %llu bytes of RAM, this machine has %llu",
                             (unsigned long long)st->ram_size, (unsigned long long)m->cfg.ram_size);
    /* The guest's RAM is in place by now (kept, or loaded before the devices): a guest this
     * machine cannot run is refused while the load can still fail, not at the resume. */
    char why[200];
    if (vmm_mailbox_check(m->cfg.ram, m->cfg.ram_size, m->cfg.nvcpus, m->cfg.mailbox_version, why,
                          sizeof(why)) < 0)
        return cpr_error_set(errp, -EINVAL, "VM state: %s", why);
    return m->ops->set_vm(m, st, errp);
}

uint32_t vmm_machine_msrs_skipped(const vmm_machine *m)
{
    return m->msrs_skipped;
}

int vmm_machine_dirty_log_start(vmm_machine *m, cpr_error **errp)
{
    int rc = m->dirty_on ? 0 : m->ops->dirty_log(m, 1, errp);
    if (rc == 0)
        m->dirty_on = 1;
    return rc;
}

int vmm_machine_dirty_log_stop(vmm_machine *m, cpr_error **errp)
{
    int rc = m->dirty_on ? m->ops->dirty_log(m, 0, errp) : 0;
    if (rc == 0)
        m->dirty_on = 0;
    return rc;
}

int vmm_machine_dirty_log_sync(vmm_machine *m, uint64_t *bitmap, size_t nwords, cpr_error **errp)
{
    uint64_t pages = m->cfg.ram_size / VMM_PAGE_SIZE;
    if (!m->dirty_on)
        return cpr_error_set(errp, -ENOENT, "dirty log: logging is off");
    if (!bitmap || nwords < (pages + 63) / 64)
        return cpr_error_set(errp, -EINVAL, "dirty log: bitmap of %zu words, %llu pages need %llu",
                             nwords, (unsigned long long)pages, (unsigned long long)((pages + 63) / 64));
    return m->ops->dirty_sync(m, bitmap, nwords, errp);
}

int vmm_machine_get_stats(const vmm_machine *m, vmm_guest_stats *st)
{
    int rc = vmm_guest_read_stats(m->cfg.ram, m->cfg.ram_size, st);
    if (rc < 0)
        return rc;
    st->io_reports = st->io_corruptions = 0;
    for (uint32_t i = 0; i < m->cfg.nvcpus; i++) {
        st->io_reports += __atomic_load_n(&m->vcpus[i].io_reports, __ATOMIC_RELAXED);
        st->io_corruptions += __atomic_load_n(&m->vcpus[i].io_corruptions, __ATOMIC_RELAXED);
    }
    return 0;
}

int vmm_bitmap_merge(uint64_t *dst, const uint64_t *src, size_t nwords)
{
    int added = 0;
    for (size_t i = 0; i < nwords; i++) {
        added += __builtin_popcountll(src[i] & ~dst[i]);
        dst[i] |= src[i];
    }
    return added;
}
