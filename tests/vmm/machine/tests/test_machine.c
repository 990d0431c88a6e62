/* SPDX-License-Identifier: MIT */
/*
 * The machine core on one backend (TEST_ACCEL: built once for KVM, once for software): the guest
 * boots and verifies its RAM, corruption is caught, stop/resume, state capture and restore into
 * a second machine (same process, and a new process over the inherited memfd), dirty logging.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "machine_int.h"
#include "mtest.h"

#define MiB (1ull << 20)

struct booted {
    vmm_machine *m;
    void *ram;
    uint64_t size;
    int fd;
};

static int filled(const vmm_guest_stats *st, const void *arg)
{
    return st->pages_filled == st->pages_total && st->pages_verified > 0;
}

static uint64_t count_bits(const uint64_t *bm, uint64_t nwords)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < nwords; i++)
        n += (uint64_t)__builtin_popcountll(bm[i]);
    return n;
}

static int corrupted(const vmm_guest_stats *st, const void *arg)
{
    return st->corruptions > 0;
}

static int heartbeat_past(const vmm_guest_stats *st, const void *arg)
{
    return st->heartbeat > *(const uint64_t *)arg;
}

static int rewrote_past(const vmm_guest_stats *st, const void *arg)
{
    return st->rewrites >= *(const uint64_t *)arg;
}

static int rewrote_all(const vmm_guest_stats *st, const void *arg)
{
    return st->rewrites > st->pages_total + 8;
}

/* Boots a guest of mailbox `version` (0: the newest) whose pages are `compress_pct` compressible. */
static void boot_compressible(struct booted *b, uint64_t size, uint32_t nvcpus, uint64_t rate, uint32_t version,
                              uint32_t compress_pct)
{
    vmm_machine_config cfg;
    vmm_machine_config_init(&cfg);
    cfg.accel = TEST_ACCEL;
    cfg.mailbox_version = version;
    cfg.compress_pct = compress_pct;
    cfg.nvcpus = nvcpus;
    cfg.rate_pps = rate;
    b->size = cfg.ram_size = size;
    b->ram = cfg.ram = mtest_ram_new(size, &b->fd);
    cpr_error *err = NULL;
    int rc = vmm_machine_new(&b->m, &cfg, &err);
    ck_assert_msg(rc == 0, "new: %s", err ? cpr_error_message(err) : "?");
    ck_assert_uint_eq(vmm_machine_backend(b->m), TEST_ACCEL);
    rc = vmm_machine_boot(b->m, &err);
    ck_assert_msg(rc == 0, "boot: %s", err ? cpr_error_message(err) : "?");
    vmm_guest_stats st;
    ck_assert_msg(mtest_wait(b->ram, size, filled, NULL, 30000, &st),
                  "guest did not fill its RAM: %llu of %llu pages", (unsigned long long)st.pages_filled,
                  (unsigned long long)st.pages_total);
}

static void boot_version(struct booted *b, uint64_t size, uint32_t nvcpus, uint64_t rate, uint32_t version)
{
    boot_compressible(b, size, nvcpus, rate, version, 0);
}

static void boot(struct booted *b, uint64_t size, uint32_t nvcpus, uint64_t rate)
{
    boot_version(b, size, nvcpus, rate, 0);
}

/* The config of a machine that takes over the guest in `ram` (another mapping of its memfd). */
static void incoming_config(vmm_machine_config *cfg, void *ram, uint64_t size, uint32_t nvcpus)
{
    vmm_machine_config_init(cfg);
    cfg->accel = TEST_ACCEL;
    cfg->nvcpus = nvcpus;
    cfg->flags = VMM_MACHINE_INCOMING;
    cfg->ram = ram;
    cfg->ram_size = size;
}

static void unboot(struct booted *b)
{
    vmm_machine_free(b->m);
    munmap(b->ram, b->size);
    close(b->fd);
}

static vmm_guest_stats stats(struct booted *b)
{
    vmm_guest_stats st = { .size = sizeof(st) };
    ck_assert_int_eq(vmm_machine_get_stats(b->m, &st), 0);
    return st;
}

static void stop(vmm_machine *m)
{
    cpr_error *err = NULL;
    int rc = vmm_machine_stop(m, &err);
    ck_assert_msg(rc == 0, "stop: %s", err ? cpr_error_message(err) : "?");
}

static void resume(vmm_machine *m)
{
    cpr_error *err = NULL;
    int rc = vmm_machine_resume(m, &err);
    ck_assert_msg(rc == 0, "resume: %s", err ? cpr_error_message(err) : "?");
}

static void sleep_ms(unsigned ms)
{
    usleep(ms * 1000);
}

static void check_boot(uint32_t nvcpus)
{
    struct booted b;
    boot(&b, 64 * MiB, nvcpus, VMM_DEFAULT_RATE_PPS);
    vmm_guest_stats a = stats(&b);
    ck_assert_uint_eq(a.nvcpus, nvcpus);
    ck_assert_uint_eq(a.pages_total, 64 * MiB / 4096 - 1);
    vmm_guest_stats st;
    ck_assert(mtest_wait_full_verify(b.ram, b.size, 30000, &st));
    ck_assert_uint_ge(st.verify_passes, 1);
    ck_assert_uint_gt(st.heartbeat, a.heartbeat);
    ck_assert_uint_eq(st.pages_filled, st.pages_total);
    ck_assert_uint_eq(st.corruptions, 0);
    stop(b.m);
    uint64_t first_bad;
    ck_assert_int_eq(vmm_guest_verify_ram(b.ram, b.size, &first_bad), 0);
    printf("%s, %u vCPU(s): %llu pages filled, %llu verified, %llu rewritten, %llu I/O reports\n",
           vmm_machine_backend_name(b.m), nvcpus, (unsigned long long)st.pages_filled,
           (unsigned long long)st.pages_verified, (unsigned long long)st.rewrites,
           (unsigned long long)stats(&b).io_reports);
    unboot(&b);
}

START_TEST(test_guest_fills_and_verifies_every_page_without_corruption)
{
    check_boot(1);
}
END_TEST

