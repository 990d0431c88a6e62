/* SPDX-License-Identifier: MIT */
/*
 * Instant (lazy) restore against a copy restore of the same mapped-ram file, in one process:
 * a RAM block of non-zero pages is saved once with mapped-ram to DIR; each run then loads it
 * into a fresh context and fresh memory, in turn with memory-restore-mode copy, ondemand and
 * mapped, and measures from the start of the load (cpr_incoming_start_uri) to
 *   - running: the VMM's start hook, called once the load committed (the guest would run);
 *   - resident: every page in memory (copy and mapped: the same instant, mapped's pages being
 *     the page cache's, every chunk read and checked, the page tables filled as the guest
 *     touches them; ondemand: the fault server's completion, the background reader having read
 *     the file in order);
 *   - touch_ms: then, a first read of every page as a guest would (its page tables filled);
 *   - own_mb: guest RAM that is this restore's alone after it (the memfd's pages, the
 *     mapping's copied-on-write pages; mapped: none until the guest writes, the page cache
 *     being shared by every restore of the file).
 * The mapped row gives running_vs_copy and running_vs_ondemand: its median over theirs, same run.
 * The copy rows also give, in the same run, read(2) of the same file into one reused 1 MiB
 * buffer (read_ms) and into fresh memory of the RAM's size, a new memfd mapping as a VMM's
 * new guest RAM (read_fresh_ms): the references a copy restore is held to.
 * No guest touches RAM meanwhile: the figure is the library's, with the page cache warm (the
 * file was just written) unless DIR is a disk the kernel evicted.
 *
 *   bench_lazy_restore [RAM_BYTES[K|M|G]] [RUNS] [DIR] [MODE]   default 1G, 3 runs, /dev/shm,
 *                                                     every mode (MODE: copy, ondemand, mapped)
 *
 * One JSON object per line per mode (bench "lazy_restore"): min/median/max of running_ms,
 * resident_ms and own_mb. Without userfaultfd ondemand is skipped, saying so (exit 77 when it
 * was the only mode asked for).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/cpr.h>

#include "benchutil.h"
#include "migration/fault_server.h"

static int vm_running;
static double started_at;

static int vm_stop(cpr_ctx *ctx, void *opaque)
{
    vm_running = 0;
    return 0;
}

static int vm_start(cpr_ctx *ctx, void *opaque)
{
    started_at = bench_now();
    vm_running = 1;
    return 0;
}

static int vm_is_running(cpr_ctx *ctx, void *opaque)
{
    return vm_running;
}

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_lazy_restore: %s: %s\n", what, err ? cpr_error_message(err) : strerror(errno));
    exit(1);
}

static cpr_ctx *vm_new(uint64_t size, cpr_ram_block **b)
{
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        die("context", err);
    if (cpr_ram_block_new(ctx, "pc.ram", size, 4096, 0, b, &err) < 0)
        die("RAM block", err);
    cpr_vm_ops ops = { .size = sizeof(ops), .stop = vm_stop, .start = vm_start, .is_running = vm_is_running };
    if (cpr_migrate_set_vm_ops(ctx, &ops, NULL, &err) < 0)
        die("vm ops", err);
    return ctx;
}

static void print_fig(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
    printf(", \"min_%s\": %.2f, \"median_%s\": %.2f, \"max_%s\": %.2f", name, v[0], name, v[n / 2], name, v[n - 1]);
}

/* The guest RAM that is this block's alone, in MiB: its memfd's allocated pages, and the
 * anonymous (copied-on-write) pages of its mapping. Page cache a mapped block reads is shared
 * by every restore of the file and not counted. */
static double own_mb(cpr_ram_block *b)
{
    double kb = 0;
    struct stat st;
    if (cpr_ram_block_fd(b) >= 0 && fstat(cpr_ram_block_fd(b), &st) == 0)
        kb += (double)st.st_blocks / 2;
    g_autofree char *smaps = NULL;
    char start[32];
    snprintf(start, sizeof(start), "%lx-", (unsigned long)(uintptr_t)cpr_ram_block_host(b));
    if (!g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL))
        return kb / 1024;
    for (char *l = smaps; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, start, strlen(start)))
            continue;
        char *anon = strstr(l, "\nAnonymous:");
        if (anon)
            kb += strtod(anon + strlen("\nAnonymous:"), NULL);
        break;
    }
    return kb / 1024;
}

/* One load in `mode`; *running_ms and *resident_ms from its start, *own the memory it added. */
static void restore(const char *uri, uint64_t size, const char *mode, double *running_ms, double *resident_ms,
                    double *touch_ms, double *own)
{
    cpr_ram_block *b;
    cpr_error *err = NULL;
    cpr_ctx *ctx = vm_new(size, &b);
    if (cpr_param_set(ctx, "memory-restore-mode", mode, &err) < 0 || cpr_incoming_defer(ctx, &err) < 0)
        die(mode, err);
    vm_running = 0;
    double t0 = bench_now();
    int64_t t0_us = g_get_monotonic_time();
    if (cpr_incoming_start_uri(ctx, uri, 0, &err) < 0)
        die("restore", err);
    *running_ms = (started_at - t0) * 1e3;
    *resident_ms = *running_ms;
    if (!strcmp(mode, "ondemand")) {
        cpr_lazy_restore_info i;
        cpr_lazy_restore_info_init(&i);
        while (cpr_lazy_restore_query(ctx, &i, &err) == 0 && !i.complete_us && !i.error)
            g_usleep(200);
        if (i.error)
            die("ondemand restore", err);
        *resident_ms = (double)(i.complete_us - t0_us) / 1e3;
    }
    /* The guest's first read of every page afterwards: page tables filled (and for mapped the
     * page cache's pages mapped) as the guest touches them. */
    double t1 = bench_now();
    volatile const uint8_t *ram = cpr_ram_block_host(b);
    uint64_t sum = 0;
    for (uint64_t off = 0; off < size; off += 4096)
        sum += ram[off];
    *touch_ms = (bench_now() - t1) * 1e3;
    (void)sum;
    *own = own_mb(b);
    /* Check a few pages: what the guest would read. */
    const uint64_t *w = cpr_ram_block_host(b);
    for (uint64_t i = 0; i < size / 8; i += size / 8 / 64)
        if (w[i] != 0x9e3779b97f4a7c15ull * (i + 1))
            die("restored RAM differs", NULL);
    cpr_ctx_free(ctx);
}

