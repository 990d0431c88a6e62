/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's return path between threads, as at run time: the source's page server on its own
 * thread, two destination threads (a "fault" one and a "filler" one) fetching through the one
 * client at once, a reader of the served counter meanwhile. Every answer must carry the
 * source's bytes and their CRC32C, zero runs no data; a destination that disappears, or sends
 * a bad message, fails the server naming it. The server answers an urgent (fault) request
 * before the background runs queued ahead of it. In run-tsan's suites.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "core/crc32c.h"
#include "migration/postcopy.h"
#include "testutil.h"

#define PAGES0 256
#define PAGES1 64 /* all zero */

typedef struct fixture {
    uint8_t *ram0, *ram1;
    uint64_t block_pages[2];
    struct cpr_pc_block blocks[2];
    struct cpr_pc_server sv;
    int fd[2]; /* [0] the source's, [1] the destination's */
    struct cpr_pc_client *client; /* the destination's, on fd[1] */
    int ret;
    cpr_error *err;
} fixture;

static void setup(fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->ram0 = g_malloc(PAGES0 * CPR_PC_PAGE);
    f->ram1 = g_malloc0(PAGES1 * CPR_PC_PAGE);
    for (size_t i = 0; i < PAGES0 * CPR_PC_PAGE; i++)
        f->ram0[i] = (uint8_t)(i * 31 + i / CPR_PC_PAGE);
    f->block_pages[0] = PAGES0;
    f->block_pages[1] = PAGES1;
    f->blocks[0] = (struct cpr_pc_block){ f->ram0, PAGES0 };
    f->blocks[1] = (struct cpr_pc_block){ f->ram1, PAGES1 };
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->fd), 0);
    f->sv = (struct cpr_pc_server){ .rfd = f->fd[0], .wfd = f->fd[0], .nblocks = 2,
                                    .blocks = f->blocks, .block_pages = f->block_pages };
    f->client = cpr_pc_client_new(f->fd[1], 2, f->block_pages);
}

static void teardown(fixture *f)
{
    close(f->fd[0]);
    if (f->fd[1] >= 0)
        close(f->fd[1]);
    cpr_pc_client_free(f->client);
    cpr_error_free(f->err);
    g_free(f->ram0);
    g_free(f->ram1);
}

static void send_msg(int fd, uint32_t kind, uint32_t block, uint64_t page, uint32_t count,
                     uint32_t flags)
{
    struct cpr_pc_msg m = { .kind = kind, .block = block, .page = page, .count = count,
                            .flags = flags };
    uint8_t buf[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(&m, buf);
    ck_assert_int_eq(send(fd, buf, sizeof(buf), MSG_NOSIGNAL), (ssize_t)sizeof(buf));
}

/* Fetches a run through the destination's client and checks it against the source. */
static void request(fixture *f, int urgent, uint32_t block, uint64_t page, uint32_t count)
{
    size_t len = (size_t)count * CPR_PC_PAGE;
    uint8_t *got = g_malloc(len);
    memset(got, 0x5a, len); /* a zero answer must really clear it */
    cpr_error *err = NULL;
    int ret = cpr_pc_client_fetch(f->client, urgent, block, page, count, got, &err);
    ck_assert_msg(ret == 0, "%s", err ? cpr_error_message(err) : "");
    ck_assert_int_eq(memcmp(got, f->blocks[block].host + page * CPR_PC_PAGE, len), 0);
    g_free(got);
}

/* Reads one answer piece's header off the destination's end (and skips its data). */
static struct cpr_pc_msg read_piece(fixture *f)
{
    uint8_t buf[CPR_PC_MSG_BYTES];
    struct cpr_pc_msg rep;
    ck_assert_int_eq(cpr_pc_read_full(f->fd[1], buf, sizeof(buf), "answer", NULL), 0);
    ck_assert_int_eq(cpr_pc_msg_decode(buf, 2, f->block_pages, &rep, NULL), 0);
    ck_assert_uint_eq(rep.kind, CPR_PC_PAGES);
    if (!(rep.flags & CPR_PC_ZERO)) {
        uint8_t *data = g_malloc((size_t)rep.count * CPR_PC_PAGE);
        ck_assert_int_eq(cpr_pc_read_full(f->fd[1], data, (size_t)rep.count * CPR_PC_PAGE,
                                          "pages", NULL), 0);
        g_free(data);
    }
    return rep;
}

static gpointer server_thread(gpointer p)
{
    fixture *f = p;
    f->ret = cpr_pc_serve(&f->sv, &f->err);
    return NULL;
}

static gpointer faulter(gpointer p)
{
    fixture *f = p;
    for (uint64_t i = 0; i < PAGES0; i += 7)
        request(f, 1, 0, (i * 37) % PAGES0, 1);
    return NULL;
}

static gpointer filler(gpointer p)
{
    fixture *f = p;
    for (uint64_t page = 0; page < PAGES0; page += 16)
        request(f, 0, 0, page, 16);
    for (uint64_t page = 0; page < PAGES1; page += 32)
        request(f, 0, 1, page, 32);
    return NULL;
}

START_TEST(test_two_destination_threads_get_exactly_the_source_pages)
{
    fixture f;
    setup(&f);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    GThread *a = g_thread_new("pc-fault", faulter, &f);
    GThread *b = g_thread_new("pc-fill", filler, &f);
    uint64_t seen = 0;
    while (seen < 10)
        if ((seen = __atomic_load_n(&f.sv.requests, __ATOMIC_RELAXED)) < 10) /* as query reads it */
            g_usleep(100);
    g_thread_join(a);
    g_thread_join(b);
    ck_assert_int_eq(cpr_pc_client_done(f.client), 0);
    g_thread_join(srv);
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    uint64_t want = (PAGES0 + 6) / 7 + PAGES0 / 16 + PAGES1 / 32;
    ck_assert_uint_eq(__atomic_load_n(&f.sv.requests, __ATOMIC_RELAXED), want);
    ck_assert_uint_eq(cpr_pc_client_requests(f.client), want);
    teardown(&f);
}
END_TEST

START_TEST(test_a_vanished_destination_fails_the_server)
{
    fixture f;
    setup(&f);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    request(&f, 0, 0, 3, 2);
    close(f.fd[1]);
    f.fd[1] = -1;
    g_thread_join(srv);
    ck_assert_int_eq(f.ret, -ECONNRESET);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(f.err), "postcopy"));
    teardown(&f);
}
END_TEST