START_TEST(test_smp_guest_shares_pages_between_vcpus)
{
    check_boot(3);
}
END_TEST

START_TEST(test_stopped_guest_heartbeat_stands_still_until_resume)
{
    struct booted b;
    boot(&b, 16 * MiB, 2, VMM_DEFAULT_RATE_PPS);
    stop(b.m);
    ck_assert_int_eq(vmm_machine_running(b.m), 0);
    uint64_t hb = stats(&b).heartbeat;
    sleep_ms(30);
    ck_assert_uint_eq(stats(&b).heartbeat, hb);
    stop(b.m); /* idempotent */
    resume(b.m);
    ck_assert_int_eq(vmm_machine_running(b.m), 1);
    vmm_guest_stats st;
    ck_assert(mtest_wait(b.ram, b.size, heartbeat_past, &hb, 5000, &st));
    ck_assert_uint_eq(st.corruptions, 0);
    unboot(&b);
}
END_TEST

START_TEST(test_stop_works_when_the_vmm_blocks_all_signals)
{
    /* A VMM may block every signal in its threads (signalfd); vCPU threads inherit the mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    struct booted b;
    boot(&b, 16 * MiB, 2, VMM_DEFAULT_RATE_PPS);
    if (TEST_ACCEL == VMM_ACCEL_KVM) {
        /* Every thread but this one is a vCPU thread: each must take the kick signal. */
        int kick = SIGRTMIN + 3, checked = 0;
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || atoi(e->d_name) == (int)gettid())
                continue;
            char path[300], line[256];
            snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
            FILE *f = fopen(path, "r");
            unsigned long long blocked = ~0ull;
            while (f && fgets(line, sizeof(line), f))
                sscanf(line, "SigBlk: %llx", &blocked);
            if (f)
                fclose(f);
            snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
            f = fopen(path, "r");
            if (!f || !fgets(line, sizeof(line), f) || strncmp(line, "vcpu", 4) != 0) {
                if (f)
                    fclose(f);
                continue; /* not ours (check's timer thread) */
            }
            fclose(f);
            ck_assert_msg(!(blocked & (1ull << (kick - 1))), "vCPU thread %s blocks the kick signal",
                          e->d_name);
            checked++;
        }
        closedir(d);
        ck_assert_int_eq(checked, 2);
    }
    for (int i = 0; i < 3; i++) {
        stop(b.m);
        uint64_t hb = stats(&b).heartbeat;
        vmm_guest_stats st;
        resume(b.m);
        ck_assert(mtest_wait(b.ram, b.size, heartbeat_past, &hb, 5000, &st));
    }
    unboot(&b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
END_TEST

/* Damages data page `pfn` with the guest stopped and rewrites off, and expects the guest to see it. */
static int reported_through_port(const vmm_guest_stats *st, const void *arg)
{
    return TEST_ACCEL == VMM_ACCEL_SOFT || st->io_corruptions > 0;
}

static void expect_caught(struct booted *b, uint64_t pfn)
{
    vmm_guest_stats st;
    ck_assert_int_eq(vmm_guest_verify_ram(b->ram, b->size, NULL), 1);
    vmm_guest_stats before = stats(b);
    resume(b->m);
    const struct vmm_mailbox *mb = b->ram;
    ck_assert_msg(mtest_wait(b->ram, b->size, corrupted, NULL, 10000, &st),
                  "corruption of page %llu not caught: heartbeat %llu -> %llu, verified %llu -> %llu, "
                  "rewrites %llu -> %llu, rw_idx %llu rw_gen %llu",
                  (unsigned long long)pfn, (unsigned long long)before.heartbeat,
                  (unsigned long long)st.heartbeat, (unsigned long long)before.pages_verified,
                  (unsigned long long)st.pages_verified, (unsigned long long)before.rewrites,
                  (unsigned long long)st.rewrites, (unsigned long long)mb->cpu[0].rw_idx,
                  (unsigned long long)mb->cpu[0].rw_gen);
    ck_assert_uint_eq(st.bad_pfn, pfn + 1);
    /* KVM: the guest also says so through its I/O port within a report period (5 ms). */
    uint64_t deadline = vmm_now_ns() + 2000000000ull;
    while (!reported_through_port(&st, NULL) && vmm_now_ns() < deadline) {
        sleep_ms(1);
        ck_assert_int_eq(vmm_machine_get_stats(b->m, &st), 0);
    }
    ck_assert_msg(reported_through_port(&st, NULL), "corruption not reported through the port");
}

START_TEST(test_flipped_word_counts_as_corruption)
{
    struct booted b;
    boot(&b, 16 * MiB, 1, 0);
    stop(b.m);
    uint64_t pfn = 100;
    ((uint64_t *)((char *)b.ram + pfn * 4096))[37] ^= 1ull << 20;
    expect_caught(&b, pfn);
    unboot(&b);
}
END_TEST

START_TEST(test_zeroed_page_counts_as_corruption)
{
    struct booted b;
    boot(&b, 16 * MiB, 2, 0);
    stop(b.m);
    uint64_t pfn = b.size / 4096 - 1; /* the last page: the second vCPU's share */
    memset((char *)b.ram + pfn * 4096, 0, 4096);
    expect_caught(&b, pfn);
    unboot(&b);
}
END_TEST

/* Once the guest rewrote every page, stops its rewrites and then the guest. */
static void stop_after_a_rewrite_pass(struct booted *b)
{
    vmm_guest_stats st;
    ck_assert(mtest_wait(b->ram, b->size, rewrote_all, NULL, 30000, &st));
    /* Rate 0 takes effect at the guest's next loop iteration: wait for two heartbeats. */
    vmm_machine_set_rate(b->m, 0);
    uint64_t hb = stats(b).heartbeat;
    while (stats(b).heartbeat < hb + 2)
        sleep_ms(1);
    stop(b->m);
}

START_TEST(test_stale_generation_counts_as_corruption)
{
    struct booted b;
    boot(&b, 4 * MiB, 1, 200000);
    stop_after_a_rewrite_pass(&b);
    ck_assert_int_eq(vmm_guest_verify_ram(b.ram, b.size, NULL), 0);
    /* The page after the rewrite cursor holds generation rw_gen - 1 >= 2: put back the one
     * before it, self-consistent but old, as a migration that lost a dirty page would. */
    const struct vmm_mailbox *mb = b.ram;
    uint64_t idx = (mb->cpu[0].rw_idx + 1) % mb->cpu[0].npages, pfn = mb->cpu[0].first_pfn + idx;
    ck_assert_uint_ge(mb->cpu[0].rw_gen - 1, 2);
    vmm_guest_write_page(b.ram, pfn, mb->cpu[0].rw_gen - 2);
    expect_caught(&b, pfn);
    unboot(&b);
}
END_TEST

START_TEST(test_compressible_guest_repeats_words_and_verifies_them)
{
    struct booted b;
    boot_compressible(&b, 4 * MiB, 1, 200000, 0, 90);
    const struct vmm_mailbox *mb = b.ram;
    ck_assert_uint_eq(mb->hdr.repeat_words, 460); /* 90 % of 512 words */
    /* Boot fill and rewrites both write the format; the guest verifies it as it goes. */
    stop_after_a_rewrite_pass(&b);
    ck_assert_uint_eq(stats(&b).corruptions, 0);
    ck_assert_int_eq(vmm_guest_verify_ram(b.ram, b.size, NULL), 0);
    /* A page away from the rewrite cursor (host-side verification skips that one). */
    uint64_t pfn = mb->cpu[0].first_pfn + (mb->cpu[0].rw_idx + 500) % mb->cpu[0].npages;
    const uint64_t *w = (const uint64_t *)((const char *)b.ram + pfn * 4096);
    for (unsigned i = 53; i < 512; i++)
        ck_assert_uint_eq(w[i], w[52]);
    ck_assert_uint_ne(w[52], w[51]);
    ck_assert_uint_ne(w[51], w[50]);
    /* A word of the repeated tail is checked like any other. */
    ((uint64_t *)w)[500] ^= 1;
    expect_caught(&b, pfn);
    unboot(&b);
}
END_TEST

START_TEST(test_compressibility_is_refused_where_it_cannot_hold)
{
    vmm_machine_config cfg;
    size_t size = 4 * MiB;
    int fd;
    vmm_machine *m = NULL;
    cpr_error *err = NULL;
    vmm_machine_config_init(&cfg);
    cfg.accel = TEST_ACCEL;
    cfg.ram_size = size;
    cfg.ram = mtest_ram_new(size, &fd);
    cfg.compress_pct = 101;
    ck_assert_int_eq(vmm_machine_new(&m, &cfg, &err), -EINVAL);
    ck_assert_msg(strstr(cpr_error_message(err), "compressibility 101%"), "%s", cpr_error_message(err));
    cpr_error_free(err);
    err = NULL;
    /* Release 1.1's guest (mailbox 2) has no repeated words: it would not verify them. */
    cfg.compress_pct = 50;
    cfg.mailbox_version = 2;
    ck_assert_int_eq(vmm_machine_new(&m, &cfg, &err), -EINVAL);
    ck_assert_msg(strstr(cpr_error_message(err), "needs mailbox version 3"), "%s", cpr_error_message(err));
    cpr_error_free(err);
    munmap(cfg.ram, size);
    close(fd);
}
END_TEST

START_TEST(test_state_calls_refuse_a_running_machine)
{
    struct booted b;
    boot(&b, 16 * MiB, 1, 0);
    vmm_vcpu_state *st = calloc(1, sizeof(*st));
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_machine_get_vcpu_state(b.m, 0, st, &err), -EBUSY);
    ck_assert(strstr(cpr_error_message(err), "running") != NULL);
    cpr_error_free(err);
    err = NULL;
    stop(b.m);
    ck_assert_int_eq(vmm_machine_get_vcpu_state(b.m, 1, st, &err), -EINVAL);
    cpr_error_free(err);
    err = NULL;
    ck_assert_int_eq(vmm_machine_get_vcpu_state(b.m, 0, st, &err), 0);
    ck_assert_uint_eq(st->backend, TEST_ACCEL);
    st->version = VMM_VCPU_STATE_VERSION + 1;
    ck_assert_int_eq(vmm_machine_set_vcpu_state(b.m, 0, st, &err), -EINVAL);
    ck_assert(strstr(cpr_error_message(err), "version") != NULL);
    cpr_error_free(err);
    err = NULL;
    st->version = VMM_VCPU_STATE_VERSION;
    st->cpu = 1;
    ck_assert_int_eq(vmm_machine_set_vcpu_state(b.m, 0, st, &err), -EINVAL);
    ck_assert(strstr(cpr_error_message(err), "state of vCPU 1") != NULL);
    cpr_error_free(err);
    err = NULL;
    st->cpu = 0;
    st->backend = TEST_ACCEL == VMM_ACCEL_KVM ? VMM_ACCEL_SOFT : VMM_ACCEL_KVM;
    ck_assert_int_eq(vmm_machine_set_vcpu_state(b.m, 0, st, &err), -EINVAL);
    ck_assert(strstr(cpr_error_message(err), "backend") != NULL);
    cpr_error_free(err);
    err = NULL;
    ck_assert_int_eq(vmm_machine_boot(b.m, &err), -EBUSY);
    cpr_error_free(err);
    free(st);
    unboot(&b);
}
END_TEST