/* read(2) of the whole file into one reused buffer, or (size != 0) into a fresh memfd mapping. */
static double read_ms(const char *path, uint64_t size)
{
    static char buf[1 << 20];
    int fd = open(path, O_RDONLY);
    int mfd = size ? memfd_create("bench-read", MFD_CLOEXEC) : -1;
    char *dst = MAP_FAILED;
    if (size && mfd >= 0 && ftruncate(mfd, (off_t)size) == 0)
        dst = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (fd < 0 || (size && dst == MAP_FAILED))
        die(path, NULL);
    double t0 = bench_now();
    for (uint64_t off = 0;; off += sizeof(buf)) {
        char *to = size ? dst + MIN(off, size - sizeof(buf)) : buf;
        if (read(fd, to, sizeof(buf)) <= 0)
            break;
    }
    double t = (bench_now() - t0) * 1e3;
    if (size) {
        munmap(dst, size);
        close(mfd);
    }
    close(fd);
    return t;
}

int main(int argc, char **argv)
{
    uint64_t size = argc > 1 ? bench_parse_size(argv[1]) : (1ull << 30);
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    const char *dir = argc > 3 ? argv[3] : "/dev/shm";
    const char *only = argc > 4 ? argv[4] : NULL;
    if (size == 0 || size % 4096 || runs < 1) {
        fprintf(stderr, "usage: bench_lazy_restore [RAM_BYTES[K|M|G]] [RUNS] [DIR] [copy|ondemand|mapped]\n");
        return 2;
    }
    cpr_error *err = NULL;
    int have_uffd = cpr_fault_server_available(&err);
    if (!have_uffd) {
        fprintf(stderr, "bench_lazy_restore: ondemand skipped: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        err = NULL;
        if (only && !strcmp(only, "ondemand"))
            return 77;
    }
    char path[4096], uri[4200];
    snprintf(path, sizeof(path), "%s/bench-lazy-%d.snap", dir, (int)getpid());
    snprintf(uri, sizeof(uri), "file:%s", path);
    cpr_ram_block *b;
    cpr_ctx *src = vm_new(size, &b);
    uint64_t *w = cpr_ram_block_host(b);
    for (uint64_t i = 0; i < size / 8; i++)
        w[i] = 0x9e3779b97f4a7c15ull * (i + 1);
    vm_running = 1;
    if (cpr_cap_set(src, "mapped-ram", 1, &err) < 0 || cpr_migrate_uri(src, uri, 0, &err) < 0)
        die("save", err);
    cpr_ctx_free(src);
    static const char *const modes[] = { "copy", "ondemand", "mapped" };
    double median[3] = { 0, 0, 0 };
    for (int m = 0; m < 3; m++) {
        if ((only && strcmp(only, modes[m])) || (m == 1 && !have_uffd))
            continue;
        double *run = calloc((size_t)runs, sizeof(double)), *res = calloc((size_t)runs, sizeof(double));
        double *rd = calloc((size_t)runs, sizeof(double)), *rf = calloc((size_t)runs, sizeof(double));
        double *own = calloc((size_t)runs, sizeof(double)), *touch = calloc((size_t)runs, sizeof(double));
        for (int r = 0; r < runs; r++) {
            if (m == 0) {
                rd[r] = read_ms(path, 0);
                rf[r] = read_ms(path, size);
            }
            restore(uri, size, modes[m], &run[r], &res[r], &touch[r], &own[r]);
            fprintf(stderr, "%s run %d: running after %.2f ms, every page resident after %.2f ms, first touch of "
                    "every page %.2f ms, %.0f MiB of its own\n", modes[m], r + 1, run[r], res[r], touch[r], own[r]);
        }
        printf("{\"bench\": \"lazy_restore\", \"impl\": \"libcpr\", \"memory_restore_mode\": \"%s\", "
               "\"ram_bytes\": %llu, \"runs\": %d, \"dir\": \"%s\"", modes[m], (unsigned long long)size, runs, dir);
        print_fig("running_ms", run, runs);
        median[m] = run[runs / 2];
        print_fig("resident_ms", res, runs);
        print_fig("touch_ms", touch, runs);
        print_fig("own_mb", own, runs);
        if (m == 0) {
            print_fig("read_ms", rd, runs);
            print_fig("read_fresh_ms", rf, runs);
        }
        for (int o = 0; m == 2 && o < 2; o++)
            if (median[o] > 0)
                printf(", \"running_vs_%s\": %.3f", modes[o], median[2] / median[o]);
        printf("}\n");
        free(rd);
        free(rf);
        free(run);
        free(res);
        free(own);
        free(touch);
    }
    unlink(path);
    return 0;
}
