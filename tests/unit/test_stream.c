/* SPDX-License-Identifier: MIT */
/* Streams and record framing: checksums, round trips over memory and fds, zero-copy refs,
 * limits, and a clean error for every corruption and truncation of a small stream. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "format/record.h"
#include "format/stream.h"
#include "stream_util.h"
#include "testutil.h"

START_TEST(test_crc32c_matches_known_vectors)
{
    ck_assert_uint_eq(cpr_crc32c(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(cpr_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(cpr_crc32c(0, "", 0), 0);
    uint8_t zeros[32] = { 0 };
    ck_assert_uint_eq(cpr_crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
}
END_TEST

START_TEST(test_crc32c_fast_path_equals_table_path_at_every_alignment)
{
    size_t n = 3 * 4096 + 77;
    g_autofree uint8_t *buf = g_malloc(n + 8);
    for (size_t i = 0; i < n + 8; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 7));
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len < n; len += (len < 64 ? 1 : 997)) {
            ck_assert_uint_eq(cpr_crc32c(0, buf + off, len), cpr_crc32c_sw(0, buf + off, len));
            /* Chaining at an odd split gives the same result. */
            uint32_t c = cpr_crc32c(0, buf + off, len / 3);
            ck_assert_uint_eq(cpr_crc32c(c, buf + off + len / 3, len - len / 3), cpr_crc32c_sw(0, buf + off, len));
        }
    }
}
END_TEST