START_TEST(test_resume_refuses_a_machine_without_a_guest)
{
    struct booted b;
    boot(&b, 16 * MiB, 1, 0);
    vmm_machine_config cfg;
    vmm_machine_config_init(&cfg);
    cfg.accel = TEST_ACCEL;
    cfg.flags = VMM_MACHINE_INCOMING;
    cfg.ram = b.ram;
    cfg.ram_size = b.size;
    vmm_machine *in = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_machine_new(&in, &cfg, &err), 0);
    ck_assert_int_eq(vmm_machine_resume(in, &err), -EINVAL);
    ck_assert(strstr(cpr_error_message(err), "nothing to resume") != NULL);
    cpr_error_free(err);
    err = NULL;
    vmm_machine_free(in);

    stop(b.m);
    struct vmm_mailbox *mb = b.ram;
    mb->cpu[0].npages = b.size; /* a share past the end of RAM */
    ck_assert_int_eq(vmm_machine_resume(b.m, &err), -EINVAL);
    ck_assert_msg(strstr(cpr_error_message(err), "slot 0 is inconsistent") != NULL, "%s",
                  cpr_error_message(err));
    cpr_error_free(err);
    err = NULL;
    mb->hdr.magic = 0;
    ck_assert_int_eq(vmm_machine_resume(b.m, &err), -EINVAL);
    ck_assert(strstr(cpr_error_message(err), "no guest mailbox") != NULL);
    cpr_error_free(err);
    unboot(&b);
}
END_TEST

