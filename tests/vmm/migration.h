/* SPDX-License-Identifier: MIT */
/* cpr-vmm's migration glue: monitor commands on one side, libcpr's migrate API on the other. */
#ifndef VMM_MIGRATION_H
#define VMM_MIGRATION_H

#include <json-c/json.h>

#include "monitor.h"
#include "vmm.h"

/* Sets up the migration state; the hooks libcpr calls to stop, start and flush the VM. */
int vmm_mig_init(vmm *v, char **err);
void vmm_mig_fini(vmm *v);

/*
 * Early incoming work done before the monitors open, as QEMU does: with a cpr channel among
 * the -incoming arguments, reads it (RAM memfds and device fds) now. Sets the run state to
 * inmigrate whenever -incoming was given.
 */
int vmm_mig_incoming_early(vmm *v, char **err);
/* Starts loading a non-deferred -incoming main channel once the machine exists. */
int vmm_mig_incoming_late(vmm *v, char **err);

/* QMP `migrate`: args hold "uri" or "channels". Starts an outgoing migration and returns. */
int vmm_mig_migrate(vmm *v, json_object *args, mon_error *err);
/* QMP `migrate` with resume=true (HMP `migrate -r`) resumes a postcopy-paused migration on
 * "uri"; QMP `migrate-recover` (HMP `migrate_recover`) listens on "uri" for it (destination). */
int vmm_mig_recover(vmm *v, json_object *args, mon_error *err);
/* QMP `migrate-incoming`: args hold "uri" or "channels". */
int vmm_mig_incoming(vmm *v, json_object *args, mon_error *err);
int vmm_mig_cancel(vmm *v, mon_error *err);
/* migrate-start-postcopy: the running migration switches to postcopy (libcpr decides when). */
int vmm_mig_start_postcopy(vmm *v, mon_error *err);
/* QMP `query-migrate`: a new object. */
json_object *vmm_mig_query(vmm *v);

/* 1 while an outgoing (resp. incoming) migration has not reached a final state. */
int vmm_mig_out_active(vmm *v);
int vmm_mig_in_active(vmm *v);
/* The error of the last failed migration, or NULL. Owned by the migration state. */
const char *vmm_mig_last_error(vmm *v);

#endif
