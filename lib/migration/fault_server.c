/* SPDX-License-Identifier: MIT */
/* The userfaultfd fault server: migration/fault_server.h says what it does and why. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <glib.h>

#include "migration/fault_server.h"

#ifndef USERFAULTFD_IOC_NEW
# define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

typedef struct fs_block {
    char *name;
    uint8_t *host;
    uint64_t size, page_size, npages;
    uint64_t fault_pages, fill_pages; /* the runs, in pages of this block */
    uint64_t *claimed; /* a thread fetches it (or it failed); atomic, one bit per page */
    uint64_t *placed;  /* resident; atomic */
} fs_block;

struct cpr_fault_server {
    cpr_page_source src;
    cpr_fault_event_fn event;
    void *event_opaque;
    const char *label; /* names the user in messages: "lazy restore", "postcopy" */
    uint64_t fault_run, fill_run;
    int uffd;
    int stop_fd; /* eventfd: readable once free() stops the fault thread */
    int stop;    /* atomic: the filler stops between runs */
    GArray *blocks; /* fs_block */
    GThread *fault_th, *fill_th;
    uint64_t total;               /* set before start */
    uint64_t placed, faults, fault_pages; /* atomic counters */
    int64_t start_us;
    GMutex lock; /* guards the fields below */
    GCond cond;
    int64_t done_us;
    int failing; /* the first failure is being reported */
    int error;
    char *error_msg;
    GArray *stalled; /* struct stall: faults on pages another run fetches */
    uint64_t blocked_us, max_stall_us, stalls; /* ended stalls, from the fault's read */
};

/* A thread blocked on a page since `since` (the fault's read). */
struct stall {
    uintptr_t page; /* its address, page-aligned */
    int64_t since;
};

/* ---- opening ------------------------------------------------------------------------------ */

/* A userfaultfd that sees kernel accesses too: /dev/userfaultfd (its mode decides), else the
 * system call (root, CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1). */
static int uffd_open(cpr_error **errp)
{
    int dev_err, sys_err, fd = -1;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        dev_err = errno;
        close(dev);
    } else {
        dev_err = errno;
    }
    if (fd < 0) {
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        sys_err = errno;
        if (fd < 0)
            return cpr_error_set(errp, -sys_err,
                                 "userfaultfd unavailable: /dev/userfaultfd: %s; userfaultfd(2): "
                                 "%s (lazy restore needs root, CAP_SYS_PTRACE or read-write "
                                 "/dev/userfaultfd, or vm.unprivileged_userfaultfd=1)",
                                 g_strerror(dev_err), g_strerror(sys_err));
    }
    struct uffdio_api api = { .api = UFFD_API, .features = 0 };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return cpr_error_set_errno(errp, -e, "userfaultfd: UFFDIO_API");
    }
    return fd;
}

int cpr_fault_server_available(cpr_error **errp)
{
    int fd = uffd_open(errp);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

int cpr_fault_server_new(const cpr_page_source *source, uint64_t fault_run, uint64_t fill_run,
                         cpr_fault_event_fn event, void *event_opaque, cpr_fault_server **out,
                         cpr_error **errp)
{
    *out = NULL;
    if (!source || !source->fetch)
        return cpr_error_set(errp, -EINVAL, "fault server: no page source");
    int uffd = uffd_open(errp);
    if (uffd < 0)
        return uffd;
    int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd < 0) {
        int e = errno;
        close(uffd);
        return cpr_error_set_errno(errp, -e, "fault server: eventfd");
    }
    cpr_fault_server *fs = g_new0(cpr_fault_server, 1);
    fs->src = *source;
    fs->event = event;
    fs->event_opaque = event_opaque;
    fs->label = "lazy restore";
    fs->fault_run = fault_run ? fault_run : CPR_FAULT_RUN_DEFAULT;
    fs->fill_run = fill_run ? fill_run : CPR_FILL_RUN_DEFAULT;
    fs->uffd = uffd;
    fs->stop_fd = stop_fd;
    fs->blocks = g_array_new(FALSE, TRUE, sizeof(fs_block));
    fs->stalled = g_array_new(FALSE, FALSE, sizeof(struct stall));
    g_mutex_init(&fs->lock);
    g_cond_init(&fs->cond);
    *out = fs;
    return 0;
}

