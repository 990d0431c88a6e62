/* SPDX-License-Identifier: MIT */
/*
 * The migration job: one at a time per context, on a library thread, with its status, cancel,
 * run state and result. What a job does per mode lives in its drivers beside this file
 * (save.c, cpr_modes.c, incoming.c); query.c renders the statistics.
 *
 * The engine's state (struct cpr_mig, one per context) is private to this file: the drivers,
 * query.c and the one-shot save reach it only through the calls of migrate.h.
 *
 * No include circle: the job calls its drivers through the cpr_job_driver table below and
 * they call back into the job's services (cpr_job_*), both declared in migrate.h.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "core/error.h"
#include "core/trace.h"
#include "core/gate.h"
#include "core/sized.h"
#include "handover/exec_guard.h"
#include "migration/main_tls.h"
#include "migration/migrate.h"
#include "migration/fault_server.h"
#include "migration/ram_section.h"
#include "migration/vm_hooks.h"

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
    int postcopy_requested; /* cpr_migrate_start_postcopy() on the current job */
    /* Postcopy recovery: where the paused job meets its peer again (a cpr_listener * when
     * incoming, a cpr_addr * when outgoing) until it takes it; busy from that call until the
     * job pauses again or ends; give_up: a cancel in postcopy-paused. */
    void *resume_arg;
    int resume_busy;
    int postcopy_give_up;
    /* migrate-pause: how to cut the job's channel while postcopy-active (called under lock,
     * registered by the job, whose channel it keeps stable while postcopy-active); requested
     * until the job paused, so that its error-desc says why. */
    void (*cut)(void *opaque);
    void *cut_opaque;
    int pause_requested;
    int past_no_return;
    /* Sticky: the guest went to another process with its RAM (cpr-transfer completed, ...).
     * No later job or reset clears it: this context never migrates or resumes it again. */
    char *handed_over; /* why, or NULL */
    int cancel_efd;        /* eventfd, readable after a cancel */
    int pause_efd;         /* eventfd, readable after a migrate-pause in postcopy-recover */
    GArray *watched;       /* int fds that cancel shuts down */
    int runstate_override; /* cpr_runstate, or -1 for "ask is_running" */

    cpr_migration_info info;
    int64_t start_us, active_us, end_us; /* g_get_monotonic_time(); 0 = not yet */

    struct cpr_mig_ram *ram; /* the RAM section, registered on first use */

    /* Incoming cpr channel read early (cpr_incoming_cpr_load), kept open until the incoming
     * job hangs it up; -1 when none. */
    int cpr_sock;
    /* The commit signal that came with it (handover/commit_signal.h), or -1. */
    int commit_signal;
};

static void stats_reset(struct cpr_mig *mig, cpr_mode mode, int incoming)
{
    memset(&mig->info, 0, sizeof(mig->info));
    mig->info.size = sizeof(mig->info);
    mig->info.mode = (int32_t)mode;
    mig->info.incoming = incoming;
    mig->info.total_time_ms = -1;
    mig->info.setup_time_ms = -1;
    mig->info.downtime_ms = -1;
    mig->info.expected_downtime_ms = -1;
    mig->start_us = mig->active_us = mig->end_us = 0;
}

static void mig_free(void *p)
{
    struct cpr_mig *mig = p;
    if (mig->cancel_efd >= 0)
        close(mig->cancel_efd);
    if (mig->pause_efd >= 0)
        close(mig->pause_efd);
    g_array_free(mig->watched, TRUE);
    cpr_error_free(mig->error);
    g_free(mig->handed_over);
    if (mig->cpr_sock >= 0)
        close(mig->cpr_sock);
    if (mig->commit_signal >= 0)
        close(mig->commit_signal);
    cpr_mig_ram_free(mig->ram);
    g_mutex_clear(&mig->lock);
    g_cond_clear(&mig->cond);
    g_rec_mutex_clear(&mig->status_lock);
    g_free(mig);
}

static void mig_slot_free(void *p)
{
    struct cpr_mig *mig = p;
    /* A context freed under a running job: stop the job before its state goes away. */
    cpr_migrate_cancel(mig->ctx, NULL);
    cpr_migrate_wait(mig->ctx, NULL);
    mig_free(mig);
}

/* The context's engine state, made on first use (owner thread). */
static struct cpr_mig *cpr_mig_get(cpr_ctx *ctx)
{
    struct cpr_mig *mig = cpr_ctx_slot_get(ctx, CPR_SLOT_MIGRATION);
    if (mig)
        return mig;
    /* The slot is made on the owner thread, on the first migration call. */
    mig = g_new0(struct cpr_mig, 1);
    mig->ctx = ctx;
    g_mutex_init(&mig->lock);
    g_cond_init(&mig->cond);
    g_rec_mutex_init(&mig->status_lock);
    /* Made with the state, so that a job's fd count before and after is the same. */
    mig->cancel_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    mig->pause_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    mig->runstate_override = -1;
    mig->cpr_sock = -1;
    mig->commit_signal = -1;
    mig->watched = g_array_new(FALSE, FALSE, sizeof(int));
    stats_reset(mig, CPR_MODE_NORMAL, 0);
    mig->info.status = CPR_MIGRATION_NONE;
    cpr_ctx_slot_set(ctx, CPR_SLOT_MIGRATION, mig, mig_slot_free);
    return mig;
}

CPR_API const char *cpr_migration_status_name(int status)
{
    static const char *const names[] = {
        [CPR_MIGRATION_NONE] = "none",
        [CPR_MIGRATION_SETUP] = "setup",
        [CPR_MIGRATION_ACTIVE] = "active",
        [CPR_MIGRATION_DEVICE] = "device",
        [CPR_MIGRATION_COMPLETED] = "completed",
        [CPR_MIGRATION_FAILED] = "failed",
        [CPR_MIGRATION_CANCELLING] = "cancelling",
        [CPR_MIGRATION_CANCELLED] = "cancelled",
        [CPR_MIGRATION_PRE_SWITCHOVER] = "pre-switchover",
        [CPR_MIGRATION_POSTCOPY_ACTIVE] = "postcopy-active",
        [CPR_MIGRATION_POSTCOPY_PAUSED] = "postcopy-paused",
        [CPR_MIGRATION_POSTCOPY_RECOVER] = "postcopy-recover",
    };
    if (status < 0 || (size_t)status >= G_N_ELEMENTS(names))
        return NULL;
    return names[status];
}

