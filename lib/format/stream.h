/* SPDX-License-Identifier: MIT */
/* Private: the stream object, shared by lib/format/stream.c (buffering, I/O) and lib/format/record.c
 * (framing). Nothing outside those two files touches the fields. */
#ifndef CPR_FORMAT_STREAM_H
#define CPR_FORMAT_STREAM_H

#include <sys/types.h>
#include <sys/uio.h>

#include <glib.h>

#include <cpr/stream.h>

enum cpr_stream_kind {
    CPR_SINK_FD,
    CPR_SINK_MEM,    /* library-allocated, growing */
    CPR_SINK_MEMBUF, /* caller's fixed buffer */
    CPR_SRC_FD,
    CPR_SRC_MEM,
};

/* What a pending segment of output is. */
enum cpr_seg_kind {
    CPR_SEG_BUF, /* bytes in buf, at off */
    CPR_SEG_REF, /* caller memory that stays unchanged until the record ends (put_ref) */
    CPR_SEG_VOL, /* caller memory that may change at any time (put_volatile) */
};

/*
 * A piece of pending output. The checksum of REF and VOL memory is computed when the record
 * is written, slice by slice, each slice right before writev(2) takes it (VOL slices copied
 * into the bounce buffer in the same pass), so that the write finds the data in cache. In a
 * regular file the bounce copy also puts each slice at the same offset modulo 64 as its place
 * in the file: the kernel's copy into the page cache is about 1.5x slower when source and
 * destination disagree there, as page data in the stream (after 13-byte entry headers) does.
 */
struct cpr_seg {
    const uint8_t *ext;
    size_t off;
    size_t len;
    enum cpr_seg_kind kind;
};

/*
 * Another transport for an fd stream (TLS, lib/channel/tls.c): called instead of writev(2) and
 * read(2) on the fd, with their contract (bytes done, 0 at the end, -1 and errno).
 * last_error() words the last failure for messages.
 */
struct cpr_stream_io {
    ssize_t (*writev)(void *opaque, const struct iovec *iov, int cnt);
    ssize_t (*read)(void *opaque, void *buf, size_t len);
    const char *(*last_error)(void *opaque);
};

struct cpr_stream {
    enum cpr_stream_kind kind;
    int fd;
    const struct cpr_stream_io *io; /* NULL: the fd itself (the plain path) */
    void *io_opaque;
    unsigned int flags;
    int is_socket;       /* writes use sendmsg(MSG_NOSIGNAL) */
    int is_pipe;         /* writes block SIGPIPE */
    int child;           /* pid of an exec: command to wait for, 0 for none */
    char *command;       /* that command, for messages */
    struct cpr_file_save *file_save; /* a durable file save: committed by cpr_stream_close() */
    int abandoned;       /* cpr_stream_abandon(): the output is not wanted */
    int cancel_fd;       /* readable when a job's cancel asks the stream's waits to end; -1 */
    int restore_fl;      /* a borrowed pipe made non-blocking: its flags to restore; -1 */
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
    /* The open (or last, until flushed) record has REF or VOL segments: its checksum is
     * finished at flush time, from rec_crc (its payload before segment defer_seg) over the
     * segments from defer_seg on, and stored in the trailer at buf + defer_trailer. */
    int rec_deferred;
    guint defer_seg;
    size_t defer_trailer;
    uint8_t *bounce;     /* fd sinks: where slices are copied before their write */
    int64_t file_pos;    /* regular files: fd position of the stream's first byte, else -1 */
    uint64_t written;    /* bytes written to the fd */
    uint64_t skipped;    /* of offset, the regions skipped over (cpr_stream_skip_out) */
    int error;           /* sticky write error (negative errno) */

    /* Framing state (lib/format/record.c), both directions. */
    uint64_t rec_count;  /* records written / read so far, end record excluded */
    uint64_t sec_count;  /* full + start records */
    uint32_t next_section_id;
    GHashTable *open_ids;  /* reader: progressive section id -> name, while open */
    GHashTable *used_ids;  /* reader: every section id seen */
    GHashTable *used_names; /* reader: "instance/name" of every full and start record seen */
    int done;
    char *cur_name;        /* reader: name of the current section record */
    size_t rec_pending;    /* reader: bytes of the current record still to consume */

    /* mapped-ram regions (lib/format/region.c): struct cpr_region *, in stream order, both
     * directions; and, on the reader, the region bytes still to skip before the next record. */
    GPtrArray *regions;
    unsigned int minor;   /* writer: the format minor version to write, 0 for the default */
    uint64_t region_skip;

    /* Reader. For memory sources rbuf points at the caller's data; for fd sources at buf,
     * or, while a record larger than buf is current, at `staged`: that record alone, in a
     * read-only mapping of a memfd of staged_len bytes (cpr_stream_need_record). */
    uint8_t *staged;
    size_t staged_len;
    int stage_large; /* records larger than buf are staged: set by the first region record */
    const uint8_t *rbuf;
    size_t rpos, rlen;
    int eof;

    /* The payload of the current record on the read side. */
    const uint8_t *view;
    uint64_t view_len, view_pos;
    uint64_t view_offset; /* stream offset of the record's header */
};

/*
 * The writer's save failed: its close must not publish anything. A durable file save is
 * discarded (the old file stays) and an exec: command is stopped rather than waited for.
 */
void cpr_stream_abandon(cpr_stream *s);
/*
 * Lets a job's cancel end the stream's waits: once cancel_fd is readable, a read or write
 * that would block fails with -ECANCELED, and an exec: command is stopped instead of waited
 * for. A pipe is made non-blocking for that (a borrowed one gets its flags back at close).
 */
