/* SPDX-License-Identifier: MIT */
/*
 * Pause probe: the guest-visible pause of a cpr-transfer style switchover of the machine core
 * alone (no libcpr streams): a booted guest is handed to a new process (vmm_machine_child, which
 * maps the same memfd and was created and warmed up beforehand) and back, RUNS times.
 *   vmm_machine_pause [-a kvm|soft] [-m MiB] [-s vCPUs] [-n RUNS] [-r PAGES_PER_S]
 * Prints each run and min/median/max of the pause measured from the guest's heartbeats.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mtest.h"

struct opts {
    uint32_t accel, nvcpus, runs;
    uint64_t mib, rate;
    const char *child;
};

static void die(const char *what, cpr_error *err)
{
    fprintf(stderr, "vmm_machine_pause: %s%s%s\n", what, err ? ": " : "", err ? cpr_error_message(err) : "");
    exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void summary(const char *what, uint64_t *v, uint32_t n)
{
    qsort(v, n, sizeof(v[0]), cmp_u64);
    printf("%s: min %.3f ms, median %.3f ms, max %.3f ms (%u runs)\n", what, v[0] / 1e6,
           v[n / 2] / 1e6, v[n - 1] / 1e6, n);
}

static pid_t spawn(const struct opts *o, int ram_fd, int sock)
{
    pid_t pid = fork();
    if (pid == 0) {
        char fd[16], size[32], s[16], accel[8];
        snprintf(fd, sizeof(fd), "%d", ram_fd);
        snprintf(size, sizeof(size), "%llu", (unsigned long long)(o->mib << 20));
        snprintf(s, sizeof(s), "%d", sock);
        snprintf(accel, sizeof(accel), "%u", o->accel);
        execl(o->child, o->child, fd, size, s, accel, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){ .accel = VMM_ACCEL_KVM, .nvcpus = 1, .runs = 5, .mib = 1024,
                        .rate = VMM_DEFAULT_RATE_PPS };
    o->child = mtest_child_path();
    int c;
    while ((c = getopt(argc, argv, "a:m:s:n:r:")) != -1) {
        switch (c) {
        case 'a': o->accel = strcmp(optarg, "soft") == 0 ? VMM_ACCEL_SOFT : VMM_ACCEL_KVM; break;
        case 'm': o->mib = strtoull(optarg, NULL, 0); break;
        case 's': o->nvcpus = (uint32_t)atoi(optarg); break;
        case 'n': o->runs = (uint32_t)atoi(optarg); break;
        case 'r': o->rate = strtoull(optarg, NULL, 0); break;
        default:
            fprintf(stderr, "usage: %s [-a kvm|soft] [-m MiB] [-s vCPUs] [-n RUNS] [-r PAGES_PER_S]\n", argv[0]);
            exit(2);
        }
    }
    if (o->runs < 1 || o->runs > 1000)
        die("runs must be 1..1000", NULL);
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);
    uint64_t size = o.mib << 20;
    int ram_fd;
    void *ram = mtest_ram_new(size, &ram_fd);
    vmm_machine_config cfg;
    vmm_machine_config_init(&cfg);
    cfg.accel = o.accel;
    cfg.nvcpus = o.nvcpus;
    cfg.rate_pps = o.rate;
    cfg.ram = ram;
    cfg.ram_size = size;
    vmm_machine *m;
    vmm_hb_sampler *s;
    cpr_error *err = NULL;
    if (o.accel == VMM_ACCEL_KVM && access("/dev/kvm", R_OK | W_OK) != 0) {
        printf("SKIP: no usable /dev/kvm (use -a soft)\n");
        return 77;
    }
    if (vmm_machine_new(&m, &cfg, &err) < 0 || vmm_machine_boot(m, &err) < 0)
        die("machine", err);
    vmm_guest_stats st;
    if (!mtest_wait_full_verify(ram, size, 600000, &st))
        die("guest did not fill and verify its RAM", NULL);
    if (vmm_hb_sampler_new(&s, ram, size, mtest_sampler_us(), &err) < 0)
        die("sampler", err);
    printf("%s, %llu MiB, %u vCPU(s), rewrite rate %llu pages/s\n", vmm_machine_backend_name(m),
           (unsigned long long)o.mib, o.nvcpus, (unsigned long long)o.rate);

    uint64_t *to = calloc(o.runs, 8), *back = calloc(o.runs, 8);
    for (uint32_t i = 0; i < o.runs; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair", NULL);
        int child_end = dup(sv[1]); /* without close-on-exec: the child inherits it */
        pid_t pid = spawn(&o, ram_fd, child_end);
        close(child_end);
        close(sv[1]);
        char ready = 0;
        if (recv(sv[0], &ready, 1, 0) != 1 || ready != 'r')
            die("the child could not prepare its machine", NULL);
        usleep(50000);

        size_t len;
        struct mtest_handoff *h = mtest_capture(m, s, &len, &err);
        if (!h)
            die("capture", err);
        if (send(sv[0], h, len, 0) != (ssize_t)len)
            die("send handoff", NULL);
        struct mtest_result r, r2;
        if (recv(sv[0], &r, sizeof(r), 0) != (ssize_t)sizeof(r) || r.rc < 0)
            die(r.msg, NULL);
        to[i] = r.pause_ns;
        usleep(50000);
        if (send(sv[0], "b", 1, 0) != 1 || recv(sv[0], h, len, 0) != (ssize_t)len)
            die("hand back", NULL);
        if (mtest_restore(m, s, ram, h, &r2) < 0)
            die(r2.msg, NULL);
        back[i] = r2.pause_ns;
        send(sv[0], "q", 1, 0);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        free(h);
        printf("run %u: to new process %.3f ms (stop..running %.3f = stop %.3f + capture %.3f + "
               "transfer %.3f + restore %.3f + resume; late polls %llu); back %.3f ms "
               "(stop..running %.3f = %.3f + %.3f + %.3f + %.3f); corruptions %llu\n",
               i, r.pause_ns / 1e6, r.host_ns / 1e6, r.stop_ns / 1e6, r.capture_ns / 1e6,
               r.transfer_ns / 1e6, r.restore_ns / 1e6, (unsigned long long)r.late_polls,
               r2.pause_ns / 1e6, r2.host_ns / 1e6, r2.stop_ns / 1e6, r2.capture_ns / 1e6,
               r2.transfer_ns / 1e6, r2.restore_ns / 1e6, (unsigned long long)r2.after.corruptions);
        if (r.after.corruptions || r2.after.corruptions)
            die("the guest found corrupt pages", NULL);
    }
    summary("guest pause, to a new process", to, o.runs);
    summary("guest pause, back to the first", back, o.runs);
    vmm_hb_sampler_free(s);
    vmm_machine_free(m);
    free(to);
    free(back);
    return 0;
}
