/* SPDX-License-Identifier: MIT */
/*
 * Migration glue: the VM hooks libcpr calls on its job thread, the status callback that turns
 * into QMP MIGRATION events and resumes a waiting HMP, and the monitor commands.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devices.h"
#include "fault.h"
#include "hmp.h"
#include "migration.h"
#include "pause.h"
#include "tls_objects.h"

struct vmm_mig {
    cpr_channels *incoming; /* -incoming, main and cpr merged; NULL without -incoming */
    int defer;              /* -incoming defer */
    int out_active;         /* an outgoing job has not reached a final status */
    int in_active;          /* an incoming job has not reached a final status */
    int incoming_started;   /* migrate-incoming (or a non-deferred -incoming) ran */
    int holding;            /* the main loop is held for the switchover (vmm_main_hold) */
    int postcopy_in;        /* an incoming job went postcopy-active: the start lets main go */
    char *last_error;
    int last_status;
};

/* ---- VM hooks: job thread ------------------------------------------------------------- */

/* From the stop (outgoing) or the connection (incoming) to the end of the job, the main loop
 * waits: its wake-ups, and the monitor client's, would take CPU from the switchover. Job thread. */
static void hold_main(vmm *v)
{
    if (!__atomic_exchange_n(&v->mig->holding, 1, __ATOMIC_ACQ_REL))
        vmm_main_hold(v);
}

static void release_main(vmm *v)
{
    if (__atomic_exchange_n(&v->mig->holding, 0, __ATOMIC_ACQ_REL))
        vmm_main_release(v);
}

static int hook_stop(cpr_ctx *ctx, void *opaque)
{
    vmm *v = opaque;
    cpr_error *cerr = NULL;
    vmm_fault(VMM_FAULT_SAVE_STOP);
    vmm_trace("stop hook");
    hold_main(v);
    vmm_pause_arm(v);
    int r = vmm_machine_pause(v, &cerr);
    vmm_trace("vCPUs stopped");
    if (r == 0)
        cpr_trace_mark(v->ctx, "vcpus-out");
    if (r < 0) {
        vmm_log_cpr("stop", cerr);
    }
    return r;
}

static int hook_start(cpr_ctx *ctx, void *opaque)
{
    vmm *v = opaque;
    cpr_error *cerr = NULL;
    if (v->cfg->incoming->len)
        vmm_fault(VMM_FAULT_START);
    vmm_trace("start hook");
    vmm_pause_before_resume(v);
    int r = vmm_machine_unpause(v, &cerr);
    vmm_trace("vCPUs resumed");
    if (r < 0) {
        vmm_log_cpr("start", cerr);
        return r;
    }
    /* Back to the library once a vCPU is on its way in: its acknowledgement, sent after this
     * hook in cpr-transfer, then wakes the old VMM after the guest runs, not before. */
    if (v->machine)
        vmm_machine_wait_entered(v->machine, 5000000);
    vmm_pause_resumed(v);
    /* Postcopy: the guest's switch is over once it runs here, though the job goes on while
     * pages come: its events (postcopy-active) and the monitor are due now, not at its end. */
    if (__atomic_exchange_n(&v->mig->postcopy_in, 0, __ATOMIC_ACQ_REL))
        release_main(v);
    return 0;
}

/* Destination, before the commit: everything that could stop the guest from running here. The
 * vCPU state was set by the sections' post_load; what is left is whether the machine can run
 * it (its mailbox in RAM, live vCPUs). After this, hook_start has nothing left that can fail. */
static int hook_prepare(cpr_ctx *ctx, void *opaque, cpr_error **errp)
{
    vmm *v = opaque;
    vmm_trace("prepare hook");
    int r = vmm_fault_fail(VMM_FAULT_PREPARE); /* the library says "prepare hook failed" */
    if (r < 0)
        return r;
    r = vmm_machine_check_resume(v->machine, errp);
    if (r < 0) /* the error stays the library's: it reports it as the job's */
        g_printerr("cpr-vmm: prepare: %s\n", errp && *errp ? cpr_error_message(*errp) : "failed");
    return r;
}

static int hook_is_running(cpr_ctx *ctx, void *opaque)
{
    return vmm_vm_running(opaque);
}

static int hook_flush(cpr_ctx *ctx, void *opaque)
{
    return vmm_devices_flush(opaque);
}

/* Dirty logging for precopy: KVM's log (or the software backend's) merged into the RAM
 * block's bitmap, which libcpr's RAM section walks. */
