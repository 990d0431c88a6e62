/* SPDX-License-Identifier: MIT */
/*
 * live_update_fds: the cpr channel of cpr-transfer, as a VMM uses it.
 *
 *   live_update_fds new /tmp/cpr.sock &    # the new VMM: waits for the old one
 *   live_update_fds old /tmp/cpr.sock      # the old VMM: guest RAM and a log fd
 *
 * The old process keeps 64 MiB of "guest RAM" in a memfd RAM block and a log file open under
 * the name ("log", 0). It hands both to the new process, which re-attaches the RAM (the same
 * pages at a new address, never copied), finds the log fd, and confirms. The old process
 * would then stop its guest and send device state on the main channel.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cpr/cpr.h>

#define RAM_SIZE (64u << 20)

static int fail(cpr_error *err)
{
    fprintf(stderr, "live_update_fds: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    return 1;
}

static int old_vmm(cpr_ctx *ctx, const char *path)
{
    cpr_error *err = NULL;
    cpr_ram_block *ram;
    if (cpr_ram_block_new(ctx, "pc.ram", RAM_SIZE, 4096, 0, &ram, &err) < 0)
        return fail(err);
    strcpy(cpr_ram_block_host(ram), "guest memory written by the old process");
    int log = open("/dev/null", O_WRONLY | O_CLOEXEC); /* a device's backend fd */
    if (cpr_fd_save(ctx, "log", 0, log, &err) < 0)
        return fail(err);

    cpr_transfer_opts opts;
    cpr_transfer_opts_init(&opts);
    opts.timeout_ms = 10000;
    /* Connect, send the fds, and wait until the new process has confirmed and hung up. */
    if (cpr_transfer_outgoing(ctx, path, &opts, &err) < 0)
        return fail(err); /* nothing lost: the guest would simply go on here */
    printf("old: the new process holds the RAM and fds; stopping the guest now\n");
    cpr_fd_delete(ctx, "log", 0);
    close(log);
    return 0;
}

static int new_vmm(cpr_ctx *ctx, const char *path)
{
    cpr_error *err = NULL;
    cpr_transfer_opts opts;
    cpr_transfer_opts_init(&opts);
    opts.timeout_ms = 10000;
    /* Before creating any device: listen (0600), accept our own uid only, receive. */
    int sock = cpr_transfer_incoming(ctx, path, &opts, &err);
    if (sock < 0)
        return fail(err);
    cpr_ram_block *ram;
    if (cpr_ram_block_new(ctx, "pc.ram", RAM_SIZE, 4096, CPR_RAM_PREFAULT, &ram, &err) < 0)
        return fail(err);
    int log = cpr_fd_open(ctx, "/dev/null", O_WRONLY, 0, "log", 0, &err);
    if (log < 0)
        return fail(err);
    printf("new: RAM %s at %p says \"%s\"; log is fd %d\n",
           cpr_ram_block_reattached(ram) ? "re-attached" : "allocated", cpr_ram_block_host(ram),
           (char *)cpr_ram_block_host(ram), log);
    /* Here: listen on the main channel. Then let the old process stop its guest. */
    if (cpr_transfer_finish(sock, &err) < 0)
        return fail(err);
    cpr_fd_delete(ctx, "log", 0);
    close(log);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "old") && strcmp(argv[1], "new"))) {
        fprintf(stderr, "usage: live_update_fds old|new SOCKET\n");
        return 2;
    }
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        return fail(err);
    int ret = !strcmp(argv[1], "old") ? old_vmm(ctx, argv[2]) : new_vmm(ctx, argv[2]);
    cpr_ctx_free(ctx);
    return ret;
}
