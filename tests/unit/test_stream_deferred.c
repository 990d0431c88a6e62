/* SPDX-License-Identifier: MIT */
/*
 * Checksums taken when a record is written (lib/format/stream.c): referenced and volatile memory
 * checksummed slice by slice at the write, copied through the bounce buffer when it is
 * volatile or misaligned with its place in a file. The bytes on the fd must equal what a
 * memory sink (which checksums at once) produces, and memory another thread rewrites during
 * the write must still give records whose checksums hold.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "format/record.h"
#include "format/stream.h"
#include "stream_util.h"
#include "testutil.h"

START_TEST(test_crc32c_copy_equals_copy_then_table_crc)
{
    size_t n = 5 * 4096 + 333;
    g_autofree uint8_t *src = g_malloc(n + 8);
    g_autofree uint8_t *dst = g_malloc(n + 24);
    for (size_t i = 0; i < n + 8; i++)
        src[i] = (uint8_t)(i * 151 + (i >> 9));
    for (size_t so = 0; so < 8; so++) {
        for (size_t d = 0; d < 20; d += 3) { /* seven phases against 16-byte stores */
            for (size_t len = 0; len < n; len += (len < 80 ? 1 : 1231)) {
                for (int stream = 0; stream < 2; stream++) {
                    memset(dst, 0xee, n + 24);
                    uint32_t c = (stream ? cpr_crc32c_copy_stream : cpr_crc32c_copy)(7, dst + d, src + so, len);
                    ck_assert_uint_eq(c, cpr_crc32c_sw(7, src + so, len));
                    ck_assert_int_eq(memcmp(dst + d, src + so, len), 0);
                    ck_assert_uint_eq(dst[d + len], 0xee);
                    if (d)
                        ck_assert_uint_eq(dst[d - 1], 0xee);
                }
            }
        }
    }
}
END_TEST

/* One stream with every kind of payload piece: small and large copies, refs that are aligned
 * and misaligned with the file, volatile memory, an aborted record between. */
static void write_mixed(cpr_stream *w, const uint8_t *pages, size_t npages)
{
    uint32_t id = write_ram_start(w);
    size_t p = 0;
    for (int part = 0; p < npages; part++) {
        ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
        for (int k = 0; k < 6 && p < npages; k++) {
            size_t run = MIN((size_t)(1 + (part * 7 + k * 5) % 97), npages - p);
            ck_assert_int_eq(cpr_stream_put_u8(w, (uint8_t)k, NULL), 0); /* drifts the alignment */
            ck_assert_int_eq(cpr_stream_put_u64(w, p, NULL), 0);
            ck_assert_int_eq(cpr_stream_put_u32(w, (uint32_t)run, NULL), 0);
            const uint8_t *at = pages + p * 4096;
            size_t len = run * 4096;
            switch ((part + k) % 4) {
            case 0: ck_assert_int_eq(cpr_stream_put_ref(w, at, len, NULL), 0); break;
            case 1: ck_assert_int_eq(cpr_stream_put_volatile(w, at, len, NULL), 0); break;
            case 2: ck_assert_int_eq(cpr_stream_put_bytes(w, at, len, NULL), 0); break;
            default: /* odd offsets and lengths: a ref that no 64-byte phase can match */
                ck_assert_int_eq(cpr_stream_put_ref(w, at + 3, len - 3, NULL), 0);
                ck_assert_int_eq(cpr_stream_put_bytes(w, at, 3, NULL), 0);
                break;
            }
            p += run;
        }
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
        if (part == 2) {
            /* An aborted record with deferred pieces leaves no trace. */
            ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
            ck_assert_int_eq(cpr_stream_put_volatile(w, pages, 8192, NULL), 0);
            ck_assert_int_eq(cpr_stream_put_ref(w, pages, 8192, NULL), 0);
            cpr_rec_abort(w);
        }
    }
    write_ram_end(w, id);
}

/* Reads the stream back from fd and checks every page against `pages`. */
static void check_mixed(int fd, const uint8_t *pages, size_t npages)
{
    cpr_stream *s = open_reader(fd, 0);
    struct cpr_rec r;
    size_t got = 0;
    while (next_part(s, &r)) {
        while (cpr_stream_remaining(s)) {
            uint8_t k;
            uint64_t first;
            uint32_t run;
            const void *data;
            ck_assert_int_eq(cpr_stream_get_u8(s, &k, NULL), 0);
            ck_assert_int_eq(cpr_stream_get_u64(s, &first, NULL), 0);
            ck_assert_int_eq(cpr_stream_get_u32(s, &run, NULL), 0);
            ck_assert_uint_eq(first, got);
            ck_assert_int_eq(cpr_stream_get_ptr(s, &data, (size_t)run * 4096, NULL), 0);
            if (pages) {
                const uint8_t *want = pages + first * 4096;
                ck_assert_int_eq(memcmp(data, want, (size_t)run * 4096) == 0 ||
                                 /* case 3 writes the first 3 bytes last */
                                 (memcmp((const uint8_t *)data, want + 3, (size_t)run * 4096 - 3) == 0 &&
                                  memcmp((const uint8_t *)data + (size_t)run * 4096 - 3, want, 3) == 0),
                                 1);
            }
            got += run;
        }
    }
    ck_assert_uint_eq(got, npages);
    cpr_stream_free(s);
}

