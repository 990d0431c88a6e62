/* SPDX-License-Identifier: MIT */
/*
 * cpr-exec rollback: the guardian (old image) and the commit socket (new image).
 *
 * The guardian is a fork of the old image, started through an intermediate that exits at once
 * (so it is re-parented and never a child of the new image). A fork of a multi-threaded
 * process, it makes raw system calls only. It keeps exactly what the exec keeps (every fd
 * without close-on-exec: the preserved fds, the state memfd, stdio) plus its own four: its end
 * of the commit socket, the old executable, an inotify fd watching the state memfd, and a
 * pidfd of the process that execs. Then it waits:
 *
 *   EOF before 'X'               the old image died before its exec (the guardian starts
 *                                while the guest runs): the state is not whole, exit
 *   'C'                          the new image committed: exit, dropping everything
 *   'R'                          the new image's load failed: end it, roll back
 *   EOF after 'A'                the new image died before committing: roll back
 *   a read of the state, no 'A'  a libcpr before 1.2 adopted it: it may run the guest, exit
 *   EOF, no 'A', no read         the new image never adopted: roll back
 *
 * Rolling back = SIGKILL through the pidfd, wait until that process has gone, then
 * execveat(old executable) with the cpr-exec command's arguments and the same state.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include "handover/on_valgrind.h"

#include "core/ctx.h"
#include "core/error.h"
#include "handover/exec_guard.h"
#include "handover/raw_fds.h"

typedef struct guard_args {
    int sock;     /* the guardian's end of the commit socket */
    int exe;      /* the old image's executable, O_RDONLY */
    int ino;      /* inotify: IN_ACCESS | IN_OPEN on the state memfd */
    int pidfd;    /* the process that execs (the new image keeps its pid) */
    long max_fd;  /* when /proc cannot be listed: the fd numbers to look at */
    const int *keep; /* close-on-exec now, but the exec keeps them (started before the stop) */
    size_t nkeep;
    char **argv;  /* the rollback's, allocated before the fork */
    char *const *envp;
    sigset_t mask; /* the exec'ing thread's signal mask, which the exec would pass on */
} guard_args;

struct cpr_exec_guard {
    int peer;  /* the new image's end of the commit socket */
    pid_t mid; /* the intermediate, until reaped (cpr_exec_guard_ready) */
};

/* ---- the guardian: raw system calls only ---------------------------------------------------- */

static size_t slen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void say(const char *a, const char *b, const char *c)
{
    const char *parts[] = { "cpr-exec guardian: ", a, b, c, "\n" };
    for (size_t i = 0; i < G_N_ELEMENTS(parts); i++) {
        if (parts[i] && syscall(SYS_write, 2, parts[i], slen(parts[i])) < 0)
            return;
    }
}

static int is_own(const guard_args *a, int fd)
{
    return fd == a->sock || fd == a->exe || fd == a->ino || fd == a->pidfd;
}

/* What the exec closes, the guardian closes too: a peer then sees the same hang-ups. */
static void drop_one(int fd, int dir, const char *name, void *arg)
{
    (void)dir;
    (void)name;
    const guard_args *a = arg;
    if (is_own(a, fd))
        return;
    for (size_t i = 0; i < a->nkeep; i++) {
        if (a->keep[i] == fd) {
            syscall(SYS_fcntl, fd, F_SETFD, 0); /* the rollback's exec keeps it, as ours does */
            return;
        }
    }
    long flags = syscall(SYS_fcntl, fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC))
        syscall(SYS_close, fd);
}

static void drop_cloexec_fds(const guard_args *a)
{
    if (cpr_raw_foreach_fd(drop_one, (void *)a) < 0) {
        for (long fd = 0; fd < a->max_fd; fd++)
            drop_one((int)fd, -1, NULL, (void *)a);
    }
}

/* Handlers are the old image's code: none may run here (the exec would reset them anyway). */
static void default_handlers(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
            continue;
        if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL) {
            sa.sa_handler = SIG_DFL;
            sa.sa_flags = 0;
            sigaction(sig, &sa, NULL);
        }
    }
}

static void wait_gone(const guard_args *a)
{
    if (syscall(SYS_pidfd_send_signal, a->pidfd, SIGKILL, NULL, 0) < 0 && errno == ESRCH)
        return;
    struct pollfd p = { .fd = a->pidfd, .events = POLLIN };
    while (syscall(SYS_ppoll, &p, 1, NULL, NULL, 0) < 0 && errno == EINTR)
        ;
}