static uint64_t pages_of(uint64_t bytes, uint64_t page_size)
{
    uint64_t n = bytes / page_size;
    return n ? n : 1;
}

int cpr_fault_server_add_block(cpr_fault_server *fs, const char *name, void *host, uint64_t size,
                               uint64_t page_size, cpr_error **errp)
{
    if (fs->fault_th)
        return cpr_error_set(errp, -EBUSY, "fault server: block '%s' added after the start", name);
    if (!page_size || (page_size & (page_size - 1)) || !size || size % page_size ||
        (uintptr_t)host % page_size)
        return cpr_error_set(errp, -EINVAL,
                             "fault server: block '%s': size %" PRIu64 " or address not a "
                             "multiple of its page size %" PRIu64, name, size, page_size);
    for (guint i = 0; i < fs->blocks->len; i++) {
        fs_block *o = &g_array_index(fs->blocks, fs_block, i);
        if ((uint8_t *)host < o->host + o->size && o->host < (uint8_t *)host + size)
            return cpr_error_set(errp, -EINVAL, "fault server: block '%s' overlaps block '%s'",
                                 name, o->name);
    }
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)host, .len = size },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(fs->uffd, UFFDIO_REGISTER, &reg) < 0)
        return cpr_error_set_errno(errp, -errno, "fault server: block '%s': UFFDIO_REGISTER", name);
    if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_COPY))) {
        struct uffdio_range r = reg.range;
        ioctl(fs->uffd, UFFDIO_UNREGISTER, &r);
        return cpr_error_set(errp, -EOPNOTSUPP,
                             "fault server: block '%s': the kernel cannot UFFDIO_COPY into it", name);
    }
    fs_block b = {
        .name = g_strdup(name), .host = host, .size = size, .page_size = page_size,
        .npages = size / page_size,
        .fault_pages = pages_of(fs->fault_run, page_size),
        .fill_pages = pages_of(fs->fill_run, page_size),
    };
    b.claimed = g_new0(uint64_t, (b.npages + 63) / 64);
    b.placed = g_new0(uint64_t, (b.npages + 63) / 64);
    g_array_append_val(fs->blocks, b);
    fs->total += b.npages;
    return 0;
}

/* ---- the bitmaps -------------------------------------------------------------------------- */

static int test_bit(uint64_t *map, uint64_t p)
{
    return (__atomic_load_n(&map[p / 64], __ATOMIC_ACQUIRE) >> (p % 64)) & 1;
}

/* 1 when this call claimed page p, 0 when another had. */
static int claim(fs_block *b, uint64_t p)
{
    uint64_t bit = (uint64_t)1 << (p % 64);
    return !(__atomic_fetch_or(&b->claimed[p / 64], bit, __ATOMIC_ACQ_REL) & bit);
}

static void set_placed(fs_block *b, uint64_t p, uint64_t n)
{
    for (uint64_t i = p; i < p + n; i++)
        __atomic_fetch_or(&b->placed[i / 64], (uint64_t)1 << (i % 64), __ATOMIC_RELEASE);
}

/* ---- events ------------------------------------------------------------------------------- */

/* The server's first failure (code, msg: taken) is told and kept; later ones are dropped. */
static void fail_with(cpr_fault_server *fs, int code, char *msg)
{
    g_mutex_lock(&fs->lock);
    int first = !fs->failing;
    fs->failing = 1;
    g_mutex_unlock(&fs->lock);
    if (!first) {
        g_free(msg);
        return;
    }
    /* The callback runs before waiters wake, so a wait() that returns has heard it. */
    if (fs->event)
        fs->event(fs->event_opaque, code, msg);
    g_mutex_lock(&fs->lock);
    fs->error = code;
    fs->error_msg = msg;
    g_cond_broadcast(&fs->cond);
    g_mutex_unlock(&fs->lock);
}

