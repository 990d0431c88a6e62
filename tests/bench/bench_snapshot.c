/* SPDX-License-Identifier: MIT */
/*
 * The library's snapshot write path alone, against write(2) of the same bytes, in one process:
 * a RAM block filled with non-zero pages, a "running" guest (is_running says yes, so the engine
 * runs live passes and copies what it checksums) that writes nothing, and per run, in turn:
 *   - write(2) of the block's bytes, 8 MiB per call, to a new file in DIR;
 *   - cpr_migrate_uri("file:DIR/...") of the same block to a new file in DIR.
 * Both files are unlinked after each run, so each side writes a new file whose pages the
 * other side's last file just gave back: they pay the same first-touch cost. No vCPU competes
 * for a core here: the figure is the writer's own cost, not the machine's contention.
 *
 *   bench_snapshot [RAM_BYTES[K|M|G]] [RUNS] [DIR] [CHANNELS]   default 1G, 5 runs, /dev/shm
 *
 * CHANNELS (1..255): the snapshot uses mapped-ram with that many multifd-channels threads.
 *
 * One JSON object per line (bench "snapshot_path", "channels" 0 for the stream layout): write_gbps,
 * snap_gbps and ratio (per run, snapshot over write(2) of that run), pause_ms (stop to
 * completed), with CHANNELS read_gbps, restore_gbps and restore_ratio, each min/median/max,
 * and loadavg_1m.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "benchutil.h"

static int vm_running = 1;

static int vm_stop(cpr_ctx *ctx, void *opaque)
{
    vm_running = 0;
    return 0;
}

static int vm_start(cpr_ctx *ctx, void *opaque)
{
    vm_running = 1;
    return 0;
}

static int vm_is_running(cpr_ctx *ctx, void *opaque)
{
    return vm_running;
}

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_snapshot: %s: %s\n", what, err ? cpr_error_message(err) : strerror(errno));
    exit(1);
}

static void print_fig(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
    printf(", \"min_%s\": %.3f, \"median_%s\": %.3f, \"max_%s\": %.3f", name, v[0], name, v[n / 2], name, v[n - 1]);
}

/* Restore of the snapshot into a second context's block, against read(2) of the file into the
 * same memory, in this run (the file is in the page cache for both). */
