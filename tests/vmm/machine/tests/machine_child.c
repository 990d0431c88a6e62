/* SPDX-License-Identifier: MIT */
/*
 * The "new process" of a cpr-transfer style switchover, for the machine tests and the pause
 * probe:  vmm_machine_child RAM_FD RAM_SIZE SOCK_FD ACCEL
 * Maps the inherited RAM memfd (at its own address), creates an INCOMING machine (warmed up),
 * says "r" (or "e") on the SOCK_SEQPACKET socket, receives one struct mtest_handoff, restores,
 * resumes, waits for the guest to have re-verified all its pages and answers with a struct
 * mtest_result. Then, on "b", it hands the guest back (stops it and sends a handoff); on "q" or
 * when the socket closes, it exits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mtest.h"

static char wait_command(int sock)
{
    char c = 'q';
    while (recv(sock, &c, 1, 0) < 0 && errno == EINTR)
        ;
    return c;
}

static int receive_and_restore(vmm_machine *m, vmm_hb_sampler *s, int sock, const void *ram,
                               struct mtest_result *r)
{
    size_t len = sizeof(struct mtest_handoff) + vmm_machine_nvcpus(m) * sizeof(vmm_vcpu_state);
    struct mtest_handoff *h = calloc(1, len);
    if (!h)
        return -ENOMEM;
    ssize_t got = recv(sock, h, len, 0);
    int rc = got == (ssize_t)len ? mtest_restore(m, s, ram, h, r) : -EPROTO;
    if (got != (ssize_t)len) {
        r->rc = rc;
        snprintf(r->msg, sizeof(r->msg), "handoff of %zd bytes, expected %zu", got, len);
    }
    free(h);
    return rc;
}

static int hand_back(vmm_machine *m, vmm_hb_sampler *s, int sock)
{
    size_t len;
    cpr_error *err = NULL;
    struct mtest_handoff *h = mtest_capture(m, s, &len, &err);
    if (!h) {
        fprintf(stderr, "vmm_machine_child: capture: %s\n", err ? cpr_error_message(err) : "?");
        cpr_error_free(err);
        return -EIO;
    }
    int rc = send(sock, h, len, 0) == (ssize_t)len ? 0 : -EIO;
    free(h);
    return rc;
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
    if (rc == 0)
        rc = vmm_hb_sampler_new(&s, ram, size, mtest_sampler_us(), &err);
    if (rc < 0)
        fprintf(stderr, "vmm_machine_child: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    if (send(sock, rc < 0 ? "e" : "r", 1, 0) != 1 || rc < 0)
        return 1;
    rc = receive_and_restore(m, s, sock, ram, &r);
    if (send(sock, &r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return 1;
    if (rc == 0 && wait_command(sock) == 'b') {
        rc = hand_back(m, s, sock);
        wait_command(sock);
    }
    vmm_hb_sampler_free(s);
    vmm_machine_free(m);
    return rc < 0 ? 1 : 0;
}