/* A run of pages that could not be placed (err: taken): they stay missing. */
static void fail(cpr_fault_server *fs, fs_block *b, uint64_t page, uint64_t n, cpr_error *err)
{
    char *msg = g_strdup_printf("%s: block '%s' pages %" PRIu64 "-%" PRIu64
                                " (offset 0x%" PRIx64 "): %s", fs->label, b->name, page, page + n - 1,
                                page * b->page_size, err ? cpr_error_message(err) : "failed");
    int code = err && cpr_error_code(err) < 0 ? cpr_error_code(err) : -EIO;
    cpr_error_free(err);
    fail_with(fs, code, msg);
}

/* The last page is placed: the ranges go back to ordinary faults, waiters hear it. */
static void complete(cpr_fault_server *fs)
{
    for (guint i = 0; i < fs->blocks->len; i++) {
        fs_block *b = &g_array_index(fs->blocks, fs_block, i);
        struct uffdio_range r = { .start = (uintptr_t)b->host, .len = b->size };
        ioctl(fs->uffd, UFFDIO_UNREGISTER, &r);
    }
    int64_t now = g_get_monotonic_time();
    if (fs->event) {
        g_autofree char *msg = g_strdup_printf("%s: every page resident", fs->label);
        fs->event(fs->event_opaque, 0, msg);
    }
    g_mutex_lock(&fs->lock);
    fs->done_us = now;
    g_cond_broadcast(&fs->cond);
    g_mutex_unlock(&fs->lock);
}

/* ---- blocktime ---------------------------------------------------------------------------- */

/* Under the lock: a thread blocked since `since` is awake now. */
static void stall_ended(cpr_fault_server *fs, int64_t since)
{
    uint64_t us = (uint64_t)MAX(g_get_monotonic_time() - since, 1);
    fs->blocked_us += us;
    fs->max_stall_us = MAX(fs->max_stall_us, us);
    fs->stalls++;
}

/* A fault on page `addr` of b, which another run fetches: its stall ends when that run is
 * placed (settle_stalls), or now if it was. */
static void stall_begins(cpr_fault_server *fs, fs_block *b, uint64_t page, int64_t since)
{
    g_mutex_lock(&fs->lock);
    if (test_bit(b->placed, page))
        stall_ended(fs, since);
    else
        g_array_append_val(fs->stalled, ((struct stall){ (uintptr_t)b->host + page * b->page_size,
                                                         since }));
    g_mutex_unlock(&fs->lock);
}

/* Pages [p, p + n) of b are placed (their bits set): the faults waiting on them are awake. */
static void settle_stalls(cpr_fault_server *fs, fs_block *b, uint64_t p, uint64_t n)
{
    uintptr_t lo = (uintptr_t)b->host + p * b->page_size, hi = lo + n * b->page_size;
    g_mutex_lock(&fs->lock);
    for (guint i = 0; i < fs->stalled->len;) {
        struct stall *s = &g_array_index(fs->stalled, struct stall, i);
        if (s->page >= lo && s->page < hi) {
            stall_ended(fs, s->since);
            g_array_remove_index_fast(fs->stalled, i);
        } else {
            i++;
        }
    }
    g_mutex_unlock(&fs->lock);
}

/* ---- placing ------------------------------------------------------------------------------ */

/* Copies n pages at page p of b (claimed by the caller) from buf into place. */
static int copy_in(cpr_fault_server *fs, fs_block *b, uint64_t p, uint64_t n, uint8_t *buf,
                   cpr_error **errp)
{
    uint64_t done = 0, len = n * b->page_size;
    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)b->host + p * b->page_size + done,
            .src = (uintptr_t)buf + done,
            .len = len - done,
        };
        if (ioctl(fs->uffd, UFFDIO_COPY, &c) == 0)
            return 0;
        int e = errno;
        if (c.copy > 0)
            done += (uint64_t)c.copy;
        if (e == EEXIST)
            /* Present already: resident by some other way; the page is not ours to write. */
            done = (done / b->page_size + 1) * b->page_size;
        else if (e != EAGAIN)
            return cpr_error_set_errno(errp, -e, "UFFDIO_COPY");
    }
    return 0;
}