struct stalls_call {
    vmm_hb_sampler *s;
    vmm_stall_stats st;
    int done;
};

static void *stalls_thread(void *p)
{
    struct stalls_call *c = p;
    vmm_hb_sampler_stalls(c->s, &c->st);
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * A postcopy destination's sampler that reads a mailbox page not arrived yet blocks on it, but
 * not holding its lock: a query of its figures (query-guest, on the VMM's main loop) answers
 * meanwhile. The page is held missing with userfaultfd until the query answered (or 10 s).
 */
START_TEST(test_sampler_blocked_on_a_missing_page_does_not_hold_its_lock)
{
    size_t size = 2 * VMM_PAGE_SIZE;
    uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(ram, MAP_FAILED);
    memset(ram, 0, size); /* no mailbox: the sampler keeps reading page 0 for one */
    vmm_hb_sampler *s = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&s, ram, size, 10, &err), 0);
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) {
        printf("skipped: userfaultfd: %s\n", strerror(errno));
        vmm_hb_sampler_free(s);
        munmap(ram, size);
        return;
    }
    struct uffdio_api api = { .api = UFFD_API };
    ck_assert_int_eq(ioctl(uffd, UFFDIO_API, &api), 0);
    struct uffdio_register reg = { .range = { (uintptr_t)ram, size }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    ck_assert_int_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
    ck_assert_int_eq(madvise(ram, size, MADV_DONTNEED), 0); /* missing from now on */
    struct pollfd p = { .fd = uffd, .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, 10000), 1); /* the sampler waits for page 0 */
    struct uffd_msg msg;
    ck_assert_int_eq(read(uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
    ck_assert_uint_eq(msg.event, UFFD_EVENT_PAGEFAULT);
    ck_assert_uint_eq(msg.arg.pagefault.address & ~(uint64_t)(VMM_PAGE_SIZE - 1), (uintptr_t)ram);
    struct stalls_call c = { .s = s };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stalls_thread, &c), 0);
    for (int i = 0; i < 10000 && !__atomic_load_n(&c.done, __ATOMIC_ACQUIRE); i++)
        sleep_ms(1);
    int answered = __atomic_load_n(&c.done, __ATOMIC_ACQUIRE);
    struct uffdio_zeropage zp = { .range = { (uintptr_t)ram, size } };
    ck_assert_int_eq(ioctl(uffd, UFFDIO_ZEROPAGE, &zp), 0); /* the page arrives */
    pthread_join(th, NULL);
    vmm_hb_sampler_free(s);
    close(uffd);
    munmap(ram, size);
    ck_assert_msg(answered, "the sampler's figures were not readable while it waited for a missing page");
}
END_TEST

/*
 * A postcopy destination records the guest's stalls on its own clock: a stop it was not told of
 * (as a vCPU waiting for a missing page) is one sample at least that long; the pause of the
 * switchover before it (resumed through a handoff) is measured as the pause, not as a stall.
 */
START_TEST(test_sampler_records_stalls_but_not_the_switchover_pause)
{
    struct booted b;
    boot(&b, 16 * MiB, 1, VMM_DEFAULT_RATE_PPS);
    vmm_hb_sampler *s = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&s, b.ram, b.size, 10, &err), 0);
    vmm_stall_stats st;
    sleep_ms(20);
    ck_assert_int_eq(vmm_hb_sampler_stalls(s, &st), 0);
    ck_assert_uint_eq(st.samples, 0); /* not recording: nothing */

    vmm_hb_sampler_stalls_record(s, 1);
    vmm_hb_sampler_reset(s);
    stop(b.m);
    vmm_hb_handoff h;
    vmm_hb_sampler_handoff_get(s, &h);
    sleep_ms(300);
    vmm_hb_sampler_handoff_set(s, &h);
    resume(b.m);
    uint64_t pause = 0;
    ck_assert_int_eq(vmm_hb_sampler_wait_pause(s, 5000, &pause), 0);
    ck_assert_uint_ge(pause, 300000000);
    sleep_ms(30);
    stop(b.m); /* a stall the sampler was not armed for */
    sleep_ms(100);
    resume(b.m);
    sleep_ms(30);
    vmm_hb_sampler_stalls_record(s, 0);
    ck_assert_int_eq(vmm_hb_sampler_stalls(s, &st), 0);
    printf("stalls: %llu samples, worst %.3f ms, p99 %.3f ms, p50 %.3f ms; pause %.3f ms\n",
           (unsigned long long)st.samples, st.worst_ns / 1e6, st.p99_ns / 1e6, st.p50_ns / 1e6, pause / 1e6);
    ck_assert_int_eq(st.recording, 0);
    ck_assert_uint_ge(st.samples, 2);
    ck_assert_uint_ge(st.worst_ns, 100000000);
    ck_assert_uint_lt(st.worst_ns, pause); /* the 300 ms pause is not among them */
    ck_assert_uint_le(st.p50_ns, st.p99_ns);
    ck_assert_uint_le(st.p99_ns, st.worst_ns);
    ck_assert_uint_eq(st.dropped, 0);
    vmm_hb_sampler_free(s);
    unboot(&b);
}
END_TEST

