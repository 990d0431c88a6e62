/* SPDX-License-Identifier: MIT */
/* cpr-exec: the cpr state in a memfd across exec, and its adoption by the new image. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cpr/exec.h>
#include <cpr/teardown.h>

#include "core/ctx.h"
#include "core/error.h"
#include "handover/cpr_state.h"
#include "handover/exec_guard.h"
#include "handover/teardown.h"

extern char **environ;

/*
 * Writes the encoded state into a new sealed memfd and returns it reopened through /proc
 * (close-on-exec until the exec itself). A memfd's own file description reports no inotify
 * events; the reopened one does, so the rollback guardian can see a read of the state by an
 * adopter that does not speak its protocol (exec_guard.c).
 */
static int state_memfd(const GByteArray *buf, cpr_error **errp)
{
    int fd = memfd_create("cpr-exec-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "cpr-exec: memfd_create for the cpr state");
    size_t off = 0;
    while (off < buf->len) {
        ssize_t n = write(fd, buf->data + off, buf->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int ret = cpr_error_set_errno(errp, -errno, "cpr-exec: writing the cpr state");
            close(fd);
            return ret;
        }
        off += (size_t)n;
    }
    /* Sealed: the previous image, rolled back, reads exactly what it wrote. */
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    char path[32];
    g_snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    int ret = ro >= 0 ? ro : cpr_error_set_errno(errp, -errno, "cpr-exec: reopening the cpr state memfd (%s)", path);
    close(fd);
    return ret;
}

/* The current environment with CPR_EXEC_STATE_ENV set to fd and, when commit_fd is not
 * negative, CPR_EXEC_COMMIT_ENV to commit_fd (the rollback's environment has none). */
static char **exec_env(int fd, int commit_fd)
{
    GPtrArray *env = g_ptr_array_new();
    const char *ours[] = { CPR_EXEC_STATE_ENV, CPR_EXEC_COMMIT_ENV };
    for (char **e = environ; e && *e; e++) {
        int keep = 1;
        for (size_t i = 0; i < G_N_ELEMENTS(ours); i++) {
            size_t plen = strlen(ours[i]);
            keep &= strncmp(*e, ours[i], plen) || (*e)[plen] != '=';
        }
        if (keep)
            g_ptr_array_add(env, g_strdup(*e));
    }
    g_ptr_array_add(env, g_strdup_printf("%s=%d", CPR_EXEC_STATE_ENV, fd));
    if (commit_fd >= 0)
        g_ptr_array_add(env, g_strdup_printf("%s=%d", CPR_EXEC_COMMIT_ENV, commit_fd));
    g_ptr_array_add(env, NULL);
    return (char **)g_ptr_array_free(env, FALSE);
}

CPR_API int cpr_exec(cpr_ctx *ctx, const char *const *argv, cpr_error **errp)
{
    if (!ctx || !argv || !argv[0] || !*argv[0])
        return cpr_error_set(errp, -EINVAL, "cpr-exec: no command to execute");
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_autoptr(cpr_state) st = NULL;
    int ret = cpr_state_collect(ctx, CPR_MODE_CPR_EXEC, 1, &st, fds, errp);
    if (ret < 0)
        return ret;
    g_autoptr(GByteArray) buf = g_byte_array_new();
    ret = cpr_state_encode(st, buf, errp);
    /* Past the exec nobody could resume the guest: what the new image would refuse fails here. */
    if (ret == 0)
        ret = cpr_state_check_exec(buf, errp);
    if (ret < 0)
        return ret;
    int mfd = state_memfd(buf, errp);
    if (mfd < 0)
        return mfd;
    g_array_append_val(fds, mfd);

    /* Record every flag first, clear, and restore in reverse, so an fd listed twice ends as it began. */
    g_autofree int *old = g_new(int, fds->len);
    for (guint i = 0; i < fds->len; i++) {
        int fd = g_array_index(fds, int, i);
        old[i] = fcntl(fd, F_GETFD);
        if (old[i] >= 0)
            fcntl(fd, F_SETFD, old[i] & ~FD_CLOEXEC);
    }
    /* The guardian keeps what the exec keeps, so it starts once the flags are as the exec sees them. */
    g_auto(GStrv) rollback_env = exec_env(mfd, -1);
    cpr_exec_guard *guard = NULL;
    ret = cpr_exec_guard_start(argv, rollback_env, mfd, &guard, errp);
    if (ret == 0) {
        int commit_fd = cpr_exec_guard_fd(guard);
        if (commit_fd >= 0)
            fcntl(commit_fd, F_SETFD, 0);
        g_auto(GStrv) envp = exec_env(mfd, commit_fd);
        /* The exec would otherwise unmap all of guest RAM before the new image starts, inside the
         * guest's pause; without a helper (none could start) it still works, only slower. */
        int held = cpr_teardown_held(ctx);
        int deferred = !held && cpr_teardown_defer(ctx, 0, NULL) == 0;
        ret = cpr_exec_guard_ready(guard, errp);
        if (ret == 0) {
            execvpe(argv[0], (char *const *)argv, envp);
            ret = cpr_error_set_errno(errp, -errno, "cpr-exec: cannot execute %s", argv[0]);
        }
        if (deferred)
            cpr_teardown_cancel(ctx);
        cpr_exec_guard_cancel(guard);
    }
    for (guint i = fds->len; i-- > 0;) {
        if (old[i] >= 0)
            fcntl(g_array_index(fds, int, i), F_SETFD, old[i]);
    }
    close(mfd);
    return ret;
}

CPR_API int cpr_exec_command(cpr_ctx *ctx, const char *command, cpr_error **errp)
{
    g_auto(GStrv) argv = NULL;
    GError *gerr = NULL;
    if (!command || !g_shell_parse_argv(command, NULL, &argv, &gerr)) {
        int ret = cpr_error_set(errp, -EINVAL, "cpr-exec: cannot parse command '%s': %s",
                                command ? command : "", gerr ? gerr->message : "no command");
        g_clear_error(&gerr);
        return ret;
    }
    return cpr_exec(ctx, (const char *const *)argv, errp);
}

/* Reads the whole state memfd, bounded by the default limit. */
static int read_state(int fd, GByteArray *out, cpr_error **errp)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return cpr_error_set_errno(errp, -errno, "cpr-exec: fd %d of %s", fd, CPR_EXEC_STATE_ENV);
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > CPR_STATE_MAX_BYTES_DEFAULT)
        return cpr_error_set(errp, -EPROTO, "cpr-exec: fd %d of %s is not a cpr state memfd "
                             "(type 0%o, %lld bytes)", fd, CPR_EXEC_STATE_ENV,
                             (unsigned)(sb.st_mode & S_IFMT), (long long)sb.st_size);
    g_byte_array_set_size(out, (guint)sb.st_size);
    size_t off = 0;
    while (off < out->len) {
        ssize_t n = pread(fd, out->data + off, out->len - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return cpr_error_set_errno(errp, n < 0 ? -errno : -EIO, "cpr-exec: reading the cpr state");
        off += (size_t)n;
    }
    return 0;
}

