/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mtest.h"

static void die(const char *what)
{
    perror(what);
    abort();
}

const char *mtest_child_path(void)
{
    static char path[4096];
    const char *env = getenv("VMM_MACHINE_CHILD");
    if (env)
        return env;
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 32);
    if (n <= 0)
        return "./vmm_machine_child";
    path[n] = 0;
    char *slash = strrchr(path, '/');
    strcpy(slash ? slash + 1 : path, "vmm_machine_child");
    return path;
}

uint32_t mtest_sampler_us(void)
{
    const char *v = getenv("VMM_SAMPLER_US");
    return v && atoi(v) > 0 ? (uint32_t)atoi(v) : 10;
}

void *mtest_ram_map(int fd, uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED)
        die("mmap of guest RAM");
    return p;
}

void *mtest_ram_new(uint64_t size, int *fd)
{
    *fd = memfd_create("guest-ram", 0);
    if (*fd < 0 || ftruncate(*fd, (off_t)size) < 0)
        die("memfd for guest RAM");
    return mtest_ram_map(*fd, size);
}

int mtest_wait(const void *ram, uint64_t size, mtest_cond done, const void *arg,
               uint32_t timeout_ms, vmm_guest_stats *st)
{
    uint64_t deadline = vmm_now_ns() + (uint64_t)timeout_ms * 1000000;
    struct timespec ts = { 0, 1000000 };
    for (;;) {
        st->size = sizeof(*st);
        int ok = vmm_guest_read_stats(ram, size, st) == 0 && done(st, arg);
        if (ok || vmm_now_ns() > deadline)
            return ok;
        nanosleep(&ts, NULL);
    }
}

/* Per vCPU: the verification count that means "its whole share checked once more". */
struct verify_target {
    const struct vmm_mailbox *mb;
    uint32_t n;
    uint64_t target[VMM_MAX_VCPUS];
};

static int verified_past(const vmm_guest_stats *st, const void *arg)
{
    const struct verify_target *t = arg;
    const struct vmm_mailbox *mb = t->mb;
    if (st->pages_filled != st->pages_total)
        return 0;
    for (uint32_t i = 0; i < t->n; i++)
        if (__atomic_load_n(&mb->cpu[i].pages_verified, __ATOMIC_RELAXED) < t->target[i])
            return 0;
    return 1;
}

int mtest_wait_full_verify(const void *ram, uint64_t size, uint32_t timeout_ms, vmm_guest_stats *st)
{
    const struct vmm_mailbox *mb = ram;
    vmm_guest_stats now = { .size = sizeof(now) };
    if (vmm_guest_read_stats(ram, size, &now) < 0)
        return 0;
    struct verify_target t = { .n = now.nvcpus, .mb = mb };
    for (uint32_t i = 0; i < t.n; i++)
        t.target[i] = __atomic_load_n(&mb->cpu[i].pages_verified, __ATOMIC_RELAXED) + mb->cpu[i].npages;
    return mtest_wait(ram, size, verified_past, &t, timeout_ms, st);
}

struct mtest_handoff *mtest_capture(vmm_machine *m, vmm_hb_sampler *s, size_t *len,
                                    cpr_error **errp)
{
    uint32_t n = vmm_machine_nvcpus(m);
    struct mtest_handoff *h = calloc(1, sizeof(*h) + n * sizeof(vmm_vcpu_state));
    if (!h)
        return NULL;
    vmm_hb_sampler_reset(s);
    h->stop_begin_ns = vmm_now_ns();
    int rc = vmm_machine_stop(m, errp);
    h->stopped_ns = vmm_now_ns();
    if (rc == 0) {
        vmm_hb_sampler_handoff_get(s, &h->hb);
        rc = vmm_machine_get_vm_state(m, &h->vm, errp);
    }
    for (uint32_t i = 0; rc == 0 && i < n; i++)
        rc = vmm_machine_get_vcpu_state(m, i, &h->vcpu[i], errp);
    if (rc < 0) {
        free(h);
        return NULL;
    }
    h->captured_ns = vmm_now_ns();
    *len = sizeof(*h) + n * sizeof(vmm_vcpu_state);
    return h;
}

static int result_fail(struct mtest_result *r, int rc, const char *what, cpr_error *err)
{
    r->rc = rc < 0 ? rc : -EIO;
    snprintf(r->msg, sizeof(r->msg), "%s: %s", what, err ? cpr_error_message(err) : strerror(-rc));
    cpr_error_free(err);
    return r->rc;
}

int mtest_restore(vmm_machine *m, vmm_hb_sampler *s, const void *ram,
                  const struct mtest_handoff *h, struct mtest_result *r)
{
    cpr_error *err = NULL;
    memset(r, 0, sizeof(*r));
    snprintf(r->backend, sizeof(r->backend), "%s", vmm_machine_backend_name(m));
    uint64_t t0 = vmm_now_ns();
    vmm_hb_sampler_handoff_set(s, &h->hb);
    int rc = vmm_machine_set_vm_state(m, &h->vm, &err);
    for (uint32_t i = 0; rc == 0 && i < h->vm.nvcpus; i++)
        rc = vmm_machine_set_vcpu_state(m, i, &h->vcpu[i], &err);
    uint64_t t1 = vmm_now_ns();
    if (rc == 0)
        rc = vmm_machine_resume(m, &err);
    uint64_t t2 = vmm_now_ns();
    r->restore_ns = t1 - t0;
    r->stop_ns = h->stopped_ns - h->stop_begin_ns;
    r->capture_ns = h->captured_ns - h->stopped_ns;
    r->transfer_ns = t0 - h->captured_ns;
    r->host_ns = t2 - h->stop_begin_ns;
    for (uint32_t i = 0; i < h->hb.nvcpus; i++)
        r->hb_before += h->hb.heartbeat[i];
    if (rc < 0)
        return result_fail(r, rc, "restore", err);
    if ((rc = vmm_hb_sampler_wait_pause(s, 5000, &r->pause_ns)) < 0)
        return result_fail(r, rc, "waiting for the heartbeat after resume", NULL);
    r->late_polls = vmm_hb_sampler_late_polls(s);
    if (!mtest_wait_full_verify(ram, h->vm.ram_size, 60000, &r->after))
        return result_fail(r, -ETIMEDOUT, "waiting for a full verification pass", NULL);
    return 0;
}