START_TEST(test_a_faulting_guest_is_reported_not_hidden)
{
    if (TEST_ACCEL != VMM_ACCEL_KVM)
        return; /* the software guest cannot fault */
    struct booted b;
    boot(&b, 16 * MiB, 1, 0);
    stop(b.m);
    vmm_vcpu_state *st = calloc(1, sizeof(*st));
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_machine_get_vcpu_state(b.m, 0, st, &err), 0);
    st->regs.rip = 0x8000000000000ull; /* non-canonical: #GP, no IDT, triple fault */
    ck_assert_int_eq(vmm_machine_set_vcpu_state(b.m, 0, st, &err), 0);
    resume(b.m);
    sleep_ms(20);
    ck_assert_int_eq(vmm_machine_stop(b.m, &err), -EIO);
    ck_assert_msg(strstr(cpr_error_message(err), "vCPU 0") != NULL, "%s", cpr_error_message(err));
    printf("faulting guest: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    err = NULL;
    ck_assert_int_eq(vmm_machine_resume(b.m, &err), -EIO);
    cpr_error_free(err);
    free(st);
    unboot(&b);
}
END_TEST

START_TEST(test_sampler_starts_watching_when_the_guest_arrives)
{
    int fd;
    uint64_t size = 16 * MiB, gap = 0;
    void *ram = mtest_ram_new(size, &fd);
    vmm_hb_sampler *s = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&s, ram, size, 10, &err), 0);
    ck_assert_int_eq(vmm_hb_sampler_wait_pause(s, 30, &gap), -ETIMEDOUT);

    vmm_machine_config cfg;
    vmm_machine_config_init(&cfg);
    cfg.accel = TEST_ACCEL;
    cfg.ram = ram;
    cfg.ram_size = size;
    vmm_machine *m = NULL;
    ck_assert_int_eq(vmm_machine_new(&m, &cfg, &err), 0);
    ck_assert_int_eq(vmm_machine_boot(m, &err), 0);
    sleep_ms(5);
    vmm_hb_sampler_reset(s);
    stop(m);
    vmm_hb_handoff h;
    vmm_hb_sampler_handoff_get(s, &h); /* the guest is stopped: its next move ends the pause */
    ck_assert_uint_eq(h.nvcpus, 1);
    ck_assert_uint_gt(h.heartbeat[0], 0);
    sleep_ms(3);
    vmm_hb_sampler_handoff_set(s, &h); /* resumed here: this sampler measures the pause */
    resume(m);
    ck_assert_int_eq(vmm_hb_sampler_wait_pause(s, 5000, &gap), 0);
    ck_assert_uint_ge(gap, 3000000); /* the 3 ms stop, at least */
    /* Measured by the guest on its own clock, within the sampler's host-seen bound. A refusal
     * happens on a loaded machine: when the vCPU thread is preempted between its clock read and
     * its heartbeat store, the guest's record is longer than the gap the host saw at that move,
     * and the sampler falls back to its own bound, as documented; then that bound is reported. */
    uint64_t guest = 0, seen = 0;
    int by_guest = vmm_hb_sampler_last_pause(s, &guest, &seen);
    if (by_guest == 0) {
        const struct vmm_mailbox *mb = ram;
        printf("sampler: the guest's record (%lu ticks) refused, host-seen bound %lu ns used\n",
               (unsigned long)mb->gap[0].max_gap, (unsigned long)seen);
        ck_assert_uint_gt(mb->gap[0].max_gap, 0); /* the guest did record the pause */
        ck_assert_uint_eq(guest, 0);
        ck_assert_uint_eq(gap, seen);
    } else {
        ck_assert_int_eq(by_guest, 1);
        ck_assert_uint_eq(guest, gap);
        ck_assert_uint_le(guest, seen + 50000);
    }
    vmm_hb_sampler_free(s);
    vmm_machine_free(m);
    munmap(ram, size);
    close(fd);
}
END_TEST

static int bit(const uint64_t *bm, uint64_t pfn)
{
    return (bm[pfn / 64] >> (pfn % 64)) & 1;
}

/*
 * A precopy migration in miniature: copy all RAM while the guest runs with dirty logging on, stop,
 * copy the pages logged dirty -- all but one whose copy is stale when `lose_a_page` -- restore
 * into a machine over the copy and resume it there. Returns the stats after a full verification
 * pass.
 */
static vmm_guest_stats migrate_by_copy(int lose_a_page)
{
    struct booted a;
    boot(&a, 16 * MiB, 1, 20000);
    vmm_guest_stats st;
    ck_assert(mtest_wait(a.ram, a.size, rewrote_all, NULL, 30000, &st));
    uint64_t pages = a.size / 4096, nwords = (pages + 63) / 64;
    uint64_t *bm = calloc(nwords, 8);
    cpr_error *err = NULL;
    int fd2;
    void *ram2 = mtest_ram_new(a.size, &fd2);

    ck_assert_int_eq(vmm_machine_dirty_log_start(a.m, &err), 0);
    ck_assert_int_ge(vmm_machine_dirty_log_sync(a.m, bm, nwords, &err), 0);
    memcpy(ram2, a.ram, a.size); /* the first pass, racing the guest */
    /* Let the guest rewrite pages after the copy (their copies are then stale). */
    uint64_t want = stats(&a).rewrites + 20;
    ck_assert(mtest_wait(a.ram, a.size, rewrote_past, &want, 10000, &st));
    stop(a.m);
    memset(bm, 0, nwords * 8);
    ck_assert_int_gt(vmm_machine_dirty_log_sync(a.m, bm, nwords, &err), 1);
    uint64_t lost = 0;
    for (uint64_t pfn = 0; pfn < pages; pfn++) {
        if (!bit(bm, pfn))
            continue;
        const char *src = (char *)a.ram + pfn * 4096, *dst = (char *)ram2 + pfn * 4096;
        if (lose_a_page && pfn != 0 && !lost && memcmp(src, dst, 4096) != 0) {
            lost = pfn; /* this dirty page keeps its first-pass (stale) content */
            continue;
        }
        memcpy((char *)dst, src, 4096);
    }
    ck_assert(!lose_a_page || lost != 0);

    vmm_machine_config cfg;
    incoming_config(&cfg, ram2, a.size, 1);
    vmm_machine *b = NULL;
    vmm_vm_state vm;
    vmm_vcpu_state *vs = calloc(1, sizeof(*vs));
    ck_assert_int_eq(vmm_machine_new(&b, &cfg, &err), 0);
    ck_assert_int_eq(vmm_machine_get_vm_state(a.m, &vm, &err), 0);
    ck_assert_int_eq(vmm_machine_get_vcpu_state(a.m, 0, vs, &err), 0);
    ck_assert_int_eq(vmm_machine_set_vm_state(b, &vm, &err), 0);
    ck_assert_int_eq(vmm_machine_set_vcpu_state(b, 0, vs, &err), 0);
    resume(b);
    ck_assert(mtest_wait_full_verify(ram2, a.size, 30000, &st));
    if (lose_a_page)
        ck_assert_msg(mtest_wait(ram2, a.size, corrupted, NULL, 5000, &st),
                      "lost dirty page %llu went unnoticed", (unsigned long long)lost);
    printf("%s migration by copy%s: %llu dirty pages in the last pass, %llu corruptions after\n",
           vmm_machine_backend_name(b), lose_a_page ? " losing one dirty page" : "",
           (unsigned long long)count_bits(bm, nwords), (unsigned long long)st.corruptions);
    vmm_machine_free(b);
    munmap(ram2, a.size);
    close(fd2);
    free(vs);
    free(bm);
    unboot(&a);
    return st;
}

