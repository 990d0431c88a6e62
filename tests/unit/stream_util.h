/* SPDX-License-Identifier: MIT */
/* Helpers of the stream and format suites (test_stream.c, test_stream_deferred.c,
 * test_format*.c, test_dump.c): a scratch file, the records that open a stream, and those that
 * open and close a stream of one progressive section "ram". */
#ifndef CPR_STREAM_UTIL_H
#define CPR_STREAM_UTIL_H

#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "format/record.h"
#include "format/stream.h"

/* A new, already unlinked file in /tmp, open read-write: its fd. */
static inline int tmpfile_fd(void)
{
    char path[] = "/tmp/cpr-stream-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    return fd;
}

/* A memory sink holding a stream header, the config record `cfg` and, unless NULL, the schema
 * record `schema`. */
static inline cpr_stream *mem_stream_start(const char *cfg, const char *schema)
{
    cpr_stream *w;
    ck_assert_int_eq(cpr_stream_new_mem_sink(0, &w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, cfg, strlen(cfg), NULL), 0);
    if (schema)
        ck_assert_int_eq(cpr_rec_write(w, CPR_REC_SCHEMA, schema, strlen(schema), NULL), 0);
    return w;
}

/* Ends memory sink w's stream, writes it to a new file /tmp/<prefix>XXXXXX and frees w: the
 * file's path (g_free; the caller unlinks it). */
static inline char *mem_stream_to_file(cpr_stream *w, const char *prefix)
{
    const void *data;
    size_t n;
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
    ck_assert_int_eq(cpr_stream_mem_data(w, &data, &n, NULL), 0);
    char *path = g_strdup_printf("/tmp/%sXXXXXX", prefix);
    int fd = g_mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    cpr_stream_free(w);
    return path;
}

/* Writes the stream header, an empty config and the (empty) START record of section "ram"
 * (instance 0, version 1); returns the section's id. */
static inline uint32_t write_ram_start(cpr_stream *w)
{
    uint32_t id;
    ck_assert_int_eq(cpr_rec_write_stream_header(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, NULL), 0);
    ck_assert_int_eq(cpr_rec_begin_section(w, CPR_REC_START, "ram", 0, 1, &id, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    return id;
}

/* Writes the END record of section `id` and the end of the stream. */
static inline void write_ram_end(cpr_stream *w, uint32_t id)
{
    ck_assert_int_eq(cpr_rec_begin_part(w, CPR_REC_END, id, NULL), 0);
    ck_assert_int_eq(cpr_rec_end(w, NULL), 0);
    ck_assert_int_eq(cpr_rec_write_eos(w, NULL), 0);
}

/* A reader on fd (flags as cpr_stream_new_fd_reader()), past the stream header. */
static inline cpr_stream *open_reader(int fd, unsigned int flags)
{
    cpr_stream *s;
    ck_assert_int_eq(cpr_stream_new_fd_reader(fd, flags, &s, NULL), 0);
    ck_assert_int_eq(cpr_rec_read_stream_header(s, NULL, NULL), 0);
    return s;
}

/* Moves s to its next PART record (into *r): 1, or 0 once the stream ended cleanly. */
static inline int next_part(cpr_stream *s, struct cpr_rec *r)
{
    int ret;
    while ((ret = cpr_rec_next(s, r, NULL)) > 0) {
        if (r->type == CPR_REC_PART)
            return 1;
    }
    ck_assert_int_eq(ret, 0);
    return 0;
}

#endif
