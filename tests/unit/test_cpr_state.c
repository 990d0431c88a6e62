/* SPDX-License-Identifier: MIT */
/* The cpr state's encoding: round trip, corruption and truncation, limits, table rules. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/fd.h>

#include "handover/cpr_state.h"
#include "testutil.h"

static void add(cpr_state *st, uint32_t kind, const char *name, int id, uint64_t size, int slot)
{
    cpr_state_entry e = { .kind = kind, .name = name, .id = id,
                          .type = kind == CPR_STATE_RAM ? S_IFREG : S_IFCHR, .size = size,
                          .page_size = size ? 4096 : 0, .slot = slot };
    cpr_state_add(st, &e, strlen(name));
}

static GByteArray *sample(cpr_mode mode)
{
    g_autoptr(cpr_state) st = cpr_state_new(mode, 0);
    add(st, CPR_STATE_FD, "tap", 0, 0, 0);
    add(st, CPR_STATE_FD, "tap", 1, 0, 1);
    add(st, CPR_STATE_RAM, "pc.ram", 0, 1ull << 32, 2);
    GByteArray *b = g_byte_array_new();
    ck_assert_int_eq(cpr_state_encode(st, b, NULL), 0);
    return b;
}

START_TEST(test_state_round_trips)
{
    g_autoptr(GByteArray) b = sample(CPR_MODE_CPR_TRANSFER);
    g_autoptr(cpr_state) st = NULL;
    ck_assert_int_eq(cpr_state_decode(b->data, b->len, 100, 3, 0, &st, NULL), 0);
    ck_assert_int_eq(st->mode, CPR_MODE_CPR_TRANSFER);
    ck_assert_uint_eq(st->entries->len, 3);
    cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, 1);
    ck_assert_str_eq(e->name, "tap");
    ck_assert_int_eq(e->id, 1);
    ck_assert_int_eq(e->slot, 1);
    ck_assert_uint_eq(e->type, S_IFCHR);
    e = &g_array_index(st->entries, cpr_state_entry, 2);
    ck_assert_uint_eq(e->kind, CPR_STATE_RAM);
    ck_assert_uint_eq(e->size, 1ull << 32);
    ck_assert_uint_eq(e->page_size, 4096);
}
END_TEST

START_TEST(test_state_refuses_every_corrupted_byte_and_truncation)
{
    g_autoptr(GByteArray) b = sample(CPR_MODE_CPR_EXEC);
    g_autofree uint8_t *copy = g_memdup2(b->data, b->len);
    for (guint i = 0; i < b->len; i++) {
        copy[i] ^= 0x41;
        cpr_state *st = NULL;
        cpr_error *err = NULL;
        ck_assert_msg(cpr_state_decode(copy, b->len, 100, 0, 1, &st, &err) < 0, "byte %u", i);
        ck_assert_ptr_null(st);
        cpr_error_free(err);
        copy[i] ^= 0x41;
    }
    for (guint len = 0; len < b->len; len++) {
        cpr_state *st = NULL;
        ck_assert_msg(cpr_state_decode(b->data, len, 100, 0, 1, &st, NULL) < 0, "length %u", len);
    }
}
END_TEST

START_TEST(test_state_enforces_entry_limit)
{
    g_autoptr(GByteArray) b = sample(CPR_MODE_CPR_TRANSFER);
    cpr_state *st = NULL;
    ck_assert_cpr_fails(cpr_state_decode(b->data, b->len, 2, 3, 0, &st, errp_), -E2BIG, "the limit is 2");
}
END_TEST

START_TEST(test_state_refuses_slots_beyond_the_fds_that_arrived)
{
    g_autoptr(GByteArray) b = sample(CPR_MODE_CPR_TRANSFER);
    cpr_state *st = NULL;
    ck_assert_cpr_fails(cpr_state_decode(b->data, b->len, 100, 2, 0, &st, errp_), -EPROTO,
                        "ram block 'pc.ram' refers to fd 2, but 2 fds arrived");
}
END_TEST

/* Two fd entries (name, id, slot) each: decoding them with 2 fds must fail with needle. */
static void two_fds_refused(const char *n1, int slot1, const char *n2, int slot2, const char *needle)
{
    g_autoptr(cpr_state) st = cpr_state_new(CPR_MODE_CPR_TRANSFER, 0);
    add(st, CPR_STATE_FD, n1, 0, 0, slot1);
    add(st, CPR_STATE_FD, n2, 0, 0, slot2);
    g_autoptr(GByteArray) b = g_byte_array_new();
    ck_assert_int_eq(cpr_state_encode(st, b, NULL), 0);
    cpr_state *out = NULL;
    ck_assert_cpr_fails(cpr_state_decode(b->data, b->len, 100, 2, 0, &out, errp_), -EPROTO, needle);
}

