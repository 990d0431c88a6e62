/* SPDX-License-Identifier: MIT */
/*
 * The migration engine: what a VMM calls to migrate, snapshot or live-update its guest.
 *
 * One context runs at most one migration job at a time, outgoing or incoming. A job runs on a
 * library thread; the blocking calls start it and wait for it, the detached ones
 * (CPR_MIGRATE_DETACH, CPR_INCOMING_DETACH) return at once and report through the status
 * callback, cpr_migrate_query() and cpr_migrate_wait().
 *
 * Outgoing, per mode (the `mode` parameter, see cpr/params.h):
 *   normal        precopy: RAM is sent while the guest runs, pass after pass driven by the
 *                 dirty bitmaps, until what remains fits downtime-limit at the measured
 *                 bandwidth; then stop, flush, the rest, postmigrate. To a file: a snapshot.
 *   cpr-reboot    stop, save to a file (RAM skipped when x-ignore-shared and the block is
 *                 shared), postmigrate. Restart with the same configuration plus incoming.
 *   cpr-transfer  cpr state (fds, RAM blocks) over the cpr channel while the guest runs; wait
 *                 for the new process to hang up; stop, device state on main, postmigrate.
 *   cpr-exec      stop, device state to the main channel (a file), cpr state into a memfd,
 *                 exec cpr-exec-command. The new image adopts the fds, loads and runs.
 * Status moves none -> setup -> active -> [pre-switchover] -> device -> completed, or to
 * failed / cancelling -> cancelled. On failed and cancelled the guest runs again if it ran
 * before. docs/migration.md states each mode's point of no return.
 *
 * Incoming: cpr_incoming_cpr_load() early at start-up (before devices exist), then
 * cpr_incoming_defer() or cpr_incoming_start(); the library loads the stream and starts the
 * guest unless CPR_INCOMING_PAUSED was given.
 *
 * Threads: the VM hooks, the status callback and the sections' hooks run on the job's thread
 * (the status callback's first "setup", and a refused start's notifiers, on the caller's).
 * is_running is also called by cpr_migrate_runstate() and the queries, from their caller's
 * thread: it must be cheap and thread-safe. Every function here may be called from any thread
 * except from inside those callbacks, where only cpr_migrate_query*(), cpr_migrate_runstate()
 * and cpr_migrate_check_resume() are allowed.
 */
#ifndef CPR_MIGRATE_H
#define CPR_MIGRATE_H

#include <cpr/common.h>
#include <cpr/channel.h>
#include <cpr/mode.h>

CPR_BEGIN_DECLS

/* ---- VM hooks ---------------------------------------------------------------------------- */

/*
 * What the library asks of the VMM. Each hook receives the opaque given with the ops and
 * returns 0 or a negative errno (is_running: 1 running, 0 not). NULL hooks are skipped
 * (is_running NULL reads as "not running"). The VMM initialises the struct with
 * CPR_VM_OPS_INIT or cpr_vm_ops_init() (`size` = sizeof(cpr_vm_ops)) so that it can grow: the
 * library reads only the members that fit in `size`.
 */