START_TEST(test_a_request_past_its_block_is_refused)
{
    fixture f;
    setup(&f);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    send_msg(f.fd[1], CPR_PC_REQUEST, 1, PAGES1 - 1, 2, 0);
    g_thread_join(srv);
    ck_assert_int_eq(f.ret, -EPROTO);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(f.err), "outside block 1"));
    teardown(&f);
}
END_TEST

/* Three background runs, then a fault's request, all read before the server answers: the
 * fault's pages come first, then the runs in order, in pieces of CPR_PC_CHUNK_PAGES. */
START_TEST(test_a_fault_is_answered_before_queued_background_runs)
{
    fixture f;
    setup(&f);
    send_msg(f.fd[1], CPR_PC_REQUEST, 0, 0, 64, 0);
    send_msg(f.fd[1], CPR_PC_REQUEST, 0, 64, 16, 0);
    send_msg(f.fd[1], CPR_PC_REQUEST, 1, 0, 32, 0);
    send_msg(f.fd[1], CPR_PC_REQUEST, 0, 200, 4, CPR_PC_URGENT);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    static const struct { uint32_t block; uint64_t page; uint32_t count; } want[] = {
        { 0, 200, 4 },                                     /* the fault */
        { 0, 0, 16 }, { 0, 16, 16 }, { 0, 32, 16 }, { 0, 48, 16 }, /* run 1 in pieces */
        { 0, 64, 16 },                                     /* run 2 */
        { 1, 0, 16 }, { 1, 16, 16 },                       /* run 3 (zero pages) */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
        struct cpr_pc_msg rep = read_piece(&f);
        ck_assert_msg(rep.block == want[i].block && rep.page == want[i].page &&
                      rep.count == want[i].count, "answer %zu: block %u pages %lu+%u", i,
                      rep.block, (unsigned long)rep.page, rep.count);
    }
    send_msg(f.fd[1], CPR_PC_DONE, 0, 0, 0, 0);
    g_thread_join(srv);
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    ck_assert_uint_eq(__atomic_load_n(&f.sv.requests, __ATOMIC_RELAXED), 4);
    ck_assert_uint_eq(__atomic_load_n(&f.sv.pages, __ATOMIC_RELAXED), 64 + 16 + 32 + 4);
    teardown(&f);
}
END_TEST

/* The client: a piece that answers nothing asked fails every waiter, naming it. */
START_TEST(test_the_client_refuses_pages_nobody_asked_for)
{
    fixture f;
    setup(&f);
    struct cpr_pc_msg rep = { .kind = CPR_PC_PAGES, .block = 1, .page = 5, .count = 1,
                              .flags = CPR_PC_ZERO };
    uint8_t buf[CPR_PC_MSG_BYTES], page[CPR_PC_PAGE];
    cpr_pc_msg_encode(&rep, buf);
    ck_assert_int_eq(send(f.fd[0], buf, sizeof(buf), MSG_NOSIGNAL), (ssize_t)sizeof(buf));
    ck_assert_cpr_fails(cpr_pc_client_fetch(f.client, 1, 1, 4, 1, page, errp_), -EPROTO,
                        "block 1 pages 5+1, which no request awaits");
    ck_assert_cpr_fails(cpr_pc_client_fetch(f.client, 0, 0, 0, 1, page, errp_), -EPROTO,
                        "which no request awaits");
    teardown(&f);
}
END_TEST

