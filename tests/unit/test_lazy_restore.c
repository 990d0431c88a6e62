/* SPDX-License-Identifier: MIT */
/*
 * Lazy (instant) restore of a mapped-ram file, memory-restore-mode=ondemand: the load returns
 * with the guest's RAM not read yet, every page then arrives exactly as saved; a corrupt chunk
 * or a file cut after the start keeps the toucher blocked and is reported naming the chunk.
 * Skipped (and says so) where this host does not give userfaultfd to this process.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blocked_reader.h"
#include "handover/ram.h"
#include "migration/fault_server.h"
#include "migration/mapped_ram.h"
#include "mig_fixture.h"
#include "testutil.h"

#define RAM (8u << 20)
#define PAGE 4096u

static int have_uffd(void)
{
    cpr_error *err = NULL;
    if (cpr_fault_server_available(&err))
        return 1;
    fprintf(stderr, "SKIP lazy restore: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    return 0;
}

/* Saves a running VM to `name`, with mapped-ram or not; returns its RAM digest at the stop. */
static char *save_as(const char *name, uint64_t bytes, int mapped_ram)
{
    struct mig_vm *src = mig_running_vm(bytes, NULL); /* its upper half stays zero pages (mig_vm.c) */
    ck_assert_int_eq(cpr_cap_set(src->ctx, "mapped-ram", mapped_ram, NULL), 0);
    g_autofree char *u = uri("file", name);
    ck_assert_int_eq(cpr_migrate_uri(src->ctx, u, 0, NULL), 0);
    ck_assert_int_eq(query(src->ctx).status, CPR_MIGRATION_COMPLETED);
    char *digest = mig_vm_ram_digest(src);
    mig_vm_free(src);
    return digest;
}

static char *save(const char *name, uint64_t bytes)
{
    return save_as(name, bytes, 1);
}

typedef struct events {
    GMutex lock;
    GString *s;
} events;

static void on_event(void *opaque, int code, const char *message)
{
    events *e = opaque;
    g_mutex_lock(&e->lock);
    g_string_append_printf(e->s, "[%d %s]", code, message);
    g_mutex_unlock(&e->lock);
}

/* Starts loading `name` into dst with memory-restore-mode `mode`; returns the load's result. */
static int load_into(struct mig_vm *dst, const char *name, const char *mode, cpr_error **errp)
{
    ck_assert_int_eq(cpr_param_set(dst->ctx, "memory-restore-mode", mode, NULL), 0);
    g_autofree char *u = uri("file", name);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    return cpr_incoming_start_uri(dst->ctx, u, CPR_INCOMING_PAUSED, errp);
}

/* A new VM loading `name` on demand, its prepare hook returning fail_prepare (0: none); the
 * load's result in *ret. */
