/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the cpr-state loader: any bytes are decoded as the cpr state of a
 * cpr-transfer that arrived with three fds (a 8 KiB memfd, /dev/null, a pipe), then checked
 * and installed on a fresh context. It must fail cleanly, and never leak or double-close an
 * fd: the harness checks that the process holds as many fds after each input as before.
 *
 * fuzz_load_make_seed() is the replay driver's seed hook (driver.c): here it writes a valid
 * cpr state whose three entries match those fds.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "fuzz.h"
#include "handover/cpr_state.h"
#include "proc_util.h"

/* The fds that "arrived" with the state: slot 0 memfd, 1 /dev/null, 2 a pipe's read end. */
static GArray *arrived_fds(int *pipe_w)
{
    GArray *fds = g_array_new(FALSE, FALSE, sizeof(int));
    int m = memfd_create("fuzz", MFD_CLOEXEC), p[2];
    if (m >= 0 && ftruncate(m, 8192) < 0)
        abort();
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (m < 0 || null < 0 || pipe2(p, O_CLOEXEC) < 0)
        abort();
    g_array_append_val(fds, m);
    g_array_append_val(fds, null);
    g_array_append_val(fds, p[0]);
    *pipe_w = p[1];
    return fds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int before = proc_fd_count(), pipe_w;
    cpr_ctx *ctx;
    if (cpr_ctx_new(&ctx, 0, NULL) < 0)
        abort();
    GArray *fds = arrived_fds(&pipe_w);
    cpr_state *st = NULL;
    if (cpr_state_decode(data, size, 64, fds->len, 0, &st, NULL) == 0)
        cpr_state_install(ctx, st, fds, NULL, NULL); /* consumes every fd, success or not */
    else
        for (guint i = 0; i < fds->len; i++)
            close(g_array_index(fds, int, i));
    cpr_state_free(st);
    g_array_free(fds, TRUE);
    cpr_ctx_free(ctx);
    close(pipe_w);
    if (proc_fd_count() != before)
        abort(); /* a leaked or doubly closed fd */
    return 0;
}

int fuzz_load_make_seed(void **data, size_t *len)
{
    cpr_state *st = cpr_state_new(CPR_MODE_CPR_TRANSFER, 0);
    cpr_state_entry e[3] = {
        { .kind = CPR_STATE_RAM, .name = "pc.ram", .type = S_IFREG, .size = 8192,
          .page_size = 4096, .slot = 0 },
        { .kind = CPR_STATE_FD, .name = "serial", .type = S_IFCHR, .slot = 1 },
        { .kind = CPR_STATE_FD, .name = "vhost", .id = 3, .type = S_IFIFO, .slot = 2 },
    };
    for (int i = 0; i < 3; i++)
        cpr_state_add(st, &e[i], strlen(e[i].name));
    GByteArray *b = g_byte_array_new();
    int ret = cpr_state_encode(st, b, NULL);
    cpr_state_free(st);
    *len = b->len;
    *data = g_byte_array_free(b, FALSE);
    return ret;
}
