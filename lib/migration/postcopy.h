/* SPDX-License-Identifier: MIT */
/*
 * Private: postcopy (capability postcopy-ram). After some precopy the source stops the guest,
 * sends the device state and, in the RAM section, the list of pages still dirty (DISCARD
 * entries, then a POSTCOPY entry), and the destination runs the guest at once. Its RAM is
 * guarded by the fault server (fault_server.h): a page the guest touches that has not arrived
 * is requested over the main channel's return path and placed (UFFDIO_COPY) once its checksum
 * checked out; the fault server's filler requests the rest in order. docs/migration.md,
 * "Postcopy", has the protocol and what each failure does.
 *
 * The return path, after the destination's acknowledgement, on the main socket: fixed
 * 32-byte little-endian messages
 *   u32 kind, u32 block, u64 page, u32 count, u32 flags, u32 crc32c, u32 reserved
 * REQUEST (destination -> source): pages [page, page + count) of sent block `block` (block
 * table order, 4 KiB pages, count <= CPR_PC_MAX_PAGES); flags CPR_PC_URGENT when a vCPU waits
 * for it (a fault). The destination may have several requests outstanding. PAGES (source ->
 * destination): an answer, in one or more pieces in page order, each a run inside its request
 * followed by its count * 4096 bytes whose CRC32C is `crc`, or by nothing when flags has
 * CPR_PC_ZERO (every byte zero). The source reads requests as they arrive and answers urgent
 * ones first, whole; the others in pieces of at most CPR_PC_CHUNK_PAGES, so that an urgent
 * request waits for at most one piece on the wire (QEMU's postcopy-preempt idea, on one
 * socket). DONE (destination -> source): every page is in place, the source may let its copy go.
 * RESUME (source -> destination, the first message on a new connection after a link cut,
 * docs/migration.md "Postcopy recovery"): block = the number of sent blocks, page = their pages
 * in all, crc = CRC32C of the pages per block (u64 LE each): the destination takes the
 * connection only when that is its own table. The destination's waiting threads then send
 * their outstanding requests again, for what they still miss.
 */
#ifndef CPR_MIGRATION_POSTCOPY_H
#define CPR_MIGRATION_POSTCOPY_H

#include <stddef.h>
#include <stdint.h>

#include <cpr/error.h>

#include "migration/migrate.h"

#define CPR_PC_MSG_BYTES 32
#define CPR_PC_PAGE 4096u
/* A request's pages at most: the fault server's fill run (256 KiB) with room to spare. */
#define CPR_PC_MAX_PAGES 1024u

enum cpr_pc_kind {
    CPR_PC_REQUEST = 0x51525043, /* "CPRQ" */
    CPR_PC_PAGES = 0x50525043,   /* "CPRP" */
    CPR_PC_DONE = 0x44525043,    /* "CPRD" */
    CPR_PC_RESUME = 0x53525043,  /* "CPRS" */
};
#define CPR_PC_ZERO 1u   /* PAGES */
#define CPR_PC_URGENT 2u /* REQUEST */
/* A background answer's piece at most (64 KiB, the fault server's fault run). */
#define CPR_PC_CHUNK_PAGES 16u
/* Requests the source holds read at most; more wait in the socket. */
#define CPR_PC_MAX_QUEUED 64u

struct cpr_pc_msg {
    uint32_t kind, block;
    uint64_t page;
    uint32_t count, flags, crc;
};

void cpr_pc_msg_encode(const struct cpr_pc_msg *m, uint8_t out[CPR_PC_MSG_BYTES]);
/* Decodes and checks a message: a known kind, no unknown flag, and for REQUEST and PAGES
 * a run inside block `block` of the `nblocks` whose sizes in pages are block_pages. -EPROTO
 * naming what is wrong. */
int cpr_pc_msg_decode(const uint8_t in[CPR_PC_MSG_BYTES], unsigned nblocks,
                      const uint64_t *block_pages, struct cpr_pc_msg *m, cpr_error **errp);

/* RESUME for this block table (source). */
void cpr_pc_resume_encode(unsigned nblocks, const uint64_t *block_pages,
                          uint8_t out[CPR_PC_MSG_BYTES]);
/* Checks that `in` is a RESUME for this block table (destination): -EPROTO naming what differs. */
int cpr_pc_resume_check(const uint8_t in[CPR_PC_MSG_BYTES], unsigned nblocks,
                        const uint64_t *block_pages, cpr_error **errp);
/* 1 when a failure code of the return path is the link's (an end of stream, a reset, a write
 * that failed): the other side may still be there, so postcopy pauses; 0 for a bad message. */
