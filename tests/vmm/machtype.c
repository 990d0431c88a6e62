/* SPDX-License-Identifier: MIT */
/* The machine types' table: a new release that changes guest-visible state adds a row. */
#include <string.h>

#include <glib.h>

#include "machtype.h"

/* Oldest first; the last row is the newest, the default. */
static const vmm_machine_type types[] = {
    {"cpr-vmm-1.0", "1.0", 1, 2, 1},
    {"cpr-vmm-1.1", "1.1", 2, 2, 1},
    {"cpr-vmm-1.2", "1.2", 3, 2, 2},
};
#define NTYPES G_N_ELEMENTS(types)
#define ALIAS "cpr-vmm"

const vmm_machine_type *vmm_machine_type_newest(void)
{
    return &types[NTYPES - 1];
}

const vmm_machine_type *vmm_machine_type_find(const char *name)
{
    if (!strcmp(name, ALIAS))
        return vmm_machine_type_newest();
    for (size_t i = 0; i < NTYPES; i++)
        if (!strcmp(types[i].name, name))
            return &types[i];
    return NULL;
}

const vmm_machine_type *vmm_machine_type_of_guest(uint32_t version, const vmm_machine_type *pref)
{
    if (pref && pref->mailbox_version == version)
        return pref;
    for (size_t i = NTYPES; i-- > 0;)
        if (types[i].mailbox_version == version)
            return &types[i];
    return NULL;
}

const vmm_machine_type *vmm_machine_type_of_state(uint32_t version, uint32_t cpu_version,
                                                  const vmm_machine_type *pref)
{
    if (pref && pref->mailbox_version == version && pref->cpu_version == cpu_version)
        return pref;
    for (size_t i = NTYPES; i-- > 0;)
        if (types[i].mailbox_version == version && types[i].cpu_version == cpu_version)
            return &types[i];
    return NULL;
}

char *vmm_machine_types_describe(void)
{
    GString *s = g_string_new("");
    for (size_t i = NTYPES; i-- > 0;)
        g_string_append_printf(s, "  %-12s the guest-visible state of cpr-vmm %s (guest mailbox version %u)%s\n",
                               types[i].name, types[i].release, types[i].mailbox_version,
                               i == NTYPES - 1 ? " (alias " ALIAS ", default)" : "");
    return g_string_free(s, FALSE);
}
