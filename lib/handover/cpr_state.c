/* SPDX-License-Identifier: MIT */
/* The cpr state: collect on the old side, check and install on the new side. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json.h>

#include <cpr/params.h>

#include "core/bytes.h"
#include "core/ctx.h"
#include "core/error.h"
#include "format/meta.h"
#include "format/record.h"
#include "handover/cpr_state.h"
#include "handover/fd.h"
#include "handover/ram.h"

/*
 * The table is built, sent and dropped in one go, and on this kind of host every fresh page
 * costs a fault of ~10 us: 10,000 entries allocated one by one (and a table grown by doubling)
 * cost more than the system calls of the transfer. So the table is sized once and the names
 * live in blocks, a run of entries with the same name sharing one copy.
 */
cpr_state *cpr_state_new(cpr_mode mode, guint reserve)
{
    cpr_state *st = g_new0(cpr_state, 1);
    st->mode = mode;
    st->commit_slot = -1;
    st->entries = g_array_sized_new(FALSE, TRUE, sizeof(cpr_state_entry), reserve);
    st->names = g_string_chunk_new(4096);
    return st;
}

void cpr_state_free(cpr_state *st)
{
    if (!st)
        return;
    g_array_free(st->entries, TRUE);
    g_string_chunk_free(st->names);
    g_free(st);
}

/* Room for `more` elements in one allocation, the length unchanged (GArray never shrinks). */
static void reserve(GArray *a, guint more)
{
    guint len = a->len;
    g_array_set_size(a, len + more);
    g_array_set_size(a, len);
}

void cpr_state_add(cpr_state *st, const cpr_state_entry *e, size_t name_len)
{
    cpr_state_entry copy = *e;
    const cpr_state_entry *prev =
        st->entries->len ? &g_array_index(st->entries, cpr_state_entry, st->entries->len - 1) : NULL;
    if (prev && !strncmp(prev->name, e->name, name_len) && prev->name[name_len] == '\0')
        copy.name = prev->name;
    else
        copy.name = g_string_chunk_insert_len(st->names, e->name, (gssize)name_len);
    g_array_append_val(st->entries, copy);
}

typedef struct collect_ctx {
    cpr_state *st;
    GArray *fds;
    int by_number;
    cpr_error **errp;
} collect_ctx;

/* type: the fd's st_mode & S_IFMT when already known, else negative (looked up here). */
static int add_entry(collect_ctx *c, uint32_t kind, const char *name, int id, int fd, int type,
                     uint64_t size, uint64_t page_size)
{
    if (type < 0 && (type = cpr_fd_type(fd)) < 0)
        return cpr_error_set_errno(c->errp, type, "cpr state: %s '%s' id %d: fd %d",
                                   kind == CPR_STATE_RAM ? "ram block" : "fd", name, id, fd);
    cpr_state_entry e = {
        .kind = kind, .name = name, .id = id, .type = (uint32_t)type,
        .size = size, .page_size = page_size,
        .slot = c->by_number ? fd : (int32_t)c->fds->len,
    };
    cpr_state_add(c->st, &e, strlen(name));
    g_array_append_val(c->fds, fd);
    return 0;
}

static int collect_fd(const char *name, int id, int fd, int type, void *opaque)
{
    return add_entry(opaque, CPR_STATE_FD, name, id, fd, type, 0, 0);
}

static int collect_ram(cpr_ram_block *b, void *opaque)
{
    if (!cpr_ram_block_shared(b))
        return 0;
    return add_entry(opaque, CPR_STATE_RAM, cpr_ram_block_name(b), 0, cpr_ram_block_fd(b), -1,
                     cpr_ram_block_size(b), cpr_ram_block_page_size(b));
}

