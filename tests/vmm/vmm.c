/* SPDX-License-Identifier: MIT */
/*
 * cpr-vmm: the reference VMM. It wires the machine core (tests/vmm/machine) to libcpr: guest
 * RAM is a libcpr RAM block, devices and vCPUs are sections, the VM hooks stop and start the
 * machine, and the monitors (QMP, HMP) drive migrations through one command table.
 *
 * Start-up order follows QEMU's: parse the command line, read a cpr channel (cpr-transfer) or
 * the state a cpr-exec left, create RAM (re-attached when preserved), the machine and the
 * devices, then open the monitors, then start the incoming migration or boot the guest.
 */
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib-unix.h>

#include "devices.h"
#include "hmp.h"
#include "migration.h"
#include "pause.h"
#include "qmp.h"
#include "vmm.h"

static const char *const runstate_names[] = {
    [VMM_RS_PRELAUNCH] = "prelaunch",
    [VMM_RS_RUNNING] = "running",
    [VMM_RS_PAUSED] = "paused",
    [VMM_RS_INMIGRATE] = "inmigrate",
    [VMM_RS_POSTMIGRATE] = "postmigrate",
    [VMM_RS_FINISH_MIGRATE] = "finish-migrate",
    [VMM_RS_SHUTDOWN] = "shutdown",
};

const char *vmm_runstate_name(vmm_runstate rs)
{
    return (unsigned)rs < G_N_ELEMENTS(runstate_names) ? runstate_names[rs] : "unknown";
}

/* ---- calls onto the main loop ---------------------------------------------------------- */

typedef struct main_call {
    void (*fn)(void *opaque);
    void *opaque;
} main_call;

static gboolean main_call_run(gpointer p)
{
    main_call *c = p;
    c->fn(c->opaque);
    return G_SOURCE_REMOVE;
}

void vmm_call_main(vmm *v, void (*fn)(void *opaque), void *opaque)
{
    main_call *c = g_new(main_call, 1);
    c->fn = fn;
    c->opaque = opaque;
    g_mutex_lock(&v->lock);
    int hold = v->main_hold;
    if (hold)
        g_ptr_array_add(v->held_calls, c);
    g_mutex_unlock(&v->lock);
    if (!hold)
        g_idle_add_full(G_PRIORITY_HIGH, main_call_run, c, g_free);
}

void vmm_main_hold(vmm *v)
{
    g_mutex_lock(&v->lock);
    if (!v->held_calls)
        v->held_calls = g_ptr_array_new();
    v->main_hold++;
    g_mutex_unlock(&v->lock);
}

void vmm_main_release(vmm *v)
{
    g_mutex_lock(&v->lock);
    g_autoptr(GPtrArray) calls = NULL;
    if (v->main_hold > 0 && --v->main_hold == 0 && v->held_calls->len) {
        calls = v->held_calls;
        v->held_calls = g_ptr_array_new();
    }
    g_mutex_unlock(&v->lock);
    for (guint i = 0; calls && i < calls->len; i++)
        g_idle_add_full(G_PRIORITY_HIGH, main_call_run, calls->pdata[i], g_free);
}

int vmm_fail_cpr(char **err, const char *what, cpr_error *cerr)
{
    *err = g_strdup_printf("%s: %s", what, cpr_error_message(cerr));
    cpr_error_free(cerr);
    return -1;
}

void vmm_trace(const char *fmt, ...)
{
    static int on = -1;
    if (on < 0)
        on = getenv("CPR_VMM_TRACE") != NULL;
    if (!on)
        return;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    /* CLOCK_MONOTONIC is one clock for every process on the host: traces of the old and the
     * new VMM line up. */
    g_printerr("cpr-vmm[%d] %.3f ms: %s\n", (int)getpid(), (double)vmm_now_ns() / 1e6, msg);
}

void vmm_log_cpr(const char *what, cpr_error *cerr)
{
    g_printerr("cpr-vmm: %s: %s\n", what, cpr_error_message(cerr));
    cpr_error_free(cerr);
}

int vmm_write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- events --------------------------------------------------------------------------- */

