/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mtest.h"

static void die(const char *what)
{
    perror(what);
    abort();
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
