/* SPDX-License-Identifier: MIT */
/* The guest-visible pause of a switchover (pause.c). Functions may run on any thread. */
#ifndef VMM_PAUSE_H
#define VMM_PAUSE_H

#include <string.h>

#include "vmm.h"

/* Starts the heartbeat sampler over the guest's RAM. 0, or -1 with *err. */
int vmm_pause_init(vmm *v, char **err);
void vmm_pause_fini(vmm *v);

/* Outgoing, right before the stop: fine-grained sampling from here to the handoff. */
void vmm_pause_arm(vmm *v);
/* Outgoing, guest stopped: the handoff to save (and to use here if the migration fails). */
void vmm_pause_stopped(vmm *v, vmm_hb_handoff *out);
/* Outgoing completed: the guest will not resume here, forget our handoff. */
void vmm_pause_completed(vmm *v);

/* Incoming, loaded: notes the old VMM's handoff; it is set (in guest RAM) only right before
 * the resume, after the destination committed. */
void vmm_pause_incoming(vmm *v, const vmm_hb_handoff *h);
/* Right before the library resumes the guest: sets the incoming handoff, or, after a failed
 * outgoing migration, counts the pause from our own stop. */
void vmm_pause_before_resume(vmm *v);
/* Right after the resume: measures the pause in the background when a handoff was set. */
void vmm_pause_resumed(vmm *v);

/* The guest's stalls (vmm_hb_sampler_stalls_record): an incoming postcopy records them from
 * postcopy-active until the migration ends, x-record-stalls whenever asked. Never blocks. */
void vmm_pause_stalls_record(vmm *v, int on);
/* 0 with *out, or -1 when no stalls were ever recorded here. */
int vmm_pause_stalls_get(vmm *v, vmm_stall_stats *out);

#endif