void vmm_event_at(vmm *v, const char *name, json_object *data, int64_t when)
{
    qmp_server_event_at(v->qmp, name, data, when);
    json_object_put(data);
}

void vmm_event(vmm *v, const char *name, json_object *data)
{
    vmm_event_at(v, name, data, g_get_real_time());
}

typedef struct event_call {
    vmm *v;
    char *name;
    gint64 when; /* g_get_real_time() when it happened */
} event_call;

static void event_on_main(void *p)
{
    event_call *e = p;
    vmm_event_at(e->v, e->name, NULL, e->when);
    g_free(e->name);
    g_free(e);
}

/* STOP and RESUME may come from the migration thread: send them from the main loop. */
static void post_event(vmm *v, const char *name)
{
    event_call *e = g_new(event_call, 1);
    e->v = v;
    e->name = g_strdup(name);
    e->when = g_get_real_time();
    vmm_call_main(v, event_on_main, e);
}

/* ---- run control ---------------------------------------------------------------------- */

int vmm_vm_running(vmm *v)
{
    return v->machine && vmm_machine_running(v->machine);
}

/* Stops the vCPUs; any thread. Returns 0 or a negative errno with *cerr. */
int vmm_machine_pause(vmm *v, cpr_error **cerr)
{
    g_mutex_lock(&v->lock);
    int was = vmm_vm_running(v);
    int r = v->machine ? vmm_machine_stop(v->machine, cerr) : 0;
    g_mutex_unlock(&v->lock);
    if (r == 0 && was)
        post_event(v, "STOP");
    return r;
}

/* Lets the vCPUs run; any thread. */
int vmm_machine_unpause(vmm *v, cpr_error **cerr)
{
    g_mutex_lock(&v->lock);
    int was = vmm_vm_running(v);
    int r = 0;
    if (v->machine && !v->booted) {
        r = vmm_machine_boot(v->machine, cerr);
        v->booted = r == 0;
    } else if (v->machine) {
        r = vmm_machine_resume(v->machine, cerr);
    }
    if (r == 0)
        v->prelaunch = 0;
    g_mutex_unlock(&v->lock);
    if (r == 0 && !was)
        post_event(v, "RESUME");
    return r;
}

int vmm_vm_stop(vmm *v, mon_error *err)
{
    cpr_error *cerr = NULL;
    if (vmm_machine_pause(v, &cerr) < 0)
        return mon_fail_cpr(err, cerr);
    return 0;
}

/*
 * A cpr-reboot save is about to start: a quit will follow it, and the restart waits for this
 * process's exit. The teardown helper starts now, while the guest still runs, on the main
 * thread (the one that exits): neither its start (milliseconds: a clone that walks the fd
 * table) nor the unmapping of guest RAM is then between the stop and the new process.
 */
void vmm_teardown_early(vmm *v)
{
    cpr_error *cerr = NULL;
    if (cpr_teardown_defer(v->ctx, 0, &cerr) == 0) {
        v->teardown_early = 1;
        cpr_trace_mark(v->ctx, "teardown-held");
    } else {
        vmm_trace("cpr-reboot: no teardown helper: %s", cpr_error_message(cerr));
    }
    cpr_error_free(cerr);
}

/* No exit follows after all (the save failed, or the guest resumes here): let the helper go. */
void vmm_teardown_release(vmm *v)
{
    if (v->teardown_early) {
        cpr_teardown_cancel(v->ctx);
        v->teardown_early = 0;
    }
}

int vmm_vm_start(vmm *v, mon_error *err)
{
    cpr_error *cerr = NULL;
    /* A guest loaded paused (-S) and started by hand: its pause is the operator's, not the
     * switchover's, so the source's handoff is not measured from. */
    g_mutex_lock(&v->lock);
    v->have_in_handoff = 0;
    g_mutex_unlock(&v->lock);
    if (vmm_machine_unpause(v, &cerr) < 0)
        return mon_fail_cpr(err, cerr); /* refused: a cpr-reboot save's helper stays for its quit */
    vmm_teardown_release(v); /* cont after a cpr-reboot save: the guest runs here again */
    return 0;
}