/* A small stream with every record type but schema. */
static void write_small(cpr_stream *s)
{
    uint32_t id;
    ck_assert_int_eq(cpr_rec_write_stream_header(s, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(s, CPR_REC_CONFIG, "{}", 2, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_section(s, CPR_REC_START, "ram", 0, 1, &id, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u32(s, 0xdeadbeef, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(s, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_section(s, CPR_REC_FULL, "dev", 3, 2, NULL, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u16(s, 0x1234, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(s, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_part(s, CPR_REC_PART, id, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_u64(s, 42, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(s, NULL), 0);
    write_ram_end(s, id);
}

/* The small stream in a new memory sink; *data lives as long as the returned stream. */
static cpr_stream *small_stream(const void **data, size_t *len)
{
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    write_small(w);
    ck_assert_int_eq(cpr_stream_mem_data(w, data, len, NULL), 0);
    return w;
}

/* Reads a whole stream; returns 0 or the first error (message in *errp). */
static int read_all(const void *data, size_t len, int *nrec, cpr_error **errp)
{
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &s, NULL), 0);
    int ret = cpr_rec_read_stream_header(s, NULL, errp);
    struct cpr_rec r;
    int n = 0;
    while (ret >= 0 && (ret = cpr_rec_next(s, &r, errp)) > 0)
        n++;
    if (nrec)
        *nrec = n;
    cpr_stream_free(s);
    return ret;
}

START_TEST(test_records_round_trip_through_memory)
{
    cpr_stream *w, *s;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    write_small(w);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_uint_eq(len, cpr_stream_offset(w));
    ck_assert_int_eq(cpr_stream_new_mem_source(data, len, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    struct cpr_rec r;
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_uint_eq(r.type, CPR_REC_CONFIG);
    ck_assert_uint_eq(r.offset, 16);
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_uint_eq(r.type, CPR_REC_START);
    ck_assert_str_eq(r.name, "ram");
    uint32_t id = r.section_id, v32;
    ck_assert_int_eq(cpr_stream_get_u32(s, &v32, NULL), 0);
    ck_assert_uint_eq(v32, 0xdeadbeef);
    ck_assert_uint_eq(cpr_stream_remaining(s), 0);
    ck_assert_cpr_fails(cpr_stream_get_u8(s, (uint8_t *)&v32, errp_), -EBADMSG, "payload ends");
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_str_eq(r.name, "dev");
    ck_assert_uint_eq(r.instance, 3);
    ck_assert_uint_eq(r.version, 2);
    uint16_t v16;
    ck_assert_int_eq(cpr_stream_get_u16(s, &v16, NULL), 0);
    ck_assert_uint_eq(v16, 0x1234);
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_uint_eq(r.type, CPR_REC_PART);
    ck_assert_uint_eq(r.section_id, id);
    ck_assert_str_eq(r.name, "ram");
    uint64_t v64;
    ck_assert_int_eq(cpr_stream_get_u64(s, &v64, NULL), 0);
    ck_assert_uint_eq(v64, 42);
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_uint_eq(r.type, CPR_REC_END);
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 0);
    ck_assert_uint_eq(cpr_stream_offset(s), len);
    cpr_stream_free(s);
    cpr_stream_free(w);
}
END_TEST

START_TEST(test_every_corrupt_byte_and_every_truncation_fails_cleanly)
{
    const void *data;
    size_t len;
    cpr_stream *w = small_stream(&data, &len);
    ck_assert_int_eq(read_all(data, len, NULL, NULL), 0);
    g_autofree uint8_t *copy = g_memdup2(data, len);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            copy[i] ^= (uint8_t)(1u << bit);
            cpr_error *err = NULL;
            int ret = read_all(copy, len, NULL, &err);
            ck_assert_msg(ret < 0, "flipping bit %d of byte %zu went unnoticed", bit, i);
            ck_assert_ptr_nonnull(err);
            ck_assert_int_eq(cpr_error_code(err), ret);
            cpr_error_free(err);
            copy[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (size_t cut = 0; cut < len; cut++) {
        cpr_error *err = NULL;
        ck_assert_int_eq(read_all(data, cut, NULL, &err), -EBADMSG);
        ck_assert_msg(strstr(cpr_error_message(err), "truncated") != NULL, "cut %zu: %s", cut,
                      cpr_error_message(err));
        cpr_error_free(err);
    }
    cpr_stream_free(w);
}
END_TEST

START_TEST(test_fd_reader_stops_right_after_the_end_record)
{
    const void *data;
    size_t len;
    cpr_stream *w = small_stream(&data, &len);
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    ck_assert_int_eq(write(fds[1], data, len), (ssize_t)len);
    ck_assert_int_eq(write(fds[1], "after", 5), 5);
    close(fds[1]);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(fds[0], 0, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    struct cpr_rec r;
    int ret;
    while ((ret = cpr_rec_next(s, &r, NULL)) > 0)
        ;
    ck_assert_int_eq(ret, 0);
    cpr_stream_free(s);
    char tail[8] = { 0 };
    ck_assert_int_eq(read(fds[0], tail, sizeof(tail)), 5);
    ck_assert_str_eq(tail, "after");
    close(fds[0]);
    cpr_stream_free(w);
}
END_TEST

/* A file of three FULL records "big" (instance i: n - 1000 i bytes of big[]) between the
 * config and the end; the fd at offset 0. */
static int big_records_file(const uint8_t *big, size_t n)
{
    int fd = tmpfile_fd();
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_fd_writer(fd, 0, &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, NULL), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_FULL, "big", (uint32_t)i, 1, NULL, NULL), 0);
        ck_assert_int_eq(cpr_stream_put_bytes(w, big, n - (size_t)i * 1000, NULL), 0);
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    }
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
    cpr_stream_free(w);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static uint8_t *big_pattern(size_t n)
{
    uint8_t *big = g_malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 7);
    return big;
}

/* A stream of large records (RAM parts) grows its read buffer once and reuses it. */
START_TEST(test_fd_reader_grows_for_records_larger_than_its_buffer)
{
    size_t n = (3u << 20) + 123;
    g_autofree uint8_t *big = big_pattern(n);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(big_records_file(big, n), CPR_STREAM_OWN_FD, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    struct cpr_rec r;
    int got = 0, ret;
    while ((ret = cpr_rec_next(s, &r, NULL)) > 0) {
        if (r.type != CPR_REC_FULL)
            continue;
        ck_assert_ptr_null(s->staged);
        const void *p;
        size_t len = n - r.instance * 1000;
        ck_assert_int_eq(cpr_stream_get_ptr(s, &p, len, NULL), 0);
        ck_assert_int_eq(memcmp(p, big, len), 0);
        got++;
    }
    ck_assert_int_eq(ret, 0);
    ck_assert_int_eq(got, 3);
    ck_assert_uint_ge(s->cap, n);
    cpr_stream_free(s);
}
END_TEST

/* With stage_large (a mapped-ram stream's, set by its first region record), records larger
 * than the read buffer are staged in a memfd: the buffer does not grow, the offsets and
 * payloads are those of the file, and the next record reads from the buffer. */
START_TEST(test_fd_reader_stages_records_larger_than_its_buffer)
{
    size_t n = (3u << 20) + 123;
    g_autofree uint8_t *big = big_pattern(n);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(big_records_file(big, n), CPR_STREAM_OWN_FD, &s, NULL), 0);
    cpr_stream_stage_large_records(s);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    struct cpr_rec r;
    int got = 0, ret;
    uint64_t next = 0;
    while ((ret = cpr_rec_next(s, &r, NULL)) > 0) {
        if (next)
            ck_assert_uint_eq(r.offset, next);
        next = r.offset + CPR_RECORD_HEADER_SIZE + r.len + CPR_RECORD_TRAILER_SIZE;
        if (r.type != CPR_REC_FULL) {
            ck_assert_ptr_null(s->staged);
            continue;
        }
        ck_assert_ptr_nonnull(s->staged);
        ck_assert_uint_le(s->cap, 1u << 20);
        const void *p;
        size_t len = n - r.instance * 1000;
        ck_assert_uint_eq(cpr_stream_remaining(s), len);
        ck_assert_int_eq(cpr_stream_get_ptr(s, &p, len, NULL), 0);
        ck_assert_int_eq(memcmp(p, big, len), 0);
        got++;
    }
    ck_assert_int_eq(ret, 0);
    ck_assert_int_eq(got, 3);
    ck_assert_ptr_null(s->staged);
    cpr_stream_free(s);
}
END_TEST

/* A staged record taken outlives the stream, which reads on from its buffer; a staged record
 * cut short names the bytes there were. */
START_TEST(test_staged_record_taken_and_staged_record_cut_short)
{
    size_t n = (2u << 20) + 5;
    g_autofree uint8_t *big = big_pattern(n);
    int fd = big_records_file(big, n);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(dup(fd), CPR_STREAM_OWN_FD, &s, NULL), 0);
    cpr_stream_stage_large_records(s);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    struct cpr_rec r;
    do
        ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    while (r.type != CPR_REC_FULL);
    const void *p;
    ck_assert_int_eq(cpr_stream_get_ptr(s, &p, n, NULL), 0);
    struct cpr_taken_record t;
    ck_assert_int_eq(cpr_stream_take_record(s, &t), 0);
    ck_assert_uint_ge(t.map_len, n);
    ck_assert_ptr_null(s->staged);
    ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    ck_assert_uint_eq(r.instance, 1);
    cpr_stream_free(s);
    ck_assert_int_eq(memcmp(p, big, n), 0);
    cpr_taken_record_free(&t);

    /* Cut inside the second record: the error counts the bytes staged before the end. */
    off_t second;
    lseek(fd, 0, SEEK_SET); /* dup: one offset */
    ck_assert_int_eq(cpr_stream_new_fd_reader(dup(fd), CPR_STREAM_OWN_FD, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    do
        ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    while (r.type != CPR_REC_FULL);
    second = (off_t)(r.offset + CPR_RECORD_HEADER_SIZE + r.len + CPR_RECORD_TRAILER_SIZE);
    cpr_stream_free(s);
    ck_assert_int_eq(ftruncate(fd, second + (off_t)(1u << 20) + 77), 0);
    lseek(fd, 0, SEEK_SET);
    ck_assert_int_eq(cpr_stream_new_fd_reader(fd, CPR_STREAM_OWN_FD, &s, NULL), 0);
    cpr_stream_stage_large_records(s);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    do
        ck_assert_int_eq(cpr_rec_next(s, &r, NULL), 1);
    while (r.type != CPR_REC_FULL);
    ck_assert_cpr_fails(cpr_rec_next(s, &r, errp_), -EBADMSG, "stream ends after 1048653");
    ck_assert_ptr_null(s->staged);
    cpr_stream_free(s);
}
END_TEST

START_TEST(test_checksum_error_names_record_and_offset)
{
    const void *data;
    size_t len;
    cpr_stream *w = small_stream(&data, &len);
    g_autofree uint8_t *copy = g_memdup2(data, len);
    /* config: header at 16, payload "{}" at 32; record #1 (start) header at 16+16+2+4 = 38. */
    copy[38 + 16 + 17] ^= 0x40; /* inside the 'ram' start record's payload */
    ck_assert_cpr_fails(read_all(copy, len, NULL, errp_), -EBADMSG,
                        "record #1 (start) at offset 38: payload checksum mismatch");
    copy[38 + 16 + 17] ^= 0x40;
    copy[38 + 3] ^= 1; /* its length */
    ck_assert_cpr_fails(read_all(copy, len, NULL, errp_), -EBADMSG,
                        "record #1 at offset 38: header checksum mismatch");
    cpr_stream_free(w);
}
END_TEST

/* Writes a record header claiming `len` payload bytes, with a valid header checksum. */
static void forge_stream_header(uint8_t *buf)
{
    memcpy(buf, CPR_FORMAT_MAGIC, 8);
    memset(buf + 8, 0, 8);
    buf[8] = CPR_FORMAT_MAJOR;
    uint32_t c = GUINT32_TO_LE(cpr_crc32c(0, buf, 12));
    memcpy(buf + 12, &c, 4);
}

static size_t forge_header(uint8_t *p, uint64_t len, uint8_t type, uint8_t flags)
{
    uint64_t le = GUINT64_TO_LE(len);
    memset(p, 0, 16);
    memcpy(p, &le, 8);
    p[8] = type;
    p[9] = flags;
    uint32_t c = GUINT32_TO_LE(cpr_crc32c(0, p, 12));
    memcpy(p + 12, &c, 4);
    return 16;
}

/* A stream header and one config record header claiming `claim` bytes, read from a pipe:
 * returns the reader positioned after the stream header. */
static cpr_stream *pipe_with_claim(uint64_t claim, uint8_t *buf, size_t *n)
{
    forge_stream_header(buf);
    *n = 16 + forge_header(buf + 16, claim, CPR_REC_CONFIG, 0);
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    ck_assert_int_eq(write(fds[1], buf, *n), (ssize_t)*n);
    close(fds[1]);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(fds[0], CPR_STREAM_OWN_FD, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    return s;
}

START_TEST(test_huge_claimed_record_allocates_nothing_and_fails)
{
    uint8_t buf[64];
    size_t n;
    struct cpr_rec r;
    /* Over a pipe: the reader must refuse before reading or allocating. */
    cpr_stream *s = pipe_with_claim(1ull << 63, buf, &n);
    ck_assert_cpr_fails(cpr_rec_next(s, &r, errp_), -EMSGSIZE, "payload of 9223372036854775808 bytes");
    ck_assert_uint_le(s->cap, 1u << 20);
    cpr_stream_free(s);
    /* From memory too. */
    ck_assert_cpr_fails(read_all(buf, n, NULL, errp_), -EMSGSIZE, "exceeds the record limit");
    /* Even with the limit lifted, a length whose frame size wraps around is refused. */
    forge_header(buf + 16, UINT64_MAX - 8, CPR_REC_CONFIG, 0);
    ck_assert_int_eq(cpr_stream_new_mem_source(buf, n, &s, NULL), 0);
    ck_assert_int_eq(cpr_stream_set_limit(s, CPR_STREAM_LIMIT_RECORD, UINT64_MAX, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    ck_assert_cpr_fails(cpr_rec_next(s, &r, errp_), -EMSGSIZE, "exceeds the record limit");
    cpr_stream_free(s);
}
END_TEST

START_TEST(test_lying_length_below_limit_grows_buffer_only_with_data)
{
    uint8_t buf[64];
    size_t n;
    struct cpr_rec r;
    cpr_stream *s = pipe_with_claim(200u << 20, buf, &n);
    ck_assert_cpr_fails(cpr_rec_next(s, &r, errp_), -EBADMSG, "truncated");
    ck_assert_uint_le(s->cap, 1u << 20);
    cpr_stream_free(s);
}
END_TEST

START_TEST(test_unknown_major_version_is_refused)
{
    uint8_t buf[16];
    memcpy(buf, CPR_FORMAT_MAGIC, 8);
    memset(buf + 8, 0, 8);
    buf[8] = 2;
    buf[10] = 7;
    uint32_t c = GUINT32_TO_LE(cpr_crc32c(0, buf, 12));
    memcpy(buf + 12, &c, 4);
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_source(buf, 16, &s, NULL), 0);
    ck_assert_cpr_fails(cpr_rec_read_stream_header(s, NULL, errp_), -EPROTONOSUPPORT,
                        "stream format version 2.7 is not supported");
    cpr_stream_free(s);
    buf[0] = 'X';
    ck_assert_int_eq(cpr_stream_new_mem_source(buf, 16, &s, NULL), 0);
    ck_assert_cpr_fails(cpr_rec_read_stream_header(s, NULL, errp_), -EBADMSG, "bad magic");
    cpr_stream_free(s);
}
END_TEST

START_TEST(test_unknown_record_type_skipped_only_when_skippable)
{
    for (int skippable = 0; skippable < 2; skippable++) {
        cpr_stream *w;
        ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
        ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
        ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, NULL), 0);
        ck_assert_int_eq(cpr_rec_begin(w, 0x55, skippable ? CPR_REC_FLAG_SKIPPABLE : 0, NULL), 0);
        ck_assert_int_eq(cpr_stream_put_u8(w, 1, NULL), 0);
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
        ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
        const void *data;
        size_t len;
        ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
        int n;
        if (skippable) {
            ck_assert_int_eq(read_all(data, len, &n, NULL), 0);
            ck_assert_int_eq(n, 1);
        } else {
            ck_assert_cpr_fails(read_all(data, len, NULL, errp_), -EPROTONOSUPPORT, "unknown record type 0x55");
        }
        cpr_stream_free(w);
    }
}
END_TEST

START_TEST(test_unended_progressive_section_is_an_error)
{
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    write_ram_start(w);
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
    const void *data;
    size_t len;
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &len, NULL), 0);
    ck_assert_cpr_fails(read_all(data, len, NULL, errp_), -EBADMSG, "progressive section 'ram' (id 0) was never ended");
    cpr_stream_free(w);
}
END_TEST

/* Reads a stream of PART records of (u64 index, 4 KiB page) from fd, which it closes; checks
 * each page against pages[index]; returns how many it read. */
static size_t read_pages(int fd, const uint8_t *pages)
{
    cpr_stream *s = open_reader(fd, CPR_STREAM_OWN_FD);
    struct cpr_rec r;
    size_t got = 0;
    while (next_part(s, &r)) {
        while (cpr_stream_remaining(s)) {
            uint64_t idx;
            const void *pg;
            ck_assert_int_eq(cpr_stream_get_u64(s, &idx, NULL), 0);
            ck_assert_uint_eq(idx, got);
            ck_assert_int_eq(cpr_stream_get_ptr(s, &pg, 4096, NULL), 0);
            ck_assert_int_eq(memcmp(pg, pages + idx * 4096, 4096), 0);
            got++;
        }
    }
    cpr_stream_free(s);
    return got;
}

START_TEST(test_zero_copy_refs_reach_the_fd_intact)
{
    int fd = tmpfile_fd();
    size_t n = 64 * 4096;
    g_autofree uint8_t *pages = g_malloc(n);
    for (size_t i = 0; i < n; i++)
        pages[i] = (uint8_t)(i ^ (i >> 12));
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_fd_writer(fd, 0, &w, NULL), 0);
    uint32_t id = write_ram_start(w);
    for (int part = 0; part < 4; part++) {
        ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
        for (size_t p = 0; p < 16; p++) {
            ck_assert_int_eq(cpr_stream_put_u64(w, part * 16 + p, NULL), 0);
            ck_assert_int_eq(cpr_stream_put_ref(w, pages + (part * 16 + p) * 4096, 4096, NULL), 0);
        }
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    }
    /* An aborted record leaves no trace, refs included. */
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
    ck_assert_int_eq(cpr_stream_put_ref(w, pages, 4096, NULL), 0);
    cpr_rec_abort(w);
    write_ram_end(w, id);
    uint64_t written = cpr_stream_offset(w);
    cpr_stream_free(w);
    ck_assert_int_eq(lseek(fd, 0, SEEK_END), (off_t)written);
    lseek(fd, 0, SEEK_SET);

    ck_assert_uint_eq(read_pages(fd, pages), 64);
}
END_TEST

/* A non-blocking pipe whose reader starts late: the writer's writev returns short counts
 * and EAGAIN, the reader meets EAGAIN too, and every byte still arrives once, in order. */
#define SLOW_PAGES 1024
struct slow_writer {
    int fd;
    const uint8_t *pages;
};

static void *write_pages_nonblocking(void *arg)
{
    struct slow_writer *a = arg;
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_fd_writer(a->fd, CPR_STREAM_OWN_FD, &w, NULL), 0);
    uint32_t id = write_ram_start(w);
    for (int part = 0; part < SLOW_PAGES / 64; part++) {
        ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_PART, id, NULL), 0);
        for (size_t p = part * 64; p < (size_t)(part + 1) * 64; p++) {
            ck_assert_int_eq(cpr_stream_put_u64(w, p, NULL), 0);
            /* Stable pages go out in place, volatile ones through the bounce buffer. */
            int r = p % 3 ? cpr_stream_put_ref(w, a->pages + p * 4096, 4096, NULL)
                          : cpr_stream_put_volatile(w, a->pages + p * 4096, 4096, NULL);
            ck_assert_int_eq(r, 0);
        }
        ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    }
    write_ram_end(w, id);
    cpr_stream_free(w);
    return NULL;
}

START_TEST(test_nonblocking_pipe_carries_every_byte_through_short_writes)
{
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    g_autofree uint8_t *pages = g_malloc((size_t)SLOW_PAGES * 4096);
    for (size_t i = 0; i < (size_t)SLOW_PAGES * 4096; i++)
        pages[i] = (uint8_t)(i ^ (i >> 12) ^ (i >> 20));
    struct slow_writer a = { fds[1], pages };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, write_pages_nonblocking, &a), 0);
    /* Let the writer fill the pipe first: its next writev is short or fails with EAGAIN. */
    usleep(20000);
    ck_assert_uint_eq(read_pages(fds[0], pages), SLOW_PAGES);
    pthread_join(t, NULL);
}
END_TEST

static int put_abc(cpr_stream *s, void *arg, cpr_error **errp)
{
    return cpr_stream_put_bytes(s, arg, 3, errp);
}

/* A body function writes the same bytes as data; from memory the blobs are read in place. */
START_TEST(test_blobs_from_memory_are_read_in_place)
{
    struct cpr_rec_blob by_data = { .name = "t", .version = 1, .data = (uint8_t *)"abc", .len = 3 };
    struct cpr_rec_blob by_body = { .name = "t", .version = 1, .body = put_abc, .body_arg = "abc" };
    const void *bytes[2];
    size_t len[2];
    cpr_stream *w[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w[i], NULL), 0);
        ck_assert_int_eq(cpr_rec_write_blobs(w[i], "{}", i ? &by_body : &by_data, 1, NULL), 0);
        ck_assert_int_eq(cpr_stream_mem_data(w[i], &bytes[i], &len[i], NULL), 0);
    }
    ck_assert_uint_eq(len[0], len[1]);
    ck_assert_int_eq(memcmp(bytes[0], bytes[1], len[0]), 0);

    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_mem_source(bytes[1], len[1], &s, NULL), 0);
    char *config;
    GPtrArray *out;
    ck_assert_int_eq(cpr_rec_read_blobs(s, &config, &out, NULL), 0);
    ck_assert_uint_eq(out->len, 1);
    struct cpr_rec_blob *b = out->pdata[0];
    ck_assert_int_eq(b->borrowed, 1);
    ck_assert((const uint8_t *)b->data > (const uint8_t *)bytes[1] &&
              (const uint8_t *)b->data + 3 <= (const uint8_t *)bytes[1] + len[1]);
    ck_assert_int_eq(memcmp(b->data, "abc", 3), 0);
    g_free(config);
    g_ptr_array_unref(out); /* frees the blob, not the source's bytes */
    cpr_stream_free(s);
    for (int i = 0; i < 2; i++)
        cpr_stream_free(w[i]);
}
END_TEST

