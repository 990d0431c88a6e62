/* SPDX-License-Identifier: MIT */
/*
 * Private: the migration engine's job, shared by its drivers.
 *
 * lib/migration/migrate.c owns the job and the engine's state (thread, status, cancel, run
 * state, result, statistics, VM hooks, the RAM section, the early incoming cpr state): nothing
 * else sees that state; the others use the calls below. A job runs one driver, picked by
 * direction and mode from the table in migrate.c: save.c (normal, cpr-reboot), cpr_modes.c
 * (cpr-transfer, cpr-exec), incoming.c (every incoming job). A new way to migrate is a new
 * driver and a line in that table. query.c renders the statistics.
 */
#ifndef CPR_MIGRATION_MIGRATE_H
#define CPR_MIGRATION_MIGRATE_H

#include <cpr/migrate.h>

#include "core/ctx.h"
#include "core/params.h"
#include "migration/main_channel.h"
#include "migration/vm_hooks.h"

struct cpr_mig;
struct cpr_mig_ram;
typedef struct cpr_job_driver cpr_job_driver;

typedef struct cpr_job {
    cpr_ctx *ctx;
    struct cpr_mig *mig;      /* the engine's, opaque to the drivers */
    const cpr_job_driver *driver;
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
    /* Outgoing cpr-transfer: the commit signal sent to the new process (a view, the driver
     * owns it), which the acknowledgement's wait reads; -1 when none. */
    int commit_signal;
    void *priv;               /* the driver's state across prepare, run and cleanup */
} cpr_job;

/*
 * What a job does, per direction and mode. prepare (optional) runs on the caller's thread
 * before the job's thread starts (listeners, checks that must fail the call itself); run on
 * the job's thread: 0 on success, or the failure (-ECANCELED when cancelled) with an error;
 * the engine then restores the guest or not, as the job's flags say. cleanup (optional) frees
 * job->priv, whatever happened, when the job is freed.
 */
struct cpr_job_driver {
    const char *name;
    int (*prepare)(cpr_job *job, cpr_error **errp);
    int (*run)(cpr_job *job, cpr_error **errp);
    void (*cleanup)(cpr_job *job);
};

/* ---- services of lib/migration/migrate.c to the drivers ---- */

/* Moves to `status` and tells the status callback. Refused with -ECANCELED (and no change)
 * while a cancel is pending, so that a driver stops at its next step. */
int cpr_job_set_status(cpr_job *job, cpr_migration_status status, cpr_error **errp);

/* The guest now runs (or may run) elsewhere for good, e.g. at a postcopy destination: from now
 * on this context neither resumes nor migrates it (cpr_migrate_check_resume() says `why`).
 * Sticky, as a completed cpr-transfer. */
void cpr_job_hand_over(cpr_job *job, const char *why);

/* -ECANCELED with an error when a cancel is pending, else 0. */
int cpr_job_check_cancel(cpr_job *job, cpr_error **errp);

/* An fd that polls readable once a cancel is requested (never read it). */
int cpr_job_cancel_fd(cpr_job *job);
/* Readable after a migrate-pause in postcopy-recover, until the job pauses again: a wait for
 * the recovery's peer polls it too. */
int cpr_job_pause_fd(cpr_job *job);

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

/*
 * Postcopy recovery (docs/migration.md): status postcopy-paused with error-desc `why` (copied;
 * may be NULL), then waits until cpr_migrate_recover() (incoming: *arg is a cpr_listener *) or
 * cpr_migrate_resume() (outgoing: *arg is a cpr_addr *) says where to meet the peer again: 0,
 * the caller owns *arg and sets the status back. -ECANCELED when the operator gave up
 * (cpr_migrate_cancel() in postcopy-paused; it also makes cpr_job_cancel_fd() readable, so a
 * wait for the peer that polls it ends too).
 */
int cpr_job_postcopy_pause(cpr_job *job, const cpr_error *why, void **arg);