vmm_runstate vmm_runstate_get(vmm *v)
{
    if (v->quitting)
        return VMM_RS_SHUTDOWN;
    switch (cpr_migrate_runstate(v->ctx)) {
    case CPR_RUNSTATE_INMIGRATE: return VMM_RS_INMIGRATE;
    case CPR_RUNSTATE_POSTMIGRATE: return VMM_RS_POSTMIGRATE;
    case CPR_RUNSTATE_FINISH_MIGRATE: return VMM_RS_FINISH_MIGRATE;
    default: break;
    }
    if (vmm_vm_running(v))
        return VMM_RS_RUNNING;
    return v->prelaunch ? VMM_RS_PRELAUNCH : VMM_RS_PAUSED;
}

void vmm_quit(vmm *v, int code)
{
    v->exit_code = code;
    v->quitting = 1;
    g_main_loop_quit(v->loop);
}

/* ---- guest figures -------------------------------------------------------------------- */

void vmm_guest_report_get(vmm *v, vmm_guest_report *out)
{
    memset(out, 0, sizeof(*out));
    out->stats.size = sizeof(out->stats);
    if (v->machine) {
        if (vmm_machine_get_stats(v->machine, &out->stats) < 0) {
            memset(&out->stats, 0, sizeof(out->stats));
            out->stats.size = sizeof(out->stats);
        }
        out->backend = vmm_machine_backend_name(v->machine);
    } else {
        out->backend = "none";
    }
    /* The guest's type once it runs (an incoming one may be older than ours), else ours. */
    const vmm_machine_type *t = v->machine ? vmm_machine_type_of_state(vmm_machine_guest_version(v->machine),
                                                                      dev_cpu_guest_version(v),
                                                                      v->cfg->machine_type) : NULL;
    out->machine = (t ? t : v->cfg->machine_type)->name;
    g_mutex_lock(&v->lock);
    out->last_pause_ms = v->last_pause_ms;
    out->last_pause_seen_ms = v->last_pause_seen_ms;
    out->last_pause_by = v->last_pause_by;
    g_mutex_unlock(&v->lock);
}

/* ---- start-up ------------------------------------------------------------------------- */

static int create_ram(vmm *v, char **err)
{
    const vmm_memdev *md = vmm_config_ram_memdev(v->cfg);
    cpr_error *cerr = NULL;
    cpr_ram_block *blk = NULL;
    int r;
    /* Prefault only where it is free: in cpr-transfer the old guest still runs while we map,
     * so the page-table cost is paid before the switchover. After cpr-exec or a cpr-reboot
     * restart the guest is already stopped: populating every page then would sit inside the
     * pause (about 0.2 s per GiB here), while lazy faults spread it over the guest's run. */
    uint32_t flags = v->incoming_mode == CPR_MODE_CPR_TRANSFER ? CPR_RAM_PREFAULT : 0;
    /* share=off: private memory, which only normal migration can carry (libcpr blocks the
     * cpr modes for it). */
    if (md && !md->share)
        flags |= CPR_RAM_PRIVATE;
    if (md && md->is_file)
        r = cpr_ram_block_new_file(v->ctx, md->id, md->mem_path, md->size, flags, &blk, &cerr);
    else
        r = cpr_ram_block_new(v->ctx, md ? md->id : "pc.ram", v->cfg->ram_size, 4096, flags, &blk,
                              &cerr);
    if (r < 0) {
        return vmm_fail_cpr(err, "guest RAM", cerr);
    }
    v->ram_block = blk;
    v->ram = cpr_ram_block_host(blk);
    v->ram_size = cpr_ram_block_size(blk);
    /* As QEMU: RAM another process cannot map blocks the modes that keep RAM in place. */
    if (!cpr_ram_block_shared(blk)) {
        g_autofree char *why = g_strdup_printf("memory-backend '%s' is private (share=off): cpr-transfer "
                                               "and cpr-exec need share=on", cpr_ram_block_name(blk));
        if (cpr_blocker_add(v->ctx, CPR_MODE_BIT(CPR_MODE_CPR_TRANSFER) | CPR_MODE_BIT(CPR_MODE_CPR_EXEC), why,
                            &v->ram_blocker, &cerr) < 0)
            return vmm_fail_cpr(err, "guest RAM", cerr);
    }
    return 0;
}

