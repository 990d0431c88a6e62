/* SPDX-License-Identifier: MIT */
/* Private: whether a deferred-teardown helper holds this process's address space. */
#ifndef CPR_HANDOVER_TEARDOWN_H
#define CPR_HANDOVER_TEARDOWN_H

#include <cpr/teardown.h>

/* 1 while a helper started by cpr_teardown_defer() holds the address space: RAM blocks freed
 * then stay mapped, for the exec or exit to unmap in the helper. Owner thread only. */
int cpr_teardown_held(cpr_ctx *ctx);

#endif
