/* SPDX-License-Identifier: MIT */
/* The named fd registry: (name, id) -> fd, kept in save order, with a hash for lookup. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "core/ctx.h"
#include "core/error.h"
#include "core/slot.h"
#include "handover/fd.h"

typedef struct fd_entry {
    char *name; /* (name, id) is the hash key: the entry is its own key. Points to name_buf;
                 * a pointer so that a lookup key needs no copy of the name. */
    int id;
    int fd;
    int type;  /* st_mode & S_IFMT when saved (or as received); -errno when fstat failed then */
    int owned; /* received and not yet claimed: the registry closes it */
    char name_buf[]; /* one allocation per entry: a receiver installs 10,000 in a row */
} fd_entry;

typedef struct fd_registry {
    GRecMutex lock;
    GPtrArray *order;    /* fd_entry *, save order */
    GHashTable *by_key;  /* fd_entry * (as key) -> fd_entry * */
} fd_registry;

static void entry_free(fd_entry *e)
{
    if (e->owned)
        close(e->fd);
    g_free(e);
}

static void registry_free(void *p)
{
    fd_registry *r = p;
    g_hash_table_destroy(r->by_key);
    for (guint i = 0; i < r->order->len; i++)
        entry_free(r->order->pdata[i]);
    g_ptr_array_free(r->order, TRUE);
    g_rec_mutex_clear(&r->lock);
    g_free(r);
}

static guint entry_hash(gconstpointer p)
{
    const fd_entry *e = p;
    return g_str_hash(e->name) ^ ((guint)e->id * 0x9e3779b1u);
}

static gboolean entry_equal(gconstpointer a, gconstpointer b)
{
    const fd_entry *x = a, *y = b;
    return x->id == y->id && !strcmp(x->name, y->name);
}

static void *registry_new(void)
{
    fd_registry *r = g_new0(fd_registry, 1);
    g_rec_mutex_init(&r->lock);
    r->order = g_ptr_array_new();
    r->by_key = g_hash_table_new(entry_hash, entry_equal);
    return r;
}

static fd_registry *registry_get(cpr_ctx *ctx)
{
    return cpr_ctx_slot_get_or_create(ctx, CPR_SLOT_FDS, registry_new, registry_free);
}

int cpr_name_check(const char *name, size_t len, const char *what, cpr_error **errp)
{
    if (!name || !len)
        return cpr_error_set(errp, -EINVAL, "%s name is empty", what);
    if (len > CPR_FD_NAME_MAX)
        return cpr_error_set(errp, -ENAMETOOLONG, "%s name '%.32s...' is %zu bytes, longer than %d",
                             what, name, len, CPR_FD_NAME_MAX);
    if (memchr(name, '\0', len))
        return cpr_error_set(errp, -EINVAL, "%s name contains a NUL byte", what);
    return 0;
}

static fd_entry *lookup(fd_registry *r, const char *name, int id)
{
    fd_entry key = { .name = (char *)name, .id = id };
    return g_hash_table_lookup(r->by_key, &key);
}

static void remove_entry(fd_registry *r, fd_entry *e)
{
    g_hash_table_remove(r->by_key, e);
    g_ptr_array_remove(r->order, e);
    entry_free(e);
}

static void add_entry(fd_registry *r, const char *name, int id, int fd, int type, int owned)
{
    size_t len = strlen(name);
    fd_entry *e = g_malloc(sizeof(*e) + len + 1);
    memcpy(e->name_buf, name, len + 1);
    e->name = e->name_buf;
    e->id = id;
    e->fd = fd;
    e->type = type;
    e->owned = owned;
    g_ptr_array_add(r->order, e);
    g_hash_table_insert(r->by_key, e, e);
}

int cpr_fd_type(int fd)
{
    struct stat sb;
    if (fd < 0)
        return -EBADF;
    return fstat(fd, &sb) < 0 ? -errno : (int)(sb.st_mode & S_IFMT);
}

