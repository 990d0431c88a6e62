/* SPDX-License-Identifier: MIT */
/*
 * Private: work cut in numbered steps that several threads take in turn (the mapped-ram
 * loader's reads, the mapped restore's checks); the first failure stops the others.
 */
#ifndef CPR_CORE_STEPS_H
#define CPR_CORE_STEPS_H

#include <stdint.h>

#include <glib.h>

#include <cpr/error.h>

struct cpr_steps {
    uint64_t steps;
    uint64_t next; /* atomic: the next step to take */
    GMutex lock;   /* guards ret and err */
    int ret;
    cpr_error *err;
    int cancel_fd;    /* readable once the job is cancelled; -1: not watched */
    const char *what; /* what a cancel interrupts, for its message (borrowed) */
};

void cpr_steps_init(struct cpr_steps *st, uint64_t steps);
/* Ends it: returns the first failure's code (0 if none) and hands its error to errp. */
int cpr_steps_finish(struct cpr_steps *st, cpr_error **errp);
/* A job's cancel stops the steps: once cancel_fd (cpr_job_cancel_fd(), or a stream's) is
 * readable, no step is handed out any more and the steps fail with -ECANCELED, "migration
 * cancelled while <what>". Before cpr_steps_run(); `what` must outlive the steps. */
void cpr_steps_watch_cancel(struct cpr_steps *st, int cancel_fd, const char *what);
/* The next step's number, or -1 once every step is taken, one failed or the job was
 * cancelled. Thread safe. */
int64_t cpr_steps_take(struct cpr_steps *st);
/* A step failed with ret (< 0) and err, which it takes: the first is kept, no step is handed
 * out any more. Thread safe. */
void cpr_steps_fail(struct cpr_steps *st, int ret, cpr_error *err);
/* Runs fn(arg) on `threads` threads, named `name`, the caller's one of them (at most 255; when
 * a thread cannot start, the others take its steps), and returns once all have. */
void cpr_steps_run(unsigned int threads, const char *name, GThreadFunc fn, void *arg);

#endif
