/* SPDX-License-Identifier: MIT */
/*
 * Save and load throughput of one large progressive section (non-zero pages, checksums on),
 * into a memory sink and into an existing file on /dev/shm, each as a ratio to the memcpy
 * bandwidth measured in the same run.
 *
 *   bench_savevm [RAM_BYTES[K|M|G]] [RUNS]      default 4G, 3 runs
 *
 * One JSON object per line: bench, impl, mode, ram_bytes, runs, <figure>_gbps_{min,median,max}
 * and ratio_{min,median,max} (to memcpy's median); then one line per target with "pass".
 * GB/s are 10^9 bytes of guest RAM per second.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "benchutil.h"
#include "core/crc32c.h"

/* Bytes of RAM per part record: small enough that writev(2) finds the pages the checksum
 * just read still in cache. */
#ifndef CHUNK
#define CHUNK (1u << 20)
#endif
#define PAGE 4096u

struct ram {
    uint8_t *base;
    uint64_t size, next;
    uint64_t loaded;
};

static int ram_setup(cpr_stream *s, void *opaque, cpr_error **errp)
{
    struct ram *r = opaque;
    r->next = 0;
    return cpr_stream_put_u64(s, r->size, errp);
}

/* One part: (offset, length) then the pages themselves, zero-copy where the sink allows. */
static int ram_iterate(cpr_stream *s, uint64_t *pending, void *opaque, cpr_error **errp)
{
    struct ram *r = opaque;
    uint64_t len = r->size - r->next < CHUNK ? r->size - r->next : CHUNK;
    int ret = cpr_stream_put_u64(s, r->next, errp);
    if (ret >= 0)
        ret = cpr_stream_put_u64(s, len, errp);
    if (ret >= 0)
        ret = cpr_stream_put_ref(s, r->base + r->next, len, errp);
    if (ret < 0)
        return ret;
    r->next += len;
    *pending = r->size - r->next;
    return r->next == r->size;
}

static int ram_complete(cpr_stream *s, void *opaque, cpr_error **errp)
{
    return 0;
}

static int ram_load(cpr_stream *s, uint32_t version, int phase, void *opaque, cpr_error **errp)
{
    struct ram *r = opaque;
    uint64_t v, off, len;
    const void *p;
    if (phase == CPR_LIVE_START)
        return cpr_stream_get_u64(s, &v, errp);
    while (cpr_stream_remaining(s)) {
        int ret = cpr_stream_get_u64(s, &off, errp);
        if (ret >= 0)
            ret = cpr_stream_get_u64(s, &len, errp);
        if (ret < 0)
            return ret;
        if (off > r->size || len > r->size - off)
            return -EINVAL;
        if ((ret = cpr_stream_get_ptr(s, &p, len, errp)) < 0)
            return ret;
        memcpy(r->base + off, p, len);
        r->loaded += len;
    }
    return 0;
}

static const cpr_live_ops ram_ops = {
    .size = sizeof(cpr_live_ops),
    .setup = ram_setup,
    .iterate = ram_iterate,
    .complete = ram_complete,
    .load = ram_load,
};

struct stat3 {
    double min, median, max;
};

static struct stat3 summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), bench_cmp_double);
    return (struct stat3){ v[0], v[n / 2], v[n - 1] };
}

static void *big_alloc(uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "bench_savevm: cannot map %llu bytes: %s\n", (unsigned long long)size, strerror(errno));
        exit(2);
    }
    madvise(p, size, MADV_HUGEPAGE);
    memset(p, 0x5a, size); /* fault every page in before anything is timed */
    return p;
}

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_savevm: %s: %s\n", what, cpr_error_message(err));
    exit(1);
}