static void resume_arg_free(int incoming, void *arg)
{
    if (incoming)
        cpr_listener_free(arg);
    else
        cpr_addr_free(arg);
}

CPR_API const char *cpr_runstate_name(int runstate)
{
    static const char *const names[] = {
        [CPR_RUNSTATE_RUNNING] = "running",
        [CPR_RUNSTATE_PAUSED] = "paused",
        [CPR_RUNSTATE_INMIGRATE] = "inmigrate",
        [CPR_RUNSTATE_POSTMIGRATE] = "postmigrate",
        [CPR_RUNSTATE_FINISH_MIGRATE] = "finish-migrate",
    };
    if (runstate < 0 || (size_t)runstate >= G_N_ELEMENTS(names))
        return NULL;
    return names[runstate];
}

/* ---- VM hooks ---- */

/* The hooks of the first public version of cpr_vm_ops. */
#define VM_OPS_MIN_SIZE (offsetof(cpr_vm_ops, flush) + sizeof(((cpr_vm_ops *)0)->flush))

CPR_API int cpr_migrate_set_vm_ops(cpr_ctx *ctx, const cpr_vm_ops *ops, void *opaque,
                                   cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_set_vm_ops: ctx is NULL");
    cpr_vm_ops known = { 0 };
    int ret = cpr_sized_read(&known, sizeof(known), ops, VM_OPS_MIN_SIZE, "cpr_vm_ops", errp);
    /* Every member past the header is a hook: a size that ends inside one came from no header
     * (a half-copied pointer would be called). */
    if (ret == 0 && (ops->size - offsetof(cpr_vm_ops, stop)) % sizeof(ops->stop))
        ret = cpr_error_set(errp, -EINVAL, "cpr_vm_ops: size %u ends inside a hook", ops->size);
    if (ret < 0) {
        cpr_error_prefix(errp, "cpr_migrate_set_vm_ops");
        return ret;
    }
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    if (mig->job_running) {
        g_mutex_unlock(&mig->lock);
        return cpr_error_set(errp, -EBUSY, "cannot change the VM hooks while a migration job runs");
    }
    mig->ops = known;
    mig->vm_opaque = opaque;
    g_mutex_unlock(&mig->lock);
    return 0;
}

static int vm_is_running(struct cpr_mig *mig)
{
    return mig->ops.is_running ? mig->ops.is_running(mig->ctx, mig->vm_opaque) > 0 : 0;
}

int cpr_job_vm_hook(cpr_job *job, enum cpr_vm_hook which, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    int r = cpr_vm_hook_call(&mig->ops, job->ctx, mig->vm_opaque, which, errp);
    return r < 0 ? r : 0;
}

int cpr_job_vm_start(cpr_job *job, cpr_error **errp)
{
    return cpr_job_vm_hook(job, CPR_VM_START, errp);
}

int cpr_job_vm_prepare(cpr_job *job, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    if (!mig->ops.prepare)
        return 0;
    cpr_error *herr = NULL;
    int r = mig->ops.prepare(job->ctx, mig->vm_opaque, &herr);
    r = cpr_error_from_hook(errp, r, &herr, "the VMM's prepare hook failed");
    return r < 0 ? r : 0;
}

void cpr_job_set_runstate(cpr_job *job, int runstate)
{
    g_mutex_lock(&job->mig->lock);
    job->mig->runstate_override = runstate;
    g_mutex_unlock(&job->mig->lock);
}

CPR_API cpr_runstate cpr_migrate_runstate(cpr_ctx *ctx)
{
    if (!ctx)
        return CPR_RUNSTATE_PAUSED;
    struct cpr_mig *mig = cpr_mig_get(ctx);
    int running = vm_is_running(mig);
    g_mutex_lock(&mig->lock);
    /* postmigrate lasts until the VMM runs the guest again (QEMU lets `cont` do that). */
    if (mig->runstate_override == CPR_RUNSTATE_POSTMIGRATE && running && !mig->job_running)
        mig->runstate_override = -1;
    int rs = mig->runstate_override;
    g_mutex_unlock(&mig->lock);
    if (rs >= 0)
        return (cpr_runstate)rs;
    return running ? CPR_RUNSTATE_RUNNING : CPR_RUNSTATE_PAUSED;
}

CPR_API int cpr_migrate_set_status_cb(cpr_ctx *ctx, cpr_migration_status_fn fn, void *opaque,
                                      cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_set_status_cb: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    mig->status_fn = fn;
    mig->status_opaque = opaque;
    g_mutex_unlock(&mig->lock);
    return 0;
}

/* ---- status ---- */

static void status_changed(struct cpr_mig *mig, int status)
{
    g_mutex_lock(&mig->lock);
    cpr_migration_status_fn fn = mig->status_fn;
    void *opaque = mig->status_opaque;
    g_mutex_unlock(&mig->lock);
    if (fn)
        fn(mig->ctx, status, opaque);
}

int cpr_job_set_status(cpr_job *job, cpr_migration_status status, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    if (mig->cancel_requested) {
        g_mutex_unlock(&mig->lock);
        g_rec_mutex_unlock(&mig->status_lock);
        return cpr_error_set(errp, -ECANCELED, "migration cancelled");
    }
    int changed = mig->info.status != (int32_t)status;
    mig->info.status = status;
    if (status == CPR_MIGRATION_ACTIVE && mig->active_us == 0)
        mig->active_us = g_get_monotonic_time();
    g_mutex_unlock(&mig->lock);
    if (changed)
        status_changed(mig, status);
    g_rec_mutex_unlock(&mig->status_lock);
    return 0;
}