static struct mig_vm *load_ondemand_failing(const char *name, uint64_t bytes, events *ev, int fail_prepare,
                                            int *ret, cpr_error **errp)
{
    struct mig_vm *dst = mig_vm_new(bytes, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    dst->fail_prepare = fail_prepare;
    ck_assert_int_eq(cpr_lazy_restore_set_event_cb(dst->ctx, on_event, ev), 0);
    *ret = load_into(dst, name, "ondemand", errp);
    return dst;
}

static struct mig_vm *load_ondemand(const char *name, uint64_t bytes, events *ev, int *ret, cpr_error **errp)
{
    return load_ondemand_failing(name, bytes, ev, 0, ret, errp);
}

static cpr_lazy_restore_info lazy_query(cpr_ctx *ctx, cpr_error **errp)
{
    cpr_lazy_restore_info i;
    cpr_lazy_restore_info_init(&i);
    ck_assert_int_eq(cpr_lazy_restore_query(ctx, &i, errp), 0);
    return i;
}

/* Polls until every page is resident or a failure shows; at most a minute. */
static cpr_lazy_restore_info wait_settled(cpr_ctx *ctx)
{
    cpr_lazy_restore_info i = lazy_query(ctx, NULL);
    for (int k = 0; k < 6000 && !i.complete_us && !i.error; k++) {
        g_usleep(10000);
        i = lazy_query(ctx, NULL);
    }
    return i;
}

START_TEST(test_ondemand_restore_gives_back_every_page)
{
    if (!have_uffd())
        return;
    g_autofree char *want = save("snap", RAM);
    events ev = { .s = g_string_new(NULL) };
    g_mutex_init(&ev.lock);
    int ret;
    cpr_error *lerr = NULL;
    struct mig_vm *dst = load_ondemand("snap", RAM, &ev, &ret, &lerr);
    ck_assert_msg(ret == 0, "load: %s", lerr ? cpr_error_message(lerr) : "");
    cpr_lazy_restore_info i = lazy_query(dst->ctx, NULL);
    ck_assert_int_eq(i.active, 1);
    ck_assert_uint_eq(i.pages_total, RAM / PAGE);
    /* Touching every page now serves what is not there yet from the file. */
    g_autofree char *got = mig_vm_ram_digest(dst);
    ck_assert_str_eq(got, want);
    i = wait_settled(dst->ctx);
    ck_assert_int_eq(i.error, 0);
    ck_assert_uint_eq(i.pages_resident, i.pages_total);
    ck_assert_int_ge(i.complete_us, i.serve_start_us);
    g_mutex_lock(&ev.lock);
    ck_assert_str_eq(ev.s->str, "[0 lazy restore: every page resident]");
    g_mutex_unlock(&ev.lock);
    /* Once every page is here, nothing blocks migrating the VM out again. */
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_NORMAL, NULL), 0);
    mig_vm_free(dst);
    g_string_free(ev.s, TRUE);
    g_mutex_clear(&ev.lock);
}
END_TEST

/* Flips a byte of chunk `chunk` of the file's first block. */
static void flip(const char *name, uint64_t chunk)
{
    g_autofree char *p = path(name);
    cpr_mr_file *f;
    ck_assert_int_eq(cpr_mr_open(p, 0, &f, NULL), 0);
    uint64_t at = cpr_mr_block(f, 0)->pages_offset + chunk * cpr_mr_block(f, 0)->chunk_size + 9;
    cpr_mr_close(f);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    uint8_t c;
    ck_assert_int_eq(pread(fd, &c, 1, (off_t)at), 1);
    c ^= 0x40;
    ck_assert_int_eq(pwrite(fd, &c, 1, (off_t)at), 1);
    close(fd);
}

START_TEST(test_a_corrupt_chunk_blocks_its_toucher_and_is_reported)
{
    if (!have_uffd())
        return;
    g_autofree char *want = save("snap", RAM);
    flip("snap", 5);
    events ev = { .s = g_string_new(NULL) };
    g_mutex_init(&ev.lock);
    int ret;
    struct mig_vm *dst = load_ondemand("snap", RAM, &ev, &ret, NULL);
    ck_assert_int_eq(ret, 0); /* the load reads no page: the guest could start now */
    blocked_reader r = { .page = dst->host + 5 * PAGE };
    GThread *th = g_thread_new("reader", read_page, &r);
    cpr_lazy_restore_info i = wait_settled(dst->ctx);
    ck_assert_int_eq(i.error, -EBADMSG);
    cpr_error *err = NULL;
    lazy_query(dst->ctx, &err);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(cpr_error_message(err), "'" MIG_VM_RAM_NAME "' chunk 5 "),
                  "message: %s", cpr_error_message(err));
    cpr_error_free(err);
    /* Every other page still arrives. */
    for (int k = 0; k < 6000 && i.pages_resident + 64 < i.pages_total; k++) {
        g_usleep(10000);
        i = lazy_query(dst->ctx, NULL);
    }
    ck_assert_uint_ge(i.pages_resident + 64, i.pages_total);
    ck_assert_uint_lt(i.pages_resident, i.pages_total);
    ck_assert_int_eq(i.complete_us, 0);
    /* Migrating out stays blocked: RAM is not all here. */
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_NORMAL, NULL), -EPERM);
    g_usleep(100000);
    ck_assert_int_eq(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0); /* still blocked */
    g_mutex_lock(&ev.lock);
    ck_assert_msg(strstr(ev.s->str, "[-74 lazy restore: block '" MIG_VM_RAM_NAME "' pages "),
                  "events: %s", ev.s->str);
    g_mutex_unlock(&ev.lock);
    mig_vm_free(dst); /* the missing pages become inaccessible: the reader wakes with EFAULT */
    g_thread_join(th);
    ck_assert_int_eq(r.rc, -1);
    ck_assert_int_eq(r.err, EFAULT);
    g_string_free(ev.s, TRUE);
    g_mutex_clear(&ev.lock);
}
END_TEST