int cpr_state_collect(cpr_ctx *ctx, cpr_mode mode, int by_number, cpr_state **out, GArray *fds,
                      cpr_error **errp)
{
    guint expect = (guint)cpr_fd_count(ctx) + 8; /* and a few RAM blocks */
    g_autoptr(cpr_state) st = cpr_state_new(mode, expect);
    guint fds_len = fds->len;
    reserve(fds, expect);
    collect_ctx c = { st, fds, by_number, errp };
    int ret = cpr_fd_foreach_typed(ctx, collect_fd, &c);
    if (!ret)
        ret = cpr_ram_block_foreach(ctx, collect_ram, &c);
    if (ret < 0) {
        g_array_set_size(fds, fds_len);
        return ret;
    }
    *out = g_steal_pointer(&st);
    return 0;
}

static const char *type_name(uint32_t type)
{
    switch (type) {
    case S_IFREG: return "regular file";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFIFO: return "pipe";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case 0: return "anonymous inode";
    default: return "unknown file type";
    }
}

/* Checks one received fd, whose file type (or -errno) is type, against its entry. */
static int check_entry(const cpr_state_entry *e, int fd, int type, cpr_error **errp)
{
    const char *what = e->kind == CPR_STATE_RAM ? "ram block" : "fd";
    if (type < 0)
        return cpr_error_set_errno(errp, type, "cpr state: %s '%s' id %d: fd %d is not usable",
                                   what, e->name, e->id, fd);
    if ((uint32_t)type != e->type)
        return cpr_error_set(errp, -EPROTO, "cpr state: %s '%s' id %d: expected a %s, fd %d is a %s",
                             what, e->name, e->id, type_name(e->type), fd, type_name((uint32_t)type));
    if (e->kind != CPR_STATE_RAM)
        return 0;
    if ((uint32_t)type != S_IFREG)
        return cpr_error_set(errp, -EPROTO, "cpr state: ram block '%s': fd %d is a %s, not a memfd or file",
                             e->name, fd, type_name((uint32_t)type));
    struct stat sb; /* a RAM block's size too: one more fstat, for a few fds */
    if (fstat(fd, &sb) < 0)
        return cpr_error_set_errno(errp, -errno, "cpr state: ram block '%s': fd %d is not usable",
                                   e->name, fd);
    if ((uint64_t)sb.st_size < e->size)
        return cpr_error_set(errp, -EPROTO, "cpr state: ram block '%s': fd %d holds %lld bytes, "
                             "the table says %" G_GUINT64_FORMAT, e->name, fd,
                             (long long)sb.st_size, e->size);
    uint64_t ps = cpr_ram_fd_page_size(fd);
    if (ps != e->page_size)
        return cpr_error_set(errp, -EPROTO, "cpr state: ram block '%s': fd %d has %" G_GUINT64_FORMAT
                             "-byte pages, the table says %" G_GUINT64_FORMAT,
                             e->name, fd, ps, e->page_size);
    return 0;
}

static int check_conflict(cpr_ctx *ctx, const cpr_state_entry *e, cpr_error **errp)
{
    if (e->kind == CPR_STATE_FD && cpr_fd_exists(ctx, e->name, e->id))
        return cpr_error_set(errp, -EEXIST, "cpr state: fd '%s' id %d is already saved here",
                             e->name, e->id);
    if (e->kind == CPR_STATE_RAM && cpr_ram_name_taken(ctx, e->name))
        return cpr_error_set(errp, -EEXIST, "cpr state: ram block '%s' already exists here", e->name);
    return 0;
}

int cpr_state_check_exec(const GByteArray *buf, cpr_error **errp)
{
    if (buf->len > CPR_STATE_MAX_BYTES_DEFAULT)
        return cpr_error_set(errp, -E2BIG, "cpr state: %u bytes, the new image reads at most %u",
                             buf->len, CPR_STATE_MAX_BYTES_DEFAULT);
    g_autoptr(cpr_state) st = NULL;
    int ret = cpr_state_decode(buf->data, buf->len, CPR_STATE_MAX_ENTRIES_DEFAULT, 0, 1, &st, errp);
    if (ret < 0)
        return ret;
    guint n = st->entries->len;
    g_autofree int *fd_of = g_new(int, n ? n : 1);
    for (guint i = 0; i < n; i++)
        fd_of[i] = g_array_index(st->entries, cpr_state_entry, i).slot;
    g_autofree int *type = cpr_fd_scan_finish(cpr_fd_scan_start(fd_of, n));
    for (guint i = 0; i < n && !ret; i++)
        ret = check_entry(&g_array_index(st->entries, cpr_state_entry, i), fd_of[i], type[i], errp);
    return ret;
}