START_TEST(test_precopy_with_the_dirty_log_keeps_the_guest_intact)
{
    vmm_guest_stats st = migrate_by_copy(0);
    ck_assert_uint_eq(st.corruptions, 0);
}
END_TEST

START_TEST(test_precopy_that_loses_a_dirty_page_is_caught_by_the_guest)
{
    vmm_guest_stats st = migrate_by_copy(1);
    ck_assert_uint_gt(st.corruptions, 0);
}
END_TEST

/* Stops `old`, captures everything into one handoff message. */
static struct mtest_handoff *capture(vmm_machine *old, vmm_hb_sampler *s, size_t *len)
{
    cpr_error *err = NULL;
    struct mtest_handoff *h = mtest_capture(old, s, len, &err);
    ck_assert_msg(h != NULL, "capture: %s", err ? cpr_error_message(err) : "?");
    return h;
}

static void report(const char *where, const struct mtest_result *r, uint64_t old_side_gap)
{
    printf("switchover (%s, %s): guest pause %.3f ms (old side's sampler %.3f ms, %llu late "
           "polls), stop..running %.3f ms, restore %.3f ms; heartbeat %llu -> %llu, %llu pages "
           "verified after, %llu corruptions\n",
           where, r->backend, r->pause_ns / 1e6, old_side_gap / 1e6,
           (unsigned long long)r->late_polls, r->host_ns / 1e6,
           r->restore_ns / 1e6, (unsigned long long)r->hb_before,
           (unsigned long long)r->after.heartbeat, (unsigned long long)r->after.pages_verified,
           (unsigned long long)r->after.corruptions);
}

static void check_result(const struct mtest_result *r)
{
    ck_assert_msg(r->rc == 0, "new side: %s", r->msg);
    ck_assert_uint_gt(r->after.heartbeat, r->hb_before);
    ck_assert_uint_eq(r->after.pages_filled, r->after.pages_total);
    ck_assert_uint_eq(r->after.corruptions, 0);
    ck_assert_uint_gt(r->pause_ns, 0);
}

START_TEST(test_restore_into_second_machine_continues_guest)
{
    struct booted a;
    boot(&a, 64 * MiB, 2, VMM_DEFAULT_RATE_PPS);
    /* The new machine maps the same memfd at another address, as a new process would. */
    void *ram2 = mtest_ram_map(a.fd, a.size);
    ck_assert_ptr_ne(ram2, a.ram);
    vmm_machine_config cfg;
    incoming_config(&cfg, ram2, a.size, 2);
    vmm_machine *b = NULL;
    vmm_hb_sampler *sa = NULL, *sb = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_machine_new(&b, &cfg, &err), 0);
    ck_assert_int_eq(vmm_hb_sampler_new(&sa, a.ram, a.size, mtest_sampler_us(), &err), 0);
    ck_assert_int_eq(vmm_hb_sampler_new(&sb, ram2, a.size, mtest_sampler_us(), &err), 0);
    sleep_ms(20);

    size_t len;
    struct mtest_handoff *h = capture(a.m, sa, &len);
    struct mtest_result r;
    mtest_restore(b, sb, ram2, h, &r);
    report("same process", &r, vmm_hb_sampler_max_gap_ns(sa));
    check_result(&r);

    vmm_hb_sampler_free(sa);
    vmm_hb_sampler_free(sb);
    vmm_machine_free(b);
    munmap(ram2, a.size);
    free(h);
    unboot(&a);
}
END_TEST

/*
 * A guest of release 1.0's layout (mailbox version 1, and on KVM release 1.0's guest code) boots
 * and runs clean without the newer pause record; a machine that loads any version takes it over
 * and runs it on; one configured for version 2 refuses it, naming both versions.
 */