/* Fetches, verifies (the source does) and places the claimed run [p, p + n) of block bi:
 * 1, or 0 when it failed. */
static int place(cpr_fault_server *fs, unsigned bi, uint64_t p, uint64_t n, uint8_t *buf,
                  int fault)
{
    fs_block *b = &g_array_index(fs->blocks, fs_block, bi);
    cpr_error *err = NULL;
    int rc = (fault && fs->src.fetch_fault ? fs->src.fetch_fault : fs->src.fetch)
             (fs->src.opaque, bi, p, n, buf, &err);
    if (rc >= 0)
        rc = copy_in(fs, b, p, n, buf, &err);
    if (rc < 0) {
        if (!err)
            cpr_error_set_errno(&err, rc, "fetch");
        fail(fs, b, p, n, err); /* the pages stay claimed and missing */
        return 0;
    }
    set_placed(b, p, n);
    settle_stalls(fs, b, p, n);
    if (__atomic_add_fetch(&fs->placed, n, __ATOMIC_ACQ_REL) == fs->total)
        complete(fs);
    return 1;
}

/* ---- the fault thread --------------------------------------------------------------------- */

/* A fault read at `since` on addr: the thread's stall lasts until its page is placed. */
static void serve_fault(cpr_fault_server *fs, uint64_t addr, uint8_t *buf, int64_t since)
{
    for (guint bi = 0; bi < fs->blocks->len; bi++) {
        fs_block *b = &g_array_index(fs->blocks, fs_block, bi);
        if (addr < (uintptr_t)b->host || addr >= (uintptr_t)b->host + b->size)
            continue;
        uint64_t page = (addr - (uintptr_t)b->host) / b->page_size;
        if (test_bit(b->placed, page)) {
            /* Placed after the fault was queued: the copy woke it, or will; waking is harmless. */
            struct uffdio_range r = { .start = (uintptr_t)b->host + page * b->page_size,
                                      .len = b->page_size };
            ioctl(fs->uffd, UFFDIO_WAKE, &r);
            stall_begins(fs, b, page, since); /* ends at once */
            return;
        }
        if (!claim(b, page)) {
            /* the filler fetches it and its copy wakes the fault, or it failed */
            stall_begins(fs, b, page, since);
            return;
        }
        uint64_t w0 = page - page % b->fault_pages;
        uint64_t w1 = MIN(w0 + b->fault_pages, b->npages);
        uint64_t lo = page, hi = page + 1;
        while (hi < w1 && claim(b, hi))
            hi++;
        while (lo > w0 && claim(b, lo - 1))
            lo--;
        __atomic_add_fetch(&fs->faults, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&fs->fault_pages, hi - lo, __ATOMIC_RELAXED);
        if (place(fs, bi, lo, hi - lo, buf, 1)) {
            g_mutex_lock(&fs->lock);
            stall_ended(fs, since);
            g_mutex_unlock(&fs->lock);
        }
        return;
    }
}

static uint64_t buf_bytes(cpr_fault_server *fs)
{
    uint64_t max = 0;
    for (guint i = 0; i < fs->blocks->len; i++) {
        fs_block *b = &g_array_index(fs->blocks, fs_block, i);
        max = MAX(max, MAX(b->fault_pages, b->fill_pages) * b->page_size);
    }
    return max;
}