/*
 * Types of many fds. A system call costs about 1 us on this kind of host, so 10,000 fds take
 * 12 ms of fstat; from SCAN_THREADED_MIN fds on, a second thread starts on them at once
 * (overlapping whatever the caller does until it finishes the scan, such as decoding the
 * state) and the caller's thread joins in at the end, chunk by chunk.
 */
#define SCAN_CHUNK 256
#define SCAN_THREADED_MIN 2048

struct cpr_fd_scan {
    const int *fd;
    int *type;
    guint n;
    gint next; /* atomic: first index of the next chunk to take */
    GThread *helper;
};

static gpointer scan_chunks(gpointer p)
{
    cpr_fd_scan *t = p;
    for (;;) {
        guint from = (guint)g_atomic_int_add(&t->next, SCAN_CHUNK);
        if (from >= t->n)
            return NULL;
        for (guint i = from; i < t->n && i < from + SCAN_CHUNK; i++)
            t->type[i] = cpr_fd_type(t->fd[i]);
    }
}

cpr_fd_scan *cpr_fd_scan_start(const int *fd, guint n)
{
    cpr_fd_scan *t = g_new0(cpr_fd_scan, 1);
    t->fd = fd;
    t->type = g_new(int, n ? n : 1);
    t->n = n;
    if (n >= SCAN_THREADED_MIN)
        t->helper = g_thread_try_new("cpr-fd-types", scan_chunks, t, NULL);
    return t;
}

int *cpr_fd_scan_finish(cpr_fd_scan *t)
{
    scan_chunks(t);
    if (t->helper)
        g_thread_join(t->helper);
    int *type = t->type;
    g_free(t);
    return type;
}

/* Common to save, resave and install: `replace` says what a taken key means. */
static int record(cpr_ctx *ctx, const char *name, int id, int fd, int type, int owned, int replace,
                  const char *fn, cpr_error **errp)
{
    if (!ctx || !name)
        return cpr_error_set(errp, -EINVAL, "%s: ctx or name is NULL", fn);
    int ret = cpr_name_check(name, strlen(name), "fd", errp);
    if (ret < 0)
        return ret;
    if (fd < 0)
        return cpr_error_set(errp, -EINVAL, "%s: fd '%s' id %d: invalid fd %d", fn, name, id, fd);
    fd_registry *r = registry_get(ctx);
    g_rec_mutex_lock(&r->lock);
    fd_entry *e = lookup(r, name, id);
    ret = 0;
    if (e && e->fd == fd && !owned) {
        /* Same fd again: nothing changes (QEMU re-saves on every realize), except that a caller
         * saving a received fd says it holds it now. */
        e->owned = 0;
        e->type = type;
    } else if (e && !replace) {
        ret = cpr_error_set(errp, -EEXIST, "fd '%s' id %d is already saved as fd %d, cannot save fd %d",
                            name, id, e->fd, fd);
    } else {
        if (e)
            remove_entry(r, e);
        add_entry(r, name, id, fd, type, owned);
    }
    g_rec_mutex_unlock(&r->lock);
    return ret;
}

CPR_API int cpr_fd_save(cpr_ctx *ctx, const char *name, int id, int fd, cpr_error **errp)
{
    return record(ctx, name, id, fd, cpr_fd_type(fd), 0, 0, "cpr_fd_save", errp);
}

CPR_API int cpr_fd_resave(cpr_ctx *ctx, const char *name, int id, int fd, cpr_error **errp)
{
    return record(ctx, name, id, fd, cpr_fd_type(fd), 0, 1, "cpr_fd_resave", errp);
}

int cpr_fd_install_received(cpr_ctx *ctx, const char *name, int id, int fd, int type, cpr_error **errp)
{
    return record(ctx, name, id, fd, type, 1, 0, "cpr state", errp);
}