/* On failure an install closes what it consumed: every fd that arrived, or every listed number. */
static void close_consumed(GArray *fds, const int *fd_of, guint n)
{
    if (fds) {
        for (guint i = 0; i < fds->len; i++)
            close(g_array_index(fds, int, i));
        g_array_set_size(fds, 0);
        return;
    }
    g_autoptr(GHashTable) done = g_hash_table_new(NULL, NULL);
    for (guint i = 0; i < n; i++) {
        if (fd_of[i] >= 0 && g_hash_table_add(done, GINT_TO_POINTER(fd_of[i] + 1)))
            close(fd_of[i]);
    }
}

/* cpr-exec: an fd number listed twice gets a duplicate, so that each entry owns its own fd. */
static int own_numbers(const cpr_state *st, int *fd_of, cpr_error **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    for (guint i = 0; i < st->entries->len; i++) {
        const cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, i);
        if (g_hash_table_add(seen, GINT_TO_POINTER(fd_of[i] + 1))) {
            fcntl(fd_of[i], F_SETFD, FD_CLOEXEC); /* cleared for exec; ours again */
            continue;
        }
        int dup = fcntl(fd_of[i], F_DUPFD_CLOEXEC, 0);
        if (dup < 0)
            return cpr_error_set_errno(errp, -errno, "cpr state: fd '%s' id %d: cannot dup fd %d",
                                       e->name, e->id, fd_of[i]);
        fd_of[i] = dup;
        g_hash_table_add(seen, GINT_TO_POINTER(dup + 1));
    }
    return 0;
}

int cpr_state_install(cpr_ctx *ctx, const cpr_state *st, GArray *fds, cpr_fd_scan *scan,
                      cpr_error **errp)
{
    guint n = st->entries->len;
    g_autofree int *fd_of = g_new(int, n ? n : 1);
    for (guint i = 0; i < n; i++) {
        const cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, i);
        fd_of[i] = fds ? g_array_index(fds, int, e->slot) : e->slot;
    }
    /* The types by slot when the caller scanned the fds that arrived; else by entry. */
    g_autofree int *slot_type = scan ? cpr_fd_scan_finish(scan) : NULL;
    g_autofree int *entry_type = slot_type ? NULL : cpr_fd_scan_finish(cpr_fd_scan_start(fd_of, n));
    int ret = 0;
    for (guint i = 0; i < n && !ret; i++) {
        const cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, i);
        ret = check_entry(e, fd_of[i], slot_type ? slot_type[e->slot] : entry_type[i], errp);
        if (!ret)
            ret = check_conflict(ctx, e, errp);
    }
    if (!ret && !fds)
        ret = own_numbers(st, fd_of, errp);
    if (ret < 0) {
        close_consumed(fds, fd_of, n);
        return ret;
    }

    g_autofree uint8_t *used = g_new0(uint8_t, fds ? fds->len + 1 : 1);
    for (guint i = 0; i < n; i++) {
        const cpr_state_entry *e = &g_array_index(st->entries, cpr_state_entry, i);
        /* Checked above, so these do not fail; if one did, its fd must still be closed. */
        int r = e->kind == CPR_STATE_FD
                    ? cpr_fd_install_received(ctx, e->name, e->id, fd_of[i], (int)e->type, NULL)
                    : cpr_ram_incoming_add(ctx, e->name, e->size, e->page_size, fd_of[i], NULL);
        if (r < 0)
            close(fd_of[i]);
        if (fds)
            used[e->slot] = 1;
    }
    if (fds) {
        /* Anything the peer sent that no entry names is closed, never leaked. */
        for (guint i = 0; i < fds->len; i++) {
            if (!used[i])
                close(g_array_index(fds, int, i));
        }
        g_array_set_size(fds, 0);
    }
    cpr_set_mode(ctx, st->mode, NULL);
    return 0;
}