typedef struct cpr_vm_ops {
    uint32_t size;
    uint32_t reserved; /* 0 */
    /* Pause the vCPUs (the guest stops executing). Called before device state is saved. */
    int (*stop)(cpr_ctx *ctx, void *opaque);
    /* Resume the vCPUs: after a failed outgoing migration, and after an incoming load. On the
     * destination it runs after the commit: whatever can fail belongs in prepare (1.2). */
    int (*start)(cpr_ctx *ctx, void *opaque);
    /* Whether the vCPUs run now. */
    int (*is_running)(cpr_ctx *ctx, void *opaque);
    /* Flush block devices and other buffered I/O after stop, before completion, as QEMU
     * flushes its block devices when it stops the guest for the switchover.
     * A failure fails the migration (and the guest resumes). */
    int (*flush)(cpr_ctx *ctx, void *opaque);
    /* Dirty logging for normal-mode precopy (KVM_MEM_LOG_DIRTY_PAGES). start before the first
     * pass over RAM; sync before each later pass and once after stop, merging what the VMM
     * logged into the blocks' bitmaps (cpr_ram_dirty_merge); stop when precopy ends, whatever
     * the outcome. A VMM that marks pages dirty in software as it writes needs none of them. */
    int (*dirty_log_start)(cpr_ctx *ctx, void *opaque);
    int (*dirty_log_sync)(cpr_ctx *ctx, void *opaque);
    int (*dirty_log_stop)(cpr_ctx *ctx, void *opaque);
    /* ---- 1.2 ---- */
    /* Destination only: everything the VMM must do before its guest can run and that can fail
     * (check the loaded state against the machine, set vCPU state, ready the devices), called
     * once the whole stream has loaded and before the destination commits (acknowledges to
     * the source, or tells a cpr-exec guardian). A failure here leaves the source able to
     * resume the guest; after the commit, start() must not fail for any reason but a crash.
     * The hook may set *errp (cpr/error.h); it runs on the job's thread. */
    int (*prepare)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    /* The hooks above that can fail, able to say why (1.2). When one is set it is called
     * instead of its counterpart without errp (leave that one NULL); what it stores through
     * errp (cpr/error.h) reaches the migration's caller as "the VMM's <hook> hook failed:
     * <its message>". When a hook fails without a message its errno's description is used. */
    int (*stop_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    int (*start_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    int (*flush_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    int (*dirty_log_start_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    int (*dirty_log_sync_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
    int (*dirty_log_stop_errp)(cpr_ctx *ctx, void *opaque, cpr_error **errp);
} cpr_vm_ops;

/*
 * Initialisers that set `size` and zero the rest (docs/abi.md): CPR_VM_OPS_INIT in C,
 * cpr_vm_ops_init() anywhere (C++ has no designated initialisers). Since 1.2.
 */
#define CPR_VM_OPS_INIT { .size = sizeof(cpr_vm_ops) }
/* Sets ops->size to sizeof(cpr_vm_ops) and every other member to 0/NULL. NULL is ignored.
 * Thread safety: any thread. */
CPR_API void cpr_vm_ops_init(cpr_vm_ops *ops);

/*
 * Installs the VM hooks; the library copies `ops`. Replaces earlier hooks. opaque is passed
 * back to each hook. `size` may be any size from the first version's (up to flush) to this
 * header's: hooks past `size` read as NULL (a 1.0/1.1 VMM has no prepare). Errors: -EINVAL
 * for NULL ctx/ops, a size smaller than the four hooks' first version or ending inside a hook, or a non-zero byte past the members this library knows (a newer header's
 * hook it would not call; the error names the offset); -EBUSY while a job runs.
 */
CPR_API int cpr_migrate_set_vm_ops(cpr_ctx *ctx, const cpr_vm_ops *ops, void *opaque,
                                   cpr_error **errp);

/* ---- status and run state ---------------------------------------------------------------- */

/* Migration status, with QEMU's MigrationStatus names. Values are stable. */
typedef enum cpr_migration_status {
    CPR_MIGRATION_NONE = 0,
    CPR_MIGRATION_SETUP = 1,
    CPR_MIGRATION_ACTIVE = 2,
    CPR_MIGRATION_DEVICE = 3,
    CPR_MIGRATION_COMPLETED = 4,
    CPR_MIGRATION_FAILED = 5,
    CPR_MIGRATION_CANCELLING = 6,
    CPR_MIGRATION_CANCELLED = 7,
    CPR_MIGRATION_PRE_SWITCHOVER = 8,
    /* Since 1.2 (capability postcopy-ram): the guest runs at the destination, which fetches
     * the pages it still misses from the source. */
    CPR_MIGRATION_POSTCOPY_ACTIVE = 9,
    /* Since 1.2: postcopy's link was cut after the switch (either side: neither can tell a
     * cut from the other side's death). Nothing is lost: the source keeps every page it has
     * not sent and its guest stopped; the destination's vCPUs that touch a missing page stay
     * blocked. Ends by cpr_migrate_recover() at the destination and cpr_migrate_resume() at
     * the source (back to postcopy-active), or by cpr_migrate_cancel() (failed). query's
     * error-desc says why it paused. */
    CPR_MIGRATION_POSTCOPY_PAUSED = 10,
    /* Since 1.2: a paused postcopy re-establishes its channel, from cpr_migrate_recover() (at
     * the destination) or cpr_migrate_resume() (at the source) until the new connection is
     * taken and the transfer goes on (postcopy-active), or fails (postcopy-paused again). The
     * guest stays where it was in postcopy-paused. */
    CPR_MIGRATION_POSTCOPY_RECOVER = 11,
} cpr_migration_status;

/* "none", "setup", "active", "device", "completed", "failed", "cancelling", "cancelled",
 * "pre-switchover", "postcopy-active", "postcopy-paused", "postcopy-recover"; NULL when out
 * of range. A static string. */
CPR_API const char *cpr_migration_status_name(int status);

/* The run state a VMM reports (query-status, `info status`), with QEMU's RunState names. */
typedef enum cpr_runstate {
    CPR_RUNSTATE_RUNNING = 0,
    CPR_RUNSTATE_PAUSED = 1,
    CPR_RUNSTATE_INMIGRATE = 2,
    CPR_RUNSTATE_POSTMIGRATE = 3,
    CPR_RUNSTATE_FINISH_MIGRATE = 4,
} cpr_runstate;

/* "running", "paused", "inmigrate", "postmigrate", "finish-migrate"; NULL when out of range. */
CPR_API const char *cpr_runstate_name(int runstate);

/*
 * The run state to report. inmigrate from cpr_incoming_defer()/cpr_incoming_start() until a
 * load has finished (and stays so after a failed load); finish-migrate while the library has
 * the guest stopped to complete a migration; postmigrate after a completed outgoing
 * migration, until the VMM starts the guest again; otherwise running or paused according to
 * the is_running hook. NULL ctx: paused.
 */
CPR_API cpr_runstate cpr_migrate_runstate(cpr_ctx *ctx);

/*
 * Called on every status change (QMP's MIGRATION event), on the thread that made it, in the
 * order the changes were made (a cancel's "cancelling" always before "cancelled"). It may
 * call the query functions and cpr_migrate_cancel(), and must not wait for another thread
 * that calls into this API. Replaces an earlier callback; fn NULL removes it.
 */
typedef void (*cpr_migration_status_fn)(cpr_ctx *ctx, int status, void *opaque);
CPR_API int cpr_migrate_set_status_cb(cpr_ctx *ctx, cpr_migration_status_fn fn, void *opaque,
                                      cpr_error **errp);

/* ---- outgoing ---------------------------------------------------------------------------- */

/* Flags for cpr_migrate_uri() and cpr_migrate_channels(). */
#define CPR_MIGRATE_DETACH 0x1u /* return once the job has started (HMP `migrate -d`) */

/*
 * Migrates to `channels` (a main channel, plus a cpr channel for cpr-transfer) in the mode
 * of the `mode` parameter. The list is copied. Checks, before anything starts, and returned
 * from this call with nothing changed: the channels against the mode
 * (cpr_channels_check_mode), the blockers of the mode (-EPERM listing every reason), a job
 * already running or a VM in inmigrate (-EBUSY), a SETUP notifier's veto, a guest this context
 * has handed over (-EPERM, see cpr_migrate_check_resume()).
 * Without CPR_MIGRATE_DETACH the call returns when the job ends: 0 when completed, otherwise
 * the failure (-ECANCELED when cancelled) with its error. With it, 0 once the job runs.
 * cpr-transfer: the job (status setup, guest running) waits for the new process to listen
 * on the cpr channel for up to the cpr-transfer-connect-timeout parameter (default 10 s;
 * cpr/params.h), then fails with -ENOENT or -ECONNREFUSED naming it; the guest runs on.
 * cpr-exec does not return on success: the process image is replaced.
 */
CPR_API int cpr_migrate_channels(cpr_ctx *ctx, const cpr_channels *channels, unsigned int flags,
                                 cpr_error **errp);

/* As cpr_migrate_channels() with one main channel parsed from a URI ("unix:/p", "file:/p"). */
CPR_API int cpr_migrate_uri(cpr_ctx *ctx, const char *uri, unsigned int flags, cpr_error **errp);

/*
 * Cancels the running job (QMP migrate_cancel): status cancelling, then cancelled once the
 * job has undone what it did (the guest runs again if it ran before). Blocking transfers are
 * interrupted. Past a mode's point of no return the job completes instead. Returns 0, also
 * when no job runs (as QEMU does). Since 1.2, on a job in postcopy-paused (or
 * postcopy-recover) it gives the recovery up: the job ends failed as if the other side had
 * died (the source keeps its guest stopped; at the destination the guest is lost and its vCPUs
 * on missing pages stay blocked).
 */
CPR_API int cpr_migrate_cancel(cpr_ctx *ctx, cpr_error **errp);

/*
 * Whether the VMM may resume its guest now (QMP `cont`): a VMM calls it before it runs its
 * vCPUs on its own initiative; the library's own start hook calls need no check. Returns 0
 * when it may. Errors:
 *   -EPERM   this context handed its guest over to another process together with its RAM (a
 *            completed cpr-transfer, or any completed migration to a process that left some
 *            RAM block in place, e.g. x-ignore-shared). The guest runs there on the same
 *            memory: running it here too would corrupt it. Sticky: nothing later
 *            (another job, failed or not, a statistics reset) clears it, and
 *            cpr_migrate_channels() refuses such a context too, with the same reason.
 *   -EBUSY   run state inmigrate (the state has not loaded) or finish-migrate (a job is
 *            completing the migration).
 *   -EINVAL  ctx is NULL.
 * The error names the reason. Any thread, the status callback included (it only reads the
 * engine's state under its lock). Changes nothing.
 */
CPR_API int cpr_migrate_check_resume(cpr_ctx *ctx, cpr_error **errp);

/*
 * Resumes a job paused in pre-switchover (capability pause-before-switchover), as QMP
 * migrate-continue. -EINVAL when the job is not in that status.
 */
CPR_API int cpr_migrate_continue(cpr_ctx *ctx, cpr_error **errp);

/*
 * Since 1.2. Asks the running outgoing job to switch to postcopy, as QMP
 * migrate-start-postcopy: at the end of its current precopy step the source stops the guest,
 * sends the device state and the list of pages still dirty, and the destination runs the
 * guest at once, fetching those pages on demand (docs/migration.md, "Postcopy"). The
 * capability postcopy-ram must be on at both sides, and the main channel a socket; a job that
 * converges by precopy first completes as a precopy one.
 * Errors: -EINVAL (ctx NULL, capability off, no outgoing job in status active or setup).
 * Any thread.
 */
CPR_API int cpr_migrate_start_postcopy(cpr_ctx *ctx, cpr_error **errp);

/*
 * Since 1.2, postcopy recovery, the destination's half (QMP migrate-recover): listens on `uri`
 * (unix: or tcp:) before it returns, for the source of the incoming job that is in
 * postcopy-paused; the job accepts one connection there, which must come from that same
 * source (its first message names its RAM block table; another is closed, the job stays
 * paused and a new cpr_migrate_recover() is needed), and goes back to postcopy-active: the
 * vCPUs' faults and the background fill ask again for every page still missing. The listener
 * is gone once a connection was accepted, or the job ends.
 * Errors (nothing changes): -EINVAL (ctx or uri NULL, a transport other than unix/tcp, no
 * incoming job in postcopy-paused), -EBUSY (in postcopy-recover: an earlier call's listener
 * still waits for the source or checks its connection: one listener at a time), the
 * listener's (bind: naming the address). Any thread but the library's callbacks.
 */
CPR_API int cpr_migrate_recover(cpr_ctx *ctx, const char *uri, cpr_error **errp);

/*
 * Since 1.2, postcopy recovery, the source's half (QMP `migrate` with resume=true, HMP
 * `migrate -r`): the outgoing job in postcopy-paused connects to `uri` (unix: or tcp:; where
 * the destination's cpr_migrate_recover() listens), says which migration it is, goes back to
 * postcopy-active and serves the pages asked again. Both calls set postcopy-recover before they
 * return, until the new connection is taken. Returns once the job has the address; a
 * connection that fails leaves the job in postcopy-paused (error-desc says why): call again.
 * Only the same destination process can take the guest back: a new one has no paused job to
 * recover. Errors (nothing changes): -EINVAL (ctx or uri NULL, a transport other than
 * unix/tcp, no outgoing job in postcopy-paused), -EBUSY (an earlier call's connection is
 * still under way).
 * Any thread but the library's callbacks.
 */
CPR_API int cpr_migrate_resume(cpr_ctx *ctx, const char *uri, cpr_error **errp);

/*
 * Since 1.2, QMP migrate-pause (HMP migrate_pause), on either side of a job in
 * postcopy-active: breaks its migration channel on purpose, as a cut link would. Both sides go
 * postcopy-paused (this one with error-desc naming migrate-pause, the other on the channel's
 * end); nothing is lost: the source keeps every page it has not sent, the destination's vCPUs
 * that touch a missing page stay blocked. cpr_migrate_recover() and cpr_migrate_resume() carry
 * on, as after a cut. In postcopy-recover it ends the recovery under way (a connection taken
 * meanwhile is shut down): postcopy-paused again. Returns once the channel is shut down (or
 * the recovery told); the status changes on the job's thread (the MIGRATION status callback
 * says when).
 * Errors (nothing changes): -EINVAL (ctx NULL; no job in postcopy-active or postcopy-recover,
 * naming the status), -EBUSY (a source whose destination has not yet acknowledged the switch:
 * try again). Any thread but the library's callbacks.
 */
CPR_API int cpr_migrate_pause(cpr_ctx *ctx, cpr_error **errp);

/*
 * Waits for the current or last job (outgoing or incoming) to end and returns its result: 0
 * completed, -ECANCELED cancelled, otherwise the failure with a copy of its error. Returns 0 at
 * once when no job was ever started.
 */
CPR_API int cpr_migrate_wait(cpr_ctx *ctx, cpr_error **errp);

/* ---- incoming ---------------------------------------------------------------------------- */

/*
 * The early step of a new process, called before it creates devices or opens monitors.
 * When `channels` has a cpr channel (cpr-transfer), listens on it, accepts the old process,
 * and receives its cpr state: the named fds and RAM blocks become available through cpr/fd.h
 * and cpr/ram.h. The channel stays open: the old process waits for its hang-up, which
 * cpr_incoming_start() gives once the main channel listens. When the process was started by
 * cpr-exec, adopts the state the old image left instead (channels may be NULL), telling the
 * old image's rollback guardian first; the incoming job's commit (the stream loaded, right
 * before start) dismisses it, a failed incoming job or the process's end before that makes it
 * exec the previous image back (docs/cpr-channel.md, "Rollback"): load with
 * cpr_incoming_start*() after it. Since 1.2, when `channels` has a main channel that is a
 * file, cpr-exec also starts checking that file's schema record on a library thread, beside
 * the VMM's set-up; the load uses the result only for the same bytes (docs/migration.md).
 * Returns the mode the process was started for: CPR_MODE_CPR_TRANSFER or CPR_MODE_CPR_EXEC
 * when cpr state was loaded (and sets the `mode` parameter to it), otherwise the `mode`
 * parameter unchanged. Errors: the channel's, or a corrupt cpr state (-EBADMSG).
 * Ordering: the wait for the old process is bounded by the cpr-transfer-accept-timeout
 * parameter (cpr/params.h; 0, the default, waits forever): on timeout -ETIMEDOUT, naming the
 * parameter, with nothing loaded and the socket removed. The old process may migrate before
 * this call listens: its cpr_migrate_channels() waits up to cpr-transfer-connect-timeout.
 */
CPR_API int cpr_incoming_cpr_load(cpr_ctx *ctx, const cpr_channels *channels, cpr_error **errp);

/*
 * `-incoming defer`: the run state becomes inmigrate and the process waits for
 * cpr_incoming_start(). -EBUSY when a job runs.
 */
CPR_API int cpr_incoming_defer(cpr_ctx *ctx, cpr_error **errp);

/* Flags for cpr_incoming_start(). */
#define CPR_INCOMING_DETACH 0x1u /* return once listening; load on a library thread */
#define CPR_INCOMING_PAUSED 0x2u /* after the load, leave the guest paused (QEMU -S) */

/*
 * Starts the incoming side on the main channel of `channels` (a cpr channel in it is ignored:
 * it is read by cpr_incoming_cpr_load()). Socket channels are listened on before this call
 * returns, and the cpr channel, if one was read, is then hung up so that the old process
 * proceeds. The stream is loaded in full, sections' post_load run only once the whole stream
 * checked out, then the VMM's prepare hook; then the destination commits (on a socket, the
 * acknowledgement to the source), the guest starts (unless CPR_INCOMING_PAUSED) and status is
 * completed. On a failure before the commit status is failed, the run state stays inmigrate,
 * the guest is not started and (on a socket) the source is told so and resumes. A start hook
 * that fails after the commit fails the job too, but the run state is then paused: the guest
 * is this side's (docs/migration.md).
 * Without CPR_INCOMING_DETACH returns when the job ends, as cpr_migrate_wait() does.
 * Errors: -EBUSY when a job runs; the channel's errors.
 */
CPR_API int cpr_incoming_start(cpr_ctx *ctx, const cpr_channels *channels, unsigned int flags,
                               cpr_error **errp);

/* As cpr_incoming_start() with a main channel parsed from a URI. */
CPR_API int cpr_incoming_start_uri(cpr_ctx *ctx, const char *uri, unsigned int flags,
                                   cpr_error **errp);

/* ---- query ------------------------------------------------------------------------------- */

/*
 * Statistics of the current or last job. The caller sets `size` to sizeof(cpr_migration_info);
 * the library fills what fits and leaves the rest. Times are in milliseconds, -1 when not
 * known (yet). Byte counts are of the main channel as the stream counted them.
 */
typedef struct cpr_migration_info {
    uint32_t size;
    int32_t status;           /* cpr_migration_status */
    int32_t runstate;         /* cpr_runstate */
    int32_t mode;             /* cpr_mode of the job */
    int32_t incoming;         /* 1 for an incoming job */
    int32_t reserved;
    int64_t total_time_ms;    /* from start to end (or to now while running) */
    int64_t setup_time_ms;    /* from start to active */
    int64_t downtime_ms;      /* guest stopped by the library until the job ended */
    int64_t expected_downtime_ms;
    uint64_t transferred;     /* bytes written (outgoing) or read (incoming) on main; since
                               * 1.2, outgoing, plus the multifd channels' bytes and the
                               * mapped-ram pages written */
    uint64_t remaining;       /* RAM bytes still dirty */
    uint64_t total;           /* RAM bytes that migrate */
    uint64_t duplicate;       /* zero pages, sent without data */
    uint64_t normal;          /* pages sent with data */
    uint64_t normal_bytes;
    uint64_t page_size;
    uint64_t dirty_pages_rate; /* pages dirtied per second, last pass */
    uint64_t dirty_sync_count; /* passes over the dirty bitmaps */
    uint64_t bandwidth;       /* bytes per second measured, last pass */
    uint64_t precopy_bytes;   /* bytes sent while the guest ran */
    uint64_t downtime_bytes;  /* bytes sent while it was stopped */
    uint64_t cpr_fds;         /* fds sent (or received) as cpr state */
    /* Since 1.2, postcopy (0 otherwise). Outgoing: page requests served; incoming: sent. */
    uint64_t postcopy_requests;
    uint64_t postcopy_fault_pages;  /* incoming: pages fetched for a vCPU's fault */
    uint64_t postcopy_pushed_pages; /* incoming: pages fetched in the background, in order */
    /* Since 1.2, incoming postcopy: threads (vCPUs, the VMM's) blocked on a missing page, each
     * from the fault server's read of its fault to the placing of its page, in microseconds. */
    uint64_t postcopy_blocktime_us; /* the sum over the stalls that ended */
    uint64_t postcopy_max_stall_us; /* the longest of them */
} cpr_migration_info;

/* Sets `size` and zeroes the rest, as C (CPR_MIGRATION_INFO_INIT) or as a function (since 1.2). */
#define CPR_MIGRATION_INFO_INIT { .size = sizeof(cpr_migration_info) }
/* Sets info->size to sizeof(cpr_migration_info), the rest to 0. NULL is ignored. Any thread. */
CPR_API void cpr_migration_info_init(cpr_migration_info *info);

/* Fills *info (see above). -EINVAL when info is NULL or info->size is 0. */
CPR_API int cpr_migrate_query(cpr_ctx *ctx, cpr_migration_info *info, cpr_error **errp);

/* The failure of the current or last job, a new string for cpr_free(), or NULL when none. */
CPR_API char *cpr_migrate_error_desc(cpr_ctx *ctx);

/*
 * query-migrate as QMP returns it: {"status": ..., "total-time": ..., "setup-time": ...,
 * "downtime": ..., "expected-downtime": ..., "ram": {"transferred", "remaining", "total",
 * "duplicate", "normal", "normal-bytes", "page-size", "mbps", "dirty-pages-rate",
 * "dirty-sync-count", "precopy-bytes", "downtime-bytes"}, "error-desc": ...,
 * "blocked-reasons": [...]}; members that do not apply are left out ("{}" before any job).
 * Since 1.2, a postcopy destination adds "postcopy-blocktime" (ms, rounded up) and
 * "x-postcopy-worst-stall-us" (cpr_migration_info's postcopy_blocktime_us, _max_stall_us).
 * On success *out is a new string for cpr_free().
 */
CPR_API int cpr_migrate_query_json(cpr_ctx *ctx, char **out, cpr_error **errp);

CPR_END_DECLS

#endif /* CPR_MIGRATE_H */
