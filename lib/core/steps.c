/* SPDX-License-Identifier: MIT */
/* Steps taken by several threads: core/steps.h. */
#include <errno.h>
#include <poll.h>

#include "core/error.h"
#include "core/steps.h"

void cpr_steps_init(struct cpr_steps *st, uint64_t steps)
{
    *st = (struct cpr_steps){ .steps = steps, .cancel_fd = -1 };
    g_mutex_init(&st->lock);
}

void cpr_steps_watch_cancel(struct cpr_steps *st, int cancel_fd, const char *what)
{
    st->cancel_fd = cancel_fd;
    st->what = what;
}

/* One poll per step (a step is about a MiB of work): a cancel stops the steps within one. */
static int cancelled(struct cpr_steps *st)
{
    struct pollfd p = { .fd = st->cancel_fd, .events = POLLIN };
    if (st->cancel_fd < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN))
        return 0;
    cpr_error *err = NULL;
    cpr_error_set(&err, -ECANCELED, "migration cancelled while %s", st->what);
    cpr_steps_fail(st, -ECANCELED, err);
    return 1;
}

int cpr_steps_finish(struct cpr_steps *st, cpr_error **errp)
{
    g_mutex_clear(&st->lock);
    if (st->ret < 0)
        cpr_error_propagate(errp, st->err);
    return st->ret;
}

int64_t cpr_steps_take(struct cpr_steps *st)
{
    if (cancelled(st))
        return -1;
    uint64_t step = __atomic_fetch_add(&st->next, 1, __ATOMIC_RELAXED);
    return step < st->steps ? (int64_t)step : -1;
}

void cpr_steps_fail(struct cpr_steps *st, int ret, cpr_error *err)
{
    g_mutex_lock(&st->lock);
    if (st->ret == 0) {
        st->ret = ret;
        st->err = err;
        err = NULL;
    }
    g_mutex_unlock(&st->lock);
    cpr_error_free(err);
    __atomic_store_n(&st->next, st->steps, __ATOMIC_RELAXED); /* the others stop too */
}

void cpr_steps_run(unsigned int threads, const char *name, GThreadFunc fn, void *arg)
{
    unsigned int n = CLAMP(threads, 1u, 255u);
    GThread *th[255] = { NULL };
    for (unsigned int i = 1; i < n; i++)
        th[i] = g_thread_try_new(name, fn, arg, NULL);
    fn(arg);
    for (unsigned int i = 1; i < n; i++)
        if (th[i])
            g_thread_join(th[i]);
}
