/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's return path between threads, as at run time: the source's page server on its own
 * thread, two destination threads (a "fault" one and a "filler" one) taking turns on the one
 * socket, a reader of the served counter meanwhile. Every answer must carry the source's bytes
 * and their CRC32C, zero runs no data; a destination that disappears, or sends a bad message,
 * fails the server naming it. In run-tsan's suites.
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
    GMutex turn;
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
    g_mutex_init(&f->turn);
}

static void teardown(fixture *f)
{
    close(f->fd[0]);
    if (f->fd[1] >= 0)
        close(f->fd[1]);
    g_mutex_clear(&f->turn);
    cpr_error_free(f->err);
    g_free(f->ram0);
    g_free(f->ram1);
}

static void send_msg(int fd, uint32_t kind, uint32_t block, uint64_t page, uint32_t count)
{
    struct cpr_pc_msg m = { .kind = kind, .block = block, .page = page, .count = count };
    uint8_t buf[CPR_PC_MSG_BYTES];
    cpr_pc_msg_encode(&m, buf);
    ck_assert_int_eq(send(fd, buf, sizeof(buf), MSG_NOSIGNAL), (ssize_t)sizeof(buf));
}

/* One request and its checked answer, with the socket's turn held. */
static void request(fixture *f, uint32_t block, uint64_t page, uint32_t count)
{
    static uint8_t zero[CPR_PC_PAGE];
    g_mutex_lock(&f->turn);
    send_msg(f->fd[1], CPR_PC_REQUEST, block, page, count);
    uint8_t buf[CPR_PC_MSG_BYTES];
    struct cpr_pc_msg rep;
    ck_assert_int_eq(cpr_pc_read_full(f->fd[1], buf, sizeof(buf), "answer", NULL), 0);
    ck_assert_int_eq(cpr_pc_msg_decode(buf, 2, f->block_pages, &rep, NULL), 0);
    ck_assert_uint_eq(rep.kind, CPR_PC_PAGES);
    ck_assert(rep.block == block && rep.page == page && rep.count == count);
    const uint8_t *want = f->blocks[block].host + page * CPR_PC_PAGE;
    if (rep.flags & CPR_PC_ZERO) {
        for (uint32_t i = 0; i < count; i++)
            ck_assert_int_eq(memcmp(want + (size_t)i * CPR_PC_PAGE, zero, CPR_PC_PAGE), 0);
    } else {
        size_t len = (size_t)count * CPR_PC_PAGE;
        uint8_t *got = g_malloc(len);
        ck_assert_int_eq(cpr_pc_read_full(f->fd[1], got, len, "pages", NULL), 0);
        ck_assert_uint_eq(cpr_crc32c(0, got, len), rep.crc);
        ck_assert_int_eq(memcmp(got, want, len), 0);
        g_free(got);
    }
    g_mutex_unlock(&f->turn);
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
        request(f, 0, (i * 37) % PAGES0, 1);
    return NULL;
}

static gpointer filler(gpointer p)
{
    fixture *f = p;
    for (uint64_t page = 0; page < PAGES0; page += 16)
        request(f, 0, page, 16);
    for (uint64_t page = 0; page < PAGES1; page += 32)
        request(f, 1, page, 32);
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
    send_msg(f.fd[1], CPR_PC_DONE, 0, 0, 0);
    g_thread_join(srv);
    ck_assert_msg(f.ret == 0, "%s", f.err ? cpr_error_message(f.err) : "");
    uint64_t want = (PAGES0 + 6) / 7 + PAGES0 / 16 + PAGES1 / 32;
    ck_assert_uint_eq(__atomic_load_n(&f.sv.requests, __ATOMIC_RELAXED), want);
    teardown(&f);
}
END_TEST

START_TEST(test_a_vanished_destination_fails_the_server)
{
    fixture f;
    setup(&f);
    GThread *srv = g_thread_new("pc-server", server_thread, &f);
    request(&f, 0, 3, 2);
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
    send_msg(f.fd[1], CPR_PC_REQUEST, 1, PAGES1 - 1, 2);
    g_thread_join(srv);
    ck_assert_int_eq(f.ret, -EPROTO);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(f.err), "outside block 1"));
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
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(postcopy_proto_suite)
