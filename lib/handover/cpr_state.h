/* SPDX-License-Identifier: MIT */
/*
 * Private: the cpr state, what the old process hands the new one in cpr-transfer and cpr-exec —
 * the named fd table, the shared RAM block table and the mode — and how it is encoded,
 * checked and installed on a context.
 */
#ifndef CPR_HANDOVER_CPR_STATE_H
#define CPR_HANDOVER_CPR_STATE_H

#include <stdint.h>

#include <glib.h>

#include <cpr/mode.h>

#include "handover/fd.h"

enum cpr_state_kind {
    CPR_STATE_FD = 1,  /* a named fd (cpr/fd.h) */
    CPR_STATE_RAM = 2, /* a RAM block's memfd or file (cpr/ram.h) */
};

typedef struct cpr_state_entry {
    const char *name;   /* kept in the state's names */
    uint64_t size;      /* RAM: block size */
    uint64_t page_size; /* RAM: page size */
    uint32_t kind;
    int32_t id;         /* the fd's id; 0 for RAM */
    uint32_t type;      /* S_IFMT bits of the fd when it was saved */
    int32_t slot;       /* index into the fds sent with the state; for cpr-exec, the fd number */
} cpr_state_entry;

typedef struct cpr_state {
    cpr_mode mode;
    /* cpr-transfer: the slot of the commit signal (handover/commit_signal.h) among the fds
     * sent, named by the config record's "commit-signal"; -1 without one (1.0, 1.1) */
    int32_t commit_slot;
    GArray *entries;     /* cpr_state_entry */
    GStringChunk *names; /* the entries' names, in blocks: no allocation per entry */
} cpr_state;

/* Default bounds a receiver puts on what a peer may send. */
#define CPR_STATE_MAX_ENTRIES_DEFAULT 65536u
#define CPR_STATE_MAX_BYTES_DEFAULT (64u << 20)

/* reserve: the number of entries expected, so the table is allocated once (0 if unknown). */
cpr_state *cpr_state_new(cpr_mode mode, guint reserve);
void cpr_state_free(cpr_state *st);

/* Appends a copy of e, its name (len bytes, no NUL needed) copied into the state's names. */
void cpr_state_add(cpr_state *st, const cpr_state_entry *e, size_t name_len);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(cpr_state, cpr_state_free)

/*
 * Collects the context's named fds and shared RAM blocks. Appends each entry's fd to fds (not
 * dup'd: they stay owned where they are) and sets its slot to the fd's index there, or to the
 * fd number itself when by_number is set (cpr-exec). Private RAM blocks are skipped: they
 * cannot be preserved, and the migration engine's blockers say so.
 */
int cpr_state_collect(cpr_ctx *ctx, cpr_mode mode, int by_number, cpr_state **out, GArray *fds,
                      cpr_error **errp);

/* Encodes the state in the library's stream format, appending to out. */
int cpr_state_encode(const cpr_state *st, GByteArray *out, cpr_error **errp);

/*
 * Decodes a state, trusting nothing: at most max_entries entries, names checked, slots below
 * nslots (each used once, the commit signal's included) unless by_number. Errors name the
 * entry and byte offset.
 */
int cpr_state_decode(const void *buf, size_t len, uint32_t max_entries, size_t nslots,
                     int by_number, cpr_state **out, cpr_error **errp);

/*
 * Checks every entry's fd (fstat type; for RAM, a regular file at least as large as the block,
 * with the same page size) and, when all pass, installs them: fds into the named fd registry,
 * RAM blocks into the table to be re-attached, and the mode on the context.
 * fds: what arrived with the state (slot = index), or NULL with by_number (slot = fd number).
 * scan: a scan of fds' array started by the caller (finished and freed here), or NULL.
 * Consumes every fd in all cases: on success the context owns the installed ones and the
 * unreferenced ones are closed; on failure all are closed and the context is unchanged.
 */
int cpr_state_install(cpr_ctx *ctx, const cpr_state *st, GArray *fds, cpr_fd_scan *scan,
                      cpr_error **errp);

/*
 * cpr-exec, in the old image: every check the new image's cpr_exec_state_adopt() will make of
 * the encoded state buf (size, decoding with the default limits, each fd by number as
 * cpr_state_install checks it), so that a state it would refuse fails before the exec, while
 * the old image can still resume its guest. Touches no fd beyond fstat.
 */
int cpr_state_check_exec(const GByteArray *buf, cpr_error **errp);

#endif