/* The job took the new connection of a recovery: postcopy-active again (0), or -ECANCELED
 * when the operator gave up meanwhile, -ECONNABORTED on a migrate-pause meanwhile (either way
 * the caller breaks the connection and pauses again). */
int cpr_job_postcopy_resumed(cpr_job *job, cpr_error **errp);

/* What cpr_migrate_pause() calls, under the engine's lock, to break the job's channel while
 * postcopy-active (NULL: none). `cut` must be quick and take no lock of the engine's; the
 * channel it breaks must stay the same while postcopy-active (replace it only while paused or
 * recovering). Cleared when the job ends; clear it before freeing `opaque` earlier. */
void cpr_job_set_cut(cpr_job *job, void (*cut)(void *opaque), void *opaque);

/* 1 once cpr_migrate_start_postcopy() asked this (outgoing) job to switch to postcopy. */
int cpr_job_postcopy_requested(cpr_job *job);

/* How a cancel reaches a channel of this job (its cancel fd and watched sockets). */
struct cpr_chan_cancel cpr_job_chan_cancel(cpr_job *job);

/* The statistics, under the engine's lock: take, change, give back quickly. */
cpr_migration_info *cpr_job_stats_lock(cpr_job *job);
void cpr_job_stats_unlock(cpr_job *job);

/* The VM hooks (NULL-safe). */
int cpr_job_vm_hook(cpr_job *job, enum cpr_vm_hook which, cpr_error **errp);
int cpr_job_vm_start(cpr_job *job, cpr_error **errp);
/* The 1.2 prepare hook (destination, before it commits); 0 without one. */
int cpr_job_vm_prepare(cpr_job *job, cpr_error **errp);

/* Overrides the reported run state (-1 clears the override). */
void cpr_job_set_runstate(cpr_job *job, int runstate);

/* The RAM section of the job's context (registered before the job started). */
struct cpr_mig_ram *cpr_job_ram(cpr_job *job);

/* ---- services of lib/migration/migrate.c outside a job (owner thread) ---- */

/* The context's RAM section, registered on first use (owner thread, no save or load running). */
int cpr_mig_ram_get(cpr_ctx *ctx, struct cpr_mig_ram **out, cpr_error **errp);

/* The early incoming cpr state (cpr_incoming_cpr_load): -EBUSY when it was loaded already or
 * a job runs, else 0. */
int cpr_mig_cpr_in_check(cpr_ctx *ctx, cpr_error **errp);
/* The VM waits for its incoming state: run state inmigrate until a job loads it. */
void cpr_mig_set_inmigrate(cpr_ctx *ctx);
/* Keeps the cpr channel's socket and the commit signal that came with it (-1: none), both
 * owned from now on, until the incoming job takes them. */
void cpr_mig_keep_cpr_socket(cpr_ctx *ctx, int sock, int commit_signal);
/* The kept socket, or -1; *commit_signal the kept signal, or -1. The caller owns both. */
int cpr_mig_take_cpr_socket(cpr_ctx *ctx, int *commit_signal);

/* A consistent copy of the statistics with the times worked out (query.c renders it). */
void cpr_mig_info_snapshot(cpr_ctx *ctx, cpr_migration_info *out);

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

extern const cpr_job_driver cpr_driver_normal;       /* save.c */
extern const cpr_job_driver cpr_driver_cpr_reboot;   /* save.c */
extern const cpr_job_driver cpr_driver_cpr_transfer; /* cpr_modes.c */
extern const cpr_job_driver cpr_driver_cpr_exec;     /* cpr_modes.c */
extern const cpr_job_driver cpr_driver_incoming;     /* incoming.c */
/* Incoming cpr-transfer's early step: listens on the cpr channel at path, waits for the old
 * process up to cpr-transfer-accept-timeout and receives its state; returns the open socket,
 * and in *commit_signal the commit signal that came with it (-1: none). */
int cpr_migrate_in_cpr_channel(cpr_ctx *ctx, const char *path, int *commit_signal, cpr_error **errp);

#endif
