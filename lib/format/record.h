/* SPDX-License-Identifier: MIT */
/*
 * Private: record framing of docs/format.md on top of cpr_stream.
 *
 * Writing a whole stream:
 *     cpr_rec_write_stream_header(s)        magic + format version
 *     cpr_rec_begin(s, CPR_REC_CONFIG, 0)   ... cpr_stream_put_bytes(json) ... cpr_rec_end(s)
 *     cpr_rec_begin_section(s, CPR_REC_FULL, name, instance, version, &id) ... cpr_rec_end(s)
 *     cpr_rec_write_eos(s)                  end record with counts, then a flush
 * Reading: cpr_rec_read_stream_header(), then cpr_rec_next() until it returns 0 (end record
 * reached and verified). Every record handed out is complete and checksum-verified.
 *
 * Modules that only need "a few named binary blobs in a checked stream" (the cpr state of the
 * fd/RAM module) use cpr_rec_write_blobs() / cpr_rec_read_blobs().
 */
#ifndef CPR_FORMAT_RECORD_H
#define CPR_FORMAT_RECORD_H

#include <glib.h>

#include <cpr/stream.h>

#define CPR_FORMAT_MAGIC "\x89" "CPR\r\n\x1a\n"
#define CPR_FORMAT_MAGIC_LEN 8
#define CPR_FORMAT_MAJOR 1
#define CPR_FORMAT_MINOR 0
#define CPR_STREAM_HEADER_SIZE 16
#define CPR_RECORD_HEADER_SIZE 16
#define CPR_RECORD_TRAILER_SIZE 4
#define CPR_EOS_PAYLOAD_SIZE 24

enum cpr_rec_type {
    CPR_REC_CONFIG = 0x01,
    CPR_REC_SCHEMA = 0x02,
    CPR_REC_FULL = 0x10,
    CPR_REC_START = 0x11,
    CPR_REC_PART = 0x12,
    CPR_REC_END = 0x13,
    CPR_REC_EOS = 0x7f,
};

/* Record flag: a reader that does not know the record's type skips it instead of failing. */
#define CPR_REC_FLAG_SKIPPABLE 0x01u
/* Record flag on full and start records: a loader without such a section may skip it. */
#define CPR_REC_FLAG_OPTIONAL 0x02u
#define CPR_REC_FLAGS_KNOWN (CPR_REC_FLAG_SKIPPABLE | CPR_REC_FLAG_OPTIONAL)

/* A short name for a record type ("config", "full", ...), "unknown" otherwise. */
const char *cpr_rec_type_name(unsigned int type);

/* ---- writing ---- */
int cpr_rec_write_stream_header(cpr_stream *s, cpr_error **errp);
/* Opens a record; payload goes in with cpr_stream_put_*(); cpr_rec_end() frames it. */
int cpr_rec_begin(cpr_stream *s, unsigned int type, unsigned int flags, cpr_error **errp);
/* Opens a full or start record and writes its section header; *section_id receives the
 * stream-local id that part and end records of the section refer to. */
int cpr_rec_begin_section(cpr_stream *s, unsigned int type, const char *name, uint32_t instance,
                          uint32_t version, uint32_t *section_id, cpr_error **errp);
/* Sets flags on the open record (e.g. CPR_REC_FLAG_OPTIONAL after cpr_rec_begin_section()). */
void cpr_rec_set_flags(cpr_stream *s, unsigned int flags);
/* Opens a part or end record of progressive section section_id. */
int cpr_rec_begin_part(cpr_stream *s, unsigned int type, uint32_t section_id, cpr_error **errp);
/* Closes the open record: fills in its header and checksum, writes it out when due. */
int cpr_rec_end(cpr_stream *s, cpr_error **errp);
/* Drops the open record as if it had never been begun (a callback failed midway). */
void cpr_rec_abort(cpr_stream *s);
/*
 * Writes a whole full or start record: the section header, then the body written by
 * body(s, arg, errp); the record is dropped if body fails. flags: CPR_REC_FLAG_OPTIONAL or 0.
 */
typedef int (*cpr_rec_body_fn)(cpr_stream *s, void *arg, cpr_error **errp);
int cpr_rec_write_section(cpr_stream *s, unsigned int type, const char *name, uint32_t instance, uint32_t version,
                          unsigned int flags, cpr_rec_body_fn body, void *arg, uint32_t *section_id,
                          cpr_error **errp);
/* Writes a record whose whole payload is `data` (config, schema). */
int cpr_rec_write(cpr_stream *s, unsigned int type, const void *data, size_t len, cpr_error **errp);
/* Writes the end record with the counts, then flushes the stream. */
int cpr_rec_write_eos(cpr_stream *s, cpr_error **errp);

/* ---- reading ---- */
struct cpr_rec {
    unsigned int type, flags;
    uint64_t index;   /* 0 for the config record */
    uint64_t offset;  /* stream offset of the record header */
    uint64_t len;     /* payload length */
    const uint8_t *payload; /* whole payload, valid until the next cpr_rec_next() */
    /* Section records (full, start, part, end): */
    uint32_t section_id;
    uint32_t instance, version; /* full and start only */
    const char *name;           /* full/start: the section name; part/end: the name it was
                                 * started with. Valid until the next cpr_rec_next(). */
};

/* Reads and checks the stream header. *minor (may be NULL) receives the minor version. */
int cpr_rec_read_stream_header(cpr_stream *s, unsigned int *minor, cpr_error **errp);
/*
 * Reads the next record, verifies header checksum, length limit, payload checksum and the
 * structural rules of docs/format.md 2.3 (config first, the schema as record #1 or not at all,
 * flags allowed by type, unique section ids and (name, instance) pairs, parts only of open
 * sections, skippable unknown types skipped after their checksums). For section records the stream's
 * payload view is positioned after the section header, so cpr_stream_get_*() read the body;
 * for others at the payload start. Returns 1 with *rec filled, 0 at a verified end record
 * (counts match, no progressive section left open), or a negative errno naming the record
 * index and byte offset: -EBADMSG (corrupt, truncated), -EMSGSIZE (over a limit),
 * -EPROTONOSUPPORT (unknown format version or record type).
 */
int cpr_rec_next(cpr_stream *s, struct cpr_rec *rec, cpr_error **errp);

/* ---- whole streams of named blobs ---- */
struct cpr_rec_blob {
    char *name;
    uint32_t instance;
    uint32_t version;
    uint8_t *data;
    size_t len;
    int borrowed; /* data points into a memory source's bytes: not freed with the blob */
    /* Writing only: when set, writes the body in place of data (no buffer built first). */
    cpr_rec_body_fn body;
    void *body_arg;
};
void cpr_rec_blob_free(struct cpr_rec_blob *b);

/*
 * Writes a complete stream (header, config record holding config_json, one full-section
 * record per blob, end record) and flushes it. data of each blob is written as is, or its body
 * function is called.
 */
int cpr_rec_write_blobs(cpr_stream *s, const char *config_json, const struct cpr_rec_blob *blobs,
                        size_t n, cpr_error **errp);
/*
 * Reads a complete stream written by cpr_rec_write_blobs() (or any stream with only full
 * sections). On success *config_json (g_free) and *blobs (g_ptr_array_unref; elements are
 * struct cpr_rec_blob, freed with the array) are set. Progressive sections and a schema are
 * refused with -EBADMSG: blob streams do not carry them. From a memory source the blobs' data
 * points into the source's bytes (no copy), which must outlive the blobs; from an fd, each
 * blob has its own copy.
 */
int cpr_rec_read_blobs(cpr_stream *s, char **config_json, GPtrArray **blobs, cpr_error **errp);

#endif
