/* SPDX-License-Identifier: MIT */
/* Private: the stream object, shared by lib/stream.c (buffering, I/O) and lib/record.c
 * (framing). Nothing outside those two files touches the fields. */
#ifndef CPR_INTERNAL_STREAM_H
#define CPR_INTERNAL_STREAM_H

#include <glib.h>

#include <cpr/stream.h>

enum cpr_stream_kind {
    CPR_SINK_FD,
    CPR_SINK_MEM,    /* library-allocated, growing */
    CPR_SINK_MEMBUF, /* caller's fixed buffer */
    CPR_SRC_FD,
    CPR_SRC_MEM,
};

/* A piece of pending output: either bytes in buf (ext == NULL) or caller memory (ext). */
struct cpr_seg {
    const uint8_t *ext;
    size_t off;
    size_t len;
};

struct cpr_stream {
    enum cpr_stream_kind kind;
    int fd;
    unsigned int flags;
    int is_socket;       /* writes use sendmsg(MSG_NOSIGNAL) */
    int is_pipe;         /* writes block SIGPIPE */
    int child;           /* pid of an exec: command to wait for, 0 for none */
    char *command;       /* that command, for messages */
    uint64_t limit[4]; /* indexed by cpr_stream_limit */
    /* Writer: bytes accepted so far. Reader: offset of rbuf[rpos]. */
    uint64_t offset;

    /* Writer. For memory sinks buf is the sink itself. */
    uint8_t *buf;
    size_t len, cap;
    size_t committed;    /* memory sinks: bytes of complete records */
    GArray *segs;        /* struct cpr_seg, fd sinks only */
    size_t run_start;    /* start in buf of bytes not yet covered by a segment */
    int has_refs;
    int in_record;
    size_t rec_hdr;      /* offset in buf of the open record's header */
    uint64_t rec_len;
    uint32_t rec_crc;
    guint rec_seg_mark;  /* segs, run_start and has_refs when the record began (abort) */
    size_t rec_run_mark;
    int rec_refs_mark;
    int error;           /* sticky write error (negative errno) */

    /* Framing state (lib/record.c), both directions. */
    uint64_t rec_count;  /* records written / read so far, end record excluded */
    uint64_t sec_count;  /* full + start records */
    uint32_t next_section_id;
    GHashTable *open_ids;  /* reader: progressive section id -> name, while open */
    GHashTable *used_ids;  /* reader: every section id seen */
    int seen_schema, seen_section, done;
    char *cur_name;        /* reader: name of the current section record */
    size_t rec_pending;    /* reader: bytes of the current record still to consume */

    /* Reader. For memory sources rbuf points at the caller's data. */
    const uint8_t *rbuf;
    size_t rpos, rlen;
    int eof;

    /* The payload of the current record on the read side. */
    const uint8_t *view;
    uint64_t view_len, view_pos;
    uint64_t view_offset; /* stream offset of the record's header */
};

/* Reaps an exec: child (closing the fd first); returns 0 or -ECHILD-like error with *errp. */
int cpr_stream_reap_child(cpr_stream *s, cpr_error **errp);

static inline int cpr_stream_is_writer(const cpr_stream *s)
{
    return s->kind == CPR_SINK_FD || s->kind == CPR_SINK_MEM || s->kind == CPR_SINK_MEMBUF;
}

/* Writer: appends bytes to buf without checksumming them (framing, stream header). */
int cpr_stream_append(cpr_stream *s, const void *data, size_t len, cpr_error **errp);
/* Writer: flushes when buffered output passed the threshold (or `force`). */
int cpr_stream_maybe_flush(cpr_stream *s, int force, cpr_error **errp);

/*
 * Reader: makes at least n bytes available at s->rbuf + s->rpos, reading and growing the
 * buffer only as data arrives. Returns 0, or -ENODATA at end of input (fewer bytes exist),
 * or a negative errno from read(2) with *errp set.
 */
int cpr_stream_need(cpr_stream *s, size_t n, cpr_error **errp);
/* Reader: bytes available without reading more. */
static inline size_t cpr_stream_avail(const cpr_stream *s)
{
    return s->rlen - s->rpos;
}
/* Reader: drops n available bytes. */
void cpr_stream_consume(cpr_stream *s, size_t n);

#endif
