/* SPDX-License-Identifier: MIT */
/*
 * Private: mapped-ram, the fixed-offset RAM layout of file streams (capability `mapped-ram`,
 * docs/format.md section 7, docs/migration.md "Mapped RAM").
 *
 * In a mapped-ram stream each sent RAM block has a region of the file, announced by a
 * `region` record (type 0x20) placed after the config and schema records and before the first
 * section record. The region's bytes follow that record directly and are not part of any
 * record: page N of the block lives at file offset `pages_offset + N * page_size`, page
 * aligned, so the file can be mapped. Pages are written in place (pwritev straight from guest
 * RAM, by `multifd-channels` threads), so a later pass over a dirty page overwrites it. The
 * `ram` section's end record carries, per block, the bitmap of pages present in the file and
 * one CRC32C per fixed-size chunk of the region (the index); a page not present reads as zero.
 *
 * This header has two halves:
 *  - the READER, for anything that consumes a mapped-ram file outside the ordinary load
 *    (cpr-dump, the instant/lazy restore that maps the region or fills it by userfaultfd);
 *  - the WRITER/LOADER used by the ram section (lib/migration/ram_section.c).
 */
#ifndef CPR_MIGRATION_MAPPED_RAM_H
#define CPR_MIGRATION_MAPPED_RAM_H

#include <stddef.h>
#include <stdint.h>

#include <cpr/error.h>

/* ---------------------------------------------------------------- reader ---- */

typedef struct cpr_mr_file cpr_mr_file;

/* One RAM block of a mapped-ram file, as its region record and the index describe it. */
struct cpr_mr_block_info {
    const char *name;       /* the RAM block's name (as in the ram section) */
    uint64_t size;          /* block size in bytes */
    uint32_t page_size;     /* bytes per page (4096) */
    uint32_t chunk_size;    /* bytes per checksum chunk, a multiple of page_size */
    uint64_t pages;         /* ceil(size / page_size) */
    uint64_t chunks;        /* ceil(pages * page_size / chunk_size) */
    uint64_t pages_offset;  /* file offset of page 0 (a multiple of page_size) */
    uint64_t pages_len;     /* pages * page_size: the region's page bytes in the file */
    /* Bit N (byte N / 8, bit N % 8, LSB first) set: page N was written to the file. A clear
     * bit means the page reads as zero (the file has a hole there). pages bits. */
    const uint8_t *bitmap;
    uint64_t present;       /* set bits in bitmap */
    /* chunks entries of 4 bytes, little-endian: CRC32C of chunk K's bytes as in the file
     * (cpr_mr_chunk_crc() reads one). */
    const uint8_t *crcs;
};

/*
 * Opens a mapped-ram file written by libcpr and reads its records up to and including the
 * ram section's end record (the index), verifying every record's checksums on the way; it
 * does not read the regions' pages. `offset` is where the stream starts in the file (the
 * `offset=` of a file: URI, usually 0). Errors: -ENOENT etc. from open(2) naming the file,
 * -EBADMSG for a corrupt or truncated stream or a region that lies beyond the file's end
 * (naming the record or block), -EPROTO when the stream is not mapped-ram. The returned
 * object owns its fd. Not thread safe to open/close; once open, the query functions and
 * cpr_mr_verify_chunk*() may be called from any number of threads.
 */
int cpr_mr_open(const char *path, uint64_t offset, cpr_mr_file **out, cpr_error **errp);
/* As cpr_mr_open(), on an fd the caller keeps (it is duplicated). */
int cpr_mr_open_fd(int fd, uint64_t offset, cpr_mr_file **out, cpr_error **errp);
void cpr_mr_close(cpr_mr_file *f);

/* The file's fd (owned by f, valid until cpr_mr_close()): for pread(2) or a MAP_PRIVATE
 * mmap(2) of [pages_offset, pages_offset + pages_len). */
int cpr_mr_fd(const cpr_mr_file *f);
size_t cpr_mr_block_count(const cpr_mr_file *f);
/* The file's path as /proc names it ("fd N" when it does not), for messages; g_free() it. */
char *cpr_mr_file_name(const cpr_mr_file *f);
/* Block i (0 <= i < count), or NULL. Valid until cpr_mr_close(). */
const struct cpr_mr_block_info *cpr_mr_block(const cpr_mr_file *f, size_t i);
/* Index of the block named `name`, or -ENOENT. */
int cpr_mr_find_block(const cpr_mr_file *f, const char *name);
/* 1 when page `page` of block b is present in the file, 0 when it reads as zero. */
int cpr_mr_page_present(const struct cpr_mr_block_info *b, uint64_t page);
/* The chunk holding byte `offset` of block b, and its byte range in the block. */
static inline uint64_t cpr_mr_chunk_of(const struct cpr_mr_block_info *b, uint64_t offset)
{
    return offset / b->chunk_size;
}

/*
 * Verifies chunk `chunk` of block `block` against the index by reading it from the file.
 * Returns 0, or -EBADMSG with "mapped-ram block 'NAME' chunk K (file offset X, N bytes):
 * checksum mismatch" (or "... beyond the end of the file" for a cut file), or -EINVAL for a
 * block/chunk out of range, or a read error. Thread safe.
 */