CPR_API int cpr_fd_find(cpr_ctx *ctx, const char *name, int id)
{
    if (!ctx || !name)
        return -EINVAL;
    fd_registry *r = registry_get(ctx);
    g_rec_mutex_lock(&r->lock);
    fd_entry *e = lookup(r, name, id);
    int fd = -ENOENT;
    if (e) {
        e->owned = 0; /* claimed: the caller owns it now */
        fd = e->fd;
    }
    g_rec_mutex_unlock(&r->lock);
    return fd;
}

CPR_API int cpr_fd_delete(cpr_ctx *ctx, const char *name, int id)
{
    if (!ctx || !name)
        return -EINVAL;
    fd_registry *r = registry_get(ctx);
    g_rec_mutex_lock(&r->lock);
    fd_entry *e = lookup(r, name, id);
    if (e)
        remove_entry(r, e);
    g_rec_mutex_unlock(&r->lock);
    return e ? 0 : -ENOENT;
}

CPR_API int cpr_fd_open(cpr_ctx *ctx, const char *path, int flags, unsigned int mode,
                        const char *name, int id, cpr_error **errp)
{
    if (!ctx || !path || !name)
        return cpr_error_set(errp, -EINVAL, "cpr_fd_open: ctx, path or name is NULL");
    int fd = cpr_fd_find(ctx, name, id);
    if (fd >= 0)
        return fd;
    fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "fd '%s' id %d: cannot open %s", name, id, path);
    int ret = cpr_fd_save(ctx, name, id, fd, errp);
    if (ret < 0) {
        close(fd);
        return ret;
    }
    return fd;
}

CPR_API int cpr_fd_close_unclaimed(cpr_ctx *ctx)
{
    if (!ctx)
        return 0;
    fd_registry *r = registry_get(ctx);
    int closed = 0;
    g_rec_mutex_lock(&r->lock);
    /* Compact in place: removing one by one would be quadratic with 10,000 fds. */
    guint kept = 0;
    for (guint i = 0; i < r->order->len; i++) {
        fd_entry *e = r->order->pdata[i];
        if (e->owned) {
            g_hash_table_remove(r->by_key, e);
            entry_free(e);
            closed++;
        } else {
            r->order->pdata[kept++] = e;
        }
    }
    g_ptr_array_set_size(r->order, kept);
    g_rec_mutex_unlock(&r->lock);
    return closed;
}

int cpr_fd_foreach_typed(cpr_ctx *ctx, cpr_fd_typed_fn fn, void *opaque)
{
    if (!ctx || !fn)
        return -EINVAL;
    fd_registry *r = registry_get(ctx);
    int ret = 0;
    g_rec_mutex_lock(&r->lock);
    for (guint i = 0; i < r->order->len && !ret; i++) {
        fd_entry *e = r->order->pdata[i];
        ret = fn(e->name, e->id, e->fd, e->type, opaque);
    }
    g_rec_mutex_unlock(&r->lock);
    return ret;
}

struct untyped {
    cpr_fd_fn fn;
    void *opaque;
};

static int drop_type(const char *name, int id, int fd, int type, void *opaque)
{
    struct untyped *u = opaque;
    return u->fn(name, id, fd, u->opaque);
}

CPR_API int cpr_fd_foreach(cpr_ctx *ctx, cpr_fd_fn fn, void *opaque)
{
    struct untyped u = { fn, opaque };
    return fn ? cpr_fd_foreach_typed(ctx, drop_type, &u) : -EINVAL;
}

CPR_API size_t cpr_fd_count(cpr_ctx *ctx)
{
    if (!ctx)
        return 0;
    fd_registry *r = registry_get(ctx);
    g_rec_mutex_lock(&r->lock);
    size_t n = r->order->len;
    g_rec_mutex_unlock(&r->lock);
    return n;
}

int cpr_fd_exists(cpr_ctx *ctx, const char *name, int id)
{
    fd_registry *r = registry_get(ctx);
    g_rec_mutex_lock(&r->lock);
    int found = lookup(r, name, id) != NULL;
    g_rec_mutex_unlock(&r->lock);
    return found;
}