START_TEST(test_state_refuses_duplicates)
{
    two_fds_refused("tap", 0, "tap", 1, "fd 'tap' id 0 is listed twice");
    two_fds_refused("a", 0, "b", 0, "reuses fd 0");
}
END_TEST

START_TEST(test_state_refuses_modes_without_fds)
{
    g_autoptr(GByteArray) b = sample(CPR_MODE_CPR_REBOOT);
    cpr_state *st = NULL;
    ck_assert_cpr_fails(cpr_state_decode(b->data, b->len, 100, 3, 0, &st, errp_), -EBADMSG,
                        "mode cpr-reboot is not cpr-transfer or cpr-exec");
}
END_TEST

/* sample()'s entries (slots 0-2) and cpr-transfer's commit signal at `slot`, encoded. */
static GByteArray *with_commit_signal(cpr_mode mode, int slot)
{
    g_autoptr(cpr_state) st = cpr_state_new(mode, 0);
    add(st, CPR_STATE_FD, "tap", 0, 0, 0);
    add(st, CPR_STATE_FD, "tap", 1, 0, 1);
    add(st, CPR_STATE_RAM, "pc.ram", 0, 1ull << 32, 2);
    st->commit_slot = slot;
    GByteArray *b = g_byte_array_new();
    ck_assert_int_eq(cpr_state_encode(st, b, NULL), 0);
    return b;
}

START_TEST(test_state_carries_the_commit_signal)
{
    g_autoptr(GByteArray) b = with_commit_signal(CPR_MODE_CPR_TRANSFER, 3);
    g_autoptr(cpr_state) st = NULL;
    ck_assert_int_eq(cpr_state_decode(b->data, b->len, 100, 4, 0, &st, NULL), 0);
    ck_assert_int_eq(st->commit_slot, 3);
    ck_assert_uint_eq(st->entries->len, 3);
    /* A 1.0/1.1 state has none. */
    g_autoptr(GByteArray) old = sample(CPR_MODE_CPR_TRANSFER);
    g_autoptr(cpr_state) st_old = NULL;
    ck_assert_int_eq(cpr_state_decode(old->data, old->len, 100, 3, 0, &st_old, NULL), 0);
    ck_assert_int_eq(st_old->commit_slot, -1);
}
END_TEST

START_TEST(test_state_refuses_a_commit_signal_it_cannot_use)
{
    cpr_state *st = NULL;
    g_autoptr(GByteArray) beyond = with_commit_signal(CPR_MODE_CPR_TRANSFER, 3);
    ck_assert_cpr_fails(cpr_state_decode(beyond->data, beyond->len, 100, 3, 0, &st, errp_), -EPROTO,
                        "commit-signal names fd 3, but 3 fds arrived");
    /* The signal's fd is nobody's: an entry that claims it is refused. */
    g_autoptr(GByteArray) claimed = with_commit_signal(CPR_MODE_CPR_TRANSFER, 1);
    ck_assert_cpr_fails(cpr_state_decode(claimed->data, claimed->len, 100, 4, 0, &st, errp_), -EPROTO,
                        "fd 'tap' id 1 reuses fd 1");
    g_autoptr(GByteArray) exec = with_commit_signal(CPR_MODE_CPR_EXEC, 3);
    ck_assert_cpr_fails(cpr_state_decode(exec->data, exec->len, 100, 0, 1, &st, errp_), -EPROTO,
                        "(cpr-exec has none)");
    ck_assert_ptr_null(st);
}
END_TEST

/* The type each entry carries is the one its fd had when the VMM saved it: sending costs no
 * fstat per fd. An fd number reused behind the registry's back is then caught by the
 * receiver's check instead of passing another file under the saved name. */