static _Noreturn void roll_back(const guard_args *a, const char *why)
{
    wait_gone(a);
    say("the new image ", why, "; exec'ing the previous image back with the same state");
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &a->mask, NULL, (long)(_NSIG / 8));
    syscall(SYS_execveat, a->exe, "", a->argv, a->envp, AT_EMPTY_PATH);
    char num[16] = "errno ";
    int e = errno, at = 6;
    char digits[8];
    int nd = 0;
    do
        digits[nd++] = (char)('0' + e % 10);
    while ((e /= 10) && nd < 7);
    while (nd)
        num[at++] = digits[--nd];
    num[at] = '\0';
    say("the rollback exec failed (", num, "): the guest is lost");
    syscall(SYS_exit_group, 127);
    for (;;)
        ;
}

/* Reads whatever inotify has; 1 when it reported an access or open of the state memfd. */
static int state_read(const guard_args *a)
{
    char buf[4096] __attribute__((aligned(8)));
    int seen = 0;
    while (syscall(SYS_read, a->ino, buf, sizeof(buf)) > 0)
        seen = 1;
    return seen;
}

static _Noreturn void guardian_main(const guard_args *a)
{
    syscall(SYS_prctl, PR_SET_NAME, "cpr-exec-guard", 0, 0, 0);
    default_handlers();
    drop_cloexec_fds(a);
    int adopting = 0, executing = 0;
    for (;;) {
        struct pollfd p[2] = { { .fd = a->sock, .events = POLLIN }, { .fd = a->ino, .events = POLLIN } };
        if (syscall(SYS_ppoll, p, 2, NULL, NULL, 0) < 0 && errno != EINTR && errno != ENOMEM) {
            /* Blind, a rollback could replace an image that runs the guest: stand down. */
            say("cannot wait for the new image", "", "; no rollback");
            syscall(SYS_exit_group, 1);
        }
        /* inotify first: 'A' is sent before the state is read, so once a read shows, the
         * socket already holds the 'A' of an adopter that speaks the protocol. */
        int read_seen = state_read(a);
        char buf[16];
        long n;
        while ((n = syscall(SYS_recvfrom, a->sock, buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL)) > 0) {
            for (long i = 0; i < n; i++) {
                if (buf[i] == CPR_EXEC_GUARD_COMMIT)
                    syscall(SYS_exit_group, 0);
                if (buf[i] == CPR_EXEC_GUARD_ROLLBACK)
                    roll_back(a, "failed to load");
                adopting |= buf[i] == CPR_EXEC_GUARD_ADOPTING;
                executing |= buf[i] == CPR_EXEC_GUARD_EXECUTING;
            }
        }
        if (n == 0 && !executing) {
            /* The old image died before its exec: it still ran the guest, and a state it had
             * not finished must not run it anywhere. */
            say("the old image ended before its exec", "", "; no rollback");
            syscall(SYS_exit_group, 0);
        }
        if (n == 0) {
            /* The state is read before the socket is closed: look once more. */
            read_seen |= state_read(a);
            if (adopting)
                roll_back(a, "ended before it committed");
            if (!read_seen)
                roll_back(a, "ended without adopting the cpr state");
            syscall(SYS_exit_group, 0);
        }
        if (read_seen && !adopting)
            syscall(SYS_exit_group, 0); /* an older libcpr adopted: it may run the guest */
    }
}

/* ---- the old image ---------------------------------------------------------------------------- */

static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* The rollback's argv: this executable in place of the command's program. */
static char **rollback_argv(const char *const *argv)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    GPtrArray *a = g_ptr_array_new();
    g_ptr_array_add(a, g_strdup(self ? self : argv[0]));
    for (size_t i = 1; argv[i]; i++)
        g_ptr_array_add(a, g_strdup(argv[i]));
    g_ptr_array_add(a, NULL);
    return (char **)g_ptr_array_free(a, FALSE);
}

int cpr_exec_guard_start(const char *const *argv, char *const *envp, int state_fd,
                         const int *keep, size_t nkeep, cpr_exec_guard **out, cpr_error **errp)
{
    /* Under valgrind the guardian, a fork, would be checked as a VMM at its exit (leaks, the
     * fds it holds): none runs there, and a failing new image is not rolled back. */
    *out = NULL;
    if (RUNNING_ON_VALGRIND)
        return 0;
    /* sock[0] the guardian's, sock[1] the new image's; then exe, inotify, pidfd. */
    int fd[5] = { -1, -1, -1, -1, -1 };
    int ret = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) < 0)
        return cpr_error_set_errno(errp, -errno, "cpr-exec rollback: socketpair");
    char watch[32];
    g_snprintf(watch, sizeof(watch), "/proc/self/fd/%d", state_fd);
    if ((fd[2] = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) < 0)
        ret = cpr_error_set_errno(errp, -errno, "cpr-exec rollback: cannot hold /proc/self/exe");
    else if ((fd[3] = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0 ||
             inotify_add_watch(fd[3], watch, IN_ACCESS | IN_OPEN) < 0)
        ret = cpr_error_set_errno(errp, -errno, "cpr-exec rollback: cannot watch the state memfd");
    else if ((fd[4] = (int)syscall(SYS_pidfd_open, getpid(), 0)) < 0)
        ret = cpr_error_set_errno(errp, -errno, "cpr-exec rollback: pidfd_open");
    if (ret < 0) {
        close_fds(fd, G_N_ELEMENTS(fd));
        return ret;
    }

    struct rlimit rl = { 0 };
    guard_args a = {
        .sock = fd[0], .exe = fd[2], .ino = fd[3], .pidfd = fd[4],
        .max_fd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536,
        .argv = rollback_argv(argv), .envp = envp, .keep = keep, .nkeep = nkeep,
    };
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &a.mask);
    pid_t mid = fork();
    if (mid == 0) {
        pid_t guardian = fork();
        if (guardian == 0)
            guardian_main(&a);
        _exit(guardian < 0 ? 1 : 0);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &a.mask, NULL);
    g_strfreev(a.argv);
    int peer = fd[1];
    fd[1] = -1;
    close_fds(fd, G_N_ELEMENTS(fd)); /* the guardian's own: it has its copies */
    if (mid < 0) {
        close(peer);
        return cpr_error_set_errno(errp, -fork_errno, "cpr-exec rollback: fork");
    }
    *out = g_new0(cpr_exec_guard, 1);
    (*out)->peer = peer;
    (*out)->mid = mid;
    return 0;
}