/*
 * Encoding: a complete stream of docs/format.md (header, config record, full sections, end
 * record), so every byte is checksummed and truncation is always detected. The config record
 * names the mode; two sections carry the tables (all integers little-endian):
 *   "cpr-fds" v1: u32 count, then per fd:    u32 name_len, name, i32 id, u32 type, i32 slot
 *   "cpr-ram" v1: u32 count, then per block: u32 name_len, name, u64 size, u64 page_size,
 *                 u32 type, i32 slot
 * type is the S_IFMT of the fd when saved; slot indexes the fds sent with the state
 * (cpr-transfer) or is the fd number itself (cpr-exec).
 */
#define SECTION_FDS "cpr-fds"
#define SECTION_RAM "cpr-ram"
#define SECTION_VERSION 1

typedef struct table_writer {
    const cpr_state *st;
    uint32_t kind;
} table_writer;

/* One table's body, the entries of one kind, written entry by entry into the stream. */
static int put_table(cpr_stream *s, void *arg, cpr_error **errp)
{
    const table_writer *t = arg;
    const cpr_state_entry *es = (const cpr_state_entry *)(void *)t->st->entries->data;
    guint n = t->st->entries->len;
    uint32_t count = 0;
    for (guint i = 0; i < n; i++)
        count += es[i].kind == t->kind;
    int ret = cpr_stream_put_u32(s, count, errp);
    for (guint i = 0; i < n && !ret; i++) {
        const cpr_state_entry *e = &es[i];
        if (e->kind != t->kind)
            continue;
        /* Names the library saved fit the stack; a longer one (a hand-built state, which the
         * receiver refuses) gets a buffer of its own. */
        uint8_t small[4 + CPR_FD_NAME_MAX + 4 * 2 + 8 * 2];
        size_t len = strlen(e->name);
        uint8_t *rec = len <= CPR_FD_NAME_MAX ? small : g_malloc(sizeof(small) + len);
        size_t at = cpr_le_put(rec, len, 4);
        memcpy(rec + at, e->name, len);
        at += len;
        if (t->kind == CPR_STATE_FD) {
            at += cpr_le_put(rec + at, (uint32_t)e->id, 4);
        } else {
            at += cpr_le_put(rec + at, e->size, 8);
            at += cpr_le_put(rec + at, e->page_size, 8);
        }
        at += cpr_le_put(rec + at, e->type, 4);
        at += cpr_le_put(rec + at, (uint32_t)e->slot, 4);
        ret = cpr_stream_put_bytes(s, rec, at, errp);
        if (rec != small)
            g_free(rec);
    }
    return ret;
}