/* The file is cut while the pages arrive: a page either came before the cut (and is the
 * saved one) or its toucher stays blocked and the cut is reported naming the chunk. */
START_TEST(test_a_file_cut_after_the_start_never_yields_a_wrong_page)
{
    if (!have_uffd())
        return;
    const uint64_t bytes = 128u << 20;
    g_autofree char *want = save("snap", bytes);
    g_autofree char *p = path("snap");
    cpr_mr_file *f;
    ck_assert_int_eq(cpr_mr_open(p, 0, &f, NULL), 0);
    uint64_t cut = cpr_mr_block(f, 0)->pages_offset + 16 * PAGE;
    cpr_mr_close(f);
    events ev = { .s = g_string_new(NULL) };
    g_mutex_init(&ev.lock);
    int ret;
    struct mig_vm *dst = load_ondemand("snap", bytes, &ev, &ret, NULL);
    ck_assert_int_eq(ret, 0);
    ck_assert_int_eq(truncate(p, (off_t)cut), 0);
    uint64_t last = dst->pages / 2 - 1; /* a page the guest wrote */
    blocked_reader r = { .page = dst->host + last * PAGE };
    GThread *th = g_thread_new("reader", read_page, &r);
    cpr_lazy_restore_info i = wait_settled(dst->ctx);
    if (i.error) {
        ck_assert_int_eq(i.error, -EBADMSG);
        cpr_error *err = NULL;
        lazy_query(dst->ctx, &err);
        ck_assert_msg(strstr(cpr_error_message(err), "beyond the end of the file"), "message: %s",
                      cpr_error_message(err));
        cpr_error_free(err);
    } else {
        fprintf(stderr, "note: every page arrived before the cut\n");
    }
    g_usleep(100000);
    int done = __atomic_load_n(&r.done, __ATOMIC_ACQUIRE);
    struct mig_vm *ref = NULL;
    if (done) {
        /* It came before the cut: exactly the saved bytes (the source VM's fill). */
        ck_assert_int_eq(r.rc, PAGE);
        ck_assert(r.ok);
        ck_assert(!memcmp(r.copy, dst->host + last * PAGE, PAGE));
    } else {
        ck_assert_int_ne(i.error, 0); /* blocked only because its chunk failed */
    }
    mig_vm_free(dst);
    g_thread_join(th);
    if (!done)
        ck_assert_int_eq(r.err, EFAULT);
    (void)ref;
    g_string_free(ev.s, TRUE);
    g_mutex_clear(&ev.lock);
}
END_TEST

/* An incoming job that fails after its RAM section, before the guest ran: the lazy restore
 * ends and says so (event and query), instead of staying "active" with no pages forever. */
START_TEST(test_a_load_failing_before_the_guest_ran_ends_the_lazy_restore)
{
    if (!have_uffd())
        return;
    g_free(save("snap", RAM));
    events ev = { .s = g_string_new(NULL) };
    g_mutex_init(&ev.lock);
    int ret;
    struct mig_vm *dst = load_ondemand_failing("snap", RAM, &ev, -EIO, &ret, NULL);
    ck_assert_int_lt(ret, 0);
    cpr_error *qerr = NULL;
    cpr_lazy_restore_info i = lazy_query(dst->ctx, &qerr);
    ck_assert_int_eq(i.active, 1);
    ck_assert_int_eq(i.error, -ECANCELED);
    ck_assert_ptr_nonnull(qerr);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(qerr), "abandoned"));
    cpr_error_free(qerr);
    g_mutex_lock(&ev.lock);
    ck_assert_ptr_nonnull(strstr(ev.s->str, "lazy restore abandoned"));
    g_mutex_unlock(&ev.lock);
    mig_vm_free(dst);
    g_string_free(ev.s, TRUE);
    g_mutex_clear(&ev.lock);
}
END_TEST

/* A stream that carries its pages inline cannot be restored on demand: refused before the
 * guest runs, not loaded by copy behind the VMM's back. */