static int hook_dirty_log_start(cpr_ctx *ctx, void *opaque)
{
    vmm *v = opaque;
    cpr_error *cerr = NULL;
    int r = vmm_machine_dirty_log_start(v->machine, &cerr);
    if (r < 0) {
        vmm_log_cpr("dirty log", cerr);
    }
    return r;
}

static int hook_dirty_log_sync(cpr_ctx *ctx, void *opaque)
{
    vmm *v = opaque;
    uint64_t npages = v->ram_size / VMM_PAGE_SIZE;
    size_t nwords = (size_t)((npages + 63) / 64);
    g_autofree uint64_t *bitmap = g_new0(uint64_t, nwords);
    cpr_error *cerr = NULL;
    int r = vmm_machine_dirty_log_sync(v->machine, bitmap, nwords, &cerr);
    if (r >= 0)
        r = cpr_ram_dirty_merge(v->ram_block, 0, bitmap, npages, &cerr);
    if (r < 0) {
        vmm_log_cpr("dirty log sync", cerr);
        return r;
    }
    return 0;
}

static int hook_dirty_log_stop(cpr_ctx *ctx, void *opaque)
{
    vmm *v = opaque;
    return vmm_machine_dirty_log_stop(v->machine, NULL);
}

/* ---- status: job thread, then main loop ----------------------------------------------- */

typedef struct status_call {
    vmm *v;
    int status;
    gint64 when; /* g_get_real_time() of the change */
    char *message; /* the lazy restore's end only */
} status_call;

static int status_final(int st)
{
    return st == CPR_MIGRATION_COMPLETED || st == CPR_MIGRATION_FAILED ||
           st == CPR_MIGRATION_CANCELLED;
}

static void status_on_main(void *p)
{
    status_call *c = p;
    vmm *v = c->v;
    vmm_mig *m = v->mig;
    if (status_final(c->status)) {
        if (c->status == CPR_MIGRATION_COMPLETED && m->out_active)
            vmm_pause_completed(v);
        else if (m->out_active)
            vmm_teardown_release(v); /* the guest resumes here: no exit follows */
        /* One job at a time per context: whichever side was active has ended. */
        m->in_active = 0;
        m->out_active = 0;
        g_free(m->last_error);
        m->last_error = c->status == CPR_MIGRATION_COMPLETED ? NULL : cpr_migrate_error_desc(v->ctx);
        if (c->status == CPR_MIGRATION_CANCELLED && !m->last_error)
            m->last_error = g_strdup("migration was cancelled");
    }
    m->last_status = c->status;
    json_object *data = json_object_new_object();
    json_object_object_add(data, "status", json_object_new_string(cpr_migration_status_name(c->status)));
    vmm_event_at(v, "MIGRATION", data, c->when);
    hmp_migration_changed(v->hmp);
    g_free(c);
}

static void on_status(cpr_ctx *ctx, int status, void *opaque)
{
    vmm_trace("migration status %s", cpr_migration_status_name(status));
    vmm *v = opaque;
    if (status == CPR_MIGRATION_ACTIVE && v->mig->in_active)
        hold_main(v);
    /* The guest runs here while pages are fetched: record how long it stalls, until the end. */
    if (status == CPR_MIGRATION_POSTCOPY_ACTIVE && v->mig->in_active) {
        vmm_pause_stalls_record(v, 1);
        __atomic_store_n(&v->mig->postcopy_in, 1, __ATOMIC_RELEASE);
    } else if (status_final(status) && v->mig->in_active)
        vmm_pause_stalls_record(v, 0);
    status_call *c = g_new(status_call, 1);
    c->v = v;
    c->status = status;
    c->when = g_get_real_time();
    if (status_final(status))
        __atomic_store_n(&v->mig->postcopy_in, 0, __ATOMIC_RELEASE);
    /* A paused postcopy has no switchover left to speed up, and its operator must hear of it
     * (the MIGRATION event) and be able to act at once. */
    if (status == CPR_MIGRATION_POSTCOPY_PAUSED)
        release_main(v);
    vmm_call_main(v, status_on_main, c);
    /* The source's guest is stopped for good at postcopy-active, and the job may go on for
     * long (every page the destination fetches): the operator hears of it now. */
    if (status == CPR_MIGRATION_POSTCOPY_ACTIVE && v->mig->out_active)
        release_main(v);
    if (status_final(status))
        release_main(v);
}

/* ---- set-up --------------------------------------------------------------------------- */

/* The lazy restore's end, on a library thread: an event for the monitor (QMP
 * LAZY_RESTORE), and a line on stderr when it failed, since the guest may now hang on the
 * pages that never came. */
