/* SPDX-License-Identifier: MIT */
/* Helpers of the stream suites (test_stream.c, test_stream_deferred.c): a scratch file, and
 * the records that open and close a stream of one progressive section "ram". */
#ifndef CPR_STREAM_UTIL_H
#define CPR_STREAM_UTIL_H

#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal/record.h"
#include "internal/stream.h"

/* A new, already unlinked file in /tmp, open read-write: its fd. */
static inline int tmpfile_fd(void)
{
    char path[] = "/tmp/cpr-stream-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    return fd;
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

#endif