START_TEST(test_ondemand_refuses_a_stream_without_mapped_ram)
{
    g_free(save_as("plain", RAM, 0));
    events ev = { .s = g_string_new(NULL) };
    g_mutex_init(&ev.lock);
    int ret;
    cpr_error *lerr = NULL;
    struct mig_vm *dst = load_ondemand("plain", RAM, &ev, &ret, &lerr);
    ck_assert_int_eq(ret, -EINVAL);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(lerr), "needs a mapped-ram file"));
    cpr_error_free(lerr);
    ck_assert_int_eq(lazy_query(dst->ctx, NULL).active, 0);
    mig_vm_free(dst);
    g_string_free(ev.s, TRUE);
    g_mutex_clear(&ev.lock);
}
END_TEST

START_TEST(test_ondemand_needs_a_file_and_a_known_mode)
{
    cpr_ctx *ctx;
    ck_assert_int_eq(cpr_ctx_new(&ctx, 0, NULL), 0);
    ck_assert_cpr_fails(cpr_param_set(ctx, "memory-restore-mode", "lazy", errp_), -EINVAL,
                        "copy, ondemand or mapped");
    char *v = NULL;
    ck_assert_int_eq(cpr_param_get(ctx, "memory-restore-mode", &v, NULL), 0);
    ck_assert_str_eq(v, "copy");
    cpr_free(v);
    cpr_lazy_restore_info i;
    cpr_lazy_restore_info_init(&i);
    ck_assert_int_eq(cpr_lazy_restore_query(ctx, &i, NULL), 0);
    ck_assert_int_eq(i.active, 0);
    cpr_ctx_free(ctx);
}
END_TEST


/* ---- memory-restore-mode mapped ---------------------------------------------------------- */

static char *file_digest(const char *name)
{
    g_autofree char *p = path(name);
    g_autofree char *data = NULL;
    gsize len;
    ck_assert(g_file_get_contents(p, &data, &len, NULL));
    return g_compute_checksum_for_data(G_CHECKSUM_MD5, (const guchar *)data, len);
}

static struct mig_vm *load_mapped(const char *name, int *ret, cpr_error **errp)
{
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    *ret = load_into(dst, name, "mapped", errp);
    return dst;
}

START_TEST(test_mapped_restore_gives_back_every_page_and_never_writes_the_file)
{
    g_autofree char *want = save("snap", RAM);
    g_autofree char *file_before = file_digest("snap");
    int ret;
    cpr_error *lerr = NULL;
    struct mig_vm *dst = load_mapped("snap", &ret, &lerr);
    ck_assert_msg(ret == 0, "load: %s", lerr ? cpr_error_message(lerr) : "");
    /* The same address, now the file's pages: no fd to hand over, not shared. */
    ck_assert_ptr_eq(cpr_ram_block_host(dst->ram), dst->host);
    ck_assert_int_eq(cpr_ram_block_fd(dst->ram), -1);
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 0);
    g_autofree char *got = mig_vm_ram_digest(dst);
    ck_assert_str_eq(got, want);
    /* A guest write, in a page the file holds and in one it does not, stays in this process. */
    memset(dst->host, 0xa5, PAGE);
    memset(dst->host + (dst->pages - 1) * PAGE, 0x5a, PAGE);
    g_autofree char *file_after = file_digest("snap");
    ck_assert_str_eq(file_after, file_before);
    /* A second restore of the same file gets the saved pages, not the first one's writes. */
    struct mig_vm *clone = load_mapped("snap", &ret, NULL);
    ck_assert_int_eq(ret, 0);
    g_autofree char *clone_got = mig_vm_ram_digest(clone);
    ck_assert_str_eq(clone_got, want);
    mig_vm_free(clone);
    /* Normal migration reads through the pointer: a copy of the restored RAM, writes and all,
     * even over the very file the RAM maps (a new file renamed into place: the mapped inode is
     * never written). */
    g_autofree char *mine = mig_vm_ram_digest(dst);
    g_autofree char *again = uri("file", "snap");
    /* Not shared any more: x-ignore-shared writes it, instead of leaving it to a memfd that
     * no longer holds it (which it would refuse: a memfd ends with the process). */
    ck_assert_int_eq(cpr_cap_set(dst->ctx, "x-ignore-shared", 1, NULL), 0);
    ck_assert_int_eq(cpr_migrate_uri(dst->ctx, again, 0, NULL), 0);
    ck_assert_int_eq(query(dst->ctx).status, CPR_MIGRATION_COMPLETED);
    struct mig_vm *copy = mig_vm_new(RAM, NULL, 0);
    ck_assert_int_eq(load_into(copy, "snap", "copy", NULL), 0);
    g_autofree char *copied = mig_vm_ram_digest(copy);
    ck_assert_str_eq(copied, mine);
    g_autofree char *still = mig_vm_ram_digest(dst);
    ck_assert_str_eq(still, mine);
    mig_vm_free(copy);
    mig_vm_free(dst);
}
END_TEST

