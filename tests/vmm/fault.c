/* SPDX-License-Identifier: MIT */
/* CPR_VMM_FAULT: see fault.h. Read on every call: fault points are few and never hot. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "fault.h"

/* Entries already fired in this image (a bit per position in CPR_VMM_FAULT). */
static volatile gint fired;

int vmm_fault_fail(const char *phase)
{
    const char *spec = getenv("CPR_VMM_FAULT");
    if (!spec || !*spec)
        return 0;
    g_auto(GStrv) entries = g_strsplit(spec, ",", 31);
    for (int i = 0; entries[i]; i++) {
        const char *colon = strchr(entries[i], ':');
        if (!colon || (size_t)(colon - entries[i]) != strlen(phase) || strncmp(entries[i], phase, strlen(phase)))
            continue;
        gint bit = 1 << i;
        if (g_atomic_int_or(&fired, bit) & bit)
            continue;
        const char *action = colon + 1;
        /* stderr is unbuffered; a single write so that it lands whole before the signal. */
        g_autofree char *msg = g_strdup_printf("cpr-vmm: fault injection at %s: %s\n", phase, action);
        if (write(STDERR_FILENO, msg, strlen(msg)) < 0) {
            /* nothing to do: the fault happens anyway */
        }
        if (!strcmp(action, "kill"))
            raise(SIGKILL);
        else if (!strcmp(action, "stop"))
            raise(SIGSTOP);
        else if (!strcmp(action, "exit"))
            _exit(3);
        else if (!strcmp(action, "fail"))
            return -EIO;
    }
    return 0;
}

void vmm_fault(const char *phase)
{
    vmm_fault_fail(phase);
}