int cpr_job_check_cancel(cpr_job *job, cpr_error **errp)
{
    g_mutex_lock(&job->mig->lock);
    int cancelled = job->mig->cancel_requested;
    g_mutex_unlock(&job->mig->lock);
    return cancelled ? cpr_error_set(errp, -ECANCELED, "migration cancelled") : 0;
}

static void efd_drain(int fd)
{
    uint64_t drain;
    while (fd >= 0 && read(fd, &drain, sizeof(drain)) > 0) {
    }
}

static void efd_signal(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow from one write; nothing to do. */
    }
}

int cpr_job_pause_fd(cpr_job *job)
{
    return job->mig->pause_efd;
}

int cpr_job_cancel_fd(cpr_job *job)
{
    return job->mig->cancel_efd;
}

void cpr_job_watch_fd(cpr_job *job, int fd)
{
    struct cpr_mig *mig = job->mig;
    g_mutex_lock(&mig->lock);
    g_array_append_val(mig->watched, fd);
    /* A cancel that came before the fd existed must still reach it. */
    if (mig->cancel_requested)
        shutdown(fd, SHUT_RDWR);
    g_mutex_unlock(&mig->lock);
}

void cpr_job_unwatch_fd(cpr_job *job, int fd)
{
    struct cpr_mig *mig = job->mig;
    g_mutex_lock(&mig->lock);
    for (guint i = 0; i < mig->watched->len; i++) {
        if (g_array_index(mig->watched, int, i) == fd) {
            g_array_remove_index_fast(mig->watched, i);
            break;
        }
    }
    g_mutex_unlock(&mig->lock);
}

int cpr_job_point_of_no_return(cpr_job *job, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    g_mutex_lock(&mig->lock);
    int cancelled = mig->cancel_requested;
    if (!cancelled)
        mig->past_no_return = 1;
    g_mutex_unlock(&mig->lock);
    return cancelled ? cpr_error_set(errp, -ECANCELED, "migration cancelled") : 0;
}

static void job_watch(void *opaque, int fd)
{
    cpr_job_watch_fd(opaque, fd);
}

static void job_unwatch(void *opaque, int fd)
{
    cpr_job_unwatch_fd(opaque, fd);
}

struct cpr_chan_cancel cpr_job_chan_cancel(cpr_job *job)
{
    return (struct cpr_chan_cancel){ .fd = job->mig->cancel_efd, .watch = job_watch,
                                     .unwatch = job_unwatch, .opaque = job };
}

struct cpr_mig_ram *cpr_job_ram(cpr_job *job)
{
    return job->mig->ram;
}

cpr_migration_info *cpr_job_stats_lock(cpr_job *job)
{
    g_mutex_lock(&job->mig->lock);
    return &job->mig->info;
}

void cpr_job_stats_unlock(cpr_job *job)
{
    g_mutex_unlock(&job->mig->lock);
}

/* ---- switchover ---- */

/* Waits in pre-switchover until continued or cancelled. */
static int wait_continue(cpr_job *job, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    int ret = cpr_job_set_status(job, CPR_MIGRATION_PRE_SWITCHOVER, errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&mig->lock);
    while (!mig->continue_requested && !mig->cancel_requested)
        g_cond_wait(&mig->cond, &mig->lock);
    mig->continue_requested = 0;
    int cancelled = mig->cancel_requested;
    g_mutex_unlock(&mig->lock);
    return cancelled ? cpr_error_set(errp, -ECANCELED, "migration cancelled in pre-switchover") : 0;
}

int cpr_job_switchover(cpr_job *job, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    int ret = cpr_job_check_cancel(job, errp);
    if (ret < 0)
        return ret;
    job->vm_was_running = vm_is_running(mig);
    if (job->vm_was_running && cpr_vm_hook_present(&mig->ops, CPR_VM_STOP)) {
        job->stop_time_us = g_get_monotonic_time();
        cpr_trace_step(job->ctx, "stop-requested");
        if ((ret = cpr_job_vm_hook(job, CPR_VM_STOP, errp)) < 0)
            return ret;
        cpr_trace_step(job->ctx, "stopped");
    }
    job->vm_stopped = 1;
    if (!job->stop_time_us)
        job->stop_time_us = g_get_monotonic_time();
    cpr_job_set_runstate(job, CPR_RUNSTATE_FINISH_MIGRATE);
    if (job->params.pause_before_switchover && (ret = wait_continue(job, errp)) < 0)
        return ret;
    /* Every job passes through `device`, the switchover phase, as QEMU's jobs do. */
    if ((ret = cpr_job_set_status(job, CPR_MIGRATION_DEVICE, errp)) < 0)
        return ret;
    return cpr_job_vm_hook(job, CPR_VM_FLUSH, errp);
}

CPR_API int cpr_migrate_continue(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_continue: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int status = mig->info.status;
    if (status == CPR_MIGRATION_PRE_SWITCHOVER && mig->job_running) {
        mig->continue_requested = 1;
        g_cond_broadcast(&mig->cond);
    }
    g_mutex_unlock(&mig->lock);
    if (status != CPR_MIGRATION_PRE_SWITCHOVER)
        return cpr_error_set(errp, -EINVAL, "migration is in status %s, not pre-switchover",
                             cpr_migration_status_name(status));
    return 0;
}

CPR_API int cpr_migrate_start_postcopy(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_start_postcopy: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    cpr_job *job = mig->job_running ? mig->job : NULL;
    int status = mig->info.status;
    int ok = job && !job->incoming && job->params.postcopy_ram &&
             (status == CPR_MIGRATION_SETUP || status == CPR_MIGRATION_ACTIVE);
    if (ok)
        mig->postcopy_requested = 1;
    int cap = job && job->params.postcopy_ram;
    g_mutex_unlock(&mig->lock);
    if (ok) {
        cpr_trace_step(ctx, "postcopy-requested");
        return 0;
    }
    if (job && !job->incoming && !cap)
        return cpr_error_set(errp, -EINVAL, "migrate-start-postcopy: capability postcopy-ram is off");
    return cpr_error_set(errp, -EINVAL, "migrate-start-postcopy: no outgoing migration in status "
                         "active (status %s)", cpr_migration_status_name(status));
}