/* Recovery: a fetch's pages, fetched by two threads (the faulter, the filler). */
static gpointer fetch_both(gpointer p)
{
    fixture *f = p;
    GThread *a = g_thread_new("pc-fault", faulter, f);
    filler(f);
    g_thread_join(a);
    return NULL;
}

static void wait_paused(fixture *f)
{
    while (!cpr_pc_client_paused(f->client, NULL))
        g_usleep(1000);
}

/* A link cut pauses the client: its fetches wait, missing nothing; on a new connection they ask
 * again for what they still miss and get exactly the source's pages. */
START_TEST(test_a_cut_link_pauses_and_a_new_connection_resumes)
{
    fixture f;
    setup(&f);
    f.sv.max_bandwidth = 2 << 20; /* the fetches are under way when the link goes */
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    GThread *fetch = g_thread_new("pc-fetch", fetch_both, &f);
    while (__atomic_load_n(&f.sv.pages, __ATOMIC_RELAXED) < 16)
        g_usleep(1000);
    shutdown(f.fd[0], SHUT_RDWR); /* the link goes, both ways */
    g_thread_join(srv);
    ck_assert_msg(cpr_pc_link_error(f.ret), "the server saw the link go: %d", f.ret);
    cpr_error_free(f.err);
    f.err = NULL;
    wait_paused(&f);
    cpr_error *why = NULL;
    ck_assert_int_eq(cpr_pc_client_paused(f.client, &why), 1);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(why), "postcopy"));
    cpr_error_free(why);
    uint64_t before = __atomic_load_n(&f.sv.pages, __ATOMIC_RELAXED);
    ck_assert_uint_lt(before, PAGES0 + PAGES1);

    /* The new connection: the source says RESUME, the destination checks it, then resumes. */
    int g[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g), 0);
    uint8_t hello[CPR_PC_MSG_BYTES];
    cpr_pc_resume_encode(2, f.block_pages, hello);
    ck_assert_int_eq(send(g[0], hello, sizeof(hello), MSG_NOSIGNAL), (ssize_t)sizeof(hello));
    ck_assert_int_eq(cpr_pc_read_full(g[1], hello, sizeof(hello), "resume", NULL), 0);
    ck_assert_int_eq(cpr_pc_resume_check(hello, 2, f.block_pages, NULL), 0);
    f.sv.rfd = f.sv.wfd = g[0];
    f.sv.max_bandwidth = 0;
    srv = g_thread_new("pc-server", server_thread, &f);
    ck_assert_int_eq(cpr_pc_client_resume(f.client, g[1]), 0);
    g_thread_join(fetch); /* request() checked every page against the source */
    ck_assert_int_eq(cpr_pc_client_done(f.client), 0);
    g_thread_join(srv);
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    ck_assert_int_eq(cpr_pc_client_paused(f.client, NULL), 0);
    ck_assert_int_eq(cpr_pc_client_resume(f.client, g[1]), -EINVAL); /* not paused */
    close(g[0]);
    close(g[1]);
    teardown(&f);
}
END_TEST

static gpointer fetch_one(gpointer p)
{
    fixture *f = p;
    uint8_t *page = g_malloc(CPR_PC_PAGE);
    f->ret = cpr_pc_client_fetch(f->client, 1, 0, 3, 1, page, &f->err);
    g_free(page);
    return NULL;
}

/* Given up (the operator's cancel): every paused fetch fails with the link's failure. */
START_TEST(test_giving_up_fails_the_paused_fetches)
{
    fixture f;
    setup(&f);
    GThread *t = g_thread_new("pc-fetch", fetch_one, &f);
    uint8_t req[CPR_PC_MSG_BYTES];
    ck_assert_int_eq(cpr_pc_read_full(f.fd[0], req, sizeof(req), "request", NULL), 0);
    close(f.fd[0]); /* the source dies: the destination cannot tell it from a cut */
    f.fd[0] = socket(AF_UNIX, SOCK_STREAM, 0); /* for teardown */
    wait_paused(&f);
    cpr_pc_client_give_up(f.client);
    g_thread_join(t);
    ck_assert_int_eq(f.ret, -ECONNRESET);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(f.err), "closed the main channel"));
    ck_assert_int_eq(cpr_pc_client_resume(f.client, f.fd[1]), -EINVAL);
    teardown(&f);
}
END_TEST