static void lazy_on_main(void *opaque)
{
    status_call *c = opaque;
    json_object *d = json_object_new_object();
    json_object_object_add(d, "status", json_object_new_string(c->status == 0 ? "completed" : "failed"));
    if (c->status != 0)
        json_object_object_add(d, "error-desc", json_object_new_string(c->message));
    vmm_event_at(c->v, "LAZY_RESTORE", d, c->when);
    g_free(c->message);
    g_free(c);
}

static void on_lazy_restore(void *opaque, int code, const char *message)
{
    vmm *v = opaque;
    if (code < 0)
        fprintf(stderr, "cpr-vmm: %s\n", message);
    status_call *c = g_new0(status_call, 1);
    c->v = v;
    c->status = code;
    c->message = g_strdup(message);
    c->when = g_get_real_time();
    vmm_call_main(v, lazy_on_main, c);
}

int vmm_mig_init(vmm *v, char **err)
{
    v->mig = g_new0(vmm_mig, 1);
    cpr_vm_ops ops = {
        .size = sizeof(ops),
        .stop = hook_stop,
        .start = hook_start,
        .prepare = hook_prepare,
        .is_running = hook_is_running,
        .flush = hook_flush,
        .dirty_log_start = hook_dirty_log_start,
        .dirty_log_sync = hook_dirty_log_sync,
        .dirty_log_stop = hook_dirty_log_stop,
    };
    cpr_error *cerr = NULL;
    if (cpr_migrate_set_vm_ops(v->ctx, &ops, v, &cerr) < 0 ||
        cpr_migrate_set_status_cb(v->ctx, on_status, v, &cerr) < 0 ||
        cpr_lazy_restore_set_event_cb(v->ctx, on_lazy_restore, v) < 0) {
        return vmm_fail_cpr(err, "libcpr", cerr);
    }
    return 0;
}

void vmm_mig_fini(vmm *v)
{
    if (!v->mig)
        return;
    /* A job still running holds hooks into this VMM: end it before the machine goes. */
    if (v->ctx) {
        cpr_migrate_cancel(v->ctx, NULL);
        cpr_migrate_wait(v->ctx, NULL);
        cpr_migrate_set_status_cb(v->ctx, NULL, NULL, NULL);
        cpr_lazy_restore_set_event_cb(v->ctx, NULL, NULL);
    }
    cpr_channels_free(v->mig->incoming);
    g_free(v->mig->last_error);
    g_free(v->mig);
    v->mig = NULL;
}

/* Parses one -incoming argument (a URI or a JSON channel) into a channel list. */
static int parse_channel_arg(const char *arg, cpr_channels **out, cpr_error **cerr)
{
    if (arg[0] == '{' || arg[0] == '[')
        return cpr_channels_parse_json(arg, out, cerr);
    return cpr_channels_from_uri(arg, out, cerr);
}

/* -global migration.NAME=VALUE: a capability when the library knows one by that name (on or
 * off), else a parameter; before the cpr channel is read, whose wait is a parameter. */
static int apply_globals(vmm *v, char **err)
{
    GPtrArray *g = v->cfg->globals;
    for (guint i = 0; i < g->len; i++) {
        g_auto(GStrv) nv = g_strsplit(g->pdata[i], "=", 2);
        cpr_error *cerr = NULL;
        int r;
        if (cpr_cap_get(v->ctx, nv[0], NULL) >= 0) {
            int on = !strcmp(nv[1], "on") || !strcmp(nv[1], "true");
            if (!on && strcmp(nv[1], "off") && strcmp(nv[1], "false")) {
                *err = g_strdup_printf("-global migration.%s: capability wants on or off", (char *)g->pdata[i]);
                return -1;
            }
            r = cpr_cap_set(v->ctx, nv[0], on, &cerr);
        } else {
            r = cpr_param_set(v->ctx, nv[0], nv[1], &cerr);
        }
        if (r < 0) {
            g_autofree char *what = g_strdup_printf("-global migration.%s", (char *)g->pdata[i]);
            return vmm_fail_cpr(err, what, cerr);
        }
    }
    return 0;
}

