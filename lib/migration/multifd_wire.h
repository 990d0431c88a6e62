/* SPDX-License-Identifier: MIT */
/*
 * Private: the multifd channels' wire format (docs/format.md, "multifd channels"): the hello
 * each extra connection opens with, and the page packets after it, each with a CRC32C. Pure
 * encoding and checking, no I/O, so that tests and the fuzz harness drive it directly.
 */
#ifndef CPR_MIGRATION_MULTIFD_WIRE_H
#define CPR_MIGRATION_MULTIFD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <cpr/error.h>
#include <cpr/ram.h>

#include "core/compress.h"

#define CPR_MFD_VERSION 1
#define CPR_MFD_HELLO_MAGIC 0x4c454843u  /* "CHEL" as little-endian bytes */
#define CPR_MFD_PACKET_MAGIC 0x4b504d43u /* "CMPK" */
#define CPR_MFD_HELLO_SIZE 40
#define CPR_MFD_HEADER_SIZE 48
#define CPR_MFD_RUN_SIZE 16
#define CPR_MFD_UUID_SIZE 16
#define CPR_MFD_PAGE 4096u
/* One packet: at most 128 pages (512 KiB, QEMU's packet size too) in at most 64 runs. */
#define CPR_MFD_MAX_PAGES 128u
#define CPR_MFD_MAX_RUNS 64u
#define CPR_MFD_MAX_CHANNELS 255u

enum { CPR_MFD_KIND_DATA = 1, CPR_MFD_KIND_END = 2 };
#define CPR_MFD_FLAG_ZSTD 0x1u
/* The descriptor's flags: the destination acknowledges each pass on main (docs/format.md). */
#define CPR_MFD_SETUP_PASS_ACK 0x1u

struct cpr_mfd_hello {
    uint8_t uuid[CPR_MFD_UUID_SIZE]; /* the migration's */
    uint32_t channel;                /* 0 .. count - 1 */
    uint32_t count;
};

struct cpr_mfd_header {
    uint16_t kind;
    uint32_t channel;
    uint32_t flags;
    uint64_t seq;   /* this channel's packets, from 1 */
    uint32_t epoch; /* RAM syncs the source had written on main before this packet */
    uint32_t nruns;
    uint32_t pages;
    uint32_t payload_len; /* bytes after the run table */
    uint32_t crc;
};

struct cpr_mfd_run {
    uint32_t block; /* index in the ram section's block table */
    uint32_t count;
    uint64_t first; /* page */
};

/* A destination RAM block as packets may address it: host NULL for one the table leaves out. */
struct cpr_mfd_block {
    uint8_t *host;
    uint64_t size;
    const char *name;
    const cpr_ram_block *block; /* pages are written with cpr_ram_block_write(); NULL: into host */
};

void cpr_mfd_hello_encode(const struct cpr_mfd_hello *h, uint8_t out[CPR_MFD_HELLO_SIZE]);
/* Refuses a wrong magic, version, checksum, or a channel index beyond its count. */
int cpr_mfd_hello_decode(const uint8_t in[CPR_MFD_HELLO_SIZE], struct cpr_mfd_hello *h, cpr_error **errp);

/* The header with h->crc as given; runs into CPR_MFD_RUN_SIZE bytes each. */
void cpr_mfd_header_encode(const struct cpr_mfd_header *h, uint8_t out[CPR_MFD_HEADER_SIZE]);
void cpr_mfd_runs_encode(const struct cpr_mfd_run *runs, uint32_t n, uint8_t *out);
/* The checksum of a packet: the header's first 44 bytes, then the body (run table, payload),
 * possibly in pieces: start with cpr_mfd_crc_header, extend with cpr_crc32c. */
uint32_t cpr_mfd_crc_header(const uint8_t hdr[CPR_MFD_HEADER_SIZE]);

/* A whole packet into out (CPR_MFD_HEADER_SIZE + cpr_mfd_body_len(h) bytes), its checksum
 * computed into h->crc: for tests and tools; the channels write theirs from iovecs. */
size_t cpr_mfd_packet_encode(struct cpr_mfd_header *h, const struct cpr_mfd_run *runs, const void *payload,
                             uint8_t *out);

/*
 * Checks a header read on `channel` whose previous packet was seq - 1: magic, version, kind,
 * channel, sequence, limits. On success, the body to read next is cpr_mfd_body_len(h) bytes.
 */
int cpr_mfd_header_decode(const uint8_t in[CPR_MFD_HEADER_SIZE], uint32_t channel, uint64_t seq,
                          struct cpr_mfd_header *h, cpr_error **errp);
size_t cpr_mfd_body_len(const struct cpr_mfd_header *h);
/* The most payload a valid packet carries (a zstd frame may exceed the raw pages a little). */
size_t cpr_mfd_max_payload(void);

/*
 * Verifies the checksum of a DATA packet's body against its header, then its runs against
 * the blocks (sent, inside the block, counts adding up to h->pages), decompresses a zstd
 * payload into scratch (CPR_MFD_MAX_PAGES pages; *z is made on the first zstd packet) and
 * copies the pages into the blocks. Every refusal names the channel and the packet.
 */
int cpr_mfd_packet_apply(const struct cpr_mfd_header *h, const uint8_t hdr[CPR_MFD_HEADER_SIZE],
                         const uint8_t *body, const struct cpr_mfd_block *blocks, uint32_t nblocks,
                         uint8_t *scratch, cpr_zstd **z, cpr_error **errp);

#endif