START_TEST(test_mapped_restore_blocks_the_modes_that_pass_ram_by_fd)
{
    g_free(save("snap", RAM));
    int ret;
    struct mig_vm *dst = load_mapped("snap", &ret, NULL);
    ck_assert_int_eq(ret, 0);
    g_autofree char *p = path("snap");
    char real[4096];
    ck_assert_ptr_nonnull(realpath(p, real));
    g_autofree char *reason = g_strdup_printf("RAM block '" MIG_VM_RAM_NAME "' is a private mapping of the file "
                                              "'%s'", real);
    ck_assert_cpr_fails(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_TRANSFER, errp_), -EPERM, reason);
    ck_assert_cpr_fails(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_EXEC, errp_), -EPERM, reason);
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_NORMAL, NULL), 0);
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_REBOOT, NULL), 0);
    /* A real cpr-transfer is refused with that reason before anything moves. */
    ck_assert_int_eq(cpr_param_set(dst->ctx, "mode", "cpr-transfer", NULL), 0);
    cpr_channels *ch = transfer_channels();
    ck_assert_cpr_fails(cpr_migrate_channels(dst->ctx, ch, 0, errp_), -EPERM, reason);
    cpr_channels_free(ch);
    /* Freeing the block ends the mapping, and the blocker with it. */
    cpr_ram_block_free(dst->ram);
    dst->ram = NULL;
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    mig_vm_free(dst);
}
END_TEST

/* A flipped byte is refused naming the chunk, before the guest could run; the block gets its
 * own memory back and nothing is blocked. */
START_TEST(test_mapped_restore_refuses_a_flipped_byte_before_anything_runs)
{
    g_free(save("snap", RAM));
    flip("snap", 5);
    int ret;
    cpr_error *lerr = NULL;
    struct mig_vm *dst = load_mapped("snap", &ret, &lerr);
    ck_assert_int_eq(ret, -EBADMSG);
    ck_assert_msg(strstr(cpr_error_message(lerr), "'" MIG_VM_RAM_NAME "' chunk 5 "), "message: %s",
                  cpr_error_message(lerr));
    cpr_error_free(lerr);
    ck_assert_int_eq(dst->post_loads + dst->starts, 0);
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 1);
    ck_assert_ptr_eq(cpr_ram_block_host(dst->ram), dst->host);
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_TRANSFER, NULL), 0);
    mig_vm_free(dst);
}
END_TEST

/* The bitmap rules: a page absent from it reads as zero, whatever bytes the file holds there
 * (another writer's, or an older file's). */
START_TEST(test_mapped_restore_zeroes_absent_pages_the_file_has_bytes_for)
{
    g_autofree char *want = save("snap", RAM);
    g_autofree char *p = path("snap");
    cpr_mr_file *f;
    ck_assert_int_eq(cpr_mr_open(p, 0, &f, NULL), 0);
    const struct cpr_mr_block_info *b = cpr_mr_block(f, 0);
    uint64_t page = b->pages - 3;
    ck_assert_int_eq(cpr_mr_page_present(b, page), 0);
    uint64_t at = b->pages_offset + page * PAGE;
    cpr_mr_close(f);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    uint8_t junk[PAGE];
    memset(junk, 0xee, sizeof(junk));
    ck_assert_int_eq(pwrite(fd, junk, PAGE, (off_t)at), PAGE);
    close(fd);
    int ret;
    struct mig_vm *dst = load_mapped("snap", &ret, NULL);
    ck_assert_int_eq(ret, 0);
    g_autofree char *got = mig_vm_ram_digest(dst);
    ck_assert_str_eq(got, want);
    mig_vm_free(dst);
}
END_TEST

