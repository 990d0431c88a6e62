/* SPDX-License-Identifier: MIT */
/*
 * bench_ram_identity: what the "ram-identity" section (docs/format.md, section 6) adds to the
 * guest's pause, on each side: writing the identity of a RAM block left in place and checking
 * it on load. A memfd block (cpr-transfer, cpr-exec: one fstat), and a file block in DIR
 * (cpr-reboot: fstat, 8 lseek(SEEK_DATA), 8 page CRCs) with one page written per MiB (data
 * scattered through holes, the worst case for the sample search), then fully written.
 * One JSON object per line on stdout.
 *
 *   bench_ram_identity [SIZE] [RUNS] [DIR]      (default 1G 200 /dev/shm)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/cpr.h>

#include "benchutil.h"
#include "format/record.h"
#include "handover/ram_identity.h"

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_ram_identity: %s: %s\n", what, err ? cpr_error_message(err) : "failed");
    exit(1);
}

/* Microseconds to write, then to check, the identity of block b; runs of each, sorted. */
static void measure(cpr_ctx *ctx, cpr_ram_block *b, int runs, double *put_us, double *check_us)
{
    GPtrArray *kept = g_ptr_array_new();
    g_ptr_array_add(kept, b);
    cpr_error *err = NULL;
    for (int i = 0; i < runs; i++) {
        cpr_stream *w, *r;
        struct cpr_rec rec;
        if (cpr_stream_new_mem_sink(0, &w, &err) < 0 || cpr_rec_write_stream_header(w, &err) < 0 ||
            cpr_rec_write(w, CPR_REC_CONFIG, "{}", 2, &err) < 0 ||
            cpr_rec_begin_section(w, CPR_REC_FULL, CPR_RAM_IDENTITY_SECTION, 0, 1, NULL, &err) < 0)
            die("sink", err);
        double t0 = bench_now();
        if (cpr_ram_identity_put(w, kept, &err) < 0)
            die("put", err);
        put_us[i] = (bench_now() - t0) * 1e6;
        const void *data;
        size_t len;
        if (cpr_rec_end(w, &err) < 0 || cpr_stream_mem_data(w, &data, &len, &err) < 0 ||
            cpr_stream_new_mem_source(data, len, &r, &err) < 0 || cpr_rec_read_stream_header(r, NULL, &err) < 0 ||
            cpr_rec_next(r, &rec, &err) != 1 || cpr_rec_next(r, &rec, &err) != 1)
            die("stream", err);
        t0 = bench_now();
        if (cpr_ram_identity_check(r, ctx, &err) < 0)
            die("check", err);
        check_us[i] = (bench_now() - t0) * 1e6;
        cpr_stream_free(r);
        cpr_stream_free(w);
    }
    g_ptr_array_free(kept, TRUE);
    qsort(put_us, (size_t)runs, sizeof(double), bench_cmp_double);
    qsort(check_us, (size_t)runs, sizeof(double), bench_cmp_double);
}

static void report(const char *layout, uint64_t size, int runs, const double *put, const double *check)
{
    printf("{\"bench\":\"ram_identity\",\"layout\":\"%s\",\"size\":%" G_GUINT64_FORMAT ",\"runs\":%d,"
           "\"put_median_us\":%.2f,\"put_max_us\":%.2f,\"check_median_us\":%.2f,\"check_max_us\":%.2f}\n",
           layout, size, runs, put[runs / 2], put[runs - 1], check[runs / 2], check[runs - 1]);
}

int main(int argc, char **argv)
{
    uint64_t size = argc > 1 ? bench_parse_size(argv[1]) : (1ull << 30);
    int runs = argc > 2 ? atoi(argv[2]) : 200;
    if (size < (1u << 20) || runs < 1) {
        fprintf(stderr, "usage: bench_ram_identity [SIZE >= 1M] [RUNS >= 1]\n");
        return 2;
    }
    const char *dir = argc > 3 ? argv[3] : "/dev/shm";
    cpr_ctx *ctx;
    cpr_ram_block *m, *f;
    cpr_error *err = NULL;
    g_autofree char *file = g_strdup_printf("%s/bench_ram_identity.%d", dir, (int)getpid());
    if (cpr_ctx_new(&ctx, 0, &err) < 0 || cpr_ram_block_new(ctx, "memfd", size, 4096, 0, &m, &err) < 0 ||
        cpr_ram_block_new_file(ctx, "file", file, size, 0, &f, &err) < 0)
        die("setup", err);
    double *put = g_new(double, runs), *check = g_new(double, runs);
    measure(ctx, m, runs, put, check);
    report("memfd", size, runs, put, check);
    uint8_t *host = cpr_ram_block_host(f);
    for (uint64_t off = 0; off < size; off += 1u << 20)
        host[off + 4096] = 1;
    measure(ctx, f, runs, put, check);
    report("file-page-per-MiB", size, runs, put, check);
    memset(host, 0x5a, size);
    measure(ctx, f, runs, put, check);
    report("file-full", size, runs, put, check);
    unlink(file);
    g_free(put);
    g_free(check);
    cpr_ctx_free(ctx);
    return 0;
}
