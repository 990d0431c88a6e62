/* SPDX-License-Identifier: MIT */
/* HMP on stdin/stdout: QEMU's human monitor spelling, over the shared command table. */
#ifndef VMM_HMP_H
#define VMM_HMP_H

#include "vmm.h"

/* Prints the banner and the first prompt and starts reading stdin. */
hmp_monitor *hmp_new(vmm *v);
void hmp_free(hmp_monitor *h);

/* Called when a migration changes state: a monitor suspended by `migrate` may resume. */
void hmp_migration_changed(hmp_monitor *h);

#endif