static void print_line(const char *mode, uint64_t bytes, int runs, const char *fig, struct stat3 g, double memcpy_gbps)
{
    printf("{\"bench\": \"savevm\", \"impl\": \"libcpr\", \"mode\": \"%s\", \"ram_bytes\": %llu, \"runs\": %d, "
           "\"%s_gbps_min\": %.3f, \"%s_gbps_median\": %.3f, \"%s_gbps_max\": %.3f, "
           "\"ratio_min\": %.3f, \"ratio_median\": %.3f, \"ratio_max\": %.3f, \"memcpy_gbps_median\": %.3f, "
           "\"checksums\": true}\n",
           mode, (unsigned long long)bytes, runs, fig, g.min, fig, g.median, fig, g.max, g.min / memcpy_gbps,
           g.median / memcpy_gbps, g.max / memcpy_gbps, memcpy_gbps);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    uint64_t size = argc > 1 ? bench_parse_size(argv[1]) / PAGE * PAGE : 4ull << 30;
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    if (size < PAGE || runs < 1) {
        fprintf(stderr, "usage: bench_savevm [RAM_BYTES[K|M|G]] [RUNS]\n");
        return 2;
    }
    struct ram ram = { .size = size };
    ram.base = big_alloc(size);
    /* Non-zero, distinct pages. */
    for (uint64_t off = 0; off < size; off += PAGE) {
        memset(ram.base + off, (int)(off / PAGE % 251) + 1, PAGE);
        memcpy(ram.base + off, &off, sizeof(off));
    }
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0 ||
        cpr_savevm_register_live(ctx, "ram", 0, 1, 1, &ram_ops, &ram, 0, NULL, &err) < 0)
        die("setup", err);

    uint64_t cap = size + size / 64 + (16u << 20);
    uint8_t *sink = big_alloc(cap);
    double *memcpy_g = calloc((size_t)runs, sizeof(double)), *save_g = calloc((size_t)runs, sizeof(double)),
           *load_g = calloc((size_t)runs, sizeof(double)), *crc_g = calloc((size_t)runs, sizeof(double));
    size_t stream_len = 0;
    for (int i = 0; i < runs; i++) {
        double t = bench_now();
        memcpy(sink, ram.base, size);
        memcpy_g[i] = size / (bench_now() - t) / 1e9;
        t = bench_now();
        volatile uint32_t c = cpr_crc32c(0, ram.base, size);
        (void)c;
        crc_g[i] = size / (bench_now() - t) / 1e9;

        cpr_stream *w;
        if (cpr_stream_new_mem_sink_buf(sink, cap, &w, &err) < 0)
            die("sink", err);
        t = bench_now();
        if (cpr_savevm_save(ctx, w, &err) < 0)
            die("save to memory", err);
        save_g[i] = size / (bench_now() - t) / 1e9;
        const void *data;
        cpr_stream_mem_data(w, &data, &stream_len, NULL);
        cpr_stream_free(w);

        cpr_stream *r;
        cpr_stream_new_mem_source(sink, stream_len, &r, NULL);
        ram.loaded = 0;
        t = bench_now();
        if (cpr_savevm_load(ctx, r, &err) < 0)
            die("load from memory", err);
        load_g[i] = size / (bench_now() - t) / 1e9;
        cpr_stream_free(r);
        if (ram.loaded != size) {
            fprintf(stderr, "bench_savevm: loaded %llu of %llu bytes\n", (unsigned long long)ram.loaded,
                    (unsigned long long)size);
            return 1;
        }
    }
    struct stat3 mc = summarize(memcpy_g, runs);
    printf("{\"bench\": \"savevm\", \"impl\": \"libcpr\", \"mode\": \"memcpy\", \"ram_bytes\": %llu, \"runs\": %d, "
           "\"memcpy_gbps_min\": %.3f, \"memcpy_gbps_median\": %.3f, \"memcpy_gbps_max\": %.3f}\n",
           (unsigned long long)size, runs, mc.min, mc.median, mc.max);
    struct stat3 crc = summarize(crc_g, runs);
    printf("{\"bench\": \"savevm\", \"impl\": \"libcpr\", \"mode\": \"crc32c%s\", \"ram_bytes\": %llu, \"runs\": %d, "
           "\"crc_gbps_min\": %.3f, \"crc_gbps_median\": %.3f, \"crc_gbps_max\": %.3f}\n",
           cpr_crc32c_hw_available() ? "-sse42" : "-table", (unsigned long long)size, runs, crc.min, crc.median, crc.max);
    struct stat3 save_mem = summarize(save_g, runs);
    print_line("save-mem", size, runs, "save", save_mem, mc.median);
    print_line("load-mem", size, runs, "load", summarize(load_g, runs), mc.median);
    munmap(sink, cap);

    /* An existing file on /dev/shm, written from its start on each run (no seek while writing). */
    char path[] = "/dev/shm/cpr-bench-savevm-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "bench_savevm: /dev/shm: %s (file figures skipped)\n", strerror(errno));
    } else {
        unlink(path);
        double *write_g = calloc((size_t)runs, sizeof(double));
        for (int i = 0; i < runs + 1; i++) {
            /* Run 0 only creates the file's pages; it is not counted. */
            if (lseek(fd, 0, SEEK_SET) < 0)
                return 1;
            double t = bench_now();
            if (cpr_savevm_save_to_fd(ctx, fd, &err) < 0)
                die("save to /dev/shm", err);
            double dt = bench_now() - t;
            if (lseek(fd, 0, SEEK_SET) < 0)
                return 1;
            ram.loaded = 0;
            t = bench_now();
            if (cpr_savevm_load_from_fd(ctx, fd, &err) < 0)
                die("load from /dev/shm", err);
            double dl = bench_now() - t;
            /* The plain write(2) of the same bytes to the same file, for comparison. */
            if (lseek(fd, 0, SEEK_SET) < 0)
                return 1;
            t = bench_now();
            for (uint64_t off = 0; off < size;) {
                ssize_t n = write(fd, ram.base + off, size - off < (64u << 20) ? size - off : (64u << 20));
                if (n <= 0)
                    return 1;
                off += (uint64_t)n;
            }
            double dw = bench_now() - t;
            if (i > 0) {
                save_g[i - 1] = size / dt / 1e9;
                load_g[i - 1] = size / dl / 1e9;
                write_g[i - 1] = size / dw / 1e9;
            }
        }
        close(fd);
        struct stat3 wr = summarize(write_g, runs);
        printf("{\"bench\": \"savevm\", \"impl\": \"libcpr\", \"mode\": \"write-shm-file\", \"ram_bytes\": %llu, "
               "\"runs\": %d, \"write_gbps_min\": %.3f, \"write_gbps_median\": %.3f, \"write_gbps_max\": %.3f}\n",
               (unsigned long long)size, runs, wr.min, wr.median, wr.max);
        free(write_g);
        print_line("save-shm-file", size, runs, "save", summarize(save_g, runs), mc.median);
        print_line("load-shm-file", size, runs, "load", summarize(load_g, runs), mc.median);
    }
    double ratio = save_mem.median / mc.median;
    /* Issue 7's target, and issue 20's stricter one. */
    for (int i = 0; i < 2; i++) {
        double limit = i ? 0.8 : 0.6;
        printf("{\"bench\": \"savevm\", \"impl\": \"libcpr\", \"target\": \"save into memory >= %.1fx memcpy\", "
               "\"ratio_median\": %.3f, \"limit\": %.1f, \"pass\": %s}\n", limit, ratio, limit,
               ratio >= limit ? "true" : "false");
    }
    cpr_ctx_free(ctx);
    munmap(ram.base, size);
    free(memcpy_g);
    free(save_g);
    free(load_g);
    free(crc_g);
    return 0;
}