static gpointer fault_thread(gpointer opaque)
{
    cpr_fault_server *fs = opaque;
    uint8_t *buf = g_malloc(buf_bytes(fs));
    struct uffd_msg msgs[64];
    for (;;) {
        struct pollfd pfd[2] = { { .fd = fs->uffd, .events = POLLIN },
                                 { .fd = fs->stop_fd, .events = POLLIN } };
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            /* No fault is served any more: say so, or blocked vCPUs would wait unheard. */
            int code = -errno;
            fail_with(fs, code, g_strdup_printf("%s: userfaultfd poll: %s", fs->label, g_strerror(-code)));
            break;
        }
        if (pfd[1].revents)
            break;
        ssize_t n = read(fs->uffd, msgs, sizeof(msgs));
        if (n < 0)
            continue; /* EAGAIN: another reader, or a spurious wake-up */
        int64_t since = g_get_monotonic_time(); /* the faulting threads wait from (at least) now */
        for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
            if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                serve_fault(fs, msgs[i].arg.pagefault.address, buf, since);
    }
    g_free(buf);
    return NULL;
}

/* ---- the filler --------------------------------------------------------------------------- */

static gpointer fill_thread(gpointer opaque)
{
    cpr_fault_server *fs = opaque;
    uint8_t *buf = g_malloc(buf_bytes(fs));
    for (guint bi = 0; bi < fs->blocks->len; bi++) {
        fs_block *b = &g_array_index(fs->blocks, fs_block, bi);
        uint64_t p = 0;
        while (p < b->npages && !__atomic_load_n(&fs->stop, __ATOMIC_ACQUIRE)) {
            if (p % 64 == 0 && __atomic_load_n(&b->claimed[p / 64], __ATOMIC_ACQUIRE) == ~(uint64_t)0) {
                p += 64; /* a whole word taken by faults */
                continue;
            }
            uint64_t hi = p;
            while (hi < b->npages && hi - p < b->fill_pages && claim(b, hi))
                hi++;
            if (hi == p) {
                p++;
                continue;
            }
            place(fs, bi, p, hi - p, buf, 0);
            p = hi;
        }
    }
    g_free(buf);
    return NULL;
}

void cpr_fault_server_set_label(cpr_fault_server *fs, const char *label)
{
    fs->label = label;
}

int cpr_fault_server_mark_placed(cpr_fault_server *fs, unsigned block, uint64_t page,
                                 uint64_t count, cpr_error **errp)
{
    if (fs->fault_th)
        return cpr_error_set(errp, -EBUSY, "fault server: pages marked resident after the start");
    if (block >= fs->blocks->len)
        return cpr_error_set(errp, -EINVAL, "fault server: no block %u", block);
    fs_block *b = &g_array_index(fs->blocks, fs_block, block);
    if (page > b->npages || count > b->npages - page)
        return cpr_error_set(errp, -EINVAL, "fault server: block '%s': pages %" PRIu64 "+%" PRIu64
                             " outside its %" PRIu64, b->name, page, count, b->npages);
    for (uint64_t p = page; p < page + count; p++)
        if (claim(b, p)) {
            set_placed(b, p, 1);
            fs->placed++;
        }
    return 0;
}

int cpr_fault_server_start(cpr_fault_server *fs, cpr_error **errp)
{
    if (!fs->blocks->len)
        return cpr_error_set(errp, -EINVAL, "fault server: no RAM block registered");
    if (fs->fault_th)
        return cpr_error_set(errp, -EBUSY, "fault server: started already");
    GError *gerr = NULL;
    /* Read before the threads start: once the filler runs, it alone may see placed reach
     * total (and complete); reading it after would race with its atomic adds. */
    bool all_resident = fs->placed == fs->total; /* cpr_fault_server_mark_placed did it all */
    fs->start_us = g_get_monotonic_time();
    fs->fault_th = g_thread_try_new("cpr-uffd-fault", fault_thread, fs, &gerr);
    if (fs->fault_th)
        fs->fill_th = g_thread_try_new("cpr-uffd-fill", fill_thread, fs, &gerr);
    if (fs->fill_th && all_resident)
        complete(fs);
    if (!fs->fill_th) {
        int rc = cpr_error_set(errp, -EAGAIN, "fault server: cannot start a thread: %s",
                               gerr->message);
        g_error_free(gerr);
        return rc;
    }
    return 0;
}

