/* SPDX-License-Identifier: MIT */
/*
 * bench_fd: what cpr-transfer costs besides device state.
 *  - fd_pass: 10,000 fds from one process to another over the cpr channel, measured from the
 *    sender's call to cpr_transfer_send() to the receiver's return from cpr_transfer_receive()
 *    (sent, received, each fd checked and installed). Target: <= 20 ms.
 *  - memfd_reattach: a filled memfd re-attached as a RAM block in a fresh process and its page
 *    tables populated, per GiB, for 1 and 8 GiB, 4 KiB pages and (when the host has them)
 *    2 MiB pages, with MAP_POPULATE at map time and with MADV_POPULATE_WRITE afterwards.
 * One JSON object per line on stdout.
 *
 *   bench_fd [--quick | --smoke] [--runs N] [--only fd|ram]
 *     --quick: 1 GiB only, 3 runs. --smoke: 1,000 fds and 64 MiB, 1 run (ctest).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include <cpr/cpr.h>

#include "benchutil.h"
#include "handover/ram.h"
#include "proc_util.h"

#define GiB (1ull << 30)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* system-wide: comparable across processes */
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Sorts v and prints "min_K", "median_K", "max_K" members. */
static void print_stats(const char *unit, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
    printf("\"min_%s\":%.3f,\"median_%s\":%.3f,\"max_%s\":%.3f", unit, v[0], unit, v[n / 2], unit, v[n - 1]);
}

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_fd: %s: %s\n", what, err ? cpr_error_message(err) : strerror(errno));
    exit(1);
}

/* The sender: saves nfds fds, connects, and reports the time just before sending. */
static void fd_sender(const char *path, int nfds, int tpipe)
{
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        die("ctx", err);
    int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < nfds; i++) {
        int fd = i ? fcntl(base, F_DUPFD_CLOEXEC, 0) : base;
        if (fd < 0 || cpr_fd_save(ctx, "dev", i, fd, &err) < 0)
            die("save", err);
    }
    int sock = cpr_transfer_connect(path, NULL, &err);
    if (sock < 0)
        die("connect", err);
    double t0 = now_ms();
    if (cpr_transfer_send(ctx, sock, NULL, &err) < 0)
        die("send", err);
    if (write(tpipe, &t0, sizeof(t0)) != sizeof(t0))
        die("report", NULL);
    if (cpr_transfer_wait_hangup(sock, NULL, &err) < 0)
        die("hangup", err);
    _exit(0);
}

static void bench_fd_pass(int nfds, int runs)
{
    g_autofree char *dir = g_dir_make_tmp("cpr-bench-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "cpr.sock", NULL);
    double *ms = g_new(double, runs);
    for (int r = 0; r < runs; r++) {
        cpr_ctx *ctx;
        cpr_error *err = NULL;
        int tp[2];
        if (cpr_ctx_new(&ctx, 0, &err) < 0 || pipe2(tp, O_CLOEXEC) < 0)
            die("setup", err);
        int lfd = cpr_transfer_listen(path, &err);
        if (lfd < 0)
            die("listen", err);
        pid_t pid = fork();
        if (pid == 0)
            fd_sender(path, nfds, tp[1]);
        int sock = cpr_transfer_accept(lfd, NULL, &err);
        if (sock < 0 || cpr_transfer_receive(ctx, sock, NULL, &err) < 0)
            die("receive", err);
        double t1 = now_ms(), t0;
        if (read(tp[0], &t0, sizeof(t0)) != sizeof(t0))
            die("read time", NULL);
        ms[r] = t1 - t0;
        if ((int)cpr_fd_count(ctx) != nfds)
            die("count", NULL);
        cpr_transfer_finish(sock, NULL);
        waitpid(pid, NULL, 0);
        close(lfd);
        close(tp[0]);
        close(tp[1]);
        unlink(path);
        cpr_ctx_free(ctx);
    }
    rmdir(dir);
    printf("{\"bench\":\"fd_pass\",\"impl\":\"libcpr\",\"mode\":\"cpr-transfer\",\"ram_bytes\":0,"
           "\"fds\":%d,\"runs\":%d,", nfds, runs);
    print_stats("ms", ms, runs);
    printf("}\n");
    double median = ms[runs / 2];
    if (nfds == 10000)
        printf("{\"target\":\"fd_pass_10000_ms\",\"value\":%.3f,\"limit\":20,\"pass\":%s}\n", median,
               median <= 20 ? "true" : "false");
    fflush(stdout);
    g_free(ms);
}

/* A memfd of `size` bytes with a non-zero pattern in every page; -1 when it cannot be made. */
static int filled_memfd(uint64_t size, uint64_t page_size)
{
    unsigned int flags = MFD_CLOEXEC;
    if (page_size != 4096)
        flags |= MFD_HUGETLB | (21u << MAP_HUGE_SHIFT);
    int fd = memfd_create("bench", flags);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        return -1;
    uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return -1;
    }
    for (uint64_t off = 0; off < size; off += 4096)
        memset(p + off, (int)(off >> 12) | 1, 64);
    munmap(p, size);
    return fd;
}

