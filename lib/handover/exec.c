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

#include "channel/scm.h"
#include "core/ctx.h"
#include "core/error.h"
#include "core/trace.h"
#include "handover/cpr_state.h"
#include "handover/exec.h"
#include "handover/exec_guard.h"
#include "handover/teardown.h"

extern char **environ;

/*
 * A new memfd for the cpr state, returned reopened through /proc, read-write and close-on-exec
 * (until the exec itself). A memfd's own file description reports no inotify events; the
 * reopened one does, so the rollback guardian can see a read of the state by an adopter that
 * does not speak its protocol (exec_guard.c). Created before the stop and filled after it:
 * writes report no event the guardian watches (it watches opens and reads).
 */
static int state_memfd(cpr_error **errp)
{
    int fd = memfd_create("cpr-exec-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return cpr_error_set_errno(errp, -errno, "cpr-exec: memfd_create for the cpr state");
    char path[32];
    g_snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int rw = open(path, O_RDWR | O_CLOEXEC);
    int ret = rw >= 0 ? rw : cpr_error_set_errno(errp, -errno, "cpr-exec: reopening the cpr state memfd (%s)", path);
    close(fd);
    return ret;
}

static int state_fill(int fd, const GByteArray *buf, cpr_error **errp)
{
    int ret = cpr_io_pwrite_all(fd, buf->data, buf->len, 0);
    if (ret < 0)
        return cpr_error_set_errno(errp, ret, "cpr-exec: writing the cpr state");
    /* Sealed: the previous image, rolled back, reads exactly what it wrote. */
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    return 0;
}

/* The current environment with CPR_EXEC_STATE_ENV set to fd and, when commit_fd is not
 * negative, CPR_EXEC_COMMIT_ENV to commit_fd (the rollback's environment has none), and
 * CPR_EXEC_TRACE_ENV to trace when not NULL (the old image's steps, docs/migration.md). */
static char **exec_env(int fd, int commit_fd, const char *trace)
{
    GPtrArray *env = g_ptr_array_new();
    const char *ours[] = { CPR_EXEC_STATE_ENV, CPR_EXEC_COMMIT_ENV, CPR_EXEC_TRACE_ENV };
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
    if (trace)
        g_ptr_array_add(env, g_strdup_printf("%s=%s", CPR_EXEC_TRACE_ENV, trace));
    g_ptr_array_add(env, NULL);
    return (char **)g_ptr_array_free(env, FALSE);
}

/* What a prepared cpr-exec holds until the exec (or until it is dropped). */
struct cpr_exec_prep {
    cpr_ctx *ctx;
    int deferred;       /* we started the teardown helper: cancel it if no exec follows */
    char **argv;
    int mfd;            /* the state memfd, empty until the stop */
    GArray *fds;        /* the preserved fds when the guardian started (int) */
    GArray *ids;        /* their identity then (struct fd_id) */
    char **rollback_env;
    cpr_exec_guard *guard;
};

struct fd_id {
    dev_t dev;
    ino_t ino;
};

static void fd_ids(const GArray *fds, GArray *ids)
{
    g_array_set_size(ids, 0);
    for (guint i = 0; i < fds->len; i++) {
        struct stat sb;
        struct fd_id id = { 0, 0 };
        if (fstat(g_array_index(fds, int, i), &sb) == 0)
            id = (struct fd_id){ sb.st_dev, sb.st_ino };
        g_array_append_val(ids, id);
    }
}

/* Whether fds, collected after the stop, are the ones the guardian took at its start. */
static int same_fds(const cpr_exec_prep *p, const GArray *fds)
{
    if (fds->len != p->fds->len)
        return 0;
    g_autoptr(GArray) now = g_array_new(FALSE, FALSE, sizeof(struct fd_id));
    fd_ids(fds, now);
    for (guint i = 0; i < fds->len; i++) {
        struct fd_id *a = &g_array_index(p->ids, struct fd_id, i);
        struct fd_id *b = &g_array_index(now, struct fd_id, i);
        if (g_array_index(fds, int, i) != g_array_index(p->fds, int, i) ||
            a->dev != b->dev || a->ino != b->ino)
            return 0;
    }
    return 1;
}

void cpr_exec_prep_free(cpr_exec_prep *p)
{
    if (!p)
        return;
    if (p->deferred)
        cpr_teardown_cancel(p->ctx);
    cpr_exec_guard_cancel(p->guard);
    if (p->mfd >= 0)
        close(p->mfd);
    g_strfreev(p->argv);
    g_strfreev(p->rollback_env);
    g_array_unref(p->fds);
    g_array_unref(p->ids);
    g_free(p);
}

/* Starts the guardian keeping the fds of p->fds, the state memfd and what has no close-on-exec. */
static int start_guard(cpr_ctx *ctx, cpr_exec_prep *p, cpr_error **errp)
{
    g_autoptr(GArray) keep = g_array_copy(p->fds);
    g_array_append_val(keep, p->mfd);
    int ret = cpr_exec_guard_start((const char *const *)p->argv, p->rollback_env, p->mfd,
                                   (const int *)(void *)keep->data, keep->len, &p->guard, errp);
    if (ret == 0)
        ret = cpr_exec_guard_ready(p->guard, errp);
    if (ret == 0)
        cpr_trace_step(ctx, "exec-guard-started");
    return ret;
}

int cpr_exec_prepare(cpr_ctx *ctx, const char *const *argv, cpr_exec_prep **out, cpr_error **errp)
{
    *out = NULL;
    if (!ctx || !argv || !argv[0] || !*argv[0])
        return cpr_error_set(errp, -EINVAL, "cpr-exec: no command to execute");
    cpr_exec_prep *p = g_new0(cpr_exec_prep, 1);
    p->ctx = ctx;
    p->argv = g_strdupv((char **)argv);
    p->fds = g_array_new(FALSE, FALSE, sizeof(int));
    p->ids = g_array_new(FALSE, FALSE, sizeof(struct fd_id));
    p->mfd = state_memfd(errp);
    int ret = p->mfd;
    g_autoptr(cpr_state) st = NULL;
    if (ret >= 0)
        ret = cpr_state_collect(ctx, CPR_MODE_CPR_EXEC, 1, &st, p->fds, errp);
    if (ret >= 0) {
        fd_ids(p->fds, p->ids);
        p->rollback_env = exec_env(p->mfd, -1, NULL);
        ret = start_guard(ctx, p, errp);
    }
    /* The exec would otherwise unmap all of guest RAM before the new image starts, inside the
     * guest's pause. The helper shares the address space, so RAM mapped later is held too;
     * started after the guardian, which therefore never holds its release pipe. Without one
     * (none could start) the exec still works, only slower. */
    if (ret >= 0 && !cpr_teardown_held(ctx)) {
        p->deferred = cpr_teardown_defer(ctx, 0, NULL) == 0;
        if (p->deferred)
            cpr_trace_step(ctx, "teardown-held");
    }
    if (ret < 0) {
        cpr_exec_prep_free(p);
        return ret;
    }
    *out = p;
    return 0;
}

/* After the stop: the state into the memfd, and a guardian that holds the fds it names. */
static int fill_state(cpr_ctx *ctx, cpr_exec_prep *p, GArray *fds, cpr_error **errp)
{
    g_autoptr(cpr_state) st = NULL;
    int ret = cpr_state_collect(ctx, CPR_MODE_CPR_EXEC, 1, &st, fds, errp);
    if (ret < 0)
        return ret;
    g_autoptr(GByteArray) buf = g_byte_array_new();
    ret = cpr_state_encode(st, buf, errp);
    /* Past the exec nobody could resume the guest: what the new image would refuse fails here. */
    if (ret == 0)
        ret = cpr_state_check_exec(buf, errp);
    if (ret == 0)
        ret = state_fill(p->mfd, buf, errp);
    if (ret < 0 || same_fds(p, fds))
        return ret;
    /* The VMM changed its preserved fds since the guardian started: it would roll back with
     * other fds than the state names. A new guardian takes them as they are now. */
    cpr_exec_guard_cancel(p->guard);
    p->guard = NULL;
    g_array_set_size(p->fds, 0);
    g_array_append_vals(p->fds, fds->data, fds->len);
    return start_guard(ctx, p, errp);
}

/* Clears close-on-exec on fds and the commit socket, execs; on failure restores them. */
static int exec_now(cpr_ctx *ctx, cpr_exec_prep *p, GArray *fds, cpr_error **errp)
{
    /* Record every flag first, clear, and restore in reverse, so an fd listed twice ends as it began. */
    g_autofree int *old = g_new(int, fds->len);
    for (guint i = 0; i < fds->len; i++) {
        int fd = g_array_index(fds, int, i);
        old[i] = fcntl(fd, F_GETFD);
        if (old[i] >= 0)
            fcntl(fd, F_SETFD, old[i] & ~FD_CLOEXEC);
    }
    int commit_fd = cpr_exec_guard_fd(p->guard);
    if (commit_fd >= 0)
        fcntl(commit_fd, F_SETFD, 0);
    cpr_trace_step(ctx, "exec");
    g_autofree char *trace = cpr_trace_export(ctx);
    g_auto(GStrv) envp = exec_env(p->mfd, commit_fd, trace);
    cpr_exec_guard_executing(p->guard); /* the state is whole: a failure after may roll back */
    execvpe(p->argv[0], p->argv, envp);
    int ret = cpr_error_set_errno(errp, -errno, "cpr-exec: cannot execute %s", p->argv[0]);
    if (commit_fd >= 0)
        fcntl(commit_fd, F_SETFD, FD_CLOEXEC);
    for (guint i = fds->len; i-- > 0;) {
        if (old[i] >= 0)
            fcntl(g_array_index(fds, int, i), F_SETFD, old[i]);
    }
    return ret;
}

int cpr_exec_prepared(cpr_ctx *ctx, cpr_exec_prep *p, cpr_error **errp)
{
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    int ret = fill_state(ctx, p, fds, errp);
    if (ret == 0) {
        g_array_append_val(fds, p->mfd);
        ret = exec_now(ctx, p, fds, errp);
    }
    cpr_exec_prep_free(p);
    return ret;
}

CPR_API int cpr_exec(cpr_ctx *ctx, const char *const *argv, cpr_error **errp)
{
    cpr_exec_prep *p;
    int ret = cpr_exec_prepare(ctx, argv, &p, errp);
    return ret < 0 ? ret : cpr_exec_prepared(ctx, p, errp);
}

/* Splits a cpr-exec-command into its argv (a new vector for g_strfreev). */
static int command_argv(const char *command, char ***argv, cpr_error **errp)
{
    GError *gerr = NULL;
    if (!command || !g_shell_parse_argv(command, NULL, argv, &gerr)) {
        int ret = cpr_error_set(errp, -EINVAL, "cpr-exec: cannot parse command '%s': %s",
                                command ? command : "", gerr ? gerr->message : "no command");
        g_clear_error(&gerr);
        return ret;
    }
    return 0;
}

int cpr_exec_command_prepare(cpr_ctx *ctx, const char *command, cpr_exec_prep **out, cpr_error **errp)
{
    g_auto(GStrv) argv = NULL;
    *out = NULL;
    int ret = command_argv(command, &argv, errp);
    return ret < 0 ? ret : cpr_exec_prepare(ctx, (const char *const *)argv, out, errp);
}

CPR_API int cpr_exec_command(cpr_ctx *ctx, const char *command, cpr_error **errp)
{
    g_auto(GStrv) argv = NULL;
    int ret = command_argv(command, &argv, errp);
    return ret < 0 ? ret : cpr_exec(ctx, (const char *const *)argv, errp);
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
    /* The old image's steps, for the pause breakdown: a malformed list only loses steps. */
    (void)cpr_trace_import(ctx, getenv(CPR_EXEC_TRACE_ENV));
    unsetenv(CPR_EXEC_TRACE_ENV);
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
