/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd fault server with a real userfaultfd: threads touch pages while the filler
 * runs, each page must hold exactly the source's bytes, no page is fetched twice; a source
 * that fails keeps the toucher blocked until free(). Skipped (and says so) where this host
 * does not give userfaultfd to this process.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blocked_reader.h"
#include "handover/on_valgrind.h"
#include "migration/fault_server.h"
#include "testutil.h"

#define PAGE 4096u
#define NBLOCKS 2
static const uint64_t block_pages[NBLOCKS] = { 4096, 1000 }; /* 16 MiB memfd, ~4 MiB anon */

typedef struct test_src {
    uint64_t *fetches[NBLOCKS]; /* per page, atomic */
    int gate;                   /* atomic: runs of more than one page wait while it is 0 */
    uint64_t fail_page;         /* block 0's page whose fetch fails; UINT64_MAX: none */
} test_src;

static uint64_t word_of(unsigned block, uint64_t page, uint64_t i)
{
    return ((uint64_t)block << 56) ^ (page << 20) ^ (i * 0x9E3779B97F4A7C15ull);
}

static void fill_page(unsigned block, uint64_t page, uint8_t *dst)
{
    uint64_t *w = (uint64_t *)dst;
    for (uint64_t i = 0; i < PAGE / 8; i++)
        w[i] = word_of(block, page, i);
}

/* 1 when the page holds exactly what the source serves for it. */
static int page_ok(unsigned block, uint64_t page, const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (uint64_t i = 0; i < PAGE / 8; i++)
        if (w[i] != word_of(block, page, i))
            return 0;
    return 1;
}

static int src_fetch(void *opaque, unsigned block, uint64_t page, uint64_t count, void *dst,
                     cpr_error **errp)
{
    test_src *s = opaque;
    while (count > 1 && !__atomic_load_n(&s->gate, __ATOMIC_ACQUIRE))
        g_usleep(1000);
    for (uint64_t i = 0; i < count; i++) {
        if (block == 0 && page + i == s->fail_page)
            return cpr_error_set(errp, -EBADMSG, "chunk checksum mismatch");
        __atomic_add_fetch(&s->fetches[block][page + i], 1, __ATOMIC_RELAXED);
        fill_page(block, page + i, (uint8_t *)dst + i * PAGE);
    }
    return 0;
}

typedef struct fixture {
    test_src src;
    uint8_t *host[NBLOCKS];
    cpr_fault_server *fs;
    GString *events; /* what the event callback heard, guarded by lock */
    GMutex lock;
} fixture;

static void on_event(void *opaque, int code, const char *message)
{
    fixture *f = opaque;
    g_mutex_lock(&f->lock);
    g_string_append_printf(f->events, "[%d %s]", code, message);
    g_mutex_unlock(&f->lock);
}

/* Block 0 is a memfd mapped shared (as a VMM's RAM), block 1 private anonymous memory. */
static int setup_server(fixture *f, uint64_t fault_run, uint64_t fill_run, int gate)
{
    memset(f, 0, sizeof(*f));
    g_mutex_init(&f->lock);
    f->events = g_string_new(NULL);
    f->src.gate = gate;
    f->src.fail_page = UINT64_MAX;
    cpr_error *err = NULL;
    if (!cpr_fault_server_available(&err)) {
        fprintf(stderr, "SKIP fault server: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        return 0;
    }
    int fd = memfd_create("ram0", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, block_pages[0] * PAGE), 0);
    f->host[0] = mmap(NULL, block_pages[0] * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    f->host[1] = mmap(NULL, block_pages[1] * PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(f->host[0], MAP_FAILED);
    ck_assert_ptr_ne(f->host[1], MAP_FAILED);
    cpr_page_source src = { .fetch = src_fetch, .opaque = &f->src };
    ck_assert_int_eq(cpr_fault_server_new(&src, fault_run, fill_run, on_event, f, &f->fs, NULL), 0);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        f->src.fetches[b] = g_new0(uint64_t, block_pages[b]);
        ck_assert_int_eq(cpr_fault_server_add_block(f->fs, b ? "ram1" : "ram0", f->host[b],
                                                    block_pages[b] * PAGE, PAGE, NULL), 0);
    }
    return 1;
}

static void teardown_server(fixture *f)
{
    cpr_fault_server_free(f->fs);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        munmap(f->host[b], block_pages[b] * PAGE);
        g_free(f->src.fetches[b]);
    }
    g_string_free(f->events, TRUE);
    g_mutex_clear(&f->lock);
}

/* Every page holds the source's bytes and was fetched exactly once. */
static void check_all_pages(fixture *f)
{
    for (unsigned b = 0; b < NBLOCKS; b++)
        for (uint64_t p = 0; p < block_pages[b]; p++) {
            ck_assert_msg(page_ok(b, p, f->host[b] + p * PAGE), "block %u page %lu differs", b,
                          (unsigned long)p);
            ck_assert_msg(f->src.fetches[b][p] == 1, "block %u page %lu fetched %lu times", b,
                          (unsigned long)p, (unsigned long)f->src.fetches[b][p]);
        }
}

