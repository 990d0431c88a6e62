/* SPDX-License-Identifier: MIT */
/*
 * cpr-vmm: the VMM's state and the operations monitors call. One vmm per process; it lives on
 * the main loop's thread, and anything that happens on another thread (a migration thread, a
 * vCPU) reaches it through vmm_call_main().
 */
#ifndef VMM_VMM_H
#define VMM_VMM_H

#include <stdint.h>

#include <glib.h>
#include <json-c/json.h>

#include <cpr/cpr.h>
#include <cpr/fd.h>
#include <cpr/migrate.h>
#include <cpr/ram.h>
#include <cpr/savevm.h>
#include <cpr/vmstate.h>

#include "cmdline.h"
#include "machine/machine.h"
#include "monitor.h"

/* QEMU's RunState names, the subset this VMM goes through. */
typedef enum vmm_runstate {
    VMM_RS_PRELAUNCH,
    VMM_RS_RUNNING,
    VMM_RS_PAUSED,
    VMM_RS_INMIGRATE,
    VMM_RS_POSTMIGRATE,
    VMM_RS_FINISH_MIGRATE,
    VMM_RS_SHUTDOWN,
} vmm_runstate;

const char *vmm_runstate_name(vmm_runstate rs);

/* Guest pauses measured across switchovers, carried from VMM to VMM in the hbmon device. */
typedef struct vmm_pause_history {
    uint64_t last_pause_ns;
    uint32_t switchovers;
} vmm_pause_history;

typedef struct vmm_devices vmm_devices;   /* devices.c */
typedef struct vmm_mig vmm_mig;           /* migration.c */
typedef struct qmp_server qmp_server;     /* qmp.c */
typedef struct hmp_monitor hmp_monitor;   /* hmp.c */

struct vmm {
    vmm_config *cfg;
    cpr_ctx *ctx;
    uint64_t main_ns;      /* main() entered (cpr_trace_now): the trace's "image-main" */
    int teardown_early;    /* a cpr-reboot save started: the teardown helper already holds RAM */
    GMainLoop *loop;
    int prelaunch;         /* -S: not started yet (QEMU's prelaunch) */
    vmm_machine *machine;
    int booted;            /* the guest exists: booted here, or coming in by migration */
    cpr_mode incoming_mode; /* what cpr_incoming_cpr_load() found: cpr-transfer, cpr-exec or the parameter */
    vmm_hb_sampler *sampler;
    cpr_ram_block *ram_block;
    cpr_blocker *ram_blocker; /* private RAM blocks the modes that keep RAM in place */
    void *ram;             /* host mapping of guest RAM, owned by ram_block */
    uint64_t ram_size;
    GMutex lock;           /* machine run control and pause figures: the migration thread
                            * uses them too */
    /* pause.c: the guest-visible pause; under lock */
    double last_pause_ms;  /* -1 until a switchover was measured */
    double last_pause_seen_ms; /* the heartbeat sampler's upper bound for it */
    const char *last_pause_by; /* "guest" (its own clock) or "host" (the sampler's bound) */
    vmm_pause_history pause_history;
    int pause_armed;       /* a handoff was set: measure at the next resume */
    vmm_hb_handoff own_handoff; /* taken at our stop, for a resume here if the migration fails */
    int have_own_handoff;
    vmm_hb_handoff in_handoff; /* loaded from the source: set at the resume, after the commit */
    int have_in_handoff;
    GThread *pause_thread;
    int stalls_recorded;   /* an incoming postcopy recorded the guest's stalls (atomic) */
    int main_hold;         /* vmm_main_hold() depth; under lock */
    GPtrArray *held_calls; /* main_call *, queued while held; under lock */
    vmm_devices *devs;
    vmm_mig *mig;
    qmp_server *qmp;
    hmp_monitor *hmp;
    int exit_code;
    int quitting;
};

/* Guest statistics as query-guest reports them. */
typedef struct vmm_guest_report {
    vmm_guest_stats stats;
    const char *backend;       /* "kvm" or "soft" */
    const char *machine;       /* the guest's machine type (machtype.h): "cpr-vmm-1.2" */
    double last_pause_ms;      /* -1 when no switchover was measured */
    double last_pause_seen_ms; /* the host-seen upper bound of it */
    const char *last_pause_by; /* who measured last_pause_ms: "guest" or "host" */
} vmm_guest_report;

/* Run control from the monitors; they emit STOP and RESUME. */
int vmm_vm_stop(vmm *v, mon_error *err);
int vmm_vm_start(vmm *v, mon_error *err);
int vmm_vm_running(vmm *v);
/* The same from any thread (the migration hooks), with libcpr errors. The first unpause of a
 * fresh machine boots it. */
int vmm_machine_pause(vmm *v, cpr_error **cerr);
int vmm_machine_unpause(vmm *v, cpr_error **cerr);
/* What query-status reports: the migration's run state when it has one, else the VM's. */
vmm_runstate vmm_runstate_get(vmm *v);

/* Ends the main loop; the process exits with `code`. */
void vmm_quit(vmm *v, int code);

/* Sends a QMP event to every negotiated QMP client. Takes ownership of data (may be NULL). */
void vmm_event(vmm *v, const char *name, json_object *data);
/* The same, stamped with `when` (g_get_real_time() microseconds): when it happened. */
void vmm_event_at(vmm *v, const char *name, json_object *data, int64_t when);

void vmm_guest_report_get(vmm *v, vmm_guest_report *out);

/* Sets *err to "WHAT: MESSAGE" from a libcpr error, frees it and returns -1. */
int vmm_fail_cpr(char **err, const char *what, cpr_error *cerr);
/* With CPR_VMM_TRACE set in the environment: a line on stderr stamped with CLOCK_MONOTONIC. */
void vmm_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cpr-reboot: the teardown helper (cpr/teardown.h) from before the stop until the exit, or
 * released when no exit follows (a failed save, cont). */
void vmm_teardown_early(vmm *v);
void vmm_teardown_release(vmm *v);
/* Prints "cpr-vmm: WHAT: MESSAGE" to stderr and frees the error. */
void vmm_log_cpr(const char *what, cpr_error *cerr);

/* Writes all of buf to fd (SIGPIPE is ignored: a closed peer is -EPIPE). 0 or -errno. */
int vmm_write_all(int fd, const char *buf, size_t len);

/* Runs fn(opaque) on the main loop's thread, soon (from it too: it never runs fn inline). */
void vmm_call_main(vmm *v, void (*fn)(void *opaque), void *opaque);
/*
 * Holds calls to the main loop back, queued in order, until as many releases: during a
 * switchover a woken main loop (and the monitor client it writes to) takes the CPU the stop, the
 * restore and the resumed vCPUs need on a small host. Any thread; they nest.
 */
void vmm_main_hold(vmm *v);
void vmm_main_release(vmm *v);

#endif