void cpr_stream_set_cancel_fd(cpr_stream *s, int cancel_fd);
/* Runs an fd stream's I/O through `io` from now on (nothing may be buffered for reading yet). */
void cpr_stream_set_io(cpr_stream *s, const struct cpr_stream_io *io, void *opaque);
/*
 * Closes the fd (when owned) and reaps an exec: child: a writer's command is waited for and
 * must succeed (a cancel stops it); with a cancel fd set (a job's stream) a reader's gets
 * CPR_CHILD_GRACE_MS to exit, an abandoned writer's none, before it is stopped (SIGTERM, then
 * SIGKILL). Without one a reader's command is waited for, as cpr_stream_close() documents.
 * Returns 0 or an error.
 */
int cpr_stream_reap_child(cpr_stream *s, cpr_error **errp);

static inline int cpr_stream_is_writer(const cpr_stream *s)
{
    return s->kind == CPR_SINK_FD || s->kind == CPR_SINK_MEM || s->kind == CPR_SINK_MEMBUF;
}

/* Writer: appends bytes to buf without checksumming them (framing, stream header). */
int cpr_stream_append(cpr_stream *s, const void *data, size_t len, cpr_error **errp);
/*
 * Writer: like cpr_stream_put_ref(), for memory that may change while it is written (a
 * running guest's RAM): when the record is written, each slice is copied into a small bounce
 * buffer and checksummed in the same pass, then written from there, so the checksum always
 * matches the bytes written. The memory must stay valid (mapped) until the record ends.
 * Memory sinks and small pieces copy at once (cpr_stream_put_bytes()).
 */
int cpr_stream_put_volatile(cpr_stream *s, const void *data, size_t len, cpr_error **errp);

/* Writer: flushes when buffered output passed the threshold (or `force`). */
int cpr_stream_maybe_flush(cpr_stream *s, int force, cpr_error **errp);

/*
 * Reader: makes at least n bytes available at s->rbuf + s->rpos, reading and growing the
 * buffer only as data arrives. Returns 0, or -ENODATA at end of input (fewer bytes exist),
 * or a negative errno from read(2) with *errp set.
 */
int cpr_stream_need(cpr_stream *s, size_t n, cpr_error **errp);
/*
 * Writer into a regular file: flushes, then leaves `len` bytes of the file unwritten (a hole
 * that others fill with pwrite(2)) and goes on after them; the stream's offset counts them.
 * *file_off receives the file offset of the first of them. -ESPIPE (with a message) when the
 * stream is not a regular file.
 */
int cpr_stream_skip_out(cpr_stream *s, uint64_t len, uint64_t *file_off, cpr_error **errp);

/* Bytes of cpr_stream_offset() that cpr_stream_skip_out() skipped: left to their writer. */
uint64_t cpr_stream_skipped_out(const cpr_stream *s);
/* Writer or reader on a regular file: the file offset of the next byte to write or read
 * (-1 when the stream is not a regular file, or has unread bytes buffered). */
int64_t cpr_stream_file_offset(const cpr_stream *s);
/*
 * Reader: drops the next `len` bytes of the stream, buffered or not: a regular file seeks
 * (and -ENODATA when it ends first, *have receiving the bytes that were there), anything else
 * reads and discards. have may be NULL.
 */
int cpr_stream_skip_in(cpr_stream *s, uint64_t len, uint64_t *have, cpr_error **errp);
/*
 * As cpr_stream_need(s, n), for a whole record of n bytes: 0 when they are buffered, -ENODATA
 * with *have (the bytes there are) when the stream ends first, <0 on a read error. From an fd
 * with stage_large set, a record larger than the read buffer is not read into a heap buffer
 * grown to its size: its bytes go through the buffer into a memfd, mapped read-only as the
 * record's buffer until it is consumed. That is for one-off large records, a mapped-ram
 * stream's index above all (its RAM is in regions, so the first region record sets
 * stage_large): fresh heap pages are what such a read pays most for where first touches are
 * dear (a kvm-pvm guest: 5 MiB, 25-40 ms, staged 4-8 ms), and the record, once taken, is a
 * copy no one else can truncate. A stream of RAM records keeps growing its buffer once and
 * reusing it, warm, for every record.
 */
int cpr_stream_need_record(cpr_stream *s, size_t n, size_t *have, cpr_error **errp);
/* Sets stage_large on reader s (cpr_stream_need_record). */
void cpr_stream_stage_large_records(cpr_stream *s);

/* A record taken from its stream: heap memory (map_len 0) or a mapping of map_len bytes. */
struct cpr_taken_record {
    void *mem;
    size_t map_len;
};
/*
 * Reader of an fd, inside a record: hands the buffer that holds the current record to the
 * caller (cpr_taken_record_free() it), so that pointers into the record's payload (the view)
 * outlive it without a copy; the stream goes on in a new buffer as if the record were
 * consumed. 0, or -ENOENT (and nothing changes) for other streams or outside a record,
 * -ENOMEM.
 */
int cpr_stream_take_record(cpr_stream *s, struct cpr_taken_record *out);
void cpr_taken_record_free(struct cpr_taken_record *t);

/* Reader: bytes available without reading more. */
static inline size_t cpr_stream_avail(const cpr_stream *s)
{
    return s->rlen - s->rpos;
}
/* Reader: drops n available bytes. */
void cpr_stream_consume(cpr_stream *s, size_t n);

#endif
