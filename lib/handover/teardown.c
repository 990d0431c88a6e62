/* SPDX-License-Identifier: MIT */
/*
 * Deferred teardown (cpr/teardown.h): a helper process that shares our address space holds it
 * across our exec or exit, so the unmapping of guest RAM happens in the helper, off the pause.
 *
 * Two clones, both CLONE_VM without CLONE_THREAD: the first only starts the second and exits,
 * so the second (the holder) is reparented to init and nobody is left with a child to reap.
 * The holder runs on a stack of its own in the shared address space, with the thread pointer
 * of the thread that called us: it makes raw system calls only (no libc state, no locks, no
 * errno on the success paths) and has every signal blocked.
 *
 *   release pipe  we keep the write end (close-on-exec); exec, exit or cancel closes it, and
 *                 the holder, blocked reading, sees EOF and exits.
 *   ready pipe    the holder writes one byte once it has dropped the fds it must not keep,
 *                 then keeps its write end until it exits: cancel reads to EOF to know it
 *                 has gone, before the stacks are unmapped.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include "handover/on_valgrind.h"
/* ThreadSanitizer keeps its per-thread state in TLS, which the helper (a clone without a TLS
 * of its own) would share with the calling thread: its reports would then be false. */
#if defined(__SANITIZE_THREAD__)
# define CPR_TSAN 1
#elif defined(__has_feature)
# if __has_feature(thread_sanitizer)
#  define CPR_TSAN 1
# endif
#endif
#ifndef CPR_TSAN
# define CPR_TSAN 0
#endif

#include <cpr/teardown.h>

#include "core/ctx.h"
#include "core/error.h"
#include "handover/raw_fds.h"
#include "handover/teardown.h"

#define STACK_BYTES (64 * 1024)

typedef struct teardown_state {
    int release_w;   /* ours; its closing releases the holder */
    int ready_r;     /* ours; EOF once the holder has exited */
    void *stacks;    /* two stacks of STACK_BYTES, used by the clones */
} teardown_state;

/* What the clones get: copied onto the first stack, so it outlives our frame. */
typedef struct holder_args {
    int release_r;
    int ready_w;
    void *holder_stack_top;
} holder_args;

/* ---- the holder: raw system calls only --------------------------------------------------- */

static long sys3(long nr, long a, long b, long c)
{
    return syscall(nr, a, b, c);
}

/* Keeps fds whose /proc link starts with "anon_inode:" (a KVM VM and vCPUs, eventfds...). */
static int keep_fd(int proc_fd_dir, const char *name)
{
    char link[32];
    long n = syscall(SYS_readlinkat, proc_fd_dir, name, link, sizeof(link) - 1);
    return n >= 11 && !memcmp(link, "anon_inode:", 11);
}

/* Closes every fd but the two pipe ends (close_range leaves errno alone when it succeeds). */
static void close_all_but(int x, int y)
{
    int lo = x < y ? x : y, hi = x < y ? y : x;
    if (lo > 0)
        sys3(SYS_close_range, 0, lo - 1, 0);
    if (hi > lo + 1)
        sys3(SYS_close_range, lo + 1, hi - 1, 0);
    sys3(SYS_close_range, hi + 1, ~0U, 0);
}

static void drop_if_observable(int fd, int dir, const char *name, void *arg)
{
    const holder_args *a = arg;
    if (fd != a->release_r && fd != a->ready_w && !keep_fd(dir, name))
        syscall(SYS_close, fd);
}

/* Closes every fd but the holder's pipe ends and the anonymous inodes. */
static void drop_observable_fds(const holder_args *a)
{
    /* No /proc to tell the kinds apart: keep nothing rather than hold a socket open. */
    if (cpr_raw_foreach_fd(drop_if_observable, (void *)a) < 0)
        close_all_but(a->release_r, a->ready_w);
}

static int holder_main(void *p)
{
    const holder_args *a = p;
    drop_observable_fds(a);
    /* The unmapping then only takes CPU time nothing else wants: the new image restoring the
     * guest, and the guest itself, come first. */
    struct sched_param idle = { .sched_priority = 0 };
    syscall(SYS_sched_setscheduler, 0, SCHED_IDLE, &idle);
    char c = 1;
    syscall(SYS_write, a->ready_w, &c, 1);
    /* Until exec, exit or cancel closes the write end (EOF), or we are killed. */
    while (syscall(SYS_read, a->release_r, &c, 1) > 0)
        ;
    syscall(SYS_exit, 0);
    return 0;
}