int cpr_job_postcopy_pause(cpr_job *job, const cpr_error *why, void **arg)
{
    struct cpr_mig *mig = job->mig;
    *arg = NULL;
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    int changed = mig->info.status != CPR_MIGRATION_POSTCOPY_PAUSED;
    mig->info.status = CPR_MIGRATION_POSTCOPY_PAUSED;
    mig->resume_busy = 0; /* an earlier attempt ended */
    cpr_error_free(mig->error);
    mig->error = NULL;
    if (mig->pause_requested)
        cpr_error_set(&mig->error, -ECONNABORTED, "migrate-pause: the migration channel was "
                      "broken on request");
    else if (why)
        cpr_error_set(&mig->error, cpr_error_code(why), "%s", cpr_error_message(why));
    mig->pause_requested = 0;
    efd_drain(mig->pause_efd);
    g_mutex_unlock(&mig->lock);
    if (changed)
        status_changed(mig, CPR_MIGRATION_POSTCOPY_PAUSED);
    g_rec_mutex_unlock(&mig->status_lock);

    g_mutex_lock(&mig->lock);
    while (!mig->resume_arg && !mig->postcopy_give_up)
        g_cond_wait(&mig->cond, &mig->lock);
    int gave_up = mig->postcopy_give_up;
    void *a = mig->resume_arg;
    mig->resume_arg = NULL;
    if (!gave_up) {
        cpr_error_free(mig->error);
        mig->error = NULL;
    }
    g_mutex_unlock(&mig->lock);
    if (gave_up) {
        resume_arg_free(job->incoming, a);
        return -ECANCELED;
    }
    *arg = a;
    return 0;
}

static int postcopy_stopped(int st)
{
    return st == CPR_MIGRATION_POSTCOPY_PAUSED || st == CPR_MIGRATION_POSTCOPY_RECOVER;
}

int cpr_job_postcopy_resumed(cpr_job *job, cpr_error **errp)
{
    struct cpr_mig *mig = job->mig;
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    int gave_up = mig->postcopy_give_up, paused = mig->pause_requested;
    if (!gave_up && !paused)
        mig->info.status = CPR_MIGRATION_POSTCOPY_ACTIVE;
    g_mutex_unlock(&mig->lock);
    if (!gave_up && !paused)
        status_changed(mig, CPR_MIGRATION_POSTCOPY_ACTIVE);
    g_rec_mutex_unlock(&mig->status_lock);
    if (gave_up)
        return cpr_error_set(errp, -ECANCELED, "postcopy recovery: given up");
    return paused ? cpr_error_set(errp, -ECONNABORTED, "postcopy recovery: migrate-pause") : 0;
}

void cpr_job_set_cut(cpr_job *job, void (*cut)(void *opaque), void *opaque)
{
    g_mutex_lock(&job->mig->lock);
    job->mig->cut = cut;
    job->mig->cut_opaque = opaque;
    g_mutex_unlock(&job->mig->lock);
}

CPR_API int cpr_migrate_pause(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_pause: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int st = mig->info.status;
    int running = mig->job_running && mig->job;
    int active = running && st == CPR_MIGRATION_POSTCOPY_ACTIVE;
    /* In postcopy-recover the attempt under way ends: its wait for the peer wakes on
     * cpr_job_pause_fd(), a connection it took is dropped (cpr_job_postcopy_resumed). */
    int recovering = running && st == CPR_MIGRATION_POSTCOPY_RECOVER && !mig->postcopy_give_up;
    int ok = (active && mig->cut) || recovering;
    if (ok)
        mig->pause_requested = 1;
    if (ok && active)
        mig->cut(mig->cut_opaque);
    if (recovering)
        efd_signal(mig->pause_efd);
    g_mutex_unlock(&mig->lock);
    if (ok)
        return 0;
    if (active) /* the source, before the destination acknowledged the switch */
        return cpr_error_set(errp, -EBUSY, "migrate-pause: the switch to postcopy is still under "
                             "way (status postcopy-active): try again once the destination "
                             "runs the guest");
    return cpr_error_set(errp, -EINVAL, "migrate-pause: no migration in status postcopy-active "
                         "or postcopy-recover (status %s)", cpr_migration_status_name(st));
}

/* Hands a paused job of this direction where to meet its peer again (takes arg): it goes
 * postcopy-recover until the new connection is taken or fails. */
static int post_resume(cpr_ctx *ctx, int incoming, void *arg, const char *what, cpr_error **errp)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    cpr_job *job = mig->job_running ? mig->job : NULL;
    int st = mig->info.status;
    int paused = job && job->incoming == incoming && postcopy_stopped(st) &&
                 !mig->postcopy_give_up;
    int busy = paused && (mig->resume_busy || mig->resume_arg);
    if (paused && !busy) {
        mig->resume_arg = arg;
        mig->resume_busy = 1;
        mig->info.status = CPR_MIGRATION_POSTCOPY_RECOVER;
        g_cond_broadcast(&mig->cond);
    }
    g_mutex_unlock(&mig->lock);
    if (paused && !busy)
        status_changed(mig, CPR_MIGRATION_POSTCOPY_RECOVER);
    g_rec_mutex_unlock(&mig->status_lock);
    if (paused && !busy)
        return 0;
    resume_arg_free(incoming, arg);
    if (busy)
        return cpr_error_set(errp, -EBUSY, "%s: an earlier one is still under way", what);
    return cpr_error_set(errp, -EINVAL, "%s: no %s migration in status postcopy-paused (status %s)",
                         what, incoming ? "incoming" : "outgoing", cpr_migration_status_name(st));
}