/* The first vCPU back in the guest after a resume: the pause breakdown's last step. */
static void vcpus_in(void *opaque)
{
    vmm *v = opaque;
    cpr_trace_mark(v->ctx, "vcpus-in");
}

static int create_machine(vmm *v, char **err)
{
    vmm_machine_config mc;
    vmm_machine_config_init(&mc);
    mc.on_run = vcpus_in;
    mc.run_opaque = v;
    mc.accel = v->cfg->accel;
    mc.nvcpus = (uint32_t)v->cfg->smp;
    mc.ram = v->ram;
    mc.ram_size = v->ram_size;
    if (v->cfg->dirty_rate_given)
        mc.rate_pps = v->cfg->dirty_rate;
    mc.vcpu_cpus = v->cfg->vcpu_cpus;
    mc.compress_pct = v->cfg->compress_pct;
    /* A boot writes the type's mailbox; a guest coming in keeps its own, which must be the
     * type's when -machine TYPE was given (machtype.h). */
    mc.mailbox_version = v->cfg->machine_type->mailbox_version;
    if (v->cfg->incoming->len) {
        mc.flags |= VMM_MACHINE_INCOMING;
        v->booted = 1; /* the guest comes in: never boot it here */
        if (!v->cfg->machine_type_given)
            mc.mailbox_version = 0;
    }
    cpr_error *cerr = NULL;
    if (vmm_machine_new(&v->machine, &mc, &cerr) < 0) {
        return vmm_fail_cpr(err, "machine", cerr);
    }
    const char *note = vmm_machine_backend_note(v->machine);
    fprintf(stderr, "cpr-vmm: %s backend%s%s, %u vCPU(s), %llu MiB RAM, machine %s%s\n",
            vmm_machine_backend_name(v->machine), note && *note ? ": " : "", note ? note : "",
            vmm_machine_nvcpus(v->machine), (unsigned long long)(v->ram_size >> 20),
            v->cfg->machine_type->name,
            mc.flags & VMM_MACHINE_INCOMING && !v->cfg->machine_type_given ? " (or the incoming guest's)" : "");
    return 0;
}


static gboolean on_signal(gpointer p)
{
    vmm_quit(p, 0);
    return G_SOURCE_CONTINUE;
}

static int create_monitors(vmm *v, char **err)
{
    if (v->cfg->qmp_path) {
        v->qmp = qmp_server_new(v, v->cfg->qmp_path, err);
        if (!v->qmp)
            return -1;
    }
    if (v->cfg->monitor_stdio)
        v->hmp = hmp_new(v);
    return 0;
}

static int run(vmm *v, char **err)
{
    cpr_error *cerr = NULL;
    vmm_trace("image started");
    if (cpr_ctx_new(&v->ctx, 0, &cerr) < 0) {
        return vmm_fail_cpr(err, "libcpr", cerr);
    }
    cpr_trace_mark_at(v->ctx, "image-main", v->main_ns);
    if (vmm_mig_init(v, err) < 0 || vmm_mig_incoming_early(v, err) < 0)
        return -1;
    vmm_trace("cpr state loaded");
    if (create_ram(v, err) < 0)
        return -1;
    vmm_trace("guest RAM mapped");
    cpr_trace_mark(v->ctx, "ram-registered");
    if (create_machine(v, err) < 0 || vmm_pause_init(v, err) < 0)
        return -1;
    vmm_trace("machine created");
    cpr_trace_mark(v->ctx, "machine-created");
    if (vmm_devices_init(v, err) < 0)
        return -1;
    vmm_trace("devices created");
    cpr_trace_mark(v->ctx, "devices-created");
    /* Every preserved fd a device wanted is claimed by now; the rest are of no use. */
    cpr_fd_close_unclaimed(v->ctx);

    /* A guest coming in: its job first, the monitors while it loads (on another core). The
     * monitors only ever run on this thread, whose loop starts after both, and the job's
     * events reach them through that loop, so no event is lost to the order. */
    int incoming = v->cfg->incoming->len > 0;
    if (incoming && vmm_mig_incoming_late(v, err) < 0)
        return -1;
    if (create_monitors(v, err) < 0)
        return -1;
    cpr_trace_mark(v->ctx, "monitors-created");
    if (!incoming && !v->cfg->start_paused && vmm_machine_unpause(v, &cerr) < 0)
        return vmm_fail_cpr(err, "boot", cerr);
    g_main_loop_run(v->loop);
    return 0;
}