START_TEST(test_blobs_round_trip_through_a_pipe)
{
    int fds[2];
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    struct cpr_rec_blob in[2] = {
        { .name = "fds", .instance = 0, .version = 1, .data = (uint8_t *)"abc", .len = 3 },
        { .name = "ram-blocks", .instance = 7, .version = 2, .data = NULL, .len = 0 },
    };
    cpr_stream *w, *s;
    ck_assert_int_eq(cpr_stream_new_fd_writer(fds[1], CPR_STREAM_OWN_FD, &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_blobs(w, "{\"mode\":\"cpr-transfer\"}", in, 2, NULL), 0);
    cpr_stream_free(w);
    ck_assert_int_eq(cpr_stream_new_fd_reader(fds[0], CPR_STREAM_OWN_FD, &s, NULL), 0);
    char *config;
    GPtrArray *out;
    ck_assert_int_eq(cpr_rec_read_blobs(s, &config, &out, NULL), 0);
    ck_assert_str_eq(config, "{\"mode\":\"cpr-transfer\"}");
    ck_assert_uint_eq(out->len, 2);
    struct cpr_rec_blob *b0 = out->pdata[0], *b1 = out->pdata[1];
    ck_assert_str_eq(b0->name, "fds");
    ck_assert_uint_eq(b0->len, 3);
    ck_assert_int_eq(memcmp(b0->data, "abc", 3), 0);
    ck_assert_str_eq(b1->name, "ram-blocks");
    ck_assert_uint_eq(b1->instance, 7);
    ck_assert_uint_eq(b1->version, 2);
    ck_assert_uint_eq(b1->len, 0);
    g_free(config);
    g_ptr_array_unref(out);
    cpr_stream_free(s);
}
END_TEST

START_TEST(test_writer_limits_and_full_sink)
{
    uint8_t small[40];
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink_buf(small, sizeof(small), &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_cpr_fails(cpr_rec_write(w, CPR_REC_CONFIG, "0123456789abcdef", 16, errp_), -ENOSPC, "full");
    ck_assert_uint_eq(cpr_stream_offset(w), 16);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, NULL), 0);
    cpr_stream_free(w);

    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_stream_set_limit(w, CPR_STREAM_LIMIT_RECORD, 8, NULL), 0);
    ck_assert_cpr_fails(cpr_stream_set_limit(w, CPR_STREAM_LIMIT_RECORD, 0, errp_), -EINVAL, "at least 1");
    ck_assert_uint_eq(cpr_stream_get_limit(w, CPR_STREAM_LIMIT_RECORD), 8);
    ck_assert_int_eq(cpr_rec_begin(w, CPR_REC_CONFIG, 0, NULL), 0);
    ck_assert_cpr_fails(cpr_stream_put_bytes(w, "0123456789", 10, errp_), -EMSGSIZE, "record limit of 8");
    cpr_rec_abort(w);
    ck_assert_cpr_fails(cpr_stream_put_u8(w, 1, errp_), -EINVAL, "outside a record");
    cpr_stream_free(w);
}
END_TEST