START_TEST(test_deferred_checksums_give_the_bytes_a_memory_sink_gives)
{
    size_t npages = 600;
    g_autofree uint8_t *pages = g_malloc(npages * 4096 + 4096);
    for (size_t i = 0; i < npages * 4096 + 4096; i++)
        pages[i] = (uint8_t)(i * 7 + (i >> 12) * 13);
    cpr_stream *m;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &m, NULL), 0);
    write_mixed(m, pages, npages);
    const void *mdata;
    size_t mlen;
    ck_assert_int_eq(cpr_stream_mem_data(m, &mdata, &mlen, NULL), 0);

    /* In a file, from several start offsets (file:PATH,offset=N): the same bytes. */
    for (int lead = 0; lead < 3; lead++) {
        int fd = tmpfile_fd();
        off_t base = lead == 0 ? 0 : lead == 1 ? 13 : 4096 + 61;
        ck_assert_int_eq(lseek(fd, base, SEEK_SET), base);
        cpr_stream *w;
        ck_assert_int_eq(cpr_stream_new_fd_writer(fd, 0, &w, NULL), 0);
        write_mixed(w, pages, npages);
        ck_assert_uint_eq(cpr_stream_offset(w), mlen);
        cpr_stream_free(w);
        ck_assert_int_eq(lseek(fd, 0, SEEK_END), base + (off_t)mlen);
        g_autofree uint8_t *back = g_malloc(mlen);
        ck_assert_int_eq(pread(fd, back, mlen, base), (ssize_t)mlen);
        ck_assert_int_eq(memcmp(back, mdata, mlen), 0);
        lseek(fd, base, SEEK_SET);
        check_mixed(fd, pages, npages);
        close(fd);
    }
    cpr_stream_free(m);
}
END_TEST

struct scribbler {
    uint64_t *words;
    size_t n;
    volatile int stop;
};

static void *scribble(void *p)
{
    struct scribbler *sc = p;
    uint64_t gen = 1;
    while (!sc->stop) {
        for (size_t i = 0; i < sc->n; i += 67)
            __atomic_store_n(&sc->words[i], gen * 0x0101010101010101ull, __ATOMIC_RELAXED);
        gen = gen % 250 + 1;
        /* Let the writer run: under valgrind threads take turns, and a scribbler that never
         * yields starves the write it is meant to race. */
        sched_yield();
    }
    return NULL;
}

START_TEST(test_volatile_memory_rewritten_during_the_write_still_checks)
{
    size_t npages = 2048; /* 8 MiB: many slices */
    size_t n = npages * 4096 / 8;
    uint64_t *words = g_malloc(npages * 4096 + 4096);
    for (size_t i = 0; i < n + 512; i++)
        words[i] = 0x0101010101010101ull;
    struct scribbler sc = { words, n, 0 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, scribble, &sc), 0);
    int fd = tmpfile_fd();
    ck_assert_int_eq(lseek(fd, 5, SEEK_SET), 5);
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_fd_writer(fd, 0, &w, NULL), 0);
    uint32_t id = write_ram_start(w);
    for (int rep = 0; rep < 4; rep++) {
        ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
        ck_assert_int_eq(cpr_stream_put_u8(w, 1, NULL), 0);
        ck_assert_int_eq(cpr_stream_put_volatile(w, words, npages * 4096, NULL), 0);
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    }
    write_ram_end(w, id);
    cpr_stream_free(w);
    sc.stop = 1;
    pthread_join(th, NULL);

    /* Every checksum holds, and every word is one the writer really held at some point. */
    lseek(fd, 5, SEEK_SET);
    cpr_stream *s = open_reader(fd, CPR_STREAM_OWN_FD);
    struct cpr_rec r;
    int parts = 0;
    while (next_part(s, &r)) {
        uint8_t one;
        const void *data;
        ck_assert_int_eq(cpr_stream_get_u8(s, &one, NULL), 0);
        ck_assert_int_eq(cpr_stream_get_ptr(s, &data, npages * 4096, NULL), 0);
        for (size_t i = 0; i < n; i++) {
            uint64_t v;
            memcpy(&v, (const uint8_t *)data + i * 8, 8);
            ck_assert_uint_eq(v % 0x0101010101010101ull, 0);
        }
        parts++;
    }
    ck_assert_int_eq(parts, 4);
    cpr_stream_free(s);
    g_free(words);
}
END_TEST

static Suite *deferred_suite(void)
{
    Suite *s = suite_create("stream_deferred");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_crc32c_copy_equals_copy_then_table_crc);
    tcase_add_test(tc, test_deferred_checksums_give_the_bytes_a_memory_sink_gives);
    tcase_add_test(tc, test_volatile_memory_rewritten_during_the_write_still_checks);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(deferred_suite)
