/* SPDX-License-Identifier: MIT */
/*
 * Streams: the buffered byte pipe that libcpr's record format (docs/format.md) runs over.
 *
 * A cpr_stream is either a writer (to an fd or to memory) or a reader (from an fd or from
 * memory). Writers keep a large buffer and hand page-sized payloads added with
 * cpr_stream_put_ref() to writev(2) directly, so bulk data is not copied in user space.
 * Readers trust nothing: every length they act on is bounded by a limit the caller can set,
 * and memory is allocated only as data actually arrives.
 *
 * Device code meets a stream inside callbacks (custom field put/get, progressive section
 * iterate/load): there it writes into, or reads from, the payload of the current record with
 * the cpr_stream_put_* / cpr_stream_get_* functions. All integers are little-endian.
 *
 * Thread safety: a stream is used by one thread at a time.
 */
#ifndef CPR_STREAM_H
#define CPR_STREAM_H

#include <cpr/common.h>

CPR_BEGIN_DECLS

typedef struct cpr_stream cpr_stream;

/* Flags for the constructors. */
#define CPR_STREAM_OWN_FD 0x1u /* the stream closes the fd when it is freed */

/*
 * Creates a writer that writes to `fd` (file, pipe or socket; blocking or not). flags: 0 or
 * CPR_STREAM_OWN_FD. The writer never seeks. On success *out owns the stream.
 * Errors: -EINVAL (bad fd or flags).
 */
CPR_API int cpr_stream_new_fd_writer(int fd, unsigned int flags, cpr_stream **out, cpr_error **errp);

/*
 * Creates a reader from `fd`; as cpr_stream_new_fd_writer(). The reader reads only the bytes
 * of the records it returns: after the end record the fd is positioned right behind it, so a
 * protocol may continue on the same fd.
 */
CPR_API int cpr_stream_new_fd_reader(int fd, unsigned int flags, cpr_stream **out, cpr_error **errp);

/*
 * Creates a writer into memory the library allocates and grows; capacity_hint (may be 0)
 * sizes the first allocation. Read the bytes with cpr_stream_mem_data().
 */
CPR_API int cpr_stream_new_mem_sink(size_t capacity_hint, cpr_stream **out, cpr_error **errp);

/*
 * Creates a writer into the caller's buffer of `capacity` bytes (borrowed: it must outlive
 * the stream). Writing past its end fails with -ENOSPC.
 */
CPR_API int cpr_stream_new_mem_sink_buf(void *buf, size_t capacity, cpr_stream **out, cpr_error **errp);

/*
 * Creates a reader over `len` bytes at `data` (borrowed, not copied: it must outlive the
 * stream and stay unchanged while it is read).
 */
CPR_API int cpr_stream_new_mem_source(const void *data, size_t len, cpr_stream **out, cpr_error **errp);

/*
 * For a memory sink: the bytes written and flushed so far. *data stays owned by the stream and
 * valid until the next write or cpr_stream_free(). Errors: -EINVAL for other streams.
 */
CPR_API int cpr_stream_mem_data(cpr_stream *s, const void **data, size_t *len, cpr_error **errp);

/*
 * For a library-allocated memory sink: hands its buffer to the caller (release with
 * cpr_free()); the stream is left empty. Errors: -EINVAL for other streams.
 */
CPR_API int cpr_stream_mem_steal(cpr_stream *s, void **data, size_t *len, cpr_error **errp);

/* Writes every buffered byte to the sink. Errors: the sink's (negative errno), -ENOSPC. */
CPR_API int cpr_stream_flush(cpr_stream *s, cpr_error **errp);

/*
 * Frees the stream, closing its fd when it owns it. A writer is NOT flushed: call
 * cpr_stream_flush() first to learn about write errors. NULL is accepted.
 */
CPR_API void cpr_stream_free(cpr_stream *s);