int cpr_state_encode(const cpr_state *st, GByteArray *out, cpr_error **errp)
{
    table_writer fds = { st, CPR_STATE_FD }, ram = { st, CPR_STATE_RAM };
    struct cpr_rec_blob blobs[2] = {
        { .name = (char *)SECTION_FDS, .version = SECTION_VERSION, .body = put_table, .body_arg = &fds },
        { .name = (char *)SECTION_RAM, .version = SECTION_VERSION, .body = put_table, .body_arg = &ram },
    };
    /* Readers before 1.2 ignore the commit signal's key and close its unnamed fd. */
    g_autofree char *signal = st->commit_slot >= 0 ? g_strdup_printf(",\"commit-signal\":%d", st->commit_slot)
                                                   : g_strdup("");
    g_autofree char *config = g_strdup_printf("{\"producer\":\"libcpr %d.%d.%d\",\"mode\":\"%s\"%s}",
                                              CPR_VERSION_MAJOR, CPR_VERSION_MINOR, CPR_VERSION_PATCH,
                                              cpr_mode_name(st->mode), signal);
    cpr_stream *s = NULL;
    /* An entry takes its name and 16 to 28 bytes, the framing under 1 KiB; the sink grows if
     * the names are longer than this guess. */
    int ret = cpr_stream_new_mem_sink(1024 + (size_t)st->entries->len * 48, &s, errp);
    if (!ret)
        ret = cpr_rec_write_blobs(s, config, blobs, 2, errp);
    const void *data;
    size_t len;
    if (!ret)
        ret = cpr_stream_mem_data(s, &data, &len, errp);
    if (!ret)
        g_byte_array_append(out, data, (guint)len);
    cpr_stream_free(s);
    if (ret < 0)
        cpr_error_prefix(errp, "cpr state");
    return ret;
}

typedef struct cursor {
    const char *section;
    const uint8_t *p;
    size_t len, off;
} cursor;

/* The next n-byte little-endian integer, or -EBADMSG naming the section and offset. */
static int take_le(cursor *c, size_t n, uint64_t *v, cpr_error **errp)
{
    if (c->len - c->off < n)
        return cpr_error_set(errp, -EBADMSG, "cpr state: section %s truncated at byte %zu of %zu",
                             c->section, c->off, c->len);
    *v = cpr_le_get(c->p + c->off, n);
    c->off += n;
    return 0;
}

static int take32(cursor *c, uint32_t *v, cpr_error **errp)
{
    uint64_t w = 0;
    int ret = take_le(c, 4, &w, errp);
    *v = (uint32_t)w;
    return ret;
}

static int take64(cursor *c, uint64_t *v, cpr_error **errp)
{
    return take_le(c, 8, v, errp);
}

/* Reads one entry; e->name points into the section (not NUL-terminated), *name_len its length. */
static int decode_entry(cursor *c, uint32_t kind, cpr_state_entry *e, uint32_t *name_len,
                        cpr_error **errp)
{
    uint32_t id = 0, slot = 0;
    int ret = take32(c, name_len, errp);
    if (ret < 0)
        return ret;
    size_t at = c->off;
    if (*name_len > c->len - c->off)
        return cpr_error_set(errp, -EBADMSG, "cpr state: section %s: a name of %u bytes at byte %zu "
                             "runs past the end", c->section, *name_len, at);
    ret = cpr_name_check((const char *)c->p + at, *name_len, "cpr state entry", errp);
    if (ret < 0)
        return ret;
    e->kind = kind;
    e->name = (const char *)c->p + at;
    c->off += *name_len;
    if (kind == CPR_STATE_FD)
        ret = take32(c, &id, errp);
    else if (!(ret = take64(c, &e->size, errp)))
        ret = take64(c, &e->page_size, errp);
    if (!ret)
        ret = take32(c, &e->type, errp);
    if (!ret)
        ret = take32(c, &slot, errp);
    e->id = (int32_t)id;
    e->slot = (int32_t)slot;
    return ret;
}

static guint key_hash(const cpr_state_entry *e)
{
    return g_str_hash(e->name) ^ ((guint)e->id * 0x9e3779b1u) ^ e->kind;
}

static int key_equal(const cpr_state_entry *x, const cpr_state_entry *y)
{
    return x->kind == y->kind && x->id == y->id && !strcmp(x->name, y->name);
}

