/* SPDX-License-Identifier: MIT */
/* Private: the migration engine's state on the context (CPR_SLOT_MIGRATION). */
#ifndef CPR_MIGRATION_MIGRATE_STATE_H
#define CPR_MIGRATION_MIGRATE_STATE_H

#include <glib.h>

#include <cpr/migrate.h>

struct cpr_job;

struct cpr_mig {
    cpr_ctx *ctx;
    /* Guards everything below; never held across a hook, a callback or I/O. */
    GMutex lock;
    GCond cond; /* job end, continue, cancel */
    /* Held (before lock) from a status change until its callback returned, so that every
     * thread's changes reach the callback in the order they were made. Recursive: the
     * callback may call cpr_migrate_cancel(). */
    GRecMutex status_lock;

    cpr_vm_ops ops;
    void *vm_opaque;
    cpr_migration_status_fn status_fn;
    void *status_opaque;

    int job_running;       /* claimed by a job that has not finished */
    struct cpr_job *job;   /* current or last job, freed once its thread is joined */
    GThread *thread;
    int result;            /* of the last finished job */
    cpr_error *error;      /* of the last failed job */
    int cancel_requested;
    int continue_requested;
    int past_no_return;
    /* Sticky: the guest went to another process with its RAM (cpr-transfer completed, ...).
     * No later job or reset clears it: this context never migrates or resumes it again. */
    char *handed_over; /* why, or NULL */
    int cancel_efd;        /* eventfd, readable after a cancel */
    GArray *watched;       /* int fds that cancel shuts down */
    int runstate_override; /* cpr_runstate, or -1 for "ask is_running" */

    cpr_migration_info info;
    int64_t start_us, active_us, end_us; /* g_get_monotonic_time(); 0 = not yet */

    struct cpr_mig_ram *ram; /* the RAM section, registered on first use */

    /* Incoming cpr state read early (cpr_incoming_cpr_load), kept until the hang-up. */
    void *cpr_in;
    void (*cpr_in_free)(void *cpr_in);
};

/* The context's engine state, made on first use (owner thread). */
struct cpr_mig *cpr_mig_get(cpr_ctx *ctx);

/* Clears the statistics for a new job. Caller holds mig->lock (or owns mig alone). */
void cpr_mig_stats_reset(struct cpr_mig *mig, cpr_mode mode, int incoming);

#endif