START_TEST(test_guest_of_mailbox_version_1_boots_and_moves)
{
    struct booted a;
    boot_version(&a, 32 * MiB, 1, VMM_DEFAULT_RATE_PPS, 1);
    const struct vmm_mailbox *mb = a.ram;
    ck_assert_uint_eq(mb->hdr.version, 1);
    ck_assert_uint_eq(mb->hdr.clock, 0); /* reserved in version 1 */
    ck_assert_uint_eq(vmm_machine_guest_version(a.m), 1);
    vmm_guest_stats st;
    ck_assert(mtest_wait_full_verify(a.ram, a.size, 30000, &st));
    ck_assert_uint_eq(st.corruptions, 0);
    ck_assert_uint_eq(mb->gap[0].max_gap, 0); /* version 1 keeps no pause record */

    void *ram2 = mtest_ram_map(a.fd, a.size);
    vmm_hb_sampler *sa = NULL, *sb = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&sa, a.ram, a.size, mtest_sampler_us(), &err), 0);
    ck_assert_int_eq(vmm_hb_sampler_new(&sb, ram2, a.size, mtest_sampler_us(), &err), 0);
    size_t len;
    struct mtest_handoff *h = capture(a.m, sa, &len);
    vmm_machine_config cfg;
    incoming_config(&cfg, ram2, a.size, 1);
    struct mtest_result r;
    vmm_machine *strict = NULL, *any = NULL;
    cfg.mailbox_version = 2;
    ck_assert_int_eq(vmm_machine_new(&strict, &cfg, &err), 0);
    ck_assert_int_eq(mtest_restore(strict, sb, ram2, h, &r), -EINVAL);
    ck_assert_msg(strstr(r.msg, "mailbox version 1") && strstr(r.msg, "version 2"), "%s", r.msg);
    vmm_machine_free(strict);

    cfg.mailbox_version = 0;
    ck_assert_int_eq(vmm_machine_new(&any, &cfg, &err), 0);
    mtest_restore(any, sb, ram2, h, &r);
    report("mailbox version 1", &r, vmm_hb_sampler_max_gap_ns(sa));
    check_result(&r);
    ck_assert_uint_eq(vmm_machine_guest_version(any), 1);
    ck_assert_uint_eq(mb->hdr.version, 1);
    ck_assert_uint_eq(mb->gap[0].max_gap, 0);

    vmm_hb_sampler_free(sa);
    vmm_hb_sampler_free(sb);
    vmm_machine_free(any);
    munmap(ram2, a.size);
    free(h);
    unboot(&a);
}
END_TEST

static const char *child_path(void)
{
    return mtest_child_path();
}

START_TEST(test_old_machine_resumes_after_a_failed_handoff)
{
    /* The switchover failed after the capture: the old side resumes its own guest. */
    struct booted a;
    boot(&a, 32 * MiB, 2, VMM_DEFAULT_RATE_PPS);
    vmm_hb_sampler *s = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&s, a.ram, a.size, mtest_sampler_us(), &err), 0);
    size_t len;
    struct mtest_handoff *h = capture(a.m, s, &len);
    sleep_ms(2);
    vmm_hb_sampler_handoff_set(s, &h->hb);
    resume(a.m);
    uint64_t gap = 0;
    ck_assert_int_eq(vmm_hb_sampler_wait_pause(s, 5000, &gap), 0);
    ck_assert_uint_ge(gap, 2000000);
    vmm_guest_stats st;
    ck_assert(mtest_wait_full_verify(a.ram, a.size, 30000, &st));
    ck_assert_uint_eq(st.corruptions, 0);
    ck_assert_uint_gt(st.heartbeat, h->hb.heartbeat[0] + h->hb.heartbeat[1]);
    vmm_hb_sampler_free(s);
    free(h);
    unboot(&a);
}
END_TEST

