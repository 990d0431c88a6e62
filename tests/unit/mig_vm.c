/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

#include "mig_vm.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define DEV_MAGIC 0xC0FFEEu

/* Word k of page i at generation g. Generation 0 is never written: a zero page is intact. */
static uint64_t pattern(uint64_t i, uint64_t g, uint64_t k)
{
    return (g * UINT64_C(0x9E3779B97F4A7C15)) ^ (i << 20) ^ k;
}

/*
 * The guest's stores to its RAM. A real guest's are made by the CPU in guest mode, which no
 * sanitizer sees; this one's are kept out of ThreadSanitizer's view for the same reason. Its
 * races with precopy's reads are by design (dirty logging resends every page written during
 * a pass, docs/migration.md), and left visible they cost TSan one entry per racy 8 bytes in a
 * list it scans linearly on every report: minutes per live migration of a few MiB. The dirty
 * bitmap update below stays instrumented: that is the library's synchronisation.
 */
#if defined(__SANITIZE_THREAD__)
#define MIG_VM_GUEST_STORES __attribute__((no_sanitize_thread))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MIG_VM_GUEST_STORES __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef MIG_VM_GUEST_STORES
#define MIG_VM_GUEST_STORES
#endif

MIG_VM_GUEST_STORES static void write_page(struct mig_vm *vm, uint64_t i, uint64_t g)
{
    uint64_t *w = (uint64_t *)(vm->host + i * PAGE);
    for (uint64_t k = 1; k < WORDS; k++)
        w[k] = pattern(i, g, k);
    w[0] = g;
    cpr_ram_dirty_set(vm->ram, i * PAGE, PAGE, NULL);
}

static void log_add(struct mig_vm *vm, const char *kind, const char *what)
{
    g_mutex_lock(&vm->log_lock);
    g_string_append_printf(vm->log, "%s%s:%s", vm->log->len ? " " : "", kind, what);
    g_mutex_unlock(&vm->log_lock);
}

static gpointer guest(gpointer p)
{
    struct mig_vm *vm = p;
    for (;;) {
        g_mutex_lock(&vm->lock);
        while (!vm->want_run && !vm->quit) {
            vm->is_paused = 1;
            g_cond_broadcast(&vm->cond);
            g_cond_wait(&vm->cond, &vm->lock);
        }
        vm->is_paused = 0;
        int quit = vm->quit;
        uint64_t rate = vm->rate;
        g_mutex_unlock(&vm->lock);
        if (quit)
            break;
        /* The guest runs only between the lock's release and the next check, as a vCPU does
         * between exits: the stop hook waits for it to come back here. */
        for (uint64_t n = 0; n < rate && vm->ram; n++) {
            uint64_t i = vm->next_page++ % vm->dirty_span;
            write_page(vm, i, __atomic_add_fetch(&vm->dev.heartbeat, 1, __ATOMIC_RELAXED));
        }
        /* Atomic: mig_peer's alive() watches it move while the guest runs. */
        if (!vm->ram)
            __atomic_add_fetch(&vm->dev.heartbeat, 1, __ATOMIC_RELAXED);
        g_usleep(200);
    }
    return NULL;
}

static int hook_stop(cpr_ctx *ctx, void *opaque)
{
    struct mig_vm *vm = opaque;
    g_mutex_lock(&vm->lock);
    vm->want_run = 0;
    g_cond_broadcast(&vm->cond);
    while (!vm->is_paused)
        g_cond_wait(&vm->cond, &vm->lock);
    vm->stops++;
    g_mutex_unlock(&vm->lock);
    log_add(vm, "vm", "stop");
    return 0;
}

static int hook_prepare(cpr_ctx *ctx, void *opaque, cpr_error **errp)
{
    struct mig_vm *vm = opaque;
    log_add(vm, "vm", "prepare");
    if (vm->on_prepare)
        vm->on_prepare(vm);
    return vm->fail_prepare < 0 ? vm->fail_prepare : 0;
}