/* Per-entry rules that do not depend on the fds. */
static int check_decoded(const cpr_state_entry *e, size_t nslots, int by_number, uint8_t *slot_used,
                         cpr_error **errp)
{
    const char *what = e->kind == CPR_STATE_RAM ? "ram block" : "fd";
    if (e->kind == CPR_STATE_RAM && (!e->page_size || !e->size || e->size % e->page_size))
        return cpr_error_set(errp, -EBADMSG, "cpr state: ram block '%s': size %" G_GUINT64_FORMAT
                             " is not a non-zero multiple of page size %" G_GUINT64_FORMAT,
                             e->name, e->size, e->page_size);
    if (e->slot < 0 || (!by_number && (size_t)e->slot >= nslots))
        return cpr_error_set(errp, -EPROTO, "cpr state: %s '%s' refers to fd %d, but %zu fds arrived",
                             what, e->name, e->slot, nslots);
    if (!by_number && slot_used[e->slot]++)
        return cpr_error_set(errp, -EPROTO, "cpr state: %s '%s' id %d reuses fd %d of another entry",
                             what, e->name, e->id, e->slot);
    return 0;
}

/*
 * No (kind, name, id) twice. Runs once the array is complete; an open-addressing table of entry
 * indexes sized once (4 bytes a slot, at most half full) touches a sixth of the memory of a
 * GHashTable grown to the same count, which matters at 10,000 entries (see cpr_state_new).
 */
static int check_unique(const cpr_state *st, cpr_error **errp)
{
    guint n = st->entries->len, size = 16;
    while (size < 2 * n)
        size *= 2;
    g_autofree uint32_t *slots = g_new0(uint32_t, size); /* entry index + 1; 0 is free */
    const cpr_state_entry *es = (const cpr_state_entry *)(void *)st->entries->data;
    for (guint i = 0; i < n; i++) {
        guint at = key_hash(&es[i]) & (size - 1);
        for (; slots[at]; at = (at + 1) & (size - 1)) {
            if (key_equal(&es[slots[at] - 1], &es[i]))
                return cpr_error_set(errp, -EPROTO, "cpr state: %s '%s' id %d is listed twice",
                                     es[i].kind == CPR_STATE_RAM ? "ram block" : "fd", es[i].name,
                                     es[i].id);
        }
        slots[at] = i + 1;
    }
    return 0;
}

typedef struct decode_ctx {
    cpr_state *st;
    uint32_t max_entries;
    size_t nslots;
    int by_number;
    uint8_t *slot_used;
} decode_ctx;

static int decode_table(decode_ctx *d, const struct cpr_rec_blob *blob, cpr_error **errp)
{
    uint32_t kind = !strcmp(blob->name, SECTION_FDS) ? CPR_STATE_FD
                    : !strcmp(blob->name, SECTION_RAM) ? CPR_STATE_RAM : 0;
    if (!kind)
        return cpr_error_set(errp, -EBADMSG, "cpr state: unknown section '%s'", blob->name);
    if (blob->version != SECTION_VERSION || blob->instance != 0)
        return cpr_error_set(errp, -EBADMSG, "cpr state: section %s instance %u version %u, "
                             "this library reads instance 0 version %d",
                             blob->name, blob->instance, blob->version, SECTION_VERSION);
    cursor c = { blob->name, blob->data, blob->len, 0 };
    uint32_t count = 0;
    int ret = take32(&c, &count, errp);
    if (ret < 0)
        return ret;
    if (count > d->max_entries - d->st->entries->len)
        return cpr_error_set(errp, -E2BIG, "cpr state: section %s lists %u entries, the limit is %u",
                             blob->name, count, d->max_entries);
    GArray *entries = d->st->entries;
    if (count <= c.len / 4) /* a count the section can hold: size the table once */
        reserve(entries, count);
    for (uint32_t i = 0; i < count; i++) {
        cpr_state_entry e = { 0 };
        uint32_t name_len = 0;
        size_t at = c.off;
        ret = decode_entry(&c, kind, &e, &name_len, errp);
        if (!ret) {
            cpr_state_add(d->st, &e, name_len);
            ret = check_decoded(&g_array_index(entries, cpr_state_entry, entries->len - 1), d->nslots,
                                d->by_number, d->slot_used, errp);
        }
        if (ret < 0) {
            cpr_error_prefix(errp, "section %s entry %u at byte %zu", blob->name, i, at);
            return ret;
        }
    }
    if (c.off != c.len)
        return cpr_error_set(errp, -EBADMSG, "cpr state: section %s has %zu bytes of trailing data",
                             blob->name, c.len - c.off);
    return 0;
}