START_TEST(test_write_error_is_reported_with_fd)
{
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* no /dev/full here: nothing to test */
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_fd_writer(fd, CPR_STREAM_OWN_FD, &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, NULL), 0);
    ck_assert_cpr_fails(cpr_rec_write_eos(w, errp_), -ENOSPC, "write to fd");
    cpr_stream_free(w);
}
END_TEST

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_crc32c_matches_known_vectors);
    tcase_add_test(tc, test_crc32c_fast_path_equals_table_path_at_every_alignment);
    tcase_add_test(tc, test_records_round_trip_through_memory);
    tcase_add_test(tc, test_every_corrupt_byte_and_every_truncation_fails_cleanly);
    tcase_add_test(tc, test_checksum_error_names_record_and_offset);
    tcase_add_test(tc, test_fd_reader_stops_right_after_the_end_record);
    tcase_add_test(tc, test_fd_reader_grows_for_records_larger_than_its_buffer);
    tcase_add_test(tc, test_fd_reader_stages_records_larger_than_its_buffer);
    tcase_add_test(tc, test_staged_record_taken_and_staged_record_cut_short);
    tcase_add_test(tc, test_huge_claimed_record_allocates_nothing_and_fails);
    tcase_add_test(tc, test_lying_length_below_limit_grows_buffer_only_with_data);
    tcase_add_test(tc, test_unknown_major_version_is_refused);
    tcase_add_test(tc, test_unknown_record_type_skipped_only_when_skippable);
    tcase_add_test(tc, test_unended_progressive_section_is_an_error);
    tcase_add_test(tc, test_zero_copy_refs_reach_the_fd_intact);
    tcase_add_test(tc, test_nonblocking_pipe_carries_every_byte_through_short_writes);
    tcase_add_test(tc, test_blobs_round_trip_through_a_pipe);
    tcase_add_test(tc, test_blobs_from_memory_are_read_in_place);
    tcase_add_test(tc, test_writer_limits_and_full_sink);
    tcase_add_test(tc, test_write_error_is_reported_with_fd);
    suite_add_tcase(s, tc);
    return s;
}

CPR_TEST_MAIN(stream_suite)
