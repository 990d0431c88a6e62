/* SPDX-License-Identifier: MIT */
/*
 * A small program built out of tree against an installed libcpr, once through pkg-config
 * (Makefile) and once through find_package(libcpr CONFIG) (CMakeLists.txt).
 *
 * It registers a blocker that stops normal migration only (a disk on local storage), then
 * asks which modes are allowed, and shows the error a mistyped mode name gets.
 * Exits 0 when the library behaves as documented, 1 otherwise.
 */
#include <errno.h>
#include <stdio.h>

#include <cpr/cpr.h>

/* Prints whether `name` may migrate now; returns the status of cpr_blockers_check(). */
static int report(cpr_ctx *ctx, const char *name)
{
    cpr_error *err = NULL;
    cpr_mode mode;
    int ret = cpr_mode_from_name(name, &mode, &err);
    if (ret == 0) {
        ret = cpr_blockers_check(ctx, mode, &err);
    }
    if (ret < 0) {
        printf("%s: refused (%d): %s\n", name, cpr_error_code(err), cpr_error_message(err));
    } else {
        printf("%s: allowed\n", name);
    }
    cpr_error_free(err);
    return ret;
}

int main(void)
{
    cpr_ctx *ctx = NULL;
    cpr_blocker *disk = NULL;
    cpr_error *err = NULL;
    int ok = 1;

    printf("libcpr %u.%u.%u\n", cpr_version() >> 16, (cpr_version() >> 8) & 0xff,
           cpr_version() & 0xff);
    if (cpr_version() >> 16 != CPR_VERSION_MAJOR) {
        printf("header/library major mismatch\n");
        return 1;
    }
    if (cpr_ctx_new(&ctx, 0, &err) < 0 ||
        cpr_blocker_add(ctx, CPR_MODES_NORMAL_ONLY, "disk d0 is on local storage", &disk,
                        &err) < 0) {
        printf("setup failed: %s\n", cpr_error_message(err));
        cpr_error_free(err);
        cpr_ctx_free(ctx);
        return 1;
    }

    ok &= report(ctx, "normal") == -EPERM;
    ok &= report(ctx, "cpr-reboot") == 0;
    ok &= report(ctx, "cpr-transfer") == 0;
    ok &= report(ctx, "cpr-rebot") == -EINVAL;

    cpr_blocker_del(ctx, disk);
    ok &= report(ctx, "normal") == 0;
    cpr_ctx_free(ctx);

    printf("consumer: %s\n", ok ? "ok" : "UNEXPECTED RESULT");
    return ok ? 0 : 1;
}