static int hook_start(cpr_ctx *ctx, void *opaque)
{
    struct mig_vm *vm = opaque;
    if (vm->die_in_start)
        raise(SIGKILL);
    if (vm->fail_start < 0) {
        log_add(vm, "vm", "start-failed");
        return vm->fail_start;
    }
    g_mutex_lock(&vm->lock);
    vm->want_run = 1;
    vm->starts++;
    g_cond_broadcast(&vm->cond);
    g_mutex_unlock(&vm->lock);
    log_add(vm, "vm", "start");
    return 0;
}

static int hook_is_running(cpr_ctx *ctx, void *opaque)
{
    return mig_vm_running(opaque);
}

static int hook_flush(cpr_ctx *ctx, void *opaque)
{
    struct mig_vm *vm = opaque;
    vm->flushes++;
    log_add(vm, "vm", "flush");
    return vm->fail_flush < 0 ? vm->fail_flush : 0;
}

static void on_status(cpr_ctx *ctx, int status, void *opaque)
{
    log_add(opaque, "status", cpr_migration_status_name(status));
}

static int on_event(cpr_ctx *ctx, cpr_event event, cpr_mode mode, cpr_error **errp, void *opaque)
{
    log_add(opaque, "notify", cpr_event_name(event));
    return 0;
}

static int dev_post_load(void *obj, uint32_t version, cpr_error **errp)
{
    struct mig_vm *vm = (struct mig_vm *)((char *)obj - offsetof(struct mig_vm, dev));
    vm->post_loads++;
    if (vm->die_in_post_load)
        raise(SIGKILL);
    return 0;
}

static int register_dev(struct mig_vm *vm)
{
    cpr_desc *d;
    cpr_error *err = NULL;
    int ret = cpr_desc_new("vm-dev", 1, 1, sizeof(struct vm_dev), &d, &err);
    if (ret == 0)
        ret = cpr_desc_add(d, "heartbeat", CPR_TYPE_U64, CPR_MEMBER(struct vm_dev, heartbeat), &err);
    if (ret == 0)
        ret = cpr_desc_add(d, "magic", CPR_TYPE_U32, CPR_MEMBER(struct vm_dev, magic), &err);
    if (ret == 0)
        ret = cpr_desc_field_equal(d, "magic", DEV_MAGIC, &err);
    if (ret == 0)
        ret = cpr_desc_set_hooks(d, NULL, NULL, NULL, dev_post_load, &err);
    if (ret == 0)
        ret = cpr_savevm_register(vm->ctx, NULL, 0, d, &vm->dev, 0, &vm->dev_sec, &err);
    cpr_desc_unref(d);
    if (ret < 0) {
        fprintf(stderr, "mig_vm: %s\n", cpr_error_message(err));
        cpr_error_free(err);
    }
    return ret;
}

int mig_vm_add_ram(struct mig_vm *vm, uint64_t ram_bytes, const char *ram_path)
{
    cpr_error *err = NULL;
    int ret = ram_path ? cpr_ram_block_new_file(vm->ctx, MIG_VM_RAM_NAME, ram_path, ram_bytes, 0, &vm->ram, &err)
                       : cpr_ram_block_new(vm->ctx, MIG_VM_RAM_NAME, ram_bytes, PAGE, 0, &vm->ram, &err);
    if (ret < 0) {
        fprintf(stderr, "mig_vm: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        return ret;
    }
    vm->host = cpr_ram_block_host(vm->ram);
    vm->pages = ram_bytes / PAGE;
    /* Half of RAM stays untouched, so zero pages are part of every test. */
    vm->dirty_span = vm->pages > 1 ? vm->pages / 2 : 1;
    return 0;
}

struct mig_vm *mig_vm_new(uint64_t ram_bytes, const char *ram_path, unsigned int flags)
{
    struct mig_vm *vm = g_new0(struct mig_vm, 1);
    g_mutex_init(&vm->lock);
    g_cond_init(&vm->cond);
    g_mutex_init(&vm->log_lock);
    vm->log = g_string_new(NULL);
    vm->rate = 4;
    vm->dev.magic = DEV_MAGIC;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&vm->ctx, 0, &err) < 0)
        goto fail;
    const cpr_vm_ops ops = {
        .size = sizeof(cpr_vm_ops),
        .stop = hook_stop,
        .start = hook_start,
        .prepare = hook_prepare,
        .is_running = hook_is_running,
        .flush = hook_flush,
    };
    if (cpr_migrate_set_vm_ops(vm->ctx, &ops, vm, &err) < 0 ||
        cpr_migrate_set_status_cb(vm->ctx, on_status, vm, &err) < 0 ||
        cpr_notifier_add(vm->ctx, CPR_MODES_ALL, on_event, vm, &vm->notifier, &err) < 0)
        goto fail;
    if (register_dev(vm) < 0)
        goto fail_quiet;
    if (!(flags & MIG_VM_NO_RAM) && mig_vm_add_ram(vm, ram_bytes, ram_path) < 0)
        goto fail_quiet;
    vm->want_run = !!(flags & MIG_VM_RUN);
    vm->thread = g_thread_new("guest", guest, vm);
    return vm;
