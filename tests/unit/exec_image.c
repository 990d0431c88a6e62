/* SPDX-License-Identifier: MIT */
/*
 * The images of the cpr-exec rollback suite (test_exec_guard.c), each a real process:
 *
 *   exec_image old DIR CMD...   the old image: saves DIR/report as fd ("report", 0) and a RAM
 *                               block holding a value, writes "old", cpr-execs CMD.
 *   exec_image old-dies DIR CMD...  the same, but it dies (a crash, a kill) after the engine's
 *                               first half (the guardian started, the state still empty) and
 *                               before its exec.
 *   exec_image new ROLE         a new image (CMD above), on libcpr's rollback protocol or not:
 *     adopt-die   adopts as the migration engine does, then exits 1 before committing
 *     abandon     adopts, gives up as a failed load does, then waits to be ended
 *     commit      adopts, commits, exits 0
 *     old-adopter reads the state memfd as a libcpr before 1.2 would (no 'A'), exits 0
 *   exec_image ...              with the state and no commit socket in the environment: the
 *                               previous image exec'd back by the guardian; adopts, checks the
 *                               fd and the RAM value, writes "rolled back".
 * Each line goes to the report with O_APPEND, so the test reads the whole story in order.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cpr/cpr.h>

#include "handover/exec.h"
#include "handover/exec_guard.h"

#define VALUE 0x5eed1234abcdull
/* The report's path, for a rolled-back image that finds no state to adopt (and so no fd). */
#define REPORT_ENV "EXEC_IMAGE_REPORT"

static int report(cpr_ctx *ctx, const char *line)
{
    int fd = cpr_fd_find(ctx, "report", 0);
    if (fd >= 0) /* an old image without a report (test_teardown's) has nothing to tell */
        dprintf(fd, "%s\n", line);
    return fd;
}

static int rolled_back(void)
{
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, NULL) < 0)
        return 90;
    if (cpr_exec_state_adopt(ctx, &err) != 1) {
        const char *path = getenv(REPORT_ENV);
        int fd = path ? open(path, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;
        if (fd >= 0)
            dprintf(fd, "rolled back: no state (%s)\n", err ? cpr_error_message(err) : "none");
        return 90;
    }
    cpr_ram_block *b;
    uint64_t v = 0;
    if (cpr_ram_block_new(ctx, "ram", 1 << 20, 4096, CPR_RAM_REATTACH_ONLY, &b, NULL) == 0)
        memcpy(&v, cpr_ram_block_host(b), 8);
    report(ctx, v == VALUE ? "rolled back: same fds, same RAM" : "rolled back: RAM lost");
    cpr_ctx_free(ctx);
    return 0;
}

static int old_image(const char *dir, char **cmd, int dies)
{
    cpr_ctx *ctx;
    cpr_ram_block *b;
    cpr_error *err = NULL;
    char path[4096];
    snprintf(path, sizeof(path), "%s/report", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || cpr_ctx_new(&ctx, 0, NULL) < 0 || cpr_fd_save(ctx, "report", 0, fd, NULL) < 0 ||
        cpr_ram_block_new(ctx, "ram", 1 << 20, 4096, 0, &b, NULL) < 0)
        return 91;
    memcpy(cpr_ram_block_host(b), &(uint64_t){ VALUE }, 8);
    report(ctx, "old");
    if (dies) {
        cpr_exec_prep *prep;
        setenv(REPORT_ENV, path, 1); /* before the guardian copies the environment */
        if (cpr_exec_prepare(ctx, (const char *const *)cmd, &prep, NULL) < 0)
            return 93;
        _exit(0);
    }
    cpr_exec(ctx, (const char *const *)cmd, &err);
    dprintf(fd, "exec failed: %s\n", cpr_error_message(err));
    cpr_error_free(err);
    cpr_fd_delete(ctx, "report", 0);
    cpr_ctx_free(ctx);
    close(fd);
    return 92;
}

/* What libcpr 1.0 and 1.1 do with the state: fstat, pread, close; no word to the guardian. */
static int older_adopter(void)
{
    int fd = atoi(getenv(CPR_EXEC_STATE_ENV));
    char buf[64];
    if (pread(fd, buf, sizeof(buf), 0) <= 0)
        return 93;
    close(fd);
    return 0;
}

static int new_image(const char *role)
{
    if (!strcmp(role, "old-adopter"))
        return older_adopter();
    cpr_ctx *ctx;
    cpr_error *err = NULL;
    if (cpr_ctx_new(&ctx, 0, NULL) < 0 || cpr_incoming_cpr_load(ctx, NULL, &err) != CPR_MODE_CPR_EXEC)
        return 94;
    report(ctx, role);
    if (!strcmp(role, "adopt-die"))
        _exit(1);
    if (!strcmp(role, "abandon")) {
        cpr_exec_abandon(ctx);
        for (;;)
            pause(); /* the guardian ends us */
    }
    cpr_exec_commit(ctx);
    cpr_fd_delete(ctx, "report", 0);
    cpr_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (getenv(CPR_EXEC_STATE_ENV) && !getenv(CPR_EXEC_COMMIT_ENV))
        return rolled_back();
    if (argc >= 4 && (!strcmp(argv[1], "old") || !strcmp(argv[1], "old-dies")))
        return old_image(argv[2], argv + 3, !strcmp(argv[1], "old-dies"));
    if (argc == 3 && !strcmp(argv[1], "new"))
        return new_image(argv[2]);
    fprintf(stderr, "usage: exec_image old|old-dies DIR CMD... | new ROLE\n");
    return 2;
}