/* Limits a reader enforces and a writer respects. */
typedef enum cpr_stream_limit {
    CPR_STREAM_LIMIT_RECORD = 1, /* largest record payload, bytes (default 256 MiB) */
    CPR_STREAM_LIMIT_STRING = 2, /* longest string or name, bytes (default 1 MiB) */
    CPR_STREAM_LIMIT_ALLOC = 3,  /* largest single allocation made for loaded data (default 64 MiB) */
} cpr_stream_limit;

/*
 * Sets a limit (value >= 1). The reader then refuses any length above it with -EMSGSIZE,
 * naming the record and offset, before allocating anything for it.
 * Errors: -EINVAL (unknown limit, value 0).
 */
CPR_API int cpr_stream_set_limit(cpr_stream *s, cpr_stream_limit limit, uint64_t value, cpr_error **errp);

/* The current value of a limit; 0 for an unknown one. */
CPR_API uint64_t cpr_stream_get_limit(const cpr_stream *s, cpr_stream_limit limit);

/*
 * Byte counter: for a writer, the bytes accepted so far (the offset the next byte will have
 * in the stream); for a reader, the offset of the next unread byte. Counts from 0 at the
 * stream's first byte, independent of where the fd's file offset started.
 */
CPR_API uint64_t cpr_stream_offset(const cpr_stream *s);

/* ---- Inside a record: used by custom fields and progressive sections ---- */

/*
 * Append to the payload of the record being written. Errors: -EINVAL when no record is
 * open or s is a reader, -EMSGSIZE when the payload would pass CPR_STREAM_LIMIT_RECORD.
 */
CPR_API int cpr_stream_put_u8(cpr_stream *s, uint8_t v, cpr_error **errp);
CPR_API int cpr_stream_put_u16(cpr_stream *s, uint16_t v, cpr_error **errp);
CPR_API int cpr_stream_put_u32(cpr_stream *s, uint32_t v, cpr_error **errp);
CPR_API int cpr_stream_put_u64(cpr_stream *s, uint64_t v, cpr_error **errp);
/* Copies len bytes into the stream's buffer. */
CPR_API int cpr_stream_put_bytes(cpr_stream *s, const void *data, size_t len, cpr_error **errp);
/*
 * Zero-copy append: when the record ends, the writer checksums `data` and passes the same
 * memory to writev(2), slice by slice. The memory must stay valid AND unchanged until the
 * current record ends; memory a running guest may write must go through cpr_stream_put_bytes() instead
 * (a change in between would make the record's checksum fail on load).
 */
CPR_API int cpr_stream_put_ref(cpr_stream *s, const void *data, size_t len, cpr_error **errp);

/*
 * Read from the payload of the current record (already complete and checksum-verified).
 * Errors: -EBADMSG when fewer bytes remain than asked, naming the record's offset;
 * -EINVAL when there is no current record. Out-values are written only on success.
 */
CPR_API int cpr_stream_get_u8(cpr_stream *s, uint8_t *v, cpr_error **errp);
CPR_API int cpr_stream_get_u16(cpr_stream *s, uint16_t *v, cpr_error **errp);
CPR_API int cpr_stream_get_u32(cpr_stream *s, uint32_t *v, cpr_error **errp);
CPR_API int cpr_stream_get_u64(cpr_stream *s, uint64_t *v, cpr_error **errp);
CPR_API int cpr_stream_get_bytes(cpr_stream *s, void *dst, size_t len, cpr_error **errp);
/*
 * Borrows the next len bytes without copying: *ptr stays valid until the loader moves to the
 * next record (i.e. for the rest of the callback).
 */
CPR_API int cpr_stream_get_ptr(cpr_stream *s, const void **ptr, size_t len, cpr_error **errp);
/* Bytes left unread in the current record's payload (0 when there is none). */
CPR_API uint64_t cpr_stream_remaining(const cpr_stream *s);

CPR_END_DECLS

#endif /* CPR_STREAM_H */