void cpr_fault_server_status(cpr_fault_server *fs, cpr_fault_status *st, cpr_error **errp)
{
    st->pages_total = fs->total;
    st->pages_placed = __atomic_load_n(&fs->placed, __ATOMIC_ACQUIRE);
    st->faults = __atomic_load_n(&fs->faults, __ATOMIC_RELAXED);
    st->fault_pages = __atomic_load_n(&fs->fault_pages, __ATOMIC_RELAXED);
    st->start_us = fs->start_us;
    g_mutex_lock(&fs->lock);
    st->done_us = fs->done_us;
    st->error = fs->error;
    st->blocked_us = fs->blocked_us;
    st->max_stall_us = fs->max_stall_us;
    st->stalls = fs->stalls;
    if (fs->error)
        cpr_error_set(errp, fs->error, "%s", fs->error_msg);
    g_mutex_unlock(&fs->lock);
}

int cpr_fault_server_wait(cpr_fault_server *fs, int64_t timeout_us, cpr_error **errp)
{
    int64_t end = timeout_us < 0 ? -1 : g_get_monotonic_time() + timeout_us;
    int rc = 0;
    g_mutex_lock(&fs->lock);
    while (!fs->done_us && !fs->error) {
        if (end < 0) {
            g_cond_wait(&fs->cond, &fs->lock);
        } else if (!g_cond_wait_until(&fs->cond, &fs->lock, end)) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    if (!fs->done_us && fs->error)
        rc = cpr_error_set(errp, fs->error, "%s", fs->error_msg);
    else if (rc)
        cpr_error_set(errp, rc, "%s: not every page resident yet", fs->label);
    g_mutex_unlock(&fs->lock);
    return rc;
}

/* Pages never placed become inaccessible, so closing the userfaultfd cannot expose them. */
static void seal_missing(fs_block *b)
{
    uint64_t p = 0;
    while (p < b->npages) {
        if (test_bit(b->placed, p)) {
            p++;
            continue;
        }
        uint64_t hi = p + 1;
        while (hi < b->npages && !test_bit(b->placed, hi))
            hi++;
        mprotect(b->host + p * b->page_size, (hi - p) * b->page_size, PROT_NONE);
        p = hi;
    }
}

static void server_free(cpr_fault_server *fs, int seal_missing_pages)
{
    if (!fs)
        return;
    __atomic_store_n(&fs->stop, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(fs->stop_fd, &one, sizeof(one)) < 0) {
        /* an eventfd write only fails on overflow, which one write cannot cause */
    }
    if (fs->fill_th)
        g_thread_join(fs->fill_th);
    if (fs->fault_th)
        g_thread_join(fs->fault_th);
    /* Before the start nobody can have been served: the VMM may fill the memory another way. */
    int seal = seal_missing_pages && fs->fault_th &&
               __atomic_load_n(&fs->placed, __ATOMIC_ACQUIRE) != fs->total;
    for (guint i = 0; i < fs->blocks->len; i++) {
        fs_block *b = &g_array_index(fs->blocks, fs_block, i);
        if (seal)
            seal_missing(b);
        g_free(b->name);
        g_free(b->claimed);
        g_free(b->placed);
    }
    close(fs->uffd); /* unregisters what is left and wakes blocked faults */
    close(fs->stop_fd);
    g_array_free(fs->blocks, TRUE);
    g_array_free(fs->stalled, TRUE);
    g_mutex_clear(&fs->lock);
    g_cond_clear(&fs->cond);
    g_free(fs->error_msg);
    g_free(fs);
}

void cpr_fault_server_free(cpr_fault_server *fs)
{
    server_free(fs, 1);
}

void cpr_fault_server_drop(cpr_fault_server *fs)
{
    server_free(fs, 0);
}