START_TEST(test_mapped_restore_refuses_what_it_cannot_map)
{
    /* A stream with its pages inline. */
    g_free(save_as("plain", RAM, 0));
    int ret;
    cpr_error *lerr = NULL;
    struct mig_vm *dst = load_mapped("plain", &ret, &lerr);
    ck_assert_int_eq(ret, -EINVAL);
    ck_assert_ptr_nonnull(strstr(cpr_error_message(lerr), "memory-restore-mode mapped needs a mapped-ram file"));
    cpr_error_free(lerr);
    mig_vm_free(dst);
    /* A block re-attached from a preserved fd holds the guest's pages already. */
    g_free(save("snap", RAM));
    dst = mig_vm_new(RAM, NULL, MIG_VM_NO_RAM);
    int fd = memfd_create("kept", MFD_CLOEXEC);
    ck_assert_int_eq(ftruncate(fd, RAM), 0);
    ck_assert_int_eq(cpr_ram_incoming_add(dst->ctx, MIG_VM_RAM_NAME, RAM, PAGE, fd, NULL), 0);
    ck_assert_int_eq(mig_vm_add_ram(dst, RAM, NULL), 0);
    ck_assert_cpr_fails(load_into(dst, "snap", "mapped", errp_), -EINVAL, "re-attached from a preserved fd");
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 1);
    mig_vm_free(dst);
    /* The same stream 100 bytes into a file: valid, but its region is off the page grid. */
    g_autofree char *p = path("snap");
    g_autofree char *shifted = path("shifted");
    g_autofree char *data = NULL;
    gsize len;
    ck_assert(g_file_get_contents(p, &data, &len, NULL));
    GString *sh = g_string_new_len(NULL, 0);
    g_string_set_size(sh, 100);
    memset(sh->str, 0, 100);
    g_string_append_len(sh, data, (gssize)len);
    ck_assert(g_file_set_contents(shifted, sh->str, (gssize)sh->len, NULL));
    g_string_free(sh, TRUE);
    g_autofree char *at100 = g_strdup_printf("file:%s,offset=100", shifted);
    dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_int_eq(cpr_param_set(dst->ctx, "memory-restore-mode", "mapped", NULL), 0);
    ck_assert_int_eq(cpr_incoming_defer(dst->ctx, NULL), 0);
    ck_assert_cpr_fails(cpr_incoming_start_uri(dst->ctx, at100, CPR_INCOMING_PAUSED, errp_), -EINVAL,
                        "not on a page boundary");
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 1);
    mig_vm_free(dst);
}
END_TEST

/* A block an earlier restore mapped is the guest's RAM: a second mapped restore into it is
 * refused naming it, and neither that refusal nor a failing copy load unmaps the first's. */
START_TEST(test_a_second_mapped_restore_leaves_the_first_alone)
{
    g_free(save("snap", RAM));
    int ret;
    struct mig_vm *dst = load_mapped("snap", &ret, NULL);
    ck_assert_int_eq(ret, 0);
    memset(dst->host, 0xa5, PAGE); /* the guest ran and wrote */
    g_autofree char *mine = mig_vm_ram_digest(dst);
    cpr_error *lerr = NULL;
    ck_assert_int_eq(load_into(dst, "snap", "mapped", &lerr), -EBUSY);
    ck_assert_int_eq(cpr_ram_block_fd(dst->ram), -1);
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_TRANSFER, NULL), -EPERM);
    g_autofree char *after = mig_vm_ram_digest(dst);
    ck_assert_str_eq(after, mine);
    ck_assert_msg(strstr(cpr_error_message(lerr), "RAM block '" MIG_VM_RAM_NAME "' is mapped from "),
                  "message: %s", cpr_error_message(lerr));
    cpr_error_free(lerr);
    /* A copy load failing before its commit (the VMM's prepare hook) keeps the mapping too. */
    dst->fail_prepare = -EIO;
    ck_assert_int_eq(load_into(dst, "snap", "copy", NULL), -EIO);
    ck_assert_int_eq(cpr_ram_block_fd(dst->ram), -1);
    ck_assert_int_eq(cpr_blockers_check(dst->ctx, CPR_MODE_CPR_TRANSFER, NULL), -EPERM);
    mig_vm_free(dst);
}
END_TEST