static int starter_main(void *p)
{
    holder_args *a = p;
    long pid = clone(holder_main, a->holder_stack_top, CLONE_VM | SIGCHLD, a);
    syscall(SYS_exit, pid < 0 ? 1 : 0);
    return 0;
}

/* ---- our side ---------------------------------------------------------------------------- */

static void state_free(void *p)
{
    /* A freed context leaves a held helper in place: it goes with the exec or exit that
     * follows (a VMM may free its context before it returns from main). */
    g_free(p);
}

int cpr_teardown_held(cpr_ctx *ctx)
{
    return ctx && cpr_ctx_slot_get(ctx, CPR_SLOT_TEARDOWN) != NULL;
}

CPR_API int cpr_teardown_defer(cpr_ctx *ctx, uint32_t flags, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_teardown_defer: ctx is NULL");
    if (flags)
        return cpr_error_set(errp, -EINVAL, "cpr_teardown_defer: unknown flags 0x%x", flags);
    if (cpr_teardown_held(ctx))
        return 0;
    /* Valgrind ends the whole program at a clone it cannot model (CLONE_VM without threads). */
    if (RUNNING_ON_VALGRIND)
        return cpr_error_set(errp, -ENOSYS, "deferred teardown: not under valgrind, which cannot "
                             "run a process that shares memory without being a thread");
    if (CPR_TSAN)
        return cpr_error_set(errp, -ENOSYS, "deferred teardown: not in a ThreadSanitizer build, "
                             "whose per-thread state the helper would share");

    int rel[2], rdy[2];
    if (pipe2(rel, O_CLOEXEC) < 0)
        return cpr_error_set_errno(errp, -errno, "deferred teardown: pipe");
    if (pipe2(rdy, O_CLOEXEC) < 0) {
        int ret = cpr_error_set_errno(errp, -errno, "deferred teardown: pipe");
        close(rel[0]);
        close(rel[1]);
        return ret;
    }
    void *stacks = mmap(NULL, 2 * STACK_BYTES, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    int ret = 0;
    if (stacks == MAP_FAILED) {
        ret = cpr_error_set_errno(errp, -errno, "deferred teardown: helper stacks");
        stacks = NULL;
        goto fail;
    }
    /* The arguments live at the bottom of the first stack, out of the way of both. */
    holder_args *a = stacks;
    a->release_r = rel[0];
    a->ready_w = rdy[1];
    a->holder_stack_top = (char *)stacks + 2 * STACK_BYTES;

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t starter = clone(starter_main, (char *)stacks + STACK_BYTES, CLONE_VM | SIGCHLD, a);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (starter < 0) {
        ret = cpr_error_set_errno(errp, -clone_errno, "deferred teardown: clone");
        goto fail;
    }
    int status = 0;
    while (waitpid(starter, &status, __WALL) < 0 && errno == EINTR)
        ;
    /* Our copies of the holder's ends go; its own copies keep the pipes open. */
    close(rel[0]);
    close(rdy[1]);
    rel[0] = rdy[1] = -1;
    char c;
    ssize_t n;
    while ((n = read(rdy[0], &c, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1) {
        /* The holder never started (the starter's clone failed): nothing shares our memory. */
        ret = cpr_error_set(errp, -EAGAIN, "deferred teardown: the helper process did not start "
                            "(starter status 0x%x)", (unsigned)status);
        goto fail;
    }
    teardown_state *st = g_new0(teardown_state, 1);
    st->release_w = rel[1];
    st->ready_r = rdy[0];
    st->stacks = stacks;
    cpr_ctx_slot_set(ctx, CPR_SLOT_TEARDOWN, st, state_free);
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        if (rel[i] >= 0)
            close(rel[i]);
        if (rdy[i] >= 0)
            close(rdy[i]);
    }
    if (stacks)
        munmap(stacks, 2 * STACK_BYTES);
    return ret;
}

CPR_API void cpr_teardown_cancel(cpr_ctx *ctx)
{
    teardown_state *st = ctx ? cpr_ctx_slot_get(ctx, CPR_SLOT_TEARDOWN) : NULL;
    if (!st)
        return;
    close(st->release_w);
    /* EOF when the holder has exited: only then are its stack and arguments free. */
    char c;
    for (;;) {
        ssize_t n = read(st->ready_r, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    close(st->ready_r);
    munmap(st->stacks, 2 * STACK_BYTES);
    cpr_ctx_slot_set(ctx, CPR_SLOT_TEARDOWN, NULL, NULL);
    g_free(st);
}