int cpr_pc_link_error(int code);

/* Reads exactly len bytes (0), or fails: -ECONNRESET at an end of stream, -errno. */
int cpr_pc_read_full(int fd, void *buf, size_t len, const char *what, cpr_error **errp);

/* ---- the source's page server: the guest is stopped, every page is still here ---- */
struct cpr_pc_block {
    const uint8_t *host;
    uint64_t pages;
};

struct cpr_pc_server {
    int rfd, wfd;                     /* return path in, pages out (one socket, or a test's) */
    unsigned nblocks;
    const struct cpr_pc_block *blocks;
    uint64_t *block_pages;            /* pages per block, for the decoder */
    uint64_t max_bandwidth;           /* bytes/s of pages, 0 = unlimited */
    uint64_t requests, pages;         /* served; atomic (query reads them) */
};

/* Serves requests, urgent ones first, until DONE (0) or a failure (the error names it: a bad
 * message, the destination gone). `requests` counts the requests whose answer started;
 * `pages` the pages sent (both go on across calls: a recovery serves again with the same sv,
 * on a new fd); max_bandwidth counts from this call's start. */
int cpr_pc_serve(struct cpr_pc_server *sv, cpr_error **errp);

/* ---- the destination's client: any number of threads fetch over the one socket ---- */
struct cpr_pc_client;

/* fd: the main socket (borrowed); block_pages: per sent block (borrowed, for the decoder). */
struct cpr_pc_client *cpr_pc_client_new(int fd, unsigned nblocks, const uint64_t *block_pages);
void cpr_pc_client_free(struct cpr_pc_client *cl);

/* Requests pages [page, page + count) of block `block` (urgent: a vCPU waits for them) and
 * waits until all of them are in dst, their checksums checked. Thread-safe; one reader at a
 * time reads answers for every waiter. After any failure of the channel every call fails with
 * its first error. */
int cpr_pc_client_fetch(struct cpr_pc_client *cl, int urgent, unsigned block, uint64_t page,
                        uint64_t count, void *dst, cpr_error **errp);

/* Sends DONE (best effort: 0 or -errno). Requests sent so far (any thread). */
int cpr_pc_client_done(struct cpr_pc_client *cl);
uint64_t cpr_pc_client_requests(struct cpr_pc_client *cl);

/* Link cuts (any thread). A failure of the link (cpr_pc_link_error) pauses the client instead
 * of failing it: the socket is shut down, and the fetches wait, their pages still missing,
 * until resume or give_up. A bad message still fails it for good. */
/* 1 while paused; *why (when given): a copy of the link's failure. */
int cpr_pc_client_paused(struct cpr_pc_client *cl, cpr_error **why);
/* Pauses as a link failure would (migrate-pause); nothing when paused or failed already. */
void cpr_pc_client_cut(struct cpr_pc_client *cl);
/* A new connection (borrowed, as the first one): the waiting fetches send what they still
 * miss on it. -EINVAL when not paused. */
int cpr_pc_client_resume(struct cpr_pc_client *cl, int fd);
/* No new connection will come: every fetch fails with the link's failure. */
void cpr_pc_client_give_up(struct cpr_pc_client *cl);

/* ---- the engine's side ---- */

/* Source, at the end of the stream instead of cpr_main_chan_wait_ack(): waits for the
 * destination's acknowledgement, then serves its page requests until it has every page. */
struct cpr_main_chan;
struct cpr_mig_ram;
int cpr_postcopy_serve(cpr_job *job, struct cpr_mig_ram *ram, struct cpr_main_chan *mc,
                       cpr_error **errp);

/* Destination. prepare, after the load and before the commit: when the stream ended in
 * postcopy, registers the RAM with a fault server, makes the discarded pages missing and sets
 * *out (NULL otherwise). A failure here lets the source resume. start, after the commit and
 * before the guest starts: the fault server runs. run, once the guest was started: waits until
 * every page is here, then tells the source. A lost source fails the job with the loss named;
 * the fault server is then kept with the context, so that vCPUs on missing pages stay blocked.
 * free: any time (after a loss, the kept server stays). */
struct cpr_postcopy_in;

int cpr_postcopy_in_prepare(cpr_job *job, int fd, struct cpr_postcopy_in **out, cpr_error **errp);
int cpr_postcopy_in_start(cpr_job *job, struct cpr_postcopy_in *pc, cpr_error **errp);
int cpr_postcopy_in_run(cpr_job *job, struct cpr_postcopy_in *pc, cpr_error **errp);
void cpr_postcopy_in_free(struct cpr_postcopy_in *pc);

#endif