static void cancel_when_active(cpr_ctx *ctx, int status, void *opaque)
{
    if (status == CPR_MIGRATION_ACTIVE)
        ck_assert_int_eq(cpr_migrate_cancel(ctx, NULL), 0);
}

/* A cancel while the chunks are checked (here: pending from the job's start, which a file
 * stream's reads never notice) stops the check with the cancel's error; the block's memory,
 * the VMM's until the commit, is left as it was. */
START_TEST(test_a_cancel_stops_the_check_and_maps_nothing)
{
    g_free(save("snap", RAM));
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    mig_vm_fill(dst);
    g_autofree char *before = mig_vm_ram_digest(dst);
    ck_assert_int_eq(cpr_migrate_set_status_cb(dst->ctx, cancel_when_active, NULL, NULL), 0);
    cpr_error *lerr = NULL;
    ck_assert_int_eq(load_into(dst, "snap", "mapped", &lerr), -ECANCELED);
    ck_assert_msg(strstr(cpr_error_message(lerr), "migration cancelled while RAM block '" MIG_VM_RAM_NAME "'"),
                  "message: %s", cpr_error_message(lerr));
    cpr_error_free(lerr);
    ck_assert_int_eq(query(dst->ctx).status, CPR_MIGRATION_CANCELLED);
    ck_assert_int_eq(dst->post_loads + dst->starts, 0);
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 1);
    g_autofree char *after = mig_vm_ram_digest(dst);
    ck_assert_str_eq(after, before);
    mig_vm_free(dst);
}
END_TEST

/* A file-backed block's file (the VMM's) survives a refused check, and keeps its contents
 * after a restore too: only the library's own memfds are emptied. */