/* ---- touchers ----------------------------------------------------------------------------- */

typedef struct toucher {
    fixture *f;
    unsigned seed;
    uint64_t from;       /* touch pages of each block from this fraction (per 1000) up */
    uint64_t *touched[NBLOCKS]; /* atomic bitmaps the test checks against */
    int bad;             /* pages that did not hold the source's bytes */
} toucher;

static gpointer touch_random(gpointer opaque)
{
    toucher *t = opaque;
    GRand *r = g_rand_new_with_seed(t->seed);
    for (int i = 0; i < 300; i++) {
        unsigned b = (unsigned)g_rand_int_range(r, 0, NBLOCKS);
        uint64_t lo = block_pages[b] * t->from / 1000;
        uint64_t p = lo + (uint64_t)g_rand_int_range(r, 0, (gint32)(block_pages[b] - lo));
        if (t->touched[b])
            __atomic_fetch_or(&t->touched[b][p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
        if (!page_ok(b, p, t->f->host[b] + p * PAGE))
            t->bad++;
    }
    g_rand_free(r);
    return NULL;
}

/* Under valgrind a thread that touches a missing page blocks in the kernel while holding
 * valgrind's one lock (its loads are not system calls), so the fault thread never runs: the
 * touchers' tests would hang. The plain, ASan and TSan runs cover them; read(2) into a missing
 * page (blocked_reader) is a system call and runs under valgrind too. */
static int touchers_cannot_run(const char *test)
{
    if (RUNNING_ON_VALGRIND)
        fprintf(stderr, "SKIP %s: a thread blocked on a userfaultfd fault holds valgrind's lock\n",
                test);
    return RUNNING_ON_VALGRIND;
}

static void run_touchers(fixture *f, uint64_t from, uint64_t **touched)
{
    toucher t[4];
    GThread *th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (toucher){ .f = f, .seed = 1000u + (unsigned)i, .from = from };
        for (unsigned b = 0; b < NBLOCKS; b++)
            t[i].touched[b] = touched ? touched[b] : NULL;
        th[i] = g_thread_new("toucher", touch_random, &t[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(th[i]);
        ck_assert_int_eq(t[i].bad, 0);
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

START_TEST(test_touchers_and_filler_see_exactly_the_source)
{
    if (touchers_cannot_run(__func__))
        return;
    fixture f;
    if (!setup_server(&f, 0, 0, 1))
        return;
    ck_assert_int_eq(cpr_fault_server_start(f.fs, NULL), 0);
    run_touchers(&f, 0, NULL);
    ck_assert_int_eq(cpr_fault_server_wait(f.fs, 60 * G_USEC_PER_SEC, NULL), 0);
    check_all_pages(&f);
    cpr_fault_status st;
    cpr_fault_server_status(f.fs, &st, NULL);
    ck_assert_uint_eq(st.pages_total, block_pages[0] + block_pages[1]);
    ck_assert_uint_eq(st.pages_placed, st.pages_total);
    ck_assert_int_ge(st.done_us, st.start_us);
    ck_assert_int_eq(st.error, 0);
    ck_assert_str_eq(f.events->str, "[0 lazy restore: every page resident]");
    teardown_server(&f);
}
END_TEST

/* The filler is held at its first run: the touched pages can only come from the fault path,
 * one page per fault, and the filler then places exactly the others. */
START_TEST(test_faults_are_served_while_the_filler_waits)
{
    if (touchers_cannot_run(__func__))
        return;
    fixture f;
    if (!setup_server(&f, PAGE, 0, 0))
        return;
    ck_assert_int_eq(cpr_fault_server_start(f.fs, NULL), 0);
    uint64_t *touched[NBLOCKS];
    uint64_t distinct = 0;
    for (unsigned b = 0; b < NBLOCKS; b++)
        touched[b] = g_new0(uint64_t, (block_pages[b] + 63) / 64);
    run_touchers(&f, 500, touched); /* the filler sits on block 0's first pages */
    for (unsigned b = 0; b < NBLOCKS; b++)
        for (uint64_t w = 0; w < (block_pages[b] + 63) / 64; w++)
            distinct += (uint64_t)__builtin_popcountll(touched[b][w]);
    cpr_fault_status st;
    cpr_fault_server_status(f.fs, &st, NULL);
    ck_assert_uint_eq(st.fault_pages, distinct);
    ck_assert_uint_le(st.pages_placed, distinct); /* the count may lag the wake-up */
    ck_assert_int_eq(st.done_us, 0);
    ck_assert_int_eq(cpr_fault_server_wait(f.fs, 0, NULL), -ETIMEDOUT);
    __atomic_store_n(&f.src.gate, 1, __ATOMIC_RELEASE);
    ck_assert_int_eq(cpr_fault_server_wait(f.fs, 60 * G_USEC_PER_SEC, NULL), 0);
    check_all_pages(&f);
    /* Blocktime: every distinct page touched stalled its thread once at least. A stall is
     * counted just after its wake-up: wait for the count, without a time in the assertion. */
    for (int i = 0; i < 6000; i++) {
        cpr_fault_server_status(f.fs, &st, NULL);
        if (st.stalls >= distinct)
            break;
        g_usleep(10000);
    }
    ck_assert_uint_ge(st.stalls, distinct);
    ck_assert_uint_ge(st.max_stall_us, 1);
    ck_assert_uint_ge(st.blocked_us, st.max_stall_us);
    ck_assert_uint_ge(st.blocked_us, st.stalls); /* at least 1 us each */
    for (unsigned b = 0; b < NBLOCKS; b++)
        g_free(touched[b]);
    teardown_server(&f);
}
END_TEST

/* Nobody touches the RAM: the filler places it all and no thread ever stalled. */
START_TEST(test_no_fault_no_blocktime)
{
    fixture f;
    if (!setup_server(&f, 0, 0, 1))
        return;
    ck_assert_int_eq(cpr_fault_server_start(f.fs, NULL), 0);
    ck_assert_int_eq(cpr_fault_server_wait(f.fs, 60 * G_USEC_PER_SEC, NULL), 0);
    cpr_fault_status st;
    cpr_fault_server_status(f.fs, &st, NULL);
    ck_assert_uint_eq(st.faults, 0);
    ck_assert_uint_eq(st.stalls, 0);
    ck_assert_uint_eq(st.blocked_us, 0);
    ck_assert_uint_eq(st.max_stall_us, 0);
    check_all_pages(&f);
    teardown_server(&f);
}
END_TEST

START_TEST(test_failed_fetch_keeps_the_toucher_blocked_and_names_the_page)
{
    fixture f;
    if (!setup_server(&f, 0, 0, 1))
        return;
    f.src.fail_page = 1234;
    ck_assert_int_eq(cpr_fault_server_start(f.fs, NULL), 0);
    blocked_reader r = { .page = f.host[0] + 1234 * PAGE };
    GThread *th = g_thread_new("reader", read_page, &r);
    cpr_error *err = NULL;
    ck_assert_int_eq(cpr_fault_server_wait(f.fs, 60 * G_USEC_PER_SEC, &err), -EBADMSG);
    ck_assert_msg(strstr(cpr_error_message(err), "block 'ram0' pages ") &&
                  strstr(cpr_error_message(err), "chunk checksum mismatch"),
                  "message: %s", cpr_error_message(err));
    cpr_error_free(err);
    /* The filler goes on: everything but the failed run (at most 64 pages) arrives. */
    uint64_t total = block_pages[0] + block_pages[1];
    cpr_fault_status st;
    for (int i = 0; i < 6000; i++) {
        cpr_fault_server_status(f.fs, &st, NULL);
        if (st.pages_placed >= total - CPR_FILL_RUN_DEFAULT / PAGE &&
            __atomic_load_n(&f.src.fetches[1][999], __ATOMIC_RELAXED))
            break;
        g_usleep(10000);
    }
    ck_assert_uint_ge(st.pages_placed, total - CPR_FILL_RUN_DEFAULT / PAGE);
    ck_assert_uint_lt(st.pages_placed, total);
    ck_assert_int_eq(st.error, -EBADMSG);
    g_usleep(100000);
    ck_assert_int_eq(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0); /* still blocked */
    g_mutex_lock(&f.lock);
    ck_assert_msg(strstr(f.events->str, "[-74 lazy restore: block 'ram0' pages "),
                  "events: %s", f.events->str);
    g_mutex_unlock(&f.lock);
    /* free() wakes it; the page it waited for is inaccessible, never a zero page. */
    cpr_fault_server_free(f.fs);
    f.fs = NULL;
    g_thread_join(th);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.err, EFAULT);
    ck_assert(page_ok(0, 0, f.host[0]));
    teardown_server(&f);
}
END_TEST

START_TEST(test_add_block_refuses_a_misaligned_range)
{
    fixture f;
    if (!setup_server(&f, 0, 0, 1))
        return;
    ck_assert_cpr_fails(cpr_fault_server_add_block(f.fs, "odd", f.host[0], PAGE + 1, PAGE, errp_),
                        -EINVAL, "block 'odd'");
    ck_assert_cpr_fails(cpr_fault_server_add_block(f.fs, "twice", f.host[0], PAGE, PAGE, errp_),
                        -EINVAL, "block 'twice' overlaps block 'ram0'");
    teardown_server(&f); /* never started: the ranges are only unregistered */
}
END_TEST

static Suite *fault_server_suite(void)
{
    Suite *s = suite_create("fault_server");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_touchers_and_filler_see_exactly_the_source);
    tcase_add_test(tc, test_faults_are_served_while_the_filler_waits);
    tcase_add_test(tc, test_no_fault_no_blocktime);
    tcase_add_test(tc, test_failed_fetch_keeps_the_toucher_blocked_and_names_the_page);
    tcase_add_test(tc, test_add_block_refuses_a_misaligned_range);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(fault_server_suite)