START_TEST(test_collect_sends_the_type_each_fd_had_when_saved)
{
    cpr_ctx *ctx, *peer;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_int_eq(cpr_ctx_new(&peer, 0, NULL), 0);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC), p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "dev", 0, null, NULL), 0);
    ck_assert_int_eq(cpr_fd_save(ctx, "pipe", 0, p[0], NULL), 0);

    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(cpr_state) st = NULL;
    ck_assert_int_eq(cpr_state_collect(ctx, CPR_MODE_CPR_TRANSFER, 0, &st, fds, NULL), 0);
    ck_assert_uint_eq(g_array_index(st->entries, cpr_state_entry, 0).type, S_IFCHR);
    ck_assert_uint_eq(g_array_index(st->entries, cpr_state_entry, 1).type, S_IFIFO);

    /* The VMM reuses the saved number for a pipe without resaving it. */
    ck_assert_int_eq(dup3(p[1], null, O_CLOEXEC), null);
    g_autoptr(cpr_state) stale = NULL;
    g_array_set_size(fds, 0);
    ck_assert_int_eq(cpr_state_collect(ctx, CPR_MODE_CPR_TRANSFER, 0, &stale, fds, NULL), 0);
    ck_assert_uint_eq(g_array_index(stale->entries, cpr_state_entry, 0).type, S_IFCHR);
    g_autoptr(GArray) arrived = g_array_new(FALSE, FALSE, sizeof(int));
    for (guint i = 0; i < fds->len; i++) {
        int d = fcntl(g_array_index(fds, int, i), F_DUPFD_CLOEXEC, 0);
        g_array_append_val(arrived, d);
    }
    ck_assert_cpr_fails(cpr_state_install(peer, stale, arrived, NULL, errp_), -EPROTO,
                        "fd 'dev' id 0: expected a character device");
    ck_assert_uint_eq(cpr_fd_count(peer), 0);

    /* Resaving takes the type again. */
    ck_assert_int_eq(cpr_fd_resave(ctx, "dev", 0, null, NULL), 0);
    g_autoptr(cpr_state) fresh = NULL;
    g_array_set_size(fds, 0);
    ck_assert_int_eq(cpr_state_collect(ctx, CPR_MODE_CPR_TRANSFER, 0, &fresh, fds, NULL), 0);
    ck_assert_uint_eq(g_array_index(fresh->entries, cpr_state_entry, 1).type, S_IFIFO);
    cpr_ctx_free(peer);
    cpr_ctx_free(ctx);
    close(null);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* Saving an fd that is not open is accepted, as it always was; the send names it. */
START_TEST(test_collect_names_an_fd_that_was_not_open_when_saved)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    int gone = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(gone);
    ck_assert_int_eq(cpr_fd_save(ctx, "gone", 3, gone, NULL), 0);
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    cpr_state *st = NULL;
    g_autofree char *needle = g_strdup_printf("fd 'gone' id 3: fd %d", gone);
    ck_assert_cpr_fails(cpr_state_collect(ctx, CPR_MODE_CPR_TRANSFER, 0, &st, fds, errp_), -EBADF, needle);
    ck_assert_ptr_null(st);
    ck_assert_uint_eq(fds->len, 0);
    cpr_ctx_free(ctx);
}
END_TEST

static Suite *cpr_state_suite(void)
{
    Suite *s = suite_create("cpr_state");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_state_round_trips);
    tcase_add_test(tc, test_state_refuses_every_corrupted_byte_and_truncation);
    tcase_add_test(tc, test_state_enforces_entry_limit);
    tcase_add_test(tc, test_state_refuses_slots_beyond_the_fds_that_arrived);
    tcase_add_test(tc, test_state_refuses_duplicates);
    tcase_add_test(tc, test_state_refuses_modes_without_fds);
    tcase_add_test(tc, test_state_carries_the_commit_signal);
    tcase_add_test(tc, test_state_refuses_a_commit_signal_it_cannot_use);
    tcase_add_test(tc, test_collect_sends_the_type_each_fd_had_when_saved);
    tcase_add_test(tc, test_collect_names_an_fd_that_was_not_open_when_saved);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(cpr_state_suite)
