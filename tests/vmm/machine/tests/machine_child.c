/* SPDX-License-Identifier: MIT */
/*
 * The "new process" of a cpr-transfer style switchover, for the machine tests:
 *   vmm_machine_child RAM_FD RAM_SIZE SOCK_FD ACCEL
 * maps the inherited RAM memfd (at its own address), creates an INCOMING machine (warmed up),
 * says "ready" on the SOCK_SEQPACKET socket, receives one struct mtest_handoff, restores, resumes,
 * waits for the guest to have re-verified all its pages and answers with a struct mtest_result.
 * It keeps the guest running until the socket says "q" or closes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mtest.h"

static int fail(struct mtest_result *r, int rc, const char *what, cpr_error *err)
{
    r->rc = rc < 0 ? rc : -EIO;
    snprintf(r->msg, sizeof(r->msg), "%s: %s", what, err ? cpr_error_message(err) : strerror(-rc));
    cpr_error_free(err);
    return r->rc;
}

static int switchover(vmm_machine *m, vmm_hb_sampler *s, int sock, const void *ram,
                      uint64_t size, struct mtest_result *r)
{
    cpr_error *err = NULL;
    uint32_t n = vmm_machine_nvcpus(m);
    size_t len = sizeof(struct mtest_handoff) + n * sizeof(vmm_vcpu_state);
    struct mtest_handoff *h = calloc(1, len);
    if (!h)
        return fail(r, -ENOMEM, "handoff buffer", NULL);
    ssize_t got = recv(sock, h, len, 0);
    if (got != (ssize_t)len) {
        free(h);
        return fail(r, got < 0 ? -errno : -EPROTO, "receiving the handoff", NULL);
    }
    uint64_t t0 = vmm_now_ns();
    vmm_hb_sampler_handoff_set(s, &h->hb);
    int rc = vmm_machine_set_vm_state(m, &h->vm, &err);
    for (uint32_t i = 0; rc == 0 && i < n; i++)
        rc = vmm_machine_set_vcpu_state(m, i, &h->vcpu[i], &err);
    uint64_t t1 = vmm_now_ns();
    if (rc == 0)
        rc = vmm_machine_resume(m, &err);
    uint64_t t2 = vmm_now_ns();
    r->restore_ns = t1 - t0;
    r->host_ns = t2 - h->stop_begin_ns;
    for (uint32_t i = 0; i < h->hb.nvcpus; i++)
        r->hb_before += h->hb.heartbeat[i];
    free(h);
    if (rc < 0)
        return fail(r, rc, "restore", err);
    if ((rc = vmm_hb_sampler_wait_pause(s, 5000, &r->pause_ns)) < 0)
        return fail(r, rc, "waiting for the heartbeat after resume", NULL);
    if (!mtest_wait_full_verify(ram, size, 60000, &r->after))
        return fail(r, -ETIMEDOUT, "waiting for a full verification pass", NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s RAM_FD RAM_SIZE SOCK_FD ACCEL\n", argv[0]);
        return 2;
    }
    int ram_fd = atoi(argv[1]), sock = atoi(argv[3]);
    uint64_t size = strtoull(argv[2], NULL, 0);
    struct mtest_result r = { 0 };
    void *ram = mtest_ram_map(ram_fd, size);
    const struct vmm_mailbox *mb = ram;

    vmm_machine_config cfg;
    vmm_machine_config_init(&cfg);
    cfg.accel = (uint32_t)atoi(argv[4]);
    cfg.flags = VMM_MACHINE_INCOMING;
    cfg.nvcpus = (uint32_t)mb->hdr.nvcpus;
    cfg.ram = ram;
    cfg.ram_size = size;
    vmm_machine *m = NULL;
    vmm_hb_sampler *s = NULL;
    cpr_error *err = NULL;
    int rc = vmm_machine_new(&m, &cfg, &err);
    if (rc < 0)
        fail(&r, rc, "creating the incoming machine", err);
    else if ((rc = vmm_hb_sampler_new(&s, ram, size, 10, &err)) < 0)
        fail(&r, rc, "starting the sampler", err);
    if (send(sock, rc < 0 ? "e" : "r", 1, 0) != 1)
        return 1;
    if (rc == 0) {
        snprintf(r.backend, sizeof(r.backend), "%s", vmm_machine_backend_name(m));
        switchover(m, s, sock, ram, size, &r);
    }
    if (send(sock, &r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return 1;
    char q;
    while (recv(sock, &q, 1, 0) < 0 && errno == EINTR)
        ;
    vmm_hb_sampler_free(s);
    vmm_machine_free(m);
    return r.rc < 0 ? 1 : 0;
}