/* The address of a recovery: unix or tcp only (the return path needs a socket). */
static int resume_addr(const char *uri, const char *what, cpr_addr **out, cpr_error **errp)
{
    if (!uri)
        return cpr_error_set(errp, -EINVAL, "%s: uri is NULL", what);
    int ret = cpr_addr_parse_uri(uri, out, errp);
    if (ret < 0)
        return ret;
    cpr_transport t = cpr_addr_transport(*out);
    if (t != CPR_TRANSPORT_UNIX && t != CPR_TRANSPORT_TCP) {
        cpr_addr_free(*out);
        *out = NULL;
        return cpr_error_set(errp, -EINVAL, "%s: '%s' is not a unix: or tcp: address", what, uri);
    }
    return 0;
}

CPR_API int cpr_migrate_recover(cpr_ctx *ctx, const char *uri, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_recover: ctx is NULL");
    cpr_addr *a;
    int ret = resume_addr(uri, "migrate-recover", &a, errp);
    if (ret < 0)
        return ret;
    /* Checked first, so that a refused call does not replace a socket file. */
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int ok = mig->job_running && mig->job && mig->job->incoming &&
             postcopy_stopped(mig->info.status) && !mig->resume_busy;
    g_mutex_unlock(&mig->lock);
    cpr_listener *l = NULL;
    if (ok && (ret = cpr_listener_new(a, CPR_LISTEN_SAME_UID, &l, errp)) < 0) {
        cpr_addr_free(a);
        cpr_error_prefix(errp, "migrate-recover");
        return ret;
    }
    cpr_addr_free(a);
    if (!ok)
        return post_resume(ctx, 1, NULL, "migrate-recover", errp);
    return post_resume(ctx, 1, l, "migrate-recover", errp);
}

CPR_API int cpr_migrate_resume(cpr_ctx *ctx, const char *uri, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_resume: ctx is NULL");
    cpr_addr *a;
    int ret = resume_addr(uri, "migrate resume", &a, errp);
    return ret < 0 ? ret : post_resume(ctx, 0, a, "migrate resume", errp);
}

int cpr_job_postcopy_requested(cpr_job *job)
{
    g_mutex_lock(&job->mig->lock);
    int r = job->mig->postcopy_requested;
    g_mutex_unlock(&job->mig->lock);
    return r;
}

/* ---- the job's life ---- */

static void job_free(cpr_job *job)
{
    if (!job)
        return;
    if (job->driver && job->driver->cleanup)
        job->driver->cleanup(job);
    cpr_channels_free(job->channels);
    cpr_params_clear(&job->params);
    g_free(job);
}

/* Claims the context for a new job; -EBUSY when one runs. Joins a finished one. */
static int job_claim(struct cpr_mig *mig, cpr_error **errp)
{
    g_mutex_lock(&mig->lock);
    if (mig->job_running) {
        g_mutex_unlock(&mig->lock);
        return cpr_error_set(errp, -EBUSY, "a migration job is already running (status %s)",
                             cpr_migration_status_name(mig->info.status));
    }
    mig->job_running = 1;
    GThread *old = mig->thread;
    cpr_job *old_job = mig->job;
    mig->thread = NULL;
    mig->job = NULL;
    g_mutex_unlock(&mig->lock);
    if (old)
        g_thread_join(old);
    job_free(old_job);
    return 0;
}

static void job_release(struct cpr_mig *mig)
{
    g_mutex_lock(&mig->lock);
    mig->job_running = 0;
    mig->cut = NULL; /* its channel goes with the job */
    g_cond_broadcast(&mig->cond);
    g_mutex_unlock(&mig->lock);
}

/* A copy of a channel list, since a detached job outlives the caller's. */
static int channels_copy(const cpr_channels *src, cpr_channels **out, cpr_error **errp)
{
    cpr_channels *list;
    int ret = cpr_channels_new(&list, errp);
    if (ret < 0)
        return ret;
    for (int t = CPR_CHANNEL_MAIN; t <= CPR_CHANNEL_CPR; t++) {
        const cpr_addr *a = cpr_channels_get(src, (cpr_channel_type)t);
        if (!a)
            continue;
        g_autofree char *uri = cpr_addr_to_uri(a);
        cpr_addr *copy = NULL;
        ret = uri ? cpr_addr_parse_uri(uri, &copy, errp) : cpr_error_set(errp, -EINVAL, "channel has no URI form");
        if (ret == 0 && (ret = cpr_channels_add(list, (cpr_channel_type)t, copy, errp)) < 0)
            cpr_addr_free(copy);
        if (ret < 0) {
            cpr_channels_free(list);
            return ret;
        }
    }
    *out = list;
    return 0;
}

/* The drivers, by direction and mode: a new way to migrate is a new line here. */
static const cpr_job_driver *job_driver(int incoming, cpr_mode mode)
{
    static const cpr_job_driver *const outgoing[] = {
        [CPR_MODE_NORMAL] = &cpr_driver_normal,
        [CPR_MODE_CPR_REBOOT] = &cpr_driver_cpr_reboot,
        [CPR_MODE_CPR_TRANSFER] = &cpr_driver_cpr_transfer,
        [CPR_MODE_CPR_EXEC] = &cpr_driver_cpr_exec,
    };
    if (incoming)
        return &cpr_driver_incoming;
    if ((unsigned int)mode >= G_N_ELEMENTS(outgoing))
        return NULL;
    return outgoing[mode];
}

static cpr_job *job_new(struct cpr_mig *mig, int incoming, unsigned int flags)
{
    cpr_job *job = g_new0(cpr_job, 1);
    job->ctx = mig->ctx;
    job->mig = mig;
    job->incoming = incoming;
    job->flags = flags;
    cpr_params_snapshot(mig->ctx, &job->params);
    job->mode = job->params.mode;
    job->driver = job_driver(incoming, job->mode);
    job->commit_signal = -1;
    return job;
}

/* At migrate (or incoming) time on both sides, as QEMU: postcopy-ram needs userfaultfd on the
 * destination; a host without it is refused now, not at the switch. */