START_TEST(test_a_file_backed_blocks_file_is_never_emptied)
{
    g_free(save("snap", RAM));
    flip("snap", 5);
    g_autofree char *ram_path = path("guest.ram");
    struct mig_vm *dst = mig_vm_new(RAM, ram_path, 0);
    ck_assert_ptr_nonnull(dst);
    mig_vm_fill(dst);
    g_autofree char *ram_before = file_digest("guest.ram");
    ck_assert_int_eq(load_into(dst, "snap", "mapped", NULL), -EBADMSG);
    g_autofree char *ram_after = file_digest("guest.ram");
    ck_assert_str_eq(ram_after, ram_before);
    mig_vm_free(dst);
    /* A good file: the restore commits, the VMM's file still holds what it held. */
    g_autofree char *want = save("good", RAM);
    dst = mig_vm_new(RAM, ram_path, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(load_into(dst, "good", "mapped", NULL), 0);
    g_autofree char *got = mig_vm_ram_digest(dst);
    ck_assert_str_eq(got, want);
    g_autofree char *ram_kept = file_digest("guest.ram");
    ck_assert_str_eq(ram_kept, ram_before);
    mig_vm_free(dst);
}
END_TEST

/* A memfd block mapped, then the VMM's prepare hook fails: the memfd's own pages come back as
 * they were (they are given back only at the commit). */
START_TEST(test_a_memfd_block_failing_after_its_mapping_gets_its_pages_back)
{
    g_free(save("good", RAM));
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    memset(dst->host, 0x3c, RAM);
    g_autofree char *mem_before = mig_vm_ram_digest(dst);
    dst->fail_prepare = -EIO;
    ck_assert_int_eq(load_into(dst, "good", "mapped", NULL), -EIO);
    ck_assert_int_eq(cpr_ram_block_shared(dst->ram), 1);
    ck_assert_ptr_eq(cpr_ram_block_host(dst->ram), dst->host);
    g_autofree char *mem_after = mig_vm_ram_digest(dst);
    ck_assert_str_eq(mem_after, mem_before);
    mig_vm_free(dst);
}
END_TEST

/* The VmFlags of the mapping that holds addr (/proc/self/smaps), or NULL. */
static char *vm_flags_at(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    ck_assert_ptr_nonnull(f);
    char line[512];
    unsigned long start, end, a = (unsigned long)(uintptr_t)addr;
    int in = 0;
    char *flags = NULL;
    while (!flags && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = start <= a && a < end;
        else if (in && !strncmp(line, "VmFlags:", 8))
            flags = g_strndup(line + 8, strcspn(line + 8, "\n"));
    }
    fclose(f);
    return flags;
}

static void advise_dontdump(struct mig_vm *vm)
{
    /* The hook point: the block is the file's mapping already when prepare runs. */
    ck_assert_int_eq(cpr_ram_block_fd(vm->ram), -1);
    ck_assert_int_eq(madvise(vm->host, RAM, MADV_DONTDUMP), 0);
}

/* The mapping drops the VMM's madvise(2) advice with the old memory (what the docs tell the
 * VMM); the prepare hook, which runs after it, is where the VMM gives it again
 * (include/cpr/lazy_restore.h), and it stays. */
START_TEST(test_advice_given_in_the_prepare_hook_stays_on_the_mapping)
{
    g_free(save("snap", RAM));
    struct mig_vm *dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    ck_assert_int_eq(madvise(dst->host, RAM, MADV_DONTDUMP), 0);
    g_autofree char *given = vm_flags_at(dst->host);
    ck_assert_msg(given && strstr(given, " dd"), "VmFlags:%s", given ? given : "(none)");
    ck_assert_int_eq(load_into(dst, "snap", "mapped", NULL), 0);
    g_autofree char *dropped = vm_flags_at(dst->host);
    ck_assert_msg(dropped && !strstr(dropped, " dd"), "VmFlags:%s", dropped ? dropped : "(none)");
    mig_vm_free(dst);
    dst = mig_vm_new(RAM, NULL, 0);
    ck_assert_ptr_nonnull(dst);
    dst->on_prepare = advise_dontdump;
    ck_assert_int_eq(load_into(dst, "snap", "mapped", NULL), 0);
    g_autofree char *flags = vm_flags_at(dst->host);
    ck_assert_ptr_nonnull(flags);
    ck_assert_msg(strstr(flags, " dd"), "VmFlags:%s", flags);
    mig_vm_free(dst);
}
END_TEST

static Suite *lazy_restore_suite(void)
{
    Suite *s = suite_create("lazy_restore");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_ondemand_restore_gives_back_every_page);
    tcase_add_test(tc, test_a_corrupt_chunk_blocks_its_toucher_and_is_reported);
    tcase_add_test(tc, test_a_file_cut_after_the_start_never_yields_a_wrong_page);
    tcase_add_test(tc, test_ondemand_needs_a_file_and_a_known_mode);
    tcase_add_test(tc, test_ondemand_refuses_a_stream_without_mapped_ram);
    tcase_add_test(tc, test_a_load_failing_before_the_guest_ran_ends_the_lazy_restore);
    suite_add_tcase(s, tc);
    TCase *mapped = tcase_create("mapped");
    tcase_add_checked_fixture(mapped, setup, teardown);
    tcase_set_timeout(mapped, 60);
    tcase_add_test(mapped, test_mapped_restore_gives_back_every_page_and_never_writes_the_file);
    tcase_add_test(mapped, test_mapped_restore_blocks_the_modes_that_pass_ram_by_fd);
    tcase_add_test(mapped, test_mapped_restore_refuses_a_flipped_byte_before_anything_runs);
    tcase_add_test(mapped, test_mapped_restore_refuses_what_it_cannot_map);
    tcase_add_test(mapped, test_mapped_restore_zeroes_absent_pages_the_file_has_bytes_for);
    tcase_add_test(mapped, test_a_second_mapped_restore_leaves_the_first_alone);
    tcase_add_test(mapped, test_a_cancel_stops_the_check_and_maps_nothing);
    tcase_add_test(mapped, test_a_file_backed_blocks_file_is_never_emptied);
    tcase_add_test(mapped, test_a_memfd_block_failing_after_its_mapping_gets_its_pages_back);
    tcase_add_test(mapped, test_advice_given_in_the_prepare_hook_stays_on_the_mapping);
    suite_add_tcase(s, mapped);
    return s;
}

CPR_TEST_MAIN(lazy_restore_suite)