fail:
    fprintf(stderr, "mig_vm: %s\n", cpr_error_message(err));
    cpr_error_free(err);
fail_quiet:
    mig_vm_free(vm);
    return NULL;
}

void mig_vm_free(struct mig_vm *vm)
{
    if (!vm)
        return;
    if (vm->thread) {
        g_mutex_lock(&vm->lock);
        vm->quit = 1;
        g_cond_broadcast(&vm->cond);
        g_mutex_unlock(&vm->lock);
        g_thread_join(vm->thread);
    }
    cpr_ctx_free(vm->ctx);
    g_string_free(vm->log, TRUE);
    g_mutex_clear(&vm->lock);
    g_cond_clear(&vm->cond);
    g_mutex_clear(&vm->log_lock);
    g_free(vm);
}

void mig_vm_fill(struct mig_vm *vm)
{
    for (uint64_t i = 0; i < vm->dirty_span; i++)
        write_page(vm, i, ++vm->dev.heartbeat);
}

uint64_t mig_vm_corrupt_pages(const struct mig_vm *vm)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < vm->pages; i++) {
        const uint64_t *w = (const uint64_t *)(vm->host + i * PAGE);
        uint64_t g = w[0];
        for (uint64_t k = 1; k < WORDS; k++) {
            if (w[k] != (g ? pattern(i, g, k) : 0)) {
                bad++;
                break;
            }
        }
    }
    return bad;
}

char *mig_vm_ram_digest(const struct mig_vm *vm)
{
    return g_compute_checksum_for_data(G_CHECKSUM_MD5, vm->host, vm->pages * PAGE);
}

char *mig_vm_log(struct mig_vm *vm)
{
    g_mutex_lock(&vm->log_lock);
    char *s = g_strdup(vm->log->str);
    g_mutex_unlock(&vm->log_lock);
    return s;
}

void mig_vm_log_clear(struct mig_vm *vm)
{
    g_mutex_lock(&vm->log_lock);
    g_string_truncate(vm->log, 0);
    g_mutex_unlock(&vm->log_lock);
}

int mig_vm_running(struct mig_vm *vm)
{
    g_mutex_lock(&vm->lock);
    int r = vm->want_run;
    g_mutex_unlock(&vm->lock);
    return r;
}

void mig_vm_set_rate(struct mig_vm *vm, uint64_t pages_per_tick)
{
    g_mutex_lock(&vm->lock);
    vm->rate = pages_per_tick;
    g_mutex_unlock(&vm->lock);
}

void mig_vm_start(struct mig_vm *vm)
{
    hook_start(vm->ctx, vm);
}

/* libcpr's unix listeners publish their path only once they listen (cpr_unix_listen renames
 * it into place): a socket file at path means a listener there. */
static int listening_now(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

int mig_wait_listening(const char *path)
{
    for (int i = 0; i < 10000; i++) {
        if (listening_now(path))
            return 1;
        g_usleep(1000);
    }
    return 0;
}