static int postcopy_check_host(const cpr_job *job, cpr_error **errp)
{
    if (job->params.postcopy_ram && job->params.tls_creds)
        return cpr_error_set(errp, -ENOTSUP, "capability postcopy-ram with tls-creds is not "
                             "supported yet: the page requests would bypass TLS");
    /* The switch's discard entries go on main while an earlier pass's multifd packets may
     * still be in flight to pages that become missing: not until that is ordered. */
    if (job->params.postcopy_ram && job->params.multifd)
        return cpr_error_set(errp, -ENOTSUP, "capability postcopy-ram with capability multifd is not "
                             "supported yet");
    cpr_error *err = NULL;
    if (!job->params.postcopy_ram || cpr_fault_server_available(&err))
        return 0;
    int ret = err ? cpr_error_code(err) : -ENOSYS;
    cpr_error_propagate(errp, err);
    cpr_error_prefix(errp, "capability postcopy-ram needs userfaultfd, which this host does not give");
    return ret < 0 ? ret : -ENOSYS;
}

/* The driver's step on the caller's thread, before the job's thread starts. */
static int job_prepare(cpr_job *job, cpr_error **errp)
{
    if (!job->driver)
        return cpr_error_set(errp, -EINVAL, "no migration driver for mode %d", (int)job->mode);
    int ret = postcopy_check_host(job, errp);
    if (ret < 0)
        return ret;
    return job->driver->prepare ? job->driver->prepare(job, errp) : 0;
}

/* Resets per-job state; the job becomes current with status setup. */
static int job_begin(struct cpr_mig *mig, cpr_job *job, cpr_error **errp)
{
    if (mig->cancel_efd < 0) {
        mig->cancel_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (mig->cancel_efd < 0)
            return cpr_error_set_errno(errp, -errno, "eventfd for migration cancel");
    }
    efd_drain(mig->cancel_efd);
    efd_drain(mig->pause_efd);
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    mig->job = job;
    mig->cancel_requested = 0;
    mig->continue_requested = 0;
    mig->postcopy_requested = 0;
    mig->postcopy_give_up = 0;
    mig->resume_busy = 0;
    mig->pause_requested = 0;
    mig->past_no_return = 0;
    mig->result = 0;
    cpr_error_free(mig->error);
    mig->error = NULL;
    g_array_set_size(mig->watched, 0);
    stats_reset(mig, job->mode, job->incoming);
    mig->info.status = CPR_MIGRATION_SETUP;
    mig->start_us = g_get_monotonic_time();
    g_mutex_unlock(&mig->lock);
    status_changed(mig, CPR_MIGRATION_SETUP);
    g_rec_mutex_unlock(&mig->status_lock);
    return 0;
}

/* The guest went to another process with its RAM (or fds): from now on this context neither
 * migrates nor resumes it. Sticky: set once, never cleared. */
static void hand_over(struct cpr_mig *mig, char *why)
{
    g_mutex_lock(&mig->lock);
    if (!mig->handed_over)
        mig->handed_over = g_steal_pointer(&why);
    g_mutex_unlock(&mig->lock);
    g_free(why);
}

void cpr_job_hand_over(cpr_job *job, const char *why)
{
    hand_over(job->mig, g_strdup(why));
}

/* Ends the job: restores the guest on failure, sets the final status, tells notifiers. */
static void job_finish(cpr_job *job, int ret, cpr_error *err)
{
    struct cpr_mig *mig = job->mig;
    /* Taken first: a cancel's "cancelling" is told before the guest restarts. */
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    int cancelled = mig->cancel_requested;
    g_mutex_unlock(&mig->lock);
    if (ret < 0 && cancelled && ret != -ECANCELED) {
        /* The transfer failed because cancel shut it down: report the cancel. */
        cpr_error_free(err);
        err = NULL;
        ret = cpr_error_set(&err, -ECANCELED, "migration cancelled");
    }
    if (ret < 0 && !err)
        cpr_error_set(&err, ret, "migration failed");

    if (!job->incoming) {
        if (ret < 0 && job->vm_stopped && job->vm_was_running && !job->no_resume) {
            /* Failed or cancelled before the point of no return: the guest goes on. */
            cpr_error *start_err = NULL;
            if (cpr_job_vm_start(job, &start_err) < 0) {
                cpr_error_prefix(&err, "%s; and then", cpr_error_message(start_err));
                cpr_error_free(start_err);
            }
        }
        if (job->vm_stopped)
            job->vm_stopped = 0;
        cpr_job_set_runstate(job, ret == 0 ? CPR_RUNSTATE_POSTMIGRATE : -1);
        if (job->ram_shared && ret == 0)
            hand_over(mig, g_strdup_printf("the guest was handed over with its RAM to another process "
                                           "(mode %s, completed): it runs there",
                                           cpr_mode_name(job->mode)));
    } else if (ret < 0) {
        /* A failed load leaves nothing to run: the VMM reports inmigrate and decides. After
         * the commit the guest is this side's all the same: paused, `cont` may retry. */
        cpr_job_set_runstate(job, job->committed ? -1 : CPR_RUNSTATE_INMIGRATE);
        if (!job->committed)
            cpr_exec_abandon(job->ctx); /* cpr-exec: the previous image comes back instead */
    }

    /* Marked before the status is out: a VMM that frees the context on "completed" must not
     * race this step into a freed trace. */
    cpr_trace_step(job->ctx, job->incoming ? "incoming-end" : "migrate-end");
    int status = ret == 0 ? CPR_MIGRATION_COMPLETED
               : ret == -ECANCELED ? CPR_MIGRATION_CANCELLED : CPR_MIGRATION_FAILED;
    g_mutex_lock(&mig->lock);
    mig->info.status = status;
    mig->end_us = g_get_monotonic_time();
    if (job->stop_time_us)
        mig->info.downtime_ms = (mig->end_us - job->stop_time_us) / 1000;
    mig->result = ret;
    cpr_error_free(mig->error); /* why a postcopy paused */
    mig->error = err;
    void *resume = mig->resume_arg;
    mig->resume_arg = NULL;
    g_array_set_size(mig->watched, 0);
    g_mutex_unlock(&mig->lock);
    status_changed(mig, status);
    g_rec_mutex_unlock(&mig->status_lock);
    resume_arg_free(job->incoming, resume);

    if (!job->incoming)
        cpr_gate_leave(job->ctx, ret == 0);
    job_release(mig);
}