/* guarded: the engine's adoption (cpr_incoming_cpr_load), which commits or abandons later and
 * so speaks the rollback guardian's protocol; else the guardian is told nothing and stands
 * down when it sees the state read. */
int cpr_exec_state_adopt_guarded(cpr_ctx *ctx, int guarded, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_exec_state_adopt: ctx is NULL");
    const char *val = getenv(CPR_EXEC_STATE_ENV);
    if (!val) {
        cpr_exec_guard_drop();
        return 0;
    }
    char *end;
    errno = 0;
    long fd = strtol(val, &end, 10);
    int ret = 0;
    if (errno || end == val || *end || fd < 0 || fd > G_MAXINT)
        ret = cpr_error_set(errp, -EINVAL, "cpr-exec: %s='%s' is not an fd number", CPR_EXEC_STATE_ENV, val);
    /* Children of the new image must not find the variable, whatever happens next. */
    unsetenv(CPR_EXEC_STATE_ENV);
    /* 'A' goes out before the first read of the state, so the guardian tells us from an older
     * adopter (which reads without it). */
    if (ret == 0 && guarded)
        cpr_exec_guard_adopting(ctx);
    if (ret < 0) {
        cpr_exec_guard_drop();
        return ret;
    }
    g_autoptr(GByteArray) buf = g_byte_array_new();
    ret = read_state((int)fd, buf, errp);
    close((int)fd);
    cpr_exec_guard_drop(); /* no-op once guarded: the variable is gone */
    if (ret < 0)
        return ret;
    g_autoptr(cpr_state) st = NULL;
    ret = cpr_state_decode(buf->data, buf->len, CPR_STATE_MAX_ENTRIES_DEFAULT, 0, 1, &st, errp);
    if (!ret && st->mode != CPR_MODE_CPR_EXEC)
        ret = cpr_error_set(errp, -EPROTO, "cpr-exec: the cpr state is for mode %s, not cpr-exec",
                            cpr_mode_name(st->mode));
    if (!ret)
        ret = cpr_state_install(ctx, st, NULL, NULL, errp);
    return ret < 0 ? ret : 1;
}

CPR_API int cpr_exec_state_adopt(cpr_ctx *ctx, cpr_error **errp)
{
    return cpr_exec_state_adopt_guarded(ctx, 0, errp);
}