static void restore_run(cpr_ctx *dst, uint8_t *host, const char *spath, const char *uri, int r, double *rg, double *rr,
                        double *ratio)
{
    cpr_error *err = NULL;
    double t = bench_now();
    int fd = open(spath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(spath, NULL);
    uint64_t total = 0;
    for (ssize_t k; (k = read(fd, host + total % (1ull << 30), 8u << 20)) > 0;)
        total += (uint64_t)k;
    close(fd);
    double dr = bench_now() - t;
    t = bench_now();
    if (cpr_incoming_defer(dst, &err) < 0 || cpr_incoming_start_uri(dst, uri, CPR_INCOMING_PAUSED, &err) < 0)
        die("restore", err);
    double dl = bench_now() - t;
    rr[r] = total / dr / 1e9;
    rg[r] = total / dl / 1e9;
    ratio[r] = dr / dl;
    fprintf(stderr, "run %d: read(2) %.2f GB/s, restore %.2f GB/s, ratio %.3f\n", r + 1, rr[r], rg[r], ratio[r]);
}

int main(int argc, char **argv)
{
    uint64_t size = argc > 1 ? bench_parse_size(argv[1]) : (1ull << 30);
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *dir = argc > 3 ? argv[3] : "/dev/shm";
    if (size == 0 || size % 4096 || runs < 1) {
        fprintf(stderr, "usage: bench_snapshot [RAM_BYTES[K|M|G]] [RUNS] [DIR]\n");
        return 2;
    }
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        die("context", err);
    cpr_ram_block *b;
    if (cpr_ram_block_new(ctx, "pc.ram", size, 4096, CPR_RAM_PREFAULT, &b, &err) < 0)
        die("RAM block", err);
    uint64_t *w = cpr_ram_block_host(b);
    for (uint64_t i = 0; i < size / 8; i++)
        w[i] = 0x9e3779b97f4a7c15ull * (i + 1);
    if (argc > 4 && (cpr_cap_set(ctx, "mapped-ram", 1, &err) < 0 ||
                     cpr_param_set(ctx, "multifd-channels", argv[4], &err) < 0))
        die("mapped-ram", err);
    cpr_vm_ops ops = { .size = sizeof(ops), .stop = vm_stop, .start = vm_start, .is_running = vm_is_running };
    if (cpr_migrate_set_vm_ops(ctx, &ops, NULL, &err) < 0)
        die("vm ops", err);
    char wpath[4096], spath[4096], uri[4200];
    snprintf(wpath, sizeof(wpath), "%s/bench-snapshot-%d.write", dir, (int)getpid());
    snprintf(spath, sizeof(spath), "%s/bench-snapshot-%d.snap", dir, (int)getpid());
    snprintf(uri, sizeof(uri), "file:%s", spath);
    double *wg = calloc((size_t)runs, sizeof(double)), *sg = calloc((size_t)runs, sizeof(double));
    double *ratio = calloc((size_t)runs, sizeof(double));
    double *pause_ms = calloc((size_t)runs, sizeof(double)); /* stop to completed (durable) */
    /* With mapped-ram (CHANNELS given): a second context restores each snapshot. */
    cpr_ctx *dst = NULL;
    uint8_t *dst_host = NULL;
    double *rg = calloc((size_t)runs, sizeof(double)), *rr = calloc((size_t)runs, sizeof(double));
    double *rratio = calloc((size_t)runs, sizeof(double));
    if (argc > 4) {
        cpr_ram_block *db;
        if (cpr_ctx_new(&dst, 0, &err) < 0 || cpr_param_set(dst, "multifd-channels", argv[4], &err) < 0 ||
            cpr_ram_block_new(dst, "pc.ram", size, 4096, CPR_RAM_PREFAULT, &db, &err) < 0)
            die("restore context", err);
        dst_host = cpr_ram_block_host(db);
    }
    for (int r = 0; r < runs; r++) {
        double t = bench_now();
        int fd = open(wpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            die(wpath, NULL);
        for (uint64_t off = 0; off < size;) {
            size_t n = size - off < (8u << 20) ? (size_t)(size - off) : (8u << 20);
            ssize_t k = write(fd, (char *)w + off, n);
            if (k <= 0)
                die("write", NULL);
            off += (uint64_t)k;
        }
        close(fd);
        double dw = bench_now() - t;
        unlink(wpath);
        vm_running = 1;
        t = bench_now();
        if (cpr_migrate_uri(ctx, uri, 0, &err) < 0)
            die("snapshot", err);
        double ds = bench_now() - t;
        cpr_migration_info mi = { .size = sizeof(mi) };
        if (cpr_migrate_query(ctx, &mi, NULL) == 0)
            pause_ms[r] = (double)mi.downtime_ms;
        struct stat st;
        if (stat(spath, &st) == 0)
            fprintf(stderr, "run %d: snapshot file %lld bytes (RAM %llu)\n", r + 1, (long long)st.st_size,
                    (unsigned long long)size);
        if (dst)
            restore_run(dst, dst_host, spath, uri, r, rg, rr, rratio);
        unlink(spath);
        wg[r] = size / dw / 1e9;
        sg[r] = size / ds / 1e9;
        ratio[r] = dw / ds;
        fprintf(stderr, "run %d: write(2) %.2f GB/s, snapshot %.2f GB/s, ratio %.3f, guest pause %.0f ms\n", r + 1,
                wg[r], sg[r], ratio[r], pause_ms[r]);
    }
    double la = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &la) != 1)
            la = 0;
        fclose(f);
    }
    printf("{\"bench\": \"snapshot_path\", \"impl\": \"libcpr\", \"mode\": \"normal\", \"ram_bytes\": %llu, \"runs\": %d, \"dir\": \"%s\", "
           "\"channels\": %d",
           (unsigned long long)size, runs, dir, argc > 4 ? atoi(argv[4]) : 0);
    print_fig("write_gbps", wg, runs);
    print_fig("snap_gbps", sg, runs);
    print_fig("ratio", ratio, runs);
    print_fig("pause_ms", pause_ms, runs);
    if (dst) {
        print_fig("read_gbps", rr, runs);
        print_fig("restore_gbps", rg, runs);
        print_fig("restore_ratio", rratio, runs);
    }
    printf(", \"loadavg_1m\": %.2f}\n", la);
    cpr_ctx_free(ctx);
    cpr_ctx_free(dst);
    free(rg);
    free(rr);
    free(rratio);
    free(pause_ms);
    free(wg);
    free(sg);
    free(ratio);
    return 0;
}