static gpointer job_thread(gpointer p)
{
    cpr_job *job = p;
    /* A peer that goes away must fail the write with EPIPE, not kill the VMM. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    cpr_error *err = NULL;
    cpr_trace_step(job->ctx, job->incoming ? "incoming-start" : "migrate-start");
    int ret = job->driver->run(job, &err);
    job_finish(job, ret, err);
    return NULL;
}

static int job_spawn(struct cpr_mig *mig, cpr_job *job, cpr_error **errp)
{
    GError *gerr = NULL;
    GThread *th = g_thread_try_new(job->incoming ? "cpr-incoming" : "cpr-migrate", job_thread, job, &gerr);
    if (!th) {
        int ret = cpr_error_set(errp, -EAGAIN, "cannot start the migration thread: %s", gerr->message);
        g_error_free(gerr);
        return ret;
    }
    g_mutex_lock(&mig->lock);
    mig->thread = th;
    g_mutex_unlock(&mig->lock);
    return 0;
}

CPR_API int cpr_migrate_wait(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_wait: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    while (mig->job_running && mig->job)
        g_cond_wait(&mig->cond, &mig->lock);
    int ret = mig->result;
    if (ret < 0 && errp && !*errp)
        cpr_error_set(errp, ret, "%s", cpr_error_message(mig->error));
    GThread *th = mig->thread;
    cpr_job *job = mig->job;
    mig->thread = NULL;
    mig->job = NULL;
    g_mutex_unlock(&mig->lock);
    if (th)
        g_thread_join(th);
    job_free(job);
    return ret;
}

CPR_API int cpr_migrate_cancel(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_cancel: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_rec_mutex_lock(&mig->status_lock);
    g_mutex_lock(&mig->lock);
    int st = mig->info.status;
    if (postcopy_stopped(st) && mig->job_running && mig->job) {
        /* Postcopy recovery given up: the job ends failed, as when the other side died. */
        mig->postcopy_give_up = 1;
        efd_signal(mig->cancel_efd);
        g_cond_broadcast(&mig->cond);
    }
    int can = mig->job_running && mig->job && !mig->past_no_return && !mig->cancel_requested &&
              (st == CPR_MIGRATION_SETUP || st == CPR_MIGRATION_ACTIVE ||
               st == CPR_MIGRATION_PRE_SWITCHOVER || st == CPR_MIGRATION_DEVICE);
    if (can) {
        mig->cancel_requested = 1;
        mig->info.status = CPR_MIGRATION_CANCELLING;
        efd_signal(mig->cancel_efd);
        /* Unblock a transfer stuck on a peer that does not read. */
        for (guint i = 0; i < mig->watched->len; i++)
            shutdown(g_array_index(mig->watched, int, i), SHUT_RDWR);
        g_cond_broadcast(&mig->cond);
    }
    g_mutex_unlock(&mig->lock);
    if (can)
        status_changed(mig, CPR_MIGRATION_CANCELLING);
    g_rec_mutex_unlock(&mig->status_lock);
    return 0;
}

/* ---- outgoing ---- */

CPR_API int cpr_migrate_channels(cpr_ctx *ctx, const cpr_channels *channels, unsigned int flags,
                                 cpr_error **errp)
{
    if (!ctx || !channels)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_channels: %s is NULL", ctx ? "channels" : "ctx");
    if (flags & ~CPR_MIGRATE_DETACH)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_channels: unknown flags 0x%x", flags);
    struct cpr_mig *mig = cpr_mig_get(ctx);
    int ret = job_claim(mig, errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&mig->lock);
    int inmigrate = mig->runstate_override == CPR_RUNSTATE_INMIGRATE;
    g_autofree char *handed = g_strdup(mig->handed_over);
    g_mutex_unlock(&mig->lock);
    if (handed) {
        job_release(mig);
        return cpr_error_set(errp, -EPERM, "cannot migrate this VM again: %s", handed);
    }
    if (inmigrate) {
        /* Its state is not loaded yet (or failed to load): there is nothing to send. */
        job_release(mig);
        return cpr_error_set(errp, -EBUSY, "the VM waits for an incoming migration (run state inmigrate)");
    }
    cpr_job *job = job_new(mig, 0, flags);
    ret = cpr_channels_check_mode(channels, job->mode, job->params.cpr_exec_command, errp);
    if (ret == 0)
        ret = cpr_main_tls_check(ctx, job->params.tls_creds, 0, job->mode, channels, errp);
    if (ret == 0)
        ret = channels_copy(channels, &job->channels, errp);
    /* Sections are registered on the owner thread, before any save runs. */
    if (ret == 0)
        ret = cpr_mig_ram_register(ctx, &mig->ram, errp);
    if (ret == 0)
        ret = job_prepare(job, errp);
    if (ret == 0)
        ret = cpr_gate_enter(ctx, job->mode, errp);
    if (ret < 0) {
        job_free(job);
        job_release(mig);
        return ret;
    }
    ret = job_begin(mig, job, errp);
    if (ret == 0)
        ret = job_spawn(mig, job, errp);
    if (ret < 0) {
        /* Nothing ran: the job fails as it stands. */
        cpr_error *err = NULL;
        cpr_error_set(&err, ret, "%s", errp && *errp ? cpr_error_message(*errp) : "migration failed");
        mig->job = job;
        job_finish(job, ret, err);
        return ret;
    }
    if (flags & CPR_MIGRATE_DETACH)
        return 0;
    return cpr_migrate_wait(ctx, errp);
}

CPR_API int cpr_migrate_uri(cpr_ctx *ctx, const char *uri, unsigned int flags, cpr_error **errp)
{
    cpr_channels *list;
    int ret = cpr_channels_from_uri(uri, &list, errp);
    if (ret < 0)
        return ret;
    ret = cpr_migrate_channels(ctx, list, flags, errp);
    cpr_channels_free(list);
    return ret;
}