int vmm_mig_incoming_early(vmm *v, char **err)
{
    vmm_mig *m = v->mig;
    GPtrArray *inc = v->cfg->incoming;
    /* Objects first: a -global migration.tls-creds names one. */
    if (vmm_tls_objs_create(v, err) < 0 || apply_globals(v, err) < 0)
        return -1;
    if (!inc->len)
        return 0;
    cpr_error *cerr = NULL;
    for (guint i = 0; i < inc->len; i++) {
        const char *arg = inc->pdata[i];
        if (!strcmp(arg, "defer")) {
            m->defer = 1;
            continue;
        }
        cpr_channels *ch = NULL;
        if (parse_channel_arg(arg, &ch, &cerr) < 0 ||
            (m->incoming && cpr_channels_merge(m->incoming, ch, &cerr) < 0)) {
            *err = g_strdup_printf("-incoming %s: %s", arg, cpr_error_message(cerr));
            cpr_error_free(cerr);
            cpr_channels_free(ch);
            return -1;
        }
        if (!m->incoming)
            m->incoming = ch;
        else
            cpr_channels_free(ch);
    }
    /* cpr-transfer: the cpr channel brings RAM and device fds, before anything is created.
     * cpr-exec: the state the old image left. Otherwise nothing happens here. */
    vmm_fault(VMM_FAULT_CPR_READ);
    int mode = cpr_incoming_cpr_load(v->ctx, m->incoming, &cerr);
    if (mode < 0)
        return vmm_fail_cpr(err, "cpr state", cerr);
    v->incoming_mode = (cpr_mode)mode;
    vmm_fault(VMM_FAULT_CPR_LOADED);
    return 0;
}

static int start_incoming(vmm *v, const cpr_channels *ch, cpr_error **cerr)
{
    vmm_mig *m = v->mig;
    unsigned int flags = CPR_INCOMING_DETACH | (v->cfg->start_paused ? CPR_INCOMING_PAUSED : 0);
    m->in_active = 1;
    m->incoming_started = 1;
    g_free(m->last_error);
    m->last_error = NULL;
    int r = cpr_incoming_start(v->ctx, ch, flags, cerr);
    if (r < 0) {
        m->in_active = 0;
        m->incoming_started = 0;
    }
    return r;
}