/*
 * -x-affinity emulator=: set on the main thread before any other thread exists, so that every
 * thread started later (libcpr's job threads, the monitor, the sampler) inherits it; the vCPU
 * threads get their own set from the machine. Pinning vCPUs apart from everything else keeps a
 * switchover's helper threads, old and new, from queueing in front of a vCPU on a small host.
 */
static int set_emulator_affinity(const vmm_config *cfg)
{
    if (!cfg->emulator_cpus)
        return 0;
    cpu_set_t set;
    vmm_cpu_mask_to_set(cfg->emulator_cpus, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0) {
        fprintf(stderr, "cpr-vmm: -x-affinity emulator=: cannot run on host CPUs 0x%llx: %s\n",
                (unsigned long long)cfg->emulator_cpus, g_strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t main_ns = cpr_trace_now(); /* the new image's first step, on the trace's clock */
    vmm_config cfg;
    int exit_now = 0;
    char *err = NULL;
    signal(SIGPIPE, SIG_IGN);
    if (vmm_cmdline_parse(argc, argv, &cfg, &exit_now, &err) < 0) {
        fprintf(stderr, "cpr-vmm: %s\n", err);
        g_free(err);
        vmm_config_clear(&cfg);
        return 1;
    }
    if (exit_now) {
        vmm_config_clear(&cfg);
        return 0;
    }
    if (set_emulator_affinity(&cfg) < 0) {
        vmm_config_clear(&cfg);
        return 1;
    }
    vmm v = {0};
    v.main_ns = main_ns;
    v.cfg = &cfg;
    v.prelaunch = cfg.start_paused;
    g_mutex_init(&v.lock);
    v.loop = g_main_loop_new(NULL, FALSE);
    guint sigint = g_unix_signal_add(SIGINT, on_signal, &v);
    guint sigterm = g_unix_signal_add(SIGTERM, on_signal, &v);

    int r = run(&v, &err);
    if (r < 0) {
        fprintf(stderr, "cpr-vmm: %s\n", err);
        g_free(err);
        v.exit_code = 1;
    }

    /* Guest RAM is unmapped by the exit, in a helper that shares our memory, so quitting (as a
     * cpr-reboot restart does) takes milliseconds instead of ~80 ms per GiB; without one (under
     * valgrind, say) the exit unmaps it itself. */
    if (v.ctx) {
        cpr_error *terr = NULL;
        if (cpr_teardown_defer(v.ctx, 0, &terr) < 0)
            vmm_trace("quit: unmapping guest RAM here: %s", cpr_error_message(terr));
        else
            vmm_trace("quit: guest RAM is unmapped by the exit, in a helper");
        cpr_error_free(terr);
    }
    /* Tear down in reverse: monitors, then whatever may still call into the machine. */
    hmp_free(v.hmp);
    qmp_server_free(v.qmp);
    vmm_mig_fini(&v);
    while (v.main_hold)
        vmm_main_release(&v); /* onto the (ended) loop, as calls that came late anyway */
    if (v.held_calls)
        g_ptr_array_free(v.held_calls, TRUE);
    vmm_pause_fini(&v);
    vmm_devices_fini(&v);
    vmm_machine_free(v.machine);
    vmm_trace("quit: machine freed");
    cpr_ctx_free(v.ctx);
    vmm_trace("quit: context freed");
    g_source_remove(sigint);
    g_source_remove(sigterm);
    g_main_loop_unref(v.loop);
    g_mutex_clear(&v.lock);
    vmm_config_clear(&cfg);
    fflush(stdout);
    return v.exit_code;
}
