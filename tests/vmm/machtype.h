/* SPDX-License-Identifier: MIT */
/*
 * cpr-vmm's machine types, in the spirit of QEMU's versioned machine types (pc-q35-9.0): each
 * names the guest-visible state of one release, so that a guest started on a newer cpr-vmm can
 * be handed back to the release its type names. A type fixes the guest's mailbox layout (and
 * with it the guest code, tests/vmm/machine/machine.h) and the version each section is written
 * in. A guest keeps its type for its whole life: an incoming VMM without -machine TYPE adopts
 * the type of the guest it receives; one with -machine TYPE refuses a guest of another layout.
 * docs/compat.md says which types each release reads.
 */
#ifndef VMM_MACHTYPE_H
#define VMM_MACHTYPE_H

#include <stdint.h>

typedef struct vmm_machine_type {
    const char *name;          /* "cpr-vmm-1.0" */
    const char *release;       /* the libcpr release whose state it is: "1.0" */
    uint32_t mailbox_version;  /* the guest's mailbox layout (VMM_MAILBOX_VERSION_*) */
    uint32_t hbmon_version;    /* section "hbmon" written in this version */
    uint32_t cpu_version;      /* sections "cpu" and "vm" written in this version (dev_cpu.c) */
} vmm_machine_type;

/* The newest type: the default. */
const vmm_machine_type *vmm_machine_type_newest(void);

/* The type named `name`, or the alias "cpr-vmm" (the newest); NULL when there is none. */
const vmm_machine_type *vmm_machine_type_find(const char *name);

/* The type a guest of mailbox `version` is of: `pref` when it has that layout, otherwise the
 * newest type that has it; NULL for a layout no type has. */
const vmm_machine_type *vmm_machine_type_of_guest(uint32_t version, const vmm_machine_type *pref);

/* The same, told apart further by the version its sections "vm" and "cpu" come in (types that
 * share a mailbox layout differ there): `pref` when it has both, otherwise the newest that has
 * both; NULL when none has. */
const vmm_machine_type *vmm_machine_type_of_state(uint32_t version, uint32_t cpu_version,
                                                  const vmm_machine_type *pref);

/* The list of types, one per line ("  NAME  what it is"), for -machine help: g_free it. */
char *vmm_machine_types_describe(void);

#endif