/* migrate-pause's cut, with no fetch under way (nobody reads the socket): the client pauses
 * all the same, the source sees the channel end, a later fetch waits without asking until a new
 * connection comes; a second cut while paused changes nothing. */
START_TEST(test_a_cut_on_request_pauses_an_idle_client)
{
    fixture f;
    setup(&f);
    cpr_pc_client_cut(f.client);
    ck_assert_int_eq(cpr_pc_client_paused(f.client, NULL), 1);
    uint8_t buf[CPR_PC_MSG_BYTES];
    ck_assert_int_eq(cpr_pc_read_full(f.fd[0], buf, sizeof(buf), "request", NULL), -ECONNRESET);
    cpr_pc_client_cut(f.client);
    cpr_error *why = NULL;
    ck_assert_int_eq(cpr_pc_client_paused(f.client, &why), 1);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(why), "broken on request"));
    cpr_error_free(why);
    GThread *t = g_thread_new("pc-fetch", fetch_one, &f);
    int g[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g), 0);
    f.sv.rfd = f.sv.wfd = g[0];
    ck_assert_int_eq(cpr_pc_client_resume(f.client, g[1]), 0);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    g_thread_join(t); /* asked on the new connection only, and got its page */
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    ck_assert_int_eq(cpr_pc_client_done(f.client), 0);
    g_thread_join(srv);
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    close(g[0]);
    close(g[1]);
    teardown(&f);
}
END_TEST

/* A new connection is taken only from this migration's source: its block table must match. */
START_TEST(test_resume_from_another_source_is_refused)
{
    uint64_t mine[2] = { PAGES0, PAGES1 }, other[2] = { PAGES0, PAGES1 - 1 }, swapped[2] = { PAGES1, PAGES0 };
    uint8_t msg[CPR_PC_MSG_BYTES];
    cpr_pc_resume_encode(2, mine, msg);
    ck_assert_int_eq(cpr_pc_resume_check(msg, 2, mine, NULL), 0);
    cpr_pc_resume_encode(2, other, msg);
    ck_assert_cpr_fails(cpr_pc_resume_check(msg, 2, mine, errp_), -EPROTO, "not this migration's source");
    cpr_pc_resume_encode(2, swapped, msg); /* same count and sum: the CRC tells */
    ck_assert_cpr_fails(cpr_pc_resume_check(msg, 2, mine, errp_), -EPROTO, "not this migration's source");
    cpr_pc_resume_encode(1, mine, msg);
    ck_assert_cpr_fails(cpr_pc_resume_check(msg, 2, mine, errp_), -EPROTO, "1 RAM blocks");
    struct cpr_pc_msg req = { .kind = CPR_PC_REQUEST, .block = 0, .page = 0, .count = 1 };
    cpr_pc_msg_encode(&req, msg);
    ck_assert_cpr_fails(cpr_pc_resume_check(msg, 2, mine, errp_), -EPROTO, "request message, not resume");
}
END_TEST

/* The source's page server refuses a RESUME on its return path (only it sends one). */
START_TEST(test_the_server_refuses_a_resume_from_the_destination)
{
    fixture f;
    setup(&f);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    uint8_t msg[CPR_PC_MSG_BYTES];
    cpr_pc_resume_encode(2, f.block_pages, msg);
    ck_assert_int_eq(send(f.fd[1], msg, sizeof(msg), MSG_NOSIGNAL), (ssize_t)sizeof(msg));
    g_thread_join(srv);
    ck_assert_int_eq(f.ret, -EPROTO);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(f.err), "resume message"));
    ck_assert_int_eq(cpr_pc_link_error(f.ret), 0);
    teardown(&f);
}
END_TEST

static Suite *postcopy_proto_suite(void)
{
    Suite *s = suite_create("postcopy_proto");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_two_destination_threads_get_exactly_the_source_pages);
    tcase_add_test(tc, test_a_vanished_destination_fails_the_server);
    tcase_add_test(tc, test_a_request_past_its_block_is_refused);
    tcase_add_test(tc, test_a_fault_is_answered_before_queued_background_runs);
    tcase_add_test(tc, test_the_client_refuses_pages_nobody_asked_for);
    tcase_add_test(tc, test_a_cut_link_pauses_and_a_new_connection_resumes);
    tcase_add_test(tc, test_giving_up_fails_the_paused_fetches);
    tcase_add_test(tc, test_a_cut_on_request_pauses_an_idle_client);
    tcase_add_test(tc, test_resume_from_another_source_is_refused);
    tcase_add_test(tc, test_the_server_refuses_a_resume_from_the_destination);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(postcopy_proto_suite)
