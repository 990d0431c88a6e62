/* SPDX-License-Identifier: MIT */
/*
 * Private: the migration engine's job, shared by the per-mode drivers.
 *
 * lib/migration/migrate.c owns the job's life (thread, status, cancel, run state, result);
 * lib/migration/query.c renders statistics; lib/migration/save.c is the outgoing main-channel
 * save every mode uses; lib/migrate_<mode>.c add what a mode does around it;
 * lib/migration/incoming.c loads.
 */
#ifndef CPR_MIGRATION_MIGRATE_H
#define CPR_MIGRATION_MIGRATE_H

#include <cpr/migrate.h>

#include "core/ctx.h"
#include "core/params.h"

struct cpr_mig;

typedef struct cpr_job {
    cpr_ctx *ctx;
    struct cpr_mig *mig;
    int incoming;
    unsigned int flags;
    cpr_mode mode;
    struct cpr_params params; /* snapshot taken at start */
    cpr_channels *channels;   /* the job's own copy */
    int vm_was_running;       /* at the time the library stopped it */
    int vm_stopped;           /* the library stopped it and has not restarted it */
    int64_t stop_time_us;     /* when it stopped it */
    /* Outgoing: a failure now leaves the guest paused, since the destination may run it (a
     * reset while waiting for the acknowledgement, a pipe that failed after the whole
     * stream); set with the error that says so. */
    int no_resume;
    /* Outgoing: the main channel reaches another process and some RAM block stays in place
     * (cpr-transfer, x-ignore-shared): once that process may run, this one must not. */
    int ram_shared;
    /* Incoming: the destination has committed (the guest is now this side's). */
    int committed;
    void *priv;               /* the driver's state across prepare and run */
    void (*priv_free)(void *priv);
} cpr_job;

/* A job's driver: 0 on success, or the failure (-ECANCELED when cancelled) with an error. */
typedef int (*cpr_job_fn)(cpr_job *job, cpr_error **errp);

/* ---- services of lib/migration/migrate.c to the drivers ---- */

/* Moves to `status` and tells the status callback. Refused with -ECANCELED (and no change)
 * while a cancel is pending, so that a driver stops at its next step. */
int cpr_job_set_status(cpr_job *job, cpr_migration_status status, cpr_error **errp);

/* -ECANCELED with an error when a cancel is pending, else 0. */
int cpr_job_check_cancel(cpr_job *job, cpr_error **errp);

/* An fd that polls readable once a cancel is requested (never read it). */
int cpr_job_cancel_fd(cpr_job *job);

/* Registers an fd that cancel shuts down (shutdown(2)) so that a blocked transfer on it
 * returns; unregister before closing it. */
void cpr_job_watch_fd(cpr_job *job, int fd);
void cpr_job_unwatch_fd(cpr_job *job, int fd);

/*
 * Passes a cancel no longer: from here on the job completes or fails, and cancel only
 * reports. Returns -ECANCELED (with an error) when a cancel came first.
 */
int cpr_job_point_of_no_return(cpr_job *job, cpr_error **errp);

/*
 * The switchover: stops the guest (run state finish-migrate; downtime starts), waits in
 * pre-switchover when that capability is on, moves to `device`, flushes. On failure the
 * caller returns the error and the engine restarts the guest.
 */
int cpr_job_switchover(cpr_job *job, cpr_error **errp);

/* The statistics, under the engine's lock: take, change, give back quickly. */
cpr_migration_info *cpr_job_stats_lock(cpr_job *job);
void cpr_job_stats_unlock(cpr_job *job);

/* The VM hooks (NULL-safe). */
int cpr_job_vm_start(cpr_job *job, cpr_error **errp);
/* The 1.2 prepare hook (destination, before it commits); 0 without one. */
int cpr_job_vm_prepare(cpr_job *job, cpr_error **errp);

/* Overrides the reported run state (-1 clears the override). */
void cpr_job_set_runstate(cpr_job *job, int runstate);

/* ---- drivers ---- */

/* When the outgoing save stops the guest. */
enum cpr_save_live {
    CPR_SAVE_STOP_FIRST,   /* at once (cpr-reboot: the file holds one consistent image) */
    CPR_SAVE_LIVE,         /* after precopy of every progressive section (normal mode) */
    /* after precopy of the VMM's progressive sections when all RAM stays in place; when some
     * RAM block must be sent, at once, as before (no dirty logging in the cpr modes) */
    CPR_SAVE_LIVE_UNLESS_RAM,
};

/* Outgoing main channel: opens it, saves every section, ends the stream and, on a socket,
 * waits for the peer's acknowledgement of its load. On success the job is past its point of
 * no return. */
int cpr_migrate_save_main(cpr_job *job, enum cpr_save_live live, cpr_error **errp);

/* TLS (lib/migration/main_tls.c): before a job starts, with "tls-creds" set, refuses a mode
 * other than normal and a main channel other than tcp or unix (saying why), and credentials
 * that do not exist or are for the other endpoint. 0 when tls-creds is unset. */
int cpr_main_tls_check(const cpr_job *job, const cpr_channels *channels, cpr_error **errp);

int cpr_migrate_out_normal(cpr_job *job, cpr_error **errp);
int cpr_migrate_out_reboot(cpr_job *job, cpr_error **errp);
int cpr_migrate_out_transfer(cpr_job *job, cpr_error **errp);
int cpr_migrate_out_exec(cpr_job *job, cpr_error **errp);
/* Incoming cpr-transfer's early step: listens on the cpr channel at path, waits for the old
 * process up to cpr-transfer-accept-timeout and receives its state; returns the open socket. */
int cpr_migrate_in_cpr_channel(cpr_ctx *ctx, const char *path, cpr_error **errp);
/* Incoming: prepare runs on the caller's thread (opens or listens on main, then hangs up the
 * cpr channel), cpr_migrate_in on the job's thread (accepts, loads, acknowledges, starts). */
int cpr_migrate_in_prepare(cpr_job *job, cpr_error **errp);
int cpr_migrate_in(cpr_job *job, cpr_error **errp);

#endif