START_TEST(test_restore_in_new_process_over_inherited_memfd)
{
    struct booted a;
    boot(&a, 64 * MiB, 1, VMM_DEFAULT_RATE_PPS);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char fd[16], size[32], sock[16], accel[8];
        snprintf(fd, sizeof(fd), "%d", a.fd);
        snprintf(size, sizeof(size), "%llu", (unsigned long long)a.size);
        snprintf(sock, sizeof(sock), "%d", sv[1]);
        snprintf(accel, sizeof(accel), "%u", (unsigned)TEST_ACCEL);
        execl(child_path(), child_path(), fd, size, sock, accel, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    vmm_hb_sampler *sa = NULL;
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_hb_sampler_new(&sa, a.ram, a.size, mtest_sampler_us(), &err), 0);
    char ready = 0;
    ck_assert_int_eq(recv(sv[0], &ready, 1, 0), 1);
    ck_assert_msg(ready == 'r', "child could not prepare its machine");
    sleep_ms(20);

    size_t len;
    struct mtest_handoff *h = capture(a.m, sa, &len);
    ck_assert_int_eq(send(sv[0], h, len, 0), (ssize_t)len);
    struct mtest_result r;
    ck_assert_int_eq(recv(sv[0], &r, sizeof(r), 0), (ssize_t)sizeof(r));
    report("new process", &r, vmm_hb_sampler_max_gap_ns(sa));
    check_result(&r);
    /* The old machine stays stopped, yet the heartbeat in our mapping goes on: the child runs it. */
    uint64_t hb = stats(&a).heartbeat;
    vmm_guest_stats st;
    ck_assert_msg(mtest_wait(a.ram, a.size, heartbeat_past, &hb, 5000, &st),
                  "heartbeat stuck at %llu", (unsigned long long)hb);
    ck_assert_int_eq(vmm_machine_running(a.m), 0);

    ck_assert_int_eq(send(sv[0], "q", 1, 0), 1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    vmm_hb_sampler_free(sa);
    close(sv[0]);
    free(h);
    unboot(&a);
}
END_TEST


START_TEST(test_dirty_log_reports_exactly_the_pages_the_guest_wrote)
{
    struct booted b;
    boot(&b, 32 * MiB, 2, 4000);
    uint64_t pages = b.size / 4096, nwords = (pages + 63) / 64;
    uint64_t *bm = calloc(nwords, 8);
    cpr_error *err = NULL;
    ck_assert_int_eq(vmm_machine_dirty_log_sync(b.m, bm, nwords, &err), -ENOENT);
    cpr_error_free(err);
    err = NULL;
    ck_assert_int_eq(vmm_machine_dirty_log_start(b.m, &err), 0);
    stop(b.m);
    ck_assert_int_ge(vmm_machine_dirty_log_sync(b.m, bm, nwords, &err), 0);
    const struct vmm_mailbox *mb = b.ram;
    uint64_t from[2] = { mb->cpu[0].rewrites, mb->cpu[1].rewrites };
    memset(bm, 0, nwords * 8);
    resume(b.m);
    sleep_ms(150);
    stop(b.m);
    int n = vmm_machine_dirty_log_sync(b.m, bm, nwords, &err);
    ck_assert_msg(n > 0, "sync: %d", n);
    /* Expected: the mailbox, in each share the pages rewritten since `from`, and perhaps the page
     * at a rewrite cursor: the guest may have stopped in the middle of writing it. */
    uint64_t expect = 1, in_flight = 0;
    ck_assert(bit(bm, 0));
    for (uint32_t c = 0; c < 2; c++) {
        const struct vmm_guest_cpu *cpu = &mb->cpu[c];
        uint64_t done = cpu->rewrites - from[c];
        ck_assert_uint_gt(done, 0);
        ck_assert_uint_lt(done, cpu->npages);
        for (uint64_t k = 0; k < done; k++) {
            uint64_t idx = (cpu->rw_idx + cpu->npages - 1 - k) % cpu->npages;
            ck_assert_msg(bit(bm, cpu->first_pfn + idx), "rewritten page %llu not logged",
                          (unsigned long long)(cpu->first_pfn + idx));
        }
        expect += done;
        in_flight += bit(bm, cpu->first_pfn + cpu->rw_idx);
    }
    ck_assert_int_eq(n, (int)(expect + in_flight));
    printf("%s dirty log: %d pages dirty in 150 ms at 4000 pages/s\n", vmm_machine_backend_name(b.m), n);
    ck_assert_int_eq(vmm_machine_dirty_log_stop(b.m, &err), 0);
    free(bm);
    unboot(&b);
}
END_TEST

/*
 * The dirtying guest's pacing, on a clock the test drives (vmm_guest_step, guest.S's C twin), so
 * counts and not timings are asserted. Asked for twice a 1 Gbit/s link's pages, it rewrites
 * exactly that many pages per second of its clock; the dirty log then holds each page of its
 * share once, however many times it was rewritten: a pass's distinct dirty pages are bounded by
 * the share, which is why a migration's dirty-pages-rate shows about RAM / pass time and not the
 * guest's rate (docs/benchmarks.md). After a stall it gets at most VMM_CREDIT_CAP_MS of credit:
 * its pacing does not catch up (no banked bursts, as guest.S).
 */
START_TEST(test_guest_rewrites_at_its_asked_rate_on_its_own_clock)
{
    const uint64_t pages = 4096, size = pages * 4096, rate = 2 * 30518, ms = 1000000;
    void *ram = aligned_alloc(4096, size);
    ck_assert_ptr_nonnull(ram);
    memset(ram, 0, size);
    vmm_mailbox_init(ram, size, 1, rate, ms, VMM_CLOCK_MONOTONIC, VMM_MAILBOX_VERSION, 0);
    struct vmm_guest_cpu *c = &vmm_mailbox(ram)->cpu[0];
    uint64_t now = 1, nwords = pages / 64;
    uint64_t *log = calloc(nwords, 8), *active = NULL;
    ck_assert_ptr_nonnull(log);
    for (uint64_t i = 0; i < c->npages; i++) /* the boot fill: one page a step, no credit */
        vmm_guest_step(ram, c, ms, now++, &active);
    ck_assert_uint_eq(c->pages_filled, c->npages);
    ck_assert_uint_eq(c->rewrites, 0);
    active = log;
    for (int i = 0; i < 1000; i++) /* one second in 1 ms steps */
        vmm_guest_step(ram, c, ms, now += ms, &active);
    ck_assert_uint_eq(c->rewrites, rate);
    ck_assert_uint_eq(count_bits(log, nwords), pages); /* the share and the mailbox, each once */
    uint64_t before = c->rewrites;
    vmm_guest_step(ram, c, ms, now += 100 * ms, &active); /* a 100 ms stall: 10 ms of credit */
    ck_assert_uint_eq(c->rewrites - before, rate * VMM_CREDIT_CAP_MS / 1000);
    uint64_t first_bad = 0;
    ck_assert_int_eq(vmm_guest_verify_ram(ram, size, &first_bad), 0);
    free(log);
    free(ram);
}
END_TEST

static Suite *machine_suite(void)
{
    Suite *s = suite_create("vmm_machine");
    TCase *tc = tcase_create("machine");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_guest_fills_and_verifies_every_page_without_corruption);
    tcase_add_test(tc, test_smp_guest_shares_pages_between_vcpus);
    tcase_add_test(tc, test_stopped_guest_heartbeat_stands_still_until_resume);
    tcase_add_test(tc, test_stop_works_when_the_vmm_blocks_all_signals);
    tcase_add_test(tc, test_flipped_word_counts_as_corruption);
    tcase_add_test(tc, test_zeroed_page_counts_as_corruption);
    tcase_add_test(tc, test_stale_generation_counts_as_corruption);
    tcase_add_test(tc, test_compressible_guest_repeats_words_and_verifies_them);
    tcase_add_test(tc, test_compressibility_is_refused_where_it_cannot_hold);
    tcase_add_test(tc, test_state_calls_refuse_a_running_machine);
    tcase_add_test(tc, test_resume_refuses_a_machine_without_a_guest);
    tcase_add_test(tc, test_sampler_starts_watching_when_the_guest_arrives);
    tcase_add_test(tc, test_sampler_records_stalls_but_not_the_switchover_pause);
    tcase_add_test(tc, test_a_faulting_guest_is_reported_not_hidden);
    tcase_add_test(tc, test_sampler_blocked_on_a_missing_page_does_not_hold_its_lock);
    tcase_add_test(tc, test_restore_into_second_machine_continues_guest);
    tcase_add_test(tc, test_guest_of_mailbox_version_1_boots_and_moves);
    tcase_add_test(tc, test_old_machine_resumes_after_a_failed_handoff);
    tcase_add_test(tc, test_restore_in_new_process_over_inherited_memfd);
    tcase_add_test(tc, test_dirty_log_reports_exactly_the_pages_the_guest_wrote);
    tcase_add_test(tc, test_guest_rewrites_at_its_asked_rate_on_its_own_clock);
    tcase_add_test(tc, test_precopy_with_the_dirty_log_keeps_the_guest_intact);
    tcase_add_test(tc, test_precopy_that_loses_a_dirty_page_is_caught_by_the_guest);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (TEST_ACCEL == VMM_ACCEL_KVM) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            printf("SKIP: /dev/kvm: %s; the KVM machine tests need it (the software backend "
                   "tests still run)\n", strerror(errno));
            return 77;
        }
        close(fd);
    }
    SRunner *sr = srunner_create(machine_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