/* Reaps the intermediate; 0 once the guardian runs. */
static int reap_mid(cpr_exec_guard *g)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(g->mid, &status, 0)) < 0 && errno == EINTR)
        ;
    g->mid = 0;
    /* ECHILD: a VMM's own SIGCHLD handling reaped it first; the guardian's fate is then unknown
     * here, but its end of the socket says it (a send to nobody fails with EPIPE later). */
    return r < 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : -1;
}

int cpr_exec_guard_ready(cpr_exec_guard *g, cpr_error **errp)
{
    if (!g || !g->mid)
        return 0;
    if (reap_mid(g) < 0)
        return cpr_error_set(errp, -EAGAIN, "cpr-exec rollback: the guardian did not start");
    return 0;
}

int cpr_exec_guard_fd(const cpr_exec_guard *g)
{
    return g ? g->peer : -1;
}

static void send_byte(int fd, char c)
{
    while (send(fd, &c, 1, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

void cpr_exec_guard_executing(cpr_exec_guard *g)
{
    if (g)
        send_byte(g->peer, CPR_EXEC_GUARD_EXECUTING);
}

void cpr_exec_guard_cancel(cpr_exec_guard *g)
{
    if (!g)
        return;
    if (g->mid)
        reap_mid(g);
    send_byte(g->peer, CPR_EXEC_GUARD_COMMIT);
    close(g->peer);
    g_free(g);
}

/* ---- the new image ------------------------------------------------------------------------------ */

static void close_boxed(void *p)
{
    int *fd = p;
    if (*fd >= 0)
        close(*fd);
    g_free(fd);
}

/* The commit socket's fd from the environment, the variable removed; -1 when absent or bad. */
static int take_commit_fd(void)
{
    const char *val = getenv(CPR_EXEC_COMMIT_ENV);
    if (!val)
        return -1;
    char *end;
    errno = 0;
    long fd = strtol(val, &end, 10);
    int ok = !errno && end != val && !*end && fd >= 0 && fd <= G_MAXINT;
    unsetenv(CPR_EXEC_COMMIT_ENV);
    if (!ok || fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    return (int)fd;
}

int cpr_exec_guard_adopting(cpr_ctx *ctx)
{
    int fd = take_commit_fd();
    if (fd < 0)
        return 0;
    if (send(fd, &(char){ CPR_EXEC_GUARD_ADOPTING }, 1, MSG_NOSIGNAL) != 1) {
        /* No guardian to tell (it was killed): adopt without one, as before 1.2. Were it alive,
         * it would see the read without 'A' and stand down: either way nobody rolls back. */
        close(fd);
        return 0;
    }
    int *box = g_new(int, 1);
    *box = fd;
    cpr_ctx_slot_set(ctx, CPR_SLOT_EXEC, box, close_boxed);
    return 1;
}

void cpr_exec_guard_drop(void)
{
    int fd = take_commit_fd();
    if (fd >= 0)
        close(fd);
}

static void finish(cpr_ctx *ctx, char c)
{
    /* On the incoming job's thread: the slot stays (freed with the context), the fd goes. */
    int *box = ctx ? cpr_ctx_slot_get(ctx, CPR_SLOT_EXEC) : NULL;
    if (!box || *box < 0)
        return;
    send_byte(*box, c);
    close(*box);
    *box = -1;
}

void cpr_exec_commit(cpr_ctx *ctx)
{
    finish(ctx, CPR_EXEC_GUARD_COMMIT);
}

void cpr_exec_abandon(cpr_ctx *ctx)
{
    finish(ctx, CPR_EXEC_GUARD_ROLLBACK);
}
