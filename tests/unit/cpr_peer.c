/* SPDX-License-Identifier: MIT */
/*
 * The other process in the fd and cpr channel tests: a small old VMM (send) or a small new
 * image started by cpr-exec (exec-adopt). It talks to the test on stdin and stdout.
 *
 *   cpr_peer send SOCKET NFDS RAM_BYTES [PAGE_SIZE]
 *     saves NFDS fds of /dev/null as ("dev", i) and, when RAM_BYTES > 0, a memfd RAM block
 *     "pc.ram" with a pattern in some pages; prints "inode INO host PTR"; runs the outgoing cpr
 *     channel; prints "sent" or "error CODE MESSAGE". With RAM, then reads one line: "verify
 *     VALUE" checks that the receiver wrote VALUE at offset 4096 of the block.
 *   cpr_peer exec-adopt
 *     adopts the cpr-exec state; writes a report to fd ("report", 0): the named fds, and the
 *     RAM block "ram" re-attached and its first 8 bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/cpr.h>

/* The value the sender writes at `off` of its RAM block; the receiver checks it. */
static uint64_t pattern(uint64_t off)
{
    return off * 0x9e3779b97f4a7c15ull ^ 0x5a5a5a5a5a5a5a5aull;
}

/* The helper's state, released on every exit path so that LeakSanitizer keeps exit codes. */
static cpr_ctx *ctx;
static int *fds;

static int fail(const char *what, cpr_error *err)
{
    cpr_ctx_free(ctx);
    ctx = NULL;
    free(fds);
    fds = NULL;
    printf("error %d %s: %s\n", cpr_error_code(err), what, cpr_error_message(err));
    fflush(stdout);
    cpr_error_free(err);
    return 2;
}

static int do_send(const char *path, long nfds, uint64_t ram_bytes, uint64_t page_size)
{
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        return fail("ctx", err);
    fds = calloc((size_t)nfds + 1, sizeof(int));
    for (long i = 0; i < nfds; i++) {
        fds[i] = i ? fcntl(fds[0], F_DUPFD_CLOEXEC, 0) : open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fds[i] < 0 || cpr_fd_save(ctx, "dev", (int)i, fds[i], &err) < 0)
            return fail("save", err);
    }
    cpr_ram_block *b = NULL;
    ino_t ino = 0;
    if (ram_bytes) {
        if (cpr_ram_block_new(ctx, "pc.ram", ram_bytes, page_size, 0, &b, &err) < 0)
            return fail("ram", err);
        uint8_t *host = cpr_ram_block_host(b);
        /* Sparse: a pattern at every GiB and at the last page, not a full fill. */
        for (uint64_t off = 0; off < ram_bytes; off += 1ull << 30)
            memcpy(host + off, &(uint64_t){ pattern(off) }, 8);
        uint64_t last = ram_bytes - page_size;
        memcpy(host + last, &(uint64_t){ pattern(last) }, 8);
        struct stat sb;
        fstat(cpr_ram_block_fd(b), &sb);
        ino = sb.st_ino;
    }
    printf("inode %lu host %p\n", (unsigned long)ino, b ? cpr_ram_block_host(b) : NULL);
    fflush(stdout);
    cpr_transfer_opts o;
    cpr_transfer_opts_init(&o);
    o.timeout_ms = 60000;
    /* The test may start us before it listens: retry a missing or refusing socket. */
    int sock;
    for (int i = 0; (sock = cpr_transfer_connect(path, &o, &err)) < 0; i++) {
        if (i == 1000 || (sock != -ENOENT && sock != -ECONNREFUSED))
            return fail("connect", err);
        cpr_error_free(err);
        err = NULL;
        usleep(10000);
    }
    if (cpr_transfer_send(ctx, sock, &o, &err) < 0 || cpr_transfer_wait_hangup(sock, &o, &err) < 0)
        return fail("transfer", err);
    close(sock);
    printf("sent\n");
    fflush(stdout);
    int rc = 0;
    char line[128];
    uint64_t want;
    if (b && fgets(line, sizeof(line), stdin) && sscanf(line, "verify %" SCNx64, &want) == 1) {
        uint64_t seen;
        memcpy(&seen, (uint8_t *)cpr_ram_block_host(b) + 4096, 8);
        printf("seen %" PRIx64 "\n", seen);
        fflush(stdout);
        rc = seen == want ? 0 : 3;
    }
    cpr_ctx_free(ctx); /* the registry does not own saved fds: close them ourselves */
    for (long i = 0; i < nfds; i++)
        close(fds[i]);
    free(fds);
    return rc;
}

static int report_fd(const char *name, int id, int fd, void *opaque)
{
    struct stat sb;
    fstat(fd, &sb);
    fprintf(opaque, "fd %s %d type 0%o cloexec %d\n", name, id, (unsigned)(sb.st_mode & S_IFMT),
            (fcntl(fd, F_GETFD) & FD_CLOEXEC) ? 1 : 0);
    return 0;
}

static int do_exec_adopt(uint64_t ram_bytes)
{
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, &err) < 0)
        return fail("ctx", err);
    const char *env = getenv(CPR_EXEC_STATE_ENV);
    int state_fd = env ? atoi(env) : -1;
    int ret = cpr_exec_state_adopt(ctx, &err);
    if (ret < 0)
        return fail("adopt", err);
    int rfd = cpr_fd_find(ctx, "report", 0);
    if (rfd < 0)
        return 4;
    FILE *out = fdopen(rfd, "w");
    fprintf(out, "adopted %d mode %s env %s\n", ret, cpr_mode_name(cpr_get_mode(ctx)),
            getenv(CPR_EXEC_STATE_ENV) ? "set" : "unset");
    fprintf(out, "statefd %s\n", fcntl(state_fd, F_GETFD) < 0 ? "closed" : "open");
    cpr_fd_foreach(ctx, report_fd, out);
    cpr_ram_block *b;
    if (cpr_ram_block_new(ctx, "ram", ram_bytes, 4096, CPR_RAM_REATTACH_ONLY, &b, &err) < 0) {
        fprintf(out, "ram error %s\n", cpr_error_message(err));
        cpr_error_free(err);
    } else {
        uint64_t v;
        memcpy(&v, cpr_ram_block_host(b), 8);
        fprintf(out, "ram reattached %d value %" PRIx64 "\n", cpr_ram_block_reattached(b), v);
    }
    cpr_fd_delete(ctx, "report", 0);
    fclose(out);
    cpr_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "send"))
        return do_send(argv[2], strtol(argv[3], NULL, 0), strtoull(argv[4], NULL, 0),
                       argc == 6 ? strtoull(argv[5], NULL, 0) : 4096);
    if (argc == 3 && !strcmp(argv[1], "exec-adopt"))
        return do_exec_adopt(strtoull(argv[2], NULL, 0));
    fprintf(stderr, "usage: cpr_peer send SOCKET NFDS RAM_BYTES [PAGE_SIZE] | exec-adopt RAM_BYTES\n");
    return 1;
}