enum prefault { PF_NONE, PF_MAP_POPULATE, PF_MADV };
static const char *pf_name[] = { "none", "map_populate", "madv_populate_write" };

/* In a fresh process (new page tables, as the new VMM has): re-attach fd and prefault. */
static double reattach_once(int fd, uint64_t size, uint64_t page_size, enum prefault pf)
{
    int tp[2];
    if (pipe2(tp, O_CLOEXEC) < 0)
        die("pipe", NULL);
    pid_t pid = fork();
    if (pid == 0) {
        cpr_ctx *ctx;
        cpr_error *err = NULL;
        cpr_ram_block *b;
        if (cpr_ctx_new(&ctx, 0, &err) < 0 ||
            cpr_ram_incoming_add(ctx, "pc.ram", size, page_size, fcntl(fd, F_DUPFD_CLOEXEC, 0), &err) < 0)
            die("child setup", err);
        double t0 = now_ms();
        if (cpr_ram_block_new(ctx, "pc.ram", size, page_size,
                              CPR_RAM_REATTACH_ONLY | (pf == PF_MAP_POPULATE ? CPR_RAM_PREFAULT : 0), &b, &err) < 0)
            die("reattach", err);
        if (pf == PF_MADV && cpr_ram_block_prefault(b, &err) < 0)
            die("prefault", err);
        double ms = now_ms() - t0;
        /* Check that it is the filled memory, outside the timing. */
        if (((uint8_t *)cpr_ram_block_host(b))[size - 4096] != (uint8_t)(((size - 4096) >> 12) | 1))
            die("pattern", NULL);
        if (write(tp[1], &ms, sizeof(ms)) != sizeof(ms))
            die("report", NULL);
        _exit(0);
    }
    double ms = -1;
    if (read(tp[0], &ms, sizeof(ms)) != sizeof(ms))
        die("child failed", NULL);
    waitpid(pid, NULL, 0);
    close(tp[0]);
    close(tp[1]);
    return ms;
}

static void bench_reattach(uint64_t size, uint64_t page_size, int runs)
{
    long added = 0;
    const char *skip = NULL;
    if (page_size != 4096 && proc_hugepages_reserve((long)(size / page_size), &added) < (long)(size / page_size))
        skip = "not enough 2 MiB huge pages (/proc/sys/vm/nr_hugepages cannot be raised)";
    int fd = skip ? -1 : filled_memfd(size, page_size);
    if (!skip && fd < 0)
        skip = "cannot create and fill the memfd";
    for (int pf = PF_NONE; pf <= PF_MADV; pf++) {
        printf("{\"bench\":\"memfd_reattach\",\"impl\":\"libcpr\",\"mode\":\"cpr-transfer\","
               "\"ram_bytes\":%llu,\"page_size\":%llu,\"prefault\":\"%s\",",
               (unsigned long long)size, (unsigned long long)page_size, pf_name[pf]);
        if (skip) {
            printf("\"runs\":0,\"skipped\":\"%s\"}\n", skip);
            continue;
        }
        double *ms = g_new(double, runs), *per_gib = g_new(double, runs);
        for (int r = 0; r < runs; r++) {
            ms[r] = reattach_once(fd, size, page_size, (enum prefault)pf);
            per_gib[r] = ms[r] * GiB / (double)size;
        }
        printf("\"runs\":%d,", runs);
        print_stats("ms_per_gib", per_gib, runs);
        printf(",");
        print_stats("ms", ms, runs);
        printf("}\n");
        fflush(stdout);
        g_free(ms);
        g_free(per_gib);
    }
    if (fd >= 0)
        close(fd);
    proc_hugepages_restore(added);
}

int main(int argc, char **argv)
{
    int quick = 0, smoke = 0, runs = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--smoke"))
            smoke = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_fd [--quick | --smoke] [--runs N] [--only fd|ram]\n");
            return 2;
        }
    }
    /* 10,000 fds on each side of the pipe, in one process tree: raise the soft limit. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    if (smoke) {
        bench_fd_pass(1000, 1);
        bench_reattach(64ull << 20, 4096, 1);
        return 0;
    }
    if (!runs)
        runs = quick ? 3 : 5;
    if (!only || !strcmp(only, "fd"))
        bench_fd_pass(10000, runs);
    uint64_t sizes[] = { 1 * GiB, 8 * GiB };
    int nsizes = only && strcmp(only, "ram") ? 0 : quick ? 1 : 2;
    for (int i = 0; i < nsizes; i++) {
        bench_reattach(sizes[i], 4096, runs);
        bench_reattach(sizes[i], 2ull << 20, runs);
    }
    return 0;
}