CPR_API int cpr_migrate_check_resume(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_migrate_check_resume: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    g_autofree char *handed = g_strdup(mig->handed_over);
    int rs = mig->runstate_override;
    g_mutex_unlock(&mig->lock);
    if (handed)
        return cpr_error_set(errp, -EPERM, "cannot resume the guest here: %s", handed);
    if (rs == CPR_RUNSTATE_INMIGRATE)
        return cpr_error_set(errp, -EBUSY, "cannot resume the guest: it waits for its incoming state (run state inmigrate)");
    if (rs == CPR_RUNSTATE_FINISH_MIGRATE)
        return cpr_error_set(errp, -EBUSY, "cannot resume the guest: a migration is completing it (run state finish-migrate)");
    return 0;
}

/* ---- services outside a job (migrate.h) ---- */

int cpr_mig_ram_get(cpr_ctx *ctx, struct cpr_mig_ram **out, cpr_error **errp)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    int ret = cpr_mig_ram_register(ctx, &mig->ram, errp);
    *out = ret == 0 ? mig->ram : NULL;
    return ret;
}

void cpr_mig_info_snapshot(cpr_ctx *ctx, cpr_migration_info *out)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    *out = mig->info;
    if (mig->start_us) {
        int64_t end = mig->end_us ? mig->end_us : g_get_monotonic_time();
        out->total_time_ms = (end - mig->start_us) / 1000;
        if (mig->active_us)
            out->setup_time_ms = (mig->active_us - mig->start_us) / 1000;
    }
    g_mutex_unlock(&mig->lock);
    out->runstate = (int32_t)cpr_migrate_runstate(ctx);
}

CPR_API char *cpr_migrate_error_desc(cpr_ctx *ctx)
{
    if (!ctx)
        return NULL;
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    char *desc = mig->error ? g_strdup(cpr_error_message(mig->error)) : NULL;
    g_mutex_unlock(&mig->lock);
    return desc;
}

int cpr_mig_cpr_in_check(cpr_ctx *ctx, cpr_error **errp)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int busy = mig->job_running || mig->cpr_sock >= 0;
    g_mutex_unlock(&mig->lock);
    if (busy)
        return cpr_error_set(errp, -EBUSY, "cpr state was already loaded, or a migration job runs");
    return 0;
}

void cpr_mig_set_inmigrate(cpr_ctx *ctx)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    mig->runstate_override = CPR_RUNSTATE_INMIGRATE;
    g_mutex_unlock(&mig->lock);
}

void cpr_mig_keep_cpr_socket(cpr_ctx *ctx, int sock, int commit_signal)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int old = mig->cpr_sock, old_signal = mig->commit_signal;
    mig->cpr_sock = sock;
    mig->commit_signal = commit_signal;
    g_mutex_unlock(&mig->lock);
    if (old >= 0)
        close(old);
    if (old_signal >= 0)
        close(old_signal);
}

int cpr_mig_take_cpr_socket(cpr_ctx *ctx, int *commit_signal)
{
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int sock = mig->cpr_sock;
    *commit_signal = mig->commit_signal;
    mig->cpr_sock = -1;
    mig->commit_signal = -1;
    g_mutex_unlock(&mig->lock);
    return sock;
}

/* ---- incoming ---- */

CPR_API int cpr_incoming_defer(cpr_ctx *ctx, cpr_error **errp)
{
    if (!ctx)
        return cpr_error_set(errp, -EINVAL, "cpr_incoming_defer: ctx is NULL");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    g_mutex_lock(&mig->lock);
    int busy = mig->job_running;
    if (!busy)
        mig->runstate_override = CPR_RUNSTATE_INMIGRATE;
    g_mutex_unlock(&mig->lock);
    if (busy)
        return cpr_error_set(errp, -EBUSY, "a migration job is running");
    return 0;
}

CPR_API int cpr_incoming_start(cpr_ctx *ctx, const cpr_channels *channels, unsigned int flags,
                               cpr_error **errp)
{
    if (!ctx || !channels)
        return cpr_error_set(errp, -EINVAL, "cpr_incoming_start: %s is NULL", ctx ? "channels" : "ctx");
    if (flags & ~(CPR_INCOMING_DETACH | CPR_INCOMING_PAUSED))
        return cpr_error_set(errp, -EINVAL, "cpr_incoming_start: unknown flags 0x%x", flags);
    if (!cpr_channels_get(channels, CPR_CHANNEL_MAIN))
        return cpr_error_set(errp, -EINVAL, "incoming migration needs a main channel");
    struct cpr_mig *mig = cpr_mig_get(ctx);
    int ret = job_claim(mig, errp);
    if (ret < 0)
        return ret;
    g_mutex_lock(&mig->lock);
    mig->runstate_override = CPR_RUNSTATE_INMIGRATE;
    g_mutex_unlock(&mig->lock);
    cpr_job *job = job_new(mig, 1, flags);
    ret = channels_copy(channels, &job->channels, errp);
    if (ret == 0)
        ret = job_begin(mig, job, errp);
    if (ret < 0) {
        job_free(job);
        job_release(mig);
        return ret;
    }
    cpr_error *err = NULL;
    /* Sections are registered on the owner thread, before any load runs. */
    ret = cpr_mig_ram_register(ctx, &mig->ram, &err);
    if (ret == 0)
        ret = job_prepare(job, &err);
    if (ret == 0)
        ret = job_spawn(mig, job, &err);
    if (ret < 0) {
        if (errp && !*errp && err)
            cpr_error_set(errp, ret, "%s", cpr_error_message(err));
        mig->job = job;
        job_finish(job, ret, err);
        return ret;
    }
    if (flags & CPR_INCOMING_DETACH)
        return 0;
    return cpr_migrate_wait(ctx, errp);
}

CPR_API int cpr_incoming_start_uri(cpr_ctx *ctx, const char *uri, unsigned int flags,
                                   cpr_error **errp)
{
    cpr_channels *list;
    int ret = cpr_channels_from_uri(uri, &list, errp);
    if (ret < 0)
        return ret;
    ret = cpr_incoming_start(ctx, list, flags, errp);
    cpr_channels_free(list);
    return ret;
}