/* The commit signal's slot, when the config names one: cpr-transfer only, an fd that arrived. */
static int decode_commit_slot(json_object *root, cpr_mode mode, size_t nslots, int32_t *slot,
                              cpr_error **errp)
{
    *slot = -1;
    if (!json_object_object_get_ex(root, "commit-signal", NULL))
        return 0;
    uint64_t v = 0;
    if (cpr_json_uint(root, "commit-signal", INT32_MAX, &v) < 0)
        return cpr_error_set(errp, -EBADMSG, "cpr state: the config record's commit-signal is not an fd slot");
    if (mode != CPR_MODE_CPR_TRANSFER || v >= nslots)
        return cpr_error_set(errp, -EPROTO, "cpr state: commit-signal names fd %" G_GUINT64_FORMAT
                             ", but %zu fds arrived%s", v, mode == CPR_MODE_CPR_TRANSFER ? nslots : 0,
                             mode == CPR_MODE_CPR_TRANSFER ? "" : " (cpr-exec has none)");
    *slot = (int32_t)v;
    return 0;
}

/* The mode and the commit signal from the config record, which is checked as any stream's
 * (docs/format.md 2.4). */
static int decode_config(const char *json, size_t nslots, cpr_mode *mode, int32_t *commit_slot,
                         cpr_error **errp)
{
    json_object *root = NULL;
    int ret = cpr_meta_config_json(json, strlen(json), "cpr state: the config record", &root, errp);
    if (!ret)
        ret = cpr_mode_from_name(json_object_get_string(json_object_object_get(root, "mode")), mode, errp);
    if (!ret && *mode != CPR_MODE_CPR_TRANSFER && *mode != CPR_MODE_CPR_EXEC)
        ret = cpr_error_set(errp, -EBADMSG, "cpr state: mode %s is not cpr-transfer or cpr-exec",
                            cpr_mode_name(*mode));
    if (!ret)
        ret = decode_commit_slot(root, *mode, nslots, commit_slot, errp);
    json_object_put(root);
    return ret;
}

int cpr_state_decode(const void *buf, size_t len, uint32_t max_entries, size_t nslots,
                     int by_number, cpr_state **out, cpr_error **errp)
{
    cpr_stream *s = NULL;
    g_autofree char *config = NULL;
    g_autoptr(GPtrArray) blobs = NULL;
    int ret = cpr_stream_new_mem_source(buf, len, &s, errp);
    if (!ret)
        ret = cpr_rec_read_blobs(s, &config, &blobs, errp);
    cpr_stream_free(s);
    if (ret < 0) {
        cpr_error_prefix(errp, "cpr state");
        return ret;
    }
    cpr_mode mode = CPR_MODE_NORMAL;
    int32_t commit_slot = -1;
    ret = decode_config(config, by_number ? 0 : nslots, &mode, &commit_slot, errp);
    if (ret < 0)
        return ret;
    g_autoptr(cpr_state) st = cpr_state_new(mode, 0);
    st->commit_slot = commit_slot;
    g_autofree uint8_t *slot_used = g_new0(uint8_t, nslots + 1);
    if (commit_slot >= 0) /* no entry may claim the signal's fd */
        slot_used[commit_slot] = 1;
    decode_ctx d = { st, max_entries, nslots, by_number, slot_used };
    for (guint i = 0; i < blobs->len && !ret; i++)
        ret = decode_table(&d, blobs->pdata[i], errp);
    if (!ret)
        ret = check_unique(st, errp);
    if (ret < 0)
        return ret;
    *out = g_steal_pointer(&st);
    return 0;
}
