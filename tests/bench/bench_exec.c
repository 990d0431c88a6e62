/* SPDX-License-Identifier: MIT */
/*
 * bench_exec: the floor of a cpr-exec pause that no VMM code is in. A process with one shared
 * RAM block calls cpr_exec() on this program itself; the new image's main() reports how long
 * after the call it began (CLOCK_MONOTONIC, one clock for both images). cpr_exec() hands the
 * old address space to a CLONE_VM helper, so the exec unmaps nothing: what is left is the
 * kernel's exec, the dynamic loader and whatever the host charges for leaving an address
 * space whose RAM was written (on a kvm_pvm guest, without EPT, several ms a GiB, all of it
 * outside the guest's CPU time). Variants: the RAM written by the CPU before the exec, or only
 * mapped (the page tables populated, as a cpr-transfer destination maps it).
 *
 *   bench_exec [--smoke] [SIZE...]     sizes default to 0 1G 2G; --smoke: 64M, one run
 * One JSON object per line on stdout: bench "exec", ram_bytes, variant, min/median/max ms.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "benchutil.h"

#define CHILD_ARG "--exec-child"

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "bench_exec: %s: %s\n", what, err ? cpr_error_message(err) : strerror(errno));
    exit(1);
}

/* The new image: writes (its start - the old image's call) in ms to fd, as a double; then
 * adopts the state, which dismisses the rollback guardian (else it would exec the old image
 * back once this one exits). */
static int child_main(const char *t0, const char *fd)
{
    double dt = (bench_now() - strtod(t0, NULL)) * 1e3;
    cpr_ctx *ctx;
    if (cpr_ctx_new(&ctx, 0, NULL) < 0 || cpr_exec_state_adopt(ctx, NULL) != 1)
        return 1;
    cpr_ctx_free(ctx);
    return write(atoi(fd), &dt, sizeof(dt)) == sizeof(dt) ? 0 : 1;
}

/* The old image: a RAM block, written or only mapped, then cpr_exec() of this program. */
static void old_image(const char *self, uint64_t size, int written, int report_fd)
{
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        die("ctx", err);
    if (size) {
        cpr_ram_block *b;
        if (cpr_ram_block_new(ctx, "ram0", size, 4096, written ? 0 : CPR_RAM_PREFAULT, &b, &err) < 0)
            die("ram block", err);
        if (written)
            memset(cpr_ram_block_host(b), 0x5a, size);
    }
    char t0[32], fd[16];
    snprintf(fd, sizeof(fd), "%d", report_fd);
    snprintf(t0, sizeof(t0), "%.9f", bench_now());
    const char *argv[] = { self, CHILD_ARG, t0, fd, NULL };
    cpr_exec(ctx, argv, &err);
    die("cpr_exec", err);
}

static double one_run(const char *self, uint64_t size, int written)
{
    int p[2];
    if (pipe(p) < 0) /* no O_CLOEXEC: the write end must reach the new image */
        die("pipe", NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    if (pid == 0) {
        close(p[0]);
        old_image(self, size, written, p[1]);
    }
    close(p[1]);
    double ms = -1;
    if (read(p[0], &ms, sizeof(ms)) != sizeof(ms))
        die("the new image did not report", NULL);
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    return ms;
}

static void bench(const char *self, uint64_t size, int written, int runs)
{
    double *v = calloc((size_t)runs, sizeof(*v));
    for (int r = 0; r < runs; r++)
        v[r] = one_run(self, size, written);
    qsort(v, (size_t)runs, sizeof(*v), bench_cmp_double);
    printf("{\"bench\":\"exec\",\"impl\":\"libcpr\",\"mode\":\"cpr-exec\",\"ram_bytes\":%llu,"
           "\"variant\":\"%s\",\"runs\":%d,\"min_ms\":%.3f,\"median_ms\":%.3f,\"max_ms\":%.3f}\n",
           (unsigned long long)size, written ? "written" : "mapped", runs, v[0], v[runs / 2],
           v[runs - 1]);
    fflush(stdout);
    free(v);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], CHILD_ARG))
        return child_main(argv[2], argv[3]);
    int smoke = argc > 1 && !strcmp(argv[1], "--smoke");
    int runs = smoke ? 1 : 9, first = smoke ? 2 : 1;
    const char *defaults[] = { "0", "1G", "2G" }, *smoke_sizes[] = { "64M" };
    const char **sizes = argc > first ? (const char **)argv + first : smoke ? smoke_sizes : defaults;
    int n = argc > first ? argc - first : smoke ? 1 : 3;
    /* /proc/self/exe: the new image is this very binary, wherever it was started from. */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len < 0)
        die("readlink /proc/self/exe", NULL);
    self[len] = '\0';
    for (int i = 0; i < n; i++) {
        uint64_t size = bench_parse_size(sizes[i]);
        bench(self, size, 1, runs);
        if (size)
            bench(self, size, 0, runs);
    }
    return 0;
}