int vmm_mig_incoming_late(vmm *v, char **err)
{
    vmm_mig *m = v->mig;
    cpr_error *cerr = NULL;
    int r;
    if (m->defer || !m->incoming || !cpr_channels_get(m->incoming, CPR_CHANNEL_MAIN))
        r = cpr_incoming_defer(v->ctx, &cerr);
    else
        r = start_incoming(v, m->incoming, &cerr);
    if (r < 0) {
        return vmm_fail_cpr(err, "-incoming", cerr);
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------------------- */

/* Reads "uri" or "channels" from QMP arguments into a channel list. */
static int args_channels(json_object *args, cpr_channels **out, mon_error *err)
{
    json_object *uri = json_object_object_get(args, "uri");
    json_object *chans = json_object_object_get(args, "channels");
    cpr_error *cerr = NULL;
    if (uri && chans)
        return mon_fail(err, "GenericError", "'uri' and 'channels' are mutually exclusive");
    if (uri) {
        if (!json_object_is_type(uri, json_type_string))
            return mon_fail(err, "GenericError", "Invalid parameter type for 'uri', expected: string");
        if (cpr_channels_from_uri(json_object_get_string(uri), out, &cerr) < 0)
            return mon_fail_cpr(err, cerr);
        return 0;
    }
    if (chans) {
        const char *js = json_object_to_json_string_ext(chans, JSON_C_TO_STRING_PLAIN);
        if (cpr_channels_parse_json(js, out, &cerr) < 0)
            return mon_fail_cpr(err, cerr);
        return 0;
    }
    return mon_fail(err, "GenericError", "One of 'uri' or 'channels' is required");
}

/* Postcopy recovery: `migrate` resume=true (the source) or migrate-recover (the destination)
 * on the "uri" of args. */
static int postcopy_recovery(vmm *v, json_object *args, const char *cmd,
                             int (*fn)(cpr_ctx *, const char *, cpr_error **), mon_error *err)
{
    json_object *uri = json_object_object_get(args, "uri");
    if (!uri || !json_object_is_type(uri, json_type_string))
        return mon_fail(err, "GenericError", "%s takes a 'uri'", cmd);
    cpr_error *cerr = NULL;
    if (fn(v->ctx, json_object_get_string(uri), &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    return 0;
}

int vmm_mig_recover(vmm *v, json_object *args, mon_error *err)
{
    return postcopy_recovery(v, args, "migrate-recover", cpr_migrate_recover, err);
}

int vmm_mig_migrate(vmm *v, json_object *args, mon_error *err)
{
    vmm_mig *m = v->mig;
    if (json_object_get_boolean(json_object_object_get(args, "resume")))
        return postcopy_recovery(v, args, "migrate resume=true", cpr_migrate_resume, err);
    /* Before anything of a running job is touched (its teardown helper, out_active). */
    if (m->out_active)
        return mon_fail(err, "GenericError", "There's a migration process in progress");
    cpr_channels *ch = NULL;
    if (args_channels(args, &ch, err) < 0)
        return -1;
    cpr_error *cerr = NULL;
    if (!m->in_active && dev_cpu_prepare_save(v, &cerr) < 0) {
        cpr_channels_free(ch);
        return mon_fail_cpr(err, cerr);
    }
    cpr_trace_mark(v->ctx, "migrate-requested");
    if (cpr_get_mode(v->ctx) == CPR_MODE_CPR_REBOOT)
        vmm_teardown_early(v); /* before the job starts: it stops the guest first thing */
    m->out_active = 1;
    g_free(m->last_error);
    m->last_error = NULL;
    int r = cpr_migrate_channels(v->ctx, ch, CPR_MIGRATE_DETACH, &cerr);
    cpr_channels_free(ch);
    if (r < 0) {
        vmm_teardown_release(v);
        m->out_active = 0;
        return mon_fail_cpr(err, cerr);
    }
    return 0;
}

int vmm_mig_incoming(vmm *v, json_object *args, mon_error *err)
{
    vmm_mig *m = v->mig;
    if (!v->cfg->incoming->len)
        return mon_fail(err, "GenericError",
                        "'-incoming' was not specified on the command line");
    if (m->incoming_started)
        return mon_fail(err, "GenericError", "The incoming migration has already been started");
    cpr_channels *ch = NULL;
    if (args_channels(args, &ch, err) < 0)
        return -1;
    if (cpr_channels_get(ch, CPR_CHANNEL_CPR)) {
        cpr_channels_free(ch);
        return mon_fail(err, "GenericError",
                        "a cpr channel can only be given to -incoming on the command line");
    }
    cpr_error *cerr = NULL;
    int r = start_incoming(v, ch, &cerr);
    cpr_channels_free(ch);
    return r < 0 ? mon_fail_cpr(err, cerr) : 0;
}

int vmm_mig_cancel(vmm *v, mon_error *err)
{
    cpr_error *cerr = NULL;
    if (cpr_migrate_cancel(v->ctx, &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    return 0;
}

/* query-migrate's "lazy-restore" member (memory-restore-mode=ondemand): our extension, as
 * Cloud Hypervisor has no query of its own for it. NULL before any lazy restore. */
static json_object *lazy_restore_json(vmm *v)
{
    cpr_lazy_restore_info i;
    cpr_lazy_restore_info_init(&i);
    cpr_error *cerr = NULL;
    if (cpr_lazy_restore_query(v->ctx, &i, &cerr) < 0 || !i.active) {
        cpr_error_free(cerr);
        return NULL;
    }
    json_object *o = json_object_new_object();
    const char *st = i.error ? "failed" : i.complete_us ? "completed" : "active";
    json_object_object_add(o, "status", json_object_new_string(st));
    json_object_object_add(o, "total-pages", json_object_new_int64((int64_t)i.pages_total));
    json_object_object_add(o, "resident-pages", json_object_new_int64((int64_t)i.pages_resident));
    json_object_object_add(o, "fault-pages", json_object_new_int64((int64_t)i.fault_pages));
    if (i.complete_us)
        json_object_object_add(o, "fill-time-ms",
                               json_object_new_double((double)(i.complete_us - i.serve_start_us) / 1e3));
    if (cerr)
        json_object_object_add(o, "error-desc", json_object_new_string(cpr_error_message(cerr)));
    cpr_error_free(cerr);
    return o;
}

int vmm_mig_start_postcopy(vmm *v, mon_error *err)
{
    cpr_error *cerr = NULL;
    if (cpr_migrate_start_postcopy(v->ctx, &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    return 0;
}

json_object *vmm_mig_query(vmm *v)
{
    char *s = NULL;
    json_object *o = NULL;
    if (cpr_migrate_query_json(v->ctx, &s, NULL) == 0)
        o = json_tokener_parse(s);
    cpr_free(s);
    if (!o)
        o = json_object_new_object();
    json_object *lazy = lazy_restore_json(v);
    if (lazy)
        json_object_object_add(o, "lazy-restore", lazy);
    return o;
}

int vmm_mig_out_active(vmm *v)
{
    return v->mig->out_active;
}

int vmm_mig_in_active(vmm *v)
{
    return v->mig->in_active;
}

const char *vmm_mig_last_error(vmm *v)
{
    return v->mig->last_error;
}
