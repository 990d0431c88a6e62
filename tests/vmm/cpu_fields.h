/* SPDX-License-Identifier: MIT */
/*
 * The fields of the machine core's state structs (vmm_vcpu_state, vmm_vm_state), described one
 * by one for libcpr's vmstate builder, so that a stream names every register: cpr-dump shows
 * `rip`, `cr3`, the segments, each MSR {index, data}. The structs stay the machine core's
 * (tests/vmm/machine/machine.h); these tables only say where each field lives in them.
 */
#ifndef VMM_CPU_FIELDS_H
#define VMM_CPU_FIELDS_H

#include <cpr/vmstate.h>

#include "machine/machine.h"

/*
 * Adds to d the fields of a vmm_vcpu_state held at offset `base` of d's object, each present
 * from section version `since` on. The header's version and size are not among them (the
 * section's version replaces them), nor the local APIC (a subsection: vmm_cpu_lapic_desc()).
 * 0 or a negative errno with *errp.
 */
int vmm_cpu_fields_add(cpr_desc *d, size_t base, uint32_t since, cpr_error **errp);

/* A subsection "NAME" (version 1) holding the local APIC registers of the vmm_vcpu_state at
 * `base` of an object of obj_size bytes. */
int vmm_cpu_lapic_desc(const char *name, size_t obj_size, size_t base, cpr_desc **out, cpr_error **errp);

/*
 * Adds the fields of a vmm_vm_state at `base`, from version `since` on; backend, nvcpus and
 * ram_size are `equal` checks against *want, so that a stream of another machine is refused
 * naming the field before anything is loaded.
 */
int vmm_vm_fields_add(cpr_desc *d, size_t base, uint32_t since, const vmm_vm_state *want, cpr_error **errp);

#endif