int cpr_mr_verify_chunk(const cpr_mr_file *f, size_t block, uint64_t chunk, cpr_error **errp);
/*
 * Verifies chunk `chunk` of block `block` against bytes already in memory (`data`, the
 * chunk's length: chunk_size, or less for the last chunk), e.g. a privately mapped region or
 * pages just filled by userfaultfd. Same errors as cpr_mr_verify_chunk(). Thread safe.
 */
int cpr_mr_verify_chunk_mem(const cpr_mr_file *f, size_t block, uint64_t chunk, const void *data,
                            cpr_error **errp);
/*
 * Reads chunks [chunk, chunk + n) of block `block` from the file into buf (their bytes as in the
 * file, unchecked). -EBADMSG "... chunk K ... lies beyond the end of the file" for a cut file,
 * -EINVAL for chunks out of range, a read error naming the block and chunk. Thread safe.
 */
int cpr_mr_read_chunks(const cpr_mr_file *f, size_t block, uint64_t chunk, uint64_t n, void *buf, cpr_error **errp);
/* The stored CRC32C of chunk `chunk` (< b->chunks) of b. */
uint32_t cpr_mr_chunk_crc(const struct cpr_mr_block_info *b, uint64_t chunk);
/* Bytes in chunk `chunk` of b (chunk_size, less for the last). */
uint64_t cpr_mr_chunk_len(const struct cpr_mr_block_info *b, uint64_t chunk);

/* ------------------------------------------------------- writer / loader ---- */

#include <glib.h>

#include <cpr/ram.h>
#include <cpr/stream.h>

/* Bytes per checksum chunk the writer uses (the format allows any multiple of the page). */
#define CPR_MR_CHUNK_SIZE 4096u

/*
 * As cpr_mr_open_fd(), from the stream that is loading the file: s is a reader of a regular
 * file inside the ram section's end record (already read and its checksums verified), just
 * after the first index entry's kind byte. Reads the rest of the record: no second read of
 * the file's records, so a lazy restore starts in a time that does not grow with them.
 * -ESPIPE when s is not a file, -EBADMSG for an index that does not fit its regions.
 */
int cpr_mr_open_index(cpr_stream *s, cpr_mr_file **out, cpr_error **errp);

typedef struct cpr_mr_save cpr_mr_save;

/*
 * Starts a mapped-ram save into s (a regular file, between records): one region record per
 * block of `blocks` (cpr_ram_block *) and its region left as a hole; `channels` threads
 * (1..255) will write pages with pwrite(2) straight from guest RAM, through a second fd
 * opened with O_DIRECT when `direct_io` (refused, naming the file, where the file system
 * does not allow it). -ESPIPE when s is not a regular file.
 */
int cpr_mr_save_new(cpr_stream *s, GPtrArray *blocks, unsigned int channels, int direct_io, cpr_mr_save **out,
                    cpr_error **errp);
/* Queues pages [first, first + n) of block index `blk` (the order of `blocks`): `zero` when
 * they read as zero (nothing written unless the file already holds an older copy). A worker's
 * earlier failure is returned here. */
int cpr_mr_save_pages(cpr_mr_save *m, unsigned int blk, uint64_t first, uint32_t n, int zero, cpr_error **errp);
/* Waits until every queued page is in the file; returns the first worker's error. Called at
 * each dirty-bitmap sync, so that one page never has two writes in flight. */
int cpr_mr_save_barrier(cpr_mr_save *m, cpr_error **errp);
/* While the guest runs (between live passes): the barrier, then fdatasync(2) of the file, so
 * that the sync before "completed" has only the last pass and the records left to flush. */
int cpr_mr_save_writeback(cpr_mr_save *m, cpr_error **errp);
/* After the last pass: the barrier, then the index entries (bitmap and chunk checksums of
 * every block) into the open record of s (the ram section's end record). */
int cpr_mr_save_index(cpr_mr_save *m, cpr_stream *s, cpr_error **errp);
/* Bytes of pages written to the file so far (for the engine's bandwidth). */
uint64_t cpr_mr_save_bytes(const cpr_mr_save *m);
/* Stops the workers (waiting for the queued ones) and frees m. NULL ok. */
void cpr_mr_save_free(cpr_mr_save *m);

/*
 * Load side: reads one index entry (after its kind byte) from the ram section's end record,
 * finds the block's region in s and reads its present pages into the block's memory with
 * `channels` threads (pread straight into guest RAM, O_DIRECT when `direct_io`), zeroing the
 * pages that are absent, and verifies every chunk: a mismatch is -EBADMSG naming the block and
 * the chunk. `sent` maps block names to the cpr_ram_block * the stream carries; *loaded is set
 * to the entry's block once it is known (also when its load then fails).
 */
int cpr_mr_load_entry(cpr_stream *s, GHashTable *sent, unsigned int channels, int direct_io, cpr_ram_block **loaded,
                      cpr_error **errp);

#endif
